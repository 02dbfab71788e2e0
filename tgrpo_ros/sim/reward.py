"""
Dense stage reward for LIBERO pick-and-place, a pure function of a small state dict.

The reward walks up five stages; each stage's reward range sits above the range of
every earlier one, so a later stage always dominates (w_total = w_a + w_g + w_l + w_t
+ w_p):

* 0 approach (object not held, not over the basket): w_a * exp(-d_eo / s_a)
* 1 grasp (held, lifted less than lift_height): w_a + w_g + w_l * lift_frac
* 2 lift (held and lifted): T = w_a + w_g + w_l + w_t * exp(-d_ob / s_t)
* 3 transport (within over_basket_radius of the basket centre, held or just
  released there): T
* 4 place (the env's own success check): w_total

with d_eo the end-effector-to-object distance (m), d_ob the horizontal
object-to-basket distance (m) and lift_frac = clip(lift / lift_height, 0, 1). On
the step where success first turns true, a bonus is added:
``success_bonus + w_total * steps_left`` when ``absorbing_success`` (the return then
equals staying in the final stage until the step limit, so an early success is never
out-earned by a long failure), else ``success_bonus``. The per-step reward lies in
[0, w_total] and the per-episode sum is at most ``w_total * max_steps + success_bonus``.
"""

from dataclasses import dataclass
import math

# Stage indices reported in info['stage'].
STAGE_APPROACH = 0
STAGE_GRASP = 1
STAGE_LIFT = 2
STAGE_TRANSPORT = 3
STAGE_PLACE = 4
STAGE_NAMES = ('approach', 'grasp', 'lift', 'transport', 'place')

# Keys a reward state dict must hold (see :func:`stage_reward`).
STATE_KEYS = ('eef_pos', 'object_pos', 'basket_pos', 'object_lift', 'grasped', 'success',
              'first_success', 'steps_left')


@dataclass
class RewardConfig:
    """Weights and length scales of the dense stage reward."""

    approach_weight: float = 0.1
    """w_a: top of the approach stage (reward units)."""
    grasp_weight: float = 0.2
    """w_g: step up when the gripper holds the object."""
    lift_weight: float = 0.2
    """w_l: reached linearly while lifting to ``lift_height``."""
    transport_weight: float = 0.2
    """w_t: reached as the held object nears the basket centre."""
    place_weight: float = 0.3
    """w_p: step up to the top when the env reports success."""
    success_bonus: float = 1.0
    """Added once, on the step where success first turns true."""
    absorbing_success: bool = True
    """Also add w_total per step left before the limit on success (absorbing goal)."""
    approach_scale: float = 0.2
    """s_a (m): distance scale of the approach term exp(-d/s_a); never saturates."""
    transport_scale: float = 0.2
    """s_t (m): distance scale of the transport term exp(-d/s_t)."""
    lift_height: float = 0.10
    """Lift (m) above the object's rest height that completes the lift stage."""
    over_basket_radius: float = 0.05
    """Horizontal object-to-basket distance (m) counted as over the basket."""

    def __post_init__(self):
        """Reject negative weights and non-positive length scales."""
        for name in ('approach_weight', 'grasp_weight', 'lift_weight', 'transport_weight',
                     'place_weight', 'success_bonus'):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f'{name} ({value}) must be a finite number >= 0')
        for name in ('approach_scale', 'transport_scale', 'lift_height', 'over_basket_radius'):
            value = getattr(self, name)
            if not math.isfinite(value) or value <= 0:
                raise ValueError(f'{name} ({value}) must be a finite number > 0 (metres)')

    @property
    def total_weight(self):
        """Per-step reward of the top stage (w_total)."""
        return (self.approach_weight + self.grasp_weight + self.lift_weight
                + self.transport_weight + self.place_weight)


def _distance(a, b, dims=3):
    """Euclidean distance (m) over the first ``dims`` coordinates."""
    return math.sqrt(sum((float(a[i]) - float(b[i])) ** 2 for i in range(dims)))


def stage_reward(state, config=None):
    """
    Return (reward, stage) for one step from a reward state dict.

    ``state`` keys: eef_pos, object_pos, basket_pos (world xyz, m), object_lift
    (m above the object's rest height), grasped (bool: both finger pads touch the
    object), success (bool: the env's own check), first_success (bool: success
    turned true on this step) and steps_left (int: policy steps left before the
    limit). See the module docstring for the formula.
    """
    config = config or RewardConfig()
    missing = [key for key in STATE_KEYS if key not in state]
    if missing:
        raise KeyError(f'reward state lacks {missing}; needs {list(STATE_KEYS)}')
    w_a, w_g = config.approach_weight, config.grasp_weight
    w_l, w_t = config.lift_weight, config.transport_weight
    bonus = 0.0
    if state['first_success']:
        bonus = config.success_bonus
        if config.absorbing_success:
            bonus += config.total_weight * max(int(state['steps_left']), 0)
    if state['success']:
        return config.total_weight + bonus, STAGE_PLACE
    d_ob = _distance(state['object_pos'], state['basket_pos'], dims=2)
    over_basket = d_ob <= config.over_basket_radius
    transport = w_a + w_g + w_l + w_t * math.exp(-d_ob / config.transport_scale)
    if not state['grasped']:
        if over_basket:  # released over the basket, falling in: keep the transport level
            return transport + bonus, STAGE_TRANSPORT
        d_eo = _distance(state['eef_pos'], state['object_pos'])
        return w_a * math.exp(-d_eo / config.approach_scale) + bonus, STAGE_APPROACH
    lift_frac = min(max(float(state['object_lift']) / config.lift_height, 0.0), 1.0)
    if lift_frac < 1.0 and not over_basket:
        return w_a + w_g + w_l * lift_frac + bonus, STAGE_GRASP
    return transport + bonus, STAGE_TRANSPORT if over_basket else STAGE_LIFT
