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
    assert out.endswith('; /arm/safety_controller reports it'), out
    code, out, err = _arm('status')
    assert code == 0 and 'active; active, estop' in out, out
    code, out, err = _arm('reset')  # the e-stop input is still engaged
    assert code == 1 and err.startswith('tgrpo_arm: reset refused by /arm/safety_controller: ')
    assert _arm('release')[0] == 0
    code, out, err = _arm('reset')
    assert code == 0 and out.startswith('/arm/safety_controller: reset: '), err
    assert _arm('deactivate')[:2] == (0, '/arm/safety_controller: inactive')
    # A press no controller of that name confirms is a failure, never a silent success
    # (the controller under /arm takes it all the same: every controller does).
    result = subprocess.run([sys.executable, '-m', 'tgrpo_ros.nodes.arm_cli', '--node',
                             '/elsewhere/safety_controller', '--timeout', '15', 'estop'],
                            capture_output=True, text=True, timeout=180)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.strip() == (
        'tgrpo_arm: published true on /estop, but /elsewhere/safety_controller has not '
        'reported the e-stop engaged after 15 s (no /elsewhere/safety_controller/status '
        'message (--node?)); use the hardware e-stop')
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
