"""
sim_bridge: runs LIBERO episodes for the learner's assignments, acting through the server.

Runs in its own namespace (e.g. ``/sim0``) and owns one ``tgrpo_ros.sim.LiberoEnv``,
created lazily on the first assignment. Per episode:

1. an assignment arrives on ``assignment`` (std_msgs/String JSON,
   ``tgrpo_ros.nodes.Assignment``); the env resets to its (task, init state);
2. each step the bridge publishes ``instruction`` and ``camera/image`` (the policy's
   view, 224x224 rgb8, stamp unique per step) and waits for the ``action`` reply with
   that stamp; no reply within ``action_timeout`` s, a reply for another instruction
   or a non-finite action is logged and the request is re-published (same stamp);
3. the action is applied (``convention='policy'``), everything is recorded;
4. at success or the step limit the Episode is published on ``/tgrpo/episodes``
   (UInt8MultiArray, reliable + transient local, so a learner that starts later still
   receives it) and optionally spooled to ``spool_dir`` as ``.npz``.

With ``env_step_timeout`` > 0 the env runs in a worker process behind a watchdog
(``tgrpo_ros.sim.watchdog``): a reset or step that hangs (an EGL renderer can hang
with no error) kills the worker, and the episode runs again from its start in a new
one (``extras['env_restarts']``; nothing of the cut run is published).

Events are reported as JSON lines on ``bridge_status``; an assignment the bridge cannot
run (a task or init state out of range, an unknown suite, an env that fails to reset)
is reported there as ``assignment_refused`` with its task, init state and the reason,
and the learner stops on it (exit 1) rather than waiting for the episode. Assignments that arrive
during an episode are queued and run in order; one for the group in progress (the
learner re-sends late groups) is ignored, and one for a queued group replaces it
(``tgrpo_ros.episode.queue_assignment``).

Bad input (docs/faults.md, "Bad input"): a malformed assignment, or one the bridge
cannot run (unknown suite, task or init state), is refused and the episode in
progress goes on; a malformed action reply, or one with non-finite values, action
tokens out of range or an action the env rejects, is refused and a fresh request is
sent for the same step (steps already recorded are kept). Each is logged, reported
as a ``bad_input`` event on ``bridge_status`` and counted per input in ``~/status``
and ``/diagnostics`` (``bad_input``: ``assignment``, ``action``;
``tgrpo_ros.nodes.diagnostics``). A reply for another instruction (an image can
overtake its instruction) is retried the same way but is not bad input.

A request in flight is sent again as soon as a policy server is discovered: the
first one, or a restarted one. A server is known by the endpoints (GIDs) that publish
on ``action``, not by their count: a killed server's endpoint can stay in the graph
until its DDS lease runs out, so a restart need not bring the count from zero
(``server_discovered``).
"""

import collections
from dataclasses import dataclass
import json
import math
import os
import sys
import time

import numpy as np
from rclpy.node import Node
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import String, UInt8MultiArray

from tgrpo_ros import provenance
from tgrpo_ros.episode import episode_to_bytes, EpisodeBuilder, queue_assignment
from tgrpo_ros.names import safe_file_stem
from tgrpo_ros.nodes import messages, topics
from tgrpo_ros.nodes.diagnostics import BadInputs, StatusReporter
from tgrpo_ros.nodes.node_main import run_node
from tgrpo_ros.nodes.params import declare_config
from tgrpo_ros.options import check_choice, option
from tgrpo_ros.policy.contract import ACTION_TOKEN_MAX, ACTION_TOKEN_MIN
from tgrpo_ros.sim.libero_env import episode_step_limit
from tgrpo_ros.sim.watchdog import EnvHang, WatchdogEnv

TIMER_PERIOD = 0.1  # s, how often time-outs and discovery are checked
# s: discovery is not symmetric. A request sent this soon after the bridge saw the
# server can reach a server that has not matched the bridge yet, and be dropped; it
# is sent again (same stamp: the server answers a repeat from its cache) once this
# long has passed without a reply, rather than after the full action_timeout.
DISCOVERY_SETTLE = 1.0
INPUTS = ('assignment', 'action')  # counted when bad


