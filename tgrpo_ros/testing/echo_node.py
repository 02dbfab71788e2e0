"""A minimal node that republishes strings with a prefix; exercises the test harness."""

from rcl_interfaces.msg import ParameterDescriptor
import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from std_msgs.msg import String


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
    """Run the echo node until interrupted."""
    rclpy.init(args=args)
    node = EchoNode()
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == '__main__':
    main()
