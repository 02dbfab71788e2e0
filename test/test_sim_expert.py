"""Scripted expert: geometry helpers on hand-made numbers, one real episode."""

import math
import os

import numpy as np
import pytest

from tgrpo_ros.sim import LiberoEnv
from tgrpo_ros.sim.controllers import run_scripted_episode
from tgrpo_ros.sim.expert import box_gap, choose_grasp_xy, DOWN, env_to_policy_action
from tgrpo_ros.sim.expert import quat_to_matrix, rotation_error, ScriptedExpert

os.environ.setdefault('MUJOCO_GL', 'egl')


def test_quaternion_and_rotation_error():
    np.testing.assert_allclose(quat_to_matrix((0, 0, 0, 1)), np.eye(3))
    # 180 degrees about x (xyzw = 1, 0, 0, 0) is the pointing-down rotation
    np.testing.assert_allclose(quat_to_matrix((1, 0, 0, 0)), DOWN, atol=1e-12)
    half = math.sqrt(0.5)
    rot_z90 = quat_to_matrix((0, 0, half, half))
    np.testing.assert_allclose(rotation_error(np.eye(3), rot_z90), [0, 0, math.pi / 2])
    np.testing.assert_allclose(rotation_error(rot_z90, np.eye(3)), [0, 0, -math.pi / 2])
    assert np.linalg.norm(rotation_error(np.eye(3), DOWN)) == pytest.approx(math.pi)


def test_box_gap():
    assert box_gap([0, 0], [1, 1], [2, 0], [3, 1]) == pytest.approx(1.0)
    assert box_gap([0, 0], [1, 1], [2, 2], [3, 3]) == pytest.approx(math.sqrt(2))
    assert box_gap([0, 0], [1, 1], [0.75, 0.5], [3, 3]) == pytest.approx(-0.25)


def test_grasp_slides_away_from_a_tall_neighbour():
    box_lo, box_hi = np.array([0.0, -0.02, 0.0]), np.array([0.08, 0.02, 0.018])  # flat box
    alone = choose_grasp_xy(box_lo, box_hi, [], grasp_z=0.012)
    np.testing.assert_allclose(alone, [0.04, 0.0])
    bottle = (np.array([0.07, -0.13, 0.0]), np.array([0.13, -0.07, 0.076]))  # +x, -y side
    shifted = choose_grasp_xy(box_lo, box_hi, [bottle], grasp_z=0.012)
    assert shifted[0] < 0.02  # moved toward -x, away from the bottle
    assert shifted[0] >= 0.011 - 1e-9  # fingers still on the box
    assert shifted[1] == pytest.approx(0.0)


def test_env_to_policy_gripper():
    actions = np.array([[0.1, 0, 0, 0, 0, 0, -1.0], [0, 0, 0, 0, 0, 0, 1.0]])
    out = env_to_policy_action(actions)
    np.testing.assert_array_equal(out[:, 6], [1.0, 0.0])  # open -> 1, close -> 0
    assert actions[0, 6] == -1.0  # caller's array untouched


def test_expert_solves_cream_cheese_through_every_stage():
    """Task 1 init 1 failed before the grasp point slid away from the tomato sauce."""
    env = LiberoEnv(task_id=1, render=False)
    try:
        obs = env.reset(1)
        expert = ScriptedExpert(env)
        expert.reset()
        stages, rewards, done = [], [], False
        while not done:
            obs, reward, done, info = env.step(expert.act(obs), convention='env')
            rewards.append(reward)
            if not stages or stages[-1] != info['stage']:
                stages.append(info['stage'])
        result = run_scripted_episode(env, 'expert', 1)
    finally:
        env.close()
    assert info['success']
    assert 130 <= info['steps'] <= 200
    assert stages == [0, 1, 2, 3, 4]  # the reward never falls back a stage
    # a soft reset replays the episode up to contact-solver warm-start noise
    assert result['success'] and abs(result['length'] - info['steps']) <= 2
    assert result['return'] == pytest.approx(sum(rewards), rel=1e-3)
