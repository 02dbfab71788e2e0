"""
PolicyLoadConfig: how a process loads the policy; shared by the policy server and the learner.

Both nodes declare these fields as ROS parameters from this one dataclass, and the
graph gives both the same values (``graph.policy_parameters``), so the weights,
the adapter layout and the sampling temperature cannot disagree between the
policy that samples and the policy that computes log-probs for training.
"""

from dataclasses import dataclass
import math
import os
from typing import List

from tgrpo_ros.options import check_choice, check_range, option
from tgrpo_ros.policy.adapters import TRAINABLE_MODES

DTYPES = ('float32', 'bfloat16', 'float16')


@dataclass
class PolicyLoadConfig:
    """Checkpoint, device, adapter layout and sampling temperature of a policy."""

    model_path: str = option('', 'Checkpoint directory (OpenVLA or the stand-in).')
    device: str = option('cpu', "Torch device, e.g. 'cpu' or 'cuda:0'.")
    dtype: str = option('float32', f'Weights dtype: one of {list(DTYPES)}.')
    trainable: str = option(
        'lora', "What adapters hold: 'lora', 'lora+action_head' or 'full' "
        '(lora+action_head adapters also load into lora).')
    lora_rank: int = option(32, 'LoRA rank r of the adapters.')
    lora_alpha: float = option(16.0, 'LoRA alpha of the adapters.')
    lora_target_modules: List[str] = option(['q_proj', 'v_proj'], 'LoRA target modules.')
    # One temperature for sampling and for every log-prob the learner computes: a
    # different one would make training silently off-policy.
    temperature: float = option(
        1.0, 'Temperature of the 256 action logits, for sampling and for every log-prob.')
    unnorm_key: str = option(
        '', "norm_stats key that un-normalises actions ('' = libero_object or the only one).")
    num_threads: int = option(1, 'Torch CPU threads of this process.')

    def __post_init__(self):
        """Reject impossible values, quoting them."""
        check_choice('dtype', self.dtype, DTYPES)
        check_choice('trainable', self.trainable, TRAINABLE_MODES)
        if self.lora_rank < 1:
            raise ValueError(f'lora_rank ({self.lora_rank}) must be >= 1')
        check_range('lora_alpha', self.lora_alpha, 0.0, math.inf, low_open=True,
                    high_open=True)
        if not self.lora_target_modules:
            raise ValueError('lora_target_modules must name at least one module')
        check_range('temperature', self.temperature, 0.0, math.inf, low_open=True,
                    high_open=True)
        if self.num_threads < 1:
            raise ValueError(f'num_threads ({self.num_threads}) must be >= 1')

    def load(self, adapter_root=None):
        """Load the policy this config describes (heavy imports happen here)."""
        if not self.model_path:
            raise ValueError('model_path is empty; give a checkpoint directory (e.g. one '
                             'written by tgrpo_build_standin)')
        import torch

        from tgrpo_ros.policy.adapters import LoraSettings
        from tgrpo_ros.policy.loader import load_policy

        torch.set_num_threads(int(self.num_threads))
        lora = LoraSettings(r=int(self.lora_rank), alpha=float(self.lora_alpha),
                            target_modules=tuple(self.lora_target_modules))
        return load_policy(self.model_path, device=self.device, dtype=self.dtype,
                           adapter_root=adapter_root or None, lora=lora,
                           trainable=self.trainable, unnorm_key=self.unnorm_key or None,
                           temperature=float(self.temperature))


def check_model_path(model_path, who='the policy'):
    """Raise ValueError (one line) unless ``model_path`` is a checkpoint directory."""
    if not model_path:
        raise ValueError(f'{who} needs --model-path DIR, a checkpoint directory (OpenVLA or '
                         'the stand-in, e.g. models/standin_sft_task0)')
    if not os.path.isfile(os.path.join(model_path, 'config.json')):
        what = 'holds no checkpoint (no config.json)' if os.path.isdir(model_path) \
            else 'does not exist'
        raise ValueError(f'--model-path {model_path!r} {what}; give a checkpoint directory '
                         '(OpenVLA or the stand-in, e.g. models/standin_sft_task0)')
