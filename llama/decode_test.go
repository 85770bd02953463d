package llama

import (
	"fmt"
	"math"
	"slices"
	"testing"

	"github.com/fungtrain/fungtrain/mlx"
)

// decodeVariants are the decode settings the tests compare with the
// defaults: each must decode exactly what the defaults decode.
var decodeVariants = []struct {
	name string
	s    DecodeSettings
}{
	{"transposed", DecodeSettings{Transposed: true, Depth: 1}},
	{"fused", DecodeSettings{Fuse: true, Depth: 1}},
	{"compiled swiglu", DecodeSettings{CompiledSwiGLU: true, Depth: 1}},
	{"copy cache", DecodeSettings{CopyCache: true, Depth: 1}},
	{"depth 0", DecodeSettings{Depth: 0}},
	{"depth 3", DecodeSettings{Depth: 3}},
	{"all", DecodeSettings{Transposed: true, Fuse: true, CompiledSwiGLU: true, Depth: 2}},
	{"fused, transposed", DecodeSettings{Transposed: true, Fuse: true, Depth: 1}},
	{"defaults again", DecodeSettings{Depth: 1}}, // after fusing: the layers' weights are views
}

// stepLogits prefills prompt[:len-1] and returns the logits of one decode
// step on the last prompt token, through the cached path Generate takes.
func stepLogits(m *Model, prompt []int32) ([]float32, error) {
	caches := m.NewCaches()
	defer FreeCaches(caches)
	s := mlx.NewScope()
	defer s.Close()
	n := len(prompt) - 1
	if err := mlx.Eval(m.Hidden(mlx.FromInt32s(prompt[:n], 1, n), caches)); err != nil {
		return nil, err
	}
	return m.Forward(mlx.FromInt32s(prompt[n:], 1, 1), caches).Float32s()
}

// decodeOutputs is what one setting decodes: a step's logits, and tokens
// greedy, sampled, stopped early and stopped by a stop token.
type decodeOutputs struct {
	logits                          []float32
	greedy, sampled, early, stopped []int32
}

func decodeAll(m *Model, prompt []int32) (decodeOutputs, error) {
	var o decodeOutputs
	var err error
	if o.logits, err = stepLogits(m, prompt); err != nil {
		return o, err
	}
	if o.greedy, _, err = generateIDs(m, prompt, GenerateOptions{MaxTokens: 12, PrefillChunk: 5}); err != nil {
		return o, err
	}
	sample := SampleOptions{Temp: 0.9, TopK: 20, TopP: 0.95, Seed: 4}
	if o.sampled, _, err = generateIDs(m, prompt, GenerateOptions{MaxTokens: 10, Sample: sample}); err != nil {
		return o, err
	}
	_, err = m.Generate(prompt, GenerateOptions{MaxTokens: 12}, func(id int32) bool {
		o.early = append(o.early, id)
		return len(o.early) < 4
	})
	if err != nil {
		return o, err
	}
	if len(o.greedy) > 6 {
		o.stopped, _, err = generateIDs(m, prompt, GenerateOptions{MaxTokens: 12, StopIDs: []int32{o.greedy[6]}})
	}
	return o, err
}

// compareDecode checks got against want: logits within tol (0: bit for
// bit) and every token sequence equal.
func compareDecode(t *testing.T, name string, got, want decodeOutputs, tol float64) {
	t.Helper()
	if worst := maxRelDiff(got.logits, want.logits); worst > tol {
		t.Errorf("%s: step logits differ from the defaults' by up to %.3g (relative), tolerance %g", name, worst, tol)
	}
	for _, c := range []struct {
		what      string
		got, want []int32
	}{{"greedy", got.greedy, want.greedy}, {"sampled", got.sampled, want.sampled},
		{"stopped by emit", got.early, want.early}, {"stopped by a stop id", got.stopped, want.stopped}} {
		if !slices.Equal(c.got, c.want) {
			t.Errorf("%s: %s tokens %v, defaults %v", name, c.what, c.got, c.want)
		}
	}
}

