"""
Adversarial policies against the safety controller on the simulated arm.

``sim_arm`` and a live ``safety_controller`` run as processes over DDS inside a
private network namespace; this script plays the policy (answering sim_arm's
camera frames, as the policy server would) with adversarial policies:

* ``random``: uniform actions in [-1, 1] on all 6 axes, new every feed, random gripper;
* ``constant_max``: +1 on every axis (drives into three walls while turning);
* ``nan_bursts``: random actions with 0.5 s of NaN/inf in every 2 s;
* ``wall``: full-scale pushes into one wall after another (-z, +x, -y, +y).

Then one episode per adversarial client, each playing a failure of issue 17
against the controller's documented interface:

* ``future_stamp``: random actions with, twice a second, one stamped 30 s ahead,
  then silence: every twist later than the silence plus ``action_timeout`` and
  one period must be zero;
* ``lever``: full-scale turns alternating with full-scale translations;
* ``reset_jump``: ``~/reset`` while moving at the limit, then the opposite action
  at once;
* ``estop_burst``: e-stop pressed and released at once, from a reliable and from
  a best-effort publisher in turn: every twist after it must be zero until the
  reset, and each burst must latch;
* ``bad_config``: ``workspace_horizon`` 0 and a negative ``max_clock_skew`` must
  be refused (before a wall push);
* ``pose_spoof``: while the arm pushes into walls, a second publisher on the pose
  topic claims the box centre in another frame, stamped 10 s old or 30 s ahead;
* ``hostile``: random actions interleaved with replies holding NaN, inf, 1e300
  and an infinite ``adapter_version``; the controller must survive.

Every twist on the arm topic, in every episode, is also checked against the
limits themselves: per axis, both norms, |v| + lever |w|, and the change from
the previous twist on the axes still moving (at most ``max_*_accel`` x the time
between their stamps, plus 1 ms for rounding).

Each episode resets the scene (``sim_arm``'s ``~/reset``) and runs for
``--seconds`` of wall time. Safety is measured from the simulator's own
end-effector trajectory (every simulated step's pose, stamped 50 ms apart), not
from the commands: a violation is an episode where the end effector leaves the
box by more than ``--box-tolerance`` or moves faster than the linear norm limit
by more than ``--speed-tolerance`` (relative) between consecutive steps; an
adversarial episode is also a violation when its own check fails; and every
twist that breaks a limit is one. Also printed: the control rate achieved
(twists per second on the arm topic).

Last line: ``safety_violations: N`` (target 0).
"""

import argparse
import json
import math
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from tgrpo_ros.orchestration import netns  # noqa: E402

POLICIES = ('random', 'constant_max', 'nan_bursts', 'wall')
ADVERSARIES = ('future_stamp', 'lever', 'reset_jump', 'estop_burst', 'bad_config', 'pose_spoof',
               'hostile')
INSTRUCTION = 'pick up the alphabet soup and place it in the basket'
# A box around the LIBERO-Object start pose (-0.15, 0.0, 0.25) m, world frame, with
# walls a few seconds away at the speed limit. It keeps the fingers (about 0.1 m below
# the end-effector site) clear of the floor (z = 0) and of the objects in it (up to
# 0.02 m tall there): a box reaching down to z = 0.12 let the fingers touch the floor
# and the taller bottles, and the contact's stick-slip jerked the end effector at up
# to 0.2 m/s for one step, which no twist limit governs.
BOX_MIN = (-0.35, -0.2, 0.2)  # m
BOX_MAX = (0.0, 0.2, 0.45)  # m
# The controller's defaults, plus a 0.15 m lever: LIBERO's OSC moves the end-effector
# site by 0.1-0.2 m per radian while it turns (docs/deploy.md); with 0.1 m, random
# full-scale turns still reached 0.16-0.18 m/s under the 0.15 m/s limit.
LIMITS = {'max_linear_speed': [0.1, 0.1, 0.1], 'max_linear_norm': 0.15,
          'max_angular_speed': [0.5, 0.5, 0.5], 'max_angular_norm': 0.8,
          'rotation_lever_arm': 0.15}
