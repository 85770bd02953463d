package llama

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"sync"

	"github.com/fungtrain/fungtrain/mlx"
)

// Decoding one token at batch 1 reads every weight once, yet on a GPU its
// time is set less by those bytes than by per-op work on the host: building
// the step's graph, and MLX scheduling, encoding and launching one kernel
// per op (docs/BENCHMARKS.md, "Decode (issue 17)"). The settings below cut
// the ops of a decode step without changing what it computes; each one is
// checked by tests to decode the same tokens.

// DecodeSettings choose how generation builds a decode step.
type DecodeSettings struct {
	// Transposed keeps the transpose of every dense projection weight as a
	// view, made once, so that a projection is one matmul op per step
	// instead of a transpose and a matmul (7 ops fewer per layer). The
	// matmul sees the same strides either way.
	Transposed bool
	// Fuse multiplies by q, k and v in one matmul, and by gate and up in
	// another, over their weights concatenated by rows, and rotates q and
	// k with one RoPE: 7 kernels per layer become 3. The projections'
	// weights become views into the concatenation, so it costs no memory;
	// a layer whose projections were replaced (an adapter installed,
	// weights merged) falls back to the separate matmuls. Each output is
	// the same dot product as before.
	Fuse bool
	// CompiledSwiGLU computes silu(gate)·up as one compiled kernel, as
	// mlx-lm does, instead of three.
	CompiledSwiGLU bool
	// CopyCache makes every cache update copy the buffer instead of
	// writing into it in place. MLX writes in place only when no queued
	// work still reads the buffer, which depends on how far the device
	// lags the host; each switch changes a step's kernel sequence, and each
	// new sequence makes CUDA instantiate a graph where it would otherwise
	// update a cached one. The copy costs a pass over the cache per layer.
	CopyCache bool
	// Depth is how many tokens are queued on the device beyond the one
	// being read (default 1). Greedy and seeded sampling need no token on
	// the host to build the next step; a repetition penalty does, and then
	// steps run one at a time.
	Depth int
}

// DefaultDecodeSettings are what generation uses unless told otherwise:
// on an H200, Transposed, Fuse and CompiledSwiGLU together decoded a 3B
// model at 236 tokens/s against 202 with none of them and 164 for mlx-lm,
// and no one of them alone came close (docs/BENCHMARKS.md, "Decode").
var DefaultDecodeSettings = DecodeSettings{Transposed: true, Fuse: true, CompiledSwiGLU: true, Depth: 1}

// DecodeSettingsFromEnv reads FUNGTRAIN_DECODE_TRANSPOSED, _FUSE, _SWIGLU,
// _COPY_CACHE (each 1 or 0) and _DEPTH (a count) once per process. Unset
// or unparsable variables keep DefaultDecodeSettings.
var DecodeSettingsFromEnv = sync.OnceValue(func() DecodeSettings {
	flag := func(name string, def bool) bool {
		v, err := strconv.ParseBool(os.Getenv("FUNGTRAIN_DECODE_" + name))
		if err != nil {
			return def
		}
		return v
	}
	d := DefaultDecodeSettings
	s := DecodeSettings{Transposed: flag("TRANSPOSED", d.Transposed), Fuse: flag("FUSE", d.Fuse),
		CompiledSwiGLU: flag("SWIGLU", d.CompiledSwiGLU), CopyCache: flag("COPY_CACHE", d.CopyCache), Depth: d.Depth}
	if d, err := strconv.Atoi(os.Getenv("FUNGTRAIN_DECODE_DEPTH")); err == nil && d >= 0 {
		s.Depth = d
	}
	return s
})

// decodePlan is what a model keeps to decode fast: the views and compiled
// function its settings ask for. Fused weights stay once made (the layers'
// weights are views into them); the rest is rebuilt when settings change.
type decodePlan struct {
	settings DecodeSettings
	swiglu   *mlx.Closure   // compiled silu(gate)·up
	embedT   *mlx.Array     // transposed tied embedding (the LM head)
	embedOf  *mlx.Array     // the embedding embedT views
	fused    []*fusedLinear // every fused group ever made
}

// fusedLinear is the row-wise concatenation of several bias-free Linear
// layers of one kind (dense of one dtype, or quantized alike), whose
// weights are views into it.
type fusedLinear struct {
	on     bool           // the plan's Fuse setting
	w      *mlx.Array     // dense (rows, in), or nil
	wT     *mlx.Array     // transposed view of w, with Transposed
	q      *mlx.Quantized // quantized, or nil
	parts  []*Linear      // the layers, in row order
	views  []*mlx.Array   // each part's weight (dense or quantized) as made
	splits []int          // the output size of each part
}

