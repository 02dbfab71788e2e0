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

from tgrpo_ros.orchestration.launch_actions import launch_description, node_actions  # noqa: F401

CONFIG_FILE = 'deploy_arm.yaml'


def generate_launch_description():
    """Declare the arguments and the graph of the installed ``deploy_arm.yaml``."""
    return launch_description(CONFIG_FILE, 'deploy graph')
