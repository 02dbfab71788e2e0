"""
TGRPO maths: group advantages and the clipped policy loss with a k3 KL term.

Pure torch, no ROS import. The formulas, both advantage modes and the edge
cases are written out in docs/tgrpo.md; TGRPO is arXiv 2506.08440.

Layout: one group holds N trajectories of one task started from the same
initial state. Step t of trajectory i carries one reward R[i, t] and K action
tokens (K = 7 for OpenVLA). Validity masks are prefixes: trajectory i is valid
for its first L_i steps. The advantages and step weights are [N, T]; the loss
takes the valid steps flattened once (CleanRL's ppo.py), [B, K] and [B].
"""

from dataclasses import dataclass
import math
from typing import Dict, Optional, Tuple

import torch

from .config import ADVANTAGE_MODES, LOSS_TYPES

__all__ = ['ADVANTAGE_MODES', 'AdvantageResult', 'LOSS_TYPES', 'group_advantages',
           'group_step_weights', 'tgrpo_loss']


@dataclass(frozen=True)
class AdvantageResult:
    """Advantages of one group; every tensor is zero where `mask` is False."""

    step: torch.Tensor     # [N, T] S_it, rewards normalised across the group at step t
    traj: torch.Tensor     # [N]    T_i, returns normalised across the group
    fused: torch.Tensor    # [N, T] a1 * S_it + a2 * T_i
    mask: torch.Tensor     # [N, T] bool, steps that count (paper mode: after the cut)
    returns: torch.Tensor  # [N]    G_i = sum of the counted rewards
    lengths: torch.Tensor  # [N]    int64, counted steps per trajectory


def _check_prefix_mask(mask: torch.Tensor) -> torch.Tensor:
    """Return the lengths [N] of a prefix mask [N, T], or raise ValueError."""
    lengths = mask.sum(dim=1)  # [N]
    steps = torch.arange(mask.shape[1], device=mask.device)  # [T]
    prefix = steps.unsqueeze(0) < lengths.unsqueeze(1)  # [N, T]
    bad_rows = (prefix != mask).any(dim=1).nonzero().flatten().tolist()
    if bad_rows:
        raise ValueError(
            f'mask rows {bad_rows} are not prefixes (True for the first L_i steps, then '
            f'False); got row {bad_rows[0]} = {mask[bad_rows[0]].int().tolist()}')
    empty = (lengths == 0).nonzero().flatten().tolist()
    if empty:
        raise ValueError(f'trajectories {empty} have no valid step; every trajectory needs '
                         'at least one')
    return lengths


def _normalise(values: torch.Tensor, valid: torch.Tensor, eps: float) -> torch.Tensor:
    """
    Normalise `values` [N, M] over the valid entries of each column.

    Column j becomes (x - mean) / (std + eps) over its valid entries, with the
    sample standard deviation (Bessel's correction, as TRL's GRPO). A column with
    fewer than two valid entries, or whose valid entries are all equal, becomes
    zero: it carries no signal. Invalid entries are zero.
    """
    count = valid.sum(dim=0)  # [M]
    values = torch.where(valid, values, torch.zeros_like(values))  # [N, M]
    mean = values.sum(dim=0) / count.clamp(min=1)  # [M]
    centred = torch.where(valid, values - mean, torch.zeros_like(values))  # [N, M]
    var = (centred ** 2).sum(dim=0) / (count - 1).clamp(min=1)  # [M]
    inf = torch.full_like(values, float('inf'))
    col_max = torch.where(valid, values, -inf).amax(dim=0)  # [M]
    col_min = torch.where(valid, values, inf).amin(dim=0)  # [M]
    # Exact comparison: equal inputs give an exactly zero spread even when the
    # rounded mean differs from them (mean of [0.1, 0.1, 0.1] != 0.1).
    spread = (count >= 2) & (col_max > col_min)  # [M]
    scale = torch.where(spread, 1.0 / (var.sqrt() + eps), torch.zeros_like(var))  # [M]
    return centred * scale


