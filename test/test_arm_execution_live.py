"""
Actions executed once, in real time: scripted policy double -> safety_controller -> sim_arm.

The double (this test, not the stand-in) publishes a known displacement as
policy replies at 1, 5 and 20 decisions per second, and in chunks of K = 4;
the end effector's travel per executed action, measured from sim_arm's poses,
must equal action x linear_scale x action_period at every rate. Waiting is on
events (the controller's counters, a count of poses), never on the clock.
"""

import sys

import numpy as np
import pytest

from tgrpo_ros.testing.arm_client import ArmProbe

CONTROLLER = [sys.executable, '-m', 'tgrpo_ros.nodes.safety_controller']
SIM_ARM = [sys.executable, '-m', 'tgrpo_ros.nodes.sim_arm']
SCALE = 0.25  # m/s per unit of action (ArmConfig's and sim_arm's default linear_scale)
PERIOD = 0.05  # s, action_period (LIBERO's 20 Hz)
# Measured here on LIBERO-Object's Panda: one 20 Hz step of action a, then zeros,
# settles at 0.93-1.01 x a x 0.25 m/s x 0.05 s; 20 steps in a row move 0.90-1.0 x
# as much per step. The tolerance covers that and the tick jitter of a loaded machine.
TOLERANCE = 0.25  # relative
# Limits that pass the actions unchanged (bench/deploy_success.py's permissive set).
PERMISSIVE = {'max_linear_speed': [0.25, 0.25, 0.25], 'max_linear_norm': 0.5,
              'max_angular_speed': [2.0, 2.0, 2.0], 'max_angular_norm': 3.5,
              'rotation_lever_arm': 0.0, 'max_linear_accel': 100.0,
              'max_angular_accel': 1000.0, 'workspace_min': [-1.0, -1.0, -0.2],
              'workspace_max': [1.0, 1.0, 1.5]}


class ScriptedPolicy:
    """Publishes a fixed reply (one action or a chunk) at a given rate, each with a new stamp."""

    def __init__(self, ros_client, probe, chunk, rate_hz, count):
        """Send ``count`` replies of ``chunk`` [K, 7], ``rate_hz`` per second."""
        self.probe, self.chunk, self.sent, self.count = probe, np.asarray(chunk), 0, count
        self.stamps = []  # s, of each reply sent
        self.timer = ros_client.node.create_timer(1.0 / rate_hz, self.send)

    def send(self):
        """Answer 'now' (a fresh stamp per decision, as the server answers new frames)."""
        if self.sent >= self.count:
            self.timer.cancel()
            return
        from std_msgs.msg import Header

        from tgrpo_ros.nodes import messages

        header = Header()
        header.stamp = self.probe.ros.node.get_clock().now().to_msg()
        self.stamps.append(messages.stamp_to_ns(header.stamp) * 1e-9)
        tokens = np.full(self.chunk.shape, 31872)
        self.probe.action_pub.publish(messages.encode_action(
            header, self.chunk, tokens, -np.ones(self.chunk.shape), 0, 'test'))
        self.sent += 1


