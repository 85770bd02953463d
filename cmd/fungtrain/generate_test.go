package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"

	"github.com/fungtrain/fungtrain/llama"
)

// runCLI runs the fungtrain command in-process with args.
func runCLI(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	var out, errb bytes.Buffer
	root := newRootCmd()
	root.SetArgs(args)
	root.SetOut(&out)
	root.SetErr(&errb)
	root.SetIn(strings.NewReader(""))
	err = root.Execute()
	return out.String(), errb.String(), err
}

// cliAsset returns the path of a test asset under the repository root,
// failing the test when it is missing.
func cliAsset(t *testing.T, rel string) string {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	p := filepath.Join(filepath.Dir(file), "..", "..", rel)
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("test asset %s is missing (%v): run ./build.sh test (or ./build.sh setup) to fetch the test assets", rel, err)
	}
	return p
}

const smolLM2 = "third_party/models/SmolLM2-135M-Instruct.Q4_1.gguf"

var statsLines = regexp.MustCompile(`(?m)^Prompt: (\d+) tokens, [0-9.]+ tokens-per-sec\nGeneration: (\d+) tokens, [0-9.]+ tokens-per-sec\nPeak memory: [0-9.]+ GB\n`)

func TestGenerateSmolLM2(t *testing.T) {
	model := cliAsset(t, smolLM2)
	out, errOut, err := runCLI(t, "generate", "--model", model, "--prompt", "What is the capital of France?", "--max-tokens", "12")
	if err != nil {
		t.Fatalf("generate: %v\nstderr:\n%s", err, errOut)
	}
	t.Logf("stdout %q", out)
	if !strings.Contains(out, "Paris") {
		t.Errorf("stdout %q does not contain Paris", out)
	}
	m := statsLines.FindStringSubmatch(errOut)
	if m == nil {
		t.Fatalf("stderr has no stats lines:\n%s", errOut)
	}
	if m[1] != "37" { // SmolLM2's default system prompt, the question and the headers
		t.Errorf("prompt tokens %s, want 37", m[1])
	}

	// A stop string ends generation and is not printed. The same question,
	// from a --messages file.
	msgs := filepath.Join(t.TempDir(), "chat.json")
	if err := os.WriteFile(msgs, []byte(`[{"role": "user", "content": "What is the capital of France?"}]`), 0o644); err != nil {
		t.Fatal(err)
	}
	out, errOut, err = runCLI(t, "generate", "--model", model, "--messages", msgs,
		"--max-tokens", "12", "--stop", "France is", "--stop", "unrelated")
	if err != nil {
		t.Fatalf("generate --stop: %v\nstderr:\n%s", err, errOut)
	}
	if out != "The capital of \n" {
		t.Errorf("with --stop \"France is\": stdout %q, want %q", out, "The capital of \n")
	}
}

// writeWordTokenizer writes a tiny word-level tokenizer.json to dir.
func writeWordTokenizer(t *testing.T, dir string, words []string) string {
	t.Helper()
	vocab := map[string]int{"[UNK]": 0}
	for i, w := range words {
		vocab[w] = i + 1
	}
	tok := map[string]any{
		"version": "1.0", "truncation": nil, "padding": nil, "added_tokens": []any{},
		"normalizer": nil, "pre_tokenizer": map[string]any{"type": "Whitespace"},
		"post_processor": nil, "decoder": nil,
		"model": map[string]any{"type": "WordLevel", "vocab": vocab, "unk_token": "[UNK]"},
	}
	b, err := json.Marshal(tok)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "tokenizer.json")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestInitModelThenGenerate writes a random tiny model with a tokenizer and
// generates from it as plain text, then checks the error paths.
func TestInitModelThenGenerate(t *testing.T) {
	// 1024 tokens, the tiny shape's vocabulary, so every generated id
	// decodes to a word.
	words := []string{"hello", "world", "the", "cat"}
	for i := len(words); i < 1023; i++ {
		words = append(words, fmt.Sprintf("w%d", i))
	}
	tokPath := writeWordTokenizer(t, t.TempDir(), words)
	dir := filepath.Join(t.TempDir(), "tiny")
	out, errOut, err := runCLI(t, "init-model", "--shape", "tiny", "--out", dir, "--tokenizer", tokPath, "--seed", "3", "--dtype", "f32")
	if err != nil {
		t.Fatalf("init-model: %v\n%s", err, errOut)
	}
	if strings.TrimSpace(out) != dir {
		t.Errorf("init-model printed %q, want the directory", out)
	}
	for _, f := range []string{"config.json", "model.safetensors", "tokenizer.json"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Errorf("init-model did not write %s: %v", f, err)
		}
	}
	cfg, err := llama.LoadConfig(filepath.Join(dir, "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.VocabSize != 1024 || cfg.NumLayers != 4 || cfg.TorchDtype != "float32" {
		t.Errorf("config %+v", *cfg)
	}
	if _, _, err := runCLI(t, "init-model", "--shape", "tiny", "--out", dir); err == nil || !strings.Contains(err.Error(), "--force") {
		t.Errorf("init-model over an existing model: %v, want an error suggesting --force", err)
	}

	args := []string{"generate", "--model", dir, "--prompt", "hello world the cat", "--no-chat-template", "--max-tokens", "6", "--seed", "1"}
	out, errOut, err = runCLI(t, args...)
	if err != nil {
		t.Fatalf("generate: %v\n%s", err, errOut)
	}
	m := statsLines.FindStringSubmatch(errOut)
	if m == nil || m[1] != "4" || m[2] != "6" {
		t.Errorf("stats %q, want 4 prompt and 6 generated tokens:\n%s", m, errOut)
	}
	if n := len(strings.Fields(out)); n != 6 {
		t.Errorf("stdout %q: want 6 words", out)
	}
	// Sampling with a seed is reproducible.
	sample := append(args[:len(args)-2:len(args)-2], "--temp", "1", "--seed", "5")
	o1, _, err1 := runCLI(t, sample...)
	o2, _, err2 := runCLI(t, sample...)
	if err1 != nil || err2 != nil || o1 != o2 {
		t.Errorf("seeded sampling not reproducible: %q (%v) vs %q (%v)", o1, err1, o2, err2)
	}

	// The model's context is 4096 tokens.
	long := strings.Repeat("hello ", 4100)
	_, _, err = runCLI(t, "generate", "--model", dir, "--prompt", long, "--no-chat-template", "--max-tokens", "4")
	if err == nil || !strings.Contains(err.Error(), llama.ErrPromptTooLong.Error()) || !strings.Contains(err.Error(), "4100 prompt tokens") {
		t.Errorf("prompt longer than the context: %v", err)
	}
	// No chat template in this tokenizer: the error says what to do.
	_, _, err = runCLI(t, "generate", "--model", dir, "--prompt", "hello", "--max-tokens", "2")
	if err == nil || !strings.Contains(err.Error(), "--no-chat-template") {
		t.Errorf("chat prompt without a chat template: %v", err)
	}
	_, _, err = runCLI(t, "generate", "--model", dir, "--prompt", "hello", "--no-chat-template", "--adapter", t.TempDir())
	if err == nil || !strings.Contains(err.Error(), "--adapter") {
		t.Errorf("--adapter: %v", err)
	}
}

