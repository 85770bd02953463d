package lora

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/fungtrain/fungtrain/traindata"
)

// RunConfig is the whole YAML run file: one section per concern.
type RunConfig struct {
	Model     ModelConfig     `yaml:"model" json:"model"`
	Data      DataConfig      `yaml:"data" json:"data"`
	LoRA      Settings        `yaml:"lora" json:"lora"`
	Optimizer OptimizerConfig `yaml:"optimizer" json:"optimizer"`
	Schedule  ScheduleConfig  `yaml:"schedule" json:"schedule"`
	Training  TrainingConfig  `yaml:"training" json:"training"`
	Eval      EvalConfig      `yaml:"eval" json:"eval"`
	Output    OutputConfig    `yaml:"output" json:"output"`
}

// ModelConfig names the base model.
type ModelConfig struct {
	Path       string `yaml:"path" json:"path"`               // a model directory or .gguf file
	Dtype      string `yaml:"dtype" json:"dtype"`             // auto, bf16, f16 or f32
	ChatFormat string `yaml:"chat_format" json:"chat_format"` // override template detection: llama3 or chatml
}

// DataConfig is the data section: the training data settings. The dataset
// pipeline's sub-sections share the section; package data reads them, and
// the loader keeps them here as written (so config.yaml and checkpoints
// carry them), once the caller has named them as known (see LoadRunConfig).
type DataConfig struct {
	traindata.Config `yaml:",inline"`
	Pipeline         map[string]any `yaml:",inline" json:"pipeline,omitempty"`
}

// OptimizerConfig configures AdamW.
type OptimizerConfig struct {
	Name        string  `yaml:"name" json:"name"` // adamw
	LR          float64 `yaml:"lr" json:"lr"`
	Beta1       float64 `yaml:"beta1" json:"beta1"`
	Beta2       float64 `yaml:"beta2" json:"beta2"`
	Eps         float64 `yaml:"eps" json:"eps"`
	WeightDecay float64 `yaml:"weight_decay" json:"weight_decay"`
	GradClip    float64 `yaml:"grad_clip" json:"grad_clip"` // global-norm clip; 0 disables
}

// ScheduleConfig configures the learning-rate schedule.
type ScheduleConfig struct {
	Name        string  `yaml:"name" json:"name"` // constant or cosine
	WarmupSteps int     `yaml:"warmup_steps" json:"warmup_steps"`
	MinLR       float64 `yaml:"min_lr" json:"min_lr"` // cosine floor
}

// TrainingConfig configures the loop. A step is one optimizer update over
// GradAccumulation micro-batches of BatchSize examples.
type TrainingConfig struct {
	BatchSize        int    `yaml:"batch_size" json:"batch_size"`
	GradAccumulation int    `yaml:"grad_accumulation" json:"grad_accumulation"`
	Epochs           int    `yaml:"epochs" json:"epochs"`
	MaxSteps         int    `yaml:"max_steps" json:"max_steps"` // 0: from epochs
	Seed             uint64 `yaml:"seed" json:"seed"`
	GradCheckpoint   bool   `yaml:"grad_checkpoint" json:"grad_checkpoint"`
	// Compile traces the training step once per batch shape with MLX
	// compile and replays the fused graph afterwards.
	Compile bool `yaml:"compile" json:"compile"`
	// LossChunk is how many positions the fused LM head + cross-entropy
	// covers at a time, forward and backward (0: the whole batch at once);
	// only that many positions' logits ever exist. See lora/loss.go.
	LossChunk int `yaml:"loss_chunk" json:"loss_chunk"`
	// MemoryLimitGB is MLX's memory limit during training, in GiB (0: MLX's
	// default, most of the device). MLX frees a buffer only when the work
	// that used it has finished, and queues work far ahead of the device;
	// above the limit it stops queuing until finished work frees memory. A
	// limit near the step's true need trades a little speed for a peak
	// close to it.
	MemoryLimitGB float64 `yaml:"memory_limit_gb" json:"memory_limit_gb"`
	// Sequential turns off queuing the next step on the device before the
	// current one's loss is read (done only without accumulation); queuing
	// keeps the device busy between steps and gives identical results.
	Sequential  bool `yaml:"sequential" json:"sequential"`
	ReportEvery int  `yaml:"report_every" json:"report_every"`
	SaveEvery   int  `yaml:"save_every" json:"save_every"`
}

