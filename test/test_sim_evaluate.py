"""Evaluation harness: scripted and batched policies over K env processes, report files."""

import json
import os

import numpy as np
import pytest

from tgrpo_ros.sim.evaluate import EvalConfig, format_table, main, run_evaluation

os.environ.setdefault('MUJOCO_GL', 'egl')
os.environ.setdefault('LP_NUM_THREADS', '1')


def test_random_policy_report_files(tmp_path):
    config = EvalConfig(policy='random', tasks=[0], num_init_states=3, num_envs=2,
                        max_steps=4, json_path=str(tmp_path / 'r.json'),
                        png_path=str(tmp_path / 'r.png'))
    report = run_evaluation(config, progress=False)
    assert report['render'] is False
    assert [e['init_state_id'] for e in report['episode_results']] == [0, 1, 2]
    assert all(e['length'] == 4 and not e['success'] for e in report['episode_results'])
    row = report['per_task']['0']
    assert row['episodes'] == 3 and row['success_rate'] == 0.0
    assert row['failed_init_states'] == [0, 1, 2]
    assert 0.0 < row['mean_return'] < 4 * 0.1 + 1e-9  # approach stage only, 4 steps
    saved = json.loads((tmp_path / 'r.json').read_text())
    assert saved['complete'] and saved['mean_success'] == 0.0
    assert saved['config']['policy'] == 'random'
    assert (tmp_path / 'r.png').read_bytes()[:4] == b'\x89PNG'
    assert '| 0 | pick up the alphabet soup' in format_table(report)


@pytest.mark.slow
def test_batched_policy_steps_in_lockstep():
    seen = []

    def still(images, instructions):
        seen.append((images.shape, images.dtype, tuple(instructions)))
        return np.tile([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0], (len(images), 1))

    config = EvalConfig(policy='random', tasks=[0, 2], num_init_states=1, num_envs=2,
                        max_steps=3, camera_size=128)
    report = run_evaluation(config, policy=still, progress=False)
    assert report['render'] is True
    assert [(e['task_id'], e['length']) for e in report['episode_results']] == [(0, 3), (2, 3)]
    assert len(seen) == 3  # both envs stepped together each time
    shape, dtype, instructions = seen[0]
    assert shape == (2, 224, 224, 3) and dtype == np.uint8
    assert sorted(instructions) == [
        'pick up the alphabet soup and place it in the basket',
        'pick up the salad dressing and place it in the basket']


def test_failing_policy_keeps_finished_episodes(tmp_path):
    calls = []

    def fails_on_second_round(images, instructions):
        calls.append(len(images))
        if len(calls) == 4:
            raise RuntimeError('policy crashed')
        return np.tile([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0], (len(images), 1))

    config = EvalConfig(policy='random', tasks=[0], num_init_states=2, num_envs=1,
                        max_steps=3, camera_size=128, json_path=str(tmp_path / 'e.json'))
    with pytest.raises(RuntimeError, match='policy crashed'):
        run_evaluation(config, policy=fails_on_second_round, progress=False)
    partial = json.loads((tmp_path / 'e.json.partial').read_text())
    assert not partial['complete'] and partial['episodes'] == 1
    assert not (tmp_path / 'e.json').exists()


def test_repeats_run_each_init_state_again_with_fresh_samples():
    config = EvalConfig(policy='random', tasks=[0], num_init_states=2, repeats=3,
                        num_envs=1, max_steps=3)
    report = run_evaluation(config, progress=False)
    episodes = report['episode_results']
    assert [e['init_state_id'] for e in episodes] == [0, 0, 0, 1, 1, 1]
    assert report['episodes'] == 6 and report['per_task']['0']['episodes'] == 6
    # Each repeat draws its own random actions: the three returns of a state differ.
    assert len({round(e['return'], 9) for e in episodes[:3]}) == 3


def test_bad_options(capsys):
    with pytest.raises(ValueError, match=r'repeats \(0\) must be >= 1'):
        EvalConfig(repeats=0)
    with pytest.raises(ValueError, match="Unknown policy 'nope'; available: expert, random"):
        EvalConfig(policy='nope')
    with pytest.raises(ValueError, match=r'camera_size \(100\) must be one of'):
        EvalConfig(camera_size=100)
    assert main(['--policy', 'nope']) == 2
    assert "Unknown policy 'nope'" in capsys.readouterr().err


def test_wilson_interval_known_values():
    from tgrpo_ros.sim.evaluate import wilson_interval
    assert wilson_interval(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert wilson_interval(10, 10) == pytest.approx((0.7225, 1.0), abs=1e-4)
    assert wilson_interval(30, 50) == pytest.approx((0.4618, 0.7239), abs=1e-4)
    with pytest.raises(ValueError, match=r'successes must be in \[0, 10\], got 11'):
        wilson_interval(11, 10)


def test_vla_with_adapter_greedy_and_sampled(tmp_path):
    import torch
    from tgrpo_ros.policy import cached_standin, load_policy
    from tgrpo_ros.policy.adapters import LoraSettings
    from tgrpo_ros.sim.evaluate import load_vla
    from tgrpo_ros.testing.policy_helpers import perturb_trainable, random_images
    torch.set_num_threads(1)
    base = cached_standin(seed=0)
    trained = load_policy(base, trainable='lora+action_head', lora=LoraSettings(r=4))
    perturb_trainable(trained, scale=0.5)
    adapter = trained.save_adapter(tmp_path / 'adapter')

    # The evaluator reads the adapter's mode and LoRA layout (r=4, not the default 32).
    policy = load_vla(base, adapter)
    assert policy.trainable == 'lora+action_head' and policy.lora.r == 4
    assert policy.adapter_path == str(adapter)
    images = random_images(2, seed=3)
    instructions = ['pick up the alphabet soup and place it in the basket'] * 2
    expected = trained.sample(images, instructions, greedy=True).action_tokens
    torch.testing.assert_close(policy.sample(images, instructions, greedy=True).action_tokens,
                               expected)
    assert not torch.equal(load_policy(base).sample(images, instructions,
                                                    greedy=True).action_tokens, expected)

    config = EvalConfig(policy='vla', model_path=base, adapter_path=str(adapter), tasks=[0],
                        num_init_states=1, num_envs=1, max_steps=3, camera_size=128,
                        multisample=False, temperature=1.0, json_path=str(tmp_path / 'a.json'))
    report = run_evaluation(config, progress=False)
    assert [(e['init_state_id'], e['length']) for e in report['episode_results']] == [(0, 3)]
    row = report['per_task']['0']
    assert row['success_ci95'] == pytest.approx([0.0, 0.7935], abs=1e-4)  # 0 of 1
    saved = json.loads((tmp_path / 'a.json').read_text())
    assert saved['config']['adapter_path'] == str(adapter)
    assert saved['config']['temperature'] == 1.0 and saved['config']['multisample'] is False
    with pytest.raises(ValueError, match=r'temperature \(0.0\) must be > 0'):
        EvalConfig(policy='vla', temperature=0.0)
    with pytest.raises(ValueError, match="adapter directory '/nope' does not exist"):
        EvalConfig(policy='vla', adapter_path='/nope')
