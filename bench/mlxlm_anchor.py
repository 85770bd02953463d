"""The mlx-lm anchor for fungtrain's side-by-side benchmark.

Trains LoRA with mlx-lm's own trainer (mlx_lm.tuner.trainer.train: its
compiled step, loss, batching, gradient accumulation) and decodes with
mlx-lm's generate_step, on the same model directory fungtrain measures
(a random-init one from `fungtrain init-model`, or its 4-bit copy from
`fungtrain bench quantize`). Prints one JSON object.

Usage: python mlxlm_anchor.py --model DIR [--seq N | --lengths FILE] [--batch B]
           [--grad-accum K] [--warmup W] [--steps S] [--keys qv|all] [--layers 12]
           [--decode-prompt 128 --decode-tokens 128]

--lengths FILE is a length profile from `fungtrain bench lengths --out`:
examples of random token ids with those lengths, whose first `prompt`
tokens are masked (mlx-lm's offsets, as with mask_prompt). Without it,
every example is --seq+1 tokens with every target counted.

--warmup and --steps count optimizer steps (--grad-accum micro-batches
each); --warmup defaults to --steps. The measured window runs from the end
of the last warm-up micro-batch to the end of training, timed around
mlx-lm's own loop (a wrapper around its iterate_batches sees each request
for the next batch, which comes after the previous step's mx.eval). Rates
count non-padding input tokens and loss-counted tokens of the window's
batches (mlx-lm's own report counts one padding target per sequence more;
it is given as reported_tokens_per_sec). The cold start is the time from
this script's start (before mlx is imported) to the end of the first
optimizer step: first_step_seconds, and first_step_unix for a harness that
knows when it launched the process.
"""
import time

T_START = time.time()

import argparse  # noqa: E402
import contextlib  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import mlx.core as mx  # noqa: E402
import mlx.optimizers as optim  # noqa: E402
import numpy as np  # noqa: E402
from mlx.utils import tree_flatten  # noqa: E402
from mlx_lm.generate import generate_step  # noqa: E402
from mlx_lm.tuner import trainer as mlx_trainer  # noqa: E402
from mlx_lm.tuner.trainer import TrainingArgs, TrainingCallback, train  # noqa: E402
from mlx_lm.tuner.utils import linear_to_lora_layers  # noqa: E402
from mlx_lm.utils import load_model  # noqa: E402


