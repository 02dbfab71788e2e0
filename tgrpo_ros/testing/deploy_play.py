"""
Record the deploy graph on the simulated arm, then play the bag into it without the arm.

The graph is ``config/deploy_sim_arm.yaml`` as ``orchestration.graph`` builds it:
policy_server (stream mode, best-effort camera, the CPU stand-in), safety_controller
and sim_arm in ``/arm``. Used by test/test_bag_graph.py and bench/deploy_replay.py
(docs/bags.md, "Play into the deploy graph").

``record_on_sim_arm``: the whole graph runs with the controller live (sim_arm
follows its twists); the instruction (the server's parameter) is also published
latched on ``/arm/instruction``, as an operator would, so the bag carries it;
``tgrpo_record --profile deploy`` records for some seconds and is stopped with
SIGINT.

``play_offline``: the graph again without sim_arm, the controller in dry run,
both nodes with ``use_sim_time``; ``tgrpo_replay play --clock`` republishes the
recorded camera, instruction and end-effector pose at ``rate`` together with the
bag's time on ``/clock``. The recorded frame stamps are the arm's clock at
recording time; without the bag's clock the controller would judge every action
against today's clock and stop with ``stale_action`` (docs/bags.md).

A played frame is **answered** when the policy server published an action
stamped with that frame's stamp and the safety controller, while that action was
the newest it had, published at least one command: a control tick that is not a
stop. The controller publishes a gripper command with every such tick and never
with a stop (a watchdog or the e-stop), so those ticks are counted on its
gripper output, timed by their arrival here against the actions' arrival.
"""

from contextlib import contextmanager
from dataclasses import dataclass, field
import json
import os
import re
import signal
import sys
import time
from typing import Dict, List

ARM = '/arm'
CONFIG = 'deploy_sim_arm.yaml'
START_TIMEOUT = 180.0  # s: sim_arm imports LIBERO and builds its scene; the server loads
CAMERA = ARM + '/camera/image'
PLAYED_TOPICS = (CAMERA, ARM + '/instruction', ARM + '/ee_pose')
# What the graph on sim_arm publishes of the deploy profile (the controller is live).
RECORDED_TOPICS = PLAYED_TOPICS + (ARM + '/action', '/servo_node/delta_twist_cmds',
                                   '/gripper_controller/commands',
                                   ARM + '/safety_controller/status')


def deploy_config():
    """Return the deploy graph configuration on the simulated arm (config/deploy_sim_arm)."""
    from tgrpo_ros.bags.profiles import config_dirs
    from tgrpo_ros.orchestration import graph

    for directory in config_dirs():
        path = os.path.join(directory, CONFIG)
        if os.path.isfile(path):
            return graph.load_config(path)
    raise FileNotFoundError(f'{CONFIG} is in none of {config_dirs()}')


def deploy_nodes(model, *, with_sim_arm, offline, camera_rate_hz=5.0):
    """
    Return the NodeSpecs of the deploy graph.

    On the arm the controller is live; ``offline`` (no arm) keeps it in dry run and
    puts the server and the controller on the bag's clock.
    """
    from tgrpo_ros.orchestration import graph

    config = deploy_config()
    if not with_sim_arm:
        config.pop('sim_arm', None)
    else:
        config['sim_arm'].setdefault('parameters', {})['camera_rate_hz'] = float(camera_rate_hz)
    overrides = {'policy_server': {}, 'safety_controller': {'dry_run': bool(offline)}}
    if offline:
        for kind in ('policy_server', 'safety_controller'):
            overrides[kind]['use_sim_time'] = True
    return graph.build_graph(config, model_path=model, overrides=overrides)


@contextmanager
def _graph_and_client(log_dir, client_name):
    """Yield (NodeGroup logging to ``log_dir``, RosClient); close both on the way out."""
    from tgrpo_ros.orchestration.processes import NodeGroup
    from tgrpo_ros.testing.ros_client import RosClient

    group, client = NodeGroup(log_dir), RosClient(client_name)
    try:
        yield group, client
    finally:
        client.close()
        group.stop_all(report=sys.stderr)


def _start(group, nodes, log_dir):
    from tgrpo_ros.orchestration import graph

    group.start_graph(nodes, graph.write_params_files(nodes, os.path.join(log_dir, 'params')))


