"""
Bags without DDS: split writing, damaged bags, profiles, report maths, check on real bags.

The bags here are real rosbag2 directories written by the same writer as tgrpo_record;
the check runs the real stand-in policy. The DDS tests are in test/test_bag_graph.py.
"""

import json

import numpy as np
import pytest
import yaml

from tgrpo_ros.bags import episodes as episode_bags
from tgrpo_ros.bags import profiles as record
from tgrpo_ros.bags import report as check_report
from tgrpo_ros.bags import storage as bag_io
from tgrpo_ros.episode import Episode
from tgrpo_ros.nodes import replay, topics

INSTRUCTION = 'pick up the alphabet soup and place it in the basket'
STRING = 'std_msgs/msg/String'


def string_cdr(text):
    from rosbags.typesys.stores.ros2_jazzy import std_msgs__msg__String as String
    return bytes(bag_io.typestore().serialize_cdr(String(data=text), STRING))


def write_strings(path, count, **limits):
    with bag_io.SplitWriter(path, **limits) as writer:
        writer.add_topic('/a', STRING, [bag_io.rosbags_qos('reliable', 'transient_local', 1)])
        writer.add_topic('/b', STRING)
        for i in range(count):
            writer.write('/a' if i % 2 else '/b', 1_000 + i, string_cdr(f'message {i:04d}'))
    return writer


def test_split_writer_rotates_and_every_reader_sees_one_bag(tmp_path):
    writer = write_strings(tmp_path / 'bag', 100, max_bytes=1500)
    files = sorted(p.name for p in (tmp_path / 'bag').glob('*.mcap'))
    assert len(files) == writer.split_index >= 3
    bag = bag_io.Bag(tmp_path / 'bag')
    assert bag.files == [tmp_path / 'bag' / f'bag_{i}.mcap' for i in range(len(files))]
    assert {n: (t.msgtype, t.count) for n, t in bag.topics.items()} == {
        '/a': (STRING, 50), '/b': (STRING, 50)}
    assert bag_io.qos_names(bag.topics['/a'].qos[0]) == ('reliable', 'transient_local', 1)
    got = list(bag.messages(['/a']))
    assert [t for _, _, t, _ in got] == list(range(1_001, 1_100, 2))
    assert bag.decode(*got[3]).data == 'message 0007' and not bag.problems
    from rosbags.rosbag2 import Reader  # rosbags' own reader agrees (same metadata as rosbag2)
    with Reader(tmp_path / 'bag') as reader:
        assert reader.message_count == 100
    # Rotation by duration: receive times 1000..1099 ns, 25 ns per file.
    write_strings(tmp_path / 'timed', 100, max_duration_ns=25)
    assert len(list((tmp_path / 'timed').glob('*.mcap'))) == 4


def test_a_truncated_file_is_salvaged_and_the_other_files_still_read(tmp_path):
    write_strings(tmp_path / 'bag', 100, max_bytes=1500)
    damaged = tmp_path / 'bag' / 'bag_1.mcap'
    data = damaged.read_bytes()
    damaged.write_bytes(data[:len(data) - 60])  # footer and summary gone
    bag = bag_io.Bag(tmp_path / 'bag')
    got = list(bag.messages())
    assert len(got) == 100  # the chunk before the cut is complete: nothing lost
    assert len(bag.problems) == 1
    assert 'bag_1.mcap: not a complete MCAP file (File end magic is invalid.)' in bag.problems[0]
    assert 'recovered' in bag.problems[0]
    # Cut inside the chunk: that file's messages are lost, the others still read, and
    # the problem says where the file ends.
    damaged.write_bytes(data[:200])
    bag = bag_io.Bag(tmp_path / 'bag')
    got = list(bag.messages())
    assert 0 < len(got) < 100
    assert 'runs past the end' in bag.problems[0] and 'truncated at byte' in bag.problems[0]
    # Garbage instead of a file.
    damaged.write_bytes(b'not an mcap file at all')
    bag = bag_io.Bag(tmp_path / 'bag')
    assert len(list(bag.messages())) == len(got)
    assert 'does not start with the MCAP magic' in bag.problems[0]


