"""
A small random-init stand-in for OpenVLA-7B with the same interface.

The stand-in mirrors OpenVLA's module layout (``vision_backbone`` with ``featurizer`` and
``fused_featurizer``, ``projector``, ``language_model`` = a Llama ``LlamaForCausalLM``
whose attention layers are named q_proj/k_proj/v_proj/o_proj) and its forward signature
(input_ids, attention_mask, pixel_values [B, 6, 224, 224], past_key_values, use_cache),
so that the loader, the batched sampler and LoRA targets are the same for both models.

Run ``tgrpo_build_standin OUTPUT_DIR --seed 0`` to write one with ``save_pretrained``.
Presets (``--preset``) give other sizes: ``openvla-7b`` has OpenVLA-7B's shapes (a
Llama-2-7B decoder, 256 patch tokens of width 2176; docs/policy.md) in bfloat16, and
``7b-layout`` is the same layout scaled down for tests.  16-bit checkpoints are written
tensor by tensor into sharded safetensors, so a 7B build never holds the whole model.
"""

import argparse
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
import hashlib
import json
import os
import shutil
import sys
import tempfile
from typing import Optional, Tuple

import torch
from torch import nn
from transformers import AutoConfig, LlamaConfig, LlamaForCausalLM, PretrainedConfig
from transformers import PreTrainedModel

from tgrpo_ros.policy import contract

MODEL_TYPE = 'tgrpo_openvla_standin'
_SIZE_FIELDS = ('hidden_size', 'num_hidden_layers', 'num_attention_heads', 'intermediate_size',
                'vision_width', 'patch_size', 'image_size', 'vocab_size', 'initializer_range')
STANDIN_FORMAT_VERSION = 1  # bump when the architecture or tokenizer changes (cache key)
DTYPES = ('float32', 'bfloat16', 'float16')
DEFAULT_MAX_SHARD_BYTES = 2 * 10**9  # per safetensors shard of a streamed (16-bit) build
SAFE_WEIGHTS_NAME = 'model.safetensors'  # transformers' file names for one file / shards
SAFE_WEIGHTS_INDEX_NAME = 'model.safetensors.index.json'


@dataclass(frozen=True)
class StandinPreset:
    """Named sizes and storage dtype of a stand-in checkpoint."""

    sizes: dict = field(metadata={'help': 'StandinVLAConfig size fields'})
    dtype: str = field(metadata={'help': 'weight dtype on disk: one of DTYPES'})
    description: str = field(default='', metadata={'help': 'one line for --help'})


PRESETS = {
    # The stand-in the tests, the learning check and bench/policy.py use (6.8 M parameters).
    'tiny': StandinPreset(
        sizes={'hidden_size': 96, 'num_hidden_layers': 4, 'num_attention_heads': 4,
               'intermediate_size': 256, 'vision_width': 32, 'patch_size': 28},
        dtype='float32', description='6.8 M parameters, 64 patches, float32 (the default)'),
    # OpenVLA-7B's shapes (docs/policy.md, Presets): Llama-2-7B (width 4096, 32 layers of 32
    # heads, MLP 11008, 32064-row embedding and output layer) and 256 patch tokens (224 px,
    # 14 px patches) of width 2176 = 2 x 1088 (DINOv2 ViT-L is 1024 wide and SigLIP
    # So400m 1152; the stand-in's two stems are equally wide).
    'openvla-7b': StandinPreset(
        sizes={'hidden_size': 4096, 'num_hidden_layers': 32, 'num_attention_heads': 32,
               'intermediate_size': 11008, 'vision_width': 1088, 'patch_size': 14},
        dtype='bfloat16',
        description="OpenVLA-7B's shapes, 6.77 B parameters, 13.5 GB in bfloat16"),
    # openvla-7b at 1/16 of the widths and 2 layers: the same head width (128), MLP ratio
    # (2.6875), patch count (256) and vision/LLM width ratio; bfloat16, streamed build.
    '7b-layout': StandinPreset(
        sizes={'hidden_size': 256, 'num_hidden_layers': 2, 'num_attention_heads': 2,
               'intermediate_size': 688, 'vision_width': 68, 'patch_size': 14},
        dtype='bfloat16',
        description='openvla-7b scaled down to 1/16 width and 2 layers (18 M parameters)'),
}
DEFAULT_PRESET = 'tiny'

