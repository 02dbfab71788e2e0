"""The path tells the layer: only tgrpo_ros.nodes (and ROS test helpers) may import rclpy."""

import ast
import os
import pkgutil
import subprocess
import sys

import tgrpo_ros

PACKAGE_DIR = os.path.dirname(tgrpo_ros.__file__)
# The rclpy layer: the nodes and what they share (topics, message codecs, parameters),
# and the test helpers that talk to nodes.
ROS_MODULES = ('tgrpo_ros.nodes', 'tgrpo_ros.testing.ros_client',
               'tgrpo_ros.testing.arm_client', 'tgrpo_ros.testing.echo_node',
               'tgrpo_ros.testing.deploy_play')
ROS_IMPORTS = ('rclpy', 'rcl_interfaces', 'std_msgs', 'sensor_msgs', 'geometry_msgs',
               'diagnostic_msgs', 'lifecycle_msgs', 'std_srvs', 'builtin_interfaces')


def _is_ros_layer(name):
    return any(name == m or name.startswith(m + '.') for m in ROS_MODULES)


def _modules():
    return sorted(m.name for m in pkgutil.walk_packages([PACKAGE_DIR], 'tgrpo_ros.'))


def _imports(path):
    tree = ast.parse(open(path).read())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            yield node.module


def test_the_layers_exist_and_the_old_top_level_modules_are_gone():
    top = {m.split('.')[1] for m in _modules()}
    assert {'episode', 'names', 'options', 'policy', 'sim', 'training', 'nodes',
            'orchestration', 'testing', 'bags'} <= top
    for old in ('tgrpo', 'config', 'messages', 'topics', 'graph', 'launcher', 'netns',
                'node_process', 'replay', 'train_main', 'check_report'):
        assert old not in top, f'tgrpo_ros.{old} should live in its layer now'


def test_no_ros_import_outside_the_ros_layer():
    offenders = []
    for name in _modules():
        if _is_ros_layer(name):
            continue
        spec = __import__('importlib.util').util.find_spec(name)
        for module in _imports(spec.origin):
            if module.split('.')[0] in ROS_IMPORTS:
                offenders.append(f'{name} imports {module}')
    assert not offenders, offenders


def test_every_module_outside_the_ros_layer_imports_without_rclpy():
    outside = [m for m in _modules() if not _is_ros_layer(m)]
    script = f"""
import importlib, importlib.abc, sys
class NoRos(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in {ROS_IMPORTS!r}:
            raise ImportError(f'{{name}} is not importable in this test')
sys.meta_path.insert(0, NoRos())
failed = []
for name in {outside!r}:
    try:
        importlib.import_module(name)
    except Exception as error:
        failed.append(f'{{name}}: {{type(error).__name__}}: {{error}}')
print('\\n'.join(failed))
sys.exit(1 if failed else 0)
"""
    result = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert len(outside) > 30


# The bag layer reads, writes, pairs, checks and reports without rclpy; of the ROS
# layer it may use only the message codecs, which import no ROS at module level.
BAG_MODULES_FROM_NODES = ('tgrpo_ros.nodes.messages',)


def _imported_names(path):
    """Yield every module imported (``from a import b`` gives 'a.b' when b is a module)."""
    for node in ast.walk(ast.parse(open(path).read())):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            if _is_ros_layer(node.module):
                yield from (f'{node.module}.{alias.name}' for alias in node.names)
            else:
                yield node.module


def test_the_bag_layer_needs_no_rclpy_and_the_bag_code_left_nodes():
    bags = [m for m in _modules() if m == 'tgrpo_ros.bags' or m.startswith('tgrpo_ros.bags.')]
    assert {'tgrpo_ros.bags.storage', 'tgrpo_ros.bags.check', 'tgrpo_ros.bags.report',
            'tgrpo_ros.bags.episodes', 'tgrpo_ros.bags.profiles',
            'tgrpo_ros.bags.listing'} <= set(bags)
    offenders = []
    for name in bags:
        assert not _is_ros_layer(name)
        spec = __import__('importlib.util').util.find_spec(name)
        for module in _imported_names(spec.origin):
            if module.split('.')[0] in ROS_IMPORTS or (
                    _is_ros_layer(module) and module not in BAG_MODULES_FROM_NODES):
                offenders.append(f'{name} imports {module}')
    for module in BAG_MODULES_FROM_NODES:  # what the bag layer uses of nodes/ stays ROS-free
        spec = __import__('importlib.util').util.find_spec(module)
        tree = ast.parse(open(spec.origin).read())
        top_level = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
        for node in top_level:
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [
                node.module or '']
            offenders += [f'{module} imports {n} at module level' for n in names
                          if n.split('.')[0] in ROS_IMPORTS or _is_ros_layer(n)]
    assert not offenders, offenders
    # What stays in nodes/ subscribes or publishes: no reader, writer or checker there.
    for gone in ('bag_io', 'bag_check'):
        assert f'tgrpo_ros.nodes.{gone}' not in _modules()
