"""
learner: assigns groups to the sim bridges, trains TGRPO on their episodes, pushes adapters.

A straight loop (``Learner.run``), one iteration per update k = 1..K, with
blocking helpers that spin the node until their condition or time-out:

    push(version k - 1); for k in 1..K: assign(k); collect(); update(); checkpoint(); push(k)

In detail:

1. every group of N bridges (``bridges`` split in order into groups of
   ``group_size``) is assigned one (task, init state), published on each bridge's
   ``assignment`` topic (std_msgs/String JSON, ``tgrpo_ros.nodes.messages``);
2. the N episodes of each group are collected from ``/tgrpo/episodes``;
3. one TGRPO update runs on all groups (``tgrpo_ros.training.TGRPOTrainer``);
4. adapter version k is saved as ``<adapter_root>/v<k>`` and pushed to the policy
   server (``adapter_transport``): 'path' sets ``adapter_version`` and
   ``adapter_path`` together through its standard ``~/set_parameters_atomically``
   service (a shared filesystem); 'dds' publishes the safetensors bytes with their
   sha256, version and an id of the push on ``/tgrpo/adapter`` and waits for the
   server's answer echoing that id on ``/tgrpo/adapter_status`` (no shared
   filesystem; an earlier answer, e.g. the server's latched one from before a
   restart, never counts). The next groups are assigned once the push succeeded.

At start the learner saves and pushes its initial weights as version 0 (or, when
resuming from a checkpoint of k updates, version k), so every episode it accepts
is stamped with the version it trains.

Which episodes are trained on (``tgrpo_ros.training.collector.GroupCollector``):
only one episode per (current group, member bridge), every step of it from the
current adapter version (``stale_policy: drop``, the only policy), so the "old"
log-probs recomputed with the current weights are exactly those of the behaviour
policy and no importance ratio across versions is needed. Dropped and counted
(``rollout/<reason>_dropped``): stale or mixed-version episodes, aborted ones
(``extras['aborted']``, e.g. a bridge past ``action_retries``) and empty ones,
duplicates (the episode topic is transient-local, so a restarted learner receives
the bridges' history again; only accepted ids are remembered) and episodes of
groups that are not the current ones. Group ids are fresh in every learner process
(a resumed one too), so episodes from before a restart never count as current.

Bad input (docs/faults.md, "Bad input"): an episode that cannot be decoded, or whose
data cannot be trained on (``tgrpo_ros.episode.episode_error``: NaN rewards, tokens
out of range, ...), is dropped, logged and counted (``rollout/bad_dropped``, and
``bad_input.episode`` in ``~/status`` and ``/diagnostics``); a member that owes it is
assigned again at once. A malformed answer on ``/tgrpo/adapter_status`` is ignored
and counted (``bad_input.adapter_status``). Episodes already collected are kept.

Each member's assignment carries its own episode id ``<ns>/<group_id>/a<attempt>``;
a re-sent assignment gets the next attempt, so its run is never mistaken for an
earlier one. An aborted episode has its member re-assigned at once; a stale one
too, after the current adapter was pushed again (a restarted policy server comes
back serving version -1).

A group not complete after ``group_timeout`` s has the assignments of its members
that owe an episode re-sent. When K
updates are done the learner writes ``<run_dir>/summary.json`` and exits with 0; a
failure (push refused or unanswered, a failing update) exits with 1.
"""

from dataclasses import dataclass, replace
import json
import os
import time
from typing import List

from rcl_interfaces.msg import Parameter as ParameterMsg
from rcl_interfaces.msg import ParameterType, ParameterValue
from rcl_interfaces.srv import SetParametersAtomically
import rclpy
from rclpy.node import Node
from std_msgs.msg import String, UInt8MultiArray

