package llama

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/fungtrain/fungtrain/mlx"
)

// Several LoRA adapters over one base model, chosen per batch row, so that
// requests for different fine-tunes share a batch. Each adapted module
// computes, for every adapter used by some row of the batch,
//
//	y += rowmask · AsType(scale · (x·A)·B)
//
// where rowmask is 1 for the rows that chose that adapter and 0 elsewhere
// (left out when every row chose it). With one adapter for the whole batch
// this is exactly what lora.Layer computes; a masked row adds exactly zero.

// LoRAFactors is one module's low-rank update: y += Scale·(x·A)·B, with A
// (in, rank) and B (rank, out) as mlx-lm stores them.
type LoRAFactors struct {
	A, B  *mlx.Array
	Scale float32
}

// NamedAdapter is one adapter to install: its name (what requests ask for)
// and its factors by mlx-lm module name, "model.layers.N.self_attn.q_proj".
type NamedAdapter struct {
	Name    string
	Modules map[string]LoRAFactors
}

// AdapterSet is a set of adapters installed in a model. Adapter 0 is the
// base model; adapter i (1-based) is the i-th installed one.
type AdapterSet struct {
	names   []string
	model   *Model
	modules []*multiLoRA
	slots   []*Layer

	rows  []int        // the adapter of each row of the next forward pass
	masks []*mlx.Array // per adapter: (rows, 1, 1) 0/1 mask, nil when unused or used by every row
	used  []bool
}

// multiLoRA wraps a base Linear with several adapters' factors.
type multiLoRA struct {
	base    *Linear
	set     *AdapterSet
	factors []*LoRAFactors // by adapter index; nil where the adapter leaves this module alone
}

// InstallAdapters wraps the modules that any of adapters touches so that
// each batch row can use a different adapter. The set takes ownership of the
// factors' arrays (Remove frees them); when it fails, the model is left as
// it was and the caller keeps them. Modules must not already be wrapped.
func (m *Model) InstallAdapters(adapters []NamedAdapter) (_ *AdapterSet, err error) {
	set := &AdapterSet{names: []string{""}, model: m}
	defer func() {
		if err != nil {
			set.unwrap()
		}
	}()
	byModule := map[string]*multiLoRA{}
	for i, ad := range adapters {
		idx := i + 1
		if ad.Name == "" {
			return nil, fmt.Errorf("install adapters: adapter %d has no name", idx)
		}
		if set.Index(ad.Name) >= 0 {
			return nil, fmt.Errorf("install adapters: two adapters named %q", ad.Name)
		}
		set.names = append(set.names, ad.Name)
		names := slices.Sorted(maps.Keys(ad.Modules))
		for _, name := range names {
			f := ad.Modules[name]
			ml := byModule[name]
			if ml == nil {
				slot, err := m.moduleSlot(name)
				if err != nil {
					return nil, fmt.Errorf("install adapter %q: %w", ad.Name, err)
				}
				base, ok := (*slot).(*Linear)
				if !ok {
					return nil, fmt.Errorf("install adapter %q: %s already has an adapter installed", ad.Name, name)
				}
				ml = &multiLoRA{base: base, set: set}
				*slot = ml
				byModule[name] = ml
				set.modules = append(set.modules, ml)
				set.slots = append(set.slots, slot)
			}
			in, out := ml.base.InOut()
			if f.A == nil || f.B == nil || f.A.Ndim() != 2 || f.B.Ndim() != 2 || f.A.Dim(0) != in || f.B.Dim(1) != out || f.A.Dim(1) != f.B.Dim(0) {
				return nil, fmt.Errorf("install adapter %q: %s: factors of shapes %v and %v do not fit a (%d in, %d out) layer",
					ad.Name, name, shapeOf(f.A), shapeOf(f.B), in, out)
			}
			for len(ml.factors) < idx {
				ml.factors = append(ml.factors, nil)
			}
			ff := f
			ml.factors = append(ml.factors, &ff)
		}
	}
	return set, nil
}

