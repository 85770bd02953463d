"""mlx-lm reference computations for fungtrain's lora tests.

Each command reads a JSON object on stdin and prints a JSON object:

  loss MODEL_DIR
      in:  {"inputs": [[id...]...], "targets": [[...]...], "weights": [[...]...]}
      out: {"sum": S, "count": N, "loss": S/N}, the weighted cross-entropy
      of mlx-lm's model, summed with mlx-lm's own loss op
      (nn.losses.cross_entropy), in float32.
  logits MODEL_DIR ADAPTER_DIR
      in:  {"ids": [id...]}
      out: {"shape": [...], "logits": [...]}, after mlx_lm's load_adapters
      and model.eval(), as mlx_lm.load does.
  make-adapter MODEL_DIR OUT_DIR
      in:  {"num_layers": n, "lora_parameters": {...}, "seed": s, "ids": [...]}
      Builds LoRA layers the way `mlx_lm lora` does (freeze, then
      linear_to_lora_layers), gives every lora_b random values, saves
      adapters.safetensors and adapter_config.json the way its trainer
      does, and prints the adapted model's logits for ids.
  train MODEL_DIR ADAPTER_DIR
      in:  {"lr": LR, "batches": [{"tokens": [[id...]...], "lengths": [[offset, length]...]}...]}
      out: {"losses": [...]}: `mlx_lm lora`'s training from the adapter
      (the model frozen, its LoRA layers from adapter_config.json, the
      adapter's weights), with its default optimizer (MLX's optim.Adam:
      no bias correction) and its loss (mlx_lm.tuner.trainer.default_loss,
      whose mask is offset < position ≤ length, 1-based), one update per
      batch, no accumulation; the loss of each batch before its update.

mlx-lm is an implementation nobody on the project wrote, run live on the
same MLX version.
"""
import json
import sys
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
from mlx.utils import tree_flatten, tree_unflatten

from mlx_lm.tuner.trainer import default_loss
from mlx_lm.tuner.utils import linear_to_lora_layers
from mlx_lm.utils import load_adapters, load_model


def logits_of(model, ids):
    out = model(mx.array([ids])).astype(mx.float32)
    mx.eval(out)
    return {"shape": list(out.shape), "logits": out.reshape(-1).tolist()}


def main():
    cmd, model_dir = sys.argv[1], Path(sys.argv[2])
    req = json.load(sys.stdin)
    model, _ = load_model(model_dir)
    if cmd == "loss":
        inputs = mx.array(req["inputs"])
        targets = mx.array(req["targets"])
        weights = mx.array(req["weights"], dtype=mx.float32)
        logits = model(inputs).astype(mx.float32)
        ce = nn.losses.cross_entropy(logits, targets) * weights
        s, n = ce.sum().item(), weights.sum().item()
        out = {"sum": s, "count": n, "loss": s / n}
    elif cmd == "logits":
        model = load_adapters(model, sys.argv[3])
        model.eval()
        out = logits_of(model, req["ids"])
    elif cmd == "make-adapter":
        out_dir = Path(sys.argv[3])
        out_dir.mkdir(parents=True, exist_ok=True)
        mx.random.seed(req["seed"])
        model.freeze()
        linear_to_lora_layers(model, req["num_layers"], req["lora_parameters"])
        new = [
            (name, 0.05 * mx.random.normal(p.shape))
            for name, p in tree_flatten(model.trainable_parameters())
            if name.endswith("lora_b")
        ]
        model.update(tree_unflatten(new))
        model.eval()
        weights = dict(tree_flatten(model.trainable_parameters()))
        mx.save_safetensors(str(out_dir / "adapters.safetensors"), weights)
        # What `mlx_lm lora` writes: its whole argument namespace.
        config = {
            "model": str(model_dir),
            "train": True,
            "fine_tune_type": "lora",
            "optimizer": "adam",
            "data": "data/",
            "seed": 0,
            "num_layers": req["num_layers"],
            "batch_size": 4,
            "iters": 1000,
            "learning_rate": 1e-5,
            "lora_parameters": req["lora_parameters"],
            "mask_prompt": False,
            "max_seq_length": 2048,
            "grad_checkpoint": False,
        }
        with open(out_dir / "adapter_config.json", "w") as f:
            json.dump(config, f, indent=4)
        out = logits_of(model, req["ids"])
        out["tensors"] = sorted(weights)
    elif cmd == "train":
        model.freeze()
        model = load_adapters(model, sys.argv[3])
        model.train()
        opt = optim.Adam(learning_rate=req["lr"])
        loss_value_and_grad = nn.value_and_grad(model, default_loss)
        losses = []
        for b in req["batches"]:
            (loss, _), grad = loss_value_and_grad(model, mx.array(b["tokens"]), mx.array(b["lengths"]))
            opt.update(model, grad)
            mx.eval(model.parameters(), opt.state, loss)
            losses.append(loss.item())
        out = {"losses": losses}
    else:
        raise SystemExit(f"unknown command {cmd}")
    json.dump(out, sys.stdout)


main()
