"""Images of items: reading them as the sources give them, and telling items apart by them.

A source may hold an image as a file path (relative paths start from the data file's folder), encoded bytes
(PNG, JPEG, ...), a Hugging Face ``datasets`` image cell (``{"bytes": ..., "path": ...}``), a Pillow image or
an ``(H, W[, C])`` uint8 array. ``load_image`` turns any of them into an RGB Pillow image; ``image_digest``
fingerprints one without decoding it where it can, so held-out checks stay cheap.
"""

from __future__ import annotations

import base64
import hashlib
import io
from pathlib import Path
from typing import Any

from verity.schema import ConfigError
from verity.types import Item


def load_image(ref: Any) -> Any:
    """An RGB ``PIL.Image`` of ``ref``; an unreadable one is a ``ConfigError`` saying what it was."""
    from PIL import Image, UnidentifiedImageError

    if isinstance(ref, Image.Image):
        return ref.convert("RGB")
    if isinstance(ref, dict):
        ref = ref.get("bytes") or ref.get("path")
    try:
        if isinstance(ref, (bytes, bytearray)):
            return Image.open(io.BytesIO(ref)).convert("RGB")
        if isinstance(ref, (str, Path)):
            return Image.open(ref).convert("RGB")
        if hasattr(ref, "__array__"):
            import numpy as np

            return Image.fromarray(np.asarray(ref, dtype=np.uint8)).convert("RGB")
    except (OSError, UnidentifiedImageError, TypeError, ValueError) as err:
        raise ConfigError(f"cannot read image {_describe(ref)}: {err}") from None
    raise ConfigError(
        f"cannot read image {_describe(ref)}: give a path, bytes, a {{'bytes'|'path': ...}} dict, a Pillow image "
        "or a uint8 array"
    )


def image_digest(ref: Any) -> str:
    """A short fingerprint of an image reference: of its path, its bytes, or its decoded pixels."""
    if isinstance(ref, dict):
        ref = ref.get("bytes") or ref.get("path")
    if isinstance(ref, (str, Path)):
        data = str(ref).encode()
    elif isinstance(ref, (bytes, bytearray)):
        data = bytes(ref)
    else:
        image = load_image(ref)
        data = f"{image.size}".encode() + image.tobytes()
    return hashlib.sha1(data).hexdigest()[:16]


def item_key(item: Item) -> str:
    """What identifies an item's question for held-out checks: its prompt, and its images when it has any (a
    visual task asks the same words of every image)."""
    if not item.images:
        return item.prompt
    return "\x00".join([item.prompt, *(image_digest(ref) for ref in item.images)])


def image_data_uri(ref: Any, max_side: int = 128) -> str:
    """A PNG data URI of the image (shrunk to at most ``max_side`` pixels a side), for reports and eval files."""
    image = load_image(ref)
    image.thumbnail((max_side, max_side))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def row_images(value: Any, base: Path | None, where: str) -> tuple[Any, ...]:
    """A row's image column as a tuple of references: one image or a list of them; relative paths are resolved
    against ``base`` (the data file's folder)."""
    if value is None:
        return ()
    refs = list(value) if isinstance(value, (list, tuple)) else [value]
    out = []
    for ref in refs:
        if isinstance(ref, str) and base is not None and not Path(ref).is_absolute():
            ref = str(base / ref)
        if isinstance(ref, str) and not Path(ref).is_file():
            raise ConfigError(f"{where}: image file not found: {ref}")
        out.append(ref)
    return tuple(out)


def _describe(ref: Any) -> str:
    if isinstance(ref, (bytes, bytearray)):
        return f"({len(ref)} bytes)"
    if isinstance(ref, (str, Path)):
        return repr(str(ref))
    return f"of type {type(ref).__name__}"
