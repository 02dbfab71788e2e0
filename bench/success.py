"""
Success check: TGRPO from the SFT'd stand-in against GRPO and the SFT start, at equal env steps.

Targets and last measured figures: docs/testing.md; the method's claim:
docs/references.md §1 (OpenVLA SFT 88.4 -> TGRPO 92.2 on LIBERO-Object, trajectory-only
86.8).

From the same SFT'd start (``--model-path``, default the shipped
``models/standin_sft_task0``), on the same task and init states, each arm trains with
the product's own code (``sim.rollout.GroupRollout`` + ``training.trainer.TGRPOTrainer``)
until it has used ``--env-steps`` policy steps (equal env steps per arm):

- ``tgrpo``: a1 = 0.3, a2 = 0.7 (the paper's fusion);
- ``grpo``: a1 = 0, a2 = 1 (trajectory-level only, the paper's ablation);
- ``step``: a1 = 1, a2 = 0 (step-level only), with ``--arms tgrpo,grpo,step``.

Training rollouts sample at ``--train-temperature`` (the learner's ``temperature``),
which is also the temperature of every training log-prob. The shipped SFT'd stand-in
succeeds greedily on 30% of the init states but almost never at temperature 1 (1 of 48
training episodes in a run here), so almost no group has a success to learn from.

Then the SFT start and every arm's final policy are evaluated on the same episodes with
``sim.evaluate.run_evaluation`` (the code behind ``tgrpo_eval``): ``--eval-init-states``
fixed LIBERO init states x ``--eval-repeats`` episodes each, sampled at
``--eval-temperature`` from one seeded stream (greedy decoding is deterministic, so
repeats would only replay episodes; with ``--eval-temperature 0`` each init state is run
once, greedily).

The defaults are the scale that fits the 120-minute budget on 2 cores: task 0, training
and evaluation on init states 0-9, both at temperature 0.25 (the policy RL trains is the
sampled one), 10 episodes per init state (100 per policy), episodes of at most 220 steps
(every success of the SFT start took 170-215), full fine-tuning at lr 1e-5 with one epoch
per update. Why: at temperature 0.5 the SFT start grasped almost never (1 success in 40
training episodes on init states 0-9, and most groups' returns within 1 of each other:
nothing to learn from), at 0.25 it succeeded on 7 of 20 (greedy: 3 of 10); lr 1e-4 moved
the policy by a per-token KL of 0.86 in its first update and wrecked it, and the per-update
KL grows as (lr / temperature)^2 with Adam.

Prints each success rate with its 95% Wilson interval, the env steps and wall time of
every arm, writes a plot and a JSON summary, and ends with two lines:
``success_gain_z: Z`` (Z = (p_TGRPO - p_SFT) / pooled standard error) and, last,
``success_gain_points: X`` (TGRPO minus SFT success in percentage points). Target:
X >= 10 and Z >= 2.
"""

import argparse
import json
import math
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

ARM_ADVANTAGE_WEIGHTS = {'tgrpo': 0.3, 'grpo': 0.0, 'step': 1.0}  # a1; a2 = 1 - a1


def pooled_z(successes_a, n_a, successes_b, n_b):
    """Return (p_a - p_b) / pooled standard error of two binomial proportions."""
    pooled = (successes_a + successes_b) / (n_a + n_b)
    se = math.sqrt(pooled * (1.0 - pooled) * (1.0 / n_a + 1.0 / n_b))
    diff = successes_a / n_a - successes_b / n_b
    if se == 0.0:
        return 0.0 if diff == 0.0 else math.copysign(math.inf, diff)
    return diff / se


def trainer_config(args, arm):
    """
    Return the TGRPOConfig of ``arm``: every option named like a config field, and a1/a2.

    Passing the options by name means a new training flag cannot be parsed and then
    dropped (``--advantage-mode masked`` once trained in paper mode without a word).
    """
    from dataclasses import fields

    from tgrpo_ros.training.config import TGRPOConfig

    names = {f.name for f in fields(TGRPOConfig)}
    values = {key: value for key, value in vars(args).items() if key in names}
    a1 = ARM_ADVANTAGE_WEIGHTS[arm]
    values.update(a1=a1, a2=1.0 - a1)
    return TGRPOConfig(**values)


