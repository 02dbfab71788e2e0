"""
Benchmark the policy layer on CPU: batched sampling, learner passes, adapter swaps.

Targets and last measured figures: docs/testing.md.

Usage: python bench/policy.py [--threads 1] [--repeats 5] [--model-path DIR]

Prints actions/s at batch 1, 4, 16 and 32 (one action = the 7 tokens of one
observation), teacher-forced forward+backward samples/s, the adapter hot-swap time,
and last ``batch16_speedup_vs_batch1: X``.  Wall-clock figures are the best of
``--repeats`` runs (the machine is shared; the best run is the least disturbed one).
The CPU-time figures (this process's CPU seconds, the best of the runs) barely move
when other processes compete for the cores, so the speed-up line uses them when
``--threads 1``; the wall-clock speed-up is printed the line before.
"""

import argparse
import os
import statistics
import sys
import tempfile
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tgrpo_ros.policy import cached_standin, load_policy  # noqa: E402

INSTRUCTION = 'pick up the alphabet soup and place it in the basket'


def _timed(function, repeats: int):
    """Return (best wall s, median wall s, best CPU s) over ``repeats`` calls."""
    function()  # warm-up
    walls, cpus = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        function()
        walls.append(time.perf_counter() - start)
        cpus.append(time.process_time() - start_cpu)
    return min(walls), statistics.median(walls), min(cpus)


def main(argv=None) -> int:
    """Run the benchmark and print the figures."""
    parser = argparse.ArgumentParser(
        description=__doc__.strip().splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument('--threads', type=int, default=1, help='torch CPU threads')
    parser.add_argument('--repeats', type=int, default=5, help='timed runs per figure')
    parser.add_argument('--model-path', default=None, help='checkpoint (default: stand-in)')
    parser.add_argument('--trainable', default='lora+action_head',
                        help="trainable mode: 'lora', 'lora+action_head' or 'full'")
    args = parser.parse_args(argv)
    if args.model_path is not None:
        from tgrpo_ros.policy.config import check_model_path
        try:
            check_model_path(args.model_path, 'bench/policy.py')
        except ValueError as error:
            parser.exit(2, f'{parser.prog}: error: {error}\n')
    torch.set_num_threads(args.threads)
    path = args.model_path or cached_standin(seed=0)
    policy = load_policy(path, trainable=args.trainable)
    n_params = sum(p.numel() for p in policy.model.parameters())
    print(f'model: {path} ({n_params / 1e6:.2f} M parameters), {args.threads} CPU thread(s), '
          f'trainable={args.trainable} ({policy.num_trainable_parameters()} parameters)')
    rng = np.random.default_rng(0)
    rates, cpu_rates = {}, {}
    for batch in (1, 4, 16, 32):
        images = rng.integers(0, 256, (batch, 224, 224, 3), dtype=np.uint8)
        instructions = [INSTRUCTION] * batch
        generator = torch.Generator().manual_seed(0)
        best, median, cpu = _timed(
            lambda: policy.sample(images, instructions, generator=generator), args.repeats)
        rates[batch], cpu_rates[batch] = batch / best, batch / cpu
        print(f'sample batch {batch:2d}: {rates[batch]:7.1f} actions/s wall '
              f'({best * 1e3:.0f} ms per call, median {median * 1e3:.0f} ms); '
              f'{cpu_rates[batch]:7.1f} actions/s per CPU second')

    batch = 16
    images = rng.integers(0, 256, (batch, 224, 224, 3), dtype=np.uint8)
    tokens = torch.randint(31744, 32000, (batch, 7))
    optimizer = policy.optimizer(lr=1e-5)

    def learner_step():
        optimizer.zero_grad()
        log_probs, entropy = policy.log_probs(images, [INSTRUCTION] * batch, tokens,
                                              with_entropy=True)
        (-log_probs.mean() - 0.01 * entropy.mean()).backward()
        optimizer.step()

    best, median, cpu = _timed(learner_step, args.repeats)
    print(f'teacher-forced forward+backward+step batch {batch}: {batch / best:.1f} samples/s '
          f'wall ({best * 1e3:.0f} ms per step, median {median * 1e3:.0f} ms); '
          f'{batch / cpu:.1f} samples/s per CPU second')

    with tempfile.TemporaryDirectory() as root:
        policy.save_adapter(os.path.join(root, 'v1'))
        policy.save_adapter(os.path.join(root, 'v2'))
        server = load_policy(path, trainable=args.trainable, adapter_root=root)
        swaps = [server.load_adapter(os.path.join(root, f'v{1 + i % 2}'), i)
                 for i in range(20)]
        print(f'adapter swap: {min(swaps) * 1e3:.1f} ms best, '
              f'{statistics.median(swaps) * 1e3:.1f} ms median (20 swaps, target < 50 ms)')
    wall_speedup = rates[16] / rates[1]
    print(f'batch16_speedup_vs_batch1 (wall clock): {wall_speedup:.2f}')
    speedup = cpu_rates[16] / cpu_rates[1] if args.threads == 1 else wall_speedup
    print(f'batch16_speedup_vs_batch1: {speedup:.2f}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
