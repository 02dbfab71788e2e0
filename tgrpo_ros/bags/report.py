"""
The maths and files of a replay check (``tgrpo_replay check``): numpy and matplotlib only.

A check re-scores N recorded steps (image, instruction, 7 action tokens) with a
policy and compares, per step and action dimension:

* log-probs: the re-scored log-prob of each recorded token against the recorded
  behaviour log-prob (max and mean absolute difference, overall, per dimension and
  per adapter version that produced the step);
* greedy agreement: the fraction of steps whose greedy (argmax) token equals the
  recorded token, per dimension;
* actions: the absolute difference between the greedy continuous action and the
  recorded one, max and mean, per dimension;

and, for episodes, success rate, mean return and mean length per task and per
adapter version. Every step is also reported on its own (``per_step``: index,
stamp, log-prob and action difference per dimension, agreement), so a failure
names the worst step by index and stamp and its dimension; tolerances are maxima
over steps. ``accounting`` says how many recorded frames were re-scored and why the
others were not. ``build_report`` returns the JSON-ready report, with the
tolerances it was held to and the failures; ``plot_report`` draws the PNG.
"""

from dataclasses import asdict, dataclass
import math
from typing import Dict, List, Optional

import numpy as np

ACTION_NAMES = ('dx', 'dy', 'dz', 'droll', 'dpitch', 'dyaw', 'gripper')
REPORT_SCHEMA = 'tgrpo_replay_check/2'


@dataclass
class Tolerances:
    """Limits a check is held to; None: not checked."""

    logp_max_abs_diff: Optional[float] = 1e-4   # nats, of any step and dimension
    min_greedy_agreement: Optional[float] = None  # fraction, over all dimensions
    action_max_abs_diff: Optional[float] = None   # policy action units, any step and dim

    def __post_init__(self):
        """Reject negative limits and agreements outside [0, 1], quoting them."""
        for name in ('logp_max_abs_diff', 'action_max_abs_diff'):
            value = getattr(self, name)
            if value is not None and not value >= 0:
                raise ValueError(f'{name} ({value}) must be >= 0')
        if self.min_greedy_agreement is not None and not 0 <= self.min_greedy_agreement <= 1:
            raise ValueError(f'min_greedy_agreement ({self.min_greedy_agreement}) must be in '
                             '[0, 1]')


@dataclass
class Steps:
    """
    N re-scored steps, each array [N, 7] unless noted.

    ``recorded_actions`` may be [N, K, 7] (a chunk of K actions per frame): the
    per-step action difference is then each dimension's largest over the chunk.
    """

    recorded_logps: np.ndarray
    rescored_logps: np.ndarray
    recorded_tokens: np.ndarray
    greedy_tokens: np.ndarray
    recorded_actions: np.ndarray
    greedy_actions: np.ndarray
    adapter_versions: np.ndarray  # [N] int, the version that produced each step
    task_ids: np.ndarray          # [N] int, -1 when unknown
    indices: Optional[np.ndarray] = None  # [N] int, the frame's index in the bag (-1: unknown)
    stamps: Optional[np.ndarray] = None   # [N] int, image header stamp ns (0: unknown)
    where: Optional[np.ndarray] = None    # [N] str, client namespace or episode step

    def __post_init__(self):
        """Fill unknown positions: index = row, stamp 0, where ''."""
        n = int(np.asarray(self.recorded_logps).shape[0])
        if self.indices is None:
            self.indices = np.arange(n, dtype=np.int64)
        if self.stamps is None:
            self.stamps = np.zeros(n, np.int64)
        if self.where is None:
            self.where = np.array([''] * n, object)

    @classmethod
    def concatenate(cls, parts: List['Steps']) -> 'Steps':
        """Join batches of steps (an empty list gives N = 0)."""
        if not parts:
            empty7 = np.zeros((0, 7))
            return cls(empty7, empty7, empty7.astype(np.int64), empty7.astype(np.int64),
                       empty7, empty7, np.zeros(0, np.int64), np.zeros(0, np.int64))
        return cls(**{name: np.concatenate([getattr(p, name) for p in parts])
                      for name in cls.__dataclass_fields__})

    def __len__(self):
        """Return N."""
        return int(self.recorded_logps.shape[0])


