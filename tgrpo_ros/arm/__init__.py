"""
Arm deployment core: action -> twist conversion and the safety filter (no ROS).

The rclpy nodes around it are ``tgrpo_ros.nodes.safety_controller`` (policy ->
MoveIt Servo) and ``tgrpo_ros.nodes.sim_arm`` (the LIBERO Panda behind the same
interface). See docs/deploy.md.
"""

from tgrpo_ros.arm.command import (action_to_gripper, action_to_twist, gripper_to_libero,
                                   twist_to_libero)
from tgrpo_ros.arm.config import ArmConfig
from tgrpo_ros.arm.safety import Command, SafetyFilter

__all__ = ['action_to_gripper', 'action_to_twist', 'ArmConfig', 'Command', 'gripper_to_libero',
           'SafetyFilter', 'twist_to_libero']
