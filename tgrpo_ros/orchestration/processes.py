"""
Run ROS 2 node executables as child processes with ``--ros-args``.

The pip-side launcher (``tgrpo_ros.orchestration.launcher``), the integration tests and
``bench/rollout.py`` start nodes through this module. Each node runs in its own
process group (so a signal reaches everything it started) and, on Linux, is
sent SIGTERM if the process that started it dies, so no node outlives a
crashed launcher or test session.
"""

import ctypes
import os
import shutil
import signal
import subprocess
import sys
import time

import yaml

_PR_SET_PDEATHSIG = 1  # prctl option, linux/prctl.h
ALERT_WORDS = ('[WARN]', '[ERROR]', '[FATAL]', 'Traceback', 'Error:')  # ROS log levels


# Defaults every node process of this package needs (what scripts/env.sh sets).
_PROCESS_DEFAULTS = (
    ('MUJOCO_GL', 'egl'),            # headless rendering
    ('LP_NUM_THREADS', '1'),         # one llvmpipe thread per env process
    ('HF_HUB_OFFLINE', '1'),         # no model hub: checkpoints load from local paths
    ('TRANSFORMERS_OFFLINE', '1'),
    ('PYTHONUNBUFFERED', '1'),       # node logs appear as they are written
)


def _prepend(variable, entry):
    entries = os.environ.get(variable, '').split(os.pathsep)
    if entry not in entries:
        os.environ[variable] = os.pathsep.join(p for p in [entry] + entries if p)


def prepare_environment():
    """
    Make this Python environment's nodes startable from this process and its children.

    Puts the interpreter's ``bin/`` (console scripts) on PATH and its prefix on
    AMENT_PREFIX_PATH (the package's share/ files), and sets the defaults above
    where the caller has not chosen otherwise. Used by ``make train`` and the tests,
    so neither depends on ``scripts/env.sh`` having been sourced.
    """
    _prepend('PATH', os.path.dirname(sys.executable))
    _prepend('AMENT_PREFIX_PATH', sys.prefix)
    for key, value in _PROCESS_DEFAULTS:
        os.environ.setdefault(key, value)
    os.environ.setdefault('PYOPENGL_PLATFORM', os.environ['MUJOCO_GL'])


def _terminate_with_parent():
    """Ask the kernel to send SIGTERM to this child when its parent dies (Linux only)."""
    if sys.platform.startswith('linux'):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class NodeProcess:
    """One node executable running as a child process with ``--ros-args``."""

    def __init__(self, executable, log_dir, *, name=None, namespace=None, params_file=None,
                 parameters=None, remaps=None, args=(), env=None):
        """
        Start the process.

        ``executable`` is the name of an installed console script (looked up on
        PATH) or a list forming a full command (``[sys.executable, '-m', mod]``).
        ``parameters`` is a dict written to a params file for this node, so
        types survive; ``remaps`` maps topic names (``from: to``).
        """
        command = self._resolve(executable)
        os.makedirs(log_dir, exist_ok=True)
        self.label = name or os.path.basename(command[-1])
        if namespace:
            self.label = namespace.strip('/').replace('/', '_') + '__' + self.label
        ros_args = []
        if name:
            ros_args += ['-r', f'__node:={name}']
        if namespace:
            ros_args += ['-r', f'__ns:={namespace}']
        if params_file:
            ros_args += ['--params-file', str(params_file)]
        if parameters:
            inline = os.path.join(log_dir, f'{self.label}.params.yaml')
            with open(inline, 'w') as stream:
                yaml.safe_dump({'/**': {'ros__parameters': dict(parameters)}}, stream)
            ros_args += ['--params-file', inline]
        for source, target in (remaps or {}).items():
            ros_args += ['-r', f'{source}:={target}']
        self.command = command + list(args) + (['--ros-args'] + ros_args if ros_args else [])
        self.log_path = os.path.join(log_dir, f'{self.label}.log')
        self._log = open(self.log_path, 'wb')
        self.process = subprocess.Popen(
            self.command, stdout=self._log, stderr=subprocess.STDOUT,
            env=dict(os.environ if env is None else env), start_new_session=True,
            preexec_fn=_terminate_with_parent)

    @staticmethod
    def _resolve(executable):
        if isinstance(executable, (list, tuple)):
            return list(executable)
        path = shutil.which(executable)
        if path is None:
            raise FileNotFoundError(
                f'node executable {executable!r} is not on PATH; install the package '
                '(pip install -e . or colcon build) and activate its environment')
        return [path]

    @property
    def alive(self):
        """Return whether the process is still running."""
        return self.process.poll() is None

    @property
    def returncode(self):
        """Return the exit status, or None while running."""
        return self.process.poll()

    def log_text(self):
        """Return everything the process printed so far."""
        if not self._log.closed:
            self._log.flush()
        with open(self.log_path, 'rb') as stream:
            return stream.read().decode(errors='replace')

    def signal(self, signum):
        """Send ``signum`` to the process group (the node and anything it started)."""
        if self.alive:
            os.killpg(self.process.pid, signum)

    def stop(self, timeout=10.0):  # seconds
        """Stop with SIGINT (what Ctrl-C sends), escalating to SIGTERM and SIGKILL."""
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
            if not self.alive:
                break
            try:
                self.signal(signum)
            except ProcessLookupError:
                break
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                continue
        self._log.close()
        return self.process.returncode


