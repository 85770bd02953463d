package main

import (
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/spf13/cobra"

	"github.com/fungtrain/fungtrain/hub/hubtest"
)

// troubleCheck says how TestTroubleshootingDoc gets a block's messages:
// trigger makes fungtrain print them and returns what a user sees; a
// block without a trigger gives, in static, why it cannot be triggered on
// a CPU test machine, and its lines are looked up in the sources and
// knownMessages instead.
type troubleCheck struct {
	trigger func(t *testing.T, e *troubleEnv) string
	static  string
}

// knownMessages are messages that come from outside the repository (MLX
// on a GPU, the shell, NVRTC), with where each comes from. Their text
// cannot be produced here; a guide line quoting one must match it.
var knownMessages = map[string]string{
	"[METAL] Command buffer execution failed: Insufficient Memory (00000008:kIOGPUCommandBufferCallbackErrorOutOfMemory).": "MLX, mlx/backend/metal/device.cpp: \"[METAL] Command buffer execution failed: {}.\" with macOS's description of the out-of-memory status",
	"[metal::malloc] Attempting to allocate %zu bytes which is greater than the maximum allowed buffer size of %zu bytes.": "MLX, mlx/backend/metal/allocator.cpp (MetalAllocator::malloc)",
	"cudaMallocAsync(&data, size, stream) failed: out of memory":                                                           "MLX, mlx/backend/cuda/allocator.cpp: CHECK_CUDA_ERROR prints the call and cudaGetErrorString(cudaErrorMemoryAllocation)",
	"[malloc] Unable to allocate %zu bytes.":                                                                               "MLX, mlx/backend/cuda/allocator.cpp and metal/allocator.cpp",
	"Killed":                                                                                                               "the shell's report of a process ended by SIGKILL (the kernel's OOM killer)",
	"Segmentation fault":                                                                                                   "the shell's report of a process ended by SIGSEGV (MLX 0.32.4's CPU allocator does not check a failed malloc)",
	"Failed to compile kernel: %s.":                                                                                        "MLX, mlx/backend/cuda/jit_module.cpp, with NVRTC's log",
	`cannot open source file "cuda/std/tuple"`:                                                                             "NVRTC without CCCL's headers; seen on the H100 (docs/BENCHMARKS.md)",
	`cannot open source file "cute/numeric/numeric_types.hpp"`:                                                             "NVRTC without the wheel's CUTLASS headers; seen on the H200 (/work/shared/NOTES.md)",
}

func knownMessageTexts() []string {
	var out []string
	for m := range knownMessages {
		out = append(out, m)
	}
	return out
}

