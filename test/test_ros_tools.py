"""
The package as a ROS user runs it: the real Jazzy ``ros2 launch``, ``lifecycle``, ``topic``.

``launch``, ``launch_ros`` and ``ros2cli`` are not on PyPI; ``scripts/setup.sh``
installs their Jazzy sources from ``../shared/ros2_upstream`` (beside the checkout in
CI and on the developers' machines) into ``.venv/ros2_tools``. In a user's clone that
folder is absent and these tests skip, saying so. Select them with ``-m ros_tools``.

Each test starts ``ros2 launch tgrpo_ros ...`` in its own session (as a terminal
would: Ctrl-C is a SIGINT to the whole process group) and checks what a user sees:
the exit status, the lines printed, the run directory, the topics, and that no
process is left behind.
"""

import glob
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
UPSTREAM = os.environ.get('TGRPO_ROS2_UPSTREAM') or os.path.join(
    os.path.dirname(ROOT), 'shared', 'ros2_upstream')
TOOLS = os.path.join(sys.prefix, 'ros2_tools')  # where scripts/setup.sh installs them
CONFIG_DIR = os.path.join(ROOT, 'config')
NODE_EXECUTABLES = ('policy_server', 'sim_bridge', 'learner', 'safety_controller', 'sim_arm')
LAUNCH_FAILURES = ('Caught exception', 'Cannot shutdown', 'Traceback', 'KeyboardInterrupt',
                   'terminated episode', 'context is invalid')


def _unavailable():
    if not os.path.isfile(os.path.join(UPSTREAM, 'install.sh')):
        return (f'the real ROS 2 launch and CLI tools are installed from {UPSTREAM}, which is '
                'absent (a user clone has no ../shared): see docs/testing.md')
    if not os.access(os.path.join(TOOLS, 'bin', 'ros2'), os.X_OK):
        return f'{UPSTREAM} exists but the tools are not installed in {TOOLS}: run make setup'
    return None


def with_tools(test):
    """Mark a test that runs the real tools (``-m ros_tools``); skip it where they are absent."""
    for mark in (pytest.mark.ros, pytest.mark.ros_tools, pytest.mark.slow,
                 pytest.mark.skipif(_unavailable() is not None, reason=str(_unavailable()))):
        test = mark(test)
    return test


# Every `ros2 <verb> <subverb> [name]` the README and docs/*.md show, and how the tests
# below run it with the real tools (a test checks that this covers the docs).
RUN_BY_THESE_TESTS = {
    ('launch', 'tgrpo_ros', 'train_sim.launch.py'): 'test_ros2_launch_trains_one_update...',
    ('launch', 'tgrpo_ros', 'deploy_arm.launch.py'): 'test_deploy_graph_on_the_sim_arm...',
    ('lifecycle', 'set', '/arm/safety_controller'):
        'configure, activate, deactivate, cleanup in the deploy test',
    ('param', 'set', '/arm/safety_controller'): 'dry_run false in the deploy test',
    ('service', 'call', '/arm/safety_controller/reset'): 'the deploy test',
    ('topic', 'pub', '--once'): '/estop and /arm/instruction in the deploy test',
    ('topic', 'echo', '/ee_pose'): "the deploy test echoes sim_arm's /arm/ee_pose",
    ('topic', 'list', None): 'the deploy test',
    ('topic', 'hz', '/arm/safety_controller/dry_run/delta_twist_cmds'): 'the deploy test',
    ('lifecycle', 'get', '/arm/safety_controller'): 'the deploy test',
    ('param', 'get', '/arm/safety_controller'): 'the deploy test',
    ('pkg', 'prefix', 'tgrpo_ros'): 'test_install_layout_is_what_the_ros_tools_read',
}
NOT_AMONG_THE_TOOLS = {
    'bag': 'rosbag2 is not among the tools of ../shared/ros2_upstream (docs/bags.md: the '
           'bags tgrpo_record writes are checked against rosbags instead)',
    '/servo_node/switch_command_type': 'MoveIt Servo is not installed here',
}
# Documented commands whose interface another test drives over DDS with rclpy instead of
# the ros2 CLI (each still named here, so a new documented command cannot slip by).
COVERED_THROUGH_RCLPY = {
    ('service', 'call', '/tgrpo_replay_play/play_next'):
        "test_bags.py calls tgrpo_replay play's std_srvs Trigger services",
    ('service', 'call', '/tgrpo_replay_play/resume'):
        "test_bags.py calls tgrpo_replay play's std_srvs Trigger services",
    ('topic', 'pub', '-r'): "test_arm_nodes.py's dead-man test repeats /estop at a rate",
}