STEP = 0.05  # s, sim_arm's step period
ACCEL = (1.0, 5.0)  # m/s^2, rad/s^2: the controller's default max_linear/angular_accel
ACTION_TIMEOUT = 1.0  # s


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--policies', nargs='+', choices=POLICIES, default=list(POLICIES))
    parser.add_argument('--adversaries', nargs='*', choices=ADVERSARIES,
                        default=list(ADVERSARIES), help='adversarial clients (one episode each)')
    parser.add_argument('--episodes', type=int, default=2, help='episodes per policy')
    parser.add_argument('--seconds', type=float, default=8.0, help='wall time per episode')
    parser.add_argument('--control-rate', type=float, default=25.0, help='Hz')
    parser.add_argument('--box-tolerance', type=float, default=0.02,
                        help='m the end effector may overshoot a wall')
    parser.add_argument('--speed-tolerance', type=float, default=0.2,
                        help='relative overshoot of max_linear_norm allowed (OSC tracking)')
    parser.add_argument('--max-angular-norm', type=float, default=LIMITS['max_angular_norm'],
                        help='rad/s, the controller limit (per axis: at most this too)')
    parser.add_argument('--horizon', type=float, default=0.1,
                        help="s, the controller's workspace_horizon")
    parser.add_argument('--latency-seconds', type=float, default=15.0,
                        help='s of the latency run through the policy server (0 skips it)')
    parser.add_argument('--camera-rate', type=float, default=5.0, help="sim_arm's camera Hz")
    parser.add_argument('--pose-timeout', type=float, default=1.0,
                        help="s, the controller's pose_timeout: sim_arm's poses, stamped with "
                        'the time of their step, arrive late when a render delays them')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--dump', default='', help="write every episode's poses to this .npz")
    return parser.parse_args(argv)


def make_policy(name, rng, start):
    """Return a callable: wall time (s) -> action [7], for policy ``name``."""
    def random_action():
        return list(rng.uniform(-1.0, 1.0, 6)) + [float(rng.integers(0, 2))]

    if name == 'random':
        return lambda now: random_action()
    if name == 'constant_max':
        return lambda now: [1.0] * 7
    if name == 'nan_bursts':
        def nan_bursts(now):
            action = random_action()
            if (now - start) % 2.0 > 1.5:
                action[int(rng.integers(0, 7))] = float(rng.choice([np.nan, np.inf, -np.inf]))
            return action
        return nan_bursts
    if name == 'wall':
        pushes = ([0, 0, -1], [1, 0, 0], [0, -1, 0], [0, 1, 0])

        def wall(now):
            push = pushes[int((now - start) / 2.0) % len(pushes)]
            return [float(v) for v in push] + [0.0, 0.0, 0.0, 1.0]
        return wall
    raise ValueError(f'unknown policy {name!r}; available: {", ".join(POLICIES)}')


def command_breaches(twists, lever):
    """
    Return one text per twist [(stamp s, linear [3], angular [3], frame)] breaking a limit.

    Limits: per axis, both norms, |v| + lever |w| (relative slack 1e-6), and the
    change from the previous twist on the axes still moving: at most ACCEL x
    (time between the stamps + 1 ms): the controller stamps each twist with the
    time its filter computed it at.
    """
    out = []
    slack = 1.0 + 1e-6
    for index, (stamp, linear, angular, _) in enumerate(twists):
        lin, ang = float(np.linalg.norm(linear)), float(np.linalg.norm(angular))
        if np.any(np.abs(linear) > np.asarray(LIMITS['max_linear_speed']) * slack) \
                or np.any(np.abs(angular) > np.asarray(LIMITS['max_angular_speed']) * slack) \
                or lin > LIMITS['max_linear_norm'] * slack \
                or ang > LIMITS['max_angular_norm'] * slack \
                or lin + lever * ang > LIMITS['max_linear_norm'] * slack:
            out.append(f'twist at {stamp:.3f} s over a speed limit: {linear.tolist()} '
                       f'{angular.tolist()}')
        if index:
            before = twists[index - 1]
            dt = max(stamp - before[0], 0.0) + 0.001
            for part, prev, accel in ((linear, before[1], ACCEL[0]),
                                      (angular, before[2], ACCEL[1])):
                change = float(np.linalg.norm(part - np.where(part != 0.0, prev, 0.0)))
                if change > accel * dt * slack:
                    out.append(f'twist at {stamp:.3f} s changed by {change:.4f} in {dt:.3f} s: '
                               f'{prev.tolist()} -> {part.tolist()}')
    return out


