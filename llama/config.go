package llama

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"strings"
)

// Config is a Llama 3.x model configuration (HF config.json fields).
type Config struct {
	ModelType             string       `json:"model_type"`
	Architectures         []string     `json:"architectures,omitempty"`
	HiddenSize            int          `json:"hidden_size"`
	NumLayers             int          `json:"num_hidden_layers"`
	NumHeads              int          `json:"num_attention_heads"`
	NumKVHeads            int          `json:"num_key_value_heads"`
	HeadDim               int          `json:"head_dim"`
	IntermediateSize      int          `json:"intermediate_size"`
	VocabSize             int          `json:"vocab_size"`
	RMSNormEps            float64      `json:"rms_norm_eps"`
	RopeTheta             float64      `json:"rope_theta"`
	RopeScaling           *RopeScaling `json:"rope_scaling,omitempty"`
	TieWordEmbeddings     bool         `json:"tie_word_embeddings"`
	AttentionBias         bool         `json:"attention_bias"`
	MLPBias               bool         `json:"mlp_bias"`
	MaxPositionEmbeddings int          `json:"max_position_embeddings"`
	TorchDtype            string       `json:"torch_dtype,omitempty"`
	BOSTokenID            *int         `json:"bos_token_id,omitempty"`
	EOSTokenID            IntList      `json:"eos_token_id,omitempty"`
	Quantization          *QuantConfig `json:"quantization,omitempty"`

	// RopeTraditional selects MLX's interleaved RoPE layout. GGUF files from
	// llama.cpp's converter permute q/k rows for it; HF weights use halves.
	RopeTraditional bool `json:"-"`
}

// RopeScaling is config.json's rope_scaling block.
type RopeScaling struct {
	RopeType                      string  `json:"rope_type"`
	Type                          string  `json:"type,omitempty"` // older spelling of rope_type
	Factor                        float64 `json:"factor"`
	LowFreqFactor                 float64 `json:"low_freq_factor,omitempty"`
	HighFreqFactor                float64 `json:"high_freq_factor,omitempty"`
	OriginalMaxPositionEmbeddings int     `json:"original_max_position_embeddings,omitempty"`
}

// QuantConfig is the quantization block of MLX-community checkpoints.
type QuantConfig struct {
	GroupSize int    `json:"group_size"`
	Bits      int    `json:"bits"`
	Mode      string `json:"mode,omitempty"`
}

// IntList decodes a JSON int or list of ints (eos_token_id may be either).
type IntList []int

// UnmarshalJSON accepts 5, [5, 6] or null.
func (l *IntList) UnmarshalJSON(b []byte) error {
	s := strings.TrimSpace(string(b))
	if s == "null" {
		*l = nil
		return nil
	}
	if strings.HasPrefix(s, "[") {
		var v []int
		if err := json.Unmarshal(b, &v); err != nil {
			return err
		}
		*l = v
		return nil
	}
	var v int
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	*l = IntList{v}
	return nil
}

// LoadConfig reads and validates a config.json.
func LoadConfig(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	c, err := ParseConfig(b)
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	return c, nil
}

// ParseConfig decodes config.json bytes, fills Llama defaults and validates.
func ParseConfig(b []byte) (*Config, error) {
	c := &Config{TieWordEmbeddings: true, RopeTheta: 10000, RMSNormEps: 1e-5}
	// tie_word_embeddings defaults to true when absent; json leaves the
	// preset value alone in that case.
	if err := json.Unmarshal(b, c); err != nil {
		return nil, fmt.Errorf("parse: %w", err)
	}
	c.fillDefaults()
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return c, nil
}

func (c *Config) fillDefaults() {
	if c.NumKVHeads == 0 {
		c.NumKVHeads = c.NumHeads
	}
	if c.HeadDim == 0 && c.NumHeads > 0 {
		c.HeadDim = c.HiddenSize / c.NumHeads
	}
	if c.RopeScaling != nil && c.RopeScaling.RopeType == "" {
		c.RopeScaling.RopeType = c.RopeScaling.Type
	}
}

