#!/usr/bin/env python3
"""Checks fungtrain's PEFT export and fused HF directory with PyTorch,
transformers and PEFT (run it on a machine that has them; no network).

The bundle is prepared on the development machine by bench/peft_prepare.sh:
  base/          HF-format base model (small random Llama, SmolLM2 vocabulary and tokenizer)
  adapter/       a fungtrain LoRA adapter on every linear layer
  peft/          that adapter written by `fungtrain export peft`
  fused/         base + adapter written by `fungtrain fuse --dtype f32`
  expect.json    prompts (token ids), fungtrain's logit files and greedy tokens
  logitsN.f32    fungtrain's float32 logits of the base with the adapter

Checks, each printed as PASS or FAIL with its figures:
  1. PEFT: PeftModel.from_pretrained(base, peft) gives fungtrain's logits
     (max |diff| <= logit_tol), and the base alone does not (negative control:
     its difference is over 10x the tolerance).
  2. Fused: AutoModelForCausalLM on fused/ gives fungtrain's logits, and its
     greedy continuation of prompt 0 is fungtrain's (a difference is allowed
     only at a near tie, top-2 gap < 1e-3, shown).
  3. Tokenizer: AutoTokenizer on fused/ reports the special tokens (bos, eos,
     pad, unk) and token ids of base/.
Exit status 0 when every check passes.

  python bench/peft_check.py BUNDLE [--device cuda|cpu]
"""
import argparse
import json
import os
import sys

import numpy as np
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

RESULTS = []


def report(name, ok, detail):
    RESULTS.append(ok)
    print(f"{'PASS' if ok else 'FAIL'} {name}: {detail}", flush=True)


def load(path, device):
    try:
        m = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    except TypeError:  # transformers 4.x spells it torch_dtype
        m = AutoModelForCausalLM.from_pretrained(path, torch_dtype=torch.float32)
    return m.to(device).eval()


def logits(model, ids, device):
    with torch.no_grad():
        out = model(torch.tensor([ids], device=device)).logits[0]
    return out.float().cpu().numpy()


def greedy(model, ids, n, device):
    seq, gaps = list(ids), []
    for _ in range(n):
        row = logits(model, seq, device)[-1]
        top = np.argsort(row)[::-1][:2]
        gaps.append(float(row[top[0]] - row[top[1]]))
        seq.append(int(top[0]))
    return seq[len(ids):], gaps


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bundle")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    a = ap.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False  # float32 products, as fungtrain's
    torch.backends.cudnn.allow_tf32 = False
    b = a.bundle
    exp = json.load(open(os.path.join(b, "expect.json")))
    tol = float(exp["logit_tol"])
    want = []
    for p in exp["prompts"]:
        w = np.fromfile(os.path.join(b, p["logits"]), dtype="<f4").reshape(len(p["ids"]), p["vocab"])
        want.append(w)
    print(f"torch {torch.__version__} on {a.device}; tolerance {tol}", flush=True)

    base = load(os.path.join(b, "base"), a.device)
    base_diff = max(float(np.abs(logits(base, p["ids"], a.device) - w).max()) for p, w in zip(exp["prompts"], want))
    model = PeftModel.from_pretrained(base, os.path.join(b, "peft")).to(a.device).eval()
    d = max(float(np.abs(logits(model, p["ids"], a.device) - w).max()) for p, w in zip(exp["prompts"], want))
    report("PEFT adapter on the base", d <= tol and base_diff > 10 * tol,
           f"max |logit diff| vs fungtrain {d:.3g} (tolerance {tol}); base without the adapter {base_diff:.3g} (must exceed {10 * tol:.3g})")
    del model, base

    fused = load(os.path.join(b, "fused"), a.device)
    d = max(float(np.abs(logits(fused, p["ids"], a.device) - w).max()) for p, w in zip(exp["prompts"], want))
    report("fused directory logits", d <= tol, f"max |logit diff| vs fungtrain {d:.3g} (tolerance {tol})")
    got, gaps = greedy(fused, exp["prompts"][0]["ids"], len(exp["greedy"]), a.device)
    bad = [i for i, (g, e) in enumerate(zip(got, exp["greedy"])) if g != e]
    ok = not bad or gaps[bad[0]] < 1e-3
    detail = "identical" if not bad else f"first difference at step {bad[0]} (transformers {got[bad[0]]}, fungtrain {exp['greedy'][bad[0]]}, top-2 gap {gaps[bad[0]]:.3g})"
    report("fused directory greedy tokens", ok, f"{len(got)} tokens {detail}")

    src = AutoTokenizer.from_pretrained(os.path.join(b, "base"))
    tok = AutoTokenizer.from_pretrained(os.path.join(b, "fused"))
    s = [src.bos_token, src.eos_token, src.pad_token, src.unk_token]
    f = [tok.bos_token, tok.eos_token, tok.pad_token, tok.unk_token]
    same_ids = src(exp["text"])["input_ids"] == tok(exp["text"])["input_ids"]
    report("fused directory tokenizer", s == f and f[0] is not None and same_ids,
           f"bos/eos/pad/unk {f} (base {s}); token ids equal {same_ids}")

    print("PASS" if all(RESULTS) else "FAIL", flush=True)
    sys.exit(0 if all(RESULTS) else 1)


if __name__ == "__main__":
    main()