def _probe(client):
    """Return an ArmProbe on /arm that only watches (the graph feeds the controller)."""
    from tgrpo_ros.testing.arm_client import ArmProbe

    probe = ArmProbe(client, namespace=ARM)
    probe.feed.update(camera=False, pose=False, action=False)
    for publisher in (probe.camera_pub, probe.pose_pub, probe.action_pub):
        client.node.destroy_publisher(publisher)
    client.node.destroy_timer(probe.timer)
    return probe


def _watch_actions(client):
    """Subscribe to the server's actions; return the list of (image stamp ns, arrival s)."""
    from sensor_msgs.msg import JointState

    from tgrpo_ros.nodes import messages, topics

    actions = []
    clock = client.node.get_clock()  # the clock ArmProbe times its records with
    client.node.create_subscription(
        JointState, topics.client_topic(ARM, topics.ACTION_TOPIC),
        lambda msg: actions.append((messages.stamp_to_ns(msg.header.stamp),
                                    clock.now().nanoseconds * 1e-9)),
        topics.reliable_qos(1000))
    return actions


def _watch_stats(client):
    """Subscribe to the server's batch statistics; return the list of (sample ms, total ms)."""
    from std_msgs.msg import String

    from tgrpo_ros.nodes import topics

    stats = []
    client.node.create_subscription(
        String, topics.SERVER_STATS_TOPIC, lambda msg: stats.append(
            (json.loads(msg.data)['sample_ms'], json.loads(msg.data)['total_ms'])),
        topics.reliable_qos(1000))
    return stats


def _watch_frames(client):
    """Subscribe to the camera as the server does; return {frame stamp ns: arrival s}."""
    from sensor_msgs.msg import Image

    from tgrpo_ros.nodes import arm_topics, messages

    arrivals = {}
    clock = client.node.get_clock()
    client.node.create_subscription(
        Image, CAMERA, lambda msg: arrivals.setdefault(
            messages.stamp_to_ns(msg.header.stamp), clock.now().nanoseconds * 1e-9),
        arm_topics.SENSOR_QOS, raw=False)
    return arrivals


def _activate(client, probe, timeout):
    probe.wait_for_controller(timeout=timeout)
    if not (probe.transition('configure') and probe.transition('activate')):
        raise RuntimeError('the safety controller refused configure or activate')


@dataclass
class Recording:
    """What ``record_on_sim_arm`` recorded."""

    bag: str
    counts: Dict[str, int]   # messages per topic in the bag
    seconds: float           # s recorded after the graph answered
    live_actions: int        # actions the server published while recording
    live_commands: int       # twists the controller sent to the arm meanwhile


def record_on_sim_arm(bag, log_dir, model, *, seconds=6.0, camera_rate_hz=5.0,
                      timeout=START_TIMEOUT, min_counts=None, min_live=(0, 0)):
    """
    Run the deploy graph on sim_arm, record it with the deploy profile; stop everything.

    The recorder starts once the server answers frames and the controller commands
    the arm; ``seconds`` are counted from the moment it records every topic of
    ``RECORDED_TOPICS``; then, on a loaded machine maybe longer, until the recorder
    has counted ``min_counts`` ({topic: messages}) and the test has seen ``min_live``
    (actions, twists) meanwhile: events, not time. SIGINT then closes the bag (the
    recorder must exit 0). Node logs go to ``log_dir``.
    """
    with _graph_and_client(log_dir, 'deploy_record') as (group, client):
        return _record(group, client, bag, log_dir, model, seconds, camera_rate_hz, timeout,
                       dict(min_counts or {}), min_live)


def recorder_counts(log):
    """Return {topic: messages} of the last live count line of a tgrpo_record log."""
    lines = [line for line in log.splitlines() if line.startswith('[tgrpo_record] ')]
    if not lines:
        return {}
    return {topic: int(n) for topic, n in re.findall(r'(/\S+) (\d+)(?=,|$| )', lines[-1])}


