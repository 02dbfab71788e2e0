"""
Rollout throughput: the ROS graph against the same envs and model without ROS.

Targets and last measured figures: docs/testing.md.

ROS path: a policy_server and 2 sim_bridges run as processes over DDS (inside a
private network namespace); this script plays the learner, assigning each group
to both bridges and waiting for both episodes. Plain path:
``tgrpo_ros.sim.rollout.GroupRollout`` steps the same 2 LIBERO envs with the
same stand-in policy, one batched ``policy.sample`` per step, in one Python loop.

Both paths run the same groups (task, init state, camera size, step limit) after
one warm-up group, and count aggregate env steps per second of wall time
(resets and episode hand-over included). The plain loop runs with its envs
in-process, one after the other (``--baseline sequential``, "one plain
Python loop", the default) or in worker processes (``--baseline parallel``, the
stricter comparison: it isolates the cost of ROS). The ROS bridges always step
their envs in parallel processes. Both ratios are printed when ``--baseline both``.

Last line: ``ros_vs_plain_ratio: X`` (target >= 0.9).
"""

import argparse
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from tgrpo_ros.episode import Assignment  # noqa: E402
from tgrpo_ros.orchestration import netns  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split('\n')[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument('--groups', type=int, default=3, help='measured groups per path')
    parser.add_argument('--max-steps', type=int, default=20, help='policy steps per episode')
    parser.add_argument('--camera-size', type=int, default=128, help='render size (px)')
    parser.add_argument('--task', type=int, default=0, help='LIBERO-Object task id')
    parser.add_argument('--baseline', choices=('sequential', 'parallel', 'both'),
                        default='sequential', help='plain loop(s) to compare with')
    # On 2 cores the bridges drift out of step, so waiting for a partner request
    # costs more than a batch-1 call (~18 ms on the stand-in): wait briefly.
    parser.add_argument('--max-wait-ms', type=float, default=2.0,
                        help="policy_server's max_wait_ms")
    args = parser.parse_args(argv)
    from tgrpo_ros.sim.libero_env import check_ids
    try:
        check_ids('libero_object', [args.task])
    except ValueError as error:
        parser.exit(2, f'{parser.prog}: error: {error}\n')
    return args


def ros_path(args, model_path, log_dir):
    """Return (env steps, seconds) of the measured groups over the ROS graph."""
    from std_msgs.msg import String, UInt8MultiArray

    from tgrpo_ros.nodes import messages, topics
    from tgrpo_ros.orchestration.processes import NodeGroup
    from tgrpo_ros.testing.ros_client import RosClient

    bridges = ['/sim0', '/sim1']
    nodes = NodeGroup(log_dir)
    client = None
    try:
        nodes.start('policy_server', name='policy_server', parameters={
            'model_path': model_path, 'clients': bridges, 'max_wait_ms': args.max_wait_ms,
            'max_batch_size': len(bridges)})
        for ns in bridges:
            nodes.start('sim_bridge', name='sim_bridge', namespace=ns, parameters={
                'camera_size': args.camera_size, 'max_steps': args.max_steps,
                'action_timeout': 60.0})
        client = RosClient('bench_learner')
        episodes = []
        client.node.create_subscription(
            UInt8MultiArray, topics.EPISODE_TOPIC,
            lambda msg: episodes.append(messages.decode_episode(msg)), topics.EPISODE_QOS)
        assign = {ns: client.node.create_publisher(
            String, topics.client_topic(ns, topics.ASSIGNMENT_TOPIC), topics.ASSIGNMENT_QOS)
            for ns in bridges}
        for publisher in assign.values():
            client.wait_for_subscribers(publisher, timeout=120.0)

        def run_group(group_id):
            before = len(episodes)
            for ns in bridges:
                assign[ns].publish(messages.encode_assignment(Assignment(
                    group_id=group_id, task_id=args.task, init_state_id=group_id % 50,
                    max_steps=args.max_steps)))
            client.spin_until(lambda: len(episodes) >= before + len(bridges), 600.0,
                              f'the episodes of group {group_id}')
            return episodes[before:]

        run_group(0)  # warm-up: env creation, first batch
        start = time.perf_counter()
        steps = 0
        for group in range(1, args.groups + 1):
            steps += sum(e.length for e in run_group(group))
        seconds = time.perf_counter() - start
        batch_sizes = [b for e in episodes[len(bridges):] for b in e.extras['batch_sizes']]
        mean_batch = sum(batch_sizes) / max(1, len(batch_sizes))
        return steps, seconds, mean_batch
    finally:
        if client is not None:
            client.close()
        nodes.stop_all(report=sys.stderr)


def plain_path(args, model_path, parallel):
    """Return (env steps, seconds) of the measured groups in one plain Python loop."""
    import torch

    from tgrpo_ros.policy import load_policy
    from tgrpo_ros.sim.rollout import GroupRollout

    torch.set_num_threads(1)
    policy = load_policy(model_path)
    generator = torch.Generator().manual_seed(0)
    with GroupRollout(2, task_id=args.task, camera_size=args.camera_size,
                      max_steps=args.max_steps, parallel=parallel) as rollout:
        rollout.run(policy, init_state_id=0, group_id=0, generator=generator)  # warm-up
        start = time.perf_counter()
        steps = 0
        for group in range(1, args.groups + 1):
            episodes = rollout.run(policy, init_state_id=group % 50, group_id=group,
                                   generator=generator)
            steps += sum(e.length for e in episodes)
        return steps, time.perf_counter() - start


def main(argv=None):
    args = parse_args(argv)
    error = netns.run_script_in_private_netns(
        __file__, list(sys.argv[1:] if argv is None else argv), 'bench/rollout.py')
    if error:
        print(error, file=sys.stderr)
        return 2
    import tempfile

    from tgrpo_ros.policy import cached_standin

    model_path = cached_standin(seed=0)
    log_dir = tempfile.mkdtemp(prefix='bench_rollout_')
    print(f'2 envs, LIBERO-Object task {args.task}, camera {args.camera_size} px, '
          f'{args.max_steps} steps per episode, {args.groups} measured groups; stand-in '
          f'policy; node logs in {log_dir}', flush=True)
    steps, seconds, mean_batch = ros_path(args, model_path, log_dir)
    ros_rate = steps / seconds
    print(f'ros graph (2 sim_bridge + policy_server processes): {steps} steps in '
          f'{seconds:.1f} s = {ros_rate:.2f} steps/s; mean server batch {mean_batch:.2f}',
          flush=True)
    modes = ['sequential', 'parallel'] if args.baseline == 'both' else [args.baseline]
    ratios = {}
    for mode in modes:
        steps, seconds = plain_path(args, model_path, parallel=mode == 'parallel')
        rate = steps / seconds
        ratios[mode] = ros_rate / rate
        where = ('envs in this process, stepped one after the other' if mode == 'sequential'
                 else 'envs in 2 worker processes')
        print(f'plain loop, {mode} ({where}): {steps} steps in {seconds:.1f} s = '
              f'{rate:.2f} steps/s; ros/plain {ratios[mode]:.3f}', flush=True)
    print(f'ros_vs_plain_ratio: {ratios[modes[0]]:.3f}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
