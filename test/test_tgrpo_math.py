"""
Tests of the TGRPO maths (tgrpo_ros.training.tgrpo) and its config (tgrpo_ros.training.config).

Expected numbers are written out by hand; the comments show how each was
computed (sample standard deviation, ddof=1), independently of the code.
"""

import ast
import math
import pathlib

import pytest
import torch

from tgrpo_ros.training.config import TGRPOConfig
from tgrpo_ros.training.tgrpo import group_advantages, group_step_weights, tgrpo_loss

torch.set_num_threads(1)

R2 = 1.0 / math.sqrt(2.0)  # 0.707107
R3 = 1.0 / math.sqrt(3.0)  # 0.577350


def close(actual, expected, atol=1e-6):
    expected = torch.as_tensor(expected, dtype=actual.dtype)
    torch.testing.assert_close(actual, expected, rtol=0.0, atol=atol)


# One group of 3 trajectories of unequal lengths, step limit T = 4.
# Trajectory 1 ends first (success at step 1), trajectory 2 at step 2,
# trajectory 0 runs to the limit. Entries past each length hold NaN on purpose.
NAN = float('nan')
REWARDS = torch.tensor([[0.0, 1.0, 2.0, 4.0],
                        [0.0, 3.0, NAN, NAN],
                        [0.0, 2.0, 5.0, NAN]])  # [3, 4]
MASK = torch.tensor([[True, True, True, True],
                     [True, True, False, False],
                     [True, True, True, False]])  # [3, 4]


def test_masked_mode_hand_table():
    # t=0: [0, 0, 0] no spread -> 0.
    # t=1: [1, 3, 2], mean 2, sample std 1 -> [-1, 1, 0].
    # t=2: valid {0, 2}: [2, 5], mean 3.5, std 3/sqrt(2) -> [-1/sqrt2, 1/sqrt2].
    # t=3: only trajectory 0 runs -> 0.
    # Returns G = [7, 3, 7], mean 17/3, deviations [4/3, -8/3, 4/3],
    # sample var (16/9 + 64/9 + 16/9) / 2 = 16/3, std 4/sqrt3 -> [1, -2, 1]/sqrt3.
    result = group_advantages(REWARDS, MASK, a1=0.3, a2=0.7, mode='masked', eps=0.0)
    close(result.step, [[0.0, -1.0, -R2, 0.0],
                        [0.0, 1.0, 0.0, 0.0],
                        [0.0, 0.0, R2, 0.0]])
    close(result.traj, [R3, -2 * R3, R3])
    close(result.returns, [7.0, 3.0, 7.0])
    assert result.lengths.tolist() == [4, 2, 3]
    assert torch.equal(result.mask, MASK)
    # Fused 0.3 S + 0.7 T, e.g. [0, 1]: 0.3 * -1 + 0.7 / sqrt3 = 0.104145.
    close(result.fused, [[0.404145, 0.104145, 0.192013, 0.404145],
                         [-0.808290, -0.508290, 0.0, 0.0],
                         [0.404145, 0.404145, 0.616277, 0.0]])


def test_paper_mode_hand_table():
    # Cut at the first success: min length 2, all three keep steps 0 and 1.
    # t=0: no spread -> 0; t=1: [1, 3, 2] -> [-1, 1, 0].
    # Returns G = [1, 3, 2], mean 2, sample std 1 -> T = [-1, 1, 0].
    # Fused: t=0: 0.7 T = [-0.7, 0.7, 0]; t=1: 0.3 S + 0.7 T = [-1, 1, 0].
    result = group_advantages(REWARDS, MASK, a1=0.3, a2=0.7, mode='paper', eps=0.0)
    cut = torch.tensor([[True, True, False, False]] * 3)
    assert torch.equal(result.mask, cut)
    assert result.lengths.tolist() == [2, 2, 2]
    close(result.returns, [1.0, 3.0, 2.0])
    close(result.traj, [-1.0, 1.0, 0.0])
    close(result.step, [[0.0, -1.0, 0.0, 0.0],
                        [0.0, 1.0, 0.0, 0.0],
                        [0.0, 0.0, 0.0, 0.0]])
    close(result.fused, [[-0.7, -1.0, 0.0, 0.0],
                         [0.7, 1.0, 0.0, 0.0],
                         [0.0, 0.0, 0.0, 0.0]])


