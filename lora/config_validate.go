package lora

import (
	"errors"
	"fmt"
	"math"
	"reflect"
	"slices"
	"strings"
)

// Checking a run config's values, every problem named by its dotted key.

// A keyError is a bad value of one setting, named by its dotted key.
type keyError struct {
	key    string // e.g. optimizer.lr
	detail string // e.g. "must be positive, got -1"
}

func (e keyError) Error() string { return e.key + " " + e.detail }

// Validate checks every value; the error has one line per problem.
func (c RunConfig) Validate() error {
	problems := c.problems()
	errs := make([]error, len(problems))
	for i, p := range problems {
		errs[i] = p
	}
	return errors.Join(errs...)
}

// maxMemoryLimitGB bounds training.memory_limit_gb (1 PiB), so that the
// byte count fits an int64.
const maxMemoryLimitGB = 1 << 20

// maxDistTimeout bounds training.dist_timeout (a week, in seconds), so
// that it fits a time.Duration.
const maxDistTimeout = 7 * 24 * 3600

// problems lists every bad value. Every float setting must be finite first
// (a comparison lets NaN through), then in range.
func (c RunConfig) problems() []keyError {
	var errs []keyError
	bad := func(key, format string, args ...any) {
		errs = append(errs, keyError{key, fmt.Sprintf(format, args...)})
	}
	finite := nonFiniteFloats(c, "")
	for _, e := range finite {
		if !strings.HasPrefix(e.key, "lora.") { // lora's own check names them
			errs = append(errs, e)
		}
	}
	ok := func(key string) bool { // finite, so range checks make sense
		return !slices.ContainsFunc(finite, func(e keyError) bool { return e.key == key })
	}
	if c.Model.Path == "" {
		bad("model.path", "is required")
	}
	switch c.Model.Dtype {
	case "auto", "bf16", "f16", "f32", "":
	default:
		bad("model.dtype", "%q: want auto, bf16, f16 or f32", c.Model.Dtype)
	}
	if c.Data.Dir == "" {
		bad("data.dir", "is required")
	}
	if c.Data.MaxSeqLength < 2 {
		bad("data.max_seq_length", "must be at least 2, got %d", c.Data.MaxSeqLength)
	}
	errs = append(errs, c.LoRA.problems(0)...)
	o := c.Optimizer
	if o.Name != "adamw" {
		bad("optimizer.name", "%q: want adamw", o.Name)
	}
	lrOK := ok("optimizer.lr") && o.LR > 0
	if ok("optimizer.lr") && !lrOK {
		bad("optimizer.lr", "must be positive, got %g", o.LR)
	}
	for _, b := range []struct {
		key  string
		beta float64
	}{{"optimizer.beta1", o.Beta1}, {"optimizer.beta2", o.Beta2}} {
		if ok(b.key) && (b.beta < 0 || b.beta >= 1) {
			bad(b.key, "must be in [0, 1), got %g", b.beta)
		}
	}
	if ok("optimizer.eps") && !(o.Eps > 0) {
		bad("optimizer.eps", "must be positive, got %g", o.Eps)
	}
	if ok("optimizer.weight_decay") && o.WeightDecay < 0 {
		bad("optimizer.weight_decay", "must be non-negative, got %g", o.WeightDecay)
	}
	if ok("optimizer.grad_clip") && o.GradClip < 0 {
		bad("optimizer.grad_clip", "must be non-negative (0 turns clipping off), got %g", o.GradClip)
	}
	switch c.Schedule.Name {
	case "constant", "cosine":
	default:
		bad("schedule.name", "%q: want constant or cosine", c.Schedule.Name)
	}
	if c.Schedule.WarmupSteps < 0 {
		bad("schedule.warmup_steps", "must be non-negative, got %d", c.Schedule.WarmupSteps)
	}
	if ok("schedule.min_lr") && lrOK && (c.Schedule.MinLR < 0 || c.Schedule.MinLR > o.LR) {
		bad("schedule.min_lr", "must be in [0, optimizer.lr], got %g", c.Schedule.MinLR)
	}
	t := c.Training
	if t.BatchSize < 1 {
		bad("training.batch_size", "must be at least 1, got %d", t.BatchSize)
	}
	if t.GradAccumulation < 1 {
		bad("training.grad_accumulation", "must be at least 1, got %d", t.GradAccumulation)
	}
	if t.Epochs < 1 && t.MaxSteps < 1 {
		bad("training.epochs", "or training.max_steps must be at least 1")
	}
	if t.MaxSteps < 0 {
		bad("training.max_steps", "must be non-negative (0: from epochs), got %d", t.MaxSteps)
	}
	if ok("training.memory_limit_gb") && (t.MemoryLimitGB < 0 || t.MemoryLimitGB > maxMemoryLimitGB) {
		bad("training.memory_limit_gb", "must be in [0, %d] GiB (0: MLX's default), got %g", maxMemoryLimitGB, t.MemoryLimitGB)
	}
	if t.LossChunk < 0 {
		bad("training.loss_chunk", "must be non-negative, got %d", t.LossChunk)
	}
	if t.ReportEvery < 1 {
		bad("training.report_every", "must be at least 1, got %d", t.ReportEvery)
	}
	if t.SaveEvery < 0 {
		bad("training.save_every", "must be non-negative (0: only at the end), got %d", t.SaveEvery)
	}
	if t.MicroBatch < 0 {
		bad("training.micro_batch", "must be auto or at least 1, got %d", int(t.MicroBatch))
	}
	if t.MicroBatchTokens < 0 {
		bad("training.micro_batch_tokens", "must be non-negative (0: data.max_seq_length), got %d", t.MicroBatchTokens)
	}
	if ok("training.dist_timeout") && !(t.DistTimeout > 0 && t.DistTimeout <= maxDistTimeout) {
		bad("training.dist_timeout", "must be in (0, %d] seconds, got %g", maxDistTimeout, t.DistTimeout)
	}
	if c.Eval.Every < 0 {
		bad("eval.every", "must be non-negative, got %d", c.Eval.Every)
	}
	if c.Eval.MaxBatches < 0 {
		bad("eval.max_batches", "must be non-negative (0: the whole validation set), got %d", c.Eval.MaxBatches)
	}
	if c.Eval.BatchSize < 1 {
		bad("eval.batch_size", "must be at least 1, got %d", c.Eval.BatchSize)
	}
	if c.Output.Dir == "" {
		bad("output.dir", "is required")
	}
	return errs
}

// nonFiniteFloats names every float setting of v (a config struct whose
// keys are prefix+key, found through its YAML tags, so a new setting is
// covered without a new line here) that is NaN or infinite.
func nonFiniteFloats(v any, prefix string) []keyError {
	var errs []keyError
	var walk func(rv reflect.Value, prefix string)
	walk = func(rv reflect.Value, prefix string) {
		rt := rv.Type()
		for i := range rt.NumField() {
			f := rt.Field(i)
			name, opts, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			if !f.IsExported() || name == "-" {
				continue
			}
			if name == "" {
				name = strings.ToLower(f.Name)
			}
			key := prefix + name
			if slices.Contains(strings.Split(opts, ","), "inline") {
				key = strings.TrimSuffix(prefix, ".")
			}
			switch fv := rv.Field(i); fv.Kind() {
			case reflect.Struct:
				walk(fv, strings.TrimSuffix(key, ".")+".")
			case reflect.Float32, reflect.Float64:
				if x := fv.Float(); math.IsNaN(x) || math.IsInf(x, 0) {
					errs = append(errs, keyError{key, fmt.Sprintf("must be a finite number, got %v", x)})
				}
			}
		}
	}
	walk(reflect.ValueOf(v), prefix)
	return errs
}
