"""The learner's and the bridge's group bookkeeping as pure functions (no ROS, no torch)."""

import collections

import numpy as np

from tgrpo_ros.episode import Assignment, EpisodeBuilder, queue_assignment
from tgrpo_ros.training.collector import episode_id, GroupCollector

GROUP = 41


def make_episode(bridge, attempt=1, versions=(0, 0), group_id=GROUP, aborted=''):
    """Return an episode with one step per entry of ``versions`` (the acting adapter)."""
    builder = EpisodeBuilder(task_id=0, init_state_id=0, group_id=group_id, instruction='x',
                             bridge=bridge, episode_id=episode_id(bridge, group_id, attempt),
                             image_shape=(4, 4, 3))
    for version in versions:
        builder.add_step(np.zeros((4, 4, 3), np.uint8), np.full(7, 31800), np.zeros(7),
                         np.zeros(7), 0.5, False, version)
    return builder.build({'aborted': aborted} if aborted else {})


def collector(version=0):
    c = GroupCollector()
    c.start({GROUP: ['/sim0', '/sim1']}, version)
    return c


def test_a_stale_episode_does_not_block_the_rerun_of_its_id():
    c = collector()
    stale = make_episode('/sim0', versions=(-1, -1))  # a restarted server serves -1
    assert c.offer(stale) == 'stale'
    assert c.missing() == {GROUP: ['/sim0', '/sim1']}
    # The re-run, even under the same id (an assignment without an attempt number).
    assert c.offer(make_episode('/sim0')) == 'accepted'
    assert c.offer(make_episode('/sim1', attempt=2)) == 'accepted'
    assert c.complete() and c.counts['stale_dropped'] == 1
    assert [e.bridge for e in c.take()] == ['/sim0', '/sim1']


def test_mixed_version_episodes_are_stale():
    c = collector(version=3)
    # adapter_version is the oldest step's (3); a step from version 4 makes it mixed.
    assert c.offer(make_episode('/sim0', versions=(3, 4))) == 'stale'
    assert c.offer(make_episode('/sim0', attempt=2, versions=(3, 3))) == 'accepted'


def test_aborted_and_empty_episodes_are_never_accepted():
    c = collector()
    assert c.offer(make_episode('/sim1', versions=(), aborted='no action')) == 'aborted'
    assert c.offer(make_episode('/sim1', attempt=2, versions=(0,), aborted='no action')) == \
        'aborted'
    assert c.offer(make_episode('/sim1', attempt=3, versions=())) == 'aborted'  # no step
    assert c.counts['aborted_dropped'] == 3 and c.missing() == {GROUP: ['/sim0', '/sim1']}


def test_duplicates_foreign_and_replays_are_counted_once():
    c = collector()
    first = make_episode('/sim0')
    assert c.offer(first) == 'accepted'
    assert c.offer(first) == 'duplicate'  # the transient-local replay
    assert c.offer(make_episode('/sim0', attempt=2)) == 'duplicate'  # one per bridge
    assert c.offer(make_episode('/sim2')) == 'foreign'  # not a member
    assert c.offer(make_episode('/sim1', group_id=GROUP - 1)) == 'foreign'  # an old group
    stale = make_episode('/sim1', versions=(-1,))
    assert c.offer(stale) == c.offer(stale) == 'stale'
    assert c.counts == {'stale_dropped': 1, 'duplicates_dropped': 2, 'foreign_dropped': 2,
                        'bad_dropped': 0, 'aborted_dropped': 0}
    assert c.missing() == {GROUP: ['/sim1']} and not c.complete()
    c.take()
    assert c.offer(make_episode('/sim1')) == 'foreign'  # late: the update has its episodes


def test_a_busy_bridge_ignores_the_resent_running_group_and_replaces_a_queued_one():
    queue = collections.deque()
    running = Assignment(group_id=7, task_id=0, init_state_id=0, episode_id='/sim0/7/a1')
    resent = Assignment(group_id=7, task_id=0, init_state_id=0, episode_id='/sim0/7/a2')
    assert queue_assignment(queue, running, resent) == 'running' and not queue
    other = Assignment(group_id=8, task_id=1, init_state_id=2, episode_id='/sim0/8/a1')
    newer = Assignment(group_id=8, task_id=1, init_state_id=2, episode_id='/sim0/8/a2')
    assert queue_assignment(queue, running, other) == 'queued'
    assert queue_assignment(queue, running, newer) == 'replaced'
    assert list(queue) == [newer]
    assert queue_assignment(queue, None, resent) == 'queued'  # idle: a finished group runs
    assert [a.group_id for a in queue] == [8, 7]


def test_bridge_watch_notices_death_and_restart():
    from tgrpo_ros.training.collector import BridgeWatch
    watch = BridgeWatch(['/sim0', '/sim1'])
    assert watch.update({}) == ([], [])
    assert watch.state() == {'/sim0': 'unseen', '/sim1': 'unseen'}
    assert watch.update({'/sim0': {'a'}, '/sim1': {'b'}}) == ([], [])  # first start
    assert watch.update({'/sim0': {'a'}}) == (['/sim1'], [])  # /sim1 killed
    assert watch.state() == {'/sim0': 'present', '/sim1': 'lost'}
    assert watch.update({'/sim0': {'a'}}) == ([], [])
    assert watch.update({'/sim0': {'a'}, '/sim1': {'c'}}) == ([], ['/sim1'])  # restarted
    # Killed and restarted while the dead endpoint still lingers in the graph.
    assert watch.update({'/sim0': {'a', 'd'}, '/sim1': {'c'}}) == ([], ['/sim0'])
    assert watch.update({'/sim0': {'d'}, '/sim1': {'c'}}) == ([], [])  # the lease ran out
    assert (watch.deaths, watch.restarts) == (1, 2)
