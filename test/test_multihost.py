"""
Three "hosts" without a shared filesystem: one full TGRPO update over DDS.

The test makes three network namespaces of its own (``orchestration.netns.LinkedHosts``:
veth pairs on one bridge, addresses only inside them) within the session's private
namespace. The learner, the policy server and the two sim bridges run in their own
namespace with a working directory of their own; the learner and the server each
have their own copy of the model, and adapters travel over DDS
(``adapter_transport: dds``). Discovery runs over UDP only (no shared-memory
shortcut between "hosts"), either with ``ROS_AUTOMATIC_DISCOVERY_RANGE=SUBNET``
(multicast, inside these namespaces) or through a Fast DDS discovery server
(``fast-discovery-server`` on the server's host, ``ROS_DISCOVERY_SERVER`` on every
node; the scalable choice for clusters).
"""

import glob
import json
import os
import shutil
import subprocess
import sys
import time

import pytest

from tgrpo_ros.orchestration import netns

MAX_STEPS = 3
BRIDGES = ['/sim0', '/sim1']


def _console_script(name):
    path = shutil.which(name)
    assert path, f'{name} is not on PATH'
    return path


def _discovery_server_env():
    """Return the environment that runs fast-discovery-server, or None if it cannot run."""
    if shutil.which('fast-discovery-server') is None:
        return None
    # The pip-installed ROS keeps Fast DDS's libraries beside the venv's lib/ and in
    # the wheels' .libs folders; the tool finds them only through LD_LIBRARY_PATH.
    prefix = os.path.dirname(os.path.dirname(sys.executable))
    dirs = [os.path.join(prefix, 'lib')] + sorted(
        {os.path.dirname(p) for p in glob.glob(os.path.join(
            prefix, 'lib', 'python3*', 'site-packages', 'ros_rmw_fastrtps_cpp.libs', '*'))})
    env = dict(os.environ, LD_LIBRARY_PATH=':'.join(
        dirs + [os.environ.get('LD_LIBRARY_PATH', '')]))
    probe = subprocess.run(['fast-discovery-server', '-h'], env=env, capture_output=True)
    return env if b'Usage' in probe.stdout + probe.stderr else None


@pytest.mark.skipif(not netns.in_private_netns() or os.geteuid() != 0,
                    reason='needs root in the private network namespace of the test session')
def test_two_sets_of_linked_hosts_coexist_and_leave_the_session_namespace_alone():
    import socket

    before = sorted(name for _, name in socket.if_nameindex())
    first = netns.LinkedHosts(2)
    try:
        second = netns.LinkedHosts(2)  # same bridge name and subnet: a test on another worker
        try:
            assert sorted(name for _, name in socket.if_nameindex()) == before == ['lo']
            for hosts in (first, second):  # host 0 reaches host 1 over its own bridge
                server = subprocess.Popen(hosts.command(1, [
                    sys.executable, '-c',
                    'import socket; s = socket.create_server(("", 7411)); '
                    'c, _ = s.accept(); c.sendall(c.recv(16))'], '/'))
                try:
                    client = subprocess.run(hosts.command(0, [
                        sys.executable, '-c',
                        'import socket, sys, time\n'
                        'for _ in range(6000):\n'
                        '    try:\n'
                        f'        c = socket.create_connection(("{hosts.address(1)}", 7411))\n'
                        '        break\n'
                        '    except ConnectionRefusedError:\n'
                        '        time.sleep(0.02)\n'
                        'c.sendall(b"ping"); sys.stdout.write(c.recv(16).decode())'], '/'),
                        capture_output=True, text=True, timeout=300)
                    assert client.stdout == 'ping', client.stderr
                finally:
                    server.kill()
                    server.wait()
        finally:
            second.close()
    finally:
        first.close()


@pytest.mark.ros
@pytest.mark.slow
@pytest.mark.skipif(not netns.in_private_netns() or os.geteuid() != 0,
                    reason='needs root in the private network namespace of the test session')
