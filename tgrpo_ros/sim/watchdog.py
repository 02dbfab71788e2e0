"""
One LiberoEnv in a worker process, behind a watchdog on every call.

An EGL renderer can hang with no error (users of other VLA RL frameworks report
it); an env stepped in the caller's process would then block it for good.
``WatchdogEnv`` runs the env in a ``VecLiberoEnv`` worker (its own process and GL
context) and waits at most ``timeout`` s for each reset and step (``create_timeout``
for the first call, which builds the simulator): a call past it kills the worker
(SIGKILL works on a hung or stopped process) and raises ``EnvHang``. The caller
makes a new WatchdogEnv and runs the episode again (the sim bridge does).
"""

import os
import signal

from tgrpo_ros.sim.libero_env import episode_step_limit
from tgrpo_ros.sim.vec_env import VecLiberoEnv


class EnvHang(RuntimeError):
    """The env worker did not answer in time and was killed."""


class WatchdogEnv:
    """The LiberoEnv calls a sim bridge uses, each bounded by a time-out."""

    def __init__(self, timeout, create_timeout=300.0, **env_kwargs):
        """Start the worker and build its env (``env_kwargs`` as for ``LiberoEnv``)."""
        if not timeout > 0:
            raise ValueError(f'timeout ({timeout} s) must be > 0')
        self.timeout = float(timeout)
        self.suite = env_kwargs.get('suite', 'libero_object')
        self._max_steps = env_kwargs.get('max_steps')
        self._vec = VecLiberoEnv(1, env_kwargs)
        self.pid = self._vec._procs[0].pid
        self._call('info', timeout=create_timeout)

    def _call(self, command, *args, timeout=None):
        timeout = self.timeout if timeout is None else timeout
        self._vec.submit(0, command, *args)
        if not self._vec.wait_any([0], timeout=timeout):
            self.kill()
            raise EnvHang(f'env worker (pid {self.pid}) gave no answer to {command!r} in '
                          f'{timeout:.1f} s; killed it')
        return self._vec.receive(0)

    @property
    def max_steps(self):
        """Return the policy steps per episode."""
        return episode_step_limit(self.suite, self._max_steps)

    @max_steps.setter
    def max_steps(self, value):
        """Change the episode limit (None = the suite's), in the worker's env too."""
        self._call('set_max_steps', value)
        self._max_steps = value

    def set_task(self, task_id):
        """Switch the env to task ``task_id``."""
        return self._call('set_task', int(task_id))

    def reset(self, init_state_id=0):
        """Reset to fixed init state ``init_state_id``; return the first observation."""
        return self._call('reset', int(init_state_id))

    def step(self, action, convention='policy'):
        """Apply one action; return (obs, reward, done, info), or raise EnvHang."""
        return self._call('step', action, convention)

    def kill(self):
        """Kill the worker at once (it may be hung) and close the pipe."""
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self._vec._procs[0].join(timeout=10)
        self._vec._closed = True
        self._vec._conns[0].close()

    def close(self):
        """Close the env and its worker (kills it if it does not answer)."""
        if not self._vec._closed:
            try:
                self._vec.close()
            except Exception:  # noqa: B902 - closing must not fail
                self.kill()
