"""
Races in the training and deploy graphs, each shown by the events that expose it.

A real learner runs as a process; the test plays everything around it over DDS:
the sim bridges (nodes named ``sim_bridge`` in ``/sim0`` and ``/sim1``, answering
their assignments with episodes of their own), a recorder (a node of another name
that also subscribes to ``<ns>/assignment``, as ``config/record_training.yaml``
does) and the policy server's side of adapter pushes over DDS (it answers on
``/tgrpo/adapter_status``). Every wait is for an event (an assignment, a pushed
adapter, a counter on the learner's ``~/status``, the process's exit) with a
deadline only a hang reaches.

* **Recorders mistaken for bridges**: the learner once counted every subscriber
  of ``<ns>/assignment`` as that bridge. A recorder joining looked like every
  bridge restarting (assignments re-sent), and a bridge that died while a
  recorder listened was never reported lost.
* **A stale answer to a push over DDS**: a status with the version and sha256 of
  the re-pushed adapter, answering an earlier push (the learner kept it; a
  restarted server's own latched status reads the same), ended the re-push
  before the server answered it.
* **A status without a reason**: ``ok: false`` without ``reason`` raised KeyError
  in the learner instead of its clear one-line error.
* **A future-stamped twist** (sim_arm): its age, stamp to step time, is negative
  for as long as the clock has not passed the stamp, so it was never stale.
"""

import json

import numpy as np
import pytest

from tgrpo_ros.episode import EpisodeBuilder
from tgrpo_ros.nodes import messages, topics

BRIDGES = ['/sim0', '/sim1']
STEPS = 3
HANG = 300.0  # s: only a hang waits this long for an event (the learner loads torch first)


def make_episode(assignment, bridge, version):
    """Return an episode of STEPS random steps for ``assignment``, as a bridge would."""
    rng = np.random.default_rng(int(bridge[-1]))
    builder = EpisodeBuilder(
        task_id=assignment.task_id, init_state_id=assignment.init_state_id,
        group_id=assignment.group_id, instruction='pick up the alphabet soup and place it in '
        'the basket', suite=assignment.suite, bridge=bridge, episode_id=assignment.episode_id)
    for t in range(STEPS):
        builder.add_step(rng.integers(0, 255, (224, 224, 3), dtype=np.uint8),
                         rng.integers(31744, 32000, 7), np.full(7, -5.5, np.float32),
                         np.zeros(7, np.float32), 0.01 * (t + 1) * (1 + (bridge == '/sim1')),
                         False, version)
    return builder.build()


