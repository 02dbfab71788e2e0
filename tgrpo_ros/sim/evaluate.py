"""
Evaluate a policy over N init states per task in K parallel LIBERO env processes.

Policies come from a registry of factories (``register_policy``). A factory gets the
EvalConfig and returns either

* ``ScriptedPolicy('expert' | 'random')``: runs inside the env workers next to the
  simulator (privileged state, no images sent), or
* a batched callable ``policy(images, instructions) -> actions``: images uint8
  [B, 224, 224, 3] (the policy's view), instructions list of B str, actions float
  [B, 7] in the policy convention (gripper in [0, 1], 1 open). The envs step in
  lockstep and the callable runs in this process.

Writes a JSON report (per-task success, lengths, returns, every episode) and a PNG
chart. Console entry: ``tgrpo_eval``.
"""

import argparse
from dataclasses import asdict, dataclass, field
import json
import os
import sys
import time

import numpy as np

from tgrpo_ros import provenance
from tgrpo_ros.policy.config import check_model_path
from tgrpo_ros.sim.controllers import CONTROLLERS
from tgrpo_ros.sim.libero_env import (CAMERA_SIZES, INIT_STATES_PER_TASK, SUITE_MAX_STEPS,
                                      SUITE_TASKS, SUITES)

DEFAULT_NUM_INIT_STATES = 50  # LIBERO's fixed initial states per task


@dataclass
class EvalConfig:
    """What to evaluate, where, and where to write the report."""

    policy: str = 'expert'
    """Policy factory name (see available_policies())."""
    suite: str = 'libero_object'
    """Benchmark suite."""
    tasks: list = field(default_factory=lambda: list(range(10)))
    """Task ids to evaluate."""
    num_init_states: int = DEFAULT_NUM_INIT_STATES
    """Evaluate init states 0..N-1 of each task."""
    first_init_state: int = 0
    """Start at this init state (evaluates first..first+N-1)."""
    repeats: int = 1
    """Episodes per init state. Sampled actions (``temperature``) draw fresh samples from
    one seeded stream on every repeat; greedy repeats replay the same episode."""
    num_envs: int = 2
    """K env worker processes."""
    render: bool = None
    """Render cameras; None = only when the policy needs images (batched policies)."""
    camera_size: int = 256
    """Agentview render size (px) before the 224 px policy view (OpenVLA eval: 256)."""
    multisample: bool = True
    """4x multisample anti-aliasing; False renders ~1.5-2x faster (as TGRPO training does)."""
    max_steps: int = None
    """Policy steps per episode; None = the suite's limit (280 for Object)."""
    seed: int = 0
    """Seed of random policies (episode seed = seed + episode index)."""
    model_path: str = None
    """Model directory for the 'vla' policy."""
    adapter_path: str = None
    """Adapter directory loaded on top of model_path (its LoRA layout and mode are read)."""
    temperature: float = None
    """None: greedy actions (the paper's protocol); T > 0: sample at temperature T."""
    device: str = 'cpu'
    """Torch device for the 'vla' policy."""
    json_path: str = None
    """Write the JSON report here (None = do not write)."""
    png_path: str = None
    """Write the PNG chart here (None = do not write)."""

    def __post_init__(self):
        """Validate names and ranges with messages that quote the values."""
        if self.suite not in SUITES:
            raise ValueError(f'Unknown suite {self.suite!r}; available: {", ".join(SUITES)}')
        if self.policy not in POLICY_FACTORIES:
            raise ValueError(f'Unknown policy {self.policy!r}; available: '
                             f'{", ".join(available_policies())}')
        if not self.tasks:
            raise ValueError('tasks is empty')
        if int(self.num_init_states) < 1 or int(self.first_init_state) < 0:
            raise ValueError(f'num_init_states ({self.num_init_states}) must be >= 1 and '
                             f'first_init_state ({self.first_init_state}) >= 0')
        if int(self.repeats) < 1:
            raise ValueError(f'repeats ({self.repeats}) must be >= 1')
        if int(self.num_envs) < 1:
            raise ValueError(f'num_envs ({self.num_envs}) must be >= 1')
        if self.camera_size not in CAMERA_SIZES:
            raise ValueError(f'camera_size ({self.camera_size}) must be one of {CAMERA_SIZES}')
        if self.temperature is not None and not self.temperature > 0:
            raise ValueError(f'temperature ({self.temperature}) must be > 0 (omit it for '
                             'greedy actions)')
        tasks = SUITE_TASKS[self.suite]
        bad = [t for t in self.tasks if not 0 <= int(t) < tasks]
        if bad:
            raise ValueError(f'task ids {bad} are out of range for {self.suite} ({tasks} '
                             f'tasks: 0..{tasks - 1})')
        last = int(self.first_init_state) + int(self.num_init_states)
        if last > INIT_STATES_PER_TASK:
            raise ValueError(f'init states {self.first_init_state}..{last - 1} '
                             f'(first_init_state {self.first_init_state}, num_init_states '
                             f'{self.num_init_states}) are out of range for {self.suite} '
                             f'({INIT_STATES_PER_TASK} init states per task: 0..'
                             f'{INIT_STATES_PER_TASK - 1})')
        if self.adapter_path is not None and not os.path.isdir(self.adapter_path):
            raise ValueError(f'adapter directory {self.adapter_path!r} does not exist')
        if self.policy == 'vla':
            check_model_path(self.model_path, "policy 'vla'")


