"""Where mlx-lm's decode step spends the host thread's time, and how many
MLX ops one step builds: the mlx-lm side of fungtrain's decode analysis
(docs/BENCHMARKS.md, "Decode (issue 17)").

    decode_host.py write DIR [--layers 28]
        writes a random Llama in HF format with the op graph of
        Llama-3.2-3B (28 layers, 24 query and 8 KV heads, llama3 RoPE,
        tied embeddings) but tiny tensors (hidden 192, head_dim 8), so
        that a decode step's cost is its per-op cost, not arithmetic.

    decode_host.py measure --model DIR [--prompt 128] [--tokens 256] [--rounds 3]
        runs mlx-lm's generate_step greedily (warm-up over the whole length
        first) and prints one JSON object: decode tokens/s, and per token
        the milliseconds spent building the graph (the model call and the
        sampler, timed by wrapping them; wall and the thread's CPU time),
        inside mx.async_eval, and the rest (waiting in y.item(), Python); and the ops of one decode
        step's graph, counted by primitive from mx.export_to_dot (on the
        CPU, fast ops without a CPU kernel count as their fallback ops).
"""
import argparse
import collections
import io
import json
import re
import time
from pathlib import Path

import mlx.core as mx
import numpy as np


def write(a):
    out = Path(a.dir)
    out.mkdir(parents=True, exist_ok=True)
    hidden, heads, kv, hd, inter, vocab = 192, 24, 8, 8, 512, 1024
    cfg = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": hidden,
           "num_hidden_layers": a.layers, "num_attention_heads": heads, "num_key_value_heads": kv, "head_dim": hd,
           "intermediate_size": inter, "vocab_size": vocab, "rms_norm_eps": 1e-5, "rope_theta": 500000.0,
           "rope_scaling": {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                            "original_max_position_embeddings": 8192},
           "tie_word_embeddings": True, "max_position_embeddings": 4096, "torch_dtype": a.dtype}
    dt = {"float32": mx.float32, "bfloat16": mx.bfloat16}[a.dtype]
    mx.random.seed(1)
    w = {"model.embed_tokens.weight": mx.random.normal((vocab, hidden)) * 0.02, "model.norm.weight": mx.ones((hidden,))}
    for i in range(a.layers):
        p = f"model.layers.{i}."
        for name, shape in [("self_attn.q_proj", (heads * hd, hidden)), ("self_attn.k_proj", (kv * hd, hidden)),
                            ("self_attn.v_proj", (kv * hd, hidden)), ("self_attn.o_proj", (hidden, heads * hd)),
                            ("mlp.gate_proj", (inter, hidden)), ("mlp.up_proj", (inter, hidden)),
                            ("mlp.down_proj", (hidden, inter))]:
            w[p + name + ".weight"] = mx.random.normal(shape) * 0.02
        w[p + "input_layernorm.weight"] = mx.ones((hidden,))
        w[p + "post_attention_layernorm.weight"] = mx.ones((hidden,))
    mx.save_safetensors(str(out / "model.safetensors"), {k: v.astype(dt) for k, v in w.items()},
                        metadata={"format": "mlx"})
    json.dump(cfg, open(out / "config.json", "w"), indent=1)
    print(out)


class Timed:
    """Wraps a callable and adds up the seconds spent in it, wall and the
    thread's CPU time."""

    def __init__(self, f):
        self.f, self.seconds, self.cpu, self.calls = f, 0.0, 0.0, 0

    def __call__(self, *args, **kwargs):
        t, c = time.perf_counter(), time.thread_time()
        try:
            return self.f(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - t
            self.cpu += time.thread_time() - c
            self.calls += 1


class TimedModel:
    """The model with its __call__ timed; everything else passes through."""

    def __init__(self, model):
        self.model, self.timed = model, Timed(model)

    def __call__(self, *args, **kwargs):
        return self.timed(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.model, name)


def count_ops(model, vocab, prompt_len):
    """The primitives of one decode step's graph at cache length prompt_len."""
    from mlx_lm.models.cache import make_prompt_cache
    cache = make_prompt_cache(model)
    model(mx.array(np.arange(prompt_len) % vocab)[None], cache=cache)
    mx.eval([c.state for c in cache])
    logits = model(mx.array([[1]]), cache=cache)[:, -1, :]
    logprobs = logits - mx.logsumexp(logits, keepdims=True)
    y = mx.argmax(logprobs, axis=-1)
    f = io.StringIO()
    mx.export_to_dot(f, y, logprobs)
    labels = re.findall(r'label ="([^"]+)", shape=rectangle', f.getvalue())
    return collections.Counter(labels)


def measure(a):
    import importlib
    gen = importlib.import_module("mlx_lm.generate")  # the module (the package exports a function of that name)
    from mlx_lm.utils import load_model
    model, config = load_model(Path(a.model))
    vocab = config["vocab_size"]
    rng = np.random.default_rng(0)
    prompt = mx.array(rng.integers(0, vocab, a.prompt).tolist())
    greedy = Timed(lambda logprobs: mx.argmax(logprobs, axis=-1))
    tm = TimedModel(model)
    async_eval = Timed(mx.async_eval)
    gen.mx.async_eval = async_eval  # generate_step looks it up on the module at each call
    rounds = []
    for r in range(a.rounds + 1):  # round 0 is the warm-up
        n, t1 = 0, 0.0
        for _tok, _ in gen.generate_step(prompt, tm, max_tokens=a.tokens, sampler=greedy):
            if n == 0:
                # The decode phase starts after the first token, as in fungtrain.
                t1 = time.perf_counter()
                base = (tm.timed.seconds, greedy.seconds, async_eval.seconds, tm.timed.cpu + greedy.cpu)
            n += 1
        t2 = time.perf_counter()
        steps = n - 1
        build = (tm.timed.seconds - base[0]) + (greedy.seconds - base[1])
        build_cpu = tm.timed.cpu + greedy.cpu - base[3]
        ev = async_eval.seconds - base[2]
        if r > 0:
            rounds.append({"decode_tokens_per_sec": steps / (t2 - t1), "build_ms": 1000 * build / steps,
                           "build_cpu_ms": 1000 * build_cpu / steps,
                           "eval_ms": 1000 * ev / steps, "rest_ms": 1000 * ((t2 - t1) - build - ev) / steps})
    gen.mx.async_eval = async_eval.f
    ops = count_ops(model, vocab, a.prompt)
    out = {"mlx": mx.__version__, "device": str(mx.default_device()), "model": a.model, "rounds": rounds,
           "median": {k: float(np.median([r[k] for r in rounds])) for k in rounds[0]},
           "ops_per_step": sum(ops.values()), "ops": dict(ops.most_common())}
    print(json.dumps(out, indent=1))


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("write")
    w.add_argument("dir")
    w.add_argument("--layers", type=int, default=28)
    w.add_argument("--dtype", default="float32")
    m = sub.add_parser("measure")
    m.add_argument("--model", required=True)
    m.add_argument("--prompt", type=int, default=128)
    m.add_argument("--tokens", type=int, default=256)
    m.add_argument("--rounds", type=int, default=3)
    a = p.parse_args()
    write(a) if a.cmd == "write" else measure(a)


if __name__ == "__main__":
    main()
