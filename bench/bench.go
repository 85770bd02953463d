// Package bench measures fungtrain's training and generation speed and
// memory on random-init models of real shapes (or a given model), for
// `fungtrain bench` and the side-by-side harness in this directory.
package bench

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"syscall"

	"github.com/fungtrain/fungtrain/llama"
	"github.com/fungtrain/fungtrain/lora"
	"github.com/fungtrain/fungtrain/mlx"
	"github.com/fungtrain/fungtrain/traindata"
)

// Options choose what to measure.
type Options struct {
	Shape      string // tiny, llama-3.2-1b or llama-3.2-3b (when Model is empty)
	Layers     int    // when > 0, the shape with only this many transformer layers (memory probes)
	Model      string // a model directory or .gguf file
	Dtype      string // bf16, f16 or f32
	Seq        int    // training sequence length / generation prompt length
	Batch      int
	Steps      int // measured steps (training) or generated tokens (generation)
	Warmup     int // unmeasured steps first
	LoRA       lora.Settings
	GradCkpt   bool
	NoCompile  bool    // trace the training step every time instead of compiling it
	LossChunk  int     // training.loss_chunk
	MemLimitGB float64 // training.memory_limit_gb
	Sequential bool    // training.sequential
	Seed       uint64
	PromptFrac float64 // training: share of each sequence that is prompt (not loss-counted)

	GradAccum  int      // micro-batches per optimizer step (training.grad_accumulation)
	Lengths    string   // a dataset directory, a lengths file or a spec (see ResolveLengths); "": --seq
	Tokenizer  string   // the tokenizer directory for a dataset --lengths (default: the model's)
	Sets       []string // run-config overrides, section.key=value, applied last
	Dequantize string   // llama.LoadOptions.Dequantize: auto, yes or no
	PeakTFLOPs float64  // the device's dense peak, for MFU
}

// TrainResult is one training measurement.
type TrainResult struct {
	Shape               string              `json:"shape"`
	Dtype               string              `json:"dtype"`
	Backend             string              `json:"backend"`
	Quantized           string              `json:"quantized,omitempty"` // e.g. "4-bit, group 64"; "" when dense
	Seq                 int                 `json:"seq"`                 // 0 with --lengths
	Batch               int                 `json:"batch"`
	GradAccum           int                 `json:"grad_accum"`
	Steps               int                 `json:"steps"` // measured optimizer steps
	Warmup              int                 `json:"warmup"`
	LoRAKeys            string              `json:"lora_keys"`
	LoRALayers          int                 `json:"lora_layers"`
	Rank                int                 `json:"rank"`
	TrainableParams     int                 `json:"trainable_params"`
	GradCheckpoint      bool                `json:"grad_checkpoint"`
	Compiled            bool                `json:"compiled"`
	LossChunk           int                 `json:"loss_chunk"`
	Sequential          bool                `json:"sequential"`
	MLXEnv              map[string]string   `json:"mlx_env,omitempty"` // MLX_* settings in the environment
	MemoryLimitGiB      float64             `json:"memory_limit_gib"`  // 0: MLX's default
	Sets                []string            `json:"sets,omitempty"`    // --set overrides
	Training            lora.TrainingConfig `json:"training"`          // the resolved training section
	MaxSeqLength        int                 `json:"max_seq_length"`
	LengthsSource       string              `json:"lengths_source,omitempty"`
	Lengths             Stats               `json:"lengths"` // of the examples trained on
	StepSeconds         float64             `json:"step_seconds"`
	StepsPerSec         float64             `json:"steps_per_sec"`          // optimizer steps
	TokensPerSec        float64             `json:"tokens_per_sec"`         // non-padding input tokens
	CountedTokensPerSec float64             `json:"counted_tokens_per_sec"` // loss-counted tokens
	FLOPsPerToken       FLOPs               `json:"flops_per_token"`
	AchievedTFLOPs      float64             `json:"achieved_tflops"`
	PeakTFLOPs          float64             `json:"peak_tflops"`
	MFU                 float64             `json:"mfu"` // achieved over peak
	PeakMemoryGiB       float64             `json:"peak_memory_gib"`
	MaxRSSGiB           float64             `json:"max_rss_gib"`
	WeightsGiB          float64             `json:"weights_gib"`      // MLX active memory after loading
	ForwardPeakGiB      float64             `json:"forward_peak_gib"` // peak of one forward pass with the loss, no gradients
	FinalLoss           float64             `json:"final_loss"`
	// Cold start: seconds from the start of the measurement (before the
	// model is read) to the model loaded and to the first optimizer step
	// done, the warm-up's length, and the first step's end as Unix time
	// (for a harness that knows when it started the process).
	LoadSeconds      float64 `json:"load_seconds"`
	FirstStepSeconds float64 `json:"first_step_seconds"`
	FirstStepUnix    float64 `json:"first_step_unix"`
	WarmupSeconds    float64 `json:"warmup_seconds"`
}

