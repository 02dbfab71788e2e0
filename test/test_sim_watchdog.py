"""WatchdogEnv: a real LiberoEnv in a worker process, killed when a call hangs."""

import os
import signal
import time

import numpy as np
import pytest

from tgrpo_ros.sim.watchdog import EnvHang, WatchdogEnv

os.environ.setdefault('MUJOCO_GL', 'egl')
HOLD = np.array([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0])


def test_a_hung_env_worker_is_killed_and_reported():
    env = WatchdogEnv(2.0, suite='libero_object', task_id=0, camera_size=128,
                      multisample=False)
    try:
        env.max_steps = 5
        assert env.max_steps == 5
        obs = env.reset(0)
        assert obs['image'].shape == (224, 224, 3)
        _, _, done, info = env.step(HOLD)
        assert not done and info['steps'] == 1
        with pytest.raises(ValueError, match='init_state_id'):  # input errors pass through
            env.reset(10_000)
        # A renderer that hangs with no error: the worker stops answering.
        os.kill(env.pid, signal.SIGSTOP)
        start = time.monotonic()
        with pytest.raises(EnvHang, match=r"gave no answer to 'step' in 2.0 s; killed it"):
            env.step(HOLD)
        # 2 s of silence, then a kill: not a hang. Generous, as CI's cores may be busy
        # (12 s was seen with both cores loaded by other jobs).
        assert time.monotonic() - start < 60.0
        with pytest.raises(ProcessLookupError):
            os.kill(env.pid, 0)  # gone (and reaped)
    finally:
        env.close()