// cpuFusedTolerance bounds how far (relative) logits may move when q/k/v
// and gate/up run as one dense matmul on the CPU: the BLAS blocks a wider
// product differently and rounds a few float32 ulps apart. (On CUDA a
// batch-1 step's matmul is MLX's gemv, one warp per output row, which sums
// each row the same way whatever the number of rows; quantized matmuls
// are exact on the CPU too.)
const cpuFusedTolerance = 1e-4

// maxRelDiff is the largest |got-want| / max(1, |want|), +Inf when the
// lengths differ.
func maxRelDiff(got, want []float32) float64 {
	if len(got) != len(want) {
		return math.Inf(1)
	}
	worst := 0.0
	for i := range want {
		d := math.Abs(float64(got[i] - want[i]))
		worst = max(worst, d/max(1, math.Abs(float64(want[i]))))
	}
	return worst
}

// TestDecodeSettingsDecodeTheSame runs every decode setting on one random
// GQA model (float32, then 4-bit quantized) and compares a decode step's
// logits and the generated tokens with the defaults'. Rearranging the
// same products (transposed views, quantized fused matmuls, queueing) must
// be exact; the compiled SwiGLU may round differently in the last bit, and
// a dense fused matmul on the CPU within cpuFusedTolerance. Tokens must
// always be the same.
func TestDecodeSettingsDecodeTheSame(t *testing.T) {
	for _, quantized := range []bool{false, true} {
		t.Run(fmt.Sprintf("quantized=%v", quantized), func(t *testing.T) {
			m := peakyRandomModel(t)
			if quantized {
				doMLX(t, func() error { return quantizeLayers(m, 32, 4) })
			}
			prompt := randomPrompt(11, 9, m.Config.VocabSize)
			doMLX(t, func() error {
				if err := m.PrepareDecode(DecodeSettings{Depth: 1}); err != nil {
					return err
				}
				want, err := decodeAll(m, prompt)
				if err != nil {
					return err
				}
				if len(want.greedy) != 12 || len(want.stopped) != 6 || len(want.early) != 4 {
					return fmt.Errorf("defaults decoded %d greedy tokens (want 12), %d before the stop id (want 6), %d before emit stopped (want 4)",
						len(want.greedy), len(want.stopped), len(want.early))
				}
				for _, v := range decodeVariants {
					if err := m.PrepareDecode(v.s); err != nil {
						return fmt.Errorf("%s: %w", v.name, err)
					}
					before := mlx.LiveArrays()
					got, err := decodeAll(m, prompt)
					if err != nil {
						return fmt.Errorf("%s: %w", v.name, err)
					}
					if after := mlx.LiveArrays(); after != before {
						t.Errorf("%s: live arrays %d after decoding, %d before", v.name, after, before)
					}
					tol := 0.0
					if v.s.CompiledSwiGLU {
						tol = 1e-5
					}
					if v.s.Fuse && !quantized {
						tol = cpuFusedTolerance
					}
					compareDecode(t, v.name, got, want, tol)
				}
				return nil
			})
		})
	}
}

// quantizeLayers replaces every projection's dense weight by its affine
// quantization (what a 4-bit MLX checkpoint loads as).
func quantizeLayers(m *Model, groupSize, bits int) error {
	for _, b := range m.Layers {
		for _, p := range ModulePaths {
			slot, _ := b.Module(p)
			l := (*slot).(*Linear)
			q, err := mlx.Quantize(l.Weight, groupSize, bits)
			if err != nil {
				return err
			}
			mlx.Detach(q.Weight, q.Scales, q.Biases)
			if err := mlx.Eval(q.Weight, q.Scales, q.Biases); err != nil {
				return err
			}
			l.Weight.Free()
			l.Weight, l.Q = nil, &q
		}
	}
	return nil
}

