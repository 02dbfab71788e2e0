"""
TGRPO maths: group advantages and the clipped policy loss with a k3 KL term.

Pure torch, no ROS import. The formulas, both advantage modes and the edge
cases are written out in docs/tgrpo.md; TGRPO is arXiv 2506.08440.

Layout: one group holds N trajectories of one task started from the same
initial state. Step t of trajectory i carries one reward R[i, t] and K action
tokens (K = 7 for OpenVLA). Validity masks are prefixes: trajectory i is valid
for its first L_i steps.
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
    Per-step weights [N, T] that reproduce `loss_type` on minibatches of steps.

    Passing these (gathered for the chosen steps) as `step_weights` to
    `tgrpo_loss` gives a weighted mean whose value on the whole group equals
    the `loss_type` reduction exactly: 'grpo' weighs step t of trajectory i by
    1 / L_i, 'token_mean' weighs every valid step by 1.

    :param mask: [N, T] bool, the steps that count (AdvantageResult.mask).
    :param loss_type: one of LOSS_TYPES.
    :param dtype: float dtype of the result.
    :return: [N, T] weights, zero where `mask` is False.
    """
    if loss_type not in LOSS_TYPES:
        raise ValueError(f'unknown loss_type {loss_type!r}; choose one of {LOSS_TYPES}')
    if mask.dtype != torch.bool or mask.dim() != 2:
        raise ValueError(f'mask must be bool [N, T], got {mask.dtype} {tuple(mask.shape)}')
    ones = mask.to(dtype)  # [N, T]
    if loss_type == 'token_mean':
        return ones
    lengths = ones.sum(dim=1, keepdim=True)  # [N, 1]
    return ones / lengths.clamp(min=1)


def _check_like(name: str, tensor: Optional[torch.Tensor], shape: torch.Size) -> None:
    if tensor is not None and tuple(tensor.shape) != tuple(shape):
        raise ValueError(f'{name} shape {tuple(tensor.shape)} != logps shape {tuple(shape)}')


