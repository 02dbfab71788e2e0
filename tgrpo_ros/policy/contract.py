"""
The OpenVLA input/output contract: prompt, action tokens, un-normalisation, images.

Everything here is pure numpy (plus PIL for resizing) so that nodes can import it
without torch.  Facts: docs/references.md §2 and OpenVLA's
``prismatic/vla/action_tokenizer.py`` / ``experiments/robot/libero`` code.
"""

from dataclasses import dataclass
import math
from typing import Mapping, Sequence

import numpy as np

# Token ids of the Llama-2 vocabulary that OpenVLA uses.
BOS_TOKEN_ID = 1
EOS_TOKEN_ID = 2
EMPTY_PIECE_TOKEN_ID = 29871  # SentencePiece's bare word-boundary piece, appended after 'Out:'
LLAMA_VOCAB_SIZE = 32000  # action ids count down from here
PAD_TOKEN_ID = 32000  # '<PAD>' added on top of the Llama-2 vocabulary
PADDED_VOCAB_SIZE = 32064  # embedding rows: 32001 padded to a multiple of 64

ACTION_DIM = 7  # dx, dy, dz, droll, dpitch, dyaw, gripper
N_ACTION_BINS = 256  # number of bin edges (255 bin centres)
ACTION_TOKEN_MIN = LLAMA_VOCAB_SIZE - N_ACTION_BINS  # 31744
ACTION_TOKEN_MAX = LLAMA_VOCAB_SIZE - 1  # 31999

IMAGE_SIZE = 224  # pixels, both vision backbones
LIBERO_CROP_AREA = 0.9  # fraction of the image area kept by the evaluation centre crop
DINOV2_MEAN = (0.485, 0.456, 0.406)  # ImageNet statistics (timm DINOv2 config)
DINOV2_STD = (0.229, 0.224, 0.225)
SIGLIP_MEAN = (0.5, 0.5, 0.5)  # timm SigLIP config
SIGLIP_STD = (0.5, 0.5, 0.5)


def build_prompt(instruction: str) -> str:
    """Return OpenVLA's prompt for one instruction (lower-cased, as OpenVLA does)."""
    if not isinstance(instruction, str):
        raise TypeError(f'instruction must be a str, got {type(instruction).__name__}')
    return f'In: What action should the robot take to {instruction.lower()}?\nOut:'


def prompt_token_ids(tokenizer, instruction: str) -> list:
    """
    Token ids of the prompt: BOS, the prompt pieces, then 29871 unless already last.

    The tokenizer is called without special tokens and BOS is prepended here, which is
    what a Llama tokenizer with ``add_bos_token=True`` produces.
    """
    ids = tokenizer(build_prompt(instruction), add_special_tokens=False)['input_ids']
    ids = [BOS_TOKEN_ID] + list(ids)
    if ids[-1] != EMPTY_PIECE_TOKEN_ID:
        ids.append(EMPTY_PIECE_TOKEN_ID)
    return ids


def bin_edges() -> np.ndarray:
    """Return the 256 bin edges, uniform on [-1, 1]."""
    return np.linspace(-1.0, 1.0, N_ACTION_BINS)


def bin_centers() -> np.ndarray:
    """Return the 255 bin centres (midpoints of consecutive edges)."""
    edges = bin_edges()
    return (edges[:-1] + edges[1:]) / 2.0


def encode_actions(normalized_actions) -> np.ndarray:
    """
    Map normalised actions in [-1, 1] to token ids 31744..31999 (int64, same shape).

    Values are clipped to [-1, 1]; bin index i = digitize(a, edges) in [1, 256] and the
    token is 32000 - i, so -1 -> 31999 and +1 -> 31744.
    """
    actions = np.asarray(normalized_actions, dtype=np.float64)
    if not np.all(np.isfinite(actions)):
        raise ValueError(f'actions must be finite, got {actions}')
    indices = np.digitize(np.clip(actions, -1.0, 1.0), bin_edges())  # in [1, 256]
    return (LLAMA_VOCAB_SIZE - indices).astype(np.int64)


def decode_action_tokens(token_ids) -> np.ndarray:
    """
    Map token ids back to normalised actions (bin centres), float64, same shape.

    Centre index = clip(32000 - id - 1, 0, 254), as OpenVLA decodes; ids outside
    31744..31999 are rejected rather than silently clipped.
    """
    ids = np.asarray(token_ids)
    if not np.issubdtype(ids.dtype, np.integer):
        raise TypeError(f'token ids must be integers, got dtype {ids.dtype}')
    bad = (ids < ACTION_TOKEN_MIN) | (ids > ACTION_TOKEN_MAX)
    if np.any(bad):
        raise ValueError(
            f'token ids must be action ids in {ACTION_TOKEN_MIN}..{ACTION_TOKEN_MAX}, '
            f'got {ids[bad].tolist()}')
    centre_index = np.clip(LLAMA_VOCAB_SIZE - ids - 1, 0, N_ACTION_BINS - 2)
    return bin_centers()[centre_index]


