"""
Task success through the deploy graph on sim_arm, next to the synchronous figure.

    python bench/deploy_success.py [--model-path models/standin_sft_task0]
        [--task 0] [--init-states 30] [--max-steps 280] [--limits permissive|bench]
        [--execution once|hold|both] [--hold-init-states N] [--real-time-factor 1.0]

The deploy graph is ``config/deploy_sim_arm.yaml``, built by
``tgrpo_ros.orchestration.graph`` as both launchers build it: policy_server in
stream mode (greedy, camera preprocessing), a live safety_controller and
sim_arm, real processes over DDS in a private network namespace, in real time.
For each init state the scene is reset (sim_arm's ``init_state_id`` and
``~/reset``) and the episode runs until sim_arm reports success or the policy
has had its ``--max-steps`` actions: in ``once`` mode (the default,
``action_execution`` of docs/deploy.md) each action drives the arm for one
50 ms period, so the episode ends after ``--max-steps`` executed actions, as a
synchronous episode ends after that many policy steps; in ``hold`` mode (the
old behaviour, run for comparison) an action is held until the next one and the
episode ends after ``--max-steps`` steps of simulated time (20 Hz), skipped
steps included. The policy acts in real time, on the newest camera frame.

Per mode the bench reports the fraction of control ticks that moved the arm,
the policy's decisions per second, and the frame-to-twist latency (image stamp
to the first moving twist after its reply arrived), p50 and p95.

Then the same model is evaluated synchronously on the same init states
(``tgrpo_ros.sim.evaluate``, greedy, one env, the same 128 px renders): one
policy call per 20 Hz step, as the sim bridges run it. The last line is
``deploy_success: A/N (x%) vs synchronous: B/N (y%)`` (A: once mode) and the
last line ``deploy_gap_points: X``, the synchronous minus the real-time success
rate in percentage points.

``--limits permissive`` (default) sets speed, acceleration and box limits that
pass the policy's actions unchanged, so the comparison isolates real-time
serving; ``--limits bench`` keeps config/deploy_sim_arm.yaml's limits.
"""

import argparse
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

from tgrpo_ros.orchestration import netns  # noqa: E402

CONFIG = os.path.join(ROOT, 'config', 'deploy_sim_arm.yaml')
STEP = 0.05  # s, sim_arm's step period (LIBERO's 20 Hz)
# Limits that leave a policy action unchanged: the scales' full range (0.25 m/s and
# 2 rad/s per unit of action), accelerations above a full-scale change in one tick,
# a box around LIBERO-Object's whole table.
PERMISSIVE = {'max_linear_speed': [0.25, 0.25, 0.25], 'max_linear_norm': 0.5,
              'max_angular_speed': [2.0, 2.0, 2.0], 'max_angular_norm': 3.5,
              'rotation_lever_arm': 0.0, 'max_linear_accel': 100.0,
              'max_angular_accel': 1000.0, 'workspace_min': [-1.0, -1.0, -0.2],
              'workspace_max': [1.0, 1.0, 1.5],
              # Watchdogs that a loaded 2-core machine does not trip (renders and replies
              # of over a second were measured here with seven users).
              'image_timeout': 3.0, 'pose_timeout': 3.0, 'action_timeout': 3.0}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split('\n\n')[0].strip(),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument('--model-path', default=os.path.join(ROOT, 'models',
                                                             'standin_sft_task0'),
                        help="checkpoint directory ('' : the random-init stand-in)")
    parser.add_argument('--task', type=int, default=0, help='LIBERO-Object task id')
    parser.add_argument('--init-states', type=int, default=30, help='init states 0..N-1')
    parser.add_argument('--execution', choices=('once', 'hold', 'both'), default='both',
                        help="action_execution of the real-time run(s); 'both': once, then "
                        'hold for comparison')
    parser.add_argument('--hold-init-states', type=int, default=None,
                        help='init states of the hold comparison (default: --init-states)')
    parser.add_argument('--real-time-factor', type=float, default=1.0,
                        help="sim_arm's real_time_factor (the controller's action_period "
                        'follows: 0.05 s / factor)')
    parser.add_argument('--max-steps', type=int, default=280,
                        help='policy steps (20 Hz) of simulated time per episode')
    parser.add_argument('--camera-rate', type=float, default=5.0, help="sim_arm's camera Hz")
    parser.add_argument('--limits', choices=('permissive', 'bench'), default='permissive')
    parser.add_argument('--no-sync', action='store_true',
                        help='skip the synchronous evaluation')
    parser.add_argument('--verbose', action='store_true', help="echo the nodes' logs")
    args = parser.parse_args(argv)
    if args.init_states < 1 or (args.hold_init_states is not None
                                and args.hold_init_states < 0):
        parser.error('--init-states must be >= 1 and --hold-init-states >= 0')
    if not args.real_time_factor > 0.0:
        parser.error(f'--real-time-factor must be > 0, got {args.real_time_factor}')
    from tgrpo_ros.policy.config import check_model_path
    from tgrpo_ros.sim.libero_env import check_ids
    try:
        check_model_path(args.model_path, 'bench/deploy_success.py')
        states = max(args.init_states, args.hold_init_states or 0)
        check_ids('libero_object', [args.task], range(states))
    except ValueError as error:
        parser.exit(2, f'{parser.prog}: error: {error}\n')
    return args


