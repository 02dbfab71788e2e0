"""
Bad input at the node boundaries, the parts without DDS: counters, status, validators.

The nodes themselves are tested over DDS with one bad value of each input in
test_policy_server.py, test_sim_bridge.py, test_faults_learner.py and
test_arm_nodes.py (docs/faults.md, "Bad input", lists them).
"""

import io
import json

import numpy as np
import pytest

from tgrpo_ros.episode import (EPISODE_ARRAYS, episode_error, episode_from_bytes,
                               episode_to_bytes, EpisodeBuilder)
from tgrpo_ros.nodes.diagnostics import bad_input_summary, BadInputs, flatten


def make_episode(steps=3):
    builder = EpisodeBuilder(task_id=0, init_state_id=1, group_id=2, instruction='pick it',
                             bridge='/sim0', episode_id='/sim0/2/a1')
    for t in range(steps):
        builder.add_step(np.zeros((224, 224, 3), np.uint8), np.full(7, 31800),
                         np.full(7, -5.5), np.zeros(7), 0.1 * t, False, 0)
    return builder.build()


def test_bad_inputs_count_per_input_and_keep_the_latest_error():
    bad = BadInputs(('image', 'instruction'))
    assert bad.status() == {'bad_input': {'image': 0, 'instruction': 0}, 'last_bad_input': {}}
    assert bad.count('image', 'image data is truncated') == 1
    assert bad.count('image', 'x' * 1000) == 2
    status = bad.status()
    assert status['bad_input'] == {'image': 2, 'instruction': 0} and bad.total == 2
    assert status['last_bad_input'] == {'image': 'x' * 300}
    json.dumps(status)
    with pytest.raises(KeyError, match="unknown input 'episode'; inputs: image, instruction"):
        bad.count('episode', 'nope')


def test_status_is_flattened_and_new_bad_input_warns():
    status = {'batches': 4, 'ok': False, 'clients': ['/sim0'],
              **BadInputs(('image', 'adapter_bytes')).status()}
    assert flatten(status) == [('batches', '4'), ('ok', 'false'), ('clients', '["/sim0"]'),
                               ('bad_input.image', '0'), ('bad_input.adapter_bytes', '0')]
    assert bad_input_summary({'image': 0}, {'image': 0}) == ('OK', 'no bad input')
    level, message = bad_input_summary({'image': 2, 'adapter_bytes': 1},
                                       {'image': 2, 'adapter_bytes': 0})
    assert level == 'WARN'
    assert message == ('bad input since the last report: adapter_bytes +1 '
                       '(total: image 2, adapter_bytes 1)')
    assert bad_input_summary({'image': 2}, {'image': 2}) == ('OK', 'bad input so far: image 2')


def test_episode_error_names_what_cannot_be_trained_on():
    assert episode_error(make_episode()) == ''
    assert episode_error(make_episode(steps=0)) == ''  # empty: the collector's 'aborted'
    cases = [
        ('rewards', lambda e: e.rewards.__setitem__(1, np.nan), 'non-finite rewards at steps [1]'),
        ('logps', lambda e: e.behaviour_logps.__setitem__((2, 3), np.inf),
         'non-finite behaviour_logps at steps [2]'),
        ('actions', lambda e: e.actions.__setitem__((0, 0), np.nan),
         'non-finite actions at steps [0]'),
        ('tokens', lambda e: e.action_tokens.__setitem__((0, 6), 5),
         'action tokens outside 31744..31999: [5]'),
        ('positive logp', lambda e: e.behaviour_logps.__setitem__((0, 0), 0.5),
         'behaviour log-probs above 0 (max 0.5)'),
        ('versions', lambda e: e.extras.__setitem__('step_adapter_versions', [0, 0]),
         "extras['step_adapter_versions'] must list one int in [-1, 2147483647] per step (3), "
         'got [0, 0]'),
    ]
    for name, spoil, expected in cases:
        episode = make_episode()
        spoil(episode)
        assert episode_error(episode) == expected, name


