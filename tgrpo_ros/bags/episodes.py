"""
Episode and image bags: read and write them as ``ros2 bag record`` lays them out.

``ros2 bag record /tgrpo/episodes`` stores each episode as the CDR bytes of a
std_msgs/UInt8MultiArray; ``read_episodes`` decodes such bags (MCAP or SQLite3) and
``write_episodes`` writes them (same topic, type, serialization and offered QoS).
No rclpy: the pure-Python ``rosbags`` package and ``tgrpo_ros.nodes.messages``'
decoders, which import no ROS at module level.
"""

import numpy as np

from tgrpo_ros.bags import topic_names as topics
from tgrpo_ros.bags.storage import Bag, rosbags_qos, STORAGES
from tgrpo_ros.episode import EPISODE_SCHEMA, episode_to_bytes
from tgrpo_ros.nodes import messages

EPISODE_TYPE = 'std_msgs/msg/UInt8MultiArray'
IMAGE_TYPE = 'sensor_msgs/msg/Image'


def _typestore():
    from rosbags.typesys import get_typestore, Stores
    return get_typestore(Stores.ROS2_JAZZY)


def open_bag(path_or_bag):
    """Return a ``storage.Bag`` for a path (a bag directory or one storage file)."""
    return path_or_bag if isinstance(path_or_bag, Bag) else Bag(path_or_bag)


def list_topics(path):
    """Return {topic: (message type, message count)} of the bag at ``path``."""
    return {name: (info.msgtype, info.count) for name, info in open_bag(path).topics.items()}


def _messages(bag, topic, msgtype):
    """
    Yield (index, receive time ns, message) of ``topic``; ValueError if it is absent.

    Through the reader every command uses: damaged files are read around and named
    in ``bag.problems``; a message that does not decode is named there and skipped.
    """
    if bag.require(topic, msgtype) is None:
        raise ValueError(bag.problems.pop())
    for index, (name, kind, timestamp, data) in enumerate(bag.messages([topic])):
        msg = bag.decode(name, kind, timestamp, data, index)
        if msg is not None:
            yield index, timestamp, msg


def read_episodes(path, topic=topics.EPISODE_TOPIC, strict=True):
    """
    Yield (receive time ns, Episode) for every episode recorded on ``topic``.

    ``path``: a bag directory, one storage file, or a ``storage.Bag``. A message that
    is not a valid episode raises ValueError naming its index and time; with
    ``strict=False`` it goes to the bag's problems and reading goes on.
    """
    bag = open_bag(path)
    for index, timestamp, msg in _messages(bag, topic, EPISODE_TYPE):
        try:
            yield timestamp, messages.decode_episode(msg)
        except ValueError as error:
            problem = (f'message {index} on {topic} (recorded at {timestamp} ns) is not a '
                       f'valid episode: {error}')
            if strict:
                raise ValueError(problem) from None
            bag.problems.append(problem)


def read_images(path, topic, strict=True):
    """
    Yield (header stamp ns, frame_id, uint8 RGB array [H, W, 3]) per recorded image.

    As ``read_episodes``: an image that does not convert raises, or with
    ``strict=False`` is named in the bag's problems.
    """
    bag = open_bag(path)
    for index, timestamp, msg in _messages(bag, topic, IMAGE_TYPE):
        try:
            image = messages.image_to_numpy(msg)
        except ValueError as error:
            if strict:
                raise ValueError(f'message {index} on {topic}: {error}') from None
            bag.problems.append(f'message {index} on {topic} (recorded at {timestamp} ns): '
                                f'{error}')
            continue
        yield messages.stamp_to_ns(msg.header.stamp), msg.header.frame_id, image


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
    profile = rosbags_qos('reliable', 'transient_local', topics.BRIDGE_EPISODE_DEPTH)
    count = 0
    with Writer(path, version=9, storage_plugin=plugin) as writer:
        connection = writer.add_connection(topic, EPISODE_TYPE, typestore=store,
                                           offered_qos_profiles=[profile])
        for timestamp, item in records:
            writer.write(connection, int(timestamp), _episode_cdr(item, store))
            count += 1
    return count


def _episode_cdr(item, store):
    """
    Return the CDR bytes of ``item``: an Episode, a UInt8MultiArray or raw bytes.

    An Episode is laid out as ``messages.encode_episode`` lays it out (layout label
    EPISODE_SCHEMA, size = stride = payload bytes) and serialized by rosbags, whose CDR
    bytes are the ones rclpy's ``serialize_message`` gives (test/test_replay.py).
    """
    from rosbags.typesys.stores.ros2_jazzy import (std_msgs__msg__MultiArrayDimension as Dim,
                                                   std_msgs__msg__MultiArrayLayout as Layout,
                                                   std_msgs__msg__UInt8MultiArray as Array)
    if isinstance(item, (bytes, bytearray, memoryview)):
        return bytes(item)
    if hasattr(item, 'rewards'):
        payload = episode_to_bytes(item)
        layout = Layout(dim=[Dim(label=EPISODE_SCHEMA, size=len(payload),
                                 stride=len(payload))], data_offset=0)
        data = np.frombuffer(payload, dtype=np.uint8)
    else:
        layout = Layout(dim=[Dim(label=d.label, size=d.size, stride=d.stride)
                             for d in item.layout.dim], data_offset=item.layout.data_offset)
        data = np.frombuffer(memoryview(item.data).cast('B'), dtype=np.uint8)
    return bytes(store.serialize_cdr(Array(layout=layout, data=data), EPISODE_TYPE))
