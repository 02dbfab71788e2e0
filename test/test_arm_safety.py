"""The arm core on hand-computed numbers: conversion, limits, workspace, watchdogs, e-stop."""

import math

import numpy as np
import pytest

from tgrpo_ros.arm import (action_to_gripper, action_to_twist, ArmConfig, gripper_to_libero,
                           SafetyFilter, twist_to_libero)
from tgrpo_ros.arm.safety import COUNTERS

CENTRE = (0.5, 0.5, 0.5)  # m, inside the unit box of make_config


def make_config(**overrides):
    """Round numbers: 10 Hz (period 0.1 s), unit box, generous limits unless overridden."""
    values = {'control_rate_hz': 10.0, 'linear_scale': (0.1, 0.2, 0.1),
              'angular_scale': (1.0, 2.0, 3.0), 'max_linear_speed': (1.0, 1.0, 1.0),
              'max_linear_norm': 10.0, 'max_angular_speed': (10.0, 10.0, 10.0),
              'max_angular_norm': 100.0, 'max_linear_accel': 1000.0,
              'max_angular_accel': 1000.0, 'workspace_min': (0.0, 0.0, 0.0),
              'workspace_max': (1.0, 1.0, 1.0), 'workspace_horizon': 0.1,
              'image_timeout': 0.5, 'action_timeout': 1.0, 'pose_timeout': 0.2,
              'gripper_open': 0.04, 'gripper_close': 0.0,
              # The limits are checked on held actions; once mode: test_arm_execution.py.
              'action_execution': 'hold'}
    values.update(overrides)
    return ArmConfig(**values)


def ready(safety, now, action=None, position=CENTRE, stamp=None):
    """Give the filter fresh inputs at ``now`` (s); returns the error of observe_action."""
    safety.observe_image(now)
    safety.observe_pose(now, position, stamp=now)
    if action is not None:
        return safety.observe_action(action, now if stamp is None else stamp, now)
    return None


def action(dx=0.0, dy=0.0, dz=0.0, droll=0.0, dpitch=0.0, dyaw=0.0, gripper=1.0):
    return [dx, dy, dz, droll, dpitch, dyaw, gripper]


# ---------------------------------------------------------------------------- conversion

def test_action_to_twist_scales_each_axis():
    linear, angular = action_to_twist([0.5, -1.0, 0.2, 0.1, -0.2, 0.3, 1.0],
                                      (0.1, 0.2, 0.1), (1.0, 2.0, 3.0))
    np.testing.assert_allclose(linear, [0.05, -0.2, 0.02])
    np.testing.assert_allclose(angular, [0.1, -0.4, 0.9])
    with pytest.raises(ValueError, match='action must have 7 entries'):
        action_to_twist([0.0] * 6, (1, 1, 1), (1, 1, 1))


def test_gripper_threshold_and_values():
    assert action_to_gripper(1.0, 0.04, 0.0) == 0.04
    assert action_to_gripper(0.5, 0.04, 0.0) == 0.04  # the threshold opens
    assert action_to_gripper(0.49, 0.04, 0.0) == 0.0
    assert action_to_gripper(0.2, 0.04, 0.0, threshold=0.1) == 0.04
    with pytest.raises(ValueError, match='finite'):
        action_to_gripper(math.nan, 0.04, 0.0)


def test_libero_conversion_inverts_the_controller_scale():
    a = np.array([0.5, -0.25, 0.75, 0.1, -0.05, 0.02, 0.0])
    linear, angular = action_to_twist(a, (0.1, 0.2, 0.1), (1.0, 2.0, 3.0))
    np.testing.assert_allclose(twist_to_libero(linear, angular, (0.1, 0.2, 0.1),
                                               (1.0, 2.0, 3.0)), a[:6])
    # 0.3 m/s at 0.1 m/s per unit is 3 units: LIBERO takes at most 1.
    np.testing.assert_allclose(twist_to_libero([0.3, -0.3, 0.0], [0.0, 0.0, -9.0],
                                               (0.1, 0.1, 0.1), (1.0, 1.0, 1.0)),
                               [1.0, -1.0, 0.0, 0.0, 0.0, -1.0])
    assert gripper_to_libero(0.04, 0.04, 0.0) == -1.0   # open
    assert gripper_to_libero(0.0, 0.04, 0.0) == 1.0     # closed
    assert gripper_to_libero(0.03, 0.04, 0.0) == -1.0   # nearer open
    assert gripper_to_libero(0.01, 0.04, 0.0) == 1.0


