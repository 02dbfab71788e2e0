"""tgrpo_ros: TGRPO fine-tuning of OpenVLA policies in LIBERO, served over ROS 2."""

__version__ = '0.1.0'
