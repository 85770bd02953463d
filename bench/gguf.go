package bench

import (
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"runtime"
	"sync"

	"github.com/fungtrain/fungtrain/internal/atomicfile"
	"github.com/fungtrain/fungtrain/llama"
	"github.com/fungtrain/fungtrain/mlx"
)

// WriteGGUF writes the dense checkpoint in src as a llama.cpp GGUF file
// (version 3) whose matrices are Q4_0 or Q8_0 (typ "q4_0" or "q8_0") and
// whose norms are F32, laid out as llama.cpp's converter lays out Llama:
// llama.* metadata, blk.N.* names, q/k rows permuted for interleaved RoPE,
// llama3 RoPE scaling as a rope_freqs tensor, no output tensor when the
// embedding is tied. It carries no tokenizer: it is a base to measure
// training on. Blocks are quantized as llama.cpp's reference code does.
// Call it on the MLX thread.
func WriteGGUF(src, dst, typ string) error {
	qt, fileType := llama.GGMLTypeQ8_0, uint32(7)
	switch typ {
	case "q8_0":
	case "q4_0":
		qt, fileType = llama.GGMLTypeQ4_0, 2
	default:
		return fmt.Errorf("gguf type %q: want q4_0 or q8_0", typ)
	}
	_, cfg, tensors, err := loadDense(src)
	if err != nil {
		return err
	}
	defer freeMap(tensors)
	plan, err := ggufPlan(cfg, tensors, qt)
	if err != nil {
		return fmt.Errorf("gguf %s: %w", dst, err)
	}
	kv := ggufMeta(cfg, fileType)
	return atomicfile.Write(dst, func(w io.Writer) error {
		return writeGGUF(w, kv, plan)
	})
}

// ggufTensor is one tensor to write: its source (an MLX array, or values
// in hand), its GGUF name, type and dimensions (innermost first).
type ggufTensor struct {
	name  string
	typ   llama.GGMLType
	dims  []uint64
	src   *mlx.Array
	vals  []float32
	heads int // > 0: permute rows for interleaved RoPE over this many heads
}

func (t ggufTensor) bytes() uint64 {
	n := uint64(1)
	for _, d := range t.dims {
		n *= d
	}
	return n / uint64(t.typ.BlockSize()) * uint64(t.typ.TypeSize())
}

var ggufBlockNames = []struct{ hf, gguf string }{
	{"input_layernorm", "attn_norm"}, {"self_attn.q_proj", "attn_q"}, {"self_attn.k_proj", "attn_k"},
	{"self_attn.v_proj", "attn_v"}, {"self_attn.o_proj", "attn_output"}, {"post_attention_layernorm", "ffn_norm"},
	{"mlp.gate_proj", "ffn_gate"}, {"mlp.up_proj", "ffn_up"}, {"mlp.down_proj", "ffn_down"},
}

// ggufPlan lists the tensors in file order and checks every source.
func ggufPlan(cfg *llama.Config, tensors map[string]*mlx.Array, qt llama.GGMLType) ([]ggufTensor, error) {
	var plan []ggufTensor
	used := map[string]bool{}
	add := func(hf, name string, heads int) error {
		a, ok := tensors[hf]
		if !ok {
			return fmt.Errorf("missing tensor %s", hf)
		}
		used[hf] = true
		shape := a.Shape()
		t := ggufTensor{name: name, typ: llama.GGMLTypeF32, src: a, heads: heads}
		switch len(shape) {
		case 1:
			t.dims = []uint64{uint64(shape[0])}
		case 2:
			if shape[1]%int(qt.BlockSize()) != 0 {
				return fmt.Errorf("tensor %s has %d columns, not a multiple of the %s block (%d)", hf, shape[1], qt, qt.BlockSize())
			}
			t.typ, t.dims = qt, []uint64{uint64(shape[1]), uint64(shape[0])}
		default:
			return fmt.Errorf("tensor %s has shape %v, want a vector or a matrix", hf, shape)
		}
		plan = append(plan, t)
		return nil
	}
	if err := add("model.embed_tokens.weight", "token_embd.weight", 0); err != nil {
		return nil, err
	}
	for i := range cfg.NumLayers {
		for _, n := range ggufBlockNames {
			heads := map[string]int{"attn_q": cfg.NumHeads, "attn_k": cfg.NumKVHeads}[n.gguf]
			if err := add(fmt.Sprintf("model.layers.%d.%s.weight", i, n.hf), fmt.Sprintf("blk.%d.%s.weight", i, n.gguf), heads); err != nil {
				return nil, err
			}
		}
	}
	if err := add("model.norm.weight", "output_norm.weight", 0); err != nil {
		return nil, err
	}
	if _, ok := tensors["lm_head.weight"]; ok {
		if err := add("lm_head.weight", "output.weight", 0); err != nil {
			return nil, err
		}
	}
	for k := range tensors {
		if !used[k] && !(len(k) > 19 && k[len(k)-19:] == ".rotary_emb.inv_freq") {
			return nil, fmt.Errorf("tensor %s has no GGUF counterpart here (biases are not written)", k)
		}
	}
	if f := llama3RopeFactors(cfg); f != nil {
		plan = append(plan, ggufTensor{name: "rope_freqs.weight", typ: llama.GGMLTypeF32, dims: []uint64{uint64(len(f))}, vals: f})
	}
	return plan, nil
}

