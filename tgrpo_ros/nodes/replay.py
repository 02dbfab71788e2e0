"""
Read (and write) rosbag2 recordings of tgrpo_ros topics, without a ROS install.

``ros2 bag record /tgrpo/episodes`` stores each episode as the CDR bytes of a
std_msgs/UInt8MultiArray; this module reads such bags (MCAP or SQLite3) with the
pure-Python ``rosbags`` package and decodes them with ``tgrpo_ros.nodes.messages``.

Command line (console script ``tgrpo_replay``, docs/bags.md)::

    tgrpo_replay info BAG                 # topics, types, counts, QoS, damage
    tgrpo_replay check BAG --model M [--adapter A]   # re-score through a policy
    tgrpo_replay play BAG [--rate R] [--loop] [--start-offset S]
    tgrpo_replay BAG                      # one line per episode
    tgrpo_replay BAG --export DIR         # also write each episode as DIR/<id>.npz
    tgrpo_replay BAG --images /sim0/camera/image   # one line per image

The writer (``write_episodes``) makes bags laid out as ``ros2 bag record`` makes them
(same topic, type, serialization and offered QoS); the tests use it.
"""

import argparse
import os
import sys

import numpy as np

from tgrpo_ros.episode import episode_to_bytes
from tgrpo_ros.names import safe_file_stem
from tgrpo_ros.nodes import messages, topics

EPISODE_TYPE = 'std_msgs/msg/UInt8MultiArray'
IMAGE_TYPE = 'sensor_msgs/msg/Image'
STORAGES = ('mcap', 'sqlite3')


def _typestore():
    from rosbags.typesys import get_typestore, Stores
    return get_typestore(Stores.ROS2_JAZZY)


def _open(path):
    from rosbags.rosbag2 import Reader
    if not os.path.exists(os.path.join(os.fspath(path), 'metadata.yaml')):
        raise FileNotFoundError(f'{path} is not a rosbag2 directory (no metadata.yaml)')
    return Reader(path)


def list_topics(path):
    """Return {topic: (message type, message count)} of the bag at ``path``."""
    with _open(path) as reader:
        return {name: (info.msgtype, info.msgcount) for name, info in reader.topics.items()}


def _messages(path, topic, msgtype):
    store = _typestore()
    with _open(path) as reader:
        connections = [c for c in reader.connections if c.topic == topic]
        if not connections:
            raise ValueError(f"topic '{topic}' is not in bag {path}; topics: "
                             f'{sorted(reader.topics)}')
        types = sorted({c.msgtype for c in connections})
        if types != [msgtype]:
            raise ValueError(f"topic '{topic}' in bag {path} has type {types}; "
                             f'expected {msgtype}')
        for connection, timestamp, data in reader.messages(connections=connections):
            yield timestamp, store.deserialize_cdr(data, connection.msgtype)


def read_episodes(path, topic=topics.EPISODE_TOPIC):
    """
    Yield (receive time ns, Episode) for every episode recorded on ``topic``.

    A message that does not decode raises ValueError naming its index and time.
    """
    for index, (timestamp, msg) in enumerate(_messages(path, topic, EPISODE_TYPE)):
        try:
            yield timestamp, messages.decode_episode(msg)
        except ValueError as error:
            raise ValueError(f'message {index} on {topic} (recorded at {timestamp} ns) '
                             f'is not a valid episode: {error}') from None


def read_images(path, topic):
    """Yield (header stamp ns, frame_id, uint8 RGB array [H, W, 3]) per recorded image."""
    for timestamp, msg in _messages(path, topic, IMAGE_TYPE):
        yield (messages.stamp_to_ns(msg.header.stamp), msg.header.frame_id,
               messages.image_to_numpy(msg))


def _rosbags_qos(profile, depth):
    """Return the rosbags Qos of an rclpy ``profile`` with history ``depth``."""
    from rosbags.interfaces import (Qos, QosDurability, QosHistory, QosLiveliness,
                                    QosReliability, QosTime)
    infinite = QosTime(sec=2147483647, nsec=4294967295)
    return Qos(history=QosHistory(int(profile.history)), depth=int(depth),
               reliability=QosReliability(int(profile.reliability)),
               durability=QosDurability(int(profile.durability)),
               deadline=infinite, lifespan=infinite, liveliness=QosLiveliness.AUTOMATIC,
               liveliness_lease_duration=infinite, avoid_ros_namespace_conventions=False)


def write_episodes(path, records, topic=topics.EPISODE_TOPIC, storage='mcap'):
    """
    Write a bag of episodes at ``path`` (which must not exist) as ros2 bag record would.

    ``records`` yields (receive time ns, item); an item is an Episode, an encoded
    UInt8MultiArray, or the raw CDR bytes a (raw) subscription received.
    """
    from rosbags.rosbag2 import StoragePlugin, Writer
    if storage not in STORAGES:
        raise ValueError(f"unknown storage '{storage}'; choose one of {STORAGES}")
    plugin = StoragePlugin.MCAP if storage == 'mcap' else StoragePlugin.SQLITE3
    store = _typestore()
    # What a sim bridge offers: the episode QoS with the bridge's history depth.
    profile = _rosbags_qos(topics.EPISODE_QOS, depth=topics.BRIDGE_EPISODE_DEPTH)
    count = 0
    with Writer(path, version=9, storage_plugin=plugin) as writer:
        connection = writer.add_connection(topic, EPISODE_TYPE, typestore=store,
                                           offered_qos_profiles=[profile])
        for timestamp, item in records:
            writer.write(connection, int(timestamp), _episode_cdr(item, store))
            count += 1
    return count


