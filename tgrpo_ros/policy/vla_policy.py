"""
Batched action sampling and teacher-forced log-probs for OpenVLA-style models.

The same code drives the real OpenVLA-7B and the stand-in: both expose
``vision_backbone``, ``projector`` and ``language_model`` (a Llama causal LM).  The
multimodal sequence is built here, left-padded, as

    [PAD ... PAD, BOS, patch_1 .. patch_P, prompt tokens .., 29871, a_1 .. a_7]

so every row ends at the same position and one KV cache serves the whole batch
(OpenVLA's own cached ``generate`` asserts batch size 1).  Position ids count only
the real tokens.  Logits are computed for the 256 action rows only, at the 7
positions that predict actions (``-8..-2`` of the full sequence).
"""

from contextlib import contextmanager
from dataclasses import dataclass
import logging
import math
import threading
import time
from typing import Optional, Sequence

import numpy as np
import torch

from tgrpo_ros.policy import adapters, contract

_LOGGER = logging.getLogger(__name__)
_DEFAULT_ADAPTER = 'default'
_REFERENCE_ADAPTER = 'reference'


@dataclass
class SampleOutput:
    """Result of ``VLAPolicy.sample`` for a batch of B observations."""

    action_tokens: torch.Tensor  # [B, 7] int64, ids in 31744..31999
    log_probs: torch.Tensor  # [B, 7] float32, log-softmax(logits / T) over the 256 action ids
    actions: np.ndarray  # [B, 7] float64, un-normalised, gripper in [0, 1]
    normalized_actions: np.ndarray  # [B, 7] float64, bin centres in [-1, 1]
    seconds: float  # wall time of the call


def pixel_values_tensor(images) -> torch.Tensor:
    """Torch version of ``contract.pixel_values_from_images`` (same values, faster)."""
    batch = [np.asarray(image) for image in images]
    if any(img.shape != (contract.IMAGE_SIZE, contract.IMAGE_SIZE, 3) or img.dtype != np.uint8
           for img in batch) or not batch:
        return torch.from_numpy(contract.pixel_values_from_images(images))  # checks + resizes
    rgb = torch.from_numpy(np.stack(batch)).permute(0, 3, 1, 2)  # uint8 [B, 3, H, W] view
    mean = torch.tensor(contract.DINOV2_MEAN + contract.SIGLIP_MEAN).view(1, 6, 1, 1)
    std = torch.tensor(contract.DINOV2_STD + contract.SIGLIP_STD).view(1, 6, 1, 1)
    out = torch.empty(rgb.shape[0], 6, rgb.shape[2], rgb.shape[3])  # [B, 6, H, W]
    out[:, :3] = rgb
    out[:, 3:] = out[:, :3]
    # (x / 255 - mean) / std, in place to spare temporaries (this runs per request).
    return out.mul_(1.0 / (255.0 * std)).add_(-mean / std)


@dataclass
class PreparedAdapter:
    """An adapter read and checked against this policy, ready to swap in."""

    path: str
    tensors: dict  # name -> tensor, as read_adapter returns them


def _check_temperature(temperature) -> float:
    if isinstance(temperature, bool) or not 0.0 < float(temperature) < math.inf:
        raise ValueError(f'temperature must be > 0 and finite, got {temperature!r}')
    return float(temperature)


