package main

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fungtrain/fungtrain/bench"
)

// TestBenchCLIQuantizedRealWorkload: init-model, bench quantize to an MLX
// 4-bit checkpoint, then bench train on it with a length spec,
// accumulation and a --set, from the command line; the JSON says what ran.
// bench lengths writes the profile it prints.
func TestBenchCLIQuantizedRealWorkload(t *testing.T) {
	dir := t.TempDir()
	dense, q4 := filepath.Join(dir, "dense"), filepath.Join(dir, "q4")
	if _, _, err := runCLI(t, "init-model", "--shape", "tiny", "--dtype", "f32", "--out", dense); err != nil {
		t.Fatal(err)
	}
	if _, _, err := runCLI(t, "bench", "quantize", "--model", dense, "--to", "mlx", "--group-size", "32", "--out", q4); err != nil {
		t.Fatal(err)
	}
	out, _, err := runCLI(t, "bench", "train", "--model", q4, "--dtype", "f32", "--dequantize", "no",
		"--lengths", "mean:40,max:48,min:32,n:4", "--grad-accum", "3", "--warmup", "1", "--steps", "1",
		"--set", "training.loss_chunk=16", "--json")
	if err != nil {
		t.Fatal(err)
	}
	var r bench.TrainResult
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("parse %s: %v", out, err)
	}
	if r.Quantized != "4-bit, group 32" || r.GradAccum != 3 || r.Training.LossChunk != 16 || r.Lengths.Examples != 4 ||
		r.LengthsSource == "" || r.TokensPerSec <= 0 || r.CountedTokensPerSec >= r.TokensPerSec {
		t.Errorf("result: quantized %q, accumulation %d, loss chunk %d, lengths %+v from %q, tokens/s %g, counted %g",
			r.Quantized, r.GradAccum, r.Training.LossChunk, r.Lengths, r.LengthsSource, r.TokensPerSec, r.CountedTokensPerSec)
	}
	file := filepath.Join(dir, "lengths.json")
	text, _, err := runCLI(t, "bench", "lengths", "--lengths", "mean:40,max:48,min:32,n:4", "--out", file)
	if err != nil {
		t.Fatal(err)
	}
	p, err := bench.ReadProfile(file)
	if err != nil {
		t.Fatal(err)
	}
	if st := p.Stats(); st.Examples != 4 || !strings.Contains(text, "4 examples") {
		t.Errorf("bench lengths printed %q; the file holds %+v", text, st)
	}
}

func TestBenchCLIErrors(t *testing.T) {
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"bench", "fly"}, `bench "fly": want train, generate, lengths or quantize`},
		{[]string{"bench", "train", "--lora-keys", "qk"}, "--lora-keys"},
		{[]string{"bench", "train", "--set", "training.bogus=1"}, "unknown key training.bogus"},
		{[]string{"bench", "train", "--lengths", "mean:290"}, "mean and max are required"},
		{[]string{"bench", "lengths"}, "--lengths is required"},
		{[]string{"bench", "quantize", "--model", "x"}, "--model (a dense model directory) and --out are required"},
		{[]string{"bench", "quantize", "--model", t.TempDir(), "--to", "q5_k", "--out", filepath.Join(t.TempDir(), "x.gguf")}, `gguf type "q5_k": want q4_0 or q8_0`},
	}
	for _, tc := range cases {
		_, _, err := runCLI(t, tc.args...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: error %v, want one containing %q", tc.args, err, tc.want)
		}
	}
}

// TestBenchMemoryLimitFlag: --memory-limit-gb NaN, ±Inf or a negative
// number is refused with the flag's name, before anything is built; a
// valid limit goes on (to the next error, a bad --set here), for train.
func TestBenchMemoryLimitFlag(t *testing.T) {
	const want = "--memory-limit-gb %s: want a finite number of GiB, 0 or more (0: MLX's default)"
	cases := []struct{ value, want string }{
		{"NaN", fmt.Sprintf(want, "NaN")},
		{"Inf", fmt.Sprintf(want, "+Inf")},
		{"-Inf", fmt.Sprintf(want, "-Inf")},
		{"-1", fmt.Sprintf(want, "-1")},
		{"-0.5", fmt.Sprintf(want, "-0.5")},
		{"2", "bench config: --set training.bogus=1: unknown key training.bogus"},
		{"0", "bench config: --set training.bogus=1: unknown key training.bogus"},
	}
	for _, mode := range []string{"train", "generate"} {
		for _, tc := range cases {
			if mode == "generate" && !strings.HasPrefix(tc.want, "--memory-limit-gb") {
				continue // generate takes no --set: a valid limit would run it
			}
			_, _, err := runCLI(t, "bench", mode, "--memory-limit-gb", tc.value, "--set", "training.bogus=1")
			if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
				t.Errorf("bench %s --memory-limit-gb %s: error\n%v\nwant\n%s", mode, tc.value, err, tc.want)
			}
		}
	}
}
