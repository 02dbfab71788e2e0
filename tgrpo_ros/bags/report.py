"""
The maths and files of a replay check (``tgrpo_replay check``): numpy and matplotlib only.

A check re-scores N recorded steps (image, instruction, 7 action tokens) with a
policy and compares, per step and action dimension:

* log-probs: the re-scored log-prob of each recorded token against the recorded
  behaviour log-prob (max and mean absolute difference, overall, per dimension and
  per adapter version that produced the step);
* greedy agreement: the fraction of steps whose greedy (argmax) token equals the
  recorded token, per dimension;
* actions: the mean absolute difference between the greedy continuous action and
  the recorded one, per dimension;

and, for episodes, success rate, mean return and mean length per task and per
adapter version. ``build_report`` returns the JSON-ready report, with the
tolerances it was held to and the failures; ``plot_report`` draws the PNG.
"""

from dataclasses import asdict, dataclass
import math
from typing import Dict, List, Optional

import numpy as np

ACTION_NAMES = ('dx', 'dy', 'dz', 'droll', 'dpitch', 'dyaw', 'gripper')
REPORT_SCHEMA = 'tgrpo_replay_check/1'


@dataclass
class Tolerances:
    """Limits a check is held to; None: not checked."""

    logp_max_abs_diff: Optional[float] = 1e-4   # nats
    min_greedy_agreement: Optional[float] = None  # fraction, over all dimensions
    action_mean_abs_diff: Optional[float] = None  # policy action units

    def __post_init__(self):
        """Reject negative limits and agreements outside [0, 1], quoting them."""
        for name in ('logp_max_abs_diff', 'action_mean_abs_diff'):
            value = getattr(self, name)
            if value is not None and not value >= 0:
                raise ValueError(f'{name} ({value}) must be >= 0')
        if self.min_greedy_agreement is not None and not 0 <= self.min_greedy_agreement <= 1:
            raise ValueError(f'min_greedy_agreement ({self.min_greedy_agreement}) must be in '
                             '[0, 1]')


@dataclass
class Steps:
    """N re-scored steps, each array [N, 7] unless noted."""

    recorded_logps: np.ndarray
    rescored_logps: np.ndarray
    recorded_tokens: np.ndarray
    greedy_tokens: np.ndarray
    recorded_actions: np.ndarray
    greedy_actions: np.ndarray
    adapter_versions: np.ndarray  # [N] int, the version that produced each step
    task_ids: np.ndarray          # [N] int, -1 when unknown

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


def action_diff(recorded_actions, greedy_actions) -> Dict[str, object]:
    """Mean |greedy action - recorded action| per dimension and overall."""
    diff = np.abs(np.asarray(greedy_actions, np.float64)
                  - np.asarray(recorded_actions, np.float64))
    if diff.size == 0:
        return {'mean_abs_diff': None, 'per_dim_mean': []}
    return {'mean_abs_diff': _finite(diff.mean()),
            'per_dim_mean': [_finite(v) for v in diff.mean(axis=0)]}


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
    """Return one sentence per tolerance the report exceeds (empty: passed)."""
    failures = []
    logp = report['logp']['max_abs_diff']
    limit = tolerances.logp_max_abs_diff
    if limit is not None and logp is not None and not logp <= limit:
        failures.append(f'log-prob max abs difference {logp:.3g} exceeds the tolerance '
                        f'{limit:.3g}')
    agreement = report['greedy_agreement']['overall']
    limit = tolerances.min_greedy_agreement
    if limit is not None and agreement is not None and not agreement >= limit:
        failures.append(f'greedy agreement {agreement:.3f} is below the minimum {limit:.3f}')
    action = report['actions']['mean_abs_diff']
    limit = tolerances.action_mean_abs_diff
    if limit is not None and action is not None and not action <= limit:
        failures.append(f'mean action abs difference {action:.3g} exceeds the tolerance '
                        f'{limit:.3g}')
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
              'problems': list(problems), 'tolerances': asdict(tolerances)}
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
             'mean |greedy action - recorded|: ' + fmt(act['mean_abs_diff']) + ' (' + ', '.join(
                 f'{n} {fmt(v)}' for n, v in zip(ACTION_NAMES, act['per_dim_mean'])) + ')']
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
    """Draw |log-prob diff| per dimension, greedy agreement and action difference."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
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
    actions = [v or 0.0 for v in report['actions']['per_dim_mean']]
    axes[2].bar(ACTION_NAMES[:len(actions)], actions, color='tab:orange')
    axes[2].set_title('mean |greedy action - recorded action|')
    verdict = 'PASSED' if report['passed'] else 'FAILED: ' + '; '.join(report['failures'])
    fig.suptitle(f"{report.get('bag', '')}: {report['steps']} steps; {verdict}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return str(path)
