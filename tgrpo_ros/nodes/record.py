"""
tgrpo_record: record topics to a rosbag2 (MCAP) directory with rclpy and rosbags only.

No ROS install is needed beyond the PyPI rclpy wheels. Each topic is subscribed
with ``raw=True`` and its serialized CDR bytes go straight to the ``rosbags``
writer (``tgrpo_ros.bags.storage.SplitWriter``), stamped with the receive time, as ``ros2 bag
record`` does. Topics come from a profile (``tgrpo_ros.bags.profiles``, see
docs/bags.md) or from ``--topic``; each has a QoS, or ``auto`` to adapt to its
publishers as rosbag2 does (reliable only when every publisher is, transient
local only when every publisher is). A topic's type comes from the profile or,
if not given, from the graph once a publisher appears. The bag stores the QoS
the publishers offered, so ``tgrpo_replay play`` republishes with it.

Files rotate by size or duration (``--max-bag-size``, ``--max-bag-duration``);
live message counts are printed every ``--status-period`` seconds. Ctrl-C or
SIGTERM closes the bag cleanly; the writer also flushes complete chunks every
second, so a recorder killed outright leaves a bag that still reads up to the
last flush.
"""

import argparse
import datetime
import importlib
import sys
import time

from tgrpo_ros.bags import storage as bag_io
from tgrpo_ros.bags.profiles import (  # noqa: F401 - the recorder's API
    config_dirs, DURABILITY_CHOICES, load_profile, parse_topic, Profile, profile_path,
    PROFILES, QOS_CHOICES, TopicSpec)

DISCOVERY_PERIOD = 0.5  # s between looks at the graph for topics not yet subscribed
FLUSH_PERIOD = 1.0      # s between flushes of complete chunks to disk


def import_message(msgtype):
    """Return the rclpy message class of 'pkg/msg/Name'; ValueError naming what is missing."""
    package, kind, name = msgtype.split('/')
    try:
        return getattr(importlib.import_module(f'{package}.{kind}'), name)
    except (ImportError, AttributeError) as error:
        raise ValueError(f'message type {msgtype} is not installed in this Python '
                         f'({error})') from None


def _policy_name(policy):
    return getattr(policy, 'name', str(policy)).lower()


