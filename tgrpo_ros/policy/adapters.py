"""
LoRA settings, trainable modes and the on-disk adapter format (safetensors only).

An adapter directory holds ``adapter_config.json`` and ``adapter_model.safetensors`` in
the standard PEFT layout (keys without the adapter name).  Two extras ride along:

- ``tgrpo.action_head_delta`` [256, H]: the trainable delta on the output layer's 256
  action rows (trainable mode 'lora+action_head');
- ``tgrpo.full.<parameter name>``: every weight, for trainable mode 'full' (the stand-in
  only; the file is then a full weight set rather than a PEFT adapter).

The safetensors metadata records the trainable mode and a fingerprint of the base model,
so an adapter trained on another base is rejected before any weight is touched.
"""

from dataclasses import dataclass, field
import hashlib
import json
import os
from typing import Optional, Tuple, Union

ADAPTER_CONFIG_FILE = 'adapter_config.json'
ADAPTER_WEIGHTS_FILE = 'adapter_model.safetensors'
PICKLE_WEIGHTS_FILE = 'adapter_model.bin'  # never loaded; named in the error message
ACTION_DELTA_KEY = 'tgrpo.action_head_delta'
FULL_PREFIX = 'tgrpo.full.'
TRAINABLE_MODES = ('lora', 'lora+action_head', 'full')
ALL_LINEAR = 'all-linear'


class AdapterError(ValueError):
    """An adapter could not be used; the adapter that was serving keeps serving."""


@dataclass(frozen=True)
class LoraSettings:
    """LoRA hyper-parameters (OpenVLA's fine-tuning recipe by default)."""

    r: int = field(default=32, metadata={'help': 'LoRA rank (OpenVLA LIBERO fine-tunes: 32)'})
    alpha: float = field(default=16.0, metadata={
        'help': 'LoRA alpha; scale = alpha / r (OpenVLA uses min(r, 16))'})
    dropout: float = field(default=0.0, metadata={'help': 'dropout on the LoRA input'})
    target_modules: Union[Tuple[str, ...], str] = field(default=('q_proj', 'v_proj'), metadata={
        'help': "module names to adapt, or 'all-linear' (every linear layer but the output)"})

    def __post_init__(self):
        """Validate the values and normalise target_modules to a tuple or 'all-linear'."""
        if not isinstance(self.r, int) or self.r < 1:
            raise ValueError(f'r must be a positive int, got {self.r!r}')
        if not self.alpha > 0:
            raise ValueError(f'alpha must be > 0, got {self.alpha!r}')
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f'dropout must be in [0, 1), got {self.dropout!r}')
        targets = self.target_modules
        if isinstance(targets, str):
            targets = ALL_LINEAR if targets == ALL_LINEAR else tuple(
                t.strip() for t in targets.split(',') if t.strip())
        else:
            targets = tuple(targets)
        if not targets:
            raise ValueError(f'target_modules must name at least one module or be '
                             f"'{ALL_LINEAR}', got {self.target_modules!r}")
        if targets != ALL_LINEAR and 'lm_head' in targets:
            raise ValueError("target_modules must not include 'lm_head'; use trainable="
                             "'lora+action_head' to train the action rows of the output layer")
        object.__setattr__(self, 'target_modules', targets)

    def peft_config(self, model=None, inference_mode: bool = False):
        """
        Return the equivalent ``peft.LoraConfig``.

        'all-linear' is expanded here to the names of ``model``'s linear layers minus its
        output layer: peft 0.11 only drops the output layer when it sits at the top
        level, and OpenVLA's is nested (``language_model.lm_head``).
        """
        from peft import LoraConfig
        targets = self.target_modules
        if targets == ALL_LINEAR:
            if model is None:
                raise ValueError("target_modules='all-linear' needs the model to expand it")
            targets = all_linear_names(model)
        return LoraConfig(r=self.r, lora_alpha=self.alpha, lora_dropout=self.dropout,
                          target_modules=sorted(targets), inference_mode=inference_mode)


