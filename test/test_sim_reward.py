"""Unit tests of the dense stage reward (pure function, no simulator)."""

import math

import pytest

from tgrpo_ros.sim.reward import RewardConfig, stage_reward
from tgrpo_ros.sim.reward import STAGE_APPROACH, STAGE_GRASP, STAGE_LIFT, STAGE_PLACE
from tgrpo_ros.sim.reward import STAGE_TRANSPORT


def make_state(**overrides):
    """Object 0.3 m from the eef along x, basket 0.5 m away along y, nothing held."""
    state = {'eef_pos': (0.3, 0.0, 0.2), 'object_pos': (0.0, 0.0, 0.2),
             'basket_pos': (0.0, 0.5, 0.0), 'object_lift': 0.0, 'grasped': False,
             'success': False, 'first_success': False, 'steps_left': 100}
    state.update(overrides)
    return state


def test_approach_is_exponential_in_distance():
    cfg = RewardConfig()
    reward, stage = stage_reward(make_state(), cfg)
    assert stage == STAGE_APPROACH
    assert reward == pytest.approx(0.1 * math.exp(-0.3 / 0.2))
    closer, _ = stage_reward(make_state(eef_pos=(0.28, 0.0, 0.2)), cfg)
    # 2 cm closer gives a larger reward even far away (informative for a random policy)
    assert closer - reward == pytest.approx(0.1 * (math.exp(-1.4) - math.exp(-1.5)))
    assert closer - reward > 1e-3


def test_grasp_and_lift_stages():
    reward, stage = stage_reward(make_state(grasped=True, object_lift=0.05))
    assert stage == STAGE_GRASP
    assert reward == pytest.approx(0.1 + 0.2 + 0.2 * 0.5)
    reward, stage = stage_reward(make_state(grasped=True, object_lift=0.12))
    assert stage == STAGE_LIFT
    assert reward == pytest.approx(0.5 + 0.2 * math.exp(-0.5 / 0.2))


def test_transport_stage_over_basket():
    state = make_state(grasped=True, object_lift=0.2, object_pos=(0.03, 0.5, 0.35))
    reward, stage = stage_reward(state)
    assert stage == STAGE_TRANSPORT
    assert reward == pytest.approx(0.5 + 0.2 * math.exp(-0.03 / 0.2))
    # released over the basket and falling in: no drop back to the approach level
    released, stage = stage_reward(dict(state, grasped=False, object_lift=0.1))
    assert stage == STAGE_TRANSPORT
    assert released == pytest.approx(reward)


def test_success_with_absorbing_bonus_once():
    cfg = RewardConfig()
    reward, stage = stage_reward(make_state(success=True, first_success=True, steps_left=10))
    assert stage == STAGE_PLACE
    assert reward == pytest.approx(1.0 + 1.0 + 1.0 * 10)
    reward, _ = stage_reward(make_state(success=True, steps_left=9), cfg)
    assert reward == pytest.approx(1.0)
    flat = RewardConfig(absorbing_success=False, success_bonus=2.5)
    reward, _ = stage_reward(make_state(success=True, first_success=True), flat)
    assert reward == pytest.approx(1.0 + 2.5)


@pytest.mark.parametrize('weights', [
    {}, {'approach_weight': 1.0, 'grasp_weight': 0.01, 'lift_weight': 3.0},
    {'transport_weight': 0.0, 'place_weight': 0.05},
])
def test_later_stages_dominate(weights):
    cfg = RewardConfig(**weights)
    samples = {s: [] for s in range(5)}
    for dist in (0.0, 0.01, 0.2, 1.0):
        for lift in (0.0, 0.05, 0.099, 0.1, 0.3):
            for grasped in (False, True):
                state = make_state(eef_pos=(dist, 0.0, 0.2), object_lift=lift, grasped=grasped,
                                   object_pos=(0.0, 0.5 - dist, 0.2))
                reward, stage = stage_reward(state, cfg)
                samples[stage].append(reward)
    samples[STAGE_PLACE].append(stage_reward(make_state(success=True), cfg)[0])
    tops = [max(v) for v in samples.values() if v]
    bottoms = [min(v) for v in samples.values() if v]
    for k in range(len(tops) - 1):
        assert bottoms[k + 1] >= tops[k] - 1e-12, (k, samples)
    assert max(tops) <= cfg.total_weight


def test_config_validation_and_missing_keys():
    with pytest.raises(ValueError, match=r'grasp_weight \(-1\.0\)'):
        RewardConfig(grasp_weight=-1.0)
    with pytest.raises(ValueError, match=r'approach_scale \(0\.0\)'):
        RewardConfig(approach_scale=0.0)
    state = make_state()
    del state['grasped']
    with pytest.raises(KeyError, match='grasped'):
        stage_reward(state)
