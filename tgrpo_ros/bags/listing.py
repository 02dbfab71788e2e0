"""
``tgrpo_replay info`` and the listing commands (``tgrpo_replay BAG [--images T]``).

No rclpy: they read through ``tgrpo_ros.bags`` (docs/bags.md).
"""

import os
import sys

from tgrpo_ros.bags import episodes as episode_bags
from tgrpo_ros.bags import storage as bag_io
from tgrpo_ros.episode import episode_to_bytes
from tgrpo_ros.names import safe_file_stem


def info(args, out=None, err=None):
    """Print the topics of a bag (type, count, recorded QoS) and what is damaged."""
    out, err = out or sys.stdout, err or sys.stderr
    try:
        bag = bag_io.Bag(args.bag)
        found = bag.topics
    except ValueError as error:
        print(f'tgrpo_replay info: {error}', file=err)
        return 1
    print(f'{args.bag}: {len(bag.files)} file(s)', file=out)
    for name, topic in sorted(found.items()):
        qos = ', '.join('/'.join(map(str, bag_io.qos_names(q))) for q in topic.qos) or '-'
        print(f'  {name}  {topic.msgtype}  {topic.count} msg  qos {qos}', file=out)
    for problem in bag.problems:
        print(f'problem: {problem}', file=err)
    return 4 if bag.problems else 0


def list_bag(args):
    """List the episodes (or, with ``args.images``, the images) of a bag; return the status."""
    try:
        if args.images:
            count = 0
            for stamp, frame_id, image in episode_bags.read_images(args.bag, args.images):
                print(f'image stamp {stamp} ns frame {frame_id!r} {image.shape[1]}x'
                      f'{image.shape[0]} px mean {image.mean():.2f}')
                count += 1
            print(f'{count} image(s) on {args.images}')
            return 0
        if args.export:
            os.makedirs(args.export, exist_ok=True)
        count = 0
        read = episode_bags.read_episodes(args.bag, args.topic)
        for index, (timestamp, episode) in enumerate(read):
            print(f'{episode.episode_id or index}: group {episode.group_id} task '
                  f'{episode.task_id} init {episode.init_state_id} steps {episode.length} '
                  f'return {episode.episode_return:.4f} success {episode.success} adapter '
                  f'{episode.adapter_version} (recorded at {timestamp} ns)')
            if args.export:
                stem = safe_file_stem(episode.episode_id, f'episode_{index}')
                name = os.path.join(args.export, stem + '.npz')
                with open(name, 'wb') as stream:
                    stream.write(episode_to_bytes(episode))
            count += 1
        print(f'{count} episode(s) on {args.topic}')
        return 0
    except (FileNotFoundError, ValueError) as error:
        print(f'tgrpo_replay: {error}', file=sys.stderr)
        return 1
