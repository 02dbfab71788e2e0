"""
Record a short training run, replay-check it, play it back (docs/bags.md).

A policy_server, 2 sim_bridges and the learner run as processes over DDS (inside a
private network namespace) for ``--updates`` TGRPO updates with the stand-in;
``tgrpo_record --profile training`` records the whole run. Then:

1. ``tgrpo_replay check --adapter-root RUN/adapters`` re-scores every recorded step
   (from the episodes, and again from the camera/action streams) with the adapter
   version that produced it, at the run's temperature;
2. ``tgrpo_replay check --adapter RUN/adapters/v<last>`` checks every step against
   the final adapter: the drift that training made;
3. ``tgrpo_replay play`` republishes the recorded camera/instruction streams into
   the policy server at rate 1.0 (the bridges are idle by then) and counts the
   frames the server answered.

Last line: ``replay_logp_max_abs_diff: X`` (target <= 1e-4), the largest
|re-scored - recorded| log-prob over every recorded step of step 1.
"""

import argparse
import json
import os
import signal
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from tgrpo_ros.orchestration import netns  # noqa: E402

BRIDGES = ['/sim0', '/sim1']


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[1])
    parser.add_argument('--updates', type=int, default=2, help='TGRPO updates of the run')
    parser.add_argument('--max-steps', type=int, default=8, help='policy steps per episode')
    parser.add_argument('--temperature', type=float, default=1.0,
                        help='sampling (and check) temperature')
    parser.add_argument('--out', default='', help='directory for the run, bag and reports '
                        '(default: a new temporary directory)')
    return parser.parse_args(argv)


def record_run(args, out, model):
    """Run the training graph with the recorder; return (bag, run directory, seconds)."""
    from tgrpo_ros.orchestration.processes import NodeGroup

    run_dir = os.path.join(out, 'run')
    bag = os.path.join(out, 'training_bag')
    nodes = NodeGroup(os.path.join(out, 'logs'))
    policy = {'model_path': model, 'trainable': 'lora', 'lora_rank': 8, 'lora_alpha': 16.0,
              'adapter_root': os.path.join(run_dir, 'adapters'),
              'temperature': args.temperature}
    try:
        recorder = nodes.start([sys.executable, '-m', 'tgrpo_ros.nodes.record'], args=[
            '--profile', 'training', '--clients', *BRIDGES, '-o', bag, '--status-period', '5'])
        nodes.start('policy_server', name='policy_server', parameters=dict(
            policy, clients=BRIDGES, max_batch_size=2, max_wait_ms=2.0, seed=0))
        for ns in BRIDGES:
            nodes.start('sim_bridge', name='sim_bridge', namespace=ns, parameters={
                'camera_size': 128, 'max_steps': args.max_steps, 'multisample': False,
                'action_timeout': 60.0})
        time.sleep(5.0)  # the recorder subscribes to the profile's topics first
        started = time.monotonic()
        learner = nodes.start('learner', name='learner', parameters=dict(
            policy, bridges=BRIDGES, group_size=2, tasks=[0], init_states=[0, 1],
            updates=args.updates, max_steps=args.max_steps, run_dir=run_dir, lr=1e-3,
            epochs=1, minibatch_size=8, seed=0, plot_every=0))
        deadline = time.monotonic() + 900.0
        while learner.alive and time.monotonic() < deadline:
            time.sleep(1.0)
        seconds = time.monotonic() - started
        if learner.returncode != 0:
            raise RuntimeError('learner failed:\n' + learner.log_text()[-3000:])
        time.sleep(2.0)  # the last episode reaches the recorder
        recorder.signal(signal.SIGINT)
        recorder.process.wait(timeout=60)
        print(recorder.log_text().strip().splitlines()[-1])
        play_stats = play_into_server(bag, out)
    finally:
        nodes.stop_all(report=sys.stderr)
    return bag, run_dir, seconds, play_stats


