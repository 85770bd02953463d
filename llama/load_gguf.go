package llama

import (
	"encoding/binary"
	"fmt"
	"log/slog"
	"math"
	"os"
	"strconv"
	"strings"
	"unsafe"

	"github.com/x448/float16"

	"github.com/fungtrain/fungtrain/internal/gguf"
	"github.com/fungtrain/fungtrain/mlx"
)

// ggufNames maps llama.cpp tensor names (per block after "blk.N.") to HF
// module names.
var ggufNames = map[string]string{
	"attn_q":      "self_attn.q_proj",
	"attn_k":      "self_attn.k_proj",
	"attn_v":      "self_attn.v_proj",
	"attn_output": "self_attn.o_proj",
	"ffn_gate":    "mlp.gate_proj",
	"ffn_up":      "mlp.up_proj",
	"ffn_down":    "mlp.down_proj",
	"attn_norm":   "input_layernorm",
	"ffn_norm":    "post_attention_layernorm",
}

// ggufFloat reads a float key as the decimal it was written from: GGUF keeps
// rms epsilon and rope theta as float32, and float64(float32(1e-5)) is
// 9.999999747378752e-06, which would end up in a saved config.json. The
// shortest decimal that rounds to the same float32 is what the converter
// read from config.json.
func ggufFloat(info *gguf.Info, key string) (float64, error) {
	if v, ok := info.Value(key); ok {
		if f, ok := v.V.(float32); ok {
			return strconv.ParseFloat(strconv.FormatFloat(float64(f), 'g', -1, 32), 64)
		}
	}
	return info.Float(key)
}

// ConfigFromGGUF builds a Config from a GGUF file's llama.* metadata.
func ConfigFromGGUF(info *gguf.Info) (*Config, error) {
	arch, err := info.Architecture()
	if err != nil {
		return nil, err
	}
	if arch != "llama" {
		return nil, fmt.Errorf("unsupported GGUF architecture %q: fungtrain runs llama models", arch)
	}
	c := &Config{ModelType: "llama", Architectures: []string{"LlamaForCausalLM"}, RopeTheta: 10000, RMSNormEps: 1e-5}
	ints := []struct {
		key string
		dst *int
		opt bool
	}{
		{"block_count", &c.NumLayers, false},
		{"embedding_length", &c.HiddenSize, false},
		{"feed_forward_length", &c.IntermediateSize, false},
		{"attention.head_count", &c.NumHeads, false},
		{"attention.head_count_kv", &c.NumKVHeads, true},
		{"context_length", &c.MaxPositionEmbeddings, true},
		{"rope.dimension_count", &c.HeadDim, true},
		{"vocab_size", &c.VocabSize, true},
	}
	for _, f := range ints {
		key := info.ArchKey(f.key)
		if !info.Has(key) && f.opt {
			continue
		}
		v, err := info.Uint(key)
		if err != nil {
			return nil, err
		}
		if v > math.MaxInt32 {
			return nil, fmt.Errorf("gguf %s: %s is %d, too large", info.Path, key, v)
		}
		*f.dst = int(v)
	}
	if key := info.ArchKey("attention.layer_norm_rms_epsilon"); info.Has(key) {
		if c.RMSNormEps, err = ggufFloat(info, key); err != nil {
			return nil, err
		}
	}
	if key := info.ArchKey("rope.freq_base"); info.Has(key) {
		if c.RopeTheta, err = ggufFloat(info, key); err != nil {
			return nil, err
		}
	}
	if c.VocabSize == 0 {
		toks, err := info.Strings("tokenizer.ggml.tokens")
		if err != nil {
			return nil, fmt.Errorf("GGUF has neither %s nor tokenizer.ggml.tokens: %w", info.ArchKey("vocab_size"), err)
		}
		c.VocabSize = len(toks)
	}
	_, hasOutput := info.Tensor("output.weight")
	c.TieWordEmbeddings = !hasOutput
	_, c.AttentionBias = info.Tensor("blk.0.attn_q.bias")
	_, c.MLPBias = info.Tensor("blk.0.ffn_up.bias")
	if eos, err := info.Uint("tokenizer.ggml.eos_token_id"); err == nil {
		c.EOSTokenID = IntList{int(eos)}
	}
	if bos, err := info.Uint("tokenizer.ggml.bos_token_id"); err == nil {
		v := int(bos)
		c.BOSTokenID = &v
	}
	c.fillDefaults()
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return c, nil
}

