"""
The episode record and what travels with it: one home for rollout data.

* ``Episode``: one finished rollout, what a sim bridge publishes and the learner
  trains on; ``EpisodeBuilder`` collects one step at a time (the sim bridge and the
  in-process group rollout both use it).
* ``Assignment``: what the learner asks a sim bridge to run next.
* The episode codec: an uncompressed ``.npz`` (no pickles), used on the wire inside
  a ``std_msgs/UInt8MultiArray``, in spool files and in bags; and the assignment's
  JSON form.

Pure numpy and the standard library: no ROS and no torch, so every layer can share
it. The ROS message wrappers live in ``tgrpo_ros.nodes.messages``.
"""

from dataclasses import asdict, dataclass, field, fields, MISSING
import io
import json
import math
import zipfile

import numpy as np

from tgrpo_ros.policy.contract import ACTION_DIM, ACTION_TOKEN_MAX, ACTION_TOKEN_MIN


@dataclass
class Episode:
    """
    Per-step arrays of one episode plus its identity.

    Arrays share the first axis T (the number of policy steps, wait steps excluded).
    """

    images: np.ndarray            # [T, 224, 224, 3] uint8, exactly what the policy saw
    action_tokens: np.ndarray     # [T, 7] int64, ids in 31744..31999
    behaviour_logps: np.ndarray   # [T, 7] float32, log-probs under the sampling policy
    actions: np.ndarray           # [T, 7] float32, un-normalised, policy convention
    rewards: np.ndarray           # [T] float32, dense stage reward per step
    success: bool
    task_id: int
    init_state_id: int
    group_id: int
    adapter_version: int
    instruction: str
    suite: str = 'libero_object'
    bridge: str = ''              # namespace of the sim bridge that ran it
    episode_id: str = ''          # unique, e.g. '<bridge>/<group_id>'; used to drop duplicates
    extras: dict = field(default_factory=dict)  # small JSON-able diagnostics

    def __post_init__(self):
        """Check that the per-step arrays agree in length and shape."""
        length = len(self.rewards)
        shapes = {
            'images': (self.images.shape, (length, None, None, 3)),
            'action_tokens': (self.action_tokens.shape, (length, ACTION_DIM)),
            'behaviour_logps': (self.behaviour_logps.shape, (length, ACTION_DIM)),
            'actions': (self.actions.shape, (length, ACTION_DIM)),
        }
        for name, (got, want) in shapes.items():
            if len(got) != len(want) or any(w is not None and g != w for g, w in zip(got, want)):
                raise ValueError(f'episode field {name} has shape {got}; expected '
                                 f"{tuple('*' if w is None else w for w in want)}")
        if self.images.dtype != np.uint8:
            raise ValueError(f'episode images must be uint8, got {self.images.dtype}')

    @property
    def length(self):
        """Return the number of policy steps."""
        return len(self.rewards)

    @property
    def episode_return(self):
        """Return the sum of the dense rewards."""
        return float(np.sum(self.rewards))


