"""Action execution (once / hold, chunks) and the twist means of sim_arm: pure numpy, no ROS."""

import numpy as np
import pytest

from tgrpo_ros.arm import ArmConfig, SafetyFilter
from tgrpo_ros.arm.execution import ActionExecution, check_chunk, TwistHistory

# Limits that leave every action of these tests unchanged.
PERMISSIVE = {'max_linear_speed': (10.0,) * 3, 'max_linear_norm': 20.0,
              'max_angular_speed': (50.0,) * 3, 'max_angular_norm': 90.0,
              'max_linear_accel': 1e6, 'max_angular_accel': 1e6,
              'workspace_min': (-10.0,) * 3, 'workspace_max': (10.0,) * 3}


def _integral(execution, tick, ticks):
    """Return the sum over ``ticks`` of the commanded action [6] x tick (s)."""
    total = np.zeros(6)
    for _ in range(ticks):
        action = execution.step(tick)
        if action is not None:
            total += action[:6] * tick
    return total


@pytest.mark.parametrize('tick', [0.01, 0.02, 0.04, 0.05, 0.07, 0.2])
def test_once_commands_each_action_for_exactly_one_period(tick):
    execution = ActionExecution('once', 0.05)
    action = np.array([0.4, -0.2, 0.1, 0.05, 0.0, -0.1, 1.0])
    execution.push(action)
    total = _integral(execution, tick, 100)
    np.testing.assert_allclose(total, action[:6] * 0.05, atol=1e-12)
    assert execution.counters['executed_actions'] == 1
    # Then zero until a newer action: nothing left, the gripper is kept.
    idle = execution.step(tick)
    assert not np.any(idle[:6]) and idle[6] == 1.0


def test_once_random_chunks_and_ticks_run_each_action_for_one_period():
    rng = np.random.default_rng(0)
    for _ in range(200):
        period = rng.uniform(0.01, 0.2)
        execution = ActionExecution('once', period)
        total, expected, rows = np.zeros(6), np.zeros(6), 0
        for _ in range(rng.integers(1, 6)):
            chunk = rng.uniform(-1, 1, size=(rng.integers(1, 9), 7))
            execution.push(chunk)
            rows += len(chunk)
            tick = rng.uniform(0.005, 0.1)
            while execution.pending:  # drained at random tick lengths
                total += _integral(execution, tick, 1)
                tick = rng.uniform(0.005, 0.1)
            expected += chunk[:, :6].sum(axis=0) * period
        np.testing.assert_allclose(total, expected, atol=1e-9)
        assert execution.counters['executed_actions'] == rows


def test_a_newer_chunk_lets_the_action_under_way_finish_and_drops_the_rest():
    execution = ActionExecution('once', 0.05)
    first = np.zeros((3, 7))
    first[:, 0] = [1.0, 10.0, 100.0]
    execution.push(first)
    total = _integral(execution, 0.02, 1)  # 20 ms of the first action
    newer = np.zeros((2, 7))
    newer[:, 0] = [-1.0, -2.0]
    execution.push(newer)
    total += _integral(execution, 0.02, 20)
    assert total[0] == pytest.approx((1.0 - 1.0 - 2.0) * 0.05)
    assert execution.counters['replaced_actions'] == 2  # 10 and 100 never started
    assert execution.counters['executed_actions'] == 3


def test_chunk_runs_in_order_and_a_newer_chunk_replaces_the_rest():
    execution = ActionExecution('once', 0.05)
    chunk = np.zeros((4, 7))
    chunk[:, 0] = [1.0, 2.0, 3.0, 4.0]
    chunk[:, 6] = [0.0, 1.0, 0.0, 1.0]
    execution.push(chunk)
    firsts = [execution.step(0.05) for _ in range(2)]
    assert [a[0] for a in firsts] == [1.0, 2.0] and [a[6] for a in firsts] == [0.0, 1.0]
    newer = np.zeros((2, 7))
    newer[:, 0] = [-1.0, -2.0]
    execution.push(newer)
    assert execution.counters['replaced_actions'] == 2
    rest = [execution.step(0.05)[0] for _ in range(3)]
    assert rest == [-1.0, -2.0, 0.0]
    assert execution.counters['executed_actions'] == 4 and execution.counters['chunks'] == 2


def test_a_repeated_reply_runs_no_action_twice():
    execution = ActionExecution('once', 0.05)
    action = [1.0, 0, 0, 0, 0, 0, 1.0]
    assert execution.push(action, stamp=7)
    total = _integral(execution, 0.02, 2)
    assert not execution.push(action, stamp=7)  # the same image's reply again
    total += _integral(execution, 0.02, 10)
    assert total[0] == pytest.approx(0.05)
    assert execution.counters['repeated_replies'] == 1
    assert execution.push(action, stamp=8)


