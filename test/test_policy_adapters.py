"""LoRA adapters: settings, trainable modes, save/load hot swap, rejections, reference."""

import json
import os

import pytest
import torch

from tgrpo_ros.policy import AdapterError, cached_standin, load_policy, LoraSettings
from tgrpo_ros.testing.policy_helpers import perturb_trainable, random_images

torch.set_num_threads(1)

INSTRUCTION = 'pick up the alphabet soup and place it in the basket'
LORA_QV = 4 * 2 * (32 * 96 + 96 * 32)  # 4 layers x (q, v) x (A [32, 96] + B [96, 32])


@pytest.fixture(scope='module')
def standin_path():
    return cached_standin(seed=0)


@pytest.fixture(scope='module')
def images():
    return random_images(4)


def _logps(policy, images, tokens):
    with torch.no_grad():
        return policy.log_probs(images, [INSTRUCTION] * len(images), tokens)[0]


TOKENS = torch.tensor([[31750, 31800, 31850, 31872, 31900, 31950, 31990]] * 4)


def test_lora_settings_validation():
    assert LoraSettings().target_modules == ('q_proj', 'v_proj')
    assert LoraSettings(target_modules='q_proj, k_proj').target_modules == ('q_proj', 'k_proj')
    assert LoraSettings(target_modules='all-linear').target_modules == 'all-linear'
    with pytest.raises(ValueError, match='r must be a positive int, got 0'):
        LoraSettings(r=0)
    with pytest.raises(ValueError, match="must not include 'lm_head'"):
        LoraSettings(target_modules=('q_proj', 'lm_head'))
    with pytest.raises(ValueError, match="got ''"):
        LoraSettings(target_modules='')


def test_trainable_modes(standin_path, images, tmp_path):
    lora = load_policy(standin_path, trainable='lora')
    assert lora.num_trainable_parameters() == LORA_QV
    head = load_policy(standin_path, trainable='lora+action_head')
    assert head.num_trainable_parameters() == LORA_QV + 256 * 96
    full = load_policy(standin_path, trainable='full')
    assert full.num_trainable_parameters() == full.model.num_parameters()
    wide = load_policy(standin_path, lora=LoraSettings(r=8, target_modules='all-linear'))
    # 4 layers x (q, k, v, o: 8 * (96 + 96); gate, up: 8 * (96 + 256); down: same) +
    # projector fc1 (64 -> 96): 8 * (64 + 96) and fc2 (96 -> 96): 8 * (96 + 96).
    per_layer = 4 * 8 * 192 + 3 * 8 * (96 + 256)
    assert wide.num_trainable_parameters() == 4 * per_layer + 8 * 160 + 8 * 192
    perturb_trainable(wide)
    wide.save_adapter(tmp_path / 'wide')
    wide.set_reference_adapter(str(tmp_path / 'wide'))  # same layout: reference = current
    assert wide.num_trainable_parameters() == 4 * per_layer + 8 * 160 + 8 * 192
    with wide.reference():
        reference = _logps(wide, images[:1], TOKENS[:1])
    torch.testing.assert_close(reference, _logps(wide, images[:1], TOKENS[:1]), rtol=0, atol=0)
    with pytest.raises(ValueError, match="unknown trainable mode 'head'; choose one of lora, "
                                         'lora\\+action_head, full'):
        load_policy(standin_path, trainable='head')
    frozen = [p for n, p in lora.model.named_parameters() if 'lora_' not in n]
    assert not any(p.requires_grad for p in frozen)