def group_advantages(rewards: torch.Tensor, mask: torch.Tensor, a1: float = 0.3,
                     a2: float = 0.7, mode: str = 'paper',
                     eps: float = 1e-6) -> AdvantageResult:
    """
    Compute TGRPO's step, trajectory and fused advantages of one group.

    :param rewards: [N, T] float, per-step rewards of the N trajectories; entries
        where `mask` is False are ignored (they may hold anything, NaN too).
    :param mask: [N, T] bool prefix mask; trajectory i is valid for its first
        L_i >= 1 steps (it ended there, by success or at the step limit).
    :param a1: weight of the step-level advantage S_it.
    :param a2: weight of the trajectory-level advantage T_i.
    :param mode: 'paper' cuts every trajectory at the shortest length min_i L_i,
        which is the step where the first one succeeded (or the step limit if
        none did), as the paper's rollouts stop all N together. 'masked' keeps
        each trajectory's own length; step t is normalised over the
        trajectories still running at t.
    :param eps: added to the standard deviation; >= 0.
    :return: AdvantageResult, computed in float64 and returned in `rewards`'
        dtype.
    """
    if mode not in ADVANTAGE_MODES:
        raise ValueError(f'unknown advantage mode {mode!r}; choose one of {ADVANTAGE_MODES}')
    if not isinstance(rewards, torch.Tensor) or not rewards.is_floating_point():
        raise TypeError(f'rewards must be a float tensor, got {type(rewards).__name__} '
                        f'{getattr(rewards, "dtype", "")}')
    if rewards.dim() != 2 or rewards.shape[0] < 1 or rewards.shape[1] < 1:
        raise ValueError(f'rewards must have shape [N, T] with N, T >= 1, got '
                         f'{tuple(rewards.shape)}')
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
        raise TypeError(f'mask must be a bool tensor, got {type(mask).__name__} '
                        f'{getattr(mask, "dtype", "")}')
    if mask.shape != rewards.shape:
        raise ValueError(f'mask shape {tuple(mask.shape)} != rewards shape '
                         f'{tuple(rewards.shape)}')
    if not eps >= 0.0:
        raise ValueError(f'eps must be >= 0, got {eps}')
    if not (math.isfinite(a1) and math.isfinite(a2)):
        raise ValueError(f'a1 and a2 must be finite, got a1 = {a1}, a2 = {a2}')
    lengths = _check_prefix_mask(mask)  # [N]
    bad = (mask & ~torch.isfinite(rewards)).nonzero().tolist()
    if bad:
        raise ValueError(f'rewards are not finite at valid [i, t] = {bad[:5]}')

    if mode == 'paper':
        lengths = torch.full_like(lengths, int(lengths.min()))
        steps = torch.arange(mask.shape[1], device=mask.device)  # [T]
        mask = steps.unsqueeze(0) < lengths.unsqueeze(1)  # [N, T]

    r64 = torch.where(mask, rewards.double(), torch.zeros((), dtype=torch.float64,
                                                          device=rewards.device))  # [N, T]
    step = _normalise(r64, mask, eps)  # [N, T]
    returns = r64.sum(dim=1)  # [N]
    every = torch.ones_like(returns, dtype=torch.bool).unsqueeze(1)  # [N, 1]
    traj = _normalise(returns.unsqueeze(1), every, eps).squeeze(1)  # [N]
    fused = torch.where(mask, a1 * step + a2 * traj.unsqueeze(1),
                        torch.zeros_like(step))  # [N, T]
    dtype = rewards.dtype
    return AdvantageResult(step=step.to(dtype), traj=traj.to(dtype), fused=fused.to(dtype),
                           mask=mask, returns=returns.to(dtype), lengths=lengths)


