"""
``tgrpo_replay play``: republish a recorded bag, as ``ros2 bag play`` does.

Every topic of the bag by default (``--topics``, ``--regex``, ``--exclude-regex``,
``--exclude-topics`` choose; ``tgrpo_ros.bags.playback.select_topics``). The
recorded CDR bytes are published as they are (rclpy's raw publish), so headers and
stamps are the recorded ones, with each topic's recorded QoS (the first profile its
publishers offered; depth 10 when the recording has none), or the one of a
``--qos-profile-overrides-path`` file. Timing follows the receive times in the bag,
divided by ``--rate``; ``--start-offset`` skips the first seconds,
``--playback-until-sec``/``-nsec`` and ``--playback-duration`` stop early,
``--loop`` starts again at the end, ``--delay`` waits before the first message.
Before the first message the player waits (``--wait-for-subscribers``) until every
topic it plays has a subscriber, so a graph that is still starting does not miss
the beginning.

Pause, resume and play-next: ``--start-paused``; the keyboard when stdin is a
terminal (space, right arrow, up/down for the rate: rosbag2's keys), and the
std_srvs/Trigger services ``~/pause``, ``~/resume``, ``~/toggle_paused``,
``~/play_next`` and ``~/is_paused`` of the play node (``/tgrpo_replay_play/...``;
rosbag2's player offers the same under rosbag2_interfaces types).

``--clock [HZ]`` also publishes the bag's time on ``/clock`` (rosgraph_msgs/Clock,
best effort, as ``ros2 bag play --clock`` does; 40 Hz when no rate is given, and
once right before every played message), for nodes run with ``use_sim_time``.
The recorded stamps are the recording's clock: a node that compares them with
its own clock (the safety controller's ``action_timeout``) needs the bag's time
to act on them as it did on the arm (docs/bags.md). With ``--loop`` the clock
jumps back at each pass; it stands still while paused.
"""

import os
import select
import sys
import time

from tgrpo_ros.bags import playback
from tgrpo_ros.bags import storage as bag_io
from tgrpo_ros.nodes.record import import_message

CLOCK_TOPIC = '/clock'
DEFAULT_CLOCK_HZ = 40.0  # ros2 bag play --clock's default
NODE_NAME = 'tgrpo_replay_play'


def parse_remaps(items):
    """Return {from: to} of 'FROM:=TO' items; ValueError naming a malformed one."""
    remaps = {}
    for item in items or []:
        source, sep, target = item.partition(':=')
        if not sep or not source.startswith('/') or not target.startswith('/'):
            raise ValueError(f"remap '{item}' must read /from/topic:=/to/topic")
        remaps[source] = target
    return remaps


def qos_of(info, override=None):
    """Return the rclpy QoSProfile to republish ``info`` (a storage.TopicInfo) with."""
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

    reliability, durability, depth, history = playback.play_qos(info, override)
    return QoSProfile(history=HistoryPolicy[history.upper()], depth=depth,
                      reliability=ReliabilityPolicy[reliability.upper()],
                      durability=DurabilityPolicy[durability.upper()])