from tgrpo_ros import provenance
from tgrpo_ros.episode import Assignment, episode_error
from tgrpo_ros.names import normalize_namespace
from tgrpo_ros.nodes import messages, topics
from tgrpo_ros.nodes.diagnostics import BadInputs, StatusReporter
from tgrpo_ros.nodes.node_main import run_node
from tgrpo_ros.nodes.params import declare_config
from tgrpo_ros.options import check_choice, option
from tgrpo_ros.policy.config import PolicyLoadConfig
from tgrpo_ros.training.collector import BridgeWatch, episode_id, GroupCollector, step_versions
from tgrpo_ros.training.config import TGRPOConfig

STALE_POLICIES = ('drop',)
ADAPTER_TRANSPORTS = ('path', 'dds')
SPIN_PERIOD = 0.1  # s, longest a blocking helper waits in one spin
WAIT_LOG_PERIOD = 30.0  # s between 'waiting for episodes' lines
GRAPH_CHECK_PERIOD = 1.0  # s between looks at the node graph for dead or restarted bridges
INPUTS = ('episode', 'adapter_status')  # counted when bad


@dataclass
class LearnerConfig:
    """Parameters of the learner (the policy: ``PolicyLoadConfig``; TGRPO: ``TGRPOConfig``)."""

    bridges: List[str] = option(
        ['/sim0', '/sim1'], 'Namespaces of the sim bridges, split in order into groups of '
        'group_size.')
    tasks: List[int] = option([0], 'Task ids to train on, cycled through.')
    init_states: List[int] = option([0], 'Init state ids, cycled through for each task.')
    init_state_range: List[int] = option(
        [0, 0], '[start, stop): when stop > start, replaces init_states by range(start, stop).')
    suite: str = option('libero_object', 'LIBERO suite of the tasks.')
    max_steps: int = option(0, "Policy steps per episode (0: the bridge's own limit).")
    updates: int = option(10, 'K: number of TGRPO updates, then the learner exits 0.')
    run_dir: str = option('runs/learner', 'metrics.csv, curves.png, checkpoints/, summary.json.')
    adapter_root: str = option(
        '', "Adapters are written to <adapter_root>/v<k> ('' = <run_dir>/adapters); with "
        "adapter_transport 'path' it must be inside the policy server's adapter_root.")
    adapter_transport: str = option(
        'path', "How adapters reach the policy server: 'path' (set its adapter_path; a "
        "shared filesystem) or 'dds' (the safetensors bytes + sha256 on /tgrpo/adapter).")
    policy_server: str = option('/policy_server', 'Full name of the policy server node.')
    bridge_node: str = option(
        'sim_bridge', 'Node name of the sim bridges (each in its namespace): only the '
        'subscription of <ns>/assignment by that node is the bridge in the node graph, '
        'never a recorder listening there.')
    stale_policy: str = option(
        'drop', "Episodes from an older adapter version: 'drop' (the only choice).")
    seed: int = option(0, 'Seed of torch, minibatch shuffling and the env seeds of assignments.')
    resume: bool = option(False, 'Continue from the newest checkpoint in <run_dir>/checkpoints.')
    checkpoint_every: int = option(1, 'Updates between checkpoints (the last is always saved).')
    keep_checkpoints: int = option(2, 'Newest checkpoints kept (0: all).')
    plot_every: int = option(5, 'Updates between PNG plots (0: only at the end).')
    push_timeout: float = option(
        60.0, 'How long to wait for the policy server to accept an adapter.', unit='s')
    group_timeout: float = option(
        600.0, 'How long to wait for a group before re-sending its assignments.', unit='s')

    def __post_init__(self):
        """Normalise the bridge namespaces; reject impossible values, quoting them."""
        self.bridges = [normalize_namespace(ns) for ns in self.bridges]
        check_choice('stale_policy', self.stale_policy, STALE_POLICIES)
        check_choice('adapter_transport', self.adapter_transport, ADAPTER_TRANSPORTS)
        if self.updates < 1:
            raise ValueError(f'updates ({self.updates}) must be >= 1')
        if len(set(self.bridges)) != len(self.bridges) or not all(self.bridges):
            raise ValueError(f'bridges must be distinct namespaces, got {self.bridges}')
        if not self.tasks or any(t < 0 for t in self.tasks):
            raise ValueError(f'tasks must list task ids >= 0, got {self.tasks}')
        if not self.pairs_init_states() or any(s < 0 for s in self.pairs_init_states()):
            raise ValueError(f'init states must be ids >= 0, got {self.pairs_init_states()} '
                             f'(init_states {self.init_states}, init_state_range '
                             f'{self.init_state_range})')
        if self.max_steps < 0:
            raise ValueError(f'max_steps ({self.max_steps}) must be >= 0')
        if self.checkpoint_every < 1:
            raise ValueError(f'checkpoint_every ({self.checkpoint_every}) must be >= 1')
        if not (self.push_timeout > 0 and self.group_timeout > 0):
            raise ValueError(f'push_timeout ({self.push_timeout} s) and group_timeout '
                             f'({self.group_timeout} s) must be > 0')

    def pairs_init_states(self) -> List[int]:
        """Return the init state ids to cycle through."""
        start, stop = (list(self.init_state_range) + [0, 0])[:2]
        return list(range(start, stop)) if stop > start else list(self.init_states)


