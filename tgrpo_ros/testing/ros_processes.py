"""
Start ROS 2 node executables as real processes and talk to them from a test.

Used by the integration tests (through the ``ros_nodes`` and ``ros_client``
fixtures in ``test/conftest.py``), by ``bench/rollout.py`` and by the pip-side
launcher's tests. Nothing here fakes ROS: nodes are separate processes that
discover each other over DDS.
"""

import os
import shutil
import signal
import subprocess
import time

import yaml


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
            env=dict(os.environ if env is None else env), start_new_session=True)

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


class RosClient:
    """A test-side rclpy node in its own context, with helpers that wait for DDS."""

    def __init__(self, name):
        """Initialise a private rclpy context and create node ``name`` in it."""
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        self._rclpy = rclpy
        self.context = rclpy.context.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node(name, context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)

    def spin_for(self, duration):  # seconds
        """Process callbacks for ``duration`` seconds."""
        deadline = time.monotonic() + duration
        while time.monotonic() < deadline:
            self.executor.spin_once(timeout_sec=min(0.05, max(0.0, deadline - time.monotonic())))

    def spin_until(self, predicate, timeout, what='condition'):  # seconds
        """Process callbacks until ``predicate()`` is true; raise TimeoutError naming ``what``."""
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise TimeoutError(f'timed out after {timeout:.1f} s waiting for {what}')
            self.executor.spin_once(timeout_sec=0.05)

    def wait_for_subscribers(self, publisher, count=1, timeout=20.0):
        """Wait until ``publisher`` is matched by ``count`` subscriptions (discovery done)."""
        self.spin_until(lambda: publisher.get_subscription_count() >= count, timeout,
                        f'{count} subscriber(s) on {publisher.topic_name}')

    def wait_for_publishers(self, subscription, count=1, timeout=20.0):
        """Wait until ``subscription`` is matched by ``count`` publishers."""
        self.spin_until(lambda: subscription.get_publisher_count() >= count, timeout,
                        f'{count} publisher(s) on {subscription.topic_name}')

    def wait_for_service(self, client, timeout=20.0):
        """Wait until the server behind ``client`` is available."""
        self.spin_until(client.service_is_ready, timeout, f'service {client.srv_name}')

    def call(self, client, request, timeout=20.0):
        """Call a service and return its response, spinning this client meanwhile."""
        self.wait_for_service(client, timeout)
        future = client.call_async(request)
        self.spin_until(future.done, timeout, f'response from {client.srv_name}')
        return future.result()

    def close(self):
        """Destroy the node and shut the context down."""
        self.executor.shutdown()
        self.node.destroy_node()
        if self.context.ok():
            self._rclpy.shutdown(context=self.context)
