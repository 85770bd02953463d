package main

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/fungtrain/fungtrain/internal/atomicfile"
	"github.com/fungtrain/fungtrain/llama"
	"github.com/fungtrain/fungtrain/mlx"
)

func init() { subcommands = append(subcommands, newInitModelCmd) }

type initModelFlags struct {
	shape, out, tokenizer, dtype string
	seed                         uint64
	force                        bool
}

func newInitModelCmd() *cobra.Command {
	var f initModelFlags
	cmd := &cobra.Command{
		Use:   "init-model --shape tiny|llama-3.2-1b|llama-3.2-3b --out DIR",
		Short: "Write a random-init HF-format Llama checkpoint",
		Long: `init-model writes a Llama checkpoint with random weights (N(0, 0.02)
matrices, unit norms) in HF format: config.json and model.safetensors. It is
for benchmarks and tests where real weights cannot be downloaded.

--tokenizer copies a tokenizer.json (and the tokenizer_config.json beside it,
if present) into DIR, after checking that its vocabulary fits the shape's
vocab_size; the config then gets the tokenizer's BOS and stop token ids.`,
		Example: `  fungtrain init-model --shape llama-3.2-1b --out models/rand-1b --tokenizer third_party/llama3-tokenizer/tokenizer.json
  fungtrain init-model --shape tiny --out /tmp/tiny --seed 7 --dtype f32`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error { return runInitModel(cmd, f) },
	}
	fl := cmd.Flags()
	fl.StringVar(&f.shape, "shape", "", "model shape: tiny, llama-3.2-1b or llama-3.2-3b (required)")
	fl.StringVar(&f.out, "out", "", "output directory (required)")
	fl.StringVar(&f.tokenizer, "tokenizer", "", "tokenizer.json (or a directory holding one) to copy into the model")
	fl.Uint64Var(&f.seed, "seed", 0, "random seed")
	fl.StringVar(&f.dtype, "dtype", "bf16", "weight dtype: bf16, f16 or f32")
	fl.BoolVar(&f.force, "force", false, "overwrite an existing checkpoint in --out")
	return cmd
}

func runInitModel(cmd *cobra.Command, f initModelFlags) error {
	if f.shape == "" {
		return errors.New("init-model: --shape is required (tiny, llama-3.2-1b or llama-3.2-3b)")
	}
	if f.out == "" {
		return errors.New("init-model: --out is required")
	}
	cfg, err := llama.ShapeConfig(f.shape)
	if err != nil {
		return fmt.Errorf("init-model: --shape: %w", err)
	}
	var dt mlx.Dtype
	switch f.dtype {
	case "bf16", "f16", "f32":
		dt, _ = mlx.ParseDtype(f.dtype)
	default:
		return fmt.Errorf("init-model: --dtype %q: want bf16, f16 or f32", f.dtype)
	}
	if !f.force {
		for _, name := range []string{"config.json", "model.safetensors"} {
			if _, err := os.Stat(filepath.Join(f.out, name)); err == nil {
				return fmt.Errorf("init-model: %s already exists (pass --force to overwrite)", filepath.Join(f.out, name))
			}
		}
	}
	var tokFiles []tokFile
	if err := resolveTokenizerArg(cmd.Context(), &f.tokenizer); err != nil {
		return fmt.Errorf("init-model: --tokenizer: %w", err)
	}
	if f.tokenizer != "" {
		if tokFiles, err = checkTokenizerFits(f.tokenizer, cfg); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(f.out, 0o755); err != nil {
		return fmt.Errorf("init-model: %w", err)
	}
	for _, tf := range tokFiles {
		if err := copyTokFile(tf.src, filepath.Join(f.out, tf.name)); err != nil {
			return fmt.Errorf("init-model: copy tokenizer: %w", err)
		}
	}
	err = mlx.Do(func() error { return llama.WriteRandomModel(f.out, cfg, dt, f.seed) })
	if err != nil {
		return fmt.Errorf("init-model: %w", err)
	}
	slog.Info("random model written", "shape", f.shape, "dir", f.out, "params", cfg.NumParams(), "dtype", dt, "seed", f.seed)
	_, err = fmt.Fprintln(cmd.OutOrStdout(), f.out)
	return err
}

// tokFile is a tokenizer file to copy into the model directory as name.
type tokFile struct{ src, name string }

// checkTokenizerFits loads the tokenizer at path (a tokenizer.json, or a
// directory with one), checks its vocabulary fits cfg's vocab_size and
// records its BOS and stop ids in cfg. It returns the files to copy:
// tokenizer.json and, if present beside it, tokenizer_config.json.
func checkTokenizerFits(path string, cfg *llama.Config) ([]tokFile, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("init-model: --tokenizer: %w", err)
	}
	tokJSON := path
	if st.IsDir() {
		tokJSON = filepath.Join(path, "tokenizer.json")
	}
	files := []tokFile{{tokJSON, "tokenizer.json"}}
	if c := filepath.Join(filepath.Dir(tokJSON), "tokenizer_config.json"); tokFileExists(c) {
		files = append(files, tokFile{c, "tokenizer_config.json"})
	}
	// Load it from a scratch directory holding just these files, as it
	// will be loaded from the model directory.
	tmp, err := os.MkdirTemp("", "fungtrain-tokenizer-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	for _, tf := range files {
		if err := copyTokFile(tf.src, filepath.Join(tmp, tf.name)); err != nil {
			return nil, fmt.Errorf("init-model: --tokenizer: %w", err)
		}
	}
	tok, err := llama.LoadTokenizer(tmp)
	if err != nil {
		return nil, fmt.Errorf("init-model: --tokenizer %s: %w", path, err)
	}
	defer tok.Close()
	if n := tok.VocabSize(); n > cfg.VocabSize {
		return nil, fmt.Errorf("init-model: --tokenizer %s has %d tokens, more than the vocab_size %d of this shape", path, n, cfg.VocabSize)
	}
	if bos := tok.BOS(); bos >= 0 {
		id := int(bos)
		cfg.BOSTokenID = &id
	}
	cfg.EOSTokenID = nil
	for _, id := range tok.EOS() {
		cfg.EOSTokenID = append(cfg.EOSTokenID, int(id))
	}
	return files, nil
}

func tokFileExists(p string) bool {
	st, err := os.Stat(p)
	return err == nil && !st.IsDir()
}

func copyTokFile(src, dst string) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(dst, b)
}