// ggufRowOrder maps between llama.cpp's q/k row order and HF's. The
// converter interleaves the two rotary halves of every head so that GGUF
// runs interleaved ("traditional") RoPE; fungtrain keeps HF's order (the
// same RoPE for both kinds of checkpoint, and adapters that move between
// them). Within head h of size hd, HF row h·hd + j·hd/2 + k is GGUF row
// h·hd + 2k + j. toGGUF says which way: hfRow → ggufRow or back.
func ggufRowOrder(rows, heads int, toGGUF bool) []int {
	hd := rows / heads
	half := hd / 2
	src := make([]int, rows) // src[dst row] = source row
	for h := 0; h < heads; h++ {
		for j := 0; j < 2; j++ {
			for k := 0; k < half; k++ {
				hf, gg := h*hd+j*half+k, h*hd+2*k+j
				if toGGUF {
					src[gg] = hf
				} else {
					src[hf] = gg
				}
			}
		}
	}
	return src
}

// permuteRows reorders the rows of a row-major buffer: row i of the result
// is row order[i] of b.
func permuteRows[T any](b []T, order []int) []T {
	rowLen := len(b) / len(order)
	out := make([]T, len(b))
	for i, src := range order {
		copy(out[i*rowLen:(i+1)*rowLen], b[src*rowLen:(src+1)*rowLen])
	}
	return out
}

// ggufLoadable are the tensor types fungtrain reads from GGUF files.
var ggufLoadable = map[gguf.TensorType]bool{gguf.F32: true, gguf.F16: true, gguf.BF16: true, gguf.Q4_0: true, gguf.Q4_1: true, gguf.Q8_0: true}

// loadGGUF loads the model of the GGUF file that info was read from. The
// tensors are read here, in Go, not by MLX's GGUF loader: the header has
// been parsed once already (info), and MLX would turn BF16 weights into
// float16.
func loadGGUF(info *gguf.Info, opts LoadOptions) (*Model, error) {
	path := info.Path
	for _, t := range info.Tensors {
		if !ggufLoadable[t.Type] {
			return nil, fmt.Errorf("load model %s: tensor %s has GGML type %s; fungtrain loads F32, F16, BF16, Q4_0, Q4_1 and Q8_0", path, t.Name, t.Type)
		}
	}
	if binary.NativeEndian.Uint16([]byte{1, 0}) != 1 {
		return nil, fmt.Errorf("load model %s: GGUF tensors are little-endian and this machine is not", path)
	}
	cfg, err := ConfigFromGGUF(info)
	if err != nil {
		return nil, fmt.Errorf("load model %s: %w", path, err)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("load model: %w", err)
	}
	defer f.Close()
	if st, err := f.Stat(); err != nil || st.Size() != info.FileSize {
		return nil, fmt.Errorf("load model %s: the file changed since its header was read", path)
	}
	heads := map[string]int{"attn_q": cfg.NumHeads, "attn_k": cfg.NumKVHeads}
	tensors := map[string]*mlx.Array{}
	var ropeFactors []float32
	for _, ti := range info.Tensors {
		hf, err := hfName(ti.Name)
		if err != nil {
			freeAll(tensors)
			return nil, fmt.Errorf("load model %s: %w", path, err)
		}
		raw, err := info.ReadTensor(f, ti)
		if err != nil {
			freeAll(tensors)
			return nil, fmt.Errorf("load model: %w", err)
		}
		if hf == "rope_freqs" {
			if ropeFactors, err = gguf.Decode(ti.Type, raw, int(ti.Elements())); err != nil {
				freeAll(tensors)
				return nil, fmt.Errorf("load model %s: %s: %w", path, ti.Name, err)
			}
			continue
		}
		shape := ti.Shape()
		if parts := strings.Split(ti.Name, "."); len(parts) == 4 && heads[parts[2]] > 0 {
			if shape[0]%int64(2*heads[parts[2]]) != 0 {
				freeAll(tensors)
				return nil, fmt.Errorf("load model %s: tensor %s has %d rows, not a whole number of %d heads", path, ti.Name, shape[0], heads[parts[2]])
			}
			raw = permuteRows(raw, ggufRowOrder(int(shape[0]), heads[parts[2]], false))
		}
		arrays, err := ggufArrays(ti, raw)
		if err != nil {
			freeAll(tensors)
			return nil, fmt.Errorf("load model %s: %w", path, err)
		}
		base := strings.TrimSuffix(hf, ".weight")
		for suffix, a := range arrays {
			if suffix == "weight" {
				tensors[hf] = a
			} else {
				tensors[base+"."+suffix] = a
			}
		}
	}
	// Llama 3.1+ GGUFs carry the llama3 RoPE scaling as per-dimension
	// factors of the rotation period. When they are Llama 3's standard
	// scaling, the config says so, and the model rotates exactly as it does
	// loaded from HF files (and a saved config.json keeps the scaling).
	custom := false
	if ropeFactors != nil {
		if cfg.RopeScaling = llama3ScalingOf(cfg, ropeFactors); cfg.RopeScaling == nil {
			custom = true
			slog.Warn("the GGUF's rope_freqs are not Llama 3's standard scaling; fungtrain runs them, but a saved config.json cannot describe them", "file", path)
		}
	}
	m, err := build(cfg, tensors, opts)
	if err != nil {
		return nil, fmt.Errorf("load model %s: %w", path, err)
	}
	if custom {
		if err := m.applyRopeFactors(ropeFactors); err != nil {
			m.Free()
			return nil, fmt.Errorf("load model %s: rope_freqs: %w", path, err)
		}
	}
	return m, nil
}

