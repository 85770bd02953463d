"""The HF transformers + PEFT anchor for fungtrain's side-by-side benchmark.

Extends the shared anchor (/work/shared/anchors/peft_anchor.py): a
Llama-3.2-3B-shaped model, random init, bf16, one GPU; LoRA r=6, alpha 8,
dropout 0.1 on the last 12 layers; AdamW lr 1e-5, no weight decay; a plain
training loop (forward, masked cross-entropy, loss/accum backward, a step
every accum micro-batches). Sections (--sections, comma-separated):

  realwork  the mission default on a length profile (--lengths, from
            `fungtrain bench lengths --out`): batch 1, --grad-accum
            micro-batches per optimizer step, the first `prompt` tokens of
            each example masked; --warmup then --steps optimizer steps.
  seq1024   random --seq-token sequences, batch 1, every target counted,
            accumulation --seq-accum: training tokens/s and peak memory.
  qlora     seq1024 on the base quantized to 4-bit NF4 with bitsandbytes
            (QLoRA, without gradient checkpointing, as fungtrain runs);
            skipped with the reason when bitsandbytes does not import.
  decode    HF generate, greedy, batch 1.

Each example of n tokens is n-1 input tokens whose targets are tokens
1..n-1, as fungtrain counts them; rates count those inputs and the
loss-counted targets. Peak memory is torch.cuda.max_memory_allocated over
the measured steps. Writes one JSON object to --out (and stdout's last
line); a failing section records its traceback and the others still run.

  python peft_anchor.py --sections realwork,seq1024,qlora --lengths L.json --out peft.json
  python peft_anchor.py --self-test      # the data layout, without torch
"""
import time

T_START = time.time()

import argparse  # noqa: E402
import json  # noqa: E402
import random  # noqa: E402
import sys  # noqa: E402
import traceback  # noqa: E402

