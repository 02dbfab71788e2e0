"""
What ``tgrpo_replay play`` plays and when, without rclpy (the player is nodes/bag_play.py).

* ``select_topics``: every topic of the bag by default, as ``ros2 bag play``; or
  ``--topics``, narrowed by ``--regex``, ``--exclude-regex`` and ``--exclude-topics``.
* ``load_qos_overrides``: a ``--qos-profile-overrides-path`` file in rosbag2's form
  (``/topic: {history, depth, reliability, durability}``).
* ``Timeline``: the wall-clock time each message is due at ``rate``, with pause,
  resume, play-next and rate changes, and the bag time at any moment (for /clock).
* ``KEYS``: the keyboard controls (rosbag2's: space pauses or resumes, the right
  arrow plays the next message, up and down change the rate by 10 %).
"""

import re

from tgrpo_ros.bags import storage

QOS_KEYS = ('history', 'depth', 'reliability', 'durability')
RELIABILITIES = ('reliable', 'best_effort')
DURABILITIES = ('volatile', 'transient_local')
HISTORIES = ('keep_last', 'keep_all')
KEYS = {' ': 'toggle_paused', '\x1b[C': 'play_next', '\x1b[A': 'faster', '\x1b[B': 'slower'}
RATE_STEP = 1.1


def select_topics(bag_topics, topics=None, regex=None, exclude_regex=None,
                  exclude_topics=()):
    """
    Return (topics to play, unknown names): all of ``bag_topics`` by default.

    ``topics``: only these (a name not in the bag is returned as unknown); ``regex``:
    also only names it matches (``re.search``, as rosbag2); ``exclude_regex`` and
    ``exclude_topics`` drop names. ValueError naming a regex that does not compile.
    """
    patterns = {}
    for flag, text in (('--regex', regex), ('--exclude-regex', exclude_regex)):
        if text:
            try:
                patterns[flag] = re.compile(text)
            except re.error as error:
                raise ValueError(f"{flag} '{text}' is not a regular expression: {error}") \
                    from None
    names = sorted(bag_topics)
    unknown = [t for t in topics or [] if t not in bag_topics]
    if topics:
        names = [n for n in names if n in topics]
    if '--regex' in patterns:
        names = [n for n in names if patterns['--regex'].search(n)]
    if '--exclude-regex' in patterns:
        names = [n for n in names if not patterns['--exclude-regex'].search(n)]
    names = [n for n in names if n not in set(exclude_topics or ())]
    return names, unknown


def load_qos_overrides(path):
    """
    Read a QoS override file; return {topic: (reliability, durability, depth, history)}.

    The form of ``ros2 bag play --qos-profile-overrides-path`` (and of
    config/record_qos_overrides.yaml); keys left out keep the recorded QoS (None).
    ValueError naming the file, the topic and what is wrong.
    """
    import yaml

    try:
        with open(path) as stream:
            data = yaml.safe_load(stream) or {}
    except OSError as error:
        raise ValueError(f'QoS override file {path}: {error.strerror}') from None
    except yaml.YAMLError as error:
        raise ValueError(f'QoS override file {path} does not parse as YAML: '
                         f'{str(error).splitlines()[0]}') from None
    if not isinstance(data, dict):
        raise ValueError(f'QoS override file {path} must map topic names to profiles')
    out = {}
    for topic, profile in data.items():
        where = f"QoS override file {path}: topic '{topic}'"
        if not isinstance(profile, dict):
            raise ValueError(f'{where} must map to {{history, depth, reliability, '
                             'durability}')
        unknown = sorted(set(profile) - set(QOS_KEYS))
        if unknown:
            raise ValueError(f'{where}: unknown keys {unknown}; allowed: {list(QOS_KEYS)}')
        values = {k: str(profile[k]).lower() for k in ('reliability', 'durability', 'history')
                  if k in profile}
        for key, allowed in (('reliability', RELIABILITIES), ('durability', DURABILITIES),
                             ('history', HISTORIES)):
            if key in values and values[key] not in allowed:
                raise ValueError(f"{where}: {key} '{profile[key]}' is not one of "
                                 f'{list(allowed)}')
        depth = profile.get('depth')
        if depth is not None and (not isinstance(depth, int) or depth < 0):
            raise ValueError(f'{where}: depth ({depth!r}) must be an integer >= 0')
        out[str(topic)] = (values.get('reliability'), values.get('durability'), depth,
                           values.get('history'))
    return out


def play_qos(info, override=None):
    """
    Return (reliability, durability, depth, history) to republish ``info`` with.

    The first profile its publishers offered (depth 10 when none is recorded), then
    the ``override`` (a tuple of ``load_qos_overrides``) on top.
    """
    reliability, durability, depth = 'reliable', 'volatile', storage.DEFAULT_DEPTH
    history = 'keep_last'
    if info.qos:
        reliability, durability, depth = storage.qos_names(info.qos[0])
    if reliability not in RELIABILITIES:
        reliability = 'reliable'
    if durability not in DURABILITIES:
        durability = 'volatile'
    if override:
        reliability = override[0] or reliability
        durability = override[1] or durability
        depth = depth if override[2] is None else override[2]
        history = override[3] or history
    return reliability, durability, max(int(depth), 1), history


class Timeline:
    """
    When each message is due (monotonic s) and what the bag's time is, at ``rate``.

    ``start(first, now)`` begins a pass at bag time ``first`` (ns). Pausing freezes
    the bag time; ``play_next`` makes a message due now and keeps the pause;
    ``set_rate`` keeps the bag time continuous.
    """

    def __init__(self, rate=1.0, paused=False):
        """Start with ``rate`` (> 0), paused or not."""
        self.rate = float(rate)
        self.paused = bool(paused)
        self.first = None    # bag time ns at ``started``
        self.started = None  # monotonic s
        self.pause_at = None

    def start(self, first, now):
        """Begin a pass: bag time ``first`` (ns) is now."""
        self.first, self.started = int(first), float(now)
        if self.paused:
            self.pause_at = float(now)

    def due(self, timestamp):
        """Return the monotonic time (s) at which the message of ``timestamp`` is due."""
        return self.started + (timestamp - self.first) / 1e9 / self.rate

    def bag_time(self, now):
        """Return the bag time (ns) at monotonic ``now``; None before the first start."""
        if self.started is None:
            return None
        at = self.pause_at if self.paused else now
        return self.first + int(round((at - self.started) * self.rate * 1e9))

    def pause(self, now):
        """Freeze the bag time; return False if already paused."""
        if self.paused:
            return False
        self.paused, self.pause_at = True, float(now)
        return True

    def resume(self, now):
        """Go on from the bag time of the pause; return False if not paused."""
        if not self.paused:
            return False
        if self.started is not None:
            self.started += float(now) - self.pause_at
        self.paused, self.pause_at = False, None
        return True

    def toggle(self, now):
        """Pause or resume; return the new paused state."""
        if not self.pause(now):
            self.resume(now)
        return self.paused

    def play_next(self, timestamp, now):
        """Make the message of ``timestamp`` due now (the bag time jumps to it)."""
        self.first, self.started = int(timestamp), float(now)
        if self.paused:
            self.pause_at = float(now)

    def set_rate(self, rate, now):
        """Change the rate from now on; the bag time stays continuous."""
        if not rate > 0:
            raise ValueError(f'rate ({rate}) must be > 0')
        current = self.bag_time(now)
        self.rate = float(rate)
        if current is not None:
            self.first, self.started = current, float(now)
            if self.paused:
                self.pause_at = float(now)
