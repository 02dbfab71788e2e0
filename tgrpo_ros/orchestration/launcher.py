"""
tgrpo_launch: start the training graph as plain processes (pip installs, no launch_ros).

Starts the nodes that ``tgrpo_ros.orchestration.graph`` builds from a configuration (same node
names, namespaces and parameters as ``launch/train_sim.launch.py``), one
``--params-file`` per node, through ``tgrpo_ros.orchestration.processes.NodeProcess``.
Echoes the learner's log (and warnings/errors of the other nodes) with a node prefix.

Ends when:
- the learner exits 0 (all updates done): the other nodes are stopped, exit 0;
- any node dies otherwise: the rest are stopped, its log tail is printed, exit 1;
- Ctrl-C / SIGTERM: every node gets SIGINT (then SIGTERM, SIGKILL), exit 130;
- ``--timeout`` seconds pass: everything is stopped, exit 124.
"""

import argparse
import os
import signal
import sys
import time

from tgrpo_ros.orchestration import graph

LEARNER = 'learner'
ALERT_WORDS = ('[WARN]', '[ERROR]', '[FATAL]', 'Traceback', 'Error:')  # ROS log levels


class _Stop(Exception):
    """Raised by the signal handler to leave the monitoring loop."""


class GraphRun:
    """The node processes of one graph; monitored together, stopped together."""

    def __init__(self, nodes, log_dir, env=None, verbose=False, stream=None, finisher=None):
        """
        Write the params files into ``log_dir`` and start every node.

        ``finisher`` is the full name of the node whose exit with code 0 ends the run
        successfully (default: the node started from the ``learner`` executable).
        """
        from tgrpo_ros.orchestration.processes import NodeProcess
        self.log_dir = os.fspath(log_dir)
        self.stream = stream or sys.stdout
        self.verbose = verbose
        params = graph.write_params_files(nodes, os.path.join(self.log_dir, 'params'))
        self.specs = nodes
        if finisher is None:
            finisher = next((n.full_name for n in nodes if n.executable == LEARNER), None)
        self.finisher = finisher
        self.processes = []
        self._offsets = {}
        env = dict(os.environ if env is None else env)
        env.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
        env.setdefault('PYTHONUNBUFFERED', '1')
        try:
            for spec in nodes:
                process = NodeProcess(spec.executable, self.log_dir, name=spec.name,
                                      namespace=spec.namespace or None,
                                      params_file=params[spec.full_name], remaps=spec.remaps,
                                      env=env)
                process.spec = spec
                self.processes.append(process)
                self._offsets[process.label] = 0
        except Exception:
            self.stop()
            raise

    def _echo(self, final=False):
        for process in self.processes:
            try:
                with open(process.log_path, 'rb') as log:
                    log.seek(self._offsets[process.label])
                    data = log.read()
            except OSError:
                continue
            if not final and not data.endswith(b'\n'):
                data = data[:data.rfind(b'\n') + 1]  # whole lines only
            self._offsets[process.label] += len(data)
            is_learner = process.spec.full_name == self.finisher
            for line in data.decode(errors='replace').splitlines():
                if self.verbose or is_learner or any(w in line for w in ALERT_WORDS):
                    self.stream.write(f'[{process.label}] {line}\n')
        self.stream.flush()

    def wait(self, timeout=None, poll=0.5):  # seconds
        """Monitor until the learner finishes or a node dies; return the exit code."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            self._echo()
            for process in self.processes:
                code = process.returncode
                if code is None:
                    continue
                if process.spec.full_name == self.finisher and code == 0:
                    self.stream.write(f'{self.finisher} finished: stopping the graph\n')
                    return 0
                self.stream.write(f'node {process.label} exited with code {code}; stopping '
                                  f'the graph. Last lines of its log:\n')
                for line in process.log_text().splitlines()[-30:]:
                    self.stream.write(f'  | {line}\n')
                return 1
            if deadline is not None and time.monotonic() > deadline:
                self.stream.write(f'timeout after {timeout} s: stopping the graph\n')
                return 124
            time.sleep(poll)

    def stop(self):
        """Stop every node (SIGINT, then SIGTERM, then SIGKILL), the learner first."""
        for process in sorted(self.processes, key=lambda p: p.spec.full_name != self.finisher):
            process.stop(timeout=10.0)
        self._echo(final=True)


def run_graph(nodes, log_dir, env=None, timeout=None, verbose=False, stream=None,
              finisher=None):
    """Start ``nodes``, wait as described in the module docstring, stop; return the code."""
    previous = {}

    def handler(signum, frame):
        raise _Stop(signum)

    for signum in (signal.SIGINT, signal.SIGTERM):
        previous[signum] = signal.signal(signum, handler)
    run = None
    try:
        run = GraphRun(nodes, log_dir, env=env, verbose=verbose, stream=stream,
                       finisher=finisher)
        return run.wait(timeout=timeout)
    except _Stop:
        (stream or sys.stdout).write('interrupted: stopping the graph\n')
        return 130
    finally:
        # Ignore a second Ctrl-C while the nodes shut down.
        for signum in previous:
            signal.signal(signum, signal.SIG_IGN)
        try:
            if run is not None:
                run.stop()
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


def main(argv=None):
    """Parse the command line and run the graph of a configuration file."""
    parser = argparse.ArgumentParser(
        prog='tgrpo_launch', description='Start the tgrpo_ros node graph as processes.')
    parser.add_argument('--config', default=os.path.join('config', graph.DEFAULT_CONFIG),
                        help='graph configuration (YAML), e.g. config/train_sim.yaml')
    parser.add_argument('--model-path', help="replaces every node's model_path parameter")
    parser.add_argument('--log-dir', default=None,
                        help='node logs and params files (default: <learner run_dir>/logs)')
    parser.add_argument('--set', action='append', metavar='KIND.NAME=VALUE', default=[],
                        help='override a node parameter, e.g. learner.updates=2')
    parser.add_argument('--timeout', type=float, default=None, help='s before stopping all')
    parser.add_argument('--verbose', action='store_true', help="echo every node's log")
    args = parser.parse_args(argv)
    try:
        config = graph.load_config(args.config)
        nodes = graph.build_graph(config, model_path=args.model_path,
                                  overrides=parse_overrides(args.set))
    except (OSError, ValueError) as error:
        print(f'tgrpo_launch: {error}', file=sys.stderr)
        return 2
    learner = graph.find_node(nodes, LEARNER)
    log_dir = args.log_dir or os.path.join(str(learner.parameters.get('run_dir', 'runs')),
                                           'logs')
    return run_graph(nodes, log_dir, timeout=args.timeout, verbose=args.verbose)


if __name__ == '__main__':
    sys.exit(main())
