"""Tests for avsearch.media.image: pictures and frames cut to the square RGB size a tower
declares (the geometry only; normalisation is the tower's)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from avsearch.media.decode import image_pieces
from avsearch.media.image import square_rgb


def _check(arr: np.ndarray, size: int = 224) -> None:
    assert arr.shape == (size, size, 3)
    assert arr.dtype == np.uint8


def test_modes_and_sizes() -> None:
    grey = Image.fromarray(np.full((120, 90), 77, dtype=np.uint8), mode="L")
    out = square_rgb(grey, 224)
    _check(out)
    assert (out == 77).all()

    rgba = Image.new("RGBA", (64, 48), (10, 200, 30, 0))  # fully transparent -> white
    out = square_rgb(rgba, 224)
    _check(out)
    assert (out == 255).all()
    opaque = square_rgb(Image.new("RGBA", (64, 48), (10, 200, 30, 255)), 224)
    assert (opaque == np.array([10, 200, 30], dtype=np.uint8)).all()

    pal = Image.new("RGB", (50, 70), (200, 0, 0)).convert("P", palette=Image.Palette.ADAPTIVE)
    out = square_rgb(pal, 224)
    _check(out)
    assert (np.abs(out.astype(int) - [200, 0, 0]) <= 2).all()

    pal_t = Image.new("P", (40, 40), 0)
    pal_t.putpalette([0, 0, 0] * 256)
    pal_t.info["transparency"] = 0
    assert (square_rgb(pal_t, 224) == 255).all()

    _check(square_rgb(Image.new("LA", (30, 30), (5, 255)), 224))
    _check(square_rgb(Image.new("CMYK", (30, 30)), 224))
    deep = Image.fromarray(np.full((32, 32), 65535, dtype=np.uint16))
    assert (square_rgb(deep, 224) == 255).all()

    mnist = np.zeros((28, 28), dtype=np.uint8)
    mnist[6:22, 12:16] = 255  # a "1"
    out = square_rgb(Image.fromarray(mnist), 224)
    _check(out)
    assert out.max() == 255 and out.min() == 0
    assert out[112, 112].min() > 200 and out[112, 10].max() < 30

    _check(square_rgb(Image.new("RGB", (1, 1), (1, 2, 3)), 224))
    _check(square_rgb(Image.new("RGB", (1000, 37)), 224))
    with pytest.raises(ValueError, match="positive"):
        square_rgb(grey, 0)


def test_centre_crop_geometry() -> None:
    # 512x256 image: left half red, right half blue; the centre crop (224/256 of the shorter
    # side = 224 px square) must straddle the middle symmetrically.
    arr = np.zeros((256, 512, 3), dtype=np.uint8)
    arr[:, :256, 0] = 255
    arr[:, 256:, 2] = 255
    out = square_rgb(Image.fromarray(arr), 224)
    assert (out[:, :100, 0] > 250).all() and (out[:, 124:, 2] > 250).all()
    # a 256x256 image maps its central 224x224 pixels 1:1
    rng = np.random.default_rng(1)
    sq = rng.integers(0, 256, size=(256, 256, 3), dtype=np.uint8)
    np.testing.assert_array_equal(square_rgb(Image.fromarray(sq), 224), sq[16:240, 16:240])
    # another declared size: the same rule, size / (size + 32) of the shorter side
    small = sq[:64, :64]
    np.testing.assert_array_equal(square_rgb(Image.fromarray(small), 32), small[16:48, 16:48])


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    arr = np.zeros((40, 80, 3), dtype=np.uint8)
    arr[:, :40] = (255, 0, 0)  # left half red, right half blue, as stored
    arr[:, 40:] = (0, 0, 255)
    img = Image.fromarray(arr)
    exif = img.getexif()
    exif[0x0112] = 6  # shown rotated 90° clockwise: red on top, blue below
    img.save(tmp_path / "rotated.jpg", exif=exif.tobytes(), quality=95)
    with Image.open(tmp_path / "rotated.jpg") as stored:
        out = square_rgb(stored, 32)
    assert out[2, 16, 0] > 200 and out[-3, 16, 2] > 200


def test_image_pieces_take_the_size_from_the_caller(tmp_path: Path) -> None:
    path = tmp_path / "red.png"
    Image.new("RGB", (300, 200), (200, 30, 30)).save(path)
    (piece,) = list(image_pieces(path, 48))
    assert piece.modality == "visual" and piece.data.shape == (48, 48, 3)
    assert (np.abs(piece.data.astype(int) - [200, 30, 30]) <= 1).all()