# ---------------------------------------------------------------------------- limits

def test_per_axis_speed_limits_clip_each_axis():
    safety = SafetyFilter(make_config(max_linear_speed=(0.05, 0.1, 0.1),
                                      max_angular_speed=(0.5, 0.5, 0.5)))
    ready(safety, 0.0, action(dx=1.0, dy=-1.0, dz=0.3, droll=0.2, dpitch=1.0, dyaw=-1.0))
    command = safety.tick(0.0)
    # dx 1 * 0.1 = 0.1 -> 0.05; dy -1 * 0.2 = -0.2 -> -0.1; dz 0.3 * 0.1 = 0.03 stays.
    np.testing.assert_allclose(command.linear, [0.05, -0.1, 0.03])
    # droll 0.2 * 1 = 0.2 stays; dpitch 1 * 2 = 2 -> 0.5; dyaw -1 * 3 = -3 -> -0.5.
    np.testing.assert_allclose(command.angular, [0.2, 0.5, -0.5])
    assert command.reasons == ('speed_limited',)
    assert command.gripper == 0.04
    assert safety.counters['speed_limited'] == 1


def test_norm_limits_keep_the_direction():
    safety = SafetyFilter(make_config(linear_scale=(1.0, 1.0, 1.0),
                                      angular_scale=(1.0, 1.0, 1.0),
                                      max_linear_norm=0.05, max_angular_norm=0.5))
    ready(safety, 0.0, action(dx=0.03, dy=0.04, droll=0.3, dpitch=0.4))
    command = safety.tick(0.0)  # norms exactly at the limits: unchanged
    np.testing.assert_allclose(command.linear, [0.03, 0.04, 0.0])
    np.testing.assert_allclose(command.angular, [0.3, 0.4, 0.0])
    assert command.reasons == ()
    ready(safety, 0.1, action(dx=0.06, dy=-0.08, droll=0.6, dyaw=0.8))
    command = safety.tick(0.1)  # norms 0.1 and 1.0: halved
    np.testing.assert_allclose(command.linear, [0.03, -0.04, 0.0])
    np.testing.assert_allclose(command.angular, [0.3, 0.0, 0.4])
    assert command.reasons == ('speed_limited',)


def test_lever_arm_bound_holds_while_turning_gives_way_to_translation():
    # config/deploy_arm.yaml's limits at 50 Hz: 0.05 m/s norm, 0.1 m lever, 1 m/s^2, 5 rad/s^2.
    safety = SafetyFilter(make_config(
        control_rate_hz=50.0, linear_scale=(1.0, 1.0, 1.0), angular_scale=(1.0, 1.0, 1.0),
        max_linear_speed=(0.05, 0.05, 0.05), max_linear_norm=0.05,
        max_angular_speed=(0.5, 0.5, 0.5), max_angular_norm=0.5, rotation_lever_arm=0.1,
        max_linear_accel=1.0, max_angular_accel=5.0))
    tips = []
    for i in range(60):
        now = 0.02 * i
        ready(safety, now, action(dyaw=0.5) if i < 30 else action(dx=0.05))
        command = safety.tick(now)
        tips.append(np.linalg.norm(command.linear) + 0.1 * np.linalg.norm(command.angular))
    assert max(tips) <= 0.05 + 1e-12, max(tips)
    np.testing.assert_allclose(safety.last_command.linear, [0.05, 0.0, 0.0])  # it got there


def test_rotation_lever_arm_shares_the_linear_norm_with_rotation():
    safety = SafetyFilter(make_config(linear_scale=(1.0, 1.0, 1.0),
                                      angular_scale=(1.0, 1.0, 1.0), max_linear_norm=0.1,
                                      rotation_lever_arm=0.1))
    ready(safety, 0.0, action(dx=0.05, dyaw=0.5))
    command = safety.tick(0.0)  # 0.05 + 0.1 * 0.5 = 0.1: at the limit, unchanged
    np.testing.assert_allclose(command.linear, [0.05, 0.0, 0.0])
    np.testing.assert_allclose(command.angular, [0.0, 0.0, 0.5])
    assert command.reasons == ()
    ready(safety, 0.1, action(dx=0.06, dyaw=0.8))
    command = safety.tick(0.1)  # 0.06 + 0.08 = 0.14: both scaled by 0.1 / 0.14
    np.testing.assert_allclose(command.linear, [0.06 / 1.4, 0.0, 0.0])
    np.testing.assert_allclose(command.angular, [0.0, 0.0, 0.8 / 1.4])
    assert command.reasons == ('speed_limited',)


