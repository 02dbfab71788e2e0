"""
Learning check: TGRPO vs a learning-rate-0 control from the random-init stand-in.

Target and last measured figures: docs/testing.md. Both arms start from the same
stand-in and use the same seeds (sampling generator, minibatch shuffling), on
LIBERO-Object task 0, init state 0, dense reward, N envs per group, 10 wait steps
then ``--max-steps`` policy steps. The control arm is the same loop with learning
rate 0: its weights never change, so with ``--control-skip-update`` (default) it
skips the loss passes (they would only produce diagnostics) and costs rollouts only.

For each run, gain = mean return over updates 41-60 minus mean return over updates
1-10 (windows scale with ``--updates``: the last third and the first sixth). The last
line printed is ``return_gain_z: X`` with X = (TGRPO gain - control gain) / (std of
the control run's per-update mean returns). Progress goes to stderr.

Each arm runs in its own process (``--jobs 2`` runs them side by side).
"""

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

ARMS = ('tgrpo', 'control')


def windows(updates):
    """Return the (first, last) 1-based inclusive update windows of the gain."""
    if updates == 60:
        return (1, 10), (41, 60)
    first = max(1, round(updates / 6))
    last = max(1, round(updates / 3))
    return (1, first), (updates - last + 1, updates)


def gain(returns, updates):
    """Mean return of the last window minus mean return of the first window."""
    (a0, a1), (b0, b1) = windows(updates)
    returns = np.asarray(returns, dtype=np.float64)
    return float(returns[b0 - 1:b1].mean() - returns[a0 - 1:a1].mean())


def run_arm(args):
    """Run one arm in this process; write one JSON line per update to ``args.arm_out``."""
    import torch
    torch.set_num_threads(args.threads)
    from tgrpo_ros.training.config import TGRPOConfig
    from tgrpo_ros.policy import cached_standin, LoraSettings, load_policy
    from tgrpo_ros.sim.reward import RewardConfig
    from tgrpo_ros.sim.rollout import GroupRollout
    from tgrpo_ros.training.trainer import rollout_metrics, TGRPOTrainer

    torch.manual_seed(args.seed)
    policy = load_policy(cached_standin(args.standin_seed), trainable=args.trainable,
                         lora=LoraSettings(r=args.lora_rank))
    config = TGRPOConfig(group_size=args.group_size, lr=args.lr, epochs=args.epochs,
                         minibatch_size=args.minibatch_size, beta=args.beta,
                         a1=args.a1, a2=1.0 - args.a1)
    lr = args.lr if args.arm == 'tgrpo' else 0.0
    trainer = TGRPOTrainer(policy, config, seed=args.seed, learning_rate=lr)
    sampler = torch.Generator().manual_seed(args.seed)
    rollout = GroupRollout(args.group_size, task_id=args.task, camera_size=args.camera_size,
                           max_steps=args.max_steps, reward=RewardConfig(),
                           parallel=args.parallel_envs, multisample=False, name=args.arm)
    start = time.perf_counter()
    try:
        with open(args.arm_out, 'w') as out:
            for update in range(1, args.updates + 1):
                t0 = time.perf_counter()
                episodes = rollout.run(policy, args.init_state, group_id=update,
                                       temperature=1.0, generator=sampler)
                rollout_time = time.perf_counter() - t0
                if args.arm == 'control' and args.control_skip_update:
                    metrics = rollout_metrics(episodes)
                else:
                    metrics = trainer.update(episodes)
                metrics['perf/rollout_time'] = rollout_time
                metrics['perf/total_time'] = time.perf_counter() - t0
                metrics['update'] = update
                out.write(json.dumps(metrics) + '\n')
                out.flush()
                print(f'[{args.arm}] update {update}/{args.updates}  return '
                      f"{metrics['rollout/return_mean']:.3f}  success "
                      f"{metrics['rollout/success_rate']:.2f}  entropy "
                      f"{metrics.get('loss/entropy', float('nan')):.2f}  clip "
                      f"{metrics.get('loss/clip_frac', float('nan')):.2f}  s/update "
                      f"{metrics['perf/total_time']:.1f}  elapsed "
                      f'{(time.perf_counter() - start) / 60:.1f} min',
                      file=sys.stderr, flush=True)
    finally:
        rollout.close()
    return 0


def read_arm(path):
    """Read an arm's per-update metrics (JSON lines)."""
    with open(path) as stream:
        return [json.loads(line) for line in stream if line.strip()]