def tools_env(home):
    """Return the environment of a shell with the ROS tools on its paths (scripts/env.sh)."""
    env = dict(os.environ)
    env['PATH'] = os.pathsep.join([os.path.join(TOOLS, 'bin'), os.path.dirname(sys.executable),
                                   env.get('PATH', '')])
    env['PYTHONPATH'] = os.pathsep.join(p for p in [TOOLS, env.get('PYTHONPATH')] if p)
    env['ROS_HOME'] = str(home)  # launch's own logs
    env['PYTHONUNBUFFERED'] = '1'
    env['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
    return env


def session_processes(sid):
    """Return {pid: command line} of the live processes of session ``sid``."""
    found = {}
    for stat_path in glob.glob('/proc/[0-9]*/stat'):
        try:
            with open(stat_path) as stream:
                fields = stream.read().rsplit(')', 1)[1].split()
            if int(fields[3]) != sid or fields[0] == 'Z':
                continue
            pid = int(stat_path.split('/')[2])
            with open(f'/proc/{pid}/cmdline', 'rb') as stream:
                found[pid] = stream.read().replace(b'\0', b' ').decode(errors='replace')
        except (OSError, IndexError, ValueError):
            continue
    return found


class Launch:
    """``ros2 launch tgrpo_ros ...`` in its own session, as typed in a terminal."""

    def __init__(self, tmp_path, *args, label='launch'):
        """Start ``ros2 launch tgrpo_ros *args``; its output goes to <tmp_path>/<label>.log."""
        self.env = tools_env(tmp_path / 'ros_home')
        self.log_path = tmp_path / f'{label}.log'
        self._log = open(self.log_path, 'wb')
        self.command = ['ros2', 'launch', 'tgrpo_ros', *args]
        self.process = subprocess.Popen(self.command, stdout=self._log, stderr=subprocess.STDOUT,
                                        env=self.env, cwd=tmp_path, start_new_session=True)

    def text(self):
        """Return everything printed so far."""
        return self.log_path.read_text(errors='replace')

    def wait_for(self, pattern, timeout, ros_client=None):
        """Wait until the output matches ``pattern`` (regex); fail if the launch ends first."""
        deadline = time.monotonic() + timeout
        while not re.search(pattern, self.text()):
            assert self.process.poll() is None, \
                f'launch ended ({self.process.returncode}) before {pattern!r}:\n{self.text()}'
            assert time.monotonic() < deadline, f'no {pattern!r} in {timeout} s:\n{self.text()}'
            if ros_client is not None:
                ros_client.spin_for(0.5)
            else:
                time.sleep(0.5)

    def node_pid(self, name, namespace='/'):
        """Return the pid of node process ``namespace/name``."""
        for pid, command in session_processes(self.process.pid).items():
            if f'__node:={name} ' in command + ' ' and f'__ns:={namespace} ' in command + ' ':
                return pid
        raise AssertionError(f'no process of node {namespace}/{name}:\n{self.text()}')

    def interrupt(self, times=1, signum=signal.SIGINT):
        """Press Ctrl-C ``times``: the signal goes to the whole process group."""
        for _ in range(times):
            os.killpg(self.process.pid, signum)
            time.sleep(0.3)

    def wait(self, timeout=120.0, ros_client=None):
        """Return the exit status once the launch and every process it started are gone."""
        deadline = time.monotonic() + timeout
        while self.process.poll() is None or session_processes(self.process.pid):
            assert time.monotonic() < deadline, \
                f'still running after {timeout} s: ' \
                f'{session_processes(self.process.pid)}\n{self.text()}'
            if ros_client is not None:
                ros_client.spin_for(0.2)
            else:
                time.sleep(0.2)
        return self.process.returncode

    def close(self):
        """Kill whatever is left (a failed test), close the log."""
        for pid in session_processes(self.process.pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.process.wait(timeout=30)
        self._log.close()

    def finished_cleanly(self):
        """Return the launch process names ('policy_server-1', ...) that exited 0."""
        return re.findall(r'\[INFO\] \[([\w-]+)\]: process has finished cleanly', self.text())


@pytest.fixture
def launches():
    """Start launches; kill anything left of them after the test."""
    started = []

    def start(*args, **kwargs):
        launch = Launch(*args, **kwargs)
        started.append(launch)
        return launch
    try:
        yield start
    finally:
        for launch in started:
            launch.close()


@pytest.fixture(scope='module')
def ros2(tmp_path_factory):
    """Run ``ros2 <args>`` as typed; a daemon (``ros2 daemon start``) serves discovery."""
    home = tmp_path_factory.mktemp('ros2_cli')
    env = tools_env(home)

    def run(*args, timeout=60.0, check=True):
        try:
            result = subprocess.run(['ros2', *args], env=env, capture_output=True, text=True,
                                    timeout=timeout)
        except subprocess.TimeoutExpired as expired:  # e.g. `ros2 topic hz` runs until stopped
            if check:
                raise
            output = expired.stdout or ''
            return output.decode() if isinstance(output, bytes) else output
        output = result.stdout + result.stderr
        if check:
            assert result.returncode == 0, f"ros2 {' '.join(args)}: {output}"
        return output
    run('daemon', 'start')
    try:
        yield run
    finally:
        run('daemon', 'stop', check=False)


def until_ok(ros2, args, expect, timeout=90.0):
    """Run ``ros2 *args`` until its output holds ``expect`` (the node may still be starting)."""
    deadline = time.monotonic() + timeout
    while True:
        output = ros2(*args, check=False)
        if expect in output:
            return output
        assert time.monotonic() < deadline, f"ros2 {' '.join(args)}: {output}"
        time.sleep(1.0)


def config_copy(tmp_path, name, **sections):
    """Copy config/<name> elsewhere (as a user makes my_robot.yaml), changing parameters."""
    with open(os.path.join(CONFIG_DIR, name)) as stream:
        config = yaml.safe_load(stream)
    for section, values in sections.items():
        config.setdefault(section, {}).setdefault('parameters', {}).update(values)
    path = tmp_path / 'my_robot' / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config))
    return path


