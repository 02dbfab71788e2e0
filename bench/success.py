"""
Success check: TGRPO from the SFT'd stand-in against GRPO and the SFT start, at equal env steps.

Targets and last measured figures: docs/testing.md; the method's claim:
docs/references.md §1 (OpenVLA SFT 88.4 -> TGRPO 92.2 on LIBERO-Object, trajectory-only
86.8).

From the same SFT'd start (``--model-path``, default the shipped
``models/standin_sft_task0``), on the same task and init states, each arm trains with
the product's own code (``sim.rollout.GroupRollout`` + ``training.trainer.TGRPOTrainer``)
until it has used ``--env-steps`` policy steps (equal env steps per arm):

- ``tgrpo``: a1 = 0.3, a2 = 0.7 (the paper's fusion), ``--trainable`` (full) at ``--lr``;
- ``tgrpo_lora``: the same fusion training LoRA only (``--lora-trainable``, default
  'lora': r 32, alpha 16 on q_proj and v_proj, the layout the learner gives OpenVLA-7B)
  at ``--lora-lr``: the path a GPU user takes;
- ``grpo``: a1 = 0, a2 = 1 (trajectory-level only, the paper's ablation);
- ``step``: a1 = 1, a2 = 0 (step-level only).

Default arms: ``tgrpo,tgrpo_lora`` (about 115 minutes with the held-out split on 2
cores); ``--arms tgrpo,tgrpo_lora,grpo`` adds the ablation (about 35 minutes more).

Training rollouts sample at ``--train-temperature`` (the learner's ``temperature``),
which is also the temperature of every training log-prob. The shipped SFT'd stand-in
succeeds greedily on 30% of the init states but almost never at temperature 1 (1 of 48
training episodes in a run here), so almost no group has a success to learn from.

Then the SFT start and every arm's final policy are evaluated on the same episodes with
``sim.evaluate.run_evaluation`` (the code behind ``tgrpo_eval``), on two splits:
``trained``, init states 0..``--eval-init-states``-1 x ``--eval-repeats`` episodes, and
``heldout``, the ``--heldout-init-states`` init states after the trained ones (10-19 by
default: never trained on) x ``--heldout-repeats``; sampled at ``--eval-temperature``
from one seeded stream, the same for every policy (greedy decoding is deterministic, so
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
every arm, and for each arm and split against the SFT start: the gain in points, the
pooled z, the stratified z (Cochran-Mantel-Haenszel over init states: the policies ran
the same init states with the same seeds, so only within-state differences count) and
the mean per-state difference with its paired standard error. Writes a plot and a JSON
summary (with the ``environment`` record: tgrpo_ros/provenance.py), and ends with two
lines: ``success_gain_z: Z`` (the stratified z of TGRPO over SFT on the trained init
states) and, last, ``success_gain_points: X`` (TGRPO minus SFT success in percentage
points, same split). Target: X >= 10 and Z >= 2.

``--lr-probe 1e-5,1e-4,...`` runs instead one group from the SFT start and one update
of ``--probe-arm`` at each lr, printing the per-update KL (how the lrs were chosen).
"""

import argparse
import dataclasses
import json
import math
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

LORA_LR = 1e-3  # per-update KL 1.6e-3 in the --lr-probe (full arm: 0.001-0.02), docs/sft.md
ARM_ADVANTAGE_WEIGHTS = {'tgrpo': 0.3, 'grpo': 0.0, 'step': 1.0,
                         'tgrpo_lora': 0.3}  # a1; a2 = 1 - a1
# Arms that train LoRA (--lora-trainable at --lora-lr) instead of --trainable at --lr:
# the 7B path. 'lora' with the default LoraSettings (r 32, alpha 16, q_proj and v_proj)
# is the layout PolicyLoadConfig gives OpenVLA-7B.
LORA_ARMS = ('tgrpo_lora',)


def arm_training(args, arm):
    """Return (trainable mode, lr) of ``arm``."""
    if arm in LORA_ARMS:
        return args.lora_trainable, args.lora_lr
    return args.trainable, args.lr


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