def all_linear_names(model) -> list:
    """Short names of every ``torch.nn.Linear`` in ``model`` except the output layer."""
    import torch
    output = model.get_output_embeddings()
    names = set()
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and module is not output:
            names.add(name.rsplit('.', 1)[-1])
    output_names = [name.rsplit('.', 1)[-1] for name, module in model.named_modules()
                    if module is output]
    return sorted(names - set(output_names))


def count_lora_parameters(model, lora: Optional[LoraSettings] = None) -> int:
    """
    Return the number of trainable parameters LoRA adds to ``model``.

    Each adapted ``torch.nn.Linear`` gets A [r, in] and B [out, r], so r * (in + out).
    A layer is adapted when its last name part is a target (peft's rule for plain
    names); the output layer never is.  Only shapes are read, so a model on the meta
    device (``standin.build_standin_meta_model``) gives a 7B count without allocating it.
    """
    import torch
    lora = lora if lora is not None else LoraSettings()
    targets = lora.target_modules
    if targets == ALL_LINEAR:
        targets = all_linear_names(model)
    output = model.get_output_embeddings()
    total = 0
    for name, module in model.named_modules():
        if name.rsplit('.', 1)[-1] not in targets or module is output:
            continue
        if not isinstance(module, torch.nn.Linear):
            raise ValueError(f'LoRA target {name!r} is a {type(module).__name__}; only '
                             'Linear layers can be counted')
        total += lora.r * (module.in_features + module.out_features)
    return total


def check_trainable(trainable: str) -> str:
    """Return ``trainable`` if it is a known mode, else raise listing the choices."""
    if trainable not in TRAINABLE_MODES:
        raise ValueError(f'unknown trainable mode {trainable!r}; choose one of '
                         f'{", ".join(TRAINABLE_MODES)}')
    return trainable


def resolve_adapter_dir(path, adapter_root: Optional[str]) -> str:
    """
    Return the real path of an adapter directory, checked against ``adapter_root``.

    Symbolic links are resolved first, so a link inside the root that points outside it
    is rejected too.  With no root configured any directory is accepted.
    """
    if path is None or not str(path):
        raise AdapterError('adapter path is empty')
    real = os.path.realpath(os.fspath(path))
    if adapter_root is not None:
        root = os.path.realpath(os.fspath(adapter_root))
        if os.path.commonpath([root, real]) != root:
            raise AdapterError(f'adapter path {path!r} is outside the adapter root {root!r}')
    if not os.path.isdir(real):
        raise AdapterError(f'adapter directory {path!r} does not exist')
    return real


def read_adapter(path, adapter_root: Optional[str] = None):
    """
    Read and parse an adapter directory; return (config dict, tensors, metadata).

    Raises AdapterError for a path outside the root, a missing file, a pickle-only
    adapter, unparsable JSON or a corrupt safetensors file.
    """
    from safetensors import safe_open
    real = resolve_adapter_dir(path, adapter_root)
    config_path = os.path.join(real, ADAPTER_CONFIG_FILE)
    weights_path = os.path.join(real, ADAPTER_WEIGHTS_FILE)
    if not os.path.isfile(weights_path):
        if os.path.isfile(os.path.join(real, PICKLE_WEIGHTS_FILE)):
            raise AdapterError(f'{path!r} holds only {PICKLE_WEIGHTS_FILE}; pickled weights '
                               f'are never loaded, save it as {ADAPTER_WEIGHTS_FILE}')
        raise AdapterError(f'{path!r} has no {ADAPTER_WEIGHTS_FILE}')
    if not os.path.isfile(config_path):
        raise AdapterError(f'{path!r} has no {ADAPTER_CONFIG_FILE}')
    try:
        with open(config_path) as f:
            config = json.load(f)
    except (OSError, ValueError) as error:
        raise AdapterError(f'cannot parse {config_path!r}: {error}') from error
    if not isinstance(config, dict):
        raise AdapterError(f'{config_path!r} must hold a JSON object, got {type(config).__name__}')
    try:
        with safe_open(weights_path, framework='pt') as f:
            metadata = dict(f.metadata() or {})
            tensors = {key: f.get_tensor(key) for key in f.keys()}
    except Exception as error:  # safetensors raises its own error types
        raise AdapterError(f'corrupt adapter weights {weights_path!r}: {error}') from error
    if not tensors:
        raise AdapterError(f'{weights_path!r} holds no tensors')
    return config, tensors, metadata


