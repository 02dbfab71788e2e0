"""Slow checks: all 10 LIBERO-Object tasks create/reset/step; expert demonstrations."""

import os

import numpy as np
import pytest

from tgrpo_ros.sim import LiberoEnv
from tgrpo_ros.sim.demos import load_demo, record_demos
from tgrpo_ros.sim.libero_env import task_instructions

os.environ.setdefault('MUJOCO_GL', 'egl')
os.environ.setdefault('LP_NUM_THREADS', '1')

OBJECTS = ('alphabet soup', 'cream cheese', 'salad dressing', 'bbq sauce', 'ketchup',
           'tomato sauce', 'butter', 'milk', 'chocolate pudding', 'orange juice')


@pytest.mark.slow
def test_all_ten_tasks_create_reset_step():
    instructions = task_instructions('libero_object')
    assert instructions == [f'pick up the {o} and place it in the basket' for o in OBJECTS]
    env = LiberoEnv(task_id=0, camera_size=128, max_steps=3)
    try:
        for task_id in range(10):
            env.set_task(task_id)
            obs = env.reset(task_id * 5)
            assert obs['instruction'] == instructions[task_id]
            assert obs['image'].shape == (224, 224, 3) and obs['image'].std() > 10
            assert env.target_object == OBJECTS[task_id].replace(' ', '_') + '_1'
            hold = np.array([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0])
            rewards = [env.step(hold)[1] for _ in range(3)]
            assert all(0.0 < r <= 0.1 for r in rewards)  # approach stage
    finally:
        env.close()


@pytest.mark.slow
def test_expert_demo_roundtrip(tmp_path):
    index = record_demos(str(tmp_path), tasks=[6], num_init_states=1, num_envs=1,
                         camera_size=128, progress=False)
    assert len(index) == 1 and index[0]['file'] == 'task06_init00.npz'
    demo = load_demo(tmp_path / 'task06_init00.npz')
    steps = demo['length']
    assert demo['success'] and demo['instruction'].endswith('butter and place it in the basket')
    assert demo['images'].shape == (steps, 224, 224, 3) and demo['images'].dtype == np.uint8
    assert demo['actions'].shape == (steps, 7) and demo['rewards'].shape == (steps,)
    assert set(np.unique(demo['actions'][:, 6])) == {0.0, 1.0}  # policy convention
    np.testing.assert_array_equal(demo['actions'][:, :6], demo['env_actions'][:, :6])
    assert demo['stages'][-1] == 4
    assert (tmp_path / 'index.json').is_file()
