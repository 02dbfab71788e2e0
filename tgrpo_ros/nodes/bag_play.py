"""
``tgrpo_replay play``: republish a recorded camera and instruction stream.

The recorded CDR bytes are published as they are (rclpy's raw publish), so headers
and stamps are the recorded ones, with each topic's recorded QoS (the first
profile its publishers offered; the history depth falls back to rosbag2's 10 when
the recording has none). Timing follows the receive times in the bag, divided by
``--rate``; ``--start-offset`` skips the first seconds, ``--loop`` starts again
at the end. Before the first message the player waits (``--wait-for-subscribers``)
until every topic it plays has a subscriber, so a graph that is still starting
does not miss the beginning.

``--clock [HZ]`` also publishes the bag's time on ``/clock`` (rosgraph_msgs/Clock,
best effort, as ``ros2 bag play --clock`` does; 40 Hz when no rate is given, and
once right before every played message), for nodes run with ``use_sim_time``.
The recorded stamps are the recording's clock: a node that compares them with
its own clock (the safety controller's ``action_timeout``) needs the bag's time
to act on them as it did on the arm (docs/bags.md). With ``--loop`` the clock
jumps back at each pass.
"""

import sys
import time

from tgrpo_ros.bags import storage as bag_io
from tgrpo_ros.nodes import topics
from tgrpo_ros.nodes.record import import_message

STREAM_SUFFIXES = ('/' + topics.CAMERA_TOPIC, '/' + topics.INSTRUCTION_TOPIC)
CLOCK_TOPIC = '/clock'
DEFAULT_CLOCK_HZ = 40.0  # ros2 bag play --clock's default


def default_topics(bag):
    """Return the camera and instruction topics of the bag (``<ns>/camera/image`` ...)."""
    return sorted(name for name in bag.topics if name.endswith(STREAM_SUFFIXES))


def parse_remaps(items):
    """Return {from: to} of 'FROM:=TO' items; ValueError naming a malformed one."""
    remaps = {}
    for item in items or []:
        source, sep, target = item.partition(':=')
        if not sep or not source.startswith('/') or not target.startswith('/'):
            raise ValueError(f"remap '{item}' must read /from/topic:=/to/topic")
        remaps[source] = target
    return remaps


def qos_of(info):
    """Return the rclpy QoSProfile to republish ``info`` (a storage.TopicInfo) with."""
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

    reliability, durability, depth = 'reliable', 'volatile', bag_io.DEFAULT_DEPTH
    if info.qos:
        reliability, durability, depth = bag_io.qos_names(info.qos[0])
    if reliability not in ('reliable', 'best_effort'):
        reliability = 'reliable'
    if durability not in ('volatile', 'transient_local'):
        durability = 'volatile'
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=max(int(depth), 1),
                      reliability=ReliabilityPolicy[reliability.upper()],
                      durability=DurabilityPolicy[durability.upper()])


def add_arguments(parser):
    """Add the arguments of ``tgrpo_replay play`` to ``parser``."""
    parser.add_argument('bag', help='rosbag2 directory (or one .mcap file)')
    parser.add_argument('--topics', nargs='+', metavar='TOPIC', help='topics to play '
                        '(default: every <ns>/camera/image and <ns>/instruction)')
    parser.add_argument('--rate', type=float, default=1.0,
                        help='time factor: 2 plays twice as fast (default 1.0)')
    parser.add_argument('--start-offset', type=float, default=0.0, metavar='S',
                        help='skip the first S seconds of the recording')
    parser.add_argument('--loop', action='store_true', help='start again at the end')
    parser.add_argument('--remap', nargs='+', metavar='FROM:=TO', default=[],
                        help='publish a topic under another name')
    parser.add_argument('--wait-for-subscribers', type=float, default=10.0, metavar='S',
                        help='wait up to S seconds for a subscriber on every played topic '
                        '(default 10; 0: do not wait)')
    parser.add_argument('--clock', type=float, nargs='?', const=DEFAULT_CLOCK_HZ, default=0.0,
                        metavar='HZ', help="publish the bag's time on /clock at HZ "
                        f'(default {DEFAULT_CLOCK_HZ:g} when given without a value) for nodes '
                        'with use_sim_time:=true')


