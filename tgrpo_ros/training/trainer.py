"""
The TGRPO update: one group of episodes in, new weights and a metrics dict out.

Used by the learner node and by ``bench/learn.py``. Pure torch, no ROS import.
Steps of one update (arXiv 2506.08440; CleanRL / TRL layout):

1. advantages from the per-step rewards of the N episodes (``tgrpo.group_advantages``);
2. old log-probs recomputed with the current weights, which are the weights that
   produced the episodes (the learner drops episodes of older adapter versions), and
   their mismatch against the behaviour log-probs the sampler reported;
3. the counted steps flattened once (CleanRL's ``ppo.py``) with their advantages and
   the step weights that carry the ``loss_type`` reduction
   (``tgrpo.group_step_weights``);
4. ``epochs`` passes of shuffled minibatches of ``minibatch_size`` steps indexed from
   the flat tensors, each a clipped policy-gradient step with the k3 KL to the
   reference, gradient clipping.
"""

import math
import time
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

from tgrpo_ros.episode import Episode
from tgrpo_ros.training import tgrpo
from tgrpo_ros.training.config import TGRPOConfig

# Statistics of tgrpo_loss that are shares of the group loss (summed over an epoch's
# minibatches); the others are means over a minibatch's tokens.
SUMMED_STATS = ('loss/total', 'loss/policy')


class GroupError(ValueError):
    """A group of episodes cannot be trained on as it is (mixed tasks, too few, ...)."""


def check_group(episodes: Sequence[Episode], group_size: Optional[int] = None) -> None:
    """Raise GroupError unless the episodes form one TGRPO group."""
    if group_size is not None and len(episodes) != group_size:
        raise GroupError(f'a group needs {group_size} episodes, got {len(episodes)}')
    if len(episodes) < 2:
        raise GroupError(f'a group needs at least 2 episodes, got {len(episodes)}')
    keys = {(e.suite, e.task_id, e.init_state_id) for e in episodes}
    if len(keys) != 1:
        raise GroupError('all episodes of a group must share (suite, task, init state); '
                         f'got {sorted(keys)}')
    versions = {e.adapter_version for e in episodes}
    if len(versions) != 1:
        raise GroupError(f'episodes of a group come from several adapter versions {versions}')


def pad_rewards(episodes: Sequence[Episode]):
    """Return (rewards [N, T_max] float64 zero-padded, mask [N, T_max] bool prefix)."""
    t_max = max(e.length for e in episodes)
    rewards = torch.zeros(len(episodes), t_max, dtype=torch.float64)
    mask = torch.zeros(len(episodes), t_max, dtype=torch.bool)
    for i, episode in enumerate(episodes):
        rewards[i, :episode.length] = torch.as_tensor(episode.rewards, dtype=torch.float64)
        mask[i, :episode.length] = True
    return rewards, mask


def rollout_metrics(episodes: Sequence[Episode]) -> Dict[str, float]:
    """Success rate, return and length statistics of a group (keys 'rollout/...')."""
    returns = np.array([e.episode_return for e in episodes], dtype=np.float64)
    lengths = np.array([e.length for e in episodes], dtype=np.float64)
    return {
        'rollout/success_rate': float(np.mean([bool(e.success) for e in episodes])),
        'rollout/return_mean': float(returns.mean()),
        'rollout/return_std': float(returns.std()),
        'rollout/return_max': float(returns.max()),
        'rollout/return_min': float(returns.min()),
        'rollout/length_mean': float(lengths.mean()),
        'rollout/episodes': float(len(episodes)),
    }


def mixed_success_groups(episodes: Sequence[Episode]) -> List[Episode]:
    """Return the episodes of the groups whose members did not all succeed or all fail."""
    outcomes: Dict[int, set] = {}
    for episode in episodes:
        outcomes.setdefault(episode.group_id, set()).add(bool(episode.success))
    return [e for e in episodes if len(outcomes[e.group_id]) == 2]