class EpisodeBuilder:
    """
    Collect one episode step by step, then build the Episode.

    Identity fields (task, init state, group, instruction, ...) are given up front;
    ``add_step`` records what the policy saw and did and what the env answered, with
    the adapter version that produced the action; per-step extras (stamps, batch
    sizes) go in ``step_extras`` lists and end up in ``Episode.extras``.
    """

    def __init__(self, *, task_id, init_state_id, group_id, instruction,
                 suite='libero_object', bridge='', episode_id='', image_shape=(224, 224, 3)):
        """Start an empty episode with its identity."""
        self.identity = {'task_id': int(task_id), 'init_state_id': int(init_state_id),
                         'group_id': int(group_id), 'instruction': instruction,
                         'suite': suite, 'bridge': bridge, 'episode_id': episode_id}
        self.image_shape = tuple(image_shape)
        self.images, self.action_tokens, self.logps, self.actions = [], [], [], []
        self.rewards, self.versions = [], []
        self.step_extras = {}
        self.success = False

    @property
    def steps(self):
        """Return the number of policy steps recorded so far."""
        return len(self.rewards)

    def add_step(self, image, action_tokens, log_probs, action, reward, success,
                 adapter_version, **step_extras):
        """Record one policy step: the image before it, the sampled action, the env's answer."""
        self.images.append(np.asarray(image, dtype=np.uint8))
        self.action_tokens.append(np.asarray(action_tokens, dtype=np.int64).reshape(ACTION_DIM))
        self.logps.append(np.asarray(log_probs, dtype=np.float32).reshape(ACTION_DIM))
        self.actions.append(np.asarray(action, dtype=np.float32).reshape(ACTION_DIM))
        self.rewards.append(np.float32(reward))
        self.versions.append(int(adapter_version))
        self.success = self.success or bool(success)
        for name, value in step_extras.items():
            self.step_extras.setdefault(name, []).append(value)

    def build(self, extras=None):
        """
        Return the Episode of the steps so far (zero steps give an empty episode).

        ``adapter_version`` is the oldest version that acted; the per-step versions
        are kept in ``extras['step_adapter_versions']``.
        """
        steps = self.steps
        images = (np.stack(self.images) if steps
                  else np.zeros((0,) + self.image_shape, np.uint8))
        all_extras = {'step_adapter_versions': list(self.versions), **self.step_extras,
                      **(extras or {})}
        return Episode(
            images=images,
            action_tokens=np.array(self.action_tokens, np.int64).reshape(steps, ACTION_DIM),
            behaviour_logps=np.array(self.logps, np.float32).reshape(steps, ACTION_DIM),
            actions=np.array(self.actions, np.float32).reshape(steps, ACTION_DIM),
            rewards=np.array(self.rewards, np.float32), success=self.success,
            adapter_version=min(self.versions) if self.versions else -1,
            extras=all_extras, **self.identity)


# ---------------------------------------------------------------------------- assignments

ASSIGNMENT_SCHEMA = 'tgrpo_assignment/1'
ASSIGNMENT_INT_MAX = 2 ** 63 - 1  # int64: larger JSON integers are refused


@dataclass(frozen=True)
class Assignment:
    """
    What the learner asks one sim bridge to run next.

    Every bridge of a group gets the same task, init state and group id; the
    episode id names the bridge's own trajectory. An episode ends at the first
    success (LIBERO's env is done then) or at the step limit.
    """

    group_id: int            # groups are numbered by the learner; a bridge runs each once
    task_id: int             # task index in the suite
    init_state_id: int       # index of the fixed initial state of the task
    seed: int = 0            # seed of the env for this episode
    max_steps: int = 0       # policy steps at most; 0: the bridge's own limit
    suite: str = 'libero_object'
    episode_id: str = ''     # '' -> the bridge uses '<namespace>/<group_id>'

    def __post_init__(self):
        """Check types and ranges, naming the bad value."""
        for name in ('group_id', 'task_id', 'init_state_id', 'seed', 'max_steps'):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f'assignment {name} must be an int, got {value!r}')
            if not 0 <= value <= ASSIGNMENT_INT_MAX:
                raise ValueError(f'assignment {name} must be in [0, {ASSIGNMENT_INT_MAX}], '
                                 f'got {value}')
        for name in ('suite', 'episode_id'):
            if not isinstance(getattr(self, name), str):
                raise ValueError(f'assignment {name} must be a str, got '
                                 f'{getattr(self, name)!r}')


def queue_assignment(queue, running, assignment):
    """
    Add ``assignment`` to a sim bridge's ``queue`` (a list or deque); return what was done.

    ``running`` is the assignment of the episode in progress (None when idle). The
    learner re-sends a group's assignment when the group is late, with a fresh
    episode id; the bridge then must not run the group twice:

    * ``'running'``: the group is the one in progress, whose episode is still to
      come: ignored;
    * ``'replaced'``: the group was queued: the newer assignment takes its place;
    * ``'queued'``: appended.
    """
    if running is not None and running.group_id == assignment.group_id:
        return 'running'
    for index, queued in enumerate(queue):
        if queued.group_id == assignment.group_id:
            queue[index] = assignment
            return 'replaced'
    queue.append(assignment)
    return 'queued'


