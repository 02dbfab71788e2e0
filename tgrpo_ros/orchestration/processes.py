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

import yaml

_PR_SET_PDEATHSIG = 1  # prctl option, linux/prctl.h


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
    """The node processes of one test; stopped together at the end."""

    def __init__(self, log_dir):
        """Write each node's log under ``log_dir``."""
        self.log_dir = str(log_dir)
        self.nodes = []

    def start(self, executable, **kwargs):
        """Start a node process; see NodeProcess for the arguments."""
        node = NodeProcess(executable, self.log_dir, **kwargs)
        self.nodes.append(node)
        return node

    def stop_all(self, report=None):
        """Stop every node; write the logs of those that failed to ``report``."""
        for node in reversed(self.nodes):
            was_alive = node.alive
            code = node.stop()
            stopped_by_us = was_alive and code is not None and code <= 0
            clean = code in (0, -signal.SIGINT, 130) or stopped_by_us
            if report is not None and not clean:
                report.write(f'\n----- {node.label} exited {code}; log:\n{node.log_text()}\n')
        self.nodes = []
