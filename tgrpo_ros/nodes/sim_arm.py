"""
sim_arm: the LIBERO Panda behind the interface of a real arm with MoveIt Servo.

It stands in for the arm driver and MoveIt Servo in tests and demos:

* **Input**, with Servo's semantics: ``geometry_msgs/TwistStamped`` on
  ``/servo_node/delta_twist_cmds`` (its ``header.frame_id`` must be ``frame_id``)
  and ``std_msgs/Float64MultiArray`` on ``/gripper_controller/commands``. A twist
  whose stamp is older than ``command_timeout`` (Servo's incoming_command_timeout,
  0.1 s), or was more than that ahead of the clock when it came, is stale: the arm
  holds still. The gripper keeps its last command, as a
  forward command controller does.
* **Stepping**: one LIBERO control step (20 Hz, OSC pose deltas) per 50 ms of
  wall clock, or per ``50 ms / real_time_factor`` (a factor below 1 gives a slow
  machine more wall time per step). A step that falls behind is caught up (at
  most ``max_catch_up`` steps at once; beyond that the time is skipped and
  counted). Each step takes the **mean** twist over the wall-clock span it
  stands for (every command held from its stamp until the next one, or until it
  is stale: ``tgrpo_ros.arm.execution.TwistHistory``), as an arm that follows
  Servo at 100 Hz integrates it; a short command (one 50 ms action of
  ``action_execution: once``) moves the arm by its share of the step.
* **Conversion**: LIBERO action = twist / scale per axis, clipped to [-1, 1]
  (``tgrpo_ros.arm.command.twist_to_libero``), the inverse of the safety
  controller's action -> twist scale; keep ``linear_scale``/``angular_scale`` equal
  on both nodes and an unclipped policy action reaches LIBERO unchanged. The
  gripper command nearer ``gripper_close`` closes (LIBERO +1), else opens (-1).
* **Output**: ``camera/image`` (sensor_msgs/Image rgb8, sensor-data QoS) at
  ``camera_rate_hz``: the agentview render rotated 180 degrees, i.e. the view
  LIBERO-trained policies saw before their resize and crop, so the policy server
  preprocesses it as a real camera (no rotation); ``ee_pose``
  (geometry_msgs/PoseStamped, world frame, m) and ``joint_states``
  (sensor_msgs/JointState, 7 arm + 2 finger joints), sensor-data QoS. Every
  simulated step publishes its pose stamped with the time the step stands for
  (50 ms apart), so the trajectory can be checked from the topic. ``~/status``
  (std_msgs/String JSON) and ``/diagnostics`` once a second
  (``tgrpo_ros.nodes.diagnostics``); ``~/reset`` (std_srvs/Trigger) puts the scene
  back to the initial state ``init_state_id`` (settable).
* **Bad input** (docs/faults.md, "Bad input"): a twist in another frame or with
  non-finite values, a component beyond ``TWIST_ABS_MAX`` (10 m/s or rad/s) or a
  negative stamp (the arm holds still), a malformed gripper command or one outside
  [gripper_close, gripper_open] (the last one holds) and a refused
  ``init_state_id`` are logged and counted in ``bad_input``
  (``twist``, ``gripper``, ``parameters``: since the node started; the per-episode
  ``rejected_*`` counters restart with ``~/reset``).
* **No episode end**: the scene steps for as long as the node runs. robosuite's
  horizon (``horizon``, default the env's 1000 steps = 50 s) is ignored; the first
  step past it is logged once per episode.
"""

from dataclasses import dataclass
import sys
import time
from typing import Tuple

from geometry_msgs.msg import PoseStamped, TwistStamped
import numpy as np
from rcl_interfaces.msg import SetParametersResult
from rclpy.node import Node
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Float64MultiArray
from std_srvs.srv import Trigger

from tgrpo_ros.arm import ArmConfig
from tgrpo_ros.arm.command import gripper_to_libero, LIBERO_OPEN, twist_to_libero
from tgrpo_ros.arm.execution import TwistHistory
from tgrpo_ros.nodes import arm_topics, messages
from tgrpo_ros.nodes.diagnostics import BadInputs, StatusReporter
from tgrpo_ros.nodes.node_main import run_node
from tgrpo_ros.nodes.params import declare_config
from tgrpo_ros.nodes.topics import reliable_qos
from tgrpo_ros.options import check_choice, check_range, option