def test_once_skips_replies_to_frames_that_had_not_seen_the_last_action():
    execution = ActionExecution('once', 0.05, observation_delay=0.05)
    assert execution.push([1.0, 0, 0, 0, 0, 0, 1.0], stamp=0.0)
    now = 0.0
    for _ in range(3):  # ticks of 20 ms: the action runs 0.00-0.05 s
        execution.step(0.02, now)
        now += 0.02
    assert execution.motion_end == pytest.approx(0.05)
    # Frames captured mid-action, or before its motion could show (0.05 + 0.05 s).
    for stamp in (0.03, 0.0999):
        assert not execution.push([-1.0, 0, 0, 0, 0, 0, 1.0], stamp=stamp)
    assert execution.counters['early_frames'] == 2 and execution.pending == 0
    assert execution.push([0.5, 0, 0, 0, 0, 0, 1.0], stamp=0.1)
    assert execution.counters['chunks'] == 2
    # A chunk: its frame must follow the chunk's last action.
    execution.push(np.ones((3, 7)), stamp=0.2)
    execution.step(0.02, 0.3)
    assert execution.motion_end == pytest.approx(0.3 + 3 * 0.05)
    assert not execution.push(np.ones((2, 7)), stamp=0.49)
    assert execution.push(np.ones((2, 7)), stamp=0.5)
    # Off (negative) and in hold mode any newer reply is taken.
    for execution in (ActionExecution('once', 0.05, observation_delay=-1.0),
                      ActionExecution('hold', 0.05, observation_delay=0.05)):
        execution.push(np.ones(7), stamp=0.0)
        execution.step(0.02, 0.0)
        assert execution.push(np.ones(7), stamp=0.01)


@pytest.mark.parametrize('observation_delay', [0.05, -1.0])
def test_a_slow_policy_in_real_time_never_overshoots_when_frames_must_see_the_last_action(
        observation_delay):
    """
    A policy cloned from a synchronous loop, in real time: frames at 5 Hz, replies 170 ms later.

    The double commands the displacement that reaches the target in one step (as an
    expert's demonstrations would), so synchronously the arm stops on the target.
    In real time a frame captured while an action still runs shows part of it: acting
    on it commands the rest again, and the arm overshoots. Skipping such frames
    (``observation_delay`` >= 0) keeps the synchronous behaviour.
    """
    config = ArmConfig(control_rate_hz=50.0, observation_delay=observation_delay, **PERMISSIVE)
    safety = SafetyFilter(config)
    scale, target = config.linear_scale[0], 0.03  # m/s per unit; m
    position, now, frames, replies, busy_until = 0.0, 0.0, [], [], 0.0
    trace = []
    for tick in range(150):  # 3 s
        now = tick * config.period
        if tick % 10 == 0:  # camera: 5 Hz
            frames.append((now, position))
        if frames and busy_until <= now:  # the server takes the newest frame
            stamp, seen = frames.pop()
            frames.clear()
            action = np.clip((target - seen) / (scale * config.action_period), -1.0, 1.0)
            replies.append((now + 0.17, stamp, action))
            busy_until = now + 0.17
        for reply in [r for r in replies if r[0] <= now]:
            replies.remove(reply)
            safety.observe_action([reply[2], 0, 0, 0, 0, 0, 1.0], reply[1], now)
        safety.observe_image(now)
        safety.observe_pose(now, (position, 0.0, 0.0))
        position += safety.tick(now).linear[0] * config.period
        trace.append(position)
    overshoot = max(trace) - target
    if observation_delay >= 0.0:
        assert overshoot < 1e-9 and abs(trace[-1] - target) < 1e-9
        assert safety.status(now)['counters']['early_frames'] > 0
    else:  # before: a frame 20 ms into an action commands its last 60% again
        assert overshoot > 0.2 * target


def test_hold_keeps_the_last_action_until_a_newer_one():
    execution = ActionExecution('hold', 0.05)
    assert execution.step(0.02) is None  # nothing yet
    execution.push([0.5, 0, 0, 0, 0, 0, 1.0])
    commands = [execution.step(0.02)[0] for _ in range(50)]
    assert commands == [0.5] * 50
    chunk = np.zeros((2, 7))
    chunk[:, 0] = [0.1, 0.3]
    execution.push(chunk)
    commands = [execution.step(0.05)[0] for _ in range(4)]
    assert commands == pytest.approx([0.1, 0.3, 0.3, 0.3])


def test_bad_chunks_and_settings_are_refused_with_their_values():
    with pytest.raises(ValueError, match=r'\[K, 7\] with K >= 1, got shape \(2, 6\)'):
        check_chunk(np.zeros((2, 6)))
    with pytest.raises(ValueError, match="once, hold, got 'twice'"):
        ActionExecution('twice')
    with pytest.raises(ValueError, match='action_period must be > 0 s, got -1'):
        ActionExecution('once', -1)
    with pytest.raises(ValueError, match="action_execution must be 'once' or 'hold'"):
        ArmConfig(action_execution='sometimes')
    with pytest.raises(ValueError, match=r'action_period \(0.0\) must be > 0'):
        ArmConfig(action_period=0.0)
    assert ArmConfig().action_execution == 'once' and ArmConfig().action_period == 0.05


# ---------------------------------------------------------------------------- safety filter

def _fresh(safety, now, position=(0.0, 0.0, 0.0)):
    safety.observe_image(now)
    safety.observe_pose(now, position)


