package lora

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/fungtrain/fungtrain/internal/atomicfile"
	"github.com/fungtrain/fungtrain/llama"
	"github.com/fungtrain/fungtrain/mlx"
	"github.com/fungtrain/fungtrain/traindata"
)

// RunMetadata is run_metadata.json: what is needed to reproduce a run.
type RunMetadata struct {
	Timestamp        string            `json:"timestamp"`
	Seed             uint64            `json:"seed"`
	Config           RunConfig         `json:"config"`
	DataSHA256       map[string]string `json:"data_sha256"`
	ModelSHA256      string            `json:"model_sha256"`
	ModelHashOf      string            `json:"model_sha256_of"`
	ModelRepo        string            `json:"model_repo,omitempty"`   // ORG/NAME when model.path named a Hub repository
	ModelCommit      string            `json:"model_commit,omitempty"` // the commit it resolved to
	FungtrainVersion string            `json:"fungtrain_version"`
	GitCommit        string            `json:"git_commit"`
	MLXVersion       string            `json:"mlx_version"`
	Backend          string            `json:"backend"`
	Device           string            `json:"device"`
	TrainableParams  int               `json:"trainable_params"`
	Resumed          []string          `json:"resumed,omitempty"`
	// Distributed records the ranks of a data-parallel run (absent for
	// one process).
	Distributed *DistributedInfo `json:"distributed,omitempty"`
}

// Build names the fungtrain binary that makes a run.
type Build struct{ Version, Commit string }

// NewRunMetadata describes a run about to start: its config and seed, the
// hashes of its data splits (and of test.jsonl in the data directory,
// when there is one) and of its model, and the versions and device it
// runs with.
func NewRunMetadata(cfg RunConfig, build Build, model ModelSource, splits ...*traindata.Split) (RunMetadata, error) {
	meta := RunMetadata{
		Timestamp: time.Now().UTC().Format(time.RFC3339), Seed: cfg.Training.Seed, Config: cfg,
		DataSHA256: map[string]string{}, FungtrainVersion: build.Version, GitCommit: build.Commit,
		MLXVersion: mlx.Version(), Backend: mlx.Backend(), Device: mlx.DefaultDevice().String(),
	}
	for _, s := range splits {
		meta.DataSHA256[filepath.Base(s.Path)] = s.SHA256
	}
	// The test split is not trained on; a run records its hash where it
	// can be read, for the eval that follows.
	if sum, err := traindata.FileSHA256(filepath.Join(cfg.Data.Dir, "test.jsonl")); err == nil {
		meta.DataSHA256["test.jsonl"] = sum
	}
	if model.Path == "" {
		model.Path = cfg.Model.Path
	}
	sum, of, err := ModelDigest(model.Path)
	if err != nil {
		return meta, fmt.Errorf("hash model: %w", err)
	}
	meta.ModelSHA256, meta.ModelHashOf = sum, of
	meta.ModelRepo, meta.ModelCommit = model.Repo, model.Commit
	return meta, nil
}

// ModelSource is where a run's model came from: the local path its files
// were read from and, when model.path named a Hub repository, the repo id
// and the commit it resolved to. An empty Path means cfg.Model.Path.
type ModelSource struct {
	Path, Repo, Commit string
}

// MarkResumed makes m the metadata of a run resumed in dir: the run's
// original start time and earlier resumes, from dir/run_metadata.json,
// are kept, and this resume (m's own timestamp) is added to them.
func (m *RunMetadata) MarkResumed(dir string) {
	now := m.Timestamp
	b, err := os.ReadFile(filepath.Join(dir, "run_metadata.json"))
	if err == nil {
		var old RunMetadata
		if json.Unmarshal(b, &old) == nil && old.Timestamp != "" {
			m.Timestamp = old.Timestamp
			m.Resumed = old.Resumed
		}
	}
	m.Resumed = append(m.Resumed, now)
}

// ModelDigest hashes a model's weight index: model.safetensors.index.json
// when the model is sharded, else the weight files themselves (a .gguf or
// model.safetensors).
func ModelDigest(path string) (sum, of string, err error) {
	st, err := os.Stat(path)
	if err != nil {
		return "", "", err
	}
	files := []string{path}
	if st.IsDir() {
		idx := filepath.Join(path, "model.safetensors.index.json")
		if _, err := os.Stat(idx); err == nil {
			files = []string{idx}
		} else if files, err = llama.WeightFiles(path); err != nil {
			return "", "", err
		}
	}
	h := sha256.New()
	var names []string
	for _, f := range files {
		fh, err := os.Open(f)
		if err != nil {
			return "", "", err
		}
		_, err = io.Copy(h, fh)
		fh.Close()
		if err != nil {
			return "", "", fmt.Errorf("hash %s: %w", f, err)
		}
		names = append(names, filepath.Base(f))
	}
	return hex.EncodeToString(h.Sum(nil)), strings.Join(names, ","), nil
}

// writeJSON writes v as indented JSON, atomically.
func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("encode %s: %w", path, err)
	}
	return atomicfile.WriteFile(path, append(b, '\n'))
}

func (t *Trainer) writeRecords() error {
	if !t.writes() {
		return nil
	}
	y, err := t.Cfg.YAML()
	if err != nil {
		return err
	}
	if err := atomicfile.WriteFile(filepath.Join(t.out, "config.yaml"), y); err != nil {
		return err
	}
	t.Meta.TrainableParams = t.Adapters.NumParams()
	t.Meta.Config = t.Cfg
	return writeJSON(filepath.Join(t.out, "run_metadata.json"), t.Meta)
}

// metricsWriter appends JSON lines to metrics.jsonl, flushing each one.
type metricsWriter struct {
	f   *os.File
	err error
}

// openMetrics opens metrics.jsonl for appending. On resume it first drops
// the lines written after the checkpoint being resumed (and any torn last
// line), so the file describes exactly one history.
func openMetrics(path string, keepThroughStep int) (*metricsWriter, error) {
	var kept bytes.Buffer
	if b, err := os.ReadFile(path); err == nil && keepThroughStep > 0 {
		sc := bufio.NewScanner(bytes.NewReader(b))
		sc.Buffer(make([]byte, 1<<20), 1<<24)
		for sc.Scan() {
			var rec struct {
				Step *int `json:"step"`
			}
			if json.Unmarshal(sc.Bytes(), &rec) != nil || rec.Step == nil || *rec.Step > keepThroughStep {
				continue
			}
			kept.Write(sc.Bytes())
			kept.WriteByte('\n')
		}
	}
	if err := atomicfile.WriteFile(path, kept.Bytes()); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	return &metricsWriter{f: f}, nil
}

func (w *metricsWriter) write(rec map[string]any) {
	if w == nil || w.err != nil { // nil: a rank that does not write
		return
	}
	b, err := json.Marshal(rec)
	if err == nil {
		_, err = w.f.Write(append(b, '\n'))
	}
	if err == nil {
		err = w.f.Sync()
	}
	w.err = err
}

func (w *metricsWriter) close() error {
	if w == nil {
		return nil
	}
	if err := w.f.Close(); err != nil && w.err == nil {
		w.err = err
	}
	return w.err
}
