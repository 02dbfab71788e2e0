"""
Training checkpoints: adapter, optimiser, update count and RNG state.

Layout of one checkpoint (``<run_dir>/checkpoints/update_<k>/``)::

    adapter/            the policy's adapter after k updates (policy.save_adapter)
    trainer_state.pt    optimiser state, update count k, RNG states, trainer state

``load_latest`` returns the newest complete checkpoint (``trainer_state.pt`` is
written last, via a temporary file and a rename, so a half-written checkpoint is
never picked). Resuming continues with adapter version k + 1.
"""

import os
import random
import re
import shutil
from typing import Optional

import numpy as np
import torch

STATE_FILE = 'trainer_state.pt'
ADAPTER_DIR = 'adapter'
_PATTERN = re.compile(r'^update_(\d+)$')


def checkpoint_dir(root, update: int) -> str:
    """Return the directory of the checkpoint taken after ``update`` updates."""
    return os.path.join(os.fspath(root), f'update_{int(update):05d}')


def rng_state(generators: Optional[dict] = None) -> dict:
    """Capture Python, numpy and torch RNG states plus named torch Generators."""
    return {'python': random.getstate(), 'numpy': np.random.get_state(),
            'torch': torch.random.get_rng_state(),
            'generators': {name: g.get_state() for name, g in (generators or {}).items()}}


def set_rng_state(state: dict, generators: Optional[dict] = None) -> None:
    """Restore what ``rng_state`` captured (generators by name)."""
    random.setstate(state['python'])
    np.random.set_state(state['numpy'])
    torch.random.set_rng_state(state['torch'])
    for name, generator in (generators or {}).items():
        if name in state['generators']:
            generator.set_state(state['generators'][name])


def save_checkpoint(root, update: int, policy, trainer, generators: Optional[dict] = None,
                    extra: Optional[dict] = None, keep: int = 0) -> str:
    """
    Write the checkpoint of ``update`` completed updates under ``root``; return its dir.

    With ``keep`` > 0, only the newest ``keep`` checkpoints are kept (older ones are
    deleted after the new one is complete).
    """
    path = checkpoint_dir(root, update)
    os.makedirs(path, exist_ok=True)
    policy.save_adapter(os.path.join(path, ADAPTER_DIR))
    state = {'update': int(update), 'trainer': trainer.state_dict(),
             'rng': rng_state(generators), 'extra': dict(extra or {})}
    tmp = os.path.join(path, STATE_FILE + '.tmp')
    torch.save(state, tmp)
    os.replace(tmp, os.path.join(path, STATE_FILE))
    if keep > 0:
        for old in list_checkpoints(root)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    return path


def list_checkpoints(root) -> list:
    """Return the complete checkpoint directories under ``root``, oldest first."""
    root = os.fspath(root)
    if not os.path.isdir(root):
        return []
    found = []
    for name in os.listdir(root):
        match = _PATTERN.match(name)
        if match and os.path.isfile(os.path.join(root, name, STATE_FILE)):
            found.append((int(match.group(1)), os.path.join(root, name)))
    return [path for _, path in sorted(found)]


def latest_checkpoint(root) -> Optional[str]:
    """Return the newest complete checkpoint directory under ``root``, or None."""
    found = list_checkpoints(root)
    return found[-1] if found else None


def load_checkpoint(path, policy, trainer, generators: Optional[dict] = None) -> dict:
    """
    Restore adapter, optimiser, RNG states from checkpoint ``path``; return its state.

    The policy's adapter version becomes the checkpoint's update count k, so the
    next saved adapter is version k + 1.
    """
    state_path = os.path.join(os.fspath(path), STATE_FILE)
    if not os.path.isfile(state_path):
        raise FileNotFoundError(f'{path!r} is not a complete checkpoint: no {STATE_FILE}')
    # weights_only=False: the state holds numpy/python RNG tuples (our own file).
    state = torch.load(state_path, map_location='cpu', weights_only=False)
    policy.load_adapter(os.path.join(os.fspath(path), ADAPTER_DIR), int(state['update']))
    trainer.load_state_dict(state['trainer'])
    set_rng_state(state['rng'], generators)
    return state
