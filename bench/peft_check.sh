#!/usr/bin/env bash
# bench/peft_check.sh: run bench/peft_check.py on a bundle made by
# bench/peft_prepare.sh, on a machine with PyTorch, transformers and PEFT
# (the GPU machine's /opt/torch/.venv, or $PYTHON). Prints PASS/FAIL lines
# with the max |logit diff| of each check; exits non-zero on a failure.
#
#   bench/peft_check.sh BUNDLE_DIR [--device cuda|cpu]
set -euo pipefail
bundle=${1:?usage: bench/peft_check.sh BUNDLE_DIR [--device cuda|cpu]}
shift
py=${PYTHON:-}
if [ -z "$py" ]; then
  if [ -x /opt/torch/.venv/bin/python ]; then py=/opt/torch/.venv/bin/python; else py=python3; fi
fi
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
exec "$py" "$here/peft_check.py" "$bundle" "$@"
