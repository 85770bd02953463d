package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// TestHints: each hint answers its errors, for the commands it is meant
// for, and nothing else; at most one hint line follows the error.
func TestHints(t *testing.T) {
	cases := []struct {
		command, err string
		want         string // the hint's start; "" for none
	}{
		{"train", "step 3: mlx.Eval: [METAL] Command buffer execution failed: Insufficient Memory (00000008:kIOGPUCommandBufferCallbackErrorOutOfMemory).", "out of memory: lower data.max_seq_length"},
		{"bench", "mlx.Eval: cudaMalloc(&data, size) failed: out of memory", "out of memory: lower --seq"},
		{"generate", "[metal::malloc] Attempting to allocate 1 bytes which is greater than the maximum allowed buffer size of 0 bytes.", "out of memory: use a 4-bit"},
		{"eval", "[malloc] Unable to allocate 17 bytes.", "out of memory: use a 4-bit"},
		{"train", "out of memory is no MLX text", ""},
		{"train", "step 2: loss is NaN (the last good checkpoint is in r/checkpoints)", "the training diverged"},
		{"train", "step 7: loss is +Inf (the last good checkpoint is in r/checkpoints)", "the training diverged"},
		{"train", "step 7: gradient norm is NaN (the last good checkpoint is in r/checkpoints)", "the training diverged"},
		{"generate", "loss is NaN", ""},
		{"train", "step 2: loss is 3.5", ""},
		{"train", "x.jsonl line 1: chat template: the model has no chat template; force a format with --chat-format llama3|chatml, or use --no-chat-template", "set model.chat_format"},
		{"generate", "chat template: the model has no chat template; force a format with --chat-format llama3|chatml, or use --no-chat-template", ""},
		{"train", `x.jsonl line 1: chat format llama3 (forced) writes the token "<|start_header_id|>", which tokenizer m does not have`, "model.chat_format is not"},
		{"eval", `chat format chatml (forced) writes the token "<|im_start|>", which tokenizer m does not have`, "--chat-format is not"},
		{"generate", `chat format chatml writes the token "<|im_start|>", which tokenizer m does not have`, "the tokenizer does not match"},
		{"generate", "open model m: the tokenizer has 128256 tokens but the model's vocab_size is 1024", "the tokenizer files"},
		{"generate", "--adapter: a/adapters.safetensors: missing tensor model.layers.26.mlp.down_proj.lora_a", "the adapter was trained on a base model"},
		{"train", "restore c: missing tensors for model.layers.1.q_proj", ""},
		{"train", "train: --set cannot change a resumed run; its config comes from the checkpoint", "to change settings"},
		{"train", "the run in r already finished (step 4 of 4); nothing to resume", "to train further"},
		{"train", "resume r: no checkpoint found (open r/checkpoints/latest: no such file or directory)", "--resume takes a run directory"},
		{"train", "restore r/checkpoints/step-0000004: the checkpoint was written by 2 rank(s) with batch 1 (global batch 2); 1 rank(s) with batch 1 make a global batch of 1, so the run would not resume exactly: resume with a batch size of 2 per rank",
			"add --set training.batch_size=B, B being the batch per rank named above"},
		{"generate", "so the run would not resume exactly", ""},
		{"launch", "launch: rank 1 exited with status 3", "the rank's own error is in the lines prefixed [rank 1]"},
		{"launch", "launch: rank 0 exited with status 124", "status 124: rank 0 gave up"},
		{"launch", "launch: rank 2 was killed by signal: killed", "the rank's own error is in the lines prefixed [rank 2]"},
		{"launch", "launch: no command: put it after --", ""},
	}
	for _, c := range cases {
		got := hintFor(c.command, errors.New(c.err))
		switch {
		case c.want == "" && got != "":
			t.Errorf("%s: %q got the hint %q, want none", c.command, c.err, got)
		case c.want != "" && !strings.HasPrefix(got, c.want):
			t.Errorf("%s: %q got the hint %q, want one starting %q", c.command, c.err, got, c.want)
		case c.want != "" && !strings.HasSuffix(got, ")") || strings.Contains(got, "\n"):
			t.Errorf("%s: hint %q is not one line ending with the guide's section", c.command, got)
		}
	}
	// A wrapped error keeps its hint; printError writes the error, then
	// the hint, and nothing else.
	root := newRootCmd()
	train, _, err := root.Find([]string{"train"})
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	printError(&out, train, fmt.Errorf("outer: %w", errors.New("step 2: loss is NaN")))
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	if len(lines) != 2 || lines[0] != "error: outer: step 2: loss is NaN" || !strings.HasPrefix(lines[1], "hint: the training diverged") ||
		!strings.HasSuffix(lines[1], "("+troubleshootingDoc+"#the-loss-is-nan)") {
		t.Errorf("printError wrote %q", out.String())
	}
	out.Reset()
	printError(&out, root, errors.New("unknown command"))
	if out.String() != "error: unknown command\n" {
		t.Errorf("printError without a hint wrote %q", out.String())
	}
	if commandPath(nil) != "" || commandPath(root) != "" || commandPath(train) != "train" {
		t.Errorf("commandPath: %q %q %q", commandPath(nil), commandPath(root), commandPath(train))
	}
}

