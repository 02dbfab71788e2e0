"""
tgrpo_launch: run the node graph of a configuration as processes (pip installs, no launch_ros).

    tgrpo_launch --config config/train_sim.yaml [--updates K] [--model-path DIR]
                 [--runs-root DIR] [--set KIND.NAME=VALUE ...] [--no-netns] [--verbose]

``make train`` is this command. It:

1. re-executes itself in a private network namespace (loopback only) when the
   machine allows it (``tgrpo_ros.orchestration.netns``); otherwise DDS discovery is
   kept on this host with ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST;
2. plans the run with ``graph.plan_run`` (the same function the launch_ros launch
   file calls): resolves the model (building the default stand-in on first use),
   creates the run directory ``<runs_root>/<task>__tgrpo__<seed>__<time>/`` and
   builds the node specs;
3. starts one process per node (``processes.NodeGroup``), echoing the learner's
   progress and the other nodes' warnings and errors;
4. ends when the learner exits 0 (exit 0), any node dies (exit 1), Ctrl-C or
   SIGTERM (exit 130) or the configured time-out passes (exit 124), stopping every
   node, and leaves in the run directory: metrics.csv, curves.png, adapters/v*,
   checkpoints/, summary.json, config.yaml and logs/ (one per node, plus the params
   files).

A deploy graph (``config/deploy_arm.yaml``, ``config/deploy_sim_arm.yaml``) has no
learner: it runs until Ctrl-C, the time-out or a node's death, and its run
directory holds config.yaml and logs/. Its safety controller is a lifecycle node:
configure and activate it (docs/deploy.md).
"""

import argparse
import json
import os
import signal
import sys
import time

from tgrpo_ros.orchestration import graph

LEARNER = 'learner'


class _Stop(Exception):
    """Raised by the signal handler to leave the monitoring loop."""


def run_graph(nodes, log_dir, env=None, timeout=None, verbose=False, stream=None,
              finisher=None):
    """Start ``nodes``, watch them until the finisher ends or one dies, stop them all."""
    from tgrpo_ros.orchestration.processes import NodeGroup

    if finisher is None:
        finisher = next((n.full_name for n in nodes if n.executable == LEARNER), None)
    env = dict(os.environ if env is None else env)
    env.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
    env.setdefault('PYTHONUNBUFFERED', '1')
    group = NodeGroup(log_dir, env=env, finisher=finisher, stream=stream, verbose=verbose)
    previous = {}

    def handler(signum, frame):
        raise _Stop(signum)

    for signum in (signal.SIGINT, signal.SIGTERM):
        previous[signum] = signal.signal(signum, handler)
    try:
        group.start_graph(nodes, graph.write_params_files(nodes,
                                                          os.path.join(log_dir, 'params')))
        return group.wait(timeout=timeout)
    except _Stop:
        group.stream.write('interrupted: stopping the graph\n')
        return 130
    finally:
        # Ignore a second Ctrl-C while the nodes shut down.
        for signum in previous:
            signal.signal(signum, signal.SIG_IGN)
        try:
            group.stop_all()
        finally:
            for signum, old in previous.items():
                signal.signal(signum, old)


def parse_overrides(items):
    """Parse ``kind.name=yaml_value`` overrides into {kind: {name: value}}."""
    import yaml
    overrides = {}
    for item in items or []:
        key, sep, value = item.partition('=')
        kind, dot, name = key.partition('.')
        if not sep or not dot or kind not in graph.NODE_KINDS:
            raise ValueError(f'override {item!r} must look like KIND.NAME=VALUE with KIND one '
                             f'of {list(graph.NODE_KINDS)}')
        overrides.setdefault(kind, {})[name] = yaml.safe_load(value)
    return overrides


def _ensure_private_network(argv, allow_netns):
    """Re-exec inside a private network namespace if possible; else force LOCALHOST."""
    from tgrpo_ros.orchestration import netns
    if netns.in_private_netns():
        return 'private network namespace'
    if allow_netns:
        ok, reason = netns.netns_available()
        if ok:
            sys.stdout.flush()
            netns.reexec_in_private_netns(
                [sys.executable, '-m', 'tgrpo_ros.orchestration.launcher', *argv], os.getcwd())
        print(f'tgrpo_launch: no private network namespace ({reason}); DDS discovery is kept '
              'on this host with ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST', file=sys.stderr)
    os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
    return 'ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST'