def group_step_weights(mask: torch.Tensor, loss_type: str = 'grpo',
                       dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """
    Per-step weights [N, T] that carry the `loss_type` reduction of one group.

    Computed once per update from the group's mask. The weights sum to 1 over
    the group, so `tgrpo_loss` (a weighted sum of step losses) on all the
    group's steps is exactly the `loss_type` reduction, and the losses of an
    epoch of minibatches, whichever steps each draws, add up to it exactly.
    The names and reductions are TRL's (GRPOConfig.loss_type):

    - 'grpo': mean over each trajectory's valid tokens, then mean over the
      trajectories with at least one valid step: step t of trajectory i
      weighs 1 / (N' * L_i), N' the number of such trajectories.
    - 'bnpo': mean over all valid tokens of the group (batch-normalised):
      every valid step weighs 1 / S, S the number of valid steps.

    A step's loss is the mean over its K tokens, so each token weighs w / K.

    :param mask: [N, T] bool, the steps that count (AdvantageResult.mask);
        at least one must be True.
    :param loss_type: one of LOSS_TYPES.
    :param dtype: float dtype of the result.
    :return: [N, T] weights, zero where `mask` is False.
    """
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool or mask.dim() != 2:
        raise ValueError(f'mask must be bool [N, T], got {getattr(mask, "dtype", mask)} '
                         f'{tuple(getattr(mask, "shape", ()))}')
    valid = mask.to(dtype)  # [N, T]
    n_steps = valid.sum()
    if not n_steps > 0:
        raise ValueError('mask has no valid step; nothing to average')
    if loss_type == 'grpo':
        lengths = valid.sum(dim=1, keepdim=True)  # [N, 1] L_i
        rows = (lengths > 0).sum()  # N'
        return valid / (lengths.clamp(min=1) * rows)
    if loss_type == 'bnpo':
        return valid / n_steps
    raise ValueError(f'unknown loss_type {loss_type!r}; choose one of {LOSS_TYPES}')


def _check_steps(name: str, tensor: Optional[torch.Tensor], shape: Tuple[int, ...]) -> None:
    if tensor is not None and tuple(tensor.shape) != tuple(shape):
        raise ValueError(f'{name} shape {tuple(tensor.shape)} != {list(shape)}, the shape '
                         'of logps')


def tgrpo_loss(logps: torch.Tensor, old_logps: torch.Tensor, advantages: torch.Tensor,
               step_weights: torch.Tensor, ref_logps: Optional[torch.Tensor] = None,
               beta: float = 0.0, clip_low: float = 0.2, clip_high: float = 0.2,
               entropy: Optional[torch.Tensor] = None
               ) -> Tuple[torch.Tensor, Dict[str, float]]:
    """
    Clipped surrogate loss with a k3 KL penalty on a flat batch of B steps, to minimise.

    Per action token: ratio = exp(logps - old_logps), objective =
    min(ratio * A, clip(ratio, 1 - clip_low, 1 + clip_high) * A), token loss =
    -objective + beta * k3, k3 = exp(ref - logps) - (ref - logps) - 1. A step's
    loss is the mean of its K token losses; the loss is sum_b w_b * step loss_b.

    The B steps are any rows of a group flattened once (``x[mask]``), for
    example one shuffled minibatch; the reduction is in the weights (see
    `group_step_weights`), so the losses of an epoch of minibatches add up to
    the group's reduction.

    :param logps: [B, K] log-probs of the taken action tokens under the policy
        being trained (differentiable).
    :param old_logps: [B, K] log-probs under the policy that sampled them
        (treated as constants).
    :param advantages: [B] one advantage per step, shared by its K tokens.
    :param step_weights: [B] weights >= 0 of the steps (constants), from
        `group_step_weights` gathered for these steps.
    :param ref_logps: [B, K] log-probs under the frozen reference
        (constants); needed when beta > 0, reported as 'loss/kl' whenever given.
    :param beta: weight of the KL term, >= 0.
    :param clip_low: the ratio's lower bound is 1 - clip_low, in [0, 1).
    :param clip_high: the ratio's upper bound is 1 + clip_high, >= 0.
    :param entropy: [B, K] optional per-token entropy, reported only.
    :return: (loss, stats): a scalar tensor and a dict of floats. 'loss/total'
        (the loss) and 'loss/policy' (its surrogate part, without the KL) are
        weighted sums like the loss; 'loss/clip_frac', 'loss/approx_kl',
        'loss/ratio_mean', 'loss/ratio_max', 'loss/kl' (when ref_logps is
        given) and 'loss/entropy' (when entropy is given) are plain means (max)
        over the B * K tokens.
    """
    if not isinstance(logps, torch.Tensor) or logps.dim() != 2 or logps.shape[0] < 1:
        raise ValueError(f'logps must have shape [B, K] with B >= 1, got '
                         f'{tuple(getattr(logps, "shape", ()))}')
    _check_steps('old_logps', old_logps, logps.shape)
    _check_steps('ref_logps', ref_logps, logps.shape)
    _check_steps('entropy', entropy, logps.shape)
    _check_steps('advantages', advantages, logps.shape[:1])
    _check_steps('step_weights', step_weights, logps.shape[:1])
    if not beta >= 0.0:
        raise ValueError(f'beta must be >= 0, got {beta}')
    if beta > 0.0 and ref_logps is None:
        raise ValueError(f'beta = {beta} > 0 needs ref_logps')
    if not 0.0 <= clip_low < 1.0 or not clip_high >= 0.0:
        raise ValueError(f'need 0 <= clip_low < 1 and clip_high >= 0, got clip_low = '
                         f'{clip_low}, clip_high = {clip_high}')
    weights = step_weights.detach().to(logps.dtype)  # [B]
    if not bool((torch.isfinite(weights) & (weights >= 0)).all()):
        raise ValueError(f'step_weights must be finite and >= 0, got '
                         f'{weights.tolist()[:8]}')
    adv = advantages.detach().to(logps.dtype).unsqueeze(-1)  # [B, 1]
    if not bool(torch.isfinite(logps.detach()).all() and torch.isfinite(old_logps).all()
                and torch.isfinite(adv).all()):
        raise ValueError('logps, old_logps or advantages are not finite; flatten the '
                         'valid steps only (x[mask])')

    # Log-ratio -> ratio -> clipped terms -> min.
    log_ratio = logps - old_logps.detach()  # [B, K]
    ratio = torch.exp(log_ratio)  # [B, K]
    clipped_ratio = torch.clamp(ratio, 1.0 - clip_low, 1.0 + clip_high)  # [B, K]
    objective = torch.min(ratio * adv, clipped_ratio * adv)  # [B, K]
    per_token_loss = -objective  # [B, K]

    # KL to the reference, k3 estimator of KL(pi_theta || pi_ref).
    if ref_logps is not None:
        ref_log_ratio = ref_logps.detach() - logps  # [B, K]
        per_token_kl = torch.exp(ref_log_ratio) - ref_log_ratio - 1.0  # [B, K]
        if beta > 0.0:
            per_token_loss = per_token_loss + beta * per_token_kl

    # Reduction: the step loss is the mean over its K tokens; the weights hold
    # the loss_type (group_step_weights).
    def reduce(x: torch.Tensor) -> torch.Tensor:
        return (weights * x.mean(dim=-1)).sum()

    loss = reduce(per_token_loss)

    with torch.no_grad():
        def token_mean(x: torch.Tensor) -> float:
            return float(x.mean())

        # Clipped where the min picks the constant bound: the gradient is zero there.
        clipped = (((ratio < 1.0 - clip_low) & (adv < 0)) |
                   ((ratio > 1.0 + clip_high) & (adv > 0)))  # [B, K]
        stats = {
            'loss/total': float(loss),
            'loss/policy': float(reduce(-objective)),
            'loss/clip_frac': token_mean(clipped.to(logps.dtype)),
            # k3 estimate of KL(pi_old || pi_theta), as CleanRL's approx_kl.
            'loss/approx_kl': token_mean((ratio - 1.0) - log_ratio),
            'loss/ratio_mean': token_mean(ratio),
            'loss/ratio_max': float(ratio.max()),
        }
        if ref_logps is not None:
            stats['loss/kl'] = token_mean(per_token_kl)
        if entropy is not None:
            stats['loss/entropy'] = token_mean(entropy)
    return loss, stats
