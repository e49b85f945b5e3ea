"""Sample pictures: image grids and 2D scatter plots as PNG files."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image

from gaxp.files import atomic_path


def to_uint8(images: np.ndarray) -> np.ndarray:
    """Floats in [-1, 1] -> uint8 pixels in [0, 255] (rounded, clipped)."""
    return np.clip(np.rint((np.asarray(images, np.float32) + 1.0) * 127.5), 0, 255).astype(np.uint8)


def image_grid(images: np.ndarray, cols: int | None = None, pad: int = 2) -> np.ndarray:
    """[N, H, W, C] floats in [-1, 1] -> one uint8 [rows*(H+pad)+pad, cols*(W+pad)+pad, C] grid."""
    n, h, w, c = images.shape
    cols = cols or math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    pixels = to_uint8(images)
    grid = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, c), 255, np.uint8)
    for i in range(n):
        r, q = divmod(i, cols)
        grid[pad + r * (h + pad): pad + r * (h + pad) + h, pad + q * (w + pad): pad + q * (w + pad) + w] = pixels[i]
    return grid


def save_image_grid(images: np.ndarray, path: Path, scale: int = 2, cols: int | None = None) -> Path:
    grid = image_grid(images, cols)
    img = Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid)
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    with atomic_path(path, "a sample grid") as tmp:  # a full disk leaves no half-written PNG
        img.save(tmp)
    return path


def save_scatter(points: np.ndarray, path: Path, modes: np.ndarray | None = None,
                 title: str = "", labels: np.ndarray | None = None) -> Path:
    """Generated 2D points (blue) over the target mode centres (red crosses). With ``labels``
    (a conditional G's requested classes) each point is coloured by its class, and each mode
    centre k is numbered k."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4, 4), dpi=100)
    if labels is None:
        ax.scatter(points[:, 0], points[:, 1], s=2, alpha=0.5, c="tab:blue")
    else:
        cmap = plt.get_cmap("tab10" if int(labels.max()) < 10 else "tab20")
        ax.scatter(points[:, 0], points[:, 1], s=2, alpha=0.5, c=labels % cmap.N, cmap=cmap,
                   vmin=0, vmax=cmap.N - 1)
    if modes is not None:
        ax.scatter(modes[:, 0], modes[:, 1], s=40, marker="x", c="tab:red" if labels is None else "black")
        for k, (mx, my) in enumerate(modes if labels is not None else []):
            ax.annotate(str(k), (mx, my), textcoords="offset points", xytext=(6, 6), fontsize=7)
        lim = float(np.abs(modes).max()) * 1.5 + 0.5
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
    ax.set_aspect("equal")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    try:
        with atomic_path(path, "a sample plot") as tmp:
            fig.savefig(tmp)
    finally:
        plt.close(fig)
    return path
