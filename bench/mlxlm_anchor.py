"""The mlx-lm anchor for fungtrain's side-by-side benchmark.

Trains LoRA with mlx-lm's own trainer (mlx_lm.tuner.trainer.train: its
compiled step, loss, batching and reporting) and decodes with mlx-lm's
generate_step, on the same random-init model directory fungtrain measures.
Prints one JSON object.

Usage: python mlxlm_anchor.py --model DIR --seq N --batch B --steps S
                              [--keys qv|all] [--layers 12] [--decode-prompt 128 --decode-tokens 128]
"""
import argparse
import json
import time
from pathlib import Path

import mlx.core as mx
import mlx.optimizers as optim
import numpy as np
from mlx_lm.generate import generate_step
from mlx_lm.tuner.trainer import TrainingArgs, TrainingCallback, train
from mlx_lm.tuner.utils import linear_to_lora_layers
from mlx_lm.utils import load_model

p = argparse.ArgumentParser()
p.add_argument("--model", required=True)
p.add_argument("--seq", type=int, default=1024)
p.add_argument("--batch", type=int, default=1)
p.add_argument("--steps", type=int, default=10)
p.add_argument("--keys", default="qv")
p.add_argument("--layers", type=int, default=12)
p.add_argument("--rank", type=int, default=6)
p.add_argument("--alpha", type=float, default=8)
p.add_argument("--dropout", type=float, default=0.1)
p.add_argument("--grad-checkpoint", action="store_true")
p.add_argument("--decode-prompt", type=int, default=0)
p.add_argument("--decode-tokens", type=int, default=0)
a = p.parse_args()

out = {"mlx": mx.__version__, "device": str(mx.default_device())}
model, config = load_model(Path(a.model))
vocab = config["vocab_size"]
rng = np.random.default_rng(0)

if a.steps > 0:
    model.freeze()
    keys = ["self_attn.q_proj", "self_attn.v_proj"]
    if a.keys == "all":
        keys = [f"self_attn.{k}_proj" for k in "qkvo"] + [f"mlp.{k}_proj" for k in ("gate", "up", "down")]
    layers = min(a.layers, len(model.layers))
    linear_to_lora_layers(model, layers, {"rank": a.rank, "scale": a.alpha / a.rank, "dropout": a.dropout, "keys": keys})
    trainable = sum(v.size for _, v in __import__("mlx.utils").utils.tree_flatten(model.trainable_parameters()))
    # Sequences of seq+1 tokens give seq inputs; offset 0 counts every target.
    data = [(rng.integers(0, vocab, a.seq + 1).tolist(), 0) for _ in range(max(a.batch * 4, 8))]
    reports = []

    class CB(TrainingCallback):
        def on_train_loss_report(self, info):
            reports.append(info)

    mx.reset_peak_memory()
    # Two report windows of `steps` each: the first is the warm-up (compile,
    # allocator growth) and is discarded.
    args = TrainingArgs(batch_size=a.batch, iters=2 * a.steps, steps_per_report=a.steps, steps_per_eval=10**9,
                        steps_per_save=10**9, max_seq_length=a.seq + 1, grad_checkpoint=a.grad_checkpoint,
                        adapter_file=str(Path(a.model) / "anchor_adapters.safetensors"))
    t0 = time.perf_counter()
    train(model, optim.AdamW(learning_rate=1e-5, weight_decay=0.0), data, None, args, training_callback=CB())
    r = reports[-1]
    out["train"] = {"seq": a.seq, "batch": a.batch, "steps": a.steps, "keys": keys, "layers": layers,
                    "trainable_params": trainable, "tokens_per_sec": r["tokens_per_second"],
                    "it_per_sec": r["iterations_per_second"], "step_seconds": 1 / r["iterations_per_second"],
                    "peak_memory_gib": mx.get_peak_memory() / 2**30, "loss": r["train_loss"],
                    "wall_seconds": time.perf_counter() - t0}
    Path(args.adapter_file).unlink(missing_ok=True)

if a.decode_tokens > 0:
    if a.steps > 0:
        model, config = load_model(Path(a.model))
    prompt = mx.array(rng.integers(0, vocab, a.decode_prompt).tolist())
    greedy = lambda logits: mx.argmax(logits, axis=-1)
    for _ in generate_step(prompt, model, max_tokens=a.decode_tokens, sampler=greedy):
        pass  # warm-up over the whole length, as fungtrain bench does
    mx.reset_peak_memory()
    t0 = time.perf_counter()
    n = 0
    for tok, _ in generate_step(prompt, model, max_tokens=a.decode_tokens, sampler=greedy):
        if n == 0:
            t1 = time.perf_counter()
        n += 1
    t2 = time.perf_counter()
    out["generate"] = {"prompt_tokens": a.decode_prompt, "generated_tokens": n,
                       "prefill_tokens_per_sec": a.decode_prompt / (t1 - t0),
                       "decode_tokens_per_sec": (n - 1) / (t2 - t1) if n > 1 else 0,
                       "peak_memory_gib": mx.get_peak_memory() / 2**30}
print(json.dumps(out))
