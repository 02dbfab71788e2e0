"""
The learner survives a crash: SIGKILL during update 2, then ``resume: true``.

policy_server + 2 sim_bridges + learner run as processes (private network
namespace, see conftest), as in test_learner_node.py, for 3 updates. Once update 1
is checkpointed and the bridges got the assignment of update 2, the learner is
killed with SIGKILL (a crash: no clean-up code runs). The bridges finish those
update-2 episodes anyway and keep them, with the update-1 episodes, in their
transient-local history. A new learner with ``resume: true`` is started against the
same, still running, server and bridges. It must continue from checkpoint 1 (the
server already serves version 1: the repeated push is a no-op), train update 2 on
fresh episodes of its own assignments (the replayed history, from before the crash,
is dropped) and finish updates 2 and 3.
"""

import csv
import json
import os
import re
import signal
import time

import pytest

MAX_STEPS = 4  # policy steps per episode: tiny, the point is the data path
BRIDGES = ['/sim0', '/sim1']
UPDATES = 3
WAIT = 120.0  # s per wait once the envs exist; 2 cores shared with other jobs


def _wait_for(predicate, timeout, what, watched, shown=()):
    """
    Poll ``predicate`` every 0.2 s; fail early when a ``watched`` node died.

    On a timeout the logs of the ``watched`` and ``shown`` nodes are in the message.
    """
    deadline = time.monotonic() + timeout
    while not predicate():
        for node in watched:
            assert node.alive, f'{node.label} died ({node.returncode}) while waiting for ' \
                f'{what}:\n{node.log_text()[-4000:]}'
        if time.monotonic() > deadline:
            logs = '\n'.join(f'--- {node.label}\n{node.log_text()[-2000:]}'
                             for node in list(watched) + list(shown))
            pytest.fail(f'timed out after {timeout:.0f} s waiting for {what}; logs:\n{logs}')
        time.sleep(0.2)


def _logged_returns(log):
    """Return {update: return} from the learner's 'update k/K  success ...' lines."""
    return {int(k): float(r) for k, r in re.findall(
        r'update (\d+)/\d+  success \S+  return (\S+)', log)}