def add_arguments(parser):
    """Add the arguments of ``tgrpo_replay play`` to ``parser`` (ros2 bag play's names)."""
    parser.add_argument('bag', help='rosbag2 directory (or one .mcap or .db3 file)')
    parser.add_argument('--topics', nargs='+', metavar='TOPIC',
                        help='topics to play (default: every topic of the bag)')
    parser.add_argument('-e', '--regex', metavar='REGEX',
                        help='play only the topics this regular expression matches')
    parser.add_argument('-x', '--exclude-regex', metavar='REGEX',
                        help='do not play the topics this regular expression matches')
    parser.add_argument('--exclude-topics', nargs='+', metavar='TOPIC', default=[],
                        help='do not play these topics')
    parser.add_argument('-r', '--rate', type=float, default=1.0,
                        help='time factor: 2 plays twice as fast (default 1.0)')
    parser.add_argument('--start-offset', type=float, default=0.0, metavar='S',
                        help='skip the first S seconds of the recording')
    parser.add_argument('--playback-duration', type=float, default=-1.0, metavar='S',
                        help='play only S seconds of bag time (default: all)')
    parser.add_argument('--playback-until-sec', type=float, default=-1.0, metavar='S',
                        help='stop at this bag timestamp, s since the epoch (default: the end)')
    parser.add_argument('--playback-until-nsec', type=int, default=-1, metavar='NS',
                        help='stop at this bag timestamp, ns since the epoch')
    parser.add_argument('-l', '--loop', action='store_true', help='start again at the end')
    parser.add_argument('-d', '--delay', type=float, default=0.0, metavar='S',
                        help='wait S seconds before playing')
    parser.add_argument('-p', '--start-paused', action='store_true',
                        help='start paused: resume with space or the ~/resume service, step '
                        'with the right arrow or ~/play_next')
    parser.add_argument('--disable-keyboard-controls', action='store_true',
                        help='ignore the keyboard (on by default when stdin is a terminal)')
    parser.add_argument('--qos-profile-overrides-path', metavar='FILE',
                        help='YAML file of QoS per topic ({topic: {history, depth, '
                        'reliability, durability}}), as ros2 bag play takes')
    parser.add_argument('--remap', nargs='+', metavar='FROM:=TO', default=[],
                        help='publish a topic under another name')
    parser.add_argument('--wait-for-subscribers', type=float, default=10.0, metavar='S',
                        help='wait up to S seconds for a subscriber on every played topic '
                        '(default 10; 0: do not wait)')
    parser.add_argument('--clock', type=float, nargs='?', const=DEFAULT_CLOCK_HZ, default=0.0,
                        metavar='HZ', help="publish the bag's time on /clock at HZ "
                        f'(default {DEFAULT_CLOCK_HZ:g} when given without a value) for nodes '
                        'with use_sim_time:=true')


class Keyboard:
    """rosbag2's keys on a terminal stdin (cbreak mode while playing); off elsewhere."""

    def __init__(self, enabled, stream=None):
        """Switch the terminal to cbreak mode if ``enabled`` and stdin is a terminal."""
        stream = stream or sys.stdin
        self.saved = None
        self.fd = None
        if not enabled or not stream.isatty():
            return
        import termios
        import tty
        self.fd = stream.fileno()
        self.saved = termios.tcgetattr(self.fd)
        tty.setcbreak(self.fd)

    def actions(self):
        """Return the actions of the keys pressed since the last call."""
        if self.fd is None:
            return []
        data = ''
        while select.select([self.fd], [], [], 0)[0]:
            chunk = os.read(self.fd, 16)
            if not chunk:
                break
            data += chunk.decode('utf-8', errors='replace')
        out = []
        while data:
            for key, action in playback.KEYS.items():
                if data.startswith(key):
                    out.append(action)
                    data = data[len(key):]
                    break
            else:
                data = data[1:]
        return out

    def close(self):
        """Give the terminal its settings back."""
        if self.saved is not None:
            import termios
            termios.tcsetattr(self.fd, termios.TCSADRAIN, self.saved)
            self.saved = None


