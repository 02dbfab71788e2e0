"""
Encodings of tgrpo_ros data into standard ROS 2 messages (see docs/messages.md).

Only standard interfaces are used (sensor_msgs, std_msgs), so the package stays
a single ament_python package:

* image: ``sensor_msgs/Image`` rgb8 or bgr8  <->  uint8 numpy [H, W, 3] RGB
* action reply: ``sensor_msgs/JointState``  <->  ``ActionReply``
* assignment: ``std_msgs/String`` holding JSON  <->  ``Assignment``
* episode: ``std_msgs/UInt8MultiArray`` holding an uncompressed ``.npz``  <->  ``Episode``
* adapter: ``std_msgs/UInt8MultiArray`` holding safetensors bytes + a JSON header

No torch here. Message classes are imported inside the functions that build
them. The assignment's JSON form and the episode's ``.npz`` codec are in
``tgrpo_ros.episode`` (no ROS).
"""

import array
from dataclasses import dataclass
import json
import zlib

import numpy as np

from tgrpo_ros.episode import (ACTION_DIM, assignment_from_json, assignment_to_json,
                               episode_from_bytes, EPISODE_SCHEMA, episode_to_bytes)
from tgrpo_ros.policy.adapters import ADAPTER_WIRE_SCHEMA

# ---------------------------------------------------------------------------- images

IMAGE_ENCODINGS = ('rgb8', 'bgr8')  # 3 channels, 1 byte each


def image_to_numpy(msg):
    """
    Return the image of ``msg`` (sensor_msgs/Image) as a new uint8 array [H, W, 3], RGB.

    bgr8 images are converted to RGB. Row padding (step > 3 * width) is allowed.
    Raises ValueError naming the problem for an unknown encoding, a step smaller
    than a row, or data whose length disagrees with step * height.
    """
    encoding = msg.encoding.lower()
    if encoding not in IMAGE_ENCODINGS:
        raise ValueError(f"unsupported image encoding '{msg.encoding}'; "
                         f'supported: {", ".join(IMAGE_ENCODINGS)}')
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if height <= 0 or width <= 0:
        raise ValueError(f'image has an empty size: {width}x{height} (width x height) px')
    row = width * 3  # bytes
    if step < row:
        raise ValueError(f'image step {step} B is smaller than one row of {width} px x 3 B '
                         f'= {row} B ({encoding})')
    size = len(msg.data)
    if size != step * height:
        what = 'truncated' if size < step * height else 'too long'
        raise ValueError(f'image data is {what}: {size} B, expected step {step} B x height '
                         f'{height} = {step * height} B')
    flat = np.frombuffer(msg.data, dtype=np.uint8)
    rows = flat.reshape(height, step)[:, :row].reshape(height, width, 3)
    if encoding == 'bgr8':
        rows = rows[:, :, ::-1]
    return np.ascontiguousarray(rows)


def numpy_to_image(image, encoding='rgb8', stamp=None, frame_id=''):
    """
    Return a sensor_msgs/Image of an RGB uint8 array [H, W, 3].

    ``encoding`` is the wire encoding: 'rgb8' sends the array as is, 'bgr8'
    reverses the channels. ``stamp`` is a builtin_interfaces/Time or an int (ns).
    """
    from sensor_msgs.msg import Image

    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f'image must be uint8 [H, W, 3], got {image.dtype} {image.shape}')
    if encoding not in IMAGE_ENCODINGS:
        raise ValueError(f"unsupported image encoding '{encoding}'; "
                         f'supported: {", ".join(IMAGE_ENCODINGS)}')
    if encoding == 'bgr8':
        image = image[:, :, ::-1]
    image = np.ascontiguousarray(image)
    msg = Image()
    if stamp is not None:
        msg.header.stamp = ns_to_stamp(stamp) if isinstance(stamp, (int, np.integer)) else stamp
    msg.header.frame_id = frame_id
    msg.height, msg.width = image.shape[0], image.shape[1]
    msg.encoding = encoding
    msg.is_bigendian = 0
    msg.step = image.shape[1] * 3
    msg.data = _byte_array(image)
    return msg


