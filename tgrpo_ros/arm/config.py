"""
ArmConfig: how policy actions become arm commands, and the limits that guard them.

Standard library only. Every field is a ``tgrpo_ros.options.option`` with its
help text; the safety controller declares one ROS parameter per field from it
(``tgrpo_ros.nodes.params.declare_config``; docs/deploy.md lists them). They may
change while the node runs and take effect on the next ``configure``.
Vectors are (x, y, z) in the twist frame (``frame_id`` of the controller);
angular axes are (roll, pitch, yaw) rates about x, y, z.

The defaults are conservative first-run values for a Franka-sized arm, not
tuned limits: set ``workspace_min``/``workspace_max`` for your cell before
going live.
"""

from dataclasses import dataclass, fields
import functools
import math
from typing import Any, Dict, Mapping, Tuple

from tgrpo_ros import options

VECTOR_FIELDS = ('linear_scale', 'angular_scale', 'max_linear_speed', 'max_angular_speed',
                 'workspace_min', 'workspace_max')


# Settable while the node runs: read again on every configure.
_option = functools.partial(options.option, read_only=False)


@dataclass
class ArmConfig:
    """Conversion scales, speed/acceleration limits, workspace box, watchdogs, gripper values."""

    # MoveIt Servo's default publish_period is 0.01 s and its incoming_command_timeout
    # 0.1 s (docs/references.md §6): 50 Hz sends five commands inside one timeout.
    control_rate_hz: float = _option(
        50.0, 'Rate (Hz) at which twist commands are sent; also the period of the watchdogs.')
    # LIBERO-equivalent scales, measured here on the LIBERO-Object Panda (sim_arm's
    # physics, 20 Hz OSC): a constant action of 1 moves the end effector at 0.24-0.27 m/s
    # (0.3 -> 0.077 m/s, so about linear); a rotation action of 0.3 turns it at 0.65
    # rad/s (1.0 -> 1.3 rad/s: it saturates; policy rotations stay within +-0.16). With
    # these scales a twist moves the arm about as the policy moved it in training.
    linear_scale: Tuple[float, ...] = _option(
        (0.25, 0.25, 0.25), 'm/s of twist per unit of policy action (dx, dy, dz).')
    angular_scale: Tuple[float, ...] = _option(
        (2.0, 2.0, 2.0), 'rad/s of twist per unit of policy action (droll, dpitch, dyaw).')
    max_linear_speed: Tuple[float, ...] = _option(
        (0.1, 0.1, 0.1), 'Per-axis limit (m/s) on the linear twist; larger values are clipped.')
    max_linear_norm: float = _option(
        0.15, 'Limit (m/s) on the norm of the linear twist; a longer vector is scaled down '
        'keeping its direction.')
    max_angular_speed: Tuple[float, ...] = _option(
        (0.5, 0.5, 0.5), 'Per-axis limit (rad/s) on the angular twist.')
    # Servo's default scale.rotational (docs/references.md §6).
    max_angular_norm: float = _option(
        0.8, 'Limit (rad/s) on the norm of the angular twist.')
    # On the LIBERO Panda a 1.3 rad/s turn also moves the end-effector site at ~0.14 m/s
    # (measured here): about 0.1 m of lever, the hand's length on a Franka.
    rotation_lever_arm: float = _option(
        0.0, 'Lever (m) of points that turn with the end effector (fingertips): the linear '
        'norm limit then bounds |linear| + lever * |angular|, and both parts are scaled '
        'down together when it is exceeded; rotation is zeroed while the end effector is '
        'within this distance of a wall (or on or beyond it). 0 limits the linear twist '
        'alone.')
    max_linear_accel: float = _option(
        1.0, 'Limit (m/s^2) on the change of the linear twist between consecutive commands '
        '(norm of the change / dt). Stops (zero commands) are not slowed by it.')
    max_angular_accel: float = _option(
        5.0, 'Limit (rad/s^2) on the change of the angular twist between consecutive commands.')
    workspace_min: Tuple[float, ...] = _option(
        (0.25, -0.4, 0.05), 'Lower corner (m) of the end-effector box, in the frame of the pose '
        'topic.')
    workspace_max: Tuple[float, ...] = _option(
        (0.75, 0.4, 0.6), 'Upper corner (m) of the end-effector box, in the frame of the pose '
        'topic.')
    workspace_horizon: float = _option(
        0.1, 'Look-ahead (s), at least one control period: on an axis where position + twist '
        '* (horizon + age of the pose) leaves the box, the motion towards the wall is zeroed '
        '(motion back inside is allowed).')
    image_timeout: float = _option(
        0.5, 'Watchdog (s): with no camera image received for this long, command zero.')
    action_timeout: float = _option(
        1.0, 'Watchdog (s): an action whose image stamp is older than this is stale: command '
        'zero. Covers inference time plus transport; camera and controller clocks must agree.')
    pose_timeout: float = _option(
        0.2, 'Watchdog (s): with no end-effector pose stamped (header stamp) within this '
        'long, command zero (the workspace box cannot be checked without it).')
    # Same host: 0; chrony on a LAN keeps hosts within about a millisecond, PTP far less.
    max_clock_skew: float = _option(
        0.05, 'Largest time (s) an action or pose may be stamped ahead of the controller '
        'clock; one stamped further ahead is refused and counted (future_stamp): it would '
        'look fresh for that much longer.')
    estop_heartbeat_timeout: float = _option(
        0.0, 'Dead-man mode (s) when > 0: no message on the e-stop topic for this long counts '
        'as pressed (latched), as with an enabling device; the e-stop publisher must then '
        'repeat its state (e.g. false at 10 Hz). 0 disables.')
    gripper_open: float = _option(
        0.04, 'Gripper command (forward command controller units, e.g. m of finger travel) '
        'for an open gripper.')
    gripper_close: float = _option(0.0, 'Gripper command for a closed gripper.')
    # OpenVLA's gripper output is in [0, 1] with 1 = open (docs/references.md §2).
    gripper_threshold: float = _option(
        0.5, 'Policy gripper values >= this open the gripper, lower values close it.')
    # A VLA action is a displacement for one training step (docs/deploy.md, "Executing
    # actions"); holding it until the next decision multiplies it (facts §12).
    action_execution: str = _option(
        'once', "'once': each action of a reply drives the arm for exactly one action_period "
        "(twist = action * scale), then zero until a newer reply; 'hold': the newest action "
        'is held until a newer one arrives (policies trained on velocity commands).')
    action_period: float = _option(
        0.05, 'Commanded time (s) of one action: the control period of the data the policy '
        'was trained on (LIBERO: 20 Hz, 0.05 s). A reply that carries its own action_period '
        "(the policy's metadata) uses that instead.")
    observation_delay: float = _option(
        0.05, "once mode: seconds after an action's end until the camera shows its result "
        "(sim_arm's 50 ms step; a real arm's tracking lag). A reply to a frame captured "
        'earlier is skipped (counted early_frames), so the policy never acts twice on a scene '
        'that has not seen its last action. Negative: off (any newer reply replaces the '
        'queue, as streaming chunked policies run).')
    dry_run: bool = _option(
        True, "Send commands to the controller's ~/dry_run topics instead of the arm's.")

    def __post_init__(self) -> None:
        """Normalise vectors to float tuples and reject impossible values, quoting them."""
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in VECTOR_FIELDS:
                if isinstance(value, (str, bytes)) or not hasattr(value, '__len__') \
                        or len(value) != 3:
                    raise ValueError(f'{f.name} must have 3 numbers (x, y, z), got {value!r}')
                try:
                    value = tuple(float(v) for v in value)
                except (TypeError, ValueError):
                    raise ValueError(f'{f.name} must have 3 numbers, got {value!r}') from None
                if not all(math.isfinite(v) for v in value):
                    raise ValueError(f'{f.name} must be finite, got {value}')
                setattr(self, f.name, value)
            elif f.name == 'action_execution':
                if value not in ('once', 'hold'):
                    raise ValueError(f"action_execution must be 'once' or 'hold', got {value!r}")
            elif f.name == 'dry_run':
                if not isinstance(value, bool):
                    raise ValueError(f'dry_run must be a bool, got {value!r}')
            else:
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    raise ValueError(f'{f.name} must be a number, got {value!r}')
                setattr(self, f.name, float(value))
                if not math.isfinite(value):
                    raise ValueError(f'{f.name} must be finite, got {value}')
        positive = ('control_rate_hz', 'max_linear_norm', 'max_angular_norm', 'max_linear_accel',
                    'max_angular_accel', 'image_timeout', 'action_timeout', 'pose_timeout',
                    'action_period')
        for name in positive:
            if not getattr(self, name) > 0.0:
                raise ValueError(f'{name} ({getattr(self, name)}) must be > 0')
        for name in ('linear_scale', 'angular_scale', 'max_linear_speed', 'max_angular_speed'):
            if not all(v > 0.0 for v in getattr(self, name)):
                raise ValueError(f'{name} {getattr(self, name)} must be > 0 on every axis')
        if self.rotation_lever_arm < 0.0:
            raise ValueError(f'rotation_lever_arm ({self.rotation_lever_arm}) must be >= 0')
        for name in ('max_clock_skew', 'estop_heartbeat_timeout'):
            if getattr(self, name) < 0.0:
                raise ValueError(f'{name} ({getattr(self, name)}) must be >= 0')
        bad = [i for i in range(3) if not self.workspace_min[i] < self.workspace_max[i]]
        if bad:
            raise ValueError(f'workspace_min {self.workspace_min} must be below workspace_max '
                             f'{self.workspace_max} on every axis (not on axis {bad})')
        if self.gripper_open == self.gripper_close:
            raise ValueError(f'gripper_open ({self.gripper_open}) and gripper_close '
                             f'({self.gripper_close}) must differ')
        period = 1.0 / self.control_rate_hz  # s
        # A horizon shorter than one period lets a twist carry the end effector out of the
        # box before the next tick can check it.
        for name in ('image_timeout', 'pose_timeout', 'workspace_horizon') + (
                ('estop_heartbeat_timeout',) if self.estop_heartbeat_timeout > 0 else ()):
            if getattr(self, name) < period:
                raise ValueError(f'{name} ({getattr(self, name)} s) is shorter than one control '
                                 f'period ({period} s at control_rate_hz {self.control_rate_hz})')

    @property
    def period(self) -> float:
        """Return the control period in seconds."""
        return 1.0 / self.control_rate_hz

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> 'ArmConfig':
        """Build from a mapping (YAML, ROS parameters); unknown keys are an error."""
        return options.from_mapping(cls, values)

    def to_dict(self) -> Dict[str, Any]:
        """Return the fields as a plain dict (vectors as lists, as ROS parameters hold them)."""
        return {k: list(v) if isinstance(v, tuple) else v
                for k, v in options.to_dict(self).items()}

    @classmethod
    def field_help(cls) -> Dict[str, str]:
        """Return the help text of every field, by name."""
        return options.field_help(cls)
