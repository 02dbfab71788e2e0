"""
``tgrpo_replay check``: re-score a recorded bag through a policy and compare.

Two sources of recorded steps (docs/bags.md):

* episodes (``/tgrpo/episodes``): every step of every Episode carries the image the
  policy saw, the instruction, the 7 action tokens, the behaviour log-probs, the
  continuous action and the adapter version that produced it;
* streams: per client namespace ``ns``, the images on ``ns/camera/image`` and the
  replies on ``ns/action``, paired by the image header stamp (the server stamps
  each reply with its image's header, docs/messages.md); the instruction is the
  one on ``ns/instruction`` whose CRC-32 the reply carries.

Each step is re-scored with ``policy.log_probs`` (teacher-forced, the recorded
tokens) and ``policy.sample(greedy=True)``; ``tgrpo_ros.bags.report`` turns the
figures into the JSON report and the PNG. Damage in the bag (see ``storage``) is
reported and the rest is still checked.
"""

import json
import os
import sys

import numpy as np

from tgrpo_ros.bags import report as check_report
from tgrpo_ros.bags import storage as bag_io
from tgrpo_ros.bags import topic_names as topics
from tgrpo_ros.nodes import messages

EPISODE_TYPE = 'std_msgs/msg/UInt8MultiArray'
IMAGE_TYPE = 'sensor_msgs/msg/Image'
ACTION_TYPE = 'sensor_msgs/msg/JointState'
STRING_TYPE = 'std_msgs/msg/String'
SOURCES = ('auto', 'episodes', 'streams')
INSTRUCTION_MEMORY = 8  # distinct recent instructions per client kept for CRC matching

# Exit statuses of `tgrpo_replay check` (docs/bags.md).
EXIT_OK = 0
EXIT_ERROR = 1        # nothing could be checked: not a bag, no usable topic, bad arguments
EXIT_TOLERANCE = 3    # a tolerance was exceeded
EXIT_BAG_PROBLEMS = 4  # within tolerance, but parts of the bag could not be read or
#                        more frames than --max-skipped went un-re-scored


# Why a recorded frame was not re-scored (the report counts each, docs/bags.md).
SKIP_REASONS = ('no_reply', 'unknown_instruction', 'decode_error', 'outside_window',
                'no_adapter')


class Step:
    """
    One recorded step to re-score, and where it is in the bag.

    ``action`` is the recorded action, [7]; a chunk of K actions per frame (a later
    action message) would be [K, 7], and the report's per-step action difference
    then takes each dimension's largest difference over the chunk
    (``report.step_action_diff``). ``index`` is the frame's index on its topic
    (streams: the n-th distinct image of its client; episodes: the n-th step of the
    bag), ``stamp`` the image header stamp (ns; episodes: the episode's receive
    time), ``where`` the client namespace or the episode id.
    """

    __slots__ = ('image', 'instruction', 'tokens', 'logps', 'action', 'version', 'task',
                 'index', 'stamp', 'where')

    def __init__(self, image, instruction, tokens, logps, action, version, task,
                 index=-1, stamp=0, where=''):
        """Hold the fields (arrays of 7 for tokens, logps; [7] or [K, 7] for action)."""
        self.image, self.instruction = image, instruction
        self.tokens, self.logps, self.action = tokens, logps, action
        self.version, self.task = int(version), int(task)
        self.index, self.stamp, self.where = int(index), int(stamp), str(where)


