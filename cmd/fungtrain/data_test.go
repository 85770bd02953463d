package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/fungtrain/fungtrain/data"
	"github.com/fungtrain/fungtrain/llama"
	"github.com/fungtrain/fungtrain/traindata"
)

const cliLLMKey = "sk-cli-SECRET-0a1b2c3d"

var cliQuestionRE = regexp.MustCompile(`QUESTION: ([^?]+\?)`)

// newCLIFakeLLM is a small OpenAI-compatible server: it lists the
// "QUESTION:" markers of a transcript as its questions and answers each
// question with fixed markdown. For a transcript that badQuestions picks
// (when it is not nil) it never gives valid questions JSON, as a small
// model may not.
func newCLIFakeLLM(t *testing.T, badQuestions func(transcript string) bool) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/chat/completions" || r.Header.Get("Authorization") != "Bearer "+cliLLMKey {
			http.Error(w, `{"error":{"message":"no"}}`, http.StatusUnauthorized)
			return
		}
		var req struct {
			Messages []struct{ Role, Content string } `json:"messages"`
		}
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			http.Error(w, `{"error":{"message":"bad json"}}`, http.StatusBadRequest)
			return
		}
		sys, user := req.Messages[0].Content, req.Messages[len(req.Messages)-1].Content
		var content string
		if strings.Contains(sys, "List the distinct questions") && badQuestions != nil && badQuestions(user) {
			content = "Sure! Here are some questions the video answers: how, why and when."
		} else if strings.Contains(sys, "List the distinct questions") {
			qs := []string{}
			for _, m := range cliQuestionRE.FindAllStringSubmatch(user, -1) {
				qs = append(qs, m[1])
			}
			b, _ := json.Marshal(map[string]any{"questions": qs})
			content = string(b)
		} else {
			q := user[strings.LastIndex(user, "Question: ")+len("Question: "):]
			content = fmt.Sprintf("**Short answer:** it depends on you.\n\nFor %q I tell patients:\n\n- Start slowly and build up.\n- Stop if it hurts more the next day.\n\nMost people improve within a few weeks.", q)
		}
		json.NewEncoder(w).Encode(map[string]any{"id": "c", "object": "chat.completion",
			"choices": []any{map[string]any{"index": 0, "finish_reason": "stop",
				"message": map[string]string{"role": "assistant", "content": content}}}})
	}))
	t.Cleanup(srv.Close)
	return srv
}

func runDataCLI(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	var out, errb bytes.Buffer
	root := newRootCmd()
	root.SetArgs(args)
	root.SetOut(&out)
	root.SetErr(&errb)
	err := root.Execute()
	return out.String(), errb.String(), err
}

// charEncoder is a stand-in tokenizer: one token per byte, assistant
// content counted.
type charEncoder struct{}

func (charEncoder) EncodeChat(msgs []llama.Message, _ bool) ([]int32, []bool, error) {
	var ids []int32
	var counted []bool
	for _, m := range msgs {
		for _, b := range []byte(m.Role + ":" + m.Content) {
			ids = append(ids, int32(b))
			counted = append(counted, m.Role == "assistant")
		}
	}
	return ids, counted, nil
}
func (charEncoder) Encode(s string, _ bool) ([]int32, error) {
	ids := make([]int32, len(s))
	for i := range []byte(s) {
		ids[i] = int32(s[i])
	}
	return ids, nil
}
func (charEncoder) EOS() []int32 { return []int32{0} }