STEP_PERIOD = 0.05  # s: LIBERO's control_freq is 20 Hz
TWIST_DEPTH = 1000  # twists kept while a step runs: 20 s of a 50 Hz controller
AGENTVIEW_IMAGE = 'agentview_image'  # robosuite observable of the front camera
INPUTS = ('twist', 'gripper', 'parameters')  # counted when bad
# m/s and rad/s: the largest twist component taken. A Panda's end effector moves
# at most 1.7 m/s and 2.5 rad/s; a larger value is a broken sender, not a command.
TWIST_ABS_MAX = 10.0
_ARM_DEFAULTS = ArmConfig().to_dict()

CAMERA_QOS = ('sensor_data', 'reliable')


@dataclass
class SimArmConfig:
    """Parameters of sim_arm (read once at start)."""

    suite: str = option('libero_object', 'LIBERO suite.')
    task_id: int = option(0, 'Task index within the suite.')
    init_state_id: int = option(
        0, 'Initial state the scene starts from, and returns to on ~/reset (settable: the '
        'next ~/reset uses the new value).', read_only=False)
    camera_size: int = option(128, 'Agentview render size (square): 128, 224 or 256.',
                              unit='px')
    camera_rate_hz: float = option(
        5.0, 'Rate of camera/image; each frame costs a render (~70-150 ms here), so keep it '
        'low on a CPU-only machine.', unit='Hz')
    multisample: bool = option(False, '4x multisample anti-aliasing of the render (slower).')
    command_timeout: float = option(
        0.1, "A twist older than this is stale: the arm holds still (MoveIt Servo's "
        'incoming_command_timeout).', unit='s')
    frame_id: str = option(
        'world', 'Frame of the end-effector pose, and the only twist frame accepted.')
    camera_frame_id: str = option('agentview', 'frame_id of the camera images.')
    camera_qos: str = option(
        'sensor_data', "'sensor_data' (best effort, as camera drivers publish) or 'reliable' "
        '(for a subscriber that only takes reliable publishers).')
    linear_scale: Tuple[float, ...] = option(
        tuple(_ARM_DEFAULTS['linear_scale']),
        'Twist per unit of LIBERO action; keep equal to the safety controller scale.',
        unit='m/s')
    angular_scale: Tuple[float, ...] = option(
        tuple(_ARM_DEFAULTS['angular_scale']),
        'Twist per unit of LIBERO action; keep equal to the safety controller scale.',
        unit='rad/s')
    gripper_open: float = option(_ARM_DEFAULTS['gripper_open'], 'Gripper command meaning open.')
    gripper_close: float = option(_ARM_DEFAULTS['gripper_close'],
                                  'Gripper command meaning closed.')
    max_catch_up: int = option(4, 'Most steps run at once to catch up with the wall clock.')
    real_time_factor: float = option(
        1.0, 'Simulated time per wall-clock time: one 50 ms step every 50 ms / factor of wall '
        "clock. Twists act over wall-clock time, so below 1 set the controller's "
        'action_period to 0.05 / factor for actions to move as in training.')
    horizon: int = option(
        0, "robosuite's episode horizon (0: the env's own, 1000 steps = 50 s). The simulated "
        'arm ignores it, as an arm has no episode end: stepping past it goes on and is logged '
        'once per episode. A small value shows that quickly.', unit='steps')

    def __post_init__(self):
        """Check the values (scales and gripper values as the controller's ArmConfig does)."""
        arm = ArmConfig(linear_scale=self.linear_scale, angular_scale=self.angular_scale,
                        gripper_open=self.gripper_open, gripper_close=self.gripper_close)
        self.linear_scale, self.angular_scale = arm.linear_scale, arm.angular_scale
        self.gripper_open, self.gripper_close = arm.gripper_open, arm.gripper_close
        for name in ('camera_rate_hz', 'command_timeout', 'real_time_factor'):
            check_range(name, getattr(self, name), 0.0, low_open=True)
            setattr(self, name, float(getattr(self, name)))
        check_range('max_catch_up', self.max_catch_up, 1)
        check_range('horizon', self.horizon, 0)
        check_choice('camera_qos', self.camera_qos, CAMERA_QOS)
        check_range('init_state_id', self.init_state_id, 0)