def test_acceleration_limit_ramps_between_commands():
    # 0.5 m/s^2 and 2 rad/s^2 at 10 Hz: at most 0.05 m/s and 0.2 rad/s of change per tick.
    safety = SafetyFilter(make_config(linear_scale=(1.0, 1.0, 1.0),
                                      angular_scale=(1.0, 1.0, 1.0),
                                      max_linear_accel=0.5, max_angular_accel=2.0))
    # Both parts take one step of the same fraction: the smaller of 0.05 / 0.1 (linear)
    # and 0.2 / 0.5 (angular), 0.4, so the twist stays on the segment between them.
    ready(safety, 0.0, action(dx=0.1, dyaw=0.5))
    first = safety.tick(0.0)
    np.testing.assert_allclose(first.linear, [0.04, 0.0, 0.0])
    np.testing.assert_allclose(first.angular, [0.0, 0.0, 0.2])
    assert first.reasons == ('accel_limited',)
    ready(safety, 0.1)
    second = safety.tick(0.1)  # the rest: (0.06, 0.3); fraction min(0.05/0.06, 0.2/0.3)
    np.testing.assert_allclose(second.linear, [0.08, 0.0, 0.0])
    np.testing.assert_allclose(second.angular, [0.0, 0.0, 0.4])
    ready(safety, 0.2)
    third = safety.tick(0.2)
    np.testing.assert_allclose(third.linear, [0.1, 0.0, 0.0])
    np.testing.assert_allclose(third.angular, [0.0, 0.0, 0.5])
    assert third.reasons == ()
    # A half period allows half the change; a late tick no more than one period's.
    ready(safety, 0.25, action(dx=-0.1, dyaw=0.5), stamp=0.25)
    np.testing.assert_allclose(safety.tick(0.25).linear, [0.075, 0.0, 0.0])
    ready(safety, 0.6)
    np.testing.assert_allclose(safety.tick(0.6).linear, [0.025, 0.0, 0.0])
    # Along a diagonal the norm of the change is limited: 0.05 along (0.6, 0.8).
    diagonal = SafetyFilter(make_config(linear_scale=(1.0, 1.0, 1.0), max_linear_accel=0.5))
    ready(diagonal, 0.0, action(dx=0.06, dy=0.08))
    np.testing.assert_allclose(diagonal.tick(0.0).linear, [0.03, 0.04, 0.0])


def test_workspace_box_zeroes_motion_towards_a_wall_only():
    safety = SafetyFilter(make_config(linear_scale=(1.0, 1.0, 1.0)))
    # Horizon 0.1 s: x 0.995 + 0.1 * 0.1 = 1.005 > 1 -> zero; y 0.5 + 0.01 stays;
    # z 0.005 - 0.1 * 0.1 = -0.005 < 0 -> zero.
    ready(safety, 0.0, action(dx=0.1, dy=0.1, dz=-0.1, dyaw=0.1), position=(0.995, 0.5, 0.005))
    command = safety.tick(0.0)
    np.testing.assert_allclose(command.linear, [0.0, 0.1, 0.0])
    np.testing.assert_allclose(command.angular, [0.0, 0.0, 0.3])  # rotation is not boxed
    assert command.reasons == ('workspace_limited',)
    # 0.985 + 0.01 = 0.995 stays inside: kept. Moving away from the wall is kept too.
    ready(safety, 0.1, action(dx=0.1, dz=0.1), position=(0.985, 0.5, 0.005))
    np.testing.assert_allclose(safety.tick(0.1).linear, [0.1, 0.0, 0.1])
    # Outside the box: back inside is allowed, further out is not.
    ready(safety, 0.2, action(dx=-0.1, dy=0.1, droll=0.1), position=(1.2, 1.2, 0.5))
    command = safety.tick(0.2)
    np.testing.assert_allclose(command.linear, [-0.1, 0.0, 0.0])
    np.testing.assert_allclose(command.angular, [0.0, 0.0, 0.0])  # no turning outside
    assert safety.counters['workspace_limited'] == 2


def test_workspace_look_ahead_grows_with_the_age_of_the_pose():
    safety = SafetyFilter(make_config(linear_scale=(1.0, 1.0, 1.0)))
    ready(safety, 0.0, action(dx=0.5), position=(0.9, 0.5, 0.5))
    # Fresh pose: 0.9 + 0.5 * 0.1 = 0.95 stays inside.
    np.testing.assert_allclose(safety.tick(0.0).linear, [0.5, 0.0, 0.0])
    # Pose 0.15 s old: 0.9 + 0.5 * (0.1 + 0.15) = 1.025 would leave: zero.
    safety.observe_image(0.15)
    np.testing.assert_allclose(safety.tick(0.15).linear, [0.0, 0.0, 0.0])