def _finite(value):
    value = float(value)
    return value if math.isfinite(value) else None


def logp_stats(recorded, rescored) -> Dict[str, object]:
    """Max and mean |rescored - recorded| overall and per dimension (NaN counts as inf)."""
    diff = np.abs(np.asarray(rescored, np.float64) - np.asarray(recorded, np.float64))
    diff = np.where(np.isnan(diff), np.inf, diff)  # [N, 7]
    if diff.size == 0:
        return {'max_abs_diff': None, 'mean_abs_diff': None, 'per_dim_max': [],
                'per_dim_mean': []}
    return {'max_abs_diff': float(diff.max()), 'mean_abs_diff': _finite(diff.mean()),
            'per_dim_max': diff.max(axis=0).tolist(),
            'per_dim_mean': [_finite(v) for v in diff.mean(axis=0)]}


def greedy_agreement(recorded_tokens, greedy_tokens) -> Dict[str, object]:
    """Fraction of steps whose greedy token is the recorded one, per dimension and overall."""
    same = np.asarray(recorded_tokens) == np.asarray(greedy_tokens)  # [N, 7]
    if same.size == 0:
        return {'overall': None, 'per_dim': []}
    return {'overall': float(same.mean()), 'per_dim': same.mean(axis=0).tolist()}


def step_action_diff(recorded_actions, greedy_actions) -> np.ndarray:
    """
    Return |greedy action - recorded action| per step and dimension, [N, 7].

    Recorded actions [N, 7], or [N, K, 7] for a chunk of K actions per frame (then
    greedy [N, K, 7] or [N, 7], compared with every action of the chunk): each
    dimension's largest difference over the chunk. NaN counts as inf.
    """
    recorded = np.asarray(recorded_actions, np.float64)
    greedy = np.asarray(greedy_actions, np.float64)
    if recorded.ndim == 3 and greedy.ndim == 2:
        greedy = greedy[:, None, :]
    diff = np.abs(greedy - recorded)
    diff = np.where(np.isnan(diff), np.inf, diff)
    if diff.ndim == 3:
        diff = diff.max(axis=1) if diff.shape[1] else np.zeros((diff.shape[0], diff.shape[2]))
    return diff


def action_diff(recorded_actions, greedy_actions) -> Dict[str, object]:
    """Max and mean |greedy action - recorded action| per dimension and overall."""
    diff = step_action_diff(recorded_actions, greedy_actions)
    if diff.size == 0:
        return {'max_abs_diff': None, 'mean_abs_diff': None, 'per_dim_max': [],
                'per_dim_mean': []}
    return {'max_abs_diff': float(diff.max()), 'mean_abs_diff': _finite(diff.mean()),
            'per_dim_max': diff.max(axis=0).tolist(),
            'per_dim_mean': [_finite(v) for v in diff.mean(axis=0)]}


def per_step(steps: Steps, tolerances: 'Tolerances') -> List[Dict[str, object]]:
    """
    Return one entry per step, in bag order (client or episode, then index).

    Each: index, stamp_ns, where, adapter_version, logp_abs_diff and action_abs_diff
    ([7] each), agreement ([7] of 0/1) and the tolerances it exceeds (``failed``).
    """
    logp = np.abs(steps.rescored_logps.astype(np.float64)
                  - steps.recorded_logps.astype(np.float64))
    logp = np.where(np.isnan(logp), np.inf, logp)
    action = step_action_diff(steps.recorded_actions, steps.greedy_actions)
    same = np.asarray(steps.recorded_tokens) == np.asarray(steps.greedy_tokens)
    out = []
    for row in range(len(steps)):
        failed = []
        if tolerances.logp_max_abs_diff is not None and not logp[row].max() <= \
                tolerances.logp_max_abs_diff:
            failed.append('logp')
        if tolerances.action_max_abs_diff is not None and not action[row].max() <= \
                tolerances.action_max_abs_diff:
            failed.append('action')
        out.append({'index': int(steps.indices[row]), 'stamp_ns': int(steps.stamps[row]),
                    'where': str(steps.where[row]),
                    'adapter_version': int(steps.adapter_versions[row]),
                    'logp_abs_diff': [_json_float(v) for v in logp[row]],
                    'action_abs_diff': [_json_float(v) for v in action[row]],
                    'agreement': same[row].astype(int).tolist(), 'failed': failed})
    order = sorted(range(len(out)), key=lambda r: (out[r]['where'].split(' step ')[0],
                                                   out[r]['index'], out[r]['stamp_ns']))
    return [out[r] for r in order]


