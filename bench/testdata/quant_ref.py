"""Reference checks for `fungtrain bench quantize`, with code nobody on the
project wrote: mlx-lm (MLX-community checkpoints) and llama.cpp's gguf-py
(GGUF files). Each command prints one JSON object.

  logits MODEL_DIR          stdin {"ids": [...]}: mlx-lm's load_model and
                            forward pass; out {"shape", "logits"} (float32)
  gguf GGUF_FILE DENSE_DIR  reads GGUF_FILE with gguf.GGUFReader and, for
                            every tensor, quantizes the dense checkpoint's
                            matching tensor with gguf.quants.quantize (q/k
                            rows permuted as llama.cpp's converter permutes
                            them) and compares the bytes; out {"metadata",
                            "tensors": {name: {"type", "shape", "equal"}},
                            "rope_freqs", "rope_freqs_ref",
                            "q_equal_unpermuted"}
"""
import json
import math
import sys
from pathlib import Path

import mlx.core as mx
import numpy as np


def logits(model_dir):
    from mlx_lm.utils import load_model

    ids = json.load(sys.stdin)["ids"]
    model, _ = load_model(Path(model_dir))
    out = model(mx.array([ids])).astype(mx.float32)
    mx.eval(out)
    return {"shape": list(out.shape), "logits": out.reshape(-1).tolist()}


def llama_cpp_permute(w, n_head):
    # convert_hf_to_gguf.py's LlamaModel.permute
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


HF = {"attn_norm": "input_layernorm", "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj",
      "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj", "ffn_norm": "post_attention_layernorm",
      "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj"}


def hf_name(name):
    base = name[: -len(".weight")]
    if base == "token_embd":
        return "model.embed_tokens.weight"
    if base == "output_norm":
        return "model.norm.weight"
    if base == "output":
        return "lm_head.weight"
    _, layer, mod = base.split(".")
    return f"model.layers.{layer}.{HF[mod]}.weight"


def field_value(f):
    from gguf import GGUFValueType

    if f.types[0] == GGUFValueType.STRING:
        return bytes(f.parts[f.data[0]]).decode()
    return f.parts[f.data[0]].tolist()[0]


def gguf_check(path, dense_dir):
    from gguf import GGMLQuantizationType, GGUFReader
    from gguf.quants import quantize

    cfg = json.loads((Path(dense_dir) / "config.json").read_text())
    dense = {k: np.array(v.astype(mx.float32)) for k, v in mx.load(str(Path(dense_dir) / "model.safetensors")).items()}
    r = GGUFReader(path)
    meta = {k: field_value(f) for k, f in r.fields.items() if not k.startswith("GGUF.")}
    heads = {"attn_q": cfg["num_attention_heads"], "attn_k": cfg["num_key_value_heads"]}
    out = {"metadata": meta, "tensors": {}}
    for t in r.tensors:
        if t.name == "rope_freqs.weight":
            out["rope_freqs"] = np.array(t.data, dtype=np.float32).tolist()
            continue
        w = dense[hf_name(t.name)]
        mod = t.name.split(".")[-2]
        if mod in heads:
            w = llama_cpp_permute(w, heads[mod])
        qtype = GGMLQuantizationType(t.tensor_type)
        want = quantize(w.astype(np.float32), qtype)
        got = np.array(t.data)
        out["tensors"][t.name] = {"type": qtype.name, "shape": [int(x) for x in t.shape],
                                  "equal": bool(got.tobytes() == want.tobytes())}
        if t.name == "blk.0.attn_q.weight":
            plain = quantize(dense[hf_name(t.name)].astype(np.float32), qtype)
            out["q_equal_unpermuted"] = bool(got.tobytes() == plain.tobytes())
    rs = cfg.get("rope_scaling") or {}
    if rs.get("rope_type") == "llama3":
        # convert_hf_to_gguf.py's LlamaModel.generate_extra_tensors
        base, dim = cfg["rope_theta"], cfg["head_dim"]
        freqs = 1.0 / (base ** (np.arange(0, dim, 2, dtype=np.float32) / dim))
        low = rs["original_max_position_embeddings"] / rs["low_freq_factor"]
        high = rs["original_max_position_embeddings"] / rs["high_freq_factor"]
        ref = []
        for f in freqs:
            wavelen = 2 * math.pi / f
            if wavelen < high:
                ref.append(1)
            elif wavelen > low:
                ref.append(rs["factor"])
            else:
                smooth = (rs["original_max_position_embeddings"] / wavelen - rs["low_freq_factor"]) / (
                    rs["high_freq_factor"] - rs["low_freq_factor"])
                ref.append(1 / ((1 - smooth) / rs["factor"] + smooth))
        out["rope_freqs_ref"] = [float(x) for x in ref]
    return out


if __name__ == "__main__":
    if sys.argv[1] == "logits":
        res = logits(sys.argv[2])
    elif sys.argv[1] == "gguf":
        res = gguf_check(sys.argv[2], sys.argv[3])
    else:
        sys.exit(f"unknown command {sys.argv[1]}")
    print(json.dumps(res))
