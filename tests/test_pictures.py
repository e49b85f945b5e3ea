"""Every image gaxp reads from a folder is converted by one stated rule (gaxp.data.pictures):
16-bit greyscale scaled to 8 bits, alpha composited on black, palette and CMYK to RGB, float refused;
gaxp-fid and paired folders say once what a rule changed."""

import numpy as np
import pytest
from PIL import Image

from gaxp.data import pictures
from gaxp.errors import ConfigError


def _save(tmp_path, name, image):
    path = tmp_path / name
    image.save(path)
    return path


def test_sixteen_bit_grey_is_scaled_not_clipped(tmp_path):
    v = np.array([[0, 257, 32896], [65535, 1000, 65278]], np.uint16)
    path = _save(tmp_path, "g16.png", Image.fromarray(v))
    a, applied = pictures.read(path)
    np.testing.assert_array_equal(a[..., 0], [[0, 1, 128], [255, 4, 254]])
    assert applied == {"16-bit"} and a.dtype == np.uint8
    # Pillow's own conversion, for contrast: clips at 255 (the bug this rule replaces)
    assert np.asarray(Image.open(path).convert("L")).max() == 255
    assert np.asarray(Image.open(path).convert("L"))[0, 1] == 255


def test_alpha_is_composited_on_black(tmp_path):
    rgba = np.zeros((1, 3, 4), np.uint8)
    rgba[0, 0] = (200, 100, 50, 255)   # opaque: as is
    rgba[0, 1] = (200, 100, 50, 0)     # transparent: black
    rgba[0, 2] = (255, 255, 255, 128)  # half: 128
    a, applied = pictures.read(_save(tmp_path, "a.png", Image.fromarray(rgba, "RGBA")))
    np.testing.assert_array_equal(a[0], [[200, 100, 50], [0, 0, 0], [128, 128, 128]])
    assert applied == {"alpha"}
    la = np.array([[[255, 64], [10, 255]]], np.uint8)
    a, _ = pictures.read(_save(tmp_path, "la.png", Image.fromarray(la, "LA")))
    np.testing.assert_array_equal(a[..., 0], [[64, 10]])


def test_palette_cmyk_and_one_bit(tmp_path):
    rgb = np.array([[[255, 0, 0], [0, 0, 255]]], np.uint8)
    pal = Image.fromarray(rgb).convert("P")
    a, applied = pictures.read(_save(tmp_path, "p.png", pal))
    np.testing.assert_array_equal(a, rgb)
    assert not applied
    cmyk = Image.new("CMYK", (2, 1), (0, 255, 255, 0))  # no black, full M and Y: red
    a, _ = pictures.read(_save(tmp_path, "c.tif", cmyk))
    np.testing.assert_array_equal(a[0], [[255, 0, 0], [255, 0, 0]])
    one = Image.fromarray(np.array([[0, 1]], bool))
    a, _ = pictures.read(_save(tmp_path, "b.png", one))
    np.testing.assert_array_equal(a[..., 0], [[0, 255]])


def test_transparent_palette_is_composited(tmp_path):
    pal = Image.new("P", (2, 1))
    pal.putpalette([0, 0, 0, 250, 250, 250] + [0] * 762)
    pal.putpixel((0, 0), 1)
    pal.putpixel((1, 0), 1)
    pal.info["transparency"] = bytes([255, 0] + [255] * 254)  # colour 1 fully transparent
    path = tmp_path / "t.png"
    pal.save(path, transparency=bytes([255, 0] + [255] * 254))
    a, applied = pictures.read(path)
    np.testing.assert_array_equal(a[0], [[0, 0, 0], [0, 0, 0]])
    assert applied == {"alpha"}


def test_float_images_are_refused_in_one_line(tmp_path):
    path = _save(tmp_path, "f.tif", Image.fromarray(np.ones((2, 2), np.float32)))
    with pytest.raises(ConfigError, match="mode F has no stated 8-bit conversion") as e:
        pictures.read(path)
    assert "\n" not in str(e.value)


def test_gaxp_fid_folder_reports_what_it_converted(tmp_path):
    from gaxp.metrics.fid_cli import read_folder

    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(np.full((4, 4), 40000 + i, np.uint16)).save(folder / f"{i}.png")
    Image.fromarray(np.zeros((4, 4, 4), np.uint8), "RGBA").save(folder / "x.png")
    images, note = read_folder(folder)
    assert [a.shape[-1] for a in images] == [1, 1, 1, 3]
    assert images[0].max() == round(40000 * 255 / 65535)
    assert "3 image(s): 16-bit greyscale scaled to 8 bits" in note and "1 image(s): alpha" in note