def server_discovered(matched, servers, known):
    """
    Return whether a policy server was discovered since the last look.

    ``matched``: the bridge's topics have a server now; ``servers``: the identities
    (endpoint GIDs) of the ``action`` publishers now, ``known``: at the last look.
    A new identity is a new server even while the count stayed above zero, because a
    killed server's endpoint can linger until its DDS lease runs out.
    """
    return bool(matched and set(servers) - set(known))


@dataclass
class SimBridgeConfig:
    """Parameters of one sim bridge."""

    suite: str = option('libero_object', 'LIBERO suite of the env (an assignment may switch it).')
    camera_size: int = option(128, 'Render size of agentview; the policy view is 224 px.',
                              unit='px')
    max_steps: int = option(
        0, 'Policy steps per episode; 0: the suite limit (280 for Object). An assignment '
        'with max_steps > 0 lowers it.')
    multisample: bool = option(True, '4x multisample anti-aliasing (False renders ~2x faster).')
    action_timeout: float = option(
        10.0, 'How long to wait for an action before re-publishing the request.', unit='s')
    action_retries: int = option(
        0, 'Re-publications per step before the episode is aborted (0: retry forever); an '
        'aborted episode is still published, marked in extras.')
    seed: int = option(0, 'Simulator seed at env creation.')
    env_step_timeout: float = option(
        0.0, 'Watchdog: the env runs in a worker process, and a reset or step taking longer '
        'kills it, makes a new one and runs the episode again (0: the env runs in this '
        'process, no watchdog).', unit='s')
    image_encoding: str = option('rgb8', "Wire encoding of camera images: 'rgb8' or 'bgr8'.")
    frame_id: str = option(topics.CAMERA_FRAME_ID, 'frame_id of the camera images.')
    spool_dir: str = option(
        '', "Also write each episode as <spool_dir>/<episode>.npz ('' = off); a path on "
        "this bridge's host.")
    episode_history: int = option(
        topics.BRIDGE_EPISODE_DEPTH, 'Finished episodes kept for late subscribers '
        '(transient local history depth).')

    def __post_init__(self):
        """Reject impossible values, quoting them."""
        check_choice('image_encoding', self.image_encoding, messages.IMAGE_ENCODINGS)
        if not self.action_timeout > 0:
            raise ValueError(f'action_timeout ({self.action_timeout} s) must be > 0')
        if self.camera_size < 1:
            raise ValueError(f'camera_size ({self.camera_size} px) must be >= 1')
        if self.env_step_timeout < 0:
            raise ValueError(f'env_step_timeout ({self.env_step_timeout} s) must be >= 0')
        if self.max_steps < 0 or self.action_retries < 0 or self.episode_history < 1:
            raise ValueError(f'max_steps ({self.max_steps}) and action_retries '
                             f'({self.action_retries}) must be >= 0, episode_history '
                             f'({self.episode_history}) >= 1')


class EpisodeRecord:
    """The episode being run: its assignment, limit and the steps built so far."""

    def __init__(self, assignment, instruction, limit, episode_id, bridge):
        """Start an empty record for ``assignment``."""
        self.assignment = assignment
        self.limit = limit  # policy steps at most
        self.episode_id = episode_id
        self.builder = EpisodeBuilder(
            task_id=assignment.task_id, init_state_id=assignment.init_state_id,
            group_id=assignment.group_id, instruction=instruction, suite=assignment.suite,
            bridge=bridge, episode_id=episode_id)
        self.retries = 0
        self.started = time.monotonic()

    @property
    def instruction(self):
        """Return the task's instruction, as the env gave it."""
        return self.builder.identity['instruction']

    @property
    def steps(self):
        """Policy steps recorded so far."""
        return self.builder.steps


