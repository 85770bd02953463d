package report

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// File names inside a run directory; docs/RUN_FORMAT.md describes them.
const (
	MetricsFile  = "metrics.jsonl"
	SummaryFile  = "summary.json"
	MetadataFile = "run_metadata.json"
	ConfigFile   = "config.yaml"
	EvalFile     = "eval.json"
)

// TrainPoint is one "train" line of metrics.jsonl. Optional fields are nil
// when the line lacks them.
type TrainPoint struct {
	Step           int      `json:"step"`
	Epoch          *float64 `json:"epoch,omitempty"`
	Loss           float64  `json:"loss"`
	LR             *float64 `json:"lr,omitempty"`
	ItPerSec       *float64 `json:"it_per_sec,omitempty"`
	TokensPerSec   *float64 `json:"tokens_per_sec,omitempty"`
	TrainedTokens  *int64   `json:"trained_tokens,omitempty"`
	PeakMemoryGB   *float64 `json:"peak_memory_gb,omitempty"`
	ActiveMemoryGB *float64 `json:"active_memory_gb,omitempty"`
	Time           string   `json:"time,omitempty"`
}

// EvalPoint is one "eval" (validation) line of metrics.jsonl.
type EvalPoint struct {
	Step      int      `json:"step"`
	ValLoss   float64  `json:"val_loss"`
	ValPPL    *float64 `json:"val_ppl,omitempty"`
	ValTokens *int64   `json:"val_tokens,omitempty"`
	Time      string   `json:"time,omitempty"`
}

// Summary is summary.json, written by the trainer when a run ends. Fields
// missing from the file are nil.
type Summary struct {
	FinalTrainLoss *float64 `json:"final_train_loss,omitempty"`
	FinalValLoss   *float64 `json:"final_val_loss,omitempty"`
	BestValLoss    *float64 `json:"best_val_loss,omitempty"`
	BestStep       *int     `json:"best_step,omitempty"`
	Steps          *int     `json:"steps,omitempty"`
	TrainedTokens  *int64   `json:"trained_tokens,omitempty"`
	Seconds        *float64 `json:"seconds,omitempty"`
	TokensPerSec   *float64 `json:"tokens_per_sec,omitempty"`
	TrainedPerSec  *float64 `json:"trained_tokens_per_sec,omitempty"`
	PeakMemoryGB   *float64 `json:"peak_memory_gb,omitempty"`
	InitialValLoss *float64 `json:"initial_val_loss,omitempty"`
}

// Metadata is run_metadata.json, written by the trainer when a run starts.
type Metadata struct {
	Timestamp        string            `json:"timestamp,omitempty"`
	Seed             *int64            `json:"seed,omitempty"`
	Config           map[string]any    `json:"config,omitempty"`
	DataSHA256       map[string]string `json:"data_sha256,omitempty"`
	ModelSHA256      string            `json:"model_sha256,omitempty"`
	FungtrainVersion string            `json:"fungtrain_version,omitempty"`
	GitCommit        string            `json:"git_commit,omitempty"`
	MLXVersion       string            `json:"mlx_version,omitempty"`
	Backend          string            `json:"backend,omitempty"`
	Device           string            `json:"device,omitempty"`
}

// Run is the content of a run directory.
type Run struct {
	// Dir is the run directory as given.
	Dir string
	// Train and Evals are the metrics, sorted by step. When a step appears
	// more than once (a resumed run re-reporting it) the last line wins.
	Train []TrainPoint
	Evals []EvalPoint
	// Summary and Metadata are nil when their files are absent.
	Summary  *Summary
	Metadata *Metadata
	// SummaryFields and MetadataFields hold every top-level field of the
	// files, unknown ones included, as raw JSON.
	SummaryFields  map[string]json.RawMessage
	MetadataFields map[string]json.RawMessage
	// Config is config.yaml verbatim; HasConfig is false when it is absent.
	Config    string
	HasConfig bool
	// SkippedLines counts metrics lines whose type is neither "train" nor
	// "eval"; they are tolerated for forward compatibility.
	SkippedLines int
	// IncompleteLastLine is set when the last line of metrics.jsonl has no
	// newline and does not parse: a line being written, which is skipped.
	IncompleteLastLine bool
}

