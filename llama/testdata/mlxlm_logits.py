"""Print mlx-lm's logits for a model directory and token ids, as JSON.

Usage: python mlxlm_logits.py MODEL_DIR ID,ID,... [ADAPTER_DIR]
Used by fungtrain's parity tests: mlx-lm is an implementation nobody on the
project wrote, run live on the same MLX version.
"""
import json
import sys

import mlx.core as mx
from pathlib import Path

from mlx_lm.utils import load_adapters, load_model

model_dir, ids = sys.argv[1], [int(t) for t in sys.argv[2].split(",")]
adapter = sys.argv[3] if len(sys.argv) > 3 else None
model, _ = load_model(Path(model_dir))
if adapter:
    model = load_adapters(model, adapter)
model.eval()  # MLX modules start in training mode: dropout would be on
logits = model(mx.array([ids]))
logits = logits.astype(mx.float32)
mx.eval(logits)
json.dump({"shape": list(logits.shape), "logits": logits.reshape(-1).tolist()}, sys.stdout)
