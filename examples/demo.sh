#!/usr/bin/env bash
# examples/demo.sh — the fungtrain demo, run by `./build.sh demo` after the
# build and the test-asset set-up (SmolLM2-135M in third_party/models).
#
#   1. fine-tunes SmolLM2-135M with LoRA on examples/fung-sample
#      (examples/fung-sample.yaml) into runs/demo, from scratch;
#   2. evaluates base and adapter on the test split (loss, and answers to a
#      few held-out questions): runs/demo/eval.json and eval.md;
#   3. renders runs/demo/report.html;
#   4. prints the val loss before and after, tokens/sec, peak memory, and one
#      test question answered by the base model and by the adapter.
#
# Run from the repository root. Environment knobs:
#   DEMO_DIR         run directory (default runs/demo; removed first)
#   DEMO_N           held-out questions to generate answers for (default 3)
#   DEMO_MAX_TOKENS  max tokens per generated answer (default 200)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

BIN=bin/fungtrain
CONFIG=examples/fung-sample.yaml
MODEL=third_party/models/SmolLM2-135M-Instruct.Q4_1.gguf
DATA=examples/fung-sample
RUN="${DEMO_DIR:-runs/demo}"
N="${DEMO_N:-3}"
MAX_TOKENS="${DEMO_MAX_TOKENS:-200}"

die() { printf 'demo: %s\n' "$*" >&2; exit 1; }
[ -x "$BIN" ] || die "$BIN not found: run ./build.sh build first"
[ -f "$MODEL" ] || die "$MODEL not found: run ./build.sh setup (or ./build.sh demo) first"
command -v python3 >/dev/null 2>&1 || die "python3 is required to print the summary"

t0=$SECONDS
phase() { printf '\n--- %s\n' "$*"; }
took() { printf '    (%ss)\n' $((SECONDS - $1)); }

case "$RUN" in ""|/|.|..|./|../) die "DEMO_DIR=$RUN: refusing to remove it" ;; esac
rm -rf "$RUN"

phase "train: $CONFIG -> $RUN"
t=$SECONDS
"$BIN" train --config "$CONFIG" --set "output.dir=$RUN"
took $t

phase "eval: base vs adapter on the test split ($N questions, up to $MAX_TOKENS tokens each)"
t=$SECONDS
"$BIN" eval --model "$MODEL" --adapter "$RUN" --data "$DATA" --split test --n "$N" --max-tokens "$MAX_TOKENS"
took $t

phase "report"
"$BIN" report "$RUN" --eval "$RUN/eval.json" --out "$RUN/report.html"

phase "summary"
python3 - "$RUN" $((SECONDS - t0)) <<'PY'
import json, os, shlex, shutil, sys, textwrap

run, elapsed = sys.argv[1], int(sys.argv[2])
with open(os.path.join(run, "summary.json")) as f:
    s = json.load(f)
with open(os.path.join(run, "eval.json")) as f:
    e = json.load(f)

before, after = s["initial_val_loss"], s["final_val_loss"]
print(f"val loss:     {before:.4f} -> {after:.4f}  ({after - before:+.4f} nats; "
      f"best {s['best_val_loss']:.4f} at step {s['best_step']})")
loss = e.get("loss") or {}
if loss.get("base") and loss.get("adapter"):
    b, a = loss["base"], loss["adapter"]
    print(f"test loss:    {b['loss']:.4f} -> {a['loss']:.4f}  "
          f"(perplexity {b['perplexity']:.2f} -> {a['perplexity']:.2f}, base model -> adapter)")
print(f"training:     {s['steps']} steps, {s.get('input_tokens', 0)} input tokens "
      f"({s['trained_tokens']} of them answer tokens the loss counts) in {s['seconds']:.0f}s")

print(f"tokens/sec:   {s['tokens_per_sec']:.0f} input ({s.get('trained_tokens_per_sec', 0):.0f} trained) tokens/s "
      f"in the training steps ({s.get('train_seconds', 0):.0f}s of the {s['seconds']:.0f}s run; "
      f"the rest is validation and checkpoints)")
print(f"peak memory:  {s['peak_memory_gb']:.2f} GB")
summ = e.get("summary") or {}
if summ.get("base") and summ.get("adapter"):
    b, a = summ["base"], summ["adapter"]
    print(f"format:       markdown format match {b['format_rate']:.0%} -> {a['format_rate']:.0%}, "
          f"bold {b['bold_rate']:.0%} -> {a['bold_rate']:.0%}, lists {b['list_rate']:.0%} -> {a['list_rate']:.0%}, "
          f"ROUGE-L {b['mean_rouge_l']:.3f} -> {a['mean_rouge_l']:.3f}  (over {a['n']} test questions)")

samples = [x for x in e.get("samples") or [] if x.get("base") and x.get("adapter")]
if samples:
    x = samples[0]
    width = max(80, min(shutil.get_terminal_size((120, 40)).columns, 140))
    col = (width - 3) // 2
    max_lines = 28

    def wrap(text):
        lines = []
        for para in text.strip().splitlines():
            lines.extend(textwrap.wrap(para, col) or [""])
        if len(lines) > max_lines:
            lines = lines[:max_lines - 1] + ["[...]"]
        return lines

    def tail(g):
        return f"{g['tokens']} tokens, " + ("ended with EOS" if g.get("hit_eos") else "hit max tokens")

    print()
    print(f"test question ({x['id']}):")
    for line in textwrap.wrap(x["question"], width):
        print("  " + line)
    left, right = wrap(x["base"]["text"]), wrap(x["adapter"]["text"])
    print()
    print(f"{'BASE MODEL':<{col}} | ADAPTER")
    print(f"{'(' + tail(x['base']) + ')':<{col}} | ({tail(x['adapter'])})")
    print("-" * col + "-+-" + "-" * col)
    for i in range(max(len(left), len(right))):
        l = left[i] if i < len(left) else ""
        r = right[i] if i < len(right) else ""
        print(f"{l:<{col}} | {r}")

print()
print(f"report:   {os.path.join(run, 'report.html')}")
print(f"eval:     {os.path.join(run, 'eval.md')}  (and eval.json)")
print(f"adapter:  {run}/adapters.safetensors + adapter_config.json  (best by val loss: {run}/best/)")
system = ""
with open("examples/fung-sample/test.jsonl") as f:
    for m in json.loads(f.readline()).get("messages", []):
        if m.get("role") == "system":
            system = m["content"]
cmd = ["bin/fungtrain", "generate", "--model", "third_party/models/SmolLM2-135M-Instruct.Q4_1.gguf",
       "--adapter", run] + (["--system", system] if system else []) + ["--prompt", "What breaks a fast?"]
print("try it:   " + shlex.join(cmd))
print(f"demo took {elapsed // 60}m{elapsed % 60:02d}s")
PY
