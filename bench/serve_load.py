"""Load harness for OpenAI-compatible servers (fungtrain serve, mlx_lm.server).

For each concurrency level it sends that many streamed chat requests at
once, each with its own prompt (random words, so no server can reuse a cached
prompt), greedy, with max_tokens, and measures per request the time to the
first generated text (TTFT) and the times of the first and last chunks. It
reports per server and level:

  generated tok/s   all completion tokens / wall time of the level
  decode tok/s      sum over requests of (tokens - 1) / (last - first chunk),
                    the aggregate decode rate while the requests run together
  TTFT              median and 90th percentile, seconds

Servers alternate level by level (A 1, B 1, A 4, B 4, ...) so that a drifting
machine affects both alike. Standard library only.

Usage: serve_load.py --url NAME=BASE_URL [--url NAME=BASE_URL ...]
                     [--levels 1,4,16,32] [--max-tokens 256] [--prompt-words 100]
                     [--rounds 1] [--model ID] --out FILE.json
"""
import argparse
import http.client
import json
import random
import statistics
import sys
import threading
import time
import urllib.parse

WORDS = ("fasting insulin glucose liver muscle growth hormone water salt sugar coffee tea "
         "breakfast dinner weight waist scale kidney blood pressure diabetes patient doctor "
         "morning evening protein fat carbohydrate bread pasta vegetables eggs nuts broth").split()


def prompt(rng, n):
    return " ".join(rng.choice(WORDS) for _ in range(n))


def one_request(base, model, text, max_tokens, res):
    """Sends one streamed chat request; fills res with timings and counts,
    or res["error"] when the request fails (a refused or reset connection
    too: a server with a short listen backlog resets some at high
    concurrency, and the level reports that instead of dying)."""
    try:
        send_request(base, model, text, max_tokens, res)
    except (OSError, http.client.HTTPException, ValueError) as e:
        res["error"] = f"{type(e).__name__}: {e}"


def send_request(base, model, text, max_tokens, res):
    u = urllib.parse.urlparse(base)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=600)
    body = json.dumps({
        "model": model,
        "messages": [{"role": "user", "content": text}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    })
    t0 = time.perf_counter()
    conn.request("POST", u.path.rstrip("/") + "/v1/chat/completions", body, {"Content-Type": "application/json"})
    resp = conn.getresponse()
    if resp.status != 200:
        res["error"] = f"HTTP {resp.status}: {resp.read()[:300]!r}"
        return
    first = last = None
    chunks = 0
    usage = None
    for raw in resp:
        line = raw.decode("utf-8", "replace").strip()
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if data == "[DONE]":
            break
        ev = json.loads(data)
        if "error" in ev:
            res["error"] = str(ev["error"])
            return
        if ev.get("usage"):
            usage = ev["usage"]
        for ch in ev.get("choices") or []:
            if (ch.get("delta") or {}).get("content"):
                now = time.perf_counter()
                first = first or now
                last = now
                chunks += 1
    conn.close()
    res.update(t0=t0, first=first, last=last, chunks=chunks,
               tokens=(usage or {}).get("completion_tokens", chunks))


def level(base, model, n, max_tokens, words, rng):
    results = [dict() for _ in range(n)]
    texts = [prompt(rng, words) for _ in range(n)]
    threads = [threading.Thread(target=one_request, args=(base, model, texts[i], max_tokens, results[i])) for i in range(n)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    errors = [r["error"] for r in results if "error" in r]
    if errors:
        return {"concurrency": n, "errors": errors}
    tokens = sum(r["tokens"] for r in results)
    ttft = sorted(r["first"] - r["t0"] for r in results if r["first"])
    decode = sum((r["tokens"] - 1) / (r["last"] - r["first"]) for r in results
                 if r["first"] and r["last"] > r["first"] and r["tokens"] > 1)
    return {
        "concurrency": n,
        "requests": n,
        "completion_tokens": tokens,
        "wall_s": round(wall, 3),
        "generated_tok_s": round(tokens / wall, 1),
        "decode_tok_s": round(decode, 1),
        "ttft_median_s": round(statistics.median(ttft), 3),
        "ttft_p90_s": round(ttft[min(len(ttft) - 1, int(0.9 * len(ttft)))], 3),
        "tokens_per_request": [r["tokens"] for r in results],
    }


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--url", action="append", required=True, help="NAME=BASE_URL")
    p.add_argument("--levels", default="1,4,16,32")
    p.add_argument("--max-tokens", type=int, default=256)
    p.add_argument("--prompt-words", type=int, default=100)
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--model", default="")
    p.add_argument("--out", required=True)
    a = p.parse_args()
    servers = [u.split("=", 1) for u in a.url]
    levels = [int(x) for x in a.levels.split(",")]
    rng = random.Random(1)
    out = {"max_tokens": a.max_tokens, "prompt_words": a.prompt_words, "levels": levels, "results": {}}
    for name, base in servers:  # warm up: compile kernels, fill allocator caches
        print(f"warm-up {name}", file=sys.stderr, flush=True)
        level(base, a.model, 2, 16, a.prompt_words, rng)
        out["results"][name] = []
    for r in range(a.rounds):
        for n in levels:
            for name, base in servers:
                res = level(base, a.model, n, a.max_tokens, a.prompt_words, rng)
                res["round"] = r + 1
                out["results"][name].append(res)
                print(f"{name:10s} c={n:3d} round {r + 1}: " + (
                    f"errors {res['errors'][:2]}" if "errors" in res else
                    f"{res['generated_tok_s']:8.1f} generated tok/s, {res['decode_tok_s']:8.1f} decode tok/s, "
                    f"TTFT median {res['ttft_median_s']:.3f}s p90 {res['ttft_p90_s']:.3f}s"), file=sys.stderr, flush=True)
    with open(a.out, "w") as f:
        json.dump(out, f, indent=1)
    print(summary(out))


def summary(out):
    """A markdown table: per server and level, the median over rounds."""
    names = list(out["results"])
    lines = ["| concurrency | " + " | ".join(f"{n} generated tok/s | {n} decode tok/s | {n} TTFT median s" for n in names) + " |",
             "|---" * (1 + 3 * len(names)) + "|"]
    best = {}
    for lv in out["levels"]:
        row = [str(lv)]
        for n in names:
            rs = [r for r in out["results"][n] if r["concurrency"] == lv and "errors" not in r]
            if not rs:
                row += ["error"] * 3
                continue
            g = statistics.median(r["generated_tok_s"] for r in rs)
            d = statistics.median(r["decode_tok_s"] for r in rs)
            t = statistics.median(r["ttft_median_s"] for r in rs)
            best[(n, lv)] = d
            row += [f"{g:.1f}", f"{d:.1f}", f"{t:.3f}"]
        lines.append("| " + " | ".join(row) + " |")
    top = max(out["levels"])
    low = min(out["levels"])
    for n in names:
        if (n, top) in best and (n, low) in best and best[(n, low)] > 0:
            lines.append(f"\n{n}: decode tok/s at {top} concurrent = {best[(n, top)] / best[(n, low)]:.2f}x its figure at {low}")
    if len(names) > 1 and (names[0], top) in best and (names[1], top) in best and best[(names[1], top)] > 0:
        lines.append(f"{names[0]} / {names[1]} decode tok/s at {top} concurrent = {best[(names[0], top)] / best[(names[1], top)]:.2f}x")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
