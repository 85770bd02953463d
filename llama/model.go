package llama

import (
	"fmt"
	"math"

	"github.com/fungtrain/fungtrain/mlx"
)

// Layer is a linear map over the last axis: a dense or quantized Linear, or
// an adapter (LoRA) wrapped around one.
type Layer interface {
	Forward(x *mlx.Array) *mlx.Array
}

// Linear is y = x·Wᵀ + b, with W dense (out, in) or affine-quantized.
type Linear struct {
	Weight *mlx.Array     // dense weight, nil when quantized
	Q      *mlx.Quantized // quantized weight, nil when dense
	Bias   *mlx.Array     // optional

	// t is Wᵀ as a view, made for decoding (decode.go), valid while
	// Weight is still tOf.
	t, tOf *mlx.Array
}

// Forward applies the layer.
func (l *Linear) Forward(x *mlx.Array) *mlx.Array {
	if l.Q == nil {
		if l.t != nil && l.tOf == l.Weight {
			y := mlx.Matmul(x, l.t)
			if l.Bias != nil {
				y = mlx.Add(y, l.Bias)
			}
			return y
		}
		return mlx.Linear(x, l.Weight, l.Bias)
	}
	y := mlx.QuantizedMatmul(x, *l.Q, true)
	if l.Bias != nil {
		y = mlx.Add(y, l.Bias)
	}
	return y
}

// weight is the dense weight, or the quantized one's packed values.
func (l *Linear) weight() *mlx.Array {
	if l.Q != nil {
		return l.Q.Weight
	}
	return l.Weight
}

// releaseT frees the transposed view.
func (l *Linear) releaseT() {
	l.t.Free()
	l.t, l.tOf = nil, nil
}

// InOut returns the input and output feature sizes.
func (l *Linear) InOut() (in, out int) {
	if l.Q != nil {
		return l.Q.Scales.Dim(1) * l.Q.GroupSize, l.Q.Weight.Dim(0)
	}
	return l.Weight.Dim(1), l.Weight.Dim(0)
}

// Dense returns the weight as a dense (out, in) array of dtype dt (a new
// array for quantized layers).
func (l *Linear) Dense(dt mlx.Dtype) *mlx.Array {
	if l.Q != nil {
		return mlx.AsType(mlx.Dequantize(*l.Q), dt)
	}
	return mlx.AsType(l.Weight, dt)
}

// dequantizeInPlace replaces a quantized weight by its dense form.
func (l *Linear) dequantizeInPlace(dt mlx.Dtype) {
	if l.Q == nil {
		return
	}
	l.Weight = denseOf(l.Q, dt)
	l.Q.Free()
	l.Q = nil
}

func denseOf(q *mlx.Quantized, dt mlx.Dtype) *mlx.Array {
	// A scope frees the intermediate Dequantize handle (otherwise leaked,
	// and holding a second copy of the weight once evaluated).
	s := mlx.NewScope()
	defer s.Close()
	w := s.Keep(mlx.AsType(mlx.Dequantize(*q), dt))
	mlx.Detach(w)
	return w
}

func (l *Linear) arrays() []*mlx.Array {
	var out []*mlx.Array
	if l.Q != nil {
		out = []*mlx.Array{l.Q.Weight, l.Q.Scales, l.Q.Biases}
	} else {
		out = []*mlx.Array{l.Weight}
	}
	for _, a := range []*mlx.Array{l.Bias, l.t} {
		if a != nil {
			out = append(out, a)
		}
	}
	return out
}

// Attention is grouped-query self-attention with rotary embeddings.
type Attention struct {
	Q, K, V, O Layer
	nHeads     int
	nKVHeads   int
	headDim    int
	scale      float32
	rope       mlx.RoPE
	qkv        *fusedLinear // q, k and v in one matmul, for decoding (decode.go)
}

