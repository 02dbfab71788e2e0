"""
safety_controller: a managed node between the policy server and MoveIt Servo.

It turns the newest policy action (``action``, sensor_msgs/JointState from the
policy server) into ``geometry_msgs/TwistStamped`` commands for MoveIt Servo's
``/servo_node/delta_twist_cmds`` at ``control_rate_hz`` (fresh stamp,
``frame_id`` from a parameter) and ``std_msgs/Float64MultiArray`` gripper
commands for a ros2_control forward command controller, through the safety
filter of ``tgrpo_ros.arm.safety``: speed, acceleration and workspace limits,
watchdogs on the camera (``camera/image``), the action and the end-effector pose
(``ee_pose``, which must be in ``frame_id``), and a latched e-stop (``/estop``,
std_msgs/Bool, heard from reliable and best-effort publishers alike; optionally a
dead-man input; reset with the ``~/reset`` std_srvs/Trigger service once released,
which sends a zero twist at once).

Lifecycle (rclpy.lifecycle): the ArmConfig parameters are read and checked on
``configure``; commands flow only while ``active``; ``deactivate`` sends one zero
twist and stops. With ``dry_run`` (the default) the commands go to
``~/dry_run/delta_twist_cmds`` and ``~/dry_run/gripper_commands`` and nothing is
published on the arm's topics. The e-stop input, the reset service and the
status (``~/status`` JSON and ``/diagnostics``) work in every state.

Bad input (docs/faults.md, "Bad input"): an action or pose that
``messages.decode_action`` / ``decode_pose`` refuses (malformed, non-finite or
out-of-range numbers), one stamped more than ``max_clock_skew`` ahead, a pose in
another frame, and a refused parameter change are logged and counted per input
in the status (``bad_input``: ``action``, ``pose``, ``parameters``;
``tgrpo_ros.nodes.diagnostics``); a refused action also zeroes the arm until a
valid one arrives.

``moveit_msgs`` and ``control_msgs`` are not on PyPI: where ``moveit_msgs`` is
installed, activation (not in dry run) also asks Servo for twist commands
through ``servo_command_type_service``. See docs/deploy.md.
"""

from dataclasses import dataclass
import sys

from geometry_msgs.msg import PoseStamped, TwistStamped
from rcl_interfaces.msg import SetParametersResult
from rclpy.duration import Duration
from rclpy.lifecycle import LifecycleNode, TransitionCallbackReturn
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Bool, Float64MultiArray
from std_srvs.srv import Trigger

from tgrpo_ros.arm import ArmConfig, SafetyFilter
from tgrpo_ros.nodes import arm_topics, messages, topics
from tgrpo_ros.nodes.diagnostics import BadInputs, StatusReporter
from tgrpo_ros.nodes.node_main import run_node
from tgrpo_ros.nodes.params import declare_config, read_config
from tgrpo_ros.options import check_range, option

try:  # MoveIt is not on PyPI
    from moveit_msgs.srv import ServoCommandType
except ImportError:  # pragma: no cover - depends on the install
    ServoCommandType = None


@dataclass
class SafetyControllerConfig:
    """The controller's own parameters (the safety limits: ``tgrpo_ros.arm.ArmConfig``)."""

    frame_id: str = option(
        'panda_link0', 'Frame of the twist commands (header.frame_id); the policy deltas are '
        'in the robot base frame. Read on configure.', read_only=False)
    diagnostics_rate_hz: float = option(
        2.0, 'Rate of ~/status and /diagnostics; read once at start.', unit='Hz')
    servo_command_type_service: str = option(
        arm_topics.SERVO_COMMAND_TYPE_SERVICE,
        "MoveIt Servo's switch_command_type service, called with TWIST on activation (not in "
        "dry run) where moveit_msgs is installed; '' disables.", read_only=False)

    def __post_init__(self):
        """Reject impossible values, quoting them."""
        for name in ('frame_id', 'servo_command_type_service'):
            if not isinstance(getattr(self, name), str):
                raise ValueError(f'{name} must be a string, got {getattr(self, name)!r}')
        check_range('diagnostics_rate_hz', self.diagnostics_rate_hz, 0.0, low_open=True)
        self.diagnostics_rate_hz = float(self.diagnostics_rate_hz)


INPUTS = ('action', 'pose', 'parameters')  # counted when bad
FINAL_ZERO_ACK_TIMEOUT = 1.0  # s, the most shutdown waits for the final zero twist's delivery


def _seconds(stamp):
    return messages.stamp_to_ns(stamp) * 1e-9


