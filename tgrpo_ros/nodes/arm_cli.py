"""
tgrpo_arm: drive the safety controller without the ``ros2`` command line (pip installs).

    tgrpo_arm [--node /arm/safety_controller] [--timeout S] COMMAND [NAME=VALUE ...]

COMMAND is one of

- ``configure``, ``activate``, ``deactivate``, ``cleanup``: the lifecycle transition,
  through the node's standard ``~/change_state`` service (lifecycle_msgs/srv/ChangeState),
  as ``ros2 lifecycle set NODE TRANSITION`` does; prints the state reached;
- ``reset``: clear a latched e-stop through ``~/reset`` (std_srvs/srv/Trigger), once the
  e-stop input is released;
- ``estop`` / ``release``: publish true / false on ``/estop`` (std_msgs/Bool, latched),
  which every safety controller on the graph takes, and wait until the ``--node``
  controller's ``~/status`` reports it (exit 2 if it does not within ``--timeout``);
- ``set NAME=VALUE ...``: set parameters (``~/set_parameters``, YAML values), e.g.
  ``tgrpo_arm set dry_run=false`` while the controller is unconfigured;
- ``status``: the lifecycle state (``~/get_state``, lifecycle_msgs/srv/GetState) and
  the controller's own ``~/status`` line.

Exit status: 0 done, 1 refused by the node (e.g. a transition not allowed from its
state, a reset while the e-stop input is still engaged), 2 no such node answering
within ``--timeout``. On a ROS install ``ros2 lifecycle`` and ``ros2 service call``
do the same. docs/deploy.md has the checklist.
"""

import argparse
import json
import os
import sys
import time

from tgrpo_ros.nodes.services import QUERY_RESEND

LIFECYCLE_COMMANDS = ('configure', 'activate', 'deactivate', 'cleanup')
COMMANDS = LIFECYCLE_COMMANDS + ('reset', 'estop', 'release', 'set', 'status')
DEFAULT_NODE = '/arm/safety_controller'


class ArmCommandError(Exception):
    """One line for the user, and the exit status."""

    def __init__(self, message, status):
        """Keep ``message`` and the exit ``status``."""
        super().__init__(message)
        self.status = status


def _call(node, srv_type, name, request, timeout, resend_every=None):
    """Call service ``name``; a query (``resend_every``) is sent again until answered."""
    import rclpy

    from tgrpo_ros.nodes.services import call_service

    client = node.create_client(srv_type, name)
    if not client.wait_for_service(timeout_sec=timeout):
        raise ArmCommandError(f'no service {name} after {timeout:.0f} s: is the safety '
                              'controller running under that name? (--node; e.g. '
                              'tgrpo_launch --config config/deploy_sim_arm.yaml)', 2)
    response = call_service(client, request,
                            lambda seconds: rclpy.spin_once(node, timeout_sec=seconds),
                            timeout, resend_every)
    if response is None:
        raise ArmCommandError(f'no answer from {name} after {timeout:.0f} s', 2)
    return response


def lifecycle_state(node, target, timeout):
    """Return the lifecycle state label of node ``target`` ('unconfigured', 'active', ...)."""
    from lifecycle_msgs.srv import GetState

    return _call(node, GetState, f'{target}/get_state', GetState.Request(), timeout,
                 QUERY_RESEND).current_state.label


def transition(node, target, name, timeout):
    """Ask ``target`` for lifecycle transition ``name``; return the state it is in after."""
    from lifecycle_msgs.msg import Transition
    from lifecycle_msgs.srv import ChangeState

    from lifecycle_msgs.srv import GetAvailableTransitions

    request = ChangeState.Request()
    request.transition.id = getattr(Transition, f'TRANSITION_{name.upper()}')
    before = lifecycle_state(node, target, timeout)
    # Asked first: rclpy's lifecycle node raises in its service callback (and dies) on
    # a transition its state does not have.
    available = _call(node, GetAvailableTransitions, f'{target}/get_available_transitions',
                      GetAvailableTransitions.Request(), timeout,
                      QUERY_RESEND).available_transitions
    labels = [t.transition.label for t in available]
    if request.transition.id not in [t.transition.id for t in available]:
        needs = {'configure': "'unconfigured'", 'activate': "'inactive' (configure first)",
                 'deactivate': "'active'", 'cleanup': "'inactive' (deactivate first)"}
        raise ArmCommandError(f'{name} refused: {target} is {before!r}; {name} needs '
                              f'{needs[name]} (possible now: {", ".join(labels)})', 1)
    response = _call(node, ChangeState, f'{target}/change_state', request, timeout)
    after = lifecycle_state(node, target, timeout)
    if not response.success:
        raise ArmCommandError(f'{name} refused by {target} (it was {before!r}, is '
                              f'{after!r}; see its log for the reason)', 1)
    return after


def _status_lines(node, target):
    """Subscribe to ``target``'s ``~/status``; return the list its lines arrive in."""
    from std_msgs.msg import String

    from tgrpo_ros.nodes import arm_topics

    lines = []
    node.create_subscription(String, f'{target}/status', lambda msg: lines.append(msg.data),
                             arm_topics.STATUS_QOS)
    return lines


def _status_line(node, target, timeout):
    import rclpy

    lines = _status_lines(node, target)
    deadline = time.monotonic() + timeout
    while not lines and time.monotonic() < deadline:
        rclpy.spin_once(node, timeout_sec=0.1)
    if not lines:
        return 'no ~/status message'
    try:
        status = json.loads(lines[-1])
        return str(status.get('message', lines[-1]))
    except ValueError:
        return lines[-1]