// Validate checks that the config describes a Llama model fungtrain runs.
func (c *Config) Validate() error {
	arch := c.ModelType
	if arch == "" && len(c.Architectures) > 0 {
		arch = c.Architectures[0]
	}
	switch arch {
	case "llama", "LlamaForCausalLM":
	case "":
		return errors.New("model_type is missing (want \"llama\")")
	default:
		return fmt.Errorf("unsupported architecture %q: fungtrain runs Llama models (model_type \"llama\")", arch)
	}
	pos := []struct {
		name string
		v    int
	}{
		{"hidden_size", c.HiddenSize}, {"num_hidden_layers", c.NumLayers},
		{"num_attention_heads", c.NumHeads}, {"num_key_value_heads", c.NumKVHeads},
		{"head_dim", c.HeadDim}, {"intermediate_size", c.IntermediateSize}, {"vocab_size", c.VocabSize},
	}
	for _, p := range pos {
		if p.v <= 0 {
			return fmt.Errorf("%s must be positive, got %d", p.name, p.v)
		}
	}
	if c.NumHeads%c.NumKVHeads != 0 {
		return fmt.Errorf("num_attention_heads %d is not a multiple of num_key_value_heads %d", c.NumHeads, c.NumKVHeads)
	}
	if c.HeadDim%2 != 0 {
		return fmt.Errorf("head_dim %d must be even for RoPE", c.HeadDim)
	}
	if err := positiveFinite("rms_norm_eps", c.RMSNormEps); err != nil {
		return err
	}
	if err := positiveFinite("rope_theta", c.RopeTheta); err != nil {
		return err
	}
	if rs := c.RopeScaling; rs != nil {
		// NaN compares false with everything, so the range checks below
		// would let it through: every factor must be finite first.
		for _, f := range []struct {
			key string
			v   float64
		}{{"factor", rs.Factor}, {"low_freq_factor", rs.LowFreqFactor}, {"high_freq_factor", rs.HighFreqFactor}} {
			if math.IsNaN(f.v) || math.IsInf(f.v, 0) {
				return fmt.Errorf("rope_scaling.%s must be a finite number, got %g", f.key, f.v)
			}
		}
		switch rs.RopeType {
		case "llama3":
			if rs.Factor <= 0 || rs.LowFreqFactor <= 0 || rs.HighFreqFactor <= rs.LowFreqFactor || rs.OriginalMaxPositionEmbeddings <= 0 {
				return fmt.Errorf("rope_scaling llama3 needs factor > 0, 0 < low_freq_factor < high_freq_factor and original_max_position_embeddings > 0, got %+v", *rs)
			}
		case "linear":
			if rs.Factor <= 0 {
				return fmt.Errorf("rope_scaling linear needs factor > 0, got %g", rs.Factor)
			}
		case "default", "":
		default:
			return fmt.Errorf("unsupported rope_scaling rope_type %q (want llama3, linear or none)", rs.RopeType)
		}
	}
	if q := c.Quantization; q != nil {
		if q.Bits != 2 && q.Bits != 3 && q.Bits != 4 && q.Bits != 6 && q.Bits != 8 {
			return fmt.Errorf("quantization bits %d unsupported (want 2, 3, 4, 6 or 8)", q.Bits)
		}
		if q.GroupSize != 32 && q.GroupSize != 64 && q.GroupSize != 128 {
			return fmt.Errorf("quantization group_size %d unsupported (want 32, 64 or 128)", q.GroupSize)
		}
		if q.Mode != "" && q.Mode != "affine" {
			return fmt.Errorf("quantization mode %q unsupported (want affine)", q.Mode)
		}
	}
	return nil
}

// positiveFinite checks a float setting: positive and finite (a NaN,
// which fails every comparison, included).
func positiveFinite(key string, v float64) error {
	if !(v > 0) || math.IsInf(v, 1) {
		return fmt.Errorf("%s must be a positive finite number, got %g", key, v)
	}
	return nil
}

// NumParams is the number of parameters of the dense model.
func (c *Config) NumParams() int64 {
	d, h, kv, hd := int64(c.HiddenSize), int64(c.NumHeads), int64(c.NumKVHeads), int64(c.HeadDim)
	attn := d*h*hd + 2*d*kv*hd + h*hd*d
	mlp := 3 * d * int64(c.IntermediateSize)
	per := attn + mlp + 2*d
	n := int64(c.NumLayers)*per + int64(c.VocabSize)*d + d
	if !c.TieWordEmbeddings {
		n += int64(c.VocabSize) * d
	}
	return n
}

// Shapes are the named model shapes used by init-model and bench.
var shapes = map[string]Config{
	"tiny": {ModelType: "llama", HiddenSize: 128, NumLayers: 4, NumHeads: 4, NumKVHeads: 2, HeadDim: 32,
		IntermediateSize: 352, VocabSize: 1024, RMSNormEps: 1e-5, RopeTheta: 500000, TieWordEmbeddings: true,
		MaxPositionEmbeddings: 4096, RopeScaling: &RopeScaling{RopeType: "llama3", Factor: 32, LowFreqFactor: 1,
			HighFreqFactor: 4, OriginalMaxPositionEmbeddings: 8192}},
	"llama-3.2-1b": {ModelType: "llama", HiddenSize: 2048, NumLayers: 16, NumHeads: 32, NumKVHeads: 8, HeadDim: 64,
		IntermediateSize: 8192, VocabSize: 128256, RMSNormEps: 1e-5, RopeTheta: 500000, TieWordEmbeddings: true,
		MaxPositionEmbeddings: 131072, RopeScaling: &RopeScaling{RopeType: "llama3", Factor: 32, LowFreqFactor: 1,
			HighFreqFactor: 4, OriginalMaxPositionEmbeddings: 8192}},
	"llama-3.2-3b": {ModelType: "llama", HiddenSize: 3072, NumLayers: 28, NumHeads: 24, NumKVHeads: 8, HeadDim: 128,
		IntermediateSize: 8192, VocabSize: 128256, RMSNormEps: 1e-5, RopeTheta: 500000, TieWordEmbeddings: true,
		MaxPositionEmbeddings: 131072, RopeScaling: &RopeScaling{RopeType: "llama3", Factor: 32, LowFreqFactor: 1,
			HighFreqFactor: 4, OriginalMaxPositionEmbeddings: 8192}},
}

// ShapeConfig returns the config of a named shape: tiny, llama-3.2-1b or
// llama-3.2-3b.
func ShapeConfig(name string) (*Config, error) {
	c, ok := shapes[name]
	if !ok {
		return nil, fmt.Errorf("unknown shape %q (want tiny, llama-3.2-1b or llama-3.2-3b)", name)
	}
	if c.RopeScaling != nil {
		rs := *c.RopeScaling
		c.RopeScaling = &rs
	}
	c.Architectures = []string{"LlamaForCausalLM"}
	return &c, nil
}