def _npz(episode, **metadata_changes):
    """Return the episode's .npz bytes with its metadata changed (None: removed)."""
    data = episode_to_bytes(episode)
    with np.load(io.BytesIO(bytes(data))) as archive:
        arrays = {name: archive[name] for name in archive.files}
    metadata = json.loads(arrays['metadata_json'].tobytes())
    for key, value in metadata_changes.items():
        if value is None:
            metadata.pop(key)
        else:
            metadata[key] = value
    arrays['metadata_json'] = np.frombuffer(json.dumps(metadata).encode(), np.uint8)
    stream = io.BytesIO()
    np.savez(stream, **arrays)
    return stream.getvalue()


def test_episode_payload_with_bad_metadata_is_refused_with_a_value_error():
    episode = make_episode()
    assert episode_from_bytes(_npz(episode)).group_id == 2
    # Fields with a default may be absent (older writers); the others may not.
    assert episode_from_bytes(_npz(episode, bridge=None)).bridge == ''
    cases = [
        ({'task_id': None}, r"episode metadata lacks \['task_id'\]"),
        ({'group_id': '2'}, "episode group_id must be of type int, got '2'"),
        ({'success': 1}, 'episode success must be of type bool, got 1'),
        ({'task_id': True}, 'episode task_id must be of type int, got True'),
        ({'extras': [1]}, r'episode extras must be of type dict, got \[1\]'),
    ]
    for changes, message in cases:
        with pytest.raises(ValueError, match=message):
            episode_from_bytes(_npz(episode, **changes))
    arrays = {name: getattr(episode, name) for name in EPISODE_ARRAYS}
    arrays['rewards'] = np.float32(1.0)
    arrays['metadata_json'] = np.frombuffer(b'[1, 2]', np.uint8)
    stream = io.BytesIO()
    np.savez(stream, **arrays)
    with pytest.raises(ValueError, match='episode metadata must be a JSON object, got list'):
        episode_from_bytes(stream.getvalue())


def test_action_reply_error_names_non_finite_values_and_foreign_tokens():
    from tgrpo_ros.nodes.messages import ActionReply
    from tgrpo_ros.nodes.sim_bridge import action_reply_error

    def reply(action=np.zeros(7), tokens=np.full(7, 31800), logps=np.full(7, -1.0)):
        return ActionReply(stamp_ns=1, frame_id='agentview', action=action,
                           action_tokens=tokens, log_probs=logps, adapter_version=0,
                           instruction_crc32=0, batch_size=1)

    assert action_reply_error(reply()) == ''
    assert action_reply_error(reply(action=np.full(7, np.nan))).startswith(
        'non-finite action [nan, nan')
    assert 'log-probs [-inf' in action_reply_error(reply(logps=np.full(7, -np.inf)))
    assert action_reply_error(reply(tokens=np.full(7, 32000))) == (
        'action tokens [32000, 32000, 32000, 32000, 32000, 32000, 32000] outside 31744..31999')


def _action_reply(**extras):
    from std_msgs.msg import Header

    from tgrpo_ros.nodes import messages

    header = Header()
    header.stamp = messages.ns_to_stamp(5 * 10 ** 9)
    msg = messages.encode_action(header, [0.1, 0, 0, 0, 0, 0, 1.0], [31872] * 7, [-1.0] * 7, 3,
                                 'pick it')
    for name, value in extras.items():
        msg.position[messages.ACTION_JOINT_NAMES.index(name)] = value
    return msg


@pytest.mark.parametrize('name', ['adapter_version', 'instruction_crc32', 'batch_size',
                                  'chunk_size'])
@pytest.mark.parametrize('value', [float('inf'), float('-inf'), float('nan'), 1e300, -5.0, 0.5,
                                   2.0 ** 33])
def test_action_reply_extras_must_be_finite_integers_in_range(name, value):
    """Issue 17, failure 8: inf in an extra raised OverflowError, which no caller caught."""
    from tgrpo_ros.nodes import messages

    assert messages.decode_action(_action_reply()).adapter_version == 3
    if name == 'instruction_crc32' and value == 2.0 ** 33:
        value = 2.0 ** 32  # one past the largest CRC-32
    with pytest.raises(ValueError, match=name):
        messages.decode_action(_action_reply(**{name: value}))


