"""Build the docs site strictly and check it in headless Chromium: catalog rows, filters, entry pages."""
import functools
import http.server
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import medmamba

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp("site")
    env = dict(os.environ, DISABLE_MKDOCS_2_WARNING="true")
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(out)], cwd=ROOT,
                          env=env, capture_output=True, encoding="utf-8", errors="replace")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out


@pytest.fixture(scope="module")
def server(site):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(site))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    assert CHROMIUM and CHROMEDRIVER, "chromium and chromedriver are needed (make test installs them)"
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run", "--window-size=1400,1000"):
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    yield driver
    driver.quit()


def severe_console_errors(driver):
    return [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def visible_models(driver):
    rows = driver.find_elements("css selector", "#catalog-table tbody tr")
    return sorted(r.find_element("css selector", "td a").text for r in rows if r.is_displayed())


def test_catalog_lists_every_model_and_filters(server, browser, tmp_path):
    from selenium.webdriver.support.ui import Select

    browser.get(f"{server}/catalog/")
    assert visible_models(browser) == medmamba.list_models()
    Select(browser.find_element("id", "filter-task")).select_by_value("classification")
    assert visible_models(browser) == medmamba.list_models(task="classification")
    Select(browser.find_element("id", "filter-dims")).select_by_value("3")
    assert visible_models(browser) == medmamba.list_models(task="classification", spatial_dims=3)
    Select(browser.find_element("id", "filter-task")).select_by_value("segmentation")
    assert visible_models(browser) == medmamba.list_models(task="segmentation", spatial_dims=3)
    browser.save_screenshot(str(tmp_path / "catalog.png"))
    assert not severe_console_errors(browser)


def test_every_entry_page_loads_without_console_errors(server, browser, tmp_path):
    for name in medmamba.list_models():
        browser.get(f"{server}/catalog/{name}/")
        assert browser.find_element("css selector", "h1").text == name
        svg = browser.find_element("css selector", f'img[src="{name}.svg"]')
        assert browser.execute_script("return arguments[0].naturalWidth", svg) > 0, f"{name}: block picture missing"
        assert not severe_console_errors(browser), name
    browser.save_screenshot(str(tmp_path / "entry.png"))
