"""
One whole episode with an in-process controller (scripted expert or random).

Controllers that need the env itself (privileged state) run next to it, inside the
env's process; ``run_scripted_episode`` is what a vec-env worker executes.
"""

import time

import numpy as np

from tgrpo_ros.sim.expert import env_to_policy_action, ScriptedExpert

CONTROLLERS = ('expert', 'random')


class RandomController:
    """Uniform random actions: deltas in [-1, 1], gripper open or closed (env convention)."""

    def __init__(self, env, seed=0):
        """Seeded per episode so a run is reproducible."""
        self._rng = np.random.default_rng(seed)

    def reset(self):
        """Nothing to plan."""

    def act(self, obs):
        """Return a random env-convention action [7]."""
        action = self._rng.uniform(-1.0, 1.0, size=7)
        action[6] = self._rng.choice((-1.0, 1.0))
        return action


def make_controller(name, env, seed=0):
    """Build the in-process controller ``name`` for ``env``."""
    if name == 'expert':
        return ScriptedExpert(env)
    if name == 'random':
        return RandomController(env, seed=seed)
    raise ValueError(f'Unknown controller {name!r}; available: {", ".join(CONTROLLERS)}')


def run_scripted_episode(env, controller, init_state_id, seed=0, record=False):
    """
    Run one episode of ``controller`` on ``env`` from ``init_state_id``.

    Returns a dict: task_id, init_state_id, instruction, success, length (policy
    steps), return, max_stage, seconds; with ``record`` also images uint8
    [T, 224, 224, 3] (the policy's view before each action), actions [T, 7] (policy
    convention: gripper 1 open / 0 close), env_actions [T, 7], rewards [T], stages [T].
    """
    start = time.perf_counter()
    obs = env.reset(init_state_id)
    agent = make_controller(controller, env, seed=seed)
    agent.reset()
    if record and 'image' not in obs:
        raise ValueError('record=True needs an env created with render=True')
    images, env_actions, rewards, stages = [], [], [], []
    done, info, total = False, {'success': False, 'steps': 0}, 0.0
    while not done:
        action = agent.act(obs)
        if record:
            images.append(obs['image'])
        obs, reward, done, info = env.step(action, convention='env')
        total += reward
        env_actions.append(action)
        rewards.append(reward)
        stages.append(info['stage'])
    result = {
        'task_id': env.task_id, 'init_state_id': int(init_state_id),
        'instruction': env.instruction, 'controller': controller,
        'success': bool(info['success']), 'length': int(info['steps']),
        'return': float(total), 'max_stage': int(max(stages)),
        'seconds': time.perf_counter() - start,
    }
    if record:
        env_actions = np.asarray(env_actions, dtype=np.float32)  # [T, 7]
        result.update({
            'images': np.asarray(images, dtype=np.uint8),  # [T, 224, 224, 3]
            'actions': env_to_policy_action(env_actions).astype(np.float32),  # [T, 7]
            'env_actions': env_actions,
            'rewards': np.asarray(rewards, dtype=np.float32),  # [T]
            'stages': np.asarray(stages, dtype=np.int8),  # [T]
        })
    return result
