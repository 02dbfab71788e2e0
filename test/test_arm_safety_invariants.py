"""
The safety core as a property: every published twist meets every limit at once.

Seeded random sequences of 10,000 control ticks per configuration drive
``SafetyFilter`` the way a node does: random, extreme and non-finite actions,
image stamps with jitter, lag and clock skew (some far in the future), poses
with stamps of every age, some in another frame or non-finite, inside, near and
outside the box; e-stop bursts, dead-man silences, resets, reconfigurations
(deactivate, a new configuration, activate) and irregular tick times (late,
early, twice at once, the clock stepping back). The test keeps its own model of
what the specification allows (docs/deploy.md, "Safety semantics") and checks
every output against it:

* every twist is finite and within each per-axis limit, both norms and the
  lever-arm bound;
* on each axis where a twist is not zero, its change from the last published
  twist (ticks, resets' and deactivations' zeros alike) is within
  ``max_*_accel * dt``, dt being the time since that twist, at most one period;
* no axis moves towards a wall it would cross within ``workspace_horizon`` plus
  the age of the pose, and nothing turns within ``rotation_lever_arm`` of a wall;
* every stop the model expects (e-stop latched or silent, stale image, pose or
  action, no or invalid action) gives an exact zero and no gripper command, and
  the filter stops for no other reason;
* a future-stamped action never becomes the current one.

Both execution modes run (``action_execution`` once, the default, and hold;
``tgrpo_ros.arm.execution``): the queue decides which action each tick executes
(in once mode the time-weighted mean of what the tick covers, zero when it is
done), and every executed step goes through the same limits. The action under
way finishes its period before a newer one starts, so the gripper command is
that of one of the valid actions accepted since the queue was last emptied.
"""

import numpy as np
import pytest

from tgrpo_ros.arm import ArmConfig, SafetyFilter

TICKS = 10_000
FRAME = 'base'
TOLERANCE = 1e-9  # relative, for float rounding in the scalings

CONFIGS = {
    # config/deploy_arm.yaml's limits at 50 Hz.
    'deploy_arm': {'control_rate_hz': 50.0, 'max_linear_speed': (0.05, 0.05, 0.05),
                   'max_linear_norm': 0.05, 'rotation_lever_arm': 0.1,
                   'workspace_min': (0.25, -0.4, 0.05), 'workspace_max': (0.75, 0.4, 0.6)},
    # The defaults in dead-man mode.
    'dead_man': {'estop_heartbeat_timeout': 0.1},
    # bench/deploy.py's: 25 Hz, 0.15 m lever, the LIBERO box.
    'sim_bench': {'control_rate_hz': 25.0, 'rotation_lever_arm': 0.15,
                  'workspace_min': (-0.35, -0.2, 0.2), 'workspace_max': (0.0, 0.2, 0.45),
                  'image_timeout': 1.0},
    # Uneven axes, slow ramps, a long horizon, no clock skew allowed.
    'uneven': {'control_rate_hz': 10.0, 'linear_scale': (0.1, 0.2, 0.3),
               'angular_scale': (1.0, 2.0, 3.0), 'max_linear_speed': (0.02, 0.1, 0.05),
               'max_angular_speed': (0.1, 0.5, 1.0), 'max_linear_norm': 0.08,
               'max_angular_norm': 0.6, 'max_linear_accel': 0.3, 'max_angular_accel': 1.0,
               'rotation_lever_arm': 0.05, 'workspace_horizon': 0.3, 'max_clock_skew': 0.0,
               'workspace_min': (0.0, 0.0, 0.0), 'workspace_max': (0.5, 0.6, 0.7),
               'image_timeout': 0.5, 'pose_timeout': 0.3},
}


class Spec:
    """What the specification says the filter holds, kept apart from the filter."""

    def __init__(self, config):
        self.config = config
        self.image = None           # s, arrival
        self.pose = None            # (stamp s, position [3])
        self.action = None          # [7] current valid action
        self.stamp = None           # s, its image stamp (also of an invalid newest one)
        self.invalid = False
        self.engaged = False
        self.latched = False
        self.estop_time = None
        self.published = None       # (time s, linear [3], angular [3])
        self.grippers = set()       # gripper commands of the valid actions since a clear

    def silent(self, now):
        timeout = self.config.estop_heartbeat_timeout
        return timeout > 0 and (self.estop_time is None or now - self.estop_time > timeout)

    def stops(self, now):
        cfg = self.config
        return (self.latched or self.silent(now)
                or self.image is None or now - self.image > cfg.image_timeout
                or self.pose is None or now - self.pose[0] > cfg.pose_timeout
                or self.invalid or self.action is None
                or now - self.stamp > cfg.action_timeout)


