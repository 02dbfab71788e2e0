"""
Supervised fine-tuning (behaviour cloning) of an OpenVLA-style policy on demonstrations.

OpenVLA's fine-tuning objective: cross-entropy on the 7 action tokens of each demo
frame, teacher-forced, softmax over the 256 action ids (the same forward pass as
TGRPO's log-probs, ``VLAPolicy.action_log_softmax``). Demo actions become tokens via
the model's own normalisation statistics (``contract.normalize_actions`` then
``contract.encode_actions``).

Data: the ``task*_init*.npz`` files that ``tgrpo_demos`` writes. No-op frames (see
tgrpo_ros.sim.demos) are dropped unless ``keep_noops``. The validation split holds out
whole episodes.

Outputs (docs/sft.md):

* trainable 'full': ``out`` is a model directory (``config.json``,
  ``model.safetensors``, tokenizer files) that ``load_policy`` takes as ``model_path``;
* trainable 'lora' / 'lora+action_head': ``out`` is an adapter directory for the base
  model (``load_policy(base, adapter_path=out)``, ``tgrpo_eval --adapter out``).

Both get ``sft_report.json`` (options, data, per-epoch metrics). Checkpoints (one per
epoch) and ``metrics.csv`` go to the run directory; ``resume`` continues from the
newest checkpoint. Console entry: ``tgrpo_sft``.
"""

import argparse
from dataclasses import asdict, dataclass
import glob
import json
import math
import os
import shutil
import sys
import time
from typing import Optional

import numpy as np
import torch

from tgrpo_ros import provenance
from tgrpo_ros.policy import adapters, contract

AUGMENTATIONS = ('none', 'shift', 'crop')
REPORT_FILE = 'sft_report.json'
# Files of a base model directory that a full fine-tune must not copy (it writes its own).
_WEIGHT_PATTERNS = ('*.safetensors', '*.bin', '*.index.json', '*.pt', '*.pth', '*.msgpack',
                    '*.h5', 'config.json', 'standin_build.json', REPORT_FILE,
                    'generation_config.json')