def train_config(tmp_path, updates=1):
    """Copy config/train_sim.yaml sized for a test: short episodes, ``updates``."""
    return config_copy(tmp_path, 'train_sim.yaml', learner={'updates': updates, 'max_steps': 40},
                       sim_bridge={'max_steps': 40})


def assert_clean(text):
    for word in LAUNCH_FAILURES:
        assert word not in text, f'{word!r} in the launch output:\n{text}'


# ------------------------------------------------------------------ install layout

@with_tools
def test_install_layout_is_what_the_ros_tools_read(ros2):
    """share/ files linked one by one (os.walk finds them), executables in lib/tgrpo_ros."""
    share = os.path.join(sys.prefix, 'share', 'tgrpo_ros')
    for folder in ('launch', 'config', 'models'):
        assert not os.path.islink(os.path.join(share, folder)), f'{folder}/ is a directory link'
    found = {name for _, _, files in os.walk(share) for name in files}
    assert {'train_sim.launch.py', 'deploy_arm.launch.py', 'train_sim.yaml',
            'deploy_sim_arm.yaml', 'package.xml', 'config.json'} <= found
    executables = ros2('pkg', 'executables', 'tgrpo_ros')
    for name in NODE_EXECUTABLES:
        assert f'tgrpo_ros {name}' in executables
        assert os.access(os.path.join(sys.prefix, 'lib', 'tgrpo_ros', name), os.X_OK)
    shown = ros2('launch', 'tgrpo_ros', 'train_sim.launch.py', '--show-args')
    assert "'config':" in shown and 'share/tgrpo_ros/config/train_sim.yaml' in shown
    assert ros2('pkg', 'prefix', 'tgrpo_ros').strip() == sys.prefix