def _episode_cdr(item, store):
    if isinstance(item, (bytes, bytearray, memoryview)):
        return bytes(item)
    msg = messages.encode_episode(item) if hasattr(item, 'rewards') else item
    try:
        from rclpy.serialization import serialize_message  # what ros2 bag record stores
        return serialize_message(msg)
    except ImportError:  # no ROS: rosbags' own CDR writer gives the same values
        from rosbags.typesys.stores.ros2_jazzy import (std_msgs__msg__MultiArrayDimension as Dim,
                                                       std_msgs__msg__MultiArrayLayout as Layout,
                                                       std_msgs__msg__UInt8MultiArray as Array)
        layout = Layout(dim=[Dim(label=d.label, size=d.size, stride=d.stride)
                             for d in msg.layout.dim], data_offset=msg.layout.data_offset)
        data = np.frombuffer(memoryview(msg.data).cast('B'), dtype=np.uint8)
        return bytes(store.serialize_cdr(Array(layout=layout, data=data), EPISODE_TYPE))


SUBCOMMANDS = ('info', 'check', 'play')


def info(args, out=None, err=None):
    """Print the topics of a bag (type, count, recorded QoS) and what is damaged."""
    out, err = out or sys.stdout, err or sys.stderr
    from tgrpo_ros.nodes import bag_io
    try:
        bag = bag_io.Bag(args.bag)
        found = bag.topics
    except ValueError as error:
        print(f'tgrpo_replay info: {error}', file=err)
        return 1
    print(f'{args.bag}: {len(bag.files)} file(s)', file=out)
    for name, topic in sorted(found.items()):
        qos = ', '.join('/'.join(map(str, bag_io.qos_names(q))) for q in topic.qos) or '-'
        print(f'  {name}  {topic.msgtype}  {topic.count} msg  qos {qos}', file=out)
    for problem in bag.problems:
        print(f'problem: {problem}', file=err)
    return 4 if bag.problems else 0


def _subcommand(argv):
    from tgrpo_ros.nodes import bag_check, bag_play
    ros_args = None
    if '--ros-args' in argv:
        at = argv.index('--ros-args')
        argv, ros_args = argv[:at], argv[at:]
    parser = argparse.ArgumentParser(
        prog='tgrpo_replay', description='Inspect, re-score or play rosbag2 recordings of '
        'tgrpo_ros graphs (docs/bags.md).')
    sub = parser.add_subparsers(dest='command', required=True)
    info_parser = sub.add_parser('info', help='topics, types, counts, QoS and damage')
    info_parser.add_argument('bag', help='rosbag2 directory (or one .mcap file)')
    bag_check.add_arguments(sub.add_parser(
        'check', help='re-score every recorded step through a policy; exit 3 past a '
        'tolerance, 4 on a damaged bag'))
    bag_play.add_arguments(sub.add_parser(
        'play', help='republish the camera/instruction stream with its timing and QoS'))
    args = parser.parse_args(argv)
    args.ros_args = ['tgrpo_replay'] + ros_args if ros_args else None
    if args.command == 'info':
        return info(args)
    if args.command == 'check':
        return bag_check.run(args)
    return bag_play.run(args)


def main(argv=None):
    """Summarise (and optionally export) the episodes or images of a recorded bag."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in SUBCOMMANDS:
        return _subcommand(argv)
    parser = argparse.ArgumentParser(
        prog='tgrpo_replay', description='Decode tgrpo_ros episodes or images from a '
        'rosbag2 recording (MCAP or SQLite3), e.g. one made with '
        f'`ros2 bag record {topics.EPISODE_TOPIC}`.',
        epilog=f"subcommands: {', '.join(SUBCOMMANDS)} (tgrpo_replay info BAG: topics, "
        'counts, QoS and damage; tgrpo_replay check BAG: re-score every step through a '
        'policy; tgrpo_replay play BAG: republish the camera stream; tgrpo_replay '
        'SUBCOMMAND --help for their options)')
    parser.add_argument('bag', help='rosbag2 directory (holds metadata.yaml)')
    parser.add_argument('--topic', default=topics.EPISODE_TOPIC,
                        help=f'episode topic (default {topics.EPISODE_TOPIC})')
    parser.add_argument('--export', metavar='DIR', help='write each episode as DIR/<id>.npz '
                        '(load with tgrpo_ros.nodes.episode_from_bytes)')
    parser.add_argument('--images', metavar='TOPIC', help='list the sensor_msgs/Image '
                        'messages of TOPIC instead of episodes')
    args = parser.parse_args(argv)
    try:
        if args.images:
            count = 0
            for stamp, frame_id, image in read_images(args.bag, args.images):
                print(f'image stamp {stamp} ns frame {frame_id!r} {image.shape[1]}x'
                      f'{image.shape[0]} px mean {image.mean():.2f}')
                count += 1
            print(f'{count} image(s) on {args.images}')
            return 0
        if args.export:
            os.makedirs(args.export, exist_ok=True)
        count = 0
        for index, (timestamp, episode) in enumerate(read_episodes(args.bag, args.topic)):
            print(f'{episode.episode_id or index}: group {episode.group_id} task '
                  f'{episode.task_id} init {episode.init_state_id} steps {episode.length} '
                  f'return {episode.episode_return:.4f} success {episode.success} adapter '
                  f'{episode.adapter_version} (recorded at {timestamp} ns)')
            if args.export:
                stem = safe_file_stem(episode.episode_id, f'episode_{index}')
                name = os.path.join(args.export, stem + '.npz')
                with open(name, 'wb') as stream:
                    stream.write(episode_to_bytes(episode))
            count += 1
        print(f'{count} episode(s) on {args.topic}')
        return 0
    except (FileNotFoundError, ValueError) as error:
        print(f'tgrpo_replay: {error}', file=sys.stderr)
        return 1


if __name__ == '__main__':
    sys.exit(main())
