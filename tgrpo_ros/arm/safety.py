"""
SafetyFilter: turns the newest policy action into a limited twist, or a stop (numpy only).

The safety controller node feeds it what arrives (images, poses, actions,
e-stop) and calls ``tick(now)`` once per control period. All times are seconds
on one clock (the node's ROS clock): arrival times of images and e-stop
messages, the header stamp of a pose, and the image stamp an action answers.
An action or pose stamped more than ``max_clock_skew`` ahead of ``now`` is
refused (``future_stamp``): it would look fresh for that much longer.

Per tick, in this order:

1. **Stops** (zero command at once, no deceleration ramp): e-stop latched (or,
   in dead-man mode, no e-stop message for ``estop_heartbeat_timeout``); no
   camera image for ``image_timeout``; no pose stamped within ``pose_timeout``;
   no valid action since activation or reset, the last action was invalid, or
   its image stamp is older than ``action_timeout``.
2. **Execution and conversion**: the action of this tick comes from the queue of
   ``tgrpo_ros.arm.execution`` (``action_execution`` once or hold, action
   chunks; in once mode the time-weighted mean of what the tick covers, zero
   once the queue is done); target twist = action * scale per axis
   (``tgrpo_ros.arm.command``). Every executed step goes through the limits below.
3. **Limits** (``limit_twist``, the one path every target goes through):

   a. speed: per-axis clip, then each norm scaled down to its limit (direction
      kept); with a ``rotation_lever_arm`` L, both parts are then scaled down
      together until |linear| + L |angular| is within the linear norm limit.
      The twists meeting all of these form a convex set S;
   b. acceleration: the step from the last *published* twist towards the
      target is shortened by one factor for the linear and angular parts
      together, so that neither changes by more than ``max_*_accel * dt`` (norm;
      dt = time since the last published twist, at most one period). The last
      published twist and the target both lie in S, and the result lies on the
      segment between them, so every speed limit, the lever-arm bound included,
      holds for the result.
4. **Workspace** (``workspace_limit``): on each axis where ``position + linear *
   (workspace_horizon + age of the pose)`` would be outside the box, motion
   towards that wall is zeroed (the age covers the motion since the pose was
   measured). Rotation is zeroed while the end effector, now or at that
   look-ahead, is within ``rotation_lever_arm`` of a wall, on it or beyond it:
   turning swings points up to the lever away from it, and which way they
   point is not known here. Translation back inside stays allowed. Zeroing
   components keeps every speed limit, and on the axes left moving the change
   is the ramp's.

So every published twist (a tick's, or the zero of ``stop``) meets every speed
limit, and on every axis where it is not zero its change from the last published
twist is within the acceleration limit (stops and zeroed axes are immediate).

The e-stop latches: once engaged nothing moves until ``reset()`` is called with
the e-stop released; a reset sends a zero at once (``last_command``) and drops
the current action, so motion resumes only with an action that arrives after it,
ramping up from zero.
"""

from dataclasses import dataclass
import math
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
EVENT_COUNTERS = ('actions', 'invalid_actions', 'out_of_order_actions', 'future_stamp',
                  'wrong_frame_poses', 'estop_events', 'estop_heartbeat_lost', 'resets',
                  'resets_refused')
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


def speed_limit(config: ArmConfig, linear, angular):
    """Return (linear, angular, limited): the twist brought inside every speed limit."""
    linear_c = np.clip(linear, -np.asarray(config.max_linear_speed), config.max_linear_speed)
    angular_c = np.clip(angular, -np.asarray(config.max_angular_speed),
                        config.max_angular_speed)
    linear_c, _ = _clip_norm(linear_c, config.max_linear_norm)
    angular_c, _ = _clip_norm(angular_c, config.max_angular_norm)
    lever = config.rotation_lever_arm
    tip_speed = float(np.linalg.norm(linear_c)) + lever * float(np.linalg.norm(angular_c))
    if lever > 0.0 and tip_speed > config.max_linear_norm:
        linear_c = linear_c * (config.max_linear_norm / tip_speed)
        angular_c = angular_c * (config.max_linear_norm / tip_speed)
    limited = not (np.array_equal(linear, linear_c) and np.array_equal(angular, angular_c))
    return linear_c, angular_c, limited


