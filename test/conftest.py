"""Session set-up shared by every test: private network, environment, node processes."""

import os
import sys

import pytest

from tgrpo_ros.orchestration import netns
from tgrpo_ros.orchestration.processes import NodeGroup, prepare_environment

# The nodes the tests start find their executables and share/ files, and default
# to headless, offline settings, whether or not scripts/env.sh was sourced.
os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
prepare_environment()

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
    group = NodeGroup(log_dir=tmp_path / 'node_logs')
    try:
        yield group
    finally:
        group.stop_all(report=sys.stderr)


@pytest.fixture
def ros_client():
    """Give the test its own rclpy context and a node to publish, subscribe and call from."""
    from tgrpo_ros.testing.ros_client import RosClient
    client = RosClient('test_client')
    try:
        yield client
    finally:
        client.close()
