"""
Episode and image bags: read and write them as ``ros2 bag record`` lays them out.

``ros2 bag record /tgrpo/episodes`` stores each episode as the CDR bytes of a
std_msgs/UInt8MultiArray; ``read_episodes`` decodes such bags (MCAP or SQLite3) and
``write_episodes`` writes them (same topic, type, serialization and offered QoS).
No rclpy: the pure-Python ``rosbags`` package and ``tgrpo_ros.nodes.messages``'
decoders, which import no ROS at module level.
"""

import os

import numpy as np

from tgrpo_ros.bags import topic_names as topics
from tgrpo_ros.bags.storage import rosbags_qos, STORAGES
from tgrpo_ros.episode import EPISODE_SCHEMA, episode_to_bytes
from tgrpo_ros.nodes import messages

EPISODE_TYPE = 'std_msgs/msg/UInt8MultiArray'
IMAGE_TYPE = 'sensor_msgs/msg/Image'


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
