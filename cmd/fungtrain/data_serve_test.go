package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fungtrain/fungtrain/data"
)

// TestDataPipelineAgainstServe runs the dataset pipeline end to end
// (`fungtrain data build --from-transcripts`) against `fungtrain serve`
// with SmolLM2: the questions stage asks for its strict JSON schema
// (json_mode json_schema, no retries of unusable replies), so every
// transcript must get a reply that parses and validates; every stage
// produces records.
func TestDataPipelineAgainstServe(t *testing.T) {
	model := cliAsset(t, smolLM2)
	transcripts := cliAsset(t, "serve/testdata/transcripts")
	const keyEnv = "FT_TEST_SERVE_PIPELINE_KEY"
	t.Setenv(keyEnv, "sk-pipeline-test")
	// SmolLM2-135M repeats itself under greedy decoding: a server-wide
	// frequency penalty (for requests that set none, as the pipeline's)
	// makes it end its lists.
	base, done, logs := startServeCLI(t, "--model", model, "--api-key-env", keyEnv, "--max-batch", "8", "--frequency-penalty", "1")
	defer stopServe(t, done)

	root := t.TempDir()
	src := filepath.Join(root, "transcripts")
	if err := os.MkdirAll(src, 0o755); err != nil {
		t.Fatal(err)
	}
	names, _ := filepath.Glob(filepath.Join(transcripts, "*.txt"))
	for _, n := range names {
		b, err := os.ReadFile(n)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(src, filepath.Base(n)), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	work, out := filepath.Join(root, "work"), filepath.Join(root, "dataset")
	cfg := fmt.Sprintf(`data:
  dir: %s
  work_dir: %s
  llm:
    base_url: %s/v1
    api_key_env: %s
    model: SmolLM2-135M-Instruct.Q4_1.gguf
    temperature: 0
    max_tokens: 160
    json_mode: json_schema
    max_invalid_retries: 0
    concurrency: 8
  questions:
    max_questions: 3
  build:
    system_prompt: You are a physician who teaches patients about fasting and insulin.
    quality:
      min_score: 0
`, out, work, base, keyEnv)
	cfgPath := filepath.Join(root, "run.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	_, stderr, err := runDataCLI(t, "data", "build", "--config", cfgPath, "--from-transcripts", src)
	if err != nil {
		t.Fatalf("data build: %v\n%s\nserve log:\n%s", err, stderr, logs.String())
	}
	readReport := func(name string, v any) {
		t.Helper()
		b, err := os.ReadFile(filepath.Join(work, name))
		if err == nil {
			err = json.Unmarshal(b, v)
		}
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}
	var tr data.TranscriptsReport
	readReport(data.TranscriptsReportFile, &tr)
	if tr.TotalInFile != len(names) || len(tr.Failed) != 0 {
		t.Errorf("transcripts: %d in the file, %d failed; want %d and none", tr.TotalInFile, len(tr.Failed), len(names))
	}
	var qr, ar data.StageReport
	readReport(data.QuestionsReportFile, &qr)
	readReport(data.AnswersReportFile, &ar)
	t.Logf("questions: %d transcripts, %d failed, %d questions, JSON mode %s; answers: %d, %d failed",
		qr.Items, len(qr.Failed), qr.OutputRecords, qr.JSONMode, ar.OutputRecords, len(ar.Failed))
	// Every transcript got a reply in the schema that parsed and validated:
	// with no retries, one unusable reply would be a failure.
	if qr.Items != len(names) || len(qr.Failed) != 0 || qr.OutputRecords == 0 || qr.JSONMode != data.JSONModeSchema {
		t.Errorf("questions report: %d items, failures %+v, %d records, JSON mode %q", qr.Items, qr.Failed, qr.OutputRecords, qr.JSONMode)
	}
	if ar.OutputRecords == 0 || ar.Items != qr.OutputRecords {
		t.Errorf("answers report: %d items, %d records, failures %+v", ar.Items, ar.OutputRecords, ar.Failed)
	}
	var br data.BuildReport
	readReport(data.BuildReportFile, &br)
	if br.Kept == 0 {
		t.Errorf("build kept no examples: %+v", br)
	}
	qs, _ := os.ReadFile(filepath.Join(work, data.QuestionsFile))
	t.Logf("questions:\n%s", qs)
	videos := map[string]bool{}
	for line := range strings.Lines(string(qs)) {
		var q data.Question
		if err := json.Unmarshal([]byte(line), &q); err != nil {
			t.Fatalf("questions.jsonl: %v", err)
		}
		videos[q.VideoID] = true
	}
	if len(videos) != len(names) {
		t.Errorf("questions for %d of %d transcripts", len(videos), len(names))
	}
	total := 0
	for _, sp := range []string{"train", "valid", "test"} {
		b, _ := os.ReadFile(filepath.Join(out, sp+".jsonl"))
		total += strings.Count(string(b), "\n")
	}
	if total == 0 {
		t.Error("the build wrote no examples")
	}
}