// EvalConfig configures validation.
type EvalConfig struct {
	Every      int `yaml:"every" json:"every"`
	MaxBatches int `yaml:"max_batches" json:"max_batches"` // 0: the whole validation set
	BatchSize  int `yaml:"batch_size" json:"batch_size"`
}

// OutputConfig says where the run is written.
type OutputConfig struct {
	Dir string `yaml:"dir" json:"dir"`
}

// DefaultRunConfig holds the mission defaults.
func DefaultRunConfig() RunConfig {
	return RunConfig{
		Model:     ModelConfig{Dtype: "auto"},
		Data:      DataConfig{Config: traindata.Config{MaskPrompt: true, MaxSeqLength: 1024}},
		LoRA:      DefaultSettings(),
		Optimizer: OptimizerConfig{Name: "adamw", LR: 1e-5, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, GradClip: 1.0},
		Schedule:  ScheduleConfig{Name: "constant"},
		Training: TrainingConfig{BatchSize: 1, GradAccumulation: 8, Epochs: 2, Seed: 42, ReportEvery: 10, Compile: true, LossChunk: 256,
			SaveEvery: 100},
		Eval:   EvalConfig{Every: 50, BatchSize: 1},
		Output: OutputConfig{Dir: "runs/latest"},
	}
}

// LoadRunConfig reads path (may be empty for defaults only), applies
// overrides of the form "section.key=value", decodes strictly (an unknown
// key is an error that names it) and validates. dataSections names the
// keys under data: that another reader owns (the dataset pipeline's
// sub-sections, data.SectionKeys()): they are kept as written in
// Data.Pipeline; any other key there that training does not know is an
// error.
func LoadRunConfig(path string, overrides []string, dataSections ...string) (RunConfig, error) {
	cfg := DefaultRunConfig()
	var root yaml.Node
	if path != "" {
		b, err := os.ReadFile(path)
		if err != nil {
			return cfg, fmt.Errorf("read config: %w", err)
		}
		if err := yaml.Unmarshal(b, &root); err != nil {
			return cfg, fmt.Errorf("config %s: %w", path, err)
		}
		// Decode the file as written first, so errors carry its own line
		// numbers (the re-marshalled tree below has different ones).
		if err := decodeStrict(b, new(RunConfig)); err != nil {
			return cfg, fmt.Errorf("config %s: %w", path, err)
		}
	}
	if root.Kind == 0 {
		root = yaml.Node{Kind: yaml.DocumentNode, Content: []*yaml.Node{{Kind: yaml.MappingNode}}}
	}
	for _, o := range overrides {
		if err := applyOverride(&root, o); err != nil {
			return cfg, err
		}
	}
	b, err := yaml.Marshal(&root)
	if err != nil {
		return cfg, err
	}
	if err := decodeStrict(b, &cfg); err != nil {
		// The file decoded alone, so an override is at fault.
		return cfg, fmt.Errorf("config overrides %s: %w", strings.Join(overrides, " "), err)
	}
	if err := checkDataSections(cfg.Data.Pipeline, dataSections); err != nil {
		return cfg, configError(path, err)
	}
	if err := cfg.Validate(); err != nil {
		return cfg, configError(path, err)
	}
	return cfg, nil
}

func configError(path string, err error) error {
	if path != "" {
		return fmt.Errorf("config %s: %w", path, err)
	}
	return err
}

// checkDataSections rejects keys under data: that neither training nor
// the named sections own.
func checkDataSections(keys map[string]any, known []string) error {
	for _, k := range slices.Sorted(maps.Keys(keys)) {
		if !slices.Contains(known, k) {
			return fmt.Errorf("unknown key data.%s", k)
		}
	}
	return nil
}

// decodeStrict decodes YAML into v; an unknown key is an error.
func decodeStrict(b []byte, v any) error {
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(v); err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	return nil
}