def ramp(previous, target, max_linear_change, max_angular_change):
    """
    Return (linear, angular, limited): one step from ``previous`` towards ``target``.

    Both are (linear [3], angular [3]). The step is shortened by one factor for
    both parts, so that the linear change is at most ``max_linear_change`` and
    the angular one at most ``max_angular_change`` (norms), and the result stays
    on the segment between the two twists.
    """
    factor = 1.0
    for before, after, limit in zip(previous, target, (max_linear_change, max_angular_change)):
        change = float(np.linalg.norm(after - before))
        if change > limit:
            factor = min(factor, limit / change)
    if factor >= 1.0:
        return target[0], target[1], False
    return (previous[0] + (target[0] - previous[0]) * factor,
            previous[1] + (target[1] - previous[1]) * factor, True)


def limit_twist(config: ArmConfig, linear, angular, previous, dt):
    """
    Return (linear, angular, applied): a target twist limited in speed and acceleration.

    ``previous`` is the last published (linear, angular); ``dt`` (s) the time
    since it was published, at most one period. ``applied`` names the limits
    that changed the target ('speed_limited', 'accel_limited').
    """
    applied = ()
    linear, angular, limited = speed_limit(config, np.asarray(linear, dtype=np.float64),
                                           np.asarray(angular, dtype=np.float64))
    if limited:
        applied += ('speed_limited',)
    linear, angular, limited = ramp(previous, (linear, angular), config.max_linear_accel * dt,
                                    config.max_angular_accel * dt)
    if limited:
        applied += ('accel_limited',)
    return linear, angular, applied


def workspace_limit(config: ArmConfig, linear, angular, position, age):
    """
    Return (linear, angular, limited): the twist with motion out of the box zeroed.

    ``position`` [3] m is the newest pose, ``age`` (s) the time since it was
    measured. Translation towards a wall is zeroed on the axes where it would
    leave the box within ``workspace_horizon + age``; rotation is zeroed while
    the end effector (now, or at that look-ahead) is within ``rotation_lever_arm``
    of a wall, on it or beyond it.
    """
    low, high = np.asarray(config.workspace_min), np.asarray(config.workspace_max)
    lead = config.workspace_horizon + age  # s
    ahead = position + linear * lead
    leaving = ((linear > 0) & (ahead > high)) | ((linear < 0) & (ahead < low))
    linear = np.where(leaving, 0.0, linear)
    lever = config.rotation_lever_arm
    turn_stopped = False
    if np.any(angular):
        for point in (position, position + linear * lead):
            if np.any(point >= high - lever) or np.any(point <= low + lever):
                angular, turn_stopped = np.zeros(3), True
                break
    return linear, angular, bool(np.any(leaving)) or turn_stopped


