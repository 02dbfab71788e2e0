"""policy_server as a real process over DDS: actions, adapter pushes, rejections, batching."""

import json
import os
import shutil

import numpy as np
import pytest

from tgrpo_ros.nodes import messages, topics
from tgrpo_ros.testing.policy_helpers import perturb_trainable

INSTRUCTION = 'pick up the alphabet soup and place it in the basket'
START_TIMEOUT = 90.0  # s: the server imports torch and loads the stand-in first


@pytest.fixture(scope='module')
def checkpoint_and_adapter(tmp_path_factory):
    """
    Build a stand-in, an adapter root with a non-trivial adapter 'v1', and references.

    The references are the greedy outputs of base and adapter on one image.
    """
    import torch

    from tgrpo_ros.policy import cached_standin, load_policy

    torch.set_num_threads(1)
    model_path = cached_standin(seed=0)
    root = tmp_path_factory.mktemp('adapters')
    policy = load_policy(model_path, trainable='lora+action_head', adapter_root=str(root))
    image = np.random.default_rng(7).integers(0, 256, (224, 224, 3), dtype=np.uint8)
    base = policy.sample([image], [INSTRUCTION], greedy=True)
    perturb_trainable(policy, seed=3, scale=0.5)
    policy.save_adapter(str(root / 'v1'))
    tuned = policy.sample([image], [INSTRUCTION], greedy=True)
    assert not torch.equal(base.action_tokens, tuned.action_tokens)
    return {'model_path': model_path, 'root': root, 'image': image,
            'base': base, 'tuned': tuned}


class ServerClient:
    """Talks to one policy_server as the sim bridges of ``namespaces`` would."""

    def __init__(self, ros_client, namespaces):
        from rcl_interfaces.srv import SetParameters, SetParametersAtomically
        from sensor_msgs.msg import Image, JointState
        from std_msgs.msg import String

        self.ros = ros_client
        node = ros_client.node
        self.replies = {ns: [] for ns in namespaces}
        self.stats = []
        self.images, self.instructions, self.subs = {}, {}, []
        for ns in namespaces:
            self.images[ns] = node.create_publisher(
                Image, topics.client_topic(ns, topics.CAMERA_TOPIC), topics.IMAGE_QOS)
            self.instructions[ns] = node.create_publisher(
                String, topics.client_topic(ns, topics.INSTRUCTION_TOPIC),
                topics.INSTRUCTION_QOS)
            self.subs.append(node.create_subscription(
                JointState, topics.client_topic(ns, topics.ACTION_TOPIC),
                lambda msg, ns=ns: self.replies[ns].append(messages.decode_action(msg)),
                topics.ACTION_QOS))
        self.subs.append(node.create_subscription(
            String, topics.SERVER_STATS_TOPIC, lambda msg: self.stats.append(json.loads(msg.data)),
            topics.DIAGNOSTICS_QOS))
        self.set_params = node.create_client(SetParameters, '/policy_server/set_parameters')
        self.set_params_atomically = node.create_client(
            SetParametersAtomically, '/policy_server/set_parameters_atomically')
        for ns in namespaces:
            ros_client.wait_for_subscribers(self.images[ns], timeout=START_TIMEOUT)
            ros_client.wait_for_subscribers(self.instructions[ns], timeout=START_TIMEOUT)
        for sub in self.subs:
            ros_client.wait_for_publishers(sub, timeout=START_TIMEOUT)
        self.stamp = 1_000_000_000  # ns, unique per request
        self.handshake(namespaces)

    def handshake(self, namespaces):
        """
        One round trip per client before the test proper, repeated until answered.

        Matching is seen on this side first; a request sent before the server has
        matched it back can be dropped. After one answered request both ends have
        matched. The handshake's replies and batch statistics are then dropped.
        """
        from std_msgs.msg import String

        image = np.zeros((128, 160, 3), dtype=np.uint8)
        stamps = {ns: self.stamp + i + 1 for i, ns in enumerate(namespaces)}
        requests = {ns: messages.numpy_to_image(image, stamp=stamps[ns]) for ns in namespaces}

        def answered(ns):
            return any(r.stamp_ns == stamps[ns] for r in self.replies[ns])

        def publish():
            for ns in namespaces:
                if not answered(ns):
                    self.instructions[ns].publish(String(data=INSTRUCTION))
                    self.images[ns].publish(requests[ns])
        self.ros.publish_until(publish, lambda: all(answered(ns) for ns in namespaces),
                               START_TIMEOUT, 'the handshake replies', period=5.0)
        # The statistics of the batches that answered follow the replies: wait for them,
        # so that none arrives late among the test's own.
        self.ros.spin_until(
            lambda: set(namespaces) <= {ns for stat in self.stats for ns in stat['clients']},
            START_TIMEOUT, 'the batch statistics of the handshake')
        self.stamp += len(namespaces)
        for replies in self.replies.values():
            replies.clear()
        self.stats.clear()

    def send(self, ns, image, instruction=INSTRUCTION, encoding='rgb8'):
        """Publish one request; return its stamp (ns)."""
        from std_msgs.msg import String

        self.stamp += 1_000_000
        self.instructions[ns].publish(String(data=instruction))
        self.images[ns].publish(messages.numpy_to_image(image, encoding, stamp=self.stamp,
                                                        frame_id='agentview'))
        return self.stamp

    def reply(self, ns, stamp, timeout=30.0):
        """Wait for and return the reply to the request stamped ``stamp``."""
        def found():
            return [r for r in self.replies[ns] if r.stamp_ns == stamp]
        self.ros.spin_until(found, timeout, f'the action for {ns} stamp {stamp}')
        return found()[0]

    def request(self, ns, image, **kwargs):
        return self.reply(ns, self.send(ns, image, **kwargs))

    def push(self, **values):
        """Push parameters in one SetParametersAtomically request; return its one result."""
        from rcl_interfaces.srv import SetParametersAtomically

        request = SetParametersAtomically.Request(parameters=_parameter_msgs(values))
        return self.ros.call(self.set_params_atomically, request, timeout=30.0).result

    def set_one_by_one(self, **values):
        """Set parameters with plain SetParameters (applied one at a time); return results."""
        from rcl_interfaces.srv import SetParameters

        request = SetParameters.Request(parameters=_parameter_msgs(values))
        return self.ros.call(self.set_params, request, timeout=30.0).results


