"""
The learner over DDS against bad first runs of a group: it never stalls, never trains on them.

A real policy_server and learner run as processes; the test plays the two sim
bridges (it answers the assignments on ``/simN/assignment`` with episodes of its
own on ``/tgrpo/episodes``). The first run of one member is bad:

* ``stale``: it carries adapter version -1 (what a restarted server serves). The
  re-run must not be dropped as a duplicate of it (the group then never completed).
* ``aborted``: the bridge gave up (``extras['aborted']``), first at step 0 (no step),
  then at step 1. Neither may be trained on.

Either way the learner re-assigns that member at once, with a fresh episode id,
trains one update on the two good episodes and exits 0.

Bad input on the way (docs/faults.md, "Bad input"): a message that is not an episode
(both cases); in the ``aborted`` case a third run with a NaN reward (dropped, counted,
re-assigned at once); in the ``stale`` case a malformed adapter status. Each is
counted in the learner's ``~/status`` and ``summary.json`` (``bad_input``), and the
episode already collected from the other member is kept. The stale case pushes its
adapters over DDS (``adapter_transport: dds``), the server and the learner each with
an adapter root of their own: the server then serves version 1 from its own copy.
"""

import json
import os
import time

import numpy as np
import pytest

from tgrpo_ros.episode import EPISODE_SCHEMA, EpisodeBuilder
from tgrpo_ros.nodes import messages, topics

BRIDGES = ['/sim0', '/sim1']
STEPS = 3
# s: only a hang reaches it (the server and the learner import torch and load the
# stand-in, then one update; minutes on a loaded machine)
HANG = 600.0


def make_episode(assignment, bridge, version, steps=STEPS, aborted='', reward_nan=False):
    """Return an episode of ``steps`` random steps for ``assignment``, as a bridge would."""
    rng = np.random.default_rng(hash(bridge) % 1000 + steps)
    builder = EpisodeBuilder(
        task_id=assignment.task_id, init_state_id=assignment.init_state_id,
        group_id=assignment.group_id, instruction='pick up the alphabet soup and place it in '
        'the basket', suite=assignment.suite, bridge=bridge,
        episode_id=assignment.episode_id or f'{bridge}/{assignment.group_id}')
    for t in range(steps):
        builder.add_step(rng.integers(0, 255, (224, 224, 3), dtype=np.uint8),
                         rng.integers(31744, 32000, 7), np.full(7, -5.5, np.float32),
                         np.zeros(7, np.float32),
                         np.nan if reward_nan else 0.01 * (t + 1) * (1 + (bridge == '/sim1')),
                         False, version)
    return builder.build({'aborted': aborted} if aborted else {})


