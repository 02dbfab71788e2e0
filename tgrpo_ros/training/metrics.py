"""
Per-update metrics: a CSV file that is never rewritten with less data, plus PNG plots.

Keys are namespaced as in CleanRL / TRL (``rollout/...``, ``loss/...``, ``perf/...``).
TensorBoard is not a dependency; the CSV has one row per update.
"""

import csv
import math
import os
from typing import Dict, Iterable, List, Mapping, Optional

CSV_NAME = 'metrics.csv'
PLOT_NAME = 'curves.png'
STEP_KEY = 'update'
# Curves drawn by plot(): (key, title); missing keys are skipped.
MAIN_CURVES = (
    ('rollout/return_mean', 'mean return'),
    ('rollout/success_rate', 'success rate'),
    ('loss/kl', 'KL to reference (k3)'),
    ('loss/approx_kl', 'approx KL to old policy'),
    ('loss/clip_frac', 'clip fraction'),
    ('loss/entropy', 'entropy (nats)'),
    ('loss/grad_norm', 'grad norm (before clip)'),
    ('perf/update_time', 'update time (s)'),
)


class MetricsLogger:
    """Append one row of floats per update to ``<run_dir>/metrics.csv``; plot periodically."""

    def __init__(self, run_dir, plot_every: int = 5, resume: bool = False):
        """Open (or, with ``resume``, continue) the CSV in ``run_dir``."""
        if plot_every < 0:
            raise ValueError(f'plot_every ({plot_every}) must be >= 0 (0: never)')
        self.run_dir = os.fspath(run_dir)
        os.makedirs(self.run_dir, exist_ok=True)
        self.csv_path = os.path.join(self.run_dir, CSV_NAME)
        self.plot_path = os.path.join(self.run_dir, PLOT_NAME)
        self.plot_every = plot_every
        self.rows: List[Dict[str, float]] = []
        self.columns: List[str] = [STEP_KEY]
        if resume and os.path.isfile(self.csv_path):
            self.rows = [dict(r, **{STEP_KEY: int(r[STEP_KEY])})
                         for r in read_csv(self.csv_path)]
            for row in self.rows:
                self._add_columns(row)

    def _add_columns(self, row: Mapping[str, float]) -> bool:
        new = [k for k in row if k not in self.columns]
        self.columns += new
        return bool(new)

    def log(self, update: int, metrics: Mapping[str, float]) -> None:
        """Record the metrics of update ``update`` (1-based); non-numbers raise TypeError."""
        row = {STEP_KEY: int(update)}
        for key, value in metrics.items():
            if isinstance(value, bool):
                value = float(value)
            if not isinstance(value, (int, float)):
                raise TypeError(f'metric {key!r} must be a number, got {value!r}')
            row[key] = float(value)
        # A resumed run may repeat an update that was logged but not checkpointed.
        repeated = any(int(r[STEP_KEY]) == int(update) for r in self.rows)
        self.rows = [r for r in self.rows if int(r[STEP_KEY]) != int(update)] + [row]
        new_columns = self._add_columns(row)
        if new_columns or repeated or not os.path.isfile(self.csv_path):
            self._rewrite()
        else:
            with open(self.csv_path, 'a', newline='') as stream:
                csv.DictWriter(stream, self.columns).writerow(row)
        if self.plot_every and int(update) % self.plot_every == 0:
            self.plot()

    def _rewrite(self) -> None:
        tmp = self.csv_path + '.tmp'
        with open(tmp, 'w', newline='') as stream:
            writer = csv.DictWriter(stream, self.columns)
            writer.writeheader()
            for row in sorted(self.rows, key=lambda r: r[STEP_KEY]):
                writer.writerow(row)
        os.replace(tmp, self.csv_path)

    def plot(self, path: Optional[str] = None) -> Optional[str]:
        """Write the main curves to a PNG (matplotlib Agg); return its path (None if no rows)."""
        if not self.rows:
            return None
        return plot_curves(self.rows, path or self.plot_path)

    def close(self) -> None:
        """Write the final plot."""
        self.plot()


def read_csv(path) -> List[Dict[str, float]]:
    """Read a metrics CSV back into rows of floats (empty cells are skipped)."""
    with open(path, newline='') as stream:
        return [{k: float(v) for k, v in row.items() if v not in ('', None)}
                for row in csv.DictReader(stream)]


def plot_curves(rows: Iterable[Mapping[str, float]], path,
                curves=MAIN_CURVES, title: str = '') -> str:
    """Plot each available curve of ``rows`` against the update number into ``path``."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    rows = sorted(rows, key=lambda r: r[STEP_KEY])
    present = [(k, t) for k, t in curves if any(k in r for r in rows)]
    if not present:
        present = [(STEP_KEY, STEP_KEY)]
    cols = 2 if len(present) > 1 else 1
    n_rows = math.ceil(len(present) / cols)
    fig, axes = plt.subplots(n_rows, cols, figsize=(5 * cols, 2.6 * n_rows), squeeze=False)
    for ax, (key, label) in zip(axes.flat, present):
        xs = [r[STEP_KEY] for r in rows if key in r]
        ys = [r[key] for r in rows if key in r]
        ax.plot(xs, ys, marker='.', linewidth=1)
        ax.set_title(label, fontsize=9)
        ax.set_xlabel('update', fontsize=8)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(present):]:
        ax.axis('off')
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    tmp = os.fspath(path) + '.tmp.png'
    fig.savefig(tmp, dpi=80)
    plt.close(fig)
    os.replace(tmp, path)
    return os.fspath(path)
