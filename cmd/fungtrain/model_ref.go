package main

import (
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/fungtrain/fungtrain/hub"
	"github.com/fungtrain/fungtrain/internal/progress"
	"github.com/fungtrain/fungtrain/lora"
)

// resolveModel turns a --model or model.path value into something
// llama.Open loads. A path (one that exists, or is written as one) is
// used as it is; ORG/NAME[@REV] (or ORG/NAME/FILE.gguf) comes from the
// Hugging Face cache, pulled into it first when missing, with one
// progress bar per file on a terminal. With HF_HUB_OFFLINE=1 only the
// cache is used.
func resolveModel(ctx context.Context, arg string) (hub.Model, error) {
	if arg == "" || hub.IsLocal(arg) {
		return hub.Model{Path: arg}, nil
	}
	g := progress.NewGroup(os.Stderr)
	h, err := newHub(g, hub.DefaultOptions().Workers)
	if err != nil {
		return hub.Model{}, err
	}
	return h.Resolve(ctx, arg, hub.PullOptions{Progress: g})
}

// newHub returns a Hub configured from the environment whose log records
// print above the progress bars of g.
func newHub(g *progress.Group, workers int) (*hub.Hub, error) {
	cfg, err := hub.ConfigFromEnv()
	if err != nil {
		return nil, err
	}
	slog.Debug("hub", "config", cfg)
	o := hub.DefaultOptions()
	o.Workers = workers
	o.Logger = slog.New(g.LogHandler(slog.Default().Handler()))
	return hub.New(cfg, o), nil
}

// resolveModelArg replaces *arg, a --model value, with the local path it
// resolves to (see resolveModel).
func resolveModelArg(ctx context.Context, arg *string) error {
	m, err := resolveModel(ctx, *arg)
	if err != nil {
		return err
	}
	*arg = m.Path
	return nil
}

// resolveTokenizerArg replaces *arg, a --tokenizer value, with a local
// tokenizer.json: a repository's tokenizer.json and tokenizer_config.json
// are pulled without its weights.
func resolveTokenizerArg(ctx context.Context, arg *string) error {
	if *arg == "" || hub.IsLocal(*arg) {
		return nil
	}
	ref, err := hub.ParseRef(*arg)
	if err != nil {
		return err
	}
	if ref.File == "" {
		ref.File = "tokenizer.json"
	}
	h, err := newHub(nil, hub.DefaultOptions().Workers)
	if err != nil {
		return err
	}
	s, err := h.Pull(ctx, ref, hub.PullOptions{Include: []string{"tokenizer_config.json"}})
	if err != nil {
		return err
	}
	*arg = s.Path
	return nil
}

// pinnedModel is the model a resumed run loads: when its first run took
// the model from the Hub, the commit it recorded, so that a branch that
// has moved since does not change the model under the run.
func pinnedModel(arg, runDir string) string {
	if runDir == "" {
		return arg
	}
	b, err := os.ReadFile(filepath.Join(runDir, "run_metadata.json"))
	if err != nil {
		return arg
	}
	var meta lora.RunMetadata
	if json.Unmarshal(b, &meta) != nil || meta.ModelRepo == "" || meta.ModelCommit == "" {
		return arg
	}
	ref, err := hub.ParseRef(arg)
	if err != nil || ref.Repo != meta.ModelRepo || hub.IsLocal(arg) {
		return arg
	}
	ref.Revision = meta.ModelCommit
	return ref.String()
}

// resumeDir is the run directory whose metadata pins the model: the
// output directory when a checkpoint is resumed, none for a new run.
func resumeDir(checkpoint, outDir string) string {
	if checkpoint == "" {
		return ""
	}
	return outDir
}