// applyOverride sets section.key[.key...]=value in the YAML tree.
func applyOverride(root *yaml.Node, o string) error {
	eq := strings.IndexByte(o, '=')
	if eq <= 0 {
		return fmt.Errorf("override %q: want section.key=value", o)
	}
	path, val := strings.Split(o[:eq], "."), o[eq+1:]
	var v yaml.Node
	if err := yaml.Unmarshal([]byte(val), &v); err != nil || len(v.Content) == 0 {
		v = yaml.Node{Kind: yaml.ScalarNode, Value: val}
	} else {
		v = *v.Content[0]
	}
	n := root.Content[0]
	for i, key := range path {
		if n.Kind != yaml.MappingNode {
			return fmt.Errorf("override %q: %s is not a section", o, strings.Join(path[:i], "."))
		}
		var next *yaml.Node
		for j := 0; j+1 < len(n.Content); j += 2 {
			if n.Content[j].Value == key {
				next = n.Content[j+1]
				if i == len(path)-1 {
					n.Content[j+1] = &v
				}
				break
			}
		}
		if next == nil {
			child := &yaml.Node{Kind: yaml.MappingNode}
			if i == len(path)-1 {
				child = &v
			}
			n.Content = append(n.Content, &yaml.Node{Kind: yaml.ScalarNode, Value: key}, child)
			next = child
		}
		n = next
	}
	return nil
}

// Validate checks every value.
func (c RunConfig) Validate() error {
	var errs []string
	bad := func(format string, args ...any) { errs = append(errs, fmt.Sprintf(format, args...)) }
	if c.Model.Path == "" {
		bad("model.path is required")
	}
	switch c.Model.Dtype {
	case "auto", "bf16", "f16", "f32", "":
	default:
		bad("model.dtype %q: want auto, bf16, f16 or f32", c.Model.Dtype)
	}
	if c.Data.Dir == "" {
		bad("data.dir is required")
	}
	if c.Data.MaxSeqLength < 2 {
		bad("data.max_seq_length must be at least 2, got %d", c.Data.MaxSeqLength)
	}
	if err := c.LoRA.Validate(0); err != nil {
		bad("%v", err)
	}
	o := c.Optimizer
	if o.Name != "adamw" {
		bad("optimizer.name %q: want adamw", o.Name)
	}
	if !(o.LR > 0) {
		bad("optimizer.lr must be positive, got %g", o.LR)
	}
	if o.Beta1 < 0 || o.Beta1 >= 1 || o.Beta2 < 0 || o.Beta2 >= 1 {
		bad("optimizer.beta1 and beta2 must be in [0, 1), got %g and %g", o.Beta1, o.Beta2)
	}
	if !(o.Eps > 0) {
		bad("optimizer.eps must be positive, got %g", o.Eps)
	}
	if o.WeightDecay < 0 {
		bad("optimizer.weight_decay must be non-negative, got %g", o.WeightDecay)
	}
	if o.GradClip < 0 {
		bad("optimizer.grad_clip must be non-negative, got %g", o.GradClip)
	}
	switch c.Schedule.Name {
	case "constant", "cosine":
	default:
		bad("schedule.name %q: want constant or cosine", c.Schedule.Name)
	}
	if c.Schedule.WarmupSteps < 0 {
		bad("schedule.warmup_steps must be non-negative, got %d", c.Schedule.WarmupSteps)
	}
	if c.Schedule.MinLR < 0 || c.Schedule.MinLR > o.LR {
		bad("schedule.min_lr must be in [0, optimizer.lr], got %g", c.Schedule.MinLR)
	}
	t := c.Training
	if t.BatchSize < 1 {
		bad("training.batch_size must be at least 1, got %d", t.BatchSize)
	}
	if t.GradAccumulation < 1 {
		bad("training.grad_accumulation must be at least 1, got %d", t.GradAccumulation)
	}
	if t.Epochs < 1 && t.MaxSteps < 1 {
		bad("training.epochs or training.max_steps must be at least 1")
	}
	if t.MemoryLimitGB < 0 {
		bad("training.memory_limit_gb must be non-negative, got %v", t.MemoryLimitGB)
	}
	if t.LossChunk < 0 {
		bad("training.loss_chunk must be non-negative, got %d", t.LossChunk)
	}
	if t.MaxSteps < 0 || t.ReportEvery < 1 || t.SaveEvery < 0 {
		bad("training.max_steps must be >= 0, report_every >= 1 and save_every >= 0")
	}
	if c.Eval.Every < 0 || c.Eval.MaxBatches < 0 || c.Eval.BatchSize < 1 {
		bad("eval.every and eval.max_batches must be >= 0 and eval.batch_size >= 1")
	}
	if c.Output.Dir == "" {
		bad("output.dir is required")
	}
	if len(errs) > 0 {
		return errors.New(strings.Join(errs, "; "))
	}
	return nil
}

// YAML renders the resolved config.
func (c RunConfig) YAML() ([]byte, error) { return yaml.Marshal(c) }
