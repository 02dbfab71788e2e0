"""rosbag2 recordings of episodes and images, read back with the project's replay tool."""

import numpy as np
import pytest
from test_messages import make_episode

from tgrpo_ros.bags import episodes as episode_bags
from tgrpo_ros.episode import episode_from_bytes, episodes_equal
from tgrpo_ros.nodes import messages, replay, topics


@pytest.mark.parametrize('storage', ['mcap', 'sqlite3'])
def test_episode_bag_round_trip_is_lossless(tmp_path, storage):
    episodes = [make_episode(length=3, size=32, seed=s, group_id=s, episode_id=f'/sim{s}/{s}')
                for s in range(3)]
    bag = tmp_path / 'bag'
    count = episode_bags.write_episodes(bag, [(1000 + i, e) for i, e in enumerate(episodes)],
                                        storage=storage)
    assert count == 3
    assert episode_bags.list_topics(bag) == {topics.EPISODE_TOPIC: (episode_bags.EPISODE_TYPE, 3)}
    metadata = (bag / 'metadata.yaml').read_text()
    assert 'durability: 1' in metadata or 'transient_local' in metadata.lower()
    read = list(episode_bags.read_episodes(bag))
    assert [t for t, _ in read] == [1000, 1001, 1002]
    for original, (_, decoded) in zip(episodes, read):
        assert episodes_equal(original, decoded)


def test_replay_cli_summarises_and_exports(tmp_path, capsys):
    episode = make_episode(length=4, size=16)
    bag = tmp_path / 'bag'
    episode_bags.write_episodes(bag, [(5, episode)])
    assert replay.main([str(bag), '--export', str(tmp_path / 'out')]) == 0
    out = capsys.readouterr().out
    assert '/sim1/42: group 42 task 3 init 17 steps 4' in out
    assert out.strip().endswith('1 episode(s) on /tgrpo/episodes')
    exported = episode_from_bytes((tmp_path / 'out' / 'sim1_42.npz').read_bytes())
    assert episodes_equal(exported, episode)
    assert replay.main([str(bag), '--topic', '/nope']) == 1
    assert "topic '/nope' is not in bag" in capsys.readouterr().err
    assert replay.main([str(tmp_path / 'missing')]) == 1
    assert 'not a rosbag2 directory' in capsys.readouterr().err


def test_images_are_read_from_a_bag(tmp_path, capsys):
    from rclpy.serialization import serialize_message
    from rosbags.rosbag2 import Writer

    rng = np.random.default_rng(3)
    images = [rng.integers(0, 256, (20, 30, 3), dtype=np.uint8) for _ in range(2)]
    bag = tmp_path / 'images'
    with Writer(bag, version=9) as writer:
        connection = writer.add_connection('/sim0/camera/image', episode_bags.IMAGE_TYPE,
                                           typestore=episode_bags._typestore())
        for i, (image, encoding) in enumerate(zip(images, ['rgb8', 'bgr8'])):
            msg = messages.numpy_to_image(image, encoding, stamp=77 + i, frame_id='agentview')
            writer.write(connection, 100 + i, serialize_message(msg))
    read = list(episode_bags.read_images(bag, '/sim0/camera/image'))
    assert [(s, f) for s, f, _ in read] == [(77, 'agentview'), (78, 'agentview')]
    for (_, _, got), want in zip(read, images):
        np.testing.assert_array_equal(got, want)
    with pytest.raises(ValueError, match='has type sensor_msgs/msg/Image; expected '
                                         'std_msgs/msg/UInt8MultiArray'):
        list(episode_bags.read_episodes(bag, '/sim0/camera/image'))
    assert replay.main([str(bag), '--images', '/sim0/camera/image']) == 0
    assert '2 image(s) on /sim0/camera/image' in capsys.readouterr().out


@pytest.mark.ros
def test_recorded_dds_episodes_decode_losslessly(ros_client, tmp_path):
    """Record as `ros2 bag record` does: raw CDR from a subscription, after a DDS hop."""
    from std_msgs.msg import UInt8MultiArray

    node = ros_client.node
    publisher = node.create_publisher(UInt8MultiArray, topics.EPISODE_TOPIC, topics.EPISODE_QOS)
    episodes = [make_episode(length=5, size=224, seed=s, group_id=s) for s in range(2)]
    for episode in episodes:  # published before anyone listens: transient local keeps them
        publisher.publish(messages.encode_episode(episode))
    received = []
    node.create_subscription(
        UInt8MultiArray, topics.EPISODE_TOPIC,
        lambda data: received.append((node.get_clock().now().nanoseconds, data)),
        topics.EPISODE_QOS, raw=True)
    ros_client.spin_until(lambda: len(received) == 2, 20.0, 'two recorded episodes')
    assert all(isinstance(data, bytes) for _, data in received)
    bag = tmp_path / 'recorded'
    episode_bags.write_episodes(bag, received, storage='mcap')
    decoded = [e for _, e in episode_bags.read_episodes(bag)]
    assert len(decoded) == 2
    for original, got in zip(episodes, decoded):
        assert episodes_equal(original, got)
        assert got.images.tobytes() == original.images.tobytes()