# Words that get a single token, so prompts stay short (~25 tokens) like Llama's.
_PROMPT_WORDS = (
    'in what action should the robot take to pick up and place it on into of a an '
    'basket alphabet soup cream cheese salad dressing bbq sauce ketchup tomato butter milk '
    'chocolate pudding orange juice box bowl plate drawer open close put push turn stove '
    'top cabinet wine bottle rack middle front back left right black white ramekin cookie '
    'mug caddy book microwave yellow red green')


class StandinVLAConfig(PretrainedConfig):
    """Configuration of the stand-in (sizes of the vision stem and the Llama model)."""

    model_type = MODEL_TYPE

    def __init__(self, hidden_size: int = 96, num_hidden_layers: int = 4,
                 num_attention_heads: int = 4, intermediate_size: int = 256,
                 vision_width: int = 32, patch_size: int = 28,
                 image_size: int = contract.IMAGE_SIZE,
                 vocab_size: int = contract.PADDED_VOCAB_SIZE,
                 n_action_bins: int = contract.N_ACTION_BINS,
                 norm_stats: Optional[dict] = None, initializer_range: float = 0.02,
                 seed: int = 0, **kwargs):
        """Store the sizes; ``tie_word_embeddings`` is always False, as in OpenVLA."""
        kwargs['tie_word_embeddings'] = False
        kwargs.setdefault('pad_token_id', contract.PAD_TOKEN_ID)
        kwargs.setdefault('bos_token_id', contract.BOS_TOKEN_ID)
        kwargs.setdefault('eos_token_id', contract.EOS_TOKEN_ID)
        super().__init__(**kwargs)
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.intermediate_size = intermediate_size
        self.vision_width = vision_width
        self.patch_size = patch_size
        self.image_size = image_size
        self.vocab_size = vocab_size
        self.n_action_bins = n_action_bins
        self.norm_stats = norm_stats
        self.initializer_range = initializer_range
        self.seed = seed
        if image_size % patch_size:
            raise ValueError(f'image_size ({image_size}) must be a multiple of '
                             f'patch_size ({patch_size})')
        if hidden_size % num_attention_heads:
            raise ValueError(f'hidden_size ({hidden_size}) must be a multiple of '
                             f'num_attention_heads ({num_attention_heads})')
        if vocab_size < contract.PAD_TOKEN_ID + 1:
            raise ValueError(f'vocab_size ({vocab_size}) must exceed the PAD id '
                             f'{contract.PAD_TOKEN_ID}')

    def text_config(self) -> LlamaConfig:
        """Return the Llama configuration of the language model."""
        return LlamaConfig(
            vocab_size=self.vocab_size, hidden_size=self.hidden_size,
            intermediate_size=self.intermediate_size,
            num_hidden_layers=self.num_hidden_layers,
            num_attention_heads=self.num_attention_heads,
            num_key_value_heads=self.num_attention_heads,
            max_position_embeddings=2048, initializer_range=self.initializer_range,
            pad_token_id=self.pad_token_id, bos_token_id=contract.BOS_TOKEN_ID,
            eos_token_id=contract.EOS_TOKEN_ID, tie_word_embeddings=False)


@dataclass
class StandinVLAOutput:
    """Plain forward output (not a transformers ModelOutput, which changes across versions)."""

    logits: torch.Tensor  # [B, L, V] with L counting the patch tokens
    past_key_values: object = None
    projector_features: Optional[torch.Tensor] = None  # [B, P, H]


