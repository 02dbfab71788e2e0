"""The stand-in checkpoint: size, determinism, tokenizer, save/load round trip, forward."""

import json
import os

import numpy as np
import pytest
import torch

from tgrpo_ros.policy import cached_standin, contract, load_policy
from tgrpo_ros.policy import standin

torch.set_num_threads(1)


@pytest.fixture(scope='module')
def standin_path():
    return cached_standin(seed=0)


def _inputs(batch=2):
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, (batch, 224, 224, 3), dtype=np.uint8)
    pixels = torch.from_numpy(contract.pixel_values_from_images(images))
    tokenizer = standin.build_standin_tokenizer()
    ids = contract.prompt_token_ids(tokenizer, 'pick up the milk and place it in the basket')
    input_ids = torch.tensor([ids] * batch)
    return input_ids, pixels


def test_tokenizer_contract_ids():
    tokenizer = standin.build_standin_tokenizer()
    special = (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id)
    assert special == (1, 2, 32000)
    assert tokenizer.convert_ids_to_tokens(contract.EMPTY_PIECE_TOKEN_ID) == '\u2581'
    ids = contract.prompt_token_ids(tokenizer, 'Pick up the Milk')
    pieces = tokenizer.convert_ids_to_tokens(ids)
    assert pieces == ['<s>', '\u2581In', ':', '\u2581What', '\u2581action', '\u2581should',
                      '\u2581the', '\u2581robot', '\u2581take', '\u2581to', '\u2581pick',
                      '\u2581up', '\u2581the', '\u2581milk', '?', '<0x0A>', 'Out', ':', '\u2581']
    assert ids[0] == 1 and ids[-1] == 29871 and ids[-4] == 3 + 0x0A  # byte fallback for '\n'
    assert tokenizer('hi')['input_ids'][0] == 1  # adds BOS like Llama


def test_size_and_determinism():
    model_a = standin.build_standin_model(seed=5)
    model_b = standin.build_standin_model(seed=5)
    model_c = standin.build_standin_model(seed=6)
    n_params = model_a.num_parameters()
    assert 1_000_000 <= n_params <= 20_000_000
    emb = model_a.get_input_embeddings().weight
    assert emb.shape == (32064, 96)
    assert model_a.config.tie_word_embeddings is False
    assert model_a.get_output_embeddings().weight.data_ptr() != emb.data_ptr()
    torch.testing.assert_close(emb, model_b.get_input_embeddings().weight, rtol=0, atol=0)
    assert not torch.equal(emb, model_c.get_input_embeddings().weight)
    names = [n for n, _ in model_a.named_modules()]
    assert 'language_model.model.layers.0.self_attn.q_proj' in names
    assert 'language_model.model.layers.0.self_attn.v_proj' in names


def test_save_load_round_trip_identical_logits(tmp_path, monkeypatch):
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    path = standin.build_standin(tmp_path / 'standin', seed=0)
    assert {'config.json', 'model.safetensors', 'tokenizer.json'} <= set(os.listdir(path))
    with open(os.path.join(path, 'config.json')) as f:
        config = json.load(f)
    assert config['norm_stats']['libero_object']['action']['q99'][0] == 0.8464
    assert config['tie_word_embeddings'] is False
    original = standin.build_standin_model(seed=0)
    policy = load_policy(path, trainable='full')  # full: no LoRA layers in the way
    input_ids, pixels = _inputs()
    with torch.no_grad():
        expected = original(input_ids=input_ids, pixel_values=pixels).logits
        loaded = policy.model(input_ids=input_ids, pixel_values=pixels).logits
    assert expected.shape == (2, input_ids.shape[1] + 64, 32064)  # 64 patches
    torch.testing.assert_close(loaded, expected, rtol=0, atol=0)
    assert policy.norm_stats == contract.LIBERO_OBJECT_STATS
    assert policy.tokenizer.pad_token_id == 32000


def test_forward_cached_step_matches_full_forward():
    model = standin.build_standin_model(seed=0)
    input_ids, pixels = _inputs(batch=1)
    with torch.no_grad():
        full_ids = torch.cat([input_ids, torch.tensor([[31900]])], dim=1)
        full = model(input_ids=full_ids, pixel_values=pixels).logits[:, -1]
        prefix = model(input_ids=input_ids, pixel_values=pixels, use_cache=True)
        step = model(input_ids=torch.tensor([[31900]]), past_key_values=prefix.past_key_values,
                     use_cache=True).logits[:, -1]
    torch.testing.assert_close(step, full, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match=r'\[B, 6, H, W\]'):
        model(input_ids=input_ids, pixel_values=pixels[:, :3])


def test_build_is_cached_and_console_command(tmp_path, capsys):
    path = tmp_path / 'cli'
    assert standin.main([str(path), '--seed', '2', '--layers', '2']) == 0
    assert 'seed 2' in capsys.readouterr().out
    stamp = os.path.getmtime(path / 'model.safetensors')
    assert standin.main([str(path), '--seed', '2', '--layers', '2']) == 0
    assert os.path.getmtime(path / 'model.safetensors') == stamp  # not rebuilt
    with open(path / 'config.json') as f:
        assert json.load(f)['num_hidden_layers'] == 2
    assert standin.main([str(tmp_path / 'bad'), '--patch-size', '15']) == 2
    assert 'multiple of patch_size (15)' in capsys.readouterr().err