def stratified_z(per_state_a, per_state_b):
    """
    Cochran-Mantel-Haenszel z of policy a over b, stratified by init state.

    per_state_x: {init state: (successes, episodes)}; only states both were evaluated
    on count. Per state k with n_a, n_b episodes and m successes of N = n_a + n_b:
    E[s_a] = n_a m / N, Var[s_a] = n_a n_b m (N - m) / (N^2 (N - 1)) (hypergeometric);
    z = sum(s_a - E) / sqrt(sum Var). Differences between init states (one succeeds
    9 times in 10, another once) leave the statistic: only within-state differences
    count, which is what a paired design (same init states, same seeds) measures.
    """
    observed = expected = variance = 0.0
    for state in sorted(set(per_state_a) & set(per_state_b)):
        s_a, n_a = per_state_a[state]
        s_b, n_b = per_state_b[state]
        total, successes = n_a + n_b, s_a + s_b
        if total < 2:
            continue
        observed += s_a
        expected += n_a * successes / total
        variance += (n_a * n_b * successes * (total - successes)
                     / (total * total * (total - 1)))
    diff = observed - expected
    if variance == 0.0:
        return 0.0 if diff == 0.0 else math.copysign(math.inf, diff)
    return diff / math.sqrt(variance)


def paired_state_difference(per_state_a, per_state_b):
    """
    Mean over init states of (rate_a - rate_b), its standard error and t; None if < 2.

    Each init state is one paired observation (both policies ran it with the same
    seeds): se = sd of the per-state differences / sqrt(states).
    """
    states = sorted(set(per_state_a) & set(per_state_b))
    diffs = [per_state_a[k][0] / per_state_a[k][1] - per_state_b[k][0] / per_state_b[k][1]
             for k in states]
    if len(diffs) < 2:
        return None
    mean = sum(diffs) / len(diffs)
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (len(diffs) - 1))
    se = sd / math.sqrt(len(diffs))
    t = (0.0 if mean == 0.0 else math.copysign(math.inf, mean)) if se == 0.0 else mean / se
    return {'states': len(diffs), 'mean': mean, 'se': se, 't': t}


def per_state(report):
    """Return {init state: (successes, episodes)} of an evaluation report."""
    counts = {}
    for episode in report['episode_results']:
        s, n = counts.get(int(episode['init_state_id']), (0, 0))
        counts[int(episode['init_state_id'])] = (s + bool(episode['success']), n + 1)
    return counts


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
    trainable, lr = arm_training(args, arm)
    policy = load_policy(args.model_path, trainable=trainable,
                         temperature=args.train_temperature)
    config = dataclasses.replace(trainer_config(args, arm), lr=lr)
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
    return {'arm': arm, 'a1': config.a1, 'trainable': trainable, 'lr': lr,
            'trainable_parameters': policy.num_trainable_parameters(),
            'adapter': adapter, 'updates': len(rows),
            'env_steps': env_steps, 'train_seconds': time.perf_counter() - start,
            'rows': rows}


