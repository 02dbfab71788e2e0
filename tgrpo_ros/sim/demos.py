"""
Record scripted-expert demonstrations for supervised fine-tuning.

Format: one compressed NumPy archive per episode, ``task{TT}_init{II}.npz``, plus
``index.json`` listing every file with its metadata. Why npz: numpy alone reads it
(no h5py or ROS needed by a training script), each episode is one self-contained file
written atomically as soon as it finishes (an interrupted run keeps every finished
episode), and random access per episode is one ``np.load``. Episodes for ROS tooling
go through tgrpo_ros.nodes.messages / rosbag2 instead.

Arrays in each file (T policy steps):

* ``images``       uint8 [T, 224, 224, 3]  the policy's view before each action
* ``actions``      float32 [T, 7]          policy convention (gripper 1 open, 0 close)
* ``env_actions``  float32 [T, 7]          LIBERO convention (gripper -1 open, +1 close)
* ``rewards``      float32 [T]             dense stage reward
* ``stages``       int8 [T]                reward stage after each step
* ``noop``         bool [T]                the frame is a no-op (see below); absent in
  files written before this flag existed, where ``load_demo`` computes it
* ``instruction``  str; ``task_id``, ``init_state_id``, ``length`` int; ``success`` bool;
  ``suite`` str; ``camera_size`` int; ``dart_sigma`` float (0 when absent)

No-op frames. A frame is a no-op when every translation component of the expert's
action is below ``NOOP_THRESHOLD`` (0.05) in magnitude and its gripper command equals
the previous frame's (``noop_mask``). These are the expert's "close the gripper and
wait" frames: a single-frame policy cannot tell them from the moment to lift, and
cloning them leaves it holding the object forever (docs/sft.md). OpenVLA's own LIBERO
training data drops no-ops the same way (the ``*_no_noops`` datasets). Every frame is
written and flagged; ``tgrpo_sft`` drops the flagged ones by default.

DART. With ``--dart-sigma S`` the env executes the expert's action plus Gaussian noise
of standard deviation S on the 6 arm dims (env units, where the expert's moves are at
most 1), while ``actions``/``env_actions`` keep the clean expert action as the label,
so the data also covers the states from which the expert recovers. Off by default.

Console entry: ``tgrpo_demos``.
"""

import argparse
import json
import os
import sys

import numpy as np

from tgrpo_ros import provenance
from tgrpo_ros.sim.evaluate import _JobQueue, _parse_tasks, _progress, _run_scripted
from tgrpo_ros.sim.evaluate import EvalConfig, ScriptedPolicy
from tgrpo_ros.sim.libero_env import CAMERA_SIZES, SUITES

ARRAY_KEYS = ('images', 'actions', 'env_actions', 'rewards', 'stages')
NOOP_THRESHOLD = 0.05  # per translation component, in the expert's action units


def noop_mask(actions, threshold=NOOP_THRESHOLD):
    """
    Flag the no-op frames of one episode's actions [T, 7]; return bool [T].

    A frame is a no-op when |a_x|, |a_y| and |a_z| are all below ``threshold`` and its
    gripper command equals the previous frame's (the first frame compares with itself).
    Either gripper convention works: only equality of the last column is tested.
    """
    actions = np.asarray(actions, dtype=np.float64)
    if actions.ndim != 2 or actions.shape[1] != 7:
        raise ValueError(f'actions must be [T, 7], got shape {list(actions.shape)}')
    if not threshold > 0:
        raise ValueError(f'threshold must be > 0, got {threshold!r}')
    still = np.all(np.abs(actions[:, :3]) < threshold, axis=1)
    gripper = actions[:, 6]
    previous = np.concatenate([gripper[:1], gripper[:-1]])
    return still & (gripper == previous)


def demo_filename(task_id, init_state_id):
    """File name of one demonstration episode."""
    return f'task{int(task_id):02d}_init{int(init_state_id):02d}.npz'


def save_demo(result, out_dir, suite, camera_size, dart_sigma=0.0):
    """Write one recorded episode atomically; return its index entry."""
    name = demo_filename(result['task_id'], result['init_state_id'])
    path = os.path.join(out_dir, name)
    tmp = path + '.tmp.npz'
    noop = noop_mask(result['env_actions'])
    np.savez_compressed(
        tmp, **{k: result[k] for k in ARRAY_KEYS}, noop=noop,
        instruction=np.array(result['instruction']), task_id=np.int64(result['task_id']),
        init_state_id=np.int64(result['init_state_id']), length=np.int64(result['length']),
        success=np.bool_(result['success']), suite=np.array(suite),
        camera_size=np.int64(camera_size), dart_sigma=np.float64(dart_sigma))
    os.replace(tmp, path)
    return {'file': name, 'task_id': result['task_id'],
            'init_state_id': result['init_state_id'], 'instruction': result['instruction'],
            'success': result['success'], 'length': result['length'],
            'return': result['return'], 'noop_frames': int(noop.sum())}


