"""
Status and bad-input counters: every tgrpo_ros node reports them the same way.

Each node keeps a ``BadInputs``: per input it receives (``image``,
``instruction``, ``assignment``, ...), how many bad values it refused since it
started, and the error text of the latest one. A bad value is refused with an
error that names what was wrong; the node keeps running on what it had.

Once per ``period`` (1 s unless the node has its own rate), and at once when a bad
input is counted (at most every ``MIN_INTERVAL``: a count within it of the previous
report is reported when the interval is over), a ``StatusReporter`` publishes
the node's status dict, ``bad_input`` and ``last_bad_input`` included:

* on ``~/status`` (``std_msgs/String``, JSON), always;
* on ``/diagnostics`` (``diagnostic_msgs/DiagnosticArray``, one
  ``DiagnosticStatus`` named by the node's full name, the status flattened into
  key-values such as ``bad_input.image``), where ``diagnostic_msgs`` is installed.
  The level is WARN when a bad input arrived since the previous report, else OK
  (or the level the node gives).

The table of every input and what happens to bad values of it is in docs/faults.md
("Bad input").
"""

import json
import time

from std_msgs.msg import String

from tgrpo_ros.nodes import topics

try:  # not on PyPI everywhere: /diagnostics only where the ROS install has it
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
except ImportError:  # pragma: no cover - depends on the install
    DiagnosticArray = None

STATUS_PERIOD = 1.0  # s between two reports
MIN_INTERVAL = 0.25  # s: a bad input is reported at once unless a report is this recent
MAX_ERROR_CHARS = 300  # of the latest error text kept per input
LEVELS = ('OK', 'WARN', 'ERROR')


class BadInputs:
    """Count the bad values refused per input; keep the latest error text of each."""

    def __init__(self, inputs):
        """Start every input of ``inputs`` (names) at zero."""
        self.counts = dict.fromkeys(inputs, 0)
        self.last_error = {}
        self.on_count = None  # called after each count (StatusReporter.publish_soon)

    def count(self, name, error):
        """Count one bad value of input ``name`` refused with ``error``; return the total."""
        if name not in self.counts:
            raise KeyError(f'unknown input {name!r}; inputs: {", ".join(self.counts)}')
        self.counts[name] += 1
        self.last_error[name] = str(error)[:MAX_ERROR_CHARS]
        if self.on_count is not None:
            self.on_count()
        return self.counts[name]

    @property
    def total(self):
        """Return the bad values refused so far, all inputs together."""
        return sum(self.counts.values())

    def status(self):
        """Return the JSON-ready ``bad_input`` and ``last_bad_input`` entries of a status."""
        return {'bad_input': dict(self.counts), 'last_bad_input': dict(self.last_error)}


def flatten(status, prefix=''):
    """
    Return a status dict as a flat list of (key, text) pairs, nested keys joined by '.'.

    >>> flatten({'a': 1, 'bad_input': {'image': 2}, 'ok': True})
    [('a', '1'), ('bad_input.image', '2'), ('ok', 'true')]
    """
    pairs = []
    for key, value in status.items():
        name = f'{prefix}{key}'
        if isinstance(value, dict):
            pairs += flatten(value, name + '.')
        elif isinstance(value, bool):
            pairs.append((name, str(value).lower()))
        elif isinstance(value, (list, tuple)):
            pairs.append((name, json.dumps(value)))
        else:
            pairs.append((name, str(value)))
    return pairs


def bad_input_summary(counts, previous):
    """
    Return (level, message) for the bad-input counters now and at the previous report.

    >>> bad_input_summary({'image': 3, 'instruction': 0}, {'image': 1, 'instruction': 0})
    ('WARN', 'bad input since the last report: image +2 (total: image 3)')
    """
    new = {k: v - previous.get(k, 0) for k, v in counts.items() if v > previous.get(k, 0)}
    totals = ', '.join(f'{k} {v}' for k, v in counts.items() if v)
    if new:
        return 'WARN', ('bad input since the last report: '
                        + ', '.join(f'{k} +{v}' for k, v in new.items())
                        + f' (total: {totals})')
    return 'OK', f'bad input so far: {totals}' if totals else 'no bad input'


class StatusReporter:
    """Publish a node's status on ``~/status`` (JSON) and ``/diagnostics`` every period."""

    def __init__(self, node, status, bad_inputs, period=STATUS_PERIOD):
        """
        Report ``status()`` (a JSON-ready dict) of ``node`` with ``bad_inputs`` merged in.

        ``status()`` may return a ``level`` ('OK', 'WARN' or 'ERROR') and a
        ``message``: the level reported is the worse of it and the bad-input level.
        """
        self.node = node
        self.status = status
        self.bad_inputs = bad_inputs
        self.previous = dict(bad_inputs.counts)
        self.published = None  # monotonic s of the latest report
        bad_inputs.on_count = self.publish_soon
        self.status_publisher = node.create_publisher(String, topics.NODE_STATUS_TOPIC,
                                                      topics.DIAGNOSTICS_QOS)
        self.diagnostics_publisher = None
        if DiagnosticArray is not None:
            self.diagnostics_publisher = node.create_publisher(
                DiagnosticArray, topics.DIAGNOSTICS_TOPIC, topics.DIAGNOSTICS_QOS)
        self.timer = node.create_timer(period, self.publish)
        # One report MIN_INTERVAL after a count that came too soon after the last one:
        # a burst of bad input is reported within a quarter second, not a whole period.
        self.soon_timer = node.create_timer(MIN_INTERVAL, self._publish_deferred)
        self.soon_timer.cancel()

    def report(self):
        """Return the status dict with the bad-input entries, its level and its message."""
        status = dict(self.status())
        level, message = status.pop('level', 'OK'), status.pop('message', '')
        status.update(self.bad_inputs.status())
        bad_level, bad_message = bad_input_summary(self.bad_inputs.counts, self.previous)
        self.previous = dict(self.bad_inputs.counts)
        level = max(level, bad_level, key=LEVELS.index)
        return status, level, '; '.join(m for m in (message, bad_message) if m)

    def publish_soon(self):
        """Report now, unless a report went out less than MIN_INTERVAL ago (then: after it)."""
        if self.published is None or time.monotonic() - self.published >= MIN_INTERVAL:
            self.publish()
        elif self.soon_timer.is_canceled():
            self.soon_timer.reset()  # fires MIN_INTERVAL from now

    def _publish_deferred(self):
        """Publish the report a count asked for while the previous one was too recent."""
        self.soon_timer.cancel()
        self.publish()

    def publish(self):
        """Publish one report now."""
        self.published = time.monotonic()
        status, level, message = self.report()
        self.status_publisher.publish(String(data=json.dumps(
            dict(status, level=level, message=message))))
        if self.diagnostics_publisher is None:
            return
        array = DiagnosticArray()
        array.header.stamp = self.node.get_clock().now().to_msg()
        array.status = [DiagnosticStatus(
            level=getattr(DiagnosticStatus, level), name=self.node.get_fully_qualified_name(),
            message=message, hardware_id='',
            values=[KeyValue(key=k, value=v) for k, v in flatten(status)])]
        self.diagnostics_publisher.publish(array)
