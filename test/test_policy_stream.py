"""policy_server's stream mode over DDS: a best-effort camera, no queueing, instruction cap."""

import json

import numpy as np
import pytest

from tgrpo_ros.nodes import messages, topics

INSTRUCTION = 'pick up the alphabet soup and place it in the basket'
START_TIMEOUT = 90.0  # s: the server imports torch and loads the stand-in first
LONG_INSTRUCTION = 'pick up the soup ' * 1200  # 20,400 characters


@pytest.fixture(scope='module')
def standin():
    """Return the stand-in's path and its greedy answer to one camera frame, preprocessed."""
    import torch

    from tgrpo_ros.policy import cached_standin, contract, load_policy

    torch.set_num_threads(1)
    model_path = cached_standin(seed=0)
    policy = load_policy(model_path)
    frame = np.random.default_rng(3).integers(0, 256, (96, 160, 3), dtype=np.uint8)
    camera = policy.sample([contract.preprocess_camera_image(frame)], [INSTRUCTION],
                           greedy=True)
    libero = policy.sample([contract.preprocess_libero_image(frame)], [INSTRUCTION],
                           greedy=True)
    return {'model_path': model_path, 'frame': frame, 'camera': camera, 'libero': libero}


class StreamClient:
    """A best-effort camera, a latched instruction, and listeners for actions and errors."""

    def __init__(self, ros_client, namespaces):
        from rclpy.qos import qos_profile_sensor_data
        from sensor_msgs.msg import Image, JointState
        from std_msgs.msg import String

        self.ros = ros_client
        node = ros_client.node
        self.cameras, self.instructions, self.subs = {}, {}, []
        self.replies = {ns: [] for ns in namespaces}
        self.errors = []
        for ns in namespaces:
            # A camera driver's QoS: best effort (sensor data).
            self.cameras[ns] = node.create_publisher(
                Image, topics.client_topic(ns, topics.CAMERA_TOPIC), qos_profile_sensor_data)
            self.instructions[ns] = node.create_publisher(
                String, topics.client_topic(ns, topics.INSTRUCTION_TOPIC),
                topics.LATCHED_INSTRUCTION_QOS)
            self.subs.append(node.create_subscription(
                JointState, topics.client_topic(ns, topics.ACTION_TOPIC),
                lambda msg, ns=ns: self.replies[ns].append(messages.decode_action(msg)),
                topics.ACTION_QOS))
        self.subs.append(node.create_subscription(
            String, topics.SERVER_ERRORS_TOPIC,
            lambda msg: self.errors.append(json.loads(msg.data)), topics.DIAGNOSTICS_QOS))
        for ns in namespaces:
            ros_client.wait_for_subscribers(self.cameras[ns], timeout=START_TIMEOUT)
        for sub in self.subs:
            ros_client.wait_for_publishers(sub, timeout=START_TIMEOUT)
        self.stamp = 1_000_000_000  # ns

    def instruct(self, ns, text):
        from std_msgs.msg import String
        self.instructions[ns].publish(String(data=text))

    def frame(self, ns, image, encoding='rgb8'):
        """Publish one frame with a new stamp; return the stamp (ns)."""
        self.stamp += 10_000_000
        self.cameras[ns].publish(messages.numpy_to_image(image, encoding, stamp=self.stamp,
                                                         frame_id='camera_color'))
        return self.stamp

    def answer(self, ns, image, timeout=30.0, encoding='rgb8'):
        """Publish frames every 0.5 s until one is answered; return that reply."""
        sent = []

        def found():
            return [r for r in self.replies[ns] if r.stamp_ns in sent]

        self.ros.publish_until(lambda: sent.append(self.frame(ns, image, encoding)), found,
                               timeout, f'an action for {ns}', period=0.5)
        return found()[0]


def start_server(ros_nodes, setup, clients, **parameters):
    values = {'model_path': setup['model_path'], 'clients': clients, 'mode': 'stream',
              'preprocessing': 'camera', 'greedy': True}
    values.update(parameters)
    return ros_nodes.start('policy_server', name='policy_server', parameters=values)