@dataclass
class ScriptedPolicy:
    """A controller that runs inside each env worker (see episode.CONTROLLERS)."""

    controller: str


def _expert_factory(config):
    return ScriptedPolicy('expert')


def _random_factory(config):
    return ScriptedPolicy('random')


def load_vla(model_path, adapter_path=None, device='cpu'):
    """Load ``model_path`` (and the adapter, in the trainable mode and LoRA layout it has)."""
    from tgrpo_ros.policy import load_policy
    from tgrpo_ros.policy.adapters import settings_from_adapter
    if adapter_path is None:
        return load_policy(model_path, device=device)
    trainable, lora = settings_from_adapter(adapter_path)
    return load_policy(model_path, device=device, trainable=trainable, lora=lora,
                       adapter_path=adapter_path)


def _vla_factory(config):
    """Greedy (or sampled) actions of the OpenVLA policy at ``config.model_path``."""
    if not config.model_path:
        raise ValueError("policy 'vla' needs --model-path")
    provenance.warn_render_mismatch(config.model_path, config.adapter_path)
    policy = load_vla(config.model_path, config.adapter_path, config.device)
    return vla_actor(policy, config.temperature, config.seed)


def vla_actor(policy, temperature=None, seed=0):
    """Batched callable over a VLAPolicy: greedy, or sampled at ``temperature`` (seeded)."""
    import torch
    generator = torch.Generator().manual_seed(int(seed))

    def act(images, instructions):
        if temperature is None:
            return np.asarray(policy.sample(images, instructions, greedy=True).actions)
        return np.asarray(policy.sample(images, instructions, temperature=temperature,
                                        generator=generator).actions)
    return act


POLICY_FACTORIES = {'expert': _expert_factory, 'random': _random_factory, 'vla': _vla_factory}


def register_policy(name, factory):
    """Add a policy factory: ``factory(EvalConfig)`` -> ScriptedPolicy or batched callable."""
    POLICY_FACTORIES[name] = factory


def available_policies():
    """Return the registered policy names."""
    return sorted(POLICY_FACTORIES)


