"""
``tgrpo_replay``: inspect, re-score or play rosbag2 recordings of tgrpo_ros graphs.

The command line only: reading, listing and checking are in ``tgrpo_ros.bags`` (no
rclpy); ``play`` publishes and lives in ``nodes.bag_play`` (docs/bags.md)::

    tgrpo_replay info BAG                 # topics, types, counts, QoS, damage
    tgrpo_replay check BAG --model M [--adapter A]   # re-score through a policy
    tgrpo_replay play BAG [--rate R] [--loop] [--start-offset S]
    tgrpo_replay BAG                      # one line per episode
    tgrpo_replay BAG --export DIR         # also write each episode as DIR/<id>.npz
    tgrpo_replay BAG --images /sim0/camera/image   # one line per image
"""

import argparse
import sys

from tgrpo_ros.bags import check as bag_check
from tgrpo_ros.bags import listing
from tgrpo_ros.bags import topic_names as topics

SUBCOMMANDS = ('info', 'check', 'play')


def _subcommand(argv):
    from tgrpo_ros.nodes import bag_play
    ros_args = None
    if '--ros-args' in argv:
        at = argv.index('--ros-args')
        argv, ros_args = argv[:at], argv[at:]
    parser = argparse.ArgumentParser(
        prog='tgrpo_replay', description='Inspect, re-score or play rosbag2 recordings of '
        'tgrpo_ros graphs (docs/bags.md).')
    sub = parser.add_subparsers(dest='command', required=True)
    info_parser = sub.add_parser('info', help='what ros2 bag info prints, with QoS and '
                                 'damage')
    info_parser.add_argument('bag', help='rosbag2 directory (or one .mcap file)')
    bag_check.add_arguments(sub.add_parser(
        'check', help='re-score every recorded step through a policy; exit 3 past a '
        'tolerance, 4 on a damaged bag'))
    bag_play.add_arguments(sub.add_parser(
        'play', help='republish the recorded topics with their timing and QoS'))
    args = parser.parse_args(argv)
    args.ros_args = ['tgrpo_replay'] + ros_args if ros_args else None
    if args.command == 'info':
        return listing.info(args)
    if args.command == 'check':
        return bag_check.run(args)
    return bag_play.run(args)


def main(argv=None):
    """Summarise (and optionally export) the episodes or images of a recorded bag."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in SUBCOMMANDS:
        return _subcommand(argv)
    parser = argparse.ArgumentParser(
        prog='tgrpo_replay', formatter_class=argparse.RawDescriptionHelpFormatter,
        description='Decode tgrpo_ros episodes or images from a rosbag2 recording (MCAP or '
        f'SQLite3), e.g. one made with `ros2 bag record {topics.EPISODE_TOPIC}`.',
        epilog='subcommands (tgrpo_replay COMMAND --help; docs/bags.md):\n'
        '  info    what ros2 bag info prints: files, size, storage, duration, start, end,\n'
        '          messages, per topic its type, count, serialization format and QoS\n'
        '  check   re-score every recorded step through a policy; exit 3 past a tolerance,\n'
        '          4 on a damaged bag or frames not re-scored\n'
        '  play    republish the recorded topics with their timing and QoS, as ros2 bag play')
    parser.add_argument('bag', help='rosbag2 directory, or one .mcap or .db3 file')
    parser.add_argument('--topic', default=topics.EPISODE_TOPIC,
                        help=f'episode topic (default {topics.EPISODE_TOPIC})')
    parser.add_argument('--export', metavar='DIR', help='write each episode as DIR/<id>.npz '
                        '(load with tgrpo_ros.nodes.episode_from_bytes)')
    parser.add_argument('--images', metavar='TOPIC', help='list the sensor_msgs/Image '
                        'messages of TOPIC instead of episodes')
    args = parser.parse_args(argv)
    return listing.list_bag(args)


if __name__ == '__main__':
    sys.exit(main())
