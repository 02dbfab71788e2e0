"""Helpers for tests that need a policy whose adapter is not the identity."""

import numpy as np


def random_images(count, seed=0, size=224):
    """Return ``count`` random RGB images, uint8 [count, size, size, 3]."""
    return np.random.default_rng(seed).integers(0, 256, (count, size, size, 3), dtype=np.uint8)


def perturb_trainable(policy, seed=1, scale=0.05):
    """Add seeded Gaussian noise to every trainable parameter (a LoRA adapter starts as zero)."""
    import torch
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in policy.trainable_parameters():
            param.add_(torch.randn(param.shape, generator=generator) * scale)
