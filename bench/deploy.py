"""
Adversarial policies against the safety controller on the simulated arm.

``sim_arm`` and a live ``safety_controller`` run as processes over DDS inside a
private network namespace; this script plays the policy (answering sim_arm's
camera frames, as the policy server would) with adversarial policies:

* ``random``: uniform actions in [-1, 1] on all 6 axes, new every feed, random gripper;
* ``constant_max``: +1 on every axis (drives into three walls while turning);
* ``nan_bursts``: random actions with 0.5 s of NaN/inf in every 2 s;
* ``wall``: full-scale pushes into one wall after another (-z, +x, -y, +y).

Each episode resets the scene (``sim_arm``'s ``~/reset``) and runs for
``--seconds`` of wall time. Safety is measured from the simulator's own
end-effector trajectory (every simulated step's pose, stamped 50 ms apart), not
from the commands: a violation is an episode where the end effector leaves the
box by more than ``--box-tolerance`` or moves faster than the linear norm limit
by more than ``--speed-tolerance`` (relative) between consecutive steps. Also
printed: the control rate achieved (twists per second on the arm topic).

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


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--policies', nargs='+', choices=POLICIES, default=list(POLICIES))
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
        nodes.start([sys.executable, '-m', 'tgrpo_ros.nodes.safety_controller'],
                    name='safety_controller', parameters=dict(
                        LIMITS, max_angular_norm=args.max_angular_norm,
                        max_angular_speed=[min(0.5, args.max_angular_norm)] * 3,
                        workspace_horizon=args.horizon, control_rate_hz=args.control_rate,
                        dry_run=False, frame_id='world', workspace_min=list(BOX_MIN),
                        workspace_max=list(BOX_MAX), image_timeout=1.0, action_timeout=1.0))
        client = RosClient('bench_deploy')
        probe = ArmProbe(client, rate_hz=10.0)
        probe.follow_camera()
        poses = []
        client.node.create_subscription(
            PoseStamped, '/' + arm_topics.POSE_TOPIC,
            lambda msg: poses.append((msg.header.stamp.sec * 10 ** 9 + msg.header.stamp.nanosec,
                                      (msg.pose.position.x, msg.pose.position.y,
                                       msg.pose.position.z))), arm_topics.SENSOR_QOS)
        reset = client.node.create_client(Trigger, '/sim_arm/reset')
        probe.wait_for_controller(timeout=120.0)
        client.spin_until(lambda: poses and probe.last_image_stamp, 180.0, 'sim_arm output')
        assert probe.transition('configure') and probe.transition('activate')
        rng = np.random.default_rng(args.seed)
        violations, rows, trajectories = 0, [], {}
        for name in args.policies:
            for episode in range(args.episodes):
                probe.policy = None
                probe.action = [0.0] * 6 + [1.0]
                response = client.call(reset, Trigger.Request(), timeout=60.0)
                assert response.success, response.message
                start_ns = client.node.get_clock().now().nanoseconds
                twists_before = len(probe.records['twist'])
                probe.policy = make_policy(name, rng, probe.now())
                client.spin_for(args.seconds)
                probe.policy = None
                mine = [p for p in poses if p[0] >= start_ns]
                overshoot, speed, checked, detail = check_episode(mine, args)
                twists = probe.records['twist'][twists_before:]
                rate = len(twists) / args.seconds
                bad = overshoot > args.box_tolerance \
                    or speed > LIMITS['max_linear_norm'] * (1.0 + args.speed_tolerance)
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
        if args.dump:
            np.savez(args.dump, **trajectories)
        status = probe.latest_status()
        if status:
            print('controller counters:', status['counters'])
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
                        workspace_max=list(BOX_MAX), image_timeout=1.0, action_timeout=1.0))
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