@pytest.mark.ros
@pytest.mark.slow
@pytest.mark.parametrize('mode', ['once'])
def test_travel_per_action_equals_its_displacement_at_1_5_and_20_decisions_per_second(
        ros_nodes, ros_client, mode):
    from geometry_msgs.msg import PoseStamped

    from rclpy.qos import QoSProfile, ReliabilityPolicy

    from tgrpo_ros.nodes import arm_topics, messages

    # sim_arm publishes poses best effort, in bursts when it catches up: keep them all.
    BEST_EFFORT_DEEP = QoSProfile(depth=10000, reliability=ReliabilityPolicy.BEST_EFFORT)

    # sim_arm may fall seconds behind the wall clock on a loaded machine: it catches up
    # without skipping (each step takes the commands stamped in the time it stands for),
    # and the controller's camera watchdog is fed by the probe, so the controller runs
    # in real time whatever the simulator's lag.
    ros_nodes.start(SIM_ARM, name='sim_arm', parameters={'camera_rate_hz': 0.5,
                                                         'max_catch_up': 1000000})
    parameters = dict(PERMISSIVE, control_rate_hz=25.0, dry_run=False, frame_id='world',
                      image_timeout=2.0, pose_timeout=1000.0, action_timeout=2.0,
                      action_execution=mode, action_period=PERIOD)
    ros_nodes.start(CONTROLLER, name='safety_controller', parameters=parameters)
    probe = ArmProbe(ros_client)
    probe.wait_for_controller()
    probe.feed['pose'] = False  # sim_arm's poses
    probe.feed['action'] = False  # the scripted policy below answers instead
    poses = []
    ros_client.node.create_subscription(
        PoseStamped, '/' + arm_topics.POSE_TOPIC,
        lambda msg: poses.append((messages.stamp_to_ns(msg.header.stamp) * 1e-9,
                                  msg.pose.position.z)), BEST_EFFORT_DEEP)
    ros_client.spin_until(lambda: poses, 120.0, 'poses from sim_arm')
    assert probe.transition('configure') and probe.transition('activate')

    def counters():
        status = probe.latest_status()
        return status['counters'] if status else None

    ros_client.spin_until(counters, 30.0, 'a controller status')
    from std_srvs.srv import Trigger
    reset = ros_client.node.create_client(Trigger, '/sim_arm/reset')
    results = []
    # (decisions per second, replies, chunk): +z, -z, +z, then chunks of 4 along -z.
    for rate, replies, chunk in (
            (1.0, 6, [[0.0, 0.0, 0.8, 0.0, 0.0, 0.0, 1.0]]),
            (5.0, 10, [[0.0, 0.0, -0.8, 0.0, 0.0, 0.0, 1.0]]),
            (20.0, 20, [[0.0, 0.0, 0.8, 0.0, 0.0, 0.0, 1.0]]),
            (1.0, 3, [[0.0, 0.0, -0.8, 0.0, 0.0, 0.0, 1.0]] * 4)):
        chunk = np.array(chunk)
        response = ros_client.call(reset, Trigger.Request(), timeout=300.0)  # the same start
        assert response.success, response.message
        settled = probe.now() + 0.5  # the arm settles on its init state for 10 steps
        ros_client.spin_until(lambda: poses[-1][0] >= settled, 300.0, 'sim_arm after reset')
        before = dict(counters())
        first = probe.now()
        policy = ScriptedPolicy(ros_client, probe, chunk, rate, replies)

        def delta(name):
            return counters()[name] - before[name]

        def done():
            # Every reply queued or skipped (its stamp came before the last action's
            # motion could show: observation_delay), every queued action run or replaced.
            return policy.sent == replies \
                and delta('chunks') + delta('early_frames') == replies \
                and delta('executed_actions') + delta('replaced_actions') \
                == delta('chunks') * len(chunk)
        try:
            ros_client.spin_until(done, 120.0, f'{replies} replies at {rate}/s executed')
        except TimeoutError as error:
            raise TimeoutError(f'{error}: sent {policy.sent}, counters {counters()}') from None
        executed = delta('executed_actions')
        # A reply stamped within action_period + observation_delay (0.05 + 0.05 s) of
        # the one before answers a frame that could not show that one's action: skipped.
        if np.any(np.diff(policy.stamps) < PERIOD + 0.05):
            assert delta('early_frames') > 0, (np.diff(policy.stamps), counters())
        # sim_arm may run seconds behind on a loaded machine: its poses carry the time
        # they stand for. From the last pose before the first reply to one a second
        # (20 steps) after the last action ended, when the arm has settled.
        last = probe.now() + 1.0
        ros_client.spin_until(lambda: poses[-1][0] >= last, 300.0, 'sim_arm settled')
        start = [z for stamp, z in poses if stamp < first][-1]  # arrival order: this reset
        end = next(z for stamp, z in poses if stamp >= last)
        travel = end - start  # m along z
        expected = chunk[0, 2] * SCALE * PERIOD  # m per action
        results.append((rate, len(chunk), executed, travel / executed, expected))
    print('travel per executed action (decisions/s, K, executed, m, expected m):', results)
    for rate, size, executed, per_action, expected in results:
        assert executed >= 1
        assert abs(per_action - expected) <= TOLERANCE * abs(expected), (
            f'{rate} decisions/s, chunks of {size}: {per_action * 1000:.2f} mm per executed '
            f'action, expected {expected * 1000:.2f} mm; all: {results}')