def _json_float(value):
    value = float(value)
    return value if math.isfinite(value) else 'inf'


def _worst(entries, key):
    """Return (entry, dimension, value) of the largest per-step difference under ``key``."""
    best = None
    for entry in entries:
        values = [math.inf if v == 'inf' else v for v in entry[key]]
        dim = int(np.argmax(values))
        if best is None or values[dim] > best[2]:
            best = (entry, dim, values[dim])
    return best


def _step_name(entry):
    where = f", {entry['where']}" if entry['where'] else ''
    return f"step {entry['index']} (stamp {entry['stamp_ns']} ns{where})"


def accounting(counters, rescored, max_skipped=0.0) -> Dict[str, object]:
    """
    Account for every recorded frame: re-scored, or skipped under a named reason.

    ``counters`` holds 'frames' and a count per reason (no_reply,
    unknown_instruction, decode_error, outside_window, no_adapter). Frames a counter
    does not explain are 'unaccounted'. ``within_limit``: the skipped share is at
    most ``max_skipped``.
    """
    reasons = ('no_reply', 'unknown_instruction', 'decode_error', 'outside_window',
               'no_adapter')
    skipped = {r: int(counters.get(r, 0)) for r in reasons if counters.get(r, 0)}
    frames = max(int(counters.get('frames', rescored)), rescored)
    unaccounted = frames - rescored - sum(skipped.values())
    if unaccounted > 0:
        skipped['unaccounted'] = unaccounted
    total_skipped = sum(skipped.values())
    share = total_skipped / frames if frames else 0.0
    sentence = (f'{rescored} of {frames} recorded frame(s) re-scored'
                + (': ' + ', '.join(f'{n} {r.replace("_", " ")}' for r, n in skipped.items())
                   + f' ({share:.1%} skipped, --max-skipped {max_skipped:g})'
                   if skipped else ''))
    return {'frames': frames, 'rescored': int(rescored), 'skipped': skipped,
            'skipped_share': share, 'max_skipped': float(max_skipped),
            'within_limit': share <= max_skipped, 'sentence': sentence}


def per_adapter_version(steps: Steps) -> Dict[str, Dict[str, object]]:
    """Log-prob and agreement figures of the steps of each adapter version."""
    out = {}
    for version in sorted(set(steps.adapter_versions.tolist())):
        rows = steps.adapter_versions == version
        logps = logp_stats(steps.recorded_logps[rows], steps.rescored_logps[rows])
        out[str(version)] = {
            'steps': int(rows.sum()),
            'logp_max_abs_diff': logps['max_abs_diff'],
            'logp_mean_abs_diff': logps['mean_abs_diff'],
            'greedy_agreement': greedy_agreement(steps.recorded_tokens[rows],
                                                 steps.greedy_tokens[rows])['overall']}
    return out


def episode_stats(episodes: List[Dict[str, object]]) -> Dict[str, object]:
    """
    Success rate, mean return and mean length per task and per adapter version.

    Each episode is a dict with task_id, adapter_version, success, return, length.
    """
    def summarise(key):
        groups = {}
        for episode in episodes:
            groups.setdefault(str(episode[key]), []).append(episode)
        return {name: {'episodes': len(group),
                       'success_rate': float(np.mean([bool(e['success']) for e in group])),
                       'successes': int(sum(bool(e['success']) for e in group)),
                       'mean_return': float(np.mean([e['return'] for e in group])),
                       'mean_length': float(np.mean([e['length'] for e in group]))}
                for name, group in sorted(groups.items(), key=lambda kv: int(kv[0]))}
    return {'count': len(episodes), 'per_task': summarise('task_id'),
            'per_adapter_version': summarise('adapter_version')}


