# Environment for every tgrpo_ros process started from this checkout.
# Source it: `. scripts/env.sh`. The Makefile does this for its targets.
_tgrpo_root=$(cd "$(dirname "${BASH_SOURCE[0]:-$0}")/.." && pwd)
export VIRTUAL_ENV="$_tgrpo_root/.venv"
export PATH="$VIRTUAL_ENV/bin:$PATH"
# ament_index look-ups (get_package_share_directory) search this prefix; pip
# installs the package's share/ files into the venv.
export AMENT_PREFIX_PATH="$VIRTUAL_ENV${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
# The real ROS 2 launch and CLI tools (ros2 launch, ros2 lifecycle, ros2 topic, ...) when
# scripts/setup.sh installed them from ../shared/ros2_upstream (docs/deploy.md).
if [ -d "$VIRTUAL_ENV/ros2_tools" ]; then
  case ":${PYTHONPATH:-}:" in
    *":$VIRTUAL_ENV/ros2_tools:"*) ;;
    *) export PYTHONPATH="$VIRTUAL_ENV/ros2_tools${PYTHONPATH:+:$PYTHONPATH}" ;;
  esac
  export PATH="$VIRTUAL_ENV/ros2_tools/bin:$PATH"
fi
# DDS discovery stays on loopback unless the caller chose otherwise
# (multi-host deployments set SUBNET explicitly).
export ROS_AUTOMATIC_DISCOVERY_RANGE="${ROS_AUTOMATIC_DISCOVERY_RANGE:-LOCALHOST}"
# Headless MuJoCo rendering, one llvmpipe thread per env process.
export MUJOCO_GL="${MUJOCO_GL:-egl}"
export PYOPENGL_PLATFORM="${PYOPENGL_PLATFORM:-$MUJOCO_GL}"
export LP_NUM_THREADS="${LP_NUM_THREADS:-1}"
# No model hub is reachable: everything loads from local paths.
export HF_HUB_OFFLINE=1
export TRANSFORMERS_OFFLINE=1
unset _tgrpo_root
