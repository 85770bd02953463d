package main

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/fungtrain/fungtrain/hub"
	"github.com/fungtrain/fungtrain/internal/progress"
)

func init() { subcommands = append(subcommands, newPullCmd) }

type pullFlags struct {
	revision string
	include  []string
	all      bool
	workers  int
}

func newPullCmd() *cobra.Command {
	var f pullFlags
	cmd := &cobra.Command{
		Use:   "pull ORG/NAME[@REV] [--revision REV] [--include GLOB ...]",
		Short: "Download a model from the Hugging Face Hub into the shared cache",
		Long: `Pull downloads a model repository from the Hugging Face Hub into the cache
that huggingface_hub, transformers, mlx-lm and Unsloth share
($HF_HUB_CACHE, default $HF_HOME/hub, default ~/.cache/huggingface/hub), and
prints the snapshot directory. Files any of them downloaded before are not
downloaded again, and what fungtrain downloads they find.

Only what a model needs comes: config.json, generation_config.json, the
tokenizer files and the safetensors weights with their index. --include
adds files (glob patterns; '*' does not cross '/'), --all takes every file,
and ORG/NAME/FILE pulls one file (a .gguf, say).

An interrupted pull resumes where it stopped; each file is checked against
the Hub's checksum. HF_ENDPOINT sets the Hub, HF_TOKEN (or $HF_HOME/token)
the token for gated and private models, and HF_HUB_OFFLINE=1 only checks
the cache. Every --model flag and model.path also take ORG/NAME[@REV] and
pull the same way.`,
		Example: `  fungtrain pull meta-llama/Llama-3.2-3B-Instruct
  fungtrain pull mlx-community/Llama-3.2-3B-Instruct-4bit --revision main
  fungtrain pull bartowski/Llama-3.2-3B-Instruct-GGUF/Llama-3.2-3B-Instruct-Q4_K_M.gguf`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error { return runPull(cmd, args[0], f) },
	}
	fl := cmd.Flags()
	fl.StringVar(&f.revision, "revision", "", "branch, tag or commit (default main; or write ORG/NAME@REV)")
	fl.StringArrayVar(&f.include, "include", nil, "also pull files matching this glob (repeatable)")
	fl.BoolVar(&f.all, "all", false, "pull every file of the repository")
	fl.IntVar(&f.workers, "workers", hub.DefaultOptions().Workers, "files downloaded at once")
	return cmd
}

func runPull(cmd *cobra.Command, arg string, f pullFlags) error {
	ref, err := hub.ParseRef(arg)
	if err != nil {
		return fmt.Errorf("pull: %w", err)
	}
	if f.revision != "" {
		if ref.Revision != "" && ref.Revision != f.revision {
			return fmt.Errorf("pull: %s names revision %s and --revision says %s", arg, ref.Revision, f.revision)
		}
		ref.Revision = f.revision
	}
	if f.workers <= 0 {
		return errors.New("pull: --workers must be positive")
	}
	g := progress.NewGroup(os.Stderr)
	h, err := newHub(g, f.workers)
	if err != nil {
		return fmt.Errorf("pull: %w", err)
	}
	t0 := time.Now()
	s, err := h.Pull(cmd.Context(), ref, hub.PullOptions{Include: f.include, All: f.all, Progress: g})
	if err != nil {
		return fmt.Errorf("pull %s: %w", ref, err)
	}
	slog.Info("pulled", "model", ref.String(), "commit", s.Commit, "files", len(s.Files),
		"downloaded_bytes", s.Downloaded, "seconds", time.Since(t0).Round(time.Millisecond).Seconds(), "from_cache", s.FromCache)
	_, err = fmt.Fprintln(cmd.OutOrStdout(), s.Path)
	return err
}
