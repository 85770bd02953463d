package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fungtrain/fungtrain/llama"
	"github.com/fungtrain/fungtrain/lora"
	"github.com/fungtrain/fungtrain/mlx"
)

// writeAdapter applies a random adapter (nonzero B) with settings s to the
// model in modelDir and saves it in fungtrain's format to dir.
func writeAdapter(t *testing.T, modelDir, dir string, s lora.Settings) {
	t.Helper()
	err := mlx.Do(func() error {
		m, err := llama.LoadModel(modelDir, llama.LoadOptions{Dtype: "f32"})
		if err != nil {
			return err
		}
		defer m.Free()
		a, err := lora.Apply(m, s, 9)
		if err != nil {
			return err
		}
		for i, n := range a.Names {
			l := a.Layers[n]
			key := mlx.RandomKey(uint64(100 + i))
			b := mlx.Normal(0, 0.05, mlx.Float32, key, l.B.Shape()...)
			key.Free()
			if err := mlx.Eval(b); err != nil {
				return err
			}
			mlx.Detach(b)
			l.B.Free()
			l.B = b
		}
		return a.Save(dir)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestExportGGUFBadInput: bad flags, an existing output, an adapter for
// another base model: clear errors, and no file (or partial file) left.
func TestExportGGUFBadInput(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "llama3")
	writeLlama3TestModel(t, src, llama3TestConfig())
	// Adapters of the tiny shape (hidden 128): one with as many layers as
	// the model (shapes differ), one for a deeper model (layers differ).
	foreign, deeper := filepath.Join(dir, "foreign-adapter"), filepath.Join(dir, "deeper-adapter")
	for _, c := range []struct {
		adapter string
		layers  int
	}{{foreign, 2}, {deeper, 4}} {
		other := filepath.Join(dir, fmt.Sprintf("tiny%d", c.layers))
		if err := mlx.Do(func() error {
			cfg, _ := llama.ShapeConfig("tiny")
			cfg.NumLayers = c.layers
			return llama.WriteRandomModel(other, cfg, mlx.Float32, 1)
		}); err != nil {
			t.Fatal(err)
		}
		writeAdapter(t, other, c.adapter, lora.Settings{Rank: 4, Alpha: 8, NumLayers: 2, Keys: []string{"self_attn.q_proj"}})
	}
	exists := filepath.Join(dir, "exists.gguf")
	os.WriteFile(exists, []byte("keep me"), 0o644)
	out := filepath.Join(dir, "out.gguf")
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"no model", []string{"--out", out}, "--model and --out are required"},
		{"unknown type", []string{"--model", src, "--out", out, "--type", "q5_k"}, `unknown GGUF type "q5_k"`},
		{"output exists", []string{"--model", src, "--out", exists}, "already exists (pass --force to overwrite)"},
		{"output is a directory", []string{"--model", src, "--out", dir}, "is a directory"},
		{"no such directory", []string{"--model", src, "--out", filepath.Join(dir, "nope", "x.gguf")}, "does not exist"},
		{"missing model", []string{"--model", filepath.Join(dir, "missing"), "--out", out}, "no such file"},
		{"adapter for another base", []string{"--model", src, "--adapter", foreign, "--out", out}, "trained for another base model"},
		{"adapter for a deeper base", []string{"--model", src, "--adapter", deeper, "--out", out}, "layer 3 but the model has 2 layers: an adapter for another base model"},
		{"missing adapter", []string{"--model", src, "--adapter", filepath.Join(dir, "none"), "--out", out}, "adapter_config.json"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, _, err := runCLI(t, append([]string{"export", "gguf"}, c.args...)...)
			t.Logf("%v", err)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %v, want it to contain %q", err, c.want)
			}
			if _, err := os.Stat(out); err == nil {
				t.Errorf("a failed export left %s", out)
			}
			if b, _ := os.ReadFile(exists); string(b) != "keep me" {
				t.Errorf("a refused export changed %s", exists)
			}
			if ents, _ := filepath.Glob(filepath.Join(dir, ".*tmp*")); len(ents) > 0 {
				t.Errorf("temporary files left: %v", ents)
			}
		})
	}
}

// TestExportAdapterFormats: the GGUF written with an adapter is byte for
// byte the same whether the adapter is given in fungtrain's format or as
// its PEFT export, and differs from the base model's (the adapter is
// merged); --force overwrites; export peft refuses to overwrite.
func TestExportAdapterFormats(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "llama3")
	writeLlama3TestModel(t, src, llama3TestConfig())
	ad := filepath.Join(dir, "adapter")
	writeAdapter(t, src, ad, lora.Settings{Rank: 4, Alpha: 8, NumLayers: 1, Keys: []string{"self_attn.q_proj", "self_attn.k_proj", "mlp.up_proj"}})
	peft := filepath.Join(dir, "peft")
	if _, errOut, err := runCLI(t, "export", "peft", "--adapter", ad, "--out", peft); err != nil {
		t.Fatalf("export peft: %v\n%s", err, errOut)
	}
	if _, _, err := runCLI(t, "export", "peft", "--adapter", ad, "--out", peft); err == nil || !strings.Contains(err.Error(), "--force") {
		t.Errorf("export peft over an existing adapter: %v", err)
	}
	files := map[string]string{}
	for name, adapter := range map[string]string{"base": "", "fungtrain": ad, "peft": peft} {
		files[name] = filepath.Join(dir, name+".gguf")
		args := []string{"export", "gguf", "--model", src, "--out", files[name], "--type", "f16"}
		if adapter != "" {
			args = append(args, "--adapter", adapter)
		}
		if _, errOut, err := runCLI(t, args...); err != nil {
			t.Fatalf("export %s: %v\n%s", name, err, errOut)
		}
	}
	read := func(p string) []byte {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	if !bytes.Equal(read(files["fungtrain"]), read(files["peft"])) {
		t.Errorf("the GGUF with the PEFT export of the adapter differs from the one with the adapter")
	}
	if bytes.Equal(read(files["fungtrain"]), read(files["base"])) {
		t.Errorf("the GGUF with the adapter equals the base model's: the adapter was not merged")
	}
	if _, errOut, err := runCLI(t, "export", "gguf", "--model", src, "--out", files["base"], "--type", "q8_0", "--force"); err != nil {
		t.Fatalf("export --force: %v\n%s", err, errOut)
	}
	if bytes.Equal(read(files["base"]), read(files["fungtrain"])) || len(read(files["base"])) >= len(read(files["fungtrain"])) {
		t.Errorf("--force did not replace the F16 file with a Q8_0 one")
	}
}
