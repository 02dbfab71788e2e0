"""Metrics sinks: TensorBoard event files, the background plotter and ``tgrpo_plot``."""

import os
import subprocess
import sys

import pytest

from tgrpo_ros.training.metrics import (BackgroundPlotter, MetricsLogger, read_csv,
                                        read_tensorboard_scalars)


def _event_files(run_dir):
    return sorted(name for name in os.listdir(run_dir) if 'tfevents' in name)


def test_tensorboard_events_hold_the_csv_keys_and_values(tmp_path):
    logger = MetricsLogger(tmp_path, plot_every=0)
    logger.log(1, {'rollout/return_mean': 1.5, 'loss/clip_frac': 0.125})
    logger.log(2, {'rollout/return_mean': 2.5, 'loss/clip_frac': 0.25, 'loss/kl': 0.5})
    # Written synchronously: readable before close(), as by a live TensorBoard.
    files = _event_files(tmp_path)
    assert len(files) == 1 and files[0].startswith('events.out.tfevents.')
    scalars = read_tensorboard_scalars(tmp_path)
    assert scalars == {'rollout/return_mean': [(1, 1.5), (2, 2.5)],
                       'loss/clip_frac': [(1, 0.125), (2, 0.25)], 'loss/kl': [(2, 0.5)]}
    # Same keys as the CSV (less the step column), same values.
    rows = read_csv(tmp_path / 'metrics.csv')
    csv_keys = {k for row in rows for k in row} - {'update'}
    assert csv_keys == set(scalars)
    for row in rows:
        for key, value in row.items():
            if key != 'update':
                assert (int(row['update']), value) in scalars[key]
    logger.close()


def test_tensorboard_resume_drops_repeated_updates(tmp_path):
    # A crashed run logged updates 1-3 but checkpointed only 2: the resumed
    # logger repeats update 3 in a new event file, and TensorBoard (like the CSV)
    # keeps only the new value.
    first = MetricsLogger(tmp_path, plot_every=0)
    for update in (1, 2, 3):
        first.log(update, {'rollout/return_mean': float(update)})
    first.tensorboard.close()
    resumed = MetricsLogger(tmp_path, plot_every=0, resume=True)
    resumed.log(3, {'rollout/return_mean': 30.0})
    resumed.log(4, {'rollout/return_mean': 40.0})
    assert len(_event_files(tmp_path)) == 2
    assert read_tensorboard_scalars(tmp_path) == {
        'rollout/return_mean': [(1, 1.0), (2, 2.0), (3, 30.0), (4, 40.0)]}
    assert [r['rollout/return_mean'] for r in read_csv(tmp_path / 'metrics.csv')] == [
        1.0, 2.0, 30.0, 40.0]
    resumed.tensorboard.close()


def test_damaged_event_file_is_named(tmp_path):
    logger = MetricsLogger(tmp_path, plot_every=0)
    logger.log(1, {'loss/kl': 0.5})
    logger.tensorboard.close()
    path = tmp_path / _event_files(tmp_path)[0]
    data = bytearray(path.read_bytes())
    data[-6] ^= 0xFF  # inside the last record's payload
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match='bad CRC in the record at byte'):
        read_tensorboard_scalars(tmp_path)
    path.write_bytes(bytes(data[:-3]))
    with pytest.raises(ValueError, match=r'truncated record at byte \d+ of \d+'):
        read_tensorboard_scalars(tmp_path)


def test_background_plotter_runs_one_plot_at_a_time(tmp_path):
    logger = MetricsLogger(tmp_path, plot_every=1, tensorboard=False)
    # log() only starts the plot; a second request while it runs is skipped.
    logger.log(1, {'rollout/return_mean': 1.0, 'loss/kl': 0.1})
    assert logger.plotter.started == 1 and logger.plotter.running()
    logger.log(2, {'rollout/return_mean': 2.0, 'loss/kl': 0.2})
    assert logger.plotter.skipped == 1 and logger.plotter.started == 1
    logger.close()  # waits for it, then draws the final plot from both rows
    assert logger.plotter.started == 2 and not logger.plotter.running()
    assert logger.plotter.failed == 0
    assert (tmp_path / 'curves.png').stat().st_size > 1000
    assert not _event_files(tmp_path)


def test_background_plotter_counts_failures(tmp_path):
    plotter = BackgroundPlotter(tmp_path, command=[sys.executable, '-c', 'raise SystemExit(3)'])
    assert plotter.request()
    assert plotter.finish(timeout=60) is False
    assert plotter.failed == 2 and plotter.started == 2


def test_tgrpo_plot_command(tmp_path):
    logger = MetricsLogger(tmp_path, plot_every=0, tensorboard=False)
    logger.log(1, {'rollout/return_mean': 1.0})
    logger.log(2, {'rollout/return_mean': 2.0})
    command = [sys.executable, '-m', 'tgrpo_ros.training.metrics']
    out = tmp_path / 'other.png'
    done = subprocess.run(command + [str(tmp_path), '--out', str(out)], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(out) and out.stat().st_size > 1000
    missing = subprocess.run(command + [str(tmp_path / 'nowhere')], capture_output=True,
                             text=True, timeout=120)
    assert missing.returncode == 2
    assert "no metrics.csv in '" in missing.stderr and 'nowhere' in missing.stderr
