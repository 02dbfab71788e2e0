"""Supervised fine-tuning: no-op filter, DART labels, augmentation, the SFT objective."""

import json
import os

import numpy as np
import pytest
import torch

from tgrpo_ros.policy import cached_standin, contract, load_policy
from tgrpo_ros.sim.demos import load_demo, noop_mask, save_demo
from tgrpo_ros.training import sft

os.environ.setdefault('MUJOCO_GL', 'egl')
os.environ.setdefault('LP_NUM_THREADS', '1')
INSTRUCTION = 'pick up the alphabet soup and place it in the basket'


@pytest.fixture(autouse=True)
def one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def test_noop_mask_on_hand_made_actions():
    actions = np.array([
        [0.00, 0.00, 0.00, 0.3, 0.0, 0.0, -1.0],  # still, first frame: no-op
        [0.20, 0.00, 0.00, 0.0, 0.0, 0.0, -1.0],  # moves in x
        [0.04, -0.049, 0.01, 0.9, 0.9, 0.9, -1.0],  # below 0.05, rotation ignored: no-op
        [0.00, 0.00, 0.00, 0.0, 0.0, 0.0, 1.0],  # still but the gripper closes: kept
        [0.00, 0.00, 0.00, 0.0, 0.0, 0.0, 1.0],  # still, gripper held: no-op
        [0.00, 0.00, 0.05, 0.0, 0.0, 0.0, 1.0],  # |z| = 0.05 is not below 0.05: kept
        [0.00, 0.00, -0.06, 0.0, 0.0, 0.0, 1.0],  # moves down
    ])
    assert noop_mask(actions).tolist() == [True, False, True, False, True, False, False]
    assert noop_mask(actions, threshold=0.1).tolist() == [
        True, False, True, False, True, True, True]
    with pytest.raises(ValueError, match=r'actions must be \[T, 7\], got shape \[7\]'):
        noop_mask(actions[0])


@pytest.mark.slow
def test_dart_noise_records_clean_labels():
    from tgrpo_ros.sim.controllers import run_scripted_episode
    from tgrpo_ros.sim.libero_env import LiberoEnv
    env = LiberoEnv(task_id=0, camera_size=128, max_steps=12, multisample=False)
    try:
        executed = []
        step = env.step

        def spy(action, convention='policy'):
            executed.append(np.array(action, dtype=np.float64))
            return step(action, convention=convention)
        env.step = spy
        noisy = run_scripted_episode(env, 'expert', 0, seed=7, record=True, dart_sigma=0.3)
        executed_noisy, executed[:] = list(executed), []
        clean = run_scripted_episode(env, 'expert', 0, seed=7, record=True)
    finally:
        env.close()
    labels = noisy['env_actions'].astype(np.float64)  # [12, 7]
    assert labels.shape == (12, 7) and noisy['actions'].shape == (12, 7)
    # The label is the expert's clean action: executed = clip(label + the seeded noise).
    rng = np.random.default_rng([7, 0xDA27])
    for label, done in zip(labels, executed_noisy):
        expected = np.clip(label[:6] + rng.normal(0.0, 0.3, size=6), -1.0, 1.0)
        np.testing.assert_allclose(done[:6], expected, atol=1e-6)
        assert done[6] == label[6]  # the gripper command is never perturbed
    assert np.abs(np.stack(executed_noisy)[:, :6] - labels[:, :6]).mean() > 0.1
    # Same init state: the first label matches the noise-free expert; later states drift.
    np.testing.assert_allclose(labels[0], clean['env_actions'][0], atol=1e-4)
    assert not np.allclose(labels[1:], clean['env_actions'][1:], atol=1e-3)
    np.testing.assert_allclose(executed, clean['env_actions'], atol=1e-6)  # sigma 0: as is
    with pytest.raises(ValueError, match='dart_sigma must be >= 0'):
        run_scripted_episode(None, 'expert', 0, dart_sigma=-1.0)


def test_augment_shift_translates_and_crop_keeps_shape():
    images = np.random.default_rng(0).integers(0, 256, (3, 224, 224, 3), dtype=np.uint8)
    shifted = sft.augment_images(images, 'shift', np.random.default_rng(1), shift_pixels=4)
    offsets = np.random.default_rng(1).integers(0, 9, size=(3, 2))
    padded = np.pad(images, ((0, 0), (4, 4), (4, 4), (0, 0)), mode='edge')
    for i, (dy, dx) in enumerate(offsets):
        np.testing.assert_array_equal(shifted[i], padded[i, dy:dy + 224, dx:dx + 224])
    cropped = sft.augment_images(images, 'crop', np.random.default_rng(1), crop_area=0.9)
    assert cropped.shape == images.shape and cropped.dtype == np.uint8
    assert not np.array_equal(cropped, images)
    assert sft.augment_images(images, 'none', None) is images