@dataclass
class SFTConfig:
    """Options of one supervised fine-tuning run (``tgrpo_sft --help`` lists them)."""

    demos: str = ''
    """Directory written by tgrpo_demos (task*_init*.npz)."""
    model_path: str = ''
    """Base model: a stand-in or OpenVLA checkpoint directory."""
    out: str = ''
    """Output: a model directory (full) or an adapter directory (lora modes)."""
    run_dir: Optional[str] = None
    """Checkpoints and metrics.csv (None: <out>_run)."""
    trainable: str = 'full'
    """'lora', 'lora+action_head' or 'full'."""
    adapter: Optional[str] = None
    """Start from this adapter (lora modes) or full-weight adapter (full)."""
    lora_r: int = 32
    lora_alpha: float = 16.0
    lora_targets: str = 'q_proj,v_proj'
    epochs: int = 15
    batch_size: int = 32
    lr: float = 5e-4
    weight_decay: float = 0.01
    warmup_steps: int = 100
    min_lr_ratio: float = 0.1
    """Cosine decay ends at lr * min_lr_ratio."""
    grad_clip: float = 1.0
    """Clip the gradient norm to this (0: no clipping)."""
    augment: str = 'shift'
    """'none'; 'shift': random +-shift_pixels translation (edges replicated); 'crop':
    random square crop of crop_area of the image, resized back (OpenVLA's LIBERO aug)."""
    shift_pixels: int = 4
    crop_area: float = 0.9
    keep_noops: bool = False
    """Train on no-op frames too (off: they are dropped, as OpenVLA's LIBERO data)."""
    frame_stride: int = 1
    """Keep every k-th remaining frame of each episode (consecutive 20 Hz frames are
    near-duplicates; 2 halves the cost of an epoch)."""
    tasks: Optional[list] = None
    """Only demos of these task ids (None: all)."""
    val_fraction: float = 0.1
    """Fraction of episodes held out for validation (0: none)."""
    val_every: int = 1
    """Validate every N epochs (and after the last)."""
    seed: int = 0
    device: str = 'cpu'
    dtype: str = 'float32'
    num_threads: int = 0
    """torch threads (0: torch's default)."""
    keep_checkpoints: int = 2
    checkpoint_every: int = 1
    """Checkpoint every N epochs (and after the last)."""
    resume: bool = False
    progress: bool = True
    tensorboard: bool = True
    """Also write TensorBoard events when the tensorboard package is installed."""

    def __post_init__(self):
        """Check values; messages quote the bad value and the choices."""
        for name in ('demos', 'model_path', 'out'):
            if not getattr(self, name):
                raise ValueError(f'{name} is required')
        adapters.check_trainable(self.trainable)
        if self.augment not in AUGMENTATIONS:
            raise ValueError(f'unknown augment {self.augment!r}; choose one of '
                             f'{", ".join(AUGMENTATIONS)}')
        positive = {'epochs': self.epochs, 'batch_size': self.batch_size, 'lr': self.lr,
                    'val_every': self.val_every, 'frame_stride': self.frame_stride,
                    'checkpoint_every': self.checkpoint_every}
        for name, value in positive.items():
            if not value > 0:
                raise ValueError(f'{name} must be > 0, got {value!r}')
        nonneg = {'weight_decay': self.weight_decay, 'warmup_steps': self.warmup_steps,
                  'grad_clip': self.grad_clip, 'shift_pixels': self.shift_pixels,
                  'num_threads': self.num_threads, 'keep_checkpoints': self.keep_checkpoints}
        for name, value in nonneg.items():
            if not value >= 0:
                raise ValueError(f'{name} must be >= 0, got {value!r}')
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError(f'min_lr_ratio must be in [0, 1], got {self.min_lr_ratio!r}')
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f'val_fraction must be in [0, 1), got {self.val_fraction!r}')
        if not 0.0 < self.crop_area <= 1.0:
            raise ValueError(f'crop_area must be in (0, 1], got {self.crop_area!r}')
        if self.run_dir is None:
            self.run_dir = os.path.normpath(self.out) + '_run'

    def lora_settings(self) -> adapters.LoraSettings:
        """Return the LoRA settings of the lora modes."""
        return adapters.LoraSettings(r=self.lora_r, alpha=self.lora_alpha,
                                     target_modules=self.lora_targets)

    def to_dict(self) -> dict:
        """Return the options as a plain dict (for reports and checkpoints)."""
        return asdict(self)


# ---------------------------------------------------------------------- data
class DemoFrames:
    """
    Frames of a set of demonstration episodes held in memory.

    images uint8 [N, 224, 224, 3]; tokens int64 [N, 7] (action ids 31744..31999);
    episode int [N] (index into ``files``); instructions: one str per episode.
    """

    def __init__(self, images, tokens, episode, files, instructions, dropped_noops=0):
        """Store the arrays (built by ``load_demo_frames``)."""
        self.images = images
        self.tokens = tokens
        self.episode = episode
        self.files = list(files)
        self.instructions = list(instructions)
        self.dropped_noops = int(dropped_noops)

    def __len__(self):
        """Return the number of frames."""
        return len(self.tokens)

    def instructions_of(self, index) -> list:
        """Return the instruction of each frame in ``index``."""
        return [self.instructions[e] for e in self.episode[index]]

    def subset(self, episodes) -> 'DemoFrames':
        """Return the frames of the given episode indices (same files list)."""
        keep = np.isin(self.episode, np.asarray(list(episodes), dtype=np.int64))
        return DemoFrames(self.images[keep], self.tokens[keep], self.episode[keep],
                          self.files, self.instructions)


def demo_files(demo_dir, tasks=None) -> list:
    """Return the sorted demo files in ``demo_dir``, optionally only those of ``tasks``."""
    files = sorted(glob.glob(os.path.join(os.fspath(demo_dir), 'task*_init*.npz')))
    if tasks is not None:
        wanted = {int(t) for t in tasks}
        files = [f for f in files if int(os.path.basename(f)[4:6]) in wanted]
    if not files:
        raise ValueError(f'no demonstrations (task*_init*.npz) in {demo_dir!r}'
                         + (f' for tasks {sorted(tasks)}' if tasks is not None else ''))
    return files