def _record(group, client, bag, log_dir, model, seconds, camera_rate_hz, timeout,
            min_counts, min_live):
    from std_msgs.msg import String

    from tgrpo_ros.bags import storage as bag_io
    from tgrpo_ros.nodes import topics

    nodes = deploy_nodes(model, with_sim_arm=True, offline=False, camera_rate_hz=camera_rate_hz)
    instruction = client.node.create_publisher(
        String, topics.client_topic(ARM, topics.INSTRUCTION_TOPIC),
        topics.LATCHED_INSTRUCTION_QOS)
    text = deploy_config()['policy_server']['parameters']['instruction']  # the server's
    instruction.publish(String(data=text))  # latched: late subscribers get it too
    probe = _probe(client)
    actions = _watch_actions(client)
    _start(group, nodes, log_dir)
    _activate(client, probe, timeout)
    client.spin_until(lambda: len(actions) >= 3 and probe.records['gripper'], timeout,
                      'actions from the policy server and commands to sim_arm')
    recorder = group.start([sys.executable, '-m', 'tgrpo_ros.nodes.record'], args=[
        '--profile', 'deploy', '--clients', ARM, '-o', str(bag), '--status-period', '1'])
    client.spin_until(lambda: all(f'recording {topic} (' in recorder.log_text()
                                  for topic in RECORDED_TOPICS), 60.0,
                      f'the recorder on {list(RECORDED_TOPICS)}')
    started, before = time.monotonic(), (len(actions), len(probe.records['twist']))
    client.spin_for(seconds)

    def counted():
        counts = recorder_counts(recorder.log_text())
        return (all(counts.get(topic, 0) >= n for topic, n in min_counts.items())
                and len(actions) - before[0] >= min_live[0]
                and len(probe.records['twist']) - before[1] >= min_live[1])

    client.spin_until(counted, timeout, f'the recorder to count {min_counts} and {min_live} '
                      '(actions, twists) seen live')
    recorder.signal(signal.SIGINT)
    recorder.process.wait(timeout=60)
    if recorder.returncode != 0:
        raise RuntimeError(f'tgrpo_record exited {recorder.returncode}:\n'
                           + recorder.log_text()[-3000:])
    recorded = time.monotonic() - started
    live = (len(actions) - before[0], len(probe.records['twist']) - before[1])
    result = bag_io.Bag(bag)
    if result.problems:
        raise RuntimeError(f'the recorded bag has problems: {result.problems}')
    return Recording(str(bag), {name: info.count for name, info in result.topics.items()},
                     recorded, *live)


@dataclass
class Play:
    """What ``play_offline`` measured."""

    frames: int                # camera frames played
    actions: int               # of them answered by an action with their stamp
    answered: int              # of them answered by an action and then a command
    commands: int              # ticks that were commands (twist + gripper), not stops
    twists: int                # twists of every tick, stops included
    player_log: str
    status: Dict[str, object] = field(default_factory=dict)  # the controller's last status
    missed: List[int] = field(default_factory=list)  # stamps (ns) of unanswered frames
    inference_ms: List[float] = field(default_factory=list)  # server time per batch
    latency_ms: List[float] = field(default_factory=list)  # frame arrival to its action, here
    replaced: List[int] = field(default_factory=list)  # unanswered by design: a newer frame

    @property
    def fraction(self):
        """Return answered / frames (0 when nothing was played)."""
        return self.answered / self.frames if self.frames else 0.0


def play_offline(bag, log_dir, model, *, rate=1.0, clock=True, timeout=START_TIMEOUT):
    """
    Start the deploy graph without sim_arm, play ``bag`` into it; return a Play.

    ``clock=False`` plays without ``--clock`` (and the nodes on the system clock),
    to show what the controller does with recorded stamps then. Node logs go to
    ``log_dir``.
    """
    with _graph_and_client(log_dir, 'deploy_play') as (group, client):
        return _play(group, client, bag, log_dir, model, rate, clock, timeout)


