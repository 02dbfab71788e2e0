"""
One full TGRPO update through the real node graph over DDS.

policy_server + 2 sim_bridges + learner run as processes (private network
namespace, see conftest). The learner assigns one group, collects the two
episodes, trains, saves adapter version 1 and pushes it; the server then stamps
its actions with version 1.
"""

import csv
import json
import os
import time

import pytest

MAX_STEPS = 4  # policy steps per episode: tiny, the point is the data path
BRIDGES = ['/sim0', '/sim1']


@pytest.mark.ros
@pytest.mark.slow
def test_learner_runs_one_update_and_the_server_serves_it(ros_nodes, ros_client, tmp_path):
    from tgrpo_ros.policy import cached_standin
    from tgrpo_ros.testing.policy_helpers import random_images
    from tgrpo_ros.testing.ros_client import request_action

    model = cached_standin(0)
    run_dir = tmp_path / 'run'
    adapter_root = run_dir / 'adapters'
    # One temperature, other than 1, for the server's sampling and the learner's
    # log-probs: training stays on-policy (the learner once recomputed them at 1).
    policy = {'model_path': model, 'trainable': 'lora+action_head', 'lora_rank': 8,
              'lora_alpha': 16.0, 'adapter_root': str(adapter_root), 'temperature': 2.0}
    ros_nodes.start('policy_server', name='policy_server', parameters=dict(
        policy, clients=BRIDGES, max_batch_size=2, max_wait_ms=50.0, seed=0))
    for ns in BRIDGES:
        ros_nodes.start('sim_bridge', name='sim_bridge', namespace=ns, parameters={
            'camera_size': 128, 'max_steps': MAX_STEPS, 'multisample': False,
            'action_timeout': 60.0})
    learner = ros_nodes.start('learner', name='learner', parameters=dict(
        policy, bridges=BRIDGES, group_size=2, tasks=[0], init_states=[0], updates=1,
        max_steps=MAX_STEPS, run_dir=str(run_dir), lr=1e-3, epochs=1, minibatch_size=4,
        seed=0, plot_every=1))

    deadline = time.monotonic() + 420.0  # s; env creation is slow on 2 shared cores
    while learner.alive and time.monotonic() < deadline:
        time.sleep(1.0)
    log = learner.log_text()
    assert learner.returncode == 0, f'learner did not finish cleanly:\n{log[-4000:]}'
    assert 'update 1/1  success' in log and 'return' in log and 's/update' in log

    summary = json.loads((run_dir / 'summary.json').read_text())
    assert summary['updates'] == 1 and summary['adapter_version'] == 1
    assert summary['temperature'] == 2.0
    assert summary['dropped']['stale_dropped'] == 0
    # What produced it: the bridges' render settings and MuJoCo, the weights' hashes.
    environment = summary['environment']
    assert environment['render'] == {'camera_size': 128, 'multisample': False,
                                     'gl_backend': os.environ.get('MUJOCO_GL', 'egl'),
                                     'mujoco': environment['versions']['mujoco']}
    assert environment['adapter']['path'].endswith('v00001')
    assert environment['adapter']['files']['adapter_model.safetensors']
    assert environment['checkpoint']['sha256'] and environment['seeds'] == {'seed': 0}
    assert os.path.isfile(adapter_root / 'v00001' / 'adapter_model.safetensors')
    assert os.path.isfile(run_dir / 'checkpoints' / 'update_00001' / 'trainer_state.pt')
    with open(run_dir / 'metrics.csv') as stream:
        rows = list(csv.DictReader(stream))
    assert len(rows) == 1 and rows[0]['update'] == '1'
    row = {k: float(v) for k, v in rows[0].items() if v}
    assert row['rollout/episodes'] == 2 and row['rollout/length_mean'] <= MAX_STEPS
    assert row['rollout/adapter_version'] == 0  # trained on version 0 episodes
    assert row['loss/logp_mismatch_max'] < 1e-4  # same weights and temperature as the server's
    assert row['loss/grad_norm'] > 0 and (run_dir / 'curves.png').is_file()

    # The server now answers with adapter version 1.
    reply = request_action(ros_client, '/sim0', random_images(1)[0],
                           'pick up the alphabet soup and place it in the basket', 123_000_000_007)
    assert reply.adapter_version == 1
