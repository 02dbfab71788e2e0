"""
Per-update metrics: ``metrics.csv``, TensorBoard event files and ``curves.png``.

Keys are namespaced as in CleanRL / TRL (``rollout/...``, ``loss/...``, ``perf/...``)
and are the same in every sink. ``MetricsLogger`` writes one CSV row and one
TensorBoard event per update (``tensorboard --logdir RUN_DIR`` shows them);
``curves.png`` is drawn by the ``tgrpo_plot RUN_DIR`` command from the CSV, which
``BackgroundPlotter`` runs in a subprocess so plotting never delays an update.

Standard library at import; tensorboardX (pinned in requirements/10-ml.txt) is
imported by the first ``log`` and matplotlib by the plotting command only.
"""

import argparse
import csv
import itertools
import math
import os
import socket
import struct
import subprocess
import sys
import time
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

CSV_NAME = 'metrics.csv'
PLOT_NAME = 'curves.png'
# TensorBoard reads every file whose name contains 'tfevents' in the run directory.
EVENTS_PREFIX = 'events'
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
_file_numbers = itertools.count()


class TensorBoardWriter:
    """
    Write scalars to a TensorBoard event file in ``run_dir``, one event per update.

    Synchronous (tensorboardX's ``RecordWriter`` and protos, not the
    queue-and-thread ``SummaryWriter``): an update's scalars are on disk when ``add_scalars``
    returns, so a killed learner loses none. The first event of each writer is
    a session start at its first step, which makes TensorBoard drop the events
    of earlier files at that step and later: a resumed run that repeats an
    update shows it once, as ``metrics.csv`` does.
    """

    def __init__(self, run_dir):
        """Create nothing yet: the event file is opened by the first ``add_scalars``."""
        self.run_dir = os.fspath(run_dir)
        self.path: Optional[str] = None
        self._writer = None

    def add_scalars(self, step: int, values: Mapping[str, float]) -> None:
        """Append one event holding every value of ``values`` at ``step``, then flush."""
        from tensorboardX.proto.event_pb2 import Event, SessionLog
        from tensorboardX.proto.summary_pb2 import Summary
        from tensorboardX.record_writer import RecordWriter

        if self._writer is None:
            os.makedirs(self.run_dir, exist_ok=True)
            # TensorBoard's name pattern; the pid and a counter keep apart two
            # writers started in the same second.
            self.path = os.path.join(
                self.run_dir, f'{EVENTS_PREFIX}.out.tfevents.{int(time.time())}.'
                f'{socket.gethostname()}.{os.getpid()}.{next(_file_numbers)}')
            self._writer = RecordWriter(self.path)
            self._write(Event(wall_time=time.time(), file_version='brain.Event:2'))
            self._write(Event(wall_time=time.time(), step=int(step),
                              session_log=SessionLog(status=SessionLog.START)))
        summary = Summary(value=[Summary.Value(tag=key, simple_value=float(value))
                                 for key, value in values.items()])
        self._write(Event(wall_time=time.time(), step=int(step), summary=summary))
        self._writer.flush()  # flush and fsync

    def _write(self, event) -> None:
        self._writer.write(event.SerializeToString())

    def close(self) -> None:
        """Flush and close the event file (a later ``add_scalars`` opens a new one)."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def read_tensorboard_scalars(run_dir) -> Dict[str, List[Tuple[int, float]]]:
    """
    Read the scalars of every event file in ``run_dir``, as TensorBoard shows them.

    Files are read in the order they were started; a session start at step s
    drops the values read so far at steps >= s (TensorBoard's purge). Checks
    the TFRecord framing and CRCs. Returns ``{tag: [(step, value), ...]}``.
    """
    from tensorboardX.crc32c import crc32c
    from tensorboardX.proto.event_pb2 import Event, SessionLog

    def masked_crc(data: bytes) -> int:
        crc = crc32c(data) & 0xffffffff
        return (((crc >> 15) | (crc << 17)) + 0xa282ead8) & 0xffffffff

    files = []
    for name in os.listdir(run_dir):
        if 'tfevents' not in name:
            continue
        path = os.path.join(run_dir, name)
        with open(path, 'rb') as stream:
            data = stream.read()
        events, offset = [], 0
        while offset < len(data):
            if offset + 12 > len(data) or offset + 16 + struct.unpack(
                    '<Q', data[offset:offset + 8])[0] > len(data):
                raise ValueError(f'{path}: truncated record at byte {offset} of {len(data)}')
            header = data[offset:offset + 8]
            (length,), (header_crc,) = struct.unpack('<Q', header), struct.unpack(
                '<I', data[offset + 8:offset + 12])
            payload = data[offset + 12:offset + 12 + length]
            (payload_crc,) = struct.unpack('<I', data[offset + 12 + length:offset + 16 + length])
            if masked_crc(header) != header_crc or masked_crc(payload) != payload_crc:
                raise ValueError(f'{path}: bad CRC in the record at byte {offset}')
            events.append(Event.FromString(payload))
            offset += 16 + length
        files.append((events[0].wall_time if events else 0.0, name, events))
    scalars: Dict[str, List[Tuple[int, float]]] = {}
    for _, _, events in sorted(files, key=lambda f: f[:2]):
        for event in events:
            if event.HasField('session_log') and event.session_log.status == SessionLog.START:
                scalars = {tag: [(s, v) for s, v in points if s < event.step]
                           for tag, points in scalars.items()}
            for value in event.summary.value:
                scalars.setdefault(value.tag, []).append((int(event.step), value.simple_value))
    return scalars


class BackgroundPlotter:
    """
    Draw ``curves.png`` from ``metrics.csv`` in a subprocess (``tgrpo_plot RUN_DIR``).

    ``request()`` starts the plot in its own session and returns at once; at
    most one runs at a time, and a request made while one runs is skipped (the
    next request or ``finish`` draws the newer rows). The subprocess reads the
    CSV only, so it never loads torch and never holds up an update. Its errors
    go to this process's stderr.
    """

    def __init__(self, run_dir, command: Optional[Sequence[str]] = None):
        """``command`` defaults to this Python running ``tgrpo_plot RUN_DIR``."""
        self.run_dir = os.fspath(run_dir)
        self.command = list(command) if command is not None else [
            sys.executable, '-m', 'tgrpo_ros.training.metrics', self.run_dir]
        self.process: Optional[subprocess.Popen] = None
        self.started = 0
        self.skipped = 0
        self.failed = 0

    def running(self) -> bool:
        """Return whether a plot started by ``request`` is still running."""
        if self.process is not None and self.process.poll() is not None:
            self._reap()
        return self.process is not None

    def _reap(self) -> bool:
        ok = self.process.returncode == 0
        self.failed += 0 if ok else 1
        self.process = None
        return ok

    def _wait(self, timeout: float) -> bool:
        if self.process is None:
            return True
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            self.process = None
            raise
        return self._reap()

    def request(self) -> bool:
        """Start a plot unless one is running; return whether one was started."""
        if self.running():
            self.skipped += 1
            return False
        self.process = subprocess.Popen(self.command, stdin=subprocess.DEVNULL,
                                        stdout=subprocess.DEVNULL, start_new_session=True)
        self.started += 1
        return True

    def finish(self, timeout: float = 120.0) -> bool:
        """
        Wait for a running plot, then draw the final one and wait for it.

        Returns whether the final plot succeeded (its errors are on stderr);
        kills a plot that runs longer than ``timeout`` seconds and raises
        subprocess.TimeoutExpired.
        """
        self._wait(timeout)
        self.request()
        return self._wait(timeout)


class MetricsLogger:
    """
    Log one update's metrics to ``metrics.csv`` and TensorBoard; plot in the background.

    Every ``plot_every`` updates (0: only in ``close``) ``curves.png`` is redrawn
    by a ``BackgroundPlotter`` subprocess, so ``log`` returns without plotting.
    """

    def __init__(self, run_dir, plot_every: int = 5, resume: bool = False,
                 tensorboard: bool = True):
        """Open (or, with ``resume``, continue) the CSV in ``run_dir``."""
        if plot_every < 0:
            raise ValueError(f'plot_every ({plot_every}) must be >= 0 (0: only at the end)')
        self.run_dir = os.fspath(run_dir)
        os.makedirs(self.run_dir, exist_ok=True)
        self.csv_path = os.path.join(self.run_dir, CSV_NAME)
        self.plot_path = os.path.join(self.run_dir, PLOT_NAME)
        self.plot_every = plot_every
        self.tensorboard = TensorBoardWriter(self.run_dir) if tensorboard else None
        self.plotter = BackgroundPlotter(self.run_dir)
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
        if self.tensorboard is not None:
            self.tensorboard.add_scalars(int(update), {k: v for k, v in row.items()
                                                       if k != STEP_KEY})
        if self.plot_every and int(update) % self.plot_every == 0:
            self.plotter.request()

    def _rewrite(self) -> None:
        tmp = self.csv_path + '.tmp'
        with open(tmp, 'w', newline='') as stream:
            writer = csv.DictWriter(stream, self.columns)
            writer.writeheader()
            for row in sorted(self.rows, key=lambda r: r[STEP_KEY]):
                writer.writerow(row)
        os.replace(tmp, self.csv_path)

    def plot(self, path: Optional[str] = None) -> Optional[str]:
        """Draw the main curves in this process now; return the PNG's path (None if no rows)."""
        if not self.rows:
            return None
        return plot_curves(self.rows, path or self.plot_path)

    def close(self) -> None:
        """Close the event file and draw the final ``curves.png`` (waits for it)."""
        if self.tensorboard is not None:
            self.tensorboard.close()
        if self.rows:
            self.plotter.finish()


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


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command ``tgrpo_plot RUN_DIR``: draw RUN_DIR/curves.png from RUN_DIR/metrics.csv."""
    parser = argparse.ArgumentParser(
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        prog='tgrpo_plot', description=f'Draw the main training curves of a run from its '
        f'{CSV_NAME} into {PLOT_NAME} (matplotlib, no display needed).')
    parser.add_argument('run_dir', help=f'run directory holding {CSV_NAME}')
    parser.add_argument('--out', help=f'PNG to write (default: RUN_DIR/{PLOT_NAME})')
    parser.add_argument('--title', default='', help='figure title')
    args = parser.parse_args(argv)
    csv_path = os.path.join(args.run_dir, CSV_NAME)
    if not os.path.isfile(csv_path):
        parser.error(f'no {CSV_NAME} in {args.run_dir!r}: not a run directory, or no '
                     'update logged yet')
    rows = [r for r in read_csv(csv_path) if STEP_KEY in r]
    if not rows:
        parser.error(f'{csv_path} has no rows yet')
    print(plot_curves(rows, args.out or os.path.join(args.run_dir, PLOT_NAME),
                      title=args.title))
    return 0


if __name__ == '__main__':
    sys.exit(main())
