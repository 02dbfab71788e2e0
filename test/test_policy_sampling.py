"""Batched sampling and teacher-forced log-probs on the stand-in."""

import math

import numpy as np
import pytest
import torch

from tgrpo_ros.policy import cached_standin, contract, load_policy
from tgrpo_ros.testing.policy_helpers import perturb_trainable, random_images

torch.set_num_threads(1)

INSTRUCTIONS = [
    'pick up the alphabet soup and place it in the basket',
    'put the bowl on the plate',
    'open the middle drawer of the cabinet and put the black bowl on top of it',
    'pick up the milk',
]


@pytest.fixture(scope='module')
def policy():
    return load_policy(cached_standin(seed=0), trainable='lora+action_head')


@pytest.fixture(scope='module')
def images():
    return random_images(4)


def test_sample_outputs_and_agreement_with_log_probs(policy, images):
    perturb_trainable(policy)
    out = policy.sample(images, INSTRUCTIONS, temperature=1.0,
                        generator=torch.Generator().manual_seed(0))
    assert out.action_tokens.shape == (4, 7) and out.action_tokens.dtype == torch.int64
    assert int(out.action_tokens.min()) >= 31744 and int(out.action_tokens.max()) <= 31999
    assert out.log_probs.shape == (4, 7)
    assert float(out.log_probs.max()) < 0.0
    expected = contract.unnormalize_actions(
        contract.decode_action_tokens(out.action_tokens.numpy()), contract.LIBERO_OBJECT_STATS)
    np.testing.assert_allclose(out.actions, expected)
    logps, entropy = policy.log_probs(images, INSTRUCTIONS, out.action_tokens,
                                      with_entropy=True)
    torch.testing.assert_close(logps.detach(), out.log_probs, rtol=0, atol=1e-4)
    assert entropy.shape == (4, 7)
    assert bool((entropy > 0).all()) and bool((entropy <= math.log(256) + 1e-5).all())
    # Same weights, hotter temperature: both paths still agree.
    hot = policy.sample(images, INSTRUCTIONS, temperature=2.0,
                        generator=torch.Generator().manual_seed(1))
    hot_logps, _ = policy.log_probs(images, INSTRUCTIONS, hot.action_tokens, temperature=2.0)
    torch.testing.assert_close(hot_logps.detach(), hot.log_probs, rtol=0, atol=1e-4)


def test_mixed_lengths_match_single_rows(policy, images):
    tokens = torch.tensor(contract.encode_actions(
        np.random.default_rng(1).uniform(-1, 1, (4, 7))))
    with torch.no_grad():
        batched, _ = policy.log_probs(images, INSTRUCTIONS, tokens)
        for i in range(4):
            single, _ = policy.log_probs(images[i:i + 1], INSTRUCTIONS[i:i + 1], tokens[i:i + 1])
            torch.testing.assert_close(single, batched[i:i + 1], rtol=0, atol=1e-5)


def test_log_probs_match_openvla_forward(images):
    """The batched layout gives what OpenVLA's own forward gives for one unpadded row."""
    policy = load_policy(cached_standin(seed=0), trainable='lora')
    perturb_trainable(policy, seed=2)  # the forward below runs through the LoRA layers too
    tokens = torch.tensor([[31744, 31800, 31872, 31900, 31950, 31990, 31999]])
    prompt = contract.prompt_token_ids(policy.tokenizer, INSTRUCTIONS[2])
    input_ids = torch.tensor([prompt + tokens[0].tolist()])
    pixels = torch.from_numpy(contract.pixel_values_from_images(images[2:3]))
    with torch.no_grad():
        logits = policy.model(input_ids=input_ids, pixel_values=pixels).logits  # [1, L, V]
        rows = logits[:, -8:-1, 31744:32000]  # positions -8..-2 predict the 7 action tokens
        expected = torch.log_softmax(rows, dim=-1).gather(-1, (tokens - 31744)[..., None])[..., 0]
        logps, _ = policy.log_probs(images[2:3], INSTRUCTIONS[2:3], tokens)
    torch.testing.assert_close(logps, expected, rtol=0, atol=1e-5)


def test_greedy_and_seeded_sampling_are_reproducible(policy, images):
    greedy_a = policy.sample(images, INSTRUCTIONS, greedy=True)
    greedy_b = policy.sample(images, INSTRUCTIONS, greedy=True)
    assert torch.equal(greedy_a.action_tokens, greedy_b.action_tokens)
    full = policy.log_probs(images, INSTRUCTIONS, greedy_a.action_tokens, with_entropy=False)[0]
    torch.testing.assert_close(full.detach(), greedy_a.log_probs, rtol=0, atol=1e-4)
    seeded = [policy.sample(images, INSTRUCTIONS, generator=torch.Generator().manual_seed(7))
              for _ in range(2)]
    assert torch.equal(seeded[0].action_tokens, seeded[1].action_tokens)


def test_log_probs_are_differentiable(policy, images):
    tokens = torch.full((2, 7), 31872)
    logps, entropy = policy.log_probs(images[:2], INSTRUCTIONS[:2], tokens, with_entropy=True)
    (logps.sum() + entropy.sum()).backward()
    grads = [p.grad for p in policy.trainable_parameters()]
    assert all(g is not None for g in grads)
    assert float(policy.action_head_delta.grad.abs().sum()) > 0
    for param in policy.trainable_parameters():
        param.grad = None


def test_bad_inputs_are_rejected(policy, images):
    with pytest.raises(ValueError, match='got 4 images but 3 instructions'):
        policy.sample(images, INSTRUCTIONS[:3])
    with pytest.raises(TypeError, match='got a str'):
        policy.sample(images[:1], INSTRUCTIONS[0])
    with pytest.raises(ValueError, match='temperature must be > 0 and finite, got 0'):
        policy.sample(images, INSTRUCTIONS, temperature=0)
    with pytest.raises(ValueError, match=r'31743'):
        policy.log_probs(images[:1], INSTRUCTIONS[:1], torch.tensor([[31743] * 7]))
    with pytest.raises(ValueError, match=r'action_tokens must be \[1, 7\], got \[1, 6\]'):
        policy.log_probs(images[:1], INSTRUCTIONS[:1], torch.full((1, 6), 31800))
    with pytest.raises(ValueError, match='uint8'):
        policy.sample(images.astype(np.float32), INSTRUCTIONS)


def test_other_image_sizes_are_resized(policy):
    small = np.full((1, 128, 128, 3), 90, np.uint8)
    big = np.full((1, 224, 224, 3), 90, np.uint8)
    a = policy.sample(small, INSTRUCTIONS[:1], greedy=True)
    b = policy.sample(big, INSTRUCTIONS[:1], greedy=True)
    assert torch.equal(a.action_tokens, b.action_tokens)  # a flat colour resizes exactly
