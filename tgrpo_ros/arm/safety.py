"""
SafetyFilter: turns the newest policy action into a limited twist, or a stop (numpy only).

The safety controller node feeds it what arrives (images, poses, actions,
e-stop) and calls ``tick(now)`` once per control period. All times are seconds
on one clock (the node's ROS clock): arrival times of images and poses, and the
image stamp an action answers.

Per tick, in this order:

1. **Stops** (zero command at once, no deceleration ramp): e-stop latched; no
   camera image for ``image_timeout``; no pose for ``pose_timeout``; no valid
   action since activation or reset, the last action was non-finite, or its
   image stamp is older than ``action_timeout``.
2. **Execution and conversion**: the action of this tick comes from the queue of
   ``tgrpo_ros.arm.execution`` (``action_execution`` once or hold, action
   chunks); twist = action * scale per axis (``tgrpo_ros.arm.command``). Every
   executed step then goes through the limits below.
3. **Speed**: per-axis clip, then the norm is scaled down to its limit
   (direction kept), for linear and angular parts; with a ``rotation_lever_arm``
   L, both parts are then scaled down together until |linear| + L |angular| is
   within the linear norm limit (the speed of points L from the end effector).
4. **Acceleration**: the change from the previous command is limited to
   ``max_*_accel * dt`` (norm), dt = time since the previous tick, at most one
   period. The previous command, the target and therefore the result all lie in
   the (convex) speed-limit set, so this never breaks a speed limit.
5. **Workspace**: on each axis where ``position + linear * (workspace_horizon
   + age of the pose)`` would be outside the box, motion towards that wall is
   zeroed (the age covers the motion since the pose was measured). While the
   end effector is outside the box, rotation is zeroed too (turning swings the
   end effector); translation back inside stays allowed.

The e-stop latches: once engaged nothing moves until ``reset()`` is called with
the e-stop released; a reset also drops the current action, so motion resumes
only with an action that arrives after it.
"""

from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import numpy as np

from tgrpo_ros.arm.command import ACTION_DIM, action_to_gripper, action_to_twist
from tgrpo_ros.arm.config import ArmConfig
from tgrpo_ros.arm.execution import ActionExecution, EXECUTION_COUNTERS

# Stop reasons, in the order they are checked (and reported).
STOP_REASONS = ('estop', 'stale_image', 'stale_pose', 'no_action', 'invalid_action',
                'stale_action')
# Limits that shaped a moving command.
LIMIT_REASONS = ('speed_limited', 'accel_limited', 'workspace_limited')
# Counted once per event rather than per tick.
EVENT_COUNTERS = ('actions', 'nonfinite_actions', 'out_of_order_actions', 'estop_events',
                  'resets', 'resets_refused')
COUNTERS = ('ticks', 'moving_ticks', 'zero_ticks') + STOP_REASONS + LIMIT_REASONS \
    + EVENT_COUNTERS + EXECUTION_COUNTERS  # the last kept by the execution queue


@dataclass
class Command:
    """One filtered command: the twist to send and an optional gripper value."""

    linear: np.ndarray          # [3] m/s
    angular: np.ndarray         # [3] rad/s
    gripper: Optional[float]    # forward-command value; None: send no gripper command
    reasons: Tuple[str, ...]    # stop reasons (then zero) or limits applied

    @property
    def stopped(self) -> bool:
        """Return True when a stop reason zeroed the command."""
        return any(reason in STOP_REASONS for reason in self.reasons)

    @property
    def is_zero(self) -> bool:
        """Return True when the twist is exactly zero."""
        return not np.any(self.linear) and not np.any(self.angular)


def _clip_norm(vector, limit):
    norm = float(np.linalg.norm(vector))
    return (vector * (limit / norm), True) if norm > limit else (vector, False)


def _limit_change(previous, target, max_change):
    change = target - previous
    norm = float(np.linalg.norm(change))
    if norm <= max_change:
        return target, False
    return previous + change * (max_change / norm), True