func shapeOf(a *mlx.Array) []int {
	if a == nil {
		return nil
	}
	return a.Shape()
}

// moduleSlot returns the layer slot of an mlx-lm module name.
func (m *Model) moduleSlot(name string) (*Layer, error) {
	rest, ok := strings.CutPrefix(name, "model.layers.")
	dot := strings.IndexByte(rest, '.')
	if !ok || dot < 0 {
		return nil, fmt.Errorf("module %q is not model.layers.N.<path>", name)
	}
	i, err := strconv.Atoi(rest[:dot])
	if err != nil || i < 0 || i >= len(m.Layers) {
		return nil, fmt.Errorf("module %q: no layer %s in a %d-layer model", name, rest[:dot], len(m.Layers))
	}
	return m.Layers[i].Module(rest[dot+1:])
}

// Names lists the adapter names by index; index 0, the base model, is "".
func (s *AdapterSet) Names() []string { return append([]string(nil), s.names...) }

// Index returns the index of the adapter called name, or -1.
func (s *AdapterSet) Index(name string) int {
	for i, n := range s.names {
		if i > 0 && n == name {
			return i
		}
	}
	return -1
}

// Select sets the adapter of each row for the forward passes that follow
// (until the next Select). The masks it builds belong to the caller's scope.
func (s *AdapterSet) Select(rows []int) error {
	if s == nil {
		for _, r := range rows {
			if r != 0 {
				return errors.New("select adapters: no adapters are installed")
			}
		}
		return nil
	}
	n := len(s.names)
	s.rows = append(s.rows[:0], rows...)
	s.masks = make([]*mlx.Array, n)
	s.used = make([]bool, n)
	count := make([]int, n)
	for _, r := range rows {
		if r < 0 || r >= n {
			return fmt.Errorf("select adapters: adapter %d of %d", r, n-1)
		}
		count[r]++
	}
	for j := 1; j < n; j++ {
		if count[j] == 0 {
			continue
		}
		s.used[j] = true
		if count[j] == len(rows) {
			continue
		}
		m := make([]float32, len(rows))
		for i, r := range rows {
			if r == j {
				m[i] = 1
			}
		}
		s.masks[j] = mlx.FromFloat32s(m, len(rows), 1, 1)
	}
	return nil
}

// Remove restores the base layers and frees every adapter's factors.
func (s *AdapterSet) Remove() {
	for _, ml := range s.modules {
		for _, f := range ml.factors {
			if f != nil {
				f.A.Free()
				f.B.Free()
			}
		}
	}
	s.unwrap()
}

// unwrap restores the base layers.
func (s *AdapterSet) unwrap() {
	for i, ml := range s.modules {
		*s.slots[i] = ml.base
	}
	s.modules, s.slots = nil, nil
}

// Forward applies the base layer and the selected adapters' updates.
func (l *multiLoRA) Forward(x *mlx.Array) *mlx.Array {
	s := mlx.NewScope()
	defer s.Close()
	y := l.base.Forward(x)
	dt := x.Dtype()
	for j, f := range l.factors {
		if f == nil || j >= len(l.set.used) || !l.set.used[j] {
			continue
		}
		z := mlx.Matmul(mlx.Matmul(x, mlx.AsType(f.A, dt)), mlx.AsType(f.B, dt))
		z = mlx.AsType(mlx.MulScalar(z, float64(f.Scale)), y.Dtype())
		if m := l.set.masks[j]; m != nil {
			z = mlx.Multiply(z, mlx.AsType(m, y.Dtype()))
		}
		y = mlx.Add(y, z)
	}
	return s.Keep(y)
}

// selected reports whether a row of the current selection uses one of the
// adapters that change this layer.
func (l *multiLoRA) selected() bool {
	for j, f := range l.factors {
		if f != nil && j < len(l.set.used) && l.set.used[j] {
			return true
		}
	}
	return false
}

// BaseLinear returns the wrapped layer.
func (l *multiLoRA) BaseLinear() *Linear { return l.base }