@pytest.mark.ros
@pytest.mark.slow
@pytest.mark.parametrize('bad, transport', [('stale', 'dds'), ('aborted', 'path')])
def test_a_bad_first_run_is_rerun_and_never_trained_on(ros_nodes, ros_client, tmp_path, bad,
                                                       transport):
    from std_msgs.msg import (MultiArrayDimension, MultiArrayLayout, String,
                              UInt8MultiArray)

    from tgrpo_ros.policy import cached_standin
    from tgrpo_ros.testing.policy_helpers import random_images
    from tgrpo_ros.testing.ros_client import request_action

    run_dir = tmp_path / 'learner' / 'run'
    server_root = tmp_path / 'server' / 'adapters' if transport == 'dds' else run_dir
    policy = {'model_path': cached_standin(0), 'trainable': 'lora', 'lora_rank': 4,
              'lora_alpha': 8.0}
    ros_nodes.start('policy_server', name='policy_server', parameters=dict(
        policy, clients=BRIDGES, max_batch_size=2, max_wait_ms=20.0,
        adapter_root=str(server_root)))
    learner = ros_nodes.start('learner', name='learner', parameters=dict(
        policy, bridges=BRIDGES, group_size=2, updates=1, max_steps=STEPS,
        # Every re-run comes from an event (a bad episode), never from time passing: with
        # a group_timeout of 5 s the owed assignments were re-sent whenever the bad
        # member's runs took longer (a loaded machine), and the counts below came out
        # higher (a fresh clone of 54b4575).
        run_dir=str(run_dir), epochs=1, minibatch_size=8, plot_every=0, group_timeout=3600.0,
        adapter_root=str(run_dir / 'adapters'), adapter_transport=transport))

    node = ros_client.node
    received = []  # (bridge, Assignment) in arrival order
    subs = [node.create_subscription(
        String, topics.client_topic(ns, topics.ASSIGNMENT_TOPIC),
        lambda msg, ns=ns: received.append((ns, messages.decode_assignment(msg))),
        topics.ASSIGNMENT_QOS) for ns in BRIDGES]
    episodes = node.create_publisher(UInt8MultiArray, topics.EPISODE_TOPIC,
                                     topics.reliable_qos(8, transient_local=True))
    statuses = []
    subs.append(node.create_subscription(String, '/learner/status',
                                         lambda msg: statuses.append(json.loads(msg.data)),
                                         topics.DIAGNOSTICS_QOS))
    # Made now, so that DDS matches it with the learner long before the junk goes out.
    status_pub = (node.create_publisher(String, topics.ADAPTER_STATUS_TOPIC,
                                        topics.ADAPTER_STATUS_QOS)
                  if transport == 'dds' else None)
    assert subs and episodes
    # What the junk below must have been counted as before any episode is answered: the
    # learner may finish its one update as soon as both good runs are in (a fresh clone
    # under load once finished before a status published just then had reached it).
    junk_counts = {'episode': 1, 'adapter_status': 1 if transport == 'dds' else 0}

    def junk_counted():
        counts = statuses[-1].get('bad_input', {}) if statuses else {}
        return all(counts.get(key, 0) >= n for key, n in junk_counts.items())

    bad_bridge = '/sim0' if bad == 'stale' else '/sim1'
    answered = 0
    junk_sent = False
    runs = dict.fromkeys(BRIDGES, 0)
    deadline = time.monotonic() + HANG
    while learner.alive and time.monotonic() < deadline:
        ros_client.spin_for(0.2)
        if received and not junk_sent:  # the first push is done: the learner collects
            junk_sent = True
            junk = b'PK\x03\x04 not an episode'  # framed as an episode, not an .npz
            episodes.publish(UInt8MultiArray(data=list(junk), layout=MultiArrayLayout(dim=[
                MultiArrayDimension(label=EPISODE_SCHEMA, size=len(junk), stride=len(junk))])))
            if status_pub:  # after the push's answer, so it cannot replace it
                status_pub.publish(String(data='{"version": 0, "ok": "yes"}'))
        if received and not junk_counted():
            continue  # hold the episodes until the learner has counted the junk
        for ns, assignment in received[answered:]:
            runs[ns] += 1
            if ns == bad_bridge and bad == 'stale' and runs[ns] == 1:
                episode = make_episode(assignment, ns, -1)
            elif ns == bad_bridge and bad == 'aborted' and runs[ns] <= 2:
                episode = make_episode(assignment, ns, 0, steps=runs[ns] - 1,
                                       aborted='no action after 3 attempts')
            elif ns == bad_bridge and bad == 'aborted' and runs[ns] == 3:
                episode = make_episode(assignment, ns, 0, reward_nan=True)
            else:
                episode = make_episode(assignment, ns, 0)
            episodes.publish(messages.encode_episode(episode))
            answered += 1
    log = learner.log_text()
    assert not learner.alive, f'learner still running after {HANG:.0f} s:\n{log[-3000:]}'
    assert learner.returncode == 0, f'learner did not finish cleanly:\n{log[-3000:]}'
    summary = json.loads((run_dir / 'summary.json').read_text())
    metrics = summary['last_metrics']
    assert metrics['rollout/episodes'] == 2 and metrics['rollout/length_mean'] == STEPS
    bad_runs = 1 if bad == 'stale' else 2
    assert summary['dropped'][f'{bad}_dropped'] == bad_runs
    # Bad input: dropped, counted, logged with the reason; the NaN run re-assigned.
    bad_input = ({'episode': 1, 'adapter_status': 1, 'bridge_status': 0} if bad == 'stale'
                 else {'episode': 2, 'adapter_status': 0, 'bridge_status': 0})
    assert summary['bad_input'] == bad_input
    assert summary['dropped']['bad_dropped'] == bad_input['episode']
    assert 'dropped an undecodable episode: episode payload of 19 B is not a valid .npz' in log
    # ~/status showed it while the learner ran (a bad input is reported at once).
    reported = [s for s in statuses if s['bad_input']['episode']]
    assert reported and 'not a valid .npz' in reported[0]['last_bad_input']['episode']
    if bad == 'aborted':
        assert 'non-finite rewards at steps [0, 1, 2]; assigning it again' in log
        bad_runs += 1
    else:
        assert "ignored a malformed adapter status (not a JSON object with a boolean 'ok')" \
            in log
    # The bad member was assigned again, each time with a fresh episode id; the other
    # only once.
    again = [a.episode_id for ns, a in received if ns == bad_bridge]
    assert len(again) == bad_runs + 1 and len(set(again)) == len(again)
    assert len([a for ns, a in received if ns != bad_bridge]) == 1
    reply = request_action(ros_client, '/sim0', random_images(1)[0],
                           'pick up the alphabet soup and place it in the basket', 7_000_000_001)
    assert reply.adapter_version == 1
    if transport == 'dds':  # the server's own copy, nothing read from the learner's root
        stored = sorted(os.listdir(server_root / 'received'))
        assert [name[:6] for name in stored] == ['v00000', 'v00001'], stored  # kept: 2
        assert (run_dir / 'adapters' / 'v00001' / 'adapter_model.safetensors').is_file()


