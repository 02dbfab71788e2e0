"""
Benchmark the policy at 7B scale on a GPU (or the tiny stand-in on CPU) through load_policy.

Usage: python bench/gpu.py [--device auto] [--preset P] [--cache-dir DIR] [--quick]

On a GPU it builds the ``openvla-7b`` stand-in preset (OpenVLA-7B's shapes, random
weights, bfloat16; docs/policy.md) once into ``--cache-dir`` and runs it in bfloat16.
Without a GPU it runs the ``tiny`` preset on CPU in float32 (about a minute; ``--quick``
for CI: batches 1, 8, 32 and one timed run each).  It prints:

- actions/s of ``VLAPolicy.sample`` at batch 1, 8, 32 and 64 (one action = the 7 tokens
  of one observation) and the speed-up over batch 1;
- the time of ``load_adapter`` (hot swap) between two saved LoRA adapters;
- teacher-forced ``log_probs`` forward + backward + AdamW step samples/s with LoRA;
- peak memory while serving and while training: ``torch.cuda.max_memory_allocated`` on a
  GPU, the process's peak RSS on CPU (reset between phases where Linux allows it);
- last ``batch32_speedup_vs_batch1: X``.

Wall-clock figures are the best of ``--repeats`` timed runs after a warm-up (on a GPU,
``sample`` ends in a copy to the host and the training step synchronises, so the times
cover the GPU work).  On CPU with one thread the speed-up line uses CPU time, as
bench/policy.py does; the wall-clock speed-up is printed the line before.
"""

import argparse
import gc
import os
import statistics
import sys
import tempfile
import time

import numpy as np
import torch

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(BENCH_DIR))
sys.path.insert(0, BENCH_DIR)

from policy import _timed, INSTRUCTION  # noqa: E402, I100  (bench/policy.py)

from tgrpo_ros.policy import load_policy  # noqa: E402
from tgrpo_ros.policy import standin  # noqa: E402

FULL_BATCHES = (1, 8, 32, 64)
QUICK_BATCHES = (1, 8, 32)


def _resolve_device(name: str) -> torch.device:
    if name == 'auto':
        return torch.device('cuda:0' if torch.cuda.is_available() else 'cpu')
    device = torch.device(name)
    if device.type == 'cuda' and not torch.cuda.is_available():
        raise SystemExit(f'--device {name}: torch {torch.__version__} sees no CUDA device')
    return device


def _reset_peak(device: torch.device) -> None:
    """Start a new peak-memory window (CPU: Linux's clear_refs 5 resets the RSS peak)."""
    if device.type == 'cuda':
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')
    except OSError:
        pass  # the peak then counts from the process start; _peak says so


def _peak(device: torch.device) -> str:
    """Describe the peak memory of the current window."""
    if device.type == 'cuda':
        return (f'{torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB '
                f'(torch.cuda.max_memory_allocated; reserved '
                f'{torch.cuda.max_memory_reserved(device) / 2**30:.2f} GiB)')
    try:
        with open('/proc/self/status') as f:
            fields = dict(line.split(':', 1) for line in f if ':' in line)
        peak_kib = int(fields['VmHWM'].split()[0])
    except (OSError, KeyError, ValueError):
        return 'n/a (no /proc/self/status)'
    return f'{peak_kib / 2**20:.2f} GiB (peak RSS of this process, CPU)'


def _model_path(args) -> str:
    """Return the checkpoint to load, building the preset if needed."""
    if args.model_path:
        return args.model_path
    start = time.perf_counter()
    if args.cache_dir:
        path = standin.build_standin(os.path.join(args.cache_dir, f'{args.preset}-seed0'),
                                     seed=0, preset=args.preset)
    else:
        path = standin.cached_standin(seed=0, preset=args.preset)
    print(f'checkpoint: preset {args.preset} at {path} (ready in '
          f'{time.perf_counter() - start:.1f} s)', flush=True)
    return path