def plot(results, updates, path, z):
    """Plot per-update mean return of both arms with the gain windows shaded."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    (a0, a1), (b0, b1) = windows(updates)
    for arm, rows in results.items():
        xs = [r['update'] for r in rows]
        axes[0].plot(xs, [r['rollout/return_mean'] for r in rows], marker='.', label=arm)
        if any('loss/entropy' in r for r in rows):
            axes[1].plot(xs, [r.get('loss/entropy', np.nan) for r in rows], label=arm)
    for ax in axes:
        ax.axvspan(a0 - 0.5, a1 + 0.5, color='grey', alpha=0.15)
        ax.axvspan(b0 - 0.5, b1 + 0.5, color='grey', alpha=0.15)
        ax.set_xlabel('update')
        ax.grid(alpha=0.3)
        ax.legend()
    axes[0].set_title(f'mean group return (dense reward); return_gain_z = {z:.2f}')
    axes[1].set_title('policy entropy per action token (nats)')
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv=None):
    """Run both arms (or one, with --arm) and print the gains and return_gain_z."""
    parser = argparse.ArgumentParser(
        description=__doc__.split('\n\n')[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument('--updates', type=int, default=60, help='updates per arm')
    parser.add_argument('--group-size', type=int, default=4, help='N episodes per group')
    parser.add_argument('--task', type=int, default=0, help='LIBERO-Object task id')
    parser.add_argument('--init-state', type=int, default=0, help='init state id')
    parser.add_argument('--max-steps', type=int, default=40,
                        help='policy steps per episode (after the 10 wait steps)')
    parser.add_argument('--camera-size', type=int, default=128, help='render size (px)')
    parser.add_argument('--trainable', default='full',
                        help="'full', 'lora+action_head' or 'lora' (see docs/training.md)")
    parser.add_argument('--lora-rank', type=int, default=32, help='LoRA rank')
    parser.add_argument('--lr', type=float, default=3e-3, help='TGRPO arm learning rate')
    parser.add_argument('--epochs', type=int, default=1, help='epochs per update')
    parser.add_argument('--minibatch-size', type=int, default=20, help='steps per minibatch')
    parser.add_argument('--beta', type=float, default=0.0, help='KL weight')
    parser.add_argument('--a1', type=float, default=0.3, help='step-advantage weight')
    parser.add_argument('--seed', type=int, default=0, help='sampling/shuffling seed')
    parser.add_argument('--standin-seed', type=int, default=0, help='stand-in weights seed')
    parser.add_argument('--threads', type=int, default=1, help='torch threads per arm')
    parser.add_argument('--sequential-envs', dest='parallel_envs', action='store_false',
                        help='step the N envs in this process instead of worker processes')
    parser.add_argument('--control-full-update', dest='control_skip_update',
                        action='store_false',
                        help='run the (lr 0) loss passes in the control arm too')
    parser.add_argument('--jobs', type=int, default=2, help='arms run side by side')
    parser.add_argument('--arms', default='tgrpo,control', help='arms to run')
    parser.add_argument('--out-dir', default='runs/learn_check',
                        help='per-arm metrics (JSON lines) go here')
    parser.add_argument('--plot', default='docs/learn_check.png', help='output plot')
    parser.add_argument('--arm', choices=ARMS, help=argparse.SUPPRESS)
    parser.add_argument('--arm-out', help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    from tgrpo_ros.sim.libero_env import check_ids
    try:
        check_ids('libero_object', [args.task], [args.init_state])
    except ValueError as error:
        parser.exit(2, f'{parser.prog}: error: {error}\n')
    if args.arm:
        return run_arm(args)

    arms = [a for a in args.arms.split(',') if a]
    bad = [a for a in arms if a not in ARMS]
    if bad:
        parser.error(f'unknown arms {bad}; choose from {list(ARMS)}')
    os.makedirs(args.out_dir, exist_ok=True)
    forwarded = list(argv if argv is not None else sys.argv[1:])
    start = time.perf_counter()
    pending = list(arms)
    running = {}
    while pending or running:
        while pending and len(running) < max(1, args.jobs):
            arm = pending.pop(0)
            out = os.path.join(args.out_dir, f'{arm}.jsonl')
            command = [sys.executable, os.path.abspath(__file__), *forwarded,
                       '--arm', arm, '--arm-out', out]
            running[arm] = (subprocess.Popen(command), out)
        for arm, (proc, _) in list(running.items()):
            if proc.poll() is not None:
                if proc.returncode != 0:
                    for other, (p, _) in running.items():
                        if p.poll() is None:
                            p.terminate()
                    print(f'arm {arm} failed with exit code {proc.returncode}',
                          file=sys.stderr)
                    return 1
                del running[arm]
        time.sleep(1.0)

    results = {arm: read_arm(os.path.join(args.out_dir, f'{arm}.jsonl')) for arm in arms}
    for arm, rows in results.items():
        if len(rows) != args.updates:
            print(f'arm {arm} logged {len(rows)} of {args.updates} updates', file=sys.stderr)
            return 1
    returns = {arm: [r['rollout/return_mean'] for r in rows] for arm, rows in results.items()}
    gains = {arm: gain(values, args.updates) for arm, values in returns.items()}
    (a0, a1), (b0, b1) = windows(args.updates)
    print(f'windows: updates {a0}-{a1} vs {b0}-{b1}; wall time '
          f'{(time.perf_counter() - start) / 60:.1f} min')
    for arm in arms:
        seconds = np.mean([r['perf/total_time'] for r in results[arm]])
        print(f'{arm}: gain {gains[arm]:+.4f}  first-window mean '
              f'{np.mean(returns[arm][a0 - 1:a1]):.4f}  last-window mean '
              f'{np.mean(returns[arm][b0 - 1:b1]):.4f}  s/update {seconds:.1f}')
    if set(arms) != set(ARMS):
        return 0
    control_std = float(np.std(returns['control'], ddof=1))
    z = (gains['tgrpo'] - gains['control']) / control_std
    print(f'control per-update mean-return std: {control_std:.4f}')
    plot(results, args.updates, args.plot, z)
    print(f'plot: {args.plot}')
    summary = {'gains': gains, 'control_std': control_std, 'return_gain_z': z,
               'args': {k: v for k, v in vars(args).items() if k not in ('arm', 'arm_out')}}
    with open(os.path.join(args.out_dir, 'summary.json'), 'w') as stream:
        json.dump(summary, stream, indent=1)
    print(f'return_gain_z: {z:.3f}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
