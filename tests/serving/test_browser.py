"""The page in a real headless browser (Debian's chromium and chromium-driver, via selenium).

One phantom radiograph is uploaded to the real server, serving a real tiny
trained model, and the report read off the page must be the model's report.
The inspection page is opened from file:// and sorted and filtered. Both
pages are saved as screenshots under runs/screenshots/.
"""

import json
import shutil

import pytest

from tests.serving.conftest import ROOT

SHOTS = ROOT / "runs" / "screenshots"


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not binary or not driver:
        pytest.fail("the browser test needs Debian's chromium and chromium-driver: "
                    "apt-get install -y chromium chromium-driver (.ci/run does this)")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1100"):
        options.add_argument(flag)
    chrome = webdriver.Chrome(service=Service(driver), options=options)
    yield chrome
    chrome.quit()


def test_the_page_reports_an_uploaded_phantom_image(browser, live_server, real_generator, phantom_images):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    image = phantom_images[0]
    expected = real_generator(image, heatmaps=True)
    browser.get(live_server + "/")
    assert "For research use only. Not for clinical use" in browser.find_element(By.ID, "warning").text
    browser.find_element(By.ID, "picker").send_keys(str(image))
    browser.find_element(By.ID, "submit").click()
    WebDriverWait(browser, 240).until(lambda b: b.find_element(By.ID, "status").text in ("Done.",) or
                                      b.find_element(By.ID, "status").text.startswith("Error"))
    assert browser.find_element(By.ID, "status").text == "Done."
    assert browser.find_element(By.ID, "report").text == expected.text
    cells = browser.find_elements(By.CSS_SELECTOR, "#labels td[data-observation]")
    shown = {c.get_attribute("data-observation"): c.text for c in cells}
    words = {1: "positive", 0: "negative", -1: "uncertain", None: "not mentioned"}
    assert shown == {name: words[value] for name, value in expected.labels.items()}
    captions = [c.text for c in browser.find_elements(By.CSS_SELECTOR, "#maps figcaption")]
    assert captions == [m.sentence for m in expected.heatmaps] and captions
    SHOTS.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(SHOTS / "serve.png"))


def test_the_inspection_page_sorts_and_filters_in_the_browser(browser, tiny_world, served_checkpoint, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    from s2d_align.data.manifest import read_manifest
    from s2d_align.inspection import study_rows, write_inspection

    studies = [s for s in read_manifest(tiny_world.manifest) if s.split != "train"]
    guesses = ["There is a small left pleural effusion.", "Heart size is normal. The lungs are clear.",
               "Mild cardiomegaly is present. No pneumothorax is seen."]
    predictions = tmp_path / "p.jsonl"
    predictions.write_text("".join(json.dumps({"id": s.id, "reference": s.findings, "prediction": guesses[i % 3]}) + "\n"
                                   for i, s in enumerate(studies)))
    out = tmp_path / "inspect.html"
    write_inspection(predictions, tiny_world.manifest, out, model=served_checkpoint, device="cpu")
    rows = {r["id"]: r for r in study_rows(predictions, tiny_world.manifest)}

    browser.get(out.as_uri())
    assert len(browser.find_elements(By.CSS_SELECTOR, ".maps figure")) > 0  # grounding maps of the model
    Select(browser.find_element(By.ID, "sort")).select_by_value("cider")
    order = [e.get_attribute("data-id") for e in browser.find_elements(By.CSS_SELECTOR, "tr.study")]
    assert [rows[i]["scores"]["cider"] for i in order] == sorted((r["scores"]["cider"] for r in rows.values()),
                                                                  reverse=True)
    Select(browser.find_element(By.ID, "observation")).select_by_value("Pleural Effusion")
    Select(browser.find_element(By.ID, "where")).select_by_value("disagree")
    visible = [e.get_attribute("data-id") for e in browser.find_elements(By.CSS_SELECTOR, "tr.study") if e.is_displayed()]
    assert visible == [i for i in order if "Pleural Effusion" in rows[i]["disagree"]]
    assert browser.find_element(By.ID, "shown").text == f"{len(visible)} shown"
    SHOTS.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(SHOTS / "inspect.png"))
