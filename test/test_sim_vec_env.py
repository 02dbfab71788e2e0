"""K env worker processes: concurrent reset/step, forwarded errors, clean shutdown."""

import os

import numpy as np
import pytest

from tgrpo_ros.sim.vec_env import VecLiberoEnv

os.environ.setdefault('MUJOCO_GL', 'egl')
os.environ.setdefault('LP_NUM_THREADS', '1')


def test_two_workers_step_and_survive_bad_input():
    vec = VecLiberoEnv(2, [{'task_id': 0, 'render': False, 'max_steps': 5},
                           {'task_id': 3, 'render': False, 'max_steps': 5}])
    procs = list(vec._procs)
    try:
        obs = vec.reset([0, 7])
        assert [o['instruction'] for o in obs] == [
            'pick up the alphabet soup and place it in the basket',
            'pick up the bbq sauce and place it in the basket']
        hold = np.tile([0.0, 0, 0, 0, 0, 0, 1.0], (2, 1))
        obs, rewards, dones, infos = vec.step(hold)
        assert rewards.shape == (2,) and np.all(rewards > 0)
        assert [i['steps'] for i in infos] == [1, 1]
        bad = hold.copy()
        bad[1, 2] = np.nan
        with pytest.raises(ValueError, match='non-finite'):
            vec.step(bad)
        with pytest.raises(ValueError, match='init_state_id 99 out of range'):
            vec.reset([0, 99])
        # both workers still serve; worker 1 kept its episode, worker 0 restarted
        obs, rewards, dones, infos = vec.step(hold)
        assert [i['steps'] for i in infos] == [1, 2]
        episode = vec.call('episode', [('random', 0, 0)], indices=[1])[0]
        assert episode['length'] == 5 and not episode['success']
        assert episode['task_id'] == 3
    finally:
        vec.close()
    assert not any(p.is_alive() for p in procs)
