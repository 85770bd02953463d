"""Writes a small random Llama (the tiny shape: 4 layers, hidden 128, GQA)
with a given tokenizer's vocabulary, in HF format, for trying the serve
benchmark on a CPU: bench/serve.sh OUT --model DIR.

Usage: tiny_model.py OUT_DIR TOKENIZER_DIR
"""
import json
import shutil
import sys
from pathlib import Path

import mlx.core as mx

out, tok = Path(sys.argv[1]), Path(sys.argv[2])
out.mkdir(parents=True, exist_ok=True)
vocab = len(json.load(open(tok / "tokenizer.json"))["model"]["vocab"]) + 256
cfg = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 128, "num_hidden_layers": 4,
       "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 32, "intermediate_size": 352,
       "vocab_size": vocab, "rms_norm_eps": 1e-5, "rope_theta": 500000.0, "tie_word_embeddings": True,
       "max_position_embeddings": 4096, "torch_dtype": "float32"}
mx.random.seed(1)
w = {"model.embed_tokens.weight": mx.random.normal((vocab, 128)) * 0.02, "model.norm.weight": mx.ones((128,))}
for i in range(4):
    p = f"model.layers.{i}."
    for name, shape in [("self_attn.q_proj", (128, 128)), ("self_attn.k_proj", (64, 128)), ("self_attn.v_proj", (64, 128)),
                        ("self_attn.o_proj", (128, 128)), ("mlp.gate_proj", (352, 128)), ("mlp.up_proj", (352, 128)),
                        ("mlp.down_proj", (128, 352))]:
        w[p + name + ".weight"] = mx.random.normal(shape) * 0.02
    w[p + "input_layernorm.weight"] = mx.ones((128,))
    w[p + "post_attention_layernorm.weight"] = mx.ones((128,))
mx.save_safetensors(str(out / "model.safetensors"), w, metadata={"format": "mlx"})
json.dump(cfg, open(out / "config.json", "w"), indent=1)
for f in ("tokenizer.json", "tokenizer_config.json"):
    shutil.copy(tok / f, out / f)
print(out)
