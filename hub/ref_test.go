package hub

import (
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseRef(t *testing.T) {
	tests := []struct {
		in      string
		want    Ref
		wantErr string
	}{
		{in: "meta-llama/Llama-3.2-3B-Instruct", want: Ref{Repo: "meta-llama/Llama-3.2-3B-Instruct"}},
		{in: "mlx-community/Llama-3.2-3B-Instruct-4bit@main", want: Ref{Repo: "mlx-community/Llama-3.2-3B-Instruct-4bit", Revision: "main"}},
		{in: "org/name@0123456789abcdef0123456789abcdef01234567", want: Ref{Repo: "org/name", Revision: "0123456789abcdef0123456789abcdef01234567"}},
		{in: "org/name@refs/pr/1", want: Ref{Repo: "org/name", Revision: "refs/pr/1"}},
		{in: "org/name/sub/model.Q4_1.gguf@v1.0", want: Ref{Repo: "org/name", Revision: "v1.0", File: "sub/model.Q4_1.gguf"}},
		{in: "a_b/c.d", want: Ref{Repo: "a_b/c.d"}},
		{in: "gpt2", wantErr: "not a repository id"},
		{in: "org/na--me", wantErr: "not a valid repository"},
		{in: "org/na..me", wantErr: "not a valid repository"},
		{in: "org/-name", wantErr: "not a valid repository"},
		{in: "org/name.", wantErr: "not a valid repository"},
		{in: "org/" + strings.Repeat("x", 97), wantErr: "not a valid repository"},
		{in: "org/name@", wantErr: "empty revision"},
		{in: "org/name@../../etc", wantErr: "not a branch"},
		{in: "org/name@a b", wantErr: "not a branch"},
		{in: "org/name/../x", wantErr: "leaves the repository"},
		{in: "org/name//x", wantErr: "clean relative path"},
	}
	for _, tc := range tests {
		got, err := ParseRef(tc.in)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("ParseRef(%q) error %v, want one containing %q", tc.in, err, tc.wantErr)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("ParseRef(%q) = %+v, %v; want %+v", tc.in, got, err, tc.want)
		}
		if err == nil && got.String() != strings.TrimSuffix(tc.in, "@main") {
			t.Errorf("ParseRef(%q).String() = %q", tc.in, got.String())
		}
	}
}

func TestIsLocal(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	if err := os.MkdirAll("models/llama", 0o755); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		in   string
		want bool
	}{
		{"models/llama", true}, // exists: a path, though it reads like ORG/NAME
		{"models/other", false},
		{"meta-llama/Llama-3.2-3B-Instruct", false},
		{"./models/other", true},
		{"../x/y", true},
		{"/abs/path", true},
		{"~/m/x", true},
		{"model.gguf", true},
		{filepath.Join(dir, "nope", "x"), true},
	}
	for _, tc := range tests {
		if got := IsLocal(tc.in); got != tc.want {
			t.Errorf("IsLocal(%q) = %v, want %v", tc.in, got, tc.want)
		}
	}
}

func TestConfigFromEnv(t *testing.T) {
	home := t.TempDir()
	clear := func() {
		for _, k := range []string{"HF_ENDPOINT", "HF_HOME", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "XDG_CACHE_HOME",
			"HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_TOKEN_PATH"} {
			t.Setenv(k, "")
		}
		t.Setenv("HOME", home)
	}
	tokenFile := filepath.Join(home, "hfhome", "token")
	os.MkdirAll(filepath.Dir(tokenFile), 0o755)
	os.WriteFile(tokenFile, []byte("hf_fromfile\n"), 0o600)
	tests := []struct {
		name                    string
		env                     map[string]string
		endpoint, cache, source string
		offline                 bool
	}{
		{"defaults", nil, DefaultEndpoint, filepath.Join(home, ".cache/huggingface/hub"), "", false},
		{"xdg", map[string]string{"XDG_CACHE_HOME": "/x"}, DefaultEndpoint, "/x/huggingface/hub", "", false},
		{"hf_home and its token file", map[string]string{"HF_HOME": filepath.Join(home, "hfhome")}, DefaultEndpoint, filepath.Join(home, "hfhome/hub"), tokenFile, false},
		{"hub cache wins", map[string]string{"HF_HOME": "/h", "HF_HUB_CACHE": "~/c", "HUGGINGFACE_HUB_CACHE": "/legacy"}, DefaultEndpoint, filepath.Join(home, "c"), "", false},
		{"legacy cache", map[string]string{"HUGGINGFACE_HUB_CACHE": "/legacy"}, DefaultEndpoint, "/legacy", "", false},
		{"endpoint, offline, env token", map[string]string{"HF_ENDPOINT": "http://mirror:8080/", "HF_HUB_OFFLINE": "yes", "HF_TOKEN": " hf_env ", "HF_HOME": filepath.Join(home, "hfhome")},
			"http://mirror:8080", filepath.Join(home, "hfhome/hub"), "HF_TOKEN", true},
		{"transformers offline, token path", map[string]string{"TRANSFORMERS_OFFLINE": "1", "HF_TOKEN_PATH": tokenFile}, DefaultEndpoint, filepath.Join(home, ".cache/huggingface/hub"), tokenFile, true},
		{"offline 0", map[string]string{"HF_HUB_OFFLINE": "0"}, DefaultEndpoint, filepath.Join(home, ".cache/huggingface/hub"), "", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			clear()
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			c, err := ConfigFromEnv()
			if err != nil {
				t.Fatal(err)
			}
			if c.Endpoint != tc.endpoint || c.CacheDir != tc.cache || c.Offline != tc.offline || c.TokenSource != tc.source {
				t.Errorf("got %s (token source %q), want endpoint %s cache %s offline %v source %q", c, c.TokenSource, tc.endpoint, tc.cache, tc.offline, tc.source)
			}
			if c.HasToken() != (tc.source != "") {
				t.Errorf("HasToken = %v", c.HasToken())
			}
		})
	}
}

// TestConfigHidesToken: neither String nor a structured log of a Config
// shows the token.
func TestConfigHidesToken(t *testing.T) {
	const secret = "hf_SECRETSECRETSECRET"
	c := Config{Endpoint: "http://x", CacheDir: "/c"}.WithToken(secret, "HF_TOKEN")
	var sb strings.Builder
	slog.New(slog.NewJSONHandler(&sb, nil)).Info("config", "hub", c)
	slog.New(slog.NewTextHandler(&sb, nil)).Info("config", "hub", c)
	sb.WriteString(c.String())
	if strings.Contains(sb.String(), secret) || !strings.Contains(sb.String(), "HF_TOKEN") {
		t.Errorf("config output shows the token or not its source: %s", sb.String())
	}
}
