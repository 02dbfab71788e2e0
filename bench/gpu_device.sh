#!/usr/bin/env bash
# Run bench/gpu.py at 7B scale on a lent GPU machine in one go (docs/testing.md).
#
# 1. Here, with network, once:   bash bench/gpu_device.sh --fetch-wheels
#    downloads the pins of requirements/10-ml.txt (+ huggingface_hub from lock.txt) as
#    Python 3.12 wheels into .wheels-device/ (git-ignored, ~13 MB).
# 2. Through the device tool:    run(command='bash bench/gpu_device.sh',
#                                    carry=['.wheels-device'], timeout_s=540)
#    Expect about 4-5 minutes (the 7B build writes 13.5 GB, loading reads it back).
#
# On the device, python3 already holds a CUDA build of torch, and nothing can be
# downloaded there. Never pip-install torch there: requirements/00-torch.txt pins the
# CPU wheel used here. Nor make a venv from that python3: it is itself a venv, and
# --system-site-packages would see the base interpreter, not its CUDA torch. Instead the
# carried wheels go into an overlay (/tmp/tgrpo_site on PYTHONPATH) when python3's own
# transformers/peft differ from the pins. Elsewhere, with network, make a venv instead:
#   python3 -m venv .venv && .venv/bin/pip install torch==2.13.0 --index-url \
#     https://download.pytorch.org/whl/cu128   # a CUDA build; pick the index for your driver
#   .venv/bin/pip install -r requirements/10-ml.txt -c requirements/lock.txt
# then run: .venv/bin/python bench/gpu.py --cache-dir /big/disk
set -euo pipefail
cd "$(dirname "$0")/.."
WHEELS=.wheels-device
PINS=(transformers==4.40.1 tokenizers==0.19.1 peft==0.11.1 accelerate==0.34.2
      huggingface_hub==0.36.2)

if [[ "${1:-}" == --fetch-wheels ]]; then
  mkdir -p "$WHEELS"
  python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "$WHEELS" "${PINS[@]}"
  exit 0
fi

: "${OUT:?OUT must name a folder for the results (the device tool sets it)}"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
pins_ok() {
  python3 - "${PINS[@]}" <<'EOF'
import sys
from importlib import metadata
for pin in sys.argv[1:]:
    name, version = pin.split('==')
    try:
        found = metadata.version(name)
    except metadata.PackageNotFoundError:
        found = None
    if found != version:
        sys.exit(f'{name} {found} != {version}')
EOF
}
if ! pins_ok 2>"$OUT/pins.txt"; then
  ls "$WHEELS"/*.whl >/dev/null 2>&1 \
    || { echo "no $WHEELS/ carried: run --fetch-wheels here first" >&2; exit 2; }
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/tgrpo_site \
    "$WHEELS"/*.whl
  export PYTHONPATH=/tmp/tgrpo_site
  pins_ok
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
{ nvidia-smi; df -h /tmp; free -g; } > "$OUT/machine.txt" 2>&1 || true
python3 -c 'import torch; assert torch.cuda.is_available(), torch.__version__'
python3 bench/gpu.py --device cuda:0 --cache-dir /tmp/tgrpo_standins 2>&1 \
  | grep --line-buffered -v 'Loading checkpoint shards' | tee "$OUT/gpu_bench.txt"
