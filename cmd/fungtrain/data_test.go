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
// question with fixed markdown.
func newCLIFakeLLM(t *testing.T) *httptest.Server {
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
		if strings.Contains(sys, "List the distinct questions") {
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
	srv := newCLIFakeLLM(t)
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
