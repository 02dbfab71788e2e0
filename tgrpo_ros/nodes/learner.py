"""
learner: assigns groups to the sim bridges, trains TGRPO on their episodes, pushes adapters.

Loop, one iteration per update k = 1..K:

1. every group of N bridges (``bridges`` split in order into groups of
   ``group_size``) is assigned one (task, init state), published on each bridge's
   ``assignment`` topic (std_msgs/String JSON, ``tgrpo_ros.nodes.messages``);
2. the N episodes of each group are collected from ``/tgrpo/episodes``;
3. one TGRPO update runs on all groups (``tgrpo_ros.training.TGRPOTrainer``);
4. adapter version k is saved as ``<adapter_root>/v<k>`` and pushed to the policy
   server through its standard SetParameters service (``adapter_version`` then
   ``adapter_path`` in one request); the next groups are assigned once the push
   succeeded.

At start the learner saves and pushes its initial weights as version 0 (or, when
resuming from a checkpoint of k updates, version k), so every episode it accepts
is stamped with the version it trains.

Stale episodes (``stale_policy: drop``, the only policy): an episode whose
``adapter_version`` differs from the learner's current version is dropped and
counted (``rollout/stale_dropped``), so the "old" log-probs recomputed with the
current weights are exactly those of the behaviour policy, and no importance
ratio across versions is needed. Episodes whose ``episode_id`` was already
received are dropped too: the episode topic is transient-local, so a restarted
learner receives the bridges' history again. Episodes of groups that are not
the current ones are ignored. Group ids are fresh in every learner process (a
resumed one too), so episodes from before a restart never count as current.

When K updates are done it writes ``<run_dir>/summary.json`` and exits with 0.
"""

import json
import os
import time

from rcl_interfaces.msg import Parameter as ParameterMsg
from rcl_interfaces.msg import ParameterDescriptor, ParameterType, ParameterValue
from rcl_interfaces.srv import SetParameters
import rclpy
from rclpy.node import Node
from std_msgs.msg import String, UInt8MultiArray

from tgrpo_ros.nodes import messages, topics
from tgrpo_ros.training.config import TGRPOConfig
from tgrpo_ros.nodes.node_main import run_node

STALE_POLICIES = ('drop',)
WAITING, UPDATING, PUSHING, DONE, FAILED = 'waiting', 'updating', 'pushing', 'done', 'failed'


def _tgrpo_parameter_specs():
    """(name, default, description) of every TGRPOConfig field, as learner parameters."""
    defaults = TGRPOConfig().to_dict()
    return [(name, defaults[name], text) for name, text in TGRPOConfig.field_help().items()]