// LoadRun reads a run directory. metrics.jsonl is required; the other files
// are optional, but a file that exists and cannot be parsed is an error
// naming it.
func LoadRun(dir string) (*Run, error) {
	r := &Run{Dir: dir}
	if err := r.loadMetrics(filepath.Join(dir, MetricsFile)); err != nil {
		return nil, err
	}
	var err error
	if r.SummaryFields, err = readJSONFile(filepath.Join(dir, SummaryFile), &r.Summary); err != nil {
		return nil, err
	}
	if r.MetadataFields, err = readJSONFile(filepath.Join(dir, MetadataFile), &r.Metadata); err != nil {
		return nil, err
	}
	b, err := os.ReadFile(filepath.Join(dir, ConfigFile))
	switch {
	case err == nil:
		r.Config, r.HasConfig = string(b), true
	case !errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("report: %w", err)
	}
	return r, nil
}

// metricLine is the union of the fields of all metrics.jsonl line types.
// Its own Step and Loss are shallower than the embedded TrainPoint's, so
// encoding/json decodes "step" and "loss" into them (as pointers, to tell a
// missing field from zero) and leaves TrainPoint's unset.
type metricLine struct {
	Type string `json:"type"`
	Step *int   `json:"step"`
	TrainPoint
	Loss      *float64 `json:"loss"`
	ValLoss   *float64 `json:"val_loss"`
	ValPPL    *float64 `json:"val_ppl"`
	ValTokens *int64   `json:"val_tokens"`
}

func (r *Run) loadMetrics(path string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("report: %s not found: the run directory has no metrics (is %s a fungtrain run directory?)", path, r.Dir)
		}
		return fmt.Errorf("report: %w", err)
	}
	train := map[int]TrainPoint{}
	evals := map[int]EvalPoint{}
	lines := bytes.Split(data, []byte("\n"))
	for i, line := range lines {
		n := i + 1
		line = bytes.TrimSpace(line)
		if len(line) == 0 {
			continue
		}
		var m metricLine
		if err := json.Unmarshal(line, &m); err != nil {
			if i == len(lines)-1 {
				// No newline after it: the trainer is writing it right now
				// or died mid-write. Not an error; the page says so.
				r.IncompleteLastLine = true
				continue
			}
			return fmt.Errorf("report: %s:%d: malformed line: %w", path, n, err)
		}
		switch m.Type {
		case "train":
			if m.Step == nil || m.Loss == nil {
				return fmt.Errorf("report: %s:%d: train line needs \"step\" and \"loss\"", path, n)
			}
			p := m.TrainPoint
			p.Step, p.Loss = *m.Step, *m.Loss
			train[p.Step] = p
		case "eval":
			if m.Step == nil || m.ValLoss == nil {
				return fmt.Errorf("report: %s:%d: eval line needs \"step\" and \"val_loss\"", path, n)
			}
			evals[*m.Step] = EvalPoint{Step: *m.Step, ValLoss: *m.ValLoss, ValPPL: m.ValPPL, ValTokens: m.ValTokens, Time: m.Time}
		default:
			r.SkippedLines++
		}
	}
	if len(train) == 0 && len(evals) == 0 {
		return fmt.Errorf("report: %s has no train or eval lines", path)
	}
	for _, p := range train {
		r.Train = append(r.Train, p)
	}
	for _, p := range evals {
		r.Evals = append(r.Evals, p)
	}
	sort.Slice(r.Train, func(i, j int) bool { return r.Train[i].Step < r.Train[j].Step })
	sort.Slice(r.Evals, func(i, j int) bool { return r.Evals[i].Step < r.Evals[j].Step })
	return nil
}

// readJSONFile decodes path into *dst (allocating it) and returns its raw
// top-level fields. A missing file leaves *dst nil and returns nil, nil.
func readJSONFile[T any](path string, dst **T) (map[string]json.RawMessage, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("report: %w", err)
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		return nil, fmt.Errorf("report: %s: %w", path, err)
	}
	v := new(T)
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	if err := dec.Decode(v); err != nil {
		return nil, fmt.Errorf("report: %s: %w", path, err)
	}
	*dst = v
	return raw, nil
}

// jsonText renders a raw JSON value for display: strings unquoted, other
// values compact.
func jsonText(raw json.RawMessage) string {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	var buf bytes.Buffer
	if json.Compact(&buf, raw) == nil {
		return buf.String()
	}
	return strings.TrimSpace(string(raw))
}
