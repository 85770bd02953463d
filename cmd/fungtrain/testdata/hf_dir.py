"""Loads HF model directories the way transformers users do (tokenizer,
config and generation config; no weights, which need PyTorch), and lists a
GGUF file's special tokens with gguf-py, for fungtrain's fuse tests.

Request (JSON on stdin): {"dirs": [D, ...], "text": T, "gguf": PATH or null}
Answer: {"dirs": [{"class", "bos", "eos", "pad", "unk", "bos_id", "eos_id",
"ids", "rms_norm_eps", "gen_eos", "gen_bos"}], "gguf": {"bos", "eos", "pad", "unk"}}
"""
import json
import sys

from transformers import AutoConfig, AutoTokenizer, GenerationConfig


def describe(d, text):
    tok = AutoTokenizer.from_pretrained(d)
    cfg = AutoConfig.from_pretrained(d)
    try:
        gen = GenerationConfig.from_pretrained(d)
    except OSError:  # no generation_config.json
        gen = GenerationConfig()
    return {
        "class": type(tok).__name__,
        "bos": tok.bos_token, "eos": tok.eos_token, "pad": tok.pad_token, "unk": tok.unk_token,
        "bos_id": tok.bos_token_id, "eos_id": tok.eos_token_id,
        "ids": tok(text)["input_ids"],
        "rms_norm_eps": cfg.rms_norm_eps,
        "gen_eos": gen.eos_token_id, "gen_bos": gen.bos_token_id,
    }


def gguf_specials(path):
    from gguf import GGUFReader
    r = GGUFReader(path)
    f = r.fields
    tokens = f["tokenizer.ggml.tokens"]
    def tok(key):
        if key not in f:
            return None
        i = int(f[key].contents())
        return bytes(tokens.parts[tokens.data[i]]).decode("utf-8")
    return {k: tok(f"tokenizer.ggml.{name}_token_id") for k, name in
            [("bos", "bos"), ("eos", "eos"), ("pad", "padding"), ("unk", "unknown")]}


def main():
    req = json.load(sys.stdin)
    ans = {"dirs": [describe(d, req["text"]) for d in req["dirs"]]}
    if req.get("gguf"):
        ans["gguf"] = gguf_specials(req["gguf"])
    json.dump(ans, sys.stdout)


if __name__ == "__main__":
    main()
