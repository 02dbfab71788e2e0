#!/usr/bin/env bash
# Set up everything tgrpo_ros needs on a fresh Debian 12 / Python 3.11 machine:
# system packages (headless EGL rendering, network namespaces), a virtual
# environment in .venv with pinned Python packages, and the package itself.
# Idempotent: when nothing changed since the last run it returns in about a second.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3.11}
APT_PACKAGES=(libegl1 libegl-mesa0 libgl1-mesa-dri libgles2 iproute2 util-linux)
REQUIREMENTS=(requirements/00-torch.txt requirements/10-ml.txt requirements/20-ros.txt
              requirements/30-sim.txt)

log() { printf '[setup] %s\n' "$*"; }

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' \
    || missing+=("$pkg")
done
if ((${#missing[@]})); then
  log "installing system packages: ${missing[*]}"
  SUDO=''
  [ "$(id -u)" -ne 0 ] && SUDO='sudo'
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
    "${missing[@]}"
fi

stamp_value=$(cat "${REQUIREMENTS[@]}" requirements/lock.txt setup.py setup.cfg package.xml \
              | sha256sum | cut -d' ' -f1)
stamp_file="$VENV/.tgrpo-setup-stamp"
if [ -f "$stamp_file" ] && [ "$(cat "$stamp_file")" = "$stamp_value" ]; then
  exit 0
fi

if [ ! -x "$VENV/bin/python" ]; then
  log "creating $VENV with $PYTHON"
  "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip install --disable-pip-version-check -q)
# Torch first, alone, so that nothing later pulls a different (CUDA) build.
for req in "${REQUIREMENTS[@]}"; do
  log "pip install -r $req"
  "${PIP[@]}" -r "$req" -c requirements/lock.txt
done
log 'pip install -e . (tgrpo_ros)'
"${PIP[@]}" --no-deps --no-build-isolation -e .
# An editable install does not copy setup.py's data_files: link them into the
# venv prefix, as `colcon build --symlink-install` would, so that ament_index
# finds the package (AMENT_PREFIX_PATH=.venv) and its launch/ and config/.
share="$VENV/share/tgrpo_ros"
mkdir -p "$share" "$VENV/share/ament_index/resource_index/packages"
ln -sfn "$PWD/resource/tgrpo_ros" "$VENV/share/ament_index/resource_index/packages/tgrpo_ros"
for item in package.xml launch config models; do ln -sfn "$PWD/$item" "$share/$item"; done
"$VENV/bin/python" -c 'import torch; assert torch.__version__.startswith("2.13.0"), torch.__version__'
echo "$stamp_value" > "$stamp_file"
log 'done'