def _publish_estop(node, target, engaged, timeout):
    """
    Publish ``engaged`` on /estop and return once ``target`` reports it; raise if it does not.

    The publisher is latched (transient local) and stays up until the controller's
    ``~/status`` says ``estop_engaged`` is ``engaged``: a controller whose reader matches
    this publisher late (discovery is not symmetric) still reads the press from its
    history. Returns the number of /estop subscriptions matched.
    """
    import rclpy
    from std_msgs.msg import Bool

    from tgrpo_ros.nodes import arm_topics

    lines = _status_lines(node, target)
    publisher = node.create_publisher(Bool, arm_topics.ESTOP_TOPIC, arm_topics.ESTOP_QOS)
    deadline = time.monotonic() + timeout
    while publisher.get_subscription_count() == 0:
        if time.monotonic() > deadline:
            raise ArmCommandError(f'no subscriber on {arm_topics.ESTOP_TOPIC} after '
                                  f'{timeout:.0f} s: is a safety controller running?', 2)
        rclpy.spin_once(node, timeout_sec=0.1)
    publisher.publish(Bool(data=bool(engaged)))
    deadline = time.monotonic() + timeout
    while not any(json.loads(line).get('estop_engaged') is bool(engaged) for line in lines):
        if time.monotonic() > deadline:
            last = json.loads(lines[-1]).get('estop_engaged') if lines else None
            heard = (f'its last status says estop_engaged {last}' if lines
                     else f'no {target}/status message (--node?)')
            action = 'engaged' if engaged else 'released'
            raise ArmCommandError(
                f'published {str(bool(engaged)).lower()} on {arm_topics.ESTOP_TOPIC}, but '
                f'{target} has not reported the e-stop {action} after {timeout:.0f} s '
                f'({heard})' + ('; use the hardware e-stop' if engaged else ''), 2)
        rclpy.spin_once(node, timeout_sec=0.1)
    return publisher.get_subscription_count()


def set_parameters(node, target, assignments, timeout):
    """Set ``NAME=VALUE`` parameters of ``target``; raise naming the first one refused."""
    import yaml
    from rcl_interfaces.srv import SetParameters
    from rclpy.parameter import Parameter

    request = SetParameters.Request()
    for item in assignments:
        name, sep, value = item.partition('=')
        if not sep or not name:
            raise ArmCommandError(f'set: {item!r} must look like NAME=VALUE, e.g. '
                                  'dry_run=false', 2)
        value = yaml.safe_load(value)
        if isinstance(value, list) and value and all(isinstance(v, (int, float))
                                                     for v in value):
            value = [float(v) for v in value]
        request.parameters.append(Parameter(name, value=value).to_parameter_msg())
    if not request.parameters:
        raise ArmCommandError('set needs NAME=VALUE, e.g. tgrpo_arm set dry_run=false', 2)
    response = _call(node, SetParameters, f'{target}/set_parameters', request, timeout,
                     QUERY_RESEND)
    for item, result in zip(assignments, response.results):
        if not result.successful:
            raise ArmCommandError(f'set {item} refused by {target}: {result.reason}', 1)
    return f"{target}: set {', '.join(assignments)}"


def run(command, target, timeout, assignments=()):
    """Carry out ``command`` on node ``target``; return the line to print."""
    import rclpy

    from tgrpo_ros.names import normalize_namespace

    target = normalize_namespace(target)
    node = rclpy.create_node('tgrpo_arm')
    try:
        if command in LIFECYCLE_COMMANDS:
            return f'{target}: {transition(node, target, command, timeout)}'
        if command == 'reset':
            from std_srvs.srv import Trigger
            response = _call(node, Trigger, f'{target}/reset', Trigger.Request(), timeout)
            if not response.success:
                raise ArmCommandError(f'reset refused by {target}: {response.message}', 1)
            return f'{target}: reset: {response.message}'
        if command == 'set':
            return set_parameters(node, target, list(assignments), timeout)
        if command in ('estop', 'release'):
            count = _publish_estop(node, target, command == 'estop', timeout)
            what = 'engaged' if command == 'estop' else 'released (reset to resume)'
            return (f'e-stop {what} on /estop ({count} subscriber(s)); {target} reports '
                    f'it')
        state = lifecycle_state(node, target, timeout)
        return f'{target}: {state}; {_status_line(node, target, timeout)}'
    finally:
        node.destroy_node()


def build_parser():
    """Command-line options of tgrpo_arm."""
    parser = argparse.ArgumentParser(
        prog='tgrpo_arm', formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description='Configure, activate, deactivate, reset or e-stop the safety controller '
        'through its lifecycle and std_srvs services (no ros2 CLI needed).')
    parser.add_argument('command', choices=COMMANDS,
                        help='lifecycle transition, reset (clear a released e-stop), '
                        'estop / release (/estop), set NAME=VALUE, or status')
    parser.add_argument('assignments', nargs='*', metavar='NAME=VALUE',
                        help="parameters of 'set', e.g. dry_run=false")
    parser.add_argument('--node', default=DEFAULT_NODE,
                        help='full name of the safety controller node')
    parser.add_argument('--timeout', type=float, default=10.0,
                        help='s to wait for the node to answer')
    return parser


def main(argv=None):
    """Run one tgrpo_arm command; return the exit status."""
    args = build_parser().parse_args(argv)
    os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
    import rclpy

    rclpy.init(args=['tgrpo_arm'])
    try:
        if args.assignments and args.command != 'set':
            raise ArmCommandError(f'{args.command} takes no NAME=VALUE arguments', 2)
        print(run(args.command, args.node, args.timeout, args.assignments), flush=True)
        return 0
    except ArmCommandError as error:
        print(f'tgrpo_arm: {error}', file=sys.stderr, flush=True)
        return error.status
    except KeyboardInterrupt:
        return 130
    finally:
        rclpy.try_shutdown()


if __name__ == '__main__':
    sys.exit(main())