def documented_commands():
    """Return {(verb, subverb, name): where} for every ``ros2 ...`` in README and docs/."""
    found = {}
    for path in [os.path.join(ROOT, 'README.md')] + sorted(glob.glob(
            os.path.join(ROOT, 'docs', '*.md'))):
        text = re.sub(r'\s+', ' ', open(path).read())  # commands wrap across lines
        for match in re.finditer(r'\bros2 ([a-z]+)((?: [^ `"$()]+){0,2})', text):
            words = (match.group(1), *match.group(2).split())
            words = words + (None,) * (3 - len(words))
            found.setdefault(words, os.path.basename(path))
    return found


def test_every_ros2_command_in_the_docs_is_run_by_these_tests():
    """Each ``ros2`` command the docs show is one the tests above run with the real tools."""
    untested = []
    for (verb, sub, name), where in documented_commands().items():
        if verb in NOT_AMONG_THE_TOOLS or name in NOT_AMONG_THE_TOOLS:
            continue
        if (sub is None or name is None) and (verb, sub) != ('topic', 'list'):
            continue  # prose: "`ros2 launch` finds ...", "`ros2 param set` refuses ..."
        key = (verb, sub, name)
        if key not in RUN_BY_THESE_TESTS and key not in COVERED_THROUGH_RCLPY:
            untested.append(f'{where}: ros2 {verb} {sub} {name}')
    assert not untested, untested


# ------------------------------------------------------------------ training graph

@with_tools
def test_ros2_launch_trains_one_update_into_a_complete_run_directory(tmp_path, launches):
    config = train_config(tmp_path)  # a copy: its package:// model path still resolves
    launch = launches(tmp_path, 'train_sim.launch.py', f'config:={config}',
                      f'runs_root:={tmp_path / "runs"}')
    code = launch.wait(timeout=900.0)
    text = launch.text()
    assert code == 0, text
    assert_clean(text)
    assert '/learner finished: stopping the graph' in text
    assert sorted(launch.finished_cleanly()) == \
        ['learner-4', 'policy_server-1', 'sim_bridge-2', 'sim_bridge-3'], text
    (run_dir,) = glob.glob(str(tmp_path / 'runs' / 'libero_object_task0__tgrpo__0__*'))
    entries = set(os.listdir(run_dir))
    assert {'config.yaml', 'metrics.csv', 'summary.json', 'curves.png', 'adapters',
            'checkpoints', 'logs'} <= entries, entries
    with open(os.path.join(run_dir, 'summary.json')) as stream:
        assert yaml.safe_load(stream)['updates'] == 1
    assert os.listdir(os.path.join(run_dir, 'adapters'))
    params = sorted(os.listdir(os.path.join(run_dir, 'logs', 'params')))
    assert params == ['learner.params.yaml', 'policy_server.params.yaml',
                      'sim0__sim_bridge.params.yaml', 'sim1__sim_bridge.params.yaml']
    # Each node's ROS log file (ROS_LOG_DIR), named by rcl after the interpreter and pid.
    node_logs = [n for n in os.listdir(os.path.join(run_dir, 'logs')) if n.endswith('.log')]
    assert len(node_logs) == 4 and all(n.startswith('python_') for n in node_logs), node_logs


@with_tools
def test_a_killed_sim_bridge_fails_the_training_launch(tmp_path, launches):
    launch = launches(tmp_path, 'train_sim.launch.py',
                      f'config:={train_config(tmp_path, updates=3)}',
                      f'runs_root:={tmp_path / "runs"}')
    launch.wait_for(r'\[learner\]: policy server serves adapter version 0', 600.0)
    launch.wait_for(r'\[sim0\.sim_bridge\]: assignment for group', 600.0)
    os.kill(launch.node_pid('sim_bridge', '/sim0'), signal.SIGKILL)
    code = launch.wait(timeout=120.0)
    text = launch.text()
    assert code == 1, text
    lines = [line for line in text.splitlines() if line.startswith('tgrpo_ros: ')]
    assert lines == ['tgrpo_ros: /sim0/sim_bridge exited with code -9: stopping the graph '
                     '(exit 1)'], text
    assert 'Caught exception' not in text and 'Cannot shutdown' not in text


