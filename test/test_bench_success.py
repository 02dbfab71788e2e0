"""bench/success.py at its smallest scale: two arms trained, three policies evaluated."""

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


@pytest.mark.slow
def test_success_bench_runs_and_ends_with_its_target_lines(tmp_path):
    from tgrpo_ros.policy import cached_standin

    command = [sys.executable, os.path.join(ROOT, 'bench', 'success.py'),
               '--model-path', cached_standin(0), '--arms', 'tgrpo,grpo',
               '--env-steps', '4', '--group-size', '2', '--max-steps', '2',
               '--eval-init-states', '2', '--eval-temperature', '0', '--eval-envs', '1',
               '--out-dir', str(tmp_path)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600,
                            env=dict(os.environ, PYTHONPATH=ROOT))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    assert lines[-2].startswith('success_gain_z: ')
    assert lines[-1].startswith('success_gain_points: ')
    assert any(line.startswith('sft: success 0/2') for line in lines)  # random init fails
    assert any(line.startswith('tgrpo: success ') and 'env steps' in line for line in lines)
    assert (tmp_path / 'success.png').is_file() and (tmp_path / 'summary.json').is_file()
    assert (tmp_path / 'grpo' / 'adapter' / 'adapter_model.safetensors').is_file()


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