class SafetyFilter:
    """Latest action + watchdogs + e-stop latch -> one limited twist per control period."""

    def __init__(self, config: ArmConfig):
        """Start stopped: nothing moves before an image, a pose and an action arrive."""
        self.config = config
        self._scale = (np.asarray(config.linear_scale), np.asarray(config.angular_scale))
        self.counters: Dict[str, int] = dict.fromkeys(COUNTERS, 0)
        self.estop_engaged = False  # the e-stop input as last received
        self.estop_latched = False  # stays True until reset() with the input released
        self.image_time = None      # s, arrival of the newest camera image
        self.pose_time = None       # s, arrival of the newest pose
        self.position = None        # [3] m, newest end-effector position
        self.last_command = None    # the Command of the latest tick
        self.execution = ActionExecution(config.action_execution, config.action_period)
        self.reset_motion()

    # ------------------------------------------------------------------ inputs
    def reset_motion(self):
        """Forget the action and the previous command (activation, reset)."""
        self.action = None          # [7] newest valid action
        self.action_stamp = None    # s, stamp of the image it answers
        self.invalid_action = False
        self.execution.clear()
        self.previous = (np.zeros(3), np.zeros(3))
        self.last_tick = None

    def observe_image(self, now):
        """Record that a camera image arrived at ``now`` (s)."""
        self.image_time = float(now)

    def observe_pose(self, now, position):
        """Record an end-effector position [3] (m) that arrived at ``now`` (s)."""
        position = np.asarray(position, dtype=np.float64).reshape(-1)
        if position.shape != (3,) or not np.all(np.isfinite(position)):
            raise ValueError(f'pose position must be 3 finite numbers, got {position.tolist()}')
        self.position = position.copy()
        self.pose_time = float(now)

    def observe_action(self, action, image_stamp, action_period=None):
        """
        Take a new policy action [7], or chunk [K, 7], answering the image ``image_stamp`` (s).

        The chunk replaces what is left of the execution queue; ``action_period``
        (s, the policy's metadata; None or 0: the configured one) is how long each
        of its actions is commanded.

        Returns None when accepted, else the error text. A non-finite action is
        rejected and stops the arm until a valid one arrives; an action older than
        the current one (out of order) is ignored.
        """
        chunk = np.asarray(action, dtype=np.float64)
        chunk = chunk.reshape(1, -1) if chunk.ndim < 2 else chunk
        if chunk.ndim != 2 or chunk.shape[1] != ACTION_DIM or not len(chunk):
            raise ValueError(f'action must have {ACTION_DIM} entries (or be a chunk [K, '
                             f'{ACTION_DIM}]), got shape {np.shape(action)}')
        action = chunk.reshape(-1)
        stamp = float(image_stamp)
        self.counters['actions'] += 1
        if self.action_stamp is not None and stamp < self.action_stamp:
            self.counters['out_of_order_actions'] += 1
            return (f'ignored an action for image stamp {stamp:.6f} s, older than the current '
                    f'one ({self.action_stamp:.6f} s)')
        self.action_stamp = stamp
        if not np.all(np.isfinite(action)):
            self.counters['nonfinite_actions'] += 1
            self.action = None
            self.invalid_action = True
            self.execution.clear()
            return f'non-finite action {action.tolist()}: commanding zero until a valid one'
        self.action = chunk[0].copy()
        self.invalid_action = False
        self.execution.push(chunk, action_period, stamp)  # a repeated stamp runs no action
        return None

    def set_estop(self, engaged):
        """Take the e-stop input; engaging it latches the stop."""
        self.estop_engaged = bool(engaged)
        if self.estop_engaged and not self.estop_latched:
            self.estop_latched = True
            self.counters['estop_events'] += 1

    def reset(self):
        """
        Clear a latched e-stop if the input is released; return (ok, message).

        A successful reset also drops the current action: motion resumes only
        with an action that arrives after the reset.
        """
        if self.estop_engaged:
            self.counters['resets_refused'] += 1
            return False, 'e-stop is still engaged: release it (publish false) before reset'
        was_latched = self.estop_latched
        self.estop_latched = False
        self.reset_motion()
        self.counters['resets'] += 1
        if was_latched:
            return True, 'e-stop cleared; waiting for a new action'
        return True, 'no e-stop was latched; action dropped, waiting for a new one'

    # ------------------------------------------------------------------ control
    def stop_reasons(self, now):
        """Return the stop reasons that hold at ``now`` (s), in STOP_REASONS order."""
        cfg = self.config
        reasons = []
        if self.estop_latched:
            reasons.append('estop')
        if self.image_time is None or now - self.image_time > cfg.image_timeout:
            reasons.append('stale_image')
        if self.pose_time is None or now - self.pose_time > cfg.pose_timeout:
            reasons.append('stale_pose')
        if self.invalid_action:
            reasons.append('invalid_action')
        elif self.action is None:
            reasons.append('no_action')
        elif now - self.action_stamp > cfg.action_timeout:
            reasons.append('stale_action')
        return tuple(reasons)

    def tick(self, now):
        """Return the Command for control tick ``now`` (s) and remember it."""
        cfg = self.config
        self.counters['ticks'] += 1
        dt = cfg.period if self.last_tick is None else min(max(now - self.last_tick, 0.0),
                                                           cfg.period)
        self.last_tick = float(now)
        reasons = self.stop_reasons(now)
        if reasons:
            for reason in reasons:
                self.counters[reason] += 1
            return self._emit(np.zeros(3), np.zeros(3), None, reasons)

        applied = []
        action = self.execution.step(cfg.period)  # once/hold, chunks: tgrpo_ros.arm.execution
        linear, angular = action_to_twist(action, *self._scale)
        # Speed: per axis, then the norm.
        linear_c = np.clip(linear, -np.asarray(cfg.max_linear_speed), cfg.max_linear_speed)
        angular_c = np.clip(angular, -np.asarray(cfg.max_angular_speed), cfg.max_angular_speed)
        linear_c, lin_norm = _clip_norm(linear_c, cfg.max_linear_norm)
        angular_c, ang_norm = _clip_norm(angular_c, cfg.max_angular_norm)
        lever = cfg.rotation_lever_arm
        tip_speed = float(np.linalg.norm(linear_c)) + lever * float(np.linalg.norm(angular_c))
        lever_limited = lever > 0.0 and tip_speed > cfg.max_linear_norm
        if lever_limited:
            linear_c = linear_c * (cfg.max_linear_norm / tip_speed)
            angular_c = angular_c * (cfg.max_linear_norm / tip_speed)
        if lin_norm or ang_norm or lever_limited or not (
                np.array_equal(linear, linear_c) and np.array_equal(angular, angular_c)):
            applied.append('speed_limited')
        # Acceleration: the change from the previous command.
        linear, lin_acc = _limit_change(self.previous[0], linear_c, cfg.max_linear_accel * dt)
        angular, ang_acc = _limit_change(self.previous[1], angular_c,
                                         cfg.max_angular_accel * dt)
        if lin_acc or ang_acc:
            applied.append('accel_limited')
        # Workspace: zero the axes that would leave the box within the horizon.
        ahead = self.position + linear * (cfg.workspace_horizon + max(now - self.pose_time, 0.0))
        leaving = ((linear > 0) & (ahead > np.asarray(cfg.workspace_max))) \
            | ((linear < 0) & (ahead < np.asarray(cfg.workspace_min)))
        outside = (self.position > np.asarray(cfg.workspace_max)) \
            | (self.position < np.asarray(cfg.workspace_min))
        if np.any(leaving) or np.any(outside):
            linear = np.where(leaving, 0.0, linear)
            if np.any(outside):  # turning swings the end effector: only translate back in
                angular = np.zeros(3)
            applied.append('workspace_limited')
        for reason in applied:
            self.counters[reason] += 1
        gripper = action_to_gripper(action[6], cfg.gripper_open, cfg.gripper_close,
                                    cfg.gripper_threshold)
        return self._emit(linear, angular, gripper, tuple(applied))

    def _emit(self, linear, angular, gripper, reasons):
        command = Command(linear=linear, angular=angular, gripper=gripper, reasons=reasons)
        self.counters['zero_ticks' if command.is_zero else 'moving_ticks'] += 1
        self.previous = (linear.copy(), angular.copy())
        self.last_command = command
        return command

    # ------------------------------------------------------------------ reporting
    def state(self, now):
        """Return 'estop', 'stopped' (a watchdog or missing input), or 'running'."""
        if self.estop_latched:
            return 'estop'
        return 'stopped' if self.stop_reasons(now) else 'running'

    def status(self, now):
        """Return a JSON-ready dict: state, stop reasons, e-stop flags, counters."""
        return {'state': self.state(now), 'stop_reasons': list(self.stop_reasons(now)),
                'estop_engaged': self.estop_engaged, 'estop_latched': self.estop_latched,
                'dry_run': self.config.dry_run,
                'counters': dict(self.counters, **self.execution.counters)}
