package lora

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"slices"
	"strconv"
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
	// BiasCorrection divides the moments by 1-βᵗ (Adam as published, and
	// PyTorch's). false is MLX's optim.Adam/AdamW default, which mlx-lm
	// trains with: its early updates are larger (3.2× at the first step,
	// 6.5× around the tenth, 1.26× at the thousandth; see AdamW).
	BiasCorrection bool `yaml:"bias_correction" json:"bias_correction"`
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
	// current one's loss is read; queuing keeps the device busy between
	// steps and gives identical results.
	Sequential  bool `yaml:"sequential" json:"sequential"`
	ReportEvery int  `yaml:"report_every" json:"report_every"`
	SaveEvery   int  `yaml:"save_every" json:"save_every"`
	// MicroBatch is how many examples of a step run together as one
	// compute batch: auto (0) packs a step's examples, sorted by length,
	// into batches of at most MicroBatchTokens padded tokens (and never
	// fewer rows than BatchSize); N runs them N at a time. The gradient
	// is the step's whatever the grouping (every loss sum is divided by
	// the step's token count); only dropout masks depend on it.
	MicroBatch MicroBatch `yaml:"micro_batch" json:"micro_batch"`
	// MicroBatchTokens is auto's budget of rows × padded length per
	// compute batch; 0 means data.max_seq_length, so a compute batch
	// never holds more tokens than the longest example may.
	MicroBatchTokens int `yaml:"micro_batch_tokens" json:"micro_batch_tokens"`
	// DistTimeout bounds, in seconds, how long a rank waits for the others
	// at a collective (a step's all-reduce, a validation sum) when training
	// across ranks; past it the rank exits with status 124. It must cover
	// the longest skew between ranks: a validation pass, rank 0 writing a
	// checkpoint.
	DistTimeout float64 `yaml:"dist_timeout" json:"dist_timeout"`
}

// microBatchTokens is the auto budget for a run whose examples have at
// most maxSeqLength tokens.
func (c TrainingConfig) microBatchTokens(maxSeqLength int) int {
	if c.MicroBatchTokens > 0 {
		return c.MicroBatchTokens
	}
	return maxSeqLength
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
		Optimizer: OptimizerConfig{Name: "adamw", LR: 1e-5, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, GradClip: 1.0, BiasCorrection: true},
		Schedule:  ScheduleConfig{Name: "constant"},
		Training: TrainingConfig{BatchSize: 1, GradAccumulation: 8, Epochs: 2, Seed: 42, ReportEvery: 10, Compile: true, LossChunk: 256,
			SaveEvery: 100, MicroBatch: MicroBatchAuto, DistTimeout: 600},
		Eval:   EvalConfig{Every: 50, BatchSize: 1},
		Output: OutputConfig{Dir: "runs/latest"},
	}
}

// LoadRunConfig reads path (may be empty for defaults only), applies
// overrides of the form "section.key=value" (the CLI's --set), checks every
// key and value, and validates. dataSections names the keys under data:
// that another reader owns (the dataset pipeline's sub-sections,
// data.SectionKeys()): they are kept as written in Data.Pipeline; any
// other key there that training does not know is an error.
//
// Errors are in the user's words, one line per problem: where the value
// came from (file:line, or the override), the dotted key and what is wrong,
// e.g. "run.yaml:2: unknown key lora.rnak (did you mean lora.rank?)" or
// "--set training.batch_size=two: training.batch_size: want an integer,
// got "two"". Nothing is written before the config is whole.
func LoadRunConfig(path string, overrides []string, dataSections ...string) (RunConfig, error) {
	var b []byte
	if path != "" {
		var err error
		if b, err = os.ReadFile(path); err != nil {
			return DefaultRunConfig(), fmt.Errorf("read config: %w", err)
		}
	}
	return parseRunConfig(path, b, overrides, dataSections)
}

// parseRunConfig is LoadRunConfig on the bytes b of the file path.
func parseRunConfig(path string, b []byte, overrides, dataSections []string) (RunConfig, error) {
	cfg := DefaultRunConfig()
	src := origin{file: path, sets: map[*yaml.Node]string{}}
	root, err := parseConfigTree(path, b)
	if err != nil {
		return cfg, err
	}
	for _, o := range overrides {
		if err := applyOverride(root, o, src.sets); err != nil {
			return cfg, err
		}
	}
	check := keyChecker{origin: src, dataSections: dataSections}
	check.section(root, runConfigType, "")
	if len(check.errs) > 0 {
		return cfg, errors.New(strings.Join(check.errs, "\n"))
	}
	if err := root.Decode(&cfg); err != nil {
		// The check above should have caught it; say where anyway.
		return cfg, fmt.Errorf("%s: %s", src.at(nil), strings.TrimPrefix(err.Error(), "yaml: "))
	}
	if problems := cfg.problems(); len(problems) > 0 {
		lines := make([]string, len(problems))
		for i, p := range problems {
			lines[i] = src.at(lookup(root, p.key)) + ": " + p.Error()
		}
		return cfg, errors.New(strings.Join(lines, "\n"))
	}
	return cfg, nil
}