func TestGenerateFlagErrors(t *testing.T) {
	msgs := filepath.Join(t.TempDir(), "m.json")
	if err := os.WriteFile(msgs, []byte(`[{"role": "robot", "content": "hi"}]`), 0o644); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"generate", "--prompt", "hi"}, "--model is required"},
		{[]string{"generate", "--model", "x"}, "--prompt TEXT or --messages"},
		{[]string{"generate", "--model", filepath.Join(t.TempDir(), "nope"), "--prompt", "hi"}, "no such file"},
		{[]string{"generate", "--model", "x", "--prompt", "hi", "--top-p", "1.5"}, "--top-p"},
		{[]string{"generate", "--model", "x", "--prompt", "hi", "--dtype", "int8"}, "--dtype"},
		{[]string{"generate", "--model", "x", "--prompt", "hi", "--chat-format", "alpaca"}, "unknown chat format"},
		{[]string{"generate", "--model", "x", "--messages", msgs}, `role "robot"`},
		{[]string{"init-model", "--shape", "huge", "--out", t.TempDir()}, `unknown shape "huge"`},
		{[]string{"init-model", "--shape", "tiny"}, "--out is required"},
	}
	for _, tc := range cases {
		_, _, err := runCLI(t, tc.args...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: error %v, want one containing %q", tc.args, err, tc.want)
		}
	}
}

func TestInitModelTokenizerTooBig(t *testing.T) {
	tok := cliAsset(t, "third_party/llama3-tokenizer/tokenizer.json")
	dir := t.TempDir()
	_, _, err := runCLI(t, "init-model", "--shape", "tiny", "--out", dir, "--tokenizer", tok)
	if err == nil || !strings.Contains(err.Error(), "128256 tokens, more than the vocab_size 1024") {
		t.Fatalf("Llama 3 tokenizer on the tiny shape: %v", err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("a failed init-model left files in --out: %v", entries)
	}
}

func TestVersion(t *testing.T) {
	out, _, err := runCLI(t, "version")
	if err != nil {
		t.Fatal(err)
	}
	for _, re := range []string{`^fungtrain \S+ \(commit \S+,`, `(?m)^MLX \d+\.\d+\.\d+$`, `(?m)^backend: (cpu|cuda|metal)$`, `(?m)^default device: (cpu|gpu)$`} {
		if !regexp.MustCompile(re).MatchString(out) {
			t.Errorf("version output %q does not match %s", out, re)
		}
	}
}

func TestPromptMessages(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	list := write("list.json", `[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "Bye"}]`)
	obj := write("obj.json", `{"messages": [{"role": "user", "content": "Hi"}]}`)
	cases := []struct {
		f     generateFlags
		stdin string
		want  string // roles and contents, or the error
	}{
		{generateFlags{prompt: "Hi"}, "", "user:Hi"},
		{generateFlags{prompt: "Hi", system: "Be brief."}, "", "system:Be brief. user:Hi"},
		{generateFlags{prompt: "-"}, "from stdin\n", "user:from stdin\n"},
		{generateFlags{messagesFile: list}, "", "system:Be brief. user:Hi assistant:Hello! user:Bye"},
		{generateFlags{messagesFile: obj, system: "S"}, "", "system:S user:Hi"},
		{generateFlags{messagesFile: list, system: "S"}, "", "error: generate: --system given, but --messages already starts with a system message"},
		{generateFlags{messagesFile: write("empty.json", `[]`)}, "", "no messages"},
		{generateFlags{messagesFile: write("bad.json", `[{"role": "user", "content": 3}]`)}, "", "want a JSON list"},
		{generateFlags{messagesFile: filepath.Join(dir, "none.json")}, "", "no such file"},
	}
	for _, tc := range cases {
		cmd := newGenerateCmd()
		cmd.SetIn(strings.NewReader(tc.stdin))
		msgs, err := promptMessages(cmd, tc.f)
		var got string
		if err != nil {
			got = "error: " + err.Error()
		} else {
			var parts []string
			for _, m := range msgs {
				parts = append(parts, m.Role+":"+m.Content)
			}
			got = strings.Join(parts, " ")
		}
		if !strings.Contains(got, tc.want) {
			t.Errorf("%+v: got %q, want %q", tc.f, got, tc.want)
		}
	}
}