class Player:
    """Publishes the selected topics of a bag in recorded time order."""

    def __init__(self, node, bag, names, remaps, stream=None, clock_hz=0.0, overrides=None,
                 rate=1.0, paused=False, keyboard=None):
        """Create one publisher per topic, with its recorded type and QoS (and /clock)."""
        from std_srvs.srv import Trigger

        self.node, self.bag = node, bag
        self.stream = stream or sys.stdout
        self.timeline = playback.Timeline(rate, paused)
        self.keyboard = keyboard
        self.step_requests = 0
        self.clock_pub = None
        if clock_hz > 0:
            from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
            from rosgraph_msgs.msg import Clock

            self.clock_pub = node.create_publisher(
                Clock, CLOCK_TOPIC, QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                                               reliability=ReliabilityPolicy.BEST_EFFORT))
            node.create_timer(1.0 / clock_hz, self.publish_clock)
        overrides = overrides or {}
        self.publishers = {}
        for name in names:
            info = bag.topics[name]
            try:
                cls = import_message(info.msgtype)
            except ValueError as error:  # that topic is skipped, the others play
                bag.problems.append(f"topic '{name}' is not played: {error}")
                continue
            self.publishers[name] = node.create_publisher(
                cls, remaps.get(name, name), qos_of(info, overrides.get(name)))
        self.counts = dict.fromkeys(self.publishers, 0)
        for service, handler in (('pause', self._pause), ('resume', self._resume),
                                 ('toggle_paused', self._toggle), ('play_next', self._next),
                                 ('is_paused', self._is_paused)):
            node.create_service(Trigger, f'~/{service}', handler)

    # ---------------------------------------------------------------- controls
    def _say(self, text):
        print(f'tgrpo_replay play: {text}', file=self.stream, flush=True)

    def control(self, action):
        """Apply a keyboard or service action; return (success, message)."""
        now = time.monotonic()
        timeline = self.timeline
        if action == 'pause':
            done = timeline.pause(now)
            return done, 'paused' if done else 'already paused'
        if action == 'resume':
            done = timeline.resume(now)
            return done, 'resumed' if done else 'not paused'
        if action == 'toggle_paused':
            return True, 'paused' if timeline.toggle(now) else 'resumed'
        if action == 'play_next':
            if not timeline.paused:
                return False, 'play_next works while paused'
            self.step_requests += 1
            return True, 'playing the next message'
        if action in ('faster', 'slower'):
            rate = timeline.rate * (playback.RATE_STEP if action == 'faster'
                                    else 1 / playback.RATE_STEP)
            timeline.set_rate(rate, now)
            return True, f'rate {rate:.3g}'
        return False, f'unknown action {action}'

    def _service(self, action, response):
        response.success, response.message = self.control(action)
        self._say(response.message)
        return response

    def _pause(self, request, response):
        return self._service('pause', response)

    def _resume(self, request, response):
        return self._service('resume', response)

    def _toggle(self, request, response):
        return self._service('toggle_paused', response)

    def _next(self, request, response):
        return self._service('play_next', response)

    def _is_paused(self, request, response):
        response.success, response.message = True, str(self.timeline.paused).lower()
        return response

    def poll_keyboard(self):
        """Apply the keys pressed since the last look."""
        for action in self.keyboard.actions() if self.keyboard else []:
            self._say(self.control(action)[1])

    # ---------------------------------------------------------------- playing
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
        return self.timeline.bag_time(time.monotonic())

    def publish_clock(self):
        """Publish the bag's time on /clock (once playing has started)."""
        now = self.bag_time()
        if self.clock_pub is None or now is None:
            return
        from rosgraph_msgs.msg import Clock

        from tgrpo_ros.nodes import messages
        self.clock_pub.publish(Clock(clock=messages.ns_to_stamp(now)))

    def play_once(self, start_offset, until_ns=None, duration=None):
        """
        Play the bag once; return the number of messages published.

        ``until_ns``: stop before a message received after this bag time;
        ``duration`` (s of bag time from the start point): stop after it.
        """
        import rclpy

        first = None
        published = 0
        timeline = self.timeline
        for name, _, timestamp, data in self.bag.messages(sorted(self.publishers)):
            if first is None:
                first = timestamp + int(start_offset * 1e9)
                timeline.start(first, time.monotonic())
            if timestamp < first:
                continue
            if until_ns is not None and timestamp > until_ns:
                break
            if duration is not None and timestamp - first > duration * 1e9:
                break
            while rclpy.ok():
                self.poll_keyboard()
                now = time.monotonic()
                if timeline.paused:
                    if self.step_requests:
                        self.step_requests -= 1
                        timeline.play_next(timestamp, now)
                        break
                    rclpy.spin_once(self.node, timeout_sec=0.05)
                    continue
                left = timeline.due(timestamp) - now
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