var troubleChecks = map[string]troubleCheck{
	"oom-metal": {static: "MLX raises it only on Metal (Apple silicon)"},
	"oom-cuda":  {static: "MLX raises it only on CUDA"},
	"oom-cpu":   {static: "running a shared test machine out of memory is not an option"},
	"oom-hint":  {trigger: triggerOOMHint},
	"nan-loss": {trigger: func(t *testing.T, e *troubleEnv) string {
		return e.train(t, "--set", "optimizer.lr=1e20", "--set", "optimizer.grad_clip=0")
	}},
	"flat-loss": {trigger: func(t *testing.T, e *troubleEnv) string {
		return e.train(t, "--set", "optimizer.lr=1e-12")
	}},
	"adapter-other-model": {trigger: triggerAdapterOtherModel},
	"chat-none-train":     {trigger: triggerNoChatTemplate},
	"chat-forced-train": {trigger: func(t *testing.T, e *troubleEnv) string {
		out, _ := asUser(context.Background(), "train", "--config", cliAsset(t, "examples/fung-sample.yaml"),
			"--set", "model.path="+cliAsset(t, smolLM2), "--set", "data.dir="+cliAsset(t, "examples/fung-sample"),
			"--set", "output.dir="+filepath.Join(t.TempDir(), "run"), "--set", "model.chat_format=llama3")
		return out
	}},
	"chat-forced-generate": {trigger: func(t *testing.T, e *troubleEnv) string {
		out, _ := asUser(context.Background(), "generate", "--model", cliAsset(t, smolLM2), "--chat-format", "llama3", "--prompt", "hi")
		return out
	}},
	"tokenizer-vocab":      {trigger: triggerForeignTokenizer},
	"tokenizer-init-model": {trigger: triggerInitModelTokenizer},
	"tokenizer-missing": {trigger: func(t *testing.T, e *troubleEnv) string {
		dir := filepath.Join(t.TempDir(), "tiny")
		mustUser(t, "init-model", "--shape", "tiny", "--out", dir, "--dtype", "f32")
		out, _ := asUser(context.Background(), "generate", "--model", dir, "--prompt", "hi")
		return out
	}},
	"resume-finished": {trigger: func(t *testing.T, e *troubleEnv) string {
		out, _ := asUser(context.Background(), "train", "--resume", e.finishedRun())
		return out
	}},
	"resume-set": {trigger: func(t *testing.T, e *troubleEnv) string {
		out, _ := asUser(context.Background(), "train", "--resume", e.finishedRun(), "--set", "optimizer.lr=1e-4")
		return out
	}},
	"resume-none": {trigger: func(t *testing.T, e *troubleEnv) string {
		out, _ := asUser(context.Background(), "train", "--resume", t.TempDir())
		return out
	}},
	"resume-config": {trigger: func(t *testing.T, e *troubleEnv) string {
		out, _ := asUser(context.Background(), "train", "--resume", e.finishedRun(), "--config", "run.yaml")
		return out
	}},
	"resume-changed": {trigger: func(t *testing.T, e *troubleEnv) string {
		model, data := e.fixture()
		data = copyDir(t, data)
		run := filepath.Join(t.TempDir(), "run")
		mustUser(t, "train", "--config", trainConfig(t, model, data, run, 1))
		f, err := os.OpenFile(filepath.Join(data, "train.jsonl"), os.O_APPEND|os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		f.WriteString(`{"text": "fasting lowers insulin"}` + "\n")
		f.Close()
		out, _ := asUser(context.Background(), "train", "--resume", run)
		return out
	}},
	"resume-reshard": {trigger: func(t *testing.T, e *troubleEnv) string {
		// The fixture trains 1 rank × batch 2; 1 × 1 is another global batch.
		out, _ := asUser(context.Background(), "train", "--resume", e.finishedRun(), "--set", "training.batch_size=1")
		return out
	}},
	"new-finished": {trigger: func(t *testing.T, e *troubleEnv) string {
		model, data := e.fixture()
		out, _ := asUser(context.Background(), "train", "--config", trainConfig(t, model, data, e.finishedRun(), 1))
		return out
	}},
	"new-unfinished": {trigger: func(t *testing.T, e *troubleEnv) string {
		// An interrupted run (a checkpoint at step 0), then a new run there.
		model, data := e.fixture()
		cfg := trainConfig(t, model, data, filepath.Join(t.TempDir(), "run"), 1)
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if _, err := asUser(ctx, "train", "--config", cfg); err != nil {
			t.Fatal(err)
		}
		out, _ := asUser(context.Background(), "train", "--config", cfg)
		return out
	}},
	"resume-interrupted": {trigger: func(t *testing.T, e *troubleEnv) string {
		// A cancelled context stands in for Ctrl-C: the trainer saves a
		// checkpoint and stops before its first step.
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		model, data := e.fixture()
		out, err := asUser(ctx, "train", "--config", trainConfig(t, model, data, filepath.Join(t.TempDir(), "run"), 1))
		if err != nil {
			t.Errorf("an interrupted run returned %v, want success", err)
		}
		return out
	}},
	"hub-gated":   {trigger: func(t *testing.T, e *troubleEnv) string { return e.pull(t, "", false) }},
	"hub-token":   {trigger: func(t *testing.T, e *troubleEnv) string { return e.pull(t, "hf_NotTheRightToken", false) }},
	"hub-offline": {trigger: func(t *testing.T, e *troubleEnv) string { return e.pull(t, hubSecret, true) }},
	"blas-warning": {trigger: func(t *testing.T, e *troubleEnv) string {
		libs, _ := filepath.Glob(filepath.Join(repoRoot(t), "third_party", "mlx", "mlx_cpu.libs", "libblas-*.so*"))
		if runtime.GOOS != "linux" || len(libs) == 0 {
			t.Skip("the reference BLAS of mlx-cpu is only in Linux CPU builds")
		}
		out, _ := asUserProcess(t, append(os.Environ(), "LD_PRELOAD="+libs[0]), nil, "version")
		return out
	}},
	"loader":       {trigger: triggerLoader},
	"nvrtc":        {static: "NVRTC runs only in CUDA builds"},
	"setup-tools":  {trigger: triggerSetupTools},
	"setup-static": {static: "build.sh looks for OpenBLAS in the system's library paths, which a test cannot hide"},
	"demo-static":  {static: "examples/demo.sh looks for the test model at a fixed path under the checkout"},
	"data-nothing": {trigger: func(t *testing.T, e *troubleEnv) string {
		return dataTranscripts(t, []string{"too short"}, 3)
	}},
	"data-too-many": {trigger: func(t *testing.T, e *troubleEnv) string {
		return dataTranscripts(t, []string{"too short", strings.Repeat("fasting lowers insulin. ", 20)}, 4, "--max-failed", "0")
	}},
	"launch-exit": {trigger: func(t *testing.T, e *troubleEnv) string {
		return launchRanks(t, `if [ "$MLX_RANK" = 1 ]; then echo "the real error" >&2; exit 3; fi; sleep 30`)
	}},
	"launch-killed": {trigger: func(t *testing.T, e *troubleEnv) string {
		return launchRanks(t, `if [ "$MLX_RANK" = 1 ]; then kill -9 $$; fi; sleep 30`)
	}},
	"dist-hang": {trigger: triggerDistHang},
}

// troubleEnv holds what several triggers share, built once.
type troubleEnv struct {
	parent      *testing.T
	fixtureOnce sync.Once
	model, data string
	runOnce     sync.Once
	run         string
	staticOnce  sync.Once
	staticTexts []string
	hubOnce     sync.Once
	hub         *hubtest.Hub
}

// fixture is the tiny 2-layer model with a word tokenizer and text data
// of train_test.go.
func (e *troubleEnv) fixture() (model, data string) {
	e.fixtureOnce.Do(func() { e.model, e.data = trainFixture(e.parent) })
	return e.model, e.data
}

// train runs the fixture's training with extra flags and returns what
// the user sees.
func (e *troubleEnv) train(t *testing.T, args ...string) string {
	model, data := e.fixture()
	cfg := trainConfig(t, model, data, filepath.Join(t.TempDir(), "run"), 1)
	out, _ := asUser(context.Background(), append([]string{"train", "--config", cfg}, args...)...)
	return out
}

// finishedRun is a fixture run trained to its end.
func (e *troubleEnv) finishedRun() string {
	e.runOnce.Do(func() {
		model, data := e.fixture()
		e.run = filepath.Join(e.parent.TempDir(), "finished")
		mustUser(e.parent, "train", "--config", trainConfig(e.parent, model, data, e.run, 1))
	})
	return e.run
}

func (e *troubleEnv) static() []string {
	e.staticOnce.Do(func() { e.staticTexts = staticSources(e.parent) })
	return e.staticTexts
}

// pull runs `fungtrain pull org/tiny` against a fake Hub that serves the
// fixture model as a gated repository, with token as HF_TOKEN and a fresh
// cache, online or not.
func (e *troubleEnv) pull(t *testing.T, token string, offline bool) string {
	e.hubOnce.Do(func() {
		model, _ := e.fixture()
		e.hub = hubtest.New()
		e.parent.Cleanup(e.hub.Close)
		e.hub.SetToken(hubSecret)
		e.hub.AddRepo("org/tiny", dirFiles(e.parent, model)).Gated = true
	})
	hubEnv(t, e.hub, token)
	if offline {
		t.Setenv("HF_HUB_OFFLINE", "1")
	}
	out, _ := asUser(context.Background(), "pull", "org/tiny")
	return out
}

func mustUser(t *testing.T, args ...string) string {
	t.Helper()
	out, err := asUser(context.Background(), args...)
	if err != nil {
		t.Fatalf("fungtrain %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// triggerOOMHint: MLX's out-of-memory errors (injected: the CPU backend
// raises none) get the hint, for train as main prints it; generate gets
// its own, and an unrelated error none.
func triggerOOMHint(t *testing.T, e *troubleEnv) string {
	root := newRootCmd()
	cmdNamed := func(name string) *cobra.Command {
		c, _, err := root.Find([]string{name})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	var all strings.Builder
	for msg := range knownMessages {
		var out strings.Builder
		printError(&out, cmdNamed("train"), fmt.Errorf("step 3: mlx.Eval: %s (the last good checkpoint is in runs/x/checkpoints)", msg))
		oom := !strings.Contains(msg, "cannot open") && !strings.Contains(msg, "compile") && msg != "Killed" && msg != "Segmentation fault"
		if got := strings.Contains(out.String(), "hint: out of memory"); got != oom {
			t.Errorf("MLX message %q: out-of-memory hint %v, want %v:\n%s", msg, got, oom, out.String())
		}
		all.WriteString(out.String())
	}
	var gen strings.Builder
	printError(&gen, cmdNamed("generate"), errors.New("mlx.Eval: [malloc] Unable to allocate 1 bytes."))
	if !strings.Contains(gen.String(), "hint: out of memory: use a 4-bit") {
		t.Errorf("generate's out-of-memory hint:\n%s", gen.String())
	}
	return all.String()
}

// triggerAdapterOtherModel: the fixture's adapter (2 layers) on a 4-layer
// model of the same width.
func triggerAdapterOtherModel(t *testing.T, e *troubleEnv) string {
	model, _ := e.fixture()
	other := filepath.Join(t.TempDir(), "tiny4")
	mustUser(t, "init-model", "--shape", "tiny", "--out", other, "--dtype", "f32", "--tokenizer", filepath.Join(model, "tokenizer.json"))
	out, _ := asUser(context.Background(), "generate", "--model", other, "--adapter", e.finishedRun(),
		"--prompt", "fasting", "--no-chat-template", "--max-tokens", "1")
	return out
}

// triggerNoChatTemplate trains the fixture model, whose tokenizer has no
// chat template, on chat records.
func triggerNoChatTemplate(t *testing.T, e *troubleEnv) string {
	model, _ := e.fixture()
	data := t.TempDir()
	rec := `{"messages": [{"role": "user", "content": "is coffee fine"}, {"role": "assistant", "content": "coffee is fine"}]}` + "\n"
	for _, f := range []string{"train.jsonl", "valid.jsonl", "test.jsonl"} {
		if err := os.WriteFile(filepath.Join(data, f), []byte(rec+rec), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	out, _ := asUser(context.Background(), "train", "--config", trainConfig(t, model, data, filepath.Join(t.TempDir(), "run"), 1))
	return out
}

// triggerForeignTokenizer puts the Llama 3 tokenizer (128,256 tokens) into
// a tiny model (1,024 rows).
func triggerForeignTokenizer(t *testing.T, e *troubleEnv) string {
	dir := filepath.Join(t.TempDir(), "tiny")
	mustUser(t, "init-model", "--shape", "tiny", "--out", dir, "--dtype", "f32")
	for _, f := range []string{"tokenizer.json", "tokenizer_config.json"} {
		b, err := os.ReadFile(cliAsset(t, "third_party/llama3-tokenizer/"+f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, f), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	out, _ := asUser(context.Background(), "generate", "--model", dir, "--prompt", "hi", "--max-tokens", "1")
	return out
}

func triggerInitModelTokenizer(t *testing.T, e *troubleEnv) string {
	dir := filepath.Join(t.TempDir(), "tiny")
	out, _ := asUser(context.Background(), "init-model", "--shape", "tiny", "--out", dir, "--tokenizer", cliAsset(t, "third_party/llama3-tokenizer"))
	if _, err := os.Stat(dir); err == nil {
		t.Errorf("init-model wrote %s before refusing the tokenizer", dir)
	}
	return out
}

// triggerLoader starts fungtrain (the test binary, linked as bin/fungtrain
// is) through the dynamic loader with the binary's RUNPATH ignored, as if
// it had been moved away from the libmlx it was built with.
func triggerLoader(t *testing.T, e *troubleEnv) string {
	if runtime.GOOS != "linux" {
		t.Skip("the message is glibc's dynamic loader's")
	}
	f, err := elf.Open(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var interp string
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			b := make([]byte, p.Filesz)
			if _, err := p.ReadAt(b, 0); err != nil {
				t.Fatal(err)
			}
			interp = strings.TrimRight(string(b), "\x00")
		}
	}
	if interp == "" {
		t.Fatal("the test binary names no dynamic loader")
	}
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "LD_LIBRARY_PATH=") {
			env = append(env, kv)
		}
	}
	out, code := asUserProcess(t, env, []string{interp, "--inhibit-rpath", ""}, "version")
	if code != 127 {
		t.Errorf("exit status %d, want the loader's 127", code)
	}
	return out
}

// triggerSetupTools runs build.sh with a PATH that lacks one tool at a
// time (stubs stand in for the others), in the order build.sh checks them.
func triggerSetupTools(t *testing.T, e *troubleEnv) string {
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Skip("no bash")
	}
	var all strings.Builder
	for _, missing := range []string{"python3", "pip", "cargo", "g++", "go", "npm"} {
		bin := t.TempDir()
		for _, real := range []string{"dirname", "uname"} {
			p, err := exec.LookPath(real)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(p, filepath.Join(bin, real)); err != nil {
				t.Fatal(err)
			}
		}
		for _, tool := range []string{"python3", "cargo", "g++", "go", "npm"} {
			stub := "#!/bin/sh\nexit 0\n"
			if tool == "python3" && missing == "pip" {
				stub = "#!/bin/sh\n[ \"$1\" = -m ] && exit 1\nexit 0\n"
			}
			if tool != missing {
				if err := os.WriteFile(filepath.Join(bin, tool), []byte(stub), 0o755); err != nil {
					t.Fatal(err)
				}
			}
		}
		c := exec.Command(bash, filepath.Join(repoRoot(t), "build.sh"), "build")
		c.Env = []string{"PATH=" + bin, "HOME=" + t.TempDir()}
		out, err := c.CombinedOutput()
		if err == nil {
			t.Errorf("build.sh without %s succeeded:\n%s", missing, out)
		}
		all.Write(out)
	}
	return all.String()
}

// dataTranscripts runs `fungtrain data transcripts` over texts (one file
// each) and checks the exit code main would give.
func dataTranscripts(t *testing.T, texts []string, wantCode int, flags ...string) string {
	root := t.TempDir()
	src := filepath.Join(root, "transcripts")
	if err := os.MkdirAll(src, 0o755); err != nil {
		t.Fatal(err)
	}
	for i, text := range texts {
		if err := os.WriteFile(filepath.Join(src, fmt.Sprintf("talk%d.txt", i)), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cfg := filepath.Join(root, "run.yaml")
	if err := os.WriteFile(cfg, []byte("data:\n  work_dir: "+filepath.Join(root, "work")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := asUser(context.Background(), append([]string{"data", "transcripts", "--config", cfg, "--dir", src}, flags...)...)
	if code := exitCode(err); err == nil || code != wantCode {
		t.Errorf("exit code %d (%v), want %d", code, err, wantCode)
	}
	return out
}

// launchRanks runs two ranks of a shell script under launch.
func launchRanks(t *testing.T, script string) string {
	out, err := asUser(context.Background(), "launch", "--grace", "1s", "-n", "2", "--exec", "--", "sh", "-c", script)
	if err == nil {
		t.Error("launch succeeded")
	}
	return out
}

// triggerDistHang starts rank 0 of 2 alone: joining waits for rank 1
// until the bound, and the process exits with status 124.
func triggerDistHang(t *testing.T, e *troubleEnv) string {
	var addrs []string
	for range 2 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addrs = append(addrs, l.Addr().String())
		l.Close()
	}
	hosts := filepath.Join(t.TempDir(), "hosts.json")
	if err := os.WriteFile(hosts, []byte(fmt.Sprintf(`[["%s"],["%s"]]`, addrs[0], addrs[1])), 0o644); err != nil {
		t.Fatal(err)
	}
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "MLX_") && !strings.HasPrefix(kv, envDistBackend+"=") {
			env = append(env, kv)
		}
	}
	env = append(env, "MLX_RANK=0", "MLX_HOSTFILE="+hosts)
	out, code := asUserProcess(t, env, nil, "distcheck", "--timeout", "2s")
	if code != 124 {
		t.Errorf("exit status %d, want 124", code)
	}
	return out
}
