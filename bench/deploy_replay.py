"""
Record the deploy graph on the simulated arm, play the bag into it without the arm.

1. config/deploy_sim_arm.yaml's graph (policy_server in stream mode with the CPU
   stand-in, safety_controller live, sim_arm) runs as processes over DDS inside a
   private network namespace; ``tgrpo_record --profile deploy`` records it for
   ``--seconds`` and is stopped with SIGINT.
2. The same graph without sim_arm (the controller in dry run, both nodes with
   ``use_sim_time``) gets the bag's camera, instruction and end-effector pose from
   ``tgrpo_replay play --clock`` at ``--rate``.

A played frame is answered when the server published an action with its stamp
and the controller then published a command (a tick that is not a stop) while that
action was its newest (``tgrpo_ros.testing.deploy_play``).

Last line: ``deploy_play_answered: X``, the fraction of played frames answered
(target >= 0.99).
"""

import argparse
import os
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from tgrpo_ros.orchestration import netns  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[1])
    parser.add_argument('--seconds', type=float, default=10.0, help='s recorded on the arm')
    parser.add_argument('--camera-rate', type=float, default=5.0, help="sim_arm's camera Hz")
    parser.add_argument('--rate', type=float, default=1.0, help='play rate factor')
    parser.add_argument('--no-clock', action='store_true',
                        help='play without --clock and the nodes on the system clock')
    parser.add_argument('--out', default='', help='directory for the bag and node logs '
                        '(default: a new temporary directory)')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    error = netns.run_script_in_private_netns(
        __file__, list(sys.argv[1:] if argv is None else argv), 'bench/deploy_replay.py')
    if error:
        print(error, file=sys.stderr)
        return 1
    import numpy as np

    from tgrpo_ros.orchestration.processes import prepare_environment
    from tgrpo_ros.policy import cached_standin
    from tgrpo_ros.testing import deploy_play

    prepare_environment()
    out = args.out or tempfile.mkdtemp(prefix='bench_deploy_replay_')
    os.makedirs(out, exist_ok=True)
    model = cached_standin(seed=0)
    bag = os.path.join(out, 'deploy_bag')
    started = time.perf_counter()
    recording = deploy_play.record_on_sim_arm(
        bag, os.path.join(out, 'record_logs'), model, seconds=args.seconds,
        camera_rate_hz=args.camera_rate)
    print(f'recorded {recording.seconds:.1f} s on sim_arm (camera {args.camera_rate} Hz): '
          f'{recording.live_actions} actions, {recording.live_commands} twists to the arm; '
          f'bag {bag}:', flush=True)
    for name, count in sorted(recording.counts.items()):
        print(f'  {name}: {count}')
    play = deploy_play.play_offline(bag, os.path.join(out, 'play_logs'), model,
                                    rate=args.rate, clock=not args.no_clock)
    print(play.player_log.strip().splitlines()[-1] if play.player_log.strip() else '')
    counters = play.status.get('counters', {})
    print(f'played at rate {args.rate}{"" if args.no_clock else " with --clock"}: '
          f'{play.frames} frames; {play.actions} answered by an action with their stamp; '
          f'{play.answered} also by a command of the safety controller')
    print(f'controller (dry run): {play.commands} command ticks, {play.twists} twists; '
          f'state {play.status.get("state")}, stop reasons {play.status.get("stop_reasons")}; '
          'counters ' + ', '.join(f'{k} {v}' for k, v in counters.items() if v))
    if play.inference_ms and play.latency_ms:
        print(f'server time per batch: median {np.median(play.inference_ms):.1f} ms, max '
              f'{max(play.inference_ms):.1f} ms (first three {play.inference_ms[:3]}); frame '
              f'arrival to its action: p50 {np.percentile(play.latency_ms, 50):.1f} ms, p95 '
              f'{np.percentile(play.latency_ms, 95):.1f} ms, max {max(play.latency_ms):.1f} ms')
    if play.missed:
        print(f'unanswered frame stamps (ns): {play.missed[:10]}; {len(play.replaced)} of them '
              'replaced by a newer frame (server busy past the next frame, or the next action '
              'before the next control tick)')
    print(f'bench took {time.perf_counter() - started:.0f} s; bag and logs in {out}')
    print(f'deploy_play_answered: {play.fraction:.4f}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
