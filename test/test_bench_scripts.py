"""Every bench script parses its command line: a stale import or option shows up here."""

import glob
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = sorted(glob.glob(os.path.join(ROOT, 'bench', '*.py')))


def test_the_benches_are_there():
    names = {os.path.basename(path) for path in SCRIPTS}
    assert {'learn.py', 'policy.py', 'rollout.py', 'sim.py', 'gpu.py', 'success.py',
            'deploy.py'} <= names


@pytest.mark.parametrize('script', SCRIPTS, ids=os.path.basename)
def test_bench_script_prints_its_help(script):
    result = subprocess.run([sys.executable, script, '--help'], capture_output=True,
                            text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-2000:]
    assert 'usage:' in result.stdout


@pytest.mark.parametrize('script', SCRIPTS, ids=os.path.basename)
def test_every_tgrpo_ros_import_of_a_bench_resolves(script):
    """Imports inside functions run only on a full bench run: check they name real modules."""
    import ast
    import importlib
    import importlib.util

    missing = []
    for node in ast.walk(ast.parse(open(script).read())):
        if isinstance(node, ast.ImportFrom) and (node.module or '').startswith('tgrpo_ros'):
            if importlib.util.find_spec(node.module) is None:
                missing.append(node.module)
                continue
            module = importlib.import_module(node.module)
            for alias in node.names:
                if not hasattr(module, alias.name) and importlib.util.find_spec(
                        f'{node.module}.{alias.name}') is None:
                    missing.append(f'{node.module}.{alias.name}')
    assert not missing, missing