// TestSlowBLAS: the reference BLAS is told from optimised ones by the
// library's path; in this process the library that gives cblas_sgemm is
// found, and a child with mlx-cpu's reference BLAS preloaded warns while
// a child without warns exactly when this process would.
func TestSlowBLAS(t *testing.T) {
	dir := t.TempDir()
	alt := filepath.Join(dir, "openblas-pthread")
	if err := os.MkdirAll(alt, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(alt, "libblas.so.3"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(alt, "libblas.so.3"), filepath.Join(dir, "libblas.so.3")); err != nil {
		t.Fatal(err)
	}
	for lib, want := range map[string]bool{
		"/x/mlx_cpu.libs/libblas-bd8a282c.so.3.10.0":              true,
		"/usr/lib/x86_64-linux-gnu/blas/libblas.so.3":             true,
		"/usr/lib/libcblas.so.3":                                  true,
		"/usr/lib/x86_64-linux-gnu/libopenblas.so.0":              false,
		"/usr/lib/x86_64-linux-gnu/openblas-pthread/libblas.so.3": false,
		filepath.Join(dir, "libblas.so.3"):                        false, // a link to OpenBLAS's
		"/opt/intel/mkl/lib/libmkl_rt.so":                         false,
		"":                                                        false,
	} {
		if got := isReferenceBLAS(lib); got != want {
			t.Errorf("isReferenceBLAS(%q) = %v, want %v", lib, got, want)
		}
	}
	if runtime.GOOS != "linux" {
		t.Skip("the check looks up cblas_sgemm on Linux only")
	}
	self := sgemmLibrary()
	if self == "" {
		t.Fatal("no library provides cblas_sgemm to this process")
	}
	libs, _ := filepath.Glob(filepath.Join(repoRoot(t), "third_party", "mlx", "mlx_cpu.libs", "libblas-*.so*"))
	if len(libs) == 0 {
		t.Skip("not an mlx-cpu build")
	}
	t.Logf("cblas_sgemm comes from %s", self)
	for _, c := range []struct {
		env  []string
		want bool
	}{
		{append(os.Environ(), "LD_PRELOAD="+libs[0]), true},
		{os.Environ(), isReferenceBLAS(self)},
	} {
		out, code := asUserProcess(t, c.env, nil, "version")
		if got := strings.Contains(out, slowBLASWarning); code != 0 || got != c.want {
			t.Errorf("version with %v: exit %d, warning %v, want %v:\n%s", c.env[len(c.env)-1:], code, got, c.want, out)
		}
	}
	out, _ := asUserProcess(t, append(os.Environ(), "LD_PRELOAD="+libs[0]), nil, "init-model")
	if strings.Contains(out, slowBLASWarning) {
		t.Errorf("init-model, which computes little, warned:\n%s", out)
	}
}