def test_epsilon_shrinks_advantages_slightly():
    # Paper table with eps = 1e-6: T_0 = -1 / (1 + 1e-6) = -0.999999.
    result = group_advantages(REWARDS, MASK, mode='paper', eps=1e-6)
    close(result.traj.double(), [-1.0 / (1.0 + 1e-6), 1.0 / (1.0 + 1e-6), 0.0], atol=1e-7)
    assert result.traj[0] != -1.0


@pytest.mark.parametrize('mode', ['masked', 'paper'])
def test_ablations_are_the_parts(mode):
    full = group_advantages(REWARDS, MASK, a1=0.3, a2=0.7, mode=mode)
    traj_only = group_advantages(REWARDS, MASK, a1=0.0, a2=1.0, mode=mode)
    step_only = group_advantages(REWARDS, MASK, a1=1.0, a2=0.0, mode=mode)
    close(step_only.fused, full.step)
    expected_traj = torch.where(full.mask, full.traj.unsqueeze(1), torch.tensor(0.0))
    close(traj_only.fused, expected_traj)


LENGTHS_UNEQUAL = torch.arange(6).unsqueeze(0) < torch.tensor([[6], [3], [5], [2]])  # [4, 6]
LENGTHS_EQUAL = torch.ones(4, 6, dtype=torch.bool)  # [4, 6]


@pytest.mark.parametrize('mode, mask', [
    ('paper', LENGTHS_UNEQUAL), ('paper', LENGTHS_EQUAL), ('masked', LENGTHS_EQUAL)])