class _JobQueue:
    """(task, init) jobs grouped by task, handed out so workers rarely switch task."""

    def __init__(self, tasks, init_ids):
        self.pending = {int(t): list(init_ids) for t in tasks}

    def __len__(self):
        return sum(len(v) for v in self.pending.values())

    def next_for(self, current_task, busy_tasks):
        if self.pending.get(current_task):
            return current_task, self.pending[current_task].pop(0)
        open_tasks = [t for t, ids in self.pending.items() if ids]
        if not open_tasks:
            return None
        free = [t for t in open_tasks if t not in busy_tasks] or open_tasks
        task = max(free, key=lambda t: (len(self.pending[t]), -t))
        return task, self.pending[task].pop(0)


def _progress(total, enabled):
    from tqdm import tqdm
    return tqdm(total=total, unit='ep', disable=not enabled, dynamic_ncols=True)


def _run_scripted(vec, policy, config, jobs, bar, episodes, record=False, on_episode=None,
                  dart_sigma=0.0):
    """
    Dynamic scheduling: each worker runs whole episodes of an in-worker controller.

    With ``record`` the workers return the recorded arrays; ``on_episode(result)`` is
    called for each finished episode (before its arrays are dropped from the summary).
    ``dart_sigma`` > 0 adds DART noise to the executed actions (episode.dart_noise).
    """
    current, count = {}, 0
    running = {}  # worker index -> task

    def launch(index):
        nonlocal count
        job = jobs.next_for(current.get(index), set(running.values()))
        if job is None:
            return
        task, init = job
        if current.get(index) != task:
            vec.submit(index, 'set_task', task)
            vec.receive(index)
            current[index] = task
        vec.submit(index, 'episode', policy.controller, init, config.seed + count, record,
                   float(dart_sigma))
        count += 1
        running[index] = task

    for index in range(vec.num_envs):
        launch(index)
    while running:
        for index in vec.wait_any(list(running)):
            del running[index]
            result = vec.receive(index)
            if on_episode is not None:
                on_episode(result)
            episodes.append({k: v for k, v in result.items() if not isinstance(v, np.ndarray)})
            bar.update(1)
            bar.set_postfix(success=f'{np.mean([e["success"] for e in episodes]):.2f}')
            launch(index)


def _run_batched(vec, policy, config, jobs, bar, episodes):
    """Lockstep: all active envs step together on one batched policy call."""
    current, state = {}, {}

    def start(index):
        job = jobs.next_for(current.get(index), {current[i] for i in state if i in current})
        if job is None:
            return False
        task, init = job
        if current.get(index) != task:
            vec.call('set_task', [(task,)], [index])
            current[index] = task
        obs = vec.reset([init], [index])[0]
        state[index] = {'task': task, 'init': init, 'obs': obs, 'return': 0.0,
                        'start': time.perf_counter(), 'max_stage': 0}
        return True

    for index in range(vec.num_envs):
        start(index)
    while state:
        active = sorted(state)
        images = np.stack([state[i]['obs']['image'] for i in active])  # [B, 224, 224, 3]
        instructions = [state[i]['obs']['instruction'] for i in active]
        actions = np.asarray(policy(images, instructions), dtype=np.float64)  # [B, 7]
        if actions.shape != (len(active), 7):
            raise ValueError(f'policy returned actions of shape {actions.shape}; '
                             f'expected ({len(active)}, 7)')
        obs, rewards, dones, infos = vec.step(actions, convention='policy', indices=active)
        for k, index in enumerate(active):
            ep = state[index]
            ep['obs'] = obs[k]
            ep['return'] += float(rewards[k])
            ep['max_stage'] = max(ep['max_stage'], int(infos[k]['stage']))
            if dones[k]:
                episodes.append({
                    'task_id': ep['task'], 'init_state_id': ep['init'],
                    'instruction': obs[k]['instruction'], 'controller': config.policy,
                    'success': bool(infos[k]['success']), 'length': int(infos[k]['steps']),
                    'return': ep['return'], 'max_stage': ep['max_stage'],
                    'seconds': time.perf_counter() - ep['start']})
                del state[index]
                bar.update(1)
                bar.set_postfix(success=f'{np.mean([e["success"] for e in episodes]):.2f}')
                start(index)


