package llama

import (
	"errors"
	"fmt"
	"io"
	"log/slog"

	"github.com/fungtrain/fungtrain/internal/gguf"
	"github.com/fungtrain/fungtrain/mlx"
)

// GGUF files are read, checked and written by internal/gguf. This file
// writes a Model as a GGUF file in the layout llama.cpp's converter
// (convert_hf_to_gguf.py) gives Llama 3.x, so that llama.cpp, ollama and LM
// Studio run it:
//
//   - general.*: architecture llama, type, name, file_type,
//     quantization_version 2, alignment 32;
//   - llama.*: block_count, context_length, embedding_length,
//     feed_forward_length, attention.head_count(_kv), rope.freq_base,
//     attention.layer_norm_rms_epsilon, vocab_size, rope.dimension_count
//     (key_length/value_length when head_dim is not hidden/heads; linear
//     RoPE scaling as rope.scaling.*);
//   - tokenizer.* (TokenizerGGUFKeys);
//   - tensors with llama.cpp's names; q and k rows in its interleaved RoPE
//     order; llama3 RoPE scaling as rope_freqs.weight (head_dim/2 F32
//     factors); no output.weight when the embeddings are tied; 1-D tensors
//     in F32; matrices in the chosen type (Q8_0/Q4_0 matrices whose rows
//     are not whole blocks of 32 fall back to F16, and under Q4_0 the
//     matrix that computes the logits is Q8_0, as llama-quantize keeps it
//     at higher precision).

// GGUFKV is one metadata key/value for a GGUF file.
type GGUFKV struct {
	Key   string
	Value gguf.Value
}

// GGUFExportOptions choose how a model is written as GGUF.
type GGUFExportOptions struct {
	// Type is the type of the weight matrices: F32, F16, BF16, Q8_0 or Q4_0.
	Type gguf.TensorType
	// Name is general.name.
	Name string
	// Tokenizer is the tokenizer.* metadata (TokenizerGGUFKeys).
	Tokenizer []GGUFKV
}

// ggufFileType is llama.cpp's general.file_type for each weight type.
var ggufFileType = map[gguf.TensorType]uint32{gguf.F32: 0, gguf.F16: 1, gguf.Q4_0: 2, gguf.Q8_0: 7, gguf.BF16: 32}

// ParseGGUFType parses an export type name: f32, f16, bf16, q8_0 or q4_0.
func ParseGGUFType(s string) (gguf.TensorType, error) {
	switch s {
	case "f32", "F32":
		return gguf.F32, nil
	case "f16", "F16":
		return gguf.F16, nil
	case "bf16", "BF16":
		return gguf.BF16, nil
	case "q8_0", "Q8_0":
		return gguf.Q8_0, nil
	case "q4_0", "Q4_0":
		return gguf.Q4_0, nil
	}
	return 0, fmt.Errorf("unknown GGUF type %q (want f16, bf16, q8_0, q4_0 or f32)", s)
}

