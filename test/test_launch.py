"""The node graph, the pip-side launcher and the launch_ros launch file."""

import ast
import io
import os
import sys
import time
import types

import pytest
import yaml

from tgrpo_ros.orchestration import graph

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, 'config', 'train_sim.yaml')
LAUNCH_FILE = os.path.join(ROOT, 'launch', 'train_sim.launch.py')
DEPLOY_LAUNCH_FILE = os.path.join(ROOT, 'launch', 'deploy_arm.launch.py')
DEPLOY_CONFIGS = [os.path.join(ROOT, 'config', name)
                  for name in ('deploy_arm.yaml', 'deploy_sim_arm.yaml')]
ECHO = [sys.executable, '-m', 'tgrpo_ros.testing.echo_node']


def test_graph_from_yaml_ties_the_nodes_together():
    config = graph.load_config(CONFIG)
    nodes = graph.build_graph(config)
    names = [n.full_name for n in nodes]
    bridges = graph.bridge_namespaces(config)
    assert names == ['/policy_server'] + [ns + '/sim_bridge' for ns in bridges] + ['/learner']
    assert len(bridges) == config['graph']['num_bridges'] == 2
    server = graph.find_node(nodes, 'policy_server')
    learner = graph.find_node(nodes, 'learner')
    assert server.parameters['clients'] == bridges == learner.parameters['bridges']
    # What must agree between server and learner is written once.
    for key, value in config['graph']['policy_parameters'].items():
        assert server.parameters[key] == value == learner.parameters[key]
    assert all(n.package == 'tgrpo_ros' for n in nodes)
    assert {n.executable for n in nodes} == {'policy_server', 'sim_bridge', 'learner'}
    assert learner.parameters['group_size'] <= len(bridges)


def test_graph_overrides_and_params_files(tmp_path):
    config = graph.load_config(CONFIG)
    nodes = graph.build_graph(config, model_path='/models/x',
                              overrides={'learner': {'updates': 7}})
    learner = graph.find_node(nodes, 'learner')
    assert learner.parameters['updates'] == 7
    assert graph.find_node(nodes, 'policy_server').parameters['model_path'] == '/models/x'
    assert 'model_path' not in graph.find_node(nodes, 'sim_bridge').parameters
    paths = graph.write_params_files(nodes, tmp_path)
    with open(paths['/sim1/sim_bridge']) as stream:
        content = yaml.safe_load(stream)
    assert list(content) == ['/sim1/sim_bridge']
    assert content['/sim1/sim_bridge']['ros__parameters'] == nodes[2].parameters


def test_graph_rejects_bad_configuration(tmp_path):
    with pytest.raises(ValueError, match="unknown node kinds \\['leaner'\\]"):
        graph.build_graph(graph.load_config(CONFIG), overrides={'leaner': {}})
    bad = tmp_path / 'bad.yaml'
    bad.write_text('graph: {num_bridges: 0}\n')
    with pytest.raises(ValueError, match='num_bridges must be an int >= 1, got 0'):
        graph.build_graph(graph.load_config(bad))
    bad.write_text('grahp: {}\n')
    with pytest.raises(ValueError, match="unknown top-level keys \\['grahp'\\]"):
        graph.load_config(bad)


def test_launch_file_imports_the_shared_graph_and_names_installed_files():
    def imports(path):
        tree = ast.parse(open(path).read())
        return {(n.module, a.name) for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)
                for a in n.names}

    shared = os.path.join(ROOT, 'tgrpo_ros', 'orchestration', 'launch_actions.py')
    for launch_file, config_file in ((LAUNCH_FILE, 'train_sim.yaml'),
                                     (DEPLOY_LAUNCH_FILE, 'deploy_arm.yaml')):
        assert ('tgrpo_ros.orchestration.launch_actions', 'launch_description') in \
            imports(launch_file)
        assert f"'{config_file}'" in open(launch_file).read()
    assert ('tgrpo_ros.orchestration', 'graph') in imports(shared)
    assert {('launch_ros.actions', 'Node'), ('launch_ros.actions', 'LifecycleNode'),
            ('ament_index_python.packages', 'get_package_share_directory')} <= imports(shared)
    # setup.py installs the launch file and the config where the launch file looks.
    setup = open(os.path.join(ROOT, 'setup.py')).read()
    assert "glob('launch/*.launch.py')" in setup and "glob('config/*.yaml')" in setup