class Graph:
    """The learner's surroundings, played by the test in its own rclpy context."""

    def __init__(self, ros_client):
        """Play the server's side of DDS pushes and the learner's status; no bridge yet."""
        from std_msgs.msg import String, UInt8MultiArray

        self.client = ros_client
        self.node = node = ros_client.node
        self.events = []  # ('assignment', ns, Assignment) / ('push', header) / ('answer', push)
        self.statuses = []  # the learner's ~/status, decoded
        self.bridges = {}  # ns -> rclpy node named sim_bridge
        self.extra_nodes = []
        self.episodes = node.create_publisher(UInt8MultiArray, topics.EPISODE_TOPIC,
                                              topics.reliable_qos(8, transient_local=True))
        self.status_pub = node.create_publisher(String, topics.ADAPTER_STATUS_TOPIC,
                                                topics.ADAPTER_STATUS_QOS)
        node.create_subscription(
            UInt8MultiArray, topics.ADAPTER_TOPIC,
            lambda msg: self.events.append(('push', messages.decode_adapter(msg)[0])),
            topics.ADAPTER_QOS)
        node.create_subscription(String, '/learner/status',
                                 lambda msg: self.statuses.append(json.loads(msg.data)),
                                 topics.DIAGNOSTICS_QOS)

    def add_node(self, name, namespace):
        """Create node ``name`` in ``namespace`` in the test's context, spun with it."""
        import rclpy

        node = rclpy.create_node(name, namespace=namespace, context=self.client.context)
        self.client.executor.add_node(node)
        self.extra_nodes.append(node)
        return node

    def remove_node(self, node):
        """Destroy ``node``: its endpoints leave the node graph."""
        self.client.executor.remove_node(node)
        node.destroy_node()
        self.extra_nodes.remove(node)

    def start_bridge(self, ns):
        """Subscribe to ``ns``'s assignments from a node named sim_bridge, as a bridge does."""
        from std_msgs.msg import String

        node = self.bridges[ns] = self.add_node('sim_bridge', ns)
        node.create_subscription(
            String, topics.ASSIGNMENT_TOPIC,
            lambda msg: self.events.append(('assignment', ns,
                                            messages.decode_assignment(msg))),
            topics.ASSIGNMENT_QOS)

    def kill_bridge(self, ns):
        """Take bridge ``ns`` out of the node graph."""
        self.remove_node(self.bridges.pop(ns))

    def of(self, kind):
        """Return the events of ``kind``, in arrival order."""
        return [e for e in self.events if e[0] == kind]

    def assignments(self, ns):
        """Return the assignments bridge ``ns`` received, in order."""
        return [e[2] for e in self.of('assignment') if e[1] == ns]

    def wait(self, predicate, what):
        """Spin until ``predicate()``; only a hang reaches the deadline."""
        self.client.spin_until(predicate, HANG, what)

    def answer(self, header, ok=True, reason='', push='echo'):
        """Publish the server's answer to the push ``header`` (its push id unless given)."""
        from std_msgs.msg import String

        status = {'version': header['version'], 'sha256': header['sha256'], 'ok': ok,
                  'push': header.get('push') if push == 'echo' else push}
        if reason is not None:
            status['reason'] = reason
        self.status_pub.publish(String(data=json.dumps(status)))
        self.events.append(('answer', status['push']))

    def send(self, assignment, ns, version):
        """Publish bridge ``ns``'s episode for ``assignment`` run by adapter ``version``."""
        self.episodes.publish(messages.encode_episode(make_episode(assignment, ns, version)))

    def wait_exit(self, process):
        """Spin until ``process`` exits; return its log."""
        self.wait(lambda: not process.alive, f'the exit of {process.label}')
        return process.log_text()

    def close(self):
        """Destroy the nodes made here."""
        for node in list(self.extra_nodes):
            self.remove_node(node)


def start_learner(ros_nodes, tmp_path, **extra):
    """Start a learner of one update on two bridges, pushing its adapters over DDS."""
    from tgrpo_ros.policy import cached_standin

    run_dir = tmp_path / 'run'
    parameters = {
        'model_path': cached_standin(0), 'trainable': 'lora', 'lora_rank': 4,
        'lora_alpha': 8.0, 'bridges': BRIDGES, 'group_size': 2, 'updates': 1,
        'max_steps': STEPS, 'run_dir': str(run_dir), 'epochs': 1, 'minibatch_size': 8,
        'plot_every': 0, 'adapter_transport': 'dds',
        # nothing is re-sent, no push given up, because time passed
        'group_timeout': 3600.0, 'push_timeout': 3600.0}
    parameters.update(extra)
    return ros_nodes.start('learner', name='learner', parameters=parameters), run_dir


def start_first_update(graph, ros_nodes, tmp_path):
    """
    Start both bridges and the learner, answer its push of version 0, wait for assignments.

    Returns (learner, run_dir, first_push): the push's header, for a later re-push.
    """
    for ns in BRIDGES:
        graph.start_bridge(ns)
    learner, run_dir = start_learner(ros_nodes, tmp_path)
    graph.wait(lambda: graph.of('push'), 'the push of adapter version 0')
    first_push = graph.of('push')[0][1]
    graph.answer(first_push)
    graph.wait(lambda: all(graph.assignments(ns) for ns in BRIDGES), 'the first assignments')
    return learner, run_dir, first_push