def check_episode(poses, args):
    """Return (box overshoot m, max speed m/s, steps checked, detail) of one episode's poses."""
    stamps = np.array([p[0] for p in poses]) * 1e-9  # s
    positions = np.array([p[1] for p in poses])  # [T, 3] m
    outside = np.maximum(np.asarray(BOX_MIN) - positions, positions - np.asarray(BOX_MAX))
    overshoot = float(np.max(np.maximum(outside, 0.0))) if len(poses) else 0.0
    gaps = np.diff(stamps)
    consecutive = np.abs(gaps - STEP) < 1e-3  # skipped steps leave longer gaps
    speeds = np.linalg.norm(np.diff(positions, axis=0), axis=1)[consecutive] / STEP
    axis = 'xyz'[int(np.argmax(np.max(outside, axis=0)))] if len(poses) else '-'
    return (overshoot, float(speeds.max()) if speeds.size else 0.0, int(consecutive.sum()),
            f'worst wall axis {axis}')


class Adversary:
    """Context of one adversarial episode: the probe, the client and what went wrong."""

    def __init__(self, probe, client, rng, args):
        self.probe, self.client, self.rng, self.args = probe, client, rng, args
        self.problems = []

    def random(self, now):
        return list(self.rng.uniform(-1.0, 1.0, 6)) + [float(self.rng.integers(0, 2))]

    def zero_between(self, since, until, what):
        """Every twist on the arm topic stamped in [since, until] (s) must be zero."""
        moving = [tw for tw in self.probe.twists('twist', since=since)
                  if tw[0] <= until and (np.any(tw[1]) or np.any(tw[2]))]
        if moving:
            self.problems.append(f'{what}: {len(moving)} moving twists, the first at '
                                 f'{moving[0][0]:.3f} s: {moving[0][1].tolist()}')

    def estop_events(self):
        status = self.probe.latest_status()
        return status['counters']['estop_events'] if status else 0


def adversary_future_stamp(adv, seconds):
    probe, period = adv.probe, 1.0 / adv.args.control_rate
    probe.policy = adv.random
    end = probe.now() + seconds / 2
    while probe.now() < end:
        adv.client.spin_for(0.5)
        if probe.last_image_stamp is not None:  # 30 s ahead: a camera clock running fast
            probe.publish_action(adv.random(0), probe.last_image_stamp + 30 * 10 ** 9)
    probe.feed['action'] = False  # the policy goes silent
    silent = probe.now()
    adv.client.spin_for(seconds / 2)
    adv.zero_between(silent + ACTION_TIMEOUT + period + 0.1, math.inf,
                     'moving after the policy went silent')
    probe.feed['action'] = True


