"""
A LIBERO environment with OpenVLA-faithful observations and a dense stage reward.

One ``LiberoEnv`` holds one simulator (and one GL context): create one per process.
Heavy imports (mujoco, robosuite, libero) happen when the first env is created, after
``MUJOCO_GL`` (default ``egl``) and ``LP_NUM_THREADS`` (default ``1``) are set.
Facts: docs/references.md §3.
"""

from dataclasses import dataclass
import gc
import os

import numpy as np

from tgrpo_ros.policy.contract import libero_gripper, preprocess_libero_image
from tgrpo_ros.sim.reward import RewardConfig, stage_reward

# Step limits per suite (policy steps after the wait steps), from OpenVLA's LIBERO
# evaluation script: the longest training demo of each suite, rounded up.
SUITE_MAX_STEPS = {
    'libero_spatial': 220,  # longest demo 193 steps
    'libero_object': 280,  # longest demo 254 steps
    'libero_goal': 300,  # longest demo 270 steps
    'libero_10': 520,  # longest demo 505 steps
    'libero_90': 400,  # longest demo 373 steps
}
SUITES = tuple(SUITE_MAX_STEPS)
# Tasks per suite and init states per task, as LIBERO's benchmark ships them
# (``get_suite(s).n_tasks``, ``get_task_init_states``; test_sim_env checks them): the
# launchers check task and init-state ids against these before anything starts.
SUITE_TASKS = {'libero_spatial': 10, 'libero_object': 10, 'libero_goal': 10,
               'libero_10': 10, 'libero_90': 90}
INIT_STATES_PER_TASK = 50
NUM_WAIT_STEPS = 10  # dummy steps after each reset while objects settle (OpenVLA protocol)
WAIT_ACTION = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -1.0)  # hold still, gripper open
ACTION_DIM = 7  # dx, dy, dz, droll, dpitch, dyaw, gripper
CAMERA_SIZES = (128, 224, 256)  # pixels, square agentview / wrist renders
CONVENTIONS = ('policy', 'env')
GL_BACKENDS = ('egl', 'osmesa', 'glfw')
AGENTVIEW = 'agentview'
WRIST = 'robot0_eye_in_hand'


def check_ids(suite, tasks=(), init_states=()):
    """Raise ValueError (one line) for a suite, task id or init-state id LIBERO lacks."""
    if suite not in SUITE_TASKS:
        raise ValueError(f'Unknown suite {suite!r}; available: {", ".join(SUITES)}')
    count = SUITE_TASKS[suite]
    bad = [int(t) for t in tasks if not 0 <= int(t) < count]
    if bad:
        raise ValueError(f'task ids {bad} are out of range for {suite} ({count} tasks: '
                         f'0..{count - 1})')
    bad = [int(s) for s in init_states if not 0 <= int(s) < INIT_STATES_PER_TASK]
    if bad:
        run = len(bad) > 2 and bad == list(range(bad[0], bad[-1] + 1))
        shown = f'{bad[0]}..{bad[-1]}' if run else bad
        raise ValueError(f'init state ids {shown} are out of range for {suite} '
                         f'({INIT_STATES_PER_TASK} init states per task: 0..'
                         f'{INIT_STATES_PER_TASK - 1})')


class SimError(RuntimeError):
    """The simulator could not be created or used as asked."""


def episode_step_limit(suite, env_max_steps=None, assignment_max_steps=0):
    """
    Return the policy steps of one episode: the env's limit, lowered by an assignment's.

    The env's limit is ``env_max_steps`` (None or 0: ``SUITE_MAX_STEPS[suite]``); an
    assignment's ``max_steps`` > 0 lowers it. The env must run the episode with this
    limit (``LiberoEnv.max_steps``): the absorbing success bonus counts the steps left
    before it (``tgrpo_ros.sim.reward``), so the sim bridge and the in-process group
    rollout score the same episode identically.
    """
    if suite not in SUITE_MAX_STEPS:
        raise ValueError(f'Unknown suite {suite!r}; available: {", ".join(SUITES)}')
    limit = int(env_max_steps) if env_max_steps else SUITE_MAX_STEPS[suite]
    if assignment_max_steps and int(assignment_max_steps) > 0:
        limit = min(limit, int(assignment_max_steps))
    if limit < 1:
        raise ValueError(f'step limit {limit} (env max_steps {env_max_steps}, assignment '
                         f'max_steps {assignment_max_steps}) must be >= 1')
    return limit


