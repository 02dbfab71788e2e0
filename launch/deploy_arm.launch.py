"""
Launch the arm deployment graph with launch_ros (real ROS 2 installs).

    ros2 launch tgrpo_ros deploy_arm.launch.py [config:=/path/to/deploy_arm.yaml]
        [model_path:=/path/to/checkpoint] [runs_root:=DIR] [run_dir:=DIR]

With no arguments it runs the package's installed ``config/deploy_arm.yaml``: the
policy server in stream mode and the safety controller, remapped to the arm's
topics; ``config:=.../deploy_sim_arm.yaml`` adds ``sim_arm``. The nodes come from
``tgrpo_ros.orchestration.graph.plan_run``, the same function the pip-side
launcher ``tgrpo_launch`` calls. The safety controller is a managed node
(``launch_ros.actions.LifecycleNode``): it starts unconfigured and in dry run;
configure and activate it with ``ros2 lifecycle set`` (docs/deploy.md). The
launch runs until Ctrl-C or until a node exits.
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

try:  # launch_ros has had LifecycleNode since Foxy; a plain Node runs the same process
    from launch_ros.actions import LifecycleNode
except ImportError:  # pragma: no cover - depends on the install
    LifecycleNode = None

PACKAGE = 'tgrpo_ros'
CONFIG_FILE = 'deploy_arm.yaml'


def default_config():
    """Return the installed configuration file of this package."""
    return os.path.join(get_package_share_directory(PACKAGE), 'config', CONFIG_FILE)


def node_actions(context):
    """Build one launch_ros Node (LifecycleNode for managed ones) per node of the graph."""
    def argument(name):
        return LaunchConfiguration(name).perform(context) or None

    config_path = argument('config')
    run = graph.plan_run(graph.load_config(config_path), config_path=config_path,
                         model_path=argument('model_path'), runs_root=argument('runs_root'),
                         run_dir=argument('run_dir'))
    actions = []
    for spec in run.nodes:
        action = LifecycleNode if spec.lifecycle and LifecycleNode is not None else Node
        node = action(package=spec.package, executable=spec.executable, name=spec.name,
                      namespace=spec.namespace or '', parameters=[spec.parameters],
                      remappings=list(spec.remaps.items()), output='screen')
        actions.append(node)
        # A deploy graph has no finisher: any node's exit ends the launch.
        actions.append(RegisterEventHandler(OnProcessExit(
            target_action=node,
            on_exit=[EmitEvent(event=Shutdown(reason=f'{spec.full_name} exited'))])))
    return actions


def generate_launch_description():
    """Declare the arguments and the graph."""
    return LaunchDescription([
        DeclareLaunchArgument('config', default_value=default_config(),
                              description='deploy graph configuration (YAML)'),
        DeclareLaunchArgument('model_path', default_value='',
                              description="replaces the policy's model_path ('' keeps it)"),
        DeclareLaunchArgument('runs_root', default_value='',
                              description="parent of the run directory ('': the config's, "
                              'or $ROS_HOME/tgrpo_ros/runs)'),
        DeclareLaunchArgument('run_dir', default_value='',
                              description="this run's directory ('': a new one under "
                              'runs_root)'),
        OpaqueFunction(function=node_actions),
    ])
