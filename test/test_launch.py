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
    tree = ast.parse(open(LAUNCH_FILE).read())
    imported = {(n.module, a.name) for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)
                for a in n.names}
    assert ('tgrpo_ros.orchestration', 'graph') in imported
    assert ('launch_ros.actions', 'Node') in imported
    text = open(LAUNCH_FILE).read()
    assert "'train_sim.yaml'" in text and 'get_package_share_directory' in text
    # setup.py installs the launch file and the config where the launch file looks.
    setup = open(os.path.join(ROOT, 'setup.py')).read()
    assert "glob('launch/*.launch.py')" in setup and "glob('config/*.yaml')" in setup


def _fake_launch_modules(monkeypatch):
    """Minimal stand-ins for launch / launch_ros (not installable from PyPI)."""
    class Recorder:

        def __init__(self, *args, **kwargs):
            self.args, self.kwargs = args, kwargs

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
        'launch_ros': {}, 'launch_ros.actions': {'Node': Recorder},
        'ament_index_python': {},
        'ament_index_python.packages': {'get_package_share_directory':
                                        lambda pkg: f'/opt/share/{pkg}'},
    }
    for name, attrs in modules.items():
        module = types.ModuleType(name)
        module.__dict__.update(attrs)
        monkeypatch.setitem(sys.modules, name, module)
    return Recorder, LaunchConfiguration


def test_launch_file_builds_one_node_action_per_graph_node(monkeypatch):
    import importlib.util
    Recorder, LaunchConfiguration = _fake_launch_modules(monkeypatch)
    spec = importlib.util.spec_from_file_location('train_sim_launch', LAUNCH_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    description = module.generate_launch_description()
    declared = [a.args[0] for a in description.args[0] if a.args and isinstance(a.args[0], str)]
    assert declared == ['config', 'model_path']
    assert description.args[0][0].kwargs['default_value'] == \
        '/opt/share/tgrpo_ros/config/train_sim.yaml'
    LaunchConfiguration.values = {'config': CONFIG, 'model_path': '/models/m'}
    actions = module.node_actions(context=None)
    nodes = [a for a in actions if 'executable' in a.kwargs]
    expected = graph.build_graph(graph.load_config(CONFIG), model_path='/models/m')
    assert [(a.kwargs['executable'], a.kwargs['namespace'], a.kwargs['name']) for a in nodes] \
        == [(n.executable, n.namespace, n.name) for n in expected]
    assert [a.kwargs['parameters'] for a in nodes] == [[n.parameters] for n in expected]
    assert all(a.kwargs['package'] == 'tgrpo_ros' for a in nodes)


def test_launcher_parses_overrides():
    from tgrpo_ros.orchestration.launcher import parse_overrides
    assert parse_overrides(['learner.updates=3', 'sim_bridge.camera_size=224',
                            'learner.tasks=[0, 1]']) == {
        'learner': {'updates': 3, 'tasks': [0, 1]}, 'sim_bridge': {'camera_size': 224}}
    with pytest.raises(ValueError, match='KIND.NAME=VALUE'):
        parse_overrides(['updates=3'])


@pytest.mark.ros
def test_launcher_tears_the_graph_down_when_a_node_dies(tmp_path):
    from tgrpo_ros.orchestration.launcher import GraphRun
    nodes = [
        graph.NodeSpec('tgrpo_ros', ECHO, 'echo_a', '/ns1', {'prefix': 'a:'}),
        graph.NodeSpec('tgrpo_ros', ECHO, 'echo_b', '', {'prefix': 'b:'}),
        graph.NodeSpec('tgrpo_ros', [sys.executable, '-c',
                                     'import sys, time; time.sleep(3); sys.exit(3)'],
                       'dies', '', {}),
    ]
    out = io.StringIO()
    run = GraphRun(nodes, tmp_path, stream=out, finisher='/learner')
    try:
        start = time.monotonic()
        code = run.wait(timeout=60)
        assert code == 1
        assert time.monotonic() - start < 30
        assert 'node dies exited with code 3' in out.getvalue()
        assert [p.alive for p in run.processes] == [True, True, False]
    finally:
        run.stop()
    assert [p.alive for p in run.processes] == [False, False, False]
    # The echo nodes ended through SIGINT like Ctrl-C (rclpy exits cleanly).
    assert [p.returncode for p in run.processes[:2]] in ([0, 0], [-2, -2], [0, -2], [-2, 0])
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
