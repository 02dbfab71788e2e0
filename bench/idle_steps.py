"""
LIBERO success when the arm pauses between the policy's actions (docs/deploy.md).

In real time on a CPU the policy decides 2.5-5 times a second, so in ``once`` mode
(``action_execution``) each action moves the arm for one 50 ms step and the arm then
stands still until the next decision. This bench takes the serving out of the
question: one ``LiberoEnv``, the greedy policy, and after every action ``--idle K``
steps of zero arm motion (the synchronous loop is K = 0), then the next decision on
the frame after them: what ``once`` mode with a fresh frame for every decision gives
the simulated arm at 20 Hz / (K + 1) decisions a second. ``--gripper hold`` keeps the
gripper's target during the pause (LIBERO's gripper action moves its target by a fixed
increment every simulation substep, so repeating the close command during the pause
closes it K + 1 times as far per decision); ``--gripper repeat`` repeats the action's
gripper command, as ``sim_arm`` does.

Prints one line per episode; the last line is ``idle_success: S/N`` for the last K.
"""

import argparse
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0].strip(),
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument('--model-path', default=os.path.join(ROOT, 'models', 'standin_sft_task0'))
    parser.add_argument('--task', type=int, default=0, help='LIBERO-Object task id')
    parser.add_argument('--init-states', default='1,2', help='comma list of init states')
    parser.add_argument('--idle', default='0,7', help='comma list of pause lengths K (steps)')
    parser.add_argument('--gripper', choices=('repeat', 'hold'), default='repeat',
                        help="during the pause: repeat the action's gripper command, or "
                        'hold the gripper target (LIBERO gripper action 0)')
    parser.add_argument('--max-actions', type=int, default=280, help='policy actions per episode')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    import torch

    from tgrpo_ros.policy import load_policy
    from tgrpo_ros.sim.libero_env import LiberoEnv

    torch.set_num_threads(1)
    states = [int(s) for s in args.init_states.split(',')]
    pauses = [int(k) for k in args.idle.split(',')]
    policy = load_policy(args.model_path)
    env = LiberoEnv(task_id=args.task, camera_size=128, multisample=False,
                    max_steps=args.max_actions * (max(pauses) + 1) + 1)
    env.raw_env.env.ignore_done = True  # no robosuite horizon: the pauses add steps
    successes = 0
    for pause in pauses:
        successes = 0
        for state in states:
            start = time.perf_counter()
            obs = env.reset(state)
            success, actions = False, 0
            while actions < args.max_actions and not success:
                action = np.asarray(policy.sample([obs['image']], [obs['instruction']],
                                                  greedy=True).actions)[0]
                obs, _, _, info = env.step(action)
                actions += 1
                success = info['success']
                for _ in range(pause):
                    if success:
                        break
                    if args.gripper == 'hold':  # env convention: gripper 0 keeps the target
                        obs, _, _, info = env.step(np.zeros(7), convention='env')
                    else:
                        idle = np.zeros(7)
                        idle[6] = action[6]
                        obs, _, _, info = env.step(idle)
                    success = info['success']
            successes += success
            print(f'idle {pause} (gripper {args.gripper}) init state {state}: '
                  f"{'success' if success else 'failure'} after {actions} actions, "
                  f'{time.perf_counter() - start:.0f} s', flush=True)
    env.close()
    print(f'idle_success: {successes}/{len(states)}')


if __name__ == '__main__':
    main()