def _parameter_msgs(values):
    from rclpy.parameter import Parameter
    return [Parameter(name, value=value).to_parameter_msg() for name, value in values.items()]


def start_server(ros_nodes, setup, clients, **parameters):
    values = {'model_path': setup['model_path'], 'adapter_root': str(setup['root']),
              'clients': clients, 'greedy': True, 'max_batch_size': 8, 'max_wait_ms': 50.0}
    values.update(parameters)
    return ros_nodes.start('policy_server', name='policy_server', parameters=values)


def assert_reply_matches(reply, expected):
    np.testing.assert_array_equal(reply.action_tokens, expected.action_tokens[0].numpy())
    np.testing.assert_allclose(reply.log_probs, expected.log_probs[0].numpy(), atol=1e-5)
    np.testing.assert_allclose(reply.action, expected.actions[0], atol=1e-9)


@pytest.mark.ros
@pytest.mark.slow
def test_adapter_push_changes_served_version_and_actions(
        ros_nodes, ros_client, checkpoint_and_adapter):
    setup = checkpoint_and_adapter
    server = start_server(ros_nodes, setup, ['/c0'])
    client = ServerClient(ros_client, ['/c0'])
    image = setup['image']

    before = client.request('/c0', image)
    assert before.adapter_version == -1
    assert before.frame_id == 'agentview'
    assert before.instruction_crc32 == messages.instruction_crc32(INSTRUCTION)
    assert_reply_matches(before, setup['base'])
    # bgr8 on the wire is the same picture: the same greedy answer.
    bgr = client.request('/c0', image, encoding='bgr8')
    np.testing.assert_array_equal(bgr.action_tokens, before.action_tokens)

    result = client.push(adapter_version=1, adapter_path=str(setup['root'] / 'v1'))
    assert result.successful, result.reason
    after = client.request('/c0', image)
    assert after.adapter_version == 1
    assert_reply_matches(after, setup['tuned'])
    assert not np.array_equal(after.action_tokens, before.action_tokens)
    assert 'hot-swapped adapter version -1 -> 1' in server.log_text()
    assert server.alive