def _play(group, client, bag, log_dir, model, rate, clock, timeout):
    from tgrpo_ros.bags import storage as bag_io
    from tgrpo_ros.nodes import messages

    recorded = bag_io.Bag(bag)
    frames = [messages.stamp_to_ns(recorded.decode(*m).header.stamp)
              for m in recorded.messages([CAMERA])]
    nodes = deploy_nodes(model, with_sim_arm=False, offline=True)
    control_rate = float(next(n for n in nodes if n.name == 'safety_controller')
                         .parameters['control_rate_hz'])  # Hz
    if not clock:
        for node in nodes:
            node.parameters.pop('use_sim_time', None)
    probe = _probe(client)
    actions = _watch_actions(client)
    stats = _watch_stats(client)
    arrivals = _watch_frames(client)
    _start(group, nodes, log_dir)
    _activate(client, probe, timeout)
    node = client.node
    # Both nodes listen (server: camera and instruction; controller: camera and pose).
    client.spin_until(lambda: node.count_subscribers(CAMERA) >= 2
                      and node.count_subscribers(PLAYED_TOPICS[1]) >= 1
                      and node.count_subscribers(PLAYED_TOPICS[2]) >= 1, timeout,
                      'the policy server and the safety controller on the played topics')
    command = [sys.executable, '-m', 'tgrpo_ros.nodes.replay', 'play', str(bag),
               '--topics', *PLAYED_TOPICS, '--rate', str(rate)] + (['--clock'] if clock else [])
    player = group.start(command, name='tgrpo_replay_play')
    deadline = time.monotonic() + timeout + len(frames) / 2.0 / rate
    while player.alive and time.monotonic() < deadline:
        client.spin_for(0.2)
    if player.alive:
        raise TimeoutError('tgrpo_replay play did not finish:\n' + player.log_text()[-2000:])
    if player.returncode != 0:
        raise RuntimeError(f'tgrpo_replay play exited {player.returncode}:\n'
                           + player.log_text()[-3000:])
    # The last frame's action arrives (an event, however loaded the machine); a last
    # frame lost on the way (best effort) leaves only this deadline to end the wait.
    last_deadline = time.monotonic() + 30.0
    while frames and not any(s == frames[-1] for s, _ in actions) \
            and time.monotonic() < last_deadline:
        client.spin_for(0.05)
    client.spin_for(0.5)  # and the controller's next tick, if the bag's clock still runs
    status = probe.latest_status() or {}

    played = set(frames)
    mine = sorted((t, s) for s, t in actions if s in played)  # (arrival s, stamp ns)
    # Arrival (here) of every gripper command: one per tick that is not a stop.
    ticks = sorted(t for t, _ in probe.records['dry_gripper'])
    answered = set()
    for i, (arrival, stamp) in enumerate(mine):
        end = mine[i + 1][0] if i + 1 < len(mine) else arrival + 1.0
        if any(arrival < t <= end for t in ticks):
            answered.add(stamp)
    missed = sorted(played - answered)
    return Play(frames=len(played), actions=len({s for _, s in mine}), answered=len(answered),
                commands=len(ticks), twists=len(probe.records['dry_twist']),
                player_log=player.log_text(), status=status, missed=missed,
                replaced=replaced_frames(sorted(played), {s: t for t, s in mine}, arrivals,
                                         ticks, 1.0 / control_rate),
                inference_ms=[total for _, total in stats],
                latency_ms=[(t - arrivals[s]) * 1e3 for t, s in mine if s in arrivals])


def replaced_frames(frames, done, arrivals, ticks, period):
    """
    Return the stamps of unanswered frames that a newer frame replaced, as designed.

    Both nodes act on the newest input only (docs/deploy.md). The server answers
    the newest frame once it is free: frame i goes without an action when frame
    i+1 arrived while the server was still busy with the last answered frame
    before it (whose action came after frame i+1). The controller commands its
    newest action at each tick: an action goes without a command when the next one
    came before the next tick, within one control ``period`` (s). ``frames``:
    stamps in order; ``done``: {stamp: action arrival s}; ``arrivals``: {stamp:
    frame arrival s}; ``ticks``: command arrival times (s), all seen here.
    """
    replaced, last_done = [], None
    for i, stamp in enumerate(frames):
        following = frames[i + 1] if i + 1 < len(frames) else None
        if stamp not in done:
            if last_done is not None and following in arrivals \
                    and last_done > arrivals[following]:
                replaced.append(stamp)
            continue
        last_done = done[stamp]
        later = [t for t in done.values() if t > last_done]
        if later and min(later) - last_done < period and not any(
                last_done < t <= min(later) for t in ticks):
            replaced.append(stamp)
    return replaced