def test_save_files_and_hot_swap(standin_path, images, tmp_path):
    trainer = load_policy(standin_path, trainable='lora+action_head')
    perturb_trainable(trainer)
    trainer.save_adapter(tmp_path / 'v1')
    files = sorted(os.listdir(tmp_path / 'v1'))
    assert files == ['adapter_config.json', 'adapter_model.safetensors']
    with open(tmp_path / 'v1' / 'adapter_config.json') as f:
        config = json.load(f)
    assert config['peft_type'] == 'LORA' and config['r'] == 32
    assert sorted(config['target_modules']) == ['q_proj', 'v_proj']
    server = load_policy(standin_path, trainable='lora+action_head', adapter_root=str(tmp_path))
    before = _logps(server, images, TOKENS)
    seconds = server.load_adapter(str(tmp_path / 'v1'), version=1)
    assert seconds > 0 and server.adapter_version == 1
    torch.testing.assert_close(_logps(server, images, TOKENS), _logps(trainer, images, TOKENS),
                               rtol=0, atol=1e-6)
    assert float((before - _logps(server, images, TOKENS)).abs().max()) > 1e-3
    # The adapter also loads with plain peft (standard format); the delta key is extra.
    from peft import PeftConfig
    assert PeftConfig.from_pretrained(str(tmp_path / 'v1')).r == 32


def _expect_rejection(server, images, path, match, before):
    with pytest.raises(AdapterError, match=match):
        server.load_adapter(str(path), version=9)
    assert server.adapter_version == 1
    torch.testing.assert_close(_logps(server, images[:1], TOKENS[:1]), before, rtol=0, atol=0)


def test_rejections_keep_the_serving_adapter(standin_path, images, tmp_path):
    root = tmp_path / 'root'
    trainer = load_policy(standin_path, trainable='lora')
    perturb_trainable(trainer)
    trainer.save_adapter(root / 'good')
    server = load_policy(standin_path, trainable='lora', adapter_root=str(root))
    server.load_adapter(str(root / 'good'), version=1)
    before = _logps(server, images[:1], TOKENS[:1])

    trainer.save_adapter(tmp_path / 'outside')
    _expect_rejection(server, images, tmp_path / 'outside', 'outside the adapter root', before)
    os.symlink(tmp_path / 'outside', root / 'link')
    _expect_rejection(server, images, root / 'link', 'outside the adapter root', before)
    _expect_rejection(server, images, root / 'missing', 'does not exist', before)

    (root / 'no_weights').mkdir()
    (root / 'no_weights' / 'adapter_config.json').write_text('{}')
    _expect_rejection(server, images, root / 'no_weights', 'has no adapter_model.safetensors',
                      before)
    (root / 'pickle').mkdir()
    (root / 'pickle' / 'adapter_model.bin').write_bytes(b'not loaded')
    _expect_rejection(server, images, root / 'pickle', 'pickled weights are never loaded', before)

    trainer.save_adapter(root / 'corrupt')
    weights = root / 'corrupt' / 'adapter_model.safetensors'
    weights.write_bytes(weights.read_bytes()[:1000])
    _expect_rejection(server, images, root / 'corrupt', 'corrupt adapter weights', before)
    trainer.save_adapter(root / 'bad_json')
    (root / 'bad_json' / 'adapter_config.json').write_text('{"r": 32,')
    _expect_rejection(server, images, root / 'bad_json', 'cannot parse', before)

    other_base = load_policy(cached_standin(seed=1), trainable='lora')
    other_base.save_adapter(root / 'other_base')
    _expect_rejection(server, images, root / 'other_base', 'trained on another base model',
                      before)
    other_rank = load_policy(standin_path, trainable='lora', lora=LoraSettings(r=8))
    other_rank.save_adapter(root / 'other_rank')
    _expect_rejection(server, images, root / 'other_rank', r'shape \[8, 96\], expected '
                      r'\[32, 96\]', before)
    other_targets = load_policy(standin_path, lora=LoraSettings(target_modules='q_proj,k_proj'))
    other_targets.save_adapter(root / 'other_targets')
    _expect_rejection(server, images, root / 'other_targets', 'LoRA layout', before)
    full = load_policy(standin_path, trainable='full')
    full.save_adapter(root / 'full')
    _expect_rejection(server, images, root / 'full', "trainable mode 'full'", before)


