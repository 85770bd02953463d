package llama

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"testing"
)

// TestValidateFloats: every float of a config must be finite (and, where
// it says so, positive); NaN, which fails every comparison, included.
// The error names the key; LoadConfig adds the file.
func TestValidateFloats(t *testing.T) {
	nan, inf := math.NaN(), math.Inf(1)
	cases := []struct {
		name string
		edit func(c *Config)
		want string // "" for valid
	}{
		{"tiny as it is", func(c *Config) {}, ""},
		{"rms_norm_eps NaN", func(c *Config) { c.RMSNormEps = nan }, "rms_norm_eps must be a positive finite number, got NaN"},
		{"rms_norm_eps +Inf", func(c *Config) { c.RMSNormEps = inf }, "rms_norm_eps must be a positive finite number, got +Inf"},
		{"rms_norm_eps 0", func(c *Config) { c.RMSNormEps = 0 }, "rms_norm_eps must be a positive finite number, got 0"},
		{"rope_theta NaN", func(c *Config) { c.RopeTheta = nan }, "rope_theta must be a positive finite number, got NaN"},
		{"rope_theta -Inf", func(c *Config) { c.RopeTheta = -inf }, "rope_theta must be a positive finite number, got -Inf"},
		{"rope_theta +Inf", func(c *Config) { c.RopeTheta = inf }, "rope_theta must be a positive finite number, got +Inf"},
		{"factor NaN", func(c *Config) { c.RopeScaling.Factor = nan }, "rope_scaling.factor must be a finite number, got NaN"},
		{"factor +Inf", func(c *Config) { c.RopeScaling.Factor = inf }, "rope_scaling.factor must be a finite number, got +Inf"},
		{"low_freq_factor NaN", func(c *Config) { c.RopeScaling.LowFreqFactor = nan }, "rope_scaling.low_freq_factor must be a finite number, got NaN"},
		{"high_freq_factor NaN", func(c *Config) { c.RopeScaling.HighFreqFactor = nan }, "rope_scaling.high_freq_factor must be a finite number, got NaN"},
		{"high_freq_factor +Inf", func(c *Config) { c.RopeScaling.HighFreqFactor = inf }, "rope_scaling.high_freq_factor must be a finite number, got +Inf"},
		{"linear factor NaN", func(c *Config) { c.RopeScaling = &RopeScaling{RopeType: "linear", Factor: nan} },
			"rope_scaling.factor must be a finite number, got NaN"},
		{"linear factor 2", func(c *Config) { c.RopeScaling = &RopeScaling{RopeType: "linear", Factor: 2} }, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := ShapeConfig("tiny")
			if err != nil {
				t.Fatal(err)
			}
			tc.edit(c)
			err = c.Validate()
			if got := errText(err); got != tc.want {
				t.Errorf("Validate: %q, want %q", got, tc.want)
			}
		})
	}
	// Through a config.json: JSON has no NaN, so a negative value stands
	// for the path in the message.
	c, _ := ShapeConfig("tiny")
	c.RopeTheta = -1
	b, _ := json.Marshal(c)
	path := filepath.Join(t.TempDir(), "config.json")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := LoadConfig(path)
	if want := "config " + path + ": rope_theta must be a positive finite number, got -1"; errText(err) != want {
		t.Errorf("LoadConfig: %q, want %q", errText(err), want)
	}
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
