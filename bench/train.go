package bench

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/fungtrain/fungtrain/llama"
	"github.com/fungtrain/fungtrain/lora"
	"github.com/fungtrain/fungtrain/mlx"
	"github.com/fungtrain/fungtrain/traindata"
)

// RunConfig is the run config a training measurement uses: the mission
// defaults, then the bench flags as overrides, then sets (the --set
// overrides, "section.key=value"), all through lora.LoadRunConfig, so a
// trainer setting added later can be measured without a change here.
// Evaluation and checkpoints are off: `bench train` only steps.
func RunConfig(o Options) (lora.RunConfig, error) {
	keys := "[" + strings.Join(o.LoRA.Keys, ", ") + "]"
	base := []string{
		"model.path=(bench)", "data.dir=(bench)",
		fmt.Sprintf("lora.rank=%d", o.LoRA.Rank),
		fmt.Sprintf("lora.num_layers=%d", o.LoRA.NumLayers),
		"lora.keys=" + keys,
		fmt.Sprintf("training.batch_size=%d", o.Batch),
		fmt.Sprintf("training.grad_accumulation=%d", max(o.GradAccum, 1)),
		fmt.Sprintf("training.grad_checkpoint=%v", o.GradCkpt),
		fmt.Sprintf("training.compile=%v", !o.NoCompile),
		fmt.Sprintf("training.loss_chunk=%d", o.LossChunk),
		fmt.Sprintf("training.memory_limit_gb=%g", o.MemLimitGB),
		fmt.Sprintf("training.sequential=%v", o.Sequential),
		fmt.Sprintf("training.seed=%d", o.Seed),
	}
	cfg, err := lora.LoadRunConfig("", append(base, o.Sets...))
	if err != nil {
		return cfg, fmt.Errorf("bench config: %w", err)
	}
	cfg.Eval.Every, cfg.Training.SaveEvery = 0, 0
	cfg.Training.MaxSteps = o.Warmup + o.Steps + trailingSteps(o)
	return cfg, nil
}

// trailingSteps is the one step Train runs after the timed window when it
// times any: the trainer queues each step while the one before computes
// (on the CPU, runs it there and then), and only a step with a successor
// queues one, so the last timed step needs a successor for the window to
// hold the work of exactly Steps steps on every device.
func trailingSteps(o Options) int {
	if o.Steps > 0 {
		return 1
	}
	return 0
}

// ResolveLengths reads the --lengths argument: "" (fixed-length random
// sequences of --seq tokens: nil), a dataset directory (its train split
// tokenized with the tokenizer in tokenizerDir, as training would: the
// data section's mask_prompt, max_seq_length and system_prompt), a
// lengths file (bench lengths --out) or a spec such as
// "mean:290,max:1024". Examples longer than data.max_seq_length are cut
// to it, as training cuts them.
func ResolveLengths(arg, tokenizerDir string, data traindata.Config) (*LengthProfile, error) {
	if arg == "" {
		return nil, nil
	}
	var p *LengthProfile
	st, statErr := os.Stat(arg)
	switch {
	case statErr == nil && st.IsDir():
		if tokenizerDir == "" {
			return nil, fmt.Errorf("--lengths %s: a dataset directory needs a tokenizer: pass --tokenizer (or a --model directory with tokenizer.json)", arg)
		}
		if fi, err := os.Stat(tokenizerDir); err == nil && !fi.IsDir() {
			tokenizerDir = filepath.Dir(tokenizerDir)
		}
		tok, err := llama.LoadTokenizer(tokenizerDir)
		if err != nil {
			return nil, fmt.Errorf("--lengths %s: %w", arg, err)
		}
		defer tok.Close()
		data.Dir = arg
		split, err := traindata.LoadSplit(data, "train", tok)
		if err != nil {
			return nil, fmt.Errorf("--lengths %s: %w", arg, err)
		}
		src := fmt.Sprintf("%s (train split, tokenizer %s, mask_prompt %v, max_seq_length %d)",
			filepath.Clean(arg), tokenizerDir, data.MaskPrompt, data.MaxSeqLength)
		return ProfileOf(split, src)
	case statErr == nil:
		var err error
		if p, err = ReadProfile(arg); err != nil {
			return nil, err
		}
	case strings.Contains(arg, ":"):
		spec, err := ParseLengthSpec(arg)
		if err != nil {
			return nil, err
		}
		p = spec.Profile()
	default:
		return nil, fmt.Errorf("--lengths %s: not a dataset directory, a lengths file or a spec such as mean:290,max:1024", arg)
	}
	if data.MaxSeqLength > 0 {
		for i, e := range p.Examples {
			if e[0] > data.MaxSeqLength {
				p.Examples[i] = [2]int{data.MaxSeqLength, min(e[1], data.MaxSeqLength-1)}
			}
		}
	}
	return p, nil
}

// quantizedText describes the model's base weights: "" when dense, else
// e.g. "4-bit, group 64".
func quantizedText(m *llama.Model) string {
	if len(m.Layers) == 0 {
		return ""
	}
	if l, ok := m.Layers[0].Attn.Q.(*llama.Linear); ok && l.Q != nil {
		return fmt.Sprintf("%d-bit, group %d", l.Q.Bits, l.Q.GroupSize)
	}
	return ""
}