// TestDecodeFusedWeights checks what fusing does to a model: every layer's
// q/k/v and gate/up share one matmul, the weights take no more memory, the
// fused path is the one that runs (a changed fused weight changes the
// logits: the negative control), a layer whose projection was wrapped or
// replaced falls back to its own matmuls, and freeing the model frees all.
func TestDecodeFusedWeights(t *testing.T) {
	cfg, err := ShapeConfig("tiny")
	if err != nil {
		t.Fatal(err)
	}
	doMLX(t, func() error {
		start := mlx.LiveArrays()
		m, err := NewRandomModel(cfg, mlx.Float32, 3)
		if err != nil {
			return err
		}
		prompt := randomPrompt(5, 7, cfg.VocabSize)
		want, err := stepLogits(m, prompt)
		if err != nil {
			return err
		}
		mlx.ClearCache()
		memBefore := mlx.ActiveMemory()
		if err := m.PrepareDecode(DecodeSettings{Fuse: true, Transposed: true, Depth: 1}); err != nil {
			return err
		}
		if grew := mlx.ActiveMemory() - memBefore; grew > memBefore/100 {
			t.Errorf("fusing grew active memory by %d bytes (of %d)", grew, memBefore)
		}
		for i, b := range m.Layers {
			if !b.Attn.qkv.usable(b.Attn.Q, b.Attn.K, b.Attn.V) || !b.MLP.gateUp.usable(b.MLP.Gate, b.MLP.Up) {
				t.Errorf("layer %d: not fused", i)
			}
		}
		got, err := stepLogits(m, prompt)
		if err != nil {
			return err
		}
		if d := maxRelDiff(got, want); d > cpuFusedTolerance {
			t.Errorf("fused logits differ from the separate matmuls' by %.3g (relative)", d)
		}

		// Negative control: scale layer 0's fused q/k/v weight.
		f := m.Layers[0].Attn.qkv
		w, wT := f.w, f.wT
		f.w = mlx.MulScalar(w, 2)
		f.wT = mlx.Transpose(f.w)
		changed, err := stepLogits(m, prompt)
		f.w.Free()
		f.wT.Free()
		f.w, f.wT = w, wT
		if err != nil {
			return err
		}
		if d := maxRelDiff(changed, want); d < 100*cpuFusedTolerance {
			t.Errorf("logits moved by %.3g when the fused weight doubled: the fused path did not run", d)
		}

		// A wrapped projection (as an adapter wraps it) and a replaced
		// weight: those layers fall back and decode the same.
		q0 := m.Layers[0].Attn.Q
		m.Layers[0].Attn.Q = wrapped{q0}
		up1 := m.Layers[1].MLP.Up.(*Linear)
		oldUp := up1.Weight
		up1.Weight = mlx.MulScalar(oldUp, 1)
		mlx.Detach(up1.Weight)
		if m.Layers[0].Attn.qkv.usable(m.Layers[0].Attn.Q, m.Layers[0].Attn.K, m.Layers[0].Attn.V) ||
			m.Layers[1].MLP.gateUp.usable(m.Layers[1].MLP.Gate, m.Layers[1].MLP.Up) {
			t.Errorf("a wrapped or replaced projection still counts as fused")
		}
		got, err = stepLogits(m, prompt)
		m.Layers[0].Attn.Q = q0
		up1.Weight.Free()
		up1.Weight = oldUp
		if err != nil {
			return err
		}
		if d := maxRelDiff(got, want); d > cpuFusedTolerance {
			t.Errorf("logits after the fallback differ from the separate matmuls' by %.3g (relative)", d)
		}
		m.Free()
		if after := mlx.LiveArrays(); after != start {
			t.Errorf("live arrays %d after Free, %d before the model", after, start)
		}
		return nil
	})
}

// wrapped stands for an adapter around a projection.
type wrapped struct{ Layer }

// TestDecodeHostTime checks the host-time split Generate reports: every
// part measured, and together no more than the decode phase.
func TestDecodeHostTime(t *testing.T) {
	m := peakyRandomModel(t)
	doMLX(t, func() error {
		_, st, err := generateIDs(m, randomPrompt(2, 6, m.Config.VocabSize), GenerateOptions{MaxTokens: 10})
		if err != nil {
			return err
		}
		h := st.Host
		if h.Tokens != st.GeneratedTokens-1 || h.Tokens != 9 {
			t.Errorf("host time over %d tokens; generated %d", h.Tokens, st.GeneratedTokens)
		}
		if h.BuildSeconds <= 0 || h.EvalSeconds <= 0 || h.WaitSeconds < 0 {
			t.Errorf("host time %+v: a part is missing", h)
		}
		if sum := h.BuildSeconds + h.EvalSeconds + h.WaitSeconds; sum > st.GenerationSecond {
			t.Errorf("host parts add to %.6f s, more than the decode phase's %.6f s", sum, st.GenerationSecond)
		}
		return nil
	})
}

