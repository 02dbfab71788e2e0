"""
Topic names and QoS profiles of the arm deployment graph (docs/deploy.md).

Relative names resolve in the node's namespace and are meant to be remapped to
the arm's own topics (``-r ee_pose:=/franka/ee_pose``). MoveIt Servo and
ros2_control conventions: docs/references.md §6.

QoS choices
-----------
* Camera and end-effector pose: sensor-data QoS (best effort, keep last 5) on
  the subscriber side, which matches both best-effort drivers and reliable
  publishers; ``sim_arm`` publishes them best effort, as camera drivers do.
* sim_arm can publish its camera reliable (depth 2) for a subscriber that
  takes only reliable publishers.
* Twist and gripper commands: reliable, keep last 1. Only the newest command
  matters; a stale one must never be delivered late from a queue.
* E-stop: publish reliable, transient local (``ESTOP_QOS``): a controller that
  starts after the e-stop was pressed still gets the pressed state. The
  controller listens with two subscriptions of depth ``ESTOP_DEPTH`` (a burst
  of presses and releases is queued, never collapsed to its last message):
  reliable + transient local (gets the latched state of such publishers) and
  best effort + volatile, which matches every publisher, best effort or
  volatile ones included (a reliable or transient-local subscription matches
  neither). A reliable publisher's messages then arrive twice; latching is
  idempotent.
* Status and diagnostics: reliable, volatile, depth 10.
"""

from rclpy.qos import (DurabilityPolicy, HistoryPolicy, qos_profile_sensor_data, QoSProfile,
                       ReliabilityPolicy)

from tgrpo_ros.nodes.topics import reliable_qos

# Inputs of the safety controller (relative: remap them to the arm's topics).
ACTION_TOPIC = 'action'                 # sensor_msgs/JointState, see messages.encode_action
CAMERA_TOPIC = 'camera/image'           # sensor_msgs/Image; only its arrival is used
POSE_TOPIC = 'ee_pose'                  # geometry_msgs/PoseStamped, end effector
ESTOP_TOPIC = '/estop'                  # std_msgs/Bool, true = stop (latched)

# Outputs: MoveIt Servo's twist input and a ros2_control forward command controller.
TWIST_TOPIC = '/servo_node/delta_twist_cmds'        # geometry_msgs/TwistStamped
GRIPPER_TOPIC = '/gripper_controller/commands'      # std_msgs/Float64MultiArray
DRY_RUN_TWIST_TOPIC = '~/dry_run/delta_twist_cmds'  # the same messages when dry_run is true
DRY_RUN_GRIPPER_TOPIC = '~/dry_run/gripper_commands'
SERVO_COMMAND_TYPE_SERVICE = '/servo_node/switch_command_type'  # moveit_msgs ServoCommandType

# Reporting.
RESET_SERVICE = '~/reset'               # std_srvs/Trigger: clear a latched e-stop
# ~/status and /diagnostics: topics.NODE_STATUS_TOPIC and topics.DIAGNOSTICS_TOPIC, published
# by diagnostics.StatusReporter as for every node.

# sim_arm's extra outputs.
JOINT_STATES_TOPIC = 'joint_states'     # sensor_msgs/JointState of the Panda

SENSOR_QOS = qos_profile_sensor_data
COMMAND_QOS = reliable_qos(1)
ESTOP_QOS = reliable_qos(1, transient_local=True)  # latched: a late subscriber sees the stop
ESTOP_DEPTH = 100  # e-stop messages queued per subscription: no press is lost in a burst
ESTOP_LATCHED_SUB_QOS = reliable_qos(ESTOP_DEPTH, transient_local=True)
ESTOP_ANY_SUB_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=ESTOP_DEPTH,
                               reliability=ReliabilityPolicy.BEST_EFFORT,
                               durability=DurabilityPolicy.VOLATILE)
CAMERA_RELIABLE_QOS = reliable_qos(2)
STATUS_QOS = reliable_qos(10)
