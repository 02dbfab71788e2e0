"""A minimal node that republishes strings with a prefix; exercises the test harness."""

from rcl_interfaces.msg import ParameterDescriptor
from rclpy.node import Node
from std_msgs.msg import String

from tgrpo_ros.nodes.node_main import run_node


class EchoNode(Node):
    """Republish ``input`` on ``output`` with the ``prefix`` parameter prepended."""

    def __init__(self):
        """Declare the parameter and wire the topics."""
        super().__init__('echo')
        self.prefix = self.declare_parameter(
            'prefix', '', ParameterDescriptor(description='text put before each echo')).value
        self.publisher = self.create_publisher(String, 'output', 10)
        self.subscription = self.create_subscription(String, 'input', self.input_callback, 10)

    def input_callback(self, msg):
        """Echo one message."""
        self.publisher.publish(String(data=self.prefix + msg.data))


def main(args=None):
    """
    Run the echo node until interrupted, exit 0: as every tgrpo_ros node runs.

    rclpy's own signal handler shut the context down while the executor built its
    wait set, and the node exited 1 with RCLError (a CI run); ``run_node`` takes
    the signal itself and ends the spin cleanly.
    """
    raise SystemExit(run_node(EchoNode, 'echo', args))


if __name__ == '__main__':
    main()
