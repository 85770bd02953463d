package main

import (
	"fmt"
	"log/slog"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/fungtrain/fungtrain/report"
)

func init() { subcommands = append(subcommands, newReportCmd) }

func newReportCmd() *cobra.Command {
	var evalPath, out string
	var timestamp bool
	cmd := &cobra.Command{
		Use:   "report RUN_DIR",
		Short: "Write a self-contained HTML report of a training run",
		Long: `Report renders RUN_DIR (metrics.jsonl, summary.json, run_metadata.json,
config.yaml and, if present, eval.json; see docs/RUN_FORMAT.md) as one HTML
file with inline SVG charts of the train and validation loss, the learning
rate, throughput and memory, the run metadata and config, and the base vs
adapter evaluation. The file has no scripts and loads nothing, so it works
offline and can be mailed or archived as is.`,
		Example: `  fungtrain report runs/smollm2-lora
  fungtrain report runs/smollm2-lora --eval out/eval.json --out out/report.html`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			dir := args[0]
			if out == "" {
				out = filepath.Join(dir, "report.html")
			}
			opts := report.Options{RunDir: dir, EvalPath: evalPath, Version: version}
			if timestamp {
				opts.Generated = time.Now()
			}
			page, err := report.Build(opts)
			if err != nil {
				return err
			}
			if err := report.WriteFile(out, page); err != nil {
				return err
			}
			slog.Info("report written", "path", out, "bytes", len(page))
			_, err = fmt.Fprintln(cmd.OutOrStdout(), out)
			return err
		},
	}
	cmd.Flags().StringVar(&evalPath, "eval", "", "eval.json to include (default: RUN_DIR/eval.json if present)")
	cmd.Flags().StringVar(&out, "out", "", "output HTML file (default: RUN_DIR/report.html)")
	cmd.Flags().BoolVar(&timestamp, "timestamp", true, "write the generation time in the footer (false makes the output reproducible)")
	return cmd
}
