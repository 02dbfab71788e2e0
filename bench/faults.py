"""
Fault schedule: K TGRPO updates through the ROS graph while nodes die and envs hang.

policy_server + 2 sim_bridges (env watchdog on) + learner run as processes over DDS
(inside a private network namespace), with the stand-in policy. One fault per
update from update 2 on, each injected when /sim0 (or /sim1) reports the start of
an episode of that update, i.e. mid-rollout:

* ``bridge_kill``: SIGKILL /sim1, start it again;
* ``server_restart``: SIGKILL the policy server a step into the episode, start it
  again 2 s later (it comes back serving version -1);
* ``env_hang``: SIGSTOP the env worker of /sim0 (a renderer hanging with no error);
* ``learner_kill``: SIGKILL the learner, start it again with ``resume: true``.

The script records every episode the bridges publish and reads the learner's
``trained_episodes.jsonl`` (which episodes each update trained on). Figures:

* ``updates_done``: updates in the final summary.json (target K);
* ``episodes_lost``: complete single-version episodes of a trained (group, bridge)
  whose slot was filled by a run published later (work done twice), plus trained
  slots never seen on the wire;
* ``partial_group_updates``: trained updates with fewer than group_size episodes
  in a group;
* ``mixed_version_episodes_trained``: trained episodes with a step from another
  adapter version than the update's;
* last line ``faults_survived: X/Y``: a fault is survived when its recovery was seen
  (restarted bridge publishes again; learner re-pushes the adapter; the bridge
  reports env_restart and publishes the episode; the learner resumes) and the run
  still completes all K updates. Target X = Y.
"""

import argparse
import collections
import json
import os
import signal
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from tgrpo_ros.orchestration import netns  # noqa: E402

FAULTS = ('bridge_kill', 'server_restart', 'env_hang', 'learner_kill')
BRIDGES = ['/sim0', '/sim1']


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split('\n')[1],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument('--updates', type=int, default=len(FAULTS) + 2, help='K')
    parser.add_argument('--max-steps', type=int, default=6, help='policy steps per episode')
    parser.add_argument('--env-step-timeout', type=float, default=20.0,
                        help="the bridges' env watchdog (s)")
    parser.add_argument('--timeout', type=float, default=1500.0, help='whole run (s)')
    return parser.parse_args(argv)


def env_worker(node):
    """Return the pid of the env worker process of a sim bridge node, or None."""
    pid = node.process.pid
    try:
        children = open(f'/proc/{pid}/task/{pid}/children').read().split()
        return next((int(c) for c in children
                     if 'spawn' in open(f'/proc/{c}/cmdline').read()), None)
    except OSError:
        return None