def test_a_recorder_killed_before_closing_leaves_a_readable_bag(tmp_path):
    writer = bag_io.SplitWriter(tmp_path / 'bag')
    writer.add_topic('/a', STRING)
    for i in range(5):
        writer.write('/a', 10 + i, string_cdr(f'kept {i}'))
    writer.flush()  # what tgrpo_record does every second
    writer.write('/a', 99, string_cdr('lost'))  # never flushed: the "kill" comes now
    bag = bag_io.Bag(tmp_path / 'bag')
    got = [bag.decode(*m).data for m in bag.messages()]
    assert got == [f'kept {i}' for i in range(5)]
    assert 'metadata.yaml is missing' in bag.problems[0]
    assert 'not a complete MCAP file' in bag.problems[1]
    writer.close()


def test_wrong_types_unknown_topics_and_bad_messages_are_named(tmp_path, capsys):
    with bag_io.SplitWriter(tmp_path / 'bag') as writer:
        writer.add_topic('/sim0/camera/image', STRING)  # a string where an image belongs
        writer.add_topic(topics.EPISODE_TOPIC, 'std_msgs/msg/UInt8MultiArray')
        writer.write('/sim0/camera/image', 1, string_cdr('not an image'))
        writer.write(topics.EPISODE_TOPIC, 2, b'\x00\x01\x00\x00garbage')
    bag = bag_io.Bag(tmp_path / 'bag')
    assert bag.require('/nope', STRING) is None
    assert "topic '/nope' is not in bag" in bag.problems[-1]
    assert "['/sim0/camera/image', '/tgrpo/episodes']" in bag.problems[-1]
    assert bag.require('/sim0/camera/image', 'sensor_msgs/msg/Image') is None
    assert 'has type std_msgs/msg/String; expected sensor_msgs/msg/Image' in bag.problems[-1]
    (message,) = bag.messages([topics.EPISODE_TOPIC])
    assert bag.decode(*message, index=0) is None
    assert 'message 0 on /tgrpo/episodes (received at 2 ns) does not decode' in bag.problems[-1]
    assert replay.main(['info', str(tmp_path / 'bag')]) == 0
    assert 'Topic: /sim0/camera/image | Type: std_msgs/msg/String | Count: 1 |' in \
        capsys.readouterr().out
    with pytest.raises(bag_io.BagError, match='no metadata.yaml and no .mcap or .db3'):
        bag_io.Bag(tmp_path)
    assert replay.main(['info', str(tmp_path / 'missing')]) == 1
    assert 'not a rosbag2 directory' in capsys.readouterr().err


def test_profiles_expand_clients_and_agree_with_the_ros2_bag_override_file():
    training = record.load_profile('training', clients=['/sim0', '/sim1'])
    names = [spec.name for spec in training.topics]
    assert {'/tgrpo/episodes', '/tgrpo/policy_server/stats', '/sim0/camera/image',
            '/sim1/action', '/sim1/instruction', '/sim0/assignment'} <= set(names)
    with open(record.profile_path('training').replace('record_training', 'record_qos_overrides')
              ) as stream:
        overrides = yaml.safe_load(stream)
    for spec in training.topics:
        assert overrides[spec.name] == {'history': 'keep_last', 'depth': spec.depth,
                                        'reliability': spec.reliability,
                                        'durability': spec.durability}, spec.name
    deploy = record.load_profile('deploy')
    assert {'/arm/camera/image', '/arm/instruction', '/arm/action',
            '/servo_node/delta_twist_cmds', '/diagnostics', '/estop',
            # The deploy graph's controller lives in the arm namespace (graph.build_graph).
            '/arm/safety_controller/dry_run/delta_twist_cmds',
            '/arm/safety_controller/dry_run/gripper_commands',
            '/arm/safety_controller/status'} <= {s.name for s in deploy.topics}
    assert all(s.msgtype for s in deploy.topics)
    with pytest.raises(ValueError, match="unknown profile 'x'; choose one of"):
        record.load_profile('x')
    with pytest.raises(ValueError, match="reliability 'sometimes' is not one of"):
        record.parse_topic('/a', reliability='sometimes')