def test_reference_is_the_base_and_needs_no_copy(standin_path, images, tmp_path):
    base = load_policy(standin_path, trainable='lora+action_head')
    base_logps = _logps(base, images, TOKENS)
    policy = load_policy(standin_path, trainable='lora+action_head')
    perturb_trainable(policy)
    tuned = _logps(policy, images, TOKENS)
    assert float((tuned - base_logps).abs().max()) > 1e-3
    n_params = sum(p.numel() for p in policy.model.parameters())
    with policy.reference():
        torch.testing.assert_close(_logps(policy, images, TOKENS), base_logps, rtol=0, atol=1e-6)
        reference_sample = policy.sample(images, [INSTRUCTION] * 4, greedy=True)
    assert sum(p.numel() for p in policy.model.parameters()) == n_params
    torch.testing.assert_close(reference_sample.action_tokens,
                               base.sample(images, [INSTRUCTION] * 4, greedy=True).action_tokens)
    torch.testing.assert_close(_logps(policy, images, TOKENS), tuned, rtol=0, atol=0)
    assert all(p.requires_grad for p in policy.trainable_parameters())

    # A named frozen adapter as the reference.
    policy.save_adapter(tmp_path / 'sft')
    perturb_trainable(policy, seed=3)
    moved = _logps(policy, images, TOKENS)
    policy.set_reference_adapter(str(tmp_path / 'sft'))
    assert policy.num_trainable_parameters() == LORA_QV + 256 * 96
    with policy.reference():
        torch.testing.assert_close(_logps(policy, images, TOKENS), tuned, rtol=0, atol=1e-6)
    torch.testing.assert_close(_logps(policy, images, TOKENS), moved, rtol=0, atol=1e-6)


def test_reference_log_probs_after_a_graph_is_built(standin_path, images):
    """The learner's order: new log-probs with grad, reference under no_grad, backward."""
    policy = load_policy(standin_path, trainable='lora+action_head')
    perturb_trainable(policy)
    logps, _ = policy.log_probs(images[:2], [INSTRUCTION] * 2, TOKENS[:2])
    with policy.reference():
        ref, _ = policy.log_probs(images[:2], [INSTRUCTION] * 2, TOKENS[:2])
    assert not ref.requires_grad
    (logps - ref).sum().backward()
    assert float(policy.action_head_delta.grad.abs().sum()) > 0


def test_full_mode_round_trip_and_reference(standin_path, images, tmp_path):
    trainer = load_policy(standin_path, trainable='full')
    base = _logps(trainer, images, TOKENS)
    perturb_trainable(trainer, scale=0.01)
    trainer.save_adapter(tmp_path / 'full')
    server = load_policy(standin_path, trainable='full')
    server.load_adapter(str(tmp_path / 'full'), version=3)
    torch.testing.assert_close(_logps(server, images, TOKENS), _logps(trainer, images, TOKENS),
                               rtol=0, atol=1e-6)
    with trainer.reference():
        torch.testing.assert_close(_logps(trainer, images, TOKENS), base, rtol=0, atol=1e-6)