@dataclass(frozen=True)
class ActionNormStats:
    """Per-dimension action statistics used to un-normalise [-1, 1] actions."""

    q01: tuple  # 1st percentile per dim, policy units (m, rad per step; gripper 0..1)
    q99: tuple  # 99th percentile per dim
    mask: tuple  # True: un-normalise this dim; False: pass through (the gripper)

    def __post_init__(self):
        """Check that the three vectors have ACTION_DIM finite entries with q01 <= q99."""
        for name in ('q01', 'q99', 'mask'):
            value = getattr(self, name)
            if len(value) != ACTION_DIM:
                raise ValueError(
                    f'{name} must have {ACTION_DIM} entries, got {len(value)}: {value}')
        object.__setattr__(self, 'q01', tuple(float(v) for v in self.q01))
        object.__setattr__(self, 'q99', tuple(float(v) for v in self.q99))
        object.__setattr__(self, 'mask', tuple(bool(v) for v in self.mask))
        if not all(math.isfinite(v) for v in self.q01 + self.q99):
            raise ValueError(f'q01/q99 must be finite, got q01={self.q01} q99={self.q99}')
        if any(lo > hi for lo, hi in zip(self.q01, self.q99)):
            raise ValueError(f'q01 must be <= q99 per dim, got q01={self.q01} q99={self.q99}')

    @classmethod
    def from_openvla(cls, stats: Mapping) -> 'ActionNormStats':
        """Build from one entry of OpenVLA's ``norm_stats`` (``{'action': {'q01': ...}}``)."""
        action = stats['action'] if 'action' in stats else stats
        mask = action.get('mask', [True] * (ACTION_DIM - 1) + [False])
        return cls(q01=tuple(action['q01']), q99=tuple(action['q99']), mask=tuple(mask))

    def to_openvla(self) -> dict:
        """Return the ``{'action': {...}}`` layout that OpenVLA checkpoints store."""
        return {'action': {'q01': list(self.q01), 'q99': list(self.q99),
                           'mask': list(self.mask)}}


# LIBERO-Object statistics of openvla/openvla-7b-finetuned-libero-object (docs/references.md §2).
LIBERO_OBJECT_STATS = ActionNormStats(
    q01=(-0.5384, -0.8759, -0.9375, -0.0696, -0.1168, -0.1596, 0.0),
    q99=(0.8464, 0.8438, 0.9375, 0.0814, 0.1489, 0.0868, 1.0),
    mask=(True, True, True, True, True, True, False),
)
DEFAULT_UNNORM_KEY = 'libero_object'


def select_norm_stats(norm_stats: Mapping, unnorm_key: str = None) -> ActionNormStats:
    """
    Pick one suite's statistics from a checkpoint's ``norm_stats`` dict.

    With ``unnorm_key=None`` the checkpoint must hold exactly one entry.  A key
    'libero_object' also matches the older 'libero_object_no_noops'.
    """
    if not norm_stats:
        raise ValueError('the checkpoint has no norm_stats')
    keys = sorted(norm_stats)
    if unnorm_key is None:
        if len(keys) != 1:
            raise ValueError(
                f'the checkpoint has several norm_stats; pass unnorm_key, one of {keys}')
        return ActionNormStats.from_openvla(norm_stats[keys[0]])
    for key in (unnorm_key, unnorm_key + '_no_noops'):
        if key in norm_stats:
            return ActionNormStats.from_openvla(norm_stats[key])
    raise ValueError(f'unknown unnorm_key {unnorm_key!r}; available: {", ".join(keys)}')


def unnormalize_actions(normalized_actions, stats: ActionNormStats = LIBERO_OBJECT_STATS):
    """Un-normalise [..., 7] actions: a = 0.5 (x + 1)(q99 - q01) + q01 where mask is True."""
    x = np.asarray(normalized_actions, dtype=np.float64)
    if x.shape[-1:] != (ACTION_DIM,):
        raise ValueError(f'actions must have shape [..., {ACTION_DIM}], got {x.shape}')
    q01 = np.asarray(stats.q01)
    q99 = np.asarray(stats.q99)
    mask = np.asarray(stats.mask)
    return np.where(mask, 0.5 * (x + 1.0) * (q99 - q01) + q01, x)


def normalize_actions(actions, stats: ActionNormStats = LIBERO_OBJECT_STATS) -> np.ndarray:
    """
    Inverse of ``unnormalize_actions``: x = 2 (a - q01) / (q99 - q01) - 1, clipped to [-1, 1].

    Dims whose mask is False (the gripper) pass through; a dim with q01 == q99 maps to 0.
    This is how demonstration actions become the labels of supervised fine-tuning.
    """
    a = np.asarray(actions, dtype=np.float64)
    if a.shape[-1:] != (ACTION_DIM,):
        raise ValueError(f'actions must have shape [..., {ACTION_DIM}], got {a.shape}')
    q01 = np.asarray(stats.q01)
    q99 = np.asarray(stats.q99)
    span = q99 - q01
    scaled = np.where(span > 0, 2.0 * (a - q01) / np.where(span > 0, span, 1.0) - 1.0, 0.0)
    return np.clip(np.where(np.asarray(stats.mask), scaled, a), -1.0, 1.0)