@pytest.mark.parametrize('value', [float('inf'), float('-inf'), float('nan'), -0.05])
def test_action_reply_action_period_must_be_finite_and_not_negative(value):
    from tgrpo_ros.nodes import messages

    assert messages.decode_action(_action_reply(action_period=0.05)).action_period == 0.05
    with pytest.raises(ValueError, match='action_period'):
        messages.decode_action(_action_reply(action_period=value))


def test_action_reply_numbers_of_every_action_of_a_chunk_are_checked():
    from std_msgs.msg import Header

    from tgrpo_ros.nodes import messages

    header = Header()
    chunk = np.full((3, 7), 0.1)
    for field_name, index, value, message in [
            ('position', 15, float('nan'), 'non-finite action'),
            ('position', 20, 1e300, r'action .* outside \[-1000, 1000\]'),
            ('velocity', 9, 0.5, r'log-probs .* outside'),
            ('effort', 14, 31872.5, 'action token ids must be integers')]:
        msg = messages.encode_action(header, chunk, np.full((3, 7), 31872), -np.ones((3, 7)),
                                     3, 'pick it')
        assert messages.decode_action(msg).chunk_size == 3
        getattr(msg, field_name)[index] = value
        with pytest.raises(ValueError, match=message):
            messages.decode_action(msg)


def test_action_reply_numbers_are_refused_naming_the_field():
    from tgrpo_ros.nodes import messages

    cases = [('position', 2, float('nan'), r'non-finite action \[0.1, 0.0, nan'),
             ('position', 0, 1e300, r'action \[1e\+300, .*\] outside \[-1000, 1000\]'),
             ('velocity', 3, 0.5, r'log-probs .* outside \[-1e\+06, 0\]'),
             ('velocity', 8, float('inf'), 'non-finite velocity padding'),
             ('effort', 1, -3.0, r'action token ids .* outside \[0, 2.14748e\+09\]'),
             ('effort', 1, 31872.5, 'action token ids must be integers')]
    for field_name, index, value, message in cases:
        msg = _action_reply()
        getattr(msg, field_name)[index] = value
        with pytest.raises(ValueError, match=message):
            messages.decode_action(msg)
    msg = _action_reply()
    msg.header.stamp.nanosec = 1_500_000_000
    with pytest.raises(ValueError, match='action reply stamp must have'):
        messages.decode_action(msg)


def test_pose_and_assignment_decoders_refuse_hostile_numbers():
    from geometry_msgs.msg import PoseStamped

    from tgrpo_ros.nodes import messages

    msg = PoseStamped()
    msg.header.frame_id = 'world'
    msg.pose.position.x, msg.pose.orientation.w = 0.5, 1.0
    stamp, frame, position, orientation = messages.decode_pose(msg)
    assert (stamp, frame, position.tolist(), orientation.tolist()) == (
        0, 'world', [0.5, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0])
    for part, name, value, message in (
            ('position', 'z', float('nan'), r'non-finite pose position \[0.0, 0.0, nan\]'),
            ('position', 'y', 1e300, r'pose position .* outside \[-1000, 1000\]'),
            ('orientation', 'x', float('-inf'), 'non-finite pose orientation'),
            ('orientation', 'w', 2.0, 'pose orientation .* outside')):
        bad = PoseStamped()
        bad.pose.orientation.w = 1.0
        setattr(getattr(bad.pose, part), name, value)
        with pytest.raises(ValueError, match=message):
            messages.decode_pose(bad)
    text = ('{"schema": "tgrpo_assignment/1", "group_id": 1, "task_id": 0, '
            '"init_state_id": 0, "seed": %s}')
    assert messages.decode_assignment(text % '7').seed == 7
    for value, message in (('NaN', 'seed must be an int, got nan'),
                           ('Infinity', 'seed must be an int, got inf'),
                           ('1e400', 'seed must be an int, got inf'),
                           (str(10 ** 30), r'seed must be in \[0, 9223372036854775807\]')):
        with pytest.raises(ValueError, match=message):
            messages.decode_assignment(text % value)
