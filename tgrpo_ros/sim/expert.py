"""
Scripted pick-and-place expert for LIBERO-Object from privileged simulator state.

A waypoint controller acting through the standard 7-dim action (env convention:
OSC pose deltas in [-1, 1], gripper -1 open / +1 close). Recipe from
docs/references.md §5: gripper pointing straight down, hover above the
object, descend to the grasp height, close, lift, carry the *object* over the basket
centre, lower to just above the rim, open, rise.
"""

from dataclasses import dataclass
import math

import numpy as np

# Scene constants of LIBERO-Object (world frame, m), measured here (docs/references.md §5).
BASKET_RIM_Z = 0.141  # top of the basket rim
FLOOR_Z = 0.0
FINGER_GAP = 0.077  # open finger gap along world y
FINGER_PAD_HALF_X = 0.011  # half length of a finger along world x
PALM_CLEARANCE = 0.035  # palm starts ~3 cm above the eef point: stay this far below the top
MIN_GRASP_Z = 0.012  # eef height floor; fingertips sit ~1 cm below the eef point
DOWN = np.diag([1.0, -1.0, -1.0])  # eef rotation pointing straight down, fingers along y
OSC_MAX_ROTATION = 0.5  # rad per step at action 1.0
OSC_MAX_TRANSLATION = 0.05  # m per step at action 1.0
OPEN, CLOSE = -1.0, 1.0  # LIBERO gripper commands


@dataclass
class ExpertConfig:
    """Gains, heights, tolerances and time-outs of the scripted expert."""

    position_gain: float = 8.0
    """Action per metre of position error (clip(gain * err, -1, 1))."""
    rotation_gain: float = 1.0
    """Action per radian of orientation error."""
    hover_height: float = 0.10
    """Hover this far (m) above the object's top before descending."""
    carry_z: float = 0.30
    """Eef height (m) while carrying."""
    rim_clearance: float = 0.02
    """Lower the object's bottom to this far (m) above the basket rim before opening."""
    close_steps: int = 12
    """Steps with the gripper closing before lifting."""
    open_steps: int = 15
    """Steps with the gripper opening over the basket."""

    def __post_init__(self):
        """Reject non-positive gains and step counts."""
        for name in ('position_gain', 'rotation_gain', 'hover_height', 'carry_z'):
            if not getattr(self, name) > 0:
                raise ValueError(f'{name} ({getattr(self, name)}) must be > 0')
        for name in ('close_steps', 'open_steps'):
            if int(getattr(self, name)) < 1:
                raise ValueError(f'{name} ({getattr(self, name)}) must be >= 1')


def quat_to_matrix(quat_xyzw):
    """Rotation matrix [3, 3] of a unit quaternion given as (x, y, z, w)."""
    x, y, z, w = (float(v) for v in quat_xyzw)
    n = math.sqrt(x * x + y * y + z * z + w * w)
    x, y, z, w = x / n, y / n, z / n, w / n
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


def rotation_error(current, target):
    """Axis-angle vector (rad, world frame) rotating ``current`` [3, 3] onto ``target``."""
    delta = target @ current.T
    cos = min(max((np.trace(delta) - 1.0) / 2.0, -1.0), 1.0)
    angle = math.acos(cos)
    if angle < 1e-6:
        return np.zeros(3)
    axis = np.array([delta[2, 1] - delta[1, 2], delta[0, 2] - delta[2, 0],
                     delta[1, 0] - delta[0, 1]])
    norm = np.linalg.norm(axis)
    if norm < 1e-9:  # angle ~ pi: take the axis from the symmetric part
        axis = np.sqrt(np.clip((np.diag(delta) + 1.0) / 2.0, 0.0, None))
        norm = np.linalg.norm(axis)
    return axis / norm * angle


def box_gap(lo_a, hi_a, lo_b, hi_b):
    """Separation (m) of two axis-aligned boxes: > 0 apart, < 0 overlapping (depth)."""
    gaps = np.maximum(np.asarray(lo_b) - hi_a, np.asarray(lo_a) - hi_b)  # per axis
    if np.all(gaps < 0):
        return float(np.max(gaps))
    return float(np.linalg.norm(np.maximum(gaps, 0.0)))


# Boxes (lo, hi; m, relative to the eef point) of the open gripper pointing down,
# measured from the Panda gripper's collision geoms: the two fingers, then the hand.
GRIPPER_PARTS = (
    (np.array([-0.011, -0.069, -0.013]), np.array([0.011, 0.069, 0.049])),
    (np.array([-0.032, -0.104, 0.026]), np.array([0.032, 0.106, 0.124])),
)