def test_pose_age_is_measured_from_its_stamp_not_its_arrival():
    safety = SafetyFilter(make_config(linear_scale=(1.0, 1.0, 1.0)))
    ready(safety, 10.0, action(dx=0.5))
    assert not safety.tick(10.0).stopped
    # Arrived now, measured 10 s ago: stale, however fresh its arrival.
    safety.observe_pose(10.05, CENTRE, stamp=0.05)
    assert safety.tick(10.05).reasons == ('stale_pose',)
    # The look-ahead counts the age since the stamp: 0.9 + 0.5 * (0.1 + 0.15) = 1.025.
    safety.observe_image(10.2)
    safety.observe_pose(10.2, (0.9, 0.5, 0.5), stamp=10.05)
    command = safety.tick(10.2)
    assert command.reasons == ('workspace_limited',) and command.linear[0] == 0.0
    ready(safety, 10.25, position=(0.9, 0.5, 0.5))  # fresh: 0.95 stays inside
    assert safety.tick(10.25).linear[0] > 0.0


def test_future_pose_and_foreign_frame_are_refused():
    safety = SafetyFilter(make_config(max_clock_skew=0.05), frame_id='base')
    with pytest.raises(ValueError, match=r'pose stamped 1.000 s ahead of the clock'):
        safety.observe_pose(10.0, CENTRE, stamp=11.0, frame_id='base')
    with pytest.raises(ValueError, match="pose in frame 'tool0', not the workspace frame 'base'"):
        safety.observe_pose(10.0, CENTRE, stamp=10.0, frame_id='tool0')
    assert safety.pose_time is None and 'stale_pose' in safety.stop_reasons(10.0)
    safety.observe_pose(10.0, CENTRE, stamp=10.04, frame_id='base')  # within the skew
    assert 'stale_pose' not in safety.stop_reasons(10.0)
    assert (safety.counters['future_stamp'], safety.counters['wrong_frame_poses']) == (1, 1)


def test_rotation_is_zeroed_within_the_lever_arm_of_a_wall():
    # 0.05 m from the x wall, 0.1 m fingers: turning could swing them out.
    for x in (0.95, 1.0, 0.05):
        safety = SafetyFilter(make_config(rotation_lever_arm=0.1))
        ready(safety, 0.0, action(dyaw=0.1), position=(x, 0.5, 0.5))
        command = safety.tick(0.0)
        assert command.is_zero and command.reasons == ('workspace_limited',), x
    safety = SafetyFilter(make_config(rotation_lever_arm=0.1))
    ready(safety, 0.0, action(dyaw=0.1), position=(0.85, 0.5, 0.5))
    np.testing.assert_allclose(safety.tick(0.0).angular, [0.0, 0.0, 0.3])
    # Without a lever, on the wall itself is no longer inside.
    safety = SafetyFilter(make_config())
    ready(safety, 0.0, action(dyaw=0.1), position=(0.5, 1.0, 0.5))
    assert safety.tick(0.0).is_zero


# ---------------------------------------------------------------------------- stops

def test_reset_while_moving_sends_zero_at_once_and_ramps_up_from_zero():
    safety = SafetyFilter(make_config(linear_scale=(1.0, 1.0, 1.0), max_linear_accel=0.5))
    for i in range(3):  # 0.05, 0.1, 0.1 m/s
        ready(safety, 0.1 * i, action(dx=0.1))
        safety.tick(0.1 * i)
    assert safety.last_command.linear[0] == pytest.approx(0.1)
    ok, _ = safety.reset(0.25)
    assert ok and safety.last_command.is_zero  # the zero the node sends at once
    ready(safety, 0.26, action(dx=-0.1))
    # From the reset's zero, 0.05 s ago: 0.5 m/s^2 * 0.05 s = 0.025 m/s.
    np.testing.assert_allclose(safety.tick(0.3).linear, [-0.025, 0.0, 0.0])


