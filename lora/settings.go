package lora

import (
	"errors"
	"fmt"
	"math"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/fungtrain/fungtrain/llama"
)

// The adapter settings: where LoRA layers go and their rank, scale and
// dropout.

// Settings describe where and how adapters are placed.
type Settings struct {
	Rank      int     `yaml:"rank" json:"rank"`
	Alpha     float64 `yaml:"alpha" json:"alpha"`
	Dropout   float64 `yaml:"dropout" json:"dropout"`
	NumLayers int     `yaml:"num_layers" json:"num_layers"` // the last N blocks; -1 for all
	Keys      KeyList `yaml:"keys" json:"keys"`             // module paths, or all-linear
	// Scale overrides alpha/rank when set (mlx-lm adapters store it).
	Scale float64 `yaml:"scale,omitempty" json:"scale,omitempty"`
}

// KeyList is a list of module paths; in YAML a single string (such as
// all-linear) is accepted as a one-item list.
type KeyList []string

// UnmarshalYAML accepts a sequence or a single scalar.
func (k *KeyList) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		*k = KeyList{n.Value}
		return nil
	}
	var list []string
	if err := n.Decode(&list); err != nil {
		return err
	}
	*k = list
	return nil
}

// DefaultSettings are the mission defaults: rank 6, alpha 8, dropout 0.1,
// the last 12 blocks, q and v projections.
func DefaultSettings() Settings {
	return Settings{Rank: 6, Alpha: 8, Dropout: 0.1, NumLayers: 12, Keys: []string{"self_attn.q_proj", "self_attn.v_proj"}}
}

// EffectiveScale is Scale if set, else alpha/rank (PEFT's convention).
func (s Settings) EffectiveScale() float64 {
	if s.Scale != 0 {
		return s.Scale
	}
	return s.Alpha / float64(s.Rank)
}

// ResolvedKeys expands "all-linear".
func (s Settings) ResolvedKeys() []string {
	if len(s.Keys) == 1 && s.Keys[0] == "all-linear" {
		return append([]string(nil), llama.ModulePaths...)
	}
	return s.Keys
}

// Validate checks the settings against a model with nLayers blocks (0:
// unknown yet); the error has one line per problem.
func (s Settings) Validate(nLayers int) error {
	problems := s.problems(nLayers)
	errs := make([]error, len(problems))
	for i, p := range problems {
		errs[i] = p
	}
	return errors.Join(errs...)
}

// problems lists every bad setting, named lora.<key>. The float settings
// must be finite before their ranges are checked: a comparison lets NaN
// through.
func (s Settings) problems(nLayers int) []keyError {
	errs := nonFiniteFloats(s, "lora.")
	finite := len(errs) == 0
	bad := func(key, format string, args ...any) {
		errs = append(errs, keyError{key, fmt.Sprintf(format, args...)})
	}
	if s.Rank <= 0 {
		bad("lora.rank", "must be positive, got %d", s.Rank)
	}
	if finite {
		if s.Alpha <= 0 && s.Scale == 0 {
			bad("lora.alpha", "must be positive, got %g", s.Alpha)
		}
		if s.Scale < 0 {
			bad("lora.scale", "must be positive (0: alpha/rank), got %g", s.Scale)
		}
		if sc := float64(float32(s.EffectiveScale())); s.Rank > 0 && (math.IsInf(sc, 0) || math.IsNaN(sc)) {
			if s.Scale != 0 {
				bad("lora.scale", "%g is too large for float32", s.Scale)
			} else {
				bad("lora.alpha", "%g over rank %d is too large a scale for float32", s.Alpha, s.Rank)
			}
		}
		if s.Dropout < 0 || s.Dropout >= 1 {
			bad("lora.dropout", "must be in [0, 1), got %g", s.Dropout)
		}
	}
	if s.NumLayers == 0 || s.NumLayers < -1 {
		bad("lora.num_layers", "must be positive or -1 (all), got %d", s.NumLayers)
	}
	if nLayers > 0 && s.NumLayers > nLayers {
		bad("lora.num_layers", "is %d but the model has only %d layers", s.NumLayers, nLayers)
	}
	keys := s.ResolvedKeys()
	if len(keys) == 0 {
		bad("lora.keys", "is empty")
	}
	for _, k := range keys {
		if !contains(llama.ModulePaths, k) {
			bad("lora.keys", "has unknown module %q (want all-linear or some of %s)", k, strings.Join(llama.ModulePaths, ", "))
		}
	}
	return errs
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}
