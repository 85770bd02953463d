package lora

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// fuzzSections stand for the dataset pipeline's sections under data:.
var fuzzSections = []string{"llm", "transcripts"}

// FuzzLoadRunConfig loads arbitrary bytes as a run config, with arbitrary
// --set overrides (one per line of sets). It must never panic. An error
// must name where each problem is (every line starts with the file or the
// --set override). A config that loads must be valid, all its numbers
// finite, and reload from its own resolved YAML (what a run directory and
// its checkpoints keep) to the same settings.
func FuzzLoadRunConfig(f *testing.F) {
	for _, c := range badConfigs {
		f.Add([]byte(c.yaml), "")
	}
	for _, o := range badOverrides {
		f.Add([]byte(configBase+"lora:\n  rank: 4\n"), o.set)
	}
	f.Add([]byte(configBase), "lora.keys=[all-linear]\ntraining.memory_limit_gb=.nan")
	f.Add([]byte(configBase+"  llm:\n    model: x\n"), "data.llm.model=y")
	if b, err := os.ReadFile(filepath.Join("..", "examples", "fung-sample.yaml")); err == nil {
		f.Add(b, "output.dir=runs/x")
	}
	f.Fuzz(func(t *testing.T, file []byte, sets string) {
		var overrides []string
		if sets != "" {
			overrides = strings.Split(sets, "\n")
		}
		cfg, err := parseRunConfig("fuzz.yaml", file, overrides, fuzzSections)
		if err != nil {
			for _, line := range strings.Split(err.Error(), "\n") {
				if !strings.HasPrefix(line, "fuzz.yaml") && !strings.HasPrefix(line, "--set ") {
					t.Fatalf("error line %q names neither the file nor an override", line)
				}
			}
			return
		}
		if err := cfg.Validate(); err != nil {
			t.Fatalf("loaded an invalid config: %v", err)
		}
		if bad := nonFiniteFloats(cfg, ""); len(bad) > 0 {
			t.Fatalf("loaded non-finite settings: %v", bad)
		}
		resolved, err := cfg.YAML()
		if err != nil {
			t.Fatalf("resolved YAML: %v", err)
		}
		again, err := parseRunConfig("resolved.yaml", resolved, nil, fuzzSections)
		if err != nil {
			t.Fatalf("the resolved config does not reload: %v\n%s", err, resolved)
		}
		// The pipeline's sections are another reader's; only the keys must
		// survive (their values' Go types may differ after a round trip).
		if !slices.Equal(sortedKeys(cfg.Data.Pipeline), sortedKeys(again.Data.Pipeline)) {
			t.Fatalf("data sections %v reload as %v", sortedKeys(cfg.Data.Pipeline), sortedKeys(again.Data.Pipeline))
		}
		cfg.Data.Pipeline, again.Data.Pipeline = nil, nil
		if !reflect.DeepEqual(cfg, again) {
			t.Fatalf("config %+v\nreloads as %+v\nfrom\n%s", cfg, again, resolved)
		}
	})
}

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// FuzzAdapterConfig reads arbitrary bytes as adapter_config.json for a
// model of nLayers blocks. It must never panic; an error names the file.
// Settings that are accepted must be valid and finite, and survive what
// Save writes and Load reads back.
func FuzzAdapterConfig(f *testing.F) {
	for _, c := range badAdapterConfigs {
		f.Add(c.json, uint8(16))
	}
	f.Add([]byte(`{"fine_tune_type": "lora", "num_layers": 4, "lora_parameters": {"rank": 8, "dropout": 0.05, "scale": 20.0, "keys": ["self_attn.q_proj"]}}`), uint8(16))
	f.Add([]byte(`{"num_layers": -1, "alpha": 16, "lora_parameters": {"rank": 8, "dropout": 0, "scale": 0}}`), uint8(2))
	const file = "adapter_config.json"
	f.Fuzz(func(t *testing.T, b []byte, nLayers uint8) {
		n := int(nLayers)
		s, err := parseAdapterConfig(file, b, n)
		if err != nil {
			for _, line := range strings.Split(err.Error(), "\n") {
				if !strings.HasPrefix(line, file) && !strings.HasPrefix(line, "parse "+file) {
					t.Fatalf("error line %q does not name the file", line)
				}
			}
			return
		}
		check := s
		if len(check.Keys) == 0 {
			check.Keys = DefaultSettings().Keys
		}
		if err := check.Validate(n); err != nil {
			t.Fatalf("accepted invalid settings %+v: %v", s, err)
		}
		scale := s.EffectiveScale()
		if math.IsNaN(scale) || math.IsInf(scale, 0) || math.IsInf(float64(float32(scale)), 0) {
			t.Fatalf("accepted settings with scale %v", scale)
		}
		// What Save writes for these settings reads back the same.
		numLayers := s.NumLayers
		if numLayers < 0 {
			numLayers = max(n, 1)
		}
		saved, err := json.Marshal(adapterConfig{FineTuneType: "lora", NumLayers: numLayers, Alpha: s.Alpha,
			LoraParameters: loraParameters{Rank: s.Rank, Dropout: s.Dropout, Scale: scale, Keys: check.ResolvedKeys()}})
		if err != nil {
			t.Fatalf("save %+v: %v", s, err)
		}
		back, err := parseAdapterConfig(file, saved, n)
		if err != nil {
			t.Fatalf("saved settings do not read back: %v\n%s", err, saved)
		}
		if back.Rank != s.Rank || back.Dropout != s.Dropout || back.EffectiveScale() != scale ||
			fmt.Sprint(back.ResolvedKeys()) != fmt.Sprint(check.ResolvedKeys()) {
			t.Fatalf("settings %+v read back as %+v", s, back)
		}
	})
}