@pytest.mark.ros
@pytest.mark.slow
def test_a_recorder_is_not_a_bridge_and_a_bridge_that_dies_under_it_is_lost(
        ros_nodes, ros_client, tmp_path):
    from std_msgs.msg import String

    graph = Graph(ros_client)
    try:
        for ns in BRIDGES:
            graph.start_bridge(ns)
        learner, run_dir = start_learner(ros_nodes, tmp_path)
        graph.wait(lambda: graph.of('push'), 'the push of adapter version 0')
        graph.answer(graph.of('push')[0][1])
        graph.wait(lambda: all(graph.assignments(ns) for ns in BRIDGES),
                   'the first assignments')
        first = {ns: graph.assignments(ns)[0] for ns in BRIDGES}
        # The learner looks at the node graph once a second while it collects.
        graph.wait(lambda: graph.statuses
                   and graph.statuses[-1]['bridges'] == dict.fromkeys(BRIDGES, 'present'),
                   'the learner to see both bridges')

        # A recorder joins (node 'tgrpo_record', both assignment topics); once it has the
        # latched assignments the learner's publishers have matched it.
        recorder = graph.add_node('tgrpo_record', '/')
        heard = []
        for ns in BRIDGES:
            recorder.create_subscription(
                String, topics.client_topic(ns, topics.ASSIGNMENT_TOPIC),
                lambda msg, ns=ns: heard.append(ns), topics.ASSIGNMENT_QOS)
        graph.wait(lambda: set(heard) == set(BRIDGES), 'the recorder on both assignments')
        # It publishes ~/status once a second, in the same loop: 3 more statuses, and it
        # has looked with the recorder there. No bridge restarted.
        seen = len(graph.statuses)
        graph.wait(lambda: len(graph.statuses) >= seen + 3, '3 more learner statuses')
        assert graph.statuses[-1]['bridges'] == dict.fromkeys(BRIDGES, 'present')
        assert graph.statuses[-1]['dropped']['bridges_restarted'] == 0

        # /sim0 dies while the recorder listens: it must be reported lost.
        graph.kill_bridge('/sim0')
        graph.wait(lambda: graph.statuses[-1]['dropped']['bridges_lost'] == 1,
                   'the learner to report /sim0 lost (bridges_lost 1 on ~/status)')
        assert graph.statuses[-1]['bridges'] == {'/sim0': 'lost', '/sim1': 'present'}
        # Back: it gets the latched assignment at once, then the learner sees the restart
        # and assigns it again with a fresh attempt.
        graph.start_bridge('/sim0')

        def reassigned():
            return [a for a in graph.assignments('/sim0')
                    if a.episode_id != first['/sim0'].episode_id]

        graph.wait(reassigned, "/sim0's group assigned again after its restart")
        again = reassigned()[0]
        graph.send(again, '/sim0', 0)
        graph.send(first['/sim1'], '/sim1', 0)  # /sim1 owed its episode all along
        graph.wait(lambda: len(graph.of('push')) >= 2, 'the push of adapter version 1')
        graph.answer(graph.of('push')[1][1])
        log = graph.wait_exit(learner)
    finally:
        graph.close()
    assert learner.returncode == 0, f'learner did not finish cleanly:\n{log[-3000:]}'
    summary = json.loads((run_dir / 'summary.json').read_text())
    # One death and one restart (/sim0's); the recorder counted as neither, so nothing
    # was re-sent to /sim1, which owed its episode while the recorder listened, and
    # /sim0 got exactly its one new attempt.
    assert summary['dropped']['bridges_lost'] == 1, summary['dropped']
    assert summary['dropped']['bridges_restarted'] == 1, summary['dropped']
    assert len(graph.assignments('/sim1')) == 1
    # /sim0: the first assignment, the same again latched on its restart, then the new
    # attempt.
    assert [a.episode_id for a in graph.assignments('/sim0')] == [
        first['/sim0'].episode_id] * 2 + [again.episode_id]
    assert 'sim bridge /sim0 left the node graph' in log
    assert summary['last_metrics']['rollout/episodes'] == 2


