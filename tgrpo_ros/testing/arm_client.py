"""
Drive and watch the arm nodes from a test: feed camera, pose and actions; record commands.

``ArmProbe`` plays the camera, the arm driver's pose and the policy server
towards a ``safety_controller`` (each feed can be switched off to stall it),
and records every twist, gripper command and status that comes back, with
its arrival time. Used by test/test_arm_nodes.py.
"""

import json
import math

import numpy as np

from tgrpo_ros.nodes import messages
from tgrpo_ros.nodes.services import QUERY_RESEND

TRANSITIONS = {'configure': 1, 'cleanup': 2, 'activate': 3, 'deactivate': 4}  # lifecycle_msgs


class ArmProbe:
    """Feeds a safety controller from a RosClient and records what it publishes."""

    def __init__(self, ros_client, rate_hz=20.0, position=(0.5, 0.0, 0.3),
                 action=(0.2, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0), pose_frame='world', namespace=''):
        """
        Create the publishers, subscriptions and the feed timer (``rate_hz``).

        ``namespace`` is the controller's (its relative inputs resolve inside it).
        """
        from geometry_msgs.msg import PoseStamped, TwistStamped
        from lifecycle_msgs.srv import ChangeState, GetState
        from rcl_interfaces.srv import SetParameters
        from sensor_msgs.msg import Image, JointState
        from std_msgs.msg import Bool, Float64MultiArray, String
        from std_srvs.srv import Trigger

        from tgrpo_ros.nodes import topics
        from tgrpo_ros.nodes import arm_topics

        self.ros = ros_client
        node = ros_client.node
        namespace = namespace.rstrip('/')
        controller = namespace + '/safety_controller'
        self.namespace = namespace
        self.position = list(position)
        self.action = list(action)
        self.pose_frame = pose_frame
        self.policy = None  # optional callable: time (s) -> action [7], asked at each feed
        self.feed = {'camera': True, 'pose': True, 'action': True}
        self.last_sent = {'camera': None, 'pose': None, 'action': None}  # s, node clock
        self.last_image_stamp = None  # ns
        self.image = np.zeros((8, 8, 3), dtype=np.uint8)
        record = topics.reliable_qos(1000)
        self.records = {}
        self.subs = []
        for key, msg_type, topic in (
                ('twist', TwistStamped, arm_topics.TWIST_TOPIC),
                ('gripper', Float64MultiArray, arm_topics.GRIPPER_TOPIC),
                ('dry_twist', TwistStamped, controller + '/dry_run/delta_twist_cmds'),
                ('dry_gripper', Float64MultiArray, controller + '/dry_run/gripper_commands')):
            self.records[key] = []
            self.subs.append(node.create_subscription(
                msg_type, topic, lambda msg, key=key: self.records[key].append(
                    (self.now(), msg)), record))
        self.status = []
        self.subs.append(node.create_subscription(
            String, controller + '/status', lambda msg: self.status.append(json.loads(msg.data)),
            arm_topics.STATUS_QOS))
        self.camera_pub = node.create_publisher(Image, namespace + '/' + arm_topics.CAMERA_TOPIC,
                                                arm_topics.SENSOR_QOS)
        self.pose_pub = node.create_publisher(PoseStamped, namespace + '/' + arm_topics.POSE_TOPIC,
                                              arm_topics.SENSOR_QOS)
        self.action_pub = node.create_publisher(JointState,
                                                namespace + '/' + arm_topics.ACTION_TOPIC,
                                                topics.ACTION_QOS)
        self.estop_pub = node.create_publisher(Bool, arm_topics.ESTOP_TOPIC, arm_topics.ESTOP_QOS)
        self.change_state = node.create_client(ChangeState, controller + '/change_state')
        self.get_state = node.create_client(GetState, controller + '/get_state')
        self.reset_client = node.create_client(Trigger, controller + '/reset')
        self.set_params = node.create_client(SetParameters, controller + '/set_parameters')
        self._types = {'PoseStamped': PoseStamped, 'Bool': Bool}
        self.timer = node.create_timer(1.0 / rate_hz, self.feed_callback)

    def now(self):
        """Return the test node's clock in seconds (the same clock as the controller's)."""
        return self.ros.node.get_clock().now().nanoseconds * 1e-9

    # ------------------------------------------------------------------ feeding
    def feed_callback(self):
        """Publish a camera frame, a pose and an action answering the newest frame."""
        now_msg = self.ros.node.get_clock().now()
        now = now_msg.nanoseconds * 1e-9
        if self.feed['camera']:
            self.last_image_stamp = now_msg.nanoseconds
            self.camera_pub.publish(messages.numpy_to_image(self.image,
                                                            stamp=self.last_image_stamp))
            self.last_sent['camera'] = now
        if self.feed['pose']:
            pose = self._types['PoseStamped']()
            pose.header.stamp = now_msg.to_msg()
            pose.header.frame_id = self.pose_frame
            pose.pose.position.x, pose.pose.position.y, pose.pose.position.z = self.position
            pose.pose.orientation.w = 1.0
            self.pose_pub.publish(pose)
            self.last_sent['pose'] = now
        if self.feed['action'] and self.last_image_stamp is not None:
            if self.policy is not None:
                self.action = list(self.policy(now))
            self.publish_action(self.action, self.last_image_stamp)
            self.last_sent['action'] = now

    def publish_action(self, action, image_stamp_ns):
        """Publish one policy action as the policy server encodes it."""
        from std_msgs.msg import Header

        header = Header()
        header.stamp = messages.ns_to_stamp(image_stamp_ns)
        self.action_pub.publish(messages.encode_action(
            header, action, [31872] * 7, [-1.0] * 7, 0, 'test', batch_size=1))

    def follow_camera(self, topic=None):
        """Answer the frames of another camera (sim_arm) instead of publishing our own."""
        from sensor_msgs.msg import Image

        from tgrpo_ros.nodes import arm_topics

        self.feed['camera'] = False
        self.feed['pose'] = False
        topic = topic or self.namespace + '/' + arm_topics.CAMERA_TOPIC

        def frame(msg):
            self.last_image_stamp = messages.stamp_to_ns(msg.header.stamp)
        self.subs.append(self.ros.node.create_subscription(Image, topic, frame,
                                                           arm_topics.SENSOR_QOS))

    def estop(self, engaged):
        """Publish the e-stop input; return the time it was sent (s)."""
        sent = self.now()
        self.estop_pub.publish(self._types['Bool'](data=bool(engaged)))
        return sent

    # ------------------------------------------------------------------ services
    def transition(self, name, timeout=30.0):
        """Ask for lifecycle transition ``name``; return whether it succeeded."""
        from lifecycle_msgs.srv import ChangeState

        request = ChangeState.Request()
        request.transition.id = TRANSITIONS[name]
        return self.ros.call(self.change_state, request, timeout).success

    def lifecycle_state(self, timeout=30.0):
        """Return the controller's lifecycle state label ('unconfigured', 'active', ...)."""
        from lifecycle_msgs.srv import GetState

        return self.ros.call(self.get_state, GetState.Request(), timeout,
                             resend_every=QUERY_RESEND).current_state.label

    def reset(self, timeout=30.0):
        """Call ~/reset; return (success, message)."""
        from std_srvs.srv import Trigger

        response = self.ros.call(self.reset_client, Trigger.Request(), timeout)
        return response.success, response.message

    def set_parameters(self, timeout=30.0, **values):
        """Set controller parameters; return the per-parameter results."""
        from rcl_interfaces.srv import SetParameters
        from rclpy.parameter import Parameter

        request = SetParameters.Request()
        request.parameters = [Parameter(name, value=value).to_parameter_msg()
                              for name, value in values.items()]
        return self.ros.call(self.set_params, request, timeout,
                             resend_every=QUERY_RESEND).results

    # ------------------------------------------------------------------ records
    def wait_for_controller(self, timeout=60.0):
        """Wait until the controller's lifecycle services answer and it hears the feeds."""
        self.ros.wait_for_service(self.change_state, timeout)
        self.ros.wait_for_service(self.get_state, timeout)

    def twists(self, key='dry_twist', since=None):
        """Return [(stamp s, linear [3], angular [3], frame_id)] of recorded twists."""
        out = []
        for _, msg in self.records[key]:
            stamp = messages.stamp_to_ns(msg.header.stamp) * 1e-9
            if since is not None and stamp < since:
                continue
            t = msg.twist
            out.append((stamp, np.array([t.linear.x, t.linear.y, t.linear.z]),
                        np.array([t.angular.x, t.angular.y, t.angular.z]),
                        msg.header.frame_id))
        return out

    def wait_for_twist(self, predicate, key='dry_twist', since=None, timeout=10.0,
                       what='a twist'):
        """Spin until a twist stamped after ``since`` satisfies ``predicate``; return it."""
        found = []

        def check():
            found[:] = [tw for tw in self.twists(key, since) if predicate(tw)]
            return bool(found)
        self.ros.spin_until(check, timeout, what)
        return found[0]

    def latest_status(self):
        """Return the newest status dict (None before any)."""
        return self.status[-1] if self.status else None


def is_zero(twist):
    """Return True for a recorded twist whose linear and angular parts are zero."""
    return not np.any(twist[1]) and not np.any(twist[2])


def is_finite(twist):
    """Return True when every component of a recorded twist is finite."""
    return all(math.isfinite(v) for v in list(twist[1]) + list(twist[2]))