@dataclass
class EnvConfig:
    """Everything that selects and shapes one LIBERO environment."""

    suite: str = 'libero_object'
    """Benchmark suite name, one of SUITES."""
    task_id: int = 0
    """Task index within the suite (0..9 for the 10-task suites)."""
    camera_size: int = 128
    """Render size (px) of the square cameras; the policy view is always 224 px."""
    wrist_camera: bool = False
    """Also render the wrist camera (obs['wrist_image'])."""
    render: bool = True
    """Render cameras at all; False gives state-only obs (no GL context), for the expert."""
    max_steps: int = None
    """Policy steps per episode after the wait steps; None uses SUITE_MAX_STEPS[suite]."""
    multisample: bool = True
    """4x multisample anti-aliasing (MuJoCo default); False renders ~2x faster."""
    seed: int = 0
    """Simulator seed (LIBERO's eval uses 0; physics is deterministic given a state)."""

    def __post_init__(self):
        """Check the values that need no simulator."""
        if self.suite not in SUITE_MAX_STEPS:
            raise ValueError(f'Unknown suite {self.suite!r}; available: {", ".join(SUITES)}')
        if self.camera_size not in CAMERA_SIZES:
            raise ValueError(f'camera_size ({self.camera_size}) must be one of {CAMERA_SIZES}')
        if self.max_steps is not None and int(self.max_steps) < 1:
            raise ValueError(f'max_steps ({self.max_steps}) must be >= 1 or None')
        if self.wrist_camera and not self.render:
            raise ValueError('wrist_camera=True needs render=True')

    @property
    def step_limit(self):
        """Return the policy steps per episode."""
        return int(self.max_steps) if self.max_steps is not None else SUITE_MAX_STEPS[self.suite]


def configure_gl():
    """
    Set MUJOCO_GL (default egl) and LP_NUM_THREADS (default 1) before mujoco loads.

    Returns the backend name; raises SimError for an unknown one.
    """
    backend = os.environ.setdefault('MUJOCO_GL', 'egl')
    os.environ.setdefault('LP_NUM_THREADS', '1')
    if backend == 'egl':
        os.environ.setdefault('PYOPENGL_PLATFORM', 'egl')
    if backend not in GL_BACKENDS:
        raise SimError(f'Unknown MUJOCO_GL {backend!r}; available: {", ".join(GL_BACKENDS)}')
    return backend


_GL_CHECKED = set()  # backends that made a context in this process


def _gl_help(backend, exc):
    return (f'Could not use the {backend!r} OpenGL backend ({type(exc).__name__}: {exc}). '
            'Headless rendering needs MUJOCO_GL=egl with the Debian packages libegl1 '
            'libegl-mesa0 libgl1-mesa-dri, or MUJOCO_GL=osmesa with libosmesa6; '
            'state-only envs take render=False (MUJOCO_GL must still name a loadable backend).')


def check_gl_backend(render=True):
    """Fail early with SimError if mujoco cannot load or (render) cannot make a GL context."""
    backend = configure_gl()
    try:
        import mujoco
    except Exception as exc:  # noqa: B902 - PyOpenGL raises many types
        raise SimError(_gl_help(backend, exc)) from exc
    if render and backend not in _GL_CHECKED:
        try:
            context = mujoco.GLContext(64, 64)  # pixels
            context.make_current()
            context.free()
        except Exception as exc:  # noqa: B902 - PyOpenGL raises many types
            raise SimError(_gl_help(backend, exc)) from exc
        _GL_CHECKED.add(backend)
    return backend


def get_suite(suite):
    """Return the libero benchmark object of ``suite``, with a clear error if unknown."""
    if suite not in SUITE_MAX_STEPS:
        raise ValueError(f'Unknown suite {suite!r}; available: {", ".join(SUITES)}')
    configure_gl()
    from libero.libero import benchmark
    return benchmark.get_benchmark(suite)()


def task_instructions(suite='libero_object'):
    """Return the language instruction of every task in ``suite`` (no simulator)."""
    bench = get_suite(suite)
    return [bench.get_task(i).language for i in range(bench.n_tasks)]


def check_action(action, convention='policy'):
    """Return ``action`` as a float64 [7] copy in LIBERO's convention, or raise ValueError."""
    if convention not in CONVENTIONS:
        raise ValueError(f'Unknown convention {convention!r}; available: {", ".join(CONVENTIONS)}')
    arr = np.array(action, dtype=np.float64, copy=True)
    if arr.shape != (ACTION_DIM,):
        raise ValueError(f'action must have shape ({ACTION_DIM},), got {arr.shape}')
    if not np.all(np.isfinite(arr)):
        raise ValueError(f'action has non-finite values: {arr.tolist()}')
    if convention == 'policy':
        arr = libero_gripper(arr)
    return arr


