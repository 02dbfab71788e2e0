"""
The main job (``make train``): a short TGRPO run of the whole node graph.

    python -m tgrpo_ros.orchestration.train_main --config config/train_sim.yaml [--updates K]
                                   [--model-path DIR] [--no-netns]

1. Re-executes itself in a private network namespace (loopback only) when the
   machine allows it (``tgrpo_ros.orchestration.netns``); otherwise DDS discovery is
   at least kept on this host with ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST.
2. Builds the stand-in checkpoint when the configured model path is missing and
   is the stand-in's (``.cache/standin_seed<seed>``).
3. Creates ``runs/<task>__tgrpo__<seed>__<time>/`` and runs the graph there with the
   pip-side launcher, echoing the learner's progress (update k/K, success, return,
   s/update).
4. Leaves in the run directory: metrics.csv, curves.png, adapters/v*, checkpoints/,
   summary.json, logs/ (one per node, plus the params files) and config.yaml.
"""

import argparse
import json
import os
import shutil
import sys
import time

from tgrpo_ros.orchestration import graph
from tgrpo_ros.orchestration.processes import prepare_environment

STANDIN_PREFIX = 'standin_seed'


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
                [sys.executable, '-m', 'tgrpo_ros.orchestration.train_main', *argv], os.getcwd())
        print(f'train_main: no private network namespace ({reason}); DDS discovery is kept '
              'on this host with ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST', file=sys.stderr)
    os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
    return 'ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST'


def resolve_model(model_path, standin_seed):
    """Return an absolute model path; build the stand-in there if it is a missing stand-in."""
    path = os.path.abspath(model_path)
    if os.path.isfile(os.path.join(path, 'config.json')):
        return path
    if os.path.basename(path.rstrip('/')).startswith(STANDIN_PREFIX):
        from tgrpo_ros.policy import build_standin
        print(f'building the stand-in policy (seed {standin_seed}) into {path}', flush=True)
        return os.path.abspath(build_standin(path, seed=int(standin_seed)))
    raise FileNotFoundError(
        f'model_path {model_path!r} holds no checkpoint (config.json); give an OpenVLA '
        f"checkpoint directory, or a path named '{STANDIN_PREFIX}<seed>' to build the stand-in")


def make_run_dir(runs_root, task_name, seed):
    """Create runs/<task>__tgrpo__<seed>__<time> (CleanRL-style run name) and return it."""
    name = f'{task_name}__tgrpo__{seed}__{int(time.time())}'
    path = os.path.abspath(os.path.join(runs_root, name))
    os.makedirs(path, exist_ok=False)
    return path


def main(argv=None):
    """Run the main job; return the launcher's exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog='python -m tgrpo_ros.orchestration.train_main',
                                     description=__doc__.split('\n\n')[0])
    parser.add_argument('--config', default=os.path.join('config', graph.DEFAULT_CONFIG),
                        help='graph configuration (YAML)')
    parser.add_argument('--model-path', help="checkpoint directory (default: the config's)")
    parser.add_argument('--updates', type=int, help='K, overrides learner.updates')
    parser.add_argument('--runs-root', help='parent of the run directory (default: config)')
    parser.add_argument('--no-netns', action='store_true',
                        help='do not enter a private network namespace')
    parser.add_argument('--verbose', action='store_true', help="echo every node's log")
    args = parser.parse_args(argv)

    network = _ensure_private_network(argv, allow_netns=not args.no_netns)
    prepare_environment()
    started = time.monotonic()
    config = graph.load_config(args.config)
    main_cfg = dict(config.get('main') or {})
    shared = dict((config.get('graph') or {}).get('policy_parameters') or {})
    seed = int(main_cfg.get('seed', 0))
    model_path = resolve_model(args.model_path or shared.get('model_path', ''),
                               main_cfg.get('standin_seed', 0))
    run_dir = make_run_dir(args.runs_root or main_cfg.get('runs_root', 'runs'),
                           main_cfg.get('task_name', 'task'), seed)
    shutil.copyfile(args.config, os.path.join(run_dir, 'config.yaml'))
    adapter_root = os.path.join(run_dir, 'adapters')
    learner_overrides = {'run_dir': run_dir, 'adapter_root': adapter_root, 'seed': seed}
    if args.updates is not None:
        learner_overrides['updates'] = int(args.updates)
    nodes = graph.build_graph(config, model_path=model_path, overrides={
        'policy_server': {'adapter_root': adapter_root}, 'learner': learner_overrides})
    learner = graph.find_node(nodes, 'learner')
    print(f'run directory: {run_dir}\nmodel: {model_path}\nnetwork: {network}\n'
          f"nodes: {', '.join(n.full_name for n in nodes)}\n"
          f"updates: {learner.parameters.get('updates')}, group size "
          f"{learner.parameters.get('group_size')}", flush=True)

    from tgrpo_ros.orchestration.launcher import run_graph
    code = run_graph(nodes, os.path.join(run_dir, 'logs'),
                     timeout=main_cfg.get('timeout'), verbose=args.verbose)
    elapsed = time.monotonic() - started
    summary_path = os.path.join(run_dir, 'summary.json')
    if code == 0 and os.path.isfile(summary_path):
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
              f'run directory: {run_dir} (metrics.csv, curves.png, adapters/, '
              'checkpoints/, summary.json, logs/)', flush=True)
    else:
        print(f'train_main: the graph ended with code {code} after {elapsed:.0f} s; node '
              f"logs: {os.path.join(run_dir, 'logs')}", file=sys.stderr, flush=True)
    return code


if __name__ == '__main__':
    sys.exit(main())
