package serve

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"

	"github.com/fungtrain/fungtrain/internal/testenv"
	"github.com/fungtrain/fungtrain/llama"
)

// pythonWithOpenAI returns the test venv's python (FUNGTRAIN_PYTHON or
// third_party/pyenv), which has the openai package pinned in versions.env.
func pythonWithOpenAI(t *testing.T) string {
	t.Helper()
	py := testenv.Python(t)
	if err := exec.Command(py, "-c", "import openai").Run(); err != nil {
		t.Fatalf("%s cannot import openai (%v): run ./build.sh setup to install the test clients", py, err)
	}
	return py
}

// TestServePythonOpenAI runs the official openai Python client against the
// server: chat, streamed chat with usage and a stop string, completion,
// models, and its error classes for an unknown model and a wrong key.
func TestServePythonOpenAI(t *testing.T) {
	py := pythonWithOpenAI(t)
	refs := references(t, []refRequest{
		{messages: []llama.Message{{Role: "user", Content: "What is the capital of France?"}}, maxTokens: 12},
		{messages: []llama.Message{{Role: "system", Content: "You answer in one short sentence."}, {Role: "user", Content: "Why do leaves change color?"}},
			maxTokens: 10, stops: []string{"\n\n"}},
		{prompt: "The three primary colors are", maxTokens: 8},
	})
	const key = "sk-python-test"
	s := startServer(t, RunOptions{Server: Options{APIKey: key}})
	cmd := exec.Command(py, filepath.Join("testdata", "openai_client.py"), s.url+"/v1", key)
	cmd.Stderr = os.Stderr
	b, err := cmd.Output()
	if err != nil {
		t.Fatalf("openai_client.py: %v\nserver log:\n%s", err, s.logs.String())
	}
	type answer struct {
		Text   string   `json:"text"`
		Finish string   `json:"finish"`
		Usage  []int    `json:"usage"`
		Roles  []string `json:"roles"`
	}
	var out struct {
		Version      string   `json:"version"`
		Chat         answer   `json:"chat"`
		Stream       answer   `json:"stream"`
		Completion   answer   `json:"completion"`
		Models       []string `json:"models"`
		UnknownModel any      `json:"unknown_model"`
		WrongKey     any      `json:"wrong_key"`
	}
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatalf("%v: %s", err, b)
	}
	t.Logf("openai %s", out.Version)
	for i, a := range []answer{out.Chat, out.Stream, out.Completion} {
		name := []string{"chat", "streamed chat", "completion"}[i]
		checkAnswer(t, name, a.Text, refs[i])
		u := []int{refs[i].promptTokens, len(refs[i].ids), refs[i].promptTokens + len(refs[i].ids)}
		if a.Text == refs[i].text && (a.Finish != refs[i].finish || !slices.Equal(a.Usage, u)) {
			t.Errorf("%s: finish %q usage %v, want %q and %v", name, a.Finish, a.Usage, refs[i].finish, u)
		}
	}
	if !slices.Equal(out.Stream.Roles, []string{"assistant"}) {
		t.Errorf("streamed roles %q", out.Stream.Roles)
	}
	if !slices.Equal(out.Models, []string{"SmolLM2-135M-Instruct.Q4_1.gguf"}) {
		t.Errorf("models %q", out.Models)
	}
	if out.UnknownModel != 404.0 || out.WrongKey != 401.0 {
		t.Errorf("unknown model: %v, wrong key: %v (want 404 and 401)", out.UnknownModel, out.WrongKey)
	}
}