class SafetyFilter:
    """Latest action + watchdogs + e-stop latch -> one limited twist per control period."""

    def __init__(self, config: ArmConfig, frame_id: Optional[str] = None):
        """
        Start stopped: nothing moves before an image, a pose and an action arrive.

        ``frame_id``: the frame poses must be in (the twist's frame, since the
        look-ahead adds twist x time to the position); None checks no frame.
        """
        self.config = config
        self.frame_id = frame_id
        self._scale = (np.asarray(config.linear_scale), np.asarray(config.angular_scale))
        self.counters: Dict[str, int] = dict.fromkeys(COUNTERS, 0)
        self.estop_engaged = False  # the e-stop input as last received
        self.estop_latched = False  # stays True until reset() with the input released
        self.estop_time = None      # s, arrival of the newest e-stop message
        self.estop_silent = False   # dead-man mode: no e-stop message for the timeout
        self.image_time = None      # s, arrival of the newest camera image
        self.pose_time = None       # s, header stamp of the newest pose
        self.position = None        # [3] m, newest end-effector position
        self.last_command = None    # the Command published last (tick or stop)
        self.previous = (np.zeros(3), np.zeros(3))  # its (linear, angular)
        self.last_time = None       # s, when it was published
        self.execution = ActionExecution(config.action_execution, config.action_period,
                                         config.observation_delay)
        self.reset_motion()

    def carry_over(self, other: 'SafetyFilter'):
        """
        Take over the e-stop state and the last published twist of ``other`` (reconfiguring).

        The e-stop latch survives a reconfiguration, and the first twist of the
        new configuration (a dry_run switch, new limits) ramps from what was last
        published, at the time it was published.
        """
        self.estop_engaged, self.estop_latched = other.estop_engaged, other.estop_latched
        self.estop_time, self.estop_silent = other.estop_time, other.estop_silent
        self.previous, self.last_time = other.previous, other.last_time

    # ------------------------------------------------------------------ inputs
    def reset_motion(self):
        """
        Forget the action (activation, deactivation); motion needs a new one.

        The last published twist is kept: the next twist ramps from it.
        """
        self.action = None          # [7] newest valid action
        self.action_stamp = None    # s, stamp of the image it answers
        self.invalid_action = False
        self.execution.clear()

    def observe_image(self, now):
        """Record that a camera image arrived at ``now`` (s)."""
        self.image_time = float(now)

    def observe_pose(self, now, position, stamp=None, frame_id=None):
        """
        Take an end-effector position [3] (m) measured at ``stamp`` (s; None: ``now``).

        Raises ValueError naming the problem (the pose is not taken) for a
        non-finite position, a stamp more than ``max_clock_skew`` ahead of
        ``now`` (counted: ``future_stamp``) or a ``frame_id`` other than the
        filter's (``wrong_frame_poses``).
        """
        position = np.asarray(position, dtype=np.float64).reshape(-1)
        if position.shape != (3,) or not np.all(np.isfinite(position)):
            raise ValueError(f'pose position must be 3 finite numbers, got {position.tolist()}')
        stamp = float(now) if stamp is None else float(stamp)
        ahead = stamp - float(now)
        if not math.isfinite(stamp) or ahead > self.config.max_clock_skew:
            self.counters['future_stamp'] += 1
            raise ValueError(f'pose stamped {ahead:.3f} s ahead of the clock (max_clock_skew '
                             f'{self.config.max_clock_skew} s): refused')
        if self.frame_id is not None and frame_id != self.frame_id:
            self.counters['wrong_frame_poses'] += 1
            raise ValueError(f'pose in frame {frame_id!r}, not the workspace frame '
                             f'{self.frame_id!r}: refused')
        self.position = position.copy()
        self.pose_time = stamp

    def observe_action(self, action, image_stamp, now, action_period=None):
        """
        Take a new policy action [7], or chunk [K, 7], answering the image ``image_stamp`` (s).

        The chunk replaces what is left of the execution queue; ``action_period``
        (s, the policy's metadata; None or 0: the configured one) is how long each
        of its actions is commanded.

        Returns None when accepted, else the error text. An action stamped more
        than ``max_clock_skew`` ahead of ``now`` is refused and counted
        (``future_stamp``); it never becomes the current action. A non-finite
        action is rejected and stops the arm until a valid one arrives; an action
        older than the current one (out of order) is ignored.
        """
        chunk = np.asarray(action, dtype=np.float64)
        chunk = chunk.reshape(1, -1) if chunk.ndim < 2 else chunk
        if chunk.ndim != 2 or chunk.shape[1] != ACTION_DIM or not len(chunk):
            raise ValueError(f'action must have {ACTION_DIM} entries (or be a chunk [K, '
                             f'{ACTION_DIM}]), got shape {np.shape(action)}')
        action = chunk.reshape(-1)
        stamp, now = float(image_stamp), float(now)
        self.counters['actions'] += 1
        if not stamp - now <= self.config.max_clock_skew:
            self.counters['future_stamp'] += 1
            return (f'refused an action for image stamp {stamp:.6f} s: {stamp - now:.3f} s '
                    f'ahead of the controller clock (max_clock_skew '
                    f'{self.config.max_clock_skew} s)')
        if self.action_stamp is not None and stamp < self.action_stamp:
            self.counters['out_of_order_actions'] += 1
            return (f'ignored an action for image stamp {stamp:.6f} s, older than the current '
                    f'one ({self.action_stamp:.6f} s)')
        self.action_stamp = stamp
        if not np.all(np.isfinite(action)):
            self.invalidate_action()
            return f'non-finite action {action.tolist()}: commanding zero until a valid one'
        self.action = chunk[0].copy()
        self.invalid_action = False
        self.execution.push(chunk, action_period, stamp)  # a repeated stamp runs no action
        return None

    def invalidate_action(self):
        """Drop the current action: an invalid one arrived; zero until a valid one."""
        self.counters['invalid_actions'] += 1
        self.action = None
        self.invalid_action = True
        self.execution.clear()

    def set_estop(self, engaged, now=None):
        """Take one e-stop message received at ``now`` (s); engaging it latches the stop."""
        self.estop_engaged = bool(engaged)
        if now is not None:
            self.estop_time = float(now)
        if self.estop_engaged:
            self._latch()

    def _latch(self):
        if not self.estop_latched:
            self.estop_latched = True
            self.counters['estop_events'] += 1

    def _silence(self, now):
        """Return the seconds without an e-stop message in dead-man mode, else None."""
        timeout = self.config.estop_heartbeat_timeout
        if timeout <= 0.0:
            return None
        silence = math.inf if self.estop_time is None else now - self.estop_time
        return silence if silence > timeout else None

    def check_heartbeat(self, now):
        """Dead-man mode: latch the e-stop when its topic has been silent too long."""
        silent = self._silence(now) is not None
        if silent and not self.estop_silent:
            self.counters['estop_heartbeat_lost'] += 1
        self.estop_silent = silent
        if silent:
            self._latch()

    def reset(self, now):
        """
        Clear a latched e-stop if the input is released; return (ok, message).

        A successful reset sends a zero at once (``last_command``, published
        at ``now``) and drops the current action: motion resumes only with an
        action that arrives after the reset, ramping up from zero.
        """
        now = float(now)
        silence = self._silence(now)
        if self.estop_engaged or silence is not None:
            self.counters['resets_refused'] += 1
            if self.estop_engaged:
                return False, 'e-stop is still engaged: release it (publish false) before reset'
            heard = 'yet' if math.isinf(silence) else f'for {silence:.2f} s'
            return False, (f'no e-stop message {heard} (dead-man mode, estop_heartbeat_timeout '
                           f'{self.config.estop_heartbeat_timeout} s): publish the released '
                           'state repeatedly before reset')
        was_latched = self.estop_latched
        self.estop_latched = False
        self.reset_motion()
        self.stop(now, 'reset')
        self.counters['resets'] += 1
        if was_latched:
            return True, 'e-stop cleared; waiting for a new action'
        return True, 'no e-stop was latched; action dropped, waiting for a new one'

    # ------------------------------------------------------------------ control
    def stop_reasons(self, now):
        """Return the stop reasons that hold at ``now`` (s), in STOP_REASONS order."""
        cfg = self.config
        reasons = []
        if self.estop_latched or self._silence(now) is not None:
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
        """Return the Command for control tick ``now`` (s) and remember it as published."""
        cfg = self.config
        now = float(now)
        self.counters['ticks'] += 1
        self.check_heartbeat(now)
        reasons = self.stop_reasons(now)
        if reasons:
            for reason in reasons:
                self.counters[reason] += 1
            command = Command(np.zeros(3), np.zeros(3), None, reasons)
        else:
            dt = cfg.period if self.last_time is None else min(max(now - self.last_time, 0.0),
                                                               cfg.period)
            # once/hold, chunks (tgrpo_ros.arm.execution): the action of this tick.
            action = self.execution.step(cfg.period, now)
            if action is None:  # nothing queued (cannot happen with a current action)
                action = np.append(np.zeros(ACTION_DIM - 1), self.action[ACTION_DIM - 1])
            with np.errstate(over='ignore'):  # a huge action: inf, then clipped to the limit
                linear, angular = action_to_twist(action, *self._scale)
            linear, angular, applied = limit_twist(cfg, linear, angular, self.previous, dt)
            linear, angular, walled = workspace_limit(cfg, linear, angular, self.position,
                                                      max(now - self.pose_time, 0.0))
            applied += ('workspace_limited',) if walled else ()
            for reason in applied:
                self.counters[reason] += 1
            gripper = action_to_gripper(action[6], cfg.gripper_open, cfg.gripper_close,
                                        cfg.gripper_threshold)
            command = Command(linear, angular, gripper, applied)
        self.counters['zero_ticks' if command.is_zero else 'moving_ticks'] += 1
        return self._published(command, now)

    def stop(self, now, reason='stop'):
        """Return a zero Command to publish at once (e-stop, reset, deactivate), recorded."""
        return self._published(Command(np.zeros(3), np.zeros(3), None, (reason,)), float(now))

    def _published(self, command, now):
        self.previous = (command.linear.copy(), command.angular.copy())
        self.last_time = now
        self.last_command = command
        return command

    # ------------------------------------------------------------------ reporting
    def state(self, now):
        """Return 'estop', 'stopped' (a watchdog or missing input), or 'running'."""
        if self.estop_latched or self._silence(now) is not None:
            return 'estop'
        return 'stopped' if self.stop_reasons(now) else 'running'

    def status(self, now):
        """Return a JSON-ready dict: state, stop reasons, e-stop flags, counters."""
        return {'state': self.state(now), 'stop_reasons': list(self.stop_reasons(now)),
                'estop_engaged': self.estop_engaged, 'estop_latched': self.estop_latched,
                'estop_silent': self._silence(now) is not None,
                'dry_run': self.config.dry_run,
                'counters': dict(self.counters, **self.execution.counters)}
