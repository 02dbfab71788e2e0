"""
policy_server: answers the camera images of M sim bridges with batched policy actions.

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

Adapter push: set ``adapter_version`` and ``adapter_path`` through the standard
parameter services. With SetParameters (which applies its parameters one by one,
in order) list ``adapter_version`` BEFORE ``adapter_path``; with
SetParametersAtomically the order does not matter. The new version is staged
until a path arrives; the path is validated and hot-swapped
(``policy.load_adapter``). A rejection returns ``successful=False`` with the
reason and the previous adapter keeps serving.
"""

import json
import os
import sys
import time

from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
from rclpy.node import Node
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import String

from tgrpo_ros.nodes import messages, topics
from tgrpo_ros.nodes.node_main import run_node

NUM_THREADS_DEFAULT = 1  # torch CPU threads; the dev machine has 2 cores for everything


class PolicyServer(Node):
    """Serve one policy to M clients with dynamic batching and hot-swappable adapters."""

    def __init__(self):
        """Declare and read the parameters, load the policy, wire the clients."""
        super().__init__('policy_server')
        self._declare_parameters()
        p = {name: self.get_parameter(name).value for name in self._parameter_names}
        self.client_namespaces = [topics.normalize_namespace(ns) for ns in p['clients']]
        if not self.client_namespaces or any(not ns for ns in self.client_namespaces):
            raise ValueError(f"parameter 'clients' must list client namespaces such as "
                             f"['/sim0', '/sim1'], got {list(p['clients'])}")
        if len(set(self.client_namespaces)) != len(self.client_namespaces):
            raise ValueError(f"parameter 'clients' has duplicates: {self.client_namespaces}")
        if not p['model_path']:
            raise ValueError("parameter 'model_path' is empty; give a checkpoint directory "
                             '(e.g. one written by tgrpo_build_standin)')
        if p['max_batch_size'] < 1:
            raise ValueError(f"max_batch_size ({p['max_batch_size']}) must be >= 1")
        if p['max_wait_ms'] < 0:
            raise ValueError(f"max_wait_ms ({p['max_wait_ms']}) must be >= 0")
        if not p['temperature'] > 0:
            raise ValueError(f"temperature ({p['temperature']}) must be > 0")
        self.temperature = float(p['temperature'])
        self.greedy = bool(p['greedy'])
        self.max_batch_size = int(p['max_batch_size'])
        self.max_wait = float(p['max_wait_ms']) / 1000.0  # seconds

        self.policy, self.generator = self._load_policy(p)
        self.staged_version = self.policy.adapter_version
        self.add_on_set_parameters_callback(self.parameters_callback)

        self.instructions = {}  # namespace -> latest instruction
        self.pending = {}  # namespace -> (Image, decoded RGB array, arrival time in s)
        self.last_reply = {}  # namespace -> (stamp ns, JointState) of the latest reply
        self.publishers_ = {}
        self.subscriptions_ = []
        for ns in self.client_namespaces:
            self.publishers_[ns] = self.create_publisher(
                JointState, topics.client_topic(ns, topics.ACTION_TOPIC),
                topics.ACTION_QOS)
            self.subscriptions_.append(self.create_subscription(
                Image, topics.client_topic(ns, topics.CAMERA_TOPIC),
                lambda msg, ns=ns: self.image_callback(ns, msg), topics.IMAGE_QOS))
            self.subscriptions_.append(self.create_subscription(
                String, topics.client_topic(ns, topics.INSTRUCTION_TOPIC),
                lambda msg, ns=ns: self.instruction_callback(ns, msg), topics.INSTRUCTION_QOS))
        self.stats_publisher = self.create_publisher(
            String, topics.SERVER_STATS_TOPIC, topics.DIAGNOSTICS_QOS)
        # One-shot deadline timer: armed when the first request of a batch arrives.
        self.deadline_timer = self.create_timer(max(self.max_wait, 1e-4), self.deadline_callback)
        self.deadline_timer.cancel()
        self.batches = 0
        self.answered = 0
        self.get_logger().info(
            f'serving {self.policy.name_or_path} (adapter version '
            f'{self.policy.adapter_version}) to {len(self.client_namespaces)} client(s) '
            f'{self.client_namespaces}; max_batch_size {self.max_batch_size}, max_wait '
            f'{self.max_wait * 1000:.1f} ms, temperature {self.temperature}, '
            f'greedy {self.greedy}')

    # ------------------------------------------------------------------ parameters
    _parameter_specs = (
        # name, default, description, read_only
        ('model_path', '', 'checkpoint directory (OpenVLA or stand-in)', True),
        ('adapter_root', '', 'adapters may only be loaded from below this directory '
         "('' = anywhere)", True),
        ('adapter_path', '', 'adapter directory being served; set together with '
         'adapter_version (version first) to hot-swap', False),
        ('adapter_version', -1, 'version label of the served adapter (-1: bare base); '
         'stamped on every action', False),
        ('temperature', 1.0, 'sampling temperature of the 256 action logits', True),
        ('greedy', False, 'argmax instead of sampling', True),
        ('device', 'cpu', "torch device, e.g. 'cpu' or 'cuda:0'", True),
        ('dtype', 'float32', "'float32', 'bfloat16' or 'float16'", True),
        ('trainable', 'lora', "adapter layout: 'lora', 'lora+action_head' or 'full' "
         '(lora+action_head adapters also load into lora)', True),
        ('lora_rank', 32, 'LoRA rank of the adapters (must match the learner)', True),
        ('lora_alpha', 16.0, 'LoRA alpha of the adapters (must match the learner)', True),
        ('lora_target_modules', ['q_proj', 'v_proj'], 'LoRA target modules', True),
        ('max_batch_size', 8, 'most requests answered by one policy call', True),
        ('max_wait_ms', 20.0, 'ms a request may wait for others to join its batch', True),
        ('unnorm_key', '', "norm_stats key ('' = libero_object or the only one)", True),
        ('clients', ['/sim0'], 'namespaces of the sim bridges served', True),
        ('seed', 0, 'seed of the sampling generator', True),
        ('num_threads', NUM_THREADS_DEFAULT, 'torch CPU threads', True),
    )

    @property
    def _parameter_names(self):
        return [spec[0] for spec in self._parameter_specs]

    def _declare_parameters(self):
        for name, default, description, read_only in self._parameter_specs:
            self.declare_parameter(name, default, ParameterDescriptor(
                description=description, read_only=read_only))

    def _load_policy(self, p):
        import torch  # heavy imports only once the node really starts

        from tgrpo_ros.policy import LoraSettings, load_policy

        torch.set_num_threads(int(p['num_threads']))
        start = time.perf_counter()
        lora = LoraSettings(r=int(p['lora_rank']), alpha=float(p['lora_alpha']),
                            target_modules=tuple(p['lora_target_modules']))
        policy = load_policy(p['model_path'], device=p['device'], dtype=p['dtype'],
                             adapter_root=p['adapter_root'] or None, lora=lora,
                             trainable=p['trainable'], unnorm_key=p['unnorm_key'] or None)
        if p['adapter_path']:
            policy.load_adapter(p['adapter_path'], int(p['adapter_version']))
        elif int(p['adapter_version']) != -1:
            self.get_logger().warning(
                f"adapter_version {p['adapter_version']} given without adapter_path; "
                'serving the bare base as version -1')
        generator = torch.Generator(device=policy.device).manual_seed(int(p['seed']))
        self.get_logger().info(f'loaded policy in {time.perf_counter() - start:.2f} s on '
                               f"{p['device']} ({p['dtype']})")
        return policy, generator

    def _serving(self, path):
        """Return True when ``path`` names the adapter directory being served."""
        current = self.policy.adapter_path
        return current is not None and os.path.realpath(path) == os.path.realpath(current)

    def parameters_callback(self, params):
        """Validate and apply an adapter push; reject anything else that is not allowed."""
        by_name = {param.name: param for param in params}
        version = by_name.get('adapter_version')
        path = by_name.get('adapter_path')
        if version is not None:
            if version.type_ != version.Type.INTEGER:
                return SetParametersResult(
                    successful=False, reason=f'adapter_version must be an integer, got '
                    f'{version.value!r}')
            if version.value < 0:
                return SetParametersResult(
                    successful=False, reason=f'adapter_version must be >= 0, got {version.value}')
        if path is None:
            if version is not None:  # staged: applied with the next adapter_path
                self.staged_version = int(version.value)
            return SetParametersResult(successful=True)
        if path.type_ != path.Type.STRING or not path.value:
            return SetParametersResult(
                successful=False, reason=f'adapter_path must be a non-empty string, got '
                f'{path.value!r}')
        new_version = int(version.value) if version is not None else self.staged_version
        if new_version == self.policy.adapter_version:
            if self._serving(path.value):  # a repeated push (e.g. a resumed learner): no-op
                return SetParametersResult(successful=True)
            return SetParametersResult(
                successful=False, reason=f'adapter_path {path.value!r} came without a new '
                f'adapter_version (still {new_version}); set adapter_version before '
                'adapter_path in the same SetParameters call, or both with '
                'SetParametersAtomically')
        old_version = self.policy.adapter_version
        # A staged version is used by one path only, whether it loads or not.
        self.staged_version = old_version
        try:
            seconds = self.policy.load_adapter(path.value, new_version)
        except Exception as error:  # noqa: B902 - AdapterError and anything unforeseen
            self.get_logger().error(
                f'rejected adapter {path.value!r} version {new_version}: {error}; still '
                f'serving version {old_version}')
            return SetParametersResult(successful=False, reason=str(error))
        self.staged_version = new_version
        self.get_logger().info(f'hot-swapped adapter version {old_version} -> {new_version} '
                               f'from {path.value!r} in {seconds * 1000:.1f} ms')
        return SetParametersResult(successful=True)

    # ------------------------------------------------------------------ requests
    def instruction_callback(self, ns, msg):
        """Remember the newest instruction of client ``ns``; answer a waiting image."""
        self.instructions[ns] = msg.data
        if ns in self.pending:
            self._maybe_run()

    def image_callback(self, ns, msg):
        """Queue the newest image of client ``ns`` (replacing an unanswered older one)."""
        try:
            image = messages.image_to_numpy(msg)  # [H, W, 3] uint8 RGB
        except ValueError as error:
            self.get_logger().error(f'dropped image from {ns} (stamp '
                                    f'{messages.stamp_to_ns(msg.header.stamp)} ns): {error}')
            return
        stamp = messages.stamp_to_ns(msg.header.stamp)
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
        ready = [ns for ns in self.pending if ns in self.instructions]
        if not ready:
            return
        if len(ready) >= min(self.max_batch_size, len(self.client_namespaces)):
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
        ready = sorted((ns for ns in self.pending if ns in self.instructions),
                       key=lambda ns: self.pending[ns][2])[:self.max_batch_size]
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
            out = self.policy.sample(images, instructions, temperature=self.temperature,
                                     greedy=self.greedy, generator=self.generator)
        except Exception as error:  # noqa: B902 - keep serving; the bridges re-request
            self.get_logger().error(f'policy.sample failed for {[ns for ns, _ in batch]}: '
                                    f'{error}; the bridges will re-request')
            return
        version = self.policy.adapter_version
        tokens = out.action_tokens.numpy()
        log_probs = out.log_probs.numpy()
        for i, (ns, msg) in enumerate(batch):
            reply = messages.encode_action(msg.header, out.actions[i], tokens[i], log_probs[i],
                                           version, instructions[i], batch_size=len(batch))
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


def main(args=None):
    """Run the policy server until interrupted."""
    return run_node(PolicyServer, 'policy_server', args)


if __name__ == '__main__':
    sys.exit(main())
