#!/usr/bin/env bash
# bench/dist_gpu.sh: data-parallel training, one GPU against two, fungtrain
# (MLX over NCCL) beside PyTorch DDP + PEFT (torchrun), in one call on one
# machine, because only figures from one run compare.
#
#   source bench/gpu_env.sh          # the carried MLX CUDA libraries and bin/fungtrain (see bench/gpu.sh)
#   bench/dist_gpu.sh OUT_DIR
#
# Both sides train the mission's LoRA (rank 6, alpha 8, dropout 0.1, q and v
# of the last 12 blocks) on a random-init model of SHAPE in DTYPE, on
# sequences of SEQ tokens, batch 1 per GPU, an optimizer step every ACCUM
# micro-batches; fungtrain through `fungtrain train` (the real trainer: data
# order, sharding, the all-reduce in the compiled step) on synthetic text of
# random words and a word-level tokenizer, so every example is SEQ tokens
# long. ROUNDS rounds alternate the four runs. tokens/s are medians over the
# rounds of each run's steady windows (its first report window, which holds
# the compilation, left out), aggregated over the ranks.
#
# The fungtrain half runs on the CPU too, as two processes over the ring
# (what the CI-sized check uses):
#   SHAPE=tiny DTYPE=f32 SEQ=64 STEPS=6 REPORT=2 BACKEND=ring PEFT=0 bench/dist_gpu.sh /tmp/dist-cpu
#
# Environment: SHAPE (llama-3.2-3b), DTYPE (bf16), SEQ (1024), ACCUM (1),
# STEPS (40 optimizer steps per fungtrain run), REPORT (10: steps per
# report window), ROUNDS (2), BACKEND (nccl), PEFT (1: run the DDP anchor),
# PY (python3 with torch, transformers and peft), FUNGTRAIN_BIN (bin/fungtrain).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT=${1:?usage: bench/dist_gpu.sh OUT_DIR}
SHAPE=${SHAPE:-llama-3.2-3b} DTYPE=${DTYPE:-bf16} SEQ=${SEQ:-1024} ACCUM=${ACCUM:-1}
STEPS=${STEPS:-40} REPORT=${REPORT:-10} ROUNDS=${ROUNDS:-2} BACKEND=${BACKEND:-nccl} PEFT=${PEFT:-1}
PY=${PY:-python3} FT=${FUNGTRAIN_BIN:-$ROOT/bin/fungtrain}
export NCCL_NVLS_ENABLE=0 # NVLink multicast stays off on the lent machines
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
echo "==> $(uname -sm), $(getconf _NPROCESSORS_ONLN) cores; results in $OUT"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=index,name,memory.total --format=csv,noheader | tee "$OUT/gpus.txt"
"$FT" version | tee "$OUT/version.txt"

