"""TGRPO training core on a real small group: rollout, update, adapters, checkpoints, metrics."""

import csv
import math
import os

import numpy as np
import pytest
import torch

from tgrpo_ros.episode import Episode
from tgrpo_ros.training.config import TGRPOConfig

MAX_STEPS = 5  # policy steps per episode: enough for a group, cheap on 2 cores


def _policy(trainable='lora+action_head'):
    from tgrpo_ros.policy import cached_standin, load_policy
    return load_policy(cached_standin(0), trainable=trainable)


@pytest.fixture(scope='module')
def group():
    """Roll out a real group: 2 LIBERO envs from task 0 / init 0, sampled by the stand-in."""
    torch.set_num_threads(1)
    from tgrpo_ros.sim.rollout import GroupRollout
    policy = _policy()
    with GroupRollout(2, task_id=0, camera_size=128, max_steps=MAX_STEPS, parallel=False,
                      multisample=False, name='test') as rollout:
        episodes = rollout.run(policy, init_state_id=0, group_id=7,
                               generator=torch.Generator().manual_seed(0))
    return episodes


def _params(policy):
    return {k: v.detach().clone() for k, v in policy.named_trainable_parameters().items()}


@pytest.mark.slow
def test_rollout_gives_one_group_of_real_episodes(group):
    assert len(group) == 2
    for i, episode in enumerate(group):
        assert episode.length == MAX_STEPS
        assert episode.images.shape == (MAX_STEPS, 224, 224, 3)
        assert episode.images.std() > 5  # a rendered scene, not a blank frame
        assert (episode.task_id, episode.init_state_id, episode.group_id) == (0, 0, 7)
        assert episode.action_tokens.min() >= 31744 and episode.action_tokens.max() <= 31999
        assert np.all(episode.behaviour_logps < 0) and np.all(episode.behaviour_logps > -30)
        assert np.all(np.isfinite(episode.rewards)) and episode.rewards.min() >= 0
        assert episode.episode_id == f'test{i}/7'
        assert 'alphabet soup' in episode.instruction
    # Same start, different sampled actions.
    assert np.array_equal(group[0].images[0], group[1].images[0])
    assert not np.array_equal(group[0].action_tokens, group[1].action_tokens)


@pytest.mark.slow
def test_update_moves_the_weights_and_reports_finite_metrics(group):
    from tgrpo_ros.training.trainer import TGRPOTrainer
    policy = _policy()
    trainer = TGRPOTrainer(policy, TGRPOConfig(group_size=2, lr=1e-3, epochs=2,
                                               minibatch_size=4, beta=0.04))
    before = _params(policy)
    metrics = trainer.update(group)
    after = _params(policy)
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert 'tgrpo.action_head_delta' in changed
    assert any('lora_B' in k for k in changed)
    assert all(math.isfinite(v) for v in metrics.values())
    assert all(k.split('/')[0] in ('rollout', 'loss', 'perf') for k in metrics)
    # The episodes came from these very weights: recomputed old log-probs match.
    assert metrics['loss/logp_mismatch_max'] < 1e-4
    assert metrics['perf/minibatches'] == 2 * math.ceil(2 * MAX_STEPS / 4)
    assert 0.0 <= metrics['loss/clip_frac'] <= 1.0
    assert metrics['loss/kl'] >= 0.0 and metrics['loss/grad_norm'] > 0.0
    returns = [e.episode_return for e in group]
    assert metrics['rollout/return_mean'] == pytest.approx(np.mean(returns))
    assert trainer.updates_done == 1


@pytest.mark.slow
def test_learning_rate_zero_is_a_control_that_changes_nothing(group):
    from tgrpo_ros.training.trainer import TGRPOTrainer
    policy = _policy()
    trainer = TGRPOTrainer(policy, TGRPOConfig(group_size=2), learning_rate=0.0)
    before = _params(policy)
    metrics = trainer.update(group)
    assert all(torch.equal(before[k], v) for k, v in _params(policy).items())
    assert metrics['loss/lr'] == 0.0 and metrics['loss/grad_norm'] > 0.0