class StandinVisionBackbone(nn.Module):
    """Two patch-embedding stems standing in for DINOv2 (channels 0-2) and SigLIP (3-5)."""

    def __init__(self, config: StandinVLAConfig):
        """Create one strided convolution per backbone."""
        super().__init__()
        width, patch = config.vision_width, config.patch_size
        self.featurizer = nn.Conv2d(3, width, kernel_size=patch, stride=patch)
        self.fused_featurizer = nn.Conv2d(3, width, kernel_size=patch, stride=patch)
        self.embed_dim = 2 * width

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Map [B, 6, 224, 224] pixels to patch features [B, P, 2 * vision_width]."""
        if pixel_values.ndim != 4 or pixel_values.shape[1] != 6:
            raise ValueError(f'pixel_values must be [B, 6, H, W], got {list(pixel_values.shape)}')
        dino, siglip = torch.split(pixel_values, [3, 3], dim=1)
        dino = self.featurizer(dino).flatten(2).transpose(1, 2)  # [B, P, W]
        siglip = self.fused_featurizer(siglip).flatten(2).transpose(1, 2)  # [B, P, W]
        return torch.cat([dino, siglip], dim=2)


class StandinProjector(nn.Module):
    """MLP projector from fused patch features to the language model width."""

    def __init__(self, vision_dim: int, llm_dim: int):
        """Create the two linear layers."""
        super().__init__()
        self.fc1 = nn.Linear(vision_dim, llm_dim)
        self.act_fn = nn.GELU()
        self.fc2 = nn.Linear(llm_dim, llm_dim)

    def forward(self, patch_features: torch.Tensor) -> torch.Tensor:
        """Project [B, P, D_vision] to [B, P, H]."""
        return self.fc2(self.act_fn(self.fc1(patch_features)))


class StandinVLAForActionPrediction(PreTrainedModel):
    """Stand-in VLA: patch embeddings inserted after BOS into a small Llama."""

    config_class = StandinVLAConfig
    base_model_prefix = 'model'
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _no_split_modules = ['LlamaDecoderLayer']

    def __init__(self, config: StandinVLAConfig):
        """Build the vision stem, the projector and the language model."""
        super().__init__(config)
        self.vision_backbone = StandinVisionBackbone(config)
        self.projector = StandinProjector(self.vision_backbone.embed_dim, config.hidden_size)
        text_config = config.text_config()
        text_config._attn_implementation = config._attn_implementation
        self.language_model = LlamaForCausalLM(text_config)
        self.vocab_size = config.vocab_size
        self.norm_stats = config.norm_stats
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            module.weight.data.normal_(mean=0.0, std=std)
            if module.bias is not None:
                module.bias.data.zero_()
        elif isinstance(module, nn.Embedding):
            module.weight.data.normal_(mean=0.0, std=std)

    def get_input_embeddings(self) -> nn.Module:
        """Return the language model's token embedding."""
        return self.language_model.get_input_embeddings()

    def get_output_embeddings(self) -> nn.Module:
        """Return the language model's output layer (lm_head)."""
        return self.language_model.get_output_embeddings()

    def tie_weights(self) -> None:
        """Do nothing: input and output embeddings are separate, as in Llama-2."""

    def forward(self, input_ids: Optional[torch.LongTensor] = None,
                attention_mask: Optional[torch.Tensor] = None,
                pixel_values: Optional[torch.FloatTensor] = None,
                labels: Optional[torch.LongTensor] = None,
                inputs_embeds: Optional[torch.FloatTensor] = None,
                past_key_values=None, use_cache: Optional[bool] = None,
                output_attentions: Optional[bool] = None,
                output_hidden_states: Optional[bool] = None,
                return_dict: Optional[bool] = None) -> StandinVLAOutput:
        """
        Run OpenVLA's forward: cached step, text only, or image + text.

        As in OpenVLA, the image form needs BOS at position 0 of every row (right
        padding); the batched policy code builds its own left-padded layout instead.
        """
        if labels is not None:
            raise ValueError('labels are not supported by the stand-in; compute losses outside')
        if input_ids is not None and input_ids.shape[1] == 1 and past_key_values is not None:
            out = self.language_model(input_ids=input_ids, attention_mask=attention_mask,
                                      past_key_values=past_key_values, use_cache=use_cache)
            return StandinVLAOutput(logits=out.logits, past_key_values=out.past_key_values)
        if pixel_values is None:
            out = self.language_model(input_ids=input_ids, attention_mask=attention_mask,
                                      inputs_embeds=inputs_embeds, use_cache=use_cache)
            return StandinVLAOutput(logits=out.logits, past_key_values=out.past_key_values)
        if input_ids.shape[0] != pixel_values.shape[0]:
            raise ValueError(f'batch sizes differ: input_ids {input_ids.shape[0]}, '
                             f'pixel_values {pixel_values.shape[0]}')
        patches = self.projector(self.vision_backbone(pixel_values))  # [B, P, H]
        embeddings = self.get_input_embeddings()(input_ids)  # [B, L, H]
        embeddings = torch.cat([embeddings[:, :1], patches, embeddings[:, 1:]], dim=1)
        mask = None
        if attention_mask is not None:
            ones = attention_mask.new_ones(patches.shape[:2])
            mask = torch.cat([attention_mask[:, :1], ones, attention_mask[:, 1:]], dim=1)
        out = self.language_model(inputs_embeds=embeddings, attention_mask=mask,
                                  use_cache=use_cache)
        return StandinVLAOutput(logits=out.logits, past_key_values=out.past_key_values,
                                projector_features=patches)