def tgrpo_loss(logps: torch.Tensor, old_logps: torch.Tensor, advantages: torch.Tensor,
               mask: torch.Tensor, ref_logps: Optional[torch.Tensor] = None,
               beta: float = 0.0, clip_low: float = 0.2, clip_high: float = 0.2,
               loss_type: str = 'grpo', entropy: Optional[torch.Tensor] = None,
               step_weights: Optional[torch.Tensor] = None
               ) -> Tuple[torch.Tensor, Dict[str, float]]:
    """
    Clipped surrogate loss with a k3 KL penalty, to minimise.

    Per valid action token: ratio = exp(logps - old_logps), objective =
    min(ratio * A, clip(ratio, 1 - clip_low, 1 + clip_high) * A), loss =
    -objective + beta * k3, k3 = exp(ref - logps) - (ref - logps) - 1.

    :param logps: [B, T, K] log-probs of the taken action tokens under the
        policy being trained (differentiable).
    :param old_logps: [B, T, K] log-probs under the policy that sampled them
        (treated as constants).
    :param advantages: [B, T] one advantage per step, shared by its K tokens.
    :param mask: [B, T] bool, steps that count. Masked entries of every tensor
        are ignored and get zero gradient, even when they hold NaN or inf.
    :param ref_logps: [B, T, K] log-probs under the frozen reference
        (constants); needed when beta > 0, reported as 'loss/kl' whenever given.
    :param beta: weight of the KL term, >= 0.
    :param clip_low: the ratio's lower bound is 1 - clip_low, in [0, 1).
    :param clip_high: the ratio's upper bound is 1 + clip_high, >= 0.
    :param loss_type: 'grpo' averages over each row's (trajectory's) valid
        tokens, then over rows with at least one valid token; 'token_mean'
        averages over all valid tokens of the batch.
    :param entropy: [B, T, K] optional per-token entropy, reported only.
    :param step_weights: [B, T] optional weights >= 0 for minibatches of steps
        cut from larger groups (see `group_step_weights`); when given, the loss
        is sum(w * step loss) / sum(w) over valid steps, the step loss being the
        mean over its K tokens, and this replaces the `loss_type` reduction.
    :return: (loss, stats): a scalar tensor and a dict of floats with
        'loss/total', 'loss/policy', 'loss/clip_frac', 'loss/approx_kl',
        'loss/ratio_mean', 'loss/ratio_max', plus 'loss/kl' when ref_logps and
        'loss/entropy' when entropy is given.
    """
    if loss_type not in LOSS_TYPES:
        raise ValueError(f'unknown loss_type {loss_type!r}; choose one of {LOSS_TYPES}')
    if logps.dim() != 3:
        raise ValueError(f'logps must have shape [B, T, K], got {tuple(logps.shape)}')
    _check_like('old_logps', old_logps, logps.shape)
    _check_like('ref_logps', ref_logps, logps.shape)
    _check_like('entropy', entropy, logps.shape)
    if tuple(advantages.shape) != tuple(logps.shape[:2]):
        raise ValueError(f'advantages shape {tuple(advantages.shape)} != [B, T] = '
                         f'{tuple(logps.shape[:2])}')
    if mask.dtype != torch.bool or tuple(mask.shape) != tuple(logps.shape[:2]):
        raise ValueError(f'mask must be bool [B, T] = {tuple(logps.shape[:2])}, got '
                         f'{mask.dtype} {tuple(mask.shape)}')
    if not beta >= 0.0:
        raise ValueError(f'beta must be >= 0, got {beta}')
    if beta > 0.0 and ref_logps is None:
        raise ValueError(f'beta = {beta} > 0 needs ref_logps')
    if step_weights is not None:
        if tuple(step_weights.shape) != tuple(logps.shape[:2]):
            raise ValueError(f'step_weights shape {tuple(step_weights.shape)} != [B, T] = '
                             f'{tuple(logps.shape[:2])}')
        valid_weights = step_weights.detach()[mask]
        if not (bool(torch.isfinite(valid_weights).all()) and bool((valid_weights >= 0).all())
                and float(valid_weights.sum()) > 0.0):
            raise ValueError('step_weights must be finite and >= 0 at valid steps with a '
                             f'positive sum, got {valid_weights.tolist()[:8]}')
    if not 0.0 <= clip_low < 1.0 or not clip_high >= 0.0:
        raise ValueError(f'need 0 <= clip_low < 1 and clip_high >= 0, got clip_low = '
                         f'{clip_low}, clip_high = {clip_high}')

    token_mask = mask.unsqueeze(-1).expand_as(logps)  # [B, T, K]
    n_tokens = int(token_mask.sum())
    if n_tokens == 0:
        raise ValueError('mask has no valid step; nothing to average')
    zero = torch.zeros((), dtype=logps.dtype, device=logps.device)

    def valid(x: torch.Tensor) -> torch.Tensor:
        return torch.where(token_mask, x, zero)

    adv = valid(advantages.unsqueeze(-1).to(logps.dtype))  # [B, T, K]
    if not bool(torch.isfinite(valid(logps.detach())).all()
                and torch.isfinite(valid(old_logps)).all() and torch.isfinite(adv).all()):
        raise ValueError('logps, old_logps or advantages are not finite at valid steps')

    # Log-ratio -> ratio -> clipped terms -> min.
    log_ratio = valid(logps - old_logps.detach())  # [B, T, K]
    ratio = torch.exp(log_ratio)  # [B, T, K]
    clipped_ratio = torch.clamp(ratio, 1.0 - clip_low, 1.0 + clip_high)  # [B, T, K]
    objective = torch.min(ratio * adv, clipped_ratio * adv)  # [B, T, K]
    per_token_loss = -objective  # [B, T, K]

    # KL to the reference, k3 estimator of KL(pi_theta || pi_ref).
    if ref_logps is not None:
        ref_log_ratio = valid(ref_logps.detach() - logps)  # [B, T, K]
        per_token_kl = torch.exp(ref_log_ratio) - ref_log_ratio - 1.0  # [B, T, K]
        if beta > 0.0:
            per_token_loss = per_token_loss + beta * per_token_kl

    def reduce(x: torch.Tensor) -> torch.Tensor:
        x = valid(x)
        if step_weights is not None:
            weights = torch.where(mask, step_weights.detach().to(x.dtype), zero)  # [B, T]
            return (weights * x.mean(dim=-1)).sum() / weights.sum()
        if loss_type == 'token_mean':
            return x.sum() / n_tokens
        row_tokens = token_mask.sum(dim=(1, 2))  # [B]
        row_mean = x.sum(dim=(1, 2)) / row_tokens.clamp(min=1)  # [B]
        rows = row_tokens > 0  # [B]
        return row_mean[rows].mean()

    loss = reduce(per_token_loss)

    with torch.no_grad():
        def token_mean(x: torch.Tensor) -> float:
            return float(valid(x).sum() / n_tokens)

        # Clipped where the min picks the constant bound: the gradient is zero there.
        clipped = (((ratio < 1.0 - clip_low) & (adv < 0)) |
                   ((ratio > 1.0 + clip_high) & (adv > 0)))  # [B, T, K]
        stats = {
            'loss/total': float(loss),
            'loss/policy': float(reduce(-objective)),
            'loss/clip_frac': token_mean(clipped.to(logps.dtype)),
            # k3 estimate of KL(pi_old || pi_theta), as CleanRL's approx_kl.
            'loss/approx_kl': token_mean((ratio - 1.0) - log_ratio),
            'loss/ratio_mean': token_mean(ratio),
            'loss/ratio_max': float(ratio[token_mask].max()),
        }
        if ref_logps is not None:
            stats['loss/kl'] = token_mean(per_token_kl)
        if entropy is not None:
            stats['loss/entropy'] = token_mean(entropy)
    return loss, stats
