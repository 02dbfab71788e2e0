"""
The ``main()`` shared by every node: init, spin, clean shutdown, exit status.

Signals. rclpy's own handler shuts the context down the moment SIGINT or SIGTERM
arrives, so a node cannot publish anything afterwards (the safety controller's
final zero twist failed with "publisher's context is invalid"). ``run_node``
therefore starts rclpy without its signal handlers and installs its own:

* the first SIGINT or SIGTERM raises KeyboardInterrupt in the main thread (a
  wake-up guard condition makes a waiting executor return to Python at once);
  where the main thread is inside rclpy's own code at that moment, the interrupt
  waits for the wake-up guard's callback instead (an exception raised there
  leaves rclpy objects half made: "Exception ignored in: Future.__del__ ...
  AttributeError" on a node's clean Ctrl-C);
* the node's shutdown path then runs with the context still valid: the node's
  ``destroy_node`` (which may publish, e.g. the final zero twist), then
  ``rclpy.try_shutdown``;
* every later SIGINT or SIGTERM is noted and ignored (and from the end of the
  clean-up, ignored at the OS level), so the second Ctrl-C that a terminal and
  ``ros2 launch`` both deliver cannot interrupt the clean-up, nor kill the process
  while the interpreter finalizes (exit -2 instead of the node's status);
* but an interrupt that was lost (raised, and the node has not begun to stop
  ``LOST_AFTER`` s later: library code swallowed it) is raised again, and so is
  every SIGTERM until the node stops.
"""

import os
import signal
import socket
import sysconfig
import threading
import time

import rclpy
from rclpy.executors import ExternalShutdownException

from tgrpo_ros.nodes.params import refuse_undeclared

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def spin_forever(node):
    """Spin until interrupted; a server node has no natural end."""
    rclpy.spin(node)
    return 0


_STDLIB = os.path.realpath(sysconfig.get_paths()['stdlib'])


def in_rclpy(frame):
    """
    Tell whether ``frame`` runs rclpy's own code, or the standard library for it.

    The innermost frame outside the standard library decides: a Ctrl-C that lands in
    ``Task.__init__`` (or in ``inspect``, called from it) is inside rclpy; one in
    ``time.sleep`` called from a node's callback is not.
    """
    while frame is not None:
        module = frame.f_globals.get('__name__') or ''
        if module == 'rclpy' or module.startswith('rclpy.'):
            return True
        filename = frame.f_code.co_filename
        stdlib = filename.startswith('<') or (
            os.path.realpath(filename).startswith(_STDLIB) and 'site-packages' not in filename)
        if not stdlib:
            return False
        frame = frame.f_back
    return False