def check_tolerances(report, tolerances: Tolerances) -> List[str]:
    """
    Return one sentence per tolerance the report exceeds (empty: passed).

    A per-step tolerance names the worst step by index and stamp, its dimension, and
    how many steps exceed it.
    """
    failures = []
    entries = report.get('per_step') or []
    for key, what, limit, mean in (
            ('logp_abs_diff', 'log-prob', tolerances.logp_max_abs_diff,
             report['logp']['mean_abs_diff']),
            ('action_abs_diff', 'action', tolerances.action_max_abs_diff,
             report['actions']['mean_abs_diff'])):
        worst = _worst(entries, key) if entries else None
        if limit is None or worst is None or worst[2] <= limit:
            continue
        entry, dim, value = worst
        over = sum(1 for e in entries if max(math.inf if v == 'inf' else v for v in e[key])
                   > limit)
        mean_text = 'n/a' if mean is None else format(mean, '.3g')
        failures.append(f'{what} max abs difference {value:.3g} at {_step_name(entry)}, '
                        f'dimension {ACTION_NAMES[dim]}, exceeds the tolerance {limit:.3g} '
                        f'({over} of {len(entries)} step(s) over it; mean {mean_text})')
    agreement = report['greedy_agreement']['overall']
    limit = tolerances.min_greedy_agreement
    if limit is not None and agreement is not None and not agreement >= limit:
        failures.append(f'greedy agreement {agreement:.3f} is below the minimum {limit:.3f}')
    return failures


def build_report(steps: Steps, episodes: List[Dict[str, object]], tolerances: Tolerances,
                 problems: List[str] = (), **context) -> Dict[str, object]:
    """Return the check report (JSON-ready); ``context`` (bag, model, ...) is copied in."""
    report = {'schema': REPORT_SCHEMA, **context, 'steps': len(steps),
              'action_names': list(ACTION_NAMES),
              'logp': logp_stats(steps.recorded_logps, steps.rescored_logps),
              'greedy_agreement': greedy_agreement(steps.recorded_tokens, steps.greedy_tokens),
              'actions': action_diff(steps.recorded_actions, steps.greedy_actions),
              'per_adapter_version': per_adapter_version(steps),
              'episodes': episode_stats(episodes) if episodes else None,
              'problems': list(problems), 'tolerances': asdict(tolerances),
              'per_step': per_step(steps, tolerances)}
    report['failures'] = check_tolerances(report, tolerances)
    report['passed'] = not report['failures']
    return report


def summary_lines(report) -> List[str]:
    """Return the report as a few human-readable lines."""
    logp, agree, act = report['logp'], report['greedy_agreement'], report['actions']

    def fmt(value, spec='.3g'):
        return 'n/a' if value is None else format(value, spec)
    lines = [f"{report['steps']} step(s) re-scored from {report.get('source', '?')}",
             f"log-prob |diff|: max {fmt(logp['max_abs_diff'])}, mean "
             f"{fmt(logp['mean_abs_diff'])}",
             'greedy agreement: ' + fmt(agree['overall'], '.3f') + ' (' + ', '.join(
                 f'{n} {v:.2f}' for n, v in zip(ACTION_NAMES, agree['per_dim'])) + ')',
             f"|greedy action - recorded|: max {fmt(act['max_abs_diff'])}, mean "
             + fmt(act['mean_abs_diff']) + ' (max per dimension: ' + ', '.join(
                 f'{n} {fmt(v)}' for n, v in zip(ACTION_NAMES, act['per_dim_max'])) + ')']
    if report.get('accounting'):
        lines.append(report['accounting']['sentence'])
    for version, figures in report['per_adapter_version'].items():
        lines.append(f"adapter version {version}: {figures['steps']} steps, log-prob |diff| "
                     f"max {fmt(figures['logp_max_abs_diff'])}, greedy agreement "
                     f"{fmt(figures['greedy_agreement'], '.3f')}")
    episodes = report.get('episodes')
    if episodes:
        for key, label in (('per_task', 'task'), ('per_adapter_version', 'adapter version')):
            for name, figures in episodes[key].items():
                lines.append(f"episodes of {label} {name}: {figures['successes']}/"
                             f"{figures['episodes']} success, mean return "
                             f"{figures['mean_return']:.3f}, mean length "
                             f"{figures['mean_length']:.1f}")
    return lines


