"""
policy_server: answers camera images with policy actions, for sim bridges or a real camera.

For each client namespace ``ns`` in the ``clients`` parameter it subscribes to
``ns/camera/image`` (sensor_msgs/Image, rgb8 or bgr8, any size) and
``ns/instruction`` (std_msgs/String) and publishes ``ns/action``
(sensor_msgs/JointState, see ``tgrpo_ros.nodes.messages.encode_action``), stamped with
the header of the image it answers.

Batching: the newest unanswered image of each client is pending. A batch runs as
soon as every client (or ``max_batch_size`` of them) is pending, or ``max_wait_ms``
after the first request arrived, whichever comes first: one ``policy.sample`` call
answers the whole batch. Each batch is reported on ``/tgrpo/policy_server/stats``.
A request re-published with the stamp of the last answered one gets the same reply
again (one stamp, one action); a bridge that wants a fresh sample uses a new stamp.

Modes (parameter ``mode``):

* ``bridge`` (the default): the request/reply handshake of the sim bridges above,
  reliable QoS (``topics.IMAGE_QOS``).
* ``stream``: a camera stream, e.g. a real camera driver (docs/deploy.md). Images
  are taken with best-effort QoS of depth 1 (``topics.STREAM_IMAGE_QOS``), which a
  best-effort driver matches; any rgb8/bgr8 size. Inference starts on a frame as
  soon as the previous inference is done, and only on the newest frame: frames
  arriving meanwhile replace each other and never queue. The instruction comes
  from the ``instruction`` parameter or from a latched (transient-local)
  ``ns/instruction`` topic, the newest of the two winning.

Warm-up: before it subscribes, the server runs one greedy inference on a blank
policy view. The first call of a freshly loaded policy is slow (about 2 s on the
CPU stand-in, against 30-70 ms afterwards); paid on the first camera frames, it
would make stream mode drop the frames of those seconds (docs/bags.md).

``preprocessing`` turns each received frame into the policy's 224 x 224 view:
``none`` (the sim bridges send that view already; other sizes are resized),
``libero`` or ``camera`` (``tgrpo_ros.policy.contract.get_preprocessor``).
Instructions longer than ``max_instruction_chars`` are refused in both modes:
the error is logged and published on ``/tgrpo/policy_server/errors`` (JSON), and
that client gets no action until a valid instruction arrives (a long prompt
would hold the server, and every client, for seconds).

Adapter push: set ``adapter_version`` and ``adapter_path`` together with the
standard ``~/set_parameters_atomically`` service. The on-set callback validates
the pair and reads and checks the adapter (``policy.prepare_adapter``); the
post-set callback swaps the weights (``policy.swap_adapter``), which cannot fail
then. A rejection returns ``successful=False`` with the reason and the previous
adapter keeps serving. ``~/set_parameters`` applies its parameters one at a time,
so it cannot carry the pair: a lone ``adapter_version`` or ``adapter_path`` is
refused with that reason (re-pushing the adapter being served is a no-op).

Adapters over DDS (no shared filesystem): the learner publishes the safetensors
bytes with their sha256 and version on ``/tgrpo/adapter`` (reliable,
transient-local, so a restarted server gets the newest one again). The server
checks the payload (size under ``max_adapter_mb``, sha256, no pickle, a
safetensors file), stores it as ``<adapter_root>/received/v<version>-<sha>`` (a
temporary directory when ``adapter_root`` is ''), validates and swaps it through
the same ``prepare_adapter`` / ``swap_adapter`` path, and answers on
``/tgrpo/adapter_status`` (JSON: version, sha256, push (the learner's id of the
push, echoed), ok, reason). A refused adapter
leaves the served one in place.

Bad input (docs/faults.md, "Bad input"): a malformed image, a refused instruction,
a refused adapter over DDS or a refused adapter push is logged, published on
``/tgrpo/policy_server/errors`` (JSON: client, input, error) and counted per input
in ``~/status`` and ``/diagnostics`` (``bad_input``: ``image``, ``instruction``,
``adapter_bytes``, ``adapter_push``; ``tgrpo_ros.nodes.diagnostics``).
"""

from dataclasses import dataclass
import json
import os
import sys
import tempfile
import time
from typing import List

from rcl_interfaces.msg import SetParametersResult
from rclpy.node import Node
from rclpy.parameter import Parameter
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import String, UInt8MultiArray