// WriteGGUF writes m to path as a GGUF file, atomically. Call it on the MLX
// thread: the weights are read out of MLX one tensor at a time as the file
// is written.
func WriteGGUF(m *Model, path string, opts GGUFExportOptions) error {
	w, err := NewGGUFWriter(m, opts)
	if err != nil {
		return err
	}
	if err := w.WriteFile(path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// NewGGUFWriter lays out m as a GGUF file. The tensors' data is read from
// MLX when the writer writes, which must happen on the MLX thread.
func NewGGUFWriter(m *Model, opts GGUFExportOptions) (*gguf.Writer, error) {
	ft, ok := ggufFileType[opts.Type]
	if !ok {
		return nil, fmt.Errorf("export gguf: cannot write weights as %s (want F32, F16, BF16, Q8_0 or Q4_0)", opts.Type)
	}
	for _, b := range m.Layers {
		for _, p := range ModulePaths {
			slot, _ := b.Module(p)
			if _, plain := (*slot).(*Linear); !plain {
				return nil, fmt.Errorf("export gguf: %s has an adapter installed; fuse it first", p)
			}
		}
	}
	c := m.Config
	w := gguf.NewWriter()
	var errs []error
	set := func(k string, v gguf.Value) { errs = append(errs, w.Set(k, v)) }
	u32 := func(k string, v int) { set(k, gguf.Uint32(uint32(v))) }
	name := opts.Name
	if name == "" {
		name = "model"
	}
	set("general.architecture", gguf.String("llama"))
	set("general.type", gguf.String("model"))
	set("general.name", gguf.String(name))
	ctx := c.MaxPositionEmbeddings
	if ctx <= 0 {
		ctx = 2048
		slog.Warn("the model config has no max_position_embeddings; the GGUF says 2048", "key", "llama.context_length")
	}
	u32("llama.block_count", c.NumLayers)
	u32("llama.context_length", ctx)
	u32("llama.embedding_length", c.HiddenSize)
	u32("llama.feed_forward_length", c.IntermediateSize)
	u32("llama.attention.head_count", c.NumHeads)
	u32("llama.attention.head_count_kv", c.NumKVHeads)
	set("llama.rope.freq_base", gguf.Float32(float32(c.RopeTheta)))
	set("llama.attention.layer_norm_rms_epsilon", gguf.Float32(float32(c.RMSNormEps)))
	if c.HeadDim*c.NumHeads != c.HiddenSize {
		u32("llama.attention.key_length", c.HeadDim)
		u32("llama.attention.value_length", c.HeadDim)
	}
	if rs := c.RopeScaling; rs != nil && rs.RopeType == "linear" {
		set("llama.rope.scaling.type", gguf.String("linear"))
		set("llama.rope.scaling.factor", gguf.Float32(float32(rs.Factor)))
	}
	set("general.file_type", gguf.Uint32(ft))
	u32("llama.vocab_size", c.VocabSize)
	u32("llama.rope.dimension_count", c.HeadDim)
	set("general.quantization_version", gguf.Uint32(2))
	set("general.alignment", gguf.Uint32(gguf.DefaultAlignment))
	for _, kv := range opts.Tokenizer {
		set(kv.Key, kv.Value)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("export gguf: %w", err)
	}
	if err := addGGUFTensors(w, m, opts.Type); err != nil {
		return nil, fmt.Errorf("export gguf: %w", err)
	}
	return w, nil
}

// ggufSource is one tensor to write: a dense MLX array, a quantized one or
// 1-D values in hand, and for q/k projections the number of heads whose
// rows are reordered.
type ggufSource struct {
	name  string
	dense *mlx.Array
	q     *mlx.Quantized
	host  []float32
	heads int
	typ   gguf.TensorType
}

func addGGUFTensors(w *gguf.Writer, m *Model, typ gguf.TensorType) error {
	c := m.Config
	matrix := func(t gguf.TensorType, cols int) gguf.TensorType {
		if t.BlockSize() > 1 && cols%int(t.BlockSize()) != 0 {
			return gguf.F16
		}
		return t
	}
	logitsType := typ
	if typ == gguf.Q4_0 {
		logitsType = gguf.Q8_0
	}
	var srcs []ggufSource
	factors, err := m.ropeFactors()
	if err != nil {
		return fmt.Errorf("rope factors: %w", err)
	}
	if factors != nil {
		srcs = append(srcs, ggufSource{name: "rope_freqs.weight", host: factors, typ: gguf.F32})
	}
	embType := typ
	if m.LMHead == nil {
		embType = logitsType
	}
	srcs = append(srcs, ggufSource{name: "token_embd.weight", dense: m.Embed, q: m.EmbedQ, typ: matrix(embType, c.HiddenSize)})
	gg := map[string]string{}
	for k, v := range ggufNames {
		gg[v] = k
	}
	for i, b := range m.Layers {
		p := fmt.Sprintf("blk.%d.", i)
		srcs = append(srcs, ggufSource{name: p + "attn_norm.weight", dense: b.InputNorm, typ: gguf.F32})
		for _, path := range ModulePaths {
			slot, _ := b.Module(path)
			lin := (*slot).(*Linear)
			heads := 0
			switch path {
			case "self_attn.q_proj":
				heads = c.NumHeads
			case "self_attn.k_proj":
				heads = c.NumKVHeads
			}
			in, _ := lin.InOut()
			srcs = append(srcs, ggufSource{name: p + gg[path] + ".weight", dense: lin.Weight, q: lin.Q, heads: heads, typ: matrix(typ, in)})
			if lin.Bias != nil {
				srcs = append(srcs, ggufSource{name: p + gg[path] + ".bias", dense: lin.Bias, heads: heads, typ: gguf.F32})
			}
			if path == "self_attn.o_proj" {
				srcs = append(srcs, ggufSource{name: p + "ffn_norm.weight", dense: b.PostNorm, typ: gguf.F32})
			}
		}
	}
	srcs = append(srcs, ggufSource{name: "output_norm.weight", dense: m.Norm, typ: gguf.F32})
	if m.LMHead != nil {
		srcs = append(srcs, ggufSource{name: "output.weight", dense: m.LMHead.Weight, q: m.LMHead.Q, typ: matrix(logitsType, c.HiddenSize)})
	}
	for _, s := range srcs {
		shape := s.shape()
		if s.heads > 0 && shape[0]%int64(2*s.heads) != 0 {
			return fmt.Errorf("%s: %d rows are not %d heads of even size", s.name, shape[0], s.heads)
		}
		if err := w.AddTensor(s.name, s.typ, shape, s.write); err != nil {
			return err
		}
	}
	return nil
}

// shape is the tensor's row-major shape.
func (s ggufSource) shape() []int64 {
	var sh []int
	if s.host != nil {
		return []int64{int64(len(s.host))}
	}
	if s.q != nil {
		sh = append([]int(nil), s.q.Scales.Shape()...)
		sh[len(sh)-1] *= s.q.GroupSize
	} else {
		sh = s.dense.Shape()
	}
	out := make([]int64, len(sh))
	for i, d := range sh {
		out[i] = int64(d)
	}
	return out
}

// ggufChunk is about how many values are read out of MLX at a time, so a
// large embedding never exists in float32 whole.
const ggufChunk = 1 << 22

// write reads the tensor out of MLX as float32, a block of rows at a time
// (all rows at once for q/k, whose rows are reordered), encodes it and
// writes it.
func (s ggufSource) write(out io.Writer) error {
	shape := s.shape()
	rows := int(shape[0])
	rowLen := 1
	for _, d := range shape[1:] {
		rowLen *= int(d)
	}
	step := max(1, ggufChunk/rowLen)
	if s.heads > 0 {
		step = rows
	}
	var buf []byte
	for r0 := 0; r0 < rows; r0 += step {
		r1 := min(rows, r0+step)
		vals, err := s.rows(r0, r1)
		if err != nil {
			return err
		}
		if s.heads > 0 {
			vals = permuteRows(vals, ggufRowOrder(rows, s.heads, true))
		}
		if buf, err = gguf.Encode(buf[:0], s.typ, vals); err != nil {
			return err
		}
		if _, err := out.Write(buf); err != nil {
			return err
		}
	}
	return nil
}

// rows returns rows [r0, r1) as float32 (dequantized when quantized).
func (s ggufSource) rows(r0, r1 int) ([]float32, error) {
	if s.host != nil {
		return s.host[r0:r1], nil
	}
	sc := mlx.NewScope()
	defer sc.Close()
	var a *mlx.Array
	if s.q != nil {
		q := *s.q
		q.Weight = mlx.SliceAxis(q.Weight, 0, r0, r1)
		q.Scales = mlx.SliceAxis(q.Scales, 0, r0, r1)
		if q.Biases != nil {
			q.Biases = mlx.SliceAxis(q.Biases, 0, r0, r1)
		}
		a = mlx.Dequantize(q)
	} else {
		a = mlx.SliceAxis(s.dense, 0, r0, r1)
	}
	return mlx.AsType(a, mlx.Float32).Float32s()
}

// GGUFInfo is a GGUF file's header: metadata and tensor infos.
type GGUFInfo = gguf.Info

// ReadGGUFInfo reads the header, metadata and tensor infos of a GGUF file.
func ReadGGUFInfo(path string) (*GGUFInfo, error) { return gguf.ReadInfo(path) }

// GGMLType is a GGUF tensor's element type.
type GGMLType = gguf.TensorType

// Tensor types named by callers of the llama package.
const (
	GGMLTypeF32  = gguf.F32
	GGMLTypeF16  = gguf.F16
	GGMLTypeBF16 = gguf.BF16
	GGMLTypeQ4_0 = gguf.Q4_0
	GGMLTypeQ4_1 = gguf.Q4_1
	GGMLTypeQ8_0 = gguf.Q8_0
	GGMLTypeQ4_K = gguf.Q4_K
	GGMLTypeQ6_K = gguf.Q6_K
)