// PrepareDecode sets how m decodes. Generate calls it with
// DecodeSettingsFromEnv before its first step when nothing was set; call it
// on the MLX thread. Fusing weights (once) copies them layer by layer and
// frees the originals, so memory grows by one layer's projections at most.
func (m *Model) PrepareDecode(s DecodeSettings) error {
	if s.Depth < 0 {
		return fmt.Errorf("decode depth %d must be >= 0", s.Depth)
	}
	if m.decode != nil && m.decode.settings == s {
		return nil
	}
	if m.decode == nil {
		m.decode = &decodePlan{}
	}
	p := m.decode
	p.releaseViews(m)
	p.settings = s
	fusedBefore := len(p.fused)
	for _, b := range m.Layers {
		b.decode = p
		if s.Fuse {
			if b.Attn.qkv == nil {
				b.Attn.qkv = p.fuse(b.Attn.Q, b.Attn.K, b.Attn.V)
			}
			if b.MLP.gateUp == nil {
				b.MLP.gateUp = p.fuse(b.MLP.Gate, b.MLP.Up)
			}
		}
	}
	if s.Fuse && len(p.fused) > fusedBefore {
		mlx.ClearCache() // the originals' buffers, now free
	}
	var err error
	for _, f := range p.fused {
		f.on = s.Fuse
		if err == nil && s.Transposed && f.w != nil && f.wT == nil {
			f.wT, err = transposedView(f.w)
		}
	}
	if err == nil && s.Transposed {
		err = p.transposeAll(m)
	}
	if err == nil && s.CompiledSwiGLU {
		p.swiglu = mlx.NewClosure(func(in []*mlx.Array) ([]*mlx.Array, error) {
			return []*mlx.Array{mlx.Multiply(mlx.Silu(in[0]), in[1])}, nil
		})
		err = p.swiglu.Compile(true)
	}
	if err != nil {
		return fmt.Errorf("prepare decoding: %w", err)
	}
	return nil
}

// decodeSettings returns the model's decode settings, preparing them from
// the environment the first time.
func (m *Model) decodeSettings() (DecodeSettings, error) {
	if m.decode == nil {
		if err := m.PrepareDecode(DecodeSettingsFromEnv()); err != nil {
			return DecodeSettings{}, err
		}
	}
	return m.decode.settings, nil
}

// fuse concatenates layers that can share one matmul and makes their
// weights views into it; it returns nil when they cannot (an adapter other
// than a batch's, a bias, different kinds or a failed op, which leaves the
// layers as they were).
func (p *decodePlan) fuse(layers ...Layer) *fusedLinear {
	parts := make([]*Linear, len(layers))
	for i, l := range layers {
		lin, ok := l.(*Linear)
		if ml, isML := l.(*multiLoRA); isML {
			// A batch step runs the base alone when no row uses its
			// adapters (batch_model.go).
			lin, ok = ml.base, true
		}
		if !ok || lin.Bias != nil {
			return nil
		}
		parts[i] = lin
	}
	if !fusable(parts) {
		return nil
	}
	s := mlx.NewScope()
	defer s.Close()
	f := &fusedLinear{parts: parts}
	cat := func(get func(*Linear) *mlx.Array) *mlx.Array {
		as := make([]*mlx.Array, len(parts))
		for i, l := range parts {
			as[i] = get(l)
		}
		return mlx.Concatenate(as, 0)
	}
	var whole []*mlx.Array
	if parts[0].Q == nil {
		f.w = cat(func(l *Linear) *mlx.Array { return l.Weight })
		whole = []*mlx.Array{f.w}
	} else {
		q0 := parts[0].Q
		f.q = &mlx.Quantized{GroupSize: q0.GroupSize, Bits: q0.Bits,
			Weight: cat(func(l *Linear) *mlx.Array { return l.Q.Weight }),
			Scales: cat(func(l *Linear) *mlx.Array { return l.Q.Scales })}
		whole = []*mlx.Array{f.q.Weight, f.q.Scales}
		if q0.Biases != nil {
			f.q.Biases = cat(func(l *Linear) *mlx.Array { return l.Q.Biases })
			whole = append(whole, f.q.Biases)
		}
	}
	if mlx.Eval(whole...) != nil {
		return nil
	}
	// Each part's rows, as views sharing the concatenation's buffer.
	var views [][]*mlx.Array
	row := 0
	for _, l := range parts {
		_, out := l.InOut()
		f.splits = append(f.splits, out)
		v := make([]*mlx.Array, len(whole))
		for j, a := range whole {
			v[j] = mlx.SliceAxis(a, 0, row, row+out)
		}
		views = append(views, v)
		row += out
	}
	var all []*mlx.Array
	for _, v := range views {
		all = append(all, v...)
	}
	if mlx.Eval(all...) != nil {
		return nil
	}
	s.Keep(whole...)
	s.Keep(all...)
	mlx.Detach(whole...)
	mlx.Detach(all...)
	for i, l := range parts {
		if l.Q == nil {
			l.Weight.Free()
			l.Weight = views[i][0]
			f.views = append(f.views, l.Weight)
			continue
		}
		l.Q.Free()
		q := &mlx.Quantized{Weight: views[i][0], Scales: views[i][1], GroupSize: l.Q.GroupSize, Bits: l.Q.Bits}
		if len(views[i]) == 3 {
			q.Biases = views[i][2]
		}
		l.Q = q
		f.views = append(f.views, q.Weight)
	}
	p.fused = append(p.fused, f)
	return f
}

