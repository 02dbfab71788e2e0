"""Encodings of images, actions, assignments and episodes into standard messages."""

import time

import numpy as np
import pytest

from tgrpo_ros.episode import (Assignment, Episode, EPISODE_ARRAYS, episode_from_bytes,
                               episodes_equal)
from tgrpo_ros.nodes import messages


def make_episode(length=6, size=224, seed=0, **overrides):
    rng = np.random.default_rng(seed)
    values = {
        'images': rng.integers(0, 256, (length, size, size, 3), dtype=np.uint8),
        'action_tokens': rng.integers(31744, 32000, (length, 7)).astype(np.int64),
        'behaviour_logps': (-rng.exponential(5.0, (length, 7))).astype(np.float32),
        'actions': rng.normal(0.0, 0.3, (length, 7)).astype(np.float32),
        'rewards': rng.normal(size=length).astype(np.float32),
        'success': True, 'task_id': 3, 'init_state_id': 17, 'group_id': 42,
        'adapter_version': 5, 'instruction': 'pick up the ketchup and place it in the basket',
        'bridge': '/sim1', 'episode_id': '/sim1/42',
        'extras': {'image_stamps_ns': list(range(length)), 'x': 0.1}}
    values.update(overrides)
    return Episode(**values)


def assert_episodes_identical(first, second):
    for name in EPISODE_ARRAYS:
        a, b = getattr(first, name), getattr(second, name)
        assert a.dtype == b.dtype and a.shape == b.shape, name
        assert a.tobytes() == b.tobytes(), name
    for name in ('success', 'task_id', 'init_state_id', 'group_id', 'adapter_version',
                 'instruction', 'suite', 'bridge', 'episode_id', 'extras'):
        assert getattr(first, name) == getattr(second, name), name
    assert episodes_equal(first, second)


# ---------------------------------------------------------------------------- images

@pytest.mark.parametrize('encoding', ['rgb8', 'bgr8'])
def test_image_round_trip_is_exact_and_rgb(encoding):
    image = np.random.default_rng(1).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    msg = messages.numpy_to_image(image, encoding, stamp=1_500_000_123, frame_id='agentview')
    assert (msg.height, msg.width, msg.step, msg.encoding) == (48, 64, 192, encoding)
    assert messages.stamp_to_ns(msg.header.stamp) == 1_500_000_123
    wire = np.frombuffer(msg.data, dtype=np.uint8).reshape(48, 64, 3)
    expected_wire = image if encoding == 'rgb8' else image[:, :, ::-1]
    np.testing.assert_array_equal(wire, expected_wire)
    np.testing.assert_array_equal(messages.image_to_numpy(msg), image)


def test_image_with_row_padding_is_decoded():
    from sensor_msgs.msg import Image

    image = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    padded = np.zeros((2, 12), dtype=np.uint8)  # step 12 B > 9 B per row
    padded[:, :9] = image.reshape(2, 9)
    msg = Image(height=2, width=3, encoding='rgb8', step=12, data=padded.tobytes())
    np.testing.assert_array_equal(messages.image_to_numpy(msg), image)


@pytest.mark.parametrize('change, match', [
    ({'encoding': 'mono8'}, "unsupported image encoding 'mono8'; supported: rgb8, bgr8"),
    ({'step': 10}, 'step 10 B is smaller than one row of 4 px x 3 B = 12 B'),
    ({'data': bytes(12 * 3 - 1)}, r'truncated: 35 B, expected step 12 B x height 3 = 36 B'),
    ({'data': bytes(12 * 3 + 5)}, 'too long: 41 B'),
    ({'height': 0, 'data': b''}, 'empty size: 4x0'),
])
def test_malformed_images_are_rejected_with_the_reason(change, match):
    from sensor_msgs.msg import Image

    fields = {'height': 3, 'width': 4, 'encoding': 'rgb8', 'step': 12, 'data': bytes(36)}
    fields.update(change)
    with pytest.raises(ValueError, match=match):
        messages.image_to_numpy(Image(**fields))


def test_numpy_to_image_rejects_wrong_arrays():
    with pytest.raises(ValueError, match=r'uint8 \[H, W, 3\], got float32 \(4, 4, 3\)'):
        messages.numpy_to_image(np.zeros((4, 4, 3), np.float32))
    with pytest.raises(ValueError, match="unsupported image encoding 'rgba8'"):
        messages.numpy_to_image(np.zeros((4, 4, 3), np.uint8), 'rgba8')


