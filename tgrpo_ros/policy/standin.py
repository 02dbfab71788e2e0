"""
A small random-init stand-in for OpenVLA-7B with the same interface.

The stand-in mirrors OpenVLA's module layout (``vision_backbone`` with ``featurizer`` and
``fused_featurizer``, ``projector``, ``language_model`` = a Llama ``LlamaForCausalLM``
whose attention layers are named q_proj/k_proj/v_proj/o_proj) and its forward signature
(input_ids, attention_mask, pixel_values [B, 6, 224, 224], past_key_values, use_cache),
so that the loader, the batched sampler and LoRA targets are the same for both models.

Run ``tgrpo_build_standin OUTPUT_DIR --seed 0`` to write one with ``save_pretrained``.
"""

import argparse
from dataclasses import dataclass
import hashlib
import json
import os
import shutil
import sys
import tempfile
from typing import Optional

import torch
from torch import nn
from transformers import AutoConfig, LlamaConfig, LlamaForCausalLM, PretrainedConfig
from transformers import PreTrainedModel

from tgrpo_ros.policy import contract

MODEL_TYPE = 'tgrpo_openvla_standin'
_SIZE_FIELDS = ('hidden_size', 'num_hidden_layers', 'num_attention_heads', 'intermediate_size',
                'vision_width', 'patch_size', 'image_size', 'vocab_size', 'initializer_range')
STANDIN_FORMAT_VERSION = 1  # bump when the architecture or tokenizer changes (cache key)

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


def build_standin_model(seed: int = 0, **sizes) -> StandinVLAForActionPrediction:
    """Create a random-init stand-in, deterministic from ``seed`` (CPU, float32)."""
    register_auto_classes()
    config = StandinVLAConfig(
        seed=seed, norm_stats={contract.DEFAULT_UNNORM_KEY:
                               contract.LIBERO_OBJECT_STATS.to_openvla()}, **sizes)
    config._attn_implementation = 'sdpa'
    generator_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        model = StandinVLAForActionPrediction(config)
    finally:
        torch.random.set_rng_state(generator_state)
    return model.eval()


def build_standin(path, seed: int = 0, **sizes) -> str:
    """
    Write a stand-in checkpoint (model, tokenizer, norm stats) into ``path``; return it.

    Skips the work when ``path`` already holds a stand-in with the same seed, sizes and
    format version, so tests can call it freely.
    """
    path = os.fspath(path)
    key = _cache_key(seed, sizes)
    marker = os.path.join(path, 'standin_build.json')
    if os.path.isfile(marker):
        with open(marker) as f:
            if json.load(f).get('key') == key:
                return path
    model = build_standin_model(seed, **sizes)
    os.makedirs(path, exist_ok=True)
    model.save_pretrained(path, safe_serialization=True)
    build_standin_tokenizer().save_pretrained(path)
    with open(marker, 'w') as f:
        json.dump({'key': key, 'seed': seed, 'sizes': sizes,
                   'n_parameters': model.num_parameters()}, f, indent=1)
    return path


def cached_standin(seed: int = 0, **sizes) -> str:
    """
    Return the path of a stand-in built once per machine under the temp directory.

    Built into a private directory and renamed into place, so concurrent test processes
    never see a half-written checkpoint.
    """
    key = _cache_key(seed, sizes)
    root = os.path.join(tempfile.gettempdir(), f'tgrpo_standin_cache_{os.getuid()}')
    final = os.path.join(root, key)
    if os.path.isfile(os.path.join(final, 'standin_build.json')):
        return final
    os.makedirs(root, exist_ok=True)
    staging = tempfile.mkdtemp(dir=root, prefix='.building-')
    try:
        build_standin(staging, seed, **sizes)
        try:
            os.rename(staging, final)
        except OSError:  # another process won the race
            pass
    finally:
        if os.path.isdir(staging):
            shutil.rmtree(staging, ignore_errors=True)
    return final


def _cache_key(seed: int, sizes: dict) -> str:
    config = StandinVLAConfig(**sizes)  # defaults filled in, so equal models share a key
    resolved = {name: getattr(config, name) for name in _SIZE_FIELDS}
    text = json.dumps({'v': STANDIN_FORMAT_VERSION, 'seed': seed, 'sizes': resolved},
                      sort_keys=True)
    return f'seed{seed}-' + hashlib.sha256(text.encode()).hexdigest()[:12]


def main(argv=None) -> int:
    """Write a stand-in checkpoint: ``tgrpo_build_standin OUTPUT_DIR [--seed N] [sizes]``."""
    parser = argparse.ArgumentParser(
        prog='tgrpo_build_standin',
        description='Write a small random-init OpenVLA stand-in (save_pretrained format, '
                    'tokenizer and LIBERO-Object normalisation statistics included).')
    parser.add_argument('output_dir', help='directory to write the checkpoint into')
    parser.add_argument('--seed', type=int, default=0, help='random seed of the weights')
    parser.add_argument('--hidden-size', type=int, default=96, help='language model width')
    parser.add_argument('--layers', type=int, default=4, help='number of decoder layers')
    parser.add_argument('--heads', type=int, default=4, help='attention heads per layer')
    parser.add_argument('--intermediate-size', type=int, default=256, help='MLP width')
    parser.add_argument('--vision-width', type=int, default=32,
                        help='width of each of the two patch stems')
    parser.add_argument('--patch-size', type=int, default=28,
                        help='patch side in pixels: 28 gives 64 patches at 224 px, 14 gives '
                             "OpenVLA's 256 (about 3x slower sampling on CPU)")
    args = parser.parse_args(argv)
    sizes = {'hidden_size': args.hidden_size, 'num_hidden_layers': args.layers,
             'num_attention_heads': args.heads, 'intermediate_size': args.intermediate_size,
             'vision_width': args.vision_width, 'patch_size': args.patch_size}
    try:
        path = build_standin(args.output_dir, seed=args.seed, **sizes)
    except ValueError as error:
        print(f'tgrpo_build_standin: {error}', file=sys.stderr)
        return 2
    with open(os.path.join(path, 'standin_build.json')) as f:
        n_parameters = json.load(f)['n_parameters']
    print(f'wrote stand-in (seed {args.seed}, {n_parameters / 1e6:.2f} M parameters) to {path}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
