"""The Prefect UI of the real test server, in headless Chromium (Debian's `chromium`,
installed by scripts/bootstrap.sh; driven by playwright without its own browser download):
the `curate/nightly` run form shows the curate config fields with the deployment's values,
and the finished run's report artifact shows its contact sheet."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import pytest

from tests.deployments.conftest import post_json

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WAIT_MS = 90_000  # the UI is a single-page app; on a busy 2-core machine it renders slowly


@pytest.fixture(scope="module")
def page():
    from playwright.sync_api import sync_playwright

    assert os.path.exists(CHROMIUM), f"{CHROMIUM} missing: run scripts/bootstrap.sh"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        pg = browser.new_page(viewport={"width": 1400, "height": 1600})
        yield pg
        browser.close()


def _ui(api: str) -> str:
    return api.removesuffix("/api")


def field(page, label: str):
    """The input of the run form's property labelled ``label`` (the innermost property with
    that label: nested models repeat the layout)."""
    return page.locator(
        f"xpath=//span[contains(@class, 'schema-form-property__label') and "
        f"normalize-space()='{label}']"
        "/ancestor::div[contains(concat(' ', normalize-space(@class), ' '), "
        "' schema-form-property ')][1]"
        "/div[contains(@class, 'p-label__body')]//*[self::input or self::textarea or self::select]"
    ).first


def test_run_form_shows_config_fields(page, prefect_server, nightly_deployment, small_corpus):
    from playwright.sync_api import expect

    api = prefect_server[0]
    dep = nightly_deployment["deployment"]
    page.goto(f"{_ui(api)}/deployments/deployment/{dep['id']}/run")
    # Fields of CurateConfig, filled with the deployment's parameters (top level and nested).
    expect(field(page, "Input (Optional)")).to_have_value(str(small_corpus), timeout=WAIT_MS)
    expect(field(page, "Out (Optional)")).to_have_value(str(nightly_deployment["out"]))
    expect(field(page, "Lock Timeout S (Optional)")).to_have_value("600")
    expect(field(page, "N Workers (Optional)")).to_have_value("2")  # --set dask.n_workers=2
    expect(field(page, "Max Clip S (Optional)")).to_have_value("60")  # split.max_clip_s


def test_report_artifact_shows_contact_sheet(page, nightly_run):
    from playwright.sync_api import expect

    api = nightly_run["api"]
    assert nightly_run["run"]["state"]["type"] == "COMPLETED"
    arts = post_json(
        f"{api}/artifacts/filter", {"artifacts": {"key": {"any_": ["curation-report"]}}}
    )
    assert len(arts) == 1, arts
    page.goto(f"{_ui(api)}/artifacts/artifact/{arts[0]['id']}")
    expect(page.get_by_role("heading", name="Contact sheet", exact=False)).to_be_visible(
        timeout=WAIT_MS
    )
    img = page.locator("img[alt=contact_sheet]")
    expect(img).to_be_visible()
    # Decoded by the browser (not a broken image) and it is this run's sheet: same width
    # as OUT/report/<run>/contact_sheet.png (the artifact inlines it, at most 1000 px wide).
    page.wait_for_function("() => document.querySelector('img[alt=contact_sheet]').complete")
    width = img.evaluate("e => e.naturalWidth")
    sheets = list(Path(nightly_run["out"], "report").glob("*/contact_sheet.png"))
    assert len(sheets) == 1
    assert width == min(cv2.imread(str(sheets[0])).shape[1], 1000) > 0
