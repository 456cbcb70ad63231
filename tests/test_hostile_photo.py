"""Hostile and unusual photos: the header is checked before decoding, a huge photo is shrunk while it is read, and
every problem is one line naming the file, the limit and the fix. Normal photos come back exactly as OpenCV read
them before."""

import numpy as np
import pytest

from helpers import png_claiming as _png_claiming

from steadydancer_core import cli, image_io


def _gradient(height, width, channels=3):
    image = np.zeros((height, width, channels), np.uint8)
    image[..., 0] = np.linspace(0, 255, width, dtype=np.float32)[None].astype(np.uint8)
    image[..., 1] = np.linspace(0, 255, height, dtype=np.float32)[:, None].astype(np.uint8)
    image[..., 2] = 90
    if channels == 4:
        image[..., 3] = 255
    return image


@pytest.mark.parametrize("size, message", [((60000, 60000), "megapixels"), ((20000, 8000), "134 megapixels"),
                                           ((40000, 2000), "more than 16:1"), ((30, 20), None)])
def test_the_header_is_checked_before_any_pixel_is_decoded(tmp_path, size, message):
    path = _png_claiming(tmp_path / "claims.png", *size)
    if message is None:                                    # within the limits: decoding finds the missing rows
        with pytest.raises(cli.CLIError, match="damaged or truncated"):
            cli.read_image(path)
        return
    with pytest.raises(cli.CLIError, match=message) as info:
        cli.read_image(path)
    text = str(info.value)
    assert str(path) in text and "\n" not in text and ("downscale" in text or "crop" in text)


def test_a_photo_above_the_working_size_is_shrunk_while_it_is_read(tmp_path):
    from PIL import Image

    height, width = 5000, 4000                             # 20 MP > 4096 * 4096
    path = tmp_path / "big.png"
    Image.fromarray(_gradient(height, width)).save(path, compress_level=1)
    photo = cli.read_image(path)
    assert photo.dtype == np.uint8 and photo.shape[2] == 3
    assert photo.shape[0] * photo.shape[1] <= image_io.PHOTO_WORK_PIXELS
    assert abs(photo.shape[0] / photo.shape[1] - height / width) < 1e-3    # aspect kept
    assert abs(int(photo[:, -1, 0].mean()) - 255) <= 2 and int(photo[0, :, 1].mean()) <= 2   # the gradient kept


def test_transparency_is_composited_at_the_shrunk_size(tmp_path):
    from PIL import Image

    rgba = _gradient(4600, 4000, 4)
    rgba[2300:, :, 3] = 0                                  # the lower half transparent
    path = tmp_path / "cutout.png"
    Image.fromarray(rgba).save(path, compress_level=1)
    decoded = image_io.read_image(path, background=(0, 0, 255))
    assert decoded.composited and decoded.shrunk and decoded.source_hw == (4600, 4000)
    h = decoded.rgb.shape[0]
    assert (decoded.rgb[h * 3 // 4:] == (0, 0, 255)).all()
    assert decoded.rgb[: h // 4, :, 2].max() == 90


def test_the_exif_orientation_is_applied_to_a_transparent_photo_too(tmp_path):
    from PIL import Image

    rgba = np.zeros((30, 20, 4), np.uint8)
    rgba[..., :3] = (200, 40, 10)
    rgba[:15, :, 3] = 255                                  # top half opaque, bottom half transparent
    image = Image.fromarray(rgba)
    exif = image.getexif()
    exif[0x0112] = 6                                       # shown turned 90 degrees clockwise
    image.save(tmp_path / "turned.png", exif=exif)
    photo = cli.read_image(tmp_path / "turned.png", background=(255, 255, 255))
    assert photo.shape == (20, 30, 3)
    assert (photo[:, 15:] == (200, 40, 10)).all() and (photo[:, :15] == 255).all()


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("suffix", ["jpg", "png", "webp"])
def test_photos_within_the_working_size_read_as_opencv_reads_them(tmp_path, orientation, suffix):
    import cv2
    from PIL import Image

    rng = np.random.default_rng(orientation)
    rgb = cv2.GaussianBlur(rng.integers(0, 255, (60, 40, 3), np.uint8), (5, 5), 0)
    image = Image.fromarray(rgb)
    exif = image.getexif()
    exif[0x0112] = orientation
    path = tmp_path / f"photo.{suffix}"
    image.save(path, exif=exif, **({"quality": 90} if suffix == "jpg" else {"lossless": True} if suffix == "webp"
                                   else {}))
    expected = cv2.cvtColor(cv2.imdecode(np.fromfile(str(path), np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(cli.read_image(path), expected)


@pytest.mark.parametrize("kind", ["rgb16", "grey16", "grey", "palette", "bmp"])
def test_other_pixel_formats_read_as_opencv_reads_them(tmp_path, kind):
    import cv2
    from PIL import Image

    rng = np.random.default_rng(3)
    path = tmp_path / ("photo.bmp" if kind == "bmp" else "photo.png")
    if kind == "rgb16":
        cv2.imwrite(str(path), rng.integers(0, 65535, (20, 30, 3)).astype(np.uint16))
    elif kind == "grey16":
        cv2.imwrite(str(path), rng.integers(0, 65535, (20, 30)).astype(np.uint16))
    elif kind == "grey":
        cv2.imwrite(str(path), rng.integers(0, 255, (20, 30)).astype(np.uint8))
    elif kind == "palette":
        Image.fromarray(rng.integers(0, 255, (20, 30, 3), np.uint8)).quantize(16).save(path)
    else:
        cv2.imwrite(str(path), rng.integers(0, 255, (20, 30, 3)).astype(np.uint8))
    expected = cv2.cvtColor(cv2.imdecode(np.fromfile(str(path), np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(cli.read_image(path), expected)


def test_unreadable_and_damaged_images_are_one_line(tmp_path):
    import cv2

    eps = tmp_path / "drawing.png"
    eps.write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n")   # a decoder that runs programs
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    cut = tmp_path / "cut.png"
    cv2.imwrite(str(cut), np.full((64, 64, 3), 9, np.uint8))
    cut.write_bytes(cut.read_bytes()[:60])
    for path, message in ((eps, "not a readable image"), (text, "not a readable image"),
                          (cut, "damaged or truncated"), (tmp_path / "absent.png", "image not found")):
        with pytest.raises(image_io.ImageReadError, match=message) as info:
            image_io.read_image(path)
        assert "\n" not in str(info.value) and str(path) in str(info.value)