def random_position(rng, low, high, lever):
    """Return a position inside the box, near a wall (within the lever) or outside it."""
    kind = rng.random()
    if kind < 0.5:
        return rng.uniform(low, high)
    position = rng.uniform(low, high)
    axis = int(rng.integers(0, 3))
    wall = high[axis] if rng.random() < 0.5 else low[axis]
    spread = max(lever, 0.02) * 1.5
    position[axis] = wall + rng.uniform(-spread, spread)
    return position


def random_action(rng):
    kind = rng.random()
    if kind < 0.6:
        return rng.uniform(-1.0, 1.0, 7)
    if kind < 0.8:  # full scale and beyond on a few axes
        action = rng.uniform(-1.0, 1.0, 7)
        picked = rng.random(7) < 0.5
        action[picked] = rng.choice([-1e308, -1e3, -1.0, 1.0, 1e3, 1e308], picked.sum())
        return action
    if kind < 0.9:
        action = rng.uniform(-1.0, 1.0, 7)
        action[int(rng.integers(0, 7))] = rng.choice([np.nan, np.inf, -np.inf])
        return action
    return np.zeros(7)


def check_output(spec, command, now):
    """Assert every invariant on one published twist; return a description if moving."""
    cfg = spec.config
    linear, angular = command.linear, command.angular
    assert np.all(np.isfinite(linear)) and np.all(np.isfinite(angular))
    slack = 1.0 + TOLERANCE
    assert np.all(np.abs(linear) <= np.asarray(cfg.max_linear_speed) * slack), linear
    assert np.all(np.abs(angular) <= np.asarray(cfg.max_angular_speed) * slack), angular
    lin_norm, ang_norm = np.linalg.norm(linear), np.linalg.norm(angular)
    assert lin_norm <= cfg.max_linear_norm * slack, linear
    assert ang_norm <= cfg.max_angular_norm * slack, angular
    assert lin_norm + cfg.rotation_lever_arm * ang_norm <= cfg.max_linear_norm * slack, \
        (linear, angular)
    # Acceleration from the last published twist, on the axes that keep moving.
    if spec.published is None:
        dt, before = cfg.period, (np.zeros(3), np.zeros(3))
    else:
        dt = min(max(now - spec.published[0], 0.0), cfg.period)
        before = spec.published[1:]
    for part, prev, limit in ((linear, before[0], cfg.max_linear_accel),
                              (angular, before[1], cfg.max_angular_accel)):
        change = np.linalg.norm(part - np.where(part != 0.0, prev, 0.0))
        assert change <= limit * dt * slack + 1e-12, (part, prev, dt)
    # Workspace: nothing towards a wall it would cross, no turning near one.
    if np.any(linear) or np.any(angular):
        stamp, position = spec.pose
        low, high = np.asarray(cfg.workspace_min), np.asarray(cfg.workspace_max)
        ahead = position + linear * (cfg.workspace_horizon + max(now - stamp, 0.0))
        assert not np.any((linear > 0) & (ahead > high + 1e-12)), (position, linear)
        assert not np.any((linear < 0) & (ahead < low - 1e-12)), (position, linear)
        if np.any(angular):
            lever = cfg.rotation_lever_arm
            for point in (position, ahead):
                assert np.all(point > low + lever) and np.all(point < high - lever), \
                    (point, angular)


