"""
The launch_ros side of the graph: what every ``launch/*.launch.py`` file returns.

A launch file names its installed configuration and calls ``launch_description``;
``node_actions`` plans the run with ``graph.plan_run`` (the function ``tgrpo_launch``
calls too) and makes one launch_ros ``Node`` per node, a ``LifecycleNode`` for
managed ones. Any node's exit ends the launch, once (``GraphExit``): the learner's
after its K updates (exit 0), or a node that died (exit 1).

``launch``, ``launch_ros`` and ``ament_index_python`` come with a ROS install, not
from PyPI: they are imported inside the functions, so this module imports anywhere.
"""

import os

from tgrpo_ros.orchestration import graph

# s a node gets after Ctrl-C before SIGTERM, then after SIGTERM before SIGKILL (launch's
# default is 5): closing a LIBERO scene's GL context or writing a checkpoint on a loaded
# machine takes longer. ``sigterm_timeout:=`` / ``sigkill_timeout:=`` override it.
STOP_TIMEOUT = '20'
ARGUMENTS = (
    # name, description (the config's default is the launch file's own)
    ('model_path', "replaces the policy's model_path ('' keeps the config's)"),
    ('runs_root', "parent of the run directory ('': the config's, or "
     '$ROS_HOME/tgrpo_ros/runs)'),
    ('run_dir', "this run's directory ('': a new one under runs_root); an existing one is "
     'reused, e.g. to resume'),
)


def signal_without_reaping():
    """
    Make asyncio signal its child processes with ``os.kill``, never through ``Popen``.

    launch stops a node with the asyncio transport's ``send_signal``. Before CPython's
    fix for gh-87744 (PR 121126, merged for Python 3.13), that calls
    ``Popen.send_signal``, which polls first: ``waitpid`` in the event loop's thread.
    When the node has just exited (a terminal's Ctrl-C reaches every process of the
    group, and launch then signals each one), that poll can reap it before asyncio's
    child watcher does; the watcher then finds nothing and reports exit code 255 ("Unknown
    child process pid"). A node that exited 0 was reported dead, and the launch exited 1
    (a fresh-clone run of test_ctrl_c_stops_the_training_launch_cleanly). This does
    what the fix does: signal the pid directly, and not at all once the exit is known.
    Idempotent; nothing on Windows, where there is no child watcher.
    """
    import asyncio.base_subprocess as base_subprocess
    import signal

    transport = base_subprocess.BaseSubprocessTransport
    if os.name != 'posix' or getattr(transport.send_signal, 'tgrpo_ros', False):
        return

    def send_signal(self, sig):
        self._check_proc()
        if self._returncode is not None:
            return  # reaped: the pid may belong to another process by now
        try:
            os.kill(self._proc.pid, sig)
        except ProcessLookupError:
            pass

    send_signal.tgrpo_ros = True
    transport.send_signal = send_signal
    transport.terminate = lambda self: self.send_signal(signal.SIGTERM)
    transport.kill = lambda self: self.send_signal(signal.SIGKILL)


def installed_config(config_file):
    """Return the path of ``config/<config_file>`` in this package's share directory."""
    from ament_index_python.packages import get_package_share_directory
    return os.path.join(get_package_share_directory(graph.PACKAGE), 'config', config_file)


class GraphExit:
    """
    How a graph ends under ``ros2 launch``: one shutdown, an exit status that tells the truth.

    * The first node exit ends the launch, with ONE ``Shutdown`` event: launch_ros's ROS
      adapter (started for a lifecycle node) shuts down on each such event and raises
      "Cannot shutdown a ROS adapter that is not running" on a second one. Exits while the
      launch is already shutting down (Ctrl-C, or after the first exit) emit nothing.
    * The launch exits 0 only when nothing failed: the finisher (the learner) exited 0,
      or, in a deploy graph, every node exited 0 after Ctrl-C. A node that exits
      otherwise (it died, or the learner stopped before its updates) gives one line that
      names it, and the launch exits 1, as ``tgrpo_launch`` does. The status is set through
      the event loop's exception handler, the only hook by which ``LaunchService.run``
      returns non-zero; it prints just that line.
    """

    def __init__(self, finisher=None):
        """``finisher``: the full name of the node whose exit 0 ends the run successfully."""
        self.finisher = finisher
        self.shutdown_emitted = False
        self.failed = False

    def on_exit(self, full_name, event, context):
        """Handle the exit of node ``full_name``; return the actions to run (a Shutdown once)."""
        import asyncio

        from launch.actions import EmitEvent
        from launch.events import Shutdown
        import launch.logging

        code = event.returncode
        stopping = context.is_shutdown or self.shutdown_emitted
        finished = full_name == self.finisher and code == 0
        if code != 0 and not self.failed:
            self.failed = True
            line = f'tgrpo_ros: {full_name} exited with code {code}'
            if full_name == self.finisher:
                line += ' before all its updates were done'
            line += ' while the graph was stopping' if stopping else ': stopping the graph'
            asyncio.get_running_loop().call_exception_handler({'message': line + ' (exit 1)'})
        elif finished:
            launch.logging.get_logger('tgrpo_ros').info(
                f'{full_name} finished: stopping the graph')
        if stopping:
            return None
        self.shutdown_emitted = True
        return [EmitEvent(event=Shutdown(reason=f'{full_name} exited with code {code}'))]


def node_actions(context):
    """Plan the run from the launch arguments; return one Node (and exit handler) per node."""
    from launch.actions import RegisterEventHandler
    from launch.event_handlers import OnProcessExit
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
    # The run directory holds what tgrpo_launch leaves: logs/params/ (one params file per
    # node) and the nodes' ROS log files in logs/ (ROS_LOG_DIR; their screen output stays
    # in launch's own log, $ROS_HOME/log/<time>/launch.log).
    graph.write_params_files(run.nodes, os.path.join(run.log_dir, 'params'))
    finisher = next((n.full_name for n in run.nodes if n.executable == 'learner'), None)
    ending = GraphExit(finisher)
    actions = []
    for spec in run.nodes:
        action = LifecycleNode if spec.lifecycle else Node
        node = action(package=spec.package, executable=spec.executable, name=spec.name,
                      namespace=spec.namespace or '', parameters=[spec.parameters],
                      remappings=list(spec.remaps.items()), output='screen',
                      additional_env={'ROS_LOG_DIR': run.log_dir},
                      sigterm_timeout=LaunchConfiguration('sigterm_timeout',
                                                          default=STOP_TIMEOUT),
                      sigkill_timeout=LaunchConfiguration('sigkill_timeout',
                                                          default=STOP_TIMEOUT))
        actions.append(node)
        actions.append(RegisterEventHandler(OnProcessExit(
            target_action=node,
            on_exit=lambda event, context, name=spec.full_name: ending.on_exit(
                name, event, context))))
    return actions


def launch_description(config_file, what):
    """Declare ``config`` (default: the installed ``config_file``), the rest, the graph."""
    from launch import LaunchDescription
    from launch.actions import DeclareLaunchArgument, OpaqueFunction

    signal_without_reaping()  # this runs in the launch process, before any node starts
    return LaunchDescription(
        [DeclareLaunchArgument('config', default_value=installed_config(config_file),
                               description=f'{what} configuration (YAML)')]
        + [DeclareLaunchArgument(name, default_value='', description=text)
           for name, text in ARGUMENTS]
        + [OpaqueFunction(function=node_actions)])