// ggufArrays turns one tensor's GGUF bytes (rows already in HF order) into
// MLX arrays: {"weight"} for F32, F16 and BF16, and for Q4_0, Q4_1 and Q8_0
// MLX's affine quantized form {"weight", "scales", "biases"} (group size 32,
// float16 scales and biases, w = scale·q + bias with q unsigned), the same
// arrays MLX's own GGUF loader makes.
func ggufArrays(ti gguf.TensorInfo, raw []byte) (map[string]*mlx.Array, error) {
	s64 := ti.Shape()
	shape := make([]int, len(s64))
	for i, d := range s64 {
		shape[i] = int(d)
	}
	n := int(ti.Elements())
	switch ti.Type {
	case gguf.F32:
		return map[string]*mlx.Array{"weight": mlx.FromFloat32s(bytesAs[float32](raw, n), shape...)}, nil
	case gguf.F16:
		return map[string]*mlx.Array{"weight": mlx.FromFloat16s(bytesAs[float16.Float16](raw, n), shape...)}, nil
	case gguf.BF16:
		return map[string]*mlx.Array{"weight": mlx.FromBF16s(bytesAs[mlx.BF16](raw, n), shape...)}, nil
	case gguf.Q4_0, gguf.Q4_1, gguf.Q8_0:
	default:
		return nil, fmt.Errorf("tensor %s: cannot load type %s", ti.Name, ti.Type)
	}
	bits := 4
	if ti.Type == gguf.Q8_0 {
		bits = 8
	}
	blocks := n / 32
	bs := int(ti.Type.TypeSize())
	packed := make([]byte, n*bits/8)
	scales := make([]float16.Float16, blocks)
	biases := make([]float16.Float16, blocks)
	le := binary.LittleEndian
	for b := 0; b < blocks; b++ {
		blk := raw[b*bs : (b+1)*bs]
		d := float16.Frombits(le.Uint16(blk))
		scales[b] = d
		out := packed[b*32*bits/8:]
		switch ti.Type {
		case gguf.Q8_0: // int8 q -> q+128, bias -128·d
			biases[b] = float16.Fromfloat32(-128 * d.Float32())
			for j, q := range blk[2:34] {
				out[j] = q ^ 0x80
			}
		case gguf.Q4_0, gguf.Q4_1:
			qs := blk[2:18]
			if ti.Type == gguf.Q4_1 { // float16 m, then nibbles; w = d·q + m
				biases[b] = float16.Frombits(le.Uint16(blk[2:]))
				qs = blk[4:20]
			} else { // w = d·(q-8)
				biases[b] = float16.Fromfloat32(-8 * d.Float32())
			}
			// GGUF: byte j holds q[j] (low) and q[j+16] (high). MLX packs
			// consecutive values from the low bits up: byte j holds
			// q[2j] and q[2j+1].
			var q [32]byte
			for j, v := range qs {
				q[j], q[j+16] = v&15, v>>4
			}
			for j := 0; j < 16; j++ {
				out[j] = q[2*j] | q[2*j+1]<<4
			}
		}
	}
	cols := shape[len(shape)-1]
	qshape := append(append([]int(nil), shape[:len(shape)-1]...), cols*bits/32)
	sshape := append(append([]int(nil), shape[:len(shape)-1]...), cols/32)
	return map[string]*mlx.Array{
		"weight": mlx.FromUint32s(bytesAs[uint32](packed, len(packed)/4), qshape...),
		"scales": mlx.FromFloat16s(scales, sshape...),
		"biases": mlx.FromFloat16s(biases, sshape...),
	}, nil
}