LLAMA_3B = dict(vocab_size=128256, hidden_size=3072, intermediate_size=8192, num_hidden_layers=28,
                num_attention_heads=24, num_key_value_heads=8, head_dim=128, max_position_embeddings=131072,
                rms_norm_eps=1e-5, rope_theta=500000.0, tie_word_embeddings=True,
                rope_scaling={"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                              "original_max_position_embeddings": 8192, "rope_type": "llama3"})
QV = ["q_proj", "v_proj"]
ALL = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def parse_args(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--sections", default="realwork,seq1024,qlora")
    p.add_argument("--lengths", default="")
    p.add_argument("--max-seq-length", type=int, default=1024)
    p.add_argument("--grad-accum", type=int, default=8)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--seq", type=int, default=1024)
    p.add_argument("--seq-accum", type=int, default=1)
    p.add_argument("--seq-warmup", type=int, default=8)
    p.add_argument("--seq-steps", type=int, default=32)
    p.add_argument("--keys", default="qv")
    p.add_argument("--layers", type=int, default=12)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="")
    p.add_argument("--self-test", action="store_true")
    return p.parse_args(argv)


def plan(shape, count, seed, vocab):
    """count examples (ids, prompt) laid out by shape, a list of (tokens,
    prompt) pairs: shuffled copies of it, epoch after epoch, random ids."""
    rng = random.Random(seed)
    out = []
    while len(out) < count:
        order = list(range(len(shape)))
        rng.shuffle(order)
        for i in order[: count - len(out)]:
            n, prompt = shape[i]
            out.append(([rng.randrange(vocab) for _ in range(n)], prompt))
    return out


def counts(example):
    """Input tokens and loss-counted targets of one example."""
    ids, prompt = example
    return len(ids) - 1, len(ids) - max(prompt, 1)


def read_shape(a):
    prof = json.loads(open(a.lengths).read())
    m = a.max_seq_length
    return [(min(n, m), min(p, m - 1)) for n, p in prof["examples"]]


def self_test():
    shape = [(5, 2), (3, 1), (4, 3)]
    ex = plan(shape, 7, 1, 50)
    assert len(ex) == 7
    assert sorted(len(e[0]) for e in ex[:3]) == [3, 4, 5], "each epoch is a permutation"
    assert all(0 <= t < 50 for e in ex for t in e[0])
    assert [counts(e) for e in [([0] * 5, 2), ([0] * 3, 1), ([0] * 3, 0)]] == [(4, 3), (2, 2), (2, 2)]
    print(json.dumps({"self_test": "ok"}))


class Runner:
    """Builds the model and runs the sections on one GPU."""

    def __init__(self, a):
        import torch
        from transformers import LlamaConfig

        self.torch, self.a = torch, a
        self.cfg = LlamaConfig(**LLAMA_3B)
        self.cfg._attn_implementation = "sdpa"
        self.targets = ALL if a.keys == "all" else QV

    def base(self):
        from transformers import LlamaForCausalLM

        torch = self.torch
        torch.manual_seed(0)
        torch.set_default_dtype(torch.bfloat16)
        with torch.device("cuda"):
            m = LlamaForCausalLM(self.cfg)
        torch.set_default_dtype(torch.float32)
        return m

    def train(self, base, examples, accum, warmup, steps):
        """warmup then steps optimizer steps over examples (batch 1)."""
        import torch.nn.functional as F
        from peft import LoraConfig, get_peft_model

        torch, a = self.torch, self.a
        first = self.cfg.num_hidden_layers - a.layers
        model = get_peft_model(base, LoraConfig(r=6, lora_alpha=8, lora_dropout=0.1, target_modules=self.targets,
                               layers_to_transform=list(range(first, self.cfg.num_hidden_layers)), task_type="CAUSAL_LM"))
        model.train()
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=1e-5, weight_decay=0.0)
        it = iter(examples)
        first_step = None

        def step():
            loss = None
            for _ in range(accum):
                ids, prompt = next(it)
                x = torch.tensor(ids, device="cuda").unsqueeze(0)
                logits = model(input_ids=x[:, :-1]).logits
                y = x[:, 1:].clone()
                y[:, : max(prompt, 1) - 1] = -100
                loss = F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), ignore_index=-100)
                (loss / accum).backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            return loss

        for _ in range(warmup):
            step()
            if first_step is None:
                torch.cuda.synchronize()
                first_step = time.time()
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        window = examples[warmup * accum:(warmup + steps) * accum]
        t = time.perf_counter()
        for _ in range(steps):
            loss = step()
        torch.cuda.synchronize()
        dt = time.perf_counter() - t
        inputs = sum(counts(e)[0] for e in window)
        counted = sum(counts(e)[1] for e in window)
        r = {"targets": self.targets, "lora_layers": a.layers, "grad_accum": accum, "warmup": warmup, "steps": steps,
             "trainable_params": sum(p.numel() for p in params), "tokens_per_sec": inputs / dt,
             "counted_tokens_per_sec": counted / dt, "steps_per_sec": steps / dt, "step_seconds": dt / steps,
             "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30,
             "reserved_memory_gib": torch.cuda.max_memory_reserved() / 2**30, "loss": float(loss),
             "first_step_seconds": (first_step - T_START) if first_step else None}
        model.unload()
        del model, opt
        torch.cuda.empty_cache()
        return r

    def realwork(self, base):
        a = self.a
        n = a.grad_accum * (a.warmup + a.steps)
        ex = plan(read_shape(a), n, a.seed, self.cfg.vocab_size)
        r = self.train(base, ex, a.grad_accum, a.warmup, a.steps)
        r["lengths"] = a.lengths
        return r

    def seq(self, base):
        a = self.a
        n = a.seq_accum * (a.seq_warmup + a.seq_steps)
        ex = plan([(a.seq + 1, 0)], n, a.seed, self.cfg.vocab_size)
        r = self.train(base, ex, a.seq_accum, a.seq_warmup // a.seq_accum, a.seq_steps // a.seq_accum)
        r["seq"] = a.seq
        return r

    def quantize_4bit(self, base):
        """Replaces every block projection by bitsandbytes' NF4 Linear4bit
        (compute in bf16), as transformers' BitsAndBytesConfig(load_in_4bit)
        does; the embedding and the tied LM head stay bf16."""
        import bitsandbytes as bnb

        torch = self.torch
        for layer in base.model.layers:
            for parent in (layer.self_attn, layer.mlp):
                for name, child in list(parent.named_children()):
                    if type(child) is not torch.nn.Linear:
                        continue
                    q = bnb.nn.Linear4bit(child.in_features, child.out_features, bias=child.bias is not None,
                                          compute_dtype=torch.bfloat16, quant_type="nf4")
                    q.weight = bnb.nn.Params4bit(child.weight.data.to("cpu"), requires_grad=False, quant_type="nf4")
                    setattr(parent, name, q.to("cuda"))
                    del child
        base.is_loaded_in_4bit = True
        torch.cuda.empty_cache()
        return base

    def decode(self, base):
        torch = self.torch
        base.eval()
        x = torch.randint(0, self.cfg.vocab_size, (1, 128), device="cuda")
        with torch.no_grad():
            base.generate(x, max_new_tokens=16, do_sample=False, min_new_tokens=16)
            torch.cuda.synchronize()
            t = time.perf_counter()
            base.generate(x, max_new_tokens=256, do_sample=False, min_new_tokens=256)
            torch.cuda.synchronize()
        return {"decode_tokens_per_sec": 256 / (time.perf_counter() - t)}


def main():
    a = parse_args()
    if a.self_test:
        return self_test()
    import torch
    import transformers
    import peft

    out = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "transformers": transformers.__version__,
           "peft": peft.__version__, "start_unix": T_START, "args": vars(a)}
    run = Runner(a)
    sections = [s for s in a.sections.split(",") if s]

    def save():
        # After every section: a crash in a later one (bitsandbytes' native
        # code) must not lose the figures already measured.
        if a.out:
            with open(a.out, "w") as f:
                f.write(json.dumps(out) + "\n")

    def section(name, f):
        t = time.time()
        try:
            out[name] = f()
        except Exception:  # one failing section must not lose the others' figures
            out[name] = {"error": traceback.format_exc()}
        out[name]["section_seconds"] = time.time() - t
        print(name, json.dumps(out[name]), file=sys.stderr, flush=True)
        save()

    base = None
    if any(s in sections for s in ("realwork", "seq1024", "decode")):
        base = run.base()
        out["params"] = sum(p.numel() for p in base.parameters())
    if "realwork" in sections:
        section("realwork", lambda: run.realwork(base))
    if "seq1024" in sections:
        section("seq1024", lambda: run.seq(base))
    if "decode" in sections:
        section("decode", lambda: run.decode(base))
    if "qlora" in sections:
        del base
        torch.cuda.empty_cache()
        try:
            import bitsandbytes

            out["bitsandbytes"] = bitsandbytes.__version__
        except Exception as e:  # the wheel is optional on the GPU machine
            out["qlora"] = {"skipped": f"bitsandbytes does not import: {e!r}"}
        else:
            section("qlora", lambda: run.seq(run.quantize_4bit(run.base())))
    save()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
