#!/usr/bin/env bash
# Set up everything tgrpo_ros needs on a fresh Debian 12 / Python 3.11 machine:
# system packages (headless EGL rendering, network namespaces), a virtual
# environment in .venv with pinned Python packages, and the package itself.
# Idempotent: when nothing changed since the last run it returns in about a second.
# With ../shared/ros2_upstream beside the checkout it also installs the real ROS 2
# launch and CLI tools (ros2 launch, ros2 lifecycle, ...) into .venv/ros2_tools.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3.11}
APT_PACKAGES=(libegl1 libegl-mesa0 libgl1-mesa-dri libgles2 iproute2 util-linux)
# SIM_PROFILE=paper installs the MuJoCo LIBERO's datasets were rendered with
# (requirements/profile-paper.txt, docs/sim.md); default: the pins of 30-sim.txt.
SIM_PROFILE=${SIM_PROFILE:-default}
case "$SIM_PROFILE" in
  default|paper) ;;
  *) echo "[setup] SIM_PROFILE '$SIM_PROFILE' is unknown; choose default or paper" >&2; exit 2 ;;
esac
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

stamp_value=$( (cat "${REQUIREMENTS[@]}" requirements/lock.txt requirements/profile-paper.txt \
                   setup.py setup.cfg package.xml; echo "SIM_PROFILE=$SIM_PROFILE") \
              | sha256sum | cut -d' ' -f1)
stamp_file="$VENV/.tgrpo-setup-stamp"

install_python_packages() {
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
  if [ "$SIM_PROFILE" = paper ]; then
    log 'pip install -r requirements/profile-paper.txt (the paper-faithful MuJoCo)'
    "${PIP[@]}" --no-deps -r requirements/profile-paper.txt
  fi
  log 'pip install -e . (tgrpo_ros)'
  "${PIP[@]}" --no-deps --no-build-isolation -e .
  "$VENV/bin/python" -c 'import torch; assert torch.__version__.startswith("2.13.0"), torch.__version__'
}

# The layout of a ROS install, in the venv prefix, as `colcon build --symlink-install` makes
# it (an editable install copies none of setup.py's data_files):
# - share/ files linked ONE BY ONE: `ros2 launch` finds launch files with os.walk, which
#   does not enter a symlinked directory;
# - the node executables also in lib/tgrpo_ros/ (setup.cfg's install_scripts), where
#   launch_ros runs them from; pip puts console scripts in bin/ only.
# Cheap (a few dozen links), so it runs every time: new launch or config files appear.
install_ros_layout() {
  local share="$VENV/share/tgrpo_ros" libexec="$VENV/lib/tgrpo_ros" item path name
  mkdir -p "$share" "$libexec" "$VENV/share/ament_index/resource_index/packages"
  ln -sfn "$PWD/resource/tgrpo_ros" "$VENV/share/ament_index/resource_index/packages/tgrpo_ros"
  for item in launch config models; do  # directory links of earlier set-ups hide the files
    if [ -L "$share/$item" ]; then rm "$share/$item"; fi
  done
  shopt -s nullglob
  for path in package.xml launch/*.launch.py config/*.yaml models/*/*; do
    [ -f "$path" ] || continue
    mkdir -p "$share/$(dirname "$path")"
    ln -sfn "$PWD/$path" "$share/$path"
  done
  shopt -u nullglob
  find "$share" -xtype l -delete  # links to files that were removed from the checkout
  for name in $("$VENV/bin/python" -c 'from importlib.metadata import distribution as d
print(" ".join(e.name for e in d("tgrpo_ros").entry_points if e.group == "console_scripts"))'
  ); do
    ln -sfn "../../bin/$name" "$libexec/$name"
  done
}

# The real ROS 2 Jazzy launch and CLI tools (ros2 launch, ros2 lifecycle, ros2 topic, ...):
# not on PyPI; installed from ../shared/ros2_upstream when that folder exists (CI and the
# developers' machines) into $VENV/ros2_tools, which scripts/env.sh puts on the paths.
# install.sh fetches four small packages from PyPI: this runs outside any private network
# namespace. Re-installed only when install.sh or its tarball changed.
ROS2_UPSTREAM=${TGRPO_ROS2_UPSTREAM:-$(dirname "$PWD")/shared/ros2_upstream}
ROS2_TOOLS="$VENV/ros2_tools"
install_ros2_tools() {
  [ -f "$ROS2_UPSTREAM/install.sh" ] || return 0
  local value venv
  venv=$(cd "$VENV" && pwd)
  value=$(cat "$ROS2_UPSTREAM"/install.sh "$ROS2_UPSTREAM"/*.tar.gz | sha256sum | cut -d' ' -f1)
  if [ -f "$ROS2_TOOLS/.tgrpo-stamp" ] && [ "$(cat "$ROS2_TOOLS/.tgrpo-stamp")" = "$value" ]; then
    return 0
  fi
  log "installing the ROS 2 launch and CLI tools from $ROS2_UPSTREAM into $ROS2_TOOLS"
  rm -rf "$ROS2_TOOLS"
  PATH="$venv/bin:$PATH" VIRTUAL_ENV="$venv" bash "$ROS2_UPSTREAM/install.sh" \
    "$ROS2_TOOLS" > /dev/null
  echo "$value" > "$ROS2_TOOLS/.tgrpo-stamp"
}

if [ ! -f "$stamp_file" ] || [ "$(cat "$stamp_file")" != "$stamp_value" ]; then
  install_python_packages
  echo "$stamp_value" > "$stamp_file"
  log 'python packages done'
fi
install_ros_layout
install_ros2_tools