def hostile_episodes(assignment, bridge):
    """
    Yield (what, UInt8MultiArray) episodes for ``assignment``, each with one hostile value.

    They carry an episode id of their own, so that none is the member's latest run
    (which would be assigned again): each is only dropped and counted.
    """
    from std_msgs.msg import MultiArrayDimension, MultiArrayLayout, UInt8MultiArray

    def episode():
        made = make_episode(assignment, bridge, 0)
        made.episode_id = f'{bridge}/hostile'
        return made

    floats = [('nan', np.nan), ('+inf', np.inf), ('-inf', -np.inf)]
    for name, beyond in (('rewards', [1e30, -1e30]), ('behaviour_logps', [-1e30, 0.5]),
                         ('actions', [1e30, -1e30])):
        for what, value in floats + [(f'{v:g}', v) for v in beyond]:
            spoilt = episode()
            getattr(spoilt, name).reshape(-1)[1] = value
            yield f'{name} {what}', messages.encode_episode(spoilt)
    for value in (-5, 0, 2 ** 40):
        spoilt = episode()
        spoilt.action_tokens[0, 0] = value
        yield f'action token {value}', messages.encode_episode(spoilt)
    for name in ('task_id', 'init_state_id', 'group_id', 'adapter_version'):
        for value in (float('nan'), float('inf'), 1e300, -5, 2 ** 70):
            spoilt = episode()
            setattr(spoilt, name, value)
            yield f'{name} {value}', messages.encode_episode(spoilt)
    for value in (float('nan'), -5, 2 ** 70):
        spoilt = episode()
        spoilt.extras['step_adapter_versions'] = [0, value, 0]
        yield f'step adapter version {value}', messages.encode_episode(spoilt)
    for what, length in (('empty', 0), ('overlong', STEPS + 1)):
        spoilt = episode()
        spoilt.rewards = np.zeros(length, np.float32)
        yield f'{what} rewards', messages.encode_episode(spoilt)
    msg = messages.encode_episode(episode())
    layout = MultiArrayLayout(dim=[MultiArrayDimension(
        label=EPISODE_SCHEMA, size=2 ** 32 - 1, stride=2 ** 32 - 1)])
    yield 'payload size 2^32-1', UInt8MultiArray(layout=layout, data=msg.data)
    yield 'empty payload', UInt8MultiArray(layout=MultiArrayLayout(dim=[MultiArrayDimension(
        label=EPISODE_SCHEMA, size=0, stride=0)]), data=[])


