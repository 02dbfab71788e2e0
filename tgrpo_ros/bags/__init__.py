"""
rosbag2 recordings without rclpy: reading, writing, pairing, checking and reporting.

``storage`` reads a bag file by file and survives damage, and writes split bags;
``episodes`` reads and writes episode and image bags; ``check`` re-scores recorded
steps through a policy; ``report`` holds the maths, the JSON report and the PNG;
``profiles`` the recording profiles; ``listing`` the ``info`` and listing commands.
What subscribes or publishes (``tgrpo_record``, ``tgrpo_replay play``) is in
``tgrpo_ros.nodes`` (docs/bags.md).
"""