# ---------------------------------------------------------------------------- stamps

def stamp_to_ns(stamp):
    """Return a builtin_interfaces/Time as integer nanoseconds."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def checked_stamp_ns(stamp, what='message'):
    """Return a header stamp as ns; ValueError for a negative one or nanosec >= 1e9."""
    if int(stamp.sec) < 0 or not 0 <= int(stamp.nanosec) < 1_000_000_000:
        raise ValueError(f'{what} stamp must have sec >= 0 and nanosec in [0, 1e9), got sec '
                         f'{stamp.sec} nanosec {stamp.nanosec}')
    return stamp_to_ns(stamp)


def check_numbers(name, values, low, high, integer=False):
    """
    Return ``values`` as float64 [N]; ValueError unless each is finite and in [low, high].

    With ``integer`` each must also be a whole number. Used by every decoder
    on numbers from the wire, so that a hostile value (NaN, inf, 1e300) is
    refused with one clear ValueError instead of an OverflowError deeper in.
    """
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(values)):
        raise ValueError(f'non-finite {name} {values.tolist()}')
    if np.any(values < low) or np.any(values > high):
        raise ValueError(f'{name} {values.tolist()} outside [{low:g}, {high:g}]')
    if integer and not np.array_equal(np.floor(values), values):
        raise ValueError(f'{name} must be integers, got {values.tolist()}')
    return values


def ns_to_stamp(nanoseconds):
    """Return integer nanoseconds as a builtin_interfaces/Time."""
    from builtin_interfaces.msg import Time

    nanoseconds = int(nanoseconds)
    if nanoseconds < 0:
        raise ValueError(f'stamp must be >= 0 ns, got {nanoseconds}')
    return Time(sec=nanoseconds // 1_000_000_000, nanosec=nanoseconds % 1_000_000_000)


def instruction_crc32(instruction):
    """Return the CRC-32 of the UTF-8 instruction (an int in [0, 2**32))."""
    return zlib.crc32(instruction.encode('utf-8')) & 0xFFFFFFFF


# ---------------------------------------------------------------------------- actions

# JointState layout of an action reply. The first 7 names are the action
# dimensions; a chunk of K > 1 actions continues with 7 names per further action
# ('dx_1' ... 'gripper_1', 'dx_2' ...); the extra entries carry per-reply metadata
# in `position` (their `velocity` and `effort` are 0). All values are exact in float64.
ACTION_NAMES = ('dx', 'dy', 'dz', 'droll', 'dpitch', 'dyaw', 'gripper')
ACTION_EXTRA_NAMES = (
    'adapter_version',    # int, version of the adapter that produced the action
    'instruction_crc32',  # int, CRC-32 of the instruction the policy was given
    'batch_size',         # int, size of the policy batch this reply was computed in
    'chunk_size',         # int K >= 1, actions in this reply, executed in order
    'action_period',      # s, the policy's control period per action (0: not known)
)
# Replies recorded before action chunks had only the first three extras (K = 1).
LEGACY_EXTRA_COUNT = 3
ACTION_JOINT_NAMES = ACTION_NAMES + ACTION_EXTRA_NAMES
# The ranges decode_action accepts (anything else is a ValueError naming it).
ACTION_ABS_MAX = 1e3         # un-normalised policy actions are O(1) (LIBERO's are in [-1, 1])
LOG_PROB_MIN = -1e6          # float32 log-probs of a sampled token lie far above this
TOKEN_ID_MAX = 2 ** 31 - 1   # token ids are int32 in every tokenizer here
PAD_ABS_MAX = 1e9            # the unused velocity / effort entries (written as 0)
ACTION_EXTRA_RANGES = {      # inclusive ranges of the extra entries (integers but these:)
    'adapter_version': (-1, 2 ** 31 - 1),   # -1: the base policy, before any adapter
    'instruction_crc32': (0, 2 ** 32 - 1),
    'batch_size': (1, 2 ** 31 - 1),
    'chunk_size': (1, 2 ** 31 - 1),
    'action_period': (0.0, float('inf')),   # s, finite; 0: the policy does not say
}
ACTION_EXTRA_FLOATS = ('action_period',)  # the extras that need not be integers


def chunk_joint_names(chunk_size):
    """Return the JointState names of a reply with ``chunk_size`` actions."""
    names = list(ACTION_NAMES)
    for k in range(1, int(chunk_size)):
        names += [f'{name}_{k}' for name in ACTION_NAMES]
    return tuple(names) + ACTION_EXTRA_NAMES


@dataclass
class ActionReply:
    """One decoded action reply of the policy server."""

    stamp_ns: int                # stamp of the image it answers, ns
    frame_id: str                # frame of the image it answers
    action: np.ndarray           # [7] float64, un-normalised, policy convention (first of chunk)
    action_tokens: np.ndarray    # [7] int64, ids in 31744..31999 (first action)
    log_probs: np.ndarray        # [7] float64, behaviour log-probs (float32 values)
    adapter_version: int
    instruction_crc32: int
    batch_size: int
    actions: np.ndarray = None   # [K, 7] float64, the whole chunk (row 0 is ``action``)
    action_period: float = 0.0   # s per action, from the policy; 0: not known

    def __post_init__(self):
        """Make a reply built from one action a chunk of one."""
        if self.actions is None:
            self.actions = np.asarray(self.action, dtype=np.float64).reshape(1, -1)

    @property
    def chunk_size(self):
        """Return K, the number of actions in the reply."""
        return len(self.actions)


def encode_action(header, action, action_tokens, log_probs, adapter_version, instruction,
                  batch_size=1, action_period=0.0):
    """
    Return the sensor_msgs/JointState reply to the image whose ``header`` is given.

    ``action``, ``action_tokens`` and ``log_probs`` are [7] (one action) or [K, 7]
    (a chunk of K actions, executed in order). position = the K x 7 continuous
    actions then the extra entries (ACTION_EXTRA_NAMES: ..., chunk_size K,
    ``action_period`` in s, 0 when the policy does not say); velocity = the K x 7
    behaviour log-probs then zeros; effort = the K x 7 action token ids then zeros.
    """
    from sensor_msgs.msg import JointState

    action = _chunk('action', action, np.float64)
    chunk_size = len(action) // ACTION_DIM
    tokens = _chunk('action_tokens', action_tokens, np.int64, chunk_size)
    logps = _chunk('log_probs', log_probs, np.float64, chunk_size)
    action_period = float(action_period)
    if not (np.isfinite(action_period) and action_period >= 0.0):
        raise ValueError(f'action_period must be >= 0 s, got {action_period}')
    extras = [float(int(adapter_version)), float(instruction_crc32(instruction)),
              float(int(batch_size)), float(chunk_size), action_period]
    pad = [0.0] * len(ACTION_EXTRA_NAMES)
    msg = JointState()
    msg.header.stamp = header.stamp
    msg.header.frame_id = header.frame_id
    msg.name = list(chunk_joint_names(chunk_size))
    msg.position = array.array('d', action.tolist() + extras)
    msg.velocity = array.array('d', logps.tolist() + pad)
    msg.effort = array.array('d', tokens.astype(np.float64).tolist() + pad)
    return msg


def decode_action(msg):
    """
    Return the ActionReply in a sensor_msgs/JointState; ValueError if malformed.

    Chunks of K actions and the layout recorded before chunks (K = 1, three
    extras, no action_period) are both accepted.
    """
    names = tuple(msg.name)
    legacy = ACTION_NAMES + ACTION_EXTRA_NAMES[:LEGACY_EXTRA_COUNT]
    chunk_size = (len(names) - len(ACTION_EXTRA_NAMES)) // ACTION_DIM
    if names == legacy:
        chunk_size, extra_names = 1, ACTION_EXTRA_NAMES[:LEGACY_EXTRA_COUNT]
    elif chunk_size >= 1 and names == chunk_joint_names(chunk_size):
        extra_names = ACTION_EXTRA_NAMES
    else:
        raise ValueError(f'action reply has joint names {list(names)[:12]}'
                         f"{'...' if len(names) > 12 else ''}; expected "
                         f'{list(ACTION_JOINT_NAMES)} (a chunk of K actions: 7 names per '
                         f"action, 'dx_1' ... before the extras)")
    count = len(names)
    for field_name in ('position', 'velocity', 'effort'):
        got = len(getattr(msg, field_name))
        if got != count:
            raise ValueError(f'action reply {field_name} has {got} entries; expected {count}')
    size = chunk_size * ACTION_DIM
    position = np.asarray(msg.position, dtype=np.float64)
    actions = check_numbers('action', position[:size], -ACTION_ABS_MAX, ACTION_ABS_MAX)
    log_probs = check_numbers('log-probs', msg.velocity[:size], LOG_PROB_MIN, 0.0)
    tokens = check_numbers('action token ids', msg.effort[:size], 0, TOKEN_ID_MAX,
                           integer=True).astype(np.int64)
    for field_name in ('velocity', 'effort'):
        check_numbers(f'{field_name} padding', getattr(msg, field_name)[size:],
                      -PAD_ABS_MAX, PAD_ABS_MAX)
    extras = {}
    for name, value in zip(extra_names, position[size:]):
        integer = name not in ACTION_EXTRA_FLOATS
        number = check_numbers(name, [value], *ACTION_EXTRA_RANGES[name], integer=integer)[0]
        extras[name] = int(number) if integer else float(number)
    if extras.get('chunk_size', 1) != chunk_size:
        raise ValueError(f"action reply says chunk_size {extras['chunk_size']} but carries "
                         f'{chunk_size} actions')
    actions = actions.reshape(chunk_size, ACTION_DIM)
    return ActionReply(
        stamp_ns=checked_stamp_ns(msg.header.stamp, 'action reply'),
        frame_id=msg.header.frame_id, action=actions[0].copy(),
        action_tokens=tokens[:ACTION_DIM], log_probs=log_probs[:ACTION_DIM],
        adapter_version=extras['adapter_version'],
        instruction_crc32=extras['instruction_crc32'], batch_size=extras['batch_size'],
        actions=actions, action_period=extras.get('action_period', 0.0))


def _chunk(name, values, dtype, chunk_size=None):
    """Return [7] or [K, 7] values flattened (K x 7); ValueError naming a bad shape."""
    values = np.asarray(values)
    out = values.reshape(-1).astype(dtype)
    rows = 1 if values.ndim <= 1 else values.shape[0]
    if values.ndim > 2 or out.shape[0] != rows * ACTION_DIM or not rows:
        raise ValueError(f'{name} must have {ACTION_DIM} entries, got {out.shape[0]} (a chunk '
                         f'of K actions: [K, {ACTION_DIM}])')
    if chunk_size is not None and rows != chunk_size:
        raise ValueError(f'{name} has {rows} rows; the action chunk has {chunk_size}')
    return out


# ---------------------------------------------------------------------------- poses

POSITION_ABS_MAX = 1e3  # m: no arm reaches this far from the origin of its frame


def decode_pose(msg):
    """
    Return (stamp ns, frame_id, position [3] m, quaternion xyzw [4]) of a PoseStamped.

    ValueError naming the problem for a bad stamp, a non-finite position or one
    beyond POSITION_ABS_MAX, or a quaternion entry that is non-finite or outside
    [-1, 1].
    """
    p, q = msg.pose.position, msg.pose.orientation
    position = check_numbers('pose position', (p.x, p.y, p.z), -POSITION_ABS_MAX,
                             POSITION_ABS_MAX)
    orientation = check_numbers('pose orientation', (q.x, q.y, q.z, q.w), -1.0 - 1e-6,
                                1.0 + 1e-6)
    return (checked_stamp_ns(msg.header.stamp, 'pose'), msg.header.frame_id, position,
            orientation)


# ---------------------------------------------------------------------------- assignments

def encode_assignment(assignment):
    """Return a std_msgs/String holding the assignment as JSON (with a schema tag)."""
    from std_msgs.msg import String

    return String(data=assignment_to_json(assignment))


def decode_assignment(msg):
    """Return the Assignment in a std_msgs/String (or a JSON str); ValueError if malformed."""
    return assignment_from_json(msg if isinstance(msg, str) else msg.data)


# ---------------------------------------------------------------------------- episodes

def encode_episode(episode):
    """
    Return a std_msgs/UInt8MultiArray whose data is the episode's .npz bytes.

    layout.dim[0] = (label EPISODE_SCHEMA, size = stride = payload bytes).
    """
    from std_msgs.msg import MultiArrayDimension, UInt8MultiArray

    payload = episode_to_bytes(episode)
    msg = UInt8MultiArray()
    msg.layout.dim = [MultiArrayDimension(label=EPISODE_SCHEMA, size=len(payload),
                                          stride=len(payload))]
    msg.layout.data_offset = 0
    msg.data = _byte_array(payload)
    return msg


def decode_episode(msg):
    """
    Return the Episode in a std_msgs/UInt8MultiArray made by encode_episode.

    Also accepts the message types that ``rosbags`` deserialises to (same fields).
    Raises ValueError naming the problem for a foreign or damaged message.
    """
    dims = list(msg.layout.dim)
    label = dims[0].label if dims else None
    if label != EPISODE_SCHEMA:
        raise ValueError(f'message is not an encoded episode: layout label {label!r}, '
                         f"expected '{EPISODE_SCHEMA}'")
    data = msg.data
    if len(data) != dims[0].size:
        raise ValueError(f'episode payload is {len(data)} B but its layout says '
                         f'{dims[0].size} B (truncated message?)')
    return episode_from_bytes(memoryview(data).cast('B'))


# ---------------------------------------------------------------------------- adapters

def encode_adapter(header, weights):
    """
    Return a std_msgs/UInt8MultiArray carrying an adapter (``adapters.pack_adapter``).

    data = the safetensors bytes; layout.dim[0] = (label ADAPTER_WIRE_SCHEMA, size =
    stride = data bytes); layout.dim[1].label = the JSON header (version, size,
    sha256, adapter_config).
    """
    from std_msgs.msg import MultiArrayDimension, UInt8MultiArray

    msg = UInt8MultiArray()
    msg.layout.dim = [
        MultiArrayDimension(label=ADAPTER_WIRE_SCHEMA, size=len(weights), stride=len(weights)),
        MultiArrayDimension(label=json.dumps(header, sort_keys=True), size=0, stride=0)]
    msg.layout.data_offset = 0
    msg.data = _byte_array(weights)
    return msg


def decode_adapter(msg):
    """
    Return (header dict, weights) of a message made by encode_adapter.

    Only the framing is checked here (ValueError naming the problem); the payload
    checks (size limit, sha256, pickle, safetensors) are ``adapters.check_adapter_payload``.
    """
    dims = list(msg.layout.dim)
    label = dims[0].label if dims else None
    if label != ADAPTER_WIRE_SCHEMA or len(dims) != 2:
        raise ValueError(f'message is not an encoded adapter: layout label {label!r} with '
                         f"{len(dims)} dims, expected '{ADAPTER_WIRE_SCHEMA}' and 2 dims")
    try:
        header = json.loads(dims[1].label)
    except ValueError as error:
        raise ValueError(f'adapter header is not JSON ({error}): {dims[1].label[:200]!r}')
    if not isinstance(header, dict):
        raise ValueError(f'adapter header must be a JSON object, got {dims[1].label[:200]!r}')
    return header, memoryview(msg.data).cast('B')


def _byte_array(buffer):
    """Return a bytes-like object as array.array('B') in one copy (the fast setter path)."""
    out = array.array('B')
    out.frombytes(memoryview(buffer).cast('B') if not isinstance(buffer, bytes) else buffer)
    return out