// Train measures LoRA training: Warmup optimizer steps, then Steps timed
// ones. It also times the cold start: loading, and the first optimizer
// step (traces, compiles and, on CUDA, kernel builds included). Call it on
// the MLX thread.
func Train(o Options) (*TrainResult, error) {
	t0 := time.Now()
	cfg, err := RunConfig(o)
	if err != nil {
		return nil, err
	}
	profile, err := ResolveLengths(o.Lengths, o.Tokenizer, cfg.Data.Config)
	if err != nil {
		return nil, err
	}
	m, name, err := loadModel(o)
	if err != nil {
		return nil, err
	}
	defer m.Free()
	loaded := time.Now()
	weights, quantized := mlx.ActiveMemory(), quantizedText(m)
	// The training peak: from here (the adapters and optimizer state
	// included) to the last measured step, loading left out.
	mlx.ResetPeakMemory()
	if cfg.LoRA.NumLayers > len(m.Layers) {
		cfg.LoRA.NumLayers = len(m.Layers)
	}
	tc := cfg.Training
	total := o.Warmup + o.Steps + trailingSteps(o)
	var split *traindata.Split
	seq := o.Seq
	if profile != nil {
		split = profile.Split(m.Config.VocabSize, tc.BatchSize*tc.GradAccumulation, o.Seed)
		seq = 0
	} else {
		split = SyntheticSplit(tc.BatchSize*tc.GradAccumulation*max(total, 1), o.Seq, m.Config.VocabSize, o.PromptFrac, o.Seed)
	}
	used, err := ProfileOf(split, split.Name)
	if err != nil {
		return nil, err
	}
	stats := used.Stats()
	s := cfg.LoRA
	flops, err := TrainFLOPsPerToken(m.Config, s.ResolvedKeys(), s.NumLayers, s.Rank, stats.MeanAttention)
	if err != nil {
		return nil, err
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	tr, err := lora.NewTrainer(cfg, m, split, split, 0, lora.RunMetadata{}, log)
	if err != nil {
		return nil, err
	}
	defer tr.Close()
	res := &TrainResult{Shape: name, Dtype: m.Dtype.String(), Backend: mlx.Backend(), Quantized: quantized,
		Seq: seq, Batch: tc.BatchSize, GradAccum: tc.GradAccumulation, Steps: o.Steps, Warmup: o.Warmup,
		LoRAKeys: fmt.Sprint(s.ResolvedKeys()), LoRALayers: s.NumLayers, Rank: s.Rank,
		TrainableParams: tr.Adapters.NumParams(), GradCheckpoint: tc.GradCheckpoint, Compiled: tc.Compile,
		LossChunk: tc.LossChunk, MemoryLimitGiB: tc.MemoryLimitGB, Sequential: tc.Sequential, MLXEnv: mlxEnv(),
		Sets: o.Sets, Training: tc, MaxSeqLength: cfg.Data.MaxSeqLength, Lengths: stats, FLOPsPerToken: flops,
		PeakTFLOPs: o.PeakTFLOPs, LoadSeconds: loaded.Sub(t0).Seconds()}
	if profile != nil {
		res.LengthsSource = profile.Source
	}
	step := func(i int, warm bool) (lora.StepStats, error) {
		st, err := tr.Step()
		if err != nil {
			what := "step"
			if warm {
				what = "warm-up step"
			}
			return st, fmt.Errorf("%s %d: %w", what, i+1, err)
		}
		if res.FirstStepSeconds == 0 {
			now := time.Now()
			res.FirstStepSeconds = now.Sub(t0).Seconds()
			res.FirstStepUnix = float64(now.UnixNano()) / 1e9
		}
		return st, nil
	}
	for i := 0; i < o.Warmup; i++ {
		if _, err := step(i, true); err != nil {
			return nil, err
		}
	}
	res.WarmupSeconds = time.Since(loaded).Seconds()
	if o.Steps == 0 {
		res.PeakMemoryGiB = GiB(mlx.PeakMemory())
		res.MaxRSSGiB = GiB(MaxRSS())
		return res, nil
	}
	// The window runs from the return of the last warm-up step to that of
	// the last timed one, with nothing else run in between. Every step in
	// it queued its successor before returning (trailingSteps), so on a GPU
	// the window holds the device work of exactly Steps steps (the first
	// started during warm-up's last read, the trailing one runs on after),
	// and on the CPU, whose queueing runs the step, Steps steps as well
	// (the second through the trailing one). (A forward probe here, and no
	// trailing step, once made it Steps/(Steps-1) too fast.)
	var tokens, counted int
	start := time.Now()
	for i := 0; i < o.Steps; i++ {
		st, err := step(i, false)
		if err != nil {
			return nil, err
		}
		tokens += st.Tokens
		counted += st.Counted
		res.FinalLoss = st.Loss
	}
	el := time.Since(start).Seconds()
	if _, err := step(o.Steps, false); err != nil { // the trailing step
		return nil, err
	}
	res.StepSeconds = el / float64(o.Steps)
	res.StepsPerSec = PerSecond(o.Steps, el)
	res.TokensPerSec = PerSecond(tokens, el)
	res.CountedTokensPerSec = PerSecond(counted, el)
	res.AchievedTFLOPs = res.TokensPerSec * flops.Total / 1e12
	res.MFU = MFU(res.TokensPerSec, flops.Total, o.PeakTFLOPs)
	res.PeakMemoryGiB = GiB(mlx.PeakMemory())
	res.MaxRSSGiB = GiB(MaxRSS())
	// The forward-only peak, once training has drained (the last step
	// queues nothing after it).
	mlx.ClearCache()
	mlx.ResetPeakMemory()
	one := &traindata.Split{Name: "probe", Examples: split.Examples[:tc.BatchSize]}
	if _, _, err := lora.EvaluateLoss(m, one, tc.BatchSize, 1, 0); err != nil {
		return nil, err
	}
	res.WeightsGiB, res.ForwardPeakGiB = GiB(weights), GiB(mlx.PeakMemory())
	return res, nil
}