def test_dead_man_estop_latches_on_silence():
    safety = SafetyFilter(make_config(estop_heartbeat_timeout=0.3))
    safety.set_estop(False, 0.0)
    ready(safety, 0.0, action(dx=0.5))
    assert not safety.tick(0.2).stopped
    ready(safety, 0.31)
    command = safety.tick(0.31)  # no e-stop message for 0.31 s: pressed
    assert command.reasons == ('estop',)
    assert safety.counters['estop_heartbeat_lost'] == 1 and safety.estop_latched
    ok, message = safety.reset(0.32)
    assert not ok and 'no e-stop message for 0.32 s' in message
    safety.set_estop(False, 0.4)
    ready(safety, 0.4)
    assert safety.tick(0.4).reasons == ('estop',)  # latched until a reset
    assert safety.reset(0.4)[0]
    # Never heard at all: pressed from the start.
    assert SafetyFilter(make_config(estop_heartbeat_timeout=0.3)).tick(0.0).reasons[0] == 'estop'


def test_non_finite_actions_stop_at_once_until_a_valid_one():
    safety = SafetyFilter(make_config(linear_scale=(1.0, 1.0, 1.0), max_linear_accel=0.5))
    ready(safety, 0.0, action(dx=0.05))
    assert safety.tick(0.0).linear[0] == pytest.approx(0.05)
    for t, bad in ((0.1, math.nan), (0.2, math.inf)):
        error = ready(safety, t, action(dx=0.05, dyaw=bad))
        assert 'non-finite action' in error
        command = safety.tick(t)
        assert command.is_zero and command.stopped  # no deceleration ramp
        assert command.reasons == ('invalid_action',)
        assert command.gripper is None  # the gripper holds
    assert safety.counters['invalid_actions'] == 2
    assert ready(safety, 0.3, action(dx=0.05)) is None
    # From zero the acceleration limit applies again: 0.5 * 0.1 = 0.05.
    np.testing.assert_allclose(safety.tick(0.3).linear, [0.05, 0.0, 0.0])


def test_watchdogs_stop_on_stale_inputs():
    safety = SafetyFilter(make_config())
    assert safety.tick(0.0).reasons == ('stale_image', 'stale_pose', 'no_action')
    ready(safety, 0.0, action(dx=0.5))
    assert not safety.tick(0.2).stopped  # pose 0.2 s old: at its limit, still fresh
    assert safety.tick(0.21).reasons == ('stale_pose',)
    safety.observe_pose(0.5, CENTRE)
    assert not safety.tick(0.5).stopped  # image 0.5 s old: at its limit
    assert safety.tick(0.51).reasons == ('stale_image',)
    ready(safety, 1.0)  # image and pose fresh; the action's image is 1.0 s old
    assert not safety.tick(1.0).stopped
    ready(safety, 1.01)
    command = safety.tick(1.01)
    assert command.reasons == ('stale_action',) and command.is_zero
    counts = safety.counters
    assert (counts['stale_image'], counts['stale_pose'], counts['stale_action'],
            counts['no_action']) == (2, 2, 1, 1)
    assert counts['ticks'] == 7 and counts['zero_ticks'] == 4 and counts['moving_ticks'] == 3


def test_future_stamped_action_is_refused_and_never_locks_out_later_ones():
    safety = SafetyFilter(make_config(linear_scale=(1.0, 1.0, 1.0), max_clock_skew=0.05))
    ready(safety, 10.0, action(dx=0.1))
    # A camera clock 30 s ahead: refused, counted, the current action stays.
    error = safety.observe_action(action(dx=0.2), 40.0, 10.0)
    assert error.startswith('refused an action for image stamp 40.000000 s: 30.000 s ahead')
    assert safety.counters['future_stamp'] == 1
    np.testing.assert_allclose(safety.tick(10.0).linear, [0.1, 0.0, 0.0])
    # The policy goes silent: the watchdog still fires on the valid action's stamp.
    ready(safety, 11.05)
    assert safety.tick(11.05).reasons == ('stale_action',)
    # Correctly stamped actions are taken again; one within the skew too.
    assert ready(safety, 11.1, action(dx=0.1)) is None
    np.testing.assert_allclose(safety.tick(11.1).linear, [0.1, 0.0, 0.0])
    assert safety.observe_action(action(dx=0.1), 11.14, 11.1) is None


def test_out_of_order_action_is_ignored():
    safety = SafetyFilter(make_config(linear_scale=(1.0, 1.0, 1.0)))
    ready(safety, 1.0, action(dx=0.1), stamp=1.0)
    assert 'older than the current' in ready(safety, 1.0, action(dx=-0.1), stamp=0.9)
    np.testing.assert_allclose(safety.tick(1.0).linear, [0.1, 0.0, 0.0])
    assert safety.counters['out_of_order_actions'] == 1