def libero_gripper(actions) -> np.ndarray:
    """
    Return a copy of [..., 7] policy actions with the gripper in LIBERO's convention.

    Policy gripper g in [0, 1] (1 = open) -> sign(2 g - 1) -> negated, so LIBERO gets
    -1 open and +1 close (OpenVLA's normalize_gripper_action + invert_gripper_action).
    """
    out = np.array(actions, dtype=np.float64, copy=True)
    if out.shape[-1:] != (ACTION_DIM,):
        raise ValueError(f'actions must have shape [..., {ACTION_DIM}], got {out.shape}')
    out[..., -1] = -np.sign(2.0 * out[..., -1] - 1.0)
    return out


def _resize(image: np.ndarray, size: int, resample) -> np.ndarray:
    from PIL import Image
    return np.asarray(Image.fromarray(image).resize((size, size), resample=resample))


def _check_rgb(image) -> np.ndarray:
    img = np.asarray(image)
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise ValueError(f'image must be uint8 [H, W, 3], got {img.dtype} {img.shape}')
    return img


def _resize_and_crop(img: np.ndarray, crop_area: float) -> np.ndarray:
    """Resize to 224 (Lanczos), then resize the centre crop of ``crop_area`` back to 224."""
    from PIL import Image
    if not 0.0 < crop_area <= 1.0:
        raise ValueError(f'crop_area must be in (0, 1], got {crop_area}')
    img = _resize(np.ascontiguousarray(img), IMAGE_SIZE, Image.LANCZOS)
    if crop_area < 1.0:
        side = math.sqrt(crop_area) * IMAGE_SIZE  # pixels
        lo = (IMAGE_SIZE - side) / 2.0
        crop = Image.fromarray(img).resize(
            (IMAGE_SIZE, IMAGE_SIZE), resample=Image.BILINEAR, box=(lo, lo, lo + side, lo + side))
        img = np.asarray(crop)
    return img


def preprocess_libero_image(image, crop_area: float = LIBERO_CROP_AREA) -> np.ndarray:
    """
    Turn a LIBERO agentview frame into the policy's view, uint8 [224, 224, 3].

    Rotate 180 degrees (LIBERO renders upside down), resize to 224 (Lanczos), take the
    centre crop covering ``crop_area`` of the area (side sqrt(crop_area)) and resize it
    back to 224 (bilinear).  OpenVLA's script also JPEG-encodes and uses TF resizing;
    this PIL version differs from it by a few grey levels.
    """
    img = _check_rgb(image)
    return _resize_and_crop(img[::-1, ::-1], crop_area)


def preprocess_camera_image(image, crop_area: float = LIBERO_CROP_AREA) -> np.ndarray:
    """
    Turn a real camera frame of any size into the policy's view, uint8 [224, 224, 3].

    OpenVLA's real-robot preprocessing: the whole frame is resized to 224 x 224
    (aspect ratio not kept, as OpenVLA's deployment does), then the centre crop
    covering ``crop_area`` of the area is resized back to 224. No rotation: the
    camera is expected upright (``preprocess_libero_image`` is this after a 180
    degree rotation).
    """
    return _resize_and_crop(_check_rgb(image), crop_area)


PREPROCESSORS = {'libero': preprocess_libero_image, 'camera': preprocess_camera_image}


def get_preprocessor(name: str):
    """Return the image preprocessing function called ``name`` ('libero' or 'camera')."""
    if name not in PREPROCESSORS:
        raise ValueError(f'unknown image preprocessing {name!r}; available: '
                         f'{", ".join(PREPROCESSORS)}')
    return PREPROCESSORS[name]


def pixel_values_from_images(images: Sequence) -> np.ndarray:
    """
    Stack B RGB uint8 images into OpenVLA's 6-channel input, float32 [B, 6, 224, 224].

    Images of another size are resized to 224 (bicubic, like the processor's naive
    resize).  Channels 0-2 are DINOv2-normalised, channels 3-5 SigLIP-normalised.
    """
    from PIL import Image
    batch = []
    for index, image in enumerate(images):
        img = np.asarray(image)
        if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
            raise ValueError(
                f'image {index} must be uint8 [H, W, 3], got {img.dtype} {img.shape}')
        if img.shape[:2] != (IMAGE_SIZE, IMAGE_SIZE):
            img = _resize(img, IMAGE_SIZE, Image.BICUBIC)
        batch.append(img)
    if not batch:
        raise ValueError('images must hold at least one image')
    rgb = np.stack(batch).astype(np.float32).transpose(0, 3, 1, 2) / 255.0  # [B, 3, H, W]
    dino = (rgb - np.reshape(DINOV2_MEAN, (1, 3, 1, 1))) / np.reshape(DINOV2_STD, (1, 3, 1, 1))
    siglip = (rgb - np.reshape(SIGLIP_MEAN, (1, 3, 1, 1))) / np.reshape(SIGLIP_STD, (1, 3, 1, 1))
    return np.concatenate([dino, siglip], axis=1).astype(np.float32)  # [B, 6, 224, 224]