// bytesAs views little-endian bytes as n values of T (the machine is
// little-endian; loadGGUF checks).
func bytesAs[T any](b []byte, n int) []T {
	if n == 0 {
		return nil
	}
	return unsafe.Slice((*T)(unsafe.Pointer(&b[0])), n)
}

func (m *Model) applyRopeFactors(f []float32) error {
	c := m.Config
	if len(f) != c.HeadDim/2 {
		return fmt.Errorf("has %d factors, want %d", len(f), c.HeadDim/2)
	}
	periods := make([]float32, len(f))
	for i := range periods {
		base := math.Pow(c.RopeTheta, float64(2*i)/float64(c.HeadDim))
		periods[i] = float32(base * float64(f[i]))
	}
	m.freqs.Free()
	m.freqs = mlx.FromFloat32s(periods, len(periods))
	mlx.Detach(m.freqs)
	for _, b := range m.Layers {
		b.Attn.rope.Freqs = m.freqs
	}
	return mlx.Eval(m.freqs)
}

// ropeFactors returns the model's llama3 RoPE scaling as llama.cpp's
// rope_freqs: per dimension pair, the factor by which the rotation period
// grows (1 for unscaled pairs), or nil when the model has no such scaling.
func (m *Model) ropeFactors() ([]float32, error) {
	if m.freqs == nil {
		return nil, nil
	}
	periods, err := m.freqs.Float32s()
	if err != nil {
		return nil, err
	}
	c := m.Config
	f := make([]float32, len(periods))
	for i, p := range periods {
		f[i] = float32(float64(p) / math.Pow(c.RopeTheta, float64(2*i)/float64(c.HeadDim)))
	}
	return f, nil
}

// llama3ScalingOf returns the rope_scaling block that gives these
// rope_freqs factors, when they are Llama 3.1-3.3's scaling (low 1, high 4,
// original context 8192, the largest factor as the factor), else nil.
func llama3ScalingOf(c *Config, factors []float32) *RopeScaling {
	var top float32
	for _, f := range factors {
		top = max(top, f)
	}
	rs := &RopeScaling{RopeType: "llama3", Factor: float64(top), LowFreqFactor: 1, HighFreqFactor: 4, OriginalMaxPositionEmbeddings: 8192}
	rs.Factor, _ = strconv.ParseFloat(strconv.FormatFloat(rs.Factor, 'g', -1, 32), 64)
	probe := *c
	probe.RopeScaling = rs
	periods := ropeFreqs(&probe)
	if len(periods) != len(factors) {
		return nil
	}
	for i, p := range periods {
		want := float64(p) / math.Pow(c.RopeTheta, float64(2*i)/float64(c.HeadDim))
		if math.Abs(want-float64(factors[i])) > 1e-5*want {
			return nil
		}
	}
	return rs
}

func hfName(g string) (string, error) {
	switch {
	case g == "token_embd.weight" || strings.HasPrefix(g, "token_embd."):
		return "model.embed_tokens" + strings.TrimPrefix(g, "token_embd"), nil
	case strings.HasPrefix(g, "output_norm."):
		return "model.norm" + strings.TrimPrefix(g, "output_norm"), nil
	case strings.HasPrefix(g, "output."):
		return "lm_head" + strings.TrimPrefix(g, "output"), nil
	case strings.HasPrefix(g, "rope_freqs."):
		return "rope_freqs", nil
	case strings.HasPrefix(g, "blk."):
		rest := strings.TrimPrefix(g, "blk.")
		dot := strings.IndexByte(rest, '.')
		if dot < 0 {
			break
		}
		layer, tail := rest[:dot], rest[dot+1:]
		dot = strings.IndexByte(tail, '.')
		if dot < 0 {
			break
		}
		mod, suffix := tail[:dot], tail[dot:]
		if hf, ok := ggufNames[mod]; ok {
			return "model.layers." + layer + "." + hf + suffix, nil
		}
	}
	return "", fmt.Errorf("unknown GGUF tensor %s", g)
}

// loadGGUFModel reads a GGUF file's header and loads its model.
func loadGGUFModel(path string, opts LoadOptions) (*Model, error) {
	info, err := gguf.ReadInfo(path)
	if err != nil {
		return nil, fmt.Errorf("load model: %w", err)
	}
	return loadGGUF(info, opts)
}
