"""Install tgrpo_ros with colcon (ament_python) or with pip."""

from glob import glob
import os

from setuptools import find_packages, setup

package_name = 'tgrpo_ros'

setup(
    name=package_name,
    version='0.1.0',
    packages=find_packages(exclude=['test', 'test.*', 'bench']),
    data_files=[
        ('share/ament_index/resource_index/packages', ['resource/' + package_name]),
        ('share/' + package_name, ['package.xml']),
        ('share/' + package_name + '/launch', glob('launch/*.launch.py')),
        ('share/' + package_name + '/config', glob('config/*.yaml')),
    ] + [
        # Shipped checkpoints (models/<name>/...): config files name them relative to config/.
        ('share/' + package_name + '/' + os.path.dirname(path), [path])
        for path in sorted(glob('models/*/*')) if os.path.isfile(path)
    ],
    install_requires=['setuptools'],
    zip_safe=True,
    maintainer='tgrpo_ros maintainers',
    maintainer_email='tgrpo-ros@example.com',
    description='TGRPO fine-tuning of OpenVLA policies in LIBERO, served over ROS 2.',
    license='Apache-2.0',
    tests_require=['pytest'],
    python_requires='>=3.10',
    entry_points={
        'console_scripts': [
            # ROS nodes
            'policy_server = tgrpo_ros.nodes.policy_server:main',
            'sim_bridge = tgrpo_ros.nodes.sim_bridge:main',
            'learner = tgrpo_ros.nodes.learner:main',
            'safety_controller = tgrpo_ros.nodes.safety_controller:main',
            'sim_arm = tgrpo_ros.nodes.sim_arm:main',
            # Commands
            'tgrpo_launch = tgrpo_ros.orchestration.launcher:main',
            'tgrpo_build_standin = tgrpo_ros.policy.standin:main',
            'tgrpo_eval = tgrpo_ros.sim.evaluate:main',
            'tgrpo_demos = tgrpo_ros.sim.demos:main',
            'tgrpo_sft = tgrpo_ros.training.sft:main',
            'tgrpo_replay = tgrpo_ros.nodes.replay:main',
            'tgrpo_record = tgrpo_ros.nodes.record:main',
            'tgrpo_plot = tgrpo_ros.training.metrics:main',
            'tgrpo_arm = tgrpo_ros.nodes.arm_cli:main',
        ],
    },
)