def _parse(argv):
    parser = argparse.ArgumentParser(
        description=__doc__.strip().splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument('--device', default='auto',
                        help="'auto' (cuda:0 if torch sees a GPU, else cpu), 'cpu', 'cuda:N'")
    parser.add_argument('--preset', default=None, choices=list(standin.PRESETS),
                        help='stand-in preset (default: openvla-7b on a GPU, tiny on CPU)')
    parser.add_argument('--model-path', default=None,
                        help='load this checkpoint instead of building a preset')
    parser.add_argument('--cache-dir', default=None,
                        help='build the preset under DIR/<preset>-seed0 (default: the temp '
                             "directory's stand-in cache)")
    parser.add_argument('--dtype', default=None, choices=standin.DTYPES,
                        help='load dtype (default: bfloat16 on a GPU, float32 on CPU)')
    parser.add_argument('--batches', default=None,
                        help='comma-separated sampling batch sizes, 1 and 32 included '
                             f'(default: {",".join(map(str, FULL_BATCHES))})')
    parser.add_argument('--repeats', type=int, default=None,
                        help='timed runs per figure after one warm-up (default: 3)')
    parser.add_argument('--train-batch', type=int, default=None,
                        help='observations per teacher-forced training step (default: 16)')
    parser.add_argument('--swaps', type=int, default=None,
                        help='adapter hot swaps to time (default: 10)')
    parser.add_argument('--trainable', default='lora',
                        help="trainable mode of the learner pass: 'lora' or 'lora+action_head'")
    parser.add_argument('--threads', type=int, default=None,
                        help='torch CPU threads (default: 1 on CPU, torch default on a GPU)')
    parser.add_argument('--quick', action='store_true',
                        help='CI size: batches 1,8,32, 1 timed run, training batch 4, 4 swaps')
    args = parser.parse_args(argv)
    if args.model_path is not None:
        from tgrpo_ros.policy.config import check_model_path
        try:
            check_model_path(args.model_path, 'bench/gpu.py')
        except ValueError as error:
            parser.exit(2, f'{parser.prog}: error: {error}\n')
    batches = args.batches or ','.join(map(str, QUICK_BATCHES if args.quick else FULL_BATCHES))
    try:
        args.batches = sorted({int(b) for b in batches.split(',') if b.strip()})
    except ValueError:
        parser.error(f'--batches must be comma-separated integers, got {batches!r}')
    if 1 not in args.batches or 32 not in args.batches or min(args.batches) < 1:
        parser.error(f'--batches must include 1 and 32 (the target compares them), '
                     f'got {batches!r}')
    args.repeats = args.repeats or (1 if args.quick else 3)
    args.train_batch = args.train_batch or (4 if args.quick else 16)
    args.swaps = args.swaps or (4 if args.quick else 10)
    if args.trainable not in ('lora', 'lora+action_head'):
        parser.error(f"--trainable must be 'lora' or 'lora+action_head', got {args.trainable!r}")
    return args


def main(argv=None) -> int:
    """Run the benchmark and print the figures."""
    args = _parse(argv)
    device = _resolve_device(args.device)
    on_gpu = device.type == 'cuda'
    args.preset = args.preset or ('openvla-7b' if on_gpu else standin.DEFAULT_PRESET)
    dtype = args.dtype or ('bfloat16' if on_gpu else 'float32')
    threads = args.threads or (None if on_gpu else 1)
    if threads:
        torch.set_num_threads(threads)
    import peft
    import transformers
    name = torch.cuda.get_device_name(device) if on_gpu else f'{torch.get_num_threads()} thread(s)'
    print(f'device: {device} ({name}); torch {torch.__version__}, transformers '
          f'{transformers.__version__}, peft {peft.__version__}', flush=True)
    path = _model_path(args)

    with tempfile.TemporaryDirectory() as adapter_root:
        start = time.perf_counter()
        policy = load_policy(path, device=str(device), dtype=dtype, trainable=args.trainable,
                             adapter_root=adapter_root)
        n_params = sum(p.numel() for p in policy.model.parameters())
        print(f'load_policy: {time.perf_counter() - start:.1f} s; {n_params / 1e6:.2f} M '
              f'parameters in {dtype}; trainable={args.trainable}: '
              f'{policy.num_trainable_parameters():,} parameters', flush=True)

        # Serving: batched KV-cached sampling.
        rng = np.random.default_rng(0)
        _reset_peak(device)
        rates, cpu_rates = {}, {}
        for batch in args.batches:
            images = rng.integers(0, 256, (batch, 224, 224, 3), dtype=np.uint8)
            instructions = [INSTRUCTION] * batch
            generator = torch.Generator().manual_seed(0) if not on_gpu else None
            best, median, cpu = _timed(
                lambda: policy.sample(images, instructions, generator=generator), args.repeats)
            rates[batch], cpu_rates[batch] = batch / best, batch / cpu
            print(f'sample batch {batch:2d}: {rates[batch]:8.1f} actions/s ({best * 1e3:.1f} ms '
                  f'per call, median {median * 1e3:.1f} ms); speed-up over batch 1 '
                  f'x{rates[batch] / rates[1]:.2f}', flush=True)
        print(f'peak memory, serving (batch up to {max(args.batches)}): {_peak(device)}',
              flush=True)

        # Hot swap between two adapters that differ in every LoRA weight.
        policy.save_adapter(os.path.join(adapter_root, 'v1'))
        with torch.no_grad():
            for param in policy.trainable_parameters():
                param.add_(torch.randn_like(param), alpha=1e-3)
        policy.save_adapter(os.path.join(adapter_root, 'v2'))
        size = os.path.getsize(os.path.join(adapter_root, 'v1', 'adapter_model.safetensors'))
        swaps = [policy.load_adapter(os.path.join(adapter_root, f'v{1 + i % 2}'), i)
                 for i in range(args.swaps + 1)][1:]  # the first read warms the page cache
        print(f'adapter hot swap ({size / 2**20:.1f} MiB): {min(swaps) * 1e3:.1f} ms best, '
              f'{statistics.median(swaps) * 1e3:.1f} ms median over {len(swaps)} swaps',
              flush=True)

        # Learner: teacher-forced forward + backward + AdamW step with LoRA.
        batch = args.train_batch
        images = rng.integers(0, 256, (batch, 224, 224, 3), dtype=np.uint8)
        tokens = torch.randint(31744, 32000, (batch, 7), generator=torch.Generator()
                               .manual_seed(0))
        optimizer = policy.optimizer(lr=1e-5)
        gc.collect()
        if on_gpu:
            torch.cuda.empty_cache()
        _reset_peak(device)

        def learner_step():
            optimizer.zero_grad(set_to_none=True)
            log_probs, entropy = policy.log_probs(images, [INSTRUCTION] * batch, tokens,
                                                  with_entropy=True)
            (-log_probs.mean() - 0.01 * entropy.mean()).backward()
            optimizer.step()
            if on_gpu:
                torch.cuda.synchronize(device)

        best, median, cpu = _timed(learner_step, args.repeats)
        print(f'teacher-forced forward+backward+AdamW step, batch {batch}: '
              f'{batch / best:.1f} samples/s ({best * 1e3:.1f} ms per step, median '
              f'{median * 1e3:.1f} ms)', flush=True)
        print(f'peak memory, training (batch {batch}): {_peak(device)}', flush=True)

    wall_speedup = rates[32] / rates[1]
    print(f'batch32_speedup_vs_batch1 (wall clock): {wall_speedup:.2f}')
    use_cpu_time = not on_gpu and torch.get_num_threads() == 1
    speedup = cpu_rates[32] / cpu_rates[1] if use_cpu_time else wall_speedup
    print(f'batch32_speedup_vs_batch1: {speedup:.2f}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
