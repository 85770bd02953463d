// Package report renders a fungtrain run directory as one self-contained
// HTML page: headline figures, loss, learning-rate, throughput and memory
// charts drawn as inline SVG by this package, the run metadata and resolved
// config, and, when an eval.json is given or present, the evaluation with
// base and adapter answers side by side.
//
// The page has no scripts and loads nothing: its Content-Security-Policy
// forbids every external resource, so it looks the same offline. The run
// directory format is described in docs/RUN_FORMAT.md.
package report
