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


def worker_domain_id(session_domain, worker):
    """
    Return the ROS_DOMAIN_ID of one pytest-xdist worker ('gw0', 'gw1', ...).

    The workers of a test session share its private network namespace; each gets a
    domain of its own (1-101, next to the session's), so that the nodes of two tests
    running at once never discover each other. Without xdist (``worker`` None or '')
    the session's domain is kept.
    """
    if not worker:
        return session_domain
    return (session_domain - 1 + int(worker.removeprefix('gw'))) % 101 + 1


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


class LinkedHosts:
    """
    ``count`` network namespaces ("hosts") linked by veth pairs to one Linux bridge.

    For tests of several hosts on one machine. Made inside the caller's own private
    namespace (``in_private_netns``), as root: each host is a namespace held by a
    ``sleep`` process, with loopback and one veth end addressed ``<subnet>.<i + 1>/24``
    (multicast routed to it unless ``multicast=False``), and the other end on the
    bridge ``br-tgrpo`` of one more namespace, the switch. Nothing is added to the
    caller's namespace, so several sets of hosts (tests on parallel pytest workers) can
    exist at once, each with the same names and subnet. Addresses exist only inside
    these namespaces, so traffic cannot leave the machine even with
    ``ROS_AUTOMATIC_DISCOVERY_RANGE=SUBNET``.
    ``command(i, argv, cwd)`` runs ``argv`` in host ``i``; ``close`` removes them.
    """

    BRIDGE = 'br-tgrpo'

    def __init__(self, count, subnet='10.77.0', multicast=True):
        """Create the hosts (``multicast``: route 224.0.0.0/4); RuntimeError on a failure."""
        if not in_private_netns() or os.geteuid() != 0:
            raise RuntimeError('LinkedHosts needs root inside the private network namespace '
                               'of reexec_in_private_netns (the test session)')
        self.subnet = subnet
        self.holders = []
        self.switch = None
        try:
            self.switch = self._new_namespace()
            switch = _nsenter(self.switch.pid) + ['ip', 'link']
            self._run(*switch, 'add', self.BRIDGE, 'type', 'bridge')
            self._run(*switch, 'set', self.BRIDGE, 'type', 'bridge', 'mcast_snooping', '0')
            self._run(*switch, 'set', self.BRIDGE, 'up')
            for index in range(count):
                holder = self._new_namespace()
                self.holders.append(holder)
                inside, outside = f'tgh{index}', f'tgb{index}'
                self._run(*switch, 'add', outside, 'type', 'veth', 'peer', 'name', inside,
                          'netns', str(holder.pid))
                self._run(*switch, 'set', outside, 'master', self.BRIDGE)
                self._run(*switch, 'set', outside, 'up')
                setup = _HOST_SETUP + (_HOST_MULTICAST if multicast else '')
                self._run(*self._enter(index), 'sh', '-c', setup, 'sh', inside,
                          self.address(index))
        except Exception:
            self.close()
            raise

    def _new_namespace(self):
        """Start a process that holds a new network namespace; return it once it has one."""
        holder = subprocess.Popen(['unshare', '-n', 'sleep', 'infinity'])
        try:
            wait_for_new_netns(holder.pid)
        except RuntimeError:
            holder.kill()
            holder.wait()
            raise
        return holder

    def address(self, index):
        """Return the IPv4 address of host ``index``."""
        return f'{self.subnet}.{index + 1}'

    def _enter(self, index):
        return _nsenter(self.holders[index].pid)

    def command(self, index, argv, cwd):
        """Return ``argv`` wrapped to run in host ``index`` with working directory ``cwd``."""
        return self._enter(index) + ['sh', '-c', 'cd "$0" && exec "$@"', str(cwd)] + list(argv)

    @staticmethod
    def _run(*argv):
        result = subprocess.run(list(argv), capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f'{" ".join(argv)} failed: {result.stderr.strip()}')

    def close(self):
        """Stop the holders: the namespaces go, and with them the veth pairs and the bridge."""
        for holder in self.holders + ([self.switch] if self.switch else []):
            holder.kill()
            holder.wait()
        self.holders = []
        self.switch = None


def _nsenter(pid):
    """Return the command prefix that runs a command in the network namespace of ``pid``."""
    return ['nsenter', '-t', str(pid), '-n', '--']


def wait_for_new_netns(pid, timeout=5.0):
    """
    Return the network namespace of process ``pid`` once it has left the caller's.

    For a process that makes or enters one as it starts (``unshare -n``, ``nsenter``);
    RuntimeError if it is still in the caller's after ``timeout`` s.
    """
    import time
    mine = os.readlink('/proc/self/ns/net')
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            space = os.readlink(f'/proc/{pid}/ns/net')
            if space != mine:
                return space
        except OSError:
            pass
        time.sleep(0.02)
    raise RuntimeError(f'process {pid} did not enter a new network namespace')


# Inside a host: $1 the veth end, $2 its address.
_HOST_SETUP = 'ip link set lo up && ip addr add "$2/24" dev "$1" && ip link set "$1" up'
_HOST_MULTICAST = ' && ip link set "$1" multicast on && ip route add 224.0.0.0/4 dev "$1"'