def play_into_server(bag, out):
    """Play the recorded camera/instruction streams; return (frames, answered)."""
    import subprocess

    from sensor_msgs.msg import JointState

    from tgrpo_ros.bags import storage as bag_io
    from tgrpo_ros.nodes import messages, topics
    from tgrpo_ros.testing.ros_client import RosClient

    recorded = bag_io.Bag(bag)
    frames = set()
    for ns in BRIDGES:
        name = topics.client_topic(ns, topics.CAMERA_TOPIC)
        frames |= {(ns, messages.stamp_to_ns(recorded.decode(*m).header.stamp))
                   for m in recorded.messages([name])}
    client = RosClient('bench_replay')
    answered = set()
    try:
        for ns in BRIDGES:
            client.node.create_subscription(
                JointState, topics.client_topic(ns, topics.ACTION_TOPIC),
                lambda msg, ns=ns: answered.add((ns, messages.decode_action(msg).stamp_ns)),
                topics.reliable_qos(100))
        played = [topics.client_topic(ns, t) for ns in BRIDGES
                  for t in (topics.CAMERA_TOPIC, topics.INSTRUCTION_TOPIC)]
        player = subprocess.Popen([sys.executable, '-m', 'tgrpo_ros.nodes.replay', 'play',
                                   bag, '--rate', '1.0', '--topics', *played],
                                  stdout=subprocess.PIPE, text=True)
        while player.poll() is None:
            client.spin_for(0.2)
        client.spin_for(2.0)
        print(player.stdout.read().strip())
    finally:
        client.close()
    return len(frames), len(frames & answered)


def check(bag, model, out, name, temperature, extra):
    from tgrpo_ros.nodes import replay

    report = os.path.join(out, f'{name}.json')
    status = replay.main(['check', bag, '--model', model, '--temperature', str(temperature),
                          '--report', report, *extra])
    with open(report) as stream:
        return status, json.load(stream)


def main(argv=None):
    args = parse_args(argv)
    error = netns.run_script_in_private_netns(
        __file__, list(sys.argv[1:] if argv is None else argv), 'bench/replay.py')
    if error:
        print(error, file=sys.stderr)
        return 1
    import tempfile

    import torch

    from tgrpo_ros.orchestration.processes import prepare_environment
    from tgrpo_ros.policy import cached_standin

    torch.set_num_threads(1)
    prepare_environment()
    out = args.out or tempfile.mkdtemp(prefix='bench_replay_')
    os.makedirs(out, exist_ok=True)
    model = cached_standin(seed=0)
    bag, run_dir, seconds, (frames, answered) = record_run(args, out, model)
    adapters = os.path.join(run_dir, 'adapters')
    print(f'training run: {args.updates} updates in {seconds:.1f} s, recorded to {bag}')

    figures = {}
    for source in ('episodes', 'streams'):
        status, report = check(bag, model, out, f'check_{source}', args.temperature,
                               ['--adapter-root', adapters, '--source', source])
        figures[source] = report
        print(f'check ({source}, each step with its own adapter version): exit {status}, '
              f"{report['steps']} steps, versions {list(report['per_adapter_version'])}")
    last = sorted(os.listdir(adapters))[-1]
    status, drift = check(bag, model, out, 'check_final_adapter', args.temperature,
                          ['--adapter', os.path.join(adapters, last), '--source', 'episodes'])
    print(f'check (episodes, all steps against the final adapter {last}): exit {status}')
    for version, row in drift['per_adapter_version'].items():
        print(f'  steps of version {version}: log-prob |diff| max '
              f"{row['logp_max_abs_diff']:.3g}, mean {row['logp_mean_abs_diff']:.3g}")
    episodes = figures['episodes']
    print(f"episode steps: logp max abs diff {episodes['logp']['max_abs_diff']:.3g}, mean "
          f"{episodes['logp']['mean_abs_diff']:.3g}; greedy agreement "
          f"{episodes['greedy_agreement']['overall']:.3f}; mean action diff "
          f"{episodes['actions']['mean_abs_diff']:.3f}")
    streams = figures['streams']
    print(f"stream steps: {streams['pairing']}; logp max abs diff "
          f"{streams['logp']['max_abs_diff']:.3g}")
    print(f"stream frames: {streams['accounting']['sentence']}")
    for task, row in episodes['episodes']['per_task'].items():
        print(f"episodes task {task}: {row['successes']}/{row['episodes']} success, return "
              f"{row['mean_return']:.3f}, length {row['mean_length']:.1f}")
    for version, row in episodes['episodes']['per_adapter_version'].items():
        print(f"episodes adapter v{version}: {row['episodes']} episodes, return "
              f"{row['mean_return']:.3f}")
    print(f'play at rate 1.0: {answered}/{frames} recorded frames answered '
          f'({answered / max(frames, 1):.1%})')
    print(f'reports and plots in {out}')
    worst = max(episodes['logp']['max_abs_diff'], streams['logp']['max_abs_diff'])
    print(f'replay_logp_max_abs_diff: {worst:.3g}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
