"""Pictures and video frames as the image towers take them: square RGB ``uint8`` arrays.

An image tower declares its input size (:class:`avsearch.encoders.tower.ImageInput`); decoding
cuts every picture and frame to it here, with the evaluation crop of the TF EfficientNet
family: EXIF orientation applied, any mode converted to RGB (greyscale replicated, palette
expanded, alpha composited onto white, 16/32-bit greyscale scaled onto 0-255), then a centred
square of ``size / (size + 32)`` of the shorter side resized to ``size x size`` with bicubic
interpolation - the same as "resize the shorter side to 256, centre-crop 224" for 224. Images
smaller than that are upsampled the same way (a 28x28 digit uses its central 24x24 pixels).

Only geometry and colour space: pixel normalisation belongs to the tower.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageOps

__all__ = ["CROP_PADDING", "square_rgb", "to_rgb"]

CROP_PADDING = 32  # centre crop of size / (size + 32) of the shorter side


def to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode -> RGB; transparency is composited onto white."""
    if img.mode == "RGB":
        return img
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    elif img.mode.startswith("I;16") or img.mode in ("I", "F"):
        # 16/32-bit greyscale: scale the integer range onto 0-255 instead of clipping.
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or arr.max(initial=0) > 255 else 255.0
        if img.mode == "F" and arr.max(initial=0) <= 1.0:
            top = 1.0
        arr = np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        img = Image.fromarray(arr)  # 2-D uint8 -> mode "L"
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        img.mode in ("L", "RGB") and "transparency" in img.info
    ):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def square_rgb(img: Image.Image, size: int) -> np.ndarray:
    """PIL image -> ``uint8 [size, size, 3]`` RGB, the centred evaluation crop (module
    docstring); ``size`` is the one the image tower declares."""
    if size <= 0:
        raise ValueError(f"size must be positive, not {size}")
    img = ImageOps.exif_transpose(img) or img
    img = to_rgb(img)
    width, height = img.size
    if width <= 0 or height <= 0:
        raise ValueError(f"empty image ({width}x{height})")
    crop = size / (size + CROP_PADDING) * min(width, height)
    crop = max(crop, 1.0)
    left = (width - crop) / 2.0
    top = (height - crop) / 2.0
    out = img.resize(
        (size, size),
        resample=Image.Resampling.BICUBIC,
        box=(left, top, left + crop, top + crop),
    )
    return np.array(out, dtype=np.uint8).reshape(size, size, 3)  # writable copy