// llama3RopeFactors are the per-frequency divisors of llama3 RoPE scaling
// as llama.cpp stores them (rope_freqs), or nil without llama3 scaling.
func llama3RopeFactors(c *llama.Config) []float32 {
	rs := c.RopeScaling
	if rs == nil || rs.RopeType != "llama3" {
		return nil
	}
	low := float64(rs.OriginalMaxPositionEmbeddings) / rs.LowFreqFactor
	high := float64(rs.OriginalMaxPositionEmbeddings) / rs.HighFreqFactor
	out := make([]float32, c.HeadDim/2)
	for i := range out {
		wavelen := 2 * math.Pi * math.Pow(c.RopeTheta, float64(2*i)/float64(c.HeadDim))
		switch {
		case wavelen < high:
			out[i] = 1
		case wavelen > low:
			out[i] = float32(rs.Factor)
		default:
			smooth := (float64(rs.OriginalMaxPositionEmbeddings)/wavelen - rs.LowFreqFactor) / (rs.HighFreqFactor - rs.LowFreqFactor)
			out[i] = float32(1 / ((1-smooth)/rs.Factor + smooth))
		}
	}
	return out
}

// ggufKV is one metadata entry: a string, uint32 or float32.
type ggufKV struct {
	key string
	val any
}

func ggufMeta(c *llama.Config, fileType uint32) []ggufKV {
	u := func(v int) uint32 { return uint32(v) }
	return []ggufKV{
		{"general.architecture", "llama"},
		{"general.name", "fungtrain bench base"},
		{"general.file_type", fileType},
		{"llama.block_count", u(c.NumLayers)},
		{"llama.context_length", u(c.MaxPositionEmbeddings)},
		{"llama.embedding_length", u(c.HiddenSize)},
		{"llama.feed_forward_length", u(c.IntermediateSize)},
		{"llama.attention.head_count", u(c.NumHeads)},
		{"llama.attention.head_count_kv", u(c.NumKVHeads)},
		{"llama.rope.freq_base", float32(c.RopeTheta)},
		{"llama.attention.layer_norm_rms_epsilon", float32(c.RMSNormEps)},
		{"llama.rope.dimension_count", u(c.HeadDim)},
		{"llama.vocab_size", u(c.VocabSize)},
	}
}

const ggufAlign = 32

// writeGGUF writes header, metadata, tensor infos, then each tensor's
// data, every tensor at an offset aligned to 32 bytes.
func writeGGUF(w io.Writer, kv []ggufKV, plan []ggufTensor) error {
	cw := &countWriter{w: w}
	le := binary.LittleEndian
	put := func(v any) {
		if cw.err == nil {
			cw.err = binary.Write(cw, le, v)
		}
	}
	str := func(s string) {
		put(uint64(len(s)))
		if cw.err == nil {
			_, cw.err = io.WriteString(cw, s)
		}
	}
	put(uint32(0x46554747)) // "GGUF"
	put(uint32(3))
	put(uint64(len(plan)))
	put(uint64(len(kv)))
	for _, e := range kv {
		str(e.key)
		switch v := e.val.(type) {
		case string:
			put(uint32(llama.GGUFTypeString))
			str(v)
		case uint32:
			put(uint32(llama.GGUFTypeUint32))
			put(v)
		case float32:
			put(uint32(llama.GGUFTypeFloat32))
			put(v)
		default:
			return fmt.Errorf("gguf metadata %s: unsupported value %T", e.key, v)
		}
	}
	offset := uint64(0)
	for _, t := range plan {
		str(t.name)
		put(uint32(len(t.dims)))
		for _, d := range t.dims {
			put(d)
		}
		put(uint32(t.typ))
		put(offset)
		offset = alignUp(offset+t.bytes(), ggufAlign)
	}
	pad := func() {
		if n := alignUp(cw.n, ggufAlign) - cw.n; n > 0 && cw.err == nil {
			_, cw.err = cw.Write(make([]byte, n))
		}
	}
	pad()
	for _, t := range plan {
		if cw.err != nil {
			return cw.err
		}
		data, err := t.encode()
		if err != nil {
			return fmt.Errorf("gguf tensor %s: %w", t.name, err)
		}
		if _, err := cw.Write(data); err != nil {
			return err
		}
		pad()
	}
	return cw.err
}

func alignUp(n, a uint64) uint64 { return (n + a - 1) / a * a }

type countWriter struct {
	w   io.Writer
	n   uint64
	err error
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += uint64(n)
	return n, err
}

