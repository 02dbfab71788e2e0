"""The ``main()`` shared by every node: init, spin, clean shutdown, exit status."""

import os

import rclpy
from rclpy.executors import ExternalShutdownException

from tgrpo_ros.nodes.params import refuse_undeclared


def spin_forever(node):
    """Spin until interrupted; a server node has no natural end."""
    rclpy.spin(node)
    return 0


def run_node(node_class, name, args=None, spin=spin_forever, interrupted_status=0):
    """
    Run ``node_class()`` with ``spin(node)`` and return the process exit status.

    A ValueError from the constructor is a bad parameter: it is logged as FATAL
    under ``name`` without a traceback and gives status 1. Ctrl-C or an external
    shutdown gives ``interrupted_status``, also when it lands in the middle of a
    callback that then fails to publish on the shut-down context.
    """
    # DDS discovery stays on this machine unless the caller chose otherwise (multi-host
    # deployments set ROS_AUTOMATIC_DISCOVERY_RANGE=SUBNET explicitly).
    os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
    rclpy.init(args=args)
    node = None
    try:
        try:
            node = node_class()
            refuse_undeclared(node)  # rclpy would keep a misspelt override silently
        except ValueError as error:
            rclpy.logging.get_logger(name).fatal(str(error))
            return 1
        return spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        return interrupted_status
    except Exception:  # noqa: B902 - only a failure caused by the shutdown is forgiven
        if node is not None and not rclpy.ok():
            return interrupted_status
        raise
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