def test_lr_schedule_warms_up_then_decays_to_floor():
    factors = [sft.lr_factor(s, 100, 10, 0.1) for s in range(100)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0)
    assert factors[10] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(factors[10:], factors[11:]))
    assert sft.lr_factor(100, 100, 10, 0.1) == pytest.approx(0.1)


def _synthetic_demos(out_dir, n_episodes=2, frames=6, noops=2):
    """
    Write demos whose images encode the frame: its own colour and a bright square.

    Each episode has ``frames`` frames with distinct actions, then ``noops`` still frames
    (gripper held) that the default filter drops.
    """
    rng = np.random.default_rng(0)
    total = 0
    for episode in range(n_episodes):
        length = frames + noops
        images = np.zeros((length, 224, 224, 3), dtype=np.uint8)
        actions = np.zeros((length, 7), dtype=np.float32)
        for t in range(length):
            k = episode * frames + t
            images[t] = ((37 * k) % 200, (91 * k) % 200, (53 * k) % 200)
            y, x = 28 * (k % 8), 28 * ((3 * k) % 8)
            images[t, y:y + 28, x:x + 28] = (250, 30 * (k % 8), 120)
            if t < frames:
                actions[t, :6] = rng.uniform(-0.5, 0.5, size=6) * [1, 1, 1, 0.1, 0.1, 0.1]
                actions[t, :3] += np.sign(actions[t, :3]) * 0.1  # clearly not a no-op
        actions[:, 6] = 1.0  # open all along (policy convention)
        env_actions = actions.copy()
        env_actions[:, 6] = -1.0
        result = {'task_id': 0, 'init_state_id': episode, 'instruction': INSTRUCTION,
                  'images': images, 'actions': actions, 'env_actions': env_actions,
                  'rewards': np.zeros(length, np.float32), 'stages': np.zeros(length, np.int8),
                  'length': length, 'success': True, 'return': 0.0}
        save_demo(result, str(out_dir), 'libero_object', 128)
        total += length
    return total


def test_sft_loss_falls_and_greedy_actions_reach_the_labels(tmp_path):
    demos = tmp_path / 'demos'
    demos.mkdir()
    _synthetic_demos(demos, n_episodes=2, frames=4, noops=2)
    loaded = load_demo(str(demos / 'task00_init01.npz'))
    assert loaded['noop'].tolist() == [False] * 4 + [True] * 2
    base = cached_standin(seed=0)
    out = tmp_path / 'sft_model'
    argv = ['--demos', str(demos), '--model-path', base, '--out', str(out), '--epochs', '3',
            '--batch-size', '8', '--lr', '3e-3', '--warmup-steps', '0', '--min-lr-ratio', '1',
            '--weight-decay', '0', '--val-fraction', '0', '--augment', 'none',
            '--keep-checkpoints', '1', '--checkpoint-every', '10', '--no-progress']
    assert sft.main(argv) == 0
    report = json.loads((out / sft.REPORT_FILE).read_text())
    assert report['demos']['frames'] == 8 and report['demos']['dropped_noops'] == 4
    assert [row['epoch'] for row in report['epochs']] == [1, 2, 3]

    # Resume adds epochs from the newest checkpoint: epochs 1-3 are kept, not redone.
    argv[argv.index('--epochs') + 1] = '50'
    assert sft.main(argv + ['--resume']) == 0
    report = json.loads((out / sft.REPORT_FILE).read_text())
    losses = [row['train/loss'] for row in report['epochs']]
    assert [row['epoch'] for row in report['epochs']] == list(range(1, 51))
    assert report['steps'] == 50
    assert losses[0] > 4.5  # about log(256) = 5.5 at the start
    assert losses[-1] < 0.2 * losses[0], losses

    # The exported directory loads as a model; greedy actions match the demo labels.
    policy = load_policy(str(out))
    frames = sft.load_demo_frames(sft.demo_files(str(demos)), policy.norm_stats)
    instructions = frames.instructions_of(np.arange(len(frames)))
    tokens = policy.sample(frames.images, instructions, greedy=True).action_tokens.numpy()
    before = load_policy(base).sample(frames.images, instructions, greedy=True)
    labels = contract.decode_action_tokens(frames.tokens)  # normalised, [8, 7]
    error_before = np.abs(before.normalized_actions - labels).mean()
    error_after = np.abs(contract.decode_action_tokens(tokens) - labels).mean()
    assert error_after < 0.25 * error_before, (error_before, error_after)
    assert (tokens == frames.tokens).mean() > 0.4


