"""
The launch_ros side of the graph: what every ``launch/*.launch.py`` file returns.

A launch file names its installed configuration and calls ``launch_description``;
``node_actions`` plans the run with ``graph.plan_run`` (the function ``tgrpo_launch``
calls too) and makes one launch_ros ``Node`` per node, a ``LifecycleNode`` for
managed ones. Any node's exit ends the launch: the learner's after its K updates,
or a node that died.

``launch``, ``launch_ros`` and ``ament_index_python`` come with a ROS install, not
from PyPI: they are imported inside the functions, so this module imports anywhere.
"""

import os

from tgrpo_ros.orchestration import graph

ARGUMENTS = (
    # name, description (the config's default is the launch file's own)
    ('model_path', "replaces the policy's model_path ('' keeps the config's)"),
    ('runs_root', "parent of the run directory ('': the config's, or "
     '$ROS_HOME/tgrpo_ros/runs)'),
    ('run_dir', "this run's directory ('': a new one under runs_root); an existing one is "
     'reused, e.g. to resume'),
)


def installed_config(config_file):
    """Return the path of ``config/<config_file>`` in this package's share directory."""
    from ament_index_python.packages import get_package_share_directory
    return os.path.join(get_package_share_directory(graph.PACKAGE), 'config', config_file)


def node_actions(context):
    """Plan the run from the launch arguments; return one Node (and exit handler) per node."""
    from launch.actions import EmitEvent, RegisterEventHandler
    from launch.event_handlers import OnProcessExit
    from launch.events import Shutdown
    from launch.substitutions import LaunchConfiguration
    from launch_ros.actions import Node
    try:  # launch_ros has had LifecycleNode since Foxy; a plain Node runs the same process
        from launch_ros.actions import LifecycleNode
    except ImportError:  # pragma: no cover - depends on the install
        LifecycleNode = Node

    def argument(name):
        return LaunchConfiguration(name).perform(context) or None

    config_path = argument('config')
    run = graph.plan_run(graph.load_config(config_path), config_path=config_path,
                         model_path=argument('model_path'), runs_root=argument('runs_root'),
                         run_dir=argument('run_dir'))
    actions = []
    for spec in run.nodes:
        action = LifecycleNode if spec.lifecycle else Node
        node = action(package=spec.package, executable=spec.executable, name=spec.name,
                      namespace=spec.namespace or '', parameters=[spec.parameters],
                      remappings=list(spec.remaps.items()), output='screen')
        actions.append(node)
        actions.append(RegisterEventHandler(OnProcessExit(
            target_action=node,
            on_exit=[EmitEvent(event=Shutdown(reason=f'{spec.full_name} exited'))])))
    return actions


def launch_description(config_file, what):
    """Declare ``config`` (default: the installed ``config_file``), the rest, the graph."""
    from launch import LaunchDescription
    from launch.actions import DeclareLaunchArgument, OpaqueFunction

    return LaunchDescription(
        [DeclareLaunchArgument('config', default_value=installed_config(config_file),
                               description=f'{what} configuration (YAML)')]
        + [DeclareLaunchArgument(name, default_value='', description=text)
           for name, text in ARGUMENTS]
        + [OpaqueFunction(function=node_actions)])
