package main

import (
	"fmt"
	"io"
	"regexp"
	"strings"

	"github.com/spf13/cobra"
)

// troubleshootingDoc is where every hint points for more.
const troubleshootingDoc = "docs/TROUBLESHOOTING.md"

// printError reports a command's error as main does: "error: " and the
// message, then, for an error users meet often, one line of advice that
// starts with "hint: ". The advice lives here, in one place, and the
// packages' messages stay about what went wrong.
func printError(w io.Writer, cmd *cobra.Command, err error) {
	fmt.Fprintln(w, "error:", err)
	if h := hintFor(commandPath(cmd), err); h != "" {
		fmt.Fprintln(w, "hint:", h)
	}
}

// commandPath is cmd's path below the root ("train", "export gguf"); ""
// for the root itself or no command.
func commandPath(cmd *cobra.Command) string {
	if cmd == nil {
		return ""
	}
	p := cmd.CommandPath()
	if i := strings.IndexByte(p, ' '); i >= 0 {
		return p[i+1:]
	}
	return ""
}

// hint is advice for one kind of error.
type hint struct {
	// section is the heading of docs/TROUBLESHOOTING.md that explains it,
	// as its anchor.
	section string
	// advice returns the advice for an error message of the command
	// (its path, e.g. "train"), or "" when the hint does not apply.
	advice func(command, msg string) string
}

// hintFor returns the first hint that applies to err, with the section
// of the troubleshooting guide to read.
func hintFor(command string, err error) string {
	if err == nil {
		return ""
	}
	msg := err.Error()
	for _, h := range hints {
		if a := h.advice(command, msg); a != "" {
			return a + " (" + troubleshootingDoc + "#" + h.section + ")"
		}
	}
	return ""
}

// The texts by which MLX reports a failed allocation: Metal's buffer
// size and resource limits and its command buffer out of memory, the
// CUDA allocator's "cudaMalloc(...) failed: out of memory" and the
// allocators' "[malloc] Unable to allocate N bytes".
var outOfMemoryTexts = []string{
	"[metal::malloc]",
	"[malloc] Unable to allocate",
	"kIOGPUCommandBufferCallbackErrorOutOfMemory",
	"failed: out of memory",
	"CUDA_ERROR_OUT_OF_MEMORY",
	"std::bad_alloc",
}

var (
	nonFiniteRE  = regexp.MustCompile(`(loss|gradient norm) is (NaN|\+Inf|-Inf)`)
	launchRankRE = regexp.MustCompile(`^launch: rank (\d+) (exited with status (\d+)|was killed by signal)`)
)

func containsAny(s string, subs []string) bool {
	for _, sub := range subs {
		if strings.Contains(s, sub) {
			return true
		}
	}
	return false
}

// hints, in the order they are tried.
var hints = []hint{
	{"out-of-memory", func(command, msg string) string {
		switch {
		case !containsAny(msg, outOfMemoryTexts):
			return ""
		case command == "train":
			return "out of memory: lower data.max_seq_length or training.batch_size (raise training.grad_accumulation to keep the batch), " +
				"set training.grad_checkpoint: true, put LoRA on fewer layers (lora.num_layers), or train a 4-bit model"
		case command == "bench":
			return "out of memory: lower --seq or --batch, add --grad-checkpoint, or put LoRA on fewer layers (--lora-layers)"
		}
		return "out of memory: use a 4-bit or smaller model, a shorter prompt or fewer --max-tokens, and quit other programs that use the GPU"
	}},
	{"the-loss-is-nan", func(command, msg string) string {
		if command != "train" || !nonFiniteRE.MatchString(msg) {
			return ""
		}
		return "the training diverged: start a new run (--resume keeps the config) with a lower optimizer.lr, " +
			"optimizer.grad_clip: 1.0 and a few schedule.warmup_steps; with model.dtype f16 use bf16 or f32"
	}},
	{"wrong-chat-template", func(command, msg string) string {
		switch {
		case strings.Contains(msg, "the model has no chat template") && command == "train":
			return "set model.chat_format: llama3 or chatml in the run config (the format the model was fine-tuned with; " +
				"a base model has none), or write the data as {\"text\": ...} records, which need no template"
		case strings.Contains(msg, "(forced) writes the token") && command == "train":
			return "model.chat_format is not this model's chat format: remove it (auto reads the model's own template)"
		case strings.Contains(msg, "(forced) writes the token"):
			return "--chat-format is not this model's chat format: leave it at auto (the model's own template)"
		case strings.Contains(msg, "writes the token") && strings.Contains(msg, "does not have"):
			return "the tokenizer does not match the model's chat template: use the tokenizer files that came with the weights"
		}
		return ""
	}},
	{"a-tokenizer-that-does-not-match-the-model", func(command, msg string) string {
		if !strings.Contains(msg, "tokens but the model's vocab_size is") {
			return ""
		}
		return "the tokenizer files (tokenizer.json, tokenizer_config.json) come from another model: " +
			"use those of the repository the weights came from"
	}},
	{"the-adapter-makes-no-difference-or-does-not-load", func(command, msg string) string {
		if !strings.Contains(msg, "--adapter") || !strings.Contains(msg, "missing tensor model.layers.") {
			return ""
		}
		return "the adapter was trained on a base model with other layers: use the model named in the run's config.yaml (model.path)"
	}},
	{"a-resumed-run-is-refused", func(command, msg string) string {
		switch {
		case strings.Contains(msg, "--set cannot change a resumed run"):
			return "to change settings, start a new run from the old one's config: fungtrain train --config RUN/config.yaml --set output.dir=NEW_DIR --set ..."
		case strings.Contains(msg, "already finished (step"):
			return "to train further, start a new run with a larger training.max_steps (or training.epochs) in its own output.dir"
		case strings.Contains(msg, "no checkpoint found"):
			return "--resume takes a run directory (output.dir) with checkpoints/, written every training.save_every steps and on Ctrl-C"
		}
		return ""
	}},
	{"resuming-with-another-number-of-ranks", func(command, msg string) string {
		if command != "train" || !strings.Contains(msg, "so the run would not resume exactly") {
			return ""
		}
		return "add --set training.batch_size=B, B being the batch per rank named above, so that world size × training.batch_size stays as the checkpoint had it"
	}},
	{"launch-a-rank-fails", func(command, msg string) string {
		m := launchRankRE.FindStringSubmatch(msg)
		switch {
		case m == nil:
			return ""
		case m[3] == "124":
			return fmt.Sprintf("status 124: rank %s gave up waiting at a collective, so another rank died or hangs; its own error is in the lines prefixed [rank %s] above", m[1], m[1])
		}
		return fmt.Sprintf("the rank's own error is in the lines prefixed [rank %s] above", m[1])
	}},
}
