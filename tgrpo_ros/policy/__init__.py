"""
OpenVLA policy layer: contract, stand-in model, loader, batched sampling, LoRA adapters.

Importing this package is cheap (no torch); ``load_policy`` imports the heavy parts.
"""

from tgrpo_ros.policy.adapters import AdapterError, LoraSettings, TRAINABLE_MODES
from tgrpo_ros.policy.loader import load_policy

__all__ = ['AdapterError', 'LoraSettings', 'TRAINABLE_MODES', 'build_standin',
           'cached_standin', 'load_policy']


def build_standin(path, seed: int = 0, **sizes) -> str:
    """Write a stand-in checkpoint into ``path`` (see ``tgrpo_ros.policy.standin``)."""
    from tgrpo_ros.policy import standin
    return standin.build_standin(path, seed, **sizes)


def cached_standin(seed: int = 0, **sizes) -> str:
    """Return a stand-in checkpoint built once per machine (see ``standin.cached_standin``)."""
    from tgrpo_ros.policy import standin
    return standin.cached_standin(seed, **sizes)