def load_demo_frames(files, norm_stats=contract.LIBERO_OBJECT_STATS,
                     keep_noops=False, frame_stride=1) -> DemoFrames:
    """
    Read demo files and tokenise the actions.

    No-op frames are dropped unless ``keep_noops``; then every ``frame_stride``-th of the
    remaining frames of each episode is kept.
    """
    from tgrpo_ros.sim.demos import load_demo
    images, tokens, episode, instructions = [], [], [], []
    dropped = 0
    for k, path in enumerate(files):
        demo = load_demo(path)
        keep = np.ones(demo['length'], dtype=bool) if keep_noops else ~demo['noop']
        dropped += int((~keep).sum())
        if frame_stride > 1:
            kept = np.flatnonzero(keep)
            keep[:] = False
            keep[kept[::frame_stride]] = True
        images.append(demo['images'][keep])
        normalized = contract.normalize_actions(demo['actions'][keep], norm_stats)
        tokens.append(contract.encode_actions(normalized))
        episode.append(np.full(int(keep.sum()), k, dtype=np.int64))
        instructions.append(demo['instruction'])
    return DemoFrames(np.concatenate(images), np.concatenate(tokens), np.concatenate(episode),
                      files, instructions, dropped)


def split_episodes(n_episodes: int, val_fraction: float, seed: int = 0):
    """Return (train episode indices, validation episode indices), a seeded shuffle."""
    n_val = int(round(val_fraction * n_episodes)) if val_fraction > 0 else 0
    if val_fraction > 0 and n_episodes >= 2:
        n_val = max(1, n_val)
    n_val = min(n_val, n_episodes - 1)
    order = np.random.default_rng([seed, 0x5F7]).permutation(n_episodes)
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def augment_images(images, mode: str, rng, shift_pixels: int = 4, crop_area: float = 0.9):
    """
    Return augmented copies of uint8 [B, H, W, 3] images.

    'shift': translate each image by a random (dy, dx) in [-s, s]^2, replicating the
    border; 'crop': a random square crop covering ``crop_area`` of the image, resized
    back to H x W (bilinear), as OpenVLA's random-resized-crop for LIBERO.
    """
    images = np.asarray(images)
    if mode == 'none':
        return images
    batch, height, width, _ = images.shape
    if mode == 'shift':
        s = int(shift_pixels)
        if s == 0:
            return images
        padded = np.pad(images, ((0, 0), (s, s), (s, s), (0, 0)), mode='edge')
        offsets = rng.integers(0, 2 * s + 1, size=(batch, 2))
        return np.stack([padded[i, dy:dy + height, dx:dx + width]
                         for i, (dy, dx) in enumerate(offsets)])
    if mode == 'crop':
        side = int(round(height * math.sqrt(crop_area)))
        out = np.empty_like(images)
        for i in range(batch):
            y, x = rng.integers(0, height - side + 1), rng.integers(0, width - side + 1)
            crop = torch.from_numpy(np.ascontiguousarray(images[i, y:y + side, x:x + side]))
            crop = crop.permute(2, 0, 1)[None].float()
            resized = torch.nn.functional.interpolate(crop, size=(height, width),
                                                      mode='bilinear', align_corners=False)
            out[i] = resized[0].permute(1, 2, 0).round().clamp(0, 255).byte().numpy()
        return out
    raise ValueError(f'unknown augment {mode!r}; choose one of {", ".join(AUGMENTATIONS)}')


# ---------------------------------------------------------------------- objective
def sft_loss(policy, images, instructions, tokens):
    """
    Mean cross-entropy of the 7 demo action tokens, teacher-forced; return (loss, stats).

    stats: 'accuracy' (argmax == label, mean over tokens), 'accuracy_dim' [7] and
    'within2' (argmax within 2 bins of the label), all floats, detached.
    """
    tokens = torch.as_tensor(tokens, dtype=torch.long)
    log_probs = policy.action_log_softmax(images, instructions, tokens)  # [B, 7, 256]
    target = (tokens - contract.ACTION_TOKEN_MIN).to(log_probs.device)  # [B, 7]
    loss = torch.nn.functional.nll_loss(log_probs.reshape(-1, contract.N_ACTION_BINS),
                                        target.reshape(-1))
    with torch.no_grad():
        predicted = log_probs.argmax(-1)
        correct = (predicted == target).float()  # [B, 7]
        stats = {'accuracy': float(correct.mean()),
                 'accuracy_dim': correct.mean(0).cpu().numpy(),
                 'within2': float(((predicted - target).abs() <= 2).float().mean())}
    return loss, stats