def _check_numbers(args):
    for text, ok in ((f'--rate ({args.rate}) must be > 0', args.rate > 0),
                     (f'--clock ({args.clock} Hz) must be > 0', args.clock >= 0),
                     (f'--start-offset ({args.start_offset} s) must be >= 0',
                      args.start_offset >= 0),
                     (f'--delay ({args.delay} s) must be >= 0', args.delay >= 0)):
        if not ok:
            raise ValueError(text)
    until = None
    if args.playback_until_nsec >= 0:
        until = args.playback_until_nsec
    elif args.playback_until_sec >= 0:
        until = int(round(args.playback_until_sec * 1e9))
    duration = args.playback_duration if args.playback_duration >= 0 else None
    return until, duration


def run(args, out=None, err=None):
    """Play a bag from parsed arguments; return the exit status."""
    out, err = out or sys.stdout, err or sys.stderr
    import rclpy

    try:
        until, duration = _check_numbers(args)
        remaps = parse_remaps(args.remap)
        overrides = (playback.load_qos_overrides(args.qos_profile_overrides_path)
                     if args.qos_profile_overrides_path else {})
        bag = bag_io.Bag(args.bag)
        names, unknown = playback.select_topics(
            bag.topics, args.topics, args.regex, args.exclude_regex, args.exclude_topics)
        # An unknown topic is reported (bag.require) and the others are still played.
        for name in unknown:
            bag.require(name, ())
    except ValueError as error:
        print(f'tgrpo_replay play: {error}', file=err)
        return 1
    for problem in bag.problems:
        print(f'tgrpo_replay play: {problem}', file=err)
    reported = len(bag.problems)
    if not names:
        print(f'tgrpo_replay play: nothing to play in {args.bag}: no topic is left after '
              f'--topics {args.topics or "(all)"}, --regex {args.regex!r}, --exclude-regex '
              f'{args.exclude_regex!r}, --exclude-topics {args.exclude_topics}; its topics: '
              f'{sorted(bag.topics)}', file=err)
        return 1
    not_in_bag = sorted(set(overrides) - set(bag.topics))
    if not_in_bag:
        print(f'tgrpo_replay play: QoS overrides for topics not in the bag: {not_in_bag}',
              file=err)
    os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
    rclpy.init(args=getattr(args, 'ros_args', None))
    node = rclpy.create_node(NODE_NAME)
    keyboard = Keyboard(not args.disable_keyboard_controls)
    status = 0
    try:
        player = Player(node, bag, names, remaps, stream=out, clock_hz=args.clock,
                        overrides=overrides, rate=args.rate, paused=args.start_paused,
                        keyboard=keyboard)
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
        if args.start_paused:
            print('tgrpo_replay play: paused; resume with space or the ~/resume service '
                  f'(/{NODE_NAME}/resume), step with the right arrow or ~/play_next',
                  file=out, flush=True)
        end = time.monotonic() + args.delay
        while time.monotonic() < end and rclpy.ok():
            rclpy.spin_once(node, timeout_sec=min(0.05, max(end - time.monotonic(), 0)))
        start = time.monotonic()
        loops = 0
        while rclpy.ok():
            player.play_once(args.start_offset, until, duration)
            loops += 1
            if not args.loop:
                break
        # Give reliable messages time to leave before the publishers go away.
        end = time.monotonic() + 0.5
        while time.monotonic() < end and rclpy.ok():
            rclpy.spin_once(node, timeout_sec=0.05)
        print(f'played {sum(player.counts.values())} message(s) in '
              f'{time.monotonic() - start:.1f} s ({loops} pass(es), rate '
              f'{player.timeline.rate:g}): '
              + ', '.join(f'{remaps.get(t, t)} {n}' for t, n in player.counts.items()),
              file=out)
        for problem in bag.problems[reported:]:
            print(f'tgrpo_replay play: {problem}', file=err)
    except KeyboardInterrupt:
        status = 0
    finally:
        keyboard.close()
        node.destroy_node()
        rclpy.try_shutdown()
    return 4 if bag.problems else status
