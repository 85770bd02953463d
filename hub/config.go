package hub

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
)

// DefaultEndpoint is the Hub's address when HF_ENDPOINT is not set.
const DefaultEndpoint = "https://huggingface.co"

// Config says where the Hub and the cache are and how to reach them. Its
// token is never printed: Config's String and LogValue hide it.
type Config struct {
	Endpoint string // HF_ENDPOINT, without a trailing slash
	CacheDir string // HF_HUB_CACHE
	Offline  bool   // HF_HUB_OFFLINE: the cache only, no network
	token    string // HF_TOKEN or the token file
	// TokenSource says where the token came from ("HF_TOKEN", a file path
	// or ""), for messages; it is not the token.
	TokenSource string
}

// ConfigFromEnv reads the variables huggingface_hub reads: HF_ENDPOINT,
// HF_HUB_CACHE (or the legacy HUGGINGFACE_HUB_CACHE, else $HF_HOME/hub,
// else $XDG_CACHE_HOME/huggingface/hub, else ~/.cache/huggingface/hub),
// HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE), and the token from HF_TOKEN
// (or HUGGING_FACE_HUB_TOKEN), else the file $HF_TOKEN_PATH, else
// $HF_HOME/token.
func ConfigFromEnv() (Config, error) {
	home, err := hfHome()
	if err != nil {
		return Config{}, err
	}
	c := Config{
		Endpoint: strings.TrimRight(envOr("HF_ENDPOINT", DefaultEndpoint), "/"),
		CacheDir: filepath.Join(home, "hub"),
		Offline:  envTrue("HF_HUB_OFFLINE") || envTrue("TRANSFORMERS_OFFLINE"),
	}
	for _, v := range []string{"HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"} {
		if d := os.Getenv(v); d != "" {
			if c.CacheDir, err = expandHome(d); err != nil {
				return Config{}, fmt.Errorf("%s: %w", v, err)
			}
			break
		}
	}
	for _, v := range []string{"HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"} {
		if t := cleanToken(os.Getenv(v)); t != "" {
			c.token, c.TokenSource = t, v
			return c, nil
		}
	}
	tokenFile := filepath.Join(home, "token")
	if p := os.Getenv("HF_TOKEN_PATH"); p != "" {
		if tokenFile, err = expandHome(p); err != nil {
			return Config{}, fmt.Errorf("HF_TOKEN_PATH: %w", err)
		}
	}
	b, err := os.ReadFile(tokenFile)
	switch {
	case err == nil:
		if t := cleanToken(string(b)); t != "" {
			c.token, c.TokenSource = t, tokenFile
		}
	case !os.IsNotExist(err):
		return Config{}, fmt.Errorf("read the Hugging Face token file: %w", err)
	}
	return c, nil
}

// WithToken returns c with token as its credential (for callers that get
// it elsewhere, and for tests).
func (c Config) WithToken(token, source string) Config {
	c.token, c.TokenSource = cleanToken(token), source
	return c
}

// HasToken reports whether a token is set.
func (c Config) HasToken() bool { return c.token != "" }

// String describes the configuration without the token.
func (c Config) String() string {
	tok := "none"
	if c.token != "" {
		tok = "from " + c.TokenSource
	}
	return fmt.Sprintf("endpoint %s, cache %s, offline %v, token %s", c.Endpoint, c.CacheDir, c.Offline, tok)
}

// LogValue keeps the token out of structured logs.
func (c Config) LogValue() slog.Value {
	return slog.GroupValue(slog.String("endpoint", c.Endpoint), slog.String("cache", c.CacheDir),
		slog.Bool("offline", c.Offline), slog.String("token", c.TokenSource))
}

func hfHome() (string, error) {
	if h := os.Getenv("HF_HOME"); h != "" {
		return expandHome(h)
	}
	if x := os.Getenv("XDG_CACHE_HOME"); x != "" {
		return filepath.Join(x, "huggingface"), nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("find the Hugging Face cache: set HF_HOME or HF_HUB_CACHE (%w)", err)
	}
	return filepath.Join(home, ".cache", "huggingface"), nil
}

func expandHome(p string) (string, error) {
	if p != "~" && !strings.HasPrefix(p, "~/") {
		return p, nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", err
	}
	return filepath.Join(home, strings.TrimPrefix(p, "~")), nil
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

// envTrue reads a boolean as huggingface_hub does: 1, ON, YES or TRUE.
func envTrue(k string) bool {
	switch strings.ToUpper(os.Getenv(k)) {
	case "1", "ON", "YES", "TRUE":
		return true
	}
	return false
}

func cleanToken(t string) string { return strings.TrimSpace(t) }