def test_lora_sft_writes_an_adapter_with_validation(tmp_path):
    demos = tmp_path / 'demos'
    demos.mkdir()
    _synthetic_demos(demos, n_episodes=3, frames=3, noops=1)
    out = tmp_path / 'adapter'
    report = sft.train_sft(sft.SFTConfig(
        demos=str(demos), model_path=cached_standin(seed=0), out=str(out),
        trainable='lora+action_head', lora_r=4, epochs=1, batch_size=4, val_fraction=0.34,
        progress=False), log=lambda *_: None)
    assert sorted(os.listdir(out)) == ['adapter_config.json', 'adapter_model.safetensors',
                                       sft.REPORT_FILE]
    assert len(report['demos']['val_episodes']) == 1
    # What produced it, and which renders it learned from (the guard reads trained_on).
    assert report['trained_on']['mujoco'] == report['environment']['versions']['mujoco']
    assert report['environment']['output']['files']['adapter_model.safetensors']
    assert report['environment']['checkpoint']['sha256']
    row = report['epochs'][0]
    assert 0.0 <= row['val/accuracy'] <= 1.0 and row['val/loss'] > 0
    assert {f'val/accuracy_dim{d}' for d in range(7)} <= set(row)
    policy = load_policy(cached_standin(seed=0), trainable='lora+action_head',
                         lora=sft.SFTConfig(demos='d', model_path='m', out='o',
                                            lora_r=4).lora_settings(), adapter_path=str(out))
    assert float(policy.action_head_delta.detach().abs().sum()) > 0


def test_sft_writes_tensorboard_through_the_learners_writer(tmp_path):
    """tgrpo_sft on the command line: events TensorBoard reads, per epoch and per step."""
    import shutil
    import subprocess
    import sys

    from tgrpo_ros.training.metrics import read_tensorboard_scalars
    demos = tmp_path / 'demos'
    demos.mkdir()
    _synthetic_demos(demos, n_episodes=2, frames=3, noops=0)
    run_dir = tmp_path / 'run'
    result = subprocess.run(
        [sys.executable, '-m', 'tgrpo_ros.training.sft', '--demos', str(demos), '--model-path',
         cached_standin(seed=0), '--out', str(tmp_path / 'out'), '--run-dir', str(run_dir),
         '--trainable', 'lora', '--lora-rank', '4', '--epochs', '2', '--batch-size', '4',
         '--val-fraction', '0', '--num-threads', '1', '--no-progress'],
        capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert 'not installed' not in result.stdout + result.stderr
    assert f'tensorboard: tensorboard --logdir {run_dir}' in result.stdout
    epochs = read_tensorboard_scalars(run_dir)  # MetricsLogger's events, one per epoch
    assert [step for step, _ in epochs['train/loss']] == [1, 2]
    steps = read_tensorboard_scalars(run_dir / 'steps')
    assert [step for step, _ in steps['step/loss']] == [1, 2, 3, 4]  # 6 frames, batch 4
    assert not (run_dir / 'tensorboard').exists()  # no second, torch-side writer
    assert shutil.which('tensorboard'), 'the tensorboard command is installed (make setup)'


def test_bad_sft_options(tmp_path, capsys):
    with pytest.raises(ValueError, match="unknown augment 'blur'; choose one of none, shift"):
        sft.SFTConfig(demos='d', model_path='m', out='o', augment='blur')
    with pytest.raises(ValueError, match="unknown trainable mode 'all'"):
        sft.SFTConfig(demos='d', model_path='m', out='o', trainable='all')
    with pytest.raises(ValueError, match=r'val_fraction must be in \[0, 1\), got 1.0'):
        sft.SFTConfig(demos='d', model_path='m', out='o', val_fraction=1.0)
    assert sft.main(['--demos', str(tmp_path), '--model-path', cached_standin(seed=0),
                     '--out', str(tmp_path / 'o')]) == 2
    assert 'no demonstrations (task*_init*.npz) in' in capsys.readouterr().err


def test_labels_use_the_model_normalisation():
    stats = contract.LIBERO_OBJECT_STATS
    actions = np.array([[0.8464, -0.8759, 0.0, 0.0814, -0.1168, 0.0, 1.0],
                        [2.0, -2.0, 0.0, 0.0, 0.0, 0.0, 0.0]])
    normalized = contract.normalize_actions(actions, stats)
    np.testing.assert_allclose(normalized[0, [0, 1, 3, 4, 6]], [1, -1, 1, -1, 1])
    np.testing.assert_allclose(normalized[1, [0, 1, 6]], [1, -1, 0])  # clipped; gripper as is
    back = contract.unnormalize_actions(normalized[:1], stats)
    np.testing.assert_allclose(back, actions[:1], atol=1e-9)
