"""Run ament_pep257 (ROS's docstring conventions) over the package's Python files."""

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PATHS = [str(ROOT / p) for p in ('tgrpo_ros', 'test', 'bench', 'launch', 'setup.py')
         if (ROOT / p).exists()]


@pytest.mark.linter
@pytest.mark.pep257
def test_pep257():
    from ament_pep257.main import main
    rc = main(argv=PATHS)
    assert rc == 0, 'Found code style errors / warnings'
