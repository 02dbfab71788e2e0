"""
How policy actions are executed over time: once per action period, or held (numpy only).

A VLA action is a displacement for one control step of its training data, not a
velocity (docs/deploy.md, "Executing actions"): in LIBERO's OSC one unit means
0.05 m commanded over one 50 ms step. A policy that decides slower than it was
trained (OpenVLA-7B: about 6 Hz against LIBERO's 20 Hz) must not have each
action executed several times over.

``ActionExecution`` is the queue between the newest policy reply and the safety
filter's ticks. Each reply carries a chunk of K >= 1 actions (K = 1 for OpenVLA
and the stand-in; chunked policies such as ACT or OpenVLA-OFT return 8-25):

* ``once`` (the default): the chunk's actions run in order, each for exactly one
  ``action_period`` of commanded time (the policy's training control period,
  0.05 s for LIBERO), then the arm gets zero until a newer reply arrives. No
  action runs twice. A newer reply replaces what is left of the queue: the
  action under way finishes its period (no action is cut short), the ones not
  started are dropped (``replaced_actions``).
* In ``once`` mode a reply is only taken if its frame could show what the arm
  was last commanded: a frame captured before the end of the last executed
  action plus ``observation_delay`` (s; the time until the motion shows on the
  camera: the simulated arm's 50 ms step, a real arm's tracking lag) answers a
  scene that had not seen that action, and acting on it would command the same
  correction twice. Such replies are skipped (``early_frames``): the policy sees
  the result of every action it commanded, as in the synchronous loop it was
  trained in. A slow camera or policy then slows the arm down, never makes it
  overshoot. A negative ``observation_delay`` turns this off (any newer reply
  replaces the queue, as streaming chunked policies run).
* ``hold``: the behaviour for policies trained on velocity commands. The chunk's
  actions run one period each too, and the last one is held until a newer reply
  arrives (with K = 1: the newest action is held).

The filter asks ``step(duration)`` once per control tick for the action to
command during the next ``duration`` seconds (the tick period). A tick that
overlaps the end of one action and the start of the next, or the end of the
queue, gets the time-weighted mean of what it covers (zero for the idle part),
so the twist integrated over the ticks is exactly action x scale x
action_period per action, whatever the ratio of the tick and action periods:
with a 25 Hz controller and 0.05 s actions, an action is commanded at full
twist for one 40 ms tick and at a quarter of it in the next. The safety limits
apply to that per-tick action afterwards (a tight acceleration limit shortens
the steps: the filter never exceeds a limit to catch up).

``average_twist`` is the receiving side's counterpart, used by ``sim_arm``: the
mean of a piecewise-constant twist (each command held from its stamp until the
next one or until it goes stale) over one simulation step, as an arm that
follows Servo at 100 Hz integrates it, rather than a sample of whichever
command is newest at the step (which aliases a 25 Hz command stream into a
20 Hz simulator).
"""

import bisect
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

ACTION_DIM = 7  # dx, dy, dz, droll, dpitch, dyaw, gripper
MODES = ('once', 'hold')
# LIBERO's control frequency is 20 Hz (docs/references.md §3).
LIBERO_ACTION_PERIOD = 0.05  # s
EXECUTION_COUNTERS = ('chunks', 'repeated_replies', 'early_frames', 'replaced_actions',
                      'executed_actions', 'idle_ticks')


def check_chunk(actions) -> np.ndarray:
    """Return ``actions`` as a float64 array [K, 7] (K >= 1); ValueError naming the problem."""
    chunk = np.array(actions, dtype=np.float64, copy=True)
    if chunk.ndim == 1:
        chunk = chunk[None]
    if chunk.ndim != 2 or chunk.shape[1] != ACTION_DIM or chunk.shape[0] < 1:
        raise ValueError(f'an action chunk must be [K, {ACTION_DIM}] with K >= 1, got shape '
                         f'{np.shape(actions)}')
    return chunk