def _fake_launch_modules(monkeypatch):
    """Minimal stand-ins for launch / launch_ros (not installable from PyPI)."""
    class Recorder:

        def __init__(self, *args, **kwargs):
            self.args, self.kwargs = args, kwargs

    class LifecycleNode(Recorder):
        pass

    class LaunchConfiguration(Recorder):

        values = {}

        def perform(self, context):
            return self.values[self.args[0]]

    modules = {
        'launch': {'LaunchDescription': Recorder},
        'launch.actions': {n: Recorder for n in ('DeclareLaunchArgument', 'EmitEvent',
                                                 'OpaqueFunction', 'RegisterEventHandler')},
        'launch.event_handlers': {'OnProcessExit': Recorder},
        'launch.events': {'Shutdown': Recorder},
        'launch.substitutions': {'LaunchConfiguration': LaunchConfiguration},
        'launch_ros': {},
        'launch_ros.actions': {'Node': Recorder, 'LifecycleNode': LifecycleNode},
        'ament_index_python': {},
        'ament_index_python.packages': {'get_package_share_directory':
                                        lambda pkg: f'/opt/share/{pkg}'},
    }
    for name, attrs in modules.items():
        module = types.ModuleType(name)
        module.__dict__.update(attrs)
        monkeypatch.setitem(sys.modules, name, module)
    return Recorder, LaunchConfiguration