def wilson_interval(successes, n, z=1.959964):
    """
    Wilson score interval of a binomial proportion; return (low, high), 95% by default.

    (p + z^2/2n -/+ z sqrt(p(1-p)/n + z^2/4n^2)) / (1 + z^2/n) with p = successes / n;
    unlike the normal approximation it stays inside [0, 1] and is not empty at 0 or n.
    """
    if n <= 0:
        raise ValueError(f'n must be > 0, got {n}')
    if not 0 <= successes <= n:
        raise ValueError(f'successes must be in [0, {n}], got {successes}')
    p = successes / n
    denominator = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


def summarize(episodes, tasks):
    """Per-task success rate with its 95% Wilson interval, mean length and return."""
    per_task = {}
    for task in tasks:
        eps = [e for e in episodes if e['task_id'] == task]
        if not eps:
            continue
        per_task[str(task)] = {
            'instruction': eps[0]['instruction'],
            'episodes': len(eps),
            'successes': int(sum(e['success'] for e in eps)),
            'success_rate': float(np.mean([e['success'] for e in eps])),
            'success_ci95': list(wilson_interval(int(sum(e['success'] for e in eps)),
                                                 len(eps))),
            'mean_length': float(np.mean([e['length'] for e in eps])),
            'mean_return': float(np.mean([e['return'] for e in eps])),
            'failed_init_states': sorted(e['init_state_id'] for e in eps if not e['success']),
        }
    rates = [v['success_rate'] for v in per_task.values()]
    successes = int(sum(e['success'] for e in episodes))
    return {
        'per_task': per_task,
        'mean_success': float(np.mean(rates)) if rates else 0.0,
        'successes': successes,
        'success_ci95': list(wilson_interval(successes, len(episodes))) if episodes else None,
        'episodes': len(episodes),
        'mean_length': float(np.mean([e['length'] for e in episodes])) if episodes else 0.0,
        'mean_return': float(np.mean([e['return'] for e in episodes])) if episodes else 0.0,
    }


def run_evaluation(config, policy=None, progress=True):
    """
    Run the evaluation of ``config``; return the report dict (also written if asked).

    ``policy`` overrides the factory: a ScriptedPolicy or a batched callable.
    """
    from tgrpo_ros.sim.vec_env import VecLiberoEnv
    policy = policy if policy is not None else POLICY_FACTORIES[config.policy](config)
    scripted = isinstance(policy, ScriptedPolicy)
    if scripted and policy.controller not in CONTROLLERS:
        raise ValueError(f'Unknown controller {policy.controller!r}; available: '
                         f'{", ".join(CONTROLLERS)}')
    render = (not scripted) if config.render is None else bool(config.render)
    if not scripted and not render:
        raise ValueError(f'policy {config.policy!r} needs images: do not pass render=False')
    init_ids = list(range(config.first_init_state,
                          config.first_init_state + config.num_init_states))
    jobs = _JobQueue(config.tasks, [i for _ in range(int(config.repeats)) for i in init_ids])
    num_envs = min(int(config.num_envs), len(jobs))
    env_kwargs = {'suite': config.suite, 'task_id': int(config.tasks[0]), 'render': render,
                  'camera_size': config.camera_size, 'max_steps': config.max_steps,
                  'multisample': bool(config.multisample)}
    start = time.perf_counter()
    episodes = []  # filled as episodes finish
    try:
        with VecLiberoEnv(num_envs, env_kwargs) as vec, _progress(len(jobs), progress) as bar:
            runner = _run_scripted if scripted else _run_batched
            runner(vec, policy, config, jobs, bar, episodes)
    except BaseException:
        if config.json_path and episodes:  # keep what finished, marked incomplete
            _write_json(_report(config, render, start, episodes, complete=False),
                        config.json_path + '.partial')
        raise
    report = _report(config, render, start, episodes, complete=True)
    if config.json_path:
        _write_json(report, config.json_path)
    if config.png_path:
        write_chart(report, config.png_path)
    return report


