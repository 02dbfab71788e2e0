"""One loader for the real OpenVLA-7B checkpoint and the project's stand-in."""

import json
import logging
import os
from typing import Optional

from tgrpo_ros.policy import adapters, contract

_LOGGER = logging.getLogger(__name__)
DTYPES = ('float32', 'bfloat16', 'float16')


def _torch_dtype(dtype: str):
    import torch
    if dtype not in DTYPES:
        raise ValueError(f'unknown dtype {dtype!r}; choose one of {", ".join(DTYPES)}')
    return getattr(torch, dtype)


def _auto_model_class():
    """Return the auto class for vision-to-text models (renamed in transformers 5.x)."""
    import transformers
    for name in ('AutoModelForVision2Seq', 'AutoModelForImageTextToText'):
        auto_class = getattr(transformers, name, None)
        if auto_class is not None:
            return auto_class
    raise RuntimeError(f'transformers {transformers.__version__} has neither '
                       'AutoModelForVision2Seq nor AutoModelForImageTextToText')


def _read_config(model_path: str) -> dict:
    config_path = os.path.join(model_path, 'config.json')
    if os.path.isdir(model_path) and not os.path.isfile(config_path):
        raise ValueError(f'{model_path!r} holds no config.json; is it a checkpoint directory?')
    if not os.path.isfile(config_path):
        return {}  # a hub name: transformers resolves it (cache or network)
    with open(config_path) as f:
        return json.load(f)


def resolve_norm_stats(norm_stats: Optional[dict], unnorm_key: Optional[str] = None
                       ) -> contract.ActionNormStats:
    """
    Choose the un-normalisation statistics for a checkpoint.

    An explicit ``unnorm_key`` must exist in the checkpoint.  Without one: the
    checkpoint's 'libero_object' entry, else its only entry, else the built-in
    LIBERO-Object statistics (with a warning).
    """
    if unnorm_key is not None:
        return contract.select_norm_stats(norm_stats or {}, unnorm_key)
    if not norm_stats:
        _LOGGER.warning('checkpoint has no norm_stats; using built-in LIBERO-Object statistics')
        return contract.LIBERO_OBJECT_STATS
    try:
        return contract.select_norm_stats(norm_stats, contract.DEFAULT_UNNORM_KEY)
    except ValueError:
        pass
    if len(norm_stats) == 1:
        return contract.select_norm_stats(norm_stats)
    _LOGGER.warning('checkpoint norm_stats have no %r entry (keys: %s); using built-in '
                    'LIBERO-Object statistics; pass unnorm_key to pick one',
                    contract.DEFAULT_UNNORM_KEY, ', '.join(sorted(norm_stats)))
    return contract.LIBERO_OBJECT_STATS


def load_policy(model_path, device: str = 'cpu', dtype: str = 'float32',
                adapter_root: Optional[str] = None,
                lora: Optional[adapters.LoraSettings] = None, trainable: str = 'lora',
                unnorm_key: Optional[str] = None, adapter_path: Optional[str] = None,
                adapter_version: int = 0, attn_implementation: Optional[str] = None,
                temperature: float = 1.0):
    """
    Load an OpenVLA checkpoint or a stand-in and wrap it as a ``VLAPolicy``.

    model_path: a local checkpoint directory (loaded offline) or a hub name such as
        'openvla/openvla-7b-finetuned-libero-object' (needs the hub cache or network).
    device: torch device string, e.g. 'cpu' or 'cuda:0'.
    dtype: 'float32', 'bfloat16' or 'float16' (the 7B model wants a 16-bit type on GPU).
    adapter_root: adapters may only be loaded from below this directory (None: anywhere).
    lora: LoRA settings (default r=32 on q_proj, v_proj); trainable: 'lora',
        'lora+action_head' or 'full' (see docs/policy.md).
    unnorm_key: which statistics in the checkpoint's norm_stats un-normalise actions.
    adapter_path / adapter_version: an adapter to load right away.
    temperature: of the 256 action logits, the default of ``sample`` and ``log_probs``
        (one temperature for sampling and training keeps training on-policy).
    """
    from tgrpo_ros.policy import standin
    from tgrpo_ros.policy.vla_policy import VLAPolicy

    adapters.check_trainable(trainable)
    torch_dtype = _torch_dtype(dtype)
    model_path = os.fspath(model_path)
    config = _read_config(model_path)
    local = os.path.isdir(model_path)
    standin.register_auto_classes()
    common = {'trust_remote_code': True, 'local_files_only': local}
    if config.get('model_type') == standin.MODEL_TYPE:
        from transformers import AutoTokenizer
        tokenizer = AutoTokenizer.from_pretrained(model_path, **common)
    else:
        from transformers import AutoProcessor
        tokenizer = AutoProcessor.from_pretrained(model_path, **common).tokenizer
    model_kwargs = dict(common, torch_dtype=torch_dtype, low_cpu_mem_usage=True)
    if attn_implementation is not None:
        model_kwargs['attn_implementation'] = attn_implementation
    model = _auto_model_class().from_pretrained(model_path, **model_kwargs)
    model = model.to(device).eval()
    norm_stats = resolve_norm_stats(getattr(model.config, 'norm_stats', None), unnorm_key)
    policy = VLAPolicy(model, tokenizer, norm_stats, lora=lora, trainable=trainable,
                       adapter_root=adapter_root, name_or_path=model_path,
                       temperature=temperature)
    if adapter_path is not None:
        policy.load_adapter(adapter_path, adapter_version)
    return policy