def lr_probe(args, arm, lrs):
    """
    One group from the SFT start, then one update of ``arm`` at each lr from that start.

    Prints each lr's per-update KL (loss/approx_kl), clip fraction and gradient norm:
    the full arm's lr was chosen for a per-update KL of 0.001-0.02 (lr 1e-4 gave 0.86
    and wrecked the policy), and the LoRA arm's is chosen the same way.
    """
    import torch

    from tgrpo_ros.policy import load_policy
    from tgrpo_ros.sim.reward import RewardConfig
    from tgrpo_ros.sim.rollout import GroupRollout
    from tgrpo_ros.training.trainer import TGRPOTrainer

    torch.set_num_threads(args.threads)
    trainable, _ = arm_training(args, arm)
    policy = load_policy(args.model_path, trainable=trainable,
                         temperature=args.train_temperature)
    rollout = GroupRollout(args.group_size, task_id=args.task, camera_size=args.camera_size,
                           max_steps=args.max_steps, reward=RewardConfig(), parallel=True,
                           multisample=False, name='probe')
    try:
        episodes = rollout.run(policy, args.probe_init_state, group_id=1,
                               generator=torch.Generator().manual_seed(args.seed),
                               stop_on_first_success=args.advantage_mode == 'paper')
    finally:
        rollout.close()
    print(f'[probe {arm}] group on init state {args.probe_init_state}: '
          f'{sum(e.success for e in episodes)}/{len(episodes)} successes, '
          f'{sum(e.length for e in episodes)} steps, returns '
          f'{[round(float(e.rewards.sum()), 1) for e in episodes]}', flush=True)
    rows = []
    for lr in lrs:
        torch.manual_seed(args.seed)
        policy = load_policy(args.model_path, trainable=trainable,
                             temperature=args.train_temperature)
        config = dataclasses.replace(trainer_config(args, arm), lr=lr)
        metrics = TGRPOTrainer(policy, config, seed=args.seed).update(episodes)
        rows.append({'lr': lr, **metrics})
        print(f"[probe {arm}] lr {lr:g}: approx_kl {metrics['loss/approx_kl']:.2e}, clip_frac "
              f"{metrics.get('loss/clip_frac', 0.0):.3f}, grad_norm "
              f"{metrics['loss/grad_norm']:.3f}", flush=True)
    return rows


def eval_splits(args):
    """Return the evaluation splits: (split, first init state, states, repeats)."""
    greedy = not args.eval_temperature > 0
    splits = [('trained', 0, args.eval_init_states, 1 if greedy else args.eval_repeats)]
    if args.heldout_init_states > 0:
        splits.append(('heldout', args.train_init_states, args.heldout_init_states,
                       1 if greedy else args.heldout_repeats))
    return splits


def evaluate(args, name, adapter, out_dir, split='trained', first=0, states=None,
             repeats=None):
    """Evaluate one policy on one split's shared episodes; return its record."""
    from tgrpo_ros.sim.evaluate import EvalConfig, run_evaluation

    temperature = args.eval_temperature if args.eval_temperature > 0 else None
    states = args.eval_init_states if states is None else states
    repeats = (args.eval_repeats if repeats is None else repeats) if temperature else 1
    suffix = '' if split == 'trained' else f'_{split}'
    config = EvalConfig(policy='vla', tasks=[args.task], num_init_states=states,
                        first_init_state=first, repeats=repeats,
                        num_envs=args.eval_envs, camera_size=args.camera_size,
                        multisample=False, max_steps=args.max_steps, seed=args.seed + 1000,
                        model_path=args.model_path, adapter_path=adapter,
                        temperature=temperature,
                        json_path=os.path.join(out_dir, f'eval_{name}{suffix}.json'))
    report = run_evaluation(config, progress=False)
    print(f'[eval {name} {split} {first}-{first + states - 1}] '
          f'{report["successes"]}/{report["episodes"]} '
          f'({report["wall_seconds"] / 60:.1f} min)', flush=True)
    return {'name': name, 'split': split, 'successes': report['successes'],
            'episodes': report['episodes'], 'eval_seconds': report['wall_seconds'],
            'init_states': [first, first + states - 1],
            'per_state': {str(k): list(v) for k, v in sorted(per_state(report).items())}}


def state_counts(record):
    """Return {init state: (successes, episodes)} of an evaluate() record."""
    return {int(k): tuple(v) for k, v in record['per_state'].items()}


def evaluate_all(args, results, out_dir):
    """Evaluate the SFT start and every arm on every split (the SFT start first)."""
    policies = [('sft', None)] + [(r['arm'], r['adapter']) for r in results]
    return [evaluate(args, name, adapter, out_dir, split, first, states, repeats)
            for split, first, states, repeats in eval_splits(args)
            for name, adapter in policies]


def environment(args, results):
    """Return the provenance record of this run (tgrpo_ros.provenance)."""
    from tgrpo_ros import provenance
    return provenance.environment(
        device='cpu', render=provenance.render_settings(args.camera_size, False),
        seeds={'train': args.seed, 'eval': args.seed + 1000},
        checkpoint=args.model_path, adapters={r['arm']: r['adapter'] for r in results},
        protocol={'suite': 'libero_object', 'tasks': [args.task],
                  'splits': [list(s) for s in eval_splits(args)], 'max_steps': args.max_steps,
                  'temperature': args.eval_temperature or None})