def assignment_to_json(assignment):
    """Return the assignment as JSON text with its schema tag."""
    return json.dumps({'schema': ASSIGNMENT_SCHEMA, **asdict(assignment)}, sort_keys=True)


def _tagged_json_object(text, what, schema):
    """Return the JSON object in ``text`` less its ``schema`` tag; ValueError naming ``what``."""
    try:
        values = json.loads(text)
    except ValueError as error:  # JSONDecodeError
        raise ValueError(f'{what} is not JSON ({error}): {text[:200]!r}') from None
    if not isinstance(values, dict):
        raise ValueError(f'{what} must be a JSON object, got {type(values).__name__}: '
                         f'{text[:200]!r}')
    tag = values.pop('schema', None)
    if tag != schema:
        raise ValueError(f"{what} schema is {tag!r}; expected '{schema}'")
    return values


def assignment_from_json(text):
    """Return the Assignment in JSON ``text``; ValueError naming what is malformed."""
    values = _tagged_json_object(text, 'assignment', ASSIGNMENT_SCHEMA)
    known = [f.name for f in fields(Assignment)]
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ValueError(f'unknown assignment keys {unknown}; valid keys: {known}')
    try:
        return Assignment(**values)
    except TypeError as error:  # a required key is missing
        raise ValueError(f'incomplete assignment ({error}); keys: {known}') from None


# ---------------------------------------------------------------------------- episodes

EPISODE_SCHEMA = 'tgrpo_episode/npz/1'  # schema tag in the metadata and on the wire
# Per-step arrays stored in the .npz, with the dtype each must have.
EPISODE_ARRAYS = {
    'images': np.uint8,
    'action_tokens': np.int64,
    'behaviour_logps': np.float32,
    'actions': np.float32,
    'rewards': np.float32,
}
LOGP_TOLERANCE = 1e-3  # a log-probability is <= 0; float rounding stays far below this
_META_KEY = 'metadata_json'  # uint8 array holding UTF-8 JSON of the scalar fields
_META_FIELDS = ('success', 'task_id', 'init_state_id', 'group_id', 'adapter_version',
                'instruction', 'suite', 'bridge', 'episode_id', 'extras')
# JSON type of each metadata field read back (bool is checked apart: it is an int too).
_META_TYPES = {'success': bool, 'task_id': int, 'init_state_id': int, 'group_id': int,
               'adapter_version': int, 'instruction': str, 'suite': str, 'bridge': str,
               'episode_id': str, 'extras': dict}


def episode_to_bytes(episode):
    """Return the episode as the bytes of an uncompressed .npz (no pickles)."""
    arrays = {}
    for name, dtype in EPISODE_ARRAYS.items():
        value = getattr(episode, name)
        if value.dtype != dtype:
            raise ValueError(f'episode {name} must be {np.dtype(dtype).name} to encode '
                             f'losslessly, got {value.dtype}')
        arrays[name] = value
    metadata = {'schema': EPISODE_SCHEMA}
    for name in _META_FIELDS:
        value = getattr(episode, name)
        metadata[name] = bool(value) if name == 'success' else value
    text = json.dumps(metadata, sort_keys=True)
    arrays[_META_KEY] = np.frombuffer(text.encode('utf-8'), dtype=np.uint8)
    stream = io.BytesIO()
    np.savez(stream, **arrays)
    return stream.getbuffer()


