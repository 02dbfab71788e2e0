"""
load_policy: options, norm-stats selection, 16-bit loading, initial adapter, plain peft.

Covers the loader's choices; sampling maths is in test_policy_sampling.py.
"""

import logging

import numpy as np
import pytest
import torch

from tgrpo_ros.policy import cached_standin, contract, load_policy
from tgrpo_ros.policy.loader import resolve_norm_stats
from tgrpo_ros.testing.policy_helpers import perturb_trainable

torch.set_num_threads(1)

INSTRUCTION = 'pick up the ketchup and place it in the basket'
OTHER = contract.ActionNormStats(q01=(-1,) * 7, q99=(1,) * 7, mask=(True,) * 7)


def test_resolve_norm_stats(caplog):
    libero = contract.LIBERO_OBJECT_STATS.to_openvla()
    assert resolve_norm_stats({'bridge': OTHER.to_openvla(), 'libero_object': libero}) == \
        contract.LIBERO_OBJECT_STATS
    assert resolve_norm_stats({'bridge': OTHER.to_openvla()}) == OTHER  # the only entry
    assert resolve_norm_stats({'a': libero, 'b': libero}, unnorm_key='b') == \
        contract.LIBERO_OBJECT_STATS
    with pytest.raises(ValueError, match="unknown unnorm_key 'c'; available: a, b"):
        resolve_norm_stats({'a': libero, 'b': libero}, unnorm_key='c')
    with caplog.at_level(logging.WARNING):
        assert resolve_norm_stats(None) == contract.LIBERO_OBJECT_STATS
        assert resolve_norm_stats({'a': OTHER.to_openvla(), 'b': libero}) == \
            contract.LIBERO_OBJECT_STATS
    assert 'no norm_stats' in caplog.text and 'keys: a, b' in caplog.text


def test_bad_options(tmp_path):
    path = cached_standin(seed=0)
    with pytest.raises(ValueError, match="unknown dtype 'fp8'; choose one of float32, "
                                         'bfloat16, float16'):
        load_policy(path, dtype='fp8')
    with pytest.raises(ValueError, match='holds no config.json'):
        load_policy(tmp_path)
    with pytest.raises(ValueError, match="unknown unnorm_key 'libero_goal'"):
        load_policy(path, unnorm_key='libero_goal')


def test_bfloat16_close_to_float32():
    path = cached_standin(seed=0)
    images = np.random.default_rng(0).integers(0, 256, (2, 224, 224, 3), dtype=np.uint8)
    tokens = torch.tensor([[31750, 31800, 31850, 31872, 31900, 31950, 31990]] * 2)
    fp32 = load_policy(path)
    bf16 = load_policy(path, dtype='bfloat16')
    assert bf16.dtype == torch.bfloat16 and bf16.base_fingerprint == fp32.base_fingerprint
    with torch.no_grad():
        full, _ = fp32.log_probs(images, [INSTRUCTION] * 2, tokens)
        half, _ = bf16.log_probs(images, [INSTRUCTION] * 2, tokens)
    assert half.dtype == torch.float32
    torch.testing.assert_close(half, full, rtol=0, atol=0.05)
    out = bf16.sample(images, [INSTRUCTION] * 2, generator=torch.Generator().manual_seed(0))
    again, _ = bf16.log_probs(images, [INSTRUCTION] * 2, out.action_tokens)
    # bf16 rounding differs between the cached and the one-pass computation (~2e-3 here).
    torch.testing.assert_close(again.detach(), out.log_probs, rtol=0, atol=2e-2)


def test_initial_adapter_and_plain_peft(tmp_path):
    path = cached_standin(seed=0)
    images = np.random.default_rng(1).integers(0, 256, (2, 224, 224, 3), dtype=np.uint8)
    tokens = torch.tensor([[31760, 31810, 31860, 31880, 31910, 31960, 31980]] * 2)
    trainer = load_policy(path, trainable='lora')
    perturb_trainable(trainer, seed=0)
    trainer.save_adapter(tmp_path / 'v5')
    served = load_policy(path, adapter_root=str(tmp_path), adapter_path=str(tmp_path / 'v5'),
                         adapter_version=5)
    assert served.adapter_version == 5
    with torch.no_grad():
        expected, _ = trainer.log_probs(images, [INSTRUCTION] * 2, tokens)
        torch.testing.assert_close(
            served.log_probs(images, [INSTRUCTION] * 2, tokens)[0], expected, rtol=0, atol=1e-6)
    # Standard PEFT format: plain peft loads it onto a fresh base and gets the same numbers.
    from peft import PeftModel
    plain = load_policy(path, trainable='full')  # a bare base model, no LoRA attached
    peft_model = PeftModel.from_pretrained(plain.model, str(tmp_path / 'v5'))
    assert peft_model.base_model.model is plain.model  # LoRA layers injected in place
    with torch.no_grad():
        got, _ = plain.log_probs(images, [INSTRUCTION] * 2, tokens)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