def _report(run, code, elapsed):
    summary_path = os.path.join(run.run_dir, 'summary.json')
    if code != 0 or not os.path.isfile(summary_path):
        print(f'tgrpo_launch: the graph ended with code {code} after {elapsed:.0f} s; node '
              f'logs: {run.log_dir}', file=sys.stderr, flush=True)
        return
    with open(summary_path) as stream:
        summary = json.load(stream)
    summary['main_wall_seconds'] = elapsed
    with open(summary_path, 'w') as stream:
        json.dump(summary, stream, indent=1, sort_keys=True)
    last = summary.get('last_metrics', {})
    print(f"done: {summary['updates']} updates in {elapsed:.0f} s "
          f"({summary.get('mean_seconds_per_update') or 0:.1f} s/update), final "
          f"return {last.get('rollout/return_mean', float('nan')):.3f}, success "
          f"{last.get('rollout/success_rate', float('nan')):.2f}\n"
          f'run directory: {run.run_dir} (metrics.csv, curves.png, adapters/, '
          'checkpoints/, summary.json, logs/)', flush=True)


def _parser():
    parser = argparse.ArgumentParser(
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        prog='tgrpo_launch', description='Run the tgrpo_ros node graph as processes.')
    parser.add_argument('--config', default=os.path.join('config', graph.DEFAULT_CONFIG),
                        help='graph configuration (YAML), e.g. config/train_sim.yaml')
    parser.add_argument('--model-path', help="checkpoint directory (default: the config's, "
                        'or the stand-in built in the user cache)')
    parser.add_argument('--updates', type=int, help='K, overrides learner.updates')
    parser.add_argument('--runs-root', help='parent of the run directory (default: the '
                        "config's main.runs_root, or $ROS_HOME/tgrpo_ros/runs)")
    parser.add_argument('--run-dir', help="this run's directory (default: a new one under "
                        'the runs root); an existing one is reused, e.g. to resume')
    parser.add_argument('--set', action='append', metavar='KIND.NAME=VALUE', default=[],
                        help='override a node parameter, e.g. learner.lr=0.001')
    parser.add_argument('--timeout', type=float, help='s before stopping all (default: the '
                        "config's main.timeout)")
    parser.add_argument('--no-netns', action='store_true',
                        help='do not enter a private network namespace')
    parser.add_argument('--verbose', action='store_true', help="echo every node's log")
    return parser


def plan(args):
    """Return the RunPlan of parsed command-line ``args`` (graph.plan_run, as launch_ros)."""
    overrides = parse_overrides(args.set)
    if args.updates is not None:
        overrides.setdefault(LEARNER, {})['updates'] = int(args.updates)
    return graph.plan_run(graph.load_config(args.config), config_path=args.config,
                          model_path=args.model_path, runs_root=args.runs_root,
                          run_dir=args.run_dir, overrides=overrides)


def main(argv=None):
    """Plan the run of a configuration and run its graph; return the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    network = _ensure_private_network(argv, allow_netns=not args.no_netns)
    from tgrpo_ros.orchestration.processes import prepare_environment
    prepare_environment()
    started = time.monotonic()
    try:
        run = plan(args)
    except (OSError, ValueError) as error:
        print(f'tgrpo_launch: {error}', file=sys.stderr)
        return 2
    print(f'run directory: {run.run_dir}\nmodel: {run.model_path}\nnetwork: {network}\n'
          f"nodes: {', '.join(n.full_name for n in run.nodes)}", flush=True)
    learners = [n for n in run.nodes if n.executable == LEARNER]
    if learners:
        print(f"updates: {learners[0].parameters.get('updates')}, group size "
              f"{learners[0].parameters.get('group_size')}", flush=True)
    else:  # a deploy graph: no finisher, it runs until Ctrl-C or the time-out
        managed = [n.full_name for n in run.nodes if n.lifecycle]
        print('deploy graph: running until Ctrl-C'
              + (f' or {args.timeout or run.timeout} s' if (args.timeout or run.timeout) else '')
              + (f"; configure and activate {', '.join(managed)} (ros2 lifecycle set NODE "
                 'configure, then activate)' if managed else ''), flush=True)
    timeout = args.timeout if args.timeout is not None else run.timeout
    code = run_graph(run.nodes, run.log_dir, timeout=timeout, verbose=args.verbose)
    _report(run, code, time.monotonic() - started)
    return code


if __name__ == '__main__':
    sys.exit(main())