class StopSignals:
    """
    SIGINT and SIGTERM as one KeyboardInterrupt, then noted and ignored, but for SIGTERM.

    Where the interrupt lands inside rclpy it is kept ``pending`` and raised by the
    callback of ``guard`` (a guard condition of the node, triggered by every signal),
    so from the node's own code. A pending interrupt is tried again every
    ``RETRY_AFTER`` s (for a callback that runs on), and after ``MAX_DEFERRALS`` tries
    it is raised wherever it lands.

    A SIGTERM raises again while the node has not begun to stop (``stopping``): it is
    launch's escalation after ``sigterm_timeout``, or a ``kill``, and means the first
    KeyboardInterrupt was lost. Library code can swallow one: in a fresh-clone run a
    sim bridge that got Ctrl-C while LIBERO reset its scene finished the reset, ignored
    launch's SIGINT and SIGTERM, and was SIGKILLed 60 s later. For the same reason an
    interrupt raised ``LOST_AFTER`` s ago without the node stopping is raised again.

    Python runs a signal handler only between bytecodes, and an executor waits in C:
    the C-level handler writes to a socket (``signal.set_wakeup_fd``), and a thread
    reading it triggers ``guard`` so that the wait returns and the handler runs. The
    same thread makes the retries (a signal to the main thread).
    """

    RETRY_AFTER = 1.0  # s between tries of a pending interrupt
    MAX_DEFERRALS = 5  # then it is raised wherever it lands
    LOST_AFTER = 10.0  # s after a raise without the node stopping: it was swallowed

    def __init__(self):
        """Install the handlers (main thread only; elsewhere signals stay as they are)."""
        self.received = []  # the signals that arrived (and the retries)
        self.armed = True  # the next one raises KeyboardInterrupt
        self.stopping = False  # the node is stopping: nothing raises any more
        self.pending = None  # a signal to raise, which landed inside rclpy
        self.deferrals = 0  # retries of the pending one
        self.raised_at = None  # time.monotonic() of the last KeyboardInterrupt raised
        self.guard = None
        self._wakeup = None
        self._since = 0.0  # of the pending signal's last try
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in STOP_SIGNALS:
            signal.signal(signum, self._handle)
        reader, writer = socket.socketpair()
        writer.setblocking(False)
        reader.settimeout(min(self.RETRY_AFTER, self.LOST_AFTER) / 2)
        self._sockets = (reader, writer)
        self._old_wakeup_fd = signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
        self._wakeup = threading.Thread(target=self._wake, args=(reader,), daemon=True,
                                        name='stop-signal-wakeup')
        self._wakeup.start()

    def _wake(self, reader):
        while True:
            try:
                if not reader.recv(64):
                    return
            except TimeoutError:
                self._retry()
                continue
            except OSError:
                return
            guard = self.guard
            if guard is not None:
                try:
                    guard.trigger()
                except Exception:  # noqa: B902 - the node is being destroyed
                    pass
            self._retry()

    def _retry(self):
        """In the wake-up thread: try a pending interrupt again, or raise a lost one again."""
        if self.stopping:
            return
        now = time.monotonic()
        if self.pending is not None:
            if now - self._since >= self.RETRY_AFTER:
                self.deferrals += 1
                self._since = now
                self._signal_main(self.pending)
        elif self.raised_at is not None and now - self.raised_at >= self.LOST_AFTER:
            self.raised_at = None
            self.armed = True
            self._signal_main(signal.SIGINT)

    @staticmethod
    def _signal_main(signum):
        # A real signal to the main thread: it also ends a blocking call there (EINTR),
        # where _thread.interrupt_main would wait for the call to return.
        signal.pthread_kill(threading.main_thread().ident, signum)

    def _handle(self, signum, frame):
        self.received.append(signum)
        if self.stopping:
            return
        if not (self.armed or self.pending is not None or signum == signal.SIGTERM):
            return
        if self.deferrals < self.MAX_DEFERRALS and in_rclpy(frame):
            if self.pending is None:
                self.pending, self._since = signum, time.monotonic()
            return
        self._raise(signum)

    def _raise(self, signum):
        self.armed = False
        self.pending = None
        self.deferrals = 0
        self.raised_at = time.monotonic()
        raise KeyboardInterrupt(signal.Signals(signum).name)

    def raise_pending(self):
        """Raise a pending interrupt (the wake-up guard's callback: the node's own code)."""
        if self.pending is not None and not self.stopping:
            self._raise(self.pending)

    def close(self):
        """
        Stop the wake-up thread and ignore SIGINT and SIGTERM from now on.

        The process is ending: a late Ctrl-C (a terminal and ros2 launch each send one)
        must not kill it on the way out. Python puts back the default action of a signal
        that has a Python handler when the interpreter finalizes, so a SIGINT then would
        end the process as killed by SIGINT (exit -2) instead of with the node's status;
        an ignored signal stays ignored.
        """
        self.stopping = True
        if self._wakeup is None:
            return
        for signum in STOP_SIGNALS:
            signal.signal(signum, signal.SIG_IGN)
        signal.set_wakeup_fd(self._old_wakeup_fd)
        for sock in self._sockets:
            sock.close()
        self._wakeup = None


def run_node(node_class, name, args=None, spin=spin_forever, interrupted_status=0):
    """
    Run ``node_class()`` with ``spin(node)`` and return the process exit status.

    A ValueError from the constructor is a bad parameter: it is logged as FATAL
    under ``name`` without a traceback and gives status 1. Ctrl-C, SIGTERM or an
    external shutdown gives ``interrupted_status``, also when it lands in the middle
    of a callback that then fails to publish on a shut-down context. The node is
    destroyed while its context is still valid, whatever signals follow.
    """
    # DDS discovery stays on this machine unless the caller chose otherwise (multi-host
    # deployments set ROS_AUTOMATIC_DISCOVERY_RANGE=SUBNET explicitly).
    os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
    signals = StopSignals()
    node = None
    try:
        rclpy.init(args=args, signal_handler_options=rclpy.signals.SignalHandlerOptions.NO)
        try:
            node = node_class()
            refuse_undeclared(node)  # rclpy would keep a misspelt override silently
        except ValueError as error:
            rclpy.logging.get_logger(name).fatal(str(error))
            return 1
        if signals.received:  # arrived while the constructor caught exceptions itself
            raise KeyboardInterrupt
        signals.guard = node.create_guard_condition(signals.raise_pending)
        return spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        return interrupted_status
    except Exception:  # noqa: B902 - only a failure caused by the shutdown is forgiven
        if signals.received or (node is not None and not rclpy.ok()):
            return interrupted_status
        raise
    finally:
        _shut_down(node, signals)


def _shut_down(node, signals):
    """Destroy ``node`` and the context; a signal arriving now is already ignored."""
    signals.stopping = True  # from now on a signal is noted, not raised
    try:
        signals.guard = None
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    finally:
        signals.close()