// MLP is the SwiGLU feed-forward block: down(silu(gate(x)) · up(x)).
type MLP struct {
	Gate, Up, Down Layer
	gateUp         *fusedLinear // gate and up in one matmul, for decoding (decode.go)
}

// Block is one transformer layer.
type Block struct {
	Attn      Attention
	MLP       MLP
	InputNorm *mlx.Array // input_layernorm.weight
	PostNorm  *mlx.Array // post_attention_layernorm.weight
	eps       float32
	decode    *decodePlan // how to build decode steps (decode.go); nil until set
}

// Model is a Llama 3.x causal language model.
type Model struct {
	Config *Config
	Dtype  mlx.Dtype // activation dtype

	Embed  *mlx.Array     // (vocab, hidden), dense embedding
	EmbedQ *mlx.Quantized // quantized embedding, when the checkpoint has one
	Layers []*Block
	Norm   *mlx.Array // model.norm.weight
	LMHead *Linear    // nil when tied to the embedding
	freqs  *mlx.Array // llama3 rope frequencies, computed once
	decode *decodePlan
}

// ModulePaths are the per-block linear layers, by their HF module path.
var ModulePaths = []string{
	"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
	"mlp.gate_proj", "mlp.up_proj", "mlp.down_proj",
}

// Module returns a pointer to the block's layer at an HF module path such
// as "self_attn.q_proj", so adapters can wrap it in place.
func (b *Block) Module(path string) (*Layer, error) {
	switch path {
	case "self_attn.q_proj":
		return &b.Attn.Q, nil
	case "self_attn.k_proj":
		return &b.Attn.K, nil
	case "self_attn.v_proj":
		return &b.Attn.V, nil
	case "self_attn.o_proj":
		return &b.Attn.O, nil
	case "mlp.gate_proj":
		return &b.MLP.Gate, nil
	case "mlp.up_proj":
		return &b.MLP.Up, nil
	case "mlp.down_proj":
		return &b.MLP.Down, nil
	}
	return nil, fmt.Errorf("unknown module %q (want one of %v)", path, ModulePaths)
}

// ropeFreqs returns the rotation periods for MLX's fast rope (the inverse of
// the usual inverse frequencies), with llama3 frequency scaling applied, or
// nil when plain base-theta frequencies apply.
func ropeFreqs(c *Config) []float32 {
	rs := c.RopeScaling
	if rs == nil || rs.RopeType != "llama3" {
		return nil
	}
	dims := c.HeadDim
	lowWavelen := float64(rs.OriginalMaxPositionEmbeddings) / rs.LowFreqFactor
	highWavelen := float64(rs.OriginalMaxPositionEmbeddings) / rs.HighFreqFactor
	periods := make([]float32, dims/2)
	for i := range periods {
		invFreq := math.Pow(c.RopeTheta, -float64(2*i)/float64(dims))
		wavelen := 2 * math.Pi / invFreq
		f := invFreq
		switch {
		case wavelen > lowWavelen: // low frequencies: slowed by the factor
			f = invFreq / rs.Factor
		case wavelen >= highWavelen: // in between: interpolate smoothly
			smooth := (float64(rs.OriginalMaxPositionEmbeddings)/wavelen - rs.LowFreqFactor) /
				(rs.HighFreqFactor - rs.LowFreqFactor)
			f = (1-smooth)*invFreq/rs.Factor + smooth*invFreq
		}
		periods[i] = float32(1 / f)
	}
	return periods
}

func (m *Model) initAttention() {
	c := m.Config
	r := mlx.RoPE{Dims: c.HeadDim, Traditional: c.RopeTraditional, Base: float32(c.RopeTheta), Scale: 1}
	if rs := c.RopeScaling; rs != nil && rs.RopeType == "linear" {
		r.Scale = float32(1 / rs.Factor)
	}
	if p := ropeFreqs(c); p != nil {
		m.freqs = mlx.FromFloat32s(p, len(p))
		mlx.Detach(m.freqs)
		r.Freqs = m.freqs
	}
	for _, b := range m.Layers {
		b.eps = float32(c.RMSNormEps)
		b.Attn.nHeads, b.Attn.nKVHeads, b.Attn.headDim = c.NumHeads, c.NumKVHeads, c.HeadDim
		b.Attn.scale = float32(1 / math.Sqrt(float64(c.HeadDim)))
		b.Attn.rope = r
	}
}