def _report(config, render, start, episodes, complete):
    episodes = sorted(episodes, key=lambda e: (e['task_id'], e['init_state_id']))
    return {'config': asdict(config), 'render': render, 'complete': complete,
            'wall_seconds': time.perf_counter() - start, **summarize(episodes, config.tasks),
            'environment': eval_environment(config, render),
            'episode_results': episodes}


def eval_environment(config, render):
    """Return the provenance record of an evaluation (versions, device, render, hashes)."""
    return provenance.environment(
        device=config.device,
        render=provenance.render_settings(config.camera_size, config.multisample)
        if render else None,
        seeds={'seed': int(config.seed)},
        checkpoint=config.model_path if config.policy == 'vla' else None,
        adapter=config.adapter_path,
        protocol={'suite': config.suite, 'tasks': [int(t) for t in config.tasks],
                  'init_states': [int(config.first_init_state),
                                  int(config.first_init_state) + int(config.num_init_states)],
                  'repeats': int(config.repeats),
                  'max_steps': int(config.max_steps or SUITE_MAX_STEPS[config.suite]),
                  'temperature': config.temperature, 'policy': config.policy})


def _write_json(report, path):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + '.tmp'
    with open(tmp, 'w', encoding='utf-8') as stream:
        json.dump(report, stream, indent=1)
    os.replace(tmp, path)