class NodeGroup:
    """
    The node processes of one graph, test or bench: started, watched and stopped together.

    ``finisher`` is the full name of the node whose exit with code 0 ends a ``wait``
    successfully (the learner of a training graph); any other exit ends it with 1.
    """

    def __init__(self, log_dir, env=None, finisher=None, stream=None, verbose=False):
        """Write each node's log under ``log_dir``; echo logs to ``stream`` in ``wait``."""
        self.log_dir = str(log_dir)
        self.env = None if env is None else dict(env)
        self.finisher = finisher
        self.stream = stream or sys.stdout
        self.verbose = verbose
        self.nodes = []
        self._offsets = {}

    def start(self, executable, **kwargs):
        """Start a node process; see NodeProcess for the arguments."""
        kwargs.setdefault('env', self.env)
        node = NodeProcess(executable, self.log_dir, **kwargs)
        self.nodes.append(node)
        self._offsets[node.label] = 0
        return node

    def start_graph(self, specs, params_files):
        """Start one process per NodeSpec with its params file ({full name: path})."""
        for spec in specs:
            node = self.start(spec.executable, name=spec.name, namespace=spec.namespace or None,
                              params_file=params_files[spec.full_name], remaps=spec.remaps)
            node.full_name = spec.full_name

    def echo(self, final=False):
        """Copy new whole log lines to the stream: the finisher's, or alerts, or all."""
        for node in self.nodes:
            try:
                with open(node.log_path, 'rb') as log:
                    log.seek(self._offsets[node.label])
                    data = log.read()
            except OSError:
                continue
            if not final and not data.endswith(b'\n'):
                data = data[:data.rfind(b'\n') + 1]  # whole lines only
            self._offsets[node.label] += len(data)
            is_finisher = getattr(node, 'full_name', None) == self.finisher
            for line in data.decode(errors='replace').splitlines():
                if self.verbose or is_finisher or any(w in line for w in ALERT_WORDS):
                    self.stream.write(f'[{node.label}] {line}\n')
        self.stream.flush()

    def wait(self, timeout=None, poll=0.5):  # seconds
        """Watch until the finisher exits 0 (0), a node dies (1) or ``timeout`` (124)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            self.echo()
            for node in self.nodes:
                code = node.returncode
                if code is None:
                    continue
                if getattr(node, 'full_name', None) == self.finisher and code == 0:
                    self.stream.write(f'{self.finisher} finished: stopping the graph\n')
                    return 0
                self.stream.write(f'node {node.label} exited with code {code}; stopping '
                                  f'the graph. Last lines of its log:\n')
                for line in node.log_text().splitlines()[-30:]:
                    self.stream.write(f'  | {line}\n')
                return 1
            if deadline is not None and time.monotonic() > deadline:
                self.stream.write(f'timeout after {timeout} s: stopping the graph\n')
                return 124
            time.sleep(poll)

    def stop_all(self, report=None):
        """
        Stop every node (SIGINT, then SIGTERM, then SIGKILL), the finisher first.

        Writes the logs of nodes that failed (not stopped by us, non-zero exit) to
        ``report`` when given.
        """
        order = list(reversed(self.nodes))
        order.sort(key=lambda n: getattr(n, 'full_name', None) != self.finisher)
        for node in order:
            was_alive = node.alive
            code = node.stop()
            stopped_by_us = was_alive and code is not None and code <= 0
            clean = code in (0, -signal.SIGINT, 130) or stopped_by_us
            if report is not None and not clean:
                report.write(f'\n----- {node.label} exited {code}; log:\n{node.log_text()}\n')
        self.echo(final=True)
