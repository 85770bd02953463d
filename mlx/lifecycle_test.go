package mlx

import (
	"errors"
	"fmt"
	"math/rand"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// settleForgotten runs the GC until its cleanups have had a chance to run,
// then lets the owner thread drain what they queued.
func settleForgotten(t *testing.T) {
	t.Helper()
	for range 3 {
		runtime.GC()
		time.Sleep(5 * time.Millisecond)
	}
	// The owner drains the queue after each job, after Do has returned:
	// the second job starts only once the first one's drain is done.
	for range 2 {
		if err := Do(func() error { return nil }); err != nil {
			t.Fatal(err)
		}
	}
}

var forgottenControlRan atomic.Bool

// TestTrainingLoopNoLeaks runs 200 loss-and-grad steps of the composite
// block (ValueAndGrad built once) with an SGD update, each step in a scope:
// the live-array count and MLX's active memory after step 10 and after
// step 200 must match, and the GC backstop must not have freed anything.
func TestTrainingLoopNoLeaks(t *testing.T) {
	settleForgotten(t)
	forgotten0 := ForgottenArrays()
	r := rand.New(rand.NewSource(90))
	const L, V = 16, 32
	shapes := [][]int{{1, L, 8}, {8, 16}, {8, 8}, {8, 8}, {16, V}, {8}}
	var live10, liveEnd, mem10, memEnd, liveBefore int64
	inMLX(t, func() error {
		liveBefore = LiveArrays()
		tg := make([]int, L)
		for i := range tg {
			tg[i] = r.Intn(V)
		}
		targets := intsShaped(tg, 1, L)
		Detach(targets)
		defer targets.Free()
		params := make([]*Array, len(shapes))
		for i, s := range shapes {
			params[i] = MulScalar(f32(randTensor(r, s...)), 0.5)
			Detach(params[i])
		}
		defer func() {
			for _, p := range params {
				p.Free()
			}
		}()
		vg, err := NewValueAndGrad(composite(targets), 1, 2, 3, 4, 5)
		if err != nil {
			return err
		}
		defer vg.Free()
		var first, last float64
		for it := 1; it <= 200; it++ {
			err := func() error {
				s := NewScope()
				defer s.Close()
				vals, grads, err := vg.Call(params...)
				if err != nil {
					return err
				}
				next := append([]*Array{}, params...)
				for j, g := range grads {
					next[j+1] = Subtract(params[j+1], MulScalar(g, 0.05))
				}
				if err := Eval(append(next[1:], vals[0])...); err != nil {
					return err
				}
				loss, err := vals[0].Item()
				if err != nil {
					return err
				}
				if it == 1 {
					first = loss
				}
				last = loss
				for j := 1; j < len(params); j++ {
					params[j].Free()
					Detach(next[j])
					params[j] = next[j]
				}
				return nil
			}()
			if err != nil {
				return fmt.Errorf("step %d: %w", it, err)
			}
			switch it {
			case 10:
				live10, mem10 = LiveArrays(), ActiveMemory()
			case 200:
				liveEnd, memEnd = LiveArrays(), ActiveMemory()
			}
		}
		if !(last < first) {
			t.Errorf("loss went from %.4f to %.4f: the loop is not training", first, last)
		}
		return nil
	})
	if live10 != liveEnd {
		t.Errorf("live arrays: %d after step 10, %d after step 200", live10, liveEnd)
	}
	if d := memEnd - mem10; d > 512 || d < -512 {
		t.Errorf("active memory: %d bytes after step 10, %d after step 200", mem10, memEnd)
	}
	if got := LiveArrays(); got != liveBefore {
		t.Errorf("live arrays after the test: %d, before: %d", got, liveBefore)
	}
	settleForgotten(t)
	if d := ForgottenArrays() - forgotten0; d != 0 {
		t.Errorf("the GC backstop freed %d arrays", d)
	}
	if !forgottenControlRan.Load() && ForgottenArrays() != 0 {
		t.Errorf("ForgottenArrays() = %d, want 0", ForgottenArrays())
	}
	t.Logf("live arrays %d, active memory %d bytes (step 10 and 200)", liveEnd, memEnd)
}

// TestForgottenArrayBackstop proves the counter counts: an array dropped
// without Free or scope is freed by the GC backstop and counted.
func TestForgottenArrayBackstop(t *testing.T) {
	settleForgotten(t)
	before, live := ForgottenArrays(), LiveArrays()
	forgottenControlRan.Store(true)
	if err := Do(func() error {
		a := Zeros(Float32, 16) // outside any scope, never freed
		return a.Err()
	}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(2 * time.Second)
	for ForgottenArrays() == before && time.Now().Before(deadline) {
		settleForgotten(t)
	}
	settleForgotten(t)
	if d := ForgottenArrays() - before; d != 1 {
		t.Errorf("backstop freed %d arrays, want 1", d)
	}
	if LiveArrays() != live {
		t.Errorf("live arrays %d, want %d after the backstop freed the array", LiveArrays(), live)
	}
}

func TestScopeKeepDetach(t *testing.T) {
	base := LiveArrays()
	var kept, detached *Array
	inMLX(t, func() error {
		outer := NewScope()
		inner := NewScope()
		a := FromFloat32s([]float32{1, 2}, 2)
		b := AddScalar(a, 1)
		kept = inner.Keep(b)
		detached = MulScalar(a, 3)
		Detach(detached)
		inner.Close()
		if a.Valid() || !b.Valid() || !detached.Valid() {
			t.Errorf("after inner close: a valid %v, kept valid %v, detached valid %v", a.Valid(), b.Valid(), detached.Valid())
		}
		if err := checkExact(b, []int{2}, []float64{2, 3}); err != nil {
			t.Errorf("kept: %v", err)
		}
		outer.Close()
		if b.Valid() {
			t.Errorf("kept array survived its new owner")
		}
		if err := checkExact(detached, []int{2}, []float64{3, 6}); err != nil {
			t.Errorf("detached: %v", err)
		}
		inner.Close() // closing twice does nothing
		return nil
	})
	if kept.Valid() {
		t.Errorf("kept array still valid")
	}
	if LiveArrays() != base+1 {
		t.Errorf("live arrays %d, want %d (the detached one)", LiveArrays(), base+1)
	}
	if err := Do(func() error { detached.Free(); detached.Free(); return nil }); err != nil {
		t.Fatal(err)
	}
	if LiveArrays() != base {
		t.Errorf("live arrays %d after Free, want %d", LiveArrays(), base)
	}
}

var notOwnerRE = regexp.MustCompile(`does not own MLX.*mlx\.Do`)

func TestWrongThread(t *testing.T) {
	owned, err := Call(func() (*Array, error) {
		a := FromFloat32s([]float32{1, 2, 3}, 3)
		return a, a.Err()
	})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if OnOwnerThread() {
			t.Errorf("a locked goroutine outside Do claims to be the owner")
		}
		for name, a := range map[string]*Array{
			"FromFloat32s": FromFloat32s([]float32{1}, 1),
			"Zeros":        Zeros(Float32, 2),
			"Arange":       Arange(0, 3, 1, Int32),
			"Add":          Add(owned, owned),
			"RandomKey":    RandomKey(1),
		} {
			if err := a.Err(); err == nil || !notOwnerRE.MatchString(err.Error()) {
				t.Errorf("%s from another thread: %v", name, err)
			}
			if a.Valid() {
				t.Errorf("%s from another thread returned a valid array", name)
			}
		}
		if err := Eval(owned); err == nil || !notOwnerRE.MatchString(err.Error()) {
			t.Errorf("Eval from another thread: %v", err)
		}
		if _, err := owned.Float32s(); err == nil || !notOwnerRE.MatchString(err.Error()) {
			t.Errorf("reading from another thread: %v", err)
		}
		if err := RandomSeed(3); err == nil || !notOwnerRE.MatchString(err.Error()) {
			t.Errorf("RandomSeed from another thread: %v", err)
		}
		if _, err := NewValueAndGrad(func([]*Array) ([]*Array, error) { return nil, nil }, 0); err == nil || !notOwnerRE.MatchString(err.Error()) {
			t.Errorf("NewValueAndGrad from another thread: %v", err)
		}
	}()
	<-done
	// The owner and its array are unaffected.
	inMLX(t, func() error {
		defer owned.Free()
		return checkExact(Add(owned, owned), []int{3}, []float64{2, 4, 6})
	})
}

func TestDoConcurrent(t *testing.T) {
	var active, maxActive, calls atomic.Int32
	var wg sync.WaitGroup
	errs := make(chan error, 200)
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 25 {
				err := Do(func() error {
					n := active.Add(1)
					defer active.Add(-1)
					if n > maxActive.Load() {
						maxActive.Store(n)
					}
					calls.Add(1)
					if !OnOwnerThread() {
						return errors.New("Do ran off the owner thread")
					}
					s := NewScope()
					defer s.Close()
					v := float64(g*100 + i)
					// Call inside Do runs inline on the owner thread.
					got, err := Call(func() (float64, error) {
						if _, err := AddScalar(Full(v, Float32, 2), 0.5).Item(); err == nil {
							return 0, errors.New("Item of 2 elements succeeded")
						}
						return Sum(AddScalar(Full(v, Float32, 2), 0.5), false).Item()
					})
					if err != nil {
						return err
					}
					if got != 2*v+1 {
						return fmt.Errorf("goroutine %d call %d: got %v, want %v", g, i, got, 2*v+1)
					}
					return nil
				})
				if err != nil {
					errs <- err
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if calls.Load() != 200 || maxActive.Load() != 1 {
		t.Errorf("%d calls, at most %d at once (want 200, 1)", calls.Load(), maxActive.Load())
	}
}

func TestPanicInDo(t *testing.T) {
	base := LiveArrays()
	err := Do(func() error {
		s := NewScope()
		_ = Zeros(Float32, 8)
		NewScope() // left open too
		_ = Ones(Float32, 8)
		_ = s
		panic("boom in Do")
	})
	if err == nil || !strings.Contains(err.Error(), "boom in Do") || !strings.Contains(err.Error(), "panic") {
		t.Fatalf("panic in Do returned %v", err)
	}
	if LiveArrays() != base {
		t.Errorf("live arrays %d after the panic, want %d (the open scopes are closed)", LiveArrays(), base)
	}
	// The owner thread keeps working.
	inMLX(t, func() error {
		if !OnOwnerThread() {
			return errors.New("not on the owner thread after a panic")
		}
		return checkExact(Add(Full(2, Float32, 2), Full(3, Float32, 2)), []int{2}, []float64{5, 5})
	})
	// A runtime error (nil map write) is a panic too.
	err = Do(func() error {
		var m map[string]int
		m["x"] = 1
		return nil
	})
	if err == nil || !strings.Contains(err.Error(), "nil map") {
		t.Errorf("runtime panic in Do returned %v", err)
	}
	if err := Do(func() error { return errors.New("plain error") }); err == nil || err.Error() != "plain error" {
		t.Errorf("Do did not pass an error through: %v", err)
	}
}

func TestCallbackErrors(t *testing.T) {
	inMLX(t, func() error {
		base := LiveArrays()
		mode := "ok"
		f := func(in []*Array) ([]*Array, error) {
			y := Sum(Square(in[0]), false)
			switch mode {
			case "error":
				return nil, errors.New("loss failed: bad batch")
			case "panic":
				panic("callback exploded")
			case "bad-result":
				return []*Array{Reshape(y, 5)}, nil
			case "nil-result":
				return []*Array{nil}, nil
			}
			return []*Array{y}, nil
		}
		vg, err := NewValueAndGrad(f, 0)
		if err != nil {
			return err
		}
		defer vg.Free()
		x := FromFloat32s([]float32{1, -2, 3}, 3)
		for _, c := range []struct{ mode, want string }{
			{"error", "loss failed: bad batch"},
			{"panic", "callback exploded"},
			{"bad-result", "reshape"},
			{"nil-result", "nil array"},
			{"ok", ""},
			{"panic", "callback exploded"},
			{"ok", ""},
		} {
			mode = c.mode
			s := NewScope()
			vals, grads, err := vg.Call(x)
			if c.want == "" {
				if err != nil {
					t.Errorf("%s: %v", c.mode, err)
				} else {
					if e := checkExact(vals[0], []int{}, []float64{14}); e != nil {
						t.Errorf("value after errors: %v", e)
					}
					if e := checkExact(grads[0], []int{3}, []float64{2, -4, 6}); e != nil {
						t.Errorf("grad after errors: %v", e)
					}
				}
			} else if e := errMentions(err, c.want); e != nil {
				t.Errorf("%s: %v", c.mode, e)
			} else if !strings.Contains(err.Error(), "ValueAndGrad") {
				t.Errorf("%s: error %q does not name ValueAndGrad", c.mode, err)
			}
			s.Close()
		}
		// Vjp and a compiled closure report callback failures too.
		mode = "panic"
		one := Scalar(1, Float32)
		if _, _, err := Vjp(f, []*Array{x}, []*Array{one}); errMentions(err, "callback exploded") != nil {
			t.Errorf("Vjp with a panicking callback: %v", err)
		}
		one.Free()
		mode = "error"
		cl := NewClosure(f)
		defer cl.Free()
		if err := cl.Compile(false); err != nil {
			return err
		}
		if _, err := cl.Call(x); errMentions(err, "bad batch") != nil {
			t.Errorf("compiled closure with a failing callback: %v", err)
		}
		if _, err := cl.Checkpoint(x); errMentions(err, "bad batch") != nil {
			t.Errorf("checkpoint with a failing callback: %v", err)
		}
		x.Free()
		if LiveArrays() != base {
			t.Errorf("live arrays %d after failing callbacks, want %d", LiveArrays(), base)
		}
		return nil
	})
}

func TestErrorPropagationAndUseAfterFree(t *testing.T) {
	inMLX(t, func() error {
		a := FromFloat32s([]float32{1, 2, 3, 4}, 2, 2)
		bad := Reshape(a, 3)
		first := bad.Err()
		if e := errMentions(first, "reshape"); e != nil {
			return e
		}
		// Every op on an error array returns that same error.
		chain := Sum(Exp(Add(MulScalar(bad, 2), a)), false)
		for name, x := range map[string]*Array{
			"chain":       chain,
			"Matmul":      Matmul(a, bad),
			"Where":       Where(Greater(a, Zeros(Float32, 2, 2)), bad, a),
			"Concatenate": Concatenate([]*Array{a, bad}, 0),
			"RMSNorm":     RMSNorm(bad, nil, 1e-5),
			"AsType":      AsType(bad, Float16),
			"Clip":        Clip(a, nil, bad),
		} {
			if x.Err() != first {
				t.Errorf("%s: error %v, want the original %v", name, x.Err(), first)
			}
		}
		if err := Eval(a, chain); err != first {
			t.Errorf("Eval: %v", err)
		}
		if _, err := chain.Item(); err != first {
			t.Errorf("Item: %v", err)
		}
		if _, err := Split(bad, 2, 0); err != first {
			t.Errorf("Split: %v", err)
		}
		// nil arrays.
		if e := errMentions(Add(nil, a).Err(), "nil array"); e != nil {
			t.Errorf("Add(nil): %v", e)
		}
		// Use after Free.
		b := AddScalar(a, 1)
		live := LiveArrays()
		b.Free()
		b.Free()
		if LiveArrays() != live-1 {
			t.Errorf("live arrays %d after double Free, want %d", LiveArrays(), live-1)
		}
		for name, err := range map[string]error{
			"Err":     b.Err(),
			"Add":     Add(b, a).Err(),
			"Float32": func() error { _, err := b.Float32s(); return err }(),
			"Eval":    Eval(b),
			"Bytes":   func() error { _, err := b.Bytes(); return err }(),
		} {
			if e := errMentions(err, "freed"); e != nil {
				t.Errorf("%s after Free: %v", name, e)
			}
		}
		if b.Valid() || b.Shape() != nil || b.Size() != 0 {
			t.Errorf("freed array reports valid %v shape %v size %d", b.Valid(), b.Shape(), b.Size())
		}
		// Freed transforms.
		vg, err := NewValueAndGrad(func(in []*Array) ([]*Array, error) { return in, nil }, 0)
		if err != nil {
			return err
		}
		vg.Free()
		vg.Free()
		if _, _, err := vg.Call(a); errMentions(err, "freed") != nil {
			t.Errorf("Call after Free: %v", err)
		}
		return nil
	})
}

func TestMemoryDeviceVersion(t *testing.T) {
	if v := Version(); v != "0.32.4" && !regexp.MustCompile(`^\d+\.\d+\.\d+`).MatchString(v) {
		t.Errorf("Version() = %q", v)
	} else {
		t.Logf("MLX %s, backend %s", v, Backend())
	}
	if Backend() != "cpu" || GPUAvailable() {
		t.Errorf("Backend() = %q, GPUAvailable() = %v on this CPU machine", Backend(), GPUAvailable())
	}
	inMLX(t, func() error {
		if DefaultDevice() != CPU || DefaultDevice().String() != "cpu" {
			t.Errorf("DefaultDevice() = %v", DefaultDevice())
		}
		if err := SetDefaultDevice(CPU); err != nil {
			t.Errorf("SetDefaultDevice(CPU): %v", err)
		}
		if err := SetDefaultDevice(GPU); err == nil {
			t.Errorf("SetDefaultDevice(GPU) succeeded without a GPU")
			SetDefaultDevice(CPU)
		}
		if DefaultDevice() != CPU {
			t.Errorf("default device changed to %v", DefaultDevice())
		}

		const n = 1 << 20 // 4 MiB of float32
		ClearCache()
		active0 := ActiveMemory()
		a := Full(1.5, Float32, n)
		if err := Eval(a); err != nil {
			return err
		}
		active1 := ActiveMemory()
		if active1-active0 < 4*n {
			t.Errorf("active memory grew by %d bytes for a %d-byte array", active1-active0, 4*n)
		}
		if PeakMemory() < active1 {
			t.Errorf("peak %d < active %d", PeakMemory(), active1)
		}
		ResetPeakMemory()
		if p := PeakMemory(); p > active1 {
			t.Errorf("peak %d after reset, above the active %d", p, active1)
		}
		b := Full(2, Float32, n)
		if err := Eval(b); err != nil {
			return err
		}
		if p := PeakMemory(); p < ActiveMemory() || p < 8*n {
			t.Errorf("peak %d after a second array, active %d", p, ActiveMemory())
		}

		// With a cache limit, a freed buffer stays cached; ClearCache
		// returns it; with a zero limit nothing is cached.
		old := SetCacheLimit(1 << 30)
		defer SetCacheLimit(old)
		b.Free()
		if c := CacheMemory(); c < 4*n {
			t.Errorf("cache %d bytes after freeing a %d-byte array", c, 4*n)
		}
		if ActiveMemory() > active1+4096 {
			t.Errorf("active memory %d after freeing, want about %d", ActiveMemory(), active1)
		}
		ClearCache()
		if c := CacheMemory(); c != 0 {
			t.Errorf("cache %d bytes after ClearCache", c)
		}
		if prev := SetCacheLimit(0); prev != 1<<30 {
			t.Errorf("SetCacheLimit returned %d, want the previous 1 GiB", prev)
		}
		a.Free()
		if c := CacheMemory(); c != 0 {
			t.Errorf("cache %d bytes with a zero cache limit", c)
		}
		if ActiveMemory() > active0+4096 {
			t.Errorf("active memory %d after freeing everything, want about %d", ActiveMemory(), active0)
		}
		oldLimit := SetMemoryLimit(1 << 40)
		if back := SetMemoryLimit(oldLimit); back != 1<<40 {
			t.Errorf("SetMemoryLimit returned %d, want the 1 TiB just set", back)
		}
		if w := SetWiredLimit(0); w != 0 && Backend() != "metal" {
			t.Errorf("SetWiredLimit = %d off Metal", w)
		}
		return nil
	})
}
