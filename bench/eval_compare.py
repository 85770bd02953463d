"""Compares two eval.json files of the same questions: batched and one at a time.

Prints the generation time of each (the sum of the answers' seconds: for the
batched run, the batch's wall time), the speed-up, and how many answers are
identical; for those that differ, where the texts part.

Usage: eval_compare.py BATCHED_EVAL_JSON ONE_AT_A_TIME_EVAL_JSON
"""
import json
import sys

b, o = (json.load(open(p)) for p in sys.argv[1:3])
sb = [s["base"] for s in b["samples"]]
so = [s["base"] for s in o["samples"]]
tb, to = sum(g["seconds"] for g in sb), sum(g["seconds"] for g in so)
same = sum(1 for x, y in zip(sb, so) if x["text"] == y["text"])
tokens = sum(g["tokens"] for g in sb)
print(f"| eval --n {len(sb)} | generation s | tokens | tokens/s |")
print("|---|---|---|---|")
print(f"| batched (batch {b['generation'].get('batch')}) | {tb:.2f} | {tokens} | {tokens / tb:.1f} |")
print(f"| one at a time | {to:.2f} | {sum(g['tokens'] for g in so)} | {sum(g['tokens'] for g in so) / to:.1f} |")
print(f"\nspeed-up {to / tb:.2f}x; identical answers {same}/{len(sb)}")
for i, (x, y) in enumerate(zip(sb, so)):
    if x["text"] != y["text"]:
        k = next((j for j, (c, d) in enumerate(zip(x["text"], y["text"])) if c != d), min(len(x["text"]), len(y["text"])))
        print(f"  question {i}: texts part at character {k} of {len(y['text'])}: {x['text'][max(0, k - 20):k + 20]!r} vs {y['text'][max(0, k - 20):k + 20]!r}")