from tgrpo_ros.names import normalize_namespace
from tgrpo_ros.nodes import messages, topics
from tgrpo_ros.nodes.diagnostics import BadInputs, StatusReporter
from tgrpo_ros.nodes.node_main import run_node
from tgrpo_ros.nodes.params import declare_config
from tgrpo_ros.options import check_choice, check_range, option
from tgrpo_ros.policy import contract
from tgrpo_ros.policy.adapters import (ADAPTER_VERSION_MAX, AdapterError, prune_received,
                                       store_adapter_payload)
from tgrpo_ros.policy.config import PolicyLoadConfig

ADAPTER_PARAMETERS = ('adapter_version', 'adapter_path')
MODES = ('bridge', 'stream')
PREPROCESSING = ('none', 'libero', 'camera')
INPUTS = ('image', 'instruction', 'adapter_bytes', 'adapter_push')  # counted when bad


@dataclass
class PolicyServerConfig:
    """Parameters of the policy server (the policy itself: ``PolicyLoadConfig``)."""

    clients: List[str] = option(
        ['/sim0'], 'Namespaces of the clients served (sim bridges, or cameras in stream mode).')
    mode: str = option(
        'bridge', "'bridge': request/reply with sim bridges, reliable QoS; 'stream': a camera "
        'stream (best effort), inference on the newest frame whenever the policy is free.')
    preprocessing: str = option(
        'none', "Image preprocessing: 'none' (the image is the policy view already, as sim "
        "bridges send it), 'libero' (LIBERO frame: 180 degree turn, resize, centre crop) or "
        "'camera' (real camera: resize, centre crop).")
    instruction: str = option(
        '', "Instruction for every client until one arrives on its instruction topic ('' = "
        'wait for the topic).')
    # A 20,000-character instruction held the server for ~25 s on the stand-in (CPU);
    # LIBERO's longest instruction has under 100 characters.
    max_instruction_chars: int = option(
        512, 'Longer instructions are refused with an error (they would hold the server).')
    max_batch_size: int = option(8, 'Most requests answered by one policy call.')
    max_wait_ms: float = option(
        20.0, 'How long a request may wait for others to join its batch.', unit='ms')
    greedy: bool = option(False, 'Argmax instead of sampling.')
    seed: int = option(0, 'Seed of the sampling generator.')
    adapter_root: str = option(
        '', "Adapters may only be loaded from below this directory ('' = anywhere).")
    adapter_path: str = option(
        '', 'Adapter directory being served; push it together with adapter_version '
        'through ~/set_parameters_atomically.', read_only=False)
    adapter_version: int = option(
        -1, 'Version label of the served adapter (-1: bare base); stamped on every action.',
        read_only=False)
    max_adapter_mb: float = option(
        4096.0, 'Largest adapter accepted over DDS (on /tgrpo/adapter).', unit='MB')

    def __post_init__(self):
        """Normalise the client namespaces; reject impossible values, quoting them."""
        self.clients = [normalize_namespace(ns) for ns in self.clients]
        if not self.clients or any(not ns for ns in self.clients):
            raise ValueError(f"parameter 'clients' must list client namespaces such as "
                             f"['/sim0', '/sim1'], got {self.clients}")
        if len(set(self.clients)) != len(self.clients):
            raise ValueError(f"parameter 'clients' has duplicates: {self.clients}")
        if self.max_batch_size < 1:
            raise ValueError(f'max_batch_size ({self.max_batch_size}) must be >= 1')
        if not self.max_wait_ms >= 0:
            raise ValueError(f'max_wait_ms ({self.max_wait_ms}) must be >= 0')
        check_choice('mode', self.mode, MODES)
        check_choice('preprocessing', self.preprocessing, PREPROCESSING)
        check_range('max_instruction_chars', self.max_instruction_chars, 1)
        error = instruction_error(self.instruction, self.max_instruction_chars)
        if self.instruction and error:
            raise ValueError(f'parameter instruction: {error}')
        if not self.max_adapter_mb > 0:
            raise ValueError(f'max_adapter_mb ({self.max_adapter_mb}) must be > 0')


def instruction_error(text, max_chars):
    """Return why instruction ``text`` is refused ('' when it is fine)."""
    if not text.strip():
        return 'the instruction is empty'
    if len(text) > max_chars:
        return (f'the instruction has {len(text)} characters, more than max_instruction_chars '
                f'({max_chars}): {text[:60]!r}...')
    return ''


