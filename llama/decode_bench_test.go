package llama

import (
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/fungtrain/fungtrain/mlx"
)

// hostShape has the op graph of Llama-3.2-3B (28 layers, 24 query and 8 KV
// heads, llama3 RoPE, tied embeddings) with tiny tensors, so that building
// and running a decode step costs what its ops cost, not arithmetic.
func hostShape() *Config {
	c, _ := ShapeConfig("llama-3.2-3b")
	c.HiddenSize, c.NumHeads, c.NumKVHeads, c.HeadDim, c.IntermediateSize, c.VocabSize = 192, 24, 8, 8, 512, 1024
	return c
}

// BenchmarkDecodeStepGraph measures building one decode step's graph (the
// Go code, its cgo calls and MLX's graph construction; nothing is
// evaluated), in CPU time of the MLX thread (wall time on a shared machine
// mostly measures the other jobs), on the 3B op graph after a 128-token prompt, per decode
// setting. On the CPU, MLX expands RMSNorm, RoPE and attention into their
// fallback ops while building, which a GPU does not.
//
//	go test -run - -bench DecodeStepGraph -benchtime 200x ./llama
func BenchmarkDecodeStepGraph(b *testing.B) {
	for _, v := range []struct {
		name string
		s    DecodeSettings
	}{
		{"defaults", DecodeSettings{Depth: 1}},
		{"transposed", DecodeSettings{Transposed: true, Depth: 1}},
		{"fused", DecodeSettings{Fuse: true, Depth: 1}},
		{"swiglu", DecodeSettings{CompiledSwiGLU: true, Depth: 1}},
		{"all", DecodeSettings{Transposed: true, Fuse: true, CompiledSwiGLU: true, Depth: 1}},
	} {
		b.Run(v.name, func(b *testing.B) {
			doMLX(b, func() error {
				m, err := NewRandomModel(hostShape(), mlx.Float32, 1)
				if err != nil {
					return err
				}
				defer m.Free()
				if err := m.PrepareDecode(v.s); err != nil {
					return err
				}
				caches := m.NewCaches()
				defer FreeCaches(caches)
				prompt := randomPrompt(3, 128, m.Config.VocabSize)
				s := mlx.NewScope()
				err = mlx.Eval(m.Hidden(mlx.FromInt32s(prompt, 1, len(prompt)), caches))
				s.Close()
				if err != nil {
					return err
				}
				smp := newSampler(SampleOptions{})
				var build time.Duration
				var calls int64
				b.ReportAllocs()
				b.ResetTimer()
				for range b.N {
					s := mlx.NewScope()
					// Each step builds on handles of its own to the
					// evaluated cache, freed unevaluated afterwards.
					cs := make([]*KVCache, len(caches))
					for i, c := range caches {
						cs[i] = &KVCache{Offset: c.Offset, keys: mlx.Reshape(c.keys, c.keys.Shape()...),
							values: mlx.Reshape(c.values, c.values.Shape()...)}
						mlx.Detach(cs[i].keys, cs[i].values)
					}
					t, c := threadCPU(), runtime.NumCgoCall()
					logits := m.Forward(mlx.FromInt32s(prompt[:1], 1, 1), cs)
					next := smp.sample(mlx.Reshape(logits, 1, -1), nil)
					build += threadCPU() - t
					calls += runtime.NumCgoCall() - c
					if err := next.Err(); err != nil {
						return err
					}
					FreeCaches(cs)
					s.Close()
				}
				b.ReportMetric(float64(build.Microseconds())/float64(b.N), "build-cpu-µs/step")
				b.ReportMetric(float64(calls)/float64(b.N), "cgo-calls/step")
				return nil
			})
		})
	}
}

// stepHarness builds one decode step's graph over evaluated caches, again
// and again: before makes fresh handles to the caches (untimed), build
// makes the step's graph (timed; nothing is evaluated), after frees what
// build left in the caches and restores them (untimed).
type stepHarness struct {
	before func()
	build  func() *mlx.Array
	after  func()
	close  func()
}

