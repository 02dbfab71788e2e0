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


def dart_noise(action, sigma, rng):
    """
    Return ``action`` (env convention [7]) with Gaussian noise on the 6 arm dims.

    DART (Laskey et al., 2017): the executed action is perturbed so the demonstrations
    visit the states a learned policy drifts into, while the clean expert action stays
    the label. The gripper command is left as it is; arm dims are clipped to [-1, 1].
    """
    noisy = np.array(action, dtype=np.float64, copy=True)
    noisy[:6] = np.clip(noisy[:6] + rng.normal(0.0, sigma, size=6), -1.0, 1.0)
    return noisy


def run_scripted_episode(env, controller, init_state_id, seed=0, record=False, dart_sigma=0.0):
    """
    Run one episode of ``controller`` on ``env`` from ``init_state_id``.

    Returns a dict: task_id, init_state_id, instruction, success, length (policy
    steps), return, max_stage, seconds; with ``record`` also images uint8
    [T, 224, 224, 3] (the policy's view before each action), actions [T, 7] (policy
    convention: gripper 1 open / 0 close), env_actions [T, 7], rewards [T], stages [T].
    With ``dart_sigma`` > 0 the env executes the controller's action plus Gaussian noise
    of that standard deviation on the arm dims (``dart_noise``, seeded by ``seed``) while
    ``actions`` and ``env_actions`` record the clean controller action (the label).
    """
    if not dart_sigma >= 0.0:
        raise ValueError(f'dart_sigma must be >= 0, got {dart_sigma!r}')
    start = time.perf_counter()
    obs = env.reset(init_state_id)
    agent = make_controller(controller, env, seed=seed)
    agent.reset()
    noise_rng = np.random.default_rng([int(seed), 0xDA27]) if dart_sigma > 0 else None
    if record and 'image' not in obs:
        raise ValueError('record=True needs an env created with render=True')
    images, env_actions, rewards, stages = [], [], [], []
    done, info, total = False, {'success': False, 'steps': 0}, 0.0
    while not done:
        action = agent.act(obs)
        if record:
            images.append(obs['image'])
        executed = action if noise_rng is None else dart_noise(action, dart_sigma, noise_rng)
        obs, reward, done, info = env.step(executed, convention='env')
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