var yamlLineRE = regexp.MustCompile(`^yaml: line (\d+): `)

// parseConfigTree parses the bytes b of file path into their top-level
// node (an empty mapping for no file or an empty one). Syntax errors name
// the file and line.
func parseConfigTree(path string, b []byte) (*yaml.Node, error) {
	empty := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return empty, nil
		}
		return nil, yamlSyntaxError(path, err)
	}
	var next yaml.Node
	if err := dec.Decode(&next); err == nil {
		return nil, fmt.Errorf("%s:%d: a second YAML document (---): a run config is one document", path, next.Line)
	} else if !errors.Is(err, io.EOF) {
		return nil, yamlSyntaxError(path, err)
	}
	if len(doc.Content) == 0 || isNull(doc.Content[0]) {
		return empty, nil
	}
	return doc.Content[0], nil
}

// yamlSyntaxError puts the file and line in front of a YAML parse error.
// yaml.v3 counts lines from 0 in its parser's errors (those below) and
// from 1 in its scanner's.
func yamlSyntaxError(path string, err error) error {
	msg := err.Error()
	m := yamlLineRE.FindStringSubmatch(msg)
	if m == nil {
		return fmt.Errorf("%s: %s", path, strings.TrimPrefix(msg, "yaml: "))
	}
	line, _ := strconv.Atoi(m[1])
	problem := msg[len(m[0]):]
	for _, p := range []string{"did not find expected", "found duplicate %", "found incompatible YAML document", "found undefined tag handle"} {
		if strings.HasPrefix(problem, p) {
			line++
			break
		}
	}
	return fmt.Errorf("%s:%d: %s", path, line, problem)
}

// applyOverride sets section.key[.key...]=value in the config tree, and
// records in sets every node it made, so errors about them name it.
func applyOverride(root *yaml.Node, o string, sets map[*yaml.Node]string) error {
	eq := strings.IndexByte(o, '=')
	if eq <= 0 {
		return fmt.Errorf("--set %s: want section.key=value", o)
	}
	path, val := strings.Split(o[:eq], "."), o[eq+1:]
	v := &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: val}
	var parsed yaml.Node
	if err := yaml.Unmarshal([]byte(val), &parsed); err == nil && len(parsed.Content) > 0 {
		v = parsed.Content[0]
	}
	markAll(v, o, sets)
	n := root
	for i, key := range path {
		n = unalias(n)
		if isNull(n) {
			*n = yaml.Node{Kind: yaml.MappingNode, Tag: "!!map", Line: n.Line, Column: n.Column}
		}
		if n.Kind != yaml.MappingNode {
			return fmt.Errorf("--set %s: %s is not a section", o, strings.Join(path[:i], "."))
		}
		var next *yaml.Node
		for j := 0; j+1 < len(n.Content); j += 2 {
			if n.Content[j].Value == key {
				next = n.Content[j+1]
				if i == len(path)-1 {
					n.Content[j+1] = v
				}
			}
		}
		if next == nil {
			next = &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
			if i == len(path)-1 {
				next = v
			}
			k := &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: key}
			sets[k], sets[next] = o, o
			n.Content = append(n.Content, k, next)
		}
		n = next
	}
	return nil
}

// markAll records n and every node under it as made by override o.
func markAll(n *yaml.Node, o string, sets map[*yaml.Node]string) {
	sets[n] = o
	for _, c := range n.Content {
		markAll(c, o, sets)
	}
}

// YAML renders the resolved config.
func (c RunConfig) YAML() ([]byte, error) { return yaml.Marshal(c) }

// ResumableKeys are the settings that `train --resume` takes from --set:
// how a step's examples are run, never which examples or what the step
// computes. training.batch_size may change only with the number of ranks,
// so that the global batch stays (Restore checks it).
var ResumableKeys = []string{"training.batch_size", "training.micro_batch", "training.micro_batch_tokens",
	"training.dist_timeout", "training.memory_limit_gb", "training.sequential"}

// WithResumeOverrides applies --set overrides to c, a resumed run's
// config (from its checkpoint), checked as LoadRunConfig checks them.
// Keys other than ResumableKeys are refused.
func (c RunConfig) WithResumeOverrides(overrides []string, dataSections ...string) (RunConfig, error) {
	if len(overrides) == 0 {
		return c, nil
	}
	for _, o := range overrides {
		key, _, _ := strings.Cut(o, "=")
		if !slices.Contains(ResumableKeys, key) {
			return c, fmt.Errorf("--set %s: --set cannot change a resumed run's %s; its config comes from the checkpoint "+
				"(a resumed run takes --set only for %s)", o, key, strings.Join(ResumableKeys, ", "))
		}
	}
	b, err := c.YAML()
	if err != nil {
		return c, err
	}
	return parseRunConfig("the checkpoint's config", b, overrides, dataSections)
}