// Forward computes attention over x (B, L, D). With a cache, keys and values
// are appended to it and positions start at its offset.
func (a *Attention) Forward(x *mlx.Array, cache *KVCache) *mlx.Array {
	B, L := x.Dim(0), x.Dim(1)
	offset := 0
	if cache != nil {
		offset = cache.Offset
	}
	q, k, v := a.project(x, offset, cache != nil)
	if cache != nil {
		k, v = cache.Update(k, v)
	}
	mode := mlx.MaskNone
	if L > 1 {
		mode = mlx.MaskCausal
	}
	o := mlx.ScaledDotProductAttention(q, k, v, a.scale, mode, nil)
	o = mlx.Reshape(mlx.Transpose(o, 0, 2, 1, 3), B, L, a.nHeads*a.headDim)
	return a.O.Forward(o)
}

// project returns the rotated queries and keys and the values of x
// (B, L, D) at positions from offset, each (B, heads, L, headDim). When
// decoding, q, k and v may come from one matmul, and q and k be rotated
// together.
func (a *Attention) project(x *mlx.Array, offset int, decoding bool) (q, k, v *mlx.Array) {
	B, L := x.Dim(0), x.Dim(1)
	heads := func(y *mlx.Array, n int) *mlx.Array {
		return mlx.Transpose(mlx.Reshape(y, B, L, n, a.headDim), 0, 2, 1, 3)
	}
	H, KV := a.nHeads, a.nKVHeads
	if decoding && a.qkv.usable(a.Q, a.K, a.V) {
		all := heads(a.qkv.forward(x), H+2*KV)
		qk := mlx.Rope(mlx.SliceAxis(all, 1, 0, H+KV), a.rope, offset)
		return mlx.SliceAxis(qk, 1, 0, H), mlx.SliceAxis(qk, 1, H, H+KV), mlx.SliceAxis(all, 1, H+KV, H+2*KV)
	}
	q = mlx.Rope(heads(a.Q.Forward(x), H), a.rope, offset)
	k = mlx.Rope(heads(a.K.Forward(x), KV), a.rope, offset)
	return q, k, heads(a.V.Forward(x), KV)
}

// Forward applies the MLP.
func (m *MLP) Forward(x *mlx.Array) *mlx.Array { return m.forward(x, nil) }

// forward applies the MLP, with a decode plan when decoding.
func (m *MLP) forward(x *mlx.Array, plan *decodePlan) *mlx.Array {
	if plan != nil && m.gateUp.usable(m.Gate, m.Up) {
		gu := m.gateUp.forward(x)
		last, n := gu.Ndim()-1, m.gateUp.splits[0]
		return m.Down.Forward(plan.swiGLU(mlx.SliceAxis(gu, last, 0, n), mlx.SliceAxis(gu, last, n, gu.Dim(last))))
	}
	return m.Down.Forward(plan.swiGLU(m.Gate.Forward(x), m.Up.Forward(x)))
}

// Forward applies the block: pre-norm attention and MLP with residuals.
//
// What the block builds is freed when it returns, except its output: the
// graph keeps what evaluation needs, so MLX can release each intermediate
// as soon as it is consumed instead of holding a whole forward pass.
func (b *Block) Forward(x *mlx.Array, cache *KVCache) *mlx.Array {
	s := mlx.NewScope()
	defer s.Close()
	var plan *decodePlan // decoding (a cache) may use the model's decode plan
	if cache != nil {
		plan = b.decode
	}
	h := mlx.Add(x, b.Attn.Forward(mlx.RMSNorm(x, b.InputNorm, b.eps), cache))
	return s.Keep(mlx.Add(h, b.MLP.forward(mlx.RMSNorm(h, b.PostNorm, b.eps), plan)))
}

