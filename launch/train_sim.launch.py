"""
Launch the TGRPO training graph with launch_ros (real ROS 2 installs).

    ros2 launch tgrpo_ros train_sim.launch.py [config:=/path/to/train_sim.yaml]
        [model_path:=/path/to/checkpoint] [runs_root:=DIR] [run_dir:=DIR]

With no arguments it runs the package's installed ``config/train_sim.yaml``. The
run is planned by ``tgrpo_ros.orchestration.graph.plan_run``, the same function
the pip-side launcher ``tgrpo_launch`` calls: the model resolves the same way (the
default stand-in is built in the user cache on first use) and the run directory
goes under ``$ROS_HOME/tgrpo_ros/runs`` unless ``runs_root`` or ``run_dir`` says
otherwise.
The launch ends when the learner exits (all updates done) or any node dies.
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, EmitEvent, OpaqueFunction
from launch.actions import RegisterEventHandler
from launch.event_handlers import OnProcessExit
from launch.events import Shutdown
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from tgrpo_ros.orchestration import graph

PACKAGE = 'tgrpo_ros'
CONFIG_FILE = 'train_sim.yaml'


def default_config():
    """Return the installed configuration file of this package."""
    return os.path.join(get_package_share_directory(PACKAGE), 'config', CONFIG_FILE)


def node_actions(context):
    """Build one launch_ros Node per node of the shared graph definition."""
    def argument(name):
        return LaunchConfiguration(name).perform(context) or None

    config_path = argument('config')
    run = graph.plan_run(graph.load_config(config_path), config_path=config_path,
                         model_path=argument('model_path'), runs_root=argument('runs_root'),
                         run_dir=argument('run_dir'))
    actions = []
    for spec in run.nodes:
        node = Node(package=spec.package, executable=spec.executable, name=spec.name,
                    namespace=spec.namespace or '', parameters=[spec.parameters],
                    remappings=list(spec.remaps.items()), output='screen')
        actions.append(node)
        # The run ends with the learner (exit 0 after K updates) or any node's death.
        actions.append(RegisterEventHandler(OnProcessExit(
            target_action=node,
            on_exit=[EmitEvent(event=Shutdown(reason=f'{spec.full_name} exited'))])))
    return actions


def generate_launch_description():
    """Declare the arguments and the graph."""
    return LaunchDescription([
        DeclareLaunchArgument('config', default_value=default_config(),
                              description='graph configuration (YAML)'),
        DeclareLaunchArgument('model_path', default_value='',
                              description="replaces every node's model_path ('' keeps it)"),
        DeclareLaunchArgument('runs_root', default_value='',
                              description="parent of the run directory ('': the config's, "
                              'or $ROS_HOME/tgrpo_ros/runs)'),
        DeclareLaunchArgument('run_dir', default_value='',
                              description="this run's directory ('': a new one under "
                              'runs_root); an existing one is reused, e.g. to resume'),
        OpaqueFunction(function=node_actions),
    ])