def choose_grasp_xy(lo, hi, neighbours, grasp_z):
    """
    Grasp point (x, y) on an object box, shifted along x for clearance from neighbours.

    lo, hi: object box [3] (m); neighbours: list of (lo, hi) boxes; grasp_z: eef
    height at the grasp (m). The fingers close along y, so the grasp x slides along
    the object's x extent (pads kept on the object) to maximise the clearance of the
    open gripper (GRIPPER_PARTS) from every neighbour (docs/references.md §5: this is what
    makes the flat cream cheese box next to taller bottles work).
    """
    lo, hi = np.asarray(lo, float), np.asarray(hi, float)
    centre = (lo[:2] + hi[:2]) / 2.0
    reach = max((hi[0] - lo[0]) / 2.0 - FINGER_PAD_HALF_X, 0.0)  # keep the pads on the object
    best, best_score = centre.copy(), -np.inf
    for shift in np.linspace(-reach, reach, 15):
        point = np.array([centre[0] + shift, centre[1], grasp_z])
        clearance = min((box_gap(point + p_lo, point + p_hi, n_lo, n_hi)
                         for p_lo, p_hi in GRIPPER_PARTS for n_lo, n_hi in neighbours),
                        default=1.0)
        score = min(clearance, 0.02) - 0.01 * abs(shift)  # prefer the centre once clear
        if score > best_score:
            best, best_score = point[:2], score
    return best


class ScriptedExpert:
    """Pick the task's object and place it in the basket; call reset() after env.reset()."""

    PHASES = ('hover', 'descend', 'close', 'lift', 'carry', 'lower', 'open', 'rise')
    # (tolerance m, time-out steps) per moving phase
    LIMITS = {'hover': (0.01, 60), 'descend': (0.006, 40), 'lift': (0.02, 40),
              'carry': (0.015, 60), 'lower': (0.01, 30)}

    def __init__(self, env, config=None):
        """Drive ``env`` (a LiberoEnv) with privileged state."""
        self.env = env
        self.config = config or ExpertConfig()
        self._phase = None

    def reset(self):
        """Plan the grasp from the settled scene; call it right after env.reset."""
        env = self.env
        lo, hi = env.object_bounds()
        neighbours = [env.object_bounds(name) for name in env.object_names()
                      if name not in (env.target_object, env.basket)]
        mid_z = (lo[2] + hi[2]) / 2.0
        self.grasp_z = max(mid_z, hi[2] - PALM_CLEARANCE, MIN_GRASP_Z)
        self.grasp_xy = choose_grasp_xy(lo, hi, neighbours, self.grasp_z)
        self.object_top = float(hi[2])
        self._phase, self._phase_steps = 'hover', 0
        self._hold_offset = None

    @property
    def phase(self):
        """Return the current phase name."""
        return self._phase

    def act(self, obs):
        """Return the next env-convention action [7] for observation ``obs``."""
        if self._phase is None:
            raise RuntimeError('call ScriptedExpert.reset() after env.reset()')
        cfg = self.config
        state = obs['state']
        eef = np.asarray(state['eef_pos'], float)
        obj = np.asarray(state['object_pos'], float)
        basket = np.asarray(state['basket_pos'], float)
        gx, gy = self.grasp_xy
        phase = self._phase
        grip = OPEN
        if phase == 'hover':
            target = np.array([gx, gy, self.object_top + cfg.hover_height])
        elif phase == 'descend':
            target = np.array([gx, gy, self.grasp_z])
        elif phase == 'close':
            target, grip = np.array([gx, gy, self.grasp_z]), CLOSE
        elif phase == 'lift':
            target, grip = np.array([gx, gy, cfg.carry_z]), CLOSE
        elif phase in ('carry', 'lower'):
            grip = CLOSE
            offset = eef - obj  # carry the object, not the gripper, over the basket
            target = np.array([basket[0] + offset[0], basket[1] + offset[1], cfg.carry_z])
            if phase == 'lower':
                lo, _ = self.env.object_bounds()
                bottom_to_eef = eef[2] - lo[2]
                target[2] = BASKET_RIM_Z + cfg.rim_clearance + bottom_to_eef
        elif phase == 'open':
            target = eef.copy()
        else:  # rise
            target = np.array([eef[0], eef[1], cfg.carry_z])
        error = target - eef
        if phase == 'carry':
            error_norm = np.linalg.norm((basket - obj)[:2])
        else:
            error_norm = np.linalg.norm(error)
        action = np.zeros(7)
        action[:3] = np.clip(cfg.position_gain * error, -1.0, 1.0)
        rot = quat_to_matrix(state['eef_quat'])
        action[3:6] = np.clip(cfg.rotation_gain * rotation_error(rot, DOWN), -1.0, 1.0)
        action[6] = grip
        self._advance(error_norm)
        return action

    def _advance(self, error_norm):
        cfg = self.config
        self._phase_steps += 1
        phase = self._phase
        if phase in self.LIMITS:
            tol, timeout = self.LIMITS[phase]
            done = error_norm < tol or self._phase_steps >= timeout
        elif phase == 'close':
            done = self._phase_steps >= cfg.close_steps
        elif phase == 'open':
            done = self._phase_steps >= cfg.open_steps
        else:
            done = False
        if done:
            self._phase = self.PHASES[self.PHASES.index(phase) + 1]
            self._phase_steps = 0


def env_to_policy_action(action):
    """Copy of an env-convention action with the gripper in the policy's [0, 1] (1 open)."""
    out = np.array(action, dtype=np.float64, copy=True)
    out[..., -1] = np.where(out[..., -1] > 0, 0.0, 1.0)
    return out