// GenResult is one generation measurement.
type GenResult struct {
	Shape           string  `json:"shape"`
	Dtype           string  `json:"dtype"`
	Backend         string  `json:"backend"`
	PromptTokens    int     `json:"prompt_tokens"`
	GeneratedTokens int     `json:"generated_tokens"`
	PrefillPerSec   float64 `json:"prefill_tokens_per_sec"`
	DecodePerSec    float64 `json:"decode_tokens_per_sec"`
	PeakMemoryGiB   float64 `json:"peak_memory_gib"`
	MaxRSSGiB       float64 `json:"max_rss_gib"`
	// Where a decode step's time went on the host, in ms per token:
	// building the graph, MLX's scheduling and encoding (AsyncEval), and
	// waiting for the device (the part the next step's work did not hide).
	DecodeBuildMS float64           `json:"decode_build_ms_per_token"`
	DecodeEvalMS  float64           `json:"decode_eval_ms_per_token"`
	DecodeWaitMS  float64           `json:"decode_wait_ms_per_token"`
	DecodeEnv     map[string]string `json:"decode_env,omitempty"` // the FUNGTRAIN_DECODE_* and MLX_* settings
}

// PerSecond is count/seconds, 0 when no time passed.
func PerSecond(count int, seconds float64) float64 {
	if seconds <= 0 {
		return 0
	}
	return float64(count) / seconds
}

// GiB converts bytes to binary gigabytes.
func GiB(bytes int64) float64 { return float64(bytes) / (1 << 30) }

// MaxRSS is the process's peak resident set size in bytes (Linux reports
// kilobytes, macOS bytes).
func MaxRSS() int64 {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return maxRSSBytes(int64(ru.Maxrss))
}

// loadModel builds the model to measure, on the MLX thread.
func loadModel(o Options) (*llama.Model, string, error) {
	if o.Model != "" {
		m, err := llama.LoadModel(o.Model, llama.LoadOptions{Dtype: o.Dtype, Dequantize: o.Dequantize})
		return m, o.Model, err
	}
	cfg, err := llama.ShapeConfig(o.Shape)
	if err != nil {
		return nil, "", err
	}
	name := o.Shape
	if o.Layers > 0 {
		cfg.NumLayers = o.Layers
		name = fmt.Sprintf("%s with %d layers", o.Shape, o.Layers)
	}
	dt, err := mlx.ParseDtype(o.Dtype)
	if err != nil {
		return nil, "", err
	}
	m, err := llama.NewRandomModel(cfg, dt, o.Seed)
	return m, name, err
}

// SyntheticSplit is n random sequences of seq+1 tokens: seq inputs each,
// whose targets count in the loss except the first promptFrac of them.
func SyntheticSplit(n, seq, vocab int, promptFrac float64, seed uint64) *traindata.Split {
	rng := rand.New(rand.NewPCG(seed, 17))
	s := &traindata.Split{Name: "synthetic"}
	prompt := int(promptFrac * float64(seq))
	for i := 0; i < n; i++ {
		ex := traindata.Example{Tokens: make([]int32, seq+1), Counted: make([]bool, seq+1)}
		for j := range ex.Tokens {
			ex.Tokens[j] = int32(rng.IntN(vocab))
			ex.Counted[j] = j > prompt
		}
		s.Examples = append(s.Examples, ex)
	}
	return s
}

// Generate measures prefill and greedy decoding. Call it on the MLX thread.
func Generate(ctx context.Context, o Options) (*GenResult, error) {
	m, name, err := loadModel(o)
	if err != nil {
		return nil, err
	}
	defer m.Free()
	rng := rand.New(rand.NewPCG(o.Seed, 3))
	prompt := make([]int32, o.Seq)
	for i := range prompt {
		prompt[i] = int32(rng.IntN(m.Config.VocabSize))
	}
	opts := llama.GenerateOptions{MaxTokens: o.Steps}
	// Warm-up runs the whole generation: MLX's CUDA backend compiles kernels
	// for new shapes (every cache length) the first time it meets them,
	// which a short warm-up would leave inside the measurement.
	for i := 0; i < o.Warmup; i++ {
		if _, err := m.Generate(prompt, opts, func(int32) bool { return ctx.Err() == nil }); err != nil {
			return nil, err
		}
	}
	st, err := m.Generate(prompt, opts, func(int32) bool { return ctx.Err() == nil })
	if err != nil {
		return nil, err
	}
	perToken := func(s float64) float64 {
		if st.Host.Tokens == 0 {
			return 0
		}
		return 1000 * s / float64(st.Host.Tokens)
	}
	return &GenResult{Shape: name, Dtype: m.Dtype.String(), Backend: mlx.Backend(), PromptTokens: st.PromptTokens,
		GeneratedTokens: st.GeneratedTokens, PrefillPerSec: st.PromptTPS, DecodePerSec: st.GenerationTPS,
		PeakMemoryGiB: GiB(st.PeakMemoryBytes), MaxRSSGiB: GiB(MaxRSS()),
		DecodeBuildMS: perToken(st.Host.BuildSeconds), DecodeEvalMS: perToken(st.Host.EvalSeconds),
		DecodeWaitMS: perToken(st.Host.WaitSeconds), DecodeEnv: decodeEnv()}, nil
}

// decodeEnv lists the environment variables that change how generation
// runs: FUNGTRAIN_DECODE_* (llama/decode.go) and MLX_*.
func decodeEnv() map[string]string {
	env := mlxEnv()
	for _, kv := range os.Environ() {
		if k, v, ok := strings.Cut(kv, "="); ok && strings.HasPrefix(k, "FUNGTRAIN_DECODE_") {
			env[k] = v
		}
	}
	return env
}

// mlxEnv lists the MLX_* environment variables, which change how MLX
// schedules and sizes work.
func mlxEnv() map[string]string {
	env := map[string]string{}
	for _, kv := range os.Environ() {
		if k, v, ok := strings.Cut(kv, "="); ok && strings.HasPrefix(k, "MLX_") {
			env[k] = v
		}
	}
	return env
}
