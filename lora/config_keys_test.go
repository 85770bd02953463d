package lora

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

// TestKeysScalarOrList: lora.keys takes a list or a single string.
func TestKeysScalarOrList(t *testing.T) {
	cases := []struct {
		yaml string
		want []string
	}{
		{"keys: all-linear", []string{"all-linear"}},
		{"keys: [all-linear]", []string{"all-linear"}},
		{"keys: [self_attn.q_proj, mlp.down_proj]", []string{"self_attn.q_proj", "mlp.down_proj"}},
	}
	for _, c := range cases {
		p := filepath.Join(t.TempDir(), "run.yaml")
		body := "model:\n  path: m\ndata:\n  dir: d\nlora:\n  " + c.yaml + "\n"
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		cfg, err := LoadRunConfig(p, nil)
		if err != nil {
			t.Fatalf("%s: %v", c.yaml, err)
		}
		if !reflect.DeepEqual([]string(cfg.LoRA.Keys), c.want) {
			t.Errorf("%s: keys %v, want %v", c.yaml, cfg.LoRA.Keys, c.want)
		}
	}
}