// generateStepHarness builds Generate's decode step (Forward, the last
// position's logits, the sampler, as generate.go's step does) after a
// 128-token prompt, its input the previous step's token.
func generateStepHarness(m *Model) (*stepHarness, error) {
	caches := m.NewCaches()
	prompt := randomPrompt(3, 128, m.Config.VocabSize)
	s := mlx.NewScope()
	err := mlx.Eval(m.Hidden(mlx.FromInt32s(prompt, 1, len(prompt)), caches))
	s.Close()
	input := mlx.FromInt32s(prompt[:1], 1, 1)
	mlx.Detach(input)
	if err == nil {
		err = mlx.Eval(input)
	}
	if err != nil {
		FreeCaches(caches)
		input.Free()
		return nil, err
	}
	smp := newSampler(SampleOptions{})
	var cs []*KVCache
	return &stepHarness{
		before: func() {
			cs = make([]*KVCache, len(caches))
			for i, c := range caches {
				cs[i] = &KVCache{Offset: c.Offset, keys: mlx.Reshape(c.keys, c.keys.Shape()...),
					values: mlx.Reshape(c.values, c.values.Shape()...)}
				mlx.Detach(cs[i].keys, cs[i].values)
			}
		},
		build: func() *mlx.Array {
			logits := m.Forward(input, cs)
			last := mlx.Reshape(mlx.SliceAxis(logits, 1, logits.Dim(1)-1, logits.Dim(1)), 1, -1)
			return mlx.Reshape(smp.sample(last, nil), 1, 1)
		},
		after: func() { FreeCaches(cs) },
		close: func() { FreeCaches(caches); input.Free() },
	}, nil
}

// batchStepHarness fills a Batch with rows greedy sequences (prompts of 97
// to 128 tokens, so that rows are padded and attention is masked, as in
// serving; one row has 128) and builds its pipelined decode step, on the
// previous step's tokens.
func batchStepHarness(m *Model, rows int) (*stepHarness, error) {
	bt := NewBatch(m, BatchOptions{MaxBatch: rows})
	for i := range rows {
		n := 128 - i%32
		if err := bt.Add(SeqRequest{Prompt: randomPrompt(3+i, n, m.Config.VocabSize), MaxTokens: 4096}); err != nil {
			return nil, err
		}
	}
	for len(bt.rows) < rows || len(bt.prefilling) > 0 {
		if err := bt.Step(); err != nil {
			return nil, err
		}
	}
	for range 2 {
		if err := bt.Step(); err != nil {
			return nil, err
		}
	}
	tokens := mlx.FromInt32s(make([]int32, rows), rows, 1)
	mlx.Detach(tokens)
	if err := mlx.Eval(tokens); err != nil {
		bt.Close()
		return nil, err
	}
	saved := make([][2]*mlx.Array, len(bt.caches))
	return &stepHarness{
		before: func() {
			for i, c := range bt.caches {
				saved[i] = [2]*mlx.Array{c.keys, c.values}
				c.keys, c.values = mlx.Reshape(c.keys, c.keys.Shape()...), mlx.Reshape(c.values, c.values.Shape()...)
				mlx.Detach(c.keys, c.values)
			}
		},
		build: func() *mlx.Array {
			next, err := bt.stepGraph(tokens)
			if err != nil {
				return mlx.ErrorArray(err)
			}
			return next
		},
		after: func() {
			for i, c := range bt.caches {
				c.free()
				c.keys, c.values = saved[i][0], saved[i][1]
			}
		},
		close: func() { tokens.Free(); bt.Close() },
	}, nil
}