def test_report_maths_on_hand_computed_steps():
    recorded = np.zeros((2, 7))
    rescored = recorded.copy()
    rescored[0, 2], rescored[1, 6] = 0.5, -0.25
    tokens = np.full((2, 7), 31800)
    greedy = tokens.copy()
    greedy[1, :3] = 31801
    actions = np.zeros((2, 7))
    steps = check_report.Steps(recorded, rescored, tokens, greedy, actions, actions + 0.1,
                               np.array([3, 4]), np.array([0, 0]))
    episodes = [{'task_id': 0, 'adapter_version': 3, 'success': True, 'return': 2.0,
                 'length': 4},
                {'task_id': 0, 'adapter_version': 4, 'success': False, 'return': 1.0,
                 'length': 6}]
    report = check_report.build_report(steps, episodes, check_report.Tolerances(
        logp_max_abs_diff=0.4, min_greedy_agreement=0.9), bag='b')
    assert report['logp']['max_abs_diff'] == 0.5
    assert report['logp']['mean_abs_diff'] == pytest.approx(0.75 / 14)
    assert report['logp']['per_dim_max'] == [0, 0, 0.5, 0, 0, 0, 0.25]
    assert report['greedy_agreement']['per_dim'] == [0.5] * 3 + [1.0] * 4
    assert report['greedy_agreement']['overall'] == pytest.approx(11 / 14)
    assert report['actions']['mean_abs_diff'] == pytest.approx(0.1)
    assert report['per_adapter_version']['4']['logp_max_abs_diff'] == 0.25
    assert report['episodes']['per_task']['0'] == {
        'episodes': 2, 'success_rate': 0.5, 'successes': 1, 'mean_return': 1.5,
        'mean_length': 5.0}
    assert not report['passed'] and len(report['failures']) == 2
    assert ('log-prob max abs difference 0.5 at step 0 (stamp 0 ns), dimension dz, exceeds '
            'the tolerance 0.4 (1 of 2 step(s) over it') in report['failures'][0]
    assert [e['failed'] for e in report['per_step']] == [['logp'], []]
    assert report['actions']['max_abs_diff'] == pytest.approx(0.1)
    json.dumps(report)  # JSON-ready


@pytest.fixture(scope='module')
def policy_episodes(tmp_path_factory):
    """Write a bag of 2 episodes of the stand-in with adapter v1 (the second greedy), and v2."""
    import torch

    from tgrpo_ros.policy import cached_standin, load_policy
    from tgrpo_ros.testing.policy_helpers import perturb_trainable, random_images

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp('check')
    model = cached_standin(seed=0)
    policy = load_policy(model, trainable='lora', adapter_root=str(root))
    perturb_trainable(policy, seed=1, scale=0.05)
    policy.save_adapter(str(root / 'v1'))
    episodes = []
    for index, length in enumerate((3, 2)):
        images = random_images(length, seed=index)
        out = policy.sample(images, [INSTRUCTION] * length, greedy=index == 1,
                            generator=torch.Generator().manual_seed(index))
        episodes.append(Episode(
            images=images, action_tokens=out.action_tokens.numpy().astype(np.int64),
            behaviour_logps=out.log_probs.numpy().astype(np.float32),
            actions=np.asarray(out.actions, np.float32), rewards=np.ones(length, np.float32),
            success=index == 0, task_id=index, init_state_id=0, group_id=index,
            adapter_version=1, instruction=INSTRUCTION, bridge='/sim0',
            episode_id=f'/sim0/{index}'))
    perturb_trainable(policy, seed=2, scale=0.5)
    policy.save_adapter(str(root / 'v2'))
    bag = root / 'bag'
    with bag_io.SplitWriter(bag, max_bytes=1) as writer:  # one episode per file
        writer.add_topic(topics.EPISODE_TOPIC, episode_bags.EPISODE_TYPE)
        for i, episode in enumerate(episodes):
            writer.write(topics.EPISODE_TOPIC, 10 + i,
                         episode_bags._episode_cdr(episode, bag_io.typestore()))
    return {'model': model, 'root': root, 'bag': bag}


