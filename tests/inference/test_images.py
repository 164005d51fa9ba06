"""Reading what users upload: DICOM as MIMIC-CXR-JPG was made, and clear errors for what cannot be read."""

import io

import numpy as np
import pytest
from PIL import Image

from s2d_align.inference.images import ImageError, read_image



def write_dicom(path, pixels: np.ndarray, photometric: str, syntax=None, slope=1.0, intercept=0.0):
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"  # digital X-ray
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = syntax or ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "DX"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
    ds.PixelRepresentation = 0
    ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    if syntax is None:
        ds.PixelData = pixels.astype(np.uint16).tobytes()
    else:  # a compressed syntax: encapsulated frames (their content never gets decoded without a plugin)
        from pydicom.encaps import encapsulate

        ds.PixelData = encapsulate([b"\xff\x4f\xff\x51" + bytes(64)])
    ds.save_as(str(path), enforce_file_format=True)
    return path


@pytest.fixture
def radiograph():
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:64, 0:64]
    body = 3000 - 1800 * np.exp(-((x - 20) ** 2 + (y - 30) ** 2) / 200) - 1500 * np.exp(-((x - 44) ** 2 + (y - 30) ** 2) / 200)
    return np.clip(body + rng.normal(0, 40, body.shape), 0, 4095).astype(np.uint16)  # 12-bit values


def test_monochrome1_and_its_monochrome2_twin_give_identical_pixels(tmp_path, radiograph):
    twin = (int(radiograph.max()) + int(radiograph.min()) - radiograph.astype(np.int32)).astype(np.uint16)
    one = read_image(write_dicom(tmp_path / "m1.dcm", radiograph, "MONOCHROME1"))
    two = read_image(write_dicom(tmp_path / "m2.dcm", twin, "MONOCHROME2"))
    assert one.mode == "L" and one.size == (64, 64)
    assert np.array_equal(np.asarray(one), np.asarray(two))
    # MONOCHROME1 stores white as low values: its dip at (30, 20) must come out bright.
    assert np.asarray(two)[30, 20] > np.asarray(two)[5, 5]


def test_dicom_is_scaled_to_full_range_and_equalised_as_mimic_cxr_jpg(tmp_path, radiograph):
    image = np.asarray(read_image(write_dicom(tmp_path / "m2.dcm", radiograph, "MONOCHROME2", slope=2.0, intercept=-100)))
    assert image.min() == 0 and image.max() == 255
    from PIL import ImageOps

    values = radiograph.astype(np.float64) * 2.0 - 100
    scaled = np.round((values - values.min()) / (values.max() - values.min()) * 255).astype(np.uint8)
    assert np.array_equal(image, np.asarray(ImageOps.equalize(Image.fromarray(scaled, mode="L"))))


def test_dicom_bytes_and_path_read_the_same(tmp_path, radiograph):
    path = write_dicom(tmp_path / "x.dcm", radiograph, "MONOCHROME2")
    assert np.array_equal(np.asarray(read_image(path)), np.asarray(read_image(path.read_bytes())))


def test_compressed_dicom_without_its_decoder_names_the_package(tmp_path, radiograph):
    from pydicom.uid import JPEG2000Lossless

    path = write_dicom(tmp_path / "j2k.dcm", radiograph, "MONOCHROME2", syntax=JPEG2000Lossless)
    with pytest.raises(ImageError, match="pylibjpeg-openjpeg|gdcm") as caught:
        read_image(path)
    assert caught.value.reason == "dicom_unsupported"


@pytest.mark.parametrize(
    "data, reason, message",
    [
        (b"", "empty", "empty"),
        (b"this is not an image at all" * 10, "unreadable", "not an image"),
    ],
)
def test_bad_uploads_raise_clear_errors(data, reason, message):
    with pytest.raises(ImageError, match=message) as caught:
        read_image(data)
    assert caught.value.reason == reason and isinstance(caught.value, ValueError)


def test_decompression_bomb_is_refused_from_the_header():
    buffer = io.BytesIO()
    Image.new("L", (9000, 9000)).save(buffer, format="PNG")  # 81 MP of zeros compresses to a few KB
    data = buffer.getvalue()
    assert len(data) < 200_000
    with pytest.raises(ImageError, match="decompression bomb") as caught:
        read_image(data, max_pixels=50_000_000)
    assert caught.value.reason == "too_large"


def test_zero_byte_file_and_missing_file(tmp_path):
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(ImageError, match="empty"):
        read_image(empty)
    with pytest.raises(ImageError, match="missing file"):
        read_image(tmp_path / "nope.png")


def test_arrays_and_pil_images_become_grayscale():
    rgb = np.zeros((8, 8, 3), dtype=np.uint8)
    rgb[..., 0] = 255
    assert read_image(rgb).mode == "L"
    sixteen = np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000
    out = np.asarray(read_image(sixteen))
    assert out.min() == 0 and out.max() == 255
    assert read_image(Image.new("RGBA", (4, 4))).mode == "L"