def episode_steps(bag, topic, episodes_out, counters=None):
    """
    Yield the Steps of every episode on ``topic``; append episode summaries to the list.

    ``counters`` receives ``frames`` (steps found) and ``decode_error`` (episode
    messages that do not decode: their steps are unknown, each counts as one).
    """
    counters = {} if counters is None else counters
    for key in ('frames',) + SKIP_REASONS:
        counters.setdefault(key, 0)
    if bag.require(topic, EPISODE_TYPE) is None:
        return
    index = 0
    step_index = 0
    for name, msgtype, timestamp, data in bag.messages([topic]):
        msg = bag.decode(name, msgtype, timestamp, data, index)
        index += 1
        if msg is None:
            counters['frames'] += 1
            counters['decode_error'] += 1
            continue
        try:
            episode = messages.decode_episode(msg)
        except ValueError as error:
            bag.problems.append(f'message {index - 1} on {topic} (received at {timestamp} ns) '
                                f'is not a valid episode: {error}')
            counters['frames'] += 1
            counters['decode_error'] += 1
            continue
        versions = episode.extras.get('step_adapter_versions') or [episode.adapter_version] * (
            episode.length)
        episodes_out.append({'episode_id': episode.episode_id, 'task_id': episode.task_id,
                             'adapter_version': episode.adapter_version,
                             'success': bool(episode.success),
                             'return': float(episode.episode_return),
                             'length': int(episode.length)})
        for t in range(episode.length):
            counters['frames'] += 1
            yield Step(episode.images[t], episode.instruction, episode.action_tokens[t],
                       episode.behaviour_logps[t], episode.actions[t], versions[t],
                       episode.task_id, step_index, timestamp,
                       f'episode {episode.episode_id or index - 1} step {t}')
            step_index += 1


def stream_clients(bag):
    """Return the namespaces that have camera, instruction and action topics in the bag."""
    suffix = '/' + topics.CAMERA_TOPIC
    return sorted(name[:-len(suffix)] for name in bag.topics if name.endswith(suffix)
                  and topics.client_topic(name[:-len(suffix)] or '/', topics.ACTION_TOPIC)
                  in bag.topics)