def parse_args():
    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True)
    p.add_argument("--seq", type=int, default=1024)
    p.add_argument("--lengths", default="")
    p.add_argument("--max-seq-length", type=int, default=1024)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--grad-accum", type=int, default=1)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=-1)
    p.add_argument("--keys", default="qv")
    p.add_argument("--layers", type=int, default=12)
    p.add_argument("--rank", type=int, default=6)
    p.add_argument("--alpha", type=float, default=8)
    p.add_argument("--dropout", type=float, default=0.1)
    p.add_argument("--grad-checkpoint", action="store_true")
    p.add_argument("--decode-prompt", type=int, default=0)
    p.add_argument("--decode-tokens", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    if a.warmup < 0:
        a.warmup = a.steps
    return a


def make_data(a, vocab, rng):
    """(tokens, offset) pairs, as mlx-lm's datasets yield them with mask_prompt."""
    if a.lengths:
        prof = json.loads(Path(a.lengths).read_text())
        shape = [(min(n, a.max_seq_length), min(p, a.max_seq_length - 1)) for n, p in prof["examples"]]
        max_len = a.max_seq_length
    else:
        # seq+1 tokens give seq inputs; offset 0 counts every target.
        shape = [(a.seq + 1, 0)] * max(a.batch * 4, 8)
        max_len = a.seq + 1
    data = [(rng.integers(0, vocab, n).tolist(), p) for n, p in shape]
    return data, max_len


class Timeline:
    """Wraps mlx-lm's iterate_batches: records when each batch is asked for
    (the previous step has been evaluated by then) and its token counts."""

    def __init__(self):
        self.asked, self.inputs, self.counted = [], [], []

    def iterate_batches(self, *args, **kwargs):
        inner = mlx_trainer.iterate_batches(*args, **kwargs)
        while True:
            t = time.time()
            try:
                batch, lengths = next(inner)
            except StopIteration:
                return
            self.asked.append(t)
            ol = np.array(lengths.tolist())
            self.inputs.append(int((ol[:, 1] - 1).sum()))
            self.counted.append(int((ol[:, 1] - np.maximum(ol[:, 0], 1)).sum()))
            yield batch, lengths


def run_train(a, model, vocab, rng, out):
    model.freeze()
    keys = ["self_attn.q_proj", "self_attn.v_proj"]
    if a.keys == "all":
        keys = [f"self_attn.{k}_proj" for k in "qkvo"] + [f"mlp.{k}_proj" for k in ("gate", "up", "down")]
    layers = min(a.layers, len(model.layers))
    linear_to_lora_layers(model, layers, {"rank": a.rank, "scale": a.alpha / a.rank, "dropout": a.dropout, "keys": keys})
    trainable = sum(v.size for _, v in tree_flatten(model.trainable_parameters()))
    data, max_len = make_data(a, vocab, rng)
    reports = []

    class CB(TrainingCallback):
        def on_train_loss_report(self, info):
            reports.append(info)

    accum = a.grad_accum
    iters = accum * (a.warmup + a.steps)
    tl = Timeline()
    args = TrainingArgs(batch_size=a.batch, iters=iters, steps_per_report=iters, steps_per_eval=10**9,
                        steps_per_save=10**9, max_seq_length=max_len, grad_checkpoint=a.grad_checkpoint,
                        grad_accumulation_steps=accum,
                        adapter_file=str(Path("/tmp") / f"mlxlm_anchor_{int(T_START)}_adapters.safetensors"))
    mx.reset_peak_memory()
    t0 = time.time()
    with contextlib.redirect_stdout(sys.stderr):  # mlx-lm's progress display; stdout is the JSON
        train(model, optim.AdamW(learning_rate=1e-5, weight_decay=0.0), data, None, args,
              training_callback=CB(), iterate_batches=tl.iterate_batches)
    t_end = time.time()
    Path(args.adapter_file).unlink(missing_ok=True)
    # The end of micro-batch k is when batch k+1 was asked for; the last
    # one ends when train() returns.
    ends = tl.asked[1:iters] + [t_end]
    first = ends[accum - 1]
    r = {"seq": 0 if a.lengths else a.seq, "lengths": a.lengths, "batch": a.batch, "grad_accum": accum,
         "warmup": a.warmup, "steps": a.steps, "keys": keys, "layers": layers, "trainable_params": trainable,
         "first_step_seconds": first - T_START, "first_step_unix": first, "setup_seconds": t0 - T_START,
         "peak_memory_gib": mx.get_peak_memory() / 2**30, "wall_seconds": t_end - t0}
    if a.steps > 0:
        w = accum * a.warmup
        start = ends[w - 1] if w > 0 else t0
        el = t_end - start
        inputs, counted = sum(tl.inputs[w:iters]), sum(tl.counted[w:iters])
        r.update({"step_seconds": el / a.steps, "steps_per_sec": a.steps / el, "tokens_per_sec": inputs / el,
                  "counted_tokens_per_sec": counted / el, "loss": reports[-1]["train_loss"] if reports else None,
                  "reported_tokens_per_sec": reports[-1]["tokens_per_second"] if reports else None})
    out["train"] = r


def run_decode(a, model, vocab, rng, out):
    prompt = mx.array(rng.integers(0, vocab, a.decode_prompt).tolist())
    greedy = lambda logits: mx.argmax(logits, axis=-1)  # noqa: E731
    for _ in generate_step(prompt, model, max_tokens=a.decode_tokens, sampler=greedy):
        pass  # warm-up over the whole length, as fungtrain bench does
    mx.reset_peak_memory()
    t0 = time.perf_counter()
    n, t1 = 0, t0
    for _tok, _ in generate_step(prompt, model, max_tokens=a.decode_tokens, sampler=greedy):
        if n == 0:
            t1 = time.perf_counter()
        n += 1
    t2 = time.perf_counter()
    out["generate"] = {"prompt_tokens": a.decode_prompt, "generated_tokens": n,
                       "prefill_tokens_per_sec": a.decode_prompt / (t1 - t0),
                       "decode_tokens_per_sec": (n - 1) / (t2 - t1) if n > 1 else 0,
                       "peak_memory_gib": mx.get_peak_memory() / 2**30}


def main():
    a = parse_args()
    out = {"mlx": mx.__version__, "device": str(mx.default_device()), "start_unix": T_START}
    model, config = load_model(Path(a.model))
    out["quantization"] = config.get("quantization")
    vocab = config["vocab_size"]
    rng = np.random.default_rng(a.seed)
    if a.steps > 0 or a.warmup > 0:
        run_train(a, model, vocab, rng, out)
    if a.decode_tokens > 0:
        if a.steps > 0 or a.warmup > 0:
            model, config = load_model(Path(a.model))
        run_decode(a, model, vocab, rng, out)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
