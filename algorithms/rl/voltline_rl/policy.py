"""A local Hugging Face causal LM with a trainable LoRA adapter, and its packed artifact.

Shared by GRPO and SFT: loads the base model once (lazily, so constructing an algorithm is
cheap), wraps it with peft, keeps the optimizer across steps, and packs the adapter in the
exact format the LLM proxy hot-swaps (``voltline.proxy.adapters.pack_adapter``).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from voltline.algorithms import Algorithm, NewResource
from voltline.proxy.adapters import pack_adapter, unpack_adapter

__all__ = ["LoraAlgorithm", "LoraPolicy", "LoraSettings"]


class LoraSettings:
    """LoRA and optimizer settings (defaults: the recipe that worked on CPU, rl-on-cpu.md)."""

    def __init__(
        self,
        *,
        r: int = 16,
        alpha: int = 32,
        dropout: float = 0.0,
        target_modules: str | Sequence[str] = "all-linear",
        lr: float = 5e-4,
        weight_decay: float = 0.0,
        max_grad_norm: float = 1.0,
    ) -> None:
        self.r, self.alpha, self.dropout = r, alpha, dropout
        self.target_modules = target_modules if isinstance(target_modules, str) else list(target_modules)
        self.lr, self.weight_decay, self.max_grad_norm = lr, weight_decay, max_grad_norm


class LoraPolicy:
    """The base model at ``model_dir`` with one trainable LoRA adapter and its AdamW optimizer."""

    def __init__(
        self,
        model_dir: str | Path,
        settings: LoraSettings,
        *,
        init_adapter: str | Path | bytes | None = None,
        device: str | None = None,
        seed: int = 0,
    ) -> None:
        self.model_dir = Path(model_dir)
        if not self.model_dir.is_dir():
            raise FileNotFoundError(f"no model directory {self.model_dir} (see `voltline model init`)")
        self.settings = settings
        self.init_adapter = init_adapter
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.seed = seed
        self._model: Any = None
        self._optimizer: torch.optim.Optimizer | None = None
        self.pad_id = 0
        # Trained alongside the adapter but not part of it (PPO's value head).
        self.extra_parameters: list[torch.nn.Parameter] = []
        self.loaded_from: Path | None = None  # the folder `init_adapter` was read from

    @property
    def model(self) -> Any:
        """The peft model (loaded on first use)."""
        if self._model is None:
            self._load()
        return self._model

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad] + self.extra_parameters

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        if self._optimizer is None:
            params = self.trainable_parameters()
            self._optimizer = torch.optim.AdamW(
                params, lr=self.settings.lr, weight_decay=self.settings.weight_decay
            )
        return self._optimizer

    def _load(self) -> None:
        import peft
        from transformers import AutoModelForCausalLM

        # fp32: tiny CPU models; the proxy samples in fp32 too, so recomputed logprobs match.
        kwargs = _dtype_kwargs(torch.float32)
        base = AutoModelForCausalLM.from_pretrained(str(self.model_dir), **kwargs).to(self.device)
        config = base.config
        pad = getattr(config, "pad_token_id", None)
        if pad is None:
            pad = getattr(config, "eos_token_id", None)
        if isinstance(pad, list):
            pad = pad[0] if pad else None
        self.pad_id = int(pad) if pad is not None else 0
        torch.manual_seed(self.seed)  # LoRA's A matrices are random: make runs repeatable
        if self.init_adapter is not None:
            path = self.init_adapter
            if isinstance(path, bytes):
                path = unpack_adapter(path)
            self.loaded_from = Path(path)
            self._model = peft.PeftModel.from_pretrained(base, str(path), is_trainable=True)
        else:
            lora = peft.LoraConfig(
                r=self.settings.r,
                lora_alpha=self.settings.alpha,
                lora_dropout=self.settings.dropout,
                target_modules=self.settings.target_modules,
                task_type="CAUSAL_LM",
            )
            self._model = peft.get_peft_model(base, lora)
        # eval(): dropout off, so recomputed logprobs equal the sampler's; gradients still flow.
        self._model.eval()

    def clip_and_step(self) -> float:
        """Clip the gradient norm, take one optimizer step, zero the gradients; returns the norm."""
        params = self.trainable_parameters()
        norm = torch.nn.utils.clip_grad_norm_(params, self.settings.max_grad_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return float(norm)

    def pack(self, extra: Callable[[Path], None] | None = None) -> bytes:
        """The adapter as ``peft-tar-gz`` bytes (``adapter_config.json`` + safetensors weights).

        ``extra(folder)`` may add files (peft and the proxy ignore files they do not know).
        """
        with tempfile.TemporaryDirectory(prefix="voltline-rl-") as tmp:
            self.model.save_pretrained(tmp)
            if extra is not None:
                extra(Path(tmp))
            return pack_adapter(tmp)

    def new_resource(
        self, name: str, metrics: dict[str, float], extra: Callable[[Path], None] | None = None
    ) -> NewResource:
        """The current adapter as a new ``lora_adapter`` version of ``name``, ready to publish."""
        return NewResource(
            name=name,
            kind="lora_adapter",
            payload={"format": "peft-tar-gz", "base_model": str(self.model_dir)},
            artifact=self.pack(extra),
            metrics=metrics,
        )


def _dtype_kwargs(dtype: torch.dtype) -> dict[str, Any]:
    # `from_pretrained` renamed torch_dtype to dtype in transformers 4.56.
    import transformers

    major, minor = (int(p) for p in transformers.__version__.split(".")[:2])
    return {"dtype": dtype} if (major, minor) >= (4, 56) else {"torch_dtype": dtype}


class LoraAlgorithm(Algorithm):
    """What GRPO, SFT and PPO share: exactly one owned `lora_adapter` resource, trained by a
    `LoraPolicy` built from the LoRA and optimizer keyword arguments of their constructors."""

    def __init__(self, *, resources: Sequence[str] | None = None, **config: Any) -> None:
        super().__init__(resources=resources, **config)
        if len(self.owned_resources) != 1:
            raise ValueError(
                f"{type(self).__name__} trains exactly one adapter; got resources={self.owned_resources!r}"
            )

    def _init_policy(
        self,
        model: str | Path,
        *,
        lr: float,
        lora_r: int,
        lora_alpha: int,
        lora_dropout: float,
        target_modules: str | Sequence[str],
        max_grad_norm: float,
        init_adapter: str | Path | bytes | None,
        device: str | None,
        seed: int,
    ) -> None:
        settings = LoraSettings(
            r=lora_r, alpha=lora_alpha, dropout=lora_dropout, target_modules=target_modules, lr=lr,
            max_grad_norm=max_grad_norm,
        )  # fmt: skip
        self.policy = LoraPolicy(model, settings, init_adapter=init_adapter, device=device, seed=seed)
        self.steps = 0

    @property
    def model(self) -> Any:
        """The peft model being trained (loaded on first use)."""
        return self.policy.model