def stream_steps(bag, clients, counters, instruction=None, notes=None):
    """
    Yield a Step per action reply that answers a recorded image (same header stamp).

    Every frame (a distinct image stamp, or a reply whose image is not in the bag) is
    either yielded or counted under a reason of SKIP_REASONS in ``counters``, which
    also receives frames, images, replies and paired. The instruction is the recent
    one whose CRC-32 the reply carries; ``instruction`` (text) is known from the
    start (a bag that recorded none). A reply whose instruction is recorded only
    later (a latched instruction the recorder met late) is paired with it at the
    end when it is the only instruction of that client in the bag; ``notes`` gets a
    sentence saying so. ``chunked_replies`` counts replies of K > 1 actions: the
    first action of a chunk is the one re-scored (it answers the image).
    """
    notes = [] if notes is None else notes
    wanted = {}
    for ns in clients:
        names = {kind: topics.client_topic(ns, topic) for kind, topic in (
            ('image', topics.CAMERA_TOPIC), ('instruction', topics.INSTRUCTION_TOPIC),
            ('action', topics.ACTION_TOPIC))}
        present = {kind: name in bag.topics for kind, name in names.items()}
        if not present['instruction'] and instruction is None:
            present['instruction'] = True  # name it among the problems below
        infos = {kind: bag.require(name, {'image': IMAGE_TYPE, 'instruction': STRING_TYPE,
                                          'action': ACTION_TYPE}[kind])
                 for kind, name in names.items() if present[kind]}
        if infos.get('image') is None or infos.get('action') is None:
            continue
        for kind, name in names.items():
            if infos.get(kind) is not None:
                wanted[name] = (ns, kind)
    given = [instruction] if instruction is not None else []
    state = {ns: {'images': {}, 'replies': {}, 'instructions': list(given), 'answered': set(),
                  'index': {}, 'late': [], 'all_instructions': set(given)} for ns in clients}
    for key in ('frames', 'images', 'replies', 'paired', 'chunked_replies') + SKIP_REASONS:
        counters.setdefault(key, 0)
    index = {}
    for name, msgtype, timestamp, data in bag.messages(sorted(wanted)):
        ns, kind = wanted[name]
        index[name] = index.get(name, -1) + 1
        msg = bag.decode(name, msgtype, timestamp, data, index[name])
        if msg is None:
            if kind != 'instruction':
                counters['frames'] += 1
                counters['decode_error'] += 1
            continue
        s = state[ns]
        if kind == 'instruction':
            texts = s['instructions']
            if msg.data in texts:
                texts.remove(msg.data)
            texts.append(msg.data)
            del texts[:-INSTRUCTION_MEMORY]
            s['all_instructions'].add(msg.data)
            continue
        if kind == 'image':
            stamp = messages.stamp_to_ns(msg.header.stamp)
            if stamp in s['images'] or stamp in s['answered']:
                continue  # a re-published request: the same picture
            counters['images'] += 1
            s['index'][stamp] = len(s['index'])
            s['images'][stamp] = msg
            reply = s['replies'].pop(stamp, None)
        else:
            try:
                reply = messages.decode_action(msg)
            except ValueError as error:
                bag.problems.append(f'message {index[name]} on {name} is not an action reply: '
                                    f'{error}')
                counters['frames'] += 1
                counters['decode_error'] += 1
                continue
            stamp = reply.stamp_ns
            if stamp in s['answered'] or stamp in s['replies']:
                continue  # the server answered a repeat from its cache
            counters['replies'] += 1
            counters['chunked_replies'] += reply.chunk_size > 1
            if stamp not in s['images']:
                s['replies'][stamp] = reply
                continue
        if reply is None:
            continue
        image_msg = s['images'].pop(stamp)
        s['answered'].add(stamp)
        counters['frames'] += 1
        # The recent instructions when the pair completes: an image can arrive before the
        # instruction that was published just ahead of it (two topics, no order).
        text = next((t for t in reversed(s['instructions'])
                     if messages.instruction_crc32(t) == reply.instruction_crc32), None)
        if text is None:
            s['late'].append((image_msg, reply, stamp))
            continue
        step = _stream_step(bag, ns, s, image_msg, reply, stamp, text, counters)
        if step is not None:
            yield step
    for ns in clients:
        s = state[ns]
        late, texts = s['late'], s['all_instructions']
        if late:
            only = next(iter(texts)) if len(texts) == 1 else None
            crc = None if only is None else messages.instruction_crc32(only)
            paired = [item for item in late if item[1].instruction_crc32 == crc]
            if paired:
                notes.append(f'{ns}: {len(paired)} frame(s) recorded before the instruction '
                             f'arrived were paired with it (the only instruction of {ns} in '
                             f'the bag: {only!r})')
            for image_msg, reply, stamp in late:
                if reply.instruction_crc32 != crc:
                    counters['unknown_instruction'] += 1
                    continue
                step = _stream_step(bag, ns, s, image_msg, reply, stamp, only, counters)
                if step is not None:
                    yield step
            unknown = [r.instruction_crc32 for _, r, _ in late if r.instruction_crc32 != crc]
            if unknown:
                notes.append(f'{ns}: {len(unknown)} frame(s) carry the CRC-32 of an instruction '
                             f'that is not in the bag ({sorted(set(unknown))[:3]}; the bag has '
                             f'{len(texts)} instruction(s)); give it with --instruction TEXT')
        counters['frames'] += len(s['images']) + len(s['replies'])
        counters['no_reply'] += len(s['images'])
        counters['outside_window'] += len(s['replies'])
        counters['unanswered_images'] = counters.get('unanswered_images', 0) + len(s['images'])
        counters['unpaired_replies'] = counters.get('unpaired_replies', 0) + len(s['replies'])


def _stream_step(bag, ns, s, image_msg, reply, stamp, text, counters):
    try:
        image = messages.image_to_numpy(image_msg)
    except ValueError as error:
        bag.problems.append(f'image stamped {stamp} ns on {ns}: {error}')
        counters['decode_error'] += 1
        return None
    counters['paired'] += 1
    return Step(image, text, reply.action_tokens, reply.log_probs, reply.action,
                reply.adapter_version, -1, s['index'].get(stamp, -1), stamp, ns)


def adapter_dir(root, version):
    """Return the adapter directory of ``version`` under a learner's adapter root."""
    return os.path.join(root, f'v{int(version):05d}')  # the learner's layout


