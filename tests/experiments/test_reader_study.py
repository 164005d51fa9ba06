"""The reader study: the page in a real headless Chromium (rate, reload, export), then the scores.

Needs Debian's ``chromium`` and ``chromium-driver`` (``.ci/run`` installs them)
and selenium; without them the browser test fails, saying what is missing.
"""

from __future__ import annotations

import json
import os
import shutil
import urllib.parse
from pathlib import Path

import pytest

from s2d_align.cli import main
from s2d_align.experiments.reader_study import agreement

from tests.conftest import write_synthetic_manifest


def _predictions(root: Path, manifest: Path) -> list[Path]:
    from s2d_align.data.manifest import read_manifest

    studies = read_manifest(manifest)
    paths = []
    for name, text in (("alpha", "The lungs are clear."), ("beta", "Mild cardiomegaly is present.")):
        path = root / f"{name}.jsonl"
        path.write_text("".join(json.dumps({"id": s.id, "reference": s.findings, "prediction": f"{text} ({name})"}) + "\n"
                                for s in studies), encoding="utf-8")
        paths.append(path)
    return paths


@pytest.fixture()
def study(tmp_path):
    manifest = write_synthetic_manifest(tmp_path / "data")
    predictions = _predictions(tmp_path, manifest)
    out = tmp_path / "study"
    assert main(["reader-study", "make", "--predictions", *map(str, predictions), "--include-reference",
                 "--manifest", str(manifest), "--n", "3", "--seed", "7", "--out", str(out)]) == 0
    return out


def test_the_page_is_blinded_and_self_contained(study):
    page = (study / "index.html").read_text()
    key = json.loads((study / "key.json").read_text())
    assert len(key["items"]) == 9  # 3 studies x (2 systems + the reference)
    assert "alpha.jsonl" not in page and '"system"' not in page and "key.json" not in page
    assert "http://" not in page and "https://" not in page  # no CDN, nothing fetched
    assert page.count("data:image/png;base64,") == 3
    systems = [v["system"] for v in key["items"].values()]
    assert sorted(systems) == ["alpha"] * 3 + ["beta"] * 3 + ["reference"] * 3
    assert systems != sorted(systems)  # shuffled (seeded: the same seed gives the same key)


def _browser(download: Path):
    if shutil.which("chromium") is None or shutil.which("chromedriver") is None:
        pytest.fail("the reader-study test needs Debian's chromium and chromium-driver (apt-get install -y chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1200,900"):
        options.add_argument(flag)
    options.add_experimental_option("prefs", {"download.default_directory": str(download)})
    return webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)


def _rate_all(driver, page: Path, rater: str, fluency, factual) -> str:
    from selenium.webdriver.common.by import By

    driver.get(page.as_uri())
    name = driver.find_element(By.ID, "rater")
    name.clear()
    name.send_keys(rater)
    total = len(driver.execute_script("return study.items"))
    for index in range(total):
        code = driver.find_element(By.ID, "code").text
        driver.find_element(By.ID, f"fluency-{fluency(code)}").click()
        driver.find_element(By.ID, f"factual-{factual(code)}").click()
        if index < total - 1:
            driver.find_element(By.ID, "next").click()
    return driver.find_element(By.ID, "progress").text


def test_rate_in_a_real_browser_export_and_score(study, tmp_path, capsys):
    from selenium.webdriver.common.by import By

    key = json.loads((study / "key.json").read_text())
    truth = {code: {"alpha": 2, "beta": 1, "reference": 0}[v["system"]] for code, v in key["items"].items()}
    driver = _browser(tmp_path)
    try:
        progress = _rate_all(driver, study / "index.html", "reader one", lambda c: truth[c], lambda c: 2 - truth[c])
        assert progress == "Report 9 of 9 \u2014 9 of 9 rated"
        driver.refresh()  # progress is kept in the browser
        assert driver.find_element(By.ID, "progress").text == "Report 9 of 9 \u2014 9 of 9 rated"
        assert driver.find_element(By.ID, "rater").get_attribute("value") == "reader one"
        driver.find_element(By.ID, "export").click()
        href = driver.find_element(By.ID, "export-link").get_attribute("href")
        driver.save_screenshot(str(tmp_path / "reader_study.png"))
        if os.environ.get("S2D_READER_SCREENSHOT"):  # to look at the page: the path to copy the screenshot to
            shutil.copy(tmp_path / "reader_study.png", os.environ["S2D_READER_SCREENSHOT"])
        driver.execute_script("localStorage.clear()")
        # a second reader agrees on fluency except one report, disagrees on factual correctness everywhere
        first = sorted(truth)[0]
        second = _rate_all(driver, study / "index.html", "reader two",
                           lambda c: (truth[c] + 1) % 3 if c == first else truth[c], lambda c: truth[c])
        assert second.endswith("9 of 9 rated")
        driver.find_element(By.ID, "export").click()
        href_two = driver.find_element(By.ID, "export-link").get_attribute("href")
    finally:
        driver.quit()
    one, two = tmp_path / "one.csv", tmp_path / "two.csv"
    for path, link in ((one, href), (two, href_two)):
        assert link.startswith("data:text/csv;charset=utf-8,")
        path.write_text(urllib.parse.unquote(link.split(",", 1)[1]), encoding="utf-8")
    lines = one.read_text().splitlines()
    assert lines[0] == "study,rater,item,fluency,factual" and len(lines) == 10
    assert main(["reader-study", "score", str(study), str(one), str(two), "--json", str(tmp_path / "s.json")]) == 0
    result = json.loads((tmp_path / "s.json").read_text())
    assert result["systems"]["alpha"]["fluency"]["mean"] == 2.0
    assert result["systems"]["reference"]["factual"]["mean"] == 1.0  # reader one says 2, reader two 0
    assert result["agreement"]["fluency"]["statistic"] == "quadratic-weighted Cohen's kappa"
    assert result["agreement"]["fluency"]["items"] == 9
    assert "alpha" in capsys.readouterr().out


def test_agreement_against_published_values():
    # Quadratic-weighted kappa: every rating one category apart on 0-2 for two raters.
    rows = [{"rater": r, "item": str(i), "fluency": v} for i, (a, b) in enumerate([(0, 0), (1, 1), (2, 2), (0, 1), (2, 1)])
            for r, v in (("a", a), ("b", b))]
    # observed weighted disagreement 2 * 0.25 / 5 = 0.1; expected from the margins (a: 2,1,2 / b: 1,3,1) = 0.14 + 0.16 = 0.30
    assert agreement(rows, "fluency")["value"] == pytest.approx(1 - 0.1 / 0.30)
    # Krippendorff (2011), "Computing Krippendorff's alpha-reliability", the 4-rater, 12-unit example:
    # ordinal alpha 0.815 (values 1-5, missing as None).
    data = [
        [1, 2, 3, 3, 2, 1, 4, 1, 2, None, None, None],
        [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, None, 3],
        [None, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, None],
        [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, None],
    ]
    rows = [{"rater": f"r{r}", "item": f"u{u:02d}", "fluency": v} for r, row in enumerate(data) for u, v in enumerate(row)
            if v is not None]
    result = agreement(rows, "fluency", domain=(1, 2, 3, 4, 5))
    assert result["statistic"] == "Krippendorff's alpha (ordinal)" and result["raters"] == 4
    assert result["value"] == pytest.approx(0.815, abs=5e-4)
