"""Runs a GGUF file in llama.cpp (llama-cpp-python) for fungtrain's export tests.

Request (JSON on stdin):
  {"model": PATH, "n_ctx": N, "kv_f32": true|false (the KV cache in float32, not llama.cpp's float16),
   "prompts": [{"ids": [...], "rows": [...], "out": PATH}      # raw float32 logits of those positions
              | {"ids": [...], "targets": {"pos": [...], "ids": [...]}}],  # log-probabilities
   "tokenize": ["text", ...]}                                   # ids, special tokens parsed
Answer (JSON on stdout): {"logprobs": [[...] per prompt or null], "tokens": [[...]], "meta": {...}}
"""
import json
import sys

import numpy as np
from llama_cpp import Llama


def main():
    req = json.load(sys.stdin)
    n_ctx = int(req.get("n_ctx", 512))
    kv = {"type_k": 0, "type_v": 0} if req.get("kv_f32") else {}  # GGML_TYPE_F32
    llm = Llama(model_path=req["model"], n_ctx=n_ctx, n_batch=n_ctx, n_ubatch=n_ctx,
                logits_all=True, verbose=False, n_threads=2, n_threads_batch=2, seed=0, **kv)
    ans = {"logprobs": [], "tokens": [], "meta": {"n_vocab": llm.n_vocab(), "bos": llm.token_bos(), "eos": llm.token_eos()}}
    for p in req.get("prompts") or []:
        ids = p["ids"]
        llm.reset()
        llm.eval(ids)
        scores = np.asarray(llm.scores[: len(ids)], dtype=np.float32)
        if "out" in p:
            scores[p["rows"]].astype("<f4").tofile(p["out"])
        lp = None
        if "targets" in p:
            pos, tgt = p["targets"]["pos"], p["targets"]["ids"]
            rows = scores[pos].astype(np.float64)
            rows -= rows.max(axis=1, keepdims=True)
            logz = np.log(np.exp(rows).sum(axis=1))
            lp = (rows[np.arange(len(tgt)), tgt] - logz).tolist()
        ans["logprobs"].append(lp)
    for text in req.get("tokenize") or []:
        ans["tokens"].append(llm.tokenize(text.encode("utf-8"), add_bos=False, special=True))
    json.dump(ans, sys.stdout)


if __name__ == "__main__":
    main()
