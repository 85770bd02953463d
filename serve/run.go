package serve

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"time"

	"github.com/fungtrain/fungtrain/llama"
	"github.com/fungtrain/fungtrain/llama/constrain"
	"github.com/fungtrain/fungtrain/lora"
	"github.com/fungtrain/fungtrain/mlx"
)

// AdapterSpec is one --adapter: a name and an adapter directory.
type AdapterSpec struct {
	Name, Dir string
}

// ParseAdapterSpec parses NAME=DIR, or DIR (named after its last path
// element).
func ParseAdapterSpec(s string) (AdapterSpec, error) {
	name, dir, ok := strings.Cut(s, "=")
	if !ok {
		dir, name = s, trimModelPath(s)
	}
	if name == "" || dir == "" {
		return AdapterSpec{}, fmt.Errorf("--adapter %q: want DIR or NAME=DIR", s)
	}
	return AdapterSpec{Name: name, Dir: dir}, nil
}

// RunOptions configure Run.
type RunOptions struct {
	ModelPath string
	Load      llama.LoadOptions
	Adapters  []AdapterSpec
	Addr      string // host:port
	Engine    llama.EngineOptions
	// ShutdownTimeout is how long requests in flight may run on after
	// SIGINT/SIGTERM before they are cancelled.
	ShutdownTimeout time.Duration
	Server          Options
	// Constraints builds response_format constraints from the loaded
	// tokenizer; nil uses package constrain over the tokenizer's byte
	// trie (and refuses response_format when the tokenizer is not
	// byte-level).
	Constraints func(*llama.Tokenizer) (ConstraintFactory, error)
	// Listening, if set, is called with the bound address once the server
	// accepts connections (before the model has loaded).
	Listening func(addr net.Addr)
}

// Run serves until ctx ends: it listens at once (/health says 503 while the
// model loads), loads the model and adapters on the MLX thread and runs the
// engine there. When ctx ends it stops accepting requests, lets those in
// flight finish for up to ShutdownTimeout, cancels the rest and returns
// nil. A model that fails to load is an error.
func Run(ctx context.Context, o RunOptions) error {
	log := o.Server.Logger
	if log == nil {
		log = slog.Default()
		o.Server.Logger = log
	}
	if o.Server.ModelID == "" {
		o.Server.ModelID = trimModelPath(o.ModelPath)
		o.Server.ModelAliases = append(o.Server.ModelAliases, o.ModelPath)
	}
	if o.ShutdownTimeout <= 0 {
		o.ShutdownTimeout = 30 * time.Second
	}
	o.Engine.Logger = log
	ln, err := net.Listen("tcp", o.Addr)
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	srv := New(o.Server)
	hs := &http.Server{Handler: srv.Handler(), ReadHeaderTimeout: 30 * time.Second,
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}
	served := make(chan error, 1)
	go func() { served <- hs.Serve(ln) }()
	log.Info("listening", "addr", ln.Addr().String(), "model", o.ModelPath)
	if o.Listening != nil {
		o.Listening(ln.Addr())
	}

	engineCtx, stopEngine := context.WithCancel(context.Background())
	defer stopEngine()
	engineDone := make(chan error, 1)
	go func() { engineDone <- mlx.Do(func() error { return runEngine(engineCtx, srv, o, log) }) }()

	var runErr error
	select {
	case <-ctx.Done():
		log.Info("shutting down: no new requests; waiting for those in flight", "deadline", o.ShutdownTimeout)
	case runErr = <-engineDone:
		engineDone <- runErr
	case err := <-served:
		runErr = fmt.Errorf("serve: %w", err)
	}
	srv.Drain()
	sctx, cancel := context.WithTimeout(context.Background(), o.ShutdownTimeout)
	err = hs.Shutdown(sctx)
	cancel()
	if errors.Is(err, context.DeadlineExceeded) {
		log.Warn("shutdown deadline passed: cancelling the requests still running")
		stopEngine()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if hs.Shutdown(sctx) != nil {
			hs.Close()
		}
		cancel()
	}
	stopEngine()
	if err := <-engineDone; err != nil && runErr == nil {
		runErr = err
	}
	if runErr == nil {
		log.Info("stopped")
	}
	return runErr
}