def test_check_reproduces_the_recording_and_flags_another_adapter(policy_episodes, capsys):
    p = policy_episodes
    report = p['root'] / 'same.json'
    status = replay.main(['check', str(p['bag']), '--model', p['model'], '--adapter',
                          str(p['root'] / 'v1'), '--adapter-version', '1', '--report',
                          str(report), '--batch-size', '4'])
    out = capsys.readouterr().out
    assert status == 0, out
    data = json.loads(report.read_text())
    assert data['steps'] == 5 and data['source'] == 'episodes' and data['passed']
    assert data['logp']['max_abs_diff'] < 1e-4
    # The greedy episode (2 of the 5 steps) agrees with the greedy re-run in every dimension.
    assert all(a >= 2 / 5 for a in data['greedy_agreement']['per_dim'])
    assert data['episodes']['per_task']['0']['successes'] == 1
    assert data['episodes']['per_adapter_version']['1']['episodes'] == 2
    assert (p['root'] / 'same.png').is_file()
    assert 'log-prob |diff|: max' in out
    # Another adapter: the drift is reported, and exceeds a tight tolerance.
    status = replay.main(['check', str(p['bag']), '--model', p['model'], '--adapter',
                          str(p['root'] / 'v2'), '--report', str(p['root'] / 'other.json')])
    captured = capsys.readouterr()
    assert status == 3
    drift = json.loads((p['root'] / 'other.json').read_text())
    assert drift['logp']['max_abs_diff'] > 1e-2 and not drift['passed']
    assert 'FAILED: log-prob max abs difference' in captured.err
    # A bag without what a check needs: the error names what was looked for.
    empty = p['root'] / 'strings'
    write_strings(empty, 2)
    assert replay.main(['check', str(empty), '--model', p['model']]) == 1
    assert 'has neither episodes on /tgrpo/episodes nor a client' in capsys.readouterr().err


def test_check_and_play_of_damaged_bags_name_the_damage_and_use_the_rest(
        policy_episodes, tmp_path, capsys):
    import shutil

    p = policy_episodes
    bag = tmp_path / 'bag'
    shutil.copytree(p['bag'], bag)
    second = bag / 'bag_1.mcap'
    second.write_bytes(second.read_bytes()[:5000])  # cut inside the second episode
    report = tmp_path / 'damaged.json'
    status = replay.main(['check', str(bag), '--model', p['model'], '--adapter',
                          str(p['root'] / 'v1'), '--report', str(report)])
    assert status == 4  # within tolerance, but the bag is damaged
    data = json.loads(report.read_text())
    assert data['steps'] == 3 and data['passed']  # the first episode was still checked
    (problem,) = data['problems']
    assert 'bag_1.mcap: not a complete MCAP file' in problem and 'truncated at byte' in problem
    assert 'bag_1.mcap: not a complete MCAP file' in capsys.readouterr().err
    # Play: an unknown topic is named with the topics of the bag.
    assert replay.main(['play', str(bag), '--topics', '/nope']) == 1
    err = capsys.readouterr().err
    assert "topic '/nope' is not in bag" in err and "['/tgrpo/episodes']" in err
    assert 'nothing to play' in err


# ---------------------------------------------------------------------- stream bags
# A deploy-style bag written here: <ns>/camera/image, <ns>/action (the server's
# replies, stamped with their image's header) and, when given, <ns>/instruction.
# The replies are the adapter's greedy choices, so a re-run agrees exactly.

FRAMES = 24
STAMP0 = 1_764_856_800_000_000_000  # ns, the first image header stamp
FRAME_NS = 200_000_000              # 5 Hz camera


@pytest.fixture(scope='module')
def greedy_frames(policy_episodes):
    """Return 24 images and the v1 adapter's greedy replies to them (tokens, logps, action)."""
    import torch

    from tgrpo_ros.policy import load_policy
    from tgrpo_ros.testing.policy_helpers import random_images

    p = policy_episodes
    policy = load_policy(p['model'], trainable='lora', adapter_root=str(p['root']))
    policy.load_adapter(str(p['root'] / 'v1'), version=1)
    images = random_images(FRAMES, seed=7, size=64)
    with torch.no_grad():
        out = policy.sample(images, [INSTRUCTION] * FRAMES, greedy=True)
    return {'images': images, 'tokens': out.action_tokens.numpy().astype(np.int64),
            'logps': out.log_probs.numpy().astype(np.float64),
            'actions': np.asarray(out.actions, np.float64)}


