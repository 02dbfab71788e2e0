"""
Cast a saved checkpoint's floating-point weights to another dtype, in place.

``python -m tgrpo_ros.policy.cast MODEL_DIR --dtype float16`` rewrites
``model.safetensors`` (or every shard named in ``model.safetensors.index.json``)
and sets ``torch_dtype`` in ``config.json``. Integer tensors are kept. ``load_policy``
upcasts on load to the dtype it is asked for, so a float16 file serves a float32 CPU
policy; the shipped SFT'd stand-in is stored this way to halve its size
(docs/sft.md). Casting to float16 refuses weights that would overflow it.
"""

import argparse
import json
import os
import sys

DTYPES = ('float32', 'bfloat16', 'float16')


def _weight_files(model_dir):
    index = os.path.join(model_dir, 'model.safetensors.index.json')
    if os.path.isfile(index):
        with open(index) as f:
            return sorted(set(json.load(f)['weight_map'].values()))
    if os.path.isfile(os.path.join(model_dir, 'model.safetensors')):
        return ['model.safetensors']
    raise FileNotFoundError(f'{model_dir!r} holds no model.safetensors (nor an index of shards)')


def cast_checkpoint(model_dir: str, dtype: str) -> dict:
    """Cast every floating tensor of ``model_dir`` to ``dtype``; return {file: max abs change}."""
    import torch
    from safetensors.torch import load_file, save_file

    if dtype not in DTYPES:
        raise ValueError(f'unknown dtype {dtype!r}; choose one of {", ".join(DTYPES)}')
    target = getattr(torch, dtype)
    changes = {}
    for name in _weight_files(model_dir):
        path = os.path.join(model_dir, name)
        tensors = load_file(path)
        out, change = {}, 0.0
        for key, tensor in tensors.items():
            if tensor.is_floating_point():
                cast = tensor.to(target)
                if not torch.isfinite(cast).all() and torch.isfinite(tensor).all():
                    raise ValueError(f'{name}: tensor {key!r} overflows {dtype} '
                                     f'(max abs {tensor.abs().max().item():.3g})')
                change = max(change, (cast.float() - tensor.float()).abs().max().item())
                tensor = cast
            out[key] = tensor.contiguous()
        tmp = path + '.tmp'
        save_file(out, tmp, metadata={'format': 'pt'})
        os.replace(tmp, path)
        changes[name] = change
    config_path = os.path.join(model_dir, 'config.json')
    if os.path.isfile(config_path):
        with open(config_path) as f:
            config = json.load(f)
        config['torch_dtype'] = dtype
        with open(config_path, 'w') as f:
            json.dump(config, f, indent=2)
    return changes


def main(argv=None) -> int:
    """Command line: ``python -m tgrpo_ros.policy.cast MODEL_DIR --dtype D``."""
    parser = argparse.ArgumentParser(prog='python -m tgrpo_ros.policy.cast',
                                     description=__doc__.strip().splitlines()[0])
    parser.add_argument('model_dir', help='a save_pretrained checkpoint directory')
    parser.add_argument('--dtype', required=True, choices=DTYPES, help='dtype to store')
    args = parser.parse_args(argv)
    try:
        changes = cast_checkpoint(args.model_dir, args.dtype)
    except (ValueError, FileNotFoundError) as error:
        print(f'cast: {error}', file=sys.stderr)
        return 2
    for name, change in changes.items():
        print(f'{name}: cast to {args.dtype}, largest change {change:.3g}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