@pytest.mark.parametrize('trainable', ['lora', 'lora+action_head'])
def test_one_step_shifts_the_served_distribution(standin_path, images, tmp_path, trainable):
    """Done-when: one optimiser step, save, hot swap into a second instance, actions move."""
    learner = load_policy(standin_path, trainable=trainable)
    server = load_policy(standin_path, trainable=trainable, adapter_root=str(tmp_path))
    instructions = [INSTRUCTION] * 4
    sampled = server.sample(images, instructions, generator=torch.Generator().manual_seed(0))
    advantages = torch.tensor([1.0, -1.0, 1.0, -1.0])  # [B]
    optimizer = learner.optimizer(lr=1e-2)
    logps, _ = learner.log_probs(images, instructions, sampled.action_tokens)  # [B, 7]
    before_step = [p.detach().clone() for p in learner.trainable_parameters()]
    loss = -(advantages[:, None] * logps).mean()  # REINFORCE on a non-zero advantage
    loss.backward()
    optimizer.step()
    assert any(not torch.equal(a, p) for a, p in zip(before_step,
                                                     learner.trainable_parameters()))
    learner.save_adapter(tmp_path / 'v1')
    with torch.no_grad():
        old_server, _ = server.log_probs(images, instructions, sampled.action_tokens)
        server.load_adapter(str(tmp_path / 'v1'), version=1)
        new_server, _ = server.log_probs(images, instructions, sampled.action_tokens)
    change = (new_server - old_server).sum(dim=1)  # [B] log-prob change of each action
    # Positive advantage: the sampled action got likelier; negative: less likely.
    assert float(change[0]) > 0.01 and float(change[2]) > 0.01
    assert float(change[1]) < -0.01 and float(change[3]) < -0.01
    torch.testing.assert_close(new_server, learner.log_probs(
        images, instructions, sampled.action_tokens)[0].detach(), rtol=0, atol=1e-5)


def test_adapter_payload_is_checked_stored_and_loaded_on_another_root(
        standin_path, images, tmp_path):
    """The learner's adapter, as bytes + sha256, loads from the receiver's own root only."""
    import pickle

    from tgrpo_ros.policy.adapters import (check_adapter_payload, pack_adapter,
                                           store_adapter_payload)
    sender = load_policy(standin_path, trainable='lora+action_head',
                         adapter_root=str(tmp_path / 'learner'))
    perturb_trainable(sender, seed=5, scale=0.3)
    sender.save_adapter(str(tmp_path / 'learner' / 'v1'))
    header, weights = pack_adapter(tmp_path / 'learner' / 'v1', 1)
    assert header['size'] == len(weights) and len(header['sha256']) == 64
    server_root = tmp_path / 'server'
    receiver = load_policy(standin_path, trainable='lora+action_head',
                           adapter_root=str(server_root))
    limit = 10 * len(weights)
    path = store_adapter_payload(server_root, header, weights, limit)
    assert path.startswith(str(server_root / 'received' / 'v00001-'))
    receiver.swap_adapter(receiver.prepare_adapter(path), 1)
    tokens = sender.sample(images, [INSTRUCTION] * len(images), greedy=True).action_tokens
    torch.testing.assert_close(_logps(receiver, images, tokens), _logps(sender, images, tokens))

    flipped = bytearray(weights)
    flipped[-1] ^= 1
    pickled = pickle.dumps({'weight': [1.0, 2.0]})
    bad = [
        (dict(header), bytes(flipped), 'sha256 mismatch'),
        (dict(header), weights + bytes(limit), f'over the limit of {limit} B'),
        (dict(header, size=len(pickled), sha256=_sha256(pickled)), pickled, 'is a pickle'),
        (dict(header, size=16, sha256=_sha256(b'x' * 16)), b'x' * 16, 'not a safetensors'),
        (dict(header, size=len(weights) - 1), weights[:-1], 'header says'),
        (dict(header, version=-1), weights, r'integer in \[0, 2147483647\]'),
        (dict(header, version=2 ** 40), weights, r'integer in \[0, 2147483647\]'),  # int32
        (dict(header, schema='pt'), weights, "expected 'tgrpo_adapter/safetensors/1'"),
    ]
    for bad_header, payload, reason in bad:
        with pytest.raises(AdapterError, match=reason):
            check_adapter_payload(bad_header, payload, limit)
        with pytest.raises(AdapterError, match=reason):
            store_adapter_payload(server_root, bad_header, payload, limit)
    assert sorted(os.listdir(server_root / 'received')) == [os.path.basename(path)]


def _sha256(data):
    import hashlib
    return hashlib.sha256(data).hexdigest()