@pytest.mark.slow
def test_adapter_and_checkpoint_resume_restore_everything(group, tmp_path):
    from tgrpo_ros.training import checkpoint
    from tgrpo_ros.training.trainer import TGRPOTrainer
    config = TGRPOConfig(group_size=2, lr=1e-3, epochs=1, minibatch_size=4)
    policy = _policy()
    trainer = TGRPOTrainer(policy, config, seed=3)
    trainer.update(group)
    path = checkpoint.save_checkpoint(tmp_path, 1, policy, trainer)
    assert checkpoint.latest_checkpoint(tmp_path) == path
    saved = _params(policy)

    resumed_policy = _policy()
    resumed = TGRPOTrainer(resumed_policy, config, seed=99)
    state = checkpoint.load_checkpoint(path, resumed_policy, resumed)
    assert state['update'] == 1 and resumed.updates_done == 1
    assert resumed_policy.adapter_version == 1  # the next saved adapter is version 2
    assert all(torch.equal(saved[k], v) for k, v in _params(resumed_policy).items())
    assert torch.equal(resumed.generator.get_state(), trainer.generator.get_state())
    moments = [s['exp_avg'] for s in trainer.optimizer.state_dict()['state'].values()]
    restored = [s['exp_avg'] for s in resumed.optimizer.state_dict()['state'].values()]
    assert len(moments) == len(restored) > 0
    assert all(torch.equal(a, b) for a, b in zip(moments, restored))

    # The original and the resumed run continue identically.
    trainer.update(group)
    resumed.update(group)
    for key, value in _params(policy).items():
        torch.testing.assert_close(_params(resumed_policy)[key], value)
    # A half-written checkpoint (no trainer_state.pt) is never picked.
    os.makedirs(checkpoint.checkpoint_dir(tmp_path, 2))
    assert checkpoint.latest_checkpoint(tmp_path) == path
    # keep=1 prunes older complete checkpoints once the new one is written.
    newest = checkpoint.save_checkpoint(tmp_path, 3, policy, trainer, keep=1)
    assert checkpoint.list_checkpoints(tmp_path) == [newest]


def test_resume_with_a_new_lr_trains_at_the_new_lr_and_logs_it(group, tmp_path):
    """A resumed run uses its configuration's lr and weight decay, and loss/lr shows it."""
    from tgrpo_ros.training import checkpoint
    from tgrpo_ros.training.trainer import TGRPOTrainer
    old = TGRPOConfig(group_size=2, lr=1e-3, epochs=1, minibatch_size=4)
    policy = _policy()
    trainer = TGRPOTrainer(policy, old, seed=3)
    trainer.update(group)
    path = checkpoint.save_checkpoint(tmp_path, 1, policy, trainer)

    new = TGRPOConfig(group_size=2, lr=2e-4, weight_decay=0.01, epochs=1, minibatch_size=4)
    resumed_policy = _policy()
    resumed = TGRPOTrainer(resumed_policy, new, seed=3)
    checkpoint.load_checkpoint(path, resumed_policy, resumed)
    assert [g['lr'] for g in resumed.optimizer.param_groups] == [2e-4]
    assert [g['weight_decay'] for g in resumed.optimizer.param_groups] == [0.01]
    assert resumed.restored_settings == {'lr': 1e-3, 'weight_decay': 0.0}
    metrics = resumed.update(group)
    assert metrics['loss/lr'] == 2e-4
    # The moments came from the checkpoint all the same.
    assert resumed.optimizer.state_dict()['state']


def _episode(group_id, init_state_id=0, version=0, length=3, reward=0.0, success=False):
    return Episode(images=np.zeros((length, 8, 8, 3), np.uint8),
                   action_tokens=np.full((length, 7), 31800), behaviour_logps=np.zeros(
                       (length, 7), np.float32), actions=np.zeros((length, 7), np.float32),
                   rewards=np.full(length, reward, np.float32), success=success, task_id=0,
                   init_state_id=init_state_id, group_id=group_id, adapter_version=version,
                   instruction='x')