@pytest.mark.parametrize('scale, shift', [(3.0, -5.0), (0.01, 100.0), (250.0, 0.5)])
def test_affine_rewards_leave_advantages_unchanged(mode, mask, scale, shift):
    torch.manual_seed(0)
    rewards = torch.randn(4, 6, dtype=torch.float64)
    base = group_advantages(rewards, mask, mode=mode, eps=0.0)
    moved = group_advantages(rewards * scale + shift, mask, mode=mode, eps=0.0)
    torch.testing.assert_close(moved.fused, base.fused, rtol=1e-9, atol=1e-9)
    assert base.fused.abs().max() > 0.5  # the check compares real signal
    # A negative scale flips every advantage.
    flipped = group_advantages(-scale * rewards + shift, mask, mode=mode, eps=0.0)
    torch.testing.assert_close(flipped.fused, -base.fused, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize('scale, shift', [(3.0, -5.0), (0.01, 100.0), (250.0, 0.5)])
def test_masked_unequal_lengths_scale_invariant_step_shift_invariant(scale, shift):
    torch.manual_seed(0)
    rewards = torch.randn(4, 6, dtype=torch.float64)
    base = group_advantages(rewards, LENGTHS_UNEQUAL, mode='masked', eps=0.0)
    scaled = group_advantages(rewards * scale, LENGTHS_UNEQUAL, mode='masked', eps=0.0)
    torch.testing.assert_close(scaled.fused, base.fused, rtol=1e-9, atol=1e-9)
    moved = group_advantages(rewards * scale + shift, LENGTHS_UNEQUAL, mode='masked',
                             eps=0.0)
    torch.testing.assert_close(moved.step, base.step, rtol=1e-9, atol=1e-9)


def test_masked_shift_changes_returns_of_unequal_lengths():
    # A constant c per step adds c * L_i to the return, so with unequal lengths
    # the trajectory level is not shift-invariant (it is a per-step bonus).
    # Hand table + 1: G = [7 + 4, 3 + 2, 7 + 3] = [11, 5, 10], mean 26/3,
    # sample std 3.214550 -> T = [0.725866, -1.140647, 0.414781].
    result = group_advantages(REWARDS + 1.0, MASK, mode='masked', eps=0.0)
    close(result.traj, [0.725866, -1.140647, 0.414781])
    close(result.step[:, 1], [-1.0, 1.0, 0.0])


@pytest.mark.parametrize('mode', ['masked', 'paper'])
@pytest.mark.parametrize('value', [0.0, 0.1, -3.7, 1e6 + 0.1])
def test_zero_spread_group_gives_zeros(mode, value):
    # 0.1 and 1e6 + 0.1 do not survive a float mean exactly: only an exact
    # max == min test keeps eps from turning rounding noise into advantages.
    rewards = torch.full((4, 5), value)
    mask = torch.ones(4, 5, dtype=torch.bool)
    result = group_advantages(rewards, mask, mode=mode)
    for tensor in (result.step, result.traj, result.fused):
        assert torch.equal(tensor, torch.zeros_like(tensor))


def test_zero_spread_step_in_a_spread_group():
    # Equal rewards at every step but unequal lengths: S = 0 everywhere, but the
    # returns differ (G = [3, 2, 1]): T = [1, 0, -1], fused = 0.7 T.
    rewards = torch.ones(3, 3)
    mask = torch.tensor([[True, True, True], [True, True, False], [True, False, False]])
    result = group_advantages(rewards, mask, mode='masked', eps=0.0)
    assert torch.equal(result.step, torch.zeros(3, 3))
    close(result.traj, [1.0, 0.0, -1.0])
    close(result.fused, [[0.7, 0.7, 0.7], [0.0, 0.0, 0.0], [-0.7, 0.0, 0.0]])


def test_group_of_one_gives_zeros():
    result = group_advantages(torch.tensor([[1.0, 2.0]]), torch.ones(1, 2, dtype=torch.bool))
    assert torch.equal(result.fused, torch.zeros(1, 2))


def test_advantages_keep_dtype_and_leave_input_alone():
    rewards = REWARDS.clone()
    result = group_advantages(rewards, MASK, mode='masked')
    assert result.fused.dtype == torch.float32
    assert result.lengths.dtype == torch.int64
    torch.testing.assert_close(rewards, REWARDS, equal_nan=True)


@pytest.mark.parametrize('rewards, mask, kwargs, error, match', [
    (REWARDS, MASK, {'mode': 'wrong'}, ValueError, r"'masked', 'paper'"),
    (REWARDS, MASK.int(), {}, TypeError, 'mask must be a bool tensor'),
    (REWARDS.long(), MASK, {}, TypeError, 'float tensor'),
    (REWARDS[0], MASK[0], {}, ValueError, r'\[N, T\]'),
    (REWARDS, MASK[:, :3], {}, ValueError, r'mask shape \(3, 3\)'),
    (REWARDS, torch.tensor([[True, False, True, False]] * 3), {}, ValueError,
     r'rows \[0, 1, 2\] are not prefixes'),
    (REWARDS, torch.tensor([[True] * 4, [False] * 4, [True] * 4]), {}, ValueError,
     r'trajectories \[1\] have no valid step'),
    (torch.tensor([[0.0, NAN], [1.0, 2.0]]), torch.ones(2, 2, dtype=torch.bool), {},
     ValueError, r'not finite at valid \[i, t\] = \[\[0, 1\]\]'),
    (REWARDS, MASK, {'eps': -1.0}, ValueError, 'eps must be >= 0, got -1.0'),
    (REWARDS, MASK, {'a1': NAN}, ValueError, 'a1 = nan'),
])
def test_bad_advantage_input_is_named(rewards, mask, kwargs, error, match):
    with pytest.raises(error, match=match):
        group_advantages(rewards, mask, **kwargs)


# Loss: a group of N = 2 trajectories, T = 2 steps, K = 2 action tokens per step,
# flattened once to its S = 3 valid steps (x[LOSS_MASK]: [2, 2, 2] -> [3, 2]).
RATIOS = torch.tensor([[[1.0, 1.1], [1.5, 0.7]],
                       [[0.9, 1.3], [1.0, 1.0]]], dtype=torch.float64)  # [2, 2, 2]
ADV = torch.tensor([[1.0, -2.0], [-1.0, 5.0]], dtype=torch.float64)  # [2, 2]
LOSS_MASK = torch.tensor([[True, True], [True, False]])  # [2, 2]
OLD = torch.log(torch.tensor([[[0.2, 0.3], [0.4, 0.5]],
                              [[0.6, 0.1], [0.2, 0.3]]], dtype=torch.float64))  # [2, 2, 2]
LOSS_TYPES = ['grpo', 'bnpo']


def make_logps(ratios=RATIOS):
    return (OLD + torch.log(ratios)).requires_grad_(True)


def flat(x, mask=LOSS_MASK):
    """Flatten the valid steps of a group tensor: [N, T, ...] -> [S, ...]."""
    return x[mask]


def weights(loss_type, mask=LOSS_MASK):
    """Return the group's step weights [S] of the flattened valid steps."""
    return group_step_weights(mask, loss_type, dtype=torch.float64)[mask]


# Per-token objective min(r A, clip(r, 0.8, 1.2) A), loss = -objective:
#   traj 0, t 0 (A = 1):  r 1.0 -> -1.0,  r 1.1 -> -1.1          (inside)
#   traj 0, t 1 (A = -2): r 1.5 -> +3.0 (min picks r A = -3, unclipped side),
#                         r 0.7 -> +1.6 (clip(0.7) A = -1.6, clipped: no gradient)
#   traj 1, t 0 (A = -1): r 0.9 -> +0.9,  r 1.3 -> +1.3 (unclipped side)
# grpo: mean(2.5 / 4, 2.2 / 2) = 0.8625; bnpo: 4.7 / 6 = 0.783333.
# Gradient d loss / d logp = -w r A on unclipped tokens, 0 on clipped ones,
# with w = 1 / (2 trajectories * tokens of the trajectory) or 1 / 6.
LOSS_TABLE = {
    'grpo': (0.8625, [[[-0.125, -0.1375], [0.375, 0.0]],
                      [[0.225, 0.325], [0.0, 0.0]]]),
    'bnpo': (4.7 / 6, [[[-1.0 / 6, -1.1 / 6], [0.5, 0.0]],
                       [[0.9 / 6, 1.3 / 6], [0.0, 0.0]]]),
}


@pytest.mark.parametrize('loss_type', LOSS_TYPES)
def test_loss_and_gradient_hand_table(loss_type):
    logps = make_logps()
    loss, stats = tgrpo_loss(flat(logps), flat(OLD), flat(ADV), weights(loss_type))
    expected_loss, expected_grad = LOSS_TABLE[loss_type]
    close(loss, expected_loss, atol=1e-9)
    loss.backward()
    close(logps.grad, expected_grad, atol=1e-9)
    assert stats['loss/total'] == pytest.approx(expected_loss)
    assert stats['loss/policy'] == pytest.approx(expected_loss)
    # Only traj 0, t 1, r 0.7 (A < 0, r < 0.8) is clipped: 1 of 6 tokens.
    assert stats['loss/clip_frac'] == pytest.approx(1.0 / 6)
    # ratios 1, 1.1, 1.5, 0.7, 0.9, 1.3: mean 6.5 / 6, max 1.5.
    assert stats['loss/ratio_mean'] == pytest.approx(6.5 / 6)
    assert stats['loss/ratio_max'] == pytest.approx(1.5)
    # mean of (r - 1) - ln r: (0 + 0.0046898 + 0.0945349 + 0.0566749 + 0.0053605
    # + 0.0376357) / 6.
    assert stats['loss/approx_kl'] == pytest.approx(0.0331493, abs=1e-7)
    assert 'loss/kl' not in stats and 'loss/entropy' not in stats


@pytest.mark.parametrize('loss_type', LOSS_TYPES)
def test_gradient_pushes_logps_along_the_advantage(loss_type):
    # On-policy (ratio 1): descent raises log-probs of A > 0 and lowers A < 0.
    torch.manual_seed(1)
    old = torch.log_softmax(torch.randn(20, 7, dtype=torch.float64), dim=-1)  # [S, 7]
    adv = torch.tensor([1.0, -0.5, 2.0, -1.0, 0.3] * 4, dtype=torch.float64)  # [S]
    mask = torch.ones(4, 5, dtype=torch.bool)
    logps = old.clone().requires_grad_(True)
    loss, _ = tgrpo_loss(logps, old, adv, weights(loss_type, mask))
    loss.backward()
    sign = torch.sign(adv).unsqueeze(-1).expand_as(logps)
    assert torch.equal(torch.sign(-logps.grad), sign)
    # One SGD step moves the probabilities of the taken tokens the same way.
    with torch.no_grad():
        stepped = logps - 0.1 * logps.grad
    assert torch.equal(torch.sign(stepped - old), sign)


@pytest.mark.parametrize('ratio, adv, clipped', [
    (1.5, 1.0, True),    # above 1 + eps_high with A > 0: clipped
    (0.5, -1.0, True),   # below 1 - eps_low with A < 0: clipped
    (1.5, -1.0, False),  # above the bound with A < 0: the unclipped term is the min
    (0.5, 1.0, False),   # below the bound with A > 0: the unclipped term is the min
    (1.1, 1.0, False),   # inside the trust region
])
def test_clipping_stops_the_gradient(ratio, adv, clipped):
    old = torch.full((1, 7), math.log(0.25), dtype=torch.float64)
    logps = (old + math.log(ratio)).requires_grad_(True)
    advantages = torch.tensor([adv], dtype=torch.float64)
    loss, stats = tgrpo_loss(logps, old, advantages, torch.ones(1, dtype=torch.float64),
                             clip_low=0.2, clip_high=0.2)
    loss.backward()
    if clipped:
        assert torch.equal(logps.grad, torch.zeros_like(logps))
        assert stats['loss/clip_frac'] == 1.0
    else:
        # d(-r A) / d logp = -r A / 7 per token.
        close(logps.grad, [[-ratio * adv / 7] * 7], atol=1e-12)
        assert stats['loss/clip_frac'] == 0.0


def test_asymmetric_clip_bounds():
    # clip_high 0.28: ratio 1.25 with A > 0 is inside (gradient), 1.3 is clipped.
    old = torch.zeros(2, 1, dtype=torch.float64)
    logps = torch.log(torch.tensor([[1.25], [1.3]], dtype=torch.float64)).requires_grad_()
    loss, stats = tgrpo_loss(logps, old, torch.ones(2, dtype=torch.float64),
                             torch.full((2,), 0.5, dtype=torch.float64), clip_high=0.28)
    loss.backward()
    close(logps.grad, [[-1.25 / 2], [0.0]], atol=1e-12)
    assert stats['loss/clip_frac'] == 0.5


@pytest.mark.parametrize('loss_type', LOSS_TYPES)
def test_kl_is_zero_when_policy_equals_reference(loss_type):
    logps = make_logps()
    ref = flat(logps.detach().clone())
    with_kl, stats = tgrpo_loss(flat(logps), flat(OLD), flat(ADV), weights(loss_type),
                                ref_logps=ref, beta=0.5)
    with_kl.backward()
    assert stats['loss/kl'] == 0.0
    close(with_kl, LOSS_TABLE[loss_type][0], atol=1e-12)
    close(logps.grad, LOSS_TABLE[loss_type][1], atol=1e-12)


def test_kl_term_hand_values():
    # Reference half as likely as the policy on every token: r = 0.5,
    # k3 = r - ln r - 1 = 0.193147; d k3 / d logp = 1 - r = 0.5 (pulls logp down).
    logps = torch.log(torch.full((1, 2), 0.4, dtype=torch.float64)).requires_grad_()
    ref = logps.detach() + math.log(0.5)
    zero_adv = torch.zeros(1, dtype=torch.float64)
    one = torch.ones(1, dtype=torch.float64)
    loss, stats = tgrpo_loss(logps, logps.detach(), zero_adv, one, ref_logps=ref, beta=0.1)
    loss.backward()
    assert stats['loss/kl'] == pytest.approx(0.1931472, abs=1e-7)
    close(loss, 0.1 * 0.1931472, atol=1e-8)
    close(logps.grad, [[0.1 * 0.5 / 2, 0.1 * 0.5 / 2]], atol=1e-12)
    # beta = 0 reports the KL but leaves it out of the loss.
    loss0, stats0 = tgrpo_loss(logps, logps.detach(), zero_adv, one, ref_logps=ref)
    assert float(loss0.detach()) == 0.0 and stats0['loss/kl'] == pytest.approx(0.1931472, abs=1e-7)


def test_flattening_drops_masked_garbage():
    # Padding past a trajectory's end may hold NaN / inf: flattening the valid steps
    # once leaves it out of the loss and the gradient (exactly 0 there).
    logps = make_logps().detach().clone()
    logps[1, 1] = float('-inf')
    logps.requires_grad_(True)
    old = OLD.clone()
    old[1, 1] = NAN
    adv = ADV.clone()
    adv[1, 1] = NAN
    entropy = torch.tensor([[[1.0, 2.0], [3.0, 4.0]], [[5.0, 6.0], [NAN, NAN]]],
                           dtype=torch.float64)
    loss, stats = tgrpo_loss(flat(logps), flat(old), flat(adv), weights('grpo'),
                             ref_logps=flat(old), beta=0.0, entropy=flat(entropy))
    loss.backward()
    close(loss, 0.8625, atol=1e-9)
    close(logps.grad, LOSS_TABLE['grpo'][1], atol=1e-9)
    assert stats['loss/entropy'] == pytest.approx(21.0 / 6)
    assert all(math.isfinite(v) for v in stats.values())
    # Unflattened garbage is refused, with the fix in the message.
    with pytest.raises(ValueError, match=r'not finite; flatten the valid steps only'):
        tgrpo_loss(logps.reshape(4, 2), old.reshape(4, 2), adv.reshape(4),
                   torch.ones(4, dtype=torch.float64))


def test_grpo_skips_rows_without_valid_steps():
    # Row 1 fully masked: grpo averages row 0 only (A = 1, ratio 1 -> loss -1).
    mask = torch.tensor([[True], [False]])
    assert group_step_weights(mask, 'grpo').tolist() == [[1.0], [0.0]]
    old = torch.zeros(1, 3, dtype=torch.float64)
    loss, _ = tgrpo_loss(old.clone(), old, torch.ones(1, dtype=torch.float64),
                         weights('grpo', mask))
    assert float(loss) == -1.0


@pytest.mark.parametrize('kwargs, match', [
    ({'beta': 0.1}, 'beta = 0.1 > 0 needs ref_logps'),
    ({'beta': -1.0}, 'beta must be >= 0'),
    ({'clip_low': 1.0}, 'clip_low = 1.0'),
    ({'advantages': torch.zeros(2)}, r'advantages shape \(2,\) != \[3\]'),
    ({'step_weights': torch.zeros(3, 1)}, r'step_weights shape \(3, 1\) != \[3\]'),
    ({'step_weights': torch.tensor([0.5, -0.5, 1.0])}, 'step_weights must be finite and >= 0'),
    ({'old_logps': torch.zeros(3, 7)}, r'old_logps shape \(3, 7\) != \[3, 2\]'),
    ({'logps': torch.zeros(2, 2, 2)}, r'\[B, K\] with B >= 1, got \(2, 2, 2\)'),
    ({'logps': torch.zeros(0, 2)}, r'\[B, K\] with B >= 1, got \(0, 2\)'),
    ({'old_logps': torch.full((3, 2), NAN)}, 'not finite'),
])
def test_bad_loss_input_is_named(kwargs, match):
    args = {'logps': flat(make_logps()), 'old_logps': flat(OLD), 'advantages': flat(ADV),
            'step_weights': weights('grpo')}
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        tgrpo_loss(**args)


def test_advantages_feed_the_loss():
    # End to end on one group: the token of the best trajectory gains probability.
    result = group_advantages(REWARDS, MASK, mode='masked')
    old = torch.full((3, 4, 7), math.log(0.5))
    logps = old.clone().requires_grad_(True)
    loss, _ = tgrpo_loss(flat(logps, result.mask), flat(old, result.mask),
                         flat(result.fused, result.mask),
                         group_step_weights(result.mask)[result.mask])
    loss.backward()
    # Trajectory 1 has negative advantages, so descent lowers its log-probs.
    assert (logps.grad[1, :2] > 0).all() and (logps.grad[0] < 0).all()
    assert torch.equal(logps.grad[1, 2:], torch.zeros(2, 7))


def test_group_step_weights_hand_values():
    # L = [2, 1], N' = 2, S = 3. grpo: 1 / (N' L_i); bnpo: 1 / S on valid steps.
    close(group_step_weights(LOSS_MASK, 'grpo'), [[0.25, 0.25], [0.5, 0.0]])
    close(group_step_weights(LOSS_MASK, 'bnpo'), [[1 / 3, 1 / 3], [1 / 3, 0.0]])
    with pytest.raises(ValueError, match=r"'token_mean'; choose one of \('grpo', 'bnpo'\)"):
        group_step_weights(LOSS_MASK, 'token_mean')
    with pytest.raises(ValueError, match='mask has no valid step'):
        group_step_weights(torch.zeros(2, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match=r'mask must be bool \[N, T\]'):
        group_step_weights(torch.ones(2, 2))


@pytest.mark.parametrize('loss_type', LOSS_TYPES)
@pytest.mark.parametrize('minibatch_size', [1, 2, 3, 4, 8])
def test_epoch_of_minibatches_adds_up_to_the_group_reduction(loss_type, minibatch_size):
    # A group of N = 4 trajectories of lengths 5, 2, 7, 3 (masked mode), K = 7,
    # flattened once to S = 17 steps and cut into shuffled minibatches as the
    # trainer does: the minibatch losses, and their gradients, add up exactly to
    # the loss_type reduction computed on the whole group by hand.
    generator = torch.Generator().manual_seed(minibatch_size)
    lengths = [5, 2, 7, 3]
    mask = torch.arange(7).unsqueeze(0) < torch.tensor(lengths).unsqueeze(1)  # [4, 7]
    old = torch.log_softmax(torch.randn(4, 7, 7, generator=generator,
                                        dtype=torch.float64), dim=-1)  # [N, T, K]
    shift = 0.3 * torch.randn(4, 7, 7, generator=generator, dtype=torch.float64)
    logps = (old + shift).requires_grad_(True)  # ratios 0.5..2: some tokens clipped
    adv = torch.randn(4, 7, generator=generator, dtype=torch.float64)  # [N, T]
    ref = old + 0.1 * torch.randn(4, 7, 7, generator=generator, dtype=torch.float64)
    args = {'beta': 0.04, 'clip_low': 0.2, 'clip_high': 0.28}

    # By hand on the group: token losses, then the named reduction.
    ratio = torch.exp(logps - old)
    objective = torch.min(ratio * adv.unsqueeze(-1),
                          ratio.clamp(0.8, 1.28) * adv.unsqueeze(-1))
    k3 = torch.exp(ref - logps) - (ref - logps) - 1.0
    token_loss = torch.where(mask.unsqueeze(-1), -objective + 0.04 * k3,
                             torch.zeros(()))  # [N, T, K]
    if loss_type == 'grpo':
        expected = torch.stack([token_loss[i, :n].mean() for i, n in enumerate(lengths)]).mean()
    else:
        expected = token_loss.sum() / (sum(lengths) * 7)
    expected_grad, = torch.autograd.grad(expected, logps)

    flat_logps, flat_old, flat_adv, flat_ref = (flat(x, mask) for x in (logps, old, adv, ref))
    flat_weights = group_step_weights(mask, loss_type, dtype=torch.float64)[mask]  # [S]
    assert float(flat_weights.sum()) == pytest.approx(1.0, abs=1e-15)
    order = torch.randperm(len(flat_adv), generator=generator)
    total, clipped = torch.zeros((), dtype=torch.float64), 0.0
    for start in range(0, len(order), minibatch_size):
        idx = order[start:start + minibatch_size]
        loss, stats = tgrpo_loss(flat_logps[idx], flat_old[idx], flat_adv[idx],
                                 flat_weights[idx], ref_logps=flat_ref[idx], **args)
        assert stats['loss/total'] == pytest.approx(float(loss.detach()))
        total, clipped = total + loss, clipped + stats['loss/clip_frac']
    assert clipped > 0.0  # the clip's zero-gradient branch is covered too
    close(total, float(expected.detach()), atol=1e-12)
    total.backward()
    close(logps.grad, expected_grad, atol=1e-12)
    # The whole group as one batch gives the same value.
    whole, _ = tgrpo_loss(flat_logps, flat_old, flat_adv, flat_weights, ref_logps=flat_ref,
                          **args)
    close(whole, float(expected.detach()), atol=1e-12)


def imported_modules(module_file):
    tree = ast.parse(pathlib.Path(module_file).read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split('.')[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            names.add('.' * node.level + (node.module or '').split('.')[0])
    return names


def test_maths_imports_no_ros_and_config_imports_no_torch():
    import tgrpo_ros.training.config
    import tgrpo_ros.training.tgrpo
    assert imported_modules(tgrpo_ros.training.tgrpo.__file__) == {
        'dataclasses', 'math', 'typing', 'torch', '.config'}
    assert imported_modules(tgrpo_ros.training.config.__file__) == {
        'dataclasses', 'math', 'typing', 'tgrpo_ros'}  # tgrpo_ros.options: stdlib only
    import tgrpo_ros.options
    assert imported_modules(tgrpo_ros.options.__file__) == {'dataclasses', 'math', 'typing'}


def test_config_defaults_and_help():
    config = TGRPOConfig()
    assert (config.group_size, config.a1, config.a2) == (4, 0.3, 0.7)
    assert (config.clip_eps_low, config.clip_eps_high, config.lr) == (0.2, 0.2, 1e-5)
    assert config.advantage_mode == 'paper' and config.loss_type == 'grpo'
    helps = TGRPOConfig.field_help()
    assert set(helps) == set(config.to_dict()) and all(helps.values())
    assert TGRPOConfig.from_dict({'a1': 0.0, 'a2': 1.0}).a2 == 1.0


@pytest.mark.parametrize('kwargs, error, match', [
    ({'a1': 0.5}, ValueError, r'a1 \(0.5\) \+ a2 \(0.7\) = 1.2'),
    ({'group_size': 1}, ValueError, r'group_size \(1\) must be at least 2'),
    ({'group_size': 4.0}, TypeError, 'group_size must be an int, got 4.0'),
    ({'group_size': True}, TypeError, 'group_size must be an int, got True'),
    ({'a1': -0.3, 'a2': 1.3}, ValueError, r'a1 \(-0.3\) must be in \[0, 1\]'),
    ({'advantage_mode': 'cut'}, ValueError, r"'cut'; choose one of \['masked', 'paper'\]"),
    ({'loss_type': 'token_mean'}, ValueError,
     r"'token_mean'; choose one of \['grpo', 'bnpo'\]"),
    ({'eps': 0.0}, ValueError, r'eps \(0.0\) must be > 0'),
    ({'clip_eps_low': 1.0}, ValueError, r'clip_eps_low \(1.0\) must be in \(0, 1\)'),
    ({'beta': -0.1}, ValueError, r'beta \(-0.1\)'),
    ({'lr': float('nan')}, ValueError, 'lr must not be NaN'),
    ({'lr': '1e-5'}, TypeError, "lr must be a number, got '1e-5'"),
    ({'epochs': 0}, ValueError, r'epochs \(0\) must be at least 1'),
    ({'max_grad_norm': 0.0}, ValueError, r'max_grad_norm \(0.0\) must be > 0'),
])
def test_config_rejects_impossible_values(kwargs, error, match):
    with pytest.raises(error, match=match):
        TGRPOConfig(**kwargs)


def test_config_from_dict_lists_valid_keys():
    with pytest.raises(ValueError, match=r"unknown TGRPOConfig keys \['alpha'\]; valid keys"):
        TGRPOConfig.from_dict({'alpha': 0.3})
