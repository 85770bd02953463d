package hubtest

import (
	"net/http"
	"strconv"
	"sync"
)

// FaultKind is what a Fault does to a request.
type FaultKind int

const (
	// Status answers Code (a 5xx, 429, ...) instead of the file. With
	// EchoAuth the body repeats the Authorization header, as a careless
	// proxy might: what a client shows of the body must not leak it.
	Status FaultKind = iota
	// Drop closes the connection without an answer.
	Drop
	// Truncate sends At bytes of the body, then closes the connection.
	Truncate
	// Corrupt flips a byte of the body at At (or the last byte).
	Corrupt
	// Stall sends At bytes, signals Reached, then sends nothing more until
	// the client goes away.
	Stall
	// IgnoreRange answers 200 with the whole file to a Range request.
	IgnoreRange
)

// InfoFile is the File of a Fault on the repository info and tree
// requests (/api/models/...).
const InfoFile = "(info)"

// Fault changes how requests for File are answered, Times times (-1:
// always).
type Fault struct {
	File       string
	Method     string // "GET", "HEAD" or "" for both
	Kind       FaultKind
	Times      int
	Code       int   // for Status
	RetryAfter int   // for Status: a Retry-After header in seconds, when > 0
	At         int64 // for Truncate, Corrupt and Stall: a byte offset in the body sent
	EchoAuth   bool  // for Status

	// Reached is closed when a Stall fault has sent its At bytes.
	Reached chan struct{}

	hits     int
	reachOne sync.Once
}

// Inject adds a fault; the first that matches a request applies.
func (h *Hub) Inject(f *Fault) *Fault {
	h.mu.Lock()
	defer h.mu.Unlock()
	if f.Reached == nil {
		f.Reached = make(chan struct{})
	}
	h.faults = append(h.faults, f)
	return f
}

// ClearFaults removes every fault.
func (h *Hub) ClearFaults() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.faults = nil
}

// Hits says how many requests the fault has changed.
func (h *Hub) Hits(f *Fault) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return f.hits
}

// takeFault returns the first live fault for the request and counts it.
// body selects the faults applied to a body (Truncate, Corrupt, Stall,
// IgnoreRange) or the others (Status, Drop).
func (h *Hub) takeFault(method, file string, body bool) *Fault {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, f := range h.faults {
		isBody := f.Kind == Truncate || f.Kind == Corrupt || f.Kind == Stall || f.Kind == IgnoreRange
		if isBody != body || f.File != file || f.Method != "" && f.Method != method || f.Times == 0 {
			continue
		}
		if body && method == http.MethodHead {
			continue
		}
		if f.Times > 0 {
			f.Times--
		}
		f.hits++
		return f
	}
	return nil
}

// applyStatusFault answers with a Status or Drop fault, if one applies.
func (h *Hub) applyStatusFault(w http.ResponseWriter, r *http.Request, file string) bool {
	f := h.takeFault(r.Method, file, false)
	if f == nil {
		return false
	}
	if f.Kind == Drop {
		panic(http.ErrAbortHandler) // the server closes the connection
	}
	if f.RetryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(f.RetryAfter))
	}
	msg := "the fake Hub is failing on purpose"
	if f.EchoAuth {
		msg += "; you sent: " + r.Header.Get("Authorization")
	}
	http.Error(w, msg, f.Code)
	return true
}

// serveBody writes body (which starts at offset start of the file)
// through the fault.
func (f *Fault) serveBody(w http.ResponseWriter, r *http.Request, body []byte, start int64) {
	at := min(max(f.At, 0), int64(len(body)))
	switch f.Kind {
	case IgnoreRange:
		w.Write(body)
	case Corrupt:
		bad := append([]byte(nil), body...)
		if len(bad) > 0 {
			i := min(at, int64(len(bad)-1))
			bad[i] ^= 0x5a
		}
		w.Write(bad)
	case Truncate:
		w.Write(body[:at])
		if fl, ok := w.(http.Flusher); ok {
			fl.Flush()
		}
		panic(http.ErrAbortHandler)
	case Stall:
		w.Write(body[:at])
		if fl, ok := w.(http.Flusher); ok {
			fl.Flush()
		}
		f.reachOne.Do(func() { close(f.Reached) })
		<-r.Context().Done()
		panic(http.ErrAbortHandler)
	}
}
