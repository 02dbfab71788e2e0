"""bench/gpu.py in its CI size: the tiny stand-in on CPU, every figure printed."""

import os
import re
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_bench_gpu_quick_runs_tiny_preset_on_cpu():
    env = dict(os.environ, CUDA_VISIBLE_DEVICES='', PYTHONPATH=REPO)  # as with no GPU
    result = subprocess.run([sys.executable, os.path.join(REPO, 'bench', 'gpu.py'), '--quick'],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.strip().splitlines()
    text = '\n'.join(lines)
    assert lines[0].startswith('device: cpu')
    assert 'checkpoint: preset tiny' in text
    for batch in (1, 8, 32):
        match = re.search(rf'^sample batch +{batch}: +([0-9.]+) actions/s .* x([0-9.]+)$',
                          text, re.MULTILINE)
        assert match, text
        assert float(match.group(1)) > 0
    assert 'sample batch 64' not in text  # --quick stops at 32
    assert re.search(r'^adapter hot swap \([0-9.]+ MiB\): [0-9.]+ ms best', text, re.MULTILINE)
    assert re.search(r'^teacher-forced forward\+backward\+AdamW step, batch 4: [0-9.]+ '
                     r'samples/s', text, re.MULTILINE)
    for phase in ('serving', 'training'):
        assert re.search(rf'^peak memory, {phase} .*: ([0-9.]+ GiB|n/a)', text, re.MULTILINE)
    last = re.fullmatch(r'batch32_speedup_vs_batch1: ([0-9.]+)', lines[-1])
    assert last, lines[-1]
    assert float(last.group(1)) > 0
