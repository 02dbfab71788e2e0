"""Session set-up shared by every test: private network, environment, node processes."""

import os
import sys

import pytest

from tgrpo_ros import netns

# Defaults for processes the tests start, in case the suite runs without scripts/env.sh.
os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
os.environ.setdefault('MUJOCO_GL', 'egl')
os.environ.setdefault('PYOPENGL_PLATFORM', os.environ['MUJOCO_GL'])
os.environ.setdefault('LP_NUM_THREADS', '1')
os.environ.setdefault('HF_HUB_OFFLINE', '1')
os.environ.setdefault('TRANSFORMERS_OFFLINE', '1')
if sys.prefix not in os.environ.get('AMENT_PREFIX_PATH', '').split(os.pathsep):
    os.environ['AMENT_PREFIX_PATH'] = os.pathsep.join(
        p for p in (sys.prefix, os.environ.get('AMENT_PREFIX_PATH')) if p)
# Console scripts of the venv (node executables) must be found by the harness.
_venv_bin = os.path.dirname(sys.executable)
if _venv_bin not in os.environ.get('PATH', '').split(os.pathsep):
    os.environ['PATH'] = _venv_bin + os.pathsep + os.environ.get('PATH', '')

_NETNS_UNAVAILABLE = None


def pytest_configure(config):
    """Re-execute the session inside a private network namespace (once)."""
    global _NETNS_UNAVAILABLE
    if netns.in_private_netns():
        return
    ok, reason = netns.netns_available()
    if not ok:
        netns.exit_if_required_but_unavailable(reason)
        _NETNS_UNAVAILABLE = reason
        return
    capture = config.pluginmanager.getplugin('capturemanager')
    if capture is not None:
        capture.stop_global_capturing()
    sys.stdout.flush()
    sys.stderr.flush()
    argv = [sys.executable, '-m', 'pytest', *config.invocation_params.args]
    netns.reexec_in_private_netns(argv, str(config.invocation_params.dir))


def pytest_collection_modifyitems(config, items):
    """Skip DDS tests when no private network namespace could be made."""
    if _NETNS_UNAVAILABLE is None:
        return
    skip = pytest.mark.skip(reason='no private network namespace: ' + _NETNS_UNAVAILABLE)
    for item in items:
        if 'ros' in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def ros_nodes(tmp_path, request):
    """Start installed node executables as processes; all are stopped after the test."""
    from tgrpo_ros.node_process import NodeGroup
    group = NodeGroup(log_dir=tmp_path / 'node_logs')
    try:
        yield group
    finally:
        group.stop_all(report=sys.stderr)


@pytest.fixture
def ros_client():
    """Give the test its own rclpy context and a node to publish, subscribe and call from."""
    from tgrpo_ros.testing.ros_processes import RosClient
    client = RosClient('test_client')
    try:
        yield client
    finally:
        client.close()
