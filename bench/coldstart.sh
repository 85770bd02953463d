#!/usr/bin/env bash
# bench/coldstart.sh: the cost of a fresh machine. Time to the end of the
# first optimizer step with an empty MLX kernel cache (MLX compiles its CPU
# kernels with the system compiler and its CUDA kernels with NVRTC, and
# caches them on disk), the same with the cache filled, and the steady time
# of a step; fungtrain (training.micro_batch auto and 1) beside mlx-lm's
# own trainer, batch 1 × accumulation 8 (the mission's default), on
# examples of varied lengths (so that length buckets matter).
#
#   bench/coldstart.sh OUT_DIR                                          # CPU, tiny shape
#   source bench/gpu_env.sh; SHAPE=llama-3.2-3b DTYPE=bf16 MINLEN=128 MAXLEN=1024 bench/coldstart.sh OUT_DIR   # a GPU
#
# Every run gets its own empty TMPDIR and MLX_PTX_CACHE_DIR for "cold"; the
# "warm" run reuses the cold run's. Each run makes STEPS optimizer steps;
# fungtrain's reports give the step times (the first includes the
# compilation; training.sequential, so that each report times its own
# step), mlx-lm's likewise (its iterations are micro-batches).
#
# Environment: SHAPE (tiny), DTYPE (f32), MINLEN/MAXLEN (32/256 tokens),
# STEPS (4), PY (python3 with mlx-lm; default the test venv's), FUNGTRAIN_BIN.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT=${1:?usage: bench/coldstart.sh OUT_DIR}
SHAPE=${SHAPE:-tiny} DTYPE=${DTYPE:-f32} MINLEN=${MINLEN:-32} MAXLEN=${MAXLEN:-256} STEPS=${STEPS:-4}
PY=${PY:-${FUNGTRAIN_PYTHON:-$ROOT/third_party/pyenv/bin/python}} FT=${FUNGTRAIN_BIN:-$ROOT/bin/fungtrain}
[ -x "$PY" ] || PY=python3
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
"$FT" version | tee "$OUT/version.txt"
DATA="$OUT/data" TOK="$OUT/tokenizer"
mkdir -p "$DATA" "$TOK"
python3 - "$TOK/tokenizer.json" "$DATA" "$MINLEN" "$MAXLEN" <<'PY'
import json, random, sys
tok, data, lo, hi = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
words = [f"w{i}" for i in range(1000)]  # fits every shape's vocabulary (the tiny one has 1024)
vocab = {"[UNK]": 0, **{w: i + 1 for i, w in enumerate(words)}}
json.dump({"version": "1.0", "truncation": None, "padding": None, "added_tokens": [], "normalizer": None,
           "pre_tokenizer": {"type": "Whitespace"}, "post_processor": None, "decoder": None,
           "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "[UNK]"}}, open(tok, "w"))
rng = random.Random(0)
lengths = []
for split, n in (("train", 256), ("valid", 4)):
    with open(f"{data}/{split}.jsonl", "w") as f:
        for _ in range(n):
            k = rng.randint(lo, hi)
            lengths.append(k)
            f.write(json.dumps({"text": " ".join(rng.choice(words) for _ in range(k))}) + "\n")
json.dump(lengths[:256], open(f"{data}/lengths.json", "w"))
PY
MODEL="$OUT/model-$SHAPE-$DTYPE"
LAYERS=12
[ "$SHAPE" = tiny ] && LAYERS=4 # the mission's last 12 blocks; the tiny shape has 4
[ -f "$MODEL/config.json" ] || "$FT" init-model --shape "$SHAPE" --dtype "$DTYPE" --out "$MODEL" --tokenizer "$TOK/tokenizer.json" --seed 1 >/dev/null
cat >"$OUT/run.yaml" <<EOF
model: {path: $MODEL, dtype: $DTYPE}
data: {dir: $DATA, max_seq_length: $((MAXLEN + 1))}
lora: {rank: 6, alpha: 8, dropout: 0.1, num_layers: $LAYERS, keys: [self_attn.q_proj, self_attn.v_proj]}
optimizer: {lr: 1.0e-5}
training: {batch_size: 1, grad_accumulation: 8, max_steps: $STEPS, report_every: 1, save_every: 0, sequential: true}
eval: {every: 0}
output: {dir: $OUT/runs/unused}
EOF

fresh() { mktemp -d "$OUT/cache-XXXX"; }
ft() { # name cache micro_batch
  local name=$1 cache=$2 mb=$3
  rm -rf "$OUT/runs/$name"
  TMPDIR=$cache MLX_PTX_CACHE_DIR=$cache/ptx "$FT" train --config "$OUT/run.yaml" --set training.micro_batch="$mb" \
    --set output.dir="$OUT/runs/$name" >"$OUT/$name.log" 2>&1 || { tail -20 "$OUT/$name.log"; exit 1; }
  python3 - "$OUT/runs/$name/metrics.jsonl" "$OUT/$name.log" "$name" <<'PY'
import json, re, sys
steps = [1 / json.loads(l)["it_per_sec"] for l in open(sys.argv[1]) if '"type":"train"' in l]
shapes = re.findall(r'msg="compiled shapes" distinct=(\d+)', open(sys.argv[2]).read())
print(f"{sys.argv[3]:28s} first step {steps[0]:7.2f} s   later steps {sum(steps[1:]) / max(1, len(steps) - 1):7.2f} s   compiled shapes {shapes[0] if shapes else '?'}")
PY
}
mlxlm() { # name cache
  local name=$1 cache=$2
  TMPDIR=$cache MLX_PTX_CACHE_DIR=$cache/ptx "$PY" - "$MODEL" "$DATA/lengths.json" "$STEPS" "$name" "$OUT/$name.safetensors" \
    >"$OUT/$name.log" 2>&1 <<'PY' || { tail -20 "$OUT/$name.log"; exit 1; }
import json, sys, time
from pathlib import Path
import mlx.core as mx, mlx.optimizers as optim, numpy as np
from mlx_lm.tuner.trainer import TrainingArgs, TrainingCallback, train
from mlx_lm.tuner.utils import linear_to_lora_layers
from mlx_lm.utils import load_model
model_dir, lengths, steps, name, adapters = sys.argv[1], json.load(open(sys.argv[2])), int(sys.argv[3]), sys.argv[4], sys.argv[5]
model, config = load_model(Path(model_dir))
model.freeze()
linear_to_lora_layers(model, min(12, len(model.layers)), {"rank": 6, "scale": 8 / 6, "dropout": 0.1,
                      "keys": ["self_attn.q_proj", "self_attn.v_proj"]})
rng = np.random.default_rng(0)
data = [(rng.integers(1, 1000, k + 1).tolist(), 0) for k in lengths]
times, last = [], [time.perf_counter()]
class CB(TrainingCallback):
    def on_train_loss_report(self, info):
        now = time.perf_counter(); times.append(now - last[0]); last[0] = now
args = TrainingArgs(batch_size=1, iters=8 * steps, steps_per_report=8, steps_per_eval=10**9, steps_per_save=10**9,
                    grad_accumulation_steps=8, max_seq_length=max(lengths) + 2, adapter_file=adapters)
last[0] = time.perf_counter()
train(model, optim.Adam(learning_rate=1e-5), data, None, args, training_callback=CB())
print(f"{name:28s} first step {times[0]:7.2f} s   later steps {sum(times[1:]) / max(1, len(times) - 1):7.2f} s")
PY
  tail -n 1 "$OUT/$name.log"
}
{
  echo "batch 1 x accumulation 8, lengths $MINLEN..$MAXLEN, $SHAPE $DTYPE, $STEPS steps per run"
  c=$(fresh); ft fungtrain_auto_cold "$c" auto; ft fungtrain_auto_warm "$c" auto
  c=$(fresh); ft fungtrain_mb1_cold "$c" 1; ft fungtrain_mb1_warm "$c" 1
  c=$(fresh); mlxlm mlxlm_cold "$c"; mlxlm mlxlm_warm "$c"
} | tee "$OUT/summary.txt"
