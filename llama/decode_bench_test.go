package llama

import (
	"runtime"
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
