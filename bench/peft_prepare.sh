#!/usr/bin/env bash
# bench/peft_prepare.sh: on the development machine, write the bundle that
# bench/peft_check.sh checks with PyTorch, transformers and PEFT elsewhere:
# an HF base model, a fungtrain adapter and its PEFT export, the fused
# directory, fungtrain's logits and greedy tokens (TestPEFTCheckBundle in
# cmd/fungtrain, which also runs the checks that need no PyTorch). The
# bundle (about 47 MB) holds copies of the check scripts.
#
#   bench/peft_prepare.sh OUT_DIR
#   # carry OUT_DIR over, then there: OUT_DIR/peft_check.sh OUT_DIR
set -euo pipefail
out=${1:?usage: bench/peft_prepare.sh OUT_DIR}
mkdir -p "$out"
out="$(cd "$out" && pwd)"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export CGO_ENABLED=1
if [ "$(uname -s)" = Linux ] && [ -z "${FUNGTRAIN_NO_OPENBLAS:-}" ]; then
  export CGO_LDFLAGS="-Wl,--no-as-needed -lopenblas -Wl,--as-needed ${CGO_LDFLAGS:-}"
fi
export FUNGTRAIN_PYTHON="${FUNGTRAIN_PYTHON:-$ROOT/third_party/pyenv/bin/python}"
FUNGTRAIN_PEFT_BUNDLE="$out" go test -count=1 -run '^TestPEFTCheckBundle$' -v ./cmd/fungtrain
cp bench/peft_check.py bench/peft_check.sh "$out/"
echo "bundle ready in $out ($(du -sh "$out" | cut -f1)); on the PyTorch machine: $out/peft_check.sh $out"
