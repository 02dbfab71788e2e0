"""
Plain-Python group rollouts: N envs from one (task, init state), one batched policy.

No ROS. Used by ``bench/learn.py`` and as the no-ROS baseline of
``bench/rollout.py``. The envs run either in worker processes
(``tgrpo_ros.sim.vec_env.VecLiberoEnv``, stepped concurrently) or in this process
one after the other (``parallel=False``; no process start-up, least memory).
"""

import time
from typing import List, Optional

import numpy as np
import torch

from tgrpo_ros.episode import Episode, EpisodeBuilder
from tgrpo_ros.sim.libero_env import episode_step_limit


class _SequentialEnvs:
    """The subset of VecLiberoEnv's API used here, over in-process LiberoEnvs."""

    def __init__(self, num_envs, env_kwargs):
        from tgrpo_ros.sim import LiberoEnv
        self.envs = []
        try:
            for _ in range(num_envs):
                self.envs.append(LiberoEnv(**env_kwargs))
        except Exception:
            self.close()
            raise
        self.num_envs = num_envs

    def set_task(self, task_ids, indices=None):
        for index, task in zip(indices or range(self.num_envs), task_ids):
            self.envs[index].set_task(int(task))

    def reset(self, init_state_ids, indices=None):
        return [self.envs[i].reset(int(s))
                for i, s in zip(indices or range(self.num_envs), init_state_ids)]

    def step(self, actions, convention='policy', indices=None):
        results = [self.envs[i].step(a, convention)
                   for i, a in zip(indices or range(self.num_envs), actions)]
        obs, rewards, dones, infos = zip(*results)
        return list(obs), np.array(rewards), np.array(dones), list(infos)

    def close(self):
        for env in self.envs:
            env.close()
        self.envs = []


class GroupRollout:
    """Run TGRPO groups: N envs reset to the same (task, init state), stepped in lockstep."""

    def __init__(self, num_envs: int, suite: str = 'libero_object', task_id: int = 0,
                 camera_size: int = 128, max_steps: Optional[int] = None, reward=None,
                 parallel: bool = True, multisample: bool = True, name: str = 'rollout'):
        """Create the N envs (~5-8 s each; in parallel workers when ``parallel``)."""
        if num_envs < 2:
            raise ValueError(f'num_envs ({num_envs}) must be at least 2 (a TGRPO group)')
        # The same limit as a sim bridge running an assignment of max_steps.
        env_kwargs = {'suite': suite, 'task_id': int(task_id), 'camera_size': camera_size,
                      'max_steps': episode_step_limit(suite, max_steps), 'reward': reward,
                      'multisample': multisample}
        if parallel:
            from tgrpo_ros.sim.vec_env import VecLiberoEnv
            self.envs = VecLiberoEnv(num_envs, env_kwargs)
        else:
            self.envs = _SequentialEnvs(num_envs, env_kwargs)
        self.num_envs = num_envs
        self.suite = suite
        self.task_id = int(task_id)
        self.name = name

    def run(self, policy, init_state_id: int, group_id: int = 0,
            task_id: Optional[int] = None, temperature: Optional[float] = None,
            generator: Optional[torch.Generator] = None,
            stop_on_first_success: bool = False) -> List[Episode]:
        """
        Roll out one group with ``policy``; return its N episodes (in env order).

        Each step samples the actions of all still-running envs in one batched
        ``policy.sample`` call. With ``stop_on_first_success`` every episode ends at
        the step where the first one succeeds (the paper's rollouts). ``temperature``
        defaults to the policy's own.
        """
        start = time.perf_counter()
        n = self.num_envs
        if task_id is not None and int(task_id) != self.task_id:
            self.envs.set_task([int(task_id)] * n)
            self.task_id = int(task_id)
        obs = self.envs.reset([int(init_state_id)] * n)
        instruction = obs[0]['instruction']
        version = int(getattr(policy, 'adapter_version', -1))
        builders = [EpisodeBuilder(
            task_id=self.task_id, init_state_id=init_state_id, group_id=group_id,
            instruction=instruction, suite=self.suite, bridge=f'{self.name}{i}',
            episode_id=f'{self.name}{i}/{group_id}') for i in range(n)]
        active = list(range(n))
        sample_time = 0.0
        while active:
            batch = np.stack([obs[i]['image'] for i in active])  # [B, 224, 224, 3] uint8
            out = policy.sample(batch, [instruction] * len(active), temperature=temperature,
                                generator=generator)
            sample_time += out.seconds
            new_obs, step_rewards, dones, infos = self.envs.step(out.actions, indices=active)
            still = []
            for j, i in enumerate(active):
                builders[i].add_step(batch[j], out.action_tokens[j].numpy(),
                                     out.log_probs[j].numpy(), out.actions[j], step_rewards[j],
                                     infos[j]['success'], version)
                obs[i] = new_obs[j]
                if not dones[j]:
                    still.append(i)
            if stop_on_first_success and any(b.success for b in builders):
                still = []
            active = still
        extras = {'rollout_seconds': time.perf_counter() - start, 'sample_seconds': sample_time}
        return [builder.build(dict(extras)) for builder in builders]

    def close(self) -> None:
        """Close every env (and worker process)."""
        self.envs.close()

    def __enter__(self):
        """Use as a context manager that closes the envs."""
        return self

    def __exit__(self, *exc):
        """Close on leaving the with-block."""
        self.close()