// TestDataBuildFromTranscriptsCLI runs `fungtrain data build
// --from-transcripts DIR` against a fake LLM and loads the result the way
// training does.
func TestDataBuildFromTranscriptsCLI(t *testing.T) {
	srv := newCLIFakeLLM(t, nil)
	t.Setenv("FT_TEST_LLM_KEY", cliLLMKey)
	root := t.TempDir()
	src := filepath.Join(root, "transcripts")
	filler := strings.Repeat("This is what I tell my patients in clinic every week. ", 4)
	for i := range 10 {
		var sb strings.Builder
		for k := 1; k <= 3; k++ {
			fmt.Fprintf(&sb, "%s QUESTION: How does exercise %d help joint %d recover? ", filler, 10*i+k, i)
		}
		name := fmt.Sprintf("talk%02d.txt", i)
		content := sb.String()
		if i%3 == 1 {
			name = fmt.Sprintf("talk%02d.srt", i)
			content = "1\n00:00:01,000 --> 00:00:09,000\n" + content + "\n"
		}
		if err := os.MkdirAll(src, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(src, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	out := filepath.Join(root, "dataset")
	cfgPath := filepath.Join(root, "run.yaml")
	cfgYAML := fmt.Sprintf(`model:
  path: models/llama
lora:
  rank: 8
data:
  dir: %s
  mask_prompt: true
  max_seq_length: 4096
  work_dir: %s
  llm:
    base_url: %s/v1
    api_key_env: FT_TEST_LLM_KEY
    model: fake
  build:
    system_prompt: You are Dr. Example.
`, out, filepath.Join(root, "work"), srv.URL)
	if err := os.WriteFile(cfgPath, []byte(cfgYAML), 0o644); err != nil {
		t.Fatal(err)
	}
	_, logs, err := runDataCLI(t, "data", "build", "--config", cfgPath, "--from-transcripts", src, "--log-format", "json")
	if err != nil {
		t.Fatalf("data build: %v\n%s", err, logs)
	}
	if strings.Contains(logs, cliLLMKey) {
		t.Error("the API key appears in the logs")
	}
	stages := 0
	for line := range strings.Lines(logs) {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("log line is not JSON: %q", line)
		}
		if rec["msg"] == "done" {
			stages++
		}
	}
	if stages != 4 {
		t.Errorf("%d stages logged done, want 4 (transcripts, questions, answers, build)", stages)
	}
	total := 0
	for _, sp := range []string{"train", "valid", "test"} {
		b, err := os.ReadFile(filepath.Join(out, sp+".jsonl"))
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(b, []byte(cliLLMKey)) {
			t.Errorf("the API key appears in %s.jsonl", sp)
		}
		// The training loader accepts the file.
		split, err := traindata.LoadSplit(traindata.Config{Dir: out, MaskPrompt: true, MaxSeqLength: 4096}, sp, charEncoder{})
		if err != nil {
			t.Fatalf("LoadSplit(%s): %v", sp, err)
		}
		n := bytes.Count(b, []byte("\n"))
		if len(split.Examples) != n || n == 0 {
			t.Errorf("%s: loader read %d examples of %d lines", sp, len(split.Examples), n)
		}
		if !bytes.HasPrefix(b, []byte(`{"messages":[{"role":"system","content":"You are Dr. Example."},{"role":"user","content":"How does exercise`)) {
			t.Errorf("%s.jsonl starts %.100s", sp, b)
		}
		total += n
	}
	if total != 30 {
		rep, _ := os.ReadFile(filepath.Join(root, "work", "build.report.json"))
		t.Errorf("%d examples in all, want 30; report %s", total, rep)
	}

	// stats on the result, as JSON.
	stdout, _, err := runDataCLI(t, "data", "stats", "--json", filepath.Join(out, "train.jsonl"), filepath.Join(out, "valid.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	var st data.Stats
	if err := json.Unmarshal([]byte(stdout), &st); err != nil {
		t.Fatalf("stats --json output: %v\n%s", err, stdout)
	}
	if len(st.Files) != 2 || st.Total == nil || st.Total.Records != st.Files[0].Records+st.Files[1].Records ||
		st.Files[0].WithSystem != st.Files[0].Records || st.Total.Formatting.BoldRate != 1 || st.Total.ExactDuplicates != 0 {
		t.Errorf("stats = %+v", st)
	}
	table, _, err := runDataCLI(t, "data", "stats", filepath.Join(out, "test.jsonl"))
	if err != nil || !strings.Contains(table, "question chars") {
		t.Errorf("stats table: %v\n%s", err, table)
	}
	// With the Llama 3 tokenizer, when the test asset is there.
	if tokDir, err := filepath.Abs(filepath.Join("..", "..", "third_party", "llama3-tokenizer")); err == nil {
		if _, err := os.Stat(filepath.Join(tokDir, "tokenizer.json")); err == nil {
			stdout, _, err := runDataCLI(t, "data", "stats", "--json", "--model", tokDir, filepath.Join(out, "train.jsonl"))
			if err != nil {
				t.Fatalf("stats --model: %v", err)
			}
			var st data.Stats
			if err := json.Unmarshal([]byte(stdout), &st); err != nil {
				t.Fatal(err)
			}
			f := st.Files[0]
			if f.QuestionTokens == nil || f.QuestionTokens.Count != f.Records || f.QuestionTokens.Min < 5 ||
				f.QuestionTokens.Max >= f.QuestionChars.Max || f.TotalTokens.Min <= f.AnswerTokens.Min {
				t.Errorf("token stats: questions %+v, chars %+v, total %+v", f.QuestionTokens, f.QuestionChars, f.TotalTokens)
			}
		}
	}
	missing := filepath.Join(root, "no-such-model")
	if _, _, err := runDataCLI(t, "data", "stats", "--model", missing, filepath.Join(out, "test.jsonl")); err == nil ||
		!strings.Contains(err.Error(), "--model") || !strings.Contains(err.Error(), "no-such-model") {
		t.Errorf("stats --model %s: %v", missing, err)
	}
	// A second build changes nothing.
	before, _ := os.ReadFile(filepath.Join(out, "train.jsonl"))
	if _, logs, err := runDataCLI(t, "data", "build", "--config", cfgPath, "--from-transcripts", src); err != nil {
		t.Fatalf("rebuild: %v\n%s", err, logs)
	}
	if after, _ := os.ReadFile(filepath.Join(out, "train.jsonl")); !bytes.Equal(before, after) {
		t.Error("a second build changed train.jsonl")
	}
}

func TestLoadPipelineConfig(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	p := write("a.yaml", "data:\n  dir: data/chat\n  system_prompt: hi\n  work_dir: w\n")
	cfg, err := loadPipelineConfig(p)
	if err != nil || cfg.OutDir() != "data/chat" || cfg.WorkDir != "w" {
		t.Errorf("data.dir fallback: out=%q work=%q err=%v", cfg.OutDir(), cfg.WorkDir, err)
	}
	p = write("b.yaml", "data:\n  dir: data/chat\n  build:\n    out_dir: elsewhere\n")
	if cfg, err := loadPipelineConfig(p); err != nil || cfg.OutDir() != "elsewhere" {
		t.Errorf("build.out_dir: %q %v", cfg.OutDir(), err)
	}
	p = write("c.yaml", "data:\n  llm:\n    api_key: sk-should-be-env\n")
	if _, err := loadPipelineConfig(p); err == nil || !strings.Contains(err.Error(), p+` line 3: unknown key "api_key" in data.llm`) {
		t.Errorf("unknown key: %v", err)
	}
	if cfg, err := loadPipelineConfig(""); err != nil || cfg.WorkDir != data.DefaultPipelineConfig().WorkDir {
		t.Errorf("no config: %+v %v", cfg.WorkDir, err)
	}
	if _, err := loadPipelineConfig(filepath.Join(dir, "missing.yaml")); err == nil || !strings.Contains(err.Error(), "missing.yaml") {
		t.Errorf("missing file: %v", err)
	}
	p = write("d.yaml", "data:\n  llm:\n    json_mode: xml\n")
	if _, _, err := runDataCLI(t, "data", "questions", "--config", p); err == nil || !strings.Contains(err.Error(), p+`: data.llm.json_mode: "xml"`) {
		t.Errorf("invalid value: %v", err)
	}
}

// writeTalks writes n local transcripts, each with three QUESTION markers;
// those whose index bad picks carry the word BADQ.
func writeTalks(t *testing.T, dir string, n int, bad func(i int) bool) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	filler := strings.Repeat("This is what I tell my patients in clinic every week. ", 4)
	for i := range n {
		var sb strings.Builder
		if bad != nil && bad(i) {
			sb.WriteString("BADQ ")
		}
		for k := 1; k <= 3; k++ {
			fmt.Fprintf(&sb, "%s QUESTION: How does exercise %d help joint %d recover? ", filler, 10*i+k, i)
		}
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("talk%02d.txt", i)), []byte(sb.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// TestDataStageExitCodes runs the stages through the CLI against the fake
// LLM: a stage that produces nothing exits 3, failures over --max-failed
// exit 4, failures under it (or with no limit) exit 0, and every finished
// stage prints one summary line on stdout.
func TestDataStageExitCodes(t *testing.T) {
	srv := newCLIFakeLLM(t, func(transcript string) bool { return strings.Contains(transcript, "BADQ") })
	t.Setenv("FT_TEST_LLM_KEY", cliLLMKey)
	setup := func(t *testing.T, n int, bad func(int) bool) (cfgPath, src, work string) {
		root := t.TempDir()
		src, work = filepath.Join(root, "transcripts"), filepath.Join(root, "work")
		writeTalks(t, src, n, bad)
		cfgPath = filepath.Join(root, "run.yaml")
		yaml := fmt.Sprintf("data:\n  work_dir: %s\n  build:\n    out_dir: %s\n  llm:\n    base_url: %s/v1\n    api_key_env: FT_TEST_LLM_KEY\n    model: fake\n    max_invalid_retries: 1\n",
			work, filepath.Join(root, "dataset"), srv.URL)
		if err := os.WriteFile(cfgPath, []byte(yaml), 0o644); err != nil {
			t.Fatal(err)
		}
		return cfgPath, src, work
	}
	type run struct {
		args    []string
		code    int
		summary string // the summary line printed on stdout
	}
	summary := func(stage, status string, tried, done, failed, already, records int, output string) string {
		extra := ""
		if stage == "transcripts" {
			extra = " skipped_failed=0"
		}
		return fmt.Sprintf("data %s: status=%s tried=%d done=%d failed=%d already_done=%d%s records=%d output=%s\n",
			stage, status, tried, done, failed, already, extra, records, output)
	}
	check := func(t *testing.T, r run) {
		t.Helper()
		stdout, stderr, err := runDataCLI(t, r.args...)
		code := 0
		if err != nil {
			code = exitCode(err)
		}
		if code != r.code || stdout != r.summary {
			t.Errorf("fungtrain %s: exit %d (error %v), stdout %q\nwant exit %d, stdout %q\nstderr:\n%s",
				strings.Join(r.args, " "), code, err, stdout, r.code, r.summary, stderr)
		}
	}

	t.Run("every item failed", func(t *testing.T) {
		cfg, src, work := setup(t, 4, func(int) bool { return true })
		tj, qj := filepath.Join(work, "transcripts.jsonl"), filepath.Join(work, "questions.jsonl")
		check(t, run{[]string{"data", "transcripts", "--config", cfg, "--dir", src}, 0, summary("transcripts", "ok", 4, 4, 0, 0, 4, tj)})
		check(t, run{[]string{"data", "questions", "--config", cfg}, 3, summary("questions", "nothing-produced", 4, 0, 4, 0, 0, qj)})
		// A rerun tries them again, and still has nothing.
		check(t, run{[]string{"data", "questions", "--config", cfg}, 3, summary("questions", "nothing-produced", 4, 0, 4, 0, 0, qj)})
		// With no questions, the answers stage has nothing either.
		check(t, run{[]string{"data", "answers", "--config", cfg}, 3, summary("answers", "nothing-produced", 0, 0, 0, 0, 0, filepath.Join(work, "answers.jsonl"))})
		// Nor has the build, with an empty answers.jsonl.
		check(t, run{[]string{"data", "build", "--config", cfg}, 3, "data build: status=nothing-produced answers=0 kept=0\n"})
	})
	t.Run("the chain stops where nothing was produced", func(t *testing.T) {
		cfg, src, work := setup(t, 3, func(int) bool { return true })
		check(t, run{[]string{"data", "build", "--config", cfg, "--from-transcripts", src}, 3,
			summary("transcripts", "ok", 3, 3, 0, 0, 3, filepath.Join(work, "transcripts.jsonl")) +
				summary("questions", "nothing-produced", 3, 0, 3, 0, 0, filepath.Join(work, "questions.jsonl"))})
		if _, err := os.Stat(filepath.Join(work, "answers.jsonl")); err == nil {
			t.Error("the answers stage ran after questions produced nothing")
		}
		// build alone, on no answers, produced nothing too.
		_, _, err := runDataCLI(t, "data", "build", "--config", cfg)
		if err == nil || exitCode(err) != 1 || !strings.Contains(err.Error(), "no answers") {
			t.Errorf("build with no answers.jsonl: %v", err)
		}
	})
	t.Run("transcripts that all fail", func(t *testing.T) {
		cfg, _, work := setup(t, 0, nil)
		short := filepath.Join(t.TempDir(), "short")
		for i, text := range []string{"too short", "also short"} {
			if err := os.MkdirAll(short, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(short, fmt.Sprintf("s%d.txt", i)), []byte(text), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		tj := filepath.Join(work, "transcripts.jsonl")
		check(t, run{[]string{"data", "transcripts", "--config", cfg, "--dir", short}, 3, summary("transcripts", "nothing-produced", 2, 0, 2, 0, 0, tj)})
		// Permanent failures are skipped on a rerun, which still has nothing.
		_, _, err := runDataCLI(t, "data", "transcripts", "--config", cfg, "--dir", short)
		if err == nil || exitCode(err) != 3 || !strings.Contains(err.Error(), "transcripts stage produced nothing") {
			t.Errorf("rerun: %v", err)
		}
	})
	t.Run("some items failed", func(t *testing.T) {
		// 1 of 4 videos (25%) never gets questions; 9 questions come from
		// the others. A rerun retries that one alone, and is judged on the
		// stage's 4 items as the first run was.
		cfg, src, work := setup(t, 4, func(i int) bool { return i == 2 })
		qj := filepath.Join(work, "questions.jsonl")
		check(t, run{[]string{"data", "transcripts", "--config", cfg, "--dir", src, "--max-failed", "0"}, 0,
			summary("transcripts", "ok", 4, 4, 0, 0, 4, filepath.Join(work, "transcripts.jsonl"))})
		partial := summary("questions", "failures-to-retry", 1, 0, 1, 3, 9, qj)
		check(t, run{[]string{"data", "questions", "--config", cfg}, 0, summary("questions", "failures-to-retry", 4, 3, 1, 0, 9, qj)})
		for _, c := range []struct {
			limit string
			code  int
		}{{"", 0}, {"1", 0}, {"0", 4}, {"25%", 0}, {"0.25", 0}, {"24%", 4}, {"0.2", 4}, {"100%", 0}} {
			args := []string{"data", "questions", "--config", cfg}
			if c.limit != "" {
				args = append(args, "--max-failed", c.limit)
			}
			want := partial
			if c.code == 4 {
				want = strings.Replace(partial, "failures-to-retry", "too-many-failures", 1)
			}
			check(t, run{args, c.code, want})
		}
		// The 9 questions are answered: exit 0, status ok.
		check(t, run{[]string{"data", "answers", "--config", cfg, "--max-failed", "0"}, 0,
			summary("answers", "ok", 9, 9, 0, 0, 9, filepath.Join(work, "answers.jsonl"))})
		stdout, _, err := runDataCLI(t, "data", "build", "--config", cfg)
		if err != nil || !strings.HasPrefix(stdout, "data build: status=ok answers=9 kept=9 train=") {
			t.Errorf("build: %v, %q", err, stdout)
		}
	})
	t.Run("bad --max-failed", func(t *testing.T) {
		cfg, _, _ := setup(t, 1, nil)
		for _, v := range []string{"-1", "1.5", "120%", "x", "NaN"} {
			_, _, err := runDataCLI(t, "data", "questions", "--config", cfg, "--max-failed", v)
			if err == nil || exitCode(err) != 1 || !strings.Contains(err.Error(), "--max-failed") {
				t.Errorf("--max-failed %s: %v", v, err)
			}
		}
	})
}