def _node_specs_of_launch_file(monkeypatch, values, launch_file=LAUNCH_FILE,
                               config_name='train_sim.yaml', lifecycle=None):
    import importlib.util
    Recorder, LaunchConfiguration = _fake_launch_modules(monkeypatch)
    spec = importlib.util.spec_from_file_location('launch_under_test', launch_file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    description = module.generate_launch_description()
    declared = [a.args[0] for a in description.args[0] if a.args and isinstance(a.args[0], str)]
    assert declared == ['config', 'model_path', 'runs_root', 'run_dir']
    assert description.args[0][0].kwargs['default_value'] == \
        f'/opt/share/tgrpo_ros/config/{config_name}'
    LaunchConfiguration.values = dict(dict.fromkeys(declared, ''), **values)
    actions = module.node_actions(context=None)
    nodes = [a for a in actions if 'executable' in a.kwargs]
    assert all(a.kwargs['package'] == 'tgrpo_ros' for a in nodes)
    if lifecycle is not None:  # {executable: started as a LifecycleNode}
        assert {a.kwargs['executable']: type(a).__name__ == 'LifecycleNode'
                for a in nodes} == lifecycle
    return [(a.kwargs['executable'], a.kwargs['namespace'], a.kwargs['name'],
             a.kwargs['parameters'], dict(a.kwargs['remappings'])) for a in nodes]


# Stops a child the way launch does (the transport's send_signal, then terminate) and
# prints how many times that polled the child (a waitpid), and the child's exit code.
STOP_A_CHILD = """
import asyncio, json, signal, subprocess, sys
if sys.argv[1] == 'patched':
    from tgrpo_ros.orchestration.launch_actions import signal_without_reaping
    signal_without_reaping()
    signal_without_reaping()  # idempotent
polls = []
poll = subprocess.Popen.poll
def recording(self):
    polls.append(self.pid)  # a poll is a waitpid: it can reap the child
    return poll(self)
async def main():
    proc = await asyncio.create_subprocess_exec('sleep', '60')
    subprocess.Popen.poll = recording
    proc.send_signal(signal.SIGTERM)
    proc.terminate()
    subprocess.Popen.poll = poll
    return await proc.wait()
code = asyncio.run(main())
print(json.dumps({'polls_while_signalling': len(polls), 'returncode': code}))
"""


def test_launch_signals_its_nodes_without_reaping_them():
    """
    A node's exit status is its own, not 255: stopping it never reaps it behind asyncio.

    Before the fix (and on any Python without CPython's gh-87744 fix), the transport's
    send_signal polled the child from the event loop's thread; under load that poll
    reaped a node that had just exited 0, and the child watcher reported 255.
    """
    import json
    import subprocess

    def stop(mode):
        result = subprocess.run([sys.executable, '-c', STOP_A_CHILD, mode], cwd=ROOT,
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    assert stop('patched') == {'polls_while_signalling': 0, 'returncode': -15}
    if sys.version_info < (3, 12):  # no upstream fix: what the patch removes is there
        assert stop('plain')['polls_while_signalling'] >= 1


def test_both_launchers_start_identical_nodes_from_one_configuration(monkeypatch, tmp_path):
    from tgrpo_ros.orchestration import launcher
    from tgrpo_ros.policy import cached_standin

    model = cached_standin(0)
    run_dir = tmp_path / 'run'
    from_launch_file = _node_specs_of_launch_file(
        monkeypatch, {'config': CONFIG, 'model_path': model, 'run_dir': str(run_dir)})
    args = launcher._parser().parse_args(['--config', CONFIG, '--model-path', model,
                                          '--run-dir', str(run_dir)])
    run = launcher.plan(args)
    from_tgrpo_launch = [(n.executable, n.namespace or '', n.name, [n.parameters], n.remaps)
                         for n in run.nodes]
    assert from_launch_file == from_tgrpo_launch
    learner = graph.find_node(run.nodes, 'learner')
    server = graph.find_node(run.nodes, 'policy_server')
    assert learner.parameters['run_dir'] == str(run_dir) == run.run_dir
    assert server.parameters['adapter_root'] == str(run_dir / 'adapters')
    assert server.parameters['model_path'] == learner.parameters['model_path'] == model
    assert (run_dir / 'config.yaml').read_text() == open(CONFIG).read()


def test_default_model_and_run_directory_need_no_arguments(monkeypatch, tmp_path):
    """No model path: the stand-in is built in the user cache; runs go under ROS_HOME."""
    monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path / 'cache'))
    monkeypatch.setenv('ROS_HOME', str(tmp_path / 'ros'))
    config = graph.load_config(CONFIG)
    config['main']['runs_root'] = ''
    config['graph']['policy_parameters']['model_path'] = ''
    run = graph.plan_run(config)
    model = tmp_path / 'cache' / 'tgrpo_ros' / 'standin_seed0'
    assert run.model_path == str(model) and (model / 'config.json').is_file()
    assert os.path.dirname(run.run_dir) == str(tmp_path / 'ros' / 'tgrpo_ros' / 'runs')
    assert os.path.basename(run.run_dir).startswith('libero_object_task0__tgrpo__0__')
    again = graph.plan_run(config)  # built once; a second run gets its own directory
    assert again.model_path == run.model_path and again.run_dir != run.run_dir
    with pytest.raises(FileNotFoundError, match='holds no checkpoint'):
        graph.resolve_model(str(tmp_path / 'nothing_here'))


def test_launcher_parses_overrides():
    from tgrpo_ros.orchestration.launcher import parse_overrides
    assert parse_overrides(['learner.updates=3', 'sim_bridge.camera_size=224',
                            'learner.tasks=[0, 1]']) == {
        'learner': {'updates': 3, 'tasks': [0, 1]}, 'sim_bridge': {'camera_size': 224}}
    with pytest.raises(ValueError, match='KIND.NAME=VALUE'):
        parse_overrides(['updates=3'])


@pytest.mark.ros
def test_launcher_tears_the_graph_down_when_a_node_dies(tmp_path):
    from tgrpo_ros.orchestration.processes import NodeGroup
    nodes = [
        graph.NodeSpec('tgrpo_ros', ECHO, 'echo_a', '/ns1', {'prefix': 'a:'}),
        graph.NodeSpec('tgrpo_ros', ECHO, 'echo_b', '', {'prefix': 'b:'}),
        graph.NodeSpec('tgrpo_ros', [sys.executable, '-c',
                                     'import sys, time; time.sleep(3); sys.exit(3)'],
                       'dies', '', {}),
    ]
    out = io.StringIO()
    run = NodeGroup(tmp_path, stream=out, finisher='/learner')
    try:
        run.start_graph(nodes, graph.write_params_files(nodes, tmp_path / 'params'))
        start = time.monotonic()
        code = run.wait(timeout=60)
        assert code == 1
        assert time.monotonic() - start < 30
        assert 'node dies exited with code 3' in out.getvalue()
        assert [p.alive for p in run.nodes] == [True, True, False]
    finally:
        run.stop_all()
    assert [p.alive for p in run.nodes] == [False, False, False]
    # The echo nodes ended through SIGINT like Ctrl-C (rclpy exits cleanly).
    assert [p.returncode for p in run.nodes[:2]] in ([0, 0], [-2, -2], [0, -2], [-2, 0])
    with open(os.path.join(tmp_path, 'params', 'ns1__echo_a.params.yaml')) as stream:
        assert yaml.safe_load(stream) == {'/ns1/echo_a': {'ros__parameters': {'prefix': 'a:'}}}