# ---------------------------------------------------------------------------- actions

def test_action_reply_round_trip_keeps_header_and_values():
    from rclpy.serialization import deserialize_message, serialize_message
    from sensor_msgs.msg import JointState

    image = messages.numpy_to_image(np.zeros((2, 2, 3), np.uint8), stamp=7_000_000_009,
                                    frame_id='agentview')
    action = np.array([0.1, -0.2, 0.3, 0.01, -0.02, 0.03, 1.0])
    tokens = np.array([31744, 31800, 31999, 31900, 31850, 31870, 31744])
    logps = np.array([-5.5, -0.25, -7.125, -1.0, -3.3, -2.2, -0.001], dtype=np.float32)
    msg = messages.encode_action(image.header, action, tokens, logps, adapter_version=12,
                                 instruction='pick up the milk', batch_size=3)
    msg = deserialize_message(serialize_message(msg), JointState)
    reply = messages.decode_action(msg)
    assert reply.stamp_ns == 7_000_000_009 and reply.frame_id == 'agentview'
    np.testing.assert_array_equal(reply.action, action)
    np.testing.assert_array_equal(reply.action_tokens, tokens)
    assert reply.action_tokens.dtype == np.int64
    # float32 log-probs survive the float64 wire exactly.
    np.testing.assert_array_equal(reply.log_probs.astype(np.float32), logps)
    assert reply.adapter_version == 12 and reply.batch_size == 3
    assert reply.instruction_crc32 == messages.instruction_crc32('pick up the milk')
    assert list(msg.name[:7]) == list(messages.ACTION_NAMES)


def test_action_reply_with_wrong_layout_is_rejected():
    from sensor_msgs.msg import JointState

    msg = JointState(name=['j1'], position=[0.0])
    with pytest.raises(ValueError, match="joint names \\['j1'\\]; expected \\['dx'"):
        messages.decode_action(msg)
    header = messages.numpy_to_image(np.zeros((2, 2, 3), np.uint8)).header
    with pytest.raises(ValueError, match='action must have 7 entries, got 6'):
        messages.encode_action(header, np.zeros(6), np.zeros(7), np.zeros(7), 0, 'x')


# ---------------------------------------------------------------------------- assignments

def test_assignment_round_trip_and_errors():
    assignment = Assignment(group_id=9, task_id=2, init_state_id=31, seed=4,
                            max_steps=50, episode_id='/sim0/9')
    msg = messages.encode_assignment(assignment)
    assert '"schema": "tgrpo_assignment/1"' in msg.data
    assert messages.decode_assignment(msg) == assignment
    assert messages.decode_assignment(msg.data) == assignment
    with pytest.raises(ValueError,
                       match=r'assignment task_id must be in \[0, 9223372036854775807\], got -1'):
        Assignment(group_id=0, task_id=-1, init_state_id=0)
    with pytest.raises(ValueError, match=r"unknown assignment keys \['colour'\]"):
        messages.decode_assignment('{"schema": "tgrpo_assignment/1", "group_id": 1, '
                                   '"task_id": 0, "init_state_id": 0, "colour": 1}')
    with pytest.raises(ValueError, match="schema is None; expected 'tgrpo_assignment/1'"):
        messages.decode_assignment('{"group_id": 1}')
    with pytest.raises(ValueError, match='not JSON'):
        messages.decode_assignment('group 1')
    with pytest.raises(ValueError, match='incomplete assignment'):
        messages.decode_assignment('{"schema": "tgrpo_assignment/1", "group_id": 1}')


# ---------------------------------------------------------------------------- episodes

def test_episode_round_trip_is_bit_identical_through_cdr():
    from rclpy.serialization import deserialize_message, serialize_message
    from std_msgs.msg import UInt8MultiArray

    episode = make_episode()
    episode.behaviour_logps[0, 0] = np.float32(np.nan)  # NaN bits survive too
    episode.extras['nan'] = float('nan')
    msg = messages.encode_episode(episode)
    assert msg.layout.dim[0].label == messages.EPISODE_SCHEMA
    assert msg.layout.dim[0].size == len(msg.data)
    wire = deserialize_message(serialize_message(msg), UInt8MultiArray)
    decoded = messages.decode_episode(wire)
    for name in EPISODE_ARRAYS:
        assert getattr(decoded, name).tobytes() == getattr(episode, name).tobytes()
    assert episodes_equal(decoded, episode)
    assert decoded.length == 6 and decoded.success is True and decoded.group_id == 42