// TestDecodeSettingsFromEnv checks the environment's reading: unset means
// the defaults; the values are parsed.
func TestDecodeSettingsFromEnv(t *testing.T) {
	if got := DecodeSettingsFromEnv(); got != (DecodeSettings{Depth: 1}) {
		// The variables may be set on purpose (bench/decode_variants.sh);
		// then only check they parsed to something valid.
		if got.Depth < 0 {
			t.Errorf("settings %+v", got)
		}
	}
	doMLX(t, func() error {
		m := peakyRandomModel(t)
		if err := m.PrepareDecode(DecodeSettings{Depth: -1}); err == nil {
			t.Errorf("depth -1 accepted")
		}
		return nil
	})
}

// TestDecodeSettingsSmolLM2 decodes a chat prompt with SmolLM2-135M kept
// 4-bit (Q4_1, 9 query and 3 KV heads) under the defaults and with every
// setting on: the same tokens.
func TestDecodeSettingsSmolLM2(t *testing.T) {
	path := requireAsset(t, smolLM2GGUF)
	doMLX(t, func() error {
		b, err := Open(path, LoadOptions{Dequantize: "no"})
		if err != nil {
			return err
		}
		defer b.Close()
		ids, _, err := b.Tokenizer.EncodeChat([]Message{{Role: "user", Content: "What is the capital of France?"}}, true)
		if err != nil {
			return err
		}
		opts := GenerateOptions{MaxTokens: 8, StopIDs: b.StopIDs}
		if err := b.Model.PrepareDecode(DecodeSettings{Depth: 1}); err != nil {
			return err
		}
		want, _, err := generateIDs(b.Model, ids, opts)
		if err != nil {
			return err
		}
		if err := b.Model.PrepareDecode(DecodeSettings{Transposed: true, Fuse: true, CompiledSwiGLU: true, CopyCache: true, Depth: 2}); err != nil {
			return err
		}
		for i, l := range b.Model.Layers {
			if !l.Attn.qkv.usable(l.Attn.Q, l.Attn.K, l.Attn.V) || !l.MLP.gateUp.usable(l.MLP.Gate, l.MLP.Up) {
				t.Errorf("layer %d not fused", i)
			}
		}
		got, _, err := generateIDs(b.Model, ids, opts)
		if err != nil {
			return err
		}
		if len(want) == 0 || !slices.Equal(got, want) {
			t.Errorf("every setting on: %v (%q), defaults %v (%q)", got, b.Tokenizer.Decode(got), want, b.Tokenizer.Decode(want))
		}
		return nil
	})
}

// TestDecodeQueueEdges checks the queue at its edges for each depth: no
// token for MaxTokens 0, exactly MaxTokens otherwise, and nothing queued
// left behind.
func TestDecodeQueueEdges(t *testing.T) {
	m := peakyRandomModel(t)
	prompt := randomPrompt(4, 5, m.Config.VocabSize)
	doMLX(t, func() error {
		for _, depth := range []int{0, 1, 3} {
			if err := m.PrepareDecode(DecodeSettings{Depth: depth}); err != nil {
				return err
			}
			for _, n := range []int{0, 1, 2, 5} {
				before := mlx.LiveArrays()
				got, st, err := generateIDs(m, prompt, GenerateOptions{MaxTokens: n})
				if err != nil {
					return err
				}
				if len(got) != n || st.GeneratedTokens != n {
					t.Errorf("depth %d, MaxTokens %d: emitted %d, counted %d", depth, n, len(got), st.GeneratedTokens)
				}
				if after := mlx.LiveArrays(); after != before {
					t.Errorf("depth %d, MaxTokens %d: live arrays %d after, %d before", depth, n, after, before)
				}
			}
		}
		return nil
	})
}
