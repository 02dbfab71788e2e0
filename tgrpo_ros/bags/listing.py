"""
``tgrpo_replay info`` and the listing commands (``tgrpo_replay BAG [--images T]``).

No rclpy: they read through ``tgrpo_ros.bags`` (docs/bags.md).
"""

import datetime
import os
import sys

from tgrpo_ros.bags import episodes as episode_bags
from tgrpo_ros.bags import storage as bag_io
from tgrpo_ros.episode import episode_to_bytes
from tgrpo_ros.names import safe_file_stem


def format_size(size):
    """Return a size in B as ros2 bag info prints it ('12.4 KiB')."""
    for unit in ('B', 'KiB', 'MiB', 'GiB'):
        if size < 1024 or unit == 'GiB':
            return f'{size} B' if unit == 'B' else f'{size:.1f} {unit}'
        size /= 1024.0


def format_time(ns):
    """Return a receive time as ros2 bag info prints it: local date and seconds."""
    seconds, rest = divmod(int(ns), 1_000_000_000)
    date = datetime.datetime.fromtimestamp(seconds).strftime('%b %e %Y %H:%M:%S')
    return f'{date}.{rest:09d} ({seconds}.{rest:09d})'


def format_qos(profiles):
    """Return the recorded QoS profiles as 'reliable, transient_local, depth 1'."""
    if not profiles:
        return 'none recorded'
    return '; '.join('{}, {}, depth {}'.format(*bag_io.qos_names(q)) for q in profiles)


def info_lines(bag):
    """Return the lines of ``tgrpo_replay info``: the fields ros2 bag info prints, and QoS."""
    summary = bag.summary()
    label = '{:<19}'.format
    lines = []
    for i, name in enumerate(summary['files']):
        lines.append((label('Files:') if i == 0 else ' ' * 19) + name)
    lines += [label('Bag size:') + format_size(summary['size']),
              label('Storage id:') + summary['storage_id'],
              label('ROS Distro:') + (summary['ros_distro'] or 'unknown')]
    start, end = summary['start'], summary['end']
    lines += [label('Duration:') + f"{summary['duration'] / 1e9:.9f}s",
              label('Start:') + (format_time(start) if start is not None else 'no message'),
              label('End:') + (format_time(end) if end is not None else 'no message'),
              label('Messages:') + str(summary['messages'])]
    topics = sorted(summary['topics'].items())
    if not topics:
        lines.append(label('Topic information:'))
    for i, (name, topic) in enumerate(topics):
        lines.append((label('Topic information:') if i == 0 else ' ' * 19)
                     + f'Topic: {name} | Type: {topic.msgtype} | Count: {topic.count} | '
                     f'Serialization Format: {topic.serialization} | '
                     f'QoS: {format_qos(topic.qos)}')
    lines += [label('Services:') + '0', label('Service information:')]
    return lines


def info(args, out=None, err=None):
    """Print what ``ros2 bag info`` prints (and each topic's QoS), then what is damaged."""
    out, err = out or sys.stdout, err or sys.stderr
    try:
        bag = bag_io.Bag(args.bag)
        lines = info_lines(bag)
    except ValueError as error:
        print(f'tgrpo_replay info: {error}', file=err)
        return 1
    for line in lines:
        print(line, file=out)
    for problem in bag.problems:
        print(f'problem: {problem}', file=err)
    return 4 if bag.problems else 0


def list_bag(args, out=None, err=None):
    """
    List the episodes (or, with ``args.images``, the images) of a bag; return the status.

    Reads through ``storage.Bag`` as check, play and info do: damaged files are read
    around and named (exit 4, after what could be read), a single storage file reads.
    """
    out, err = out or sys.stdout, err or sys.stderr
    count = 0
    try:
        bag = bag_io.Bag(args.bag)
        if args.images:
            images = episode_bags.read_images(bag, args.images, strict=False)
            for stamp, frame_id, image in images:
                print(f'image stamp {stamp} ns frame {frame_id!r} {image.shape[1]}x'
                      f'{image.shape[0]} px mean {image.mean():.2f}', file=out)
                count += 1
            print(f'{count} image(s) on {args.images}', file=out)
        else:
            if args.export:
                os.makedirs(args.export, exist_ok=True)
            read = episode_bags.read_episodes(bag, args.topic, strict=False)
            for index, (timestamp, episode) in enumerate(read):
                print(f'{episode.episode_id or index}: group {episode.group_id} task '
                      f'{episode.task_id} init {episode.init_state_id} steps '
                      f'{episode.length} return {episode.episode_return:.4f} success '
                      f'{episode.success} adapter {episode.adapter_version} (recorded at '
                      f'{timestamp} ns)', file=out)
                if args.export:
                    stem = safe_file_stem(episode.episode_id, f'episode_{index}')
                    name = os.path.join(args.export, stem + '.npz')
                    with open(name, 'wb') as stream:
                        stream.write(episode_to_bytes(episode))
                count += 1
            print(f'{count} episode(s) on {args.topic}', file=out)
    except (OSError, ValueError) as error:
        print(f'tgrpo_replay: {error}', file=err)
        return 1
    for problem in bag.problems:
        print(f'tgrpo_replay: problem: {problem}', file=err)
    return 4 if bag.problems else 0
