"""
Render figures of one LIBERO frame under the installed MuJoCo (docs/sim.md, simulator profiles).

Renders the policy's view (``LiberoEnv`` obs['image'], 224 px) of a task's init state
after the 10 wait steps and prints its mean pixel value, the mean of its bottom 60 rows
(the floor, which MuJoCo after 3.3.2 renders darker: LIBERO issue #88), and with
``--against FRAME.npy`` (a frame saved by another run, e.g. under another MuJoCo) the
mean absolute difference per pixel and channel. ``--save FRAME.npy`` keeps the frame;
``--reference DIR`` writes the render-fidelity test's reference (a 32 x 32 block-mean
downsample, the source frame's sha256 and the MuJoCo version; test/test_sim_render.py).

Run it once per simulator profile (``.venv`` and a venv of the other profile) with
``--save``, then once more with ``--against`` to get the difference. The last line is
the mean pixel value.
"""

import argparse
import hashlib
import json
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

BOTTOM_ROWS = 60  # the floor in the 224 px policy view
REFERENCE_SIZE = 32  # px, side of the committed reference (224 = 7 x 32)


def downsample(frame, size=REFERENCE_SIZE):
    """Return the [size, size, 3] float32 block mean of a square uint8 frame."""
    side = frame.shape[0]
    if side % size or frame.shape[1] != side:
        raise ValueError(f'frame {frame.shape} is not a square multiple of {size}')
    block = side // size
    return frame.reshape(size, block, size, block, 3).mean(axis=(1, 3)).astype(np.float32)


def render_frame(task=0, init_state=0, camera_size=224, multisample=True):
    """Return the 224 px policy view of ``task``'s ``init_state`` after the wait steps."""
    from tgrpo_ros.sim.libero_env import LiberoEnv
    with LiberoEnv(task_id=task, camera_size=camera_size, multisample=multisample) as env:
        return env.reset(init_state)['image'].copy()


def figures(frame):
    """Return the mean pixel value and the bottom rows' mean of a frame."""
    return {'mean_pixel': float(frame.mean()),
            'bottom_rows_mean': float(frame[-BOTTOM_ROWS:].mean())}


def main(argv=None):
    """Render, print the figures, optionally save / compare / write the reference."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--task', type=int, default=0)
    parser.add_argument('--init-state', type=int, default=0)
    parser.add_argument('--camera-size', type=int, default=224, choices=(128, 224, 256))
    parser.add_argument('--no-multisample', dest='multisample', action='store_false')
    parser.add_argument('--save', default=None, help='save the frame (.npy)')
    parser.add_argument('--against', default=None, help='a frame (.npy) to compare with')
    parser.add_argument('--reference', default=None,
                        help='write the render-fidelity reference (npy + json) to this dir')
    args = parser.parse_args(argv)
    against = None
    if args.against:
        try:
            against = np.load(args.against)
        except (OSError, ValueError) as error:
            parser.error(f'--against {args.against!r} is not a saved frame: {error}')
    from tgrpo_ros import provenance
    mujoco_version = provenance.package_version('mujoco')
    frame = render_frame(args.task, args.init_state, args.camera_size, args.multisample)
    result = figures(frame)
    print(f'mujoco {mujoco_version}, task {args.task}, init state {args.init_state}, camera '
          f'{args.camera_size} px, multisample {args.multisample}: frame {frame.shape}')
    print(f"bottom {BOTTOM_ROWS} rows mean: {result['bottom_rows_mean']:.1f}")
    if args.save:
        np.save(args.save, frame)
        print(f'saved {args.save}')
    if against is not None:
        diff = np.abs(frame.astype(np.float64) - against.astype(np.float64))
        small = np.abs(downsample(frame) - downsample(against))
        print(f'against {args.against} (mean pixel {against.mean():.1f}, bottom rows '
              f'{against[-BOTTOM_ROWS:].mean():.1f}): mean abs diff {diff.mean():.2f} per '
              f'pixel, {small.mean():.2f} on the {REFERENCE_SIZE} px downsample')
    if args.reference:
        os.makedirs(args.reference, exist_ok=True)
        stem = (f'render_task{args.task}_init{args.init_state}_{args.camera_size}px_'
                f"{'ms' if args.multisample else 'noms'}_mujoco{mujoco_version}")
        np.save(os.path.join(args.reference, stem + '.npy'),
                np.round(downsample(frame)).astype(np.uint8))
        meta = {'mujoco': mujoco_version, 'task': args.task, 'init_state': args.init_state,
                'camera_size': args.camera_size, 'multisample': args.multisample,
                'source_shape': list(frame.shape),
                'source_sha256': hashlib.sha256(frame.tobytes()).hexdigest(),
                'reference': f'{REFERENCE_SIZE} x {REFERENCE_SIZE} block mean, rounded',
                'made_by': 'python bench/render.py --reference test/data', **result,
                'versions': provenance.versions()}
        with open(os.path.join(args.reference, stem + '.json'), 'w') as stream:
            json.dump(meta, stream, indent=1)
        print(f'reference: {os.path.join(args.reference, stem)}.npy/.json')
    print(f"mean pixel: {result['mean_pixel']:.1f}")
    return 0


if __name__ == '__main__':
    sys.exit(main())