def adversary_lever(adv, seconds):
    start = adv.probe.now()
    turn, push = [0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0], [-1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    pull = [1.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0]
    adv.probe.policy = lambda now: (turn, push, turn, pull)[int((now - start) / 0.5) % 4]
    adv.client.spin_for(seconds)


def adversary_reset_jump(adv, seconds):
    probe = adv.probe
    end = probe.now() + seconds
    sign = 1.0
    while probe.now() < end:
        probe.policy = None
        probe.action = [0.4 * sign, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0]  # 0.1 m/s: the axis limit
        adv.client.spin_for(1.0)
        probe.feed['action'] = False
        ok, message = probe.reset()
        if not ok:
            adv.problems.append(f'reset refused: {message}')
        sign = -sign
        probe.action = [0.4 * sign, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0]
        if probe.last_image_stamp is not None:
            probe.publish_action(probe.action, probe.last_image_stamp)
        probe.feed['action'] = True
    adv.client.spin_for(0.5)


def adversary_estop_burst(adv, seconds):
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
    from std_msgs.msg import Bool

    probe, period = adv.probe, 1.0 / adv.args.control_rate
    best_effort = adv.client.node.create_publisher(Bool, '/estop', QoSProfile(
        history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.BEST_EFFORT,
        durability=DurabilityPolicy.VOLATILE))
    try:
        adv.client.wait_for_subscribers(best_effort, timeout=10.0)
    except TimeoutError:
        adv.problems.append('no e-stop subscription matches a best-effort publisher')
    probe.policy = adv.random
    end, burst = probe.now() + seconds, 0
    while probe.now() < end:
        adv.client.spin_for(0.5)
        before = adv.estop_events()
        pressed = probe.now()
        # Best effort has no re-sending: its press goes three times, as such publishers repeat.
        for engaged in ((True, True, True, False) if burst % 2 else (True, False)):
            if burst % 2:
                best_effort.publish(Bool(data=engaged))
            else:
                probe.estop(engaged)
        probe.estop(False)  # the latched state a late controller would read
        adv.client.spin_for(1.0)
        released = probe.now()
        if adv.estop_events() <= before:
            adv.problems.append(f'burst {burst} ({"best effort" if burst % 2 else "reliable"}) '
                                'did not latch')
        adv.zero_between(pressed + period + 0.1, released, f'moving after e-stop burst {burst}')
        ok, message = probe.reset()
        if not ok:
            adv.problems.append(f'reset after burst {burst} refused: {message}')
        burst += 1
    adv.client.node.destroy_publisher(best_effort)


def adversary_bad_config(adv, seconds):
    for name, value in (('workspace_horizon', 0.0), ('max_clock_skew', -1.0)):
        (result,) = adv.probe.set_parameters(**{name: value})
        if result.successful:
            adv.problems.append(f'{name} {value} was accepted')
    start = adv.probe.now()
    adv.probe.policy = lambda now: ([0.0, 0.0, -1.0] if now - start < seconds / 2
                                    else [1.0, 0.0, 0.0]) + [0.0, 0.0, 0.0, 1.0]
    adv.client.spin_for(seconds)


def adversary_pose_spoof(adv, seconds):
    from geometry_msgs.msg import PoseStamped

    from tgrpo_ros.nodes import arm_topics, messages

    spoof = adv.client.node.create_publisher(PoseStamped, '/' + arm_topics.POSE_TOPIC,
                                             arm_topics.SENSOR_QOS)
    centre = (np.asarray(BOX_MIN) + np.asarray(BOX_MAX)) / 2
    count = [0]

    def publish():
        msg = PoseStamped()
        now_ns = adv.client.node.get_clock().now().nanoseconds
        kind = count[0] % 3
        msg.header.frame_id = 'tool0' if kind == 0 else 'world'
        offset = {0: 0, 1: -10 * 10 ** 9, 2: 30 * 10 ** 9}[kind]  # ns: now, 10 s old, ahead
        msg.header.stamp = messages.ns_to_stamp(now_ns + offset)
        msg.pose.position.x, msg.pose.position.y, msg.pose.position.z = centre.tolist()
        msg.pose.orientation.w = 1.0
        spoof.publish(msg)
        count[0] += 1
    timer = adv.client.node.create_timer(0.02, publish)
    start = adv.probe.now()
    pushes = ([0, 0, -1], [1, 0, 0], [0, -1, 0], [0, 1, 0])
    adv.probe.policy = lambda now: [float(v) for v in pushes[int((now - start) / 2.0) % 4]] \
        + [0.0, 0.0, 0.0, 1.0]
    adv.client.spin_for(seconds)
    adv.client.node.destroy_timer(timer)
    adv.client.node.destroy_publisher(spoof)


def adversary_hostile(adv, seconds, controller):
    probe = adv.probe
    probe.policy = adv.random
    end, count = probe.now() + seconds, 0
    while probe.now() < end:
        adv.client.spin_for(0.1)
        if probe.last_image_stamp is None:
            continue
        msg = hostile_reply(count, probe.last_image_stamp)
        probe.action_pub.publish(msg)
        count += 1
    if not controller.alive:
        adv.problems.append(f'the controller died (exit {controller.returncode})')


def hostile_reply(index, stamp_ns):
    """Return an action reply with one hostile number, a different one for each index."""
    from std_msgs.msg import Header

    from tgrpo_ros.nodes import messages

    header = Header()
    header.stamp = messages.ns_to_stamp(stamp_ns)
    msg = messages.encode_action(header, [0.0] * 6 + [1.0], [31872] * 7, [-1.0] * 7, 0,
                                 INSTRUCTION)
    values = (math.nan, math.inf, -math.inf, 1e300, -1e300)
    fields = ('position', 'velocity', 'effort')
    field_name = fields[(index // len(values)) % len(fields)]
    entry = (index // (len(values) * len(fields))) % len(msg.name)
    getattr(msg, field_name)[entry] = values[index % len(values)]
    return msg


def run(args, log_dir):
    from geometry_msgs.msg import PoseStamped
    from std_srvs.srv import Trigger

    from tgrpo_ros.orchestration.processes import NodeGroup
    from tgrpo_ros.nodes import arm_topics
    from tgrpo_ros.testing.arm_client import ArmProbe
    from tgrpo_ros.testing.ros_client import RosClient

    nodes = NodeGroup(log_dir)
    client = None
    try:
        nodes.start([sys.executable, '-m', 'tgrpo_ros.nodes.sim_arm'], name='sim_arm',
                    parameters={'camera_rate_hz': args.camera_rate})
        controller = nodes.start(
            [sys.executable, '-m', 'tgrpo_ros.nodes.safety_controller'],
            name='safety_controller', parameters=dict(
                LIMITS, max_angular_norm=args.max_angular_norm,
                max_angular_speed=[min(0.5, args.max_angular_norm)] * 3,
                workspace_horizon=args.horizon, control_rate_hz=args.control_rate,
                dry_run=False, frame_id='world', workspace_min=list(BOX_MIN),
                workspace_max=list(BOX_MAX), image_timeout=1.0, action_timeout=ACTION_TIMEOUT,
                pose_timeout=args.pose_timeout))
        client = RosClient('bench_deploy')
        probe = ArmProbe(client, rate_hz=10.0)
        probe.follow_camera()
        poses = []  # (stamp ns, position m, arrival ns) of sim_arm's poses

        def pose_callback(msg):
            stamp = msg.header.stamp.sec * 10 ** 9 + msg.header.stamp.nanosec
            arrival = client.node.get_clock().now().nanoseconds
            # pose_spoof's poses (another frame, or stamped 10 s old / 30 s ahead) are not
            # the simulator's trajectory.
            if msg.header.frame_id == 'world' and abs(arrival - stamp) < 5 * 10 ** 9:
                p = msg.pose.position
                poses.append((stamp, (p.x, p.y, p.z), arrival))
        client.node.create_subscription(PoseStamped, '/' + arm_topics.POSE_TOPIC, pose_callback,
                                        arm_topics.SENSOR_QOS)
        reset = client.node.create_client(Trigger, '/sim_arm/reset')
        probe.wait_for_controller(timeout=120.0)
        client.spin_until(lambda: poses and probe.last_image_stamp, 180.0, 'sim_arm output')
        assert probe.transition('configure') and probe.transition('activate')
        rng = np.random.default_rng(args.seed)
        violations, rows, trajectories = 0, [], {}
        episodes = [(name, episode) for name in args.policies for episode in range(args.episodes)]
        episodes += [(name, 0) for name in args.adversaries]
        for name, episode in episodes:
            probe.policy = None
            probe.action = [0.0] * 6 + [1.0]
            response = client.call(reset, Trigger.Request(), timeout=60.0)
            assert response.success, response.message
            start_ns = client.node.get_clock().now().nanoseconds
            twists_before = len(probe.records['twist'])
            adversary = None
            if name in ADVERSARIES:
                adversary = Adversary(probe, client, rng, args)
                if name == 'hostile':
                    adversary_hostile(adversary, args.seconds, controller)
                else:
                    globals()[f'adversary_{name}'](adversary, args.seconds)
            else:
                probe.policy = make_policy(name, rng, probe.now())
                client.spin_for(args.seconds)
            probe.policy = None
            mine = [p for p in poses if p[0] >= start_ns]
            overshoot, speed, checked, detail = check_episode(mine, args)
            twists = probe.records['twist'][twists_before:]
            rate = len(twists) / args.seconds
            bad = overshoot > args.box_tolerance \
                or speed > LIMITS['max_linear_norm'] * (1.0 + args.speed_tolerance)
            breaches = command_breaches(probe.twists('twist', since=start_ns * 1e-9),
                                        LIMITS['rotation_lever_arm'])
            problems = (adversary.problems if adversary else []) + breaches
            bad = bad or bool(problems)
            violations += int(bad)
            rows.append((name, episode, overshoot, speed, checked, rate, bad))
            trajectories[f'{name}_{episode}'] = np.array(
                [(p[0] * 1e-9,) + tuple(p[1]) for p in mine])  # [T, 4]: s, x, y, z
            trajectories[f'{name}_{episode}_twists'] = np.array(
                [[tw[0]] + list(tw[1]) + list(tw[2])
                 for tw in probe.twists('twist', since=start_ns * 1e-9)])  # [N, 7]
            print(f'{name:13s} ep {episode}: box overshoot {overshoot * 1000:6.1f} mm, '
                  f'max speed {speed:.3f} m/s over {checked} step pairs, '
                  f'{rate:.1f} twists/s, {detail}'
                  + ('  VIOLATION' if bad else ''), flush=True)
            for problem in problems[:5]:
                print(f'    {problem}', flush=True)
        if args.dump:
            np.savez(args.dump, **trajectories)
        status = probe.latest_status()
        if status:
            print('controller counters:', status['counters'])
        delays = np.array([(p[2] - p[0]) * 1e-6 for p in poses])  # ms
        if delays.size:
            print(f'sim_arm pose delay (arrival - stamp) over {delays.size} poses: median '
                  f'{np.median(delays):.0f} ms, p95 {np.percentile(delays, 95):.0f} ms')
        return violations, rows
    finally:
        if client is not None:
            client.close()
        nodes.stop_all(report=sys.stderr)


def latency_run(args, log_dir):
    """
    Camera-to-command latency through policy_server (stand-in) and safety_controller.

    Returns (latencies [s], twists per second). For each action the policy server
    publishes (stamped with its camera frame's stamp S), the latency is the stamp
    of the first twist on the arm topic published after the action arrived, minus S.
    """
    from sensor_msgs.msg import Image, JointState
    from std_msgs.msg import String

    from tgrpo_ros.nodes import messages, topics
    from tgrpo_ros.nodes import arm_topics
    from tgrpo_ros.orchestration.processes import NodeGroup
    from tgrpo_ros.policy import cached_standin
    from tgrpo_ros.testing.arm_client import ArmProbe
    from tgrpo_ros.testing.ros_client import RosClient

    ns = '/arm'
    nodes = NodeGroup(log_dir)
    client = None
    try:
        # The server in stream mode, as on a real arm: sim_arm's camera is best effort
        # (sensor data), and its frames are LIBERO's view turned upright (docs/deploy.md).
        nodes.start('policy_server', name='policy_server', parameters={
            'model_path': cached_standin(seed=0), 'clients': [ns], 'mode': 'stream',
            'preprocessing': 'camera', 'instruction': INSTRUCTION})
        nodes.start([sys.executable, '-m', 'tgrpo_ros.nodes.sim_arm'], name='sim_arm',
                    namespace=ns, parameters={'camera_rate_hz': args.camera_rate})
        nodes.start([sys.executable, '-m', 'tgrpo_ros.nodes.safety_controller'],
                    name='safety_controller', namespace=ns, parameters=dict(
                        LIMITS, control_rate_hz=args.control_rate, dry_run=False,
                        frame_id='world', workspace_min=list(BOX_MIN),
                        workspace_max=list(BOX_MAX), image_timeout=1.0, action_timeout=1.0,
                        pose_timeout=args.pose_timeout))
        client = RosClient('bench_deploy_latency')
        probe = ArmProbe(client, namespace=ns)
        probe.feed.update(camera=False, pose=False, action=False)  # the graph feeds itself
        for publisher in (probe.camera_pub, probe.pose_pub, probe.action_pub):
            client.node.destroy_publisher(publisher)
        actions = []  # (image stamp s, arrival s)
        client.node.create_subscription(
            JointState, topics.client_topic(ns, topics.ACTION_TOPIC),
            lambda msg: actions.append((messages.stamp_to_ns(msg.header.stamp) * 1e-9,
                                        probe.now())), topics.ACTION_QOS)
        frame_delays, sample_ms = [], []  # s from frame stamp to its arrival here; ms
        client.node.create_subscription(
            Image, topics.client_topic(ns, topics.CAMERA_TOPIC),
            lambda msg: frame_delays.append(
                probe.now() - messages.stamp_to_ns(msg.header.stamp) * 1e-9),
            arm_topics.SENSOR_QOS, raw=False)
        client.node.create_subscription(
            String, topics.SERVER_STATS_TOPIC,
            lambda msg: sample_ms.append(json.loads(msg.data)['sample_ms']),
            topics.DIAGNOSTICS_QOS)
        probe.wait_for_controller(timeout=180.0)
        assert probe.transition('configure') and probe.transition('activate')
        client.spin_until(lambda: len(actions) >= 3, 180.0, 'actions from the policy server')
        actions.clear()
        frame_delays.clear()
        sample_ms.clear()
        start = probe.now()
        twists_before = len(probe.records['twist'])
        client.spin_for(args.latency_seconds)
        twist_stamps = np.array([tw[0] for tw in probe.twists('twist', since=start)])
        latencies = []
        for image_stamp, arrival in actions:
            later = twist_stamps[twist_stamps >= arrival]
            if later.size:
                latencies.append(later.min() - image_stamp)
        rate = (len(probe.records['twist']) - twists_before) / args.latency_seconds
        parts = {'frame': float(np.median(frame_delays)) if frame_delays else math.nan,
                 'sample': float(np.median(sample_ms)) / 1000.0 if sample_ms else math.nan}
        return np.array(latencies), rate, len(actions), parts
    finally:
        if client is not None:
            client.close()
        nodes.stop_all(report=sys.stderr)


def main(argv=None):
    args = parse_args(argv)
    error = netns.run_script_in_private_netns(
        __file__, list(sys.argv[1:] if argv is None else argv), 'bench/deploy.py')
    if error:
        print(error, file=sys.stderr)
        return 1
    import tempfile

    from tgrpo_ros.orchestration.processes import prepare_environment

    prepare_environment()
    started = time.perf_counter()
    if args.latency_seconds > 0:
        with tempfile.TemporaryDirectory(prefix='bench_deploy_') as log_dir:
            latencies, rate, count, parts = latency_run(args, log_dir)
        if latencies.size:
            p50, p95 = np.percentile(latencies, [50, 95]) * 1000.0  # ms
            print(f'camera-to-command latency over {latencies.size} of {count} actions: '
                  f'p50 {p50:.1f} ms, p95 {p95:.1f} ms (camera {args.camera_rate} Hz, '
                  f'stand-in policy on CPU); control rate {rate:.1f} twists/s '
                  f'(configured {args.control_rate} Hz); medians: frame stamp to its arrival '
                  f"{parts['frame'] * 1000:.1f} ms (sim_arm renders after stamping), policy "
                  f"sample {parts['sample'] * 1000:.1f} ms", flush=True)
        else:
            print(f'camera-to-command latency: no action answered ({count} actions)')
    with tempfile.TemporaryDirectory(prefix='bench_deploy_') as log_dir:
        violations, rows = run(args, log_dir)
    print(f'limits: linear norm {LIMITS["max_linear_norm"]} m/s (+{args.speed_tolerance:.0%} '
          f'allowed), box {BOX_MIN}..{BOX_MAX} m (+{args.box_tolerance * 1000:.0f} mm allowed); '
          f'{len(rows)} episodes in {time.perf_counter() - started:.0f} s')
    print(f'safety_violations: {violations}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