@pytest.mark.parametrize('mode', ['once', 'hold'])
@pytest.mark.parametrize('name', sorted(CONFIGS))
def test_every_published_twist_meets_every_limit(name, mode):
    config = ArmConfig(**CONFIGS[name], action_execution=mode)
    rng = np.random.default_rng(sorted(CONFIGS).index(name) + 17)
    low, high = np.asarray(config.workspace_min), np.asarray(config.workspace_max)
    period, skew = config.period, config.max_clock_skew
    safety = SafetyFilter(config, frame_id=FRAME)
    spec = Spec(config)
    now = 1000.0
    seen = dict.fromkeys(('moving', 'stopped', 'future_refused', 'reset', 'reconfigured',
                          'estop', 'walled', 'accel', 'lever'), 0)
    position = rng.uniform(low, high)
    for _ in range(TICKS):
        step = rng.random()
        if step < 0.02:
            now -= rng.uniform(0.0, period)  # the clock steps back
        elif step < 0.05:
            pass  # two ticks at once
        elif step < 0.12:
            now += rng.uniform(1.0, 4.0) * period  # a late tick
        else:
            now += period * rng.uniform(0.7, 1.3)

        if rng.random() < 0.9:
            arrival = now - rng.uniform(0.0, 0.3 * period)
            safety.observe_image(arrival)
            spec.image = arrival
        if rng.random() < 0.85:
            if rng.random() < 0.1:
                position = random_position(rng, low, high, config.rotation_lever_arm)
            else:
                position = np.clip(position + rng.normal(0.0, 0.01, 3), low - 0.05, high + 0.05)
            kind = rng.random()
            stamp = now - rng.uniform(0.0, 0.05)
            frame, sent = FRAME, position.copy()
            if kind < 0.05:
                stamp = now + rng.uniform(0.0, 2.0)  # a fast clock, or a glitch
            elif kind < 0.1:
                stamp = now - rng.uniform(0.0, 1.0)  # late
            elif kind < 0.13:
                frame = 'tool0'
            elif kind < 0.15:
                sent[int(rng.integers(0, 3))] = np.nan
            valid = frame == FRAME and stamp - now <= skew and np.all(np.isfinite(sent))
            try:
                safety.observe_pose(now, sent, stamp=stamp, frame_id=frame)
            except ValueError:
                assert not valid
            else:
                assert valid
                spec.pose = (stamp, sent)
        if rng.random() < 0.7:
            action = random_action(rng)
            kind = rng.random()
            stamp = now - rng.uniform(0.0, 0.3)
            if kind < 0.05:
                stamp = now + rng.uniform(0.0, 60.0)
            elif kind < 0.1:
                stamp = now - rng.uniform(0.0, 3.0)
            action_period = None
            if mode == 'once':  # chunks of K actions, the policy's own period or none
                if rng.random() < 0.3:
                    action = np.stack([action] + [random_action(rng)
                                                  for _ in range(int(rng.integers(1, 4)))])
                action_period = rng.choice([0.0, 0.5, 1.0, 2.5, 10.0]) * period
            error = safety.observe_action(action, stamp, now, action_period=action_period)
            if stamp - now > skew:
                assert error and 'ahead of the controller clock' in error
                seen['future_refused'] += 1
            elif spec.stamp is not None and stamp < spec.stamp:
                assert error and 'older than the current' in error
            else:
                spec.stamp = stamp
                spec.invalid = not np.all(np.isfinite(action))
                spec.action = None if spec.invalid else action.copy()
                if spec.invalid:
                    spec.grippers.clear()  # the queue is emptied
                else:
                    spec.grippers.update(config.gripper_open
                                         if row[6] >= config.gripper_threshold
                                         else config.gripper_close
                                         for row in np.reshape(action, (-1, 7)))
                assert (error is None) == (not spec.invalid)
        if config.estop_heartbeat_timeout > 0 and rng.random() < 0.6:
            safety.set_estop(spec.engaged, now)  # the heartbeat: the state, repeated
            spec.estop_time = now
        if rng.random() < 0.01:  # a burst: pressed and released at once
            safety.set_estop(True, now)
            spec.engaged = spec.latched = True
            spec.estop_time = now
            if rng.random() < 0.7:
                safety.set_estop(False, now)
                spec.engaged = False
            seen['estop'] += 1
        if rng.random() < 0.02:
            ok, message = safety.reset(now)
            assert ok == (not spec.engaged and not spec.silent(now)), message
            if ok:
                assert safety.last_command.is_zero
                check_output(spec, safety.last_command, now)
                spec.published = (now, np.zeros(3), np.zeros(3))
                spec.latched, spec.action, spec.stamp, spec.invalid = False, None, None, False
                spec.grippers.clear()
                seen['reset'] += 1
        if rng.random() < 0.002:  # deactivate, configure anew (dry_run switch), activate
            command = safety.stop(now, 'deactivate')
            check_output(spec, command, now)
            spec.published = (now, np.zeros(3), np.zeros(3))
            fresh = SafetyFilter(config, frame_id=FRAME)
            fresh.carry_over(safety)
            safety = fresh
            safety.reset_motion()
            spec.image = spec.pose = spec.action = spec.stamp = None
            spec.invalid = False
            spec.grippers.clear()
            seen['reconfigured'] += 1

        if spec.silent(now):
            spec.latched = True
        command = safety.tick(now)
        check_output(spec, command, now)
        stop = spec.stops(now)
        assert command.stopped == stop, (command.reasons, spec.__dict__)
        if stop:
            assert command.is_zero and command.gripper is None
            seen['stopped'] += 1
        else:
            assert command.gripper in spec.grippers, (command.gripper, spec.grippers)
            seen['moving'] += not command.is_zero
            seen['walled'] += 'workspace_limited' in command.reasons
            seen['accel'] += 'accel_limited' in command.reasons
            tip = np.linalg.norm(command.linear) \
                + config.rotation_lever_arm * np.linalg.norm(command.angular)
            seen['lever'] += config.rotation_lever_arm > 0 and tip > 0.99 * config.max_linear_norm
        spec.published = (now, command.linear.copy(), command.angular.copy())
    # The sequence reached every situation it is meant to cover.
    # (A box narrower than 2 levers on an axis never allows a turn: no 'lever' there.)
    turns = np.all(high - low > 2 * config.rotation_lever_arm) and config.rotation_lever_arm > 0
    assert all(count > 0 for key, count in seen.items() if key != 'lever' or turns), seen
    assert seen['moving'] > TICKS // 10, seen