def evaluate_frames(policy, frames: DemoFrames, batch_size: int = 64) -> dict:
    """Return loss, token accuracy (overall and per dim) and within-2-bins rate on frames."""
    total, n = 0.0, 0
    correct_dim = np.zeros(contract.ACTION_DIM)
    within2 = 0.0
    with torch.no_grad():
        for start in range(0, len(frames), batch_size):
            index = np.arange(start, min(start + batch_size, len(frames)))
            loss, stats = sft_loss(policy, frames.images[index], frames.instructions_of(index),
                                   frames.tokens[index])
            total += loss.item() * len(index)
            correct_dim += stats['accuracy_dim'] * len(index)
            within2 += stats['within2'] * len(index)
            n += len(index)
    out = {'val/loss': total / n, 'val/accuracy': float(correct_dim.sum() / (7 * n)),
           'val/within2': within2 / n}
    for dim, value in enumerate(correct_dim / n):
        out[f'val/accuracy_dim{dim}'] = float(value)
    return out


def lr_factor(step: int, total_steps: int, warmup_steps: int, min_lr_ratio: float) -> float:
    """Linear warm-up over ``warmup_steps``, then cosine from 1 to ``min_lr_ratio``."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


class _TrainerState:
    """Optimiser and scheduler behind ``state_dict``/``load_state_dict`` (checkpoint.py)."""

    def __init__(self, optimizer, scheduler):
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.step = 0
        self.history = []

    def state_dict(self):
        return {'optimizer': self.optimizer.state_dict(),
                'scheduler': self.scheduler.state_dict(), 'step': self.step,
                'history': list(self.history)}

    def load_state_dict(self, state):
        self.optimizer.load_state_dict(state['optimizer'])
        self.scheduler.load_state_dict(state['scheduler'])
        self.step = int(state['step'])
        self.history = list(state['history'])


def _step_writer(run_dir, enabled):
    """
    Return the TensorBoard writer of per-step scalars (None when disabled).

    The learner's writer (``training.metrics.TensorBoardWriter``, synchronous
    tensorboardX records), in ``<run_dir>/steps``: ``tensorboard --logdir RUN_DIR``
    shows the per-epoch rows that ``MetricsLogger`` writes and these as two runs.
    """
    from tgrpo_ros.training.metrics import TensorBoardWriter

    return TensorBoardWriter(os.path.join(run_dir, 'steps')) if enabled else None


# ---------------------------------------------------------------------- export
def export_full_model(policy, base_path: str, out: str) -> str:
    """
    Write the fully fine-tuned model as a directory ``load_policy`` takes as model_path.

    Weights via ``save_pretrained`` (safetensors); tokenizer / processor / remote-code
    files are copied from the base directory, or saved from the loaded tokenizer for a
    hub name.
    """
    import fnmatch
    os.makedirs(out, exist_ok=True)
    with policy._lock:
        policy._trained_core.save_pretrained(out, safe_serialization=True)
    if os.path.isdir(base_path):
        for name in sorted(os.listdir(base_path)):
            source = os.path.join(base_path, name)
            if os.path.isfile(source) and not any(fnmatch.fnmatch(name, p)
                                                  for p in _WEIGHT_PATTERNS):
                shutil.copy2(source, os.path.join(out, name))
    else:
        policy.tokenizer.save_pretrained(out)
    return out


def export(policy, config: SFTConfig) -> str:
    """Write the trained policy to ``config.out`` (model or adapter directory)."""
    if config.trainable == 'full':
        return export_full_model(policy, config.model_path, config.out)
    return policy.save_adapter(config.out)


def demos_trained_on(demo_dir, base_path=None) -> dict:
    """
    Return what renders the demos were recorded with: {'mujoco', 'camera_size', ...}.

    The demos' index.json records the MuJoCo version that rendered them (tgrpo_demos);
    an older index without it falls back to the installed version (``source`` says
    which). A base model's own record is kept under ``base`` when it differs.
    """
    index = {}
    path = os.path.join(os.fspath(demo_dir), 'index.json')
    if os.path.isfile(path):
        with open(path, encoding='utf-8') as stream:
            index = json.load(stream)
    recorded = index.get('mujoco')
    record = {'mujoco': recorded or provenance.package_version('mujoco'),
              'source': 'demos index.json' if recorded else
              'installed when tgrpo_sft ran (the demos index records none)',
              'camera_size': index.get('camera_size'), 'multisample': index.get('multisample')}
    base = provenance.trained_on(base_path)
    if base is not None and base.get('mujoco') != record['mujoco']:
        record['base'] = base
    return record


# ---------------------------------------------------------------------- training
def _progress(total, enabled, desc):
    from tqdm import tqdm
    return tqdm(total=total, unit='batch', disable=not enabled, dynamic_ncols=True, desc=desc,
                leave=False)


def train_sft(config: SFTConfig, log=print) -> dict:
    """Run supervised fine-tuning; return the report (also written to out/sft_report.json)."""
    from tgrpo_ros.policy import load_policy
    from tgrpo_ros.training import checkpoint
    from tgrpo_ros.training.metrics import MetricsLogger

    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    started = time.perf_counter()
    files = demo_files(config.demos, config.tasks)
    policy = load_policy(config.model_path, device=config.device, dtype=config.dtype,
                         trainable=config.trainable, lora=config.lora_settings(),
                         adapter_path=config.adapter)
    frames = load_demo_frames(files, policy.norm_stats, keep_noops=config.keep_noops,
                              frame_stride=config.frame_stride)
    train_eps, val_eps = split_episodes(len(files), config.val_fraction, config.seed)
    train, val = frames.subset(train_eps), frames.subset(val_eps)
    n_frames, dropped = len(frames), frames.dropped_noops
    del frames  # the subsets hold copies
    log(f'demos: {len(files)} episodes, {n_frames} frames ({dropped} no-op '
        f'frames dropped); train {len(train_eps)} episodes / {len(train)} frames, '
        f'validation {len(val_eps)} episodes / {len(val)} frames')
    steps_per_epoch = math.ceil(len(train) / config.batch_size)
    total_steps = steps_per_epoch * config.epochs
    params = policy.trainable_parameters()
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, total_steps, config.warmup_steps,
                                          config.min_lr_ratio))
    state = _TrainerState(optimizer, scheduler)
    ckpt_root = os.path.join(config.run_dir, 'checkpoints')
    start_epoch = 0
    if config.resume:
        latest = checkpoint.latest_checkpoint(ckpt_root)
        if latest is None:
            log(f'resume: no checkpoint under {ckpt_root}; starting from scratch')
        else:
            start_epoch = int(checkpoint.load_checkpoint(latest, policy, state)['update'])
            log(f'resume: continuing after epoch {start_epoch} ({latest})')
    metrics = MetricsLogger(config.run_dir, plot_every=0, resume=config.resume,
                            tensorboard=config.tensorboard)
    writer = _step_writer(config.run_dir, config.tensorboard)
    tb_status = f'tensorboard --logdir {config.run_dir}' if config.tensorboard else 'disabled'
    log(f'tensorboard: {tb_status}; {policy.num_trainable_parameters() / 1e6:.2f} M trainable '
        f'parameters ({config.trainable}); {steps_per_epoch} steps/epoch')
    for epoch in range(start_epoch, config.epochs):
        epoch_start = time.perf_counter()
        rng = np.random.default_rng([config.seed, epoch])  # same data order after resume
        order = rng.permutation(len(train))
        sums = {'loss': 0.0, 'accuracy': 0.0, 'grad_norm': 0.0}
        with _progress(steps_per_epoch, config.progress,
                       f'epoch {epoch + 1}/{config.epochs}') as bar:
            for first in range(0, len(train), config.batch_size):
                index = np.sort(order[first:first + config.batch_size])
                images = augment_images(train.images[index], config.augment, rng,
                                        config.shift_pixels, config.crop_area)
                loss, stats = sft_loss(policy, images, train.instructions_of(index),
                                       train.tokens[index])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                clip = config.grad_clip if config.grad_clip > 0 else float('inf')
                grad_norm = float(torch.nn.utils.clip_grad_norm_(params, clip))
                optimizer.step()
                scheduler.step()
                state.step += 1
                sums['loss'] += loss.item()
                sums['accuracy'] += stats['accuracy']
                sums['grad_norm'] += grad_norm
                if writer is not None:
                    writer.add_scalars(state.step, {
                        'step/loss': loss.item(), 'step/accuracy': stats['accuracy'],
                        'step/lr': scheduler.get_last_lr()[0]})
                bar.update(1)
                bar.set_postfix(loss=f'{loss.item():.3f}', acc=f'{stats["accuracy"]:.2f}')
        row = {f'train/{k}': v / steps_per_epoch for k, v in sums.items()}
        row['train/lr'] = scheduler.get_last_lr()[0]
        row['perf/epoch_seconds'] = time.perf_counter() - epoch_start
        row['perf/frames_per_second'] = len(train) / row['perf/epoch_seconds']
        last = epoch + 1 == config.epochs
        if len(val) and ((epoch + 1) % config.val_every == 0 or last):
            row.update(evaluate_frames(policy, val))
        metrics.log(epoch + 1, row)
        state.history.append({'epoch': epoch + 1, **row})
        if (epoch + 1) % config.checkpoint_every == 0 or last:
            checkpoint.save_checkpoint(ckpt_root, epoch + 1, policy, state,
                                       extra={'config': config.to_dict()},
                                       keep=config.keep_checkpoints)
        text = ', '.join(f'{k.replace("/", " ")} {v:.4g}' for k, v in row.items()
                         if 'dim' not in k)
        log(f'epoch {epoch + 1}/{config.epochs}: {text}')
    if writer is not None:
        writer.close()
    out = export(policy, config)
    report = {'options': config.to_dict(), 'output': out,
              'base_model': config.model_path, 'trainable': config.trainable,
              'demos': {'files': [os.path.basename(f) for f in files],
                        'frames': n_frames, 'dropped_noops': dropped,
                        'train_episodes': [os.path.basename(files[e]) for e in train_eps],
                        'val_episodes': [os.path.basename(files[e]) for e in val_eps],
                        'train_frames': len(train), 'val_frames': len(val)},
              'epochs': state.history, 'steps': state.step,
              'wall_seconds': time.perf_counter() - started,
              'trained_on': demos_trained_on(config.demos, config.model_path),
              'environment': provenance.environment(
                  device=config.device, seeds={'seed': config.seed},
                  checkpoint=config.model_path, adapter=config.adapter,
                  output=provenance.weights_record(out))}
    with open(os.path.join(out, REPORT_FILE), 'w', encoding='utf-8') as stream:
        json.dump(report, stream, indent=1, default=float)
    log(f'wrote {"model" if config.trainable == "full" else "adapter"} to {out}')
    return report


# ---------------------------------------------------------------------- command line
def _parse_tasks(text):
    try:
        return [int(t) for t in text.split(',')]
    except ValueError:
        raise argparse.ArgumentTypeError(f'tasks must be ids like 0,3,7; got {text!r}')


def build_parser():
    """Command-line options of tgrpo_sft (--help shows every default)."""
    d = SFTConfig.__dataclass_fields__
    p = argparse.ArgumentParser(prog='tgrpo_sft', description=__doc__.split('\n')[1],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument('--demos', required=True, help='directory written by tgrpo_demos')
    p.add_argument('--model-path', required=True,
                   help='base checkpoint directory (stand-in or OpenVLA, with config.json)')
    p.add_argument('--out', required=True,
                   help='output: model directory (full) or adapter directory (lora modes)')
    p.add_argument('--run-dir', default=None, help='checkpoints and metrics (None: <out>_run)')
    p.add_argument('--trainable', default=d['trainable'].default,
                   choices=adapters.TRAINABLE_MODES, help='what is trained')
    p.add_argument('--adapter', '--adapter-path', dest='adapter', default=None,
                   help='start from this adapter directory')
    # The names of the policy config (lora_rank, lora_target_modules); the old
    # spellings stay as aliases.
    p.add_argument('--lora-rank', '--lora-r', dest='lora_r', type=int,
                   default=d['lora_r'].default, help='LoRA rank r')
    p.add_argument('--lora-alpha', type=float, default=d['lora_alpha'].default,
                   help='LoRA alpha')
    p.add_argument('--lora-target-modules', '--lora-targets', dest='lora_targets',
                   default=d['lora_targets'].default,
                   help="comma-separated module names or 'all-linear'")
    p.add_argument('--epochs', type=int, default=d['epochs'].default, help='passes over the '
                   'training frames')
    p.add_argument('--batch-size', type=int, default=d['batch_size'].default,
                   help='frames per step')
    p.add_argument('--lr', type=float, default=d['lr'].default, help='peak learning rate')
    p.add_argument('--weight-decay', type=float, default=d['weight_decay'].default,
                   help='AdamW weight decay')
    p.add_argument('--warmup-steps', type=int, default=d['warmup_steps'].default,
                   help='linear warm-up, in optimiser steps')
    p.add_argument('--min-lr-ratio', type=float, default=d['min_lr_ratio'].default,
                   help='cosine decay ends at lr * this')
    p.add_argument('--grad-clip', type=float, default=d['grad_clip'].default,
                   help='max gradient norm (0: off)')
    p.add_argument('--augment', default=d['augment'].default, choices=AUGMENTATIONS,
                   help='image augmentation')
    p.add_argument('--shift-pixels', type=int, default=d['shift_pixels'].default,
                   help="largest shift of 'shift', in px")
    p.add_argument('--crop-area', type=float, default=d['crop_area'].default,
                   help="area fraction of a 'crop'")
    p.add_argument('--keep-noops', action='store_true',
                   help='train on no-op frames too (default: drop them)')
    p.add_argument('--frame-stride', type=int, default=d['frame_stride'].default,
                   help='keep every k-th frame of each episode (after dropping no-ops)')
    p.add_argument('--tasks', type=_parse_tasks, default=None,
                   help='only these task ids (None: all)')
    p.add_argument('--val-fraction', type=float, default=d['val_fraction'].default,
                   help='fraction of episodes held out (0: none)')
    p.add_argument('--val-every', type=int, default=d['val_every'].default,
                   help='validate every N epochs (and after the last)')
    p.add_argument('--seed', type=int, default=d['seed'].default, help='data order and split')
    p.add_argument('--device', default='cpu', help='torch device')
    p.add_argument('--dtype', default='float32', help='weights dtype')
    p.add_argument('--num-threads', type=int, default=0, help='torch threads (0: default)')
    p.add_argument('--keep-checkpoints', type=int, default=d['keep_checkpoints'].default,
                   help='newest checkpoints kept (0: all)')
    p.add_argument('--checkpoint-every', type=int, default=d['checkpoint_every'].default,
                   help='checkpoint every N epochs (and after the last)')
    p.add_argument('--resume', action='store_true', help='continue from the newest checkpoint')
    p.add_argument('--no-progress', dest='progress', action='store_false',
                   help='hide the progress bar')
    p.add_argument('--no-tensorboard', dest='tensorboard', action='store_false',
                   help='no TensorBoard events (metrics.csv only)')
    return p


def check_paths(config: SFTConfig) -> None:
    """Raise ValueError (one line) for a model, adapter or demos path that cannot be used."""
    from tgrpo_ros.policy.config import check_model_path

    check_model_path(config.model_path, 'tgrpo_sft')
    if config.adapter is not None and not os.path.isdir(config.adapter):
        raise ValueError(f'--adapter {config.adapter!r}: no such adapter directory')
    if not os.path.isdir(config.demos):
        raise ValueError(f'--demos {config.demos!r}: no such directory (write one with '
                         'tgrpo_demos)')


def main(argv=None) -> int:
    """Run tgrpo_sft; exit 2 on bad options or data."""
    args = build_parser().parse_args(argv)
    try:
        config = SFTConfig(**vars(args))
        check_paths(config)
        train_sft(config)
    except (ValueError, FileNotFoundError) as exc:
        print(f'tgrpo_sft: error: {exc}', file=sys.stderr)
        return 2
    return 0


if __name__ == '__main__':
    sys.exit(main())
