"""Reference outputs from Hugging Face's Python libraries for fungtrain's tests.

Reads one JSON request on stdin and writes one JSON answer on stdout.

  {"op": "tokenize", "tokenizer": PATH, "texts": [...], "add_special": BOOL}
      -> {"ids": [[...], ...], "decoded": [...]}   (tokenizers.Tokenizer)
  {"op": "decode", "tokenizer": PATH, "ids": [[...], ...]}
      -> {"decoded": [...]}
  {"op": "chat", "tokenizer": PATH, "bos_token": S, "eos_token": S,
   "template": JINJA, "conversations": [[{"role":..,"content":..}, ...], ...],
   "add_generation_prompt": BOOL, "tokenize": BOOL}
      -> {"texts": [...], "ids": [[...], ...]}     (transformers apply_chat_template)
"""
import json
import sys


def main():
    req = json.load(sys.stdin)
    op = req["op"]
    if op in ("tokenize", "decode"):
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(req["tokenizer"])
        if op == "tokenize":
            encs = [tok.encode(t, add_special_tokens=req["add_special"]) for t in req["texts"]]
            ids = [e.ids for e in encs]
            out = {"ids": ids, "decoded": [tok.decode(i, skip_special_tokens=False) for i in ids]}
        else:
            out = {"decoded": [tok.decode(i, skip_special_tokens=False) for i in req["ids"]]}
    elif op == "chat":
        import os

        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        from transformers import PreTrainedTokenizerFast

        tok = PreTrainedTokenizerFast(
            tokenizer_file=req["tokenizer"], bos_token=req["bos_token"], eos_token=req["eos_token"]
        )
        tok.chat_template = req["template"]
        texts, ids = [], []
        for conv in req["conversations"]:
            texts.append(
                tok.apply_chat_template(
                    conv, tokenize=False, add_generation_prompt=req["add_generation_prompt"]
                )
            )
            if req.get("tokenize"):
                # Tokenize the rendered text without added special tokens,
                # as apply_chat_template(tokenize=True) does.
                ids.append(tok(texts[-1], add_special_tokens=False)["input_ids"])
        out = {"texts": texts, "ids": ids}
    else:
        raise SystemExit(f"unknown op {op!r}")
    json.dump(out, sys.stdout, ensure_ascii=False)


if __name__ == "__main__":
    main()
