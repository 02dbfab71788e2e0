"""
Run a process tree inside a private network namespace for DDS.

Fast DDS sends discovery traffic out of every interface unless told otherwise.
The test session (``test/conftest.py``), ``make train`` (``tgrpo_ros.orchestration.train_main``)
and ``bench/rollout.py`` re-execute themselves under ``unshare -n`` with only a
loopback interface (up, multicast on, 224.0.0.0/4 routed to it), with
``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST`` and a ROS_DOMAIN_ID of their own, so
nothing they start can send traffic off this machine.
"""

import os
import random
import shutil
import subprocess
import sys

MARKER_ENV = 'TGRPO_PRIVATE_NETNS'
REQUIRE_ENV = 'TGRPO_REQUIRE_NETNS'

# Brings loopback up inside the new namespace, then replaces itself with the command.
_NETNS_SETUP = (
    'ip link set lo up && ip link set lo multicast on && '
    'ip route add 224.0.0.0/4 dev lo && exec "$@"'
)


def in_private_netns():
    """Return True when this process runs in the namespace made by reexec_in_private_netns."""
    return os.environ.get(MARKER_ENV) == '1'


def netns_command(command):
    """Return ``command`` wrapped so that it runs in a new private network namespace."""
    unshare = ['unshare', '-n'] if os.geteuid() == 0 else ['unshare', '-r', '-n']
    return unshare + ['--', 'sh', '-c', _NETNS_SETUP, 'sh'] + list(command)


def private_netns_env(base=None):
    """Return the environment for processes inside the private namespace."""
    env = dict(os.environ if base is None else base)
    env[MARKER_ENV] = '1'
    env['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
    env.pop('ROS_STATIC_PEERS', None)
    env.setdefault('ROS_DOMAIN_ID', str(random.randint(1, 101)))
    return env


def netns_available():
    """Check that a private network namespace can be created here; return (ok, reason)."""
    missing = [tool for tool in ('unshare', 'ip') if shutil.which(tool) is None]
    if missing:
        return False, ('missing tools: ' + ', '.join(missing)
                       + ' (apt-get install util-linux iproute2)')
    probe = subprocess.run(netns_command(['true']), capture_output=True, text=True)
    if probe.returncode != 0:
        return False, 'unshare -n failed: ' + (probe.stderr.strip() or f'exit {probe.returncode}')
    return True, ''


def reexec_in_private_netns(argv, cwd):
    """Replace this process with ``argv`` running inside a private network namespace."""
    os.chdir(cwd)
    command = netns_command(argv)
    os.execvpe(command[0], command, private_netns_env())


def run_script_in_private_netns(script, argv, name):
    """
    Make sure a bench script runs inside a private network namespace.

    Returns None inside one; otherwise re-executes ``script`` with ``argv`` there (this
    call does not return), or returns an error message naming ``name`` and the reason
    when the machine cannot make one.
    """
    if in_private_netns():
        return None
    ok, reason = netns_available()
    if not ok:
        return f'{name} needs a private network namespace for DDS: {reason}'
    reexec_in_private_netns([sys.executable, os.path.abspath(script), *argv], os.getcwd())


def exit_if_required_but_unavailable(reason):
    """Stop the session when a private namespace is required (CI) but cannot be made."""
    if os.environ.get(REQUIRE_ENV) == '1':
        sys.stderr.write(f'{REQUIRE_ENV}=1 but no private network namespace: {reason}\n')
        sys.exit(4)
