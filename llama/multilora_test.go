package llama

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/fungtrain/fungtrain/mlx"
)

// refLoRA is the single-adapter layer of the reference runs, written from
// the formula (as lora.Layer computes it): y = base(x) + scale·(x·A)·B.
type refLoRA struct {
	base *Linear
	f    LoRAFactors
}

func (l *refLoRA) Forward(x *mlx.Array) *mlx.Array {
	dt := x.Dtype()
	y := l.base.Forward(x)
	z := mlx.Matmul(mlx.Matmul(x, mlx.AsType(l.f.A, dt)), mlx.AsType(l.f.B, dt))
	return mlx.Add(y, mlx.AsType(mlx.MulScalar(z, float64(l.f.Scale)), y.Dtype()))
}

// randomAdapter draws factors for modules with B non-zero, so the adapter
// changes the model's output from the start.
func randomAdapter(m *Model, name string, seed uint64, scale float32, modules ...string) (NamedAdapter, error) {
	ad := NamedAdapter{Name: name, Modules: map[string]LoRAFactors{}}
	for i, mod := range modules {
		slot, err := m.moduleSlot(mod)
		if err != nil {
			return ad, err
		}
		in, out := BaseLinear(*slot).InOut()
		ka, kb := mlx.RandomKey(seed*100+uint64(i)), mlx.RandomKey(seed*100+uint64(i)+50)
		a := mlx.Normal(0, 0.3, mlx.Float32, ka, in, 4)
		b := mlx.Normal(0, 0.3, mlx.Float32, kb, 4, out)
		ka.Free()
		kb.Free()
		mlx.Detach(a, b)
		ad.Modules[mod] = LoRAFactors{A: a, B: b, Scale: scale}
	}
	return ad, mlx.Eval(adapterArrays(ad)...)
}

func adapterArrays(ad NamedAdapter) []*mlx.Array {
	var out []*mlx.Array
	for _, f := range ad.Modules {
		out = append(out, f.A, f.B)
	}
	return out
}

// TestBatchAdapters decodes rows with different adapters (and the base
// model) in one batch, the same prompt under each, and compares every row
// with a one-at-a-time run with that adapter alone installed.
func TestBatchAdapters(t *testing.T) {
	m := peakyRandomModel(t)
	V := m.Config.VocabSize
	doMLX(t, func() error {
		// The decode plan's weight views live as long as the model: make
		// them before counting.
		if err := m.PrepareDecode(DecodeSettingsFromEnv()); err != nil {
			return err
		}
		before := mlx.LiveArrays()
		a1, err := randomAdapter(m, "one", 1, 2, "model.layers.2.self_attn.q_proj", "model.layers.2.self_attn.v_proj", "model.layers.3.self_attn.v_proj")
		if err != nil {
			return err
		}
		a2, err := randomAdapter(m, "two", 2, 1.5, "model.layers.1.mlp.down_proj", "model.layers.3.self_attn.v_proj")
		if err != nil {
			return err
		}
		set, err := m.InstallAdapters([]NamedAdapter{a1, a2})
		if err != nil {
			return err
		}
		defer set.Remove()
		if got := set.Names(); !slices.Equal(got, []string{"", "one", "two"}) || set.Index("two") != 2 || set.Index("three") != -1 {
			t.Errorf("names %q, index of two %d", got, set.Index("two"))
		}
		p1, p2 := randomPrompt(11, 12, V), randomPrompt(12, 3, V)
		cases := []batchCase{
			{prompt: p1, maxTokens: 10, adapter: 0}, {prompt: p1, maxTokens: 10, adapter: 1}, {prompt: p1, maxTokens: 10, adapter: 2},
			{prompt: p2, maxTokens: 8, adapter: 2}, {prompt: p2, maxTokens: 8, adapter: 1},
			{prompt: p2, maxTokens: 8, adapter: 1, sample: SampleOptions{Temp: 0.8, Seed: 4}},
		}
		adapters := []NamedAdapter{{}, a1, a2}
		reference := func(c batchCase) func() { return installReference(m, set, adapters[c.adapter]) }
		got, err := checkBatchAgainstGenerate(t, m, cases, BatchOptions{MaxBatch: 4, PrefillChunk: 8, Adapters: set}, reference)
		if err != nil {
			return err
		}
		if slices.Equal(got[0], got[1]) || slices.Equal(got[0], got[2]) || slices.Equal(got[3], got[4]) {
			t.Errorf("the adapters change nothing: %v", got)
		}
		set.Remove()
		if after := mlx.LiveArrays(); after != before {
			return fmt.Errorf("live arrays %d after removing the adapters, %d before", after, before)
		}
		return nil
	})
}

// TestInstallAdaptersErrors checks the refusals of InstallAdapters.
func TestInstallAdaptersErrors(t *testing.T) {
	m := peakyRandomModel(t)
	doMLX(t, func() error {
		good, err := randomAdapter(m, "a", 1, 1, "model.layers.0.self_attn.q_proj")
		if err != nil {
			return err
		}
		defer mlx.Do(func() error {
			for _, a := range adapterArrays(good) {
				a.Free()
			}
			return nil
		})
		wrong := NamedAdapter{Name: "b", Modules: map[string]LoRAFactors{"model.layers.0.self_attn.k_proj": good.Modules["model.layers.0.self_attn.q_proj"]}}
		for _, c := range []struct {
			ads  []NamedAdapter
			want string
		}{
			{[]NamedAdapter{{Name: "", Modules: nil}}, "has no name"},
			{[]NamedAdapter{good, {Name: "a"}}, `two adapters named "a"`},
			{[]NamedAdapter{{Name: "x", Modules: map[string]LoRAFactors{"model.layers.9.self_attn.q_proj": {}}}}, "no layer 9 in a 4-layer model"},
			{[]NamedAdapter{{Name: "x", Modules: map[string]LoRAFactors{"model.layers.0.attn.q": {}}}}, "unknown module"},
			{[]NamedAdapter{wrong}, "do not fit a (128 in, 64 out) layer"},
		} {
			set, err := m.InstallAdapters(c.ads)
			if err == nil {
				set.Remove()
				t.Errorf("%v: no error, want %q", c.want, c.want)
				continue
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %q, want %q", err, c.want)
			}
			// A refused set leaves the model as it was.
			for _, b := range m.Layers {
				for _, p := range ModulePaths {
					slot, _ := b.Module(p)
					if _, ok := (*slot).(*Linear); !ok {
						return fmt.Errorf("after %q: %s is still wrapped", c.want, p)
					}
				}
			}
		}
		return nil
	})
}

// installReference installs ad alone as refLoRA layers over m's slots, the
// one-at-a-time reference of a batch row with that adapter, and returns
// the undo. Generate does not select rows, so the set's multiLoRA layers
// are told to select only the base (they add nothing).
func installReference(m *Model, set *AdapterSet, ad NamedAdapter) func() {
	var undo []func()
	for name, f := range ad.Modules {
		slot, _ := m.moduleSlot(name)
		old := *slot
		*slot = &refLoRA{base: BaseLinear(old), f: f}
		undo = append(undo, func() { *slot = old })
	}
	set.Select([]int{0})
	return func() {
		for _, u := range undo {
			u()
		}
	}
}