def write_chart(report, path):
    """Bar chart of per-task success (%) with the mean, and mean episode lengths."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    per_task = report['per_task']
    tasks = list(per_task)
    rates = [100.0 * per_task[t]['success_rate'] for t in tasks]
    lengths = [per_task[t]['mean_length'] for t in tasks]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    ax1.bar(tasks, rates, color='tab:green')
    ax1.axhline(100.0 * report['mean_success'], color='k', linestyle='--',
                label=f'mean {100.0 * report["mean_success"]:.1f}%')
    ax1.set(xlabel='task id', ylabel='success (%)', ylim=(0, 105),
            title=f'{report["config"]["policy"]} on {report["config"]["suite"]}')
    ax1.legend(loc='lower right')
    ax2.bar(tasks, lengths, color='tab:blue')
    ax2.set(xlabel='task id', ylabel='mean episode length (policy steps)',
            title=f'{report["episodes"]} episodes')
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def format_table(report):
    """Markdown table: task, instruction, success (95% Wilson interval), length, return."""
    lines = ['| task | instruction | success | 95% interval | mean length | mean return |',
             '|---|---|---|---|---|---|']
    for task, row in report['per_task'].items():
        low, high = row['success_ci95']
        lines.append(f'| {task} | {row["instruction"]} | {row["successes"]}/{row["episodes"]}'
                     f' ({100 * row["success_rate"]:.0f}%) | {100 * low:.0f}-{100 * high:.0f}%'
                     f' | {row["mean_length"]:.1f} | {row["mean_return"]:.1f} |')
    interval = report.get('success_ci95')
    interval = f'{100 * interval[0]:.0f}-{100 * interval[1]:.0f}%' if interval else ''
    lines.append(f'| mean | | {100 * report["mean_success"]:.1f}% | {interval} |'
                 f' {report["mean_length"]:.1f} | {report["mean_return"]:.1f} |')
    return '\n'.join(lines)


def _parse_tasks(text):
    if text == 'all':
        return list(range(10))
    try:
        return [int(t) for t in text.split(',')]
    except ValueError:
        raise argparse.ArgumentTypeError(f"tasks must be 'all' or ids like 0,3,7; got {text!r}")


def build_parser():
    """Command-line options of tgrpo_eval (--help shows every default)."""
    parser = argparse.ArgumentParser(prog='tgrpo_eval', description=__doc__.split('\n')[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument('--policy', default='expert',
                        help=f'policy factory: {", ".join(available_policies())}')
    parser.add_argument('--suite', default='libero_object', choices=SUITES,
                        help='LIBERO suite')
    parser.add_argument('--tasks', type=_parse_tasks, default=list(range(10)),
                        help="'all' or comma-separated task ids (LIBERO-Object: 0..9)")
    parser.add_argument('--num-init-states', type=int, default=DEFAULT_NUM_INIT_STATES,
                        help='init states per task, from --first-init-state (LIBERO has 50: '
                        '0..49)')
    parser.add_argument('--first-init-state', type=int, default=0,
                        help='first init state id evaluated')
    parser.add_argument('--repeats', type=int, default=1,
                        help='episodes per init state (use with --temperature)')
    parser.add_argument('--num-envs', type=int, default=2, help='env worker processes')
    render = parser.add_mutually_exclusive_group()
    render.add_argument('--render', dest='render', action='store_true', default=None,
                        help='render cameras even for scripted policies (default: only when '
                        'the policy needs images)')
    render.add_argument('--no-render', dest='render', action='store_false',
                        help='never render')
    parser.add_argument('--camera-size', type=int, default=256, choices=CAMERA_SIZES,
                        help='agentview render size in px (the policy sees 224 px)')
    parser.add_argument('--no-multisample', dest='multisample', action='store_false',
                        help='render without anti-aliasing (faster; what TGRPO training sees)')
    parser.add_argument('--max-steps', type=int, default=None,
                        help="policy steps per episode (None: the suite's limit, 280 for "
                        'Object)')
    parser.add_argument('--seed', type=int, default=0, help='seed of sampled and random '
                        'policies')
    parser.add_argument('--model-path', default=None,
                        help="checkpoint directory for 'vla' (with config.json)")
    parser.add_argument('--adapter', '--adapter-path', dest='adapter_path', default=None,
                        help="adapter directory loaded on top of --model-path ('vla')")
    parser.add_argument('--temperature', type=float, default=None,
                        help="sample 'vla' actions at this temperature (None: greedy)")
    parser.add_argument('--device', default='cpu', help="torch device of 'vla'")
    parser.add_argument('--json', dest='json_path', default=None, help='report JSON path')
    parser.add_argument('--png', dest='png_path', default=None, help='chart PNG path')
    parser.add_argument('--no-progress', action='store_true', help='hide the progress bar')
    parser.add_argument('--compare', nargs=2, metavar=('A.json', 'B.json'), default=None,
                        help='say whether two reports/summaries are comparable (what produced '
                             'them), one line per difference; exit 0 comparable, 1 not')
    return parser


def compare_main(path_a, path_b, out=None):
    """Print the differences of two summaries' environments; return 0, 1, or 2 on bad input."""
    out = out or sys.stdout
    try:
        comparable, lines = provenance.compare_files(path_a, path_b)
    except ValueError as error:
        print(f'tgrpo_eval: error: {error}', file=sys.stderr)
        return 2
    for line in lines:
        print(line, file=out)
    breaking = sum(line.startswith('differs') for line in lines)
    print('comparable' + (f' ({len(lines)} notes: what was evaluated)' if lines else '')
          if comparable else f'not comparable: {breaking} difference(s)', file=out)
    return 0 if comparable else 1


def main(argv=None):
    """Run tgrpo_eval; print the per-task table; exit 2 on bad input."""
    args = build_parser().parse_args(argv)
    options = vars(args)
    progress = not options.pop('no_progress')
    compare = options.pop('compare')
    if compare:
        return compare_main(*compare)
    try:
        config = EvalConfig(**options)
    except ValueError as exc:
        print(f'tgrpo_eval: error: {exc}', file=sys.stderr)
        return 2
    report = run_evaluation(config, progress=progress)
    print(format_table(report))
    print(f'wall time: {report["wall_seconds"]:.0f} s for {report["episodes"]} episodes')
    return 0


if __name__ == '__main__':
    sys.exit(main())