class SafetyController(LifecycleNode):
    """Policy actions -> limited Servo twists and gripper commands, as a managed node."""

    def __init__(self):
        """Declare the parameters; wire the e-stop, reset and status (alive in every state)."""
        super().__init__('safety_controller')
        # Dynamic typing: YAML may write 1 for 1.0; ArmConfig checks and converts the values.
        # ValueError: bad parameters at start.
        config = declare_config(self, ArmConfig, dynamic_typing=True)
        self.node_config = declare_config(self, SafetyControllerConfig, dynamic_typing=True)
        self.safety = SafetyFilter(config, frame_id=self.node_config.frame_id)
        self.add_on_set_parameters_callback(self.parameters_callback)
        self.lifecycle_state = 'unconfigured'
        self.frame_id = self.node_config.frame_id
        self.active_entities = []  # publishers, subscriptions, timer made by configure
        self.twist_pub = self.gripper_pub = self.control_timer = None
        self.last_reasons = None
        self.messages_dropped = 0  # malformed actions and poses
        self.bad_inputs = BadInputs(INPUTS)

        # Two readers: one gets the latched state of reliable transient-local publishers,
        # the other (best effort, volatile) matches every publisher (arm_topics).
        self.estop_subs = [
            self.create_subscription(Bool, arm_topics.ESTOP_TOPIC, self.estop_callback, qos)
            for qos in (arm_topics.ESTOP_LATCHED_SUB_QOS, arm_topics.ESTOP_ANY_SUB_QOS)]
        self.reset_srv = self.create_service(Trigger, arm_topics.RESET_SERVICE,
                                             self.reset_callback)
        self.reporter = StatusReporter(self, self.status, self.bad_inputs,
                                       period=1.0 / self.node_config.diagnostics_rate_hz)
        if self.reporter.diagnostics_publisher is None:
            self.get_logger().warning(
                'diagnostic_msgs is not installed (pip install ros-jazzy-diagnostic-msgs): '
                'no /diagnostics; the same status goes to ~/status as JSON')
        self.get_logger().info('unconfigured; configure and activate me through the lifecycle '
                               'services (dry_run is read on configure)')

    # ------------------------------------------------------------------ parameters
    def parameters_callback(self, params):
        """Reject a parameter change that would make an invalid configuration."""
        changes = {p.name: p.value for p in params}
        try:
            read_config(self, ArmConfig, changes)
            read_config(self, SafetyControllerConfig, changes)
        except (TypeError, ValueError) as error:
            self.bad_input('parameters', f'refused parameters {sorted(changes)}: {error}')
            return SetParametersResult(successful=False, reason=str(error))
        return SetParametersResult(successful=True)

    def now(self):
        """Return the node clock in seconds (the clock of every watchdog)."""
        return self.get_clock().now().nanoseconds * 1e-9

    # ------------------------------------------------------------------ lifecycle
    def on_configure(self, state):
        """Read and check the parameters; create the command publishers and inputs."""
        try:
            config = read_config(self, ArmConfig)
            self.node_config = read_config(self, SafetyControllerConfig)
        except (TypeError, ValueError) as error:
            self.get_logger().error(f'configure failed: {error}')
            return TransitionCallbackReturn.FAILURE
        old = self.safety
        self.safety = SafetyFilter(config, frame_id=self.node_config.frame_id)
        self.safety.carry_over(old)  # the e-stop latch, and the last twist to ramp from
        self.frame_id = self.node_config.frame_id
        lever = config.rotation_lever_arm
        narrow = [axis for axis, low, high in zip('xyz', config.workspace_min,
                                                  config.workspace_max)
                  if lever > 0 and high - low <= 2 * lever]
        if narrow:
            self.get_logger().warning(
                f'the workspace box is at most 2 x rotation_lever_arm ({lever} m) wide along '
                f'{", ".join(narrow)}: rotation is never allowed (it is zeroed within the lever '
                'of a wall)')
        if config.dry_run:
            twist_topic, gripper_topic = (arm_topics.DRY_RUN_TWIST_TOPIC,
                                          arm_topics.DRY_RUN_GRIPPER_TOPIC)
        else:
            twist_topic, gripper_topic = arm_topics.TWIST_TOPIC, arm_topics.GRIPPER_TOPIC
        self.twist_pub = self.create_lifecycle_publisher(TwistStamped, twist_topic,
                                                         arm_topics.COMMAND_QOS)
        self.gripper_pub = self.create_lifecycle_publisher(Float64MultiArray, gripper_topic,
                                                           arm_topics.COMMAND_QOS)
        self.active_entities = [
            self.create_subscription(JointState, arm_topics.ACTION_TOPIC, self.action_callback,
                                     topics.ACTION_QOS),
            # Only the arrival matters: take the serialized bytes, skip decoding the pixels.
            self.create_subscription(Image, arm_topics.CAMERA_TOPIC, self.image_callback,
                                     arm_topics.SENSOR_QOS, raw=True),
            self.create_subscription(PoseStamped, arm_topics.POSE_TOPIC, self.pose_callback,
                                     arm_topics.SENSOR_QOS),
        ]
        self.control_timer = self.create_timer(config.period, self.control_callback)
        self.control_timer.cancel()
        self.lifecycle_state = 'inactive'
        self.get_logger().info(
            f"configured: {'DRY RUN, commands to ' if config.dry_run else 'LIVE, commands to '}"
            f'{self.twist_pub.topic_name} and {self.gripper_pub.topic_name} at '
            f'{config.control_rate_hz} Hz in frame {self.frame_id!r}')
        self.publish_status()
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state):
        """Start commanding: forget old actions, enable the publishers, start the timer."""
        self.safety.reset_motion()
        self.last_reasons = None
        result = super().on_activate(state)
        self.control_timer.reset()
        self.lifecycle_state = 'active'
        if not self.safety.config.dry_run:
            self._switch_servo_to_twist()
        self.get_logger().info('active')
        self.publish_status()
        return result

    def on_deactivate(self, state):
        """Send one zero twist, stop the timer and disable the publishers."""
        self.control_timer.cancel()
        self._publish_stop('deactivate')
        self.safety.reset_motion()
        self.lifecycle_state = 'inactive'
        self.get_logger().info('inactive: sent a zero twist')
        self.publish_status()
        return super().on_deactivate(state)

    def on_cleanup(self, state):
        """Drop the publishers, subscriptions and timer made by configure."""
        self._destroy_active_entities()
        self.lifecycle_state = 'unconfigured'
        self.publish_status()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state):
        """Zero the arm if it was commanding, then drop everything configure made."""
        if self.lifecycle_state == 'active':
            self.control_timer.cancel()
            self._publish_twist((0.0, 0.0, 0.0), (0.0, 0.0, 0.0))
        self._destroy_active_entities()
        self.lifecycle_state = 'finalized'
        return TransitionCallbackReturn.SUCCESS

    def _destroy_active_entities(self):
        for subscription in self.active_entities:
            self.destroy_subscription(subscription)
        self.active_entities = []
        if self.control_timer is not None:
            self.destroy_timer(self.control_timer)
        for publisher in (self.twist_pub, self.gripper_pub):
            if publisher is not None:
                self.destroy_lifecycle_publisher(publisher)
        self.twist_pub = self.gripper_pub = self.control_timer = None

    def _switch_servo_to_twist(self):
        name = self.get_parameter('servo_command_type_service').value  # may change any time
        if not name:
            return
        if ServoCommandType is None:
            self.get_logger().warning(
                f'moveit_msgs is not installed: call {name} (moveit_msgs/srv/ServoCommandType, '
                'command_type 1 = TWIST) yourself, or Servo ignores the twists')
            return
        client = self.create_client(ServoCommandType, name)
        if not client.service_is_ready():
            self.get_logger().warning(f'{name} is not available; Servo must be switched to '
                                      'TWIST commands before it moves')
            return
        future = client.call_async(ServoCommandType.Request(
            command_type=ServoCommandType.Request.TWIST))
        future.add_done_callback(lambda f: self.get_logger().info(
            f'{name}: success={getattr(f.result(), "success", None)}'))

    def destroy_node(self):
        """
        Send a last zero twist if still commanding (Ctrl-C, SIGTERM while active), then destroy.

        node_main.run_node keeps the context valid until here, whatever signals follow;
        waiting (at most FINAL_ZERO_ACK_TIMEOUT) for the reliable subscribers to
        acknowledge it lets the zero reach them before the participant goes away.
        """
        if self.lifecycle_state == 'active' and self.twist_pub is not None:
            try:
                self._publish_twist((0.0, 0.0, 0.0), (0.0, 0.0, 0.0))
                self.twist_pub.wait_for_all_acked(Duration(seconds=FINAL_ZERO_ACK_TIMEOUT))
            except Exception as error:  # noqa: B902 - e.g. an external shutdown came first
                self.get_logger().warning(f'could not send the final zero twist: {error}')
        super().destroy_node()

    # ------------------------------------------------------------------ inputs
    def action_callback(self, msg):
        """Hand a policy action and its image stamp to the filter; zero on a bad one."""
        try:
            reply = messages.decode_action(msg)
        except ValueError as error:
            self.messages_dropped += 1
            self.safety.invalidate_action()
            self.bad_input('action', f'refused an action, commanding zero until a valid one: '
                           f'{error}')
            return
        # A chunk [K, 7] and the policy's action_period (0: ArmConfig's) go to the queue.
        error = self.safety.observe_action(reply.actions, reply.stamp_ns * 1e-9, self.now(),
                                           action_period=reply.action_period)
        if error and 'ahead of the controller clock' in error:
            self.bad_input('action', error)
        elif error:
            self.get_logger().error(error, throttle_duration_sec=1.0)

    def image_callback(self, _serialized):
        """Record that a camera image arrived (its pixels are the policy's business)."""
        self.safety.observe_image(self.now())

    def pose_callback(self, msg):
        """Record the end-effector position, measured at its header stamp."""
        try:
            stamp_ns, frame_id, position, _ = messages.decode_pose(msg)
            self.safety.observe_pose(self.now(), position, stamp=stamp_ns * 1e-9,
                                     frame_id=frame_id)
        except ValueError as error:
            self.messages_dropped += 1
            self.bad_input('pose', f'dropped a pose: {error}')

    def bad_input(self, name, text):
        """Count a bad value of input ``name`` and log ``text`` (at most once a second)."""
        self.bad_inputs.count(name, text)
        self.get_logger().error(text, throttle_duration_sec=1.0)

    def estop_callback(self, msg):
        """Take every e-stop message (the latch is taken here); when it engages, zero at once."""
        was_latched = self.safety.estop_latched
        self.safety.set_estop(msg.data, self.now())
        if self.safety.estop_latched and not was_latched:
            self.get_logger().error('E-STOP engaged: commanding zero until reset')
            if self.lifecycle_state == 'active':
                self._publish_stop('estop')
            self.publish_status()

    def reset_callback(self, request, response):
        """Clear a latched e-stop (std_srvs/Trigger) if the e-stop input is released."""
        stamp = self.get_clock().now()
        response.success, response.message = self.safety.reset(stamp.nanoseconds * 1e-9)
        if response.success and self.lifecycle_state == 'active':
            self._publish_twist((0.0, 0.0, 0.0), (0.0, 0.0, 0.0), stamp)  # the reset's zero
        if response.success:  # rclpy binds one severity to each logging call site
            self.get_logger().info(f'reset: {response.message}')
        else:
            self.get_logger().warning(f'reset refused: {response.message}')
        self.publish_status()
        return response

    # ------------------------------------------------------------------ output
    def control_callback(self):
        """Run one filter tick and publish its twist (and gripper command)."""
        stamp = self.get_clock().now()  # the twist's stamp is the filter's time of the tick
        command = self.safety.tick(stamp.nanoseconds * 1e-9)
        self._publish_twist(command.linear, command.angular, stamp)
        if command.gripper is not None:
            self.gripper_pub.publish(Float64MultiArray(data=[float(command.gripper)]))
        stops = tuple(r for r in command.reasons if command.stopped)
        if stops != self.last_reasons:
            if stops:
                self.get_logger().warning(f'commanding zero: {", ".join(stops)}')
            elif self.last_reasons:
                self.get_logger().info('moving: every input is fresh')
            self.last_reasons = stops

    def _publish_stop(self, reason):
        """Publish a zero twist now, recorded by the filter as the last one sent."""
        stamp = self.get_clock().now()
        command = self.safety.stop(stamp.nanoseconds * 1e-9, reason)
        self._publish_twist(command.linear, command.angular, stamp)

    def _publish_twist(self, linear, angular, stamp=None):
        msg = TwistStamped()
        # Servo drops stale stamps. A filter's command carries the time the filter
        # computed it at, so the stamps measure exactly what its ramp allowed.
        msg.header.stamp = (stamp or self.get_clock().now()).to_msg()
        msg.header.frame_id = self.frame_id
        msg.twist.linear.x, msg.twist.linear.y, msg.twist.linear.z = (float(v) for v in linear)
        msg.twist.angular.x, msg.twist.angular.y, msg.twist.angular.z = (float(v)
                                                                         for v in angular)
        self.twist_pub.publish(msg)

    def status(self):
        """Return the status dict: lifecycle state, filter state, counters, level, message."""
        status = self.safety.status(self.now())
        status['lifecycle'] = self.lifecycle_state
        status['counters']['messages_dropped'] = self.messages_dropped
        level = 'OK'
        if status['state'] == 'estop':
            level = 'ERROR'
        elif status['lifecycle'] == 'active' and status['state'] != 'running':
            level = 'WARN'
        message = (f"{status['lifecycle']}, {status['state']}"
                   + (f" ({', '.join(status['stop_reasons'])})" if status['stop_reasons'] else '')
                   + (', dry run' if status['dry_run'] else ', LIVE'))
        return dict(status, level=level, message=message)

    def publish_status(self):
        """Publish ~/status (JSON) and, where available, /diagnostics, with the bad input."""
        self.reporter.publish()


def main(args=None):
    """Run the safety controller until interrupted."""
    return run_node(SafetyController, 'safety_controller', args)


if __name__ == '__main__':
    sys.exit(main())