@pytest.mark.parametrize('discovery', ['subnet', 'server'])
def test_one_update_across_three_hosts_without_shared_files(ros_nodes, tmp_path, discovery):
    from tgrpo_ros.policy import cached_standin

    homes = {name: tmp_path / name for name in ('learner_host', 'server_host', 'sim_host')}
    for home in homes.values():
        home.mkdir()
    for name in ('learner_host', 'server_host'):  # each host has its own copy of the model
        shutil.copytree(cached_standin(0), homes[name] / 'model')
    env = dict(os.environ, ROS_AUTOMATIC_DISCOVERY_RANGE='SUBNET',
               FASTDDS_BUILTIN_TRANSPORTS='UDPv4')
    policy = {'trainable': 'lora', 'lora_rank': 4, 'lora_alpha': 8.0}
    # Through a discovery server the hosts need no multicast at all: none is routed.
    hosts = netns.LinkedHosts(3, multicast=discovery == 'subnet')
    try:
        learner_host, server_host, sim_host = 0, 1, 2
        if discovery == 'server':
            server_env = _discovery_server_env()
            if server_env is None:
                pytest.skip('fast-discovery-server is not installed or cannot run')
            address = hosts.address(server_host)
            discovery_server = ros_nodes.start(hosts.command(server_host, [
                'fast-discovery-server', '-i', '0', '-l', address, '-p', '11811'],
                homes['server_host']), env=server_env)
            env['ROS_DISCOVERY_SERVER'] = f'{address}:11811'
        server = ros_nodes.start(
            hosts.command(server_host, [_console_script('policy_server')],
                          homes['server_host']),
            name='policy_server', env=env, parameters=dict(
                policy, model_path=str(homes['server_host'] / 'model'),
                adapter_root=str(homes['server_host'] / 'adapters'), clients=BRIDGES,
                max_batch_size=2, max_wait_ms=20.0))
        bridges = [ros_nodes.start(
            hosts.command(sim_host, [_console_script('sim_bridge')], homes['sim_host']),
            name='sim_bridge', namespace=ns, env=env, parameters={
                'camera_size': 128, 'max_steps': MAX_STEPS, 'multisample': False,
                'action_timeout': 60.0}) for ns in BRIDGES]
        learner = ros_nodes.start(
            hosts.command(learner_host, [_console_script('learner')], homes['learner_host']),
            name='learner', env=env, parameters=dict(
                policy, model_path=str(homes['learner_host'] / 'model'), bridges=BRIDGES,
                group_size=2, updates=1, max_steps=MAX_STEPS, run_dir='run',
                adapter_transport='dds', epochs=1, minibatch_size=8, plot_every=0))
        # Four network namespaces: the test's and one per host (both bridges on one).
        mine = os.readlink('/proc/self/ns/net')
        spaces = [netns.wait_for_new_netns(node.process.pid, timeout=120.0)  # only a hang
                  for node in (learner, server, *bridges)]
        assert len({mine, *spaces}) == 4 and spaces[2] == spaces[3], (mine, spaces)
        deadline = time.monotonic() + 420.0
        while learner.alive and time.monotonic() < deadline:
            time.sleep(1.0)
        log = learner.log_text()
        assert learner.returncode == 0, f'learner did not finish cleanly:\n{log[-3000:]}'
        run_dir = homes['learner_host'] / 'run'  # the learner's working directory
        summary = json.loads((run_dir / 'summary.json').read_text())
        assert summary['updates'] == 1 and summary['adapter_version'] == 1
        assert summary['last_metrics']['rollout/episodes'] == 2
        assert (run_dir / 'adapters' / 'v00001' / 'adapter_model.safetensors').is_file()
        received = sorted(os.listdir(homes['server_host'] / 'adapters' / 'received'))
        assert received[-1].startswith('v00001-'), received
        assert 'hot-swapped adapter version 0 -> 1 received over DDS' in server.log_text()
        assert all(bridge.alive for bridge in bridges)
        assert not os.listdir(homes['sim_host'])  # the bridges needed no file at all
        if discovery == 'server':
            assert discovery_server.alive
    finally:
        ros_nodes.stop_all()
        hosts.close()