// EmbedTokens looks up token embeddings for ids (B, L).
func (m *Model) EmbedTokens(ids *mlx.Array) *mlx.Array {
	if m.EmbedQ != nil {
		q := *m.EmbedQ
		rows := mlx.Quantized{Weight: mlx.Take(q.Weight, ids, 0), Scales: mlx.Take(q.Scales, ids, 0),
			Biases: mlx.Take(q.Biases, ids, 0), GroupSize: q.GroupSize, Bits: q.Bits}
		return mlx.AsType(mlx.Dequantize(rows), m.Dtype)
	}
	return mlx.Take(m.Embed, ids, 0)
}

// Hidden runs the transformer on ids (B, L) and returns the final normed
// hidden states (B, L, D). caches, if not nil, has one entry per layer.
func (m *Model) Hidden(ids *mlx.Array, caches []*KVCache) *mlx.Array {
	s := mlx.NewScope()
	defer s.Close()
	h := m.EmbedTokens(ids)
	for i, b := range m.Layers {
		var c *KVCache
		if caches != nil {
			c = caches[i]
		}
		h = b.Forward(h, c)
	}
	return s.Keep(m.FinalNorm(h))
}

// FinalNorm applies the model's final RMS norm to hidden states h.
func (m *Model) FinalNorm(h *mlx.Array) *mlx.Array {
	return mlx.RMSNorm(h, m.Norm, float32(m.Config.RMSNormEps))
}

// Logits maps hidden states to vocabulary logits.
func (m *Model) Logits(h *mlx.Array) *mlx.Array {
	switch {
	case m.LMHead != nil:
		return m.LMHead.Forward(h)
	case m.EmbedQ != nil:
		return mlx.QuantizedMatmul(h, *m.EmbedQ, true)
	case m.decode != nil && m.decode.embedT != nil && m.decode.embedOf == m.Embed:
		return mlx.Matmul(h, m.decode.embedT)
	}
	return mlx.Matmul(h, mlx.Transpose(m.Embed))
}

// Forward returns the logits (B, L, vocab) for ids (B, L).
func (m *Model) Forward(ids *mlx.Array, caches []*KVCache) *mlx.Array {
	return m.Logits(m.Hidden(ids, caches))
}

// Arrays lists every weight array of the model (for freeing and counting).
func (m *Model) Arrays() []*mlx.Array {
	var out []*mlx.Array
	for _, a := range []*mlx.Array{m.Embed, m.Norm, m.freqs} {
		if a != nil {
			out = append(out, a)
		}
	}
	if m.EmbedQ != nil {
		out = append(out, m.EmbedQ.Weight, m.EmbedQ.Scales, m.EmbedQ.Biases)
	}
	if m.LMHead != nil {
		for _, a := range m.LMHead.arrays() {
			if a != nil {
				out = append(out, a)
			}
		}
	}
	for _, b := range m.Layers {
		out = append(out, m.layerArrays(b)...)
	}
	if m.decode != nil {
		for _, a := range m.decode.arrays() {
			if a != nil {
				out = append(out, a)
			}
		}
	}
	return out
}

// Based is implemented by adapters that wrap a base Linear.
type Based interface {
	BaseLinear() *Linear
}

func baseLinear(l Layer) *Linear {
	switch v := l.(type) {
	case *Linear:
		return v
	case Based:
		return v.BaseLinear()
	}
	return nil
}

// BaseLinear returns the Linear under a layer (itself, or an adapter's base).
func BaseLinear(l Layer) *Linear { return baseLinear(l) }

// Free releases the model's weights.
func (m *Model) Free() {
	for _, a := range m.Arrays() {
		a.Free()
	}
	if m.decode != nil {
		m.decode.swiglu.Free()
		m.decode = nil
	}
}