class Learner(Node):
    """Collect groups of episodes, run TGRPO updates and push adapter versions."""

    _parameter_specs = (
        # name, default, description
        ('model_path', '', 'checkpoint directory (OpenVLA or stand-in), same as the server'),
        ('device', 'cpu', "torch device, e.g. 'cpu' or 'cuda:0'"),
        ('dtype', 'float32', "'float32', 'bfloat16' or 'float16'"),
        ('trainable', 'lora', "what is trained: 'lora', 'lora+action_head' or 'full'"),
        ('lora_rank', 32, 'LoRA rank (must match the policy server)'),
        ('lora_alpha', 16.0, 'LoRA alpha (must match the policy server)'),
        ('lora_target_modules', ['q_proj', 'v_proj'], 'LoRA target modules'),
        ('bridges', ['/sim0', '/sim1'], 'namespaces of the sim bridges, split in order '
         'into groups of group_size'),
        ('tasks', [0], 'task ids to train on, cycled through'),
        ('init_states', [0], 'init state ids, cycled through for each task'),
        ('init_state_range', [0, 0], '[start, stop): when stop > start, replaces init_states '
         'by range(start, stop)'),
        ('suite', 'libero_object', 'LIBERO suite of the tasks'),
        ('max_steps', 0, "policy steps per episode (0: the bridge's own limit)"),
        ('updates', 10, 'K: number of TGRPO updates, then the learner exits 0'),
        ('run_dir', 'runs/learner', 'metrics.csv, curves.png, checkpoints/, summary.json'),
        ('adapter_root', '', "adapters are written to <adapter_root>/v<k> ('' = "
         "<run_dir>/adapters); must be inside the policy server's adapter_root"),
        ('policy_server', '/policy_server', 'full name of the policy server node'),
        ('stale_policy', 'drop', "episodes from an older adapter version: 'drop' (only choice)"),
        ('seed', 0, 'seed of torch, minibatch shuffling and the env seeds of assignments'),
        ('resume', False, 'continue from the newest checkpoint in <run_dir>/checkpoints'),
        ('checkpoint_every', 1, 'updates between checkpoints (the last is always saved)'),
        ('keep_checkpoints', 2, 'newest checkpoints kept (0: all)'),
        ('plot_every', 5, 'updates between PNG plots (0: only at the end)'),
        ('num_threads', 1, 'torch CPU threads'),
        ('push_timeout', 60.0, 's to wait for the policy server to accept an adapter'),
        ('group_timeout', 600.0, 's to wait for a group before re-sending its assignment'),
    )

    def __init__(self):
        """Declare and read the parameters, load the policy, restore a checkpoint if asked."""
        super().__init__('learner')
        specs = list(self._parameter_specs) + _tgrpo_parameter_specs()
        for name, default, description in specs:
            self.declare_parameter(name, default, ParameterDescriptor(
                description=description, read_only=True))
        p = {name: self.get_parameter(name).value for name, _, _ in specs}
        self.p = p
        self.config = TGRPOConfig.from_dict({k: p[k] for k in TGRPOConfig().to_dict()})
        self._validate(p)
        self.run_dir = os.path.abspath(p['run_dir'])
        self.adapter_root = os.path.abspath(p['adapter_root'] or
                                            os.path.join(self.run_dir, 'adapters'))
        self.checkpoint_root = os.path.join(self.run_dir, 'checkpoints')
        os.makedirs(self.adapter_root, exist_ok=True)
        self.updates = int(p['updates'])
        self.bridges = [topics.normalize_namespace(ns) for ns in p['bridges']]
        size = self.config.group_size
        self.groups = [self.bridges[i:i + size] for i in range(0, len(self.bridges), size)]
        self.pairs = [(t, s) for t in self.tasks for s in self.init_states]

        self._setup_training(p)
        self.update_index = self.trainer.updates_done  # k: updates done
        self.version = None  # adapter version the episodes must carry, once pushed

        self.assignment_publishers = {
            ns: self.create_publisher(String, topics.client_topic(ns, topics.ASSIGNMENT_TOPIC),
                                      topics.ASSIGNMENT_QOS) for ns in self.bridges}
        self.episode_subscription = self.create_subscription(
            UInt8MultiArray, topics.EPISODE_TOPIC, self.episode_callback, topics.EPISODE_QOS)
        server = '/' + p['policy_server'].strip('/')
        self.set_parameters_client = self.create_client(SetParameters,
                                                        server + '/set_parameters')
        self.seen_episode_ids = set()
        self.collected = {}  # group id -> {episode_id: Episode}
        self.current_groups = {}  # group id -> (bridge namespaces, Assignment)
        self.counts = {'stale_dropped': 0, 'duplicates_dropped': 0, 'foreign_dropped': 0,
                       'bad_dropped': 0}
        self.state = PUSHING
        self.exit_code = None
        self.push_started = None
        self.push_future = None
        self.group_started = None
        self.last_wait_log = time.monotonic()
        self.run_started = time.monotonic()
        self.update_seconds = []
        self.last_metrics = {}
        self.timer = self.create_timer(0.1, self.tick)
        self.get_logger().info(
            f'learner: {len(self.groups)} group(s) of {size} bridges {self.groups}, '
            f'tasks {self.tasks}, init states {self.init_states}, {self.updates} updates, '
            f'trainable {p["trainable"]} ({self.policy.num_trainable_parameters()} '
            f'parameters), run dir {self.run_dir}; starting at adapter version '
            f'{self.update_index}')
        self._start_push(self.update_index)

    # ------------------------------------------------------------------ set-up
    def _validate(self, p):
        if not p['model_path']:
            raise ValueError("parameter 'model_path' is empty; give a checkpoint directory")
        if p['stale_policy'] not in STALE_POLICIES:
            raise ValueError(f"unknown stale_policy {p['stale_policy']!r}; choose one of "
                             f'{list(STALE_POLICIES)}')
        if p['updates'] < 1:
            raise ValueError(f"updates ({p['updates']}) must be >= 1")
        bridges = list(p['bridges'])
        size = self.config.group_size
        if len(bridges) < size or len(bridges) % size:
            raise ValueError(f'bridges ({len(bridges)}: {bridges}) must be a positive multiple '
                             f'of group_size ({size})')
        if len(set(bridges)) != len(bridges):
            raise ValueError(f'bridges has duplicates: {bridges}')
        start, stop = (list(p['init_state_range']) + [0, 0])[:2]
        self.init_states = list(range(start, stop)) if stop > start else list(p['init_states'])
        self.tasks = list(p['tasks'])
        if not self.tasks or any(t < 0 for t in self.tasks):
            raise ValueError(f'tasks must list task ids >= 0, got {self.tasks}')
        if not self.init_states or any(s < 0 for s in self.init_states):
            raise ValueError(f'init states must be ids >= 0, got {self.init_states} '
                             f"(init_states {list(p['init_states'])}, init_state_range "
                             f"{list(p['init_state_range'])})")
        if p['checkpoint_every'] < 1:
            raise ValueError(f"checkpoint_every ({p['checkpoint_every']}) must be >= 1")

    def _setup_training(self, p):
        import torch  # heavy imports only once the node really starts

        from tgrpo_ros.policy import LoraSettings, load_policy
        from tgrpo_ros.training import checkpoint
        from tgrpo_ros.training.metrics import MetricsLogger
        from tgrpo_ros.training.trainer import TGRPOTrainer

        torch.set_num_threads(int(p['num_threads']))
        torch.manual_seed(int(p['seed']))
        lora = LoraSettings(r=int(p['lora_rank']), alpha=float(p['lora_alpha']),
                            target_modules=tuple(p['lora_target_modules']))
        self.policy = load_policy(p['model_path'], device=p['device'], dtype=p['dtype'],
                                  lora=lora, trainable=p['trainable'])
        self.trainer = TGRPOTrainer(self.policy, self.config, seed=int(p['seed']))
        # Fresh group ids for every learner process, resumed or not (never the
        # checkpoint's): a bridge names its episode '<ns>/<group_id>', so a resumed
        # learner that re-assigned the crashed one's ids would get the bridges' replayed
        # pre-crash episodes of those groups, and would drop the new runs of the same ids
        # as duplicates (and wait for them forever if it had seen the replay first).
        # Microseconds since the epoch: a later process starts 1e6 ids per second of
        # wall time higher, beyond any earlier run's updates x groups.
        self.group_id_base = time.time_ns() // 1000
        latest = checkpoint.latest_checkpoint(self.checkpoint_root) if p['resume'] else None
        if p['resume'] and latest is None:
            self.get_logger().warning(f'resume: no checkpoint in {self.checkpoint_root}; '
                                      'starting from update 0')
        if latest is not None:
            state = checkpoint.load_checkpoint(latest, self.policy, self.trainer)
            self.get_logger().info(f'resumed from {latest} (update {state["update"]})')
        self.metrics = MetricsLogger(self.run_dir, plot_every=int(p['plot_every']),
                                     resume=bool(p['resume']))

    # ------------------------------------------------------------------ adapters
    def _adapter_path(self, version):
        return os.path.join(self.adapter_root, f'v{int(version):05d}')

    def _start_push(self, version):
        """Save adapter ``version`` and ask the policy server to serve it."""
        path = self._adapter_path(version)
        self.policy.save_adapter(path)
        self.policy.adapter_version = int(version)
        request = SetParameters.Request()
        request.parameters = [
            ParameterMsg(name='adapter_version', value=ParameterValue(
                type=ParameterType.PARAMETER_INTEGER, integer_value=int(version))),
            ParameterMsg(name='adapter_path', value=ParameterValue(
                type=ParameterType.PARAMETER_STRING, string_value=path)),
        ]
        self.push_request = request
        self.push_version = int(version)
        self.push_started = time.monotonic()
        self.push_future = None
        self.state = PUSHING

    def _poll_push(self):
        elapsed = time.monotonic() - self.push_started
        if self.push_future is None:
            if self.set_parameters_client.service_is_ready():
                self.push_future = self.set_parameters_client.call_async(self.push_request)
            elif elapsed > self.p['push_timeout']:
                return self._fail(f'policy server service {self.set_parameters_client.srv_name}'
                                  f' not available after {elapsed:.0f} s')
            return
        if not self.push_future.done():
            if elapsed > self.p['push_timeout']:
                return self._fail(f'no answer to the adapter push after {elapsed:.0f} s')
            return
        results = self.push_future.result().results
        rejected = [r.reason for r in results if not r.successful]
        if rejected:
            return self._fail(f'policy server rejected adapter version {self.push_version}: '
                              f'{"; ".join(rejected)}')
        self.version = self.push_version
        self.last_push_seconds = elapsed
        self.get_logger().info(f'policy server serves adapter version {self.version} '
                               f'({elapsed:.2f} s)')
        if self.update_index >= self.updates:
            return self._finish()
        self._assign_groups()

    # ------------------------------------------------------------------ groups
    def _assign_groups(self):
        """Publish the assignments of update k + 1 (one (task, init) per group)."""
        self.current_groups = {}
        self.collected = {}
        for g, members in enumerate(self.groups):
            index = self.update_index * len(self.groups) + g
            task_id, init_state_id = self.pairs[index % len(self.pairs)]
            group_id = self.group_id_base + index
            assignment = messages.Assignment(
                group_id=group_id, task_id=int(task_id), init_state_id=int(init_state_id),
                seed=int(self.p['seed']) + index, max_steps=int(self.p['max_steps']),
                suite=self.p['suite'])
            self.current_groups[group_id] = (members, assignment)
            self.collected[group_id] = {}
        self._publish_assignments()
        self.group_started = self.last_wait_log = time.monotonic()
        self.state = WAITING

    def _publish_assignments(self):
        for group_id, (members, assignment) in self.current_groups.items():
            for ns in members:
                self.assignment_publishers[ns].publish(messages.encode_assignment(assignment))

    def episode_callback(self, msg):
        """Keep an episode of a current group from the current adapter version."""
        try:
            episode = messages.decode_episode(msg)
        except ValueError as error:
            self.counts['bad_dropped'] += 1
            self.get_logger().error(f'dropped an undecodable episode: {error}')
            return
        episode_id = episode.episode_id or f'{episode.bridge}/{episode.group_id}'
        if episode_id in self.seen_episode_ids:
            self.counts['duplicates_dropped'] += 1
            return
        self.seen_episode_ids.add(episode_id)
        if episode.group_id not in self.collected or self.state != WAITING:
            self.counts['foreign_dropped'] += 1
            return
        if episode.adapter_version != self.version:
            self.counts['stale_dropped'] += 1
            self.get_logger().warning(
                f'dropped episode {episode_id}: adapter version {episode.adapter_version}, '
                f'training version {self.version} (stale_policy drop)')
            return
        self.collected[episode.group_id][episode_id] = episode

    def _groups_complete(self):
        size = self.config.group_size
        return all(len(eps) >= size for eps in self.collected.values())

    def _log_waiting(self):
        now = time.monotonic()
        if now - self.last_wait_log < 30.0:
            return
        self.last_wait_log = now
        have = {g: len(e) for g, e in self.collected.items()}
        self.get_logger().info(f'update {self.update_index + 1}/{self.updates}: waiting for '
                               f'episodes, have {have} of {self.config.group_size} per group '
                               f'({now - self.group_started:.0f} s)')
        if now - self.group_started > self.p['group_timeout']:
            self.get_logger().warning('group timeout: re-sending the assignments')
            self._publish_assignments()
            self.group_started = now

    # ------------------------------------------------------------------ update
    def _run_update(self):
        from tgrpo_ros.training import checkpoint

        rollout_seconds = time.monotonic() - self.group_started
        episodes = [e for group in self.collected.values() for e in
                    sorted(group.values(), key=lambda e: e.episode_id)]
        self.state = UPDATING
        started = time.monotonic()
        try:
            metrics = self.trainer.update(episodes)
        except (ValueError, FloatingPointError) as error:
            return self._fail(f'update {self.update_index + 1} failed: {error}')
        self.update_index += 1
        k = self.update_index
        metrics['perf/rollout_time'] = rollout_seconds
        metrics['perf/learn_time'] = time.monotonic() - started
        metrics['perf/push_time'] = getattr(self, 'last_push_seconds', 0.0)
        metrics['perf/seconds_per_update'] = rollout_seconds + metrics['perf/learn_time'] + \
            metrics['perf/push_time']
        metrics['rollout/adapter_version'] = float(self.version)
        for key, value in self.counts.items():
            metrics[f'rollout/{key}'] = float(value)
        self.metrics.log(k, metrics)
        self.last_metrics = metrics
        self.update_seconds.append(metrics['perf/seconds_per_update'])
        if k % int(self.p['checkpoint_every']) == 0 or k == self.updates:
            checkpoint.save_checkpoint(self.checkpoint_root, k, self.policy, self.trainer,
                                       keep=int(self.p['keep_checkpoints']))
        self.get_logger().info(
            f"update {k}/{self.updates}  success {metrics['rollout/success_rate']:.2f}  "
            f"return {metrics['rollout/return_mean']:.3f}  s/update "
            f"{metrics['perf/seconds_per_update']:.1f}  (rollout {rollout_seconds:.1f} s, "
            f"learn {metrics['perf/learn_time']:.1f} s, clip "
            f"{metrics.get('loss/clip_frac', 0.0):.2f}, logp mismatch "
            f"{metrics['loss/logp_mismatch_max']:.1e})")
        self._start_push(k)

    # ------------------------------------------------------------------ loop
    def tick(self):
        """Advance the state machine (timer callback, every 0.1 s)."""
        if self.state == PUSHING:
            self._poll_push()
        elif self.state == WAITING:
            if self._groups_complete():
                self._run_update()
            else:
                self._log_waiting()

    def _finish(self):
        self.metrics.close()
        summary = {
            'updates': self.update_index, 'adapter_version': self.version,
            'adapter_path': self._adapter_path(self.version),
            'run_dir': self.run_dir, 'wall_seconds': time.monotonic() - self.run_started,
            'mean_seconds_per_update': (sum(self.update_seconds) / len(self.update_seconds)
                                        if self.update_seconds else None),
            'last_metrics': self.last_metrics, 'dropped': dict(self.counts),
            'config': self.config.to_dict(), 'trainable': self.p['trainable'],
            'groups': self.groups, 'tasks': self.tasks, 'init_states': self.init_states,
        }
        path = os.path.join(self.run_dir, 'summary.json')
        with open(path + '.tmp', 'w') as stream:
            json.dump(summary, stream, indent=1, sort_keys=True)
        os.replace(path + '.tmp', path)
        self.get_logger().info(f'all {self.updates} updates done; summary: {path}')
        self.state = DONE
        self.exit_code = 0

    def _fail(self, reason):
        self.get_logger().error(reason)
        self.state = FAILED
        self.exit_code = 1


def spin_until_done(node):
    """Spin until the learner finished its K updates (0) or failed (1)."""
    while rclpy.ok() and node.exit_code is None:
        rclpy.spin_once(node, timeout_sec=0.1)
    return node.exit_code if node.exit_code is not None else 1


def main(args=None):
    """Run the learner until its K updates are done (exit 0) or it fails (exit 1)."""
    return run_node(Learner, 'learner', args, spin=spin_until_done, interrupted_status=130)


if __name__ == '__main__':
    raise SystemExit(main())