class Recorder:
    """Subscribes (raw) to the profile's topics as they appear and writes every message."""

    def __init__(self, node, profile, writer, status_period=2.0, stream=None):
        """Wire timers on ``node`` (an rclpy Node); subscriptions follow discovery."""
        self.node = node
        self.profile = profile
        self.writer = writer
        self.stream = stream or sys.stderr
        self.subscriptions = {}
        self.counts = {spec.name: 0 for spec in profile.topics}
        self.reported = set()  # (topic, reason) already logged
        self.started = time.monotonic()
        node.create_timer(DISCOVERY_PERIOD, self.discover)
        node.create_timer(FLUSH_PERIOD, self.writer.flush)
        if status_period > 0:
            node.create_timer(status_period, self.print_status)
        self.discover()

    def _once(self, topic, reason, level='warning'):
        if (topic, reason) not in self.reported:
            self.reported.add((topic, reason))
            getattr(self.node.get_logger(), level)(reason)

    def discover(self):
        """Subscribe to every wanted topic whose type and QoS can now be decided."""
        pending = [s for s in self.profile.topics if s.name not in self.subscriptions]
        if not pending:
            return
        graph = dict(self.node.get_topic_names_and_types())
        for spec in pending:
            advertised = graph.get(spec.name, [])
            if spec.msgtype and advertised and spec.msgtype not in advertised:
                self._once(spec.name, f"topic '{spec.name}' carries {advertised}, not "
                           f'{spec.msgtype} as the profile says: not recorded', 'error')
                continue
            msgtype = spec.msgtype or (advertised[0] if len(advertised) == 1 else '')
            if not msgtype:
                reason = (f"topic '{spec.name}' has several types {advertised}; give one"
                          if advertised else f"waiting for topic '{spec.name}' to appear "
                          '(its type is not in the profile)')
                self._once(spec.name, reason, 'warning' if advertised else 'info')
                continue
            publishers = self.node.get_publishers_info_by_topic(spec.name)
            if 'auto' in (spec.reliability, spec.durability) and not publishers:
                self._once(spec.name, f"waiting for a publisher on '{spec.name}' to adapt "
                           'the QoS to it', 'info')
                continue
            try:
                self._subscribe(spec, msgtype, publishers)
            except ValueError as error:
                self.subscriptions[spec.name] = None  # never again
                self._once(spec.name, f"topic '{spec.name}' is not recorded: {error}", 'error')

    def _subscribe(self, spec, msgtype, publishers):
        from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

        offered = [_policy_name(p.qos_profile.reliability) for p in publishers]
        durable = [_policy_name(p.qos_profile.durability) for p in publishers]
        reliability = spec.reliability
        if reliability == 'auto':
            reliability = 'reliable' if all(r == 'reliable' for r in offered) else 'best_effort'
        durability = spec.durability
        if durability == 'auto':
            durability = ('transient_local' if all(d == 'transient_local' for d in durable)
                          else 'volatile')
        cls = import_message(msgtype)
        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=spec.depth,
                         reliability=ReliabilityPolicy[reliability.upper()],
                         durability=DurabilityPolicy[durability.upper()])
        # The bag keeps what the publishers offered (rosbag2 does the same); without a
        # publisher yet, the subscription's own QoS, so play has something to use.
        profiles = [_offered(p.qos_profile, spec.depth) for p in publishers] or [
            bag_io.rosbags_qos(reliability, durability, spec.depth)]
        self.writer.add_topic(spec.name, msgtype, profiles)
        self.subscriptions[spec.name] = self.node.create_subscription(
            cls, spec.name, lambda data, topic=spec.name: self.message_callback(topic, data),
            qos, raw=True)
        self.node.get_logger().info(
            f'recording {spec.name} ({msgtype}, {reliability}, {durability}, depth '
            f'{spec.depth}; {len(publishers)} publisher(s))')

    def message_callback(self, topic, data):
        """Write one serialized message with its receive time (ns, system clock)."""
        self.writer.write(topic, time.time_ns(), data)
        self.counts[topic] += 1

    def status_line(self):
        """Return the live counts as one line."""
        waiting = [s.name for s in self.profile.topics if s.name not in self.subscriptions]
        counts = ', '.join(f'{t} {n}' for t, n in self.counts.items()
                           if self.subscriptions.get(t) is not None)
        line = (f'{time.monotonic() - self.started:7.1f} s  split {self.writer.split_index} '
                f'({self.writer.split_bytes / 1e6:.2f} MB)  {counts or "no topic yet"}')
        if waiting:
            line += f'  [waiting for {len(waiting)}: {", ".join(waiting[:3])}' + (
                ' ...]' if len(waiting) > 3 else ']')
        return line

    def print_status(self):
        """Print the live counts to the status stream."""
        print(f'[tgrpo_record] {self.status_line()}', file=self.stream, flush=True)


def _offered(profile, depth):
    reliability = _policy_name(profile.reliability)
    durability = _policy_name(profile.durability)
    return bag_io.rosbags_qos(
        reliability if reliability in ('reliable', 'best_effort') else 'reliable',
        durability if durability in ('volatile', 'transient_local') else 'volatile',
        int(profile.depth) or depth)


def default_output():
    """Return rosbag2's default bag name: rosbag2_YYYY_MM_DD-HH_MM_SS."""
    return datetime.datetime.now().strftime('rosbag2_%Y_%m_%d-%H_%M_%S')