// runEngine loads the model on the MLX thread, makes srv ready and runs the
// engine until ctx ends.
func runEngine(ctx context.Context, srv *Server, o RunOptions, log *slog.Logger) error {
	t0 := time.Now()
	b, err := llama.Open(o.ModelPath, o.Load)
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	defer b.Close()
	names := []string{""}
	if len(o.Adapters) > 0 {
		set, err := installAdapters(b.Model, o.Adapters)
		if err != nil {
			return fmt.Errorf("serve: %w", err)
		}
		defer set.Remove()
		o.Engine.Batch.Adapters = set
		names = set.Names()
	}
	// Make the decode plan (fused and transposed weights) now, not on the
	// first request, whose latency would carry it.
	if err := b.Model.PrepareDecode(llama.DecodeSettingsFromEnv()); err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	backend := &Backend{Tokenizer: b.Tokenizer, StopIDs: b.StopIDs, Adapters: names}
	if o.Constraints == nil {
		o.Constraints = vocabConstraints
	}
	if backend.Constraints, err = o.Constraints(b.Tokenizer); err != nil {
		log.Warn("response_format will be refused", "reason", err)
	}
	backend.Engine = llama.NewEngine(b.Model, o.Engine)
	srv.SetBackend(backend)
	log.Info("model loaded", "model", o.ModelPath, "adapters", names[1:], "dtype", b.Model.Dtype,
		"context", b.Model.Config.MaxPositionEmbeddings, "seconds", time.Since(t0).Seconds())
	return backend.Engine.Run(ctx)
}

// vocabConstraints builds JSON constraints over the tokenizer's byte trie.
func vocabConstraints(t *llama.Tokenizer) (ConstraintFactory, error) {
	pieces, err := t.TokenPieces()
	if err != nil {
		return nil, fmt.Errorf("%w: %v", constrain.ErrNotByteLevel, err)
	}
	return jsonConstraints{constrain.NewVocab(pieces)}, nil
}

type jsonConstraints struct{ v *constrain.Vocab }

func (j jsonConstraints) JSON(schema json.RawMessage) (llama.TokenConstraint, error) {
	c, err := j.v.JSON(schema)
	if err != nil {
		return nil, err
	}
	return c, nil
}

// installAdapters reads each adapter directory (fungtrain's or mlx-lm's
// format) with lora.Load and installs them all as one AdapterSet.
func installAdapters(m *llama.Model, specs []AdapterSpec) (*llama.AdapterSet, error) {
	var named []llama.NamedAdapter
	free := func() {
		for _, n := range named {
			for _, f := range n.Modules {
				f.A.Free()
				f.B.Free()
			}
		}
	}
	for _, sp := range specs {
		a, err := lora.Load(m, sp.Dir)
		if err != nil {
			free()
			return nil, fmt.Errorf("--adapter %s=%s: %w", sp.Name, sp.Dir, err)
		}
		n := llama.NamedAdapter{Name: sp.Name, Modules: map[string]llama.LoRAFactors{}}
		for name, l := range a.Layers {
			// Take the factors out of the lora layers before Remove
			// frees them and restores the base layers.
			n.Modules[name] = llama.LoRAFactors{A: l.A, B: l.B, Scale: l.Scale}
			l.A, l.B = nil, nil
		}
		a.Remove()
		named = append(named, n)
		slog.Debug("adapter read", "name", sp.Name, "dir", filepath.Clean(sp.Dir), "modules", len(n.Modules))
	}
	set, err := m.InstallAdapters(named)
	if err != nil {
		free()
		return nil, err
	}
	return set, nil
}