class Player:
    """Publishes the selected topics of a bag in recorded time order."""

    def __init__(self, node, bag, names, remaps, stream=None, clock_hz=0.0):
        """Create one publisher per topic, with its recorded type and QoS (and /clock)."""
        self.node, self.bag = node, bag
        self.stream = stream or sys.stdout
        self.origin = None  # (bag time ns, monotonic s) of the pass being played
        self.rate = 1.0
        self.clock_pub = None
        if clock_hz > 0:
            from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
            from rosgraph_msgs.msg import Clock

            self.clock_pub = node.create_publisher(
                Clock, CLOCK_TOPIC, QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                                               reliability=ReliabilityPolicy.BEST_EFFORT))
            node.create_timer(1.0 / clock_hz, self.publish_clock)
        self.publishers = {}
        for name in names:
            info = bag.topics[name]
            try:
                cls = import_message(info.msgtype)
            except ValueError as error:  # that topic is skipped, the others play
                bag.problems.append(f"topic '{name}' is not played: {error}")
                continue
            self.publishers[name] = node.create_publisher(cls, remaps.get(name, name),
                                                          qos_of(info))
        self.counts = dict.fromkeys(self.publishers, 0)

    def wait_for_subscribers(self, timeout):
        """Spin until every publisher is matched, or ``timeout`` seconds pass."""
        import rclpy
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and rclpy.ok() and any(
                p.get_subscription_count() == 0 for p in self.publishers.values()):
            rclpy.spin_once(self.node, timeout_sec=0.05)
        return {p.topic_name: p.get_subscription_count() for p in self.publishers.values()}

    def bag_time(self):
        """Return the bag time (ns) that corresponds to now, None before the first message."""
        if self.origin is None:
            return None
        first, started = self.origin
        return first + int((time.monotonic() - started) * self.rate * 1e9)

    def publish_clock(self):
        """Publish the bag's time on /clock (once playing has started)."""
        now = self.bag_time()
        if self.clock_pub is None or now is None:
            return
        from rosgraph_msgs.msg import Clock

        from tgrpo_ros.nodes import messages
        self.clock_pub.publish(Clock(clock=messages.ns_to_stamp(now)))

    def play_once(self, rate, start_offset):
        """Play the bag once; return the number of messages published."""
        import rclpy

        first = None
        started = None
        published = 0
        self.rate = rate
        for name, _, timestamp, data in self.bag.messages(sorted(self.publishers)):
            if first is None:
                first = timestamp + int(start_offset * 1e9)
            if timestamp < first:
                continue
            if started is None:
                started = time.monotonic()
                self.origin = (first, started)
            due = started + (timestamp - first) / 1e9 / rate
            while rclpy.ok():
                left = due - time.monotonic()
                if left <= 0:
                    break
                rclpy.spin_once(self.node, timeout_sec=min(left, 0.05))
            if not rclpy.ok():
                break
            self.publish_clock()  # the receivers' time is the message's when it arrives
            self.publishers[name].publish(bytes(data))
            self.counts[name] += 1
            published += 1
        return published


def run(args, out=None, err=None):
    """Play a bag from parsed arguments; return the exit status."""
    out, err = out or sys.stdout, err or sys.stderr
    import os

    import rclpy

    if not args.rate > 0:
        print(f'tgrpo_replay play: --rate ({args.rate}) must be > 0', file=err)
        return 1
    if args.clock < 0:
        print(f'tgrpo_replay play: --clock ({args.clock} Hz) must be > 0', file=err)
        return 1
    if args.start_offset < 0:
        print(f'tgrpo_replay play: --start-offset ({args.start_offset} s) must be >= 0',
              file=err)
        return 1
    try:
        remaps = parse_remaps(args.remap)
        bag = bag_io.Bag(args.bag)
        wanted = args.topics or default_topics(bag)
        # An unknown topic is reported (bag.require) and the others are still played.
        names = [name for name in wanted
                 if bag.require(name, getattr(bag.topics.get(name), 'msgtype', ()))]
    except ValueError as error:
        print(f'tgrpo_replay play: {error}', file=err)
        return 1
    for problem in bag.problems:
        print(f'tgrpo_replay play: {problem}', file=err)
    reported = len(bag.problems)
    if not names:
        print(f'tgrpo_replay play: nothing to play in {args.bag}: none of {wanted} is in it; '
              f'its topics: {sorted(bag.topics)}', file=err)
        return 1
    os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
    rclpy.init(args=getattr(args, 'ros_args', None))
    node = rclpy.create_node('tgrpo_replay_play')
    status = 0
    try:
        player = Player(node, bag, names, remaps, clock_hz=args.clock)
        for problem in bag.problems[reported:]:
            print(f'tgrpo_replay play: {problem}', file=err)
        reported = len(bag.problems)
        if not player.publishers:
            return 1
        if args.wait_for_subscribers > 0:
            matched = player.wait_for_subscribers(args.wait_for_subscribers)
            alone = [t for t, n in matched.items() if n == 0]
            if alone:
                print(f'tgrpo_replay play: no subscriber on {alone} after '
                      f'{args.wait_for_subscribers} s; playing anyway', file=err)
        start = time.monotonic()
        loops = 0
        while rclpy.ok():
            player.play_once(args.rate, args.start_offset)
            loops += 1
            if not args.loop:
                break
        # Give reliable messages time to leave before the publishers go away.
        end = time.monotonic() + 0.5
        while time.monotonic() < end and rclpy.ok():
            rclpy.spin_once(node, timeout_sec=0.05)
        print(f'played {sum(player.counts.values())} message(s) in '
              f'{time.monotonic() - start:.1f} s ({loops} pass(es), rate {args.rate}): '
              + ', '.join(f'{remaps.get(t, t)} {n}' for t, n in player.counts.items()),
              file=out)
        for problem in bag.problems[reported:]:
            print(f'tgrpo_replay play: {problem}', file=err)
    except KeyboardInterrupt:
        status = 0
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return 4 if bag.problems else status