// BenchmarkBatchStepGraph measures the host cost of one decode step of a
// Batch (what `fungtrain serve` decodes with) at 1 and 32 rows against
// Generate's step, on the 3B op graph with tiny tensors under
// DefaultDecodeSettings: the MLX thread's CPU time building the graph,
// its cgo calls and Go allocations, and the MLX arrays it creates (one
// per op called from Go; on a GPU RMSNorm, RoPE and attention are one
// primitive each, which the CPU expands further inside MLX).
//
//	go test -run - -bench BatchStepGraph -benchtime 200x ./llama
func BenchmarkBatchStepGraph(b *testing.B) {
	for _, rows := range []int{0, 1, 32} {
		name := "generate"
		if rows > 0 {
			name = fmt.Sprintf("batch=%d", rows)
		}
		b.Run(name, func(b *testing.B) {
			doMLX(b, func() error {
				m, err := NewRandomModel(hostShape(), mlx.Float32, 1)
				if err != nil {
					return err
				}
				defer m.Free()
				if err := m.PrepareDecode(DefaultDecodeSettings); err != nil {
					return err
				}
				var h *stepHarness
				if rows == 0 {
					h, err = generateStepHarness(m)
				} else {
					h, err = batchStepHarness(m, rows)
				}
				if err != nil {
					return err
				}
				defer h.close()
				return measureSteps(b, h)
			})
		})
	}
}

// measureSteps times b.N steps of h and reports per step: thread CPU,
// cgo calls, Go allocations and MLX arrays created.
func measureSteps(b *testing.B, h *stepHarness) error {
	var cpu time.Duration
	var calls int64
	var allocs uint64
	var m0, m1 runtime.MemStats
	b.ResetTimer()
	for range b.N {
		s := mlx.NewScope()
		h.before()
		runtime.ReadMemStats(&m0)
		t, c := threadCPU(), runtime.NumCgoCall()
		out := h.build()
		cpu += threadCPU() - t
		calls += runtime.NumCgoCall() - c
		runtime.ReadMemStats(&m1)
		allocs += m1.Mallocs - m0.Mallocs
		err := out.Err()
		h.after()
		s.Close()
		if err != nil {
			return err
		}
	}
	b.StopTimer()
	const counted = 3
	arrays := arraysCreated(func() {
		for range counted {
			s := mlx.NewScope()
			h.before()
			countedBuild(h.build)
			h.after()
			s.Close()
		}
	})
	b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "build-cpu-µs/step")
	b.ReportMetric(float64(calls)/float64(b.N), "cgo-calls/step")
	b.ReportMetric(float64(allocs)/float64(b.N), "go-allocs/step")
	b.ReportMetric(float64(arrays)/counted, "mlx-ops/step")
	return nil
}

// countedBuild runs build; arraysCreated counts the arrays made under it.
//
//go:noinline
func countedBuild(build func() *mlx.Array) *mlx.Array { return build() }

// arraysCreated counts the MLX arrays created under countedBuild while f
// runs, from a heap profile of every allocation: each array's handle is
// one allocation in mlx.newArray.
func arraysCreated(f func()) int64 {
	procs := runtime.GOMAXPROCS(1) // one P, whose sampling restarts below
	defer runtime.GOMAXPROCS(procs)
	rate := runtime.MemProfileRate
	runtime.MemProfileRate = 1
	defer func() { runtime.MemProfileRate = rate }()
	sink = make([]byte, 64<<20) // past any pending sample: the next ones are every byte
	sink = nil
	count := func() int64 {
		runtime.GC()
		runtime.GC()
		n, _ := runtime.MemProfile(nil, true)
		recs := make([]runtime.MemProfileRecord, n+64)
		n, _ = runtime.MemProfile(recs, true)
		var total int64
		for _, r := range recs[:n] {
			frames := runtime.CallersFrames(r.Stack())
			first, under := "", false
			for {
				fr, more := frames.Next()
				// The allocating function, past the allocator's own frames
				// (runtime.growslice is another function: a scope's list).
				if first == "" && fr.Function != "runtime.mallocgc" && fr.Function != "runtime.newobject" {
					first = fr.Function
				}
				if strings.HasSuffix(fr.Function, "llama.countedBuild") {
					under = true
				}
				if !more {
					break
				}
			}
			if under && strings.HasSuffix(first, "mlx.newArray") {
				total += r.AllocObjects
			}
		}
		return total
	}
	before := count()
	f()
	return count() - before
}

var sink []byte