def build_parser():
    """Return the command-line parser of tgrpo_record."""
    parser = argparse.ArgumentParser(
        prog='tgrpo_record', description='Record ROS 2 topics to an MCAP rosbag2 directory '
        'with rclpy and rosbags (no ROS install needed); see docs/bags.md.')
    parser.add_argument('-p', '--profile', help=f'profile: one of {list(PROFILES)} '
                        '(config/record_<name>.yaml) or a YAML file')
    parser.add_argument('-t', '--topic', action='append', default=[], metavar='NAME[:TYPE]',
                        help='a topic to record (besides the profile), e.g. '
                        '/sim0/camera/image:sensor_msgs/msg/Image')
    parser.add_argument('--qos', choices=QOS_CHOICES, default='auto',
                        help='reliability of the --topic subscriptions (default auto)')
    parser.add_argument('--durability', choices=DURABILITY_CHOICES, default='auto',
                        help='durability of the --topic subscriptions (default auto)')
    parser.add_argument('--clients', nargs='+', metavar='NS',
                        help="namespaces that '{client}' topics of the profile expand over")
    parser.add_argument('-o', '--output', help='bag directory to create '
                        '(default rosbag2_<date>-<time>)')
    parser.add_argument('-s', '--storage', choices=bag_io.STORAGES, help='storage '
                        '(default: the one of the profile, else mcap)')
    parser.add_argument('--max-bag-size', type=float, metavar='MB',
                        help='start a new file past this size (0: never)')
    parser.add_argument('--max-bag-duration', type=float, metavar='S',
                        help='start a new file past this duration in seconds (0: never)')
    parser.add_argument('--duration', type=float, default=0.0, metavar='S',
                        help='stop after this many seconds (0: at Ctrl-C or SIGTERM)')
    parser.add_argument('--status-period', type=float, default=2.0, metavar='S',
                        help='seconds between live message counts (0: none)')
    return parser


def make_profile(args):
    """Return the Profile given by the command line (profile file plus --topic)."""
    profile = (load_profile(args.profile, args.clients) if args.profile
               else Profile(topics=[]))
    known = {spec.name for spec in profile.topics}
    for text in args.topic:
        spec = parse_topic(text, args.qos, args.durability)
        if spec.name not in known:
            profile.topics.append(spec)
            known.add(spec.name)
    if not profile.topics:
        raise ValueError('nothing to record: give --profile (one of '
                         f'{list(PROFILES)} or a file) and/or --topic NAME[:TYPE]')
    if args.storage:
        profile.storage = args.storage
    if args.max_bag_size is not None:
        profile.max_bag_size_mb = args.max_bag_size
    if args.max_bag_duration is not None:
        profile.max_bag_duration_s = args.max_bag_duration
    return profile


def main(argv=None):
    """Record until Ctrl-C, SIGTERM or --duration; the bag is closed cleanly in each case."""
    import rclpy
    from rclpy.node import Node

    from tgrpo_ros.nodes.node_main import run_node

    argv = sys.argv[1:] if argv is None else list(argv)
    ros_args = []
    if '--ros-args' in argv:
        at = argv.index('--ros-args')
        argv, ros_args = argv[:at], argv[at:]
    args = build_parser().parse_args(argv)
    try:
        profile = make_profile(args)
        writer = bag_io.SplitWriter(
            args.output or default_output(), profile.storage,
            max_bytes=int(profile.max_bag_size_mb * 1e6),
            max_duration_ns=int(profile.max_bag_duration_s * 1e9))
    except (ValueError, FileExistsError) as error:
        print(f'tgrpo_record: {error}', file=sys.stderr)
        return 1
    recorder = []

    def make_node():
        node = Node('tgrpo_record')
        recorder.append(Recorder(node, profile, writer, args.status_period))
        node.get_logger().info(f'recording {len(profile.topics)} topic(s) to {writer.path} '
                               f'({profile.storage}); Ctrl-C to stop')
        return node

    def spin(node):
        deadline = time.monotonic() + args.duration if args.duration > 0 else None
        while rclpy.ok() and (deadline is None or time.monotonic() < deadline):
            rclpy.spin_once(node, timeout_sec=0.1)
        return 0

    try:
        status = run_node(make_node, 'tgrpo_record', args=['tgrpo_record'] + ros_args,
                          spin=spin)
    finally:
        writer.close()
    total = sum(writer.counts.values())
    print(f'tgrpo_record: wrote {writer.path}: {total} message(s) in {writer.split_index} '
          f'file(s): ' + ', '.join(f'{t} {n}' for t, n in writer.counts.items()),
          file=sys.stderr, flush=True)
    return status


if __name__ == '__main__':
    sys.exit(main())
