import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from s2d_align.data.images import ImageError, check_image, find_unreadable, load_image, read_image


def _png(path, image):
    image.save(path, format="PNG")
    return path


def _forged_png(path, width, height):
    """A valid tiny PNG whose header declares ``width`` x ``height`` (a decompression bomb's shape)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    chunk = lambda kind, data: struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00\x00")) + chunk(b"IEND", b""))
    return path


def _dicom(path, photometric="MONOCHROME1", window=True):
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality = "CR"
    ds.Rows, ds.Columns = 1, 5
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.RescaleSlope, ds.RescaleIntercept = 1, 0
    if window:
        ds.WindowCenter, ds.WindowWidth = 2000, 2001
    ds.PixelData = np.array([[0, 1000, 2000, 3000, 4000]], dtype=np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def test_eight_bit_png_needs_no_fix(tmp_path):
    path = _png(tmp_path / "a.png", Image.new("L", (4, 4), 77))
    image, fixes = read_image(path)
    assert image.mode == "L" and fixes == () and image.getpixel((0, 0)) == 77
    assert check_image(path, "header") == () and check_image(path, "full") == ()


def test_sixteen_bit_png_is_rescaled_not_clipped(tmp_path):
    path = _png(tmp_path / "a.png", Image.fromarray(np.array([[1000, 3000, 2000]], dtype=np.uint16)))
    image, fixes = read_image(path)
    assert fixes == ("16bit_rescaled",)
    assert list(np.asarray(image)[0]) == [0, 255, 128]
    assert check_image(path, "header") == ("16bit_rescaled",)


def test_rgba_is_composited_on_black(tmp_path):
    rgba = Image.new("RGBA", (2, 1))
    rgba.putpixel((0, 0), (255, 255, 255, 0))
    rgba.putpixel((1, 0), (255, 255, 255, 255))
    image, fixes = read_image(_png(tmp_path / "a.png", rgba))
    assert fixes == ("alpha_flattened",)
    assert list(np.asarray(image)[0]) == [0, 255]


def test_truncated_files(tmp_path):
    buffer = io.BytesIO()
    Image.effect_noise((128, 128), 64).save(buffer, format="JPEG")
    jpeg = tmp_path / "cut.jpg"
    jpeg.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) * 2 // 3])
    buffer = io.BytesIO()
    Image.effect_noise((128, 128), 64).save(buffer, format="PNG")
    png = tmp_path / "cut.png"
    png.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) * 2 // 3])
    for path in (jpeg, png):
        for level in ("header", "full"):
            with pytest.raises(ImageError) as err:
                check_image(path, level)
            assert err.value.reason == "truncated", (path, level, str(err.value))


def test_jpeg_with_bytes_after_its_end_marker_passes_the_header_check(tmp_path):
    buffer = io.BytesIO()
    Image.effect_noise((128, 128), 64).save(buffer, format="JPEG")
    padded = tmp_path / "padded.jpg"
    padded.write_bytes(buffer.getvalue() + b"\0" * 10 + b"EXTRA")
    assert check_image(padded, "header") == () and check_image(padded, "full") == ()
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(buffer.getvalue()[:-2] + b"\0" * 10 + b"EXTRA")  # no end marker at all
    with pytest.raises(ImageError) as err:
        check_image(cut, "header")
    assert err.value.reason == "truncated"


def test_missing_garbage_and_bombs(tmp_path):
    with pytest.raises(ImageError, match="missing file") as err:
        load_image(tmp_path / "nope.png")
    assert err.value.reason == "missing_file"
    garbage = tmp_path / "g.png"
    garbage.write_bytes(b"definitely not a PNG")
    with pytest.raises(ImageError) as err:
        check_image(garbage, "header")
    assert err.value.reason == "unreadable"
    bomb = _forged_png(tmp_path / "bomb.png", 60_000, 60_000)  # beyond Pillow's own limit
    for level in ("header", "full"):
        with pytest.raises(ImageError) as err:
            check_image(bomb, level)
        assert err.value.reason == "too_large"
    big = _forged_png(tmp_path / "big.png", 8_000, 8_000)  # 64 MP: under Pillow's limit, over ours
    with pytest.raises(ImageError, match="64,000,000 pixels, above the limit of 50,000,000") as err:
        load_image(big)
    assert err.value.reason == "too_large"
    small = _png(tmp_path / "s.png", Image.new("L", (100, 100)))
    with pytest.raises(ImageError, match="above the limit of 5,000"):
        check_image(small, "header", max_pixels=5_000)


def test_dicom_monochrome1_is_inverted_after_the_window(tmp_path):
    path = _dicom(tmp_path / "a.dcm")
    image, fixes = read_image(path)
    assert fixes == ("dicom_decoded", "dicom_monochrome1_inverted", "dicom_voi_lut_applied")
    # window 2000/2001 maps 0..1000 to black and 3000.. to white; MONOCHROME1 then flips it
    assert list(np.asarray(image)[0]) == [255, 255, 127, 0, 0]
    assert check_image(path, "header") == fixes


def test_dicom_without_extension_or_window(tmp_path):
    path = _dicom(tmp_path / "noext", photometric="MONOCHROME2", window=False)
    image, fixes = read_image(path)
    assert fixes == ("dicom_decoded",)
    assert list(np.asarray(image)[0]) == [0, 64, 128, 191, 255]


def test_find_unreadable_reports_each_bad_file(tmp_path):
    good = _png(tmp_path / "good.png", Image.new("L", (4, 4)))
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"xx")
    problems = find_unreadable([("a", good), ("b", bad), ("c", tmp_path / "gone.png")])
    assert [(record, path.name) for record, path, _ in problems] == [("b", "bad.png"), ("c", "gone.png")]