class Run:
    """The node processes, the wire records and the fault injector."""

    def __init__(self, args, log_dir):
        from std_msgs.msg import String, UInt8MultiArray

        from tgrpo_ros.nodes import messages, topics
        from tgrpo_ros.orchestration.processes import NodeGroup
        from tgrpo_ros.policy import cached_standin
        from tgrpo_ros.testing.ros_client import RosClient

        self.args = args
        self.run_dir = os.path.join(log_dir, 'run')
        self.nodes = NodeGroup(os.path.join(log_dir, 'node_logs'))
        policy = {'model_path': cached_standin(0), 'trainable': 'lora', 'lora_rank': 4,
                  'lora_alpha': 8.0, 'adapter_root': os.path.join(self.run_dir, 'adapters')}
        self.server_parameters = dict(policy, clients=BRIDGES, max_batch_size=2,
                                      max_wait_ms=20.0)
        # A bridge re-publishes its request after action_timeout: how long it waits
        # for a restarted server (the dead one's endpoint lingers until its lease ends).
        self.bridge_parameters = {'camera_size': 128, 'max_steps': args.max_steps,
                                  'multisample': False, 'action_timeout': 10.0,
                                  'env_step_timeout': args.env_step_timeout}
        self.learner_parameters = dict(
            policy, bridges=BRIDGES, group_size=2, updates=args.updates,
            max_steps=args.max_steps, run_dir=self.run_dir, epochs=1, minibatch_size=8,
            plot_every=0, group_timeout=120.0, checkpoint_every=1)
        self.server = self.nodes.start('policy_server', name='policy_server',
                                       parameters=self.server_parameters)
        self.bridges = {ns: self.start_bridge(ns) for ns in BRIDGES}
        self.client = RosClient('bench_faults')
        self.published = []  # (arrival s, Episode summary dict)
        self.events = []  # bridge_status dicts
        node = self.client.node
        node.create_subscription(UInt8MultiArray, topics.EPISODE_TOPIC, self.on_episode,
                                 topics.EPISODE_QOS)
        for ns in BRIDGES:
            node.create_subscription(
                String, topics.client_topic(ns, topics.BRIDGE_STATUS_TOPIC),
                lambda msg: self.events.append(json.loads(msg.data)), topics.reliable_qos(100))
        self.decode = messages.decode_episode
        self.learner = self.start_learner(resume=False)
        self.learners = [self.learner]

    def start_bridge(self, ns):
        return self.nodes.start('sim_bridge', name='sim_bridge', namespace=ns,
                                parameters=self.bridge_parameters)

    def start_learner(self, resume):
        return self.nodes.start('learner', name='learner',
                                parameters=dict(self.learner_parameters, resume=resume))

    def on_episode(self, msg):
        from tgrpo_ros.training.collector import step_versions
        episode = self.decode(msg)
        self.published.append((time.monotonic(), {
            'episode_id': episode.episode_id, 'bridge': episode.bridge,
            'group_id': episode.group_id, 'steps': episode.length,
            'versions': sorted(set(step_versions(episode))),
            'aborted': bool(episode.extras.get('aborted')),
            'env_restarts': episode.extras.get('env_restarts', 0)}))

    def updates_logged(self):
        """Return the highest 'update k/K' the learners logged so far."""
        import re
        done = [int(k) for node in self.learners
                for k in re.findall(r'update (\d+)/\d+  success', node.log_text())]
        return max(done, default=0)

    def spin(self, seconds):
        self.client.spin_for(seconds)

    def wait_for_start(self, ns, after, timeout=600.0):
        """Spin until ``ns`` reports an episode_start after event index ``after``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for event in self.events[after:]:
                if event['event'] == 'episode_start' and event['bridge'] == ns:
                    return True
            self.spin(0.1)
        return False

    def wait_until(self, predicate, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            self.spin(0.2)
        return False

    def inject(self, fault, update):
        """Inject ``fault`` during ``update``; return True when its recovery was seen."""
        self.wait_until(lambda: self.updates_logged() >= update - 1 or not self.learner.alive,
                        900.0)
        mark = len(self.events)
        target = '/sim1' if fault == 'bridge_kill' else '/sim0'
        if not self.wait_for_start(target, mark):
            print(f'{fault}: no episode start on {target}', flush=True)
            return False
        published = len(self.published)
        print(f'{fault}: injecting during update {update}', flush=True)
        if fault == 'bridge_kill':
            self.kill(self.bridges['/sim1'])
            self.bridges['/sim1'] = self.start_bridge('/sim1')
            return self.wait_until(lambda: any(
                p['bridge'] == '/sim1' and not p['aborted']
                for _, p in self.published[published:]), 600.0)
        if fault == 'server_restart':
            self.spin(0.3)
            self.kill(self.server)
            time.sleep(2.0)
            self.server = self.nodes.start('policy_server', name='policy_server',
                                           parameters=self.server_parameters)
            return self.wait_until(
                lambda: 'pushing adapter version' in self.learner.log_text(), 600.0)
        if fault == 'env_hang':
            worker = env_worker(self.bridges['/sim0'])
            if worker is None:
                print('env_hang: no env worker found', flush=True)
                return False
            os.kill(worker, signal.SIGSTOP)
            return self.wait_until(lambda: any(
                e['event'] == 'env_restart' for e in self.events[mark:]) and any(
                p['bridge'] == '/sim0' and p['env_restarts'] >= 1
                for _, p in self.published[published:]), 600.0)
        if fault == 'learner_kill':
            self.kill(self.learner)
            self.learner = self.start_learner(resume=True)
            self.learners.append(self.learner)
            return self.wait_until(lambda: 'resumed from' in self.learner.log_text(), 300.0)
        raise ValueError(f'unknown fault {fault!r}; choose from {FAULTS}')

    @staticmethod
    def kill(node):
        node.signal(signal.SIGKILL)
        deadline = time.monotonic() + 10.0
        while node.alive and time.monotonic() < deadline:
            time.sleep(0.05)

    def close(self):
        self.client.close()
        self.nodes.stop_all()


def figures(run, group_size=2):
    """Return the figures from trained_episodes.jsonl and the episodes seen on the wire."""
    trained = {}
    path = os.path.join(run.run_dir, 'trained_episodes.jsonl')
    if os.path.isfile(path):
        with open(path) as stream:
            for line in stream:
                record = json.loads(line)
                trained[record['update']] = record  # a redone update replaces the other
    partial = mixed = lost = 0
    seen = {p['episode_id']: (t, p) for t, p in run.published}
    for record in trained.values():
        groups = collections.Counter(e['group_id'] for e in record['episodes'])
        partial += any(n < group_size for n in groups.values())
        for episode in record['episodes']:
            mixed += episode['versions'] != [record['version']]
            if episode['episode_id'] not in seen:
                lost += 1
                continue
            used_at = seen[episode['episode_id']][0]
            lost += sum(1 for t, p in run.published
                        if p['group_id'] == episode['group_id']
                        and p['bridge'] == episode['bridge'] and t < used_at
                        and not p['aborted'] and p['versions'] == [record['version']])
    return trained, partial, mixed, lost


def main(argv=None):
    args = parse_args(argv)
    error = netns.run_script_in_private_netns(
        __file__, list(sys.argv[1:] if argv is None else argv), 'bench/faults.py')
    if error:
        print(error, file=sys.stderr)
        return 2
    schedule = list(zip(FAULTS, range(2, 2 + len(FAULTS))))
    if args.updates < schedule[-1][1] + 1:
        raise SystemExit(f'--updates ({args.updates}) must be >= {schedule[-1][1] + 1} for '
                         f'the schedule {schedule}')
    log_dir = tempfile.mkdtemp(prefix='bench_faults_')
    print(f'{args.updates} updates, 2 bridges, {args.max_steps} steps per episode, faults '
          f'{schedule}; logs in {log_dir}', flush=True)
    started = time.monotonic()
    run = Run(args, log_dir)
    survived = {}
    try:
        for fault, update in schedule:
            survived[fault] = run.inject(fault, update)
            print(f'{fault}: {"recovered" if survived[fault] else "NOT recovered"} '
                  f'({time.monotonic() - started:.0f} s)', flush=True)
        run.wait_until(lambda: not run.learner.alive,
                       args.timeout - (time.monotonic() - started))
        code = run.learner.returncode
        summary_path = os.path.join(run.run_dir, 'summary.json')
        summary = json.load(open(summary_path)) if os.path.isfile(summary_path) else {}
        trained, partial, mixed, lost = figures(run)
    finally:
        run.close()
    updates_done = summary.get('updates', 0) if code == 0 else 0
    completed = updates_done == args.updates
    print(f'learner exit {code}; {time.monotonic() - started:.0f} s; dropped '
          f"{summary.get('dropped')}; episodes published {len(run.published)}")
    print(f'updates_done: {updates_done}')
    print(f'episodes_lost: {lost}')
    print(f'partial_group_updates: {partial}')
    print(f'mixed_version_episodes_trained: {mixed}')
    ok = sum(1 for fault in FAULTS if survived.get(fault) and completed)
    print(f'faults_survived: {ok}/{len(FAULTS)}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
