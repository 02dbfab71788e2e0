"""TGRPO training core: group rollouts, the update step, checkpoints and metrics (no ROS)."""