@pytest.mark.parametrize('rate', [20.0, 25.0, 50.0, 100.0])
def test_filter_once_moves_action_times_scale_times_period(rate):
    config = ArmConfig(control_rate_hz=rate, **PERMISSIVE)
    safety = SafetyFilter(config)
    action = np.array([0.6, -0.3, 0.2, 0.1, 0.0, 0.0, 1.0])
    now = 0.0
    _fresh(safety, now)
    assert safety.observe_action(action, now, now) is None
    travel = np.zeros(3)
    for _ in range(int(rate)):  # one second of ticks, one decision
        command = safety.tick(now)
        travel += command.linear * config.period
        now += config.period
        _fresh(safety, now)
    expected = action[:3] * np.asarray(config.linear_scale) * config.action_period
    np.testing.assert_allclose(travel, expected, atol=1e-12)
    assert safety.status(now)['counters']['executed_actions'] == 1
    # In hold mode the same second moves 1 / action_period times as far.
    hold = SafetyFilter(ArmConfig(control_rate_hz=rate, action_execution='hold', **PERMISSIVE))
    _fresh(hold, 0.0)
    hold.observe_action(action, 0.0, 0.0)
    travel = sum(hold.tick(i * config.period).linear * config.period
                 for i in range(int(rate)) if _fresh(hold, i * config.period) is None)
    np.testing.assert_allclose(travel, expected / config.action_period, atol=1e-9)


def test_filter_uses_the_policy_period_and_keeps_every_limit_on_random_chunks():
    rng = np.random.default_rng(1)
    for trial in range(40):
        config = ArmConfig(control_rate_hz=rng.choice([20.0, 25.0, 50.0]),
                           max_linear_accel=rng.uniform(0.2, 5.0),
                           action_execution=rng.choice(['once', 'hold']),
                           observation_delay=-1.0)  # every newer chunk replaces the queue
        safety = SafetyFilter(config)
        now, previous = 0.0, np.zeros(3)
        for tick in range(60):
            _fresh(safety, now, position=(0.5, 0.0, 0.3))  # well inside the box
            if tick % 7 == 0:
                chunk = rng.uniform(-2, 2, size=(rng.integers(1, 5), 7))
                period = rng.choice([0.0, 0.1])
                assert safety.observe_action(chunk, now, now, action_period=period) is None
                assert safety.execution.period == (period or config.action_period)
            command = safety.tick(now)
            assert np.all(np.abs(command.linear) <= np.asarray(config.max_linear_speed) + 1e-12)
            assert np.linalg.norm(command.linear) <= config.max_linear_norm + 1e-12
            assert np.all(np.abs(command.angular)
                          <= np.asarray(config.max_angular_speed) + 1e-12)
            assert np.linalg.norm(command.linear - previous) \
                <= config.max_linear_accel * config.period + 1e-9, trial
            previous = command.linear
            now += config.period


def test_filter_chunk_of_nonfinite_values_stops_and_empties_the_queue():
    safety = SafetyFilter(ArmConfig(**PERMISSIVE))
    _fresh(safety, 0.0)
    chunk = np.ones((3, 7))
    chunk[2, 1] = np.nan
    assert 'non-finite action' in safety.observe_action(chunk, 0.0, 0.0)
    assert safety.tick(0.0).stopped and safety.execution.pending == 0
    with pytest.raises(ValueError, match=r'action must have 7 entries .* got shape \(2, 5\)'):
        safety.observe_action(np.zeros((2, 5)), 0.0, 0.0)


# ---------------------------------------------------------------------------- twist means

def test_twist_history_mean_over_a_step():
    history = TwistHistory(timeout=0.1)
    ms = 1_000_000
    history.add(0, [1.0] * 6)
    history.add(40 * ms, [0.25] * 6)
    history.add(80 * ms, [0.0] * 6)
    mean, covered = history.average(0, 50 * ms)
    np.testing.assert_allclose(mean, [(40 + 0.25 * 10) / 50] * 6)
    assert covered == 1.0
    mean, _ = history.average(50 * ms, 100 * ms)
    np.testing.assert_allclose(mean, [0.25 * 30 / 50] * 6)
    # Stale after the timeout; a refused (None) command holds still from its stamp.
    history.add(200 * ms, [2.0] * 6)
    history.add(220 * ms, None)
    mean, covered = history.average(150 * ms, 400 * ms)
    np.testing.assert_allclose(mean, [2.0 * 20 / 250] * 6)
    assert covered == pytest.approx((30 + 20) / 250)  # the zero command until 180 ms, then 2
    mean, covered = history.average(400 * ms, 450 * ms)
    assert covered == 0.0 and not np.any(mean)
    # Out of order: a late command with an older stamp takes its place in time.
    history = TwistHistory(timeout=1.0)
    history.add(30 * ms, [3.0] * 6)
    history.add(10 * ms, [1.0] * 6)
    mean, _ = history.average(0, 50 * ms)
    np.testing.assert_allclose(mean, [(1.0 * 20 + 3.0 * 20) / 50] * 6)
