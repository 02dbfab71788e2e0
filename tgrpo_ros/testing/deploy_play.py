"""
Record the deploy graph on the simulated arm, then play the bag into it without the arm.

The graph is ``config/deploy_sim_arm.yaml`` as ``orchestration.graph`` builds it:
policy_server (stream mode, best-effort camera, the CPU stand-in), safety_controller
and sim_arm in ``/arm``. Used by test/test_bag_graph.py and bench/deploy_replay.py
(docs/bags.md, "Play into the deploy graph").

``record_on_sim_arm``: the whole graph runs with the controller live (sim_arm
follows its twists); the instruction is published latched on ``/arm/instruction``,
as an operator would; ``tgrpo_record --profile deploy`` records for some seconds
and is stopped with SIGINT.

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

from dataclasses import dataclass, field
import os
import signal
import sys
import time
from typing import Dict, List

ARM = '/arm'
INSTRUCTION = 'pick up the alphabet soup and place it in the basket'
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
    from tgrpo_ros.nodes.record import config_dirs
    from tgrpo_ros.orchestration import graph

    for directory in config_dirs():
        path = os.path.join(directory, CONFIG)
        if os.path.isfile(path):
            return graph.load_config(path)
    raise FileNotFoundError(f'{CONFIG} is in none of {config_dirs()}')


def deploy_nodes(model, *, with_sim_arm, offline, camera_rate_hz=5.0):
    """
    Return the NodeSpecs of the deploy graph.

    The instruction comes from ``/arm/instruction`` (not the parameter), so a bag
    carries it. On the arm the controller is live; ``offline`` (no arm) keeps it in
    dry run and puts the server and the controller on the bag's clock.
    """
    from tgrpo_ros.orchestration import graph

    config = deploy_config()
    if not with_sim_arm:
        config.pop('sim_arm', None)
    else:
        config['sim_arm'].setdefault('parameters', {})['camera_rate_hz'] = float(camera_rate_hz)
    overrides = {'policy_server': {'instruction': ''},
                 'safety_controller': {'dry_run': bool(offline)}}
    if offline:
        for kind in ('policy_server', 'safety_controller'):
            overrides[kind]['use_sim_time'] = True
    return graph.build_graph(config, model_path=model, overrides=overrides)


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
                      timeout=START_TIMEOUT):
    """
    Run the deploy graph on sim_arm, record it with the deploy profile; stop everything.

    The recorder starts once the server answers frames and the controller commands
    the arm; ``seconds`` are counted from the moment it records every topic of
    ``RECORDED_TOPICS``; SIGINT then closes the bag (the recorder must exit 0).
    Node logs go to ``log_dir``.
    """
    from tgrpo_ros.orchestration.processes import NodeGroup
    from tgrpo_ros.testing.ros_client import RosClient

    group, client = NodeGroup(log_dir), RosClient('deploy_record')
    try:
        return _record(group, client, bag, log_dir, model, seconds, camera_rate_hz, timeout)
    finally:
        client.close()
        group.stop_all(report=sys.stderr)


def _record(group, client, bag, log_dir, model, seconds, camera_rate_hz, timeout):
    from std_msgs.msg import String

    from tgrpo_ros.nodes import bag_io, topics

    nodes = deploy_nodes(model, with_sim_arm=True, offline=False, camera_rate_hz=camera_rate_hz)
    instruction = client.node.create_publisher(
        String, topics.client_topic(ARM, topics.INSTRUCTION_TOPIC),
        topics.LATCHED_INSTRUCTION_QOS)
    instruction.publish(String(data=INSTRUCTION))  # latched: late subscribers get it too
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
    skipped: int               # frames recorded before the instruction: not played
    actions: int               # of them answered by an action with their stamp
    answered: int              # of them answered by an action and then a command
    commands: int              # ticks that were commands (twist + gripper), not stops
    twists: int                # twists of every tick, stops included
    player_log: str
    status: Dict[str, object] = field(default_factory=dict)  # the controller's last status
    missed: List[int] = field(default_factory=list)  # stamps (ns) of unanswered frames

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
    from tgrpo_ros.orchestration.processes import NodeGroup
    from tgrpo_ros.testing.ros_client import RosClient

    group, client = NodeGroup(log_dir), RosClient('deploy_play')
    try:
        return _play(group, client, bag, log_dir, model, rate, clock, timeout)
    finally:
        client.close()
        group.stop_all(report=sys.stderr)


def _play(group, client, bag, log_dir, model, rate, clock, timeout):
    from tgrpo_ros.nodes import bag_io, messages

    recorded = bag_io.Bag(bag)
    # The server acts only with an instruction: play from the bag's first one on.
    first = next(recorded.messages(list(PLAYED_TOPICS)))[2]
    instructed = next(recorded.messages([PLAYED_TOPICS[1]]), None)
    if instructed is None:
        raise ValueError(f'{bag} has no {PLAYED_TOPICS[1]}: record with the instruction '
                         'published (latched) on it')
    start = max(instructed[2] - 1000, first)  # ns; 1 us less: the offset is a float
    frames = [messages.stamp_to_ns(recorded.decode(*m).header.stamp)
              for m in recorded.messages([CAMERA], start=start)]
    before = sum(1 for _ in recorded.messages([CAMERA])) - len(frames)
    nodes = deploy_nodes(model, with_sim_arm=False, offline=True)
    if not clock:
        for node in nodes:
            node.parameters.pop('use_sim_time', None)
    probe = _probe(client)
    actions = _watch_actions(client)
    _start(group, nodes, log_dir)
    _activate(client, probe, timeout)
    node = client.node
    # Both nodes listen (server: camera and instruction; controller: camera and pose).
    client.spin_until(lambda: node.count_subscribers(CAMERA) >= 2
                      and node.count_subscribers(PLAYED_TOPICS[1]) >= 1
                      and node.count_subscribers(PLAYED_TOPICS[2]) >= 1, timeout,
                      'the policy server and the safety controller on the played topics')
    command = [sys.executable, '-m', 'tgrpo_ros.nodes.replay', 'play', str(bag),
               '--topics', *PLAYED_TOPICS, '--rate', str(rate),
               '--start-offset', repr((start - first) / 1e9)] + (['--clock'] if clock else [])
    player = group.start(command, name='tgrpo_replay_play')
    deadline = time.monotonic() + timeout + len(frames) / 2.0 / rate
    while player.alive and time.monotonic() < deadline:
        client.spin_for(0.2)
    if player.alive:
        raise TimeoutError('tgrpo_replay play did not finish:\n' + player.log_text()[-2000:])
    if player.returncode != 0:
        raise RuntimeError(f'tgrpo_replay play exited {player.returncode}:\n'
                           + player.log_text()[-3000:])
    client.spin_for(1.0)  # the last action and its commands arrive
    status = probe.latest_status() or {}

    played = set(frames)
    mine = sorted((t, s) for s, t in actions if s in played)  # (arrival s, stamp ns)
    # Arrival (here) of every gripper command: one per tick that is not a stop.
    ticks = sorted(t for t, _ in probe.records['dry_gripper'])
    answered, missed = set(), []
    for i, (arrival, stamp) in enumerate(mine):
        end = mine[i + 1][0] if i + 1 < len(mine) else arrival + 1.0
        if any(arrival < t <= end for t in ticks):
            answered.add(stamp)
    missed = sorted(played - answered)
    return Play(frames=len(played), actions=len({s for _, s in mine}), answered=len(answered),
                commands=len(ticks), twists=len(probe.records['dry_twist']), skipped=before,
                player_log=player.log_text(), status=status, missed=missed)
