"""LoRA adapters as store artifacts: pack a `save_pretrained` folder into bytes, and back."""

from __future__ import annotations

import io
import tarfile
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["pack_adapter", "publish_adapter", "unpack_adapter"]


def pack_adapter(directory: str | Path) -> bytes:
    """A gzipped tar of a peft adapter folder (`adapter_config.json`, `adapter_model.safetensors`)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for path in sorted(Path(directory).iterdir()):
            if path.is_file():
                tar.add(path, arcname=path.name)
    return buf.getvalue()


def unpack_adapter(data: bytes, into: str | Path | None = None) -> Path:
    """Extract packed adapter bytes to a folder (a new temporary one by default)."""
    target = Path(into or tempfile.mkdtemp(prefix="voltline-adapter-"))
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        tar.extractall(target, filter="data")  # "data": no absolute paths, links or devices
    return target


def publish_adapter(store: Any, name: str, directory: str | Path, **options: Any) -> Any:
    """Publish a peft adapter folder as the next `lora_adapter` version of `name`."""
    return store.put_resource(
        name, "lora_adapter", {"format": "peft-tar-gz"}, artifact=pack_adapter(directory), **options
    )