// fusable reports whether the layers are all dense of one dtype and input
// size, or all quantized alike.
func fusable(parts []*Linear) bool {
	in0, _ := parts[0].InOut()
	for _, l := range parts[1:] {
		in, _ := l.InOut()
		if in != in0 || (l.Q == nil) != (parts[0].Q == nil) {
			return false
		}
		if l.Q == nil && l.Weight.Dtype() != parts[0].Weight.Dtype() {
			return false
		}
		if q, q0 := l.Q, parts[0].Q; q != nil && (q.GroupSize != q0.GroupSize || q.Bits != q0.Bits ||
			(q.Biases == nil) != (q0.Biases == nil) || q.Scales.Dtype() != q0.Scales.Dtype()) {
			return false
		}
	}
	return true
}

// usable reports whether f may stand in for layers: fusing is on and each
// layer is still the Linear it was made from, with its weight unchanged.
func (f *fusedLinear) usable(layers ...Layer) bool {
	if f == nil || !f.on {
		return false
	}
	for i, l := range layers {
		lin, ok := l.(*Linear)
		if !ok || lin != f.parts[i] || lin.Bias != nil || lin.weight() != f.views[i] {
			return false
		}
	}
	return true
}

// forward is x times the concatenated weights: every part's output, side
// by side on the last axis.
func (f *fusedLinear) forward(x *mlx.Array) *mlx.Array {
	switch {
	case f.q != nil:
		return mlx.QuantizedMatmul(x, *f.q, true)
	case f.wT != nil:
		return mlx.Matmul(x, f.wT)
	}
	return mlx.Linear(x, f.w, nil)
}

// arrays lists what f owns besides its parts' views.
func (f *fusedLinear) arrays() []*mlx.Array {
	out := []*mlx.Array{f.w, f.wT}
	if f.q != nil {
		out = append(out, f.q.Weight, f.q.Scales, f.q.Biases)
	}
	return out
}

// transposedView is the transpose of w, evaluated (a view of w's buffer)
// and long-lived.
func transposedView(w *mlx.Array) (*mlx.Array, error) {
	s := mlx.NewScope()
	defer s.Close()
	t := mlx.Transpose(w)
	if err := mlx.Eval(t); err != nil {
		return nil, err
	}
	s.Keep(t)
	mlx.Detach(t)
	return t, nil
}

// transposeAll gives every dense projection (and a tied LM head) its
// transposed view.
func (p *decodePlan) transposeAll(m *Model) error {
	lins := []*Linear{m.LMHead}
	for _, b := range m.Layers {
		for _, path := range ModulePaths {
			l, _ := b.Module(path)
			lins = append(lins, baseLinear(*l))
		}
	}
	for _, l := range lins {
		if l == nil || l.Q != nil || l.Weight == nil {
			continue
		}
		t, err := transposedView(l.Weight)
		if err != nil {
			return err
		}
		l.t, l.tOf = t, l.Weight
	}
	if m.Embed != nil && m.LMHead == nil && m.EmbedQ == nil {
		t, err := transposedView(m.Embed)
		if err != nil {
			return err
		}
		p.embedT, p.embedOf = t, m.Embed
	}
	return nil
}

// releaseViews frees the transposed views and the compiled function.
func (p *decodePlan) releaseViews(m *Model) {
	for _, b := range m.Layers {
		for _, path := range ModulePaths {
			l, _ := b.Module(path)
			if lin := baseLinear(*l); lin != nil {
				lin.releaseT()
			}
		}
	}
	if m.LMHead != nil {
		m.LMHead.releaseT()
	}
	for _, f := range p.fused {
		f.wT.Free()
		f.wT = nil
	}
	p.embedT.Free()
	p.embedT, p.embedOf = nil, nil
	p.swiglu.Free()
	p.swiglu = nil
}

// arrays lists the arrays the plan owns.
func (p *decodePlan) arrays() []*mlx.Array {
	out := []*mlx.Array{p.embedT}
	for _, f := range p.fused {
		out = append(out, f.arrays()...)
	}
	return out
}

// swiGLU is silu(gate)·up, compiled into one kernel when the plan says so.
func (p *decodePlan) swiGLU(gate, up *mlx.Array) *mlx.Array {
	if p == nil || p.swiglu == nil {
		return mlx.Multiply(mlx.Silu(gate), up)
	}
	out, err := p.swiglu.Call(gate, up)
	if err != nil {
		return mlx.ErrorArray(err)
	}
	if len(out) != 1 {
		return mlx.ErrorArray(errors.New("swiglu: compiled function returned no output"))
	}
	return out[0]
}
