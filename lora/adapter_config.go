package lora

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
)

// adapterJSONKeys are the adapter_config.json names of the settings.
var adapterJSONKeys = map[string]string{
	"lora.rank": "lora_parameters.rank", "lora.dropout": "lora_parameters.dropout",
	"lora.scale": "lora_parameters.scale", "lora.keys": "lora_parameters.keys",
	"lora.alpha": "alpha", "lora.num_layers": "num_layers",
}

// parseAdapterConfig reads the settings from adapter_config.json's bytes b
// (read from path) and validates them for a model of nLayers blocks. The
// keys may be absent (mlx-lm's default): Load takes them from the tensors.
func parseAdapterConfig(path string, b []byte, nLayers int) (Settings, error) {
	var cfg adapterConfig
	if err := json.Unmarshal(b, &cfg); err != nil {
		return Settings{}, jsonError(path, b, err)
	}
	if cfg.FineTuneType != "" && cfg.FineTuneType != "lora" {
		return Settings{}, fmt.Errorf("%s: fine_tune_type %q unsupported (want lora)", path, cfg.FineTuneType)
	}
	p := cfg.LoraParameters
	s := Settings{Rank: p.Rank, Dropout: p.Dropout, NumLayers: cfg.NumLayers, Keys: p.Keys, Scale: p.Scale, Alpha: cfg.Alpha}
	if s.Scale == 0 && s.Alpha == 0 {
		return Settings{}, fmt.Errorf("%s: lora_parameters.scale is missing", path)
	}
	check := s
	if len(check.Keys) == 0 {
		check.Keys = DefaultSettings().Keys // the keys come from the tensors
	}
	var errs []error
	for _, p := range check.problems(nLayers) {
		if k, ok := adapterJSONKeys[p.key]; ok {
			p.key = k
		}
		errs = append(errs, fmt.Errorf("%s: %w", path, p))
	}
	return s, errors.Join(errs...)
}

// jsonError says where in the JSON file path (bytes b) err happened.
func jsonError(path string, b []byte, err error) error {
	line := func(off int64) int { return 1 + bytes.Count(b[:min(max(off, 0), int64(len(b)))], []byte("\n")) }
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syn):
		return fmt.Errorf("%s:%d: invalid JSON: %v", path, line(syn.Offset), syn)
	case errors.As(err, &typ) && typ.Field == "":
		return fmt.Errorf("%s:%d: want a JSON object, got %s", path, line(typ.Offset), typ.Value)
	case errors.As(err, &typ):
		return fmt.Errorf("%s:%d: %s: want %s, got %s", path, line(typ.Offset), typ.Field, wantOf(typ.Type), typ.Value)
	}
	return fmt.Errorf("parse %s: %w", path, err)
}