@pytest.mark.ros
def test_launcher_ends_with_zero_when_the_finisher_exits_cleanly(tmp_path):
    from tgrpo_ros.orchestration.launcher import run_graph
    nodes = [graph.NodeSpec('tgrpo_ros', ECHO, 'echo_a', '', {}),
             graph.NodeSpec('tgrpo_ros', [sys.executable, '-c', 'print("all updates done")'],
                            'learner', '', {})]
    out = io.StringIO()
    assert run_graph(nodes, tmp_path, stream=out, timeout=60) == 1  # no finisher: a death
    out = io.StringIO()
    assert run_graph(nodes, tmp_path / 'b', stream=out, timeout=60, finisher='/learner') == 0
    assert '[learner] all updates done' in out.getvalue()
    assert '/learner finished: stopping the graph' in out.getvalue()


@pytest.mark.parametrize('config', DEPLOY_CONFIGS, ids=os.path.basename)
def test_both_launchers_start_identical_deploy_graphs(monkeypatch, tmp_path, config):
    from tgrpo_ros.orchestration import launcher
    from tgrpo_ros.policy import cached_standin

    model = cached_standin(0)
    run_dir = tmp_path / 'run'
    sim = 'sim_arm' in os.path.basename(config)
    lifecycle = {'policy_server': False, 'safety_controller': True}
    if sim:
        lifecycle['sim_arm'] = False
    from_launch_file = _node_specs_of_launch_file(
        monkeypatch, {'config': config, 'model_path': model, 'run_dir': str(run_dir)},
        DEPLOY_LAUNCH_FILE, 'deploy_arm.yaml', lifecycle)
    args = launcher._parser().parse_args(['--config', config, '--model-path', model,
                                          '--run-dir', str(run_dir)])
    run = launcher.plan(args)
    from_tgrpo_launch = [(n.executable, n.namespace or '', n.name, [n.parameters], n.remaps)
                         for n in run.nodes]
    assert from_launch_file == from_tgrpo_launch
    assert [n.full_name for n in run.nodes] == \
        ['/policy_server', '/arm/safety_controller'] + (['/arm/sim_arm'] if sim else [])
    server = graph.find_node(run.nodes, 'policy_server')
    controller = graph.find_node(run.nodes, 'safety_controller')
    assert controller.lifecycle and not server.lifecycle
    assert server.parameters['clients'] == ['/arm']
    assert server.parameters['mode'] == 'stream'
    assert server.parameters['preprocessing'] == 'camera'
    assert server.parameters['model_path'] == model
    assert 'adapter_root' not in server.parameters  # no learner: adapters from anywhere
    assert controller.parameters['dry_run'] is True
    if sim:  # sim_arm speaks the default names: nothing to remap
        assert server.remaps == controller.remaps == {}
        assert graph.find_node(run.nodes, 'sim_arm').parameters['camera_qos'] == 'sensor_data'
    else:  # graph.arm_topics, written once, remaps both nodes
        assert server.remaps == {'/arm/camera/image': '/camera/color/image_raw'}
        assert controller.remaps == {'camera/image': '/camera/color/image_raw',
                                     'ee_pose': '/ee_pose'}
    assert os.path.basename(run.run_dir) == 'run'