def settings_from_adapter(path, adapter_root: Optional[str] = None):
    """
    Return (trainable mode, LoraSettings) that an adapter directory was saved with.

    Lets a loader build the policy the adapter fits (rank, alpha, targets, mode) instead
    of assuming the defaults; for 'full' the LoRA settings are the defaults (unused).
    """
    config, _, metadata = read_adapter(path, adapter_root)
    mode = check_trainable(metadata.get('tgrpo_trainable', config.get('tgrpo_trainable',
                                                                      'lora')))
    if mode == 'full':
        return mode, LoraSettings()
    targets = config.get('target_modules') or LoraSettings().target_modules
    if isinstance(targets, str):
        targets = (targets,)
    return mode, LoraSettings(r=int(config.get('r', 32)),
                              alpha=float(config.get('lora_alpha', 16.0)),
                              dropout=float(config.get('lora_dropout', 0.0)),
                              target_modules=tuple(sorted(targets)))


def write_adapter(path, config: dict, tensors: dict, metadata: dict) -> str:
    """Write an adapter directory; each file is written aside and renamed into place."""
    from safetensors.torch import save_file
    path = os.fspath(path)
    os.makedirs(path, exist_ok=True)
    weights_path = os.path.join(path, ADAPTER_WEIGHTS_FILE)
    config_path = os.path.join(path, ADAPTER_CONFIG_FILE)
    save_file(tensors, weights_path + '.tmp', metadata=metadata)
    with open(config_path + '.tmp', 'w') as f:
        json.dump(config, f, indent=2, sort_keys=True, default=_json_default)
    os.replace(weights_path + '.tmp', weights_path)
    os.replace(config_path + '.tmp', config_path)
    return path


def _json_default(value):
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    return str(value)


def base_fingerprint(model, sample: int = 16) -> str:
    """
    Return a short hash that identifies a base model's weights.

    Hashes every base parameter's name, shape and first ``sample`` values rounded to
    bfloat16, so the same checkpoint loaded in float32 or bfloat16 gives the same value
    while a different seed or checkpoint does not.  LoRA weights are skipped.
    """
    import torch
    digest = hashlib.sha256()
    for name, param in model.named_parameters():
        if 'lora_' in name:
            continue
        name = name.replace('base_model.model.', '').replace('.base_layer', '')
        values = param.detach().reshape(-1)[:sample].to('cpu', torch.bfloat16).float()
        digest.update(name.encode())
        digest.update(str(tuple(param.shape)).encode())
        digest.update(values.numpy().tobytes())
    return digest.hexdigest()[:16]


# ---------------------------------------------------------------------------- over the wire

ADAPTER_WIRE_SCHEMA = 'tgrpo_adapter/safetensors/1'
# Largest adapter version: action replies carry it as an int32 (messages.ACTION_EXTRA_RANGES),
# and a larger one would not fit the server's int64 parameter either.
ADAPTER_VERSION_MAX = 2 ** 31 - 1
RECEIVED_DIR = 'received'  # under the receiver's adapter root
_PICKLE_MAGICS = (b'\x80', b'PK\x03\x04')  # pickle protocol 2+; torch.save's zip archive


def pack_adapter(path, version: int) -> Tuple[dict, bytes]:
    """
    Return (header, weights) that carry the adapter directory ``path`` to another host.

    ``weights`` are the bytes of its safetensors file; the header holds the schema,
    the version, their size and sha256, and the parsed ``adapter_config.json``.
    """
    real = resolve_adapter_dir(path, None)
    with open(os.path.join(real, ADAPTER_WEIGHTS_FILE), 'rb') as stream:
        weights = stream.read()
    with open(os.path.join(real, ADAPTER_CONFIG_FILE)) as stream:
        config = json.load(stream)
    header = {'schema': ADAPTER_WIRE_SCHEMA, 'version': int(version), 'size': len(weights),
              'sha256': hashlib.sha256(weights).hexdigest(), 'config': config}
    return header, weights