// encode reads the tensor's values as float32 and encodes them.
func (t ggufTensor) encode() ([]byte, error) {
	vals := t.vals
	if t.src != nil {
		var err error
		if vals, err = t.src.Float32s(); err != nil {
			return nil, err
		}
		t.src.Free()
	}
	cols := int(t.dims[0])
	if t.heads > 0 {
		vals = permuteRoPERows(vals, cols, t.heads)
	}
	switch t.typ {
	case llama.GGMLTypeF32:
		out := make([]byte, 4*len(vals))
		for i, v := range vals {
			binary.LittleEndian.PutUint32(out[4*i:], math.Float32bits(v))
		}
		return out, nil
	case llama.GGMLTypeQ8_0:
		return quantizeBlocks(vals, 34, putQ8_0), nil
	case llama.GGMLTypeQ4_0:
		return quantizeBlocks(vals, 18, putQ4_0), nil
	}
	return nil, fmt.Errorf("unsupported type %s", t.typ)
}

// permuteRoPERows reorders the rows of a (rows, cols) q or k projection
// from HF's half-split RoPE layout to llama.cpp's interleaved one: within
// each head, HF row j·half+k goes to row 2k+j.
func permuteRoPERows(vals []float32, cols, heads int) []float32 {
	rows := len(vals) / cols
	hd := rows / heads
	half := hd / 2
	out := make([]float32, len(vals))
	for h := range heads {
		for j := range 2 {
			for k := range half {
				src, dst := h*hd+j*half+k, h*hd+2*k+j
				copy(out[dst*cols:(dst+1)*cols], vals[src*cols:(src+1)*cols])
			}
		}
	}
	return out
}

// quantizeBlocks encodes vals in blocks of 32, in parallel.
func quantizeBlocks(vals []float32, blockBytes int, put func(dst []byte, x []float32)) []byte {
	blocks := len(vals) / 32
	out := make([]byte, blocks*blockBytes)
	workers := runtime.NumCPU()
	per := (blocks + workers - 1) / workers
	var wg sync.WaitGroup
	for start := 0; start < blocks; start += per {
		end := min(start+per, blocks)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for b := start; b < end; b++ {
				put(out[b*blockBytes:(b+1)*blockBytes], vals[b*32:(b+1)*32])
			}
		}()
	}
	wg.Wait()
	return out
}

// putQ8_0 encodes 32 values: a float16 scale d = max|x|/127, then 32
// int8 values round(x/d).
func putQ8_0(dst []byte, x []float32) {
	amax := float32(0)
	for _, v := range x {
		amax = max(amax, float32(math.Abs(float64(v))))
	}
	d := amax / 127
	id := float32(0)
	if d != 0 {
		id = 1 / d
	}
	binary.LittleEndian.PutUint16(dst, float16Bits(d))
	for i, v := range x {
		dst[2+i] = byte(int8(math.Round(float64(v * id))))
	}
}

// putQ4_0 encodes 32 values: a float16 scale d = m/-8, where m is the
// value of largest magnitude, then 4-bit codes q = x/d + 8 (values j and
// j+16 share byte j, low nibble first); x ≈ (q-8)·d.
func putQ4_0(dst []byte, x []float32) {
	amax, m := float32(0), float32(0)
	for _, v := range x {
		if a := float32(math.Abs(float64(v))); a > amax {
			amax, m = a, v
		}
	}
	d := m / -8
	id := float32(0)
	if d != 0 {
		id = 1 / d
	}
	binary.LittleEndian.PutUint16(dst, float16Bits(d))
	for j := range 16 {
		lo := min(15, int8(x[j]*id+8.5))
		hi := min(15, int8(x[j+16]*id+8.5))
		dst[2+j] = byte(lo) | byte(hi)<<4
	}
}

// float16Bits rounds f to the nearest IEEE half-precision value (ties to
// even) and returns its bits.
func float16Bits(f float32) uint16 {
	b := math.Float32bits(f)
	sign := uint16(b>>16) & 0x8000
	e := int(b>>23) & 0xff
	mant := b & 0x7fffff
	if e == 0xff {
		if mant != 0 {
			return sign | 0x7e00
		}
		return sign | 0x7c00
	}
	exp := e - 127 + 15
	switch {
	case exp >= 31:
		return sign | 0x7c00
	case exp <= 0:
		if exp < -10 {
			return sign
		}
		mant |= 0x800000
		shift := uint(14 - exp)
		h := mant >> shift
		rem, halfway := mant&(1<<shift-1), uint32(1)<<(shift-1)
		if rem > halfway || (rem == halfway && h&1 == 1) {
			h++
		}
		return sign | uint16(h)
	}
	h := uint32(exp)<<10 | mant>>13
	if rem := mant & 0x1fff; rem > 0x1000 || (rem == 0x1000 && h&1 == 1) {
		h++
	}
	return sign | uint16(h)
}