# A word-level tokenizer (w0 ... w31999; w999 for the tiny shape) and text records of SEQ+16 random
# words: each example is truncated to SEQ+1 tokens, SEQ positions trained.
DATA="$OUT/data" TOK="$OUT/tokenizer"
mkdir -p "$DATA" "$TOK"
WORDS=32000
[ "$SHAPE" = tiny ] && WORDS=1000 # the tiny shape's vocabulary is 1024
python3 - "$TOK/tokenizer.json" "$DATA" "$SEQ" "$WORDS" <<'PY'
import json, random, sys
tok, data, seq = sys.argv[1], sys.argv[2], int(sys.argv[3])
words = [f"w{i}" for i in range(int(sys.argv[4]))]
vocab = {"[UNK]": 0, **{w: i + 1 for i, w in enumerate(words)}}
json.dump({"version": "1.0", "truncation": None, "padding": None, "added_tokens": [], "normalizer": None,
           "pre_tokenizer": {"type": "Whitespace"}, "post_processor": None, "decoder": None,
           "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "[UNK]"}}, open(tok, "w"))
rng = random.Random(0)
for split, n in (("train", 400), ("valid", 8)):
    with open(f"{data}/{split}.jsonl", "w") as f:
        for _ in range(n):
            f.write(json.dumps({"text": " ".join(rng.choice(words) for _ in range(seq + 16))}) + "\n")
PY
MODEL="$OUT/model-$SHAPE-$DTYPE"
LAYERS=12
[ "$SHAPE" = tiny ] && LAYERS=4 # the mission's last 12 blocks; the tiny shape has 4
[ -f "$MODEL/config.json" ] || "$FT" init-model --shape "$SHAPE" --dtype "$DTYPE" --out "$MODEL" --tokenizer "$TOK/tokenizer.json" --seed 1 >/dev/null
cat >"$OUT/run.yaml" <<EOF
model: {path: $MODEL, dtype: $DTYPE}
data: {dir: $DATA, max_seq_length: $((SEQ + 1))}
lora: {rank: 6, alpha: 8, dropout: 0.1, num_layers: $LAYERS, keys: [self_attn.q_proj, self_attn.v_proj]}
optimizer: {lr: 1.0e-5}
training: {batch_size: 1, grad_accumulation: $ACCUM, max_steps: $STEPS, report_every: $REPORT, save_every: 0}
eval: {every: 0}
output: {dir: $OUT/runs/unused}
EOF

ft() { # name, then the command before "train"
  local name=$1; shift
  echo "==> $name"
  rm -rf "$OUT/runs/$name"
  "$@" train --config "$OUT/run.yaml" --set output.dir="$OUT/runs/$name" >"$OUT/$name.log" 2>&1 || { tail -20 "$OUT/$name.log"; exit 1; }
  grep -h '"type":"train"' "$OUT/runs/$name/metrics.jsonl" >"$OUT/$name.windows.jsonl"
  tail -n 3 "$OUT/$name.log" | grep -v '^$' || true
}
peft() { # name, ranks
  echo "==> $1"
  OUT="$OUT" SHAPE="$SHAPE" SEQ="$SEQ" ACCUM="$ACCUM" STEPS=$((STEPS * ACCUM)) \
    "$PY" -m torch.distributed.run --standalone --nproc_per_node "$2" "$ROOT/bench/peft_ddp_anchor.py" >"$OUT/$1.log" 2>&1 ||
    { tail -20 "$OUT/$1.log"; exit 1; }
  cp "$OUT/peft_ddp_$2.json" "$OUT/$1.json"
  tail -n 1 "$OUT/$1.log"
}
for r in $(seq 1 "$ROUNDS"); do
  ft "fungtrain_1_r$r" env CUDA_VISIBLE_DEVICES=0 "$FT"
  ft "fungtrain_2_r$r" "$FT" launch -n 2 --backend "$BACKEND" --
  if [ "$PEFT" = 1 ]; then
    peft "peft_1_r$r" 1
    peft "peft_2_r$r" 2
  fi
done
if [ "$BACKEND" = nccl ]; then # the trainer's number beside the benchmark's, one GPU
  echo "==> fungtrain bench train (one GPU, the same shape)"
  CUDA_VISIBLE_DEVICES=0 "$FT" bench train --shape "$SHAPE" --dtype "$DTYPE" --seq "$SEQ" --steps 10 --json >"$OUT/fungtrain_bench_1.json"
fi

python3 - "$OUT" "$ROUNDS" "$PEFT" <<'PY' | tee "$OUT/summary.md"
import glob, json, statistics, sys
out, rounds, peft = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1"
def ft(n):  # steady windows of every round: each window's tokens/s, the first window left out
    vals = []
    for r in range(1, rounds + 1):
        wins = [json.loads(l)["tokens_per_sec"] for l in open(f"{out}/fungtrain_{n}_r{r}.windows.jsonl")]
        vals.append(statistics.median(wins[1:] or wins))
    return vals
def pf(n):
    return [json.load(open(f"{out}/peft_{n}_r{r}.json"))["tokens_per_s"] for r in range(1, rounds + 1)]
rows = [("fungtrain", 1, ft(1)), ("fungtrain", 2, ft(2))]
if peft:
    rows += [("PEFT + DDP (torchrun)", 1, pf(1)), ("PEFT + DDP (torchrun)", 2, pf(2))]
med = {(n, g): statistics.median(v) for n, g, v in rows}
print("| trainer | GPUs | tokens/s (median) | rounds |\n|---|---|---|---|")
for n, g, v in rows:
    print(f"| {n} | {g} | {med[(n, g)]:,.0f} | {' / '.join(f'{x:,.0f}' for x in v)} |")
print()
print(f"- fungtrain 2 GPUs / 1 GPU: {med[('fungtrain', 2)] / med[('fungtrain', 1)]:.2f}x (target >= 1.85x)")
if peft:
    p = "PEFT + DDP (torchrun)"
    print(f"- PEFT + DDP 2 GPUs / 1 GPU: {med[(p, 2)] / med[(p, 1)]:.2f}x")
    print(f"- fungtrain 2 GPUs / PEFT + DDP 2 GPUs: {med[('fungtrain', 2)] / med[(p, 2)]:.2f}x (target >= 2x)")
b = glob.glob(f"{out}/fungtrain_bench_1.json")
if b:
    print(f"- fungtrain bench train, one GPU, same shape: {json.load(open(b[0]))['tokens_per_sec']:,.0f} tokens/s")
PY
