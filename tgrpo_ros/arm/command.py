"""
Conversions between the policy's 7-D action, arm commands and LIBERO actions (numpy only).

Policy action (OpenVLA convention, docs/references.md §2): ``(dx, dy, dz, droll,
dpitch, dyaw, gripper)``, translation and rotation in the units LIBERO's OSC
takes (1.0 = 0.05 m / 0.5 rad per 20 Hz step), gripper in [0, 1] with 1 = open.

* ``action_to_twist``: twist = action * scale, per axis (m/s and rad/s per unit).
* ``action_to_gripper``: open or close value of a forward command controller.
* ``twist_to_libero`` / ``gripper_to_libero``: the inverse, used by ``sim_arm``.
  With the same scales on both sides an unclipped policy action reaches LIBERO
  unchanged: ``twist_to_libero(action_to_twist(a)) == a[:6]`` (clipped to
  LIBERO's [-1, 1]), and the gripper goes through OpenVLA's LIBERO convention
  (-1 open, +1 close).
"""

import numpy as np

ACTION_DIM = 7  # dx, dy, dz, droll, dpitch, dyaw, gripper
LIBERO_OPEN = -1.0  # LIBERO's gripper command for open
LIBERO_CLOSE = 1.0  # ... and for closed


def _vector(name, values, size):
    out = np.array(values, dtype=np.float64, copy=True).reshape(-1)
    if out.shape != (size,):
        raise ValueError(f'{name} must have {size} entries, got shape {np.shape(values)}')
    return out


def action_to_twist(action, linear_scale, angular_scale):
    """
    Return (linear [3] m/s, angular [3] rad/s) for a policy action [7].

    Each axis is multiplied by its scale. Non-finite values pass through (the
    safety filter rejects them); the gripper entry is ignored here.
    """
    action = _vector('action', action, ACTION_DIM)
    linear = action[:3] * _vector('linear_scale', linear_scale, 3)
    angular = action[3:6] * _vector('angular_scale', angular_scale, 3)
    return linear, angular


def action_to_gripper(value, open_value, close_value, threshold=0.5):
    """Return ``open_value`` when the policy gripper ``value`` >= ``threshold``, else close."""
    value = float(value)
    if not np.isfinite(value):
        raise ValueError(f'gripper value must be finite, got {value}')
    return float(open_value) if value >= threshold else float(close_value)


def twist_to_libero(linear, angular, linear_scale, angular_scale):
    """
    Return LIBERO's 6 OSC delta entries for a twist: twist / scale, clipped to [-1, 1].

    The inverse of ``action_to_twist`` with the same scales.
    """
    delta = np.concatenate([_vector('linear', linear, 3) / _vector('linear_scale',
                                                                   linear_scale, 3),
                            _vector('angular', angular, 3) / _vector('angular_scale',
                                                                     angular_scale, 3)])
    if not np.all(np.isfinite(delta)):
        raise ValueError(f'twist must be finite, got linear {list(linear)} angular '
                         f'{list(angular)}')
    return np.clip(delta, -1.0, 1.0)


def gripper_to_libero(command, open_value, close_value):
    """Return LIBERO's gripper action for a gripper command: -1 nearer open, +1 nearer close."""
    command = float(command)
    if not np.isfinite(command):
        raise ValueError(f'gripper command must be finite, got {command}')
    to_open = abs(command - float(open_value))
    to_close = abs(command - float(close_value))
    return LIBERO_OPEN if to_open <= to_close else LIBERO_CLOSE
