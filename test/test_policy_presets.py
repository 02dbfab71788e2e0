"""Stand-in presets: OpenVLA-7B's shapes on the meta device, a down-scaled 7B build."""

import json
import os

import numpy as np
import pytest
from safetensors import safe_open
import torch

from tgrpo_ros.policy import adapters, contract, load_policy, LoraSettings
from tgrpo_ros.policy import standin

torch.set_num_threads(1)

# Llama-2-7B: 32 layers; q_proj and v_proj are 4096 x 4096.
LLAMA2_7B_QV_R32 = 32 * 2 * 32 * (4096 + 4096)  # r x (in + out) per adapted layer


def test_openvla_7b_preset_shapes_and_lora_count_on_meta():
    model = standin.build_standin_meta_model('openvla-7b')
    assert {p.device.type for p in model.parameters()} == {'meta'}  # nothing allocated
    config = model.language_model.config
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads,
            config.intermediate_size, config.vocab_size) == (4096, 32, 32, 11008, 32064)
    assert model.get_output_embeddings().weight.shape == (32064, 4096)
    assert model.projector.fc1.in_features == 2176  # DINOv2 + SigLIP patch width
    assert (model.config.image_size // model.config.patch_size) ** 2 == 256
    n_params = model.num_parameters()
    assert n_params == 6_765_919_872  # Llama-2-7B with the padded vocabulary + projector

    specs = standin.tensor_specs(model)
    shards = standin.shard_plan(specs, 'bfloat16')
    shard_bytes = [2 * sum(spec.numel for spec in shard) for shard in shards]
    assert sum(shard_bytes) == 2 * n_params
    assert max(shard_bytes) <= standin.DEFAULT_MAX_SHARD_BYTES  # a streamed build's memory

    assert LLAMA2_7B_QV_R32 == 16_777_216
    assert adapters.count_lora_parameters(model, LoraSettings()) == LLAMA2_7B_QV_R32
    from peft import get_peft_model  # peft's own count (wraps the model in place)
    peft_model = get_peft_model(model, LoraSettings().peft_config(model))
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    assert trainable == LLAMA2_7B_QV_R32


def test_presets_and_size_errors():
    sizes, dtype = standin.resolve_preset()
    assert dtype == 'float32' and sizes == standin.PRESETS['tiny'].sizes
    sizes, dtype = standin.resolve_preset('openvla-7b', num_hidden_layers=2)
    assert dtype == 'bfloat16' and sizes['num_hidden_layers'] == 2
    assert sizes['hidden_size'] == 4096
    with pytest.raises(ValueError, match='choose one of tiny, openvla-7b, 7b-layout'):
        standin.resolve_preset('llama')
    with pytest.raises(ValueError, match="unknown size 'width'"):
        standin.resolve_preset(width=3)
    with pytest.raises(ValueError, match="unknown dtype 'int8'"):
        standin.resolve_preset(dtype='int8')


def test_dry_run_prints_7b_counts(capsys):
    assert standin.main(['--preset', 'openvla-7b', '--dry-run']) == 0
    out = capsys.readouterr().out
    assert '6,765,919,872 parameters (13.53 GB in bfloat16)' in out
    assert 'LoRA r=32 on q_proj,v_proj: 16,777,216 trainable parameters' in out


def test_7b_layout_builds_sharded_loads_and_samples(tmp_path):
    big = standin.PRESETS['openvla-7b'].sizes
    small = standin.PRESETS['7b-layout'].sizes
    ratio = big['hidden_size'] // small['hidden_size']
    assert big['hidden_size'] // big['num_attention_heads'] == (
        small['hidden_size'] // small['num_attention_heads'])  # head width 128
    assert big['intermediate_size'] == ratio * small['intermediate_size']
    assert big['vision_width'] == ratio * small['vision_width']
    assert big['patch_size'] == small['patch_size']

    path = standin.build_standin(tmp_path / 'sharded', preset='7b-layout',
                                 max_shard_bytes=8_000_000)
    with open(os.path.join(path, standin.SAFE_WEIGHTS_INDEX_NAME)) as f:
        weight_map = json.load(f)['weight_map']
    shards = sorted(set(weight_map.values()))
    assert len(shards) >= 3 and not os.path.exists(os.path.join(path, 'model.safetensors'))
    with open(os.path.join(path, 'config.json')) as f:
        assert json.load(f)['torch_dtype'] == 'bfloat16'
    # The weights do not depend on the sharding (each tensor has its own generator).
    single = standin.build_standin(tmp_path / 'single', preset='7b-layout')
    name = 'language_model.model.layers.1.self_attn.q_proj.weight'
    with safe_open(os.path.join(path, weight_map[name]), 'pt') as f:
        sharded_tensor = f.get_tensor(name)
    with safe_open(os.path.join(single, 'model.safetensors'), 'pt') as f:
        single_tensor = f.get_tensor(name)
    assert sharded_tensor.dtype == torch.bfloat16
    assert torch.equal(sharded_tensor, single_tensor)
    assert 0.015 < sharded_tensor.float().std().item() < 0.025  # initializer_range 0.02

    policy = load_policy(path, dtype='bfloat16', trainable='lora')
    assert {p.dtype for p in policy.model.parameters()} == {torch.bfloat16}
    meta = standin.build_standin_meta_model('7b-layout')
    assert policy.num_trainable_parameters() == adapters.count_lora_parameters(meta) == (
        2 * 2 * 32 * (256 + 256))
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (2, 224, 224, 3), dtype=np.uint8)
    instructions = ['pick up the milk and place it in the basket', 'pick up the ketchup']
    with torch.no_grad():
        patches = policy._core.vision_backbone(policy._pixel_values(images))
    assert patches.shape == (2, 256, 136)  # 256 patch tokens, 2176 / 16 wide
    out = policy.sample(images, instructions, generator=torch.Generator().manual_seed(0))
    assert out.action_tokens.shape == (2, 7)
    assert int(out.action_tokens.min()) >= contract.ACTION_TOKEN_MIN
    assert int(out.action_tokens.max()) <= contract.ACTION_TOKEN_MAX
    with torch.no_grad():
        log_probs, _ = policy.log_probs(images, instructions, out.action_tokens)
    # bfloat16: cached and one-pass computations round differently (docs/policy.md).
    torch.testing.assert_close(log_probs, out.log_probs, rtol=0, atol=2e-2)
    assert bool(torch.isfinite(log_probs).all())