class PolicyServer(Node):
    """Serve one policy to M clients with dynamic batching and hot-swappable adapters."""

    def __init__(self):
        """Declare and read the parameters, load the policy, wire the clients."""
        super().__init__('policy_server')
        self.policy_config = declare_config(self, PolicyLoadConfig)
        self.config = c = declare_config(self, PolicyServerConfig)
        self.client_namespaces = c.clients
        self.max_wait = c.max_wait_ms / 1000.0  # seconds
        self.policy, self.generator = self._load_policy()
        # The policy's control period per action where its metadata has one (0: unknown;
        # the safety controller then uses its action_period). Chunks: a policy whose
        # sample() returns actions [B, K, 7] sends K actions per reply.
        self.action_period = float(getattr(self.policy, 'action_period', 0.0) or 0.0)
        self._warm_up()
        self.prepared = None  # adapter validated by the on-set callback, swapped in post-set
        self._mirroring = False
        self.bad_inputs = BadInputs(INPUTS)
        self.add_on_set_parameters_callback(self.validate_parameters_callback)
        self.add_post_set_parameters_callback(self.apply_parameters_callback)

        self.stream = c.mode == 'stream'
        self.preprocess = (None if c.preprocessing == 'none'
                           else contract.get_preprocessor(c.preprocessing))
        # namespace -> latest instruction
        self.instructions = {ns: c.instruction for ns in self.client_namespaces
                             if c.instruction}
        self.pending = {}  # namespace -> (Image, decoded RGB array, arrival time in s)
        self.last_reply = {}  # namespace -> (stamp ns, JointState) of the latest reply
        self.publishers_ = {}
        self.subscriptions_ = []
        image_qos, instruction_qos = ((topics.STREAM_IMAGE_QOS, topics.LATCHED_INSTRUCTION_QOS)
                                      if self.stream else
                                      (topics.IMAGE_QOS, topics.INSTRUCTION_QOS))
        for ns in self.client_namespaces:
            self.publishers_[ns] = self.create_publisher(
                JointState, topics.client_topic(ns, topics.ACTION_TOPIC),
                topics.ACTION_QOS)
            self.subscriptions_.append(self.create_subscription(
                Image, topics.client_topic(ns, topics.CAMERA_TOPIC),
                lambda msg, ns=ns: self.image_callback(ns, msg), image_qos))
            self.subscriptions_.append(self.create_subscription(
                String, topics.client_topic(ns, topics.INSTRUCTION_TOPIC),
                lambda msg, ns=ns: self.instruction_callback(ns, msg), instruction_qos))
        self.stats_publisher = self.create_publisher(
            String, topics.SERVER_STATS_TOPIC, topics.DIAGNOSTICS_QOS)
        self.errors_publisher = self.create_publisher(
            String, topics.SERVER_ERRORS_TOPIC, topics.DIAGNOSTICS_QOS)
        # Adapters over DDS: stored under this server's own adapter root.
        self.received_root = c.adapter_root or tempfile.mkdtemp(prefix='tgrpo_adapters_')
        self.served_sha256 = None  # of the adapter received over DDS that is served
        self.adapter_status_publisher = self.create_publisher(
            String, topics.ADAPTER_STATUS_TOPIC, topics.ADAPTER_STATUS_QOS)
        self.adapter_subscription = self.create_subscription(
            UInt8MultiArray, topics.ADAPTER_TOPIC, self.adapter_callback, topics.ADAPTER_QOS)
        # One-shot deadline timer: armed when the first request of a batch arrives.
        self.deadline_timer = self.create_timer(max(self.max_wait, 1e-4), self.deadline_callback)
        self.deadline_timer.cancel()
        self.batches = 0
        self.answered = 0
        self.reporter = StatusReporter(self, self.status, self.bad_inputs)
        self.get_logger().info(
            f'serving {self.policy.name_or_path} (adapter version '
            f'{self.policy.adapter_version}) to {len(self.client_namespaces)} client(s) '
            f'{self.client_namespaces} in {c.mode} mode (preprocessing {c.preprocessing}); '
            f'max_batch_size {c.max_batch_size}, max_wait {c.max_wait_ms:.1f} ms, '
            f'temperature {self.policy.temperature}, greedy {c.greedy}')

    # ------------------------------------------------------------------ parameters
    def _load_policy(self):
        import torch  # heavy imports only once the node really starts

        start = time.perf_counter()
        c = self.config
        policy = self.policy_config.load(adapter_root=c.adapter_root)
        if c.adapter_path:
            policy.load_adapter(c.adapter_path, int(c.adapter_version))
        elif c.adapter_version != -1:
            self.get_logger().warning(
                f'adapter_version {c.adapter_version} given without adapter_path; '
                'serving the bare base as version -1')
        generator = torch.Generator(device=policy.device).manual_seed(int(c.seed))
        self.get_logger().info(f'loaded policy in {time.perf_counter() - start:.2f} s on '
                               f'{self.policy_config.device} ({self.policy_config.dtype})')
        return policy, generator

    def _warm_up(self):
        """Run one greedy inference on a blank view, with its own generator (see above)."""
        import numpy as np
        import torch

        start = time.perf_counter()
        blank = np.zeros((contract.IMAGE_SIZE, contract.IMAGE_SIZE, 3), dtype=np.uint8)
        self.policy.sample([blank], ['warm up'], greedy=True,
                           generator=torch.Generator(device=self.policy.device).manual_seed(0))
        self.get_logger().info(f'warmed up in {time.perf_counter() - start:.2f} s')

    def _serving(self, path):
        """Return True when ``path`` names the adapter directory being served."""
        current = self.policy.adapter_path
        return current is not None and os.path.realpath(path) == os.path.realpath(current)

    def validate_parameters_callback(self, params):
        """Validate an adapter push and read it; count, log and publish a refusal."""
        result = self._check_adapter_push(params)
        if not result.successful:
            self._bad_input('adapter_push', f'refused the adapter push: {result.reason}; still '
                            f'serving version {self.policy.adapter_version}')
        return result

    def _check_adapter_push(self, params):
        """Validate an adapter push (both parameters, in one atomic request) and read it."""
        self.prepared = None
        if self._mirroring:  # adapter_callback records what it swapped in: nothing to do
            return SetParametersResult(successful=True)
        by_name = {param.name: param for param in params if param.name in ADAPTER_PARAMETERS}
        if not by_name:
            return SetParametersResult(successful=True)
        version, path = by_name.get('adapter_version'), by_name.get('adapter_path')
        if version is not None and version.type_ != version.Type.INTEGER:
            return _refuse(f'adapter_version must be an integer, got {version.value!r}')
        if path is not None and (path.type_ != path.Type.STRING or not path.value):
            return _refuse(f'adapter_path must be a non-empty string, got {path.value!r}')
        if version is None or path is None:
            given, missing = ((version, 'adapter_path') if path is None
                              else (path, 'adapter_version'))
            if (version is None or version.value == self.policy.adapter_version) and \
                    (path is None or self._serving(path.value)):
                return SetParametersResult(successful=True)  # what is served already: no-op
            return _refuse(f'{given.name} {given.value!r} came without {missing}: push both '
                           'in one ~/set_parameters_atomically request (~/set_parameters '
                           'applies parameters one at a time)')
        if not 0 <= version.value <= ADAPTER_VERSION_MAX:
            return _refuse(f'adapter_version must be in [0, {ADAPTER_VERSION_MAX}], got '
                           f'{version.value}')
        if version.value == self.policy.adapter_version:
            if self._serving(path.value):  # a repeated push (e.g. a resumed learner): no-op
                return SetParametersResult(successful=True)
            return _refuse(f'adapter_path {path.value!r} came with the version already '
                           f'served ({version.value}); a new adapter needs a new version')
        try:
            self.prepared = (self.policy.prepare_adapter(path.value), int(version.value))
        except Exception as error:  # noqa: B902 - AdapterError and anything unforeseen
            return _refuse(f'adapter {path.value!r} version {version.value}: {error}')
        return SetParametersResult(successful=True)

    def apply_parameters_callback(self, params):
        """Swap in the adapter the on-set callback validated (copying tensors cannot fail)."""
        if self.prepared is None:
            return
        (prepared, version), self.prepared = self.prepared, None
        old_version = self.policy.adapter_version
        start = time.perf_counter()
        self.policy.swap_adapter(prepared, version)
        self.served_sha256 = None  # not an adapter received over DDS
        self.get_logger().info(
            f'hot-swapped adapter version {old_version} -> {version} from {prepared.path!r} '
            f'in {(time.perf_counter() - start) * 1000:.1f} ms')

    def adapter_callback(self, msg):
        """
        Store, check and hot-swap an adapter received over DDS; answer on adapter_status.

        A refused adapter (framing, size, sha256, pickle, safetensors, or the checks of
        ``policy.prepare_adapter``) leaves the served one in place.
        """
        start = time.perf_counter()
        version, digest, push = None, None, None
        try:
            header, weights = messages.decode_adapter(msg)
            version, digest = header.get('version'), header.get('sha256')
            push = header.get('push')  # the learner's id of this push, echoed in the answer
            if version == self.policy.adapter_version and digest == self.served_sha256:
                self._adapter_status(version, digest, True, 'already served', push)
                return
            if version == self.policy.adapter_version:
                raise AdapterError(f'adapter version {version} is served already with another '
                                   'sha256; a new adapter needs a new version')
            path = store_adapter_payload(self.received_root, header, weights,
                                         int(self.config.max_adapter_mb * 1e6))
            prepared = self.policy.prepare_adapter(path)
        except Exception as error:  # noqa: B902 - AdapterError, ValueError, OSError, ...
            self._bad_input('adapter_bytes', f'refused adapter version {version} received over '
                            f'DDS: {error}; still serving version '
                            f'{self.policy.adapter_version}')
            self._adapter_status(version, digest, False, str(error), push)
            return
        old_version, old_path = self.policy.adapter_version, self.policy.adapter_path
        self.policy.swap_adapter(prepared, int(version))
        self.served_sha256 = digest
        self._mirroring = True  # keep ~/adapter_version and ~/adapter_path truthful
        try:
            self.set_parameters([Parameter('adapter_version', value=int(version)),
                                 Parameter('adapter_path', value=prepared.path)])
        finally:
            self._mirroring = False
        prune_received(self.received_root, keep=[prepared.path, old_path])
        self.get_logger().info(
            f'hot-swapped adapter version {old_version} -> {version} received over DDS '
            f'({len(weights) / 1e6:.2f} MB, sha256 {digest[:12]}, stored in {prepared.path}) '
            f'in {(time.perf_counter() - start) * 1000:.1f} ms')
        self._adapter_status(version, digest, True, '', push)

    def _adapter_status(self, version, digest, ok, reason, push):
        self.adapter_status_publisher.publish(String(data=json.dumps({
            'version': version, 'sha256': digest, 'push': push, 'ok': bool(ok),
            'reason': reason, 'serving': self.policy.adapter_version,
            'refused': self.bad_inputs.counts['adapter_bytes']})))

    # ------------------------------------------------------------------ requests
    def instruction_callback(self, ns, msg):
        """Remember the newest instruction of client ``ns``; answer a waiting image."""
        error = instruction_error(msg.data, self.config.max_instruction_chars)
        if error:
            # Refused: this client gets no action until a valid instruction arrives
            # (acting on the previous one would not be what its operator asked for);
            # None marks the refusal, so that images meanwhile are dropped, not kept.
            self.instructions[ns] = None
            self.pending.pop(ns, None)
            self._bad_input('instruction', f'refused the instruction: {error}', ns)
            return
        self.instructions[ns] = msg.data
        if ns in self.pending:
            self._maybe_run()

    def _bad_input(self, name, text, ns=None):
        """Count a bad value of input ``name``; log ``text`` and publish it on the errors topic."""
        self.bad_inputs.count(name, text)
        self.get_logger().error(f'{ns}: {text}' if ns else text)
        self.errors_publisher.publish(String(data=json.dumps(
            {'client': ns, 'input': name, 'error': text})))

    def status(self):
        """Return what ``~/status`` and ``/diagnostics`` report of the server."""
        return {'adapter_version': self.policy.adapter_version,
                'adapter_path': self.policy.adapter_path or '',
                'clients': self.client_namespaces, 'mode': self.config.mode,
                'batches': self.batches, 'answered': self.answered,
                'refused_instructions': sorted(ns for ns, text in self.instructions.items()
                                               if text is None)}

    def image_callback(self, ns, msg):
        """Queue the newest image of client ``ns`` (replacing an unanswered older one)."""
        try:
            messages.checked_stamp_ns(msg.header.stamp, 'image')  # echoed in the reply
            image = messages.image_to_numpy(msg)  # [H, W, 3] uint8 RGB
            if self.preprocess is not None:
                image = self.preprocess(image)  # [224, 224, 3] uint8, the policy view
        except ValueError as error:
            self._bad_input('image', f'dropped an image (stamp '
                            f'{messages.stamp_to_ns(msg.header.stamp)} ns): {error}', ns)
            return
        stamp = messages.stamp_to_ns(msg.header.stamp)
        if ns in self.instructions and self.instructions[ns] is None:
            self.get_logger().debug(f'{ns}: dropped an image: its instruction was refused')
            return
        if self.stream:
            # The newest frame replaces any unanswered one and runs at once: the
            # subscription's depth of 1 dropped the frames that came during the last
            # inference, so nothing queues.
            self.pending[ns] = (msg, image, time.monotonic())
            if self.instructions.get(ns):
                self.run_batch()
            return
        cached = self.last_reply.get(ns)
        if cached is not None and cached[0] == stamp:
            # A re-published request that was answered already (the reply may have been
            # lost during discovery): send the same reply, so one stamp has one action.
            self.publishers_[ns].publish(cached[1])
            self.get_logger().info(f'{ns}: re-sent the reply to stamp {stamp} ns')
            return
        if ns in self.pending:
            self.get_logger().debug(f'{ns}: newer image replaces an unanswered one')
        self.pending[ns] = (msg, image, time.monotonic())
        self._maybe_run()

    def _maybe_run(self):
        ready = [ns for ns in self.pending if self.instructions.get(ns)]
        if not ready:
            return
        if len(ready) >= min(self.config.max_batch_size, len(self.client_namespaces)):
            self.deadline_timer.cancel()
            self.run_batch()
        elif self.deadline_timer.is_canceled():
            self.deadline_timer.reset()

    def deadline_callback(self):
        """Run what is pending once the oldest request has waited max_wait_ms."""
        self.deadline_timer.cancel()
        self.run_batch()

    def run_batch(self):
        """Answer up to max_batch_size pending requests (oldest first) with one policy call."""
        ready = sorted((ns for ns in self.pending if self.instructions.get(ns)),
                       key=lambda ns: self.pending[ns][2])[:self.config.max_batch_size]
        if not ready:
            return
        batch, images, instructions = [], [], []
        for ns in ready:
            msg, image, _ = self.pending.pop(ns)
            batch.append((ns, msg))
            images.append(image)
            instructions.append(self.instructions[ns])
        self._answer(batch, images, instructions)
        if self.pending:
            self._maybe_run()

    def _answer(self, batch, images, instructions):
        start = time.perf_counter()
        try:
            out = self.policy.sample(images, instructions, greedy=self.config.greedy,
                                     generator=self.generator)
        except Exception as error:  # noqa: B902 - keep serving; the bridges re-request
            self.get_logger().error(f'policy.sample failed for {[ns for ns, _ in batch]}: '
                                    f'{error}; the bridges will re-request')
            return
        version = self.policy.adapter_version
        tokens = out.action_tokens.numpy()
        log_probs = out.log_probs.numpy()
        for i, (ns, msg) in enumerate(batch):
            reply = messages.encode_action(msg.header, out.actions[i], tokens[i], log_probs[i],
                                           version, instructions[i], batch_size=len(batch),
                                           action_period=self.action_period)
            self.last_reply[ns] = (messages.stamp_to_ns(msg.header.stamp), reply)
            self.publishers_[ns].publish(reply)
        seconds = time.perf_counter() - start
        self.batches += 1
        self.answered += len(batch)
        stats = {'batch': self.batches, 'batch_size': len(batch),
                 'clients': [ns for ns, _ in batch], 'adapter_version': version,
                 'sample_ms': round(out.seconds * 1000.0, 3),
                 'total_ms': round(seconds * 1000.0, 3),
                 'mean_batch_size': round(self.answered / self.batches, 4)}
        self.stats_publisher.publish(String(data=json.dumps(stats)))
        self.get_logger().debug(f'batch {self.batches}: {len(batch)} request(s) in '
                                f'{seconds * 1000:.1f} ms (version {version})')
        if self.batches % 100 == 0:
            self.get_logger().info(f'{self.batches} batches, mean batch size '
                                   f'{self.answered / self.batches:.2f}')


def _refuse(reason):
    return SetParametersResult(successful=False, reason=reason)


def main(args=None):
    """Run the policy server until interrupted."""
    return run_node(PolicyServer, 'policy_server', args)


if __name__ == '__main__':
    sys.exit(main())