class TGRPOTrainer:
    """Owns the optimiser and runs TGRPO updates on a policy (``tgrpo_ros.policy``)."""

    def __init__(self, policy, config: TGRPOConfig, seed: int = 0,
                 learning_rate: Optional[float] = None, eval_batch_size: int = 64):
        """
        Create AdamW over ``policy.trainable_parameters()``.

        ``learning_rate`` overrides ``config.lr``; 0 makes a control run: the
        optimiser is never stepped (AdamW with lr 0 leaves every weight as it is),
        but advantages, log-probs and the loss are computed and logged as usual.
        """
        self.policy = policy
        self.config = config
        self.lr = config.lr if learning_rate is None else float(learning_rate)
        if not (self.lr >= 0.0 and math.isfinite(self.lr)):
            raise ValueError(f'learning_rate ({learning_rate}) must be >= 0 and finite')
        if eval_batch_size < 1:
            raise ValueError(f'eval_batch_size ({eval_batch_size}) must be >= 1')
        self.eval_batch_size = eval_batch_size
        self.params = list(policy.trainable_parameters())
        if not self.params:
            raise ValueError('the policy has no trainable parameters')
        self.optimizer = torch.optim.AdamW(self.params, lr=self.lr,
                                           weight_decay=config.weight_decay)
        self.generator = torch.Generator().manual_seed(int(seed))  # minibatch shuffling
        self.updates_done = 0

    # ------------------------------------------------------------------ helpers
    def _log_probs_batched(self, images, instructions, tokens, reference=False):
        """No-grad log-probs of all steps in chunks; [S, 7] float32."""
        chunks = []
        for start in range(0, len(tokens), self.eval_batch_size):
            stop = start + self.eval_batch_size
            with torch.no_grad():
                if reference:
                    with self.policy.reference():
                        logps, _ = self.policy.log_probs(images[start:stop],
                                                         instructions[start:stop],
                                                         tokens[start:stop])
                else:
                    logps, _ = self.policy.log_probs(images[start:stop],
                                                     instructions[start:stop],
                                                     tokens[start:stop])
            chunks.append(logps.detach().float().cpu())
        return torch.cat(chunks)

    # ------------------------------------------------------------------ update
    def group_advantages(self, episodes: Sequence[Episode]):
        """
        TGRPO advantages of one or more groups (split by ``group_id``).

        Returns (fused [E, T_max] float32, mask [E, T_max] bool, traj [E] float32) in
        the order of ``episodes``; each group is normalised on its own.
        """
        cfg = self.config
        groups: Dict[int, List[int]] = {}
        for index, episode in enumerate(episodes):
            groups.setdefault(episode.group_id, []).append(index)
        t_max = max(e.length for e in episodes)
        fused = torch.zeros(len(episodes), t_max)
        mask = torch.zeros(len(episodes), t_max, dtype=torch.bool)
        traj = torch.zeros(len(episodes))
        for indices in groups.values():
            members = [episodes[i] for i in indices]
            check_group(members)
            rewards, valid = pad_rewards(members)  # [n, T_g], [n, T_g]
            adv = tgrpo.group_advantages(rewards, valid, a1=cfg.a1, a2=cfg.a2,
                                         mode=cfg.advantage_mode, eps=cfg.eps)
            width = rewards.shape[1]
            rows = torch.as_tensor(indices)
            fused[rows, :width] = adv.fused.float()
            mask[rows, :width] = adv.mask
            traj[rows] = adv.traj.float()
        return fused, mask, traj

    def update(self, episodes: List[Episode]) -> Dict[str, float]:
        """
        Run one TGRPO update on one or more groups; return the metrics of this update.

        Episodes are grouped by ``group_id``; every group needs at least 2 episodes
        of one (task, init state) and one adapter version.
        """
        cfg = self.config
        if len(episodes) < 2:
            raise GroupError(f'an update needs at least 2 episodes, got {len(episodes)}')
        start = time.perf_counter()
        metrics = rollout_metrics(episodes)  # of every episode, filtered or not
        if cfg.filter_groups:
            kept = mixed_success_groups(episodes)
            metrics['rollout/groups_filtered'] = float(
                len({e.group_id for e in episodes}) - len({e.group_id for e in kept}))
            if not kept:  # no group with signal: the weights stay as they are
                self.updates_done += 1
                metrics['perf/update_time'] = time.perf_counter() - start
                return metrics
            episodes = kept
        advantages, adv_mask, traj = self.group_advantages(episodes)  # [N, T] x2, [N]
        # Per-step weights that carry the loss_type reduction of the whole group: they
        # sum to 1, so an epoch's minibatch losses add up to the group's loss
        # ('grpo': step t of trajectory i weighs 1 / (N L_i); 'bnpo': 1 / S).
        group_weights = tgrpo.group_step_weights(adv_mask, cfg.loss_type)  # [N, T]
        # Flatten the counted steps once (CleanRL's ppo.py): step s is (row[s], col[s]),
        # and minibatches index these flat tensors.
        row, col = adv_mask.nonzero(as_tuple=True)  # [S], [S]
        images = np.stack([episodes[i].images[t] for i, t in zip(row.tolist(), col.tolist())])
        instructions = [episodes[i].instruction for i in row.tolist()]
        tokens = torch.stack([torch.as_tensor(episodes[i].action_tokens[t], dtype=torch.long)
                              for i, t in zip(row.tolist(), col.tolist())])  # [S, 7]
        behaviour = torch.stack([torch.as_tensor(episodes[i].behaviour_logps[t],
                                                 dtype=torch.float32)
                                 for i, t in zip(row.tolist(), col.tolist())])  # [S, 7]
        flat_advantages = advantages[row, col]  # [S]
        step_weights = group_weights[row, col]  # [S], sums to 1
        n_steps = len(tokens)

        # Old log-probs from the weights that sampled the episodes (this policy, now).
        t0 = time.perf_counter()
        old_logps = self._log_probs_batched(images, instructions, tokens)  # [S, 7]
        mismatch = (old_logps - behaviour).abs()
        ref_logps = None
        if cfg.beta > 0.0:
            ref_logps = self._log_probs_batched(images, instructions, tokens,
                                                reference=True)  # [S, 7]
        metrics['perf/old_logp_time'] = time.perf_counter() - t0
        metrics['loss/logp_mismatch_max'] = float(mismatch.max())
        metrics['loss/logp_mismatch_mean'] = float(mismatch.mean())

        metrics['rollout/adv_abs_mean'] = float(flat_advantages.abs().mean())
        metrics['rollout/traj_adv_std'] = float(traj.std())
        metrics['rollout/groups'] = float(len({e.group_id for e in episodes}))
        metrics['rollout/counted_steps'] = float(n_steps)

        sums: Dict[str, float] = {}
        grad_norms, ratio_max, n_minibatches = [], 0.0, 0
        for _ in range(cfg.epochs):
            order = torch.randperm(n_steps, generator=self.generator)
            for mb_start in range(0, n_steps, cfg.minibatch_size):
                idx = order[mb_start:mb_start + cfg.minibatch_size]  # [B]
                logps, entropy = self.policy.log_probs(
                    images[idx.numpy()], [instructions[j] for j in idx.tolist()],
                    tokens[idx], with_entropy=True)  # [B, 7] each
                loss, stats = tgrpo.tgrpo_loss(
                    logps.float(), old_logps[idx], flat_advantages[idx], step_weights[idx],
                    ref_logps=None if ref_logps is None else ref_logps[idx],
                    beta=cfg.beta, clip_low=cfg.clip_eps_low, clip_high=cfg.clip_eps_high,
                    entropy=entropy.detach().float())
                if not torch.isfinite(loss):
                    raise FloatingPointError(f'TGRPO loss is {float(loss)} at update '
                                             f'{self.updates_done + 1}; weights not changed')
                # `loss` is this minibatch's share of the group loss. Each gradient step
                # takes it over the minibatch's weight, a weighted mean like CleanRL's
                # per-minibatch mean, so the step size does not shrink with the group's
                # length or the number of minibatches.
                self.optimizer.zero_grad(set_to_none=True)
                (loss / step_weights[idx].sum()).backward()
                grad_norm = torch.nn.utils.clip_grad_norm_(self.params, cfg.max_grad_norm)
                grad_norms.append(float(grad_norm))
                if self.lr > 0.0:
                    self.optimizer.step()
                for key, value in stats.items():
                    if key == 'loss/ratio_max':
                        ratio_max = max(ratio_max, value)
                    else:
                        sums[key] = sums.get(key, 0.0) + value
                n_minibatches += 1
        self.optimizer.zero_grad(set_to_none=True)
        for key, value in sums.items():
            # The shares of the group loss add up over an epoch; the token means average.
            metrics[key] = value / (cfg.epochs if key in SUMMED_STATS else n_minibatches)
        metrics['loss/ratio_max'] = ratio_max
        metrics['loss/grad_norm'] = float(np.mean(grad_norms))
        metrics['loss/grad_norm_max'] = float(np.max(grad_norms))
        metrics['loss/lr'] = float(self.optimizer.param_groups[0]['lr'])  # the rate used
        metrics['perf/minibatches'] = float(n_minibatches)
        metrics['perf/update_time'] = time.perf_counter() - start
        self.updates_done += 1
        return metrics

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        """Optimiser, update count and the shuffling generator's state."""
        return {'optimizer': self.optimizer.state_dict(), 'updates_done': self.updates_done,
                'generator': self.generator.get_state(), 'lr': self.lr}

    def load_state_dict(self, state: dict) -> None:
        """
        Restore what ``state_dict`` returned, keeping this trainer's lr and weight decay.

        The optimiser's moments and step counts come from ``state``; its settings come
        from the configuration of the resumed run (``torch.optim`` would restore the
        checkpoint's lr, so a resume with a new lr would train at the old one).
        ``restored_settings`` keeps the checkpoint's values, to report a change.
        """
        self.optimizer.load_state_dict(state['optimizer'])
        self.restored_settings = {key: state['optimizer']['param_groups'][0].get(key)
                                  for key in ('lr', 'weight_decay')}
        for group in self.optimizer.param_groups:
            group['lr'] = self.lr
            group['weight_decay'] = self.config.weight_decay
        self.updates_done = int(state['updates_done'])
        self.generator.set_state(state['generator'])