def train_arm(args, arm, out_dir):
    """Train one arm until its env-step budget is used; return its record."""
    import numpy as np
    import torch

    from tgrpo_ros.policy import load_policy
    from tgrpo_ros.sim.reward import RewardConfig
    from tgrpo_ros.sim.rollout import GroupRollout
    from tgrpo_ros.training.trainer import TGRPOTrainer

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    # One temperature for sampling and for every training log-prob (docs/tgrpo.md).
    policy = load_policy(args.model_path, trainable=args.trainable,
                         temperature=args.train_temperature)
    config = trainer_config(args, arm)
    trainer = TGRPOTrainer(policy, config, seed=args.seed)
    sampler = torch.Generator().manual_seed(args.seed)
    init_states = np.random.default_rng(args.seed).permutation(args.train_init_states)
    rollout = GroupRollout(args.group_size, task_id=args.task, camera_size=args.camera_size,
                           max_steps=args.max_steps, reward=RewardConfig(), parallel=True,
                           multisample=False, name=arm)
    rows, env_steps, start = [], 0, time.perf_counter()
    try:
        while env_steps < args.env_steps:
            update = len(rows) + 1
            init_state = int(init_states[(update - 1) % len(init_states)])
            episodes = rollout.run(policy, init_state, group_id=update, generator=sampler,
                                   stop_on_first_success=args.advantage_mode == 'paper')
            env_steps += sum(e.length for e in episodes)
            metrics = trainer.update(episodes)
            metrics.update({'update': update, 'init_state': init_state,
                            'env_steps': env_steps,
                            'elapsed_s': time.perf_counter() - start})
            rows.append(metrics)
            print(f'[{arm}] update {update}  init {init_state}  success '
                  f"{metrics['rollout/success_rate']:.2f}  return "
                  f"{metrics['rollout/return_mean']:.2f}  env steps {env_steps}/"
                  f"{args.env_steps}  {metrics['elapsed_s'] / 60:.1f} min", flush=True)
    finally:
        rollout.close()
    adapter = policy.save_adapter(os.path.join(out_dir, arm, 'adapter'))
    with open(os.path.join(out_dir, arm, 'updates.jsonl'), 'w') as stream:
        stream.writelines(json.dumps(row) + '\n' for row in rows)
    return {'arm': arm, 'a1': config.a1, 'adapter': adapter, 'updates': len(rows),
            'env_steps': env_steps, 'train_seconds': time.perf_counter() - start,
            'rows': rows}


def evaluate(args, name, adapter, out_dir):
    """Evaluate one policy on the shared evaluation episodes; return successes and n."""
    from tgrpo_ros.sim.evaluate import EvalConfig, run_evaluation

    temperature = args.eval_temperature if args.eval_temperature > 0 else None
    config = EvalConfig(policy='vla', tasks=[args.task], num_init_states=args.eval_init_states,
                        repeats=args.eval_repeats if temperature is not None else 1,
                        num_envs=args.eval_envs, camera_size=args.camera_size,
                        multisample=False, max_steps=args.max_steps, seed=args.seed + 1000,
                        model_path=args.model_path, adapter_path=adapter,
                        temperature=temperature,
                        json_path=os.path.join(out_dir, f'eval_{name}.json'))
    report = run_evaluation(config, progress=False)
    print(f'[eval {name}] {report["successes"]}/{report["episodes"]} '
          f'({report["wall_seconds"] / 60:.1f} min)', flush=True)
    return {'name': name, 'successes': report['successes'], 'episodes': report['episodes'],
            'eval_seconds': report['wall_seconds']}