def test_episode_encoding_is_cheap_for_a_full_length_episode():
    episode = make_episode(length=280)  # LIBERO-Object step limit, 42 MB of images
    start = time.perf_counter()
    msg = messages.encode_episode(episode)
    encoded = time.perf_counter()
    decoded = messages.decode_episode(msg)
    done = time.perf_counter()
    assert_episodes_identical(episode, decoded)
    overhead = len(msg.data) - sum(getattr(episode, n).nbytes for n in EPISODE_ARRAYS)
    assert 0 < overhead < 4096  # B: zip and .npy headers plus the metadata JSON
    # Measured ~0.12 s each on the 2-core dev machine; an episode takes ~25 s to run.
    assert encoded - start < 2.0 and done - encoded < 2.0


def test_episode_with_wrong_dtype_or_foreign_message_is_rejected():
    from std_msgs.msg import MultiArrayDimension, UInt8MultiArray

    episode = make_episode(length=2, size=8)
    episode.actions = episode.actions.astype(np.float64)
    with pytest.raises(ValueError, match='episode actions must be float32 to encode '
                                         'losslessly, got float64'):
        messages.encode_episode(episode)
    with pytest.raises(ValueError, match="layout label None, expected 'tgrpo_episode/npz/1'"):
        messages.decode_episode(UInt8MultiArray(data=[1, 2, 3]))
    msg = messages.encode_episode(make_episode(length=2, size=8))
    truncated = UInt8MultiArray(data=msg.data[:-10])
    truncated.layout.dim = [MultiArrayDimension(label=messages.EPISODE_SCHEMA,
                                                size=len(msg.data), stride=len(msg.data))]
    with pytest.raises(ValueError, match='truncated message'):
        messages.decode_episode(truncated)
    with pytest.raises(ValueError, match='is not a valid .npz'):
        episode_from_bytes(bytes(msg.data[:-10]))


def test_action_chunk_round_trip_and_replies_recorded_before_chunks():
    from rclpy.serialization import deserialize_message, serialize_message
    from sensor_msgs.msg import JointState

    header = messages.numpy_to_image(np.zeros((2, 2, 3), np.uint8), stamp=5).header
    chunk = np.arange(21, dtype=np.float64).reshape(3, 7) / 10.0
    tokens = 31744 + np.arange(21).reshape(3, 7)
    msg = messages.encode_action(header, chunk, tokens, -np.ones((3, 7)), 4, 'go',
                                 action_period=0.1)
    assert list(msg.name[7:9]) == ['dx_1', 'dy_1'] and len(msg.name) == 21 + 5
    reply = messages.decode_action(deserialize_message(serialize_message(msg), JointState))
    np.testing.assert_array_equal(reply.actions, chunk)
    np.testing.assert_array_equal(reply.action, chunk[0])
    np.testing.assert_array_equal(reply.action_tokens, tokens[0])
    assert reply.chunk_size == 3 and reply.action_period == 0.1 and reply.adapter_version == 4
    # One action: K = 1, the period unknown (0).
    one = messages.decode_action(messages.encode_action(header, chunk[0], tokens[0],
                                                        np.zeros(7), 0, 'go'))
    assert one.chunk_size == 1 and one.action_period == 0.0
    # The layout of bags recorded before chunks (three extras) still decodes as K = 1.
    legacy_names = ['adapter_version', 'instruction_crc32', 'batch_size']
    legacy = JointState(name=list(messages.ACTION_NAMES) + legacy_names,
                        position=list(chunk[0]) + [2.0, 7.0, 1.0], velocity=[0.0] * 10,
                        effort=[31744.0] * 7 + [0.0] * 3)
    old = messages.decode_action(legacy)
    assert old.chunk_size == 1 and old.adapter_version == 2 and old.action_period == 0.0
    # A chunk whose chunk_size disagrees with its names, and token rows that do not match.
    msg.position[21 + 3] = 2.0
    with pytest.raises(ValueError, match='says chunk_size 2 but carries 3 actions'):
        messages.decode_action(msg)
    with pytest.raises(ValueError, match='action_tokens has 2 rows; the action chunk has 3'):
        messages.encode_action(header, chunk, tokens[:2], -np.ones((3, 7)), 4, 'go')