def plot_report(report, steps: Steps, path) -> str:
    """
    Draw the check's PNG at ``path`` and return the path.

    |log-prob diff| per dimension, agreement, action difference, and each step's
    largest |log-prob diff| and |action diff| on a time axis (the image stamps, s
    from the first), the failing steps marked with a red x.
    """
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(14, 8))
    axes = axes.ravel()
    diff = np.abs(steps.rescored_logps.astype(np.float64)
                  - steps.recorded_logps.astype(np.float64))
    if diff.size:
        axes[0].boxplot([np.maximum(diff[:, d], 1e-12) for d in range(diff.shape[1])])
        axes[0].set_xticks(range(1, diff.shape[1] + 1), ACTION_NAMES[:diff.shape[1]])
        axes[0].set_yscale('log')
    tolerance = report['tolerances']['logp_max_abs_diff']
    if tolerance:
        axes[0].axhline(tolerance, color='red', linestyle='--', label=f'tolerance {tolerance:g}')
        axes[0].legend(loc='upper right')
    axes[0].set_title('|re-scored - recorded log-prob| per step')
    axes[0].set_ylabel('nats')
    agreement = report['greedy_agreement']['per_dim']
    axes[1].bar(ACTION_NAMES[:len(agreement)], agreement, color='tab:green')
    axes[1].set_ylim(0, 1.05)
    axes[1].set_title('greedy token == recorded token')
    actions = [v or 0.0 for v in report['actions']['per_dim_max']]
    axes[2].bar(ACTION_NAMES[:len(actions)], actions, color='tab:orange')
    axes[2].set_title('max |greedy action - recorded action| over steps')
    _plot_time_axis(axes[3], report)
    verdict = 'PASSED' if report['passed'] else 'FAILED: ' + '; '.join(report['failures'])
    fig.suptitle(f"{report.get('bag', '')}: {report['steps']} steps; {verdict}", fontsize=9,
                 wrap=True)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return str(path)


def _plot_time_axis(ax, report):
    entries = report.get('per_step') or []
    stamps = np.array([e['stamp_ns'] for e in entries], np.float64)
    if entries and np.any(stamps):
        x = (stamps - stamps.min()) / 1e9
        ax.set_xlabel('image stamp, s from the first step')
    else:
        x = np.arange(len(entries), dtype=np.float64)
        ax.set_xlabel('step')

    def worst(entry, key):
        return max(1e-12, max(1e300 if v == 'inf' else v for v in entry[key]))
    if entries:
        logp = np.array([worst(e, 'logp_abs_diff') for e in entries])
        action = np.array([worst(e, 'action_abs_diff') for e in entries])
        ax.plot(x, logp, '.', color='tab:blue', label='max |log-prob diff| (nats)')
        ax.plot(x, action, '.', color='tab:orange', label='max |action diff|')
        failed = np.array([bool(e['failed']) for e in entries])
        if failed.any():  # the x on the figure that failed (the log-prob one if both did)
            y = np.where([('logp' in e['failed']) for e in entries], logp, action)
            ax.plot(x[failed], y[failed], 'x', color='red', markersize=10,
                    label=f'failing steps ({int(failed.sum())})')
        ax.set_yscale('log')
        ax.legend(loc='upper right', fontsize=8)
    ax.set_title('per step, on the time axis')
