"""Run ament_flake8 (ROS's flake8 configuration) over the package's Python files."""

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PATHS = [str(ROOT / p) for p in ('tgrpo_ros', 'test', 'bench', 'launch', 'setup.py')
         if (ROOT / p).exists()]


@pytest.mark.flake8
@pytest.mark.linter
def test_flake8():
    from ament_flake8.main import main_with_errors
    rc, errors = main_with_errors(argv=['--config', str(ROOT / 'setup.cfg')] + PATHS)
    assert rc == 0, f'Found {len(errors)} code style errors / warnings:\n' + '\n'.join(errors)