HOSTILE_JSON_NUMBERS = [float('nan'), float('inf'), float('-inf'), 1e300, -5, 0.5, 2 ** 70]


@pytest.mark.ros
@pytest.mark.slow
def test_hostile_numbers_at_every_learner_subscription_are_counted_and_it_trains_on(
        ros_nodes, ros_client, tmp_path):
    """
    Issue 17: episodes, adapter statuses and bridge statuses with hostile numbers over DDS.

    Each is counted in ``bad_input`` and none is trained on; then the two good
    episodes of the group are accepted, the update runs and the learner exits 0.
    Before the fix, episode ids and versions of -5 or 2^70, actions of 1e30 and
    adapter or bridge statuses with NaN versions or group ids went uncounted.
    """
    from std_msgs.msg import String

    from test_graph_races import BRIDGES as GRAPH_BRIDGES, Graph, start_first_update
    from tgrpo_ros.testing.ros_client import send_until_counted

    graph = Graph(ros_client)
    try:
        learner, run_dir, first_push = start_first_update(graph, ros_nodes, tmp_path)
        graph.wait(lambda: graph.statuses, 'a learner status')

        def bad_count(name):
            return graph.statuses[-1]['bad_input'].get(name, 0)

        assignment = graph.assignments('/sim0')[0]
        sent = {'episode': send_until_counted(
            ros_client, hostile_episodes(assignment, '/sim0'), graph.episodes.publish,
            lambda: bad_count('episode'))}

        def status(**changes):
            values = {'version': 0, 'sha256': first_push['sha256'], 'ok': True,
                      'push': 'hostile'}
            values.update(changes)
            return String(data=json.dumps(values))
        statuses = [(f'{key} {value}', status(**{key: value}))
                    for key in ('version', 'serving') for value in HOSTILE_JSON_NUMBERS]
        sent['adapter_status'] = send_until_counted(
            ros_client, statuses, graph.status_pub.publish, lambda: bad_count('adapter_status'))
        bridge_status = graph.node.create_publisher(
            String, topics.client_topic('/sim0', topics.BRIDGE_STATUS_TOPIC),
            topics.DIAGNOSTICS_QOS)
        ros_client.wait_for_subscribers(bridge_status, timeout=HANG)
        refusals = [(f'group_id {value}', String(data=json.dumps({
            'event': 'assignment_refused', 'group_id': value, 'task_id': 0,
            'init_state_id': 0, 'reason': 'hostile'}))) for value in HOSTILE_JSON_NUMBERS]
        sent['bridge_status'] = send_until_counted(
            ros_client, refusals, bridge_status.publish, lambda: bad_count('bridge_status'))
        assert sent == {'episode': 45, 'adapter_status': 14, 'bridge_status': 7}
        assert learner.alive

        # Good input: the group's two episodes, then the answer to the push of version 1.
        for ns in GRAPH_BRIDGES:
            graph.send(graph.assignments(ns)[0], ns, 0)
        graph.wait(lambda: len(graph.of('push')) >= 2, 'the push of adapter version 1')
        graph.answer(graph.of('push')[1][1])
        log = graph.wait_exit(learner)
    finally:
        graph.close()
    assert learner.returncode == 0, f'learner did not finish cleanly:\n{log[-3000:]}'
    assert 'Traceback' not in log
    summary = json.loads((run_dir / 'summary.json').read_text())
    assert summary['last_metrics']['rollout/episodes'] == 2
    assert all(summary['bad_input'][name] >= count for name, count in sent.items()), summary
    assert summary['dropped']['bad_dropped'] == summary['bad_input']['episode']
