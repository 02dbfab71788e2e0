"""bench/success.py at its smallest scale: two arms trained, three policies on two splits."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, 'bench'))


def test_pooled_z_by_hand():
    import success
    # 60/100 vs 40/100: pooled p 0.5, se sqrt(0.25 * 0.02) = 0.0707..., z = 0.2 / se.
    assert success.pooled_z(60, 100, 40, 100) == pytest.approx(0.2 / (0.25 * 0.02) ** 0.5)
    assert success.pooled_z(0, 10, 0, 10) == 0.0


def test_stratified_z_and_paired_difference_by_hand():
    import success
    a = {1: (3, 5), 2: (5, 5)}
    b = {1: (1, 5), 2: (4, 5)}
    # State 1: N 10, m 4: E 2, Var 5*5*4*6 / (100*9); state 2: N 10, m 9: E 4.5,
    # Var 5*5*9*1 / (100*9). z = (8 - 6.5) / sqrt(0.6667 + 0.25).
    assert success.stratified_z(a, b) == pytest.approx(1.5 / (600 / 900 + 225 / 900) ** 0.5)
    assert success.stratified_z(a, a) == 0.0
    assert success.stratified_z(b, a) == pytest.approx(-success.stratified_z(a, b))
    # Per-state differences 0.4 and 0.2: mean 0.3, sd 0.1414, se 0.1, t 3.
    paired = success.paired_state_difference(a, b)
    assert paired['states'] == 2
    assert paired['mean'] == pytest.approx(0.3) and paired['se'] == pytest.approx(0.1)
    assert paired['t'] == pytest.approx(3.0)
    assert success.paired_state_difference({1: (1, 2)}, {1: (0, 2)}) is None
    # States only one policy ran do not count.
    assert success.stratified_z({**a, 9: (9, 10)}, b) == success.stratified_z(a, b)


def test_stratified_z_is_blind_to_differences_between_init_states():
    import success
    # The same per-state rates, one easy state and one hard: no gain, z 0 however
    # different the states are; pooling them is what the stratified test avoids.
    sft = {0: (9, 10), 1: (1, 10)}
    assert success.stratified_z(dict(sft), sft) == 0.0
    better = {0: (10, 10), 1: (3, 10)}
    assert success.stratified_z(better, sft) > success.pooled_z(13, 20, 10, 20) > 0


@pytest.mark.slow
def test_success_bench_runs_and_ends_with_its_target_lines(tmp_path):
    from tgrpo_ros.policy import cached_standin

    command = [sys.executable, os.path.join(ROOT, 'bench', 'success.py'),
               '--model-path', cached_standin(0), '--arms', 'tgrpo,tgrpo_lora',
               '--env-steps', '4', '--group-size', '2', '--max-steps', '2',
               '--train-init-states', '2', '--eval-init-states', '2',
               '--heldout-init-states', '1', '--eval-temperature', '0', '--eval-envs', '1',
               '--out-dir', str(tmp_path)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=1800,
                            env=dict(os.environ, PYTHONPATH=ROOT))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    assert lines[-2].startswith('success_gain_z: ')
    assert lines[-1].startswith('success_gain_points: ')
    assert any(line.startswith('sft: success 0/2') for line in lines)  # random init fails
    assert any(line.startswith('tgrpo: success ') and 'env steps' in line for line in lines)
    assert (tmp_path / 'success.png').is_file() and (tmp_path / 'summary.json').is_file()
    assert (tmp_path / 'tgrpo_lora' / 'adapter' / 'adapter_model.safetensors').is_file()
    # The LoRA arm trains the 7B's layout: LoRA only, far fewer parameters than full.
    assert any(line.startswith('tgrpo_lora: success ') and 'trained lora at lr' in line
               for line in lines)
    assert any(line.startswith('sft (heldout): success 0/1') for line in lines)
    assert any(line.startswith('tgrpo_lora vs sft (heldout): ') for line in lines)
    summary = json.loads((tmp_path / 'summary.json').read_text())
    arms = {arm['arm']: arm for arm in summary['arms']}
    assert arms['tgrpo_lora']['trainable'] == 'lora'
    assert arms['tgrpo_lora']['trainable_parameters'] < arms['tgrpo']['trainable_parameters']
    assert {(e['name'], e['split']) for e in summary['evals']} == {
        (name, split) for name in ('sft', 'tgrpo', 'tgrpo_lora')
        for split in ('trained', 'heldout')}
    heldout = [e for e in summary['evals'] if e['split'] == 'heldout']
    assert all(e['init_states'] == [2, 2] for e in heldout)  # never trained on
    environment = summary['environment']
    assert environment['versions']['mujoco'] and environment['render']['camera_size'] == 128
    assert set(environment['adapters']) == {'tgrpo', 'tgrpo_lora'}
    assert environment['checkpoint']['sha256']


def test_every_training_option_reaches_the_trainer():
    """--advantage-mode masked and every other TGRPOConfig option reach the trainer."""
    import argparse
    from dataclasses import fields

    import success
    from tgrpo_ros.training.config import TGRPOConfig
    args = argparse.Namespace(group_size=2, lr=2e-4, epochs=3, minibatch_size=16, beta=0.05,
                              advantage_mode='masked', filter_groups=True, seed=7,
                              threads=1, out_dir='x', model_path='y')
    config = success.trainer_config(args, 'grpo')
    assert config.advantage_mode == 'masked'
    assert (config.group_size, config.lr, config.epochs, config.minibatch_size, config.beta,
            config.filter_groups) == (2, 2e-4, 3, 16, 0.05, True)
    assert (config.a1, config.a2) == (0.0, 1.0)
    # Every flag of the bench named like a config field is a config field it passes.
    help_text = subprocess.run([sys.executable, os.path.join(ROOT, 'bench', 'success.py'),
                                '--help'], capture_output=True, text=True, timeout=120,
                               env=dict(os.environ, PYTHONPATH=ROOT)).stdout
    flagged = [f.name for f in fields(TGRPOConfig)
               if '--' + f.name.replace('_', '-') in help_text]
    assert {'group_size', 'lr', 'advantage_mode', 'filter_groups'} <= set(flagged)