def write_stream_bag(path, frames, instruction_at=0, instruction=INSTRUCTION, alter=None,
                     unanswered=(), ns='/arm'):
    """
    Write a stream bag; return the image stamps.

    ``instruction_at``: index of the frame before which the instruction is recorded
    (None: no instruction topic); ``alter``: {frame: (dimension, added)} on the
    recorded action; ``unanswered``: frames recorded without a reply.
    """
    from rclpy.serialization import serialize_message
    from std_msgs.msg import String

    from tgrpo_ros.nodes import messages

    alter = alter or {}
    stamps = []
    with bag_io.SplitWriter(path) as writer:
        writer.add_topic(f'{ns}/camera/image', 'sensor_msgs/msg/Image',
                         [bag_io.rosbags_qos('best_effort', 'volatile', 1)])
        writer.add_topic(f'{ns}/action', 'sensor_msgs/msg/JointState')
        if instruction_at is not None:
            writer.add_topic(f'{ns}/instruction', STRING,
                             [bag_io.rosbags_qos('reliable', 'transient_local', 1)])
        for i, image in enumerate(frames['images']):
            stamp = STAMP0 + i * FRAME_NS
            stamps.append(stamp)
            if i == instruction_at:
                writer.write(f'{ns}/instruction', stamp + 1_000,
                             serialize_message(String(data=instruction)))
            msg = messages.numpy_to_image(image, 'rgb8', stamp=stamp, frame_id='camera')
            writer.write(f'{ns}/camera/image', stamp + 2_000, serialize_message(msg))
            if i in unanswered:
                continue
            action = frames['actions'][i].copy()
            if i in alter:
                action[alter[i][0]] += alter[i][1]
            reply = messages.encode_action(msg.header, action, frames['tokens'][i],
                                           frames['logps'][i], 1, INSTRUCTION)
            writer.write(f'{ns}/action', stamp + 50_000_000, serialize_message(reply))
    return stamps


def run_check(bag, p, *extra, report=None):
    report = report or bag.parent / (bag.name + '.json')
    status = replay.main(['check', str(bag), '--model', p['model'], '--adapter',
                          str(p['root'] / 'v1'), '--adapter-version', '1', '--report',
                          str(report), *extra])
    return status, json.loads(report.read_text()) if report.is_file() else None


def test_one_altered_action_fails_and_the_failure_names_its_frame(
        policy_episodes, greedy_frames, tmp_path, capsys):
    bag = tmp_path / 'altered'
    stamps = write_stream_bag(bag, greedy_frames, alter={7: (2, 0.5)})
    # On one frame of 24 a 0.5 error is 0.003 as a mean: --action-tol is a maximum.
    status, data = run_check(bag, policy_episodes, '--action-tol', '0.01')
    err = capsys.readouterr().err
    assert status == 3, err
    (line,) = [x for x in err.splitlines() if x.startswith('FAILED: action')]
    assert f'at step 7 (stamp {stamps[7]} ns, /arm), dimension dz' in line
    assert '1 of 24 step(s) over it' in line
    assert data['steps'] == 24 and data['actions']['max_abs_diff'] == pytest.approx(0.5)
    assert data['actions']['mean_abs_diff'] == pytest.approx(0.5 / 24 / 7)
    assert data['logp']['max_abs_diff'] < 1e-4
    entries = data['per_step']
    assert [e['index'] for e in entries] == list(range(24))
    assert [e['stamp_ns'] for e in entries] == stamps
    assert entries[7]['failed'] == ['action'] and not any(
        e['failed'] for i, e in enumerate(entries) if i != 7)
    assert entries[7]['action_abs_diff'][2] == pytest.approx(0.5)
    assert entries[7]['agreement'] == [1] * 7 and len(entries[0]['logp_abs_diff']) == 7
    assert data['accounting']['rescored'] == data['accounting']['frames'] == 24
    assert (tmp_path / 'altered.png').is_file()


def test_a_late_instruction_pairs_with_the_earlier_frames_and_the_report_says_so(
        policy_episodes, greedy_frames, tmp_path, capsys):
    bag = tmp_path / 'late'
    write_stream_bag(bag, greedy_frames, instruction_at=12)  # recorded 2.4 s late
    status, data = run_check(bag, policy_episodes)
    out = capsys.readouterr().out
    assert status == 0, out
    assert data['steps'] == 24 and data['accounting']['skipped'] == {}
    assert data['pairing']['unknown_instruction'] == 0
    (note,) = data['notes']
    assert '12 frame(s) recorded before the instruction arrived were paired' in note
    assert 'note: /arm: 12 frame(s)' in out


def test_a_bag_without_instruction_is_rescored_with_instruction_option(
        policy_episodes, greedy_frames, tmp_path, capsys):
    bag = tmp_path / 'none'
    write_stream_bag(bag, greedy_frames, instruction_at=None)
    status, _ = run_check(bag, policy_episodes)
    err = capsys.readouterr().err
    assert status == 1
    assert 'no step to re-score' in err and '24 unknown instruction' in err
    assert 'give it with --instruction TEXT' in err
    status, data = run_check(bag, policy_episodes, '--instruction', INSTRUCTION)
    assert status == 0, capsys.readouterr()
    assert data['steps'] == 24 and data['accounting']['skipped'] == {}
    # Another instruction than the replies': named, not re-scored against the wrong text.
    status, _ = run_check(bag, policy_episodes, '--instruction', 'open the drawer')
    assert status == 1 and '24 unknown instruction' in capsys.readouterr().err