class ActionExecution:
    """Queue of the newest chunk's actions; ``step`` hands out the action of each tick."""

    def __init__(self, mode: str = 'once', action_period: float = LIBERO_ACTION_PERIOD,
                 observation_delay: float = -1.0):
        """
        Start empty; ``action_period`` (s) is the commanded time of one action.

        ``observation_delay`` (s, once mode; negative: off) is how long after an
        action ends a frame shows it: replies to earlier frames are skipped.
        """
        if mode not in MODES:
            raise ValueError(f"action_execution must be one of {', '.join(MODES)}, got {mode!r}")
        if not float(action_period) > 0.0:
            raise ValueError(f'action_period must be > 0 s, got {action_period!r}')
        self.mode = mode
        self.default_period = float(action_period)
        self.observation_delay = float(observation_delay)
        self.motion_end = None  # s, when the commanded actions end (once mode, with ``now``)
        self.counters: Dict[str, int] = dict.fromkeys(EXECUTION_COUNTERS, 0)
        self.clear()

    def clear(self):
        """Forget the queue and the held action (activation, reset, a stop)."""
        self.queue: List[Tuple[np.ndarray, float]] = []  # (action [7], period s), head first
        self.left = 0.0  # s of commanded time left to the head action
        self.last: Optional[np.ndarray] = None  # the latest action started (gripper, hold)
        self.stamp = None  # image stamp of the newest chunk queued

    @property
    def pending(self) -> int:
        """Return how many queued actions have not finished (the one under way included)."""
        return len(self.queue)

    @property
    def period(self) -> float:
        """Return the seconds per action of the newest chunk queued, else the configured value."""
        return self.queue[-1][1] if self.queue else self.default_period

    def push(self, actions, action_period: Optional[float] = None, stamp=None) -> bool:
        """
        Replace what is left of the queue with a new chunk [K, 7] (or one action [7]).

        ``action_period`` (s) comes from the policy's metadata where it has one (the
        action message carries it); None or 0 keeps the configured period. The
        action under way finishes its period first; the actions not started yet are
        dropped. A reply with the ``stamp`` (image stamp) of the newest chunk is a
        repeat (a server re-sends its cached reply to a re-published image): it is
        counted and ignored, so no action runs twice. Returns whether it was queued.
        """
        chunk = check_chunk(actions)
        period = self.default_period if not action_period else float(action_period)
        if not period > 0.0 or not np.isfinite(period):
            raise ValueError(f'action_period must be > 0 s, got {action_period!r}')
        if stamp is not None and stamp == self.stamp:
            self.counters['repeated_replies'] += 1
            return False
        if stamp is not None and self.mode == 'once' and self.observation_delay >= 0.0 \
                and self.motion_end is not None \
                and stamp < self.motion_end + self.observation_delay:
            self.counters['early_frames'] += 1  # its frame had not seen the last action
            return False
        self.stamp = stamp
        self.counters['chunks'] += 1
        under_way = bool(self.queue) and self.left < self.queue[0][1] - 1e-12
        head = self.queue[:1] if under_way else []
        self.counters['replaced_actions'] += len(self.queue) - len(head)
        self.queue = head + [(row, period) for row in chunk]
        if not under_way:
            self.left = period
        return True

    @property
    def remaining(self) -> float:
        """Return the seconds of commanded time left in the queue (once mode)."""
        if not self.queue:
            return 0.0
        return self.left + sum(period for _, period in self.queue[1:])

    def step(self, duration: float, now: Optional[float] = None) -> Optional[np.ndarray]:
        """
        Return the action [7] to command for the next ``duration`` s, and consume it.

        ``now`` (s, the tick's time, on the clock of the image stamps) dates the
        motion: the end of the queued actions is then known to ``push``, which skips
        replies to frames captured before it (``observation_delay``).

        The translation and rotation entries are the time-weighted mean over
        ``duration`` (0 where nothing is queued, in once mode); the gripper is that
        of the latest action started. None: nothing was ever queued since ``clear``.
        """
        duration = float(duration)
        if not duration > 0.0:
            raise ValueError(f'a tick lasts > 0 s, got {duration!r}')
        total = np.zeros(ACTION_DIM - 1)
        covered = 0.0  # s of this tick given to queued actions
        while self.queue and covered < duration:
            head, period = self.queue[0]
            self.last = head
            used = min(self.left, duration - covered)
            total += head[:ACTION_DIM - 1] * used
            covered += used
            self.left -= used
            if self.left <= 1e-12:
                self.counters['executed_actions'] += 1
                if len(self.queue) > 1 or self.mode == 'once':
                    self.queue.pop(0)  # hold: the last action runs again, period by period
                self.left = self.queue[0][1] if self.queue else 0.0
        if now is not None and (covered > 0.0 or self.queue):
            self.motion_end = float(now) + covered + self.remaining
        if self.last is None:
            return None
        if covered == 0.0:
            self.counters['idle_ticks'] += 1
        action = np.empty(ACTION_DIM)
        action[:ACTION_DIM - 1] = total / duration
        action[ACTION_DIM - 1] = self.last[ACTION_DIM - 1]
        return action


# ---------------------------------------------------------------------------- receiving side

class TwistHistory:
    """
    Twist commands by stamp, for the mean command over a time span (``sim_arm``).

    Each command holds from its stamp until the next command's stamp, or until it is
    older than ``timeout`` (s, Servo's incoming_command_timeout): then zero. A command
    that is None (a refused, non-finite twist) holds the arm still from its stamp.
    """

    def __init__(self, timeout: float):
        """Start empty; ``timeout`` in s."""
        self.timeout_ns = int(round(float(timeout) * 1e9))
        self.stamps: List[int] = []   # ns, ascending
        self.values: List[Optional[np.ndarray]] = []

    def clear(self):
        """Forget every command (a reset of the scene)."""
        self.stamps, self.values = [], []

    def add(self, stamp_ns: int, value: Optional[Sequence[float]]):
        """Insert a command stamped ``stamp_ns``; a later one with the same stamp replaces it."""
        stamp_ns = int(stamp_ns)
        value = None if value is None else np.asarray(value, dtype=np.float64).copy()
        index = bisect.bisect_right(self.stamps, stamp_ns)
        if index and self.stamps[index - 1] == stamp_ns:
            self.values[index - 1] = value
            return
        self.stamps.insert(index, stamp_ns)
        self.values.insert(index, value)

    def average(self, start_ns: int, end_ns: int, size: int = 6) -> Tuple[np.ndarray, float]:
        """
        Return (mean command over [start_ns, end_ns), share of the span under a command).

        Commands that can no longer matter (followed by another before ``start_ns``)
        are dropped.
        """
        start_ns, end_ns = int(start_ns), int(end_ns)
        if end_ns <= start_ns:
            raise ValueError(f'empty span [{start_ns}, {end_ns}) ns')
        first = max(bisect.bisect_right(self.stamps, start_ns) - 1, 0)
        del self.stamps[:first], self.values[:first]
        total = np.zeros(size)
        covered = 0
        for i, (stamp, value) in enumerate(zip(self.stamps, self.values)):
            if stamp >= end_ns:
                break
            until = stamp + self.timeout_ns
            if i + 1 < len(self.stamps):
                until = min(until, self.stamps[i + 1])
            lo, hi = max(stamp, start_ns), min(until, end_ns)
            if hi > lo and value is not None:
                total += value * (hi - lo)
                covered += hi - lo
        span = end_ns - start_ns
        return total / span, covered / span