def load_demo(path):
    """Read one demonstration file into a dict of arrays and plain values."""
    with np.load(path, allow_pickle=False) as data:
        out = {k: data[k] for k in data.files}
    for key in ('instruction', 'suite'):
        out[key] = str(out[key])
    for key in ('task_id', 'init_state_id', 'length', 'camera_size'):
        out[key] = int(out[key])
    out['success'] = bool(out['success'])
    out['dart_sigma'] = float(out.get('dart_sigma', 0.0))
    if 'noop' not in out:  # written before the flag existed
        out['noop'] = noop_mask(out['env_actions'])
    return out


def record_demos(out_dir, suite='libero_object', tasks=None, num_init_states=50,
                 first_init_state=0, num_envs=2, camera_size=256, only_success=True,
                 progress=True, multisample=True, dart_sigma=0.0, seed=0):
    """
    Run the expert with cameras on and write demos; return the index list.

    ``dart_sigma`` > 0 injects DART noise into the executed actions (module docstring);
    ``seed`` seeds that noise (episode k uses seed + k).
    """
    if not dart_sigma >= 0.0:
        raise ValueError(f'dart_sigma must be >= 0, got {dart_sigma!r}')
    config = EvalConfig(policy='expert', suite=suite, tasks=tasks or list(range(10)),
                        num_init_states=num_init_states, first_init_state=first_init_state,
                        num_envs=num_envs, render=True, camera_size=camera_size,
                        multisample=multisample, seed=seed)
    os.makedirs(out_dir, exist_ok=True)
    index_path = os.path.join(out_dir, 'index.json')
    index = []

    def on_episode(result):
        if only_success and not result['success']:
            return
        index.append(save_demo(result, out_dir, suite, camera_size, dart_sigma))
        tmp = index_path + '.tmp'
        with open(tmp, 'w', encoding='utf-8') as stream:
            json.dump({'suite': suite, 'camera_size': camera_size, 'format': 'npz-v1',
                       'multisample': bool(multisample), 'dart_sigma': float(dart_sigma),
                       'noop_threshold': NOOP_THRESHOLD,
                       'mujoco': provenance.package_version('mujoco'),
                       'episodes': sorted(index, key=lambda e: e['file'])}, stream, indent=1)
        os.replace(tmp, index_path)

    from tgrpo_ros.sim.vec_env import VecLiberoEnv
    init_ids = range(first_init_state, first_init_state + num_init_states)
    jobs = _JobQueue(config.tasks, init_ids)
    env_kwargs = {'suite': suite, 'task_id': int(config.tasks[0]), 'render': True,
                  'camera_size': camera_size, 'multisample': bool(multisample)}
    with VecLiberoEnv(min(num_envs, len(jobs)), env_kwargs) as vec, \
            _progress(len(jobs), progress) as bar:
        _run_scripted(vec, ScriptedPolicy('expert'), config, jobs, bar, [], record=True,
                      on_episode=on_episode, dart_sigma=dart_sigma)
    return index


def build_parser():
    """Command-line options of tgrpo_demos (--help shows every default)."""
    parser = argparse.ArgumentParser(prog='tgrpo_demos', description=__doc__.split('\n')[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument('--out', required=True, help='output directory')
    parser.add_argument('--suite', default='libero_object', choices=SUITES,
                        help='LIBERO suite')
    parser.add_argument('--tasks', type=_parse_tasks, default=list(range(10)),
                        help="'all' or comma-separated task ids (LIBERO-Object: 0..9)")
    parser.add_argument('--num-init-states', type=int, default=50,
                        help='init states per task, from --first-init-state (LIBERO has 50: '
                        '0..49)')
    parser.add_argument('--first-init-state', type=int, default=0,
                        help='first init state id recorded')
    parser.add_argument('--num-envs', type=int, default=2, help='env worker processes')
    parser.add_argument('--camera-size', type=int, default=256, choices=CAMERA_SIZES,
                        help='agentview render size in px')
    parser.add_argument('--no-multisample', dest='multisample', action='store_false',
                        help='render without anti-aliasing (faster; what TGRPO training sees)')
    parser.add_argument('--dart-sigma', type=float, default=0.0,
                        help='DART: std of Gaussian noise added to the executed arm actions '
                             '(env units); labels stay clean (0: off)')
    parser.add_argument('--seed', type=int, default=0, help='seed of the DART noise')
    parser.add_argument('--keep-failures', action='store_true',
                        help='also write episodes where the expert failed')
    parser.add_argument('--no-progress', action='store_true', help='hide the progress bar')
    return parser


def main(argv=None):
    """Record demonstrations; print how many were written."""
    args = build_parser().parse_args(argv)
    try:
        index = record_demos(args.out, suite=args.suite, tasks=args.tasks,
                             num_init_states=args.num_init_states,
                             first_init_state=args.first_init_state, num_envs=args.num_envs,
                             camera_size=args.camera_size, only_success=not args.keep_failures,
                             progress=not args.no_progress, multisample=args.multisample,
                             dart_sigma=args.dart_sigma, seed=args.seed)
    except ValueError as exc:
        print(f'tgrpo_demos: error: {exc}', file=sys.stderr)
        return 2
    print(f'wrote {len(index)} demonstrations to {args.out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
