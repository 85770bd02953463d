"""Print the side-by-side table and ratios of a bench/run.sh results folder."""
import json
import os
import sys

out = sys.argv[1]
shape_name = sys.argv[2] if len(sys.argv) > 2 else None


def load(name):
    path = os.path.join(out, name + ".json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        text = f.read().strip()
    # The PEFT script prints progress lines before its final JSON object.
    return json.loads(text[text.rfind("\n{") + 1:] if text.count("\n{") else text)


def rounds(name):
    """The results of every round of a measurement (name, name_r2, ...)."""
    found, r = [], 1
    while True:
        res = load(name if r == 1 else f"{name}_r{r}")
        if res is None:
            return found
        found.append(res)
        r += 1


def median(values):
    v = sorted(values)
    n = len(v)
    return v[n // 2] if n % 2 else (v[n // 2 - 1] + v[n // 2]) / 2


fts, fg = rounds("fungtrain_train"), load("fungtrain_generate")
ft = fts[0]
def counted(r):
    return r.get("counted_tokens_per_sec", r.get("tokens_per_sec", 0))


rows = [("fungtrain", median([r["tokens_per_sec"] for r in fts]), max(r["peak_memory_gib"] for r in fts),
         fg["decode_tokens_per_sec"], fg["prefill_tokens_per_sec"], median([counted(r) for r in fts]),
         median([r.get("steps_per_sec", 0) for r in fts]))]
per_round = [("fungtrain", [r["tokens_per_sec"] for r in fts])]
for name in ("mlxlm", "mlxlm_openblas"):
    ms = rounds(name)
    if ms:
        label = "mlx-lm" if name == "mlxlm" else "mlx-lm + OpenBLAS preloaded"
        m = ms[0]
        rows.append((label, median([r["train"]["tokens_per_sec"] for r in ms]),
                     max(r["train"]["peak_memory_gib"] for r in ms),
                     m["generate"]["decode_tokens_per_sec"], m["generate"]["prefill_tokens_per_sec"],
                     median([counted(r["train"]) for r in ms]), median([r["train"].get("steps_per_sec", 0) for r in ms])))
        per_round.append((label, [r["train"]["tokens_per_sec"] for r in ms]))
peft = load("peft_anchor")
if peft and ("realwork" in peft or "seq1024" in peft):  # bench/peft_anchor.py
    key = "realwork" if "realwork" in peft else "seq1024"
    p = peft[key]
    rows.append(("HF PEFT (" + key + ")", p.get("tokens_per_sec", 0), p.get("peak_memory_gib", 0),
                 peft.get("decode", {}).get("decode_tokens_per_sec", 0), 0, counted(p), p.get("steps_per_sec", 0)))
elif peft:  # the shared anchor of session 1
    key = "qv_seq1024_b1" if "all" not in ft["lora_keys"] else "all_seq1024_b1"
    p = peft.get(key, {})
    rows.append(("HF PEFT (" + key + ")", p.get("tokens_per_s", 0), p.get("peak_mem_gib", 0),
                 peft.get("decode_bf16_b1_tokens_per_s", 0), 0, p.get("tokens_per_s", 0), 0))

data = f"seq {ft['seq']}" if ft.get("seq") else f"lengths {ft.get('lengths_source', '')}"
print(f"\nshape {shape_name or ft['shape']} {ft['dtype']} on {ft['backend']}; {data}, batch {ft['batch']} x accumulation "
      f"{ft.get('grad_accum', 1)}, LoRA r{ft['rank']} {ft['lora_keys']} last {ft['lora_layers']} layers; "
      f"{ft['steps']} measured optimizer steps\n")
if len(fts) > 1:
    print(f"{len(fts)} rounds, alternating; train tokens/s is each system's median, peak its largest")
    for label, values in per_round:
        print(f"- {label} train tokens/s by round: " + ", ".join(f"{v:.0f}" for v in values))
    print()
print("| system | train tokens/s | loss-counted tokens/s | optimizer steps/s | train peak GiB | decode tokens/s | prefill tokens/s |")
print("|---|---|---|---|---|---|---|")
for r in rows:
    print(f"| {r[0]} | {r[1]:.1f} | {r[5]:.1f} | {r[6]:.3f} | {r[2]:.2f} | {r[3]:.1f} | {r[4]:.1f} |")
if ft.get("mfu") is not None:
    print(f"\nfungtrain MFU {100 * ft['mfu']:.1f}% of {ft['peak_tflops']:g} TFLOP/s "
          f"({ft['flops_per_token']['total'] / 1e9:.3g} GFLOP per input token)")
print("\n| ratio (fungtrain / anchor) | train tokens/s | loss-counted tokens/s | train peak memory | decode tokens/s |")
print("|---|---|---|---|---|")
for r in rows[1:]:
    ratio = lambda a, b: f"{a / b:.2f}x" if b else "n/a"
    print(f"| vs {r[0]} | {ratio(rows[0][1], r[1])} | {ratio(rows[0][5], r[5])} | {ratio(rows[0][2], r[2])} | {ratio(rows[0][3], r[3])} |")