class SimArm(Node):
    """One LIBERO scene stepped in real time from Servo-style twist commands."""

    def __init__(self):
        """Read the parameters, create the scene, wire the topics, start the clock."""
        super().__init__('sim_arm')
        # Dynamic typing: YAML may write 1 for 1.0; SimArmConfig checks the values.
        self.config = c = declare_config(self, SimArmConfig, dynamic_typing=True)
        self.linear_scale, self.angular_scale = c.linear_scale, c.angular_scale
        self.gripper_values = (c.gripper_open, c.gripper_close)
        self.camera_period = 1.0 / c.camera_rate_hz  # s
        self.command_timeout = c.command_timeout  # s
        self.frame_id = str(c.frame_id)
        self.camera_frame_id = str(c.camera_frame_id)
        self.max_catch_up = int(c.max_catch_up)
        self.step_wall = STEP_PERIOD / c.real_time_factor  # s of wall clock per step
        self.history = TwistHistory(self.command_timeout)  # twists by stamp, for the means
        p = {name: getattr(c, name) for name in (
            'suite', 'task_id', 'init_state_id', 'camera_size', 'camera_rate_hz', 'multisample')}

        from tgrpo_ros.sim import LiberoEnv  # heavy: mujoco, robosuite, libero
        start = time.perf_counter()
        self.env = LiberoEnv(suite=p['suite'], task_id=int(p['task_id']),
                             camera_size=int(p['camera_size']),
                             multisample=bool(p['multisample']), max_steps=10 ** 9)
        obs = self.env.reset(int(p['init_state_id']))
        self.raw_env = self.env.raw_env
        self.inner = self.raw_env.env
        self.inner.modify_observable(AGENTVIEW_IMAGE, 'enabled', False)  # render on demand
        # An arm has no episode end: robosuite would raise 'executing action in terminated
        # episode' on the first step past its horizon (1000 steps, 50 s).
        if c.horizon:
            self.inner.horizon = int(c.horizon)
        self.inner.ignore_done = True
        self.past_horizon = False  # logged once per episode
        robot = self.inner.robots[0]
        self.eef_site = robot.eef_site_id  # the grip site, robot0_eef_pos in observations
        self.eef_body = robot.robot_model.eef_name  # its orientation, robot0_eef_quat
        self.joint_names = list(robot.robot_joints) + list(robot.gripper.joints)
        self.joint_indexes = list(robot._ref_joint_pos_indexes) \
            + list(robot._ref_gripper_joint_pos_indexes)
        self.instruction = obs['instruction']

        self.twist = None          # newest TwistStamped
        self.gripper = LIBERO_OPEN  # LIBERO gripper action, held
        self.counters = {'steps': 0, 'held_steps': 0, 'frames': 0, 'skipped_steps': 0,
                         'rejected_twists': 0, 'rejected_gripper_commands': 0}
        self.success = False
        self.bad_frames = set()
        self.bad_inputs = BadInputs(INPUTS)  # since the node started, not reset

        # Every command, not only the newest: a step integrates those of its span, and a
        # busy step (a render, catching up) must not drop the ones that came meanwhile.
        self.twist_sub = self.create_subscription(
            TwistStamped, arm_topics.TWIST_TOPIC, self.twist_callback, reliable_qos(TWIST_DEPTH))
        self.create_subscription(Float64MultiArray, arm_topics.GRIPPER_TOPIC,
                                 self.gripper_callback, arm_topics.COMMAND_QOS)
        camera_qos = {'sensor_data': arm_topics.SENSOR_QOS,
                      'reliable': arm_topics.CAMERA_RELIABLE_QOS}
        self.image_pub = self.create_publisher(Image, arm_topics.CAMERA_TOPIC,
                                               camera_qos[c.camera_qos])
        self.pose_pub = self.create_publisher(PoseStamped, arm_topics.POSE_TOPIC,
                                              arm_topics.SENSOR_QOS)
        self.joint_pub = self.create_publisher(JointState, arm_topics.JOINT_STATES_TOPIC,
                                               arm_topics.SENSOR_QOS)
        self.reset_srv = self.create_service(Trigger, '~/reset', self.reset_callback)
        self.init_state_id = int(p['init_state_id'])
        self.add_on_set_parameters_callback(self.parameters_callback)
        self.episodes = 0
        self.restart_clock()
        self.create_timer(self.step_wall / 2.0, self.clock_callback)
        self.reporter = StatusReporter(self, self.status, self.bad_inputs)
        self.get_logger().info(
            f"{p['suite']} task {p['task_id']} ({self.instruction!r}) init state "
            f"{p['init_state_id']} ready in {time.perf_counter() - start:.1f} s; camera "
            f"{p['camera_size']} px at {p['camera_rate_hz']} Hz, twists in {self.frame_id!r}")

    def restart_clock(self):
        """Make now step 0 of real time and publish the current state."""
        self.start_time = time.monotonic()  # s, wall clock of step 0
        self.start_ros_ns = self.get_clock().now().nanoseconds  # the same instant, ROS time
        self.next_frame = self.start_time
        stamp = messages.ns_to_stamp(self.start_ros_ns)
        self.publish_pose(stamp)
        self.publish_joints(stamp)

    def parameters_callback(self, params):
        """Accept an init_state_id of this task (used by the next ~/reset)."""
        for param in params:
            if param.name != 'init_state_id':
                continue
            count = self.env.num_init_states
            if isinstance(param.value, bool) or not isinstance(param.value, int) \
                    or not 0 <= param.value < count:
                reason = f'init_state_id must be an int in [0, {count}), got {param.value!r}'
                self.bad_input('parameters', f'refused a parameter change: {reason}')
                return SetParametersResult(successful=False, reason=reason)
        return SetParametersResult(successful=True)

    def reset_callback(self, request, response):
        """Put the scene back to its initial state (std_srvs/Trigger) and restart the clock."""
        start = time.perf_counter()
        self.init_state_id = int(self.get_parameter('init_state_id').value)
        try:
            self.env.reset(self.init_state_id)
        except Exception as error:  # noqa: B902 - report any simulator failure to the caller
            response.success, response.message = False, f'reset failed: {error}'
            self.get_logger().error(response.message)
            return response
        self.inner.modify_observable(AGENTVIEW_IMAGE, 'enabled', False)
        self.twist, self.gripper, self.success = None, LIBERO_OPEN, False
        self.history.clear()
        self.past_horizon = False
        for key in self.counters:
            self.counters[key] = 0
        self.episodes += 1
        self.restart_clock()
        response.success = True
        response.message = (f'reset to init state {self.init_state_id} in '
                            f'{time.perf_counter() - start:.2f} s')
        self.get_logger().info(response.message)
        return response

    # ------------------------------------------------------------------ inputs
    def twist_callback(self, msg):
        """
        Keep the newest twist in the accepted frame; hold still on a non-finite one.

        A twist stamped more than ``command_timeout`` ahead of the clock is stale too.
        """
        if msg.header.frame_id != self.frame_id:
            self.counters['rejected_twists'] += 1
            self.bad_inputs.count('twist', f'ignored a twist in frame {msg.header.frame_id!r}; '
                                  f'only {self.frame_id!r} is accepted')
            if msg.header.frame_id not in self.bad_frames:  # logged once per frame
                self.bad_frames.add(msg.header.frame_id)
                self.get_logger().error(f'ignoring twists in frame {msg.header.frame_id!r}; '
                                        f'only {self.frame_id!r} is accepted')
            return
        linear, angular = msg.twist.linear, msg.twist.angular
        values = [linear.x, linear.y, linear.z, angular.x, angular.y, angular.z]
        if not np.all(np.isfinite(values)) or np.max(np.abs(values)) > TWIST_ABS_MAX:
            self.counters['rejected_twists'] += 1
            self.twist = None  # Servo would refuse it too: hold still
            self.history.add(self.get_clock().now().nanoseconds, None)
            what = 'non-finite' if not np.all(np.isfinite(values)) else \
                f'absurd (a component beyond {TWIST_ABS_MAX:g} m/s or rad/s)'
            self.bad_input('twist', f'holding still: {what} twist {values}')
            return
        try:
            stamp_ns = messages.checked_stamp_ns(msg.header.stamp, 'twist')
        except ValueError as error:
            self.counters['rejected_twists'] += 1
            self.twist = None
            self.history.add(self.get_clock().now().nanoseconds, None)
            self.bad_input('twist', f'holding still: {error}')
            return
        # A stamp ahead of the clock would never grow old: the arm would follow that
        # twist until the clock passed it, however long the sender has been gone.
        now_ns = self.get_clock().now().nanoseconds
        ahead = (stamp_ns - now_ns) * 1e-9  # s
        if ahead > self.command_timeout:
            self.counters['rejected_twists'] += 1
            self.twist = None  # stale: hold still
            self.history.add(now_ns, None)  # from now on (the stamp is not to be trusted)
            self.bad_input('twist', f'holding still: twist stamped {ahead:.3f} s ahead of the '
                           f'clock (more than command_timeout {self.command_timeout} s)')
            return
        self.twist = msg
        self.history.add(stamp_ns, values)

    def take_twists(self):
        """
        Take every twist waiting in the reader before stepping.

        The executor takes one message per subscription per wake-up; when steps are
        slow (a loaded machine), a 25-50 Hz command stream would queue behind them
        and reach the steps stale.
        """
        sub = self.twist_sub
        for _ in range(TWIST_DEPTH):
            with sub.handle:
                taken = sub.handle.take_message(sub.msg_type, sub.raw)  # rclpy's executor does so
            if taken is None:
                return
            self.twist_callback(taken[0])

    def gripper_callback(self, msg):
        """Hold the newest gripper command (one value in [gripper_close, gripper_open])."""
        try:
            if len(msg.data) != 1:
                raise ValueError(f'gripper command must hold 1 value, got {len(msg.data)}')
            low, high = sorted(self.gripper_values)
            if not low <= msg.data[0] <= high:  # NaN fails this too
                raise ValueError(f'gripper command {msg.data[0]} outside [{low:g}, {high:g}] '
                                 '(gripper_close to gripper_open)')
            self.gripper = gripper_to_libero(msg.data[0], *self.gripper_values)
        except ValueError as error:
            self.counters['rejected_gripper_commands'] += 1
            self.bad_input('gripper', f'ignored gripper command: {error}')

    def bad_input(self, name, text):
        """Count a bad value of input ``name`` and log ``text`` (at most once a second)."""
        self.bad_inputs.count(name, text)
        self.get_logger().error(text, throttle_duration_sec=1.0)

    # ------------------------------------------------------------------ stepping
    def current_action(self, step_time_ns):
        """
        Return the LIBERO action [7] for the step due at ``step_time_ns`` (ROS time).

        The twist is the mean over the span of wall clock the step stands for (each
        command held from its stamp until the next or until stale), so a step that is
        caught up after a slow render is judged at the time it stands for.
        """
        action = np.zeros(7)
        action[6] = self.gripper
        mean, covered = self.history.average(step_time_ns - int(self.step_wall * 1e9),
                                             step_time_ns)
        if covered == 0.0:
            self.counters['held_steps'] += 1
            return action
        try:
            action[:6] = twist_to_libero(mean[:3], mean[3:], self.linear_scale,
                                         self.angular_scale)
        except ValueError as error:  # non-finite: Servo would refuse it too
            self.counters['rejected_twists'] += 1
            self.counters['held_steps'] += 1
            self.get_logger().error(f'holding still: {error}', throttle_duration_sec=1.0)
        return action

    def clock_callback(self):
        """Run the steps that are due by the wall clock, then a camera frame if due."""
        now = time.monotonic()
        due = int((now - self.start_time) / self.step_wall) - self.counters['steps'] \
            - self.counters['skipped_steps']
        if due > self.max_catch_up:
            self.counters['skipped_steps'] += due - self.max_catch_up
            due = self.max_catch_up
        raw = None
        if due > 0:
            self.take_twists()
        for _ in range(max(due, 0)):
            index = self.counters['steps'] + self.counters['skipped_steps']
            step_time_ns = self.start_ros_ns + int((index + 1) * self.step_wall * 1e9)
            raw, _, _, _ = self.raw_env.step(self.current_action(step_time_ns))
            self.counters['steps'] += 1
            self.success = self.success or bool(self.raw_env.check_success())
            self.publish_pose(messages.ns_to_stamp(step_time_ns))
        if raw is None:
            return
        if not self.past_horizon and self.inner.timestep > self.inner.horizon:
            self.past_horizon = True
            self.get_logger().info(
                f"stepped past the env's horizon of {self.inner.horizon} steps: going on, an "
                'arm has no episode end')
        self.publish_joints(self.get_clock().now().to_msg())
        if now >= self.next_frame:
            self.next_frame = max(self.next_frame + self.camera_period, now)
            self.publish_frame()

    # ------------------------------------------------------------------ outputs
    def eef_pose(self):
        """
        Return the end-effector position [3] (m, grip site) and quaternion xyzw, read now.

        Read from the physics state rather than robosuite's observables, whose
        cached values can lag a step behind after a render forced an update.
        """
        data = self.inner.sim.data
        position = np.array(data.site_xpos[self.eef_site])
        w, x, y, z = data.get_body_xquat(self.eef_body)  # MuJoCo order: wxyz
        return position, (x, y, z, w)

    def publish_pose(self, stamp):
        """
        Publish the end-effector pose of the physics state now, stamped ``stamp``.

        The stamp is the wall-clock time the step stands for (step index x 50 ms
        from the start), so consecutive simulated steps are exactly 50 ms apart
        and a gap of more shows skipped steps.
        """
        pose = PoseStamped()
        pose.header.stamp, pose.header.frame_id = stamp, self.frame_id
        pos, quat = self.eef_pose()  # m; quaternion xyzw
        pose.pose.position.x, pose.pose.position.y, pose.pose.position.z = map(float, pos)
        (pose.pose.orientation.x, pose.pose.orientation.y, pose.pose.orientation.z,
         pose.pose.orientation.w) = map(float, quat)
        self.pose_pub.publish(pose)

    def publish_joints(self, stamp):
        """Publish the arm and finger joint positions and velocities."""
        joints = JointState()
        joints.header.stamp = stamp
        joints.name = self.joint_names
        data = self.inner.sim.data
        joints.position = [float(data.qpos[i]) for i in self.joint_indexes]
        joints.velocity = [float(data.qvel[i]) for i in self.joint_indexes]
        self.joint_pub.publish(joints)

    def publish_frame(self):
        """Render agentview and publish it upright for a LIBERO-trained policy (rgb8)."""
        stamp = self.get_clock().now().to_msg()  # the scene does not move while it renders
        self.inner.modify_observable(AGENTVIEW_IMAGE, 'enabled', True)
        try:
            raw = self.inner._get_observations(force_update=True)
        finally:
            self.inner.modify_observable(AGENTVIEW_IMAGE, 'enabled', False)
        frame = raw[AGENTVIEW_IMAGE][::-1, ::-1]  # the 180-degree turn LIBERO policies saw
        self.image_pub.publish(messages.numpy_to_image(
            frame, stamp=stamp, frame_id=self.camera_frame_id))
        self.counters['frames'] += 1

    def status(self):
        """Return the counters and task success (``~/status``, ``/diagnostics``)."""
        lag = time.monotonic() - self.start_time - self.step_wall * (
            self.counters['steps'] + self.counters['skipped_steps'])  # s
        return dict(self.counters, success=self.success, lag_s=round(lag, 4),
                    episodes=self.episodes, instruction=self.instruction)

    def destroy_node(self):
        """Close the simulator, then the node."""
        self.env.close()
        super().destroy_node()


def main(args=None):
    """Run the simulated arm until interrupted."""
    return run_node(SimArm, 'sim_arm', args)


if __name__ == '__main__':
    sys.exit(main())
