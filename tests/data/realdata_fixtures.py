"""Small hand-written stand-ins for the real downloads, written by the tests themselves.

Every report, table and annotation below is invented for these tests in the
*layout* of MIMIC-CXR, Open-i and RadGraph; none of it comes from those
datasets.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import zlib
from pathlib import Path

from PIL import Image

FINAL = "                                 FINAL REPORT\n"

# study key -> report text (None: no report file; bytes: written as is)
MIMIC_REPORTS: dict[str, str | bytes | None] = {
    # standard layout, findings and impression after empty-looking headers
    "s50000001": FINAL
    + " EXAMINATION:  CHEST (PA AND LAT)\n \n INDICATION:  ___ year old woman with cough.\n \n"
    " TECHNIQUE:  Chest PA and lateral\n \n COMPARISON:  None.\n \n FINDINGS: \n \n"
    " The lungs are clear without focal consolidation.  No pleural effusion or\n"
    " pneumothorax is seen.  The cardiac silhouette is mildly enlarged.\n \n"
    " IMPRESSION: \n \n Mild cardiomegaly.  No acute process.\n",
    # a typo in the FINDINGS header and an addendum whose IMPRESSION comes last
    "s50000002": FINAL
    + " INDICATION:  Follow-up of effusion.\n \n"
    " FINDNGS:  Small left pleural effusion is unchanged.  Heart size is normal.\n \n"
    " IMPRESSION:  Stable small left effusion.\n \n ADDENDUM:  Findings discussed with the team.\n \n"
    " IMPRESSION:  Stable small left pleural effusion, discussed by phone.\n",
    # Windows-1252, not UTF-8 (0x96 is an en dash)
    "s50000003": (FINAL + " FINDINGS:  Lungs are clear.  Heart size normal \x96 no change.\n \n"
                  " IMPRESSION:  No acute disease.\n").encode("latin-1"),
    # impression only
    "s50000004": FINAL + " EXAMINATION:  Chest radiograph\n \n IMPRESSION:  No acute cardiopulmonary process.\n",
    # empty file
    "s50000005": b"",
    # no report file at all
    "s50000006": None,
    # a header naming the views stands for FINDINGS; CONCLUSION is the impression
    "s50000007": FINAL
    + " HISTORY:  Shortness of breath.\n \n"
    " PA AND LATERAL VIEWS OF THE CHEST:  There is a right lower lobe opacity.  No effusion.\n \n"
    " CONCLUSION:  Right lower lobe pneumonia.\n",
    "s50000008": FINAL + " FINDINGS:  \n \n Heart size is normal.  Lungs are clear.\n \n IMPRESSION:  Normal chest.\n",
    "s50000009": FINAL + " FINDINGS:  Lateral view only.  No effusion.\n",
    "s50000010": FINAL + " FINDINGS:  Both images are corrupt.\n",
    "s50000012": FINAL + " FINDINGS:  Listed under two patients.\n",
}

MIMIC_EXPECTED_FINDINGS = {
    "s50000001": "The lungs are clear without focal consolidation. No pleural effusion or pneumothorax is seen. "
    "The cardiac silhouette is mildly enlarged.",
    "s50000002": "Small left pleural effusion is unchanged. Heart size is normal.",
    "s50000003": "Lungs are clear. Heart size normal \u2013 no change.",
    "s50000007": "There is a right lower lobe opacity. No effusion.",
    "s50000008": "Heart size is normal. Lungs are clear.",
    "s50000009": "Lateral view only. No effusion.",
}
MIMIC_EXPECTED_IMPRESSIONS = {
    "s50000001": "Mild cardiomegaly. No acute process.",
    "s50000002": "Stable small left pleural effusion, discussed by phone.",
    "s50000003": "No acute disease.",
    "s50000007": "Right lower lobe pneumonia.",
    "s50000008": "Normal chest.",
    "s50000009": None,
}

# (dicom_id, study, subject, split, view or None if absent from the metadata, date, time, image kind)
MIMIC_IMAGES = [
    ("d1-lat", "50000001", "10000001", "train", "LATERAL", "21800101", "235959.999", "ok"),
    ("d1-pa", "50000001", "10000001", "train", "PA", "21800101", "235959.999", "ok"),
    ("d2-ap", "50000002", "10000001", "train", "AP", "21800305", "70808.0", "ok"),
    ("d3-pa", "50000003", "10000001", "train", "PA", "21791231", "120000", "ok"),  # highest id, earliest study
    ("d3-x", "50000003", "10000001", "train", None, "", "", "ok"),
    ("d4-pa", "50000004", "10000002", "train", "PA", "21800101", "120000", "ok"),
    ("d5-pa", "50000005", "10000002", "train", "PA", "21800201", "120000", "ok"),
    ("d6-pa", "50000006", "10000002", "train", "PA", "21800301", "120000", "ok"),
    ("d7-pa", "50000007", "10000003", "validate", "PA", "21900101", "080000", "ok"),
    ("d8-pa", "50000008", "10000003", "validate", "PA", "21900102", "080000", "ok"),
    ("d8-lat", "50000008", "10000003", "validate", "LATERAL", "21900102", "080000", "truncated"),
    ("d9-lat", "50000009", "10000004", "test", "LATERAL", "21700101", "000000", "ok"),
    ("d10-pa", "50000010", "10000004", "test", "PA", "21700202", "000000", "garbage"),
    ("d10-lat", "50000010", "10000004", "test", "LATERAL", "21700202", "000000", "garbage"),
    ("d12-a", "50000012", "10000004", "test", "PA", "21700303", "000000", "ok"),
    ("d12-b", "50000012", "10000005", "test", "PA", "21700303", "000000", "ok"),
]


def jpeg_bytes(size: int = 16, shade: int = 128) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (size, size), shade).save(buffer, format="JPEG")
    return buffer.getvalue()


def truncated_jpeg_bytes() -> bytes:
    """A noisy 128 px JPEG cut to 60 %: the header is intact, the scan data is not."""
    buffer = io.BytesIO()
    Image.effect_noise((128, 128), 64).save(buffer, format="JPEG")
    data = buffer.getvalue()
    return data[: int(len(data) * 0.6)]


def png_bytes(size: int = 16, shade: int = 128) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (size, size), shade).save(buffer, format="PNG")
    return buffer.getvalue()


def write_csv_gz(path: Path, header: list[str], rows: list[list[str]]) -> None:
    with gzip.open(path, "wt", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


def write_mimic_tree(root: Path, views: dict[str, str] | None = None) -> tuple[Path, Path]:
    """A MIMIC-CXR-JPG root and a reports root in the real layouts; returns (jpg_root, reports_root).

    ``views`` replaces the ViewPosition of some images, by dicom id.
    """
    jpg, reports = root / "mimic-cxr-jpg", root / "mimic-cxr-reports"
    jpg.mkdir(parents=True)
    split_rows, metadata_rows = [], []
    for dicom, study, subject, split, view, date, time, kind in MIMIC_IMAGES:
        split_rows.append([dicom, study, subject, split])
        view = (views or {}).get(dicom, view)
        if view is not None:
            metadata_rows.append([dicom, subject, study, "CHEST (PA AND LAT)", view, "2544", "3056", date, time])
        folder = jpg / "files" / f"p{subject[:2]}" / f"p{subject}" / f"s{study}"
        folder.mkdir(parents=True, exist_ok=True)
        data = {"ok": jpeg_bytes(shade=40 + len(split_rows)), "truncated": truncated_jpeg_bytes(), "garbage": b"not an image"}
        (folder / f"{dicom}.jpg").write_bytes(data[kind])
    write_csv_gz(jpg / "mimic-cxr-2.0.0-split.csv.gz", ["dicom_id", "study_id", "subject_id", "split"], split_rows)
    write_csv_gz(
        jpg / "mimic-cxr-2.0.0-metadata.csv.gz",
        ["dicom_id", "subject_id", "study_id", "PerformedProcedureStepDescription", "ViewPosition", "Rows",
         "Columns", "StudyDate", "StudyTime"],
        metadata_rows,
    )
    subjects = {study: subject for _, study, subject, *_ in MIMIC_IMAGES}
    for key, text in MIMIC_REPORTS.items():
        subject = subjects[key[1:]]
        folder = reports / "files" / f"p{subject[:2]}" / f"p{subject}"
        folder.mkdir(parents=True, exist_ok=True)
        if text is None:
            continue
        (folder / f"{key}.txt").write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return jpg, reports


def radgraph_entity(tokens: str, label: str, index: int, relations=()) -> dict:
    return {"tokens": tokens, "label": label, "start_ix": index, "end_ix": index, "relations": [list(r) for r in relations]}


def write_mimic_radgraph(path: Path) -> Path:
    """RadGraph-style JSON for some of the studies above, written by hand."""
    data = {
        "p10/p10000001/s50000001.txt": {
            "text": "FINDINGS : The lungs are clear without focal consolidation . No pleural effusion or pneumothorax "
            "is seen . The cardiac silhouette is mildly enlarged . IMPRESSION : Mild cardiomegaly .",
            "entities": {
                "1": radgraph_entity("cardiac", "ANAT-DP", 19, [("modify", "2")]),
                "2": radgraph_entity("silhouette", "ANAT-DP", 20),
                "3": radgraph_entity("mildly", "OBS-DP", 22, [("modify", "4")]),
                "4": radgraph_entity("enlarged", "OBS-DP", 23, [("located_at", "2")]),
                "5": radgraph_entity("effusion", "OBS-DA", 11),
            },
        },
        "p10/p10000001/s50000002.txt": {
            "text": "FINDINGS : Small left pleural effusion is unchanged . Heart size is normal .",
            "labeler_1": {
                "entities": {
                    "1": radgraph_entity("Small", "Observation::definitely present", 2, [("modify", "4")]),
                    "2": radgraph_entity("left", "Anatomy::definitely present", 3, [("modify", "3")]),
                    "3": radgraph_entity("pleural", "Anatomy::definitely present", 4),
                    "4": radgraph_entity("effusion", "Observation::definitely present", 5, [("located_at", "3")]),
                }
            },
        },
        "p10/p10000003/s50000007.txt": {
            "text": "There is a right lower lobe opacity . No effusion .",
            "entities": {
                "1": radgraph_entity("right", "ANAT-DP", 3, [("modify", "3")]),
                "2": radgraph_entity("lower", "ANAT-DP", 4, [("modify", "3")]),
                "3": radgraph_entity("lobe", "ANAT-DP", 5),
                "4": radgraph_entity("opacity", "OBS-DP", 6, [("located_at", "3")]),
            },
        },
        "p10/p10000004/s50000009.txt": {"text": "Lateral view only .", "entities": {"1": {"tokens": "only"}}},
        "patient64711/study1/view1_frontal.jpg": {"text": "a CheXpert report", "entities": {}},
    }
    path.write_text(json.dumps(data))
    return path


def openi_xml(uid: str, findings: str | None, impression: str | None, images: list[str]) -> str:
    """An Open-i report XML (the layout of ecgen-radiology/<n>.xml, trimmed to what is read)."""
    sections = "".join(
        f'<AbstractText Label="{label}">{text or ""}</AbstractText>'
        for label, text in (("COMPARISON", "None."), ("INDICATION", "Cough."), ("FINDINGS", findings), ("IMPRESSION", impression))
    )
    parents = "".join(f'<parentImage id="{i}"><figureId>F1</figureId><caption>PA and lateral.</caption></parentImage>' for i in images)
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n<eCitation><meta type="rr"/>'
        f'<uId id="{uid}"/><pmcId id="{uid[3:]}"/><MedlineCitation><Article><Abstract>{sections}</Abstract>'
        f"</Article></MedlineCitation><MeSH><major>normal</major></MeSH>{parents}</eCitation>"
    )


def write_openi(root: Path) -> tuple[Path, Path]:
    """Report XMLs and PNGs in the Open-i layout (invented); returns (reports folder, images folder)."""
    import numpy as np

    reports, images = root / "ecgen-radiology", root / "png"
    reports.mkdir(parents=True)
    images.mkdir(parents=True)

    def report(n, findings, images_, impression="No acute disease.", raw=None):
        (reports / f"{n}.xml").write_bytes(raw if raw is not None else openi_xml(f"CXR{n}", findings, impression, images_).encode())

    def png(name, image=None):
        (image or Image.new("L", (32, 32), zlib.crc32(name.encode()) % 200 + 20)).save(images / f"{name}.png")

    report(1, "The heart is normal. Calcified granuloma in the right upper lobe.", ["CXR1_IM-0001-3001", "CXR1_IM-0001-4001"])
    png("CXR1_IM-0001-3001"), png("CXR1_IM-0001-4001")
    report(2, "Mild cardiomegaly. No effusion.", ["CXR2_IM-0652-1001", "CXR2_IM-0652-2001"])
    png("CXR2_IM-0652-1001"), png("CXR2_IM-0652-2001")
    report(3, "Lungs are clear.", [])  # no images
    report(4, None, ["CXR4_IM-2050-1001"])  # no FINDINGS
    png("CXR4_IM-2050-1001")
    cp1252 = openi_xml("CXR5", "The patient\u2019s lungs are clear.", None, ["CXR5_IM-2117-1003002"]).encode("cp1252")
    report(5, None, [], raw=cp1252)
    png("CXR5_IM-2117-1003002")
    report(6, None, [], raw=b"<eCitation><uId id='CXR6'/><oops")  # broken XML
    report(7, "Small left pleural effusion.", ["CXR7_IM-2263-1001", "CXR7_IM-2263-2001"])
    png("CXR7_IM-2263-1001")  # the second image is missing
    report(8, "Lungs are clear.", ["CXR8_IM-2333-1001", "CXR8_IM-2333-2001"])
    Image.fromarray(np.full((32, 32), 3000, dtype=np.uint16)).save(images / "CXR8_IM-2333-1001.png")
    Image.new("RGBA", (32, 32), (10, 20, 30, 128)).save(images / "CXR8_IM-2333-2001.png")
    report(9, "Lungs are clear.", ["CXR9_IM-2407-1001"])
    noisy = io.BytesIO()
    Image.effect_noise((64, 64), 50).save(noisy, format="PNG")
    (images / "CXR9_IM-2407-1001.png").write_bytes(noisy.getvalue()[: len(noisy.getvalue()) // 2])
    for n in range(10, 20):
        name = f"CXR{n}_IM-{n:04d}"
        report(n, f"Normal study number {n}. No pneumothorax.", [f"{name}-1001", f"{name}-2001"])
        png(f"{name}-1001"), png(f"{name}-2001")
    (reports / "20.xml").write_text(openi_xml("CXR2", "A second copy of report two.", None, ["CXR2_IM-0652-1001"]))
    return reports, images

