"""tgrpo_arm against the real safety_controller process: the deploy checklist without ros2."""

import subprocess
import sys

import pytest

CONTROLLER = [sys.executable, '-m', 'tgrpo_ros.nodes.safety_controller']
ARM = [sys.executable, '-m', 'tgrpo_ros.nodes.arm_cli', '--node', '/arm/safety_controller',
       '--timeout', '60']


def _arm(*args):
    result = subprocess.run(ARM + list(args), capture_output=True, text=True, timeout=180)
    return result.returncode, result.stdout.strip(), result.stderr.strip()


@pytest.mark.ros
def test_tgrpo_arm_runs_the_lifecycle_and_the_reset(ros_nodes):
    node = ros_nodes.start(CONTROLLER, name='safety_controller', namespace='/arm',
                           parameters={'dry_run': True})
    code, out, err = _arm('status')
    assert code == 0, err + node.log_text()[-2000:]
    assert out.startswith('/arm/safety_controller: unconfigured;')
    # activate before configure: refused by the node, one line, exit 1.
    code, out, err = _arm('activate')
    assert code == 1 and err.startswith(
        "tgrpo_arm: activate refused: /arm/safety_controller is 'unconfigured'; activate "
        "needs 'inactive' (configure first) (possible now: configure"), err
    assert _arm('configure')[:2] == (0, '/arm/safety_controller: inactive')
    assert _arm('activate')[:2] == (0, '/arm/safety_controller: active')
    code, out, err = _arm('estop')
    assert code == 0 and out.startswith('e-stop engaged on /estop'), err
    code, out, err = _arm('status')
    assert code == 0 and 'active; active, estop' in out, out
    code, out, err = _arm('reset')  # the e-stop input is still engaged
    assert code == 1 and err.startswith('tgrpo_arm: reset refused by /arm/safety_controller: ')
    assert _arm('release')[0] == 0
    code, out, err = _arm('reset')
    assert code == 0 and out.startswith('/arm/safety_controller: reset: '), err
    assert _arm('deactivate')[:2] == (0, '/arm/safety_controller: inactive')
    assert node.alive


@pytest.mark.ros
def test_tgrpo_arm_names_a_node_that_is_not_there():
    result = subprocess.run([sys.executable, '-m', 'tgrpo_ros.nodes.arm_cli', '--node',
                             '/nowhere/safety_controller', '--timeout', '2', 'configure'],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().startswith(
        'tgrpo_arm: no service /nowhere/safety_controller/get_state after 2 s')
    assert 'Traceback' not in result.stderr
