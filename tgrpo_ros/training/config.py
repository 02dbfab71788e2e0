"""
TGRPOConfig: the hyper-parameters of TGRPO, shared by the learner node and the benches.

Standard library only, so ROS nodes can import it at startup without torch.
Each field carries its help text (``tgrpo_ros.options.option``); sources of the
defaults are noted next to them ([S] secondary summary, [U] unverified, as in
docs/references.md).
"""

from dataclasses import dataclass, fields
import math
from typing import Any, Dict, Mapping

from tgrpo_ros import options
from tgrpo_ros.options import option

# Choices shared with tgrpo_ros.training.tgrpo, kept here so this module needs no torch.
ADVANTAGE_MODES = ('masked', 'paper')
LOSS_TYPES = ('grpo', 'bnpo')


@dataclass
class TGRPOConfig:
    """
    Hyper-parameters of TGRPO (arXiv 2506.08440) as implemented in tgrpo_ros.training.tgrpo.

    Ablations from the paper are plain configurations: trajectory-level only
    (a1=0, a2=1, which is GRPO) and step-level only (a1=1, a2=0).
    """

    # Paper sweep 2/4/6/8 -> 76.2/81.0/79.4/80.4 % success [S].
    group_size: int = option(
        4, 'Trajectories per group (N), all started from the same initial state.')
    # Paper sweep a1 = 0.1/0.3/0.5/0.7/0.9 -> 75.2/81.0/79.0/77.4/77.0 % [S].
    a1: float = option(0.3, 'Weight of the step-level advantage S_it; a1 + a2 = 1.')
    a2: float = option(0.7, 'Weight of the trajectory-level advantage T_i; a1 + a2 = 1.')
    advantage_mode: str = option(
        'paper', "'paper': cut every trajectory of the group at the first success (or "
        "the step limit); 'masked': keep each trajectory's own length and normalise "
        'step t over the trajectories still running.')
    # A guard only: reward spreads here are ~1e-3..1 (metres, stage rewards).
    eps: float = option(1e-6, 'Added to the standard deviation in both normalisations.')
    # Paper value [U]; 0.2 is the PPO/GRPO default, SimpleVLA-RL uses 0.2 / 0.28.
    clip_eps_low: float = option(
        0.2, 'Lower clip: the ratio is clipped below at 1 - clip_eps_low.')
    clip_eps_high: float = option(
        0.2, 'Upper clip: the ratio is clipped above at 1 + clip_eps_high '
        '(SimpleVLA-RL / DAPO use 0.28).')
    # Paper value [U]; SimpleVLA-RL and the stand-in runs (docs/references.md §8) use no
    # KL; DeepSeekMath's GRPO used 0.04.
    beta: float = option(
        0.0, 'Weight of the k3 KL to the frozen reference policy; 0 skips the '
        'reference forward pass.')
    # TRL's names (GRPOConfig.loss_type); 'grpo' is TGRPO's / GRPO's reduction.
    loss_type: str = option(
        'grpo', "Loss reduction over the group: 'grpo': mean over each trajectory's "
        "action tokens, then over trajectories; 'bnpo': mean over all the group's "
        'action tokens.')
    lr: float = option(1e-5, 'AdamW learning rate (paper: 1e-5 with LoRA on OpenVLA-7B [S]).')
    weight_decay: float = option(0.0, 'AdamW weight decay.')
    # Stand-in runs (docs/references.md §8): 3 epochs, minibatches of 40 steps.
    epochs: int = option(3, 'Passes over each collected group per update.')
    minibatch_size: int = option(
        40, 'Steps per gradient step; each step holds 7 action tokens.')
    max_grad_norm: float = option(1.0, 'Global gradient-norm clip; inf disables it.')
    # Dynamic sampling of SimpleVLA-RL (filter_accuracy) and RLinf (filter_rewards),
    # docs/references.md §7. With a dense reward an all-fail group still has spread.
    filter_groups: bool = option(
        False, 'Skip groups whose members all succeeded or all failed (dynamic sampling).')

    def __post_init__(self) -> None:
        """Reject wrong types and impossible combinations, quoting the values."""
        for f in fields(self):
            value = getattr(self, f.name)
            if f.type in (int, 'int'):
                if isinstance(value, bool) or not isinstance(value, int):
                    raise TypeError(f'{f.name} must be an int, got {value!r}')
            elif f.type in (float, 'float'):
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    raise TypeError(f'{f.name} must be a number, got {value!r}')
                if math.isnan(value):
                    raise ValueError(f'{f.name} must not be NaN')
                setattr(self, f.name, float(value))
            elif f.type in (bool, 'bool') and not isinstance(value, bool):
                raise TypeError(f'{f.name} must be a bool, got {value!r}')
            elif f.type in (str, 'str') and not isinstance(value, str):
                raise TypeError(f'{f.name} must be a str, got {value!r}')
        if self.group_size < 2:
            raise ValueError(f'group_size ({self.group_size}) must be at least 2: a group '
                             'of one has no spread to normalise')
        for name in ('a1', 'a2'):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f'{name} ({getattr(self, name)}) must be in [0, 1]')
        if abs(self.a1 + self.a2 - 1.0) > 1e-9:
            raise ValueError(f'a1 + a2 must equal 1, got a1 ({self.a1}) + a2 ({self.a2}) = '
                             f'{self.a1 + self.a2}')
        options.check_choice('advantage_mode', self.advantage_mode, ADVANTAGE_MODES)
        options.check_choice('loss_type', self.loss_type, LOSS_TYPES)
        if not 0.0 < self.eps < math.inf:
            raise ValueError(f'eps ({self.eps}) must be > 0 and finite')
        if not 0.0 < self.clip_eps_low < 1.0:
            raise ValueError(f'clip_eps_low ({self.clip_eps_low}) must be in (0, 1)')
        if not 0.0 < self.clip_eps_high < math.inf:
            raise ValueError(f'clip_eps_high ({self.clip_eps_high}) must be > 0 and finite')
        if not 0.0 <= self.beta < math.inf:
            raise ValueError(f'beta ({self.beta}) must be >= 0 and finite')
        if not 0.0 < self.lr < math.inf:
            raise ValueError(f'lr ({self.lr}) must be > 0 and finite')
        if not 0.0 <= self.weight_decay < math.inf:
            raise ValueError(f'weight_decay ({self.weight_decay}) must be >= 0 and finite')
        if self.epochs < 1:
            raise ValueError(f'epochs ({self.epochs}) must be at least 1')
        if self.minibatch_size < 1:
            raise ValueError(f'minibatch_size ({self.minibatch_size}) must be at least 1')
        if not self.max_grad_norm > 0.0:
            raise ValueError(f'max_grad_norm ({self.max_grad_norm}) must be > 0 '
                             '(inf disables clipping)')

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> 'TGRPOConfig':
        """Build from a mapping (YAML, ROS parameters); unknown keys are an error."""
        return options.from_mapping(cls, values)

    def to_dict(self) -> Dict[str, Any]:
        """Return the fields as a plain dict."""
        return options.to_dict(self)

    @classmethod
    def field_help(cls) -> Dict[str, str]:
        """Return the help text of every field, by name."""
        return options.field_help(cls)