def percentile(values, q):
    """Return the q-th percentile of ``values`` (nan when empty)."""
    import numpy as np
    return float(np.percentile(values, q)) if len(values) else float('nan')


def deploy_run(args, model_path, instruction, log_dir, mode, init_states):
    """Run the deploy graph over the init states; return ([(state, success, status)], stats)."""
    import numpy as np
    from rcl_interfaces.srv import SetParameters
    from rclpy.parameter import Parameter
    from sensor_msgs.msg import JointState
    from std_msgs.msg import String
    from std_srvs.srv import Trigger

    from tgrpo_ros.nodes import topics
    from tgrpo_ros.orchestration import graph
    from tgrpo_ros.orchestration.processes import NodeGroup
    from tgrpo_ros.testing.arm_client import ArmProbe
    from tgrpo_ros.testing.ros_client import RosClient

    controller = {'dry_run': False, 'action_execution': mode,
                  'action_period': STEP / args.real_time_factor}
    if args.limits == 'permissive':
        controller.update(PERMISSIVE)
    specs = graph.build_graph(graph.load_config(CONFIG), model_path=model_path, overrides={
        'policy_server': {'instruction': instruction},
        'safety_controller': controller,
        'sim_arm': {'task_id': args.task, 'camera_rate_hz': args.camera_rate,
                    'real_time_factor': args.real_time_factor}})
    arm = graph.arm_namespace(graph.load_config(CONFIG))
    nodes = NodeGroup(log_dir, verbose=args.verbose)
    client = None
    results = []
    try:
        nodes.start_graph(specs, graph.write_params_files(specs, os.path.join(log_dir,
                                                                              'params')))
        client = RosClient('bench_deploy_success')
        probe = ArmProbe(client, namespace=arm)
        probe.feed.update(camera=False, pose=False, action=False)  # the graph feeds itself
        for publisher in (probe.camera_pub, probe.pose_pub, probe.action_pub):
            client.node.destroy_publisher(publisher)
        status = []
        client.node.create_subscription(String, f'{arm}/sim_arm/status',
                                        lambda msg: status.append(json.loads(msg.data)), 10)
        actions = []  # (arrival s, image stamp s) of every reply
        client.node.create_subscription(
            JointState, f'{arm}/{topics.ACTION_TOPIC}',
            lambda msg: actions.append((probe.now(), msg.header.stamp.sec
                                        + msg.header.stamp.nanosec * 1e-9)),
            topics.ACTION_QOS)
        moving_share, rates, latencies = [], [], []
        reset = client.node.create_client(Trigger, f'{arm}/sim_arm/reset')
        set_params = client.node.create_client(SetParameters, f'{arm}/sim_arm/set_parameters')
        probe.wait_for_controller(timeout=300.0)
        client.wait_for_service(reset, timeout=300.0)
        assert probe.transition('configure'), 'the safety controller did not configure'
        # The policy server loads its model meanwhile: start once it answers frames.
        client.spin_until(lambda: actions, 600.0, 'the first action of the policy server')
        for init_state in range(init_states):
            if probe.lifecycle_state() == 'active':
                assert probe.transition('deactivate')
            request = SetParameters.Request(parameters=[
                Parameter('init_state_id', value=init_state).to_parameter_msg()])
            (result,) = client.call(set_params, request, timeout=30.0).results
            assert result.successful, result.reason
            response = client.call(reset, Trigger.Request(), timeout=120.0)
            assert response.success, response.message
            status.clear()
            before = dict((probe.latest_status() or {}).get('counters') or {})
            activated = probe.now()
            first_action = len(actions)
            assert probe.transition('activate')
            started = time.monotonic()

            def counter(name):
                now = (probe.latest_status() or {}).get('counters') or {}
                return now.get(name, 0) - before.get(name, 0)

            def over():
                if not status or status[-1]['episodes'] < init_state + 1:
                    return False  # a status from before this episode's reset
                last = status[-1]
                if last['success']:
                    return True
                if mode == 'once':  # one 50 ms step of motion per action
                    return counter('executed_actions') >= args.max_steps
                return last['steps'] + last['skipped_steps'] >= args.max_steps
            # sim_arm reports once a second; the wall clock bounds a stalled graph
            # (in once mode at no fewer than 0.5 decisions a second).
            limit = args.max_steps * (2.0 if mode == 'once' else STEP / args.real_time_factor)
            while not over() and time.monotonic() - started < limit + 30:
                client.spin_for(0.2)
            seconds = time.monotonic() - started
            last = status[-1] if status else {}
            success = bool(last.get('success'))
            results.append((init_state, success, last))
            ticks = counter('ticks')
            moving_share.append(counter('moving_ticks') / ticks if ticks else 0.0)
            replies = actions[first_action:]
            rates.append(len(replies) / seconds)
            twists = [(tw[0], tw[1], tw[2]) for tw in probe.twists('twist', since=activated)]
            moving_stamps = sorted(stamp for stamp, linear, angular in twists
                                   if np.any(linear) or np.any(angular))
            for arrival, image_stamp in replies:
                index = int(np.searchsorted(moving_stamps, arrival))
                if index < len(moving_stamps):
                    latencies.append(moving_stamps[index] - image_stamp)
            moving = [tw[0] for tw in probe.twists('twist', since=activated)
                      if np.any(tw[1]) or np.any(tw[2])]
            first = f'{moving[0] - activated:.2f} s' if moving else 'never'
            print(f'deploy ({mode}) init state {init_state}: '
                  f'{"success" if success else "failure"} '
                  f"after {last.get('steps', 0)} simulated steps "
                  f"(+{last.get('skipped_steps', 0)} skipped, {last.get('held_steps', 0)} "
                  f"held, {last.get('frames', 0)} frames), {len(replies)} decisions "
                  f"({rates[-1]:.2f}/s), {counter('executed_actions')} actions executed, "
                  f'moving {moving_share[-1]:.0%} of ticks; first motion {first} after '
                  'activation', flush=True)
        counters = (probe.latest_status() or {}).get('counters')
        if counters:
            print(f'controller counters ({mode}):', counters, flush=True)
        stats = {'moving': float(np.mean(moving_share)) if moving_share else float('nan'),
                 'decisions_per_s': float(np.mean(rates)) if rates else float('nan'),
                 'latency_p50': percentile(latencies, 50),
                 'latency_p95': percentile(latencies, 95)}
        return results, stats
    finally:
        if client is not None:
            client.close()
        nodes.stop_all(report=sys.stderr)


