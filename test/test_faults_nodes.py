"""
Nodes SIGKILLed mid-episode and restarted: the learner still completes its updates.

policy_server + 2 sim_bridges + learner run as processes over DDS (real LiberoEnvs).

* A sim bridge: when /sim1 reports the start of its episode it is killed and
  started again. The restarted bridge gets its assignment again (the learner
  notices the new bridge in the node graph and re-assigns it; the assignment topic
  is transient-local too), and the learner trains on one full group: no partial
  group, no episode lost.
* The policy server, during update 2: the bridges wait for it; the restarted
  server serves version -1, so the episodes of update 2 come back stale; the
  learner pushes version 1 again, re-assigns, and trains update 2 on version-1
  episodes only.
"""

import csv
import json
import signal
import time

import pytest

from tgrpo_ros.nodes import topics

MAX_STEPS = 3
BRIDGES = ['/sim0', '/sim1']
BRIDGE_PARAMETERS = {'camera_size': 128, 'max_steps': MAX_STEPS, 'multisample': False,
                     'action_timeout': 60.0}


@pytest.mark.ros
@pytest.mark.slow
def test_a_bridge_killed_mid_episode_is_reassigned_when_it_restarts(
        ros_nodes, ros_client, tmp_path):
    from std_msgs.msg import String

    from tgrpo_ros.policy import cached_standin

    run_dir = tmp_path / 'run'
    policy = {'model_path': cached_standin(0), 'trainable': 'lora', 'lora_rank': 4,
              'lora_alpha': 8.0, 'adapter_root': str(run_dir / 'adapters')}
    ros_nodes.start('policy_server', name='policy_server', parameters=dict(
        policy, clients=BRIDGES, max_batch_size=2, max_wait_ms=20.0))
    bridges = {ns: ros_nodes.start('sim_bridge', name='sim_bridge', namespace=ns,
                                   parameters=BRIDGE_PARAMETERS) for ns in BRIDGES}
    events = []
    status = ros_client.node.create_subscription(
        String, topics.client_topic('/sim1', topics.BRIDGE_STATUS_TOPIC),
        lambda msg: events.append(json.loads(msg.data)), topics.reliable_qos(50))
    assert status
    learner = ros_nodes.start('learner', name='learner', parameters=dict(
        policy, bridges=BRIDGES, group_size=2, updates=1, max_steps=MAX_STEPS,
        run_dir=str(run_dir), epochs=1, minibatch_size=8, plot_every=0, group_timeout=600.0))

    ros_client.spin_until(lambda: any(e['event'] == 'episode_start' for e in events), 300.0,
                          "/sim1's first episode")
    killed = next(e for e in events if e['event'] == 'episode_start')
    bridges['/sim1'].signal(signal.SIGKILL)
    deadline = time.monotonic() + 60.0
    while bridges['/sim1'].alive and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not bridges['/sim1'].alive
    restarted = ros_nodes.start('sim_bridge', name='sim_bridge', namespace='/sim1',
                                parameters=BRIDGE_PARAMETERS)

    deadline = time.monotonic() + 400.0
    while learner.alive and time.monotonic() < deadline:
        ros_client.spin_for(0.5)
    log = learner.log_text()
    assert learner.returncode == 0, f'learner did not finish cleanly:\n{log[-3000:]}'
    summary = json.loads((run_dir / 'summary.json').read_text())
    metrics = summary['last_metrics']
    assert metrics['rollout/episodes'] == 2  # one full group
    assert summary['dropped']['bridges_restarted'] + summary['dropped']['bridges_lost'] >= 1
    assert 'sim bridge /sim1' in log
    done = [e for e in events if e['event'] == 'episode_done']
    assert done and all(not e['aborted'] for e in done)
    assert done[-1]['group_id'] == killed['group_id']  # the restarted bridge ran the group
    assert restarted.alive


@pytest.mark.ros
@pytest.mark.slow
def test_a_restarted_policy_server_gets_the_adapter_again_and_no_mixed_episode_is_trained(
        ros_nodes, ros_client, tmp_path):
    from sensor_msgs.msg import JointState
    from std_msgs.msg import String

    from tgrpo_ros.policy import cached_standin
    from tgrpo_ros.testing.policy_helpers import random_images
    from tgrpo_ros.testing.ros_client import request_action

    run_dir = tmp_path / 'run'
    policy = {'model_path': cached_standin(0), 'trainable': 'lora', 'lora_rank': 4,
              'lora_alpha': 8.0, 'adapter_root': str(run_dir / 'adapters')}
    server_parameters = dict(policy, clients=BRIDGES, max_batch_size=2, max_wait_ms=20.0)
    server = ros_nodes.start('policy_server', name='policy_server',
                             parameters=server_parameters)
    for ns in BRIDGES:
        ros_nodes.start('sim_bridge', name='sim_bridge', namespace=ns,
                        parameters=dict(BRIDGE_PARAMETERS, max_steps=6))
    events = []
    status = ros_client.node.create_subscription(
        String, topics.client_topic('/sim0', topics.BRIDGE_STATUS_TOPIC),
        lambda msg: events.append(json.loads(msg.data)), topics.reliable_qos(50))
    actions = []  # arrival of each action to /sim0
    action_sub = ros_client.node.create_subscription(
        JointState, topics.client_topic('/sim0', topics.ACTION_TOPIC),
        lambda msg: actions.append(msg.header.stamp), topics.reliable_qos(50))
    assert status and action_sub
    learner = ros_nodes.start('learner', name='learner', parameters=dict(
        policy, bridges=BRIDGES, group_size=2, updates=2, max_steps=6,
        run_dir=str(run_dir), epochs=1, minibatch_size=8, plot_every=0, group_timeout=600.0))

    def starts():
        return [e for e in events if e['event'] == 'episode_start']

    ros_client.spin_until(lambda: len(starts()) >= 2, 400.0, "/sim0's update-2 episode")
    # A step into it (an event: the server's first action to /sim0 since, not 0.3 s,
    # which on an idle machine could also end the episode before the kill, with no
    # stale episode at all).
    first_action = len(actions)
    ros_client.spin_until(lambda: len(actions) > first_action, 400.0,
                          "the first action of /sim0's update-2 episode")
    server.signal(signal.SIGKILL)
    deadline = time.monotonic() + 60.0
    while server.alive and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not server.alive
    # An outage of about 2 s. Nothing below depends on its length: a bridge re-sends its
    # request when it discovers the new server, or after its action_timeout at the latest.
    time.sleep(2.0)
    ros_nodes.start('policy_server', name='policy_server', parameters=server_parameters)

    deadline = time.monotonic() + 400.0
    while learner.alive and time.monotonic() < deadline:
        ros_client.spin_for(0.5)
    log = learner.log_text()
    assert learner.returncode == 0, f'learner did not finish cleanly:\n{log[-3000:]}'
    assert 'pushing adapter version 1 again' in log
    summary = json.loads((run_dir / 'summary.json').read_text())
    assert summary['updates'] == 2 and summary['dropped']['stale_dropped'] >= 1
    with open(run_dir / 'metrics.csv') as stream:
        rows = list(csv.DictReader(stream))
    assert [float(r['rollout/adapter_version']) for r in rows] == [0.0, 1.0]
    assert all(float(r['rollout/episodes']) == 2 for r in rows)
    reply = request_action(ros_client, '/sim0', random_images(1)[0],
                           'pick up the alphabet soup and place it in the basket', 9_000_000_003)
    assert reply.adapter_version == 2