def test_estop_latches_until_reset_with_the_input_released():
    safety = SafetyFilter(make_config(linear_scale=(1.0, 1.0, 1.0)))
    ready(safety, 0.0, action(dx=0.1))
    assert not safety.tick(0.0).is_zero
    safety.set_estop(True)
    assert safety.tick(0.1).reasons == ('estop',)
    safety.set_estop(False)  # released, but latched
    ready(safety, 0.2, action(dx=0.1), stamp=0.2)
    command = safety.tick(0.2)
    assert command.is_zero and command.reasons == ('estop',)
    assert safety.state(0.2) == 'estop'
    safety.set_estop(True)
    ok, message = safety.reset(0.25)
    assert not ok and 'still engaged' in message
    assert safety.tick(0.3).reasons == ('estop',)
    safety.set_estop(False)
    ok, message = safety.reset(0.35)
    assert ok and 'e-stop cleared' in message
    ready(safety, 0.4)
    assert safety.tick(0.4).reasons == ('no_action',)  # the old action was dropped
    ready(safety, 0.5, action(dx=0.1))
    np.testing.assert_allclose(safety.tick(0.5).linear, [0.1, 0.0, 0.0])
    assert safety.state(0.5) == 'running'
    counts = safety.counters
    assert (counts['estop_events'], counts['resets_refused'], counts['resets']) == (1, 1, 1)


def test_status_reports_state_and_every_counter():
    safety = SafetyFilter(make_config())
    status = safety.status(0.0)
    assert status['state'] == 'stopped'
    assert status['stop_reasons'] == ['stale_image', 'stale_pose', 'no_action']
    assert status['dry_run'] is True
    assert sorted(status['counters']) == sorted(COUNTERS)


def test_pose_must_be_three_finite_numbers():
    safety = SafetyFilter(make_config())
    with pytest.raises(ValueError, match='3 finite numbers'):
        safety.observe_pose(0.0, [0.1, math.nan, 0.2])


# ---------------------------------------------------------------------------- config

@pytest.mark.parametrize('overrides, message', [
    ({'workspace_min': (0.0, 1.0, 0.0), 'workspace_max': (1.0, 1.0, 1.0)},
     r'workspace_min \(0.0, 1.0, 0.0\) must be below workspace_max .* axis \[1\]'),
    ({'linear_scale': (0.1, -0.1, 0.1)}, r'linear_scale \(0.1, -0.1, 0.1\) must be > 0'),
    ({'max_linear_speed': (0.1, 0.1)}, r'max_linear_speed must have 3 numbers'),
    ({'max_linear_norm': 0.0}, r'max_linear_norm \(0.0\) must be > 0'),
    ({'max_angular_norm': math.inf}, 'max_angular_norm must be finite'),
    ({'image_timeout': 0.05}, r'image_timeout \(0.05 s\) is shorter than one control period'),
    ({'gripper_open': 0.0}, r'gripper_open \(0.0\) and gripper_close \(0.0\) must differ'),
    ({'dry_run': 'no'}, "dry_run must be a bool, got 'no'"),
    ({'workspace_horizon': 0.0},
     r'workspace_horizon \(0.0 s\) is shorter than one control period \(0.1 s'),
    ({'max_clock_skew': -0.1}, r'max_clock_skew \(-0.1\) must be >= 0'),
    ({'estop_heartbeat_timeout': 0.05},
     r'estop_heartbeat_timeout \(0.05 s\) is shorter than one control period'),
    ({'rotation_lever_arm': -0.1}, r'rotation_lever_arm \(-0.1\) must be >= 0'),
])
def test_config_rejects_bad_values_quoting_them(overrides, message):
    with pytest.raises(ValueError, match=message):
        make_config(**overrides)


def test_config_help_dict_round_trip_and_unknown_keys():
    helps = ArmConfig.field_help()
    assert all(text for text in helps.values())
    config = ArmConfig(linear_scale=[0.2, 0.2, 0.2])
    assert config.linear_scale == (0.2, 0.2, 0.2)
    values = config.to_dict()
    assert values['linear_scale'] == [0.2, 0.2, 0.2] and values['dry_run'] is True
    assert ArmConfig.from_dict(values) == config
    assert config.period == pytest.approx(0.02)
    with pytest.raises(ValueError, match=r"unknown ArmConfig keys \['speed'\]"):
        ArmConfig.from_dict({'speed': 1.0})