def sync_run(args, model_path):
    """Greedy synchronous evaluation of the same model and init states; return successes."""
    from tgrpo_ros.sim.evaluate import EvalConfig, run_evaluation

    config = EvalConfig(policy='vla', suite='libero_object', tasks=[args.task],
                        num_init_states=args.init_states, num_envs=1, camera_size=128,
                        multisample=False, max_steps=args.max_steps, model_path=model_path)
    report = run_evaluation(config, progress=False)
    return report['successes'], report['episodes'], report['wall_seconds']


def main(argv=None):
    args = parse_args(argv)
    error = netns.run_script_in_private_netns(
        __file__, list(sys.argv[1:] if argv is None else argv), 'bench/deploy_success.py')
    if error:
        print(error, file=sys.stderr)
        return 1
    import tempfile

    from tgrpo_ros.orchestration import graph
    from tgrpo_ros.orchestration.processes import prepare_environment
    from tgrpo_ros.sim.libero_env import task_instructions

    prepare_environment()
    try:
        model_path = graph.resolve_model(args.model_path)
    except FileNotFoundError as error:
        print(f'bench/deploy_success.py: {error} (the SFT stand-in: docs/sft.md)',
              file=sys.stderr)
        return 2
    instruction = task_instructions('libero_object')[args.task]
    print(f'model {model_path}, task {args.task} ({instruction!r}), init states '
          f'0..{args.init_states - 1}, {args.max_steps} steps, limits {args.limits}, '
          f'real_time_factor {args.real_time_factor}, execution {args.execution}',
          flush=True)
    modes = ['once', 'hold'] if args.execution == 'both' else [args.execution]
    summary = {}
    for mode in modes:
        count = args.init_states if mode == modes[0] or args.hold_init_states is None \
            else args.hold_init_states
        if count == 0:
            continue
        started = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix='bench_deploy_success_') as log_dir:
            results, stats = deploy_run(args, model_path, instruction, log_dir, mode, count)
        deployed = sum(success for _, success, _ in results)
        summary[mode] = (deployed, len(results))
        print(f'deploy graph ({mode}): {deployed}/{len(results)} in '
              f'{time.perf_counter() - started:.0f} s; moving {stats["moving"]:.1%} of the '
              f'time, {stats["decisions_per_s"]:.2f} decisions/s, frame-to-twist latency p50 '
              f'{stats["latency_p50"] * 1000:.0f} ms p95 {stats["latency_p95"] * 1000:.0f} ms',
              flush=True)
    deployed, total = summary[modes[0]]
    line = f'deploy_success: {deployed}/{total} ({deployed / total:.0%})'
    if not args.no_sync:
        successes, episodes, seconds = sync_run(args, model_path)
        print(f'synchronous: {successes}/{episodes} in {seconds:.0f} s', flush=True)
        line += f' vs synchronous: {successes}/{episodes} ({successes / episodes:.0%})'
    print(line)
    if not args.no_sync:
        gap = 100.0 * (successes / episodes - deployed / total)
        print(f'deploy_gap_points: {gap:.1f}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