@pytest.mark.ros
@pytest.mark.slow
def test_a_re_push_waits_for_its_own_answer_and_a_refusal_without_reason_is_one_line(
        ros_nodes, ros_client, tmp_path):
    graph = Graph(ros_client)
    try:
        learner, run_dir, first_push = start_first_update(graph, ros_nodes, tmp_path)
        # /sim0's run was served by a restarted server (version -1): the learner pushes
        # version 0 again and must wait for the answer to that push.
        graph.send(graph.assignments('/sim0')[0], '/sim0', -1)
        graph.send(graph.assignments('/sim1')[0], '/sim1', 0)
        graph.wait(lambda: len(graph.of('push')) >= 2, 'the re-push of adapter version 0')
        repush = graph.of('push')[1][1]
        assert repush['version'] == first_push['version'] == 0
        assert repush['sha256'] == first_push['sha256']
        assert repush['push'] != first_push['push']
        # The answer to the first push, delivered again (as a restarted server's latched
        # status, or the learner's own copy of it): same version and sha256, not this push.
        graph.answer(first_push)
        # The learner spins for 2 status periods, waiting: a re-push taken as answered
        # would have re-assigned /sim0 by now.
        seen = len(graph.statuses)
        graph.wait(lambda: len(graph.statuses) >= seen + 2, '2 more learner statuses')
        graph.answer(repush)
        graph.wait(lambda: len(graph.assignments('/sim0')) >= 2, "/sim0's run assigned again")
        order = [e[0] if e[0] != 'assignment' else e[1] for e in graph.events
                 if e[0] == 'answer' or e[:2] == ('assignment', '/sim0')]
        # push 1 answered, /sim0 assigned, push 1's answer again, push 2 answered, /sim0
        # assigned again: never before its own answer.
        assert order == ['answer', '/sim0', 'answer', 'answer', '/sim0'], order
        graph.send(graph.assignments('/sim0')[1], '/sim0', 0)
        # The push of version 1 is refused with ok: false and no reason at all.
        graph.wait(lambda: len(graph.of('push')) >= 3, 'the push of adapter version 1')
        graph.answer(graph.of('push')[2][1], ok=False, reason=None)
        log = graph.wait_exit(learner)
    finally:
        graph.close()
    assert learner.returncode == 1, log[-3000:]
    assert 'policy server rejected adapter version 1: the server gave no reason' in log
    assert 'Traceback' not in log and 'KeyError' not in log, log[-3000:]
    assert 'dropped episode /sim0/' in log and 'pushing adapter version 0 again' in log


@pytest.mark.ros
@pytest.mark.slow
def test_sim_arm_holds_still_on_a_twist_stamped_in_the_future(ros_nodes, ros_client):
    from geometry_msgs.msg import PoseStamped, TwistStamped
    from std_msgs.msg import String

    from tgrpo_ros.nodes import arm_topics

    sim = ros_nodes.start('sim_arm', name='sim_arm', parameters={'camera_rate_hz': 1.0})
    node = ros_client.node
    poses, statuses = [], []
    node.create_subscription(PoseStamped, '/' + arm_topics.POSE_TOPIC,
                             lambda msg: poses.append(np.array([
                                 msg.pose.position.x, msg.pose.position.y,
                                 msg.pose.position.z])), arm_topics.SENSOR_QOS)
    node.create_subscription(String, '/sim_arm/status',
                             lambda msg: statuses.append(json.loads(msg.data)),
                             arm_topics.STATUS_QOS)
    twist_pub = node.create_publisher(TwistStamped, arm_topics.TWIST_TOPIC,
                                      arm_topics.COMMAND_QOS)
    ros_client.spin_until(lambda: poses and statuses, HANG, 'pose and status from sim_arm')
    ros_client.wait_for_subscribers(twist_pub, timeout=HANG)

    def twist(ahead_s):
        msg = TwistStamped()
        msg.header.frame_id = 'world'
        msg.header.stamp = messages.ns_to_stamp(
            node.get_clock().now().nanoseconds + int(ahead_s * 1e9))
        msg.twist.linear.x = 0.1  # m/s
        return msg

    def steps():
        return statuses[-1]['steps']

    # Stamped 10 s ahead: refused at once and counted, the arm holds still while the
    # simulation steps on (the old code followed it for 10 s).
    start = poses[-1]
    twist_pub.publish(twist(10.0))
    ros_client.spin_until(lambda: statuses[-1]['bad_input']['twist'] == 1, HANG,
                          'the future-stamped twist counted as bad input')
    counted = steps()
    ros_client.spin_until(lambda: steps() >= counted + 20, HANG, '20 more steps')
    assert np.linalg.norm(poses[-1] - start) < 0.005, poses[-1] - start  # m
    reason = statuses[-1]['last_bad_input']['twist']
    assert reason.startswith('holding still: twist stamped ') and reason.endswith(
        ' s ahead of the clock (more than command_timeout 0.1 s)'), reason
    assert statuses[-1]['rejected_twists'] == 1

    # The same twists stamped now move it: the hold came from the stamp alone.
    def moved():
        twist_pub.publish(twist(0.0))
        return poses[-1][0] - start[0] > 0.01

    ros_client.spin_until(moved, HANG, '1 cm of motion along x from fresh twists')
    assert statuses[-1]['bad_input']['twist'] == 1 and sim.alive
