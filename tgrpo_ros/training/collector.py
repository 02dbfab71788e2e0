"""
Which episodes the learner trains on: the group bookkeeping of one update, without ROS.

``GroupCollector`` holds the groups of the current update (group id -> the bridge
namespaces that run it) and the adapter version their episodes must carry, and
judges every episode offered to it (``offer`` returns the verdict):

* ``accepted``: kept, one per (group, bridge); its id is remembered for good;
* ``duplicate``: an id accepted before (the episode topic is transient-local, so a
  restarted learner receives the bridges' history again), or a second episode of a
  (group, bridge) that already has one;
* ``foreign``: not a group of this update, or a bridge that is not a member;
* ``aborted``: the bridge gave up mid-episode (``extras['aborted']``) or the
  episode has no step: never trained on, the bridge must run it again;
* ``stale``: a step acted with another adapter version than the current one
  (``extras['step_adapter_versions']``, else ``adapter_version``): mixed-version
  episodes are never trained on.

Only accepted ids are remembered as seen: a rejected episode never blocks the re-run
of its group (the learner also gives every re-sent assignment a fresh attempt number
in its episode id, ``episode_id``). ``missing`` lists the members still owing an
episode, so only they get an assignment again.

``BridgeWatch`` notices a sim bridge leaving the node graph (killed) and coming
back (restarted), so the learner can re-assign what the dead one owed.
"""

from typing import Dict, List

VERDICTS = ('accepted', 'duplicate', 'foreign', 'aborted', 'stale')
COUNTERS = ('stale_dropped', 'duplicates_dropped', 'foreign_dropped', 'bad_dropped',
            'aborted_dropped')


def episode_id(bridge, group_id, attempt):
    """Return the episode id of ``bridge``'s run of ``group_id``, assignment ``attempt``."""
    return f'{bridge}/{int(group_id)}/a{int(attempt)}'


def step_versions(episode) -> List[int]:
    """Return the adapter version of every step (the episode's own when not recorded)."""
    versions = episode.extras.get('step_adapter_versions')
    if versions is None or len(versions) != episode.length:
        return [int(episode.adapter_version)] * max(episode.length, 1)
    return [int(v) for v in versions]


def is_aborted(episode) -> bool:
    """Return True for an episode the bridge gave up on, or one without a step."""
    return bool(episode.extras.get('aborted')) or episode.length == 0


class GroupCollector:
    """Collect the episodes of the current groups; judge each one offered."""

    def __init__(self):
        """Start with no current group; counters at zero."""
        self.seen = set()  # ids of accepted episodes, kept across updates
        self.judged = {}  # id of a rejected episode -> its verdict (counted once)
        self.members = {}  # group id -> bridge namespaces of the current update
        self.groups = {}  # group id -> {bridge: Episode}
        self.version = None
        self.counts = dict.fromkeys(COUNTERS, 0)

    def start(self, members: Dict[int, List[str]], version: int) -> None:
        """Make ``members`` (group id -> bridges) the current groups, for ``version``."""
        self.members = {int(g): list(bridges) for g, bridges in members.items()}
        self.groups = {g: {} for g in self.members}
        self.version = None if version is None else int(version)

    def offer(self, episode) -> str:
        """Judge ``episode``; keep it when accepted; return the verdict (one of VERDICTS)."""
        eid = episode.episode_id or f'{episode.bridge}/{episode.group_id}'
        if eid in self.seen:
            verdict = 'duplicate'
        elif episode.group_id not in self.groups or \
                episode.bridge not in self.members[episode.group_id]:
            verdict = 'foreign'
        elif is_aborted(episode):
            verdict = 'aborted'
        elif set(step_versions(episode)) != {self.version}:
            verdict = 'stale'
        elif episode.bridge in self.groups[episode.group_id]:
            verdict = 'duplicate'
        else:
            self.seen.add(eid)
            self.groups[episode.group_id][episode.bridge] = episode
            return 'accepted'
        if self.judged.get(eid) != verdict:  # a replay of the same rejection counts once
            self.judged[eid] = verdict
            self.counts[{'duplicate': 'duplicates_dropped', 'foreign': 'foreign_dropped',
                         'aborted': 'aborted_dropped', 'stale': 'stale_dropped'}[verdict]] += 1
        return verdict

    def missing(self) -> Dict[int, List[str]]:
        """Return group id -> the member bridges that still owe an episode."""
        return {g: [ns for ns in bridges if ns not in self.groups[g]]
                for g, bridges in self.members.items()
                if len(self.groups[g]) < len(bridges)}

    def complete(self) -> bool:
        """Return True when every member of every current group has an accepted episode."""
        return not self.missing()

    def have(self) -> Dict[int, int]:
        """Return group id -> accepted episodes so far."""
        return {g: len(e) for g, e in self.groups.items()}

    def take(self) -> list:
        """Return the accepted episodes (by group, then bridge) and forget the groups."""
        episodes = [self.groups[g][ns] for g in sorted(self.groups)
                    for ns in sorted(self.groups[g])]
        self.members, self.groups = {}, {}
        return episodes


class BridgeWatch:
    """
    Notice sim bridges that leave and rejoin the node graph (no ROS: fed what is seen).

    ``update(present)`` takes, per bridge namespace, the identities of its endpoints
    seen now (the GIDs of its assignment subscription by the bridge node itself, not
    a recorder's: ``learner.bridge_endpoints``) and returns (lost, back):
    the bridges seen before and gone now, and the restarted ones: a new identity for
    a bridge that was lost, or that was there before (a killed bridge's endpoint can
    linger in the graph until its DDS lease runs out, while its restart is seen).
    A bridge seen for the first time is neither.
    """

    def __init__(self, bridges):
        """Watch ``bridges`` (namespaces); none is counted present before the first update."""
        self.bridges = list(bridges)
        self.seen = {ns: frozenset() for ns in self.bridges}
        self.gone = set()
        self.deaths = 0
        self.restarts = 0

    def update(self, present):
        """Record the endpoint identities per bridge seen now; return (lost, back), sorted."""
        lost, back = [], []
        for ns in self.bridges:
            before, now = self.seen[ns], frozenset(present.get(ns, ()))
            if before and not now:
                lost.append(ns)
                self.gone.add(ns)
            elif now - before and (ns in self.gone or before):
                back.append(ns)
                self.gone.discard(ns)
            self.seen[ns] = now
        self.deaths += len(lost)
        self.restarts += len(back)
        return lost, back

    def state(self):
        """Return {namespace: 'present' | 'lost' | 'unseen'} as of the last update."""
        return {ns: 'present' if self.seen[ns] else 'lost' if ns in self.gone else 'unseen'
                for ns in self.bridges}