def episode_from_bytes(data):
    """Return the Episode stored by episode_to_bytes; ValueError if not a valid episode."""
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as archive:
            contents = {name: archive[name] for name in archive.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, KeyError) as error:
        raise ValueError(f'episode payload of {len(data)} B is not a valid .npz: '
                         f'{error}') from None
    missing = sorted((set(EPISODE_ARRAYS) | {_META_KEY}) - set(contents))
    if missing:
        raise ValueError(f'episode payload lacks arrays {missing}; has {sorted(contents)}')
    try:
        text = contents.pop(_META_KEY).tobytes().decode('utf-8')
    except UnicodeDecodeError as error:
        raise ValueError(f'episode metadata is not UTF-8 text: {error}') from None
    metadata = _tagged_json_object(text, 'episode metadata', EPISODE_SCHEMA)
    for name, dtype in EPISODE_ARRAYS.items():
        if contents[name].dtype != dtype:
            raise ValueError(f'episode {name} has dtype {contents[name].dtype}; expected '
                             f'{np.dtype(dtype).name}')
    if contents['rewards'].ndim != 1:
        raise ValueError(f"episode rewards must be [T], got shape {contents['rewards'].shape}")
    unknown = sorted(set(metadata) - set(_META_FIELDS))
    if unknown:
        raise ValueError(f'unknown episode metadata keys {unknown}; valid: {list(_META_FIELDS)}')
    required = [f.name for f in fields(Episode) if f.name in _META_FIELDS
                and f.default is MISSING and f.default_factory is MISSING]
    missing = [name for name in required if name not in metadata]
    if missing:
        raise ValueError(f'episode metadata lacks {missing}')
    for name, value in metadata.items():
        kind = _META_TYPES[name]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ValueError(f'episode {name} must be of type {kind.__name__}, got {value!r:.100}')
    return Episode(**{name: contents[name] for name in EPISODE_ARRAYS}, **metadata)


def episode_error(episode):
    """
    Return why ``episode`` cannot be trained on as data ('' when it can).

    Checks what the shapes do not: action token ids in the action range, finite
    behaviour log-probs (<= 0, up to LOGP_TOLERANCE), actions and rewards, and one
    adapter version per step.
    A NaN reward or an out-of-range token would fail (or poison) a TGRPO update.
    """
    tokens = episode.action_tokens
    if tokens.size and (tokens.min() < ACTION_TOKEN_MIN or tokens.max() > ACTION_TOKEN_MAX):
        bad = tokens[(tokens < ACTION_TOKEN_MIN) | (tokens > ACTION_TOKEN_MAX)]
        return (f'action tokens outside {ACTION_TOKEN_MIN}..{ACTION_TOKEN_MAX}: '
                f'{bad[:7].tolist()}')
    for name in ('behaviour_logps', 'actions', 'rewards'):
        values = getattr(episode, name)
        if not np.all(np.isfinite(values)):
            steps = np.flatnonzero(~np.isfinite(values.reshape(len(values), -1)).all(axis=1))
            return f'non-finite {name} at steps {steps[:10].tolist()}'
    if np.any(episode.behaviour_logps > LOGP_TOLERANCE):
        return f'behaviour log-probs above 0 (max {float(episode.behaviour_logps.max())})'
    versions = episode.extras.get('step_adapter_versions')
    if versions is not None and (
            not isinstance(versions, list) or len(versions) != episode.length
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in versions)):
        return (f"extras['step_adapter_versions'] must list one int per step "
                f'({episode.length}), got {versions!r:.100}')
    return ''


def episodes_equal(first, second):
    """Return True when two episodes hold bit-identical arrays and equal metadata."""
    for name in EPISODE_ARRAYS:
        a, b = getattr(first, name), getattr(second, name)
        if a.dtype != b.dtype or a.shape != b.shape or a.tobytes() != b.tobytes():
            return False
    for name in _META_FIELDS:
        a, b = getattr(first, name), getattr(second, name)
        if not _json_equal(a, b):
            return False
    return True


def _json_equal(a, b):
    # NaN == NaN for the purpose of a lossless round trip.
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)
