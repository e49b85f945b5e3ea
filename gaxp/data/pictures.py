"""Image files read by one stated rule (``gaxp-fid`` folders, ``data=paired_folder``): every
Pillow mode becomes uint8 greyscale [H, W, 1] or RGB [H, W, 3].

| mode | rule |
|---|---|
| ``L``, ``1`` | greyscale as stored (``1``: 0 or 255) |
| ``I;16``, ``I;16B``, ``I;16L``, ``I`` (16-bit greyscale) | scaled to 8 bits: ``round(v * 255 / 65535)`` (Pillow's own conversion clips at 255 instead) |
| ``RGB`` | as stored |
| ``LA``, ``RGBA``, ``RGBa``, ``PA``, ``P`` with transparency | alpha composited on black: ``round(c * a / 255)``, alpha dropped |
| ``P`` (palette), ``CMYK``, ``YCbCr``, ``LAB``, ``HSV`` | converted to RGB by Pillow |
| ``F`` (32-bit float) and anything else | refused with one line |

``read(path)`` returns the array and the names of the rules that changed values (``16-bit``,
``alpha``), so a caller can say once per folder what it did.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from gaxp.errors import ConfigError

SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I")
WITH_ALPHA = ("LA", "RGBA", "RGBa", "PA", "La")
TO_RGB = ("P", "CMYK", "YCbCr", "LAB", "HSV")
NOTES = {"16-bit": "16-bit greyscale scaled to 8 bits (v * 255 / 65535)",
         "alpha": "alpha composited on black"}


def _composite(im: Image.Image) -> np.ndarray:
    grey = im.mode in ("LA", "La")
    rgba = np.asarray(im.convert("LA" if grey else "RGBA"), np.float64)
    colour, alpha = rgba[..., :-1], rgba[..., -1:]
    return np.rint(colour * alpha / 255.0).astype(np.uint8)


def read(path: Path) -> tuple[np.ndarray, set]:
    """One image file -> (uint8 [H, W, 1 or 3], the rules that changed its values)."""
    try:
        with Image.open(path) as im:
            im.load()
            mode, applied = im.mode, set()
            if mode in ("L", "1", "RGB"):
                a = np.asarray(im.convert("L" if mode == "1" else mode), np.uint8)
            elif mode in SIXTEEN_BIT:
                v = np.asarray(im, np.int64)
                a, applied = np.rint(np.clip(v, 0, 65535) * (255.0 / 65535.0)).astype(np.uint8), {"16-bit"}
            elif mode in WITH_ALPHA or (mode == "P" and "transparency" in im.info):
                a, applied = _composite(im), {"alpha"}
            elif mode in TO_RGB:
                a = np.asarray(im.convert("RGB"), np.uint8)
            else:
                raise ConfigError(f"{path}: Pillow mode {mode} has no stated 8-bit conversion; save "
                                  "it as 8-bit greyscale or RGB (PNG) first")
    except OSError as e:
        raise ConfigError(f"cannot read image {path}: {e}") from None
    return (a[..., None] if a.ndim == 2 else a), applied


def note(counts: dict, where) -> str | None:
    """One line for a folder: how many images each value-changing rule touched, or None."""
    if not counts:
        return None
    return f"{where}: " + "; ".join(f"{n} image(s): {NOTES[k]}" for k, n in sorted(counts.items()))
