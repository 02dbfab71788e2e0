"""
One finished rollout: what a sim bridge publishes and the learner trains on.

Pure numpy, no ROS and no torch, so that every layer can share it. The ROS
encoding lives in ``tgrpo_ros.nodes.messages``.
"""

from dataclasses import dataclass, field

import numpy as np

ACTION_DIM = 7  # dx, dy, dz, droll, dpitch, dyaw, gripper


@dataclass
class Episode:
    """
    Per-step arrays of one episode plus its identity.

    Arrays share the first axis T (the number of policy steps, wait steps excluded).
    """

    images: np.ndarray            # [T, 224, 224, 3] uint8, exactly what the policy saw
    action_tokens: np.ndarray     # [T, 7] int64, ids in 31744..31999
    behaviour_logps: np.ndarray   # [T, 7] float32, log-probs under the sampling policy
    actions: np.ndarray           # [T, 7] float32, un-normalised, policy convention
    rewards: np.ndarray           # [T] float32, dense stage reward per step
    success: bool
    task_id: int
    init_state_id: int
    group_id: int
    adapter_version: int
    instruction: str
    suite: str = 'libero_object'
    bridge: str = ''              # namespace of the sim bridge that ran it
    episode_id: str = ''          # unique, e.g. '<bridge>/<group_id>'; used to drop duplicates
    extras: dict = field(default_factory=dict)  # small JSON-able diagnostics

    def __post_init__(self):
        """Check that the per-step arrays agree in length and shape."""
        length = len(self.rewards)
        shapes = {
            'images': (self.images.shape, (length, None, None, 3)),
            'action_tokens': (self.action_tokens.shape, (length, ACTION_DIM)),
            'behaviour_logps': (self.behaviour_logps.shape, (length, ACTION_DIM)),
            'actions': (self.actions.shape, (length, ACTION_DIM)),
        }
        for name, (got, want) in shapes.items():
            if len(got) != len(want) or any(w is not None and g != w for g, w in zip(got, want)):
                raise ValueError(f'episode field {name} has shape {got}; expected '
                                 f"{tuple('*' if w is None else w for w in want)}")
        if self.images.dtype != np.uint8:
            raise ValueError(f'episode images must be uint8, got {self.images.dtype}')

    @property
    def length(self):
        """Return the number of policy steps."""
        return len(self.rewards)

    @property
    def episode_return(self):
        """Return the sum of the dense rewards."""
        return float(np.sum(self.rewards))