@pytest.mark.ros
def test_stream_hears_a_best_effort_camera_and_answers_only_the_newest_frames(
        ros_nodes, ros_client, standin):
    server = start_server(ros_nodes, standin, ['/arm', '/cam2'])
    client = StreamClient(ros_client, ['/arm', '/cam2'])
    client.instruct('/arm', INSTRUCTION)  # latched: published once
    frame = standin['frame']

    # The server warmed up before it subscribed (without it the first frame's inference
    # took ~2 s and the frames meanwhile were dropped). How many frames of a camera it
    # then answers depends on the machine's speed, so the test only reads the log.
    assert 'warmed up in' in server.log_text()

    # Any size, rgb8 or bgr8, preprocessed as a real camera: the greedy answer of the
    # stand-in to preprocess_camera_image(frame), not to the LIBERO view.
    reply = client.answer('/arm', frame, timeout=START_TIMEOUT)
    assert reply.frame_id == 'camera_color'
    expected = standin['camera'].action_tokens[0].numpy()
    np.testing.assert_array_equal(reply.action_tokens, expected)
    assert not np.array_equal(expected, standin['libero'].action_tokens[0].numpy())
    bgr = client.answer('/arm', frame[:, :, ::-1].copy(), encoding='bgr8')
    np.testing.assert_array_equal(bgr.action_tokens, expected)

    # A burst: 40 frames back to back. Replies are stamped with published frames, in
    # order, never twice, and the newest frame of the burst is answered. How many are
    # answered depends on the machine's speed (the burst against one inference), so
    # that is not asserted (a share bound here failed in CI on a loaded machine).
    client.ros.spin_for(1.0)
    client.replies['/arm'].clear()
    burst = [client.frame('/arm', frame) for _ in range(40)]
    client.ros.spin_until(lambda: any(r.stamp_ns == burst[-1] for r in client.replies['/arm']),
                          START_TIMEOUT, 'the action for the last frame of the burst')
    client.ros.spin_for(2.0)  # anything still queued would arrive now
    stamps = [r.stamp_ns for r in client.replies['/arm']]
    assert set(stamps) <= set(burst), 'a reply stamped with a frame that was not published'
    assert stamps == sorted(set(stamps)), f'replies out of order or repeated: {stamps}'
    assert stamps[-1] == burst[-1]
    print(f'burst: {len(stamps)} replies to {len(burst)} frames')

    # Frames never queue, shown by events: 40 frames reach /cam2 before it has an
    # instruction, then a malformed one; its error on the errors topic says the server
    # has taken (or DDS dropped) every frame before it. Once instructed, /cam2 gets at
    # most one of them answered (the newest it kept), then a fresh frame's answer.
    cam2 = [client.frame('/cam2', frame) for _ in range(40)]
    malformed = messages.numpy_to_image(frame)
    malformed.encoding = 'mono16'
    client.ros.publish_until(lambda: client.cameras['/cam2'].publish(malformed),
                             lambda: any(e['client'] == '/cam2' for e in client.errors),
                             START_TIMEOUT, 'the error for the malformed /cam2 frame')
    assert not client.replies['/cam2'], 'a frame answered without an instruction'
    client.instruct('/cam2', INSTRUCTION)
    fresh = client.answer('/cam2', frame, timeout=START_TIMEOUT)
    kept = [r.stamp_ns for r in client.replies['/cam2'] if r.stamp_ns in cam2]
    assert len(kept) <= 1 and (not kept or kept[0] == client.replies['/cam2'][0].stamp_ns), (
        f'{len(kept)} of 40 queued frames answered')
    assert fresh.stamp_ns > cam2[-1]
    assert server.returncode is None


