"""Summarise a bench/realwork_gpu.sh run: RAW is the folder of raw results
(NAME.json, NAME.meta, NAME.err per measurement, peft_anchor.json); writes
OUT/summary.json and OUT/summary.md with every figure, the ratios and
issue 17's targets.

  python realwork_summary.py RAW OUT [--peak-tflops 989]
"""
import argparse
import glob
import json
import os
import statistics


def load(raw, name):
    """A measurement's JSON with its launch time, or {"error": ...}."""
    path = os.path.join(raw, name + ".json")
    if not os.path.exists(path):
        return None
    meta = {}
    if os.path.exists(os.path.join(raw, name + ".meta")):
        with open(os.path.join(raw, name + ".meta")) as f:
            meta = json.load(f)
    text = open(path).read().strip()
    try:
        # The JSON is the last line that starts an object (progress lines may come first).
        starts = [i for i, line in enumerate(text.splitlines()) if line.startswith("{")]
        res = json.loads("\n".join(text.splitlines()[starts[0]:])) if starts else None
    except (json.JSONDecodeError, IndexError):
        res = None
    if res is None or meta.get("rc", 0) != 0:
        err = ""
        if os.path.exists(os.path.join(raw, name + ".err")):
            err = open(os.path.join(raw, name + ".err")).read()[-600:]
        return {"error": f"exit {meta.get('rc')}: {err}"}
    res["_meta"] = meta
    return res


def rounds(raw, prefix):
    names = sorted(os.path.basename(p)[:-5] for p in glob.glob(os.path.join(raw, prefix + "_r*.json")))
    return [r for r in (load(raw, n) for n in names) if r]


def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def ratio(a, b):
    return a / b if a and b else None


def ft_row(r, label):
    """One fungtrain result as a table row."""
    if not r or "error" in r:
        return {"system": label, "error": (r or {}).get("error", "not run")}
    return {"system": label, "tokens_per_sec": r["tokens_per_sec"], "counted_tokens_per_sec": r["counted_tokens_per_sec"],
            "steps_per_sec": r.get("steps_per_sec"), "peak_memory_gib": r["peak_memory_gib"], "mfu": r.get("mfu"),
            "achieved_tflops": r.get("achieved_tflops"), "quantized": r.get("quantized", "")}


def anchor_row(t, label, flops, peak):
    """An anchor's training result (mlx-lm's "train" or a PEFT section) as a row,
    its MFU from fungtrain's FLOP count for the same model and data."""
    if not t or "error" in t or "skipped" in t:
        return {"system": label, "error": (t or {}).get("error") or (t or {}).get("skipped") or "not run"}
    row = {"system": label, "tokens_per_sec": t.get("tokens_per_sec"), "counted_tokens_per_sec": t.get("counted_tokens_per_sec"),
           "steps_per_sec": t.get("steps_per_sec"), "peak_memory_gib": t.get("peak_memory_gib")}
    if flops and row["tokens_per_sec"]:
        row["mfu"] = row["tokens_per_sec"] * flops / (peak * 1e12)
        row["achieved_tflops"] = row["tokens_per_sec"] * flops / 1e12
    return row


def fmt(v, spec):
    return format(v, spec) if isinstance(v, (int, float)) else "–"


def table(rows):
    lines = ["| system | input tokens/s | loss-counted tokens/s | optimizer steps/s | peak GiB | MFU |", "|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['system']} | failed or skipped: {str(r['error']).strip().splitlines()[-1][:150]} | | | | |")
            continue
        lines.append(f"| {r['system']} | {fmt(r['tokens_per_sec'], ',.0f')} | {fmt(r['counted_tokens_per_sec'], ',.0f')} | "
                     f"{fmt(r.get('steps_per_sec'), '.3f')} | {fmt(r['peak_memory_gib'], '.2f')} | "
                     f"{fmt(100 * r['mfu'] if r.get('mfu') is not None else None, '.1f')}{'%' if r.get('mfu') is not None else ''} |")
    return lines