def load_policy_for_check(args):
    """Load the policy of ``args`` (model, adapter, temperature ...); layout from the adapter."""
    from tgrpo_ros.policy.config import PolicyLoadConfig

    values = {'model_path': args.model, 'device': args.device, 'dtype': args.dtype,
              'temperature': args.temperature, 'num_threads': args.num_threads}
    layout = args.adapter
    if args.adapter_root:
        found = sorted(d for d in os.listdir(args.adapter_root) if d.startswith('v')
                       and os.path.isdir(os.path.join(args.adapter_root, d)))
        if not found:
            raise ValueError(f'--adapter-root {args.adapter_root} holds no adapter '
                             'directory v<NNNNN>')
        layout = os.path.join(args.adapter_root, found[0])
    if layout:
        from tgrpo_ros.policy.adapters import read_adapter
        config, _, metadata = read_adapter(layout)
        values['trainable'] = metadata.get('tgrpo_trainable', 'lora')
        if 'r' in config:
            values.update(lora_rank=int(config['r']), lora_alpha=float(config['lora_alpha']),
                          lora_target_modules=sorted(config['target_modules']))
    if args.trainable:
        values['trainable'] = args.trainable
    policy = PolicyLoadConfig(**values).load()
    if args.adapter:
        policy.load_adapter(args.adapter, version=args.adapter_version)
    return policy


class AdapterSwitch:
    """Serves each step's own adapter version from a learner's adapter root."""

    def __init__(self, policy, root, problems):
        """Swap adapters of ``policy`` from ``root`` on demand; report missing ones."""
        self.policy, self.root, self.problems = policy, root, problems
        self.prepared = {}
        self.missing = set()

    def use(self, version):
        """Serve ``version``; return False (once reported) if it has no adapter."""
        if version == self.policy.adapter_version:
            return True
        if version in self.missing:
            return False
        if version not in self.prepared:
            path = adapter_dir(self.root, version)
            try:
                self.prepared[version] = self.policy.prepare_adapter(path)
            except Exception as error:  # noqa: B902 - AdapterError, OSError: name it
                self.missing.add(version)
                self.problems.append(f'steps of adapter version {version} are not checked: '
                                     f'{type(error).__name__}: {error}')
                return False
        self.policy.swap_adapter(self.prepared[version], version)
        return True


def preprocessor(name):
    """Return the image preprocessing function ``name`` ('none': identity)."""
    if name == 'none':
        return None
    from tgrpo_ros.policy import contract
    if not hasattr(contract, 'get_preprocessor'):
        raise ValueError(f"unknown image preprocessing '{name}'; available: none")
    return contract.get_preprocessor(name)


def rescore(policy, steps, batch_size, switch=None, preprocess=None, counters=None):
    """
    Re-score ``steps`` (an iterable of Step) in batches; return check_report.Steps.

    ``switch`` (AdapterSwitch): each batch holds one adapter version, served first;
    the steps of a version without an adapter count as ``no_adapter`` in ``counters``.
    """
    import torch

    parts, batch = [], []
    counters = {} if counters is None else counters

    def flush():
        if switch is not None and not switch.use(batch[0].version):
            counters['no_adapter'] = counters.get('no_adapter', 0) + len(batch)
            batch.clear()
            return
        images = [s.image if preprocess is None else preprocess(s.image) for s in batch]
        if len({image.shape for image in images}) == 1:
            images = np.stack(images)  # else a list: the policy resizes each
        instructions = [s.instruction for s in batch]
        tokens = np.stack([np.asarray(s.tokens, np.int64) for s in batch])  # [B, 7]
        with torch.no_grad():
            logps, _ = policy.log_probs(images, instructions, tokens)  # [B, 7]
            greedy = policy.sample(images, instructions, greedy=True)
        parts.append(check_report.Steps(
            recorded_logps=np.stack([np.asarray(s.logps, np.float64) for s in batch]),
            rescored_logps=logps.float().cpu().numpy().astype(np.float64),
            recorded_tokens=tokens,
            greedy_tokens=greedy.action_tokens.cpu().numpy().astype(np.int64),
            recorded_actions=np.stack([np.asarray(s.action, np.float64) for s in batch]),
            greedy_actions=np.asarray(greedy.actions, np.float64),
            adapter_versions=np.array([s.version for s in batch], np.int64),
            task_ids=np.array([s.task for s in batch], np.int64),
            indices=np.array([s.index for s in batch], np.int64),
            stamps=np.array([s.stamp for s in batch], np.int64),
            where=np.array([s.where for s in batch], object)))
        batch.clear()

    for step in steps:
        if batch and switch is not None and step.version != batch[0].version:
            flush()
        batch.append(step)
        if len(batch) == batch_size:
            flush()
    if batch:
        flush()
    return check_report.Steps.concatenate(parts)