def plot(summary, path):
    """Success with Wilson intervals per policy, and each arm's rollout success."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    from tgrpo_ros.sim.evaluate import wilson_interval

    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    names = [e['name'] for e in summary['evals']]
    rates = [e['successes'] / e['episodes'] for e in summary['evals']]
    low_high = [wilson_interval(e['successes'], e['episodes']) for e in summary['evals']]
    errors = [[r - lo for r, (lo, _) in zip(rates, low_high)],
              [hi - r for r, (_, hi) in zip(rates, low_high)]]
    axes[0].bar(names, rates, yerr=errors, capsize=6, color='tab:blue', alpha=0.8)
    axes[0].set_ylim(0, 1)
    axes[0].set_ylabel('success (95% Wilson interval)')
    axes[0].set_title(f"evaluation, {summary['evals'][0]['episodes']} episodes each")
    for arm in summary['arms']:
        rows = arm['rows']
        axes[1].plot([r['env_steps'] for r in rows],
                     [r['rollout/success_rate'] for r in rows], marker='.', label=arm['arm'])
    axes[1].set_xlabel('env steps')
    axes[1].set_ylabel('group success rate (sampled)')
    axes[1].set_title('training rollouts')
    axes[1].legend()
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv=None):
    """Train the arms, evaluate them and the SFT start, print the figures."""
    parser = argparse.ArgumentParser(
        description=__doc__.split('\n\n')[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument('--model-path', default=os.path.join(ROOT, 'models',
                                                             'standin_sft_task0'),
                        help="the SFT'd start (a full checkpoint directory)")
    parser.add_argument('--arms', default='tgrpo,grpo', help='comma list of '
                        f'{list(ARM_ADVANTAGE_WEIGHTS)}')
    parser.add_argument('--task', type=int, default=0, help='LIBERO-Object task id')
    parser.add_argument('--env-steps', type=int, default=8000,
                        help='policy steps of training per arm (equal for every arm)')
    parser.add_argument('--train-init-states', type=int, default=10,
                        help='train on init states 0..N-1, shuffled and cycled')
    parser.add_argument('--group-size', type=int, default=4, help='N episodes per group')
    parser.add_argument('--max-steps', type=int, default=220, help='policy steps per episode')
    parser.add_argument('--camera-size', type=int, default=128, help='render size (px)')
    parser.add_argument('--trainable', default='full', help="'full', 'lora+action_head'")
    parser.add_argument('--lr', type=float, default=1e-5, help='learning rate')
    parser.add_argument('--train-temperature', type=float, default=0.25,
                        help='sampling temperature of the training rollouts (and of their '
                             'log-probs); below 1 a weak SFT start succeeds more often')
    parser.add_argument('--epochs', type=int, default=1, help='epochs per update')
    parser.add_argument('--minibatch-size', type=int, default=64, help='steps per minibatch')
    parser.add_argument('--beta', type=float, default=0.0, help='KL weight to the SFT policy')
    parser.add_argument('--advantage-mode', default='paper', choices=('paper', 'masked'),
                        help="'paper': the group stops at its first success")
    parser.add_argument('--filter-groups', action='store_true',
                        help='skip all-success and all-fail groups (dynamic sampling)')
    parser.add_argument('--eval-init-states', type=int, default=10, help='init states 0..N-1')
    parser.add_argument('--eval-repeats', type=int, default=10,
                        help='sampled episodes per init state (1 when greedy)')
    parser.add_argument('--eval-temperature', type=float, default=0.25,
                        help='sampling temperature of the evaluation; 0: greedy, one seed')
    parser.add_argument('--eval-envs', type=int, default=2, help='env processes')
    parser.add_argument('--seed', type=int, default=0, help='training and sampling seed')
    parser.add_argument('--threads', type=int, default=1, help='torch threads')
    parser.add_argument('--out-dir', default='runs/success_check', help='outputs go here')
    parser.add_argument('--plot', default=None, help='plot path (default: OUT_DIR/success.png)')
    args = parser.parse_args(argv)
    arms = [a for a in args.arms.split(',') if a]
    unknown = [a for a in arms if a not in ARM_ADVANTAGE_WEIGHTS]
    if unknown or 'tgrpo' not in arms:
        parser.error(f'--arms must include tgrpo and only {list(ARM_ADVANTAGE_WEIGHTS)}, '
                     f'got {arms}')
    from tgrpo_ros.policy.config import check_model_path
    from tgrpo_ros.sim.libero_env import check_ids
    try:  # one line each, before anything is loaded
        check_model_path(args.model_path, 'bench/success.py')
        check_ids('libero_object', [args.task], range(args.train_init_states))
        check_ids('libero_object', [args.task], range(args.eval_init_states))
    except ValueError as error:
        parser.exit(2, f'{parser.prog}: error: {error}\n')
    os.makedirs(args.out_dir, exist_ok=True)
    start = time.perf_counter()

    results = [train_arm(args, arm, args.out_dir) for arm in arms]
    evals = [evaluate(args, 'sft', None, args.out_dir)]
    evals += [evaluate(args, r['arm'], r['adapter'], args.out_dir) for r in results]

    from tgrpo_ros.sim.evaluate import wilson_interval
    by_name = {e['name']: e for e in evals}
    print(f'scale: task {args.task}, group {args.group_size}, max {args.max_steps} steps, '
          f'{args.env_steps} env steps per arm, eval {evals[0]["episodes"]} episodes per '
          f'policy ({args.eval_init_states} init states, temperature '
          f'{args.eval_temperature or "greedy"})')
    for e in evals:
        low, high = wilson_interval(e['successes'], e['episodes'])
        arm = next((r for r in results if r['arm'] == e['name']), None)
        train = (f"; trained {arm['updates']} updates, {arm['env_steps']} env steps, "
                 f"{arm['train_seconds'] / 60:.1f} min" if arm else '')
        print(f"{e['name']}: success {e['successes']}/{e['episodes']} = "
              f"{e['successes'] / e['episodes']:.3f} [{low:.3f}, {high:.3f}]; eval "
              f"{e['eval_seconds'] / 60:.1f} min{train}")
    sft, tgrpo = by_name['sft'], by_name['tgrpo']
    if 'grpo' in by_name:
        grpo = by_name['grpo']
        versus = pooled_z(tgrpo['successes'], tgrpo['episodes'], grpo['successes'],
                          grpo['episodes'])
        print(f'tgrpo vs grpo (trajectory-only ablation): z = {versus:+.2f}')
    wall = time.perf_counter() - start
    print(f'wall time: {wall / 60:.1f} min')
    z = pooled_z(tgrpo['successes'], tgrpo['episodes'], sft['successes'], sft['episodes'])
    points = 100.0 * (tgrpo['successes'] / tgrpo['episodes']
                      - sft['successes'] / sft['episodes'])
    summary = {'args': vars(args), 'arms': results, 'evals': evals, 'wall_seconds': wall,
               'success_gain_z': z, 'success_gain_points': points}
    with open(os.path.join(args.out_dir, 'summary.json'), 'w') as stream:
        json.dump(summary, stream, indent=1)
    plot_path = args.plot or os.path.join(args.out_dir, 'success.png')
    plot(summary, plot_path)
    print(f'plot: {plot_path}')
    print(f'success_gain_z: {z:.3f}')
    print(f'success_gain_points: {points:.1f}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
