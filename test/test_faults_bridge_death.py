"""
A sim bridge SIGKILLed mid-episode and restarted: the learner still completes its update.

policy_server + 2 sim_bridges + learner run as processes over DDS (real LiberoEnvs).
When /sim1 reports the start of its episode it is killed and started again. The
restarted bridge gets its assignment again (the learner notices the new bridge in
the node graph and re-assigns it; the assignment topic is transient-local too), and
the learner trains on one full group: no partial group, no episode lost.
"""

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
    deadline = time.monotonic() + 10.0
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
