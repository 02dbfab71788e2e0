"""The test harness itself: private network namespace and node processes over DDS."""

import os
import socket
import sys

import pytest

ECHO = [sys.executable, '-m', 'tgrpo_ros.testing.echo_node']


def test_dds_environment_is_loopback_only():
    assert os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] == 'LOCALHOST'
    assert os.environ.get('TGRPO_PRIVATE_NETNS') == '1'
    interfaces = sorted(name for _, name in socket.if_nameindex())
    assert interfaces == ['lo']
    assert 1 <= int(os.environ['ROS_DOMAIN_ID']) <= 101


def test_each_xdist_worker_gets_a_ros_domain_of_its_own():
    from tgrpo_ros.orchestration.netns import worker_domain_id

    assert worker_domain_id(7, None) == 7  # no xdist: the session's domain
    domains = [worker_domain_id(100, f'gw{i}') for i in range(4)]
    assert domains == [100, 101, 1, 2]  # distinct, and within ROS's 1-101


@pytest.mark.ros
def test_node_process_gets_params_remaps_and_namespace(ros_nodes, ros_client, tmp_path):
    from std_msgs.msg import String

    params = tmp_path / 'echo.yaml'
    params.write_text('/**:\n  ros__parameters:\n    prefix: "from-file:"\n')
    node = ros_nodes.start(ECHO, name='echo_a', namespace='/robot1', params_file=params,
                           remaps={'output': 'echoed'})
    received = []
    sub = ros_client.node.create_subscription(
        String, '/robot1/echoed', lambda m: received.append(m.data), 10)
    pub = ros_client.node.create_publisher(String, '/robot1/input', 10)
    ros_client.wait_for_subscribers(pub)
    ros_client.wait_for_publishers(sub)
    ros_client.publish_until(lambda: pub.publish(String(data='hello')), lambda: received,
                             10.0, 'the echo')
    assert set(received) == {'from-file:hello'}
    assert node.alive
    assert node.stop() in (0, -2)
    assert not node.alive


@pytest.mark.ros
def test_inline_parameters_override_file(ros_nodes, ros_client, tmp_path):
    from std_msgs.msg import String

    ros_nodes.start(ECHO, name='echo_b', parameters={'prefix': 'inline:'})
    received = []
    sub = ros_client.node.create_subscription(
        String, '/output', lambda m: received.append(m.data), 10)
    pub = ros_client.node.create_publisher(String, '/input', 10)
    ros_client.wait_for_subscribers(pub)
    ros_client.wait_for_publishers(sub)
    ros_client.publish_until(lambda: pub.publish(String(data='x')), lambda: received,
                             10.0, 'the echo')
    assert set(received) == {'inline:x'}


def test_missing_executable_is_named(ros_nodes):
    with pytest.raises(FileNotFoundError, match='no_such_node_exe'):
        ros_nodes.start('no_such_node_exe')


@pytest.mark.ros
def test_nodes_die_with_the_process_that_started_them(tmp_path):
    """A crashed launcher or test session leaves no node running (PR_SET_PDEATHSIG)."""
    import subprocess
    import time

    starter = subprocess.Popen(
        [sys.executable, '-c',
         'import sys, time\n'
         'from tgrpo_ros.orchestration.processes import NodeProcess\n'
         f'node = NodeProcess({ECHO!r}, {str(tmp_path)!r}, name="orphan")\n'
         'print(node.process.pid, flush=True)\n'
         'time.sleep(60)\n'],
        stdout=subprocess.PIPE, text=True)
    node_pid = int(starter.stdout.readline())
    os.kill(node_pid, 0)  # running
    starter.kill()
    starter.wait()
    deadline = time.monotonic() + 10.0
    while time.monotonic() < deadline:
        try:
            os.kill(node_pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        os.kill(node_pid, 9)
        pytest.fail(f'node process {node_pid} outlived the process that started it')