def raise_lost_interrupt(error):
    """
    Raise KeyboardInterrupt if ``error`` was raised while handling one.

    robosuite's ``Observable._check_sensor_validity`` catches everything with a bare
    ``except:`` and raises ``ValueError('Current sensor for observable ... is invalid.')``
    instead, and it renders each camera inside that ``try`` while an env is built. A
    Ctrl-C that lands there came out of env creation as that ValueError (4 of 36
    interrupts sent at random times during a task switch and reset), which a caller
    would take for bad input and carry on. With no interrupt behind ``error`` this
    returns, and the caller raises ``error`` itself.
    """
    seen = set()
    cause = error
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, KeyboardInterrupt):
            if cause is error:
                return
            raise KeyboardInterrupt(
                f'interrupted while building the LIBERO env (robosuite raised {error!r} '
                'in its place)') from error
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__


class LiberoEnv:
    """
    One LIBERO task: reset to an init state, step 7-dim actions, dense reward.

    obs dict: 'image' uint8 [224, 224, 3] (the policy's view of agentview; absent when
    render=False), 'wrist_image' (same pipeline, when wrist_camera), 'instruction' str,
    'state' dict of privileged float arrays (eef_pos, eef_quat, gripper_qpos,
    object_pos, basket_pos; world frame, m). info: 'success', 'stage', 'reward_state',
    'steps' (policy steps so far).
    """

    def __init__(self, suite='libero_object', task_id=0, camera_size=128, wrist_camera=False,
                 reward=None, max_steps=None, render=True, multisample=True, seed=0):
        """Create the simulator of ``task_id`` (~5-8 s); see EnvConfig for the arguments."""
        self.config = EnvConfig(suite=suite, task_id=task_id, camera_size=camera_size,
                                wrist_camera=wrist_camera, render=render, max_steps=max_steps,
                                multisample=multisample, seed=seed)
        self.reward_config = reward or RewardConfig()
        self._env = None
        check_gl_backend(render)
        self._bench = get_suite(suite)
        self._init_states = None
        self._episode_over = True
        self._open(task_id)

    # ------------------------------------------------------------------ lifecycle
    def _open(self, task_id):
        """Create the underlying env for ``task_id`` (closing any previous one)."""
        n_tasks = self._bench.n_tasks
        if not isinstance(task_id, (int, np.integer)) or not 0 <= task_id < n_tasks:
            raise ValueError(f'task_id {task_id!r} out of range for {self.config.suite}: '
                             f'valid 0..{n_tasks - 1}')
        self.close()
        from libero.libero import get_libero_path
        task = self._bench.get_task(int(task_id))
        bddl = os.path.join(get_libero_path('bddl_files'), task.problem_folder, task.bddl_file)
        self._init_states = self._bench.get_task_init_states(int(task_id))  # [50, state_dim]
        self.config.task_id = int(task_id)
        self.instruction = task.language
        self._env = self._create(bddl)
        try:
            self._env.seed(self.config.seed)
            self.target_object, self.basket = self._objects_of_interest()
        except BaseException:  # noqa: B902 - Ctrl-C too: no half-made env keeps its context
            self.close()
            raise
        self._episode_over = True

    def _create(self, bddl):
        """Build the LIBERO env; close it again if its first reset fails."""
        cfg = self.config
        from libero.libero.envs.env_wrapper import ControlEnv
        cameras = [AGENTVIEW] + ([WRIST] if cfg.wrist_camera else [])
        try:
            env = ControlEnv(bddl_file_name=bddl, hard_reset=False, camera_names=cameras,
                             camera_heights=cfg.camera_size, camera_widths=cfg.camera_size,
                             use_camera_obs=cfg.render, has_offscreen_renderer=cfg.render,
                             has_renderer=False)
        except Exception as exc:  # noqa: B902 - only to find a Ctrl-C robosuite replaced
            raise_lost_interrupt(exc)
            raise
        # Ctrl-C included: a GL context that outlives its env is freed at interpreter exit,
        # after robosuite's atexit eglTerminate, and prints an EGLError traceback.
        try:
            env.reset()  # creates the render context with hard_reset=False
            if cfg.render and not cfg.multisample:
                _disable_multisampling(env.env.sim)
        except BaseException as exc:  # noqa: B902 - close what was built, then re-raise
            env.close()
            raise_lost_interrupt(exc)
            raise
        return env

    def set_task(self, task_id):
        """
        Switch to another task of the same suite: recreates the simulator (~5-8 s).

        The same task id is a no-op. Call reset() afterwards.
        """
        if self._env is not None and int(task_id) == self.config.task_id:
            return
        self._open(task_id)

    def close(self):
        """Free the simulator and its GL context; safe to call twice."""
        env, self._env = self._env, None
        self._episode_over = True
        if env is not None:
            env.close()
            gc.collect()

    def __enter__(self):
        """Use as a context manager that closes the env."""
        return self

    def __exit__(self, *exc):
        """Close on leaving the with-block."""
        self.close()

    def __del__(self):
        """Close on garbage collection too (no GL context outlives the object)."""
        try:
            self.close()
        except Exception:  # noqa: B902 - interpreter shutdown
            pass

    # ------------------------------------------------------------------ properties
    @property
    def closed(self):
        """Return True once close() ran."""
        return self._env is None

    @property
    def num_init_states(self):
        """Return the number of fixed initial states of the task (50 in LIBERO)."""
        return len(self._init_states)

    @property
    def task_id(self):
        """Return the current task index."""
        return self.config.task_id

    @property
    def max_steps(self):
        """Return the policy steps per episode (after the wait steps)."""
        return self.config.step_limit

    @max_steps.setter
    def max_steps(self, value):
        """Change the episode limit (None = the suite's), counted in policy steps."""
        if value is not None and int(value) < 1:
            raise ValueError(f'max_steps ({value}) must be >= 1 or None')
        self.config.max_steps = None if value is None else int(value)

    @property
    def raw_env(self):
        """Return the underlying libero ControlEnv (privileged access: expert, tests)."""
        self._require_open()
        return self._env

    # ------------------------------------------------------------------ episode
    def reset(self, init_state_id=0):
        """
        Start an episode from fixed init state ``init_state_id`` and run the wait steps.

        Uses a soft reset (hard_reset=False, ~0.3 s) plus NUM_WAIT_STEPS dummy steps with
        the cameras off; returns the first observation.
        """
        self._require_open()
        n = self.num_init_states
        if not isinstance(init_state_id, (int, np.integer)) or not 0 <= init_state_id < n:
            raise ValueError(f'init_state_id {init_state_id!r} out of range for task '
                             f'{self.task_id}: valid 0..{n - 1}')
        env = self._env
        self._set_cameras(False)
        try:
            env.reset()
            env.set_init_state(self._init_states[int(init_state_id)])
            for _ in range(NUM_WAIT_STEPS):
                raw, _, _, _ = env.step(np.asarray(WAIT_ACTION))
        finally:
            self._set_cameras(True)
        if self.config.render:
            raw = env.env._get_observations(force_update=True)
        self.init_state_id = int(init_state_id)
        self._steps = 0
        self._succeeded = False
        self._episode_over = False
        self._rest_z = float(raw[self.target_object + '_pos'][2])  # m, settled object height
        self._last_raw = raw
        return self._observation(raw)

    def step(self, action, convention='policy'):
        """
        Apply one 7-dim action; return (obs, reward, done, info).

        convention 'policy': gripper in [0, 1] (1 open) -> LIBERO's -1 open / +1 close;
        'env': the raw LIBERO action in [-1, 1]. done turns true on success or at the
        step limit. A bad action raises ValueError and leaves the episode untouched.
        """
        self._require_open()
        if self._episode_over:
            raise SimError('episode is over (or not started): call reset(init_state_id)')
        env_action = check_action(action, convention)
        raw, _, _, _ = self._env.step(env_action)
        self._last_raw = raw
        self._steps += 1
        success = bool(self._env.check_success())
        first_success = success and not self._succeeded
        self._succeeded = self._succeeded or success
        steps_left = self.max_steps - self._steps
        state = self.reward_state(raw, success=success, first_success=first_success,
                                  steps_left=steps_left)
        reward, stage = stage_reward(state, self.reward_config)
        done = success or steps_left <= 0
        self._episode_over = done
        info = {'success': success, 'stage': stage, 'reward_state': state,
                'steps': self._steps}
        return self._observation(raw), reward, done, info

    def reward_state(self, raw=None, success=None, first_success=False, steps_left=0):
        """Build the reward state dict (see reward.stage_reward) from the simulator now."""
        self._require_open()
        raw = self._last_raw if raw is None else raw
        inner = self._env.env
        gripper = inner.robots[0].gripper
        # Held: the object touches both fingers (pads or finger bodies: the ketchup
        # bottle is held by the finger bodies, which robosuite's pad-only check misses).
        fingers = [gripper.important_geoms['left_finger'], gripper.important_geoms['right_finger']]
        grasped = bool(inner._check_grasp(gripper=fingers,
                                          object_geoms=inner.get_object(self.target_object)))
        if success is None:
            success = bool(self._env.check_success())
        object_pos = np.array(raw[self.target_object + '_pos'], dtype=np.float64)
        return {
            'eef_pos': np.array(raw['robot0_eef_pos'], dtype=np.float64),
            'object_pos': object_pos,
            'basket_pos': np.array(raw[self.basket + '_pos'], dtype=np.float64),
            'object_lift': float(object_pos[2] - self._rest_z),
            'grasped': grasped,
            'success': bool(success),
            'first_success': bool(first_success),
            'steps_left': int(steps_left),
        }

    def refresh(self):
        """Re-read the observation after the sim state was changed directly (tests)."""
        self._require_open()
        inner = self._env.env
        inner.sim.forward()
        self._last_raw = inner._get_observations(force_update=True)
        return self._observation(self._last_raw)

    # ------------------------------------------------------------------ privileged
    def object_bounds(self, name=None):
        """World-frame axis-aligned box (lo [3], hi [3], m) of an object's collision geoms."""
        self._require_open()
        import mujoco
        inner = self._env.env
        name = name or self.target_object
        model, data = inner.sim.model._model, inner.sim.data._data
        obj = inner.get_object(name)
        lo, hi = np.full(3, np.inf), np.full(3, -np.inf)
        for geom in obj.contact_geoms:
            gid = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_GEOM, geom)
            centre_local, half = model.geom_aabb[gid, :3], model.geom_aabb[gid, 3:]
            rot = data.geom_xmat[gid].reshape(3, 3)
            centre = data.geom_xpos[gid] + rot @ centre_local
            extent = np.abs(rot) @ half
            lo, hi = np.minimum(lo, centre - extent), np.maximum(hi, centre + extent)
        if not np.all(np.isfinite(lo)):
            raise SimError(f'object {name!r} has no collision geoms')
        return lo, hi

    def object_names(self):
        """Return the names of the movable objects in the scene."""
        self._require_open()
        return list(self._env.env.objects_dict)

    # ------------------------------------------------------------------ internals
    def _require_open(self):
        if self._env is None:
            raise SimError('env is closed; create a new LiberoEnv')

    def _objects_of_interest(self):
        names = list(self._env.obj_of_interest)
        if len(names) < 2:
            raise SimError(f'task {self.task_id} names objects of interest {names}; the dense '
                           'reward needs a target object and a container')
        return names[0], names[1]

    def _set_cameras(self, enabled):
        if not self.config.render:
            return
        cams = [AGENTVIEW] + ([WRIST] if self.config.wrist_camera else [])
        for cam in cams:
            self._env.env.modify_observable(cam + '_image', 'enabled', enabled)

    def _observation(self, raw):
        obs = {'instruction': self.instruction, 'state': {
            'eef_pos': np.array(raw['robot0_eef_pos']),
            'eef_quat': np.array(raw['robot0_eef_quat']),  # xyzw
            'gripper_qpos': np.array(raw['robot0_gripper_qpos']),
            'object_pos': np.array(raw[self.target_object + '_pos']),
            'basket_pos': np.array(raw[self.basket + '_pos']),
        }}
        if self.config.render:
            obs['image'] = preprocess_libero_image(raw[AGENTVIEW + '_image'])
            if self.config.wrist_camera:
                obs['wrist_image'] = preprocess_libero_image(raw[WRIST + '_image'])
        return obs


def _disable_multisampling(sim):
    """Rebuild the offscreen MuJoCo render context without multisample anti-aliasing."""
    import mujoco
    ctx = sim._render_context_offscreen
    sim.model._model.vis.quality.offsamples = 0
    ctx.gl_ctx.make_current()
    ctx.con.free()
    ctx.con = mujoco.MjrContext(sim.model._model, mujoco.mjtFontScale.mjFONTSCALE_150)
    mujoco.mjr_setBuffer(mujoco.mjtFramebuffer.mjFB_OFFSCREEN, ctx.con)