def check_adapter_payload(header: dict, weights, max_bytes: int) -> None:
    """
    Check a received adapter before anything is written; AdapterError naming the problem.

    Refused: a foreign schema, a version outside [0, 2^31), a payload over ``max_bytes`` or of
    another size than announced, a sha256 mismatch, a pickle (or torch.save archive)
    and anything that is not a safetensors file.
    """
    if not isinstance(header, dict) or header.get('schema') != ADAPTER_WIRE_SCHEMA:
        schema = header.get('schema') if isinstance(header, dict) else header
        raise AdapterError(f'adapter payload schema is {schema!r}; expected '
                           f"'{ADAPTER_WIRE_SCHEMA}'")
    version = header.get('version')
    if isinstance(version, bool) or not isinstance(version, int) \
            or not 0 <= version <= ADAPTER_VERSION_MAX:
        raise AdapterError(f'adapter version must be an integer in [0, {ADAPTER_VERSION_MAX}], '
                           f'got {version!r:.100}')
    if not isinstance(header.get('config'), dict):
        raise AdapterError(f"adapter header 'config' must be a JSON object, got "
                           f"{type(header.get('config')).__name__}")
    size = len(weights)
    if size > max_bytes:
        raise AdapterError(f'adapter version {version} is {size} B, over the limit of '
                           f'{max_bytes} B (max_adapter_mb)')
    if size != header.get('size'):
        raise AdapterError(f'adapter version {version} is {size} B but its header says '
                           f"{header.get('size')!r} B (truncated?)")
    digest = hashlib.sha256(weights).hexdigest()
    if digest != header.get('sha256'):
        raise AdapterError(f'adapter version {version}: sha256 mismatch (received {digest}, '
                           f"header says {header.get('sha256')!r})")
    head = bytes(weights[:8])
    if head.startswith(_PICKLE_MAGICS):
        raise AdapterError(f'adapter version {version} is a pickle (or torch.save archive); '
                           f'only safetensors weights are accepted')
    declared = int.from_bytes(head, 'little') if len(head) == 8 else -1
    if not 0 < declared <= size - 8 or bytes(weights[8:9]) != b'{':
        raise AdapterError(f'adapter version {version} is not a safetensors file (no JSON '
                           f'header after the 8-byte length)')


def store_adapter_payload(root, header: dict, weights, max_bytes: int) -> str:
    """
    Check a received adapter and write it as ``<root>/received/v<version>-<sha256[:12]>``.

    The directory is written aside and renamed into place, so a reader never sees half
    an adapter; an existing directory of the same version and hash is reused. Returns
    its path. AdapterError (see ``check_adapter_payload``) leaves nothing behind.
    """
    check_adapter_payload(header, weights, max_bytes)
    parent = os.path.join(os.fspath(root), RECEIVED_DIR)
    os.makedirs(parent, exist_ok=True)
    path = os.path.join(parent, f"v{header['version']:05d}-{header['sha256'][:12]}")
    if os.path.isfile(os.path.join(path, ADAPTER_WEIGHTS_FILE)):
        return path
    tmp = f'{path}.tmp{os.getpid()}'
    os.makedirs(tmp, exist_ok=True)
    with open(os.path.join(tmp, ADAPTER_WEIGHTS_FILE), 'wb') as stream:
        stream.write(weights)
    with open(os.path.join(tmp, ADAPTER_CONFIG_FILE), 'w') as stream:
        json.dump(header['config'], stream, indent=2, sort_keys=True)
    os.replace(tmp, path)
    return path


def prune_received(root, keep) -> None:
    """Delete the received adapter directories under ``root`` except the paths in ``keep``."""
    import shutil
    parent = os.path.join(os.fspath(root), RECEIVED_DIR)
    kept = {os.path.realpath(p) for p in keep if p}
    for name in os.listdir(parent) if os.path.isdir(parent) else []:
        path = os.path.join(parent, name)
        if os.path.realpath(path) not in kept:
            shutil.rmtree(path, ignore_errors=True)