def bridge_endpoints(infos, namespace, node_name):
    """Return the endpoint GIDs among ``infos`` of node ``node_name`` in ``namespace``."""
    return {tuple(info.endpoint_gid) for info in infos
            if info.node_name == node_name and info.node_namespace == namespace}


def adapter_answers(status, version, sha256, push):
    """Return whether adapter ``status`` (dict or None) answers push ``push`` of the adapter."""
    return (status is not None and status.get('push') == push
            and status.get('version') == version and status.get('sha256') == sha256)


class LearnerError(RuntimeError):
    """The run cannot go on: a push refused or unanswered, an update that failed."""


class Learner(Node):
    """Collect groups of episodes, run TGRPO updates and push adapter versions."""

    def __init__(self):
        """Declare and read the parameters, load the policy, restore a checkpoint if asked."""
        super().__init__('learner')
        self.policy_config = declare_config(self, PolicyLoadConfig)
        self.tgrpo = declare_config(self, TGRPOConfig)
        self.config = c = declare_config(self, LearnerConfig)
        size = self.tgrpo.group_size
        if len(c.bridges) < size or len(c.bridges) % size:
            raise ValueError(f'bridges ({len(c.bridges)}: {c.bridges}) must be a positive '
                             f'multiple of group_size ({size})')
        self.run_dir = os.path.abspath(c.run_dir)
        self.adapter_root = os.path.abspath(c.adapter_root or
                                            os.path.join(self.run_dir, 'adapters'))
        self.checkpoint_root = os.path.join(self.run_dir, 'checkpoints')
        os.makedirs(self.adapter_root, exist_ok=True)
        self.groups = [c.bridges[i:i + size] for i in range(0, len(c.bridges), size)]
        self.pairs = [(t, s) for t in c.tasks for s in c.pairs_init_states()]
        self._setup_training()

        self.assignment_publishers = {
            ns: self.create_publisher(String, topics.client_topic(ns, topics.ASSIGNMENT_TOPIC),
                                      topics.ASSIGNMENT_QOS) for ns in c.bridges}
        self.episode_subscription = self.create_subscription(
            UInt8MultiArray, topics.EPISODE_TOPIC, self.episode_callback, topics.EPISODE_QOS)
        # A bridge reports an assignment it cannot run on its bridge_status.
        self.refused = None  # (bridge, event) of the first refused current assignment
        self.bridge_status_subscriptions = [
            self.create_subscription(
                String, topics.client_topic(ns, topics.BRIDGE_STATUS_TOPIC),
                lambda msg, ns=ns: self.bridge_status_callback(ns, msg),
                topics.DIAGNOSTICS_QOS) for ns in c.bridges]
        server = '/' + c.policy_server.strip('/')
        self.push_client = self.create_client(SetParametersAtomically,
                                              server + '/set_parameters_atomically')
        self.adapter_status = None  # the policy server's latest answer to a DDS push
        self.pushes = 0  # DDS pushes sent; each carries its own id, echoed in the answer
        if c.adapter_transport == 'dds':
            self.adapter_publisher = self.create_publisher(
                UInt8MultiArray, topics.ADAPTER_TOPIC, topics.ADAPTER_QOS)
            self.adapter_status_subscription = self.create_subscription(
                String, topics.ADAPTER_STATUS_TOPIC, self.adapter_status_callback,
                topics.ADAPTER_STATUS_QOS)
        self.version = None  # adapter version the server serves and episodes must carry
        self.collector = GroupCollector()
        self.counts = self.collector.counts  # rollout/<name> in the metrics
        self.current = {}  # group id of the current update -> (members, Assignment)
        self.attempts = {}  # (group id, bridge) -> attempt number of its latest assignment
        self.rerun = set()  # (group id, bridge) to assign again at once
        self.repush = False  # a stale episode came: push the current adapter again
        self.watch = BridgeWatch(c.bridges)
        self.counts['bridges_lost'] = self.counts['bridges_restarted'] = 0
        self.graph_checked = 0.0  # monotonic s
        self.update_seconds = []
        self.last_metrics = {}
        self.last_push_seconds = 0.0
        self.bad_inputs = BadInputs(INPUTS)
        self.reporter = StatusReporter(self, self.status, self.bad_inputs)
        self.get_logger().info(
            f'learner: {len(self.groups)} group(s) of {size} bridges {self.groups}, '
            f'tasks {c.tasks}, init states {c.pairs_init_states()}, {c.updates} updates, '
            f'trainable {self.policy_config.trainable} '
            f'({self.policy.num_trainable_parameters()} parameters), temperature '
            f'{self.policy.temperature}, run dir {self.run_dir}; starting at adapter version '
            f'{self.trainer.updates_done}')

    def _setup_training(self):
        import torch  # heavy imports only once the node really starts

        from tgrpo_ros.training import checkpoint
        from tgrpo_ros.training.metrics import MetricsLogger
        from tgrpo_ros.training.trainer import TGRPOTrainer

        c = self.config
        torch.manual_seed(c.seed)
        self.policy = self.policy_config.load()
        provenance.warn_render_mismatch(self.policy_config.model_path,
                                        log=self.get_logger().warning)
        self.render_seen = {}  # render settings the bridges' episodes reported
        self.trainer = TGRPOTrainer(self.policy, self.tgrpo, seed=c.seed)
        # Fresh group ids for every learner process, resumed or not (never the
        # checkpoint's): episode ids are '<ns>/<group_id>/a<attempt>', so a resumed
        # learner that re-assigned the crashed one's ids would get the bridges' replayed
        # pre-crash episodes of those groups as its own, and would drop the new runs of
        # the same ids as duplicates.
        # Microseconds since the epoch: a later process starts 1e6 ids per second of
        # wall time higher, beyond any earlier run's updates x groups.
        self.group_id_base = time.time_ns() // 1000
        latest = checkpoint.latest_checkpoint(self.checkpoint_root) if c.resume else None
        if c.resume and latest is None:
            self.get_logger().warning(f'resume: no checkpoint in {self.checkpoint_root}; '
                                      'starting from update 0')
        if latest is not None:
            state = checkpoint.load_checkpoint(latest, self.policy, self.trainer)
            old = getattr(self.trainer, 'restored_settings', {})
            self.get_logger().info(
                f'resumed from {latest} (update {state["update"]}); optimiser lr '
                f'{self.trainer.lr:g}, weight decay {self.tgrpo.weight_decay:g} from this '
                f"configuration (the checkpoint's: lr {old.get('lr')}, weight decay "
                f"{old.get('weight_decay')})")
        self.metrics = MetricsLogger(self.run_dir, plot_every=c.plot_every, resume=c.resume)

    # ------------------------------------------------------------------ the loop
    def run(self):
        """Push the starting adapter, then run the remaining updates; return the exit code."""
        started = time.monotonic()
        try:
            self.push(self.trainer.updates_done)
            for k in range(self.trainer.updates_done + 1, self.config.updates + 1):
                self.assign(k)
                episodes, rollout_seconds = self.collect(k)
                self.update(k, episodes, rollout_seconds)
                self.checkpoint(k)
                self.push(k)
        except LearnerError as error:
            self.get_logger().error(str(error))
            return 1
        self.finish(time.monotonic() - started)
        return 0

    # ------------------------------------------------------------------ blocking helpers
    def spin_until(self, done, timeout, on_wait=None):
        """Spin until ``done()`` is true; return False after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while not done():
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not rclpy.ok():
                return False
            rclpy.spin_once(self, timeout_sec=min(SPIN_PERIOD, remaining))
            if on_wait is not None:
                on_wait()
        return True

    def push(self, version):
        """Save adapter ``version`` and have the policy server serve it."""
        started = time.monotonic()
        path = self._adapter_path(version)
        if version != self.version:  # a re-push sends the files already pushed, as they are
            self.policy.save_adapter(path)
        self.policy.adapter_version = int(version)
        if self.config.adapter_transport == 'dds':
            self._push_over_dds(version, path, started)
        else:
            self._push_path(version, path, started)
        self.version = int(version)
        self.last_push_seconds = time.monotonic() - started
        self.get_logger().info(f'policy server serves adapter version {self.version} '
                               f'({self.last_push_seconds:.2f} s, '
                               f'{self.config.adapter_transport})')

    def _push_path(self, version, path, started):
        """Set the server's adapter_version and adapter_path in one atomic request."""
        timeout = self.config.push_timeout
        if not self.push_client.wait_for_service(timeout_sec=timeout):
            raise LearnerError(f'policy server service {self.push_client.srv_name} not '
                               f'available after {timeout:.0f} s')
        request = SetParametersAtomically.Request(parameters=[
            ParameterMsg(name='adapter_version', value=ParameterValue(
                type=ParameterType.PARAMETER_INTEGER, integer_value=int(version))),
            ParameterMsg(name='adapter_path', value=ParameterValue(
                type=ParameterType.PARAMETER_STRING, string_value=path))])
        future = self.push_client.call_async(request)
        if not self.spin_until(future.done, timeout - (time.monotonic() - started)):
            raise LearnerError(f'no answer to the push of adapter version {version} after '
                               f'{time.monotonic() - started:.0f} s')
        result = future.result().result
        if not result.successful:
            raise LearnerError(f'policy server rejected adapter version {version}: '
                               f'{result.reason}')

    def _push_over_dds(self, version, path, started):
        """Publish the adapter's bytes on /tgrpo/adapter; wait for the server's answer."""
        from tgrpo_ros.policy.adapters import pack_adapter

        header, weights = pack_adapter(path, version)
        # An id of this push, echoed by the server: a status with the same version and
        # sha256 can be an answer to an earlier push (the server's latched status, the
        # one kept here), given before a server restart and not true of the new server.
        self.pushes += 1
        header['push'] = push = f'{self.group_id_base}-{self.pushes}'
        self.adapter_publisher.publish(messages.encode_adapter(header, weights))

        def answered():
            return adapter_answers(self.adapter_status, int(version), header['sha256'], push)

        timeout = self.config.push_timeout - (time.monotonic() - started)
        if not self.spin_until(answered, timeout):
            raise LearnerError(
                f'no answer on {topics.ADAPTER_STATUS_TOPIC} to adapter version {version} '
                f'({len(weights) / 1e6:.2f} MB on {topics.ADAPTER_TOPIC}) after '
                f'{time.monotonic() - started:.0f} s: is a policy server running?')
        if not self.adapter_status['ok']:
            reason = self.adapter_status.get('reason') or 'the server gave no reason'
            raise LearnerError(f'policy server rejected adapter version {version}: {reason}')

    def adapter_status_callback(self, msg):
        """Keep the policy server's latest answer to an adapter sent over DDS."""
        try:
            status = json.loads(msg.data)
            if not isinstance(status, dict) or not isinstance(status.get('ok'), bool):
                raise ValueError("not a JSON object with a boolean 'ok'")
        except ValueError as error:
            self.bad_input('adapter_status', f'ignored a malformed adapter status ({error}): '
                           f'{msg.data[:200]!r}')
            return
        self.adapter_status = status

    def assign(self, k):
        """Publish the assignments of update ``k``: one (task, init state) per group."""
        self.current = {}
        self.attempts = {}
        self.rerun = set()
        for g, members in enumerate(self.groups):
            index = (k - 1) * len(self.groups) + g
            task_id, init_state_id = self.pairs[index % len(self.pairs)]
            assignment = Assignment(
                group_id=self.group_id_base + index, task_id=int(task_id),
                init_state_id=int(init_state_id), seed=self.config.seed + index,
                max_steps=self.config.max_steps, suite=self.config.suite)
            self.current[assignment.group_id] = (members, assignment)
        self.collector.start({g: members for g, (members, _) in self.current.items()},
                             self.version)
        self._publish_assignments({g: members for g, (members, _) in self.current.items()})

    def _publish_assignments(self, targets):
        """Send group id -> bridges their assignment, each with its next attempt number."""
        for group_id, bridges in targets.items():
            assignment = self.current[group_id][1]
            for ns in bridges:
                attempt = self.attempts.get((group_id, ns), 0) + 1
                self.attempts[(group_id, ns)] = attempt
                self.assignment_publishers[ns].publish(messages.encode_assignment(replace(
                    assignment, episode_id=episode_id(ns, group_id, attempt))))

    def collect(self, k):
        """Spin until every group of update ``k`` is complete; re-assign what is owed."""
        started = sent = logged = time.monotonic()

        def done_or_rerun():
            return (self.collector.complete() or self.rerun or self.repush
                    or self.refused is not None)

        while True:
            if self.spin_until(done_or_rerun, min(WAIT_LOG_PERIOD, self.config.group_timeout),
                               on_wait=self.check_bridges):
                if self.refused is not None:
                    ns, event = self.refused
                    raise LearnerError(
                        f"sim bridge {ns} cannot run task {event.get('task_id')}, init state "
                        f"{event.get('init_state_id')} ({event.get('suite')}): "
                        f"{event.get('reason')}")
                if self.collector.complete():
                    break
                if self.repush:  # e.g. a restarted server serving version -1
                    self.repush = False
                    self.get_logger().warning(
                        f'a stale episode arrived: pushing adapter version {self.version} '
                        'again')
                    self.push(self.version)
                missing = self.collector.missing()
                again = {g: [ns for ns in bridges if (g, ns) in self.rerun]
                         for g, bridges in missing.items()}
                self.rerun = set()
                self._publish_assignments({g: b for g, b in again.items() if b})
                continue
            now = time.monotonic()
            if now - logged >= WAIT_LOG_PERIOD:
                logged = now
                self.get_logger().info(
                    f'update {k}/{self.config.updates}: waiting for episodes, have '
                    f'{self.collector.have()} of {self.tgrpo.group_size} per group '
                    f'({now - started:.0f} s)')
            if now - sent >= self.config.group_timeout:
                missing = self.collector.missing()
                self.get_logger().warning(
                    f'group timeout ({self.config.group_timeout:.0f} s): re-sending the '
                    f'assignments of {missing}')
                self._publish_assignments(missing)
                sent = now
        # Late episodes of these groups are foreign from now on.
        return self.collector.take(), time.monotonic() - started

    def check_bridges(self):
        """Every GRAPH_CHECK_PERIOD s: notice bridges gone from or back in the node graph."""
        # A bridge is the subscription of its assignment topic by the node bridge_node in
        # its namespace (not any subscriber: a recorder listens there too): a restarted
        # one has a new endpoint GID, even while the killed one's lingers until its lease
        # ends.
        now = time.monotonic()
        if now - self.graph_checked < GRAPH_CHECK_PERIOD:
            return
        self.graph_checked = now
        present = {ns: bridge_endpoints(
            self.get_subscriptions_info_by_topic(publisher.topic_name), ns,
            self.config.bridge_node) for ns, publisher in self.assignment_publishers.items()}
        lost, back = self.watch.update(present)
        self.counts['bridges_lost'] = self.watch.deaths
        self.counts['bridges_restarted'] = self.watch.restarts
        owed = self.collector.missing()
        for ns in lost:
            groups = [g for g, bridges in owed.items() if ns in bridges]
            self.get_logger().warning(
                f'sim bridge {ns} left the node graph; '
                + (f'groups {groups} will be assigned to it again when it is back'
                   if groups else 'it owes no episode'))
        for ns in back:
            groups = [g for g, bridges in owed.items() if ns in bridges]
            self.get_logger().info(f'sim bridge {ns} (re)started; assigning it groups '
                                   f'{groups} again')
            self.rerun.update((g, ns) for g in groups)

    def bridge_status_callback(self, ns, msg):
        """Note a bridge's refusal of an assignment of the current update."""
        try:
            event = json.loads(msg.data)
        except ValueError:
            return  # bridge_status is a log: a line that is not JSON is not ours to judge
        if (isinstance(event, dict) and event.get('event') == 'assignment_refused'
                and event.get('group_id') in self.current and self.refused is None):
            self.refused = (ns, event)

    def episode_callback(self, msg):
        """Keep an episode of a current group from the current adapter version."""
        try:
            episode = messages.decode_episode(msg)
        except ValueError as error:
            self.counts['bad_dropped'] += 1
            self.bad_input('episode', f'dropped an undecodable episode: {error}')
            return
        error = episode_error(episode)
        if error:
            self.counts['bad_dropped'] += 1
            # The latest run of a member that still owes its episode is run again.
            key = (episode.group_id, episode.bridge)
            owed = episode.bridge in self.collector.missing().get(episode.group_id, [])
            rerun = owed and episode.episode_id == episode_id(
                episode.bridge, episode.group_id, self.attempts.get(key, 0))
            if rerun:
                self.rerun.add(key)
            self.bad_input('episode', f'dropped episode {episode.episode_id}: {error}'
                           + ('; assigning it again' if rerun else ''))
            return
        verdict = self.collector.offer(episode)
        if verdict not in ('aborted', 'stale'):
            return
        key = (episode.group_id, episode.bridge)
        latest = episode_id(episode.bridge, episode.group_id, self.attempts.get(key, 0))
        rerun = episode.episode_id == latest  # not a late episode of an older attempt
        if rerun:
            self.rerun.add(key)
            self.repush = self.repush or verdict == 'stale'
        if verdict == 'aborted':
            reason = f"aborted: {episode.extras.get('aborted') or 'no step'}"
        else:
            reason = (f'stale: adapter versions {sorted(set(step_versions(episode)))}, '
                      f'training version {self.version}')
        self.get_logger().warning(f'dropped episode {episode.episode_id} ({reason})'
                                  + ('; assigning it again' if rerun else ''))

    def bad_input(self, name, text):
        """Count a bad value of input ``name`` and log ``text``."""
        self.bad_inputs.count(name, text)
        self.get_logger().error(text)

    def status(self):
        """Return what ``~/status`` and ``/diagnostics`` report of the learner."""
        return {'updates_done': self.trainer.updates_done, 'updates': self.config.updates,
                'adapter_version': self.version,
                'have': {str(g): n for g, n in self.collector.have().items()},
                'bridges': self.watch.state(), 'dropped': dict(self.counts)}

    def update(self, k, episodes, rollout_seconds):
        """Run TGRPO update ``k`` on the collected episodes and log its metrics."""
        started = time.monotonic()
        try:
            metrics = self.trainer.update(episodes)
        except (ValueError, FloatingPointError) as error:
            raise LearnerError(f'update {k} failed: {error}') from None
        metrics['perf/rollout_time'] = rollout_seconds
        metrics['perf/learn_time'] = time.monotonic() - started
        metrics['perf/push_time'] = self.last_push_seconds
        metrics['perf/seconds_per_update'] = (rollout_seconds + metrics['perf/learn_time']
                                              + metrics['perf/push_time'])
        metrics['rollout/adapter_version'] = float(self.version)
        for key, value in self.counts.items():
            metrics[f'rollout/{key}'] = float(value)
        self.metrics.log(k, metrics)
        self._record_trained(k, episodes)
        provenance.note_render(self.render_seen, episodes)
        self.last_metrics = metrics
        self.update_seconds.append(metrics['perf/seconds_per_update'])
        self.get_logger().info(
            f"update {k}/{self.config.updates}  success {metrics['rollout/success_rate']:.2f}"
            f"  return {metrics['rollout/return_mean']:.3f}  s/update "
            f"{metrics['perf/seconds_per_update']:.1f}  (rollout {rollout_seconds:.1f} s, "
            f"learn {metrics['perf/learn_time']:.1f} s, clip "
            f"{metrics.get('loss/clip_frac', 0.0):.2f}, logp mismatch "
            f"{metrics.get('loss/logp_mismatch_max', float('nan')):.1e})")

    def _record_trained(self, k, episodes):
        """Append which episodes update ``k`` trained on to <run_dir>/trained_episodes.jsonl."""
        line = {'update': k, 'version': self.version, 'episodes': [
            {'episode_id': e.episode_id, 'bridge': e.bridge, 'group_id': e.group_id,
             'steps': e.length, 'versions': sorted(set(step_versions(e))),
             'aborted': bool(e.extras.get('aborted'))} for e in episodes]}
        with open(os.path.join(self.run_dir, 'trained_episodes.jsonl'), 'a') as stream:
            stream.write(json.dumps(line) + '\n')

    def checkpoint(self, k):
        """Save checkpoint ``k`` every checkpoint_every updates and after the last."""
        from tgrpo_ros.training import checkpoint

        if k % self.config.checkpoint_every == 0 or k == self.config.updates:
            checkpoint.save_checkpoint(self.checkpoint_root, k, self.policy, self.trainer,
                                       keep=self.config.keep_checkpoints)

    def finish(self, wall_seconds):
        """Close the metrics and write summary.json atomically."""
        self.metrics.close()
        c = self.config
        summary = {
            'updates': self.trainer.updates_done, 'adapter_version': self.version,
            'adapter_path': self._adapter_path(self.version),
            'run_dir': self.run_dir, 'wall_seconds': wall_seconds,
            'mean_seconds_per_update': (sum(self.update_seconds) / len(self.update_seconds)
                                        if self.update_seconds else None),
            'last_metrics': self.last_metrics, 'dropped': dict(self.counts),
            'bad_input': dict(self.bad_inputs.counts),
            'config': self.tgrpo.to_dict(), 'trainable': self.policy_config.trainable,
            'temperature': self.policy.temperature,
            'groups': self.groups, 'tasks': c.tasks, 'init_states': c.pairs_init_states(),
            'environment': provenance.environment(
                device=self.policy_config.device, seeds={'seed': c.seed},
                render=provenance.render_from_episodes(self.render_seen),
                checkpoint=self.policy_config.model_path,
                adapter=self._adapter_path(self.version)),
        }
        path = os.path.join(self.run_dir, 'summary.json')
        with open(path + '.tmp', 'w') as stream:
            json.dump(summary, stream, indent=1, sort_keys=True)
        os.replace(path + '.tmp', path)
        self.get_logger().info(f'all {c.updates} updates done; summary: {path}')

    def _adapter_path(self, version):
        return os.path.join(self.adapter_root, f'v{int(version):05d}')


def main(args=None):
    """Run the learner until its K updates are done (exit 0) or it fails (exit 1)."""
    return run_node(Learner, 'learner', args, spin=Learner.run, interrupted_status=130)


if __name__ == '__main__':
    raise SystemExit(main())