def register_auto_classes() -> None:
    """Make the auto classes (4.x Vision2Seq, 5.x ImageTextToText) know the stand-in."""
    import transformers
    try:
        AutoConfig.register(MODEL_TYPE, StandinVLAConfig)
    except ValueError:
        pass  # already registered
    for name in ('AutoModelForVision2Seq', 'AutoModelForImageTextToText'):
        auto_class = getattr(transformers, name, None)
        if auto_class is None:
            continue
        try:
            auto_class.register(StandinVLAConfig, StandinVLAForActionPrediction)
        except ValueError:
            pass  # already registered


def build_standin_tokenizer():
    """
    Return a fast tokenizer with Llama-2's special ids (BOS 1, EOS 2, 29871, PAD 32000).

    A Unigram model over: 0-2 specials, 3-258 byte-fallback pieces <0x00>..<0xFF>, single
    printable characters, whole prompt words with the word-boundary prefix, '▁' at 29871
    and unused fillers up to 32000; '<PAD>' is added as id 32000.
    """
    from tokenizers import decoders, pre_tokenizers, processors, Tokenizer
    from tokenizers.models import Unigram
    from transformers import PreTrainedTokenizerFast

    boundary = '\u2581'
    pieces = [('<unk>', 0.0), ('<s>', 0.0), ('</s>', 0.0)]
    pieces += [(f'<0x{b:02X}>', 0.0) for b in range(256)]
    chars = [chr(c) for c in range(33, 127)]
    pieces += [(c, -10.0) for c in chars] + [(boundary + c, -10.5) for c in chars]
    words = sorted(set(_PROMPT_WORDS.split()))
    pieces += [(boundary + w, -1.0) for w in words]
    pieces += [(boundary + 'In', -1.0), (boundary + 'What', -1.0), ('Out', -1.0)]
    if len(pieces) >= contract.EMPTY_PIECE_TOKEN_ID:
        raise RuntimeError('too many tokenizer pieces for the fixed ids')
    while len(pieces) < contract.EMPTY_PIECE_TOKEN_ID:
        pieces.append((f'<unused{len(pieces)}>', -100.0))
    pieces.append((boundary, -10.0))  # id 29871
    while len(pieces) < contract.LLAMA_VOCAB_SIZE:
        pieces.append((f'<unused{len(pieces)}>', -100.0))
    tokenizer = Tokenizer(Unigram(pieces, unk_id=0, byte_fallback=True))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement=boundary,
                                                       prepend_scheme='first')
    tokenizer.decoder = decoders.Sequence([
        decoders.Replace(boundary, ' '), decoders.ByteFallback(), decoders.Fuse(),
        decoders.Strip(' ', 1, 0)])
    tokenizer.post_processor = processors.TemplateProcessing(
        single='<s> $A', pair='<s> $A <s> $B', special_tokens=[('<s>', contract.BOS_TOKEN_ID)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token='<s>',
                                   eos_token='</s>', unk_token='<unk>')
    fast.add_special_tokens({'pad_token': '<PAD>'})
    fast.padding_side = 'right'
    if fast.pad_token_id != contract.PAD_TOKEN_ID:
        raise RuntimeError(f'PAD id is {fast.pad_token_id}, expected {contract.PAD_TOKEN_ID}')
    return fast


def resolve_preset(preset: Optional[str] = None, dtype: Optional[str] = None,
                   **sizes) -> Tuple[dict, str]:
    """
    Return (sizes, dtype) of a build: the preset's, with explicit sizes and dtype on top.

    ``preset`` None means 'tiny'; size arguments that are None keep the preset's value.
    Raises ValueError naming the choices for an unknown preset, size name or dtype.
    """
    name = DEFAULT_PRESET if preset is None else preset
    if name not in PRESETS:
        raise ValueError(f'unknown preset {preset!r}; choose one of {", ".join(PRESETS)}')
    unknown = sorted(set(sizes) - set(_SIZE_FIELDS))
    if unknown:
        raise ValueError(f'unknown size {unknown[0]!r}; choose from {", ".join(_SIZE_FIELDS)}')
    resolved = dict(PRESETS[name].sizes)
    resolved.update({key: value for key, value in sizes.items() if value is not None})
    dtype = PRESETS[name].dtype if dtype is None else dtype
    if dtype not in DTYPES:
        raise ValueError(f'unknown dtype {dtype!r}; choose one of {", ".join(DTYPES)}')
    return resolved, dtype


def _make_config(seed: int, sizes: dict) -> StandinVLAConfig:
    config = StandinVLAConfig(
        seed=seed, norm_stats={contract.DEFAULT_UNNORM_KEY:
                               contract.LIBERO_OBJECT_STATS.to_openvla()}, **sizes)
    config._attn_implementation = 'sdpa'
    return config


def build_standin_model(seed: int = 0, **sizes) -> StandinVLAForActionPrediction:
    """Create a random-init stand-in, deterministic from ``seed`` (CPU, float32)."""
    register_auto_classes()
    config = _make_config(seed, sizes)
    generator_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        model = StandinVLAForActionPrediction(config)
    finally:
        torch.random.set_rng_state(generator_state)
    return model.eval()


def build_standin_meta_model(preset: Optional[str] = None, seed: int = 0,
                             **sizes) -> StandinVLAForActionPrediction:
    """
    Return a stand-in on the meta device: every name and shape, no memory.

    For counting (``adapters.count_lora_parameters``, ``tensor_specs``) and for planning
    a streamed build; the 7B preset takes about 2 s and allocates nothing.
    """
    register_auto_classes()
    sizes, _ = resolve_preset(preset, None, **sizes)
    with torch.device('meta'):
        model = StandinVLAForActionPrediction(_make_config(seed, sizes))
    return model.eval()


@dataclass(frozen=True)
class TensorSpec:
    """One saved tensor of a streamed build."""

    name: str
    shape: Tuple[int, ...]
    init: str  # 'normal' (std initializer_range), 'zeros' (biases) or 'ones' (RMSNorm)

    @property
    def numel(self) -> int:
        """Return the number of elements."""
        count = 1
        for size in self.shape:
            count *= size
        return count


def tensor_specs(model) -> list:
    """
    List the tensors ``save_pretrained`` would write for ``model``, with their init rule.

    The rules are those of ``StandinVLAForActionPrediction._init_weights``: normal weights
    and zero biases for linear, convolution and embedding layers; RMSNorm weights start
    at 1 as in transformers' Llama.  Anything else raises, so no tensor is left unset.
    """
    rules = {}
    for module_name, module in model.named_modules():
        for param_name, _ in module.named_parameters(recurse=False):
            name = f'{module_name}.{param_name}' if module_name else param_name
            if isinstance(module, (nn.Linear, nn.Conv2d, nn.Embedding)):
                rules[name] = 'zeros' if param_name == 'bias' else 'normal'
            elif type(module).__name__.endswith('RMSNorm') and param_name == 'weight':
                rules[name] = 'ones'
    specs = []
    for name, tensor in model.state_dict().items():
        if name not in rules:
            raise RuntimeError(f'no initialisation rule for {name!r} '
                               f'({type(model).__name__}); extend tensor_specs')
        specs.append(TensorSpec(name, tuple(tensor.shape), rules[name]))
    return specs


def shard_plan(specs: list, dtype: str, max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES
               ) -> list:
    """
    Group ``specs`` in order into shards of at most ``max_shard_bytes``.

    A tensor larger than the limit gets a shard of its own, as in transformers.  A
    streamed build holds one shard in memory at a time.
    """
    if max_shard_bytes < 1:
        raise ValueError(f'max_shard_bytes must be positive, got {max_shard_bytes}')
    itemsize = torch.empty((), dtype=getattr(torch, dtype)).element_size()
    shards, current, current_bytes = [], [], 0
    for spec in specs:
        nbytes = spec.numel * itemsize
        if current and current_bytes + nbytes > max_shard_bytes:
            shards.append(current)
            current, current_bytes = [], 0
        current.append(spec)
        current_bytes += nbytes
    if current:
        shards.append(current)
    return shards


def _tensor_seed(seed: int, name: str) -> int:
    """Seed of one tensor: independent of the order and the thread that fills it."""
    digest = hashlib.sha256(f'{seed}:{name}'.encode()).digest()
    return int.from_bytes(digest[:8], 'little') & (2**63 - 1)


def _init_tensor(spec: TensorSpec, seed: int, dtype: torch.dtype, std: float) -> torch.Tensor:
    tensor = torch.empty(spec.shape, dtype=dtype)
    if spec.init == 'normal':
        generator = torch.Generator().manual_seed(_tensor_seed(seed, spec.name))
        return tensor.normal_(0.0, std, generator=generator)
    if spec.init == 'zeros':
        return tensor.zero_()
    return tensor.fill_(1.0)


def _remove_weight_files(path: str) -> None:
    """Delete weight files of an earlier build (a stale single file would shadow shards)."""
    for name in os.listdir(path):
        if name in (SAFE_WEIGHTS_NAME, SAFE_WEIGHTS_INDEX_NAME) or (
                name.startswith('model-') and name.endswith('.safetensors')):
            os.remove(os.path.join(path, name))


def write_streamed_weights(path: str, model, seed: int, dtype: str,
                           max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
                           workers: Optional[int] = None) -> int:
    """
    Write random weights for the meta-device ``model`` shard by shard; return the count.

    Each tensor is drawn in ``dtype`` from its own generator (seeded from ``seed`` and its
    name), so the weights do not depend on ``workers`` and no float32 copy is made.
    Files follow transformers' layout: ``model.safetensors`` for one shard, else
    ``model-0000i-of-0000n.safetensors`` plus ``model.safetensors.index.json``.
    """
    from safetensors.torch import save_file
    torch_dtype = getattr(torch, dtype)
    std = model.config.initializer_range
    shards = shard_plan(tensor_specs(model), dtype, max_shard_bytes)
    names = [SAFE_WEIGHTS_NAME] if len(shards) == 1 else [
        f'model-{i + 1:05d}-of-{len(shards):05d}.safetensors' for i in range(len(shards))]
    _remove_weight_files(path)
    weight_map, total_bytes, n_parameters = {}, 0, 0
    with ThreadPoolExecutor(max_workers=workers or torch.get_num_threads()) as pool:
        for file_name, shard in zip(names, shards):
            tensors = dict(zip([spec.name for spec in shard], pool.map(
                lambda spec: _init_tensor(spec, seed, torch_dtype, std), shard)))
            save_file(tensors, os.path.join(path, file_name), metadata={'format': 'pt'})
            for name, tensor in tensors.items():
                weight_map[name] = file_name
                total_bytes += tensor.numel() * tensor.element_size()
                n_parameters += tensor.numel()
            del tensors
    if len(shards) > 1:
        with open(os.path.join(path, SAFE_WEIGHTS_INDEX_NAME), 'w') as f:
            json.dump({'metadata': {'total_size': total_bytes}, 'weight_map': weight_map}, f,
                      indent=1, sort_keys=True)
    return n_parameters


def describe(preset: Optional[str] = None, dtype: Optional[str] = None,
             lora=None, **sizes) -> list:
    """
    Return lines giving a build's parameter count, size and LoRA trainable count.

    Computed on the meta device, so it is cheap for the 7B preset too.
    """
    from tgrpo_ros.policy import adapters
    sizes, dtype = resolve_preset(preset, dtype, **sizes)
    lora = lora or adapters.LoraSettings()
    model = build_standin_meta_model(**sizes)
    n_parameters = model.num_parameters()
    itemsize = torch.empty((), dtype=getattr(torch, dtype)).element_size()
    config = model.config
    n_patches = (config.image_size // config.patch_size) ** 2
    n_lora = adapters.count_lora_parameters(model, lora)
    targets = lora.target_modules if isinstance(lora.target_modules, str) else ','.join(
        lora.target_modules)
    return [f'{n_parameters:,} parameters ({n_parameters * itemsize / 1e9:.2f} GB in {dtype}); '
            f'Llama width {config.hidden_size}, {config.num_hidden_layers} layers, '
            f'{config.num_attention_heads} heads, MLP {config.intermediate_size}, '
            f'vocabulary {config.vocab_size}; {n_patches} patch tokens of width '
            f'{2 * config.vision_width}',
            f'LoRA r={lora.r} on {targets}: {n_lora:,} trainable parameters '
            f'({n_lora * 2 / 2**20:.1f} MiB in bfloat16)']


def build_standin(path, seed: int = 0, preset: Optional[str] = None,
                  dtype: Optional[str] = None,
                  max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES, **sizes) -> str:
    """
    Write a stand-in checkpoint (model, tokenizer, norm stats) into ``path``; return it.

    ``preset`` ('tiny' by default, 'openvla-7b', '7b-layout') gives the sizes and the
    dtype; ``sizes`` and ``dtype`` override them.  float32 builds construct the model in
    memory with its own initialisation (as every stand-in so far); 16-bit builds are
    planned on the meta device and written shard by shard (``write_streamed_weights``),
    so memory stays near one shard (``max_shard_bytes``) whatever the model size.

    Skips the work when ``path`` already holds a stand-in with the same seed, sizes, dtype
    and format version, so tests can call it freely.
    """
    sizes, dtype = resolve_preset(preset, dtype, **sizes)
    path = os.fspath(path)
    key = _cache_key(seed, sizes, dtype)
    marker = os.path.join(path, 'standin_build.json')
    if os.path.isfile(marker):
        with open(marker) as f:
            if json.load(f).get('key') == key:
                return path
    os.makedirs(path, exist_ok=True)
    if dtype == 'float32':
        model = build_standin_model(seed, **sizes)
        model.save_pretrained(path, safe_serialization=True)
        n_parameters = model.num_parameters()
    else:
        model = build_standin_meta_model(seed=seed, **sizes)
        n_parameters = write_streamed_weights(path, model, seed, dtype, max_shard_bytes)
        model.config.architectures = [StandinVLAForActionPrediction.__name__]
        model.config.torch_dtype = getattr(torch, dtype)
        model.config.save_pretrained(path)
    build_standin_tokenizer().save_pretrained(path)
    with open(marker, 'w') as f:
        json.dump({'key': key, 'seed': seed, 'preset': preset or DEFAULT_PRESET,
                   'dtype': dtype, 'sizes': sizes, 'n_parameters': n_parameters}, f, indent=1)
    return path


def cached_standin(seed: int = 0, preset: Optional[str] = None, dtype: Optional[str] = None,
                   **sizes) -> str:
    """
    Return the path of a stand-in built once per machine under the temp directory.

    Built into a private directory and renamed into place, so concurrent test processes
    never see a half-written checkpoint.
    """
    resolved, resolved_dtype = resolve_preset(preset, dtype, **sizes)
    key = _cache_key(seed, resolved, resolved_dtype)
    root = os.path.join(tempfile.gettempdir(), f'tgrpo_standin_cache_{os.getuid()}')
    final = os.path.join(root, key)
    if os.path.isfile(os.path.join(final, 'standin_build.json')):
        return final
    os.makedirs(root, exist_ok=True)
    staging = tempfile.mkdtemp(dir=root, prefix='.building-')
    try:
        build_standin(staging, seed, preset=preset, dtype=dtype, **sizes)
        try:
            os.rename(staging, final)
        except OSError:  # another process won the race
            pass
    finally:
        if os.path.isdir(staging):
            shutil.rmtree(staging, ignore_errors=True)
    return final


def _cache_key(seed: int, sizes: dict, dtype: str = 'float32') -> str:
    config = StandinVLAConfig(**sizes)  # defaults filled in, so equal models share a key
    resolved = {name: getattr(config, name) for name in _SIZE_FIELDS}
    content = {'v': STANDIN_FORMAT_VERSION, 'seed': seed, 'sizes': resolved}
    if dtype != 'float32':
        content['dtype'] = dtype  # float32 keys predate the dtype option: left unchanged
    text = json.dumps(content, sort_keys=True)
    return f'seed{seed}-' + hashlib.sha256(text.encode()).hexdigest()[:12]


def main(argv=None) -> int:
    """Write a stand-in: ``tgrpo_build_standin OUTPUT_DIR [--preset P] [--seed N] [sizes]``."""
    parser = argparse.ArgumentParser(
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        prog='tgrpo_build_standin',
        description='Write a random-init OpenVLA stand-in (save_pretrained format, '
                    'tokenizer and LIBERO-Object normalisation statistics included).',
        epilog='presets: ' + '; '.join(f'{name}: {p.description}' for name, p in PRESETS.items()))
    parser.add_argument('output_dir', nargs='?',
                        help='directory to write the checkpoint into (not with --dry-run)')
    parser.add_argument('--preset', default=DEFAULT_PRESET, choices=list(PRESETS),
                        help='sizes and dtype to start from (default: %(default)s)')
    parser.add_argument('--seed', type=int, default=0, help='random seed of the weights')
    parser.add_argument('--dtype', default=None, choices=DTYPES,
                        help="weight dtype on disk (default: the preset's)")
    parser.add_argument('--hidden-size', type=int, help='language model width')
    parser.add_argument('--layers', type=int, help='number of decoder layers')
    parser.add_argument('--heads', type=int, help='attention heads per layer')
    parser.add_argument('--intermediate-size', type=int, help='MLP width')
    parser.add_argument('--vision-width', type=int,
                        help='width of each of the two patch stems')
    parser.add_argument('--patch-size', type=int,
                        help='patch side in pixels: 28 gives 64 patches at 224 px, 14 gives '
                             "OpenVLA's 256 (about 3x slower sampling on CPU)")
    parser.add_argument('--max-shard-mb', type=float, default=DEFAULT_MAX_SHARD_BYTES / 1e6,
                        help='largest safetensors shard of a 16-bit build, in MB '
                             '(default: %(default)g)')
    parser.add_argument('--dry-run', action='store_true',
                        help='print the sizes and the LoRA count without writing anything')
    args = parser.parse_args(argv)
    sizes = {'hidden_size': args.hidden_size, 'num_hidden_layers': args.layers,
             'num_attention_heads': args.heads, 'intermediate_size': args.intermediate_size,
             'vision_width': args.vision_width, 'patch_size': args.patch_size}
    if args.output_dir is None and not args.dry_run:
        parser.error('output_dir is required unless --dry-run is given')
    try:
        lines = describe(args.preset, args.dtype, **sizes)
        if args.dry_run:
            print(f'preset {args.preset} (seed {args.seed}): ' + '\n'.join(lines))
            return 0
        path = build_standin(args.output_dir, seed=args.seed, preset=args.preset,
                             dtype=args.dtype, max_shard_bytes=int(args.max_shard_mb * 1e6),
                             **sizes)
    except ValueError as error:
        print(f'tgrpo_build_standin: {error}', file=sys.stderr)
        return 2
    with open(os.path.join(path, 'standin_build.json')) as f:
        n_parameters = json.load(f)['n_parameters']
    print(f'wrote stand-in (preset {args.preset}, seed {args.seed}, '
          f'{n_parameters / 1e6:.2f} M parameters) to {path}')
    print('\n'.join(lines))
    return 0


if __name__ == '__main__':
    sys.exit(main())