def target(name, value, op, bound, unit="x"):
    ok = None if value is None else (value >= bound if op == ">=" else value <= bound)
    return {"target": name, "measured": value, "bound": f"{op} {bound}{unit}", "met": ok}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("raw")
    p.add_argument("out")
    p.add_argument("--peak-tflops", type=float, default=989)
    a = p.parse_args()
    raw, peak = a.raw, a.peak_tflops
    peft = load(raw, "peft_anchor") or {}
    s = {"env": open(os.path.join(raw, "env.txt")).read() if os.path.exists(os.path.join(raw, "env.txt")) else "",
         "peak_tflops": peak, "targets": []}
    md = ["# Real workload (issue 17)", "", "```", s["env"].strip(), "```", ""]

    # (a) the mission default on the sample data's lengths
    fts, mls = rounds(raw, "real_fungtrain"), rounds(raw, "real_mlxlm")
    if fts or mls:
        ok = [r for r in fts if "error" not in r]
        flops = ok[0]["flops_per_token"]["total"] if ok else None

        def median_row(rows, label):
            good = [r for r in rows if "error" not in r]
            if not good:
                return {"system": label, "error": rows[0]["error"] if rows else "not run"}
            keys = ("tokens_per_sec", "counted_tokens_per_sec", "steps_per_sec", "mfu", "achieved_tflops")
            row = {"system": label + (f" (median of {len(good)})" if len(good) > 1 else "")}
            for k in keys:
                row[k] = med([r.get(k) for r in good])
            row["peak_memory_gib"] = max(r["peak_memory_gib"] for r in good)
            row["by_round"] = [r.get("counted_tokens_per_sec") for r in good]
            return row

        ft = median_row([ft_row(r, "fungtrain") for r in fts], "fungtrain")
        ml = median_row([anchor_row(r.get("train") if "error" not in r else r, "mlx-lm", flops, peak) for r in mls], "mlx-lm")
        pf = anchor_row(peft.get("realwork") or ({"error": "PEFT not run (see peft.log)"} if not peft else None), "HF PEFT", flops, peak)
        s["a"] = {"rows": [ft, ml, pf], "flops_per_token": flops}
        lens = ok[0]["lengths"] if ok else {}
        md += ["## (a) The user's workload", "",
               f"Mission default: batch 1 x accumulation {ok[0]['grad_accum'] if ok else '?'}, prompt masked, "
               f"mission LoRA; lengths {ok[0].get('lengths_source', '') if ok else ''} (mean {fmt(lens.get('mean_tokens'), '.1f')} "
               f"tokens, {fmt(100 * lens['counted_share'] if lens else None, '.1f')}% loss-counted). "
               f"MFU over {peak:g} TFLOP/s with {fmt(flops / 1e9 if flops else None, '.3g')} GFLOP per input token (bench/flops.go).", ""]
        md += table([ft, ml, pf])
        for label, rows in (("fungtrain", ft), ("mlx-lm", ml)):
            if rows.get("by_round"):
                md.append(f"\n{label} loss-counted tokens/s by round: " + ", ".join(fmt(v, ",.0f") for v in rows["by_round"]))
        c_ml = ratio(ft.get("counted_tokens_per_sec"), ml.get("counted_tokens_per_sec"))
        c_pf = ratio(ft.get("counted_tokens_per_sec"), pf.get("counted_tokens_per_sec"))
        s["targets"] += [target("(a) fungtrain / mlx-lm, loss-counted tokens/s", c_ml, ">=", 3),
                         target("(a) fungtrain / PEFT, loss-counted tokens/s", c_pf, ">=", 8)]
        md.append("")

    # (b) seq 1024, batch 1
    fb = load(raw, "seq_fungtrain")
    if fb:
        flops = fb["flops_per_token"]["total"] if fb and "error" not in fb else None
        rb = [ft_row(fb, "fungtrain"), anchor_row(peft.get("seq1024") or ({"error": "PEFT not run (see peft.log)"} if not peft else None),
                                                  "HF PEFT", flops, peak)]
        s["b"] = {"rows": rb}
        md += [f"## (b) Seq {fb.get('seq', '?')}, batch 1", ""] + table(rb) + [""]
        s["targets"].append(target("(b) peak memory fungtrain / PEFT", ratio(rb[0].get("peak_memory_gib"), rb[1].get("peak_memory_gib")), "<=", 0.8))

    # (c) 4-bit base
    def describe(r, fallback):
        if not r or "error" in r:
            return fallback
        data = f"seq {r['seq']}" if r.get("seq") else "the user's workload"
        return f"{r.get('quantized') or r['dtype']} base, {data}"

    names = [("q4_fungtrain", "fungtrain, MLX", "MLX 4-bit"), ("q4_real_fungtrain", "fungtrain, MLX", "MLX 4-bit, real")]
    names += [(os.path.basename(p)[:-5], f"fungtrain, GGUF {os.path.basename(p)[:-15].upper()} kept quantized,", "GGUF")
              for p in sorted(glob.glob(os.path.join(raw, "q?_0_fungtrain.json")))]
    rc = [ft_row(load(raw, n), f"{label} {describe(load(raw, n), fb_label)}") for n, label, fb_label in names if load(raw, n)]
    mq = load(raw, "q4_mlxlm")
    fq = load(raw, "q4_fungtrain")
    if rc or mq:
        flops = fq["flops_per_token"]["total"] if fq and "error" not in fq else None
        seq = fq.get("seq") if fq and "error" not in fq else "?"
        mt = (mq or {}).get("train") if mq and "error" not in mq else mq
        rc.append(anchor_row(mt, f"mlx-lm, MLX 4-bit base, seq {seq}", flops, peak))
        rc.append(anchor_row(peft.get("qlora") or ({"error": "PEFT not run (see peft.log)"} if not peft else None),
                             f"HF PEFT + bitsandbytes NF4, seq {seq}", flops, peak))
        if fb and "error" not in fb:
            rc.append(ft_row(fb, f"fungtrain, {fb['dtype']} base, seq {fb['seq']} (from b)"))
        s["c"] = {"rows": rc}
        md += ["## (c) 4-bit base", ""] + table(rc) + [""]
        s["targets"].append(target("(c) fungtrain 4-bit base peak at seq 1024", rc[0].get("peak_memory_gib"), "<=", 4, " GiB"))

    # (d) cold start
    cf, cm = load(raw, "cold_fungtrain"), load(raw, "cold_mlxlm")
    if cf or cm:
        def cold(r, first):
            if not r or "error" in r or not first:
                return None
            return first - r["_meta"]["launch_unix"]
        tf = cold(cf, (cf or {}).get("first_step_unix"))
        tm = cold(cm, ((cm or {}).get("train") or {}).get("first_step_unix"))
        s["d"] = {"fungtrain_seconds": tf, "mlxlm_seconds": tm,
                  "fungtrain_load_seconds": (cf or {}).get("load_seconds"),
                  "fungtrain_error": (cf or {}).get("error"), "mlxlm_error": (cm or {}).get("error")}
        md += ["## (d) Cold start, empty kernel caches", "",
               "Seconds from launching the process to the end of the first optimizer step of (a)'s workload.", "",
               "| system | seconds |", "|---|---|",
               f"| fungtrain | {fmt(tf, '.1f')} (model loaded at {fmt((cf or {}).get('load_seconds'), '.1f')}) |",
               f"| mlx-lm | {fmt(tm, '.1f')} |", ""]
        s["targets"].append(target("(d) cold start fungtrain / mlx-lm", ratio(tf, tm), "<=", 1))

    md += ["## Targets", "", "| target | measured | bound | met |", "|---|---|---|---|"]
    for t in s["targets"]:
        met = {True: "yes", False: "**no**", None: "not measured"}[t["met"]]
        md.append(f"| {t['target']} | {fmt(t['measured'], '.2f')} | {t['bound']} | {met} |")
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "summary.json"), "w") as f:
        json.dump(s, f, indent=1, default=str)
    with open(os.path.join(a.out, "summary.md"), "w") as f:
        f.write("\n".join(md) + "\n")


if __name__ == "__main__":
    main()