class VLAPolicy:
    """
    An OpenVLA-style policy with one hot-swappable adapter and a frozen reference.

    Build it with ``tgrpo_ros.policy.load_policy``.  ``sample`` and ``log_probs`` are
    thread-safe against ``load_adapter`` (one lock), so a server can swap adapters from a
    parameter callback while another thread samples.
    """

    def __init__(self, model, tokenizer, norm_stats: contract.ActionNormStats,
                 lora: Optional[adapters.LoraSettings] = None, trainable: str = 'lora',
                 adapter_root: Optional[str] = None, name_or_path: str = '',
                 temperature: float = 1.0):
        """Wrap a loaded model: attach LoRA (unless trainable='full') and freeze the base."""
        self.trainable = adapters.check_trainable(trainable)
        self.lora = lora if lora is not None else adapters.LoraSettings()
        self.tokenizer = tokenizer
        self.norm_stats = norm_stats
        self.adapter_root = adapter_root
        self.name_or_path = name_or_path
        self.adapter_version = -1  # -1: the bare base (or the initial, untrained adapter)
        # Default temperature of ``sample`` and ``log_probs``: the server samples and the
        # learner scores with the same one, or training is silently off-policy.
        self.temperature = _check_temperature(temperature)
        self.adapter_path = None
        self._lock = threading.RLock()
        self._in_reference = False
        model.eval()
        for param in model.parameters():
            param.requires_grad_(False)
        self.base_fingerprint = adapters.base_fingerprint(model)
        self._check_vocabulary(model, tokenizer)
        self._reference_core = None
        self._reference_delta = None
        self._has_reference_adapter = False
        if self.trainable == 'full':
            import copy
            self.model = model
            self._reference_core = copy.deepcopy(model)  # a second copy: stand-in sized only
        else:
            from peft import get_peft_model
            self._peft_config = self.lora.peft_config(model)  # 'all-linear' expanded once
            self.model = get_peft_model(model, self._peft_config)
            if not isinstance(model.language_model.get_output_embeddings(), torch.nn.Linear):
                raise ValueError(f'LoRA targets {self.lora.target_modules} wrapped the output '
                                 "layer; use trainable='lora+action_head' to train it")
        self._core = model  # the VLA module in use (LoRA layers are injected in place)
        self._trained_core = model  # the one the optimiser updates
        lm_head = self._core.language_model.get_output_embeddings()
        hidden = lm_head.weight.shape[1]
        # Trainable delta on the 256 action rows of the output layer, float32 [256, H].
        self.action_head_delta = torch.nn.Parameter(
            torch.zeros(contract.N_ACTION_BINS, hidden, device=lm_head.weight.device))
        self._apply_trainable()
        self.device = lm_head.weight.device
        self.dtype = lm_head.weight.dtype

    # ------------------------------------------------------------------ parameters
    def _lora_parameters(self, adapter_name: str = _DEFAULT_ADAPTER):
        marker = f'.{adapter_name}.'
        return [(name, param) for name, param in self.model.named_parameters()
                if 'lora_' in name and marker in name]

    def _apply_trainable(self) -> None:
        trainable = {id(p) for p in self.trainable_parameters()}
        for param in self.model.parameters():
            param.requires_grad_(id(param) in trainable)
        self.action_head_delta.requires_grad_(id(self.action_head_delta) in trainable)

    def trainable_parameters(self) -> list:
        """Return the parameters the learner should optimise (hand them to the optimiser)."""
        if self.trainable == 'full':
            return list(self._trained_core.parameters())
        params = [param for _, param in self._lora_parameters()]
        if self.trainable == 'lora+action_head':
            params.append(self.action_head_delta)
        return params

    def named_trainable_parameters(self) -> dict:
        """Return {name: parameter} of what ``trainable_parameters`` returns."""
        if self.trainable == 'full':
            return dict(self._trained_core.named_parameters())
        named = dict(self._lora_parameters())
        if self.trainable == 'lora+action_head':
            named[adapters.ACTION_DELTA_KEY] = self.action_head_delta
        return named

    def num_trainable_parameters(self) -> int:
        """Return the number of trainable scalars."""
        return sum(p.numel() for p in self.trainable_parameters())

    def optimizer(self, lr: float = 1e-5, weight_decay: float = 0.0, **kwargs):
        """Return ``torch.optim.AdamW`` over the trainable parameters (TGRPO uses AdamW)."""
        return torch.optim.AdamW(self.trainable_parameters(), lr=lr,
                                 weight_decay=weight_decay, **kwargs)

    # ------------------------------------------------------------------ inputs
    @staticmethod
    def _check_vocabulary(model, tokenizer) -> None:
        rows = model.language_model.get_output_embeddings().weight.shape[0]
        if rows <= contract.ACTION_TOKEN_MAX:
            raise ValueError(f'the output layer has {rows} rows; OpenVLA needs more than '
                             f'{contract.ACTION_TOKEN_MAX}')
        if tokenizer.bos_token_id != contract.BOS_TOKEN_ID:
            raise ValueError(f'tokenizer BOS id is {tokenizer.bos_token_id}, '
                             f'expected {contract.BOS_TOKEN_ID}')

    def _pixel_values(self, images) -> torch.Tensor:
        if isinstance(images, torch.Tensor):
            images = images.cpu().numpy()
        return pixel_values_tensor(images).to(self.device, self.dtype)  # [B, 6, 224, 224]

    def _prompt_ids(self, instructions: Sequence[str]) -> list:
        if isinstance(instructions, str):
            raise TypeError('instructions must be a sequence of str (one per image), got a str')
        return [contract.prompt_token_ids(self.tokenizer, text) for text in instructions]

    def _embed(self, images, instructions, action_tokens=None):
        """Build left-padded embeddings; return (embeds [B, L, H], mask [B, L], pos [B, L])."""
        prompt_ids = self._prompt_ids(instructions)
        batch = len(prompt_ids)
        n_images = len(images)
        if n_images != batch:
            raise ValueError(f'got {n_images} images but {batch} instructions')
        if action_tokens is not None:
            if tuple(action_tokens.shape) != (batch, contract.ACTION_DIM):
                raise ValueError(f'action_tokens must be [{batch}, {contract.ACTION_DIM}], '
                                 f'got {list(action_tokens.shape)}')
            prompt_ids = [ids + action_tokens[i].tolist() for i, ids in enumerate(prompt_ids)]
        core = self._core
        patches = core.projector(core.vision_backbone(self._pixel_values(images)))  # [B, P, H]
        embed = core.get_input_embeddings()
        lengths = [len(ids) + patches.shape[1] for ids in prompt_ids]
        total = max(lengths)
        pad_id = contract.PAD_TOKEN_ID
        rows = []
        for i, ids in enumerate(prompt_ids):
            ids = torch.tensor([pad_id] * (total - lengths[i]) + ids, device=self.device)
            tokens = embed(ids)  # [L - P, H]
            start = total - lengths[i]  # index of BOS
            rows.append(torch.cat([tokens[:start + 1], patches[i].to(tokens.dtype),
                                   tokens[start + 1:]]))
        embeds = torch.stack(rows)  # [B, L, H]
        starts = torch.tensor([total - n for n in lengths], device=self.device)
        positions = torch.arange(total, device=self.device).unsqueeze(0)  # [1, L]
        mask = (positions >= starts.unsqueeze(1)).long()  # [B, L]
        position_ids = (positions - starts.unsqueeze(1)).clamp(min=0)  # [B, L]
        return embeds, mask, position_ids

    def _action_logits(self, hidden: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
        """Logits of the 256 action ids, float32 [..., 256]; column j is id 31744 + j."""
        weight = self._core.language_model.get_output_embeddings().weight
        rows = weight[contract.ACTION_TOKEN_MIN:contract.ACTION_TOKEN_MAX + 1].float()
        if self._use_delta():
            rows = rows + self._active_delta()
        return (hidden.float() @ rows.T) / temperature

    def _use_delta(self) -> bool:
        if self.trainable == 'full':
            return False
        if self._in_reference:
            return self._reference_delta is not None
        return True

    def _active_delta(self) -> torch.Tensor:
        if self._in_reference:
            return self._reference_delta
        return self.action_head_delta

    def _decoder(self):
        return self._core, self._core.language_model.get_decoder()

    def _temperature(self, temperature: Optional[float]) -> float:
        return self.temperature if temperature is None else _check_temperature(temperature)

    # ------------------------------------------------------------------ sampling
    def sample(self, images, instructions: Sequence[str], temperature: Optional[float] = None,
               greedy: bool = False, generator: Optional[torch.Generator] = None
               ) -> SampleOutput:
        """
        Sample 7 action tokens per observation in one batched, KV-cached pass.

        images: uint8 [B, 224, 224, 3] RGB in the policy's view (other sizes are resized).
        Sampling is restricted to the 256 action ids; ``log_probs`` are those of the
        sampling distribution softmax(logits / temperature) (for greedy: temperature 1).
        ``temperature`` defaults to the policy's own (``self.temperature``).
        """
        temperature = self._temperature(temperature)
        start = time.perf_counter()
        with self._lock, torch.no_grad():
            core, decoder = self._decoder()
            embeds, mask, position_ids = self._embed(images, instructions)
            out = decoder(inputs_embeds=embeds, attention_mask=mask, position_ids=position_ids,
                          use_cache=True)
            cache = out.past_key_values
            hidden = out.last_hidden_state[:, -1]  # [B, H]
            next_position = position_ids[:, -1:] + 1  # [B, 1]
            embed = core.get_input_embeddings()
            tokens, log_probs = [], []
            for step in range(contract.ACTION_DIM):
                logits = self._action_logits(hidden, 1.0 if greedy else temperature)  # [B, 256]
                step_log_probs = torch.log_softmax(logits, dim=-1)
                if greedy:
                    index = logits.argmax(dim=-1)  # [B]
                else:
                    index = torch.multinomial(step_log_probs.exp(), 1, generator=generator)[:, 0]
                tokens.append(index + contract.ACTION_TOKEN_MIN)
                log_probs.append(step_log_probs.gather(1, index[:, None])[:, 0])
                if step == contract.ACTION_DIM - 1:
                    break
                mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)
                out = decoder(inputs_embeds=embed(tokens[-1][:, None]), attention_mask=mask,
                              position_ids=next_position, past_key_values=cache, use_cache=True)
                cache = out.past_key_values
                hidden = out.last_hidden_state[:, -1]
                next_position = next_position + 1
        action_tokens = torch.stack(tokens, dim=1).cpu()  # [B, 7]
        normalized = contract.decode_action_tokens(action_tokens.numpy())  # [B, 7]
        return SampleOutput(
            action_tokens=action_tokens, log_probs=torch.stack(log_probs, dim=1).cpu(),
            actions=contract.unnormalize_actions(normalized, self.norm_stats),
            normalized_actions=normalized, seconds=time.perf_counter() - start)

    # ------------------------------------------------------------------ log-probs
    def log_probs(self, images, instructions: Sequence[str], action_tokens,
                  with_entropy: bool = False, temperature: Optional[float] = None):
        """
        Teacher-forced log-probs of B x 7 action tokens in one forward pass.

        Returns (log_probs [B, 7], entropy [B, 7] or None), float32, differentiable with
        respect to ``trainable_parameters()`` unless called under ``torch.no_grad``.
        Softmax is over the 256 action ids only, at ``temperature`` (default: the
        policy's own, the one it samples with).
        """
        action_tokens = torch.as_tensor(action_tokens, dtype=torch.long).to(self.device)
        all_log_probs = self.action_log_softmax(images, instructions, action_tokens,
                                                temperature)  # [B, 7, 256]
        index = (action_tokens - contract.ACTION_TOKEN_MIN).unsqueeze(-1)  # [B, 7, 1]
        per_token_log_probs = all_log_probs.gather(-1, index).squeeze(-1)  # [B, 7]
        entropy = None
        if with_entropy:
            entropy = -(all_log_probs.exp() * all_log_probs).sum(-1)  # [B, 7]
        return per_token_log_probs, entropy

    def action_log_softmax(self, images, instructions: Sequence[str], action_tokens,
                           temperature: Optional[float] = None) -> torch.Tensor:
        """
        Teacher-forced log-softmax over the 256 action ids at each of the 7 positions.

        Returns float32 [B, 7, 256] (column j is id 31744 + j), differentiable like
        ``log_probs``, which gathers the given tokens from it; supervised fine-tuning
        also reads its argmax (token accuracy). ``temperature`` defaults to the policy's.
        """
        temperature = self._temperature(temperature)
        action_tokens = torch.as_tensor(action_tokens, dtype=torch.long).to(self.device)
        bad = (action_tokens < contract.ACTION_TOKEN_MIN) | (
            action_tokens > contract.ACTION_TOKEN_MAX)
        if bool(bad.any()):
            raise ValueError(f'action_tokens must be in {contract.ACTION_TOKEN_MIN}..'
                             f'{contract.ACTION_TOKEN_MAX}, got {action_tokens[bad].tolist()}')
        with self._lock:
            _, decoder = self._decoder()
            embeds, mask, position_ids = self._embed(images, instructions, action_tokens)
            hidden = decoder(inputs_embeds=embeds, attention_mask=mask,
                             position_ids=position_ids, use_cache=False).last_hidden_state
            hidden = hidden[:, -contract.ACTION_DIM - 1:-1]  # [B, 7, H], predicts a_1..a_7
            logits = self._action_logits(hidden, temperature)  # [B, 7, 256]
        return torch.log_softmax(logits, dim=-1)

    # ------------------------------------------------------------------ reference
    @contextmanager
    def reference(self):
        """
        Run ``sample``/``log_probs`` on the frozen reference policy inside this block.

        The reference is the base with adapters (and the action-head delta) disabled,
        or the adapter set with ``set_reference_adapter``.  No second copy of the base
        is made, except in trainable mode 'full'.  Gradients are off inside.
        """
        with self._lock:
            layers = self._lora_layers()
            saved = [(layer._disable_adapters, layer._active_adapter) for layer in layers]
            saved_core = self._core
            try:
                self._in_reference = True
                if self._reference_core is not None:
                    self._core = self._reference_core
                for layer in layers:
                    if self._has_reference_adapter:
                        layer._active_adapter = [_REFERENCE_ADAPTER]
                    else:
                        layer._disable_adapters = True
                with torch.no_grad():
                    yield self
            finally:
                self._in_reference = False
                self._core = saved_core
                for layer, (disabled, active) in zip(layers, saved):
                    layer._disable_adapters = disabled
                    layer._active_adapter = active

    def _lora_layers(self) -> list:
        if self.trainable == 'full':
            return []
        from peft.tuners.tuners_utils import BaseTunerLayer
        return [m for m in self._trained_core.modules() if isinstance(m, BaseTunerLayer)]

    def set_reference_adapter(self, path) -> None:
        """Use a saved adapter (frozen) as the reference instead of the bare base."""
        if self.trainable == 'full':
            raise adapters.AdapterError("trainable='full' keeps the base as its reference")
        config, tensors, metadata = adapters.read_adapter(path, self.adapter_root)
        self._check_metadata(path, metadata)
        with self._lock:
            if not self._has_reference_adapter:
                import copy
                config = copy.deepcopy(self._peft_config)
                config.inference_mode = True
                self.model.add_adapter(_REFERENCE_ADAPTER, config)
                self.model.set_adapter(_DEFAULT_ADAPTER)
                self._apply_trainable()
                self._has_reference_adapter = True
            targets = self._adapter_targets(_REFERENCE_ADAPTER)
            self._check_tensors(path, tensors, targets, allow_delta=True)
            with torch.no_grad():
                for key, param in targets.items():
                    param.copy_(tensors[key])
            delta = tensors.get(adapters.ACTION_DELTA_KEY)
            self._reference_delta = None if delta is None else delta.to(
                self.device, torch.float32)

    # ------------------------------------------------------------------ adapters
    def _adapter_targets(self, adapter_name: str = _DEFAULT_ADAPTER) -> dict:
        """Map saved key -> live parameter (PEFT keys drop the adapter name)."""
        if self.trainable == 'full':
            return {adapters.FULL_PREFIX + name: p
                    for name, p in self._trained_core.named_parameters()}
        return {name.replace(f'.{adapter_name}.', '.'): param
                for name, param in self._lora_parameters(adapter_name)}

    def save_adapter(self, path) -> str:
        """Write the trainable state as adapter_config.json + adapter_model.safetensors."""
        with self._lock:
            tensors = {key: p.detach().to('cpu').contiguous()
                       for key, p in self._adapter_targets().items()}
            if self.trainable == 'lora+action_head':
                tensors[adapters.ACTION_DELTA_KEY] = self.action_head_delta.detach().cpu().clone()
            if self.trainable == 'full':
                config = {'tgrpo_trainable': 'full'}
            else:
                config = self.model.peft_config[_DEFAULT_ADAPTER].to_dict()
                config['inference_mode'] = True
            config['base_model_name_or_path'] = self.name_or_path
            metadata = {'format': 'pt', 'tgrpo_trainable': self.trainable,
                        'tgrpo_base_fingerprint': self.base_fingerprint}
            return adapters.write_adapter(path, config, tensors, metadata)

    def _check_metadata(self, path, metadata: dict) -> None:
        fingerprint = metadata.get('tgrpo_base_fingerprint')
        if fingerprint is None:
            _LOGGER.warning('adapter %s carries no base fingerprint; checking shapes only', path)
        elif fingerprint != self.base_fingerprint:
            raise adapters.AdapterError(
                f'adapter {path!r} was trained on another base model (fingerprint '
                f'{fingerprint}, this base is {self.base_fingerprint})')
        mode = metadata.get('tgrpo_trainable', 'lora')
        if (mode == 'full') != (self.trainable == 'full'):
            raise adapters.AdapterError(
                f"adapter {path!r} has trainable mode '{mode}' but this policy runs "
                f"'{self.trainable}'; 'full' adapters only load into trainable='full'")

    def _check_tensors(self, path, tensors: dict, targets: dict, allow_delta: bool) -> None:
        extra = set(tensors) - set(targets) - ({adapters.ACTION_DELTA_KEY} if allow_delta
                                               else set())
        missing = set(targets) - set(tensors)
        if extra or missing:
            raise adapters.AdapterError(
                f"adapter {path!r} does not match this policy's LoRA layout (r={self.lora.r}, "
                f'targets={self.lora.target_modules}): {len(missing)} missing keys '
                f'{sorted(missing)[:3]}, {len(extra)} unexpected keys {sorted(extra)[:3]}')
        for key, param in targets.items():
            if tuple(tensors[key].shape) != tuple(param.shape):
                raise adapters.AdapterError(
                    f'adapter {path!r}: {key} has shape {list(tensors[key].shape)}, '
                    f'expected {list(param.shape)}')
        delta = tensors.get(adapters.ACTION_DELTA_KEY)
        if delta is not None and tuple(delta.shape) != tuple(self.action_head_delta.shape):
            raise adapters.AdapterError(
                f'adapter {path!r}: {adapters.ACTION_DELTA_KEY} has shape {list(delta.shape)}, '
                f'expected {list(self.action_head_delta.shape)}')
        for key, tensor in tensors.items():
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                raise adapters.AdapterError(f'adapter {path!r}: {key} holds NaN or inf')

    def load_adapter(self, path, version: int = 0) -> float:
        """
        Validate the adapter at ``path`` and switch to it in place; return seconds taken.

        Raises AdapterError (and keeps the current adapter) for a path outside the
        adapter root, missing/corrupt files, another base model or another LoRA layout.
        An adapter without the action-head delta resets the delta to zero.
        """
        start = time.perf_counter()
        self.swap_adapter(self.prepare_adapter(path), version)
        return time.perf_counter() - start

    def prepare_adapter(self, path) -> 'PreparedAdapter':
        """
        Read and validate the adapter at ``path`` without touching the served weights.

        Every check of ``load_adapter`` runs here (AdapterError naming the problem);
        ``swap_adapter`` then only copies tensors, so a validate-then-apply caller
        (the policy server's parameter callbacks) cannot fail half-way.
        """
        config, tensors, metadata = adapters.read_adapter(path, self.adapter_root)
        self._check_metadata(path, metadata)
        with self._lock:
            self._check_tensors(path, tensors, self._adapter_targets(),
                                allow_delta=self.trainable != 'full')
        return PreparedAdapter(path=str(path), tensors=tensors)

    def swap_adapter(self, prepared: 'PreparedAdapter', version: int) -> None:
        """Serve a validated adapter from now on, labelled ``version``."""
        with self._lock, torch.no_grad():
            for key, param in self._adapter_targets().items():
                param.copy_(prepared.tensors[key])
            delta = prepared.tensors.get(adapters.ACTION_DELTA_KEY)
            if delta is None:
                self.action_head_delta.zero_()
            else:
                self.action_head_delta.copy_(delta)
            self.adapter_version = int(version)
            self.adapter_path = prepared.path
