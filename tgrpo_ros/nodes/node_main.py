"""
The ``main()`` shared by every node: init, spin, clean shutdown, exit status.

Signals. rclpy's own handler shuts the context down the moment SIGINT or SIGTERM
arrives, so a node cannot publish anything afterwards (the safety controller's
final zero twist failed with "publisher's context is invalid"). ``run_node``
therefore starts rclpy without its signal handlers and installs its own:

* the first SIGINT or SIGTERM raises KeyboardInterrupt in the main thread (a
  wake-up guard condition makes a waiting executor return to Python at once);
* the node's shutdown path then runs with the context still valid: the node's
  ``destroy_node`` (which may publish, e.g. the final zero twist), then
  ``rclpy.try_shutdown``;
* every later SIGINT or SIGTERM is noted and ignored (and from the end of the
  clean-up, ignored at the OS level), so the second Ctrl-C that a terminal and
  ``ros2 launch`` both deliver cannot interrupt the clean-up, nor kill the process
  while the interpreter finalizes (exit -2 instead of the node's status).
"""

import os
import signal
import socket
import threading

import rclpy
from rclpy.executors import ExternalShutdownException

from tgrpo_ros.nodes.params import refuse_undeclared

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def spin_forever(node):
    """Spin until interrupted; a server node has no natural end."""
    rclpy.spin(node)
    return 0


class StopSignals:
    """
    SIGINT and SIGTERM as one KeyboardInterrupt, then noted and ignored, but for SIGTERM.

    A SIGTERM raises again while the node has not begun to stop (``stopping``): it is
    launch's escalation after ``sigterm_timeout``, or a ``kill``, and means the first
    KeyboardInterrupt was lost. Library code can swallow one: in a fresh-clone run a
    sim bridge that got Ctrl-C while LIBERO reset its scene finished the reset, ignored
    launch's SIGINT and SIGTERM, and was SIGKILLed 60 s later.

    Python runs a signal handler only between bytecodes, and an executor waits in C:
    the C-level handler writes to a socket (``signal.set_wakeup_fd``), and a thread
    reading it triggers ``guard`` (a guard condition of the node) so that the wait
    returns and the handler runs.
    """

    def __init__(self):
        """Install the handlers (main thread only; elsewhere signals stay as they are)."""
        self.received = []  # the signals that arrived
        self.armed = True  # the next one raises KeyboardInterrupt
        self.stopping = False  # the node is stopping: nothing raises any more
        self.guard = None
        self._wakeup = None
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in STOP_SIGNALS:
            signal.signal(signum, self._handle)
        reader, writer = socket.socketpair()
        writer.setblocking(False)
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
            except OSError:
                return
            guard = self.guard
            if guard is not None:
                try:
                    guard.trigger()
                except Exception:  # noqa: B902 - the node is being destroyed
                    pass

    def _handle(self, signum, frame):
        self.received.append(signum)
        if not self.stopping and (self.armed or signum == signal.SIGTERM):
            self.armed = False
            raise KeyboardInterrupt(signal.Signals(signum).name)

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
        signals.guard = node.create_guard_condition(lambda: None)
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
