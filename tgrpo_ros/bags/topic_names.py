"""
The tgrpo_ros topic names a bag is read by (the same strings as ``nodes.topics``).

``nodes.topics`` also builds rclpy QoS profiles and so imports rclpy; the bag layer
needs only the names (test/test_bags.py checks that the two agree).
"""

from tgrpo_ros.names import normalize_namespace

CAMERA_TOPIC = 'camera/image'        # sensor_msgs/Image, per client namespace
INSTRUCTION_TOPIC = 'instruction'    # std_msgs/String, per client namespace
ACTION_TOPIC = 'action'              # sensor_msgs/JointState, per client namespace
EPISODE_TOPIC = '/tgrpo/episodes'    # std_msgs/UInt8MultiArray
BRIDGE_EPISODE_DEPTH = 8             # the history depth a sim bridge offers its episodes with


def client_topic(namespace, topic):
    """Return the absolute name of per-client ``topic`` in ``namespace`` ('/sim0/action')."""
    if topic.startswith('/'):
        raise ValueError(f"client topic '{topic}' must be relative (no leading '/')")
    return normalize_namespace(namespace) + '/' + topic
