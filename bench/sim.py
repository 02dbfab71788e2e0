"""
Benchmark LIBERO env throughput: 1 vs 2 processes, 128 vs 224 px, reset time, RSS.

Targets and last measured figures: docs/testing.md.

Run: MUJOCO_GL=egl .venv/bin/python bench/sim.py [--steps 60]
Prints one line per figure; the last line is ``two_proc_speedup: X`` (aggregate
steps/s of 2 processes over 1, at 128 px with multisampling, the training setup).
Also measures the multisampling-off option: its speed and how much it changes the
policy's 224 px input (mean absolute pixel difference on the same state).
"""

import argparse
import os
import time

import numpy as np

os.environ.setdefault('MUJOCO_GL', 'egl')
os.environ.setdefault('LP_NUM_THREADS', '1')

from tgrpo_ros.sim.vec_env import VecLiberoEnv  # noqa: E402 - after the GL settings


def rss_mib(pid):
    """Resident set size (MiB) of process ``pid``."""
    with open(f'/proc/{pid}/status', encoding='ascii') as stream:
        for line in stream:
            if line.startswith('VmRSS:'):
                return int(line.split()[1]) / 1024.0
    return float('nan')


def measure(num_envs, camera_size, steps, multisample=True, seed=0):
    """Return (steps/s over all envs, mean reset s, RSS MiB per env, first images)."""
    kwargs = {'task_id': 0, 'camera_size': camera_size, 'multisample': multisample,
              'max_steps': steps + 1}
    rng = np.random.default_rng(seed)
    with VecLiberoEnv(num_envs, kwargs) as vec:
        vec.info()  # creates the envs
        start = time.perf_counter()
        obs = vec.reset([0] * num_envs)
        reset_s = (time.perf_counter() - start)
        start = time.perf_counter()
        for _ in range(steps):
            actions = rng.uniform(-1.0, 1.0, size=(num_envs, 7))
            actions[:, 6] = rng.integers(0, 2, size=num_envs)
            vec.step(actions)
        rate = num_envs * steps / (time.perf_counter() - start)  # env steps/s
        rss = float(np.mean([rss_mib(p.pid) for p in vec._procs]))
    return rate, reset_s, rss, [o['image'] for o in obs]


def main(argv=None):
    """Print the benchmark figures."""
    parser = argparse.ArgumentParser(
        description=__doc__.split('\n')[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument('--steps', type=int, default=60, help='steps per env per run')
    args = parser.parse_args(argv)
    print(f'cpus: {os.cpu_count()}, load average: {os.getloadavg()[0]:.1f}, '
          f'MUJOCO_GL={os.environ["MUJOCO_GL"]}, agentview only, task 0')
    rates = {}
    for size in (128, 224):
        for num_envs in (1, 2):
            rate, reset_s, rss, _ = measure(num_envs, size, args.steps)
            rates[size, num_envs] = rate
            print(f'steps_per_s[{size}px, {num_envs} proc]: {rate:.2f}  '
                  f'(reset {reset_s:.2f} s incl. 10 wait steps, RSS {rss:.0f} MiB/env)')
    for size in (128, 224):
        print(f'speedup[{size}px]: {rates[size, 2] / rates[size, 1]:.2f}')
    rate_off, _, _, images_off = measure(1, 128, args.steps, multisample=False)
    _, _, _, images_on = measure(1, 128, 5, multisample=True)
    diff = np.abs(images_on[0].astype(np.int16) - images_off[0].astype(np.int16))
    print(f'no_multisample steps_per_s[128px, 1 proc]: {rate_off:.2f} '
          f'(x{rate_off / rates[128, 1]:.2f}); policy-input change: mean |diff| '
          f'{diff.mean():.2f} grey levels, max {diff.max()}, '
          f'{100.0 * (diff.max(axis=2) > 16).mean():.1f}% pixels > 16')
    print(f'two_proc_speedup: {rates[128, 2] / rates[128, 1]:.2f}')


if __name__ == '__main__':
    main()
