package llama

import (
	"fmt"
	"slices"
	"testing"

	"github.com/fungtrain/fungtrain/mlx"
)

// TestBatchMatchesGenerateDefaults checks that the batch engine, whose
// decode step takes the model's decode plan, emits exactly the tokens
// Generate emits under DefaultDecodeSettings: one row at a time, and many
// rows together, padded (per-row RoPE offsets and a mask) and not, greedy,
// seeded and penalized, with a stop id. A changed fused weight must change
// the batch's tokens (the negative control: the fused path is the one that
// runs), and every array the runs make is freed.
func TestBatchMatchesGenerateDefaults(t *testing.T) {
	m := peakyRandomModel(t)
	V := m.Config.VocabSize
	greedy := SampleOptions{}
	cases := []batchCase{
		{prompt: randomPrompt(21, 13, V), maxTokens: 14, sample: greedy},
		{prompt: randomPrompt(22, 5, V), maxTokens: 12, sample: greedy},
		{prompt: randomPrompt(23, 13, V), maxTokens: 10, sample: SampleOptions{Temp: 0.8, Seed: 7}},
		{prompt: randomPrompt(24, 21, V), maxTokens: 9, sample: SampleOptions{RepetitionPenalty: 1.4}},
		{prompt: randomPrompt(25, 1, V), maxTokens: 11, sample: greedy},
		{prompt: randomPrompt(26, 13, V), maxTokens: 16, sample: greedy},
	}
	doMLX(t, func() error {
		if err := m.PrepareDecode(DefaultDecodeSettings); err != nil {
			return err
		}
		for i, b := range m.Layers {
			if !b.Attn.qkv.usable(b.Attn.Q, b.Attn.K, b.Attn.V) || !b.MLP.gateUp.usable(b.MLP.Gate, b.MLP.Up) || b.decode.swiglu == nil {
				return fmt.Errorf("layer %d: the default decode plan is not in place", i)
			}
		}
		want := make([][]int32, len(cases))
		for i, c := range cases {
			var err error
			if want[i], _, err = generateIDs(m, c.prompt, GenerateOptions{MaxTokens: c.maxTokens, Sample: c.sample, PrefillChunk: 8}); err != nil {
				return err
			}
		}
		cases[5].stopIDs = []int32{want[5][6]}
		want[5] = want[5][:slices.Index(want[5], want[5][6])]
		before := mlx.LiveArrays()
		for _, v := range []struct {
			name  string
			cases []int
			batch int
		}{
			{"batch 1", []int{0, 1, 2, 3, 4, 5}, 1},
			{"batch 3, one length (no padding)", []int{0, 2, 5}, 3},
			{"batch 4, mixed lengths", []int{0, 1, 2, 3, 4, 5}, 4},
		} {
			var cs []batchCase
			for _, i := range v.cases {
				cs = append(cs, cases[i])
			}
			got, res, err := runBatch(m, cs, BatchOptions{MaxBatch: v.batch, PrefillChunk: 8})
			if err != nil {
				return fmt.Errorf("%s: %w", v.name, err)
			}
			for k, i := range v.cases {
				if !slices.Equal(got[k], want[i]) {
					t.Errorf("%s: sequence %d (%+v): batch %v, Generate %v", v.name, i, cases[i].sample, got[k], want[i])
				}
				if stop := cases[i].stopIDs != nil; res[k].HitStopToken != stop {
					t.Errorf("%s: sequence %d: hit the stop token %v, want %v", v.name, i, res[k].HitStopToken, stop)
				}
			}
		}
		if after := mlx.LiveArrays(); after != before {
			t.Errorf("live arrays %d after the batches, %d before", after, before)
		}

		// Negative control: double layer 0's fused q/k/v weight, for a
		// one-token prompt (no prefill: every step is a batch step).
		f := m.Layers[0].Attn.qkv
		w, wT := f.w, f.wT
		f.w = mlx.MulScalar(w, 2)
		f.wT = mlx.Transpose(f.w)
		mlx.Detach(f.w, f.wT)
		got, _, err := runBatch(m, cases[4:5], BatchOptions{MaxBatch: 1, PrefillChunk: 8})
		f.w.Free()
		f.wT.Free()
		f.w, f.wT = w, wT
		if err != nil {
			return err
		}
		if slices.Equal(got[0], want[4]) {
			t.Errorf("the batch decoded %v with layer 0's fused weight doubled, as without: the fused path did not run", got[0])
		}
		return nil
	})
}

// TestBatchAdaptersBeforePlan installs adapters before the decode plan is
// made (as the server does): the adapted layers are fused through their
// adapter layer, rows on the base model take the fused path, rows with an
// adapter take the adapter, and both decode what Generate decodes with
// that adapter alone.
func TestBatchAdaptersBeforePlan(t *testing.T) {
	m := peakyRandomModel(t)
	V := m.Config.VocabSize
	doMLX(t, func() error {
		a1, err := randomAdapter(m, "one", 3, 2, "model.layers.1.self_attn.q_proj", "model.layers.2.mlp.up_proj")
		if err != nil {
			return err
		}
		set, err := m.InstallAdapters([]NamedAdapter{a1})
		if err != nil {
			return err
		}
		defer set.Remove()
		if err := m.PrepareDecode(DefaultDecodeSettings); err != nil {
			return err
		}
		if m.Layers[1].Attn.qkv == nil || m.Layers[2].MLP.gateUp == nil {
			return fmt.Errorf("the adapted layers were not fused")
		}
		if err := set.Select([]int{0}); err != nil {
			return err
		}
		l1 := m.Layers[1].Attn
		if !l1.qkv.usable(stepLayer(l1.Q), stepLayer(l1.K), stepLayer(l1.V)) {
			t.Errorf("a base row does not take layer 1's fused q/k/v")
		}
		if err := set.Select([]int{1}); err != nil {
			return err
		}
		if l1.qkv.usable(stepLayer(l1.Q), stepLayer(l1.K), stepLayer(l1.V)) {
			t.Errorf("a row with the adapter takes layer 1's fused q/k/v, without the adapter")
		}
		p := randomPrompt(31, 9, V)
		cases := []batchCase{{prompt: p, maxTokens: 10}, {prompt: p, maxTokens: 10, adapter: 1}}
		reference := func(c batchCase) func() { return installReference(m, set, []NamedAdapter{{}, a1}[c.adapter]) }
		for _, batch := range []int{1, 2} {
			got, err := checkBatchAgainstGenerate(t, m, cases, BatchOptions{MaxBatch: batch, PrefillChunk: 8, Adapters: set}, reference)
			if err != nil {
				return err
			}
			if slices.Equal(got[0], got[1]) {
				t.Errorf("batch %d: the adapter changes nothing: %v", batch, got)
			}
		}
		return nil
	})
}