@pytest.mark.ros
def test_over_long_instructions_are_refused_and_the_server_keeps_serving(
        ros_nodes, ros_client, standin):
    start_server(ros_nodes, standin, ['/c0', '/c1'], max_instruction_chars=200)
    client = StreamClient(ros_client, ['/c0', '/c1'])
    frame = standin['frame']
    client.instruct('/c0', INSTRUCTION)
    client.instruct('/c1', INSTRUCTION)
    client.answer('/c0', frame, timeout=START_TIMEOUT)
    client.answer('/c1', frame)

    client.instruct('/c1', LONG_INSTRUCTION)
    client.ros.spin_until(lambda: client.errors, START_TIMEOUT,
                          'the refusal of the long instruction')
    (error,) = client.errors
    assert error['client'] == '/c1'
    assert f'{len(LONG_INSTRUCTION)} characters, more than max_instruction_chars (200)' \
        in error['error']
    # /c1 gets nothing until a valid instruction; /c0 is served at once meanwhile.
    client.replies['/c1'].clear()
    sent = [client.frame('/c1', frame) for _ in range(3)]
    reply = client.answer('/c0', frame, timeout=START_TIMEOUT)
    np.testing.assert_array_equal(reply.action_tokens, standin['camera'].action_tokens[0])
    client.ros.spin_for(1.0)
    assert not [r for r in client.replies['/c1'] if r.stamp_ns in sent]
    client.instruct('/c1', INSTRUCTION)
    client.answer('/c1', frame, timeout=START_TIMEOUT)


@pytest.mark.ros
def test_bridge_mode_refuses_over_long_instructions(ros_nodes, ros_client, standin):
    from tgrpo_ros.testing.ros_client import request_action

    from sensor_msgs.msg import Image, JointState
    from std_msgs.msg import String

    start_server(ros_nodes, standin, ['/sim0'], mode='bridge', preprocessing='none')
    node = ros_client.node
    errors, replies = [], []
    node.create_subscription(String, topics.SERVER_ERRORS_TOPIC,
                             lambda msg: errors.append(json.loads(msg.data)),
                             topics.DIAGNOSTICS_QOS)
    image = np.zeros((224, 224, 3), dtype=np.uint8)
    ok = request_action(ros_client, '/sim0', image, INSTRUCTION, 10**9, timeout=START_TIMEOUT)
    assert ok.stamp_ns == 10**9
    # The refusal is published when the instruction arrives. A volatile message sent
    # before the server has matched a new publisher back is dropped, so the
    # instruction is repeated until the refusal comes (the CI flake this test had).
    text_pub = node.create_publisher(
        String, topics.client_topic('/sim0', topics.INSTRUCTION_TOPIC), topics.INSTRUCTION_QOS)
    image_pub = node.create_publisher(
        Image, topics.client_topic('/sim0', topics.CAMERA_TOPIC), topics.IMAGE_QOS)
    node.create_subscription(JointState, topics.client_topic('/sim0', topics.ACTION_TOPIC),
                             lambda msg: replies.append(messages.decode_action(msg)),
                             topics.ACTION_QOS)
    ros_client.wait_for_subscribers(text_pub)
    ros_client.wait_for_subscribers(image_pub)
    ros_client.publish_until(lambda: text_pub.publish(String(data=LONG_INSTRUCTION)),
                             lambda: errors, START_TIMEOUT, 'the refusal on the errors topic')
    assert 'more than max_instruction_chars (512)' in errors[-1]['error']
    assert errors[-1]['client'] == '/sim0'
    # Refused: images are dropped until a valid instruction arrives, not answered for
    # the previous instruction (the refusal has already been processed, so no image
    # published from here on can overtake it).
    for k in range(3):
        image_pub.publish(messages.numpy_to_image(image, stamp=(2 * 10**9) + k))
        ros_client.spin_for(0.5)
    ros_client.spin_for(1.0)
    assert not [r for r in replies if r.stamp_ns >= 2 * 10**9]
    # The server keeps serving: a valid request is answered, with its own stamp.
    again = request_action(ros_client, '/sim0', image, INSTRUCTION, 3 * 10**9,
                           timeout=START_TIMEOUT)
    assert again.stamp_ns == 3 * 10**9
    assert again.instruction_crc32 == messages.instruction_crc32(INSTRUCTION)


def test_stream_parameters_are_checked():
    from tgrpo_ros.nodes.policy_server import PolicyServerConfig

    with pytest.raises(ValueError, match=r"unknown mode 'streaming'; choose one of "
                       r"\['bridge', 'stream'\]"):
        PolicyServerConfig(mode='streaming')
    with pytest.raises(ValueError, match='unknown preprocessing'):
        PolicyServerConfig(preprocessing='jpeg')
    with pytest.raises(ValueError, match='parameter instruction: the instruction has 600'):
        PolicyServerConfig(instruction='x' * 600)
    assert PolicyServerConfig(mode='stream', instruction='pick').instruction == 'pick'
