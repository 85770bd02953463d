"""Reads and writes PEFT adapter files with the safetensors package (not
fungtrain's writer), for lora's PEFT tests.

Request (JSON on stdin):
  {"op": "read", "dir": D}
      -> {"config": adapter_config.json, "tensors": {name: {"dtype", "shape", "data": [flat values]}}}
  {"op": "write", "dir": D, "config": {...}, "tensors": {name: {"shape": [...], "data": [...]}}, "file": NAME}
      -> {"ok": true}   (float32 tensors; file defaults to adapter_model.safetensors)
"""
import json
import os
import sys

import numpy as np
from safetensors.numpy import load_file, save_file


def main():
    req = json.load(sys.stdin)
    d = req["dir"]
    if req["op"] == "read":
        with open(os.path.join(d, "adapter_config.json")) as f:
            cfg = json.load(f)
        ts = load_file(os.path.join(d, "adapter_model.safetensors"))
        out = {k: {"dtype": str(v.dtype), "shape": list(v.shape), "data": v.astype(np.float64).ravel().tolist()} for k, v in ts.items()}
        json.dump({"config": cfg, "tensors": out}, sys.stdout)
        return
    os.makedirs(d, exist_ok=True)
    ts = {k: np.asarray(v["data"], dtype=np.float32).reshape(v["shape"]) for k, v in req["tensors"].items()}
    save_file(ts, os.path.join(d, req.get("file") or "adapter_model.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(d, "adapter_config.json"), "w") as f:
        json.dump(req["config"], f)
    json.dump({"ok": True}, sys.stdout)


if __name__ == "__main__":
    main()