class SimBridge(Node):
    """One LIBERO env driven by the policy server, one episode per assignment."""

    def __init__(self):
        """Declare and read the parameters and wire the topics; the env comes later."""
        super().__init__('sim_bridge')
        self.config = c = declare_config(self, SimBridgeConfig)
        self.namespace = self.get_namespace()
        self.env = None
        self.env_suite = None
        self.env_restarts = 0  # env workers killed by the watchdog
        self.episode_restarts = collections.Counter()  # episode id -> runs cut by a hang
        self.queue = collections.deque()
        self.record = None
        self.obs = None
        self.waiting = None  # the request in flight: dict(stamp, image, sent, attempts, ...)
        self.last_stamp = 0  # ns
        self.matched_since = None  # monotonic s at which the server was last discovered
        self.servers = frozenset()  # GIDs of the action publishers at the last look
        self.episodes_done = 0
        self.bad_inputs = BadInputs(INPUTS)
        if c.spool_dir:
            os.makedirs(c.spool_dir, exist_ok=True)

        self.image_publisher = self.create_publisher(
            Image, topics.CAMERA_TOPIC, topics.IMAGE_QOS)
        self.instruction_publisher = self.create_publisher(
            String, topics.INSTRUCTION_TOPIC, topics.INSTRUCTION_QOS)
        self.episode_publisher = self.create_publisher(
            UInt8MultiArray, topics.EPISODE_TOPIC,
            topics.reliable_qos(c.episode_history, transient_local=True))
        self.status_publisher = self.create_publisher(
            String, topics.BRIDGE_STATUS_TOPIC, topics.DIAGNOSTICS_QOS)
        self.action_subscription = self.create_subscription(
            JointState, topics.ACTION_TOPIC, self.action_callback, topics.ACTION_QOS)
        self.assignment_subscription = self.create_subscription(
            String, topics.ASSIGNMENT_TOPIC, self.assignment_callback, topics.ASSIGNMENT_QOS)
        self.timer = self.create_timer(TIMER_PERIOD, self.timer_callback)
        self.reporter = StatusReporter(self, self.status, self.bad_inputs)
        self.get_logger().info(
            f"bridge {self.namespace or '/'} ready: suite {c.suite}, camera "
            f'{c.camera_size} px, action timeout {c.action_timeout:.1f} s; waiting for '
            f'an assignment on {self.assignment_subscription.topic_name}')

    # ------------------------------------------------------------------ assignments
    def assignment_callback(self, msg):
        """Queue an assignment; start it at once when idle."""
        try:
            assignment = messages.decode_assignment(msg)
        except ValueError as error:
            self.bad_input('assignment', f'refused an assignment: {error}')
            return
        try:
            # Checked before the env is touched: an unknown suite would close it.
            episode_step_limit(assignment.suite, self.config.max_steps, assignment.max_steps)
        except ValueError as error:
            self.bad_input('assignment', f'refused an assignment: {error}')
            self.refuse(assignment, str(error))
            return
        running = None if self.record is None else self.record.assignment
        action = queue_assignment(self.queue, running, assignment)
        if action == 'running':
            self.get_logger().info(
                f'assignment {assignment.episode_id!r} for group {assignment.group_id}: that '
                f'group is running now ({self.record.episode_id}); its episode will follow')
            self.report('assignment_ignored', group_id=assignment.group_id,
                        episode_id=assignment.episode_id, reason='group running')
            return
        self.get_logger().info(f'assignment for group {assignment.group_id}: task '
                               f'{assignment.task_id}, init state {assignment.init_state_id} '
                               f'({action}; {len(self.queue)} queued)')
        if self.record is None:
            self.start_next()

    def start_next(self):
        """Reset the env for the next queued assignment and send the first request."""
        while self.queue and self.record is None:
            assignment = self.queue.popleft()
            try:
                self.obs = self._reset_env(assignment)
            except EnvHang as error:  # the timer starts it again with a new env worker
                self._env_hung(error, assignment)
                return
            except ValueError as error:  # e.g. a task or init state out of range
                self.bad_input('assignment', f'cannot run group {assignment.group_id} (task '
                               f'{assignment.task_id}, init state '
                               f'{assignment.init_state_id}): {error}',
                               group_id=assignment.group_id)
                self.refuse(assignment, str(error))
                continue
            except RuntimeError as error:  # SimError: the simulator, not the assignment
                self.get_logger().error(f'cannot run group {assignment.group_id}: the '
                                        f'simulator failed: {error}')
                self.report('env_error', group_id=assignment.group_id, reason=str(error))
                self.refuse(assignment, f'the simulator failed: {error}')
                continue
            limit = self.env.max_steps
            episode_id = assignment.episode_id or f'{self.namespace}/{assignment.group_id}'
            self.record = EpisodeRecord(assignment, self.obs['instruction'], limit, episode_id,
                                        self.namespace)
            self.report('episode_start', episode_id=episode_id, group_id=assignment.group_id,
                        task_id=assignment.task_id, init_state_id=assignment.init_state_id,
                        max_steps=limit)
            self.request_action(new_stamp=True)

    def _reset_env(self, assignment):
        start = time.perf_counter()
        c = self.config
        if self.env is not None and self.env_suite != assignment.suite:
            self.env.close()
            self.env = None
        if self.env is None:
            kwargs = {'suite': assignment.suite, 'task_id': assignment.task_id,
                      'camera_size': c.camera_size, 'max_steps': c.max_steps or None,
                      'multisample': c.multisample, 'seed': c.seed}
            if c.env_step_timeout > 0:
                self.env = WatchdogEnv(c.env_step_timeout, **kwargs)
            else:
                from tgrpo_ros.sim import LiberoEnv  # heavy: mujoco, robosuite, libero
                self.env = LiberoEnv(**kwargs)
            self.env_suite = assignment.suite
            self.get_logger().info(f'created the {assignment.suite} env in '
                                   f'{time.perf_counter() - start:.1f} s')
        else:
            self.env.set_task(assignment.task_id)
        # The env runs the episode with the assignment's limit: its success bonus
        # counts the steps left before the limit (docs/sim.md, Dense stage reward).
        self.env.max_steps = episode_step_limit(assignment.suite, c.max_steps,
                                                assignment.max_steps)
        obs = self.env.reset(assignment.init_state_id)
        seconds = time.perf_counter() - start
        self.get_logger().info(f'reset to task {assignment.task_id} init state '
                               f'{assignment.init_state_id} in {seconds:.2f} s')
        return obs

    # ------------------------------------------------------------------ requests
    def _next_stamp(self):
        now = self.get_clock().now().nanoseconds
        self.last_stamp = max(now, self.last_stamp + 1)  # unique and increasing
        return self.last_stamp

    def request_action(self, new_stamp=False):
        """Publish instruction + image for the current step (with a new stamp if asked)."""
        attempts = 0 if self.waiting is None else self.waiting['attempts']
        if new_stamp or self.waiting is None:
            stamp = self._next_stamp()
            image = messages.numpy_to_image(
                self.obs['image'], self.config.image_encoding, stamp=stamp,
                frame_id=self.config.frame_id)
            self.waiting = {'stamp': stamp, 'image': image, 'attempts': attempts}
        now = time.monotonic()
        self.waiting['sent'] = now
        self.waiting['attempts'] += 1
        self._server_matched()  # None while no server is matched
        self.waiting['matched_since'] = self.matched_since
        self.waiting['early'] = (self.matched_since is not None
                                 and now - self.matched_since < DISCOVERY_SETTLE)
        self.instruction_publisher.publish(String(data=self.record.instruction))
        self.image_publisher.publish(self.waiting['image'])

    def _server_matched(self):
        matched = (self.image_publisher.get_subscription_count() > 0
                   and self.instruction_publisher.get_subscription_count() > 0
                   and self.action_subscription.get_publisher_count() > 0)
        servers = frozenset(tuple(info.endpoint_gid) for info in
                            self.get_publishers_info_by_topic(
                                self.action_subscription.topic_name))
        discovered = server_discovered(matched, servers, self.servers)
        self.servers = servers
        if not matched:
            self.matched_since = None
        elif self.matched_since is None or discovered:
            self.matched_since = time.monotonic()
        return matched

    def retry(self, reason, fresh=False):
        """
        Log ``reason`` and re-publish the current request, or abort past the budget.

        ``fresh``: ask for a new sample (new stamp) rather than the same request again
        (which the server answers with its cached reply, if it had answered it).
        """
        record = self.record
        record.retries += 1
        limit = self.config.action_retries
        if limit and self.waiting['attempts'] > limit:
            self.get_logger().error(f'{reason}; gave up after {self.waiting["attempts"]} '
                                    f'attempts at step {record.steps}: publishing the '
                                    f'{record.steps} steps recorded so far as aborted')
            self.finish(aborted=reason)
            return
        self.get_logger().warning(f'{reason}; re-publishing step {record.steps} (attempt '
                                  f'{self.waiting["attempts"] + 1})')
        self.report('retry', episode_id=record.episode_id, step=record.steps, reason=reason)
        self.request_action(new_stamp=fresh)

    def timer_callback(self):
        """Re-publish a request that timed out, or that went out before discovery settled."""
        matched = self._server_matched()  # also keeps matched_since current
        if self.record is None:
            if self.queue:
                self.start_next()
            return
        if self.waiting is None:
            return
        waited = time.monotonic() - self.waiting['sent']  # s
        if matched and self.matched_since != self.waiting['matched_since']:
            # The first server since the request went out, or a restarted one.
            self.get_logger().info('policy server discovered; sending the request again')
            self.request_action()
        elif self.waiting['early'] and waited > DISCOVERY_SETTLE:
            self.get_logger().info(
                f'no reply {waited:.1f} s after a request sent right after discovering the '
                'policy server (it may not have discovered this bridge yet); sending it again')
            self.request_action()
        elif waited > self.config.action_timeout:
            server = 'a policy server' if matched else 'NO policy server'
            self.retry(f'no action for stamp {self.waiting["stamp"]} ns after {waited:.1f} s '
                       f'({server} is subscribed to {self.image_publisher.topic_name})')

    def action_callback(self, msg):
        """Check the reply against the request in flight, step the env, record the step."""
        try:
            reply = messages.decode_action(msg)
        except ValueError as error:
            stamp = messages.stamp_to_ns(msg.header.stamp)
            if self.waiting is not None and stamp == self.waiting['stamp']:
                self.bad_input('action', f'malformed action reply: {error}', log=False)
                self.retry(f'malformed action reply: {error}', fresh=True)
            else:
                self.bad_input('action', f'ignored a malformed action reply (stamp {stamp} '
                               f'ns): {error}')
            return
        if self.waiting is None or reply.stamp_ns != self.waiting['stamp']:
            expected = None if self.waiting is None else self.waiting['stamp']
            self.get_logger().debug(f'ignored a reply for stamp {reply.stamp_ns} ns (waiting '
                                    f'for {expected})')
            return
        record = self.record
        if reply.instruction_crc32 != messages.instruction_crc32(record.instruction):
            self.retry('the action answers another instruction (CRC-32 '
                       f'{reply.instruction_crc32:08x}, ours '
                       f'{messages.instruction_crc32(record.instruction):08x})', fresh=True)
            return
        error = action_reply_error(reply)
        if error:
            self.bad_input('action', error, log=False)
            self.retry(error, fresh=True)
            return
        action = reply.action.astype(np.float32)  # what the episode records is what is applied
        try:
            obs, reward, done, info = self.env.step(action, convention='policy')
        except EnvHang as error:
            record, self.record, self.waiting = self.record, None, None
            self.episode_restarts[record.episode_id] += 1
            self._env_hung(error, record.assignment, step=record.steps)
            return
        except ValueError as error:
            error = f'the env rejected action {action.tolist()}: {error}'
            self.bad_input('action', error, log=False)
            self.retry(error, fresh=True)
            return
        record.builder.add_step(
            self.obs['image'], reply.action_tokens, reply.log_probs, action, reward,
            info['success'], reply.adapter_version, image_stamps_ns=self.waiting['stamp'],
            batch_sizes=reply.batch_size)
        self.obs = obs
        self.waiting = None
        if done or record.steps >= record.limit:
            self.finish()
        else:
            self.request_action(new_stamp=True)

    def _env_hung(self, error, assignment, step=0):
        """Run ``assignment`` again from its start: the watchdog killed the env worker."""
        self.env = None
        self.env_restarts += 1
        self.queue.appendleft(assignment)
        self.get_logger().error(f'{error} at step {step} of group {assignment.group_id}; '
                                'running the episode again in a new env worker')
        self.report('env_restart', group_id=assignment.group_id, step=step, reason=str(error),
                    env_restarts=self.env_restarts)

    # ------------------------------------------------------------------ episodes
    def finish(self, aborted=''):
        """Spool (optionally) and publish the recorded episode, then start the next one."""
        record, self.record, self.waiting = self.record, None, None
        assignment = record.assignment
        seconds = time.monotonic() - record.started
        extras = {'retries': record.retries, 'seed': assignment.seed,
                  'wall_s': round(seconds, 3), 'step_limit': record.limit,
                  'env_restarts': self.episode_restarts.pop(record.episode_id, 0),
                  'render': provenance.episode_render(self.config.camera_size,
                                                      self.config.multisample)}
        if aborted:
            extras['aborted'] = aborted
        episode = record.builder.build(extras)
        # On disk first: whoever receives the episode finds it spooled (a fresh-clone
        # test run read the spool on receipt and found nothing yet).
        if self.config.spool_dir:
            self.spool(episode)
        start = time.perf_counter()
        msg = messages.encode_episode(episode)
        self.episode_publisher.publish(msg)
        published = time.perf_counter() - start
        self.episodes_done += 1
        rate = record.steps / seconds if seconds > 0 else float('nan')
        self.get_logger().info(
            f'episode {record.episode_id}: {record.steps} steps, return '
            f'{episode.episode_return:.3f}, success {episode.success}, {seconds:.1f} s '
            f'({rate:.1f} steps/s), {len(msg.data) / 1e6:.2f} MB published in '
            f'{published * 1000:.0f} ms' + (f', ABORTED: {aborted}' if aborted else ''))
        self.report('episode_done', episode_id=record.episode_id, group_id=assignment.group_id,
                    steps=record.steps, success=episode.success,
                    episode_return=episode.episode_return, wall_s=round(seconds, 3),
                    aborted=aborted)
        self.start_next()

    def spool(self, episode):
        """Write the episode atomically to spool_dir (tmp file + rename)."""
        name = safe_file_stem(episode.episode_id, 'episode')
        path = os.path.join(self.config.spool_dir, f'{name}.npz')
        try:
            with open(path + '.tmp', 'wb') as stream:
                stream.write(episode_to_bytes(episode))
            os.replace(path + '.tmp', path)
        except OSError as error:
            self.get_logger().error(f'could not spool episode {episode.episode_id} to '
                                    f'{path}: {error} (it is still published)')

    def refuse(self, assignment, reason):
        """Tell the learner (on bridge_status) that ``assignment`` cannot run, and why."""
        self.report('assignment_refused', group_id=assignment.group_id,
                    episode_id=assignment.episode_id, task_id=assignment.task_id,
                    init_state_id=assignment.init_state_id, suite=assignment.suite,
                    reason=reason)

    def bad_input(self, name, text, log=True, **fields):
        """Count a bad value of input ``name``; log ``text`` and report it on bridge_status."""
        self.bad_inputs.count(name, text)
        if log:
            self.get_logger().error(text)
        self.report('bad_input', input=name, reason=text, **fields)

    def status(self):
        """Return what ``~/status`` and ``/diagnostics`` report of the bridge."""
        record = self.record
        return {'episodes_done': self.episodes_done,
                'episode_id': '' if record is None else record.episode_id,
                'step': 0 if record is None else record.steps,
                'queued': len(self.queue), 'env_restarts': self.env_restarts}

    def report(self, event, **fields):
        """Publish one JSON status line on bridge_status."""
        fields = {k: (None if isinstance(v, float) and math.isnan(v) else v)
                  for k, v in fields.items()}
        self.status_publisher.publish(String(data=json.dumps(
            {'event': event, 'bridge': self.namespace, **fields})))

    def destroy_node(self):
        """Close the env (and its GL context) with the node."""
        if self.env is not None:
            self.env.close()
            self.env = None
        return super().destroy_node()


def action_reply_error(reply):
    """Return why an action reply cannot be acted on ('' when it can)."""
    if not np.all(np.isfinite(reply.action)) or not np.all(np.isfinite(reply.log_probs)):
        return (f'non-finite action {reply.action.tolist()} / log-probs '
                f'{reply.log_probs.tolist()}')
    if np.any((reply.action_tokens < ACTION_TOKEN_MIN)
              | (reply.action_tokens > ACTION_TOKEN_MAX)):
        return (f'action tokens {reply.action_tokens.tolist()} outside '
                f'{ACTION_TOKEN_MIN}..{ACTION_TOKEN_MAX}')
    return ''


def main(args=None):
    """Run one sim bridge until interrupted."""
    return run_node(SimBridge, 'sim_bridge', args)


if __name__ == '__main__':
    sys.exit(main())