def add_arguments(parser):
    """Add the arguments of ``tgrpo_replay check`` to ``parser``."""
    parser.add_argument('bag', help='rosbag2 directory (or one .mcap file)')
    parser.add_argument('--model', required=True, help='policy checkpoint directory')
    parser.add_argument('--adapter', help='adapter directory (LoRA layout and trainable mode '
                        'are read from it); default: the bare base')
    parser.add_argument('--adapter-version', type=int, default=0,
                        help='version label of --adapter (report only)')
    parser.add_argument('--adapter-root', help="a learner's adapter directory "
                        '(v00000, v00001, ...): each step is re-scored with the adapter '
                        'version that produced it')
    parser.add_argument('--trainable', help="override the adapter's trainable mode")
    parser.add_argument('--temperature', type=float, default=1.0,
                        help='temperature the recording was sampled with (default 1.0)')
    parser.add_argument('--device', default='cpu', help="torch device (default 'cpu')")
    parser.add_argument('--dtype', default='float32', help='weights dtype (default float32)')
    parser.add_argument('--num-threads', type=int, default=1, help='torch CPU threads')
    parser.add_argument('--batch-size', type=int, default=8, help='steps per policy call')
    parser.add_argument('--preprocess', default='none',
                        help='image preprocessing the server applied to the recorded images '
                        "('none': as recorded, e.g. the policy view of the bridges; else a "
                        'name of policy.contract.get_preprocessor, e.g. camera)')
    parser.add_argument('--source', choices=SOURCES, default='auto',
                        help='episodes, camera/action streams, or auto (episodes if the bag '
                        'has any, else streams)')
    parser.add_argument('--episode-topic', default=topics.EPISODE_TOPIC,
                        help=f'episode topic (default {topics.EPISODE_TOPIC})')
    parser.add_argument('--clients', nargs='+', metavar='NS',
                        help='client namespaces of the streams (default: every namespace '
                        'with camera/image and action topics)')
    parser.add_argument('--instruction', metavar='TEXT',
                        help='the instruction of the streams, for a bag that recorded none '
                        '(a graph that took it from a parameter); replies whose CRC-32 is '
                        "another instruction's still count as unknown_instruction")
    parser.add_argument('--logp-tol', type=float, default=1e-4,
                        help='max |log-prob difference| of any step and dimension, nats '
                        '(default 1e-4; negative: not checked)')
    parser.add_argument('--min-agreement', type=float,
                        help='min greedy agreement over all dimensions (default: not checked)')
    parser.add_argument('--action-tol', type=float,
                        help='max |greedy action - recorded action| of any step and dimension '
                        '(default: not checked; the mean is reported beside it)')
    parser.add_argument('--max-skipped', type=float, default=0.0, metavar='FRACTION',
                        help='largest share of recorded frames that may go un-re-scored '
                        '(no reply, unknown instruction, decode error, outside the window, '
                        'no adapter) before the check exits 4 (default 0)')
    parser.add_argument('--report', help='JSON report path (default <bag>.check.json; the '
                        'PNG goes beside it)')