def test_groups_must_share_start_and_version():
    from tgrpo_ros.training.trainer import check_group, GroupError
    with pytest.raises(GroupError, match=r'share \(suite, task, init state\)'):
        check_group([_episode(1, 0), _episode(1, 1)])
    with pytest.raises(GroupError, match='several adapter versions'):
        check_group([_episode(1, version=0), _episode(1, version=1)])
    with pytest.raises(GroupError, match='needs 4 episodes, got 2'):
        check_group([_episode(1), _episode(1)], group_size=4)


def test_advantages_are_normalised_per_group():
    from tgrpo_ros.training.trainer import TGRPOTrainer

    class NoPolicy:

        def trainable_parameters(self):
            return [torch.nn.Parameter(torch.zeros(1))]

    trainer = TGRPOTrainer(NoPolicy(), TGRPOConfig(group_size=2, a1=0.0, a2=1.0))
    episodes = [_episode(1, reward=1.0), _episode(2, reward=5.0), _episode(1, reward=0.0),
                _episode(2, reward=6.0, length=2)]
    fused, mask, traj = trainer.group_advantages(episodes)
    # Group 1 returns (3, 0), group 2 (15, 12) cut at length 2 -> (10, 12).
    s = 1 / math.sqrt(2)
    torch.testing.assert_close(traj, torch.tensor([s, -s, -s, s]), atol=1e-5, rtol=0)
    assert mask.sum(dim=1).tolist() == [3, 2, 3, 2]


def test_filter_groups_keeps_only_groups_with_mixed_success():
    from tgrpo_ros.training.trainer import mixed_success_groups, TGRPOTrainer

    mixed = [_episode(1, success=True), _episode(1, success=False)]
    all_failed = [_episode(2, reward=1.0), _episode(2, reward=2.0)]
    all_succeeded = [_episode(3, success=True), _episode(3, success=True)]
    assert mixed_success_groups(mixed + all_failed + all_succeeded) == mixed
    assert mixed_success_groups(all_failed + all_succeeded) == []

    class NoPolicy:  # an update that reached the loss would call log_probs and fail

        def trainable_parameters(self):
            return [torch.nn.Parameter(torch.zeros(1))]

    trainer = TGRPOTrainer(NoPolicy(), TGRPOConfig(group_size=2, filter_groups=True))
    metrics = trainer.update(all_failed + all_succeeded)
    assert metrics['rollout/groups_filtered'] == 2 and trainer.updates_done == 1
    assert metrics['rollout/success_rate'] == 0.5  # rollout statistics cover every episode
    assert 'loss/total' not in metrics
    with pytest.raises(TypeError, match='filter_groups must be a bool'):
        TGRPOConfig(filter_groups=1)


def test_metrics_csv_keeps_every_row_and_plots(tmp_path):
    from tgrpo_ros.training.metrics import MetricsLogger, read_csv
    logger = MetricsLogger(tmp_path, plot_every=2)
    logger.log(1, {'rollout/return_mean': 1.5, 'loss/clip_frac': 0.1})
    logger.log(2, {'rollout/return_mean': 2.5, 'loss/clip_frac': 0.2, 'loss/kl': 0.01})
    rows = read_csv(tmp_path / 'metrics.csv')
    assert [r['update'] for r in rows] == [1.0, 2.0]
    assert rows[1]['loss/kl'] == 0.01 and 'loss/kl' not in rows[0]
    # Update 2 started the plot in a subprocess; close() waits for the final one.
    assert logger.plotter.started == 1
    logger.close()
    assert (tmp_path / 'curves.png').stat().st_size > 1000
    # A resumed logger continues the file; a repeated update replaces its row.
    resumed = MetricsLogger(tmp_path, plot_every=0, resume=True)
    resumed.log(2, {'rollout/return_mean': 3.0})
    resumed.log(3, {'rollout/return_mean': 4.0})
    with open(tmp_path / 'metrics.csv') as stream:
        rows = list(csv.DictReader(stream))
    assert [(r['update'], r['rollout/return_mean']) for r in rows] == [
        ('1', '1.5'), ('2', '3.0'), ('3', '4.0')]
    with pytest.raises(TypeError, match="metric 'x' must be a number"):
        resumed.log(4, {'x': 'high'})
