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

from tgrpo_ros.orchestration.launch_actions import launch_description, node_actions  # noqa: F401

CONFIG_FILE = 'train_sim.yaml'


def generate_launch_description():
    """Declare the arguments and the graph of the installed ``train_sim.yaml``."""
    return launch_description(CONFIG_FILE, 'training graph')