@with_tools
def test_ctrl_c_stops_the_training_launch_cleanly(tmp_path, launches):
    """A terminal's Ctrl-C, twice: every node ends cleanly; the unfinished run exits 1."""
    launch = launches(tmp_path, 'train_sim.launch.py',
                      f'config:={train_config(tmp_path, updates=3)}',
                      f'runs_root:={tmp_path / "runs"}')
    launch.wait_for(r'\[sim1\.sim_bridge\]: reset to task', 600.0)
    launch.interrupt(times=2)
    code = launch.wait(timeout=120.0)
    text = launch.text()
    assert_clean(text)
    assert sorted(launch.finished_cleanly()) == \
        ['policy_server-1', 'sim_bridge-2', 'sim_bridge-3'], text
    # The learner reports an interrupted run (130, resumable); the launch does not say 0.
    assert re.search(r'\[learner-4\]: process has died \[pid \d+, exit code 130', text), text
    assert 'tgrpo_ros: /learner exited with code 130 before all its updates were done' in text
    assert code == 1, text


# ------------------------------------------------------------------ deploy graph

@with_tools
def test_deploy_graph_on_the_sim_arm_runs_past_the_horizon_then_stops_on_ctrl_c(
        tmp_path, launches, ros2, ros_client):
    """
    The deploy graph as docs/deploy.md drives it, on sim_arm with a 20-step horizon.

    sim_arm used to raise robosuite's 'executing action in terminated episode' at its
    horizon, 1000 steps (50 s, 'dies after about 50 s'); with ``horizon: 20`` the same
    code path is reached after 1 s, so running 5 horizons long stands for running
    past 90 s.
    """
    from std_msgs.msg import String

    from tgrpo_ros.nodes import arm_topics
    from tgrpo_ros.testing.arm_client import ArmProbe, is_zero
    import json

    config = config_copy(tmp_path, 'deploy_sim_arm.yaml', sim_arm={'horizon': 20})
    launch = launches(tmp_path, 'deploy_arm.launch.py', f'config:={config}',
                      f'runs_root:={tmp_path / "runs"}')
    probe = ArmProbe(ros_client, namespace='/arm')
    probe.feed.update(camera=False, pose=False, action=False)  # the graph feeds itself
    arm_status = []
    ros_client.node.create_subscription(
        String, '/arm/sim_arm/status', lambda msg: arm_status.append(json.loads(msg.data)),
        arm_topics.STATUS_QOS)
    # docs/deploy.md: configure, then activate (the node may still be starting).
    until_ok(ros2, ['lifecycle', 'set', '/arm/safety_controller', 'configure'],
             'Transitioning successful', timeout=300.0)
    assert 'Transitioning successful' in ros2('lifecycle', 'set', '/arm/safety_controller',
                                              'activate')
    assert ros2('lifecycle', 'get', '/arm/safety_controller').strip() == 'active [3]'
    assert '/arm/safety_controller' in ros2('lifecycle', 'nodes')
    assert 'Boolean value is: True' in ros2('param', 'get', '/arm/safety_controller', 'dry_run')
    hz = ros2('topic', 'hz', '/arm/safety_controller/dry_run/delta_twist_cmds', timeout=10.0,
              check=False)
    print(hz.splitlines()[:1])  # the rate: wall-clock, reported rather than asserted
    # Past the horizon, and five horizons on: still stepping, still commanding.
    launch.wait_for(r"\[arm\.sim_arm\]: stepped past the env's horizon of 20 steps", 300.0,
                    ros_client)
    ros_client.spin_until(lambda: arm_status and arm_status[-1]['steps'] >= 100, 120.0,
                          'sim_arm 100 steps (5 horizons)')
    # One twist per control tick: the controller's tick counter, read as each status
    # arrives, against the twists heard by then.
    snapshots = []
    ros_client.node.create_subscription(
        String, '/arm/safety_controller/status', lambda msg: snapshots.append(
            (json.loads(msg.data)['counters'], len(probe.records['dry_twist']))),
        arm_topics.STATUS_QOS)
    ros_client.spin_until(lambda: len(snapshots) >= 2 and snapshots[-1][0]['ticks']
                          >= snapshots[0][0]['ticks'] + 100, 120.0, '100 ticks')
    (first, heard_first), (last, heard_last) = snapshots[0], snapshots[-1]
    ticks = last['ticks'] - first['ticks']
    # Every tick sent a twist. More may be heard than ticks: twists queued in the probe's
    # reader while the test blocked in `ros2 topic hz` arrive during the window (a CI
    # run heard 271 for 100 ticks), so arrival counts give only this lower bound.
    assert heard_last - heard_first >= ticks - 3, (heard_last - heard_first, ticks)
    print(f"twists: {ticks} ticks, {last['moving_ticks'] - first['moving_ticks']} moving")
    assert launch.process.poll() is None
    # The other commands docs/deploy.md shows.
    assert '/arm/safety_controller/dry_run/delta_twist_cmds' in ros2('topic', 'list')
    assert 'frame_id: world' in ros2('topic', 'echo', '--once', '/arm/ee_pose')
    latched = ('--qos-durability', 'transient_local')  # the e-stop's QoS (docs/deploy.md)
    # docs/deploy.md's press: -w 2 waits for both of the controller's e-stop readers, and
    # --keep-alive keeps the latched press up for a reader that matches it a moment later
    # (plain --once lost the press under load in a CI run: the CLI exited first).
    press = ('--once', '-w', '2', '--keep-alive', '3', *latched, '/estop', 'std_msgs/Bool')
    ros2('topic', 'pub', *press, '{data: true}')
    ros_client.spin_until(lambda: probe.latest_status()['state'] == 'estop', 30.0, 'e-stop')
    ros2('topic', 'pub', *press, '{data: false}')
    ros_client.spin_until(lambda: probe.latest_status()['estop_engaged'] is False, 30.0,
                          'the e-stop released')
    assert 'success=True' in ros2('service', 'call', '/arm/safety_controller/reset',
                                  'std_srvs/srv/Trigger')
    ros2('topic', 'pub', '--once', *latched, '/arm/instruction',
         'std_msgs/String', "{data: 'pick up the bowl'}")
    # Go live (the checklist's step 9): deactivate, cleanup, dry_run false, configure.
    for transition in ('deactivate', 'cleanup'):
        assert 'Transitioning successful' in ros2('lifecycle', 'set', '/arm/safety_controller',
                                                  transition)
    assert 'Set parameter successful' in ros2('param', 'set', '/arm/safety_controller',
                                              'dry_run', 'false')
    for transition in ('configure', 'activate'):
        assert 'Transitioning successful' in ros2('lifecycle', 'set', '/arm/safety_controller',
                                                  transition)
    launch.wait_for(r'LIVE, commands to /servo_node/delta_twist_cmds', 30.0, ros_client)
    ros_client.spin_until(lambda: len(probe.twists('twist')) >= 10, 60.0, '10 live twists')
    assert launch.process.poll() is None
    # Ctrl-C in the terminal, pressed twice.
    launch.interrupt(times=2)
    code = launch.wait(timeout=90.0, ros_client=ros_client)
    ros_client.spin_for(1.0)
    text = launch.text()
    assert code == 0, text
    assert_clean(text)
    assert sorted(launch.finished_cleanly()) == \
        ['policy_server-1', 'safety_controller-2', 'sim_arm-3'], text
    assert is_zero(probe.twists('twist')[-1]), probe.twists('twist')[-3:]  # the arm's topic
    (run_dir,) = glob.glob(str(tmp_path / 'runs' / 'libero_object_task0__deploy__0__*'))
    assert sorted(os.listdir(os.path.join(run_dir, 'logs', 'params'))) == [
        'arm__safety_controller.params.yaml', 'arm__sim_arm.params.yaml',
        'policy_server.params.yaml']


@with_tools
def test_a_killed_node_ends_the_deploy_launch_with_one_line(tmp_path, launches):
    launch = launches(tmp_path, 'deploy_arm.launch.py', f'runs_root:={tmp_path / "runs"}')
    launch.wait_for(r'\[policy_server\]: serving ', 120.0)
    launch.wait_for(r'\[arm\.safety_controller\]: unconfigured', 60.0)
    os.kill(launch.node_pid('policy_server'), signal.SIGKILL)
    code = launch.wait(timeout=60.0)
    text = launch.text()
    assert code == 1, text
    lines = [line for line in text.splitlines() if line.startswith('tgrpo_ros: ')]
    assert lines == ['tgrpo_ros: /policy_server exited with code -9: stopping the graph '
                     '(exit 1)'], text
    assert_clean(text)
    assert launch.finished_cleanly() == ['safety_controller-2'], text