def plot(summary, path):
    """Success with Wilson intervals per policy, and each arm's rollout success."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    from tgrpo_ros.sim.evaluate import wilson_interval

    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    evals = summary['evals']
    names = [e['name'] + ('' if e.get('split', 'trained') == 'trained' else '\n' + e['split'])
             for e in evals]
    rates = [e['successes'] / e['episodes'] for e in evals]
    low_high = [wilson_interval(e['successes'], e['episodes']) for e in evals]
    errors = [[r - lo for r, (lo, _) in zip(rates, low_high)],
              [hi - r for r, (_, hi) in zip(rates, low_high)]]
    axes[0].bar(names, rates, yerr=errors, capsize=6, color='tab:blue', alpha=0.8)
    axes[0].set_ylim(0, 1)
    axes[0].set_ylabel('success (95% Wilson interval)')
    axes[0].set_title('evaluation (trained and held-out init states)')
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


def compare(a, b):
    """Return the statistics of evaluation record a against b (same split)."""
    per_a, per_b = state_counts(a), state_counts(b)
    return {'points': 100.0 * (a['successes'] / a['episodes'] - b['successes'] / b['episodes']),
            'pooled_z': pooled_z(a['successes'], a['episodes'], b['successes'], b['episodes']),
            'stratified_z': stratified_z(per_a, per_b),
            'paired': paired_state_difference(per_a, per_b)}


def report(args, results, evals):
    """Print every evaluation and each arm against the SFT start; return the statistics."""
    from tgrpo_ros.sim.evaluate import wilson_interval
    print(f'scale: task {args.task}, group {args.group_size}, max {args.max_steps} steps, '
          f'{args.env_steps} env steps per arm, temperature '
          f'{args.eval_temperature or "greedy"}; eval splits (split, first state, states, '
          f'repeats): {eval_splits(args)}')
    for e in evals:
        low, high = wilson_interval(e['successes'], e['episodes'])
        arm = next((r for r in results if r['arm'] == e['name']), None)
        train = (f"; trained {arm['trainable']} at lr {arm['lr']:g} "
                 f"({arm['trainable_parameters']} parameters), {arm['updates']} updates, "
                 f"{arm['env_steps']} env steps, {arm['train_seconds'] / 60:.1f} min"
                 if arm and e['split'] == 'trained' else '')
        label = e['name'] if e['split'] == 'trained' else f"{e['name']} ({e['split']})"
        print(f"{label}: success {e['successes']}/{e['episodes']} = "
              f"{e['successes'] / e['episodes']:.3f} [{low:.3f}, {high:.3f}]; eval "
              f"{e['eval_seconds'] / 60:.1f} min{train}")
    by_key = {(e['name'], e['split']): e for e in evals}
    comparisons = {}
    for arm in [r['arm'] for r in results]:
        for split in [s[0] for s in eval_splits(args)]:
            stats = compare(by_key[(arm, split)], by_key[('sft', split)])
            comparisons.setdefault(arm, {})[split] = stats
            paired = stats['paired']
            paired_text = (f", per-state mean {100 * paired['mean']:+.1f} +- "
                           f"{100 * paired['se']:.1f} points (t {paired['t']:+.2f}, "
                           f"{paired['states']} states)" if paired else '')
            print(f"{arm} vs sft ({split}): {stats['points']:+.1f} points, pooled z "
                  f"{stats['pooled_z']:+.2f}, stratified z {stats['stratified_z']:+.2f}"
                  f'{paired_text}')
    if ('grpo', 'trained') in by_key:
        versus = compare(by_key[('tgrpo', 'trained')], by_key[('grpo', 'trained')])
        print(f"tgrpo vs grpo (trajectory-only ablation): pooled z {versus['pooled_z']:+.2f}, "
              f"stratified z {versus['stratified_z']:+.2f}")
    return comparisons


def main(argv=None):
    """Train the arms, evaluate them and the SFT start, print the figures."""
    parser = argparse.ArgumentParser(
        description=__doc__.split('\n\n')[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument('--model-path', default=os.path.join(ROOT, 'models',
                                                             'standin_sft_task0'),
                        help="the SFT'd start (a full checkpoint directory)")
    parser.add_argument('--arms', default='tgrpo,tgrpo_lora', help='comma list of '
                        f'{list(ARM_ADVANTAGE_WEIGHTS)} (grpo, step: +35 min each)')
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
    parser.add_argument('--lora-trainable', default='lora',
                        choices=('lora', 'lora+action_head'),
                        help="what the LoRA arms train: 'lora' (r 32, alpha 16, q_proj and "
                             "v_proj: the 7B's layout) or 'lora+action_head'")
    parser.add_argument('--lora-lr', type=float, default=LORA_LR,
                        help='learning rate of the LoRA arms (docs/sft.md: how chosen)')
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
    parser.add_argument('--heldout-init-states', type=int, default=10,
                        help='also evaluate on M init states never trained on: '
                             'T..T+M-1 with T = --train-init-states (0: none)')
    parser.add_argument('--heldout-repeats', type=int, default=5,
                        help='sampled episodes per held-out init state (1 when greedy)')
    parser.add_argument('--eval-repeats', type=int, default=10,
                        help='sampled episodes per init state (1 when greedy)')
    parser.add_argument('--eval-temperature', type=float, default=0.25,
                        help='sampling temperature of the evaluation; 0: greedy, one seed')
    parser.add_argument('--eval-envs', type=int, default=2, help='env processes')
    parser.add_argument('--seed', type=int, default=0, help='training and sampling seed')
    parser.add_argument('--threads', type=int, default=1, help='torch threads')
    parser.add_argument('--out-dir', default='runs/success_check', help='outputs go here')
    parser.add_argument('--lr-probe', default=None, metavar='LR,LR,...',
                        help='instead of the bench: one group from the SFT start, then one '
                             'update of --probe-arm at each lr; prints the per-update KL')
    parser.add_argument('--probe-arm', default='tgrpo_lora', choices=list(ARM_ADVANTAGE_WEIGHTS))
    parser.add_argument('--probe-init-state', type=int, default=1,
                        help='init state of the probe group')
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
    if not os.path.isfile(os.path.join(args.model_path, 'config.json')):
        parser.error(f'--model-path {args.model_path!r} holds no checkpoint (config.json)')
    if args.heldout_init_states < 0 or args.heldout_repeats < 1:
        parser.error(f'--heldout-init-states ({args.heldout_init_states}) must be >= 0 and '
                     f'--heldout-repeats ({args.heldout_repeats}) >= 1')
    os.makedirs(args.out_dir, exist_ok=True)
    start = time.perf_counter()
    if args.lr_probe:
        try:
            lrs = [float(x) for x in args.lr_probe.split(',') if x]
        except ValueError:
            parser.error(f'--lr-probe must be comma-separated numbers, got {args.lr_probe!r}')
        rows = lr_probe(args, args.probe_arm, lrs)
        with open(os.path.join(args.out_dir, 'lr_probe.json'), 'w') as stream:
            json.dump(rows, stream, indent=1)
        return 0

    results = [train_arm(args, arm, args.out_dir) for arm in arms]
    evals = evaluate_all(args, results, args.out_dir)
    comparisons = report(args, results, evals)
    wall = time.perf_counter() - start
    print(f'wall time: {wall / 60:.1f} min')
    # The headline: TGRPO (full) against the SFT start on the trained init states;
    # z is stratified by init state (docs/sft.md says why).
    z = comparisons['tgrpo']['trained']['stratified_z']
    points = comparisons['tgrpo']['trained']['points']
    summary = {'args': vars(args), 'arms': results, 'evals': evals,
               'comparisons': comparisons, 'wall_seconds': wall,
               'environment': environment(args, results),
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
