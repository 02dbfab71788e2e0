"""
LIBERO simulation layer: env wrapper, dense stage reward, scripted expert, evaluation.

Pure Python (no ROS). Heavy simulator imports happen when an env is created.
"""

from tgrpo_ros.sim.expert import ScriptedExpert
from tgrpo_ros.sim.libero_env import EnvConfig, LiberoEnv, SimError, SUITE_MAX_STEPS
from tgrpo_ros.sim.reward import RewardConfig, stage_reward
from tgrpo_ros.sim.vec_env import VecLiberoEnv

__all__ = ['EnvConfig', 'LiberoEnv', 'RewardConfig', 'ScriptedExpert', 'SimError',
           'SUITE_MAX_STEPS', 'stage_reward', 'VecLiberoEnv']