@pytest.mark.ros
@pytest.mark.slow
def test_learner_resumes_after_sigkill(ros_nodes, ros_client, tmp_path):
    from tgrpo_ros.policy import cached_standin
    from tgrpo_ros.testing.policy_helpers import random_images
    from tgrpo_ros.testing.ros_client import request_action
    from tgrpo_ros.training import checkpoint

    started = time.monotonic()
    model = cached_standin(0)
    run_dir = tmp_path / 'run'
    adapter_root = run_dir / 'adapters'
    checkpoints = run_dir / 'checkpoints'
    policy = {'model_path': model, 'trainable': 'lora+action_head', 'lora_rank': 8,
              'lora_alpha': 16.0, 'adapter_root': str(adapter_root)}
    server = ros_nodes.start('policy_server', name='policy_server', parameters=dict(
        policy, clients=BRIDGES, max_batch_size=2, max_wait_ms=50.0, seed=0))
    bridges = [ros_nodes.start('sim_bridge', name='sim_bridge', namespace=ns, parameters={
        'camera_size': 128, 'max_steps': MAX_STEPS, 'multisample': False,
        'action_timeout': 60.0}) for ns in BRIDGES]
    learner_parameters = dict(
        policy, bridges=BRIDGES, group_size=2, tasks=[0], init_states=[0], updates=UPDATES,
        max_steps=MAX_STEPS, run_dir=str(run_dir), lr=1e-3, epochs=1, minibatch_size=4,
        seed=0, plot_every=1)
    first = ros_nodes.start('learner', name='learner', parameters=learner_parameters)
    graph = [server] + bridges

    # 1. Update 1 done and checkpointed (env creation is slow on 2 shared cores).
    _wait_for(lambda: 'update 1/3  success' in first.log_text()
              and os.path.isfile(checkpoints / 'update_00001' / checkpoint.STATE_FILE),
              420.0, 'update 1 and its checkpoint', graph + [first])
    # 2. The worst moment to crash: update 2 is under way (both bridges got its
    # assignment), so the bridges publish update-2 episodes nobody collects.
    _wait_for(lambda: all(b.log_text().count('assignment for group') >= 2 for b in bridges),
              WAIT, 'the assignments of update 2', graph + [first])
    first.signal(signal.SIGKILL)
    assert first.stop() == -signal.SIGKILL
    first_log = first.log_text()
    # The new learner has the same name, hence the same log file: keep the first
    # one's log here and take it out of the group so that the fixture's report at
    # the end does not show the second learner's log under the first one's crash.
    ros_nodes.nodes.remove(first)
    killed_at = time.monotonic()
    assert 'update 2/3  success' not in first_log, 'update 2 finished before the kill'
    with open(run_dir / 'metrics.csv') as stream:
        assert [r['update'] for r in csv.DictReader(stream)] == ['1']
    _wait_for(lambda: all(b.log_text().count('episode /sim') >= 2 for b in bridges),
              WAIT, 'the orphaned update-2 episodes', graph)

    # 3. Resume against the same server and bridges.
    second = ros_nodes.start('learner', name='learner',
                             parameters=dict(learner_parameters, resume=True))
    _wait_for(lambda: not second.alive, 2 * WAIT, 'the resumed learner to finish', graph,
              shown=[second])
    log = second.log_text()
    assert second.returncode == 0, f'resumed learner failed:\n{log[-4000:]}'
    assert 'resumed from' in log and 'update_00001 (update 1)' in log
    assert 'starting at adapter version 1' in log
    assert 'update 1/3' not in log  # update 1 is not trained again
    assert 'update 2/3  success' in log and 'update 3/3  success' in log

    # 4. Metrics: one row per update, 1..3. Row 1 is the first learner's (written
    # before its checkpoint 1); update 2 was under way in the first learner but never
    # logged nor checkpointed, so row 2 is the resumed learner's, as is row 3: the
    # CSV's updates are exactly those the checkpoints and adapters hold. (Had the
    # crash come between logging row k and writing checkpoint k, the resumed learner
    # would redo update k and replace row k: MetricsLogger rewrites a repeated update,
    # so the CSV still ends with one row per checkpointed update.)
    with open(run_dir / 'metrics.csv') as stream:
        rows = list(csv.DictReader(stream))
    assert [int(r['update']) for r in rows] == [1, 2, 3]
    rows = {int(r['update']): {k: float(v) for k, v in r.items() if v} for r in rows}
    first_returns, second_returns = _logged_returns(first_log), _logged_returns(log)
    assert set(first_returns) == {1} and set(second_returns) == {2, 3}
    for k in (1, 2, 3):
        logged = first_returns[1] if k == 1 else second_returns[k]
        assert abs(rows[k]['rollout/return_mean'] - logged) < 1e-3, (k, rows[k], logged)
        assert rows[k]['rollout/episodes'] == 2
        # Each update trained on episodes of the version it started from.
        assert rows[k]['rollout/adapter_version'] == k - 1
        assert rows[k]['loss/logp_mismatch_max'] < 1e-3  # the server's weights = learner's
    latest = checkpoint.latest_checkpoint(checkpoints)
    assert os.path.basename(latest) == 'update_00003'
    assert [os.path.basename(p) for p in checkpoint.list_checkpoints(checkpoints)] == [
        'update_00002', 'update_00003']  # keep_checkpoints: 2
    for k in range(UPDATES + 1):
        assert os.path.isfile(adapter_root / f'v{k:05d}' / 'adapter_model.safetensors'), k

    summary = json.loads((run_dir / 'summary.json').read_text())
    assert summary['updates'] == UPDATES and summary['adapter_version'] == UPDATES
    # The history the bridges replay to the new learner (update 1 and the orphaned
    # update-2 episodes, 2 each) belongs to groups it did not assign: all 4 dropped.
    # Its own groups have fresh ids, so nothing is mistaken for a duplicate.
    assert summary['dropped'] == {'foreign_dropped': 4, 'duplicates_dropped': 0,
                                  'stale_dropped': 0, 'bad_dropped': 0, 'aborted_dropped': 0,
                                  'bridges_lost': 0, 'bridges_restarted': 0}, \
        summary['dropped']
    for bridge in bridges:  # update 1, orphaned update 2, update 2 again, update 3
        ids = re.findall(r'episode (/sim\d/\d+/a\d+): ', bridge.log_text())
        assert len(ids) == 4 and len(set(ids)) == 4, ids

    # The server served every version once, in order, and now answers with version 3.
    swaps = re.findall(r'hot-swapped adapter version (-?\d+) -> (\d+)', server.log_text())
    assert [int(v) for _, v in swaps] == [0, 1, 2, 3], swaps
    reply = request_action(ros_client, '/sim0', random_images(1)[0],
                           'pick up the alphabet soup and place it in the basket', 321_000_000_003)
    assert reply.adapter_version == UPDATES
    print(f'\nresume test: {killed_at - started:.1f} s to the kill, '
          f'{time.monotonic() - killed_at:.1f} s from the kill to the end; resumed '
          f"learner's drops {summary['dropped']}")
