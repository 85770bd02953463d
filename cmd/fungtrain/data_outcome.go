package main

import (
	"errors"
	"fmt"
	"io"
	"math"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/fungtrain/fungtrain/data"
)

// Exit codes of the `fungtrain data` stages, besides 0 (done, perhaps with
// failures left for a rerun to retry) and 1 (any other error).
const (
	exitNothingProduced = 3 // the stage's output holds no record
	exitTooManyFailures = 4 // more items failed in this run than --max-failed allows
)

// exitError is an error that carries the process's exit code (see main's
// exitCode).
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }
func (e *exitError) ExitCode() int { return e.code }

// failLimit is --max-failed: the most items a stage run may fail before it
// exits with exitTooManyFailures, as a count ("5") or as a share of the
// stage's items ("0.2" or "20%"; all of them, those done or skipped by
// earlier runs included, so that a rerun that retries only the failed ones
// is judged as the first run was). The zero value is no limit.
type failLimit struct {
	set      bool
	count    int
	fraction float64
	isShare  bool
}

func parseFailLimit(s string) (failLimit, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return failLimit{}, nil
	}
	bad := fmt.Errorf("--max-failed %q: want a count of items (5) or a share of the stage's items (0.2 or 20%%)", s)
	if pct, ok := strings.CutSuffix(s, "%"); ok {
		v, err := strconv.ParseFloat(pct, 64)
		if err != nil || v < 0 || v > 100 || math.IsNaN(v) {
			return failLimit{}, bad
		}
		return failLimit{set: true, fraction: v / 100, isShare: true}, nil
	}
	if strings.ContainsAny(s, ".eE") {
		v, err := strconv.ParseFloat(s, 64)
		if err != nil || v < 0 || v > 1 || math.IsNaN(v) {
			return failLimit{}, bad
		}
		return failLimit{set: true, fraction: v, isShare: true}, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 {
		return failLimit{}, bad
	}
	return failLimit{set: true, count: n}, nil
}

// exceeded reports whether failed items, of a stage of items, pass the
// limit.
func (l failLimit) exceeded(failed, items int) bool {
	switch {
	case !l.set || failed == 0:
		return false
	case l.isShare:
		return float64(failed) > l.fraction*float64(items)
	}
	return failed > l.count
}

func (l failLimit) String() string {
	if l.isShare {
		return strconv.FormatFloat(100*l.fraction, 'g', -1, 64) + "%"
	}
	return strconv.Itoa(l.count)
}

func addMaxFailedFlag(cmd *cobra.Command, s *string) {
	cmd.Flags().StringVar(s, "max-failed", "", "exit 4 when more items fail in this run: a count (5) or a share of the stage's items (0.2 or 20%); default no limit")
}

// stageOutcome is what one run of a stage did, for its summary line.
type stageOutcome struct {
	stage                      string
	tried, done, failed        int // in this run
	alreadyDone, skippedFailed int // not tried: done before, or failed for good before
	output                     string
	records                    int // in the output, this run's and earlier ones'
}

// items is every item of the stage, tried in this run or not.
func (o stageOutcome) items() int { return o.tried + o.alreadyDone + o.skippedFailed }

func transcriptsOutcome(rep *data.TranscriptsReport) stageOutcome {
	return stageOutcome{stage: "transcripts", tried: rep.Fetched + len(rep.Failed), done: rep.Fetched, failed: len(rep.Failed),
		alreadyDone: rep.AlreadyDone, skippedFailed: rep.SkippedFailed, output: rep.TranscriptFile, records: rep.TotalInFile}
}

func llmStageOutcome(rep *data.StageReport) stageOutcome {
	return stageOutcome{stage: rep.Stage, tried: rep.Generated + len(rep.Failed), done: rep.Generated, failed: len(rep.Failed),
		alreadyDone: rep.AlreadyDone, output: rep.Output, records: rep.OutputRecords}
}

// summarizeStage prints the summary line of a finished stage to w and
// returns the error that sets the exit code: exitNothingProduced when the
// output holds no record, exitTooManyFailures when the failures of this
// run pass the limit, nil otherwise (failures left for a rerun included).
func summarizeStage(w io.Writer, o stageOutcome, limit failLimit) error {
	status, code := "ok", 0
	var err error
	switch {
	case o.records == 0:
		status, code = "nothing-produced", exitNothingProduced
		err = fmt.Errorf("the %s stage produced nothing: %s holds no record (%d of %d items tried in this run failed; see the report)",
			o.stage, filepath.Base(o.output), o.failed, o.tried)
	case limit.exceeded(o.failed, o.items()):
		status, code = "too-many-failures", exitTooManyFailures
		err = fmt.Errorf("the %s stage failed %d of its %d items, more than --max-failed %s allows (see the report; a rerun retries those that may pass, --retry-failed all of them)",
			o.stage, o.failed, o.items(), limit)
	case o.failed > 0:
		status = "failures-to-retry"
	}
	fmt.Fprintf(w, "data %s: status=%s tried=%d done=%d failed=%d already_done=%d", o.stage, status, o.tried, o.done, o.failed, o.alreadyDone)
	if o.stage == "transcripts" {
		fmt.Fprintf(w, " skipped_failed=%d", o.skippedFailed)
	}
	fmt.Fprintf(w, " records=%d output=%s\n", o.records, o.output)
	if err != nil {
		return &exitError{code: code, err: err}
	}
	return nil
}

// summarizeBuild prints the build's summary line and gives an empty build
// (no answers, or none left after filtering) exitNothingProduced.
func summarizeBuild(w io.Writer, rep *data.BuildReport, err error) error {
	if errors.Is(err, data.ErrNothingToBuild) {
		answers := 0
		if rep != nil {
			answers = rep.Answers
		}
		fmt.Fprintf(w, "data build: status=nothing-produced answers=%d kept=0\n", answers)
		return &exitError{code: exitNothingProduced, err: err}
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "data build: status=ok answers=%d kept=%d train=%d valid=%d test=%d out=%s\n", rep.Answers, rep.Kept,
		rep.Splits["train"].Examples, rep.Splits["valid"].Examples, rep.Splits["test"].Examples, rep.OutDir)
	return nil
}