@pytest.mark.ros
@pytest.mark.slow
def test_bad_inputs_are_refused_and_counted_and_the_old_adapter_keeps_serving(
        ros_nodes, ros_client, checkpoint_and_adapter, tmp_path):
    """
    One bad value (or more) of each input: adapter pushes, images, an instruction, adapter bytes.

    Each is refused with an error naming the problem (log, errors topic), counted per
    input in ~/status and /diagnostics, and the server keeps serving adapter 1.
    """
    from diagnostic_msgs.msg import DiagnosticArray
    from std_msgs.msg import String, UInt8MultiArray

    setup = checkpoint_and_adapter
    root = setup['root']
    corrupt = root / 'corrupt'
    if not corrupt.exists():
        shutil.copytree(root / 'v1', corrupt)
        with open(corrupt / 'adapter_model.safetensors', 'r+b') as stream:
            stream.truncate(os.path.getsize(corrupt / 'adapter_model.safetensors') // 2)
    outside = tmp_path / 'outside'
    shutil.copytree(root / 'v1', outside)
    server = start_server(ros_nodes, setup, ['/c0'], adapter_path=str(root / 'v1'),
                          adapter_version=1)
    node = ros_client.node
    errors, statuses, diagnostics = [], [], []
    subs = [node.create_subscription(String, topics.SERVER_ERRORS_TOPIC,
                                     lambda msg: errors.append(json.loads(msg.data)),
                                     topics.DIAGNOSTICS_QOS),
            node.create_subscription(String, '/policy_server/status',
                                     lambda msg: statuses.append(json.loads(msg.data)),
                                     topics.DIAGNOSTICS_QOS),
            node.create_subscription(DiagnosticArray, topics.DIAGNOSTICS_TOPIC,
                                     diagnostics.append, topics.DIAGNOSTICS_QOS)]
    for sub in subs:
        ros_client.wait_for_publishers(sub, timeout=START_TIMEOUT)
    client = ServerClient(ros_client, ['/c0'])
    image = setup['image']
    first = client.request('/c0', image)
    assert first.adapter_version == 1
    assert_reply_matches(first, setup['tuned'])

    cases = [
        (str(outside), 'is outside the adapter root'),
        (str(root / 'missing'), 'does not exist'),
        (str(corrupt), 'corrupt adapter weights'),
    ]
    for version, (path, reason) in enumerate(cases, start=2):
        result = client.push(adapter_version=version, adapter_path=path)
        assert not result.successful, path
        assert reason in result.reason, result.reason
        served = client.request('/c0', image)
        assert served.adapter_version == 1
        np.testing.assert_array_equal(served.action_tokens, first.action_tokens)
    refused_pushes = len(cases)
    # Re-pushing the adapter being served is a no-op success (a resumed learner does it),
    # atomically or one parameter at a time.
    assert client.push(adapter_version=1, adapter_path=str(root / 'v1')).successful
    results = client.set_one_by_one(adapter_version=1, adapter_path=str(root / 'v1'))
    assert all(result.successful for result in results)
    # A new adapter through plain SetParameters (one parameter at a time), in either
    # order, is refused with the rule; so is a new path with the served version.
    for values in ({'adapter_version': 5, 'adapter_path': str(root / 'v1')},
                   {'adapter_path': str(outside), 'adapter_version': 5}):
        results = client.set_one_by_one(**values)
        assert not results[0].successful
        assert 'in one ~/set_parameters_atomically request' in results[0].reason
        refused_pushes += sum(not result.successful for result in results)
    result = client.push(adapter_version=1, adapter_path=str(outside))
    assert not result.successful and 'a new adapter needs a new version' in result.reason
    refused_pushes += 1
    assert client.request('/c0', image).adapter_version == 1
    # A malformed image is dropped with a clear log line; the server keeps serving.
    from sensor_msgs.msg import Image
    bad = Image(height=224, width=224, encoding='rgb8', step=672, data=bytes(1000))
    client.images['/c0'].publish(bad)
    bad_encoding = messages.numpy_to_image(image)
    bad_encoding.encoding = 'mono16'
    client.images['/c0'].publish(bad_encoding)
    ros_client.spin_until(lambda: 'mono16' in server.log_text(), 20.0, 'the error log')
    log = server.log_text()
    assert 'image data is truncated: 1000 B, expected step 672 B x height 224' in log
    assert "unsupported image encoding 'mono16'" in log
    last = client.request('/c0', image)
    assert last.adapter_version == 1 and server.alive
    # An empty instruction: refused; the client is served again once a valid one comes.
    client.instructions['/c0'].publish(String(data='  '))
    ros_client.spin_until(lambda: any(e['input'] == 'instruction' for e in errors), 20.0,
                          'the refusal of the empty instruction')
    stamps = []
    ros_client.publish_until(lambda: stamps.append(client.send('/c0', image)),
                             lambda: any(r.stamp_ns in stamps for r in client.replies['/c0']),
                             30.0, 'a reply once the instruction is valid again')
    # Adapter bytes that are not an adapter message: refused, version 1 keeps serving.
    # (Transient local: delivered once matched, so it is published once and counted once.)
    adapters = node.create_publisher(UInt8MultiArray, topics.ADAPTER_TOPIC, topics.ADAPTER_QOS)
    adapters.publish(UInt8MultiArray(data=list(b'\x80\x04junk')))
    ros_client.spin_until(lambda: any(e['input'] == 'adapter_bytes' for e in errors), 20.0,
                          'the refusal of the adapter bytes')
    assert client.request('/c0', image).adapter_version == 1

    expected = {'image': 2, 'instruction': 1, 'adapter_bytes': 1,
                'adapter_push': refused_pushes}
    ros_client.spin_until(lambda: statuses and statuses[-1]['bad_input'] == expected, 10.0,
                          f'bad_input {expected} in ~/status')
    by_input = {}
    for error in errors:
        by_input.setdefault(error['input'], []).append(error['error'])
    assert {name: len(texts) for name, texts in by_input.items()} == expected
    assert 'is outside the adapter root' in by_input['adapter_push'][0]
    assert 'still serving version 1' in by_input['adapter_push'][0]
    assert 'image data is truncated' in by_input['image'][0]
    assert by_input['instruction'] == ['refused the instruction: the instruction is empty']
    assert 'message is not an encoded adapter' in by_input['adapter_bytes'][0]
    status = statuses[-1]
    assert status['adapter_version'] == 1 and status['level'] in ('OK', 'WARN')
    assert 'message is not an encoded adapter' in status['last_bad_input']['adapter_bytes']

    def diagnosed():
        ours = [d.status[0] for d in diagnostics if d.status[0].name == '/policy_server']
        return {kv.key: kv.value for kv in ours[-1].values} if ours else {}
    ros_client.spin_until(lambda: diagnosed().get('bad_input.adapter_bytes') == '1', 10.0,
                          'the counts on /diagnostics')
    assert diagnosed()['bad_input.image'] == '2' and diagnosed()['adapter_version'] == '1'
    assert server.alive


@pytest.mark.ros
@pytest.mark.slow
def test_requests_of_several_clients_are_batched(ros_nodes, ros_client, checkpoint_and_adapter):
    setup = checkpoint_and_adapter
    clients = ['/sim0', '/sim1', '/sim2']
    start_server(ros_nodes, setup, clients, max_batch_size=8, max_wait_ms=2000.0)
    client = ServerClient(ros_client, clients)
    rng = np.random.default_rng(0)
    images = {ns: rng.integers(0, 256, (128, 160, 3), dtype=np.uint8) for ns in clients}
    # All three pending: answered at once in one batch of 3, well before max_wait.
    stamps = {ns: client.send(ns, images[ns]) for ns in clients}
    replies = {ns: client.reply(ns, stamps[ns]) for ns in clients}
    assert [replies[ns].batch_size for ns in clients] == [3, 3, 3]
    ros_client.spin_until(lambda: client.stats, 10.0, 'batch statistics')
    assert client.stats[-1]['batch_size'] == 3
    assert sorted(client.stats[-1]['clients']) == clients
    # Only two pending: they wait max_wait (2 s) for the third, then go as a batch of 2.
    stamps = {ns: client.send(ns, images[ns]) for ns in clients[:2]}
    replies = {ns: client.reply(ns, stamps[ns]) for ns in clients[:2]}
    assert [replies[ns].batch_size for ns in clients[:2]] == [2, 2]
    # Each reply answers its own image: the greedy action equals the one of a lone request.
    lone = client.request('/sim1', images['/sim1'])
    np.testing.assert_array_equal(lone.action_tokens, replies['/sim1'].action_tokens)
    assert lone.batch_size == 1


@pytest.mark.ros
@pytest.mark.slow
def test_adapter_over_dds_lands_in_the_servers_own_root_and_bad_ones_are_refused(
        ros_nodes, ros_client, checkpoint_and_adapter, tmp_path):
    """No shared files: the adapter travels as bytes + sha256; bad payloads change nothing."""
    import hashlib
    import pickle

    from std_msgs.msg import String, UInt8MultiArray

    from tgrpo_ros.policy.adapters import pack_adapter

    setup = checkpoint_and_adapter
    header, weights = pack_adapter(setup['root'] / 'v1', 1)  # outside the server's root
    server_root = tmp_path / 'server_adapters'
    limit_mb = 2 * len(weights) / 1e6
    server = start_server(ros_nodes, setup, ['/c0'], adapter_root=str(server_root),
                          max_adapter_mb=limit_mb)
    client = ServerClient(ros_client, ['/c0'])
    statuses = []
    node = ros_client.node
    status_sub = node.create_subscription(
        String, topics.ADAPTER_STATUS_TOPIC, lambda msg: statuses.append(json.loads(msg.data)),
        topics.ADAPTER_STATUS_QOS)
    adapters = node.create_publisher(UInt8MultiArray, topics.ADAPTER_TOPIC, topics.ADAPTER_QOS)
    ros_client.wait_for_subscribers(adapters, timeout=START_TIMEOUT)
    assert status_sub

    def send(head, payload):
        count = len(statuses)
        adapters.publish(messages.encode_adapter(head, payload))
        ros_client.spin_until(lambda: len(statuses) > count, 30.0, 'the adapter status')
        return statuses[-1]

    status = send(header, weights)
    assert status['ok'] and status['version'] == 1 and status['sha256'] == header['sha256']
    served = client.request('/c0', setup['image'])
    assert served.adapter_version == 1
    assert_reply_matches(served, setup['tuned'])
    (stored,) = os.listdir(server_root / 'received')
    assert stored == f"v00001-{header['sha256'][:12]}"
    assert 'received over DDS' in server.log_text()

    flipped = bytearray(weights)
    flipped[100] ^= 0xFF
    pickled = pickle.dumps({'lora_A': list(range(1000))})
    oversize = weights + bytes(len(weights) * 2)
    cases = [
        (dict(header, version=2), bytes(flipped), 'sha256 mismatch'),
        (dict(header, version=3, size=len(oversize),
              sha256=hashlib.sha256(oversize).hexdigest()), oversize, 'over the limit'),
        (dict(header, version=4, size=len(pickled), sha256=hashlib.sha256(pickled).hexdigest()),
         pickled, 'is a pickle'),
        (dict(header, sha256='0' * 64), weights, 'served already with another sha256'),
    ]
    for head, payload, reason in cases:
        status = send(head, payload)
        assert not status['ok'] and reason in status['reason'], status
        assert status['serving'] == 1
        again = client.request('/c0', setup['image'])
        assert again.adapter_version == 1
        np.testing.assert_array_equal(again.action_tokens, served.action_tokens)
    assert os.listdir(server_root / 'received') == [stored]
    # Sending the served adapter again (a resumed or re-pushing learner) is a no-op.
    status = send(header, weights)
    assert status['ok'] and status['reason'] == 'already served' and status['refused'] == 4
    assert 'refused adapter version 4 received over DDS' in server.log_text()
    assert server.alive


def hostile_images(image):
    """Yield (what, sensor_msgs/Image) with one hostile number or array each."""
    good = messages.numpy_to_image(image, stamp=5_000_000_000)
    big = 2 ** 32 - 1  # uint32 fields: the largest value the wire holds
    changes = [('height', 0), ('height', big), ('width', 0), ('width', big), ('step', 0),
               ('step', big)]
    for field_name, value in changes:
        msg = messages.numpy_to_image(image, stamp=5_000_000_000)
        setattr(msg, field_name, value)
        yield f'{field_name} {value}', msg
    msg = messages.numpy_to_image(image)
    msg.header.stamp.sec = -1
    yield 'a negative stamp', msg
    msg = messages.numpy_to_image(image)
    msg.header.stamp.nanosec = big
    yield 'an oversized nanosec', msg
    yield 'empty data', type(good)(header=good.header, height=good.height, width=good.width,
                                   encoding='rgb8', step=good.step, data=[])
    msg = messages.numpy_to_image(image, stamp=5_000_000_000)
    msg.data = bytes(good.data) + bytes(1000)
    yield 'overlong data', msg


def hostile_adapters(path):
    """Yield (what, UInt8MultiArray) adapters with a hostile header number or payload size."""
    from tgrpo_ros.policy.adapters import pack_adapter

    header, weights = pack_adapter(path, 1)
    numbers = [('nan', float('nan')), ('+inf', float('inf')), ('-inf', float('-inf')),
               ('1e300', 1e300), ('-5', -5), ('0.5', 0.5), ('2^40', 2 ** 40),
               ('2^70', 2 ** 70)]
    for field_name in ('version', 'size'):
        for what, value in numbers:
            if field_name == 'size' and what in ('2^40', '0.5'):
                continue
            yield f'{field_name} {what}', messages.encode_adapter(
                dict(header, **{field_name: value}), weights)
    yield 'empty weights', messages.encode_adapter(dict(header, size=0), b'')
    yield 'overlong weights', messages.encode_adapter(header, weights + bytes(1000))


@pytest.mark.ros
@pytest.mark.slow
def test_hostile_numbers_at_every_subscription_are_counted_and_the_server_serves_on(
        ros_nodes, ros_client, checkpoint_and_adapter):
    """
    Issue 17: images, instructions and adapters with hostile numbers and arrays over DDS.

    Each is counted in ``bad_input``; then a plain request is answered and a good
    adapter over DDS is served. Before the fix an image with a negative stamp was
    served (its reply then refused by every client), and adapter version 2^40 was
    hot-swapped (every reply carrying it refused: adapter_version must fit int32).
    """
    from std_msgs.msg import String, UInt8MultiArray

    from tgrpo_ros.testing.ros_client import send_until_counted

    setup = checkpoint_and_adapter
    server = start_server(ros_nodes, setup, ['/c0'])
    node = ros_client.node
    statuses = []
    sub = node.create_subscription(String, '/policy_server/status',
                                   lambda msg: statuses.append(json.loads(msg.data)),
                                   topics.DIAGNOSTICS_QOS)
    ros_client.wait_for_publishers(sub, timeout=START_TIMEOUT)
    client = ServerClient(ros_client, ['/c0'])
    ros_client.spin_until(lambda: statuses, START_TIMEOUT, 'the server status')

    def bad_count(name):
        return statuses[-1]['bad_input'][name]

    image = setup['image']
    sent = {'image': send_until_counted(ros_client, hostile_images(image),
                                        client.images['/c0'].publish,
                                        lambda: bad_count('image')),
            'instruction': send_until_counted(
                ros_client, [('empty', String(data='')), ('overlong', String(data='x' * 513))],
                client.instructions['/c0'].publish, lambda: bad_count('instruction'))}
    adapters = node.create_publisher(UInt8MultiArray, topics.ADAPTER_TOPIC, topics.ADAPTER_QOS)
    ros_client.wait_for_subscribers(adapters, timeout=START_TIMEOUT)
    sent['adapter_bytes'] = send_until_counted(
        ros_client, hostile_adapters(str(setup['root'] / 'v1')), adapters.publish,
        lambda: bad_count('adapter_bytes'))
    assert sent == {'image': 10, 'instruction': 2, 'adapter_bytes': 16}
    assert all(bad_count(name) >= count for name, count in sent.items()), statuses[-1]
    assert server.alive and 'Traceback' not in server.log_text()

    # Good input is served: a request (version -1), then an adapter over DDS (version 1).
    # The instruction was refused last: an image that overtakes the valid one is dropped,
    # so the request is sent again until answered.
    stamps = []
    ros_client.publish_until(lambda: stamps.append(client.send('/c0', image)),
                             lambda: any(r.stamp_ns in stamps for r in client.replies['/c0']),
                             START_TIMEOUT, 'a reply once the instruction is valid again')
    reply = [r for r in client.replies['/c0'] if r.stamp_ns in stamps][0]
    assert reply.adapter_version == -1
    assert_reply_matches(reply, setup['base'])
    from tgrpo_ros.policy.adapters import pack_adapter
    adapters.publish(messages.encode_adapter(*pack_adapter(str(setup['root'] / 'v1'), 1)))
    ros_client.spin_until(lambda: statuses[-1]['adapter_version'] == 1, START_TIMEOUT,
                          'adapter version 1 served')
    reply = client.request('/c0', image)
    assert reply.adapter_version == 1
    assert_reply_matches(reply, setup['tuned'])
    assert server.alive