def test_every_frame_is_accounted_for_and_skipped_frames_exit_4(
        policy_episodes, greedy_frames, tmp_path, capsys):
    bag = tmp_path / 'skipped'
    write_stream_bag(bag, greedy_frames, unanswered=(3, 20))
    status, data = run_check(bag, policy_episodes)
    err = capsys.readouterr().err
    assert status == 4, err
    assert data['accounting']['frames'] == 24 and data['accounting']['rescored'] == 22
    assert data['accounting']['skipped'] == {'no_reply': 2}
    assert 'INCOMPLETE: 22 of 24 recorded frame(s) re-scored: 2 no reply (8.3% skipped' in err
    status, data = run_check(bag, policy_episodes, '--max-skipped', '0.1')
    assert status == 0 and data['accounting']['within_limit']


# ---------------------------------------------------------------------- one reader

def test_info_prints_every_field_of_ros2_bag_info(tmp_path, capsys):
    write_strings(tmp_path / 'bag', 10, max_bytes=300)
    assert replay.main(['info', str(tmp_path / 'bag')]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    size = sum(p.stat().st_size for p in (tmp_path / 'bag').glob('*.mcap'))
    assert lines[0] == 'Files:             bag_0.mcap' and lines[1].strip() == 'bag_1.mcap'
    assert f'Bag size:          {size / 1024:.1f} KiB' in lines
    assert 'Storage id:        mcap' in lines and 'Messages:          10' in lines
    assert 'Duration:          0.000000009s' in lines  # receive times 1000..1009 ns
    assert any(x.startswith('Start:') and x.endswith('(0.000001000)') for x in lines)
    assert any(x.startswith('End:') and x.endswith('(0.000001009)') for x in lines)
    assert any(x.startswith('ROS Distro:') for x in lines)
    assert ('Topic information: Topic: /a | Type: std_msgs/msg/String | Count: 5 | '
            'Serialization Format: cdr | QoS: reliable, transient_local, depth 1') in lines
    assert 'Services:          0' in lines


def test_listing_commands_read_through_the_one_reader(tmp_path, capsys):
    from test_messages import make_episode

    bag = tmp_path / 'bag'
    with bag_io.SplitWriter(bag, max_bytes=1) as writer:  # one episode per file
        writer.add_topic(topics.EPISODE_TOPIC, episode_bags.EPISODE_TYPE)
        for i in range(2):
            writer.write(topics.EPISODE_TOPIC, 10 + i, episode_bags._episode_cdr(
                make_episode(length=2, size=16, seed=i, group_id=i, episode_id=f'/sim0/{i}'),
                bag_io.typestore()))
    # A single storage file reads on its own.
    assert replay.main([str(bag / 'bag_0.mcap')]) == 0
    assert '1 episode(s) on /tgrpo/episodes' in capsys.readouterr().out
    second = bag / 'bag_1.mcap'
    second.write_bytes(second.read_bytes()[:600])  # cut inside the second episode
    assert replay.main([str(bag)]) == 4  # what reads is listed, the damage is named
    captured = capsys.readouterr()
    assert '/sim0/0: group 0' in captured.out and '1 episode(s) on' in captured.out
    assert 'bag_1.mcap: not a complete MCAP file' in captured.err
    assert 'Traceback' not in captured.err
    images = tmp_path / 'images'
    from rclpy.serialization import serialize_message

    from tgrpo_ros.nodes import messages
    with bag_io.SplitWriter(images) as writer:
        writer.add_topic('/cam', 'sensor_msgs/msg/Image')
        for i in range(3):
            msg = messages.numpy_to_image(np.full((8, 8, 3), i, np.uint8), stamp=100 + i)
            writer.write('/cam', 100 + i, serialize_message(msg))
    only = images / 'images_0.mcap'
    only.write_bytes(only.read_bytes()[:-100])
    assert replay.main([str(only), '--images', '/cam']) == 4
    captured = capsys.readouterr()
    assert '3 image(s) on /cam' in captured.out and 'not a complete MCAP file' in captured.err


def test_errors_name_their_cause(policy_episodes, tmp_path, capsys):
    junk = tmp_path / 'junk.mcap'
    junk.write_bytes(b'not an mcap file' * 6)
    for argv in (['check', str(junk), '--model', policy_episodes['model']],
                 ['info', str(junk)], [str(junk)]):
        assert replay.main(argv) == 1
        err = capsys.readouterr().err
        assert 'does not start with the MCAP magic' in err, argv
    write_strings(tmp_path / 'bag', 4)
    short = tmp_path / 'short.mcap'  # the first 100 B of a bag
    short.write_bytes((tmp_path / 'bag' / 'bag_0.mcap').read_bytes()[:100])
    assert replay.main(['check', str(short), '--model', policy_episodes['model']]) == 1
    err = capsys.readouterr().err
    assert 'not a complete MCAP file' in err and ' of 100 (' in err
    assert 'recovered 0 message(s)' in err
    (tmp_path / 'bag' / 'metadata.yaml').write_text('rosbag2: [unclosed\n')
    assert replay.main(['info', str(tmp_path / 'bag')]) == 4
    err = capsys.readouterr().err
    assert 'metadata.yaml does not parse as YAML' in err and 'is missing' not in err


# ---------------------------------------------------------------------- play

def test_play_selects_every_topic_by_default_and_filters_as_ros2_bag_play(tmp_path):
    from tgrpo_ros.bags import playback

    names = {'/arm/camera/image': 1, '/arm/action': 1, '/arm/instruction': 1, '/estop': 1}
    assert playback.select_topics(names) == (sorted(names), [])
    assert playback.select_topics(names, ['/estop', '/nope']) == (['/estop'], ['/nope'])
    assert playback.select_topics(names, regex='^/arm/', exclude_regex='action$') == (
        ['/arm/camera/image', '/arm/instruction'], [])
    assert playback.select_topics(names, exclude_topics=['/estop'])[0] == [
        '/arm/action', '/arm/camera/image', '/arm/instruction']
    with pytest.raises(ValueError, match="--regex '\\(' is not a regular expression"):
        playback.select_topics(names, regex='(')
    path = tmp_path / 'qos.yaml'
    path.write_text('/arm/camera/image: {reliability: best_effort, depth: 1}\n'
                    '/estop: {durability: transient_local}\n')
    overrides = playback.load_qos_overrides(path)
    assert overrides == {'/arm/camera/image': ('best_effort', None, 1, None),
                         '/estop': (None, 'transient_local', None, None)}
    recorded = bag_io.TopicInfo('/estop', STRING, qos=[bag_io.rosbags_qos('reliable',
                                                                          'volatile', 7)])
    assert playback.play_qos(recorded, overrides['/estop']) == (
        'reliable', 'transient_local', 7, 'keep_last')
    path.write_text('/estop: {durability: sometimes}\n')
    with pytest.raises(ValueError, match="topic '/estop': durability 'sometimes' is not one"):
        playback.load_qos_overrides(path)
    path.write_text('/estop: {reliable: true}\n')
    with pytest.raises(ValueError, match="unknown keys \\['reliable'\\]"):
        playback.load_qos_overrides(path)


def test_play_timeline_pauses_steps_and_changes_rate():
    from tgrpo_ros.bags import playback

    line = playback.Timeline(rate=2.0, paused=True)
    line.start(1_000_000_000, now=100.0)
    assert line.bag_time(105.0) == 1_000_000_000  # paused: the bag time stands still
    line.play_next(1_400_000_000, now=106.0)       # the next message, due now
    assert line.due(1_400_000_000) == 106.0 and line.bag_time(107.0) == 1_400_000_000
    assert line.resume(110.0) and not line.paused
    assert line.due(1_600_000_000) == pytest.approx(110.1)  # 0.2 s of bag at rate 2
    assert line.bag_time(110.05) == 1_500_000_000
    line.set_rate(1.0, now=110.05)
    assert line.due(1_600_000_000) == pytest.approx(110.15)
    before = line.bag_time(111.0)
    assert line.toggle(111.0) and not line.toggle(112.0)
    assert line.bag_time(112.0) == before == 2_450_000_000  # the pause took no bag time


def string_bag(path, topics_and_times):
    with bag_io.SplitWriter(path) as writer:
        for topic in sorted({t for t, _ in topics_and_times}):
            writer.add_topic(topic, STRING, [bag_io.rosbags_qos('reliable', 'volatile', 10)])
        for topic, stamp in topics_and_times:
            writer.write(topic, stamp, string_cdr(f'{topic} {stamp}'))


@pytest.mark.ros
def test_play_plays_all_topics_pauses_steps_and_resumes_by_service(
        ros_nodes, ros_client, tmp_path):
    import sys

    from rclpy.qos import DurabilityPolicy, QoSProfile
    from std_msgs.msg import String
    from std_srvs.srv import Trigger

    t0 = 1_764_856_800_000_000_000
    plan = [('/a', t0 + i * 50_000_000) for i in range(6)] + [
        ('/b', t0 + 25_000_000 + i * 100_000_000) for i in range(3)] + [('/c', t0 + 1)]
    bag = tmp_path / 'bag'
    string_bag(bag, plan)
    overrides = tmp_path / 'qos.yaml'
    overrides.write_text('/a: {durability: transient_local, depth: 20}\n')
    node = ros_client.node
    got = []
    for topic in ('/a', '/b'):
        node.create_subscription(String, topic, lambda msg: got.append(msg.data),
                                 QoSProfile(depth=50))
    player = ros_nodes.start([sys.executable, '-m', 'tgrpo_ros.nodes.replay'], args=[
        'play', str(bag), '--start-paused', '--exclude-topics', '/c',
        '--qos-profile-overrides-path', str(overrides), '--wait-for-subscribers', '60'])
    client = node.create_client(Trigger, '/tgrpo_replay_play/play_next')
    ros_client.wait_for_service(client, timeout=120.0)
    assert not node.get_publishers_info_by_topic('/c')  # excluded
    offered = node.get_publishers_info_by_topic('/a')[0].qos_profile
    assert offered.durability == DurabilityPolicy.TRANSIENT_LOCAL  # the override file
    for count in (1, 2):
        reply = ros_client.call(client, Trigger.Request(), timeout=60.0)
        assert reply.success, reply.message
        ros_client.spin_until(lambda: len(got) == count, 60.0, f'message {count}')
    assert got == [f'/a {t0}', f'/b {t0 + 25_000_000}']  # in recorded order
    is_paused = node.create_client(Trigger, '/tgrpo_replay_play/is_paused')
    assert ros_client.call(is_paused, Trigger.Request(), timeout=60.0).message == 'true'
    assert len(got) == 2  # still paused: nothing else was played
    resume = node.create_client(Trigger, '/tgrpo_replay_play/resume')
    assert ros_client.call(resume, Trigger.Request(), timeout=60.0).success
    ros_client.spin_until(lambda: len(got) == 9, 60.0, 'the rest of the bag')
    ros_client.spin_until(lambda: not player.alive, 60.0, 'the player to finish')
    assert player.returncode == 0, player.log_text()[-2000:]
    assert 'played 9 message(s)' in player.log_text()
    assert sorted(got) == sorted(f'{t} {s}' for t, s in plan if t != '/c')


def test_play_keyboard_reads_rosbag2_keys_from_a_terminal():
    import os
    import time

    from tgrpo_ros.nodes.bag_play import Keyboard

    leader, follower = os.openpty()
    with os.fdopen(follower, 'rb', buffering=0) as terminal:
        keyboard = Keyboard(True, terminal)
        try:
            assert keyboard.actions() == []
            os.write(leader, b' \x1b[Cq\x1b[A\x1b[B')
            got, deadline = [], time.monotonic() + 30.0  # the terminal passes keys on async
            while len(got) < 4 and time.monotonic() < deadline:
                got += keyboard.actions()
                time.sleep(0.01)
            assert got == ['toggle_paused', 'play_next', 'faster', 'slower']
        finally:
            keyboard.close()
        assert Keyboard(False, terminal).fd is None  # --disable-keyboard-controls
    os.close(leader)


def test_replay_help_lists_its_subcommands(capsys):
    with pytest.raises(SystemExit) as exit_info:
        replay.main(['--help'])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for command in ('info', 'check', 'play'):
        assert f'\n  {command}  ' in out, command


def test_the_bag_layer_reads_the_topic_names_the_nodes_use():
    from tgrpo_ros.bags import topic_names

    for name in ('CAMERA_TOPIC', 'INSTRUCTION_TOPIC', 'ACTION_TOPIC', 'EPISODE_TOPIC',
                 'BRIDGE_EPISODE_DEPTH'):
        assert getattr(topic_names, name) == getattr(topics, name), name
    assert topic_names.client_topic('sim0', 'action') == topics.client_topic('sim0', 'action')