def run(args, out=None, err=None):
    """Run a check from parsed arguments; return the exit status (EXIT_*)."""
    out, err = out or sys.stdout, err or sys.stderr
    try:
        tolerances = check_report.Tolerances(
            logp_max_abs_diff=None if args.logp_tol < 0 else args.logp_tol,
            min_greedy_agreement=args.min_agreement, action_max_abs_diff=args.action_tol)
        if not 0 <= args.max_skipped <= 1:
            raise ValueError(f'--max-skipped ({args.max_skipped}) must be a fraction in [0, 1]')
        if args.batch_size < 1:
            raise ValueError(f'--batch-size ({args.batch_size}) must be >= 1')
        if args.adapter and args.adapter_root:
            raise ValueError('give --adapter or --adapter-root, not both')
        preprocess = preprocessor(args.preprocess)
        bag = bag_io.Bag(args.bag)
        topics_in_bag = bag.topics
    except ValueError as error:
        print(f'tgrpo_replay check: {error}', file=err)
        return EXIT_ERROR
    source = args.source
    if source == 'auto':
        info = topics_in_bag.get(args.episode_topic)
        source = 'episodes' if info is not None and info.count else 'streams'
    clients = args.clients or stream_clients(bag)
    if source == 'streams' and not clients:
        for problem in bag.problems:
            print(f'tgrpo_replay check: {problem}', file=err)
        print(f'tgrpo_replay check: bag {args.bag} has neither episodes on '
              f'{args.episode_topic} nor a client with <ns>/{topics.CAMERA_TOPIC} and '
              f'<ns>/{topics.ACTION_TOPIC} topics; its topics: {sorted(topics_in_bag)}',
              file=err)
        return EXIT_ERROR
    try:
        policy = load_policy_for_check(args)
    except Exception as error:  # noqa: B902 - AdapterError, OSError, ValueError: name it
        print(f'tgrpo_replay check: cannot load the policy: {type(error).__name__}: {error}',
              file=err)
        return EXIT_ERROR
    episodes, counters, notes = [], {}, []
    if source == 'episodes':
        steps_in = episode_steps(bag, args.episode_topic, episodes, counters)
    else:
        steps_in = stream_steps(bag, clients, counters, args.instruction, notes)
    switch = AdapterSwitch(policy, args.adapter_root, bag.problems) if args.adapter_root \
        else None
    steps = rescore(policy, steps_in, args.batch_size, switch, preprocess, counters)
    if not len(steps):
        for problem in bag.problems + notes:
            print(f'tgrpo_replay check: {problem}', file=err)
        sentence = check_report.accounting(counters, 0, args.max_skipped)['sentence']
        print(f'tgrpo_replay check: no step to re-score in {args.bag} (source {source}'
              + (f', clients {clients}' if source == 'streams' else '') + f'): {sentence}',
              file=err)
        return EXIT_ERROR
    report = check_report.build_report(
        steps, episodes, tolerances, bag.problems, bag=str(args.bag), source=source,
        model=args.model, adapter=args.adapter or args.adapter_root or '',
        temperature=args.temperature, preprocess=args.preprocess,
        clients=clients if source == 'streams' else [],
        pairing=counters if source == 'streams' else None,
        accounting=check_report.accounting(counters, len(steps), args.max_skipped),
        notes=notes)
    path = args.report or (str(args.bag).rstrip('/') + '.check.json')
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, 'w') as stream:
        json.dump(report, stream, indent=2)
    png = check_report.plot_report(report, steps, os.path.splitext(path)[0] + '.png')
    for line in check_report.summary_lines(report):
        print(line, file=out)
    for problem in bag.problems:
        print(f'bag problem: {problem}', file=err)
    for note in notes:
        print(f'note: {note}', file=out)
    for failure in report['failures']:
        print(f'FAILED: {failure}', file=err)
    skipped = report['accounting']
    if not skipped['within_limit']:
        print(f'INCOMPLETE: {skipped["sentence"]}', file=err)
    print(f'report: {path}, plot: {png}', file=out)
    if report['failures']:
        return EXIT_TOLERANCE
    return EXIT_BAG_PROBLEMS if bag.problems or not skipped['within_limit'] else EXIT_OK
