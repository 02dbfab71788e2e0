"""
K LIBERO envs in K worker processes, stepped concurrently.

Each worker creates its LiberoEnv lazily inside the process (one GL context per
process, never shared) from keyword arguments, then serves commands over a pipe.
Workers are started with the 'spawn' method so no simulator or GL state is forked.
An exception in a worker (bad action, init id out of range) is sent back and
re-raised in the caller with its original type; the worker and its env stay usable.
"""

import multiprocessing as mp
import multiprocessing.connection
import traceback

import numpy as np

from tgrpo_ros.sim.controllers import run_scripted_episode


def _worker(conn, env_kwargs):
    """Serve commands for one env until 'close' (runs in the worker process)."""
    import signal
    from tgrpo_ros.sim.libero_env import LiberoEnv
    # Ctrl-C reaches the whole process group: the parent closes its workers itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    env = None
    try:
        while True:
            try:
                command, args = conn.recv()
            except EOFError:
                break
            if command == 'close':
                conn.send(('ok', None))
                break
            try:
                if env is None:
                    env = LiberoEnv(**env_kwargs)
                if command == 'reset':
                    result = env.reset(*args)
                elif command == 'step':
                    result = env.step(*args)
                elif command == 'set_task':
                    result = env.set_task(*args)
                elif command == 'set_max_steps':
                    env.max_steps = args[0]
                    result = env.max_steps
                elif command == 'episode':
                    result = run_scripted_episode(env, *args)
                elif command == 'info':
                    result = {'task_id': env.task_id, 'instruction': env.instruction,
                              'num_init_states': env.num_init_states,
                              'max_steps': env.max_steps}
                else:
                    raise ValueError(f'Unknown command {command!r}')
                conn.send(('ok', result))
            except Exception as exc:  # noqa: B902 - forwarded to the caller
                try:
                    conn.send(('error', (exc, traceback.format_exc())))
                except Exception:  # noqa: B902 - unpicklable exception
                    conn.send(('error', (RuntimeError(repr(exc)), traceback.format_exc())))
    finally:
        if env is not None:
            env.close()
        conn.close()


class WorkerError(RuntimeError):
    """A worker process died or failed in a way that is not the caller's input."""


class VecLiberoEnv:
    """K LiberoEnv processes; batch calls send to all workers, then gather in order."""

    def __init__(self, num_envs, env_kwargs=None, start_method='spawn'):
        """Start ``num_envs`` workers; ``env_kwargs`` is one dict for all or a list of K."""
        if int(num_envs) < 1:
            raise ValueError(f'num_envs ({num_envs}) must be >= 1')
        if env_kwargs is None or isinstance(env_kwargs, dict):
            env_kwargs = [dict(env_kwargs or {}) for _ in range(num_envs)]
        if len(env_kwargs) != num_envs:
            raise ValueError(f'env_kwargs has {len(env_kwargs)} entries for {num_envs} envs')
        ctx = mp.get_context(start_method)
        self._conns, self._procs = [], []
        for index in range(num_envs):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_worker, args=(child, env_kwargs[index]),
                               name=f'libero-env-{index}', daemon=True)
            proc.start()
            child.close()
            self._conns.append(parent)
            self._procs.append(proc)
        self.num_envs = num_envs
        self._closed = False

    # ------------------------------------------------------------------ plumbing
    def _send(self, index, command, *args):
        if self._closed:
            raise WorkerError('VecLiberoEnv is closed')
        self._conns[index].send((command, args))

    def _recv(self, index):
        try:
            status, payload = self._conns[index].recv()
        except (EOFError, OSError) as exc:
            raise WorkerError(f'env worker {index} died (exit code '
                              f'{self._procs[index].exitcode})') from exc
        if status == 'error':
            exc, text = payload
            raise exc from WorkerError(f'in env worker {index}:\n{text}')
        return payload

    def submit(self, index, command, *args):
        """Send one command to worker ``index`` without waiting (pair with receive)."""
        self._send(index, command, *args)

    def receive(self, index):
        """Wait for worker ``index``'s reply; re-raises a worker-side exception."""
        return self._recv(index)

    def wait_any(self, indices, timeout=None):
        """Return the subset of ``indices`` whose worker has a reply ready."""
        by_conn = {self._conns[i]: i for i in indices}
        ready = mp.connection.wait(list(by_conn), timeout=timeout)
        return sorted(by_conn[conn] for conn in ready)

    def call(self, command, per_env_args, indices=None):
        """
        Send ``command`` with per-env argument tuples to ``indices``; return results.

        All workers run concurrently; the first error is raised after every reply
        has been collected, so no worker is left with an unread reply.
        """
        indices = list(range(self.num_envs)) if indices is None else list(indices)
        if len(per_env_args) != len(indices):
            raise ValueError(f'{len(per_env_args)} argument tuples for {len(indices)} envs')
        for index, args in zip(indices, per_env_args):
            self._send(index, command, *args)
        results, first_error = [], None
        for index in indices:
            try:
                results.append(self._recv(index))
            except Exception as exc:  # noqa: B902 - re-raised below
                results.append(None)
                first_error = first_error or exc
        if first_error is not None:
            raise first_error
        return results

    # ------------------------------------------------------------------ env API
    def reset(self, init_state_ids, indices=None):
        """Reset envs to the given init states; returns a list of obs."""
        return self.call('reset', [(int(i),) for i in init_state_ids], indices)

    def step(self, actions, convention='policy', indices=None):
        """Step envs with actions [K, 7]; returns (obs list, rewards [K], dones [K], infos)."""
        actions = np.asarray(actions, dtype=np.float64)
        results = self.call('step', [(a, convention) for a in actions], indices)
        obs, rewards, dones, infos = zip(*results)
        return list(obs), np.array(rewards), np.array(dones), list(infos)

    def set_task(self, task_ids, indices=None):
        """Switch envs to tasks (recreates a simulator only where the task changes)."""
        self.call('set_task', [(int(t),) for t in task_ids], indices)

    def info(self, indices=None):
        """Return per-env dicts: task_id, instruction, num_init_states, max_steps."""
        indices = list(range(self.num_envs)) if indices is None else indices
        return self.call('info', [()] * len(indices), indices)

    def close(self):
        """Close every env (freeing GL contexts) and join the workers; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        for conn in self._conns:
            try:
                conn.send(('close', ()))
            except (OSError, BrokenPipeError):
                pass
        for conn, proc in zip(self._conns, self._procs):
            try:
                if conn.poll(30):
                    conn.recv()
            except (EOFError, OSError):
                pass
            proc.join(timeout=30)
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=5)
            conn.close()

    def __enter__(self):
        """Use as a context manager that closes the workers."""
        return self

    def __exit__(self, *exc):
        """Close on leaving the with-block."""
        self.close()
