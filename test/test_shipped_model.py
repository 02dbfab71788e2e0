"""The shipped SFT'd stand-in: make train starts from it, and it is what its manifest says."""

import hashlib
import json
import os
import shutil

import numpy as np
import pytest
import torch

from tgrpo_ros.orchestration import graph

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL = os.path.join(ROOT, 'models', 'standin_sft_task0')
CONFIG = os.path.join(ROOT, 'config', 'train_sim.yaml')


def setup_module():
    torch.set_num_threads(1)


def test_make_train_starts_from_the_shipped_sft_model(tmp_path, monkeypatch):
    """
    The config names its model package://tgrpo_ros/models/..., found from any directory.

    It resolves in the installed share directory (files linked one by one by make setup,
    copied by colcon): the model found there holds the shipped model's own weights.
    """
    import filecmp
    monkeypatch.chdir(tmp_path)
    config = graph.load_config(CONFIG)
    run = graph.plan_run(config, config_path=CONFIG, runs_root=str(tmp_path / 'runs'))
    for name in ('model.safetensors', 'config.json'):
        assert filecmp.cmp(os.path.join(run.model_path, name), os.path.join(MODEL, name),
                           shallow=False), (run.model_path, name)
    server = graph.find_node(run.nodes, 'policy_server')
    learner = graph.find_node(run.nodes, 'learner')
    assert server.parameters['model_path'] == learner.parameters['model_path'] == run.model_path
    # The learner fine-tunes it gently: a random-init learning rate would wreck it.
    assert learner.parameters['lr'] <= 1e-4


def test_shipped_model_is_what_its_manifest_says():
    with open(os.path.join(MODEL, 'manifest.json')) as f:
        manifest = json.load(f)
    weights = os.path.join(MODEL, 'model.safetensors')
    with open(weights, 'rb') as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    entry = manifest['files']['model.safetensors']
    assert digest == entry['sha256']
    assert os.path.getsize(weights) == entry['bytes'] <= 30 * 1024 * 1024
    assert any('tgrpo_sft' in step for step in manifest['build'])
    evaluation = manifest['evaluation']
    assert 0.2 <= evaluation['float32_weights_before_the_cast']['success_rate'] <= 0.8
    # setup.py installs it next to config/, where the config's relative path points.
    setup_text = open(os.path.join(ROOT, 'setup.py')).read()
    assert "glob('models/*/*')" in setup_text


def test_shipped_model_loads_and_acts_in_the_openvla_contract():
    from tgrpo_ros.policy import load_policy
    from tgrpo_ros.policy.contract import ACTION_DIM

    policy = load_policy(MODEL, dtype='float32')
    assert next(policy.model.parameters()).dtype == torch.float32  # upcast from float16
    image = np.full((224, 224, 3), 90, np.uint8)
    out = policy.sample([image], ['pick up the alphabet soup and place it in the basket'],
                        greedy=True)
    assert out.actions.shape == (1, ACTION_DIM) and np.all(np.isfinite(out.actions))


def test_cast_checkpoint_halves_the_file_and_keeps_the_policy(tmp_path):
    from tgrpo_ros.policy import cached_standin, load_policy
    from tgrpo_ros.policy.cast import cast_checkpoint, main

    source = cached_standin(seed=0)
    target = tmp_path / 'model'
    shutil.copytree(source, target)
    before = os.path.getsize(target / 'model.safetensors')
    changes = cast_checkpoint(str(target), 'float16')
    assert 0.0 < changes['model.safetensors'] < 1e-2
    assert os.path.getsize(target / 'model.safetensors') < 0.55 * before
    assert json.loads((target / 'config.json').read_text())['torch_dtype'] == 'float16'
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (224, 224, 3), dtype=np.uint8) for _ in range(2)]
    instruction = ['pick up the ketchup and place it in the basket'] * 2
    a = load_policy(source, dtype='float32')
    b = load_policy(str(target), dtype='float32')
    tokens = a.sample(images, instruction, greedy=True).action_tokens
    with torch.no_grad():
        logp_a, _ = a.log_probs(images, instruction, tokens)
        logp_b, _ = b.log_probs(images, instruction, tokens)
    np.testing.assert_allclose(logp_a.numpy(), logp_b.numpy(), atol=5e-2)
    with pytest.raises(ValueError, match='unknown dtype'):
        cast_checkpoint(str(target), 'int8')
    assert main([str(tmp_path / 'missing'), '--dtype', 'float16']) == 2