def test_deploy_graph_configuration_errors_name_the_choices():
    config = graph.load_config(DEPLOY_CONFIGS[1])
    config['graph']['arm_topics'] = {'camera': '/cam', 'twist': '/my_servo/twist',
                                     'gripper': '/gripper_controller/commands'}
    nodes = graph.build_graph(config)
    assert graph.find_node(nodes, 'sim_arm').remaps == {
        'camera/image': '/cam', '/servo_node/delta_twist_cmds': '/my_servo/twist'}
    assert graph.find_node(nodes, 'policy_server').remaps == {'/arm/camera/image': '/cam'}
    config['graph']['arm_topics'] = {'image': '/cam'}
    with pytest.raises(ValueError, match=r"unknown keys \['image'\]; valid keys: \['camera'"):
        graph.build_graph(config)
    config['graph'].pop('arm_topics')
    config['learner'] = {}
    with pytest.raises(ValueError, match=r"a deploy graph has no \['learner'\] section"):
        graph.build_graph(config)
    config.pop('learner')
    config['graph']['kind'] = 'serve'
    with pytest.raises(ValueError, match=r"unknown graph.kind 'serve'; choose one of "
                       r"\['train', 'deploy'\]"):
        graph.build_graph(config)


@pytest.mark.ros
@pytest.mark.slow
def test_tgrpo_launch_brings_the_sim_arm_deploy_graph_up(tmp_path, ros_client):
    """tgrpo_launch starts the deploy graph; configured and activated, it commands (dry run)."""
    import subprocess

    from tgrpo_ros.testing.arm_client import ArmProbe, is_finite

    command = [sys.executable, '-m', 'tgrpo_ros.orchestration.launcher', '--config',
               DEPLOY_CONFIGS[1], '--timeout', '60', '--runs-root', str(tmp_path)]
    log = open(tmp_path / 'launch.log', 'w')
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        probe = ArmProbe(ros_client, namespace='/arm')
        probe.feed.update(camera=False, pose=False, action=False)  # the graph feeds itself
        probe.wait_for_controller(timeout=60.0)
        assert probe.transition('configure') and probe.transition('activate')
        # sim_arm's camera and pose, the policy server's actions (stream mode, best-effort
        # camera), the controller's twists on its ~/dry_run topic, never the arm's.
        twist = probe.wait_for_twist(is_finite, timeout=45.0, what='a dry-run twist')
        assert twist[3] == 'world'
        ros_client.spin_until(lambda: any(s.get('counters', {}).get('actions', 0) > 0
                                          for s in probe.status), 20.0, 'an action counted')
        assert not probe.records['twist'], 'dry run reached the arm topic'
        assert process.poll() is None, open(tmp_path / 'launch.log').read()
    finally:
        if process.poll() is None:
            process.send_signal(2)  # Ctrl-C
        code = process.wait(timeout=60)
        log.close()
    text = open(tmp_path / 'launch.log').read()
    assert 'nodes: /policy_server, /arm/safety_controller, /arm/sim_arm' in text
    assert 'deploy graph: running until Ctrl-C or 60.0 s' in text
    assert code == 130, text


def test_package_url_survives_a_copied_configuration(tmp_path):
    """config/train_sim.yaml copied elsewhere keeps its model: package://, via the share dir."""
    copy = tmp_path / 'my_robot.yaml'
    copy.write_text(open(CONFIG).read())
    config = graph.load_config(copy)
    assert config['graph']['policy_parameters']['model_path'] == \
        'package://tgrpo_ros/models/standin_sft_task0'
    run = graph.plan_run(config, config_path=str(copy), runs_root=str(tmp_path / 'runs'))
    assert os.path.isfile(os.path.join(run.model_path, 'config.json'))
    assert run.model_path.endswith(os.path.join('tgrpo_ros', 'models', 'standin_sft_task0')) \
        or run.model_path == os.path.join(ROOT, 'models', 'standin_sft_task0')
    # Relative paths keep working as before: from the working directory, then the config's.
    assert graph.resolve_model('../models/standin_sft_task0',
                               config_dir=os.path.join(ROOT, 'config')) == \
        os.path.join(ROOT, 'models', 'standin_sft_task0')
    assert graph.resolve_package_url('relative/path') == 'relative/path'
    with pytest.raises(ValueError, match="no installed package 'no_such_package'"):
        graph.resolve_package_url('package://no_such_package/models/x')
