"""
Render fidelity: a fresh render of a fixed init state matches the committed reference.

The reference (test/data/render_task0_init0_224px_noms.npy, a 32 x 32 block mean of the
224 px policy view of LIBERO-Object task 0, init state 0, without multisampling) was
made by ``python bench/render.py --no-multisample --reference test/data`` under the
MuJoCo of the default simulator profile; its JSON holds the source frame's sha256 and
that MuJoCo version. MuJoCo after 3.3.2 renders LIBERO's floors darker (LIBERO issue
#88), which took OpenVLA's LIBERO-Object checkpoints from 88% to about 68%: this test
fails when the renderer drifts like that.
"""

import hashlib
import json
import os
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(ROOT, 'test', 'data')
STEM = os.path.join(DATA, 'render_task0_init0_224px_noms')
OTHER = os.path.join(DATA, 'render_task0_init0_224px_noms_mujoco3.17.0')
sys.path.insert(0, os.path.join(ROOT, 'bench'))
# Mean absolute difference per pixel and channel (0-255) of the 32 px downsamples.
# Measured: 4x multisampling on against off moves it by 0.46 (3.17.0) / 0.50 (3.3.2);
# MuJoCo 3.17.0 against 3.3.2 moves it by 36.4. 3.0 passes renders that differ like
# anti-aliasing does (another GL driver) and fails any drift a tenth of that one.
TOLERANCE = 3.0


def _reference(stem):
    with open(stem + '.json') as stream:
        return np.load(stem + '.npy').astype(np.float32), json.load(stream)


def test_the_tolerance_catches_the_known_drift_between_mujoco_versions():
    """The committed 3.17.0 reference lies far outside the tolerance of the default one."""
    from render import downsample
    reference, meta = _reference(STEM)
    other, other_meta = _reference(OTHER)
    assert reference.shape == other.shape == (32, 32, 3)
    assert meta['mujoco'] != other_meta['mujoco'] == '3.17.0'
    assert np.abs(reference - other).mean() > 10 * TOLERANCE
    assert meta['source_shape'] == [224, 224, 3] and len(meta['source_sha256']) == 64
    frame = np.arange(224 * 224 * 3, dtype=np.uint8).reshape(224, 224, 3)
    assert downsample(frame)[0, 0, 0] == pytest.approx(frame[:7, :7, 0].mean())


def test_a_fresh_render_matches_the_reference():
    from render import downsample, render_frame

    from tgrpo_ros import provenance
    reference, meta = _reference(STEM)
    frame = render_frame(meta['task'], meta['init_state'], meta['camera_size'],
                         meta['multisample'])
    if hashlib.sha256(frame.tobytes()).hexdigest() == meta['source_sha256']:
        return  # bit-identical to the frame the reference was made from
    drift = float(np.abs(downsample(frame) - reference).mean())
    installed = provenance.package_version('mujoco')
    assert drift <= TOLERANCE, (
        f'the render of task 0, init state 0 drifted by {drift:.1f} per pixel (tolerance '
        f"{TOLERANCE}) from the reference made with MuJoCo {meta['mujoco']}; installed: "
        f'{installed}. Run `make setup` (requirements/30-sim.txt pins the MuJoCo the '
        'policies were trained on), or see docs/sim.md, simulator profiles.')
