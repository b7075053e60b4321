"""`imgclf demo` in a real browser: Debian's headless Chromium driven by Selenium against a trained sample model.

Needs scripts/browser_setup.sh (chromium, chromium-driver, selenium, .venv-demo with the demo extra); outside CI
the tier skips, saying so, when they are missing. IMGCLF_TEST_SERVING_MODEL=/path/to/model reuses a trained
artifact; IMGCLF_DOCS_SCREENSHOT=docs/demo.png also writes the README's small screenshot.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from support import REPO
from support.ports import free_port
from support.training import fast_flags

pytestmark = pytest.mark.browser

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
DEMO_PYTHON = Path(os.environ.get("IMGCLF_DEMO_PYTHON", REPO / ".venv-demo" / "bin" / "python"))
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1280,860",
]
MAIN = "import sys; from imgclf.cli import main; sys.exit(main())"


def _missing() -> str | None:
    for path in (CHROMIUM, CHROMEDRIVER, DEMO_PYTHON):
        if not Path(path).exists():
            return f"{path} is missing: run scripts/browser_setup.sh"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is missing: run scripts/browser_setup.sh"
    return None


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    reuse = os.environ.get("IMGCLF_TEST_SERVING_MODEL")
    if reuse:
        return Path(reuse)
    out = tmp_path_factory.mktemp("demo") / "model"
    subprocess.run(
        [sys.executable, "-c", MAIN, "train", "--model-dir", str(out), *fast_flags()],
        check=True,
        timeout=600,
        stdout=subprocess.DEVNULL,
    )
    return out


@pytest.fixture(scope="module")
def demo_url(model_dir, tmp_path_factory):
    why = _missing()
    if why:
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)
    port = free_port()
    log = tmp_path_factory.mktemp("demo-log") / "demo.log"
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1"}
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [str(DEMO_PYTHON), "-c", MAIN, "demo", "--model-dir", str(model_dir), "--port", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 120
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    break
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"imgclf demo did not start:\n{log.read_text()[-3000:]}")
        time.sleep(0.5)
    yield url
    os.killpg(proc.pid, 15)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)


@pytest.fixture
def browser(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in [*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'chromium-profile'}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def test_the_page_builds_in_the_demo_venv_without_touching_the_network(model_dir):
    """build_app alone (gradio lives only in .venv-demo, so this is the browser tier's, not the unit tier's)."""
    why = _missing()
    if why:
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)
    code = (
        "import sys; from imgclf import demo; "
        "app = demo.build_app(demo.LocalBackend(sys.argv[1]), [], top_k=3); print(app.title)"
    )
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [str(DEMO_PYTHON), "-c", code, str(model_dir)], capture_output=True, text=True, timeout=300, env=env
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "imgclf demo"


def _upload(driver, url: str, path: Path) -> str:
    """Open the page, drop `path` into the upload box, return the status line once the page answered."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(url)
    wait = WebDriverWait(driver, 60)
    wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#upload input[type=file]"))).send_keys(str(path))
    wait.until(lambda d: re.search(r"Predicted|Could not", d.find_element(By.ID, "status").text))
    return " ".join(driver.find_element(By.ID, "status").text.split())


def _predicted(backend, image: Path) -> str:
    return backend.classify(image.read_bytes(), "image/png", 1, explain=False).predictions[0]["label"]


def test_the_page_shows_the_label_and_the_overlay_and_refuses_a_non_image(demo_url, browser, model_dir, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from imgclf.demo import LocalBackend
    from imgclf.sample_data import write_sample_data

    write_sample_data(tmp_path / "digits")
    local = LocalBackend(model_dir)
    # The first test image the model gets right: the page must show the true digit.
    image = next(
        p for d in sorted((tmp_path / "digits" / "test").iterdir()) for p in sorted(d.iterdir())[:3]
        if _predicted(local, p) == d.name
    )  # fmt: skip
    status = _upload(browser, demo_url, image)
    label = re.search(r"Predicted (\S+) \(", status)
    assert label and label.group(1) == image.parent.name, status
    assert re.search(r"in \d+ ms \(of which Grad-CAM \d+ ms\)", status), status
    # Both pictures shown: the upload and the Grad-CAM overlay (upscaled to at least 224 px).
    for box in ("#image img", "#overlay img"):
        loaded = WebDriverWait(browser, 30).until(
            lambda d, box=box: [e for e in d.find_elements(By.CSS_SELECTOR, box) if e.get_property("naturalWidth")]
        )
        assert loaded[0].get_attribute("src")
    assert loaded[0].get_property("naturalWidth") >= 224
    assert image.parent.name in browser.find_element(By.ID, "topk").text
    shot = tmp_path / "demo-page.png"
    browser.save_screenshot(str(shot))
    assert shot.stat().st_size > 10_000
    docs = os.environ.get("IMGCLF_DOCS_SCREENSHOT")
    if docs:
        _small_png(shot, REPO / docs)

    notes = tmp_path / "notes.txt"
    notes.write_text("not a picture\n")
    status = _upload(browser, demo_url, notes)
    assert "Could not classify notes.txt" in status and "not an image" in status, status
    assert "Traceback" not in browser.page_source
    browser.save_screenshot(str(tmp_path / "demo-refused.png"))


def _small_png(source: Path, target: Path, width: int = 900) -> None:
    """The README screenshot: scaled down and reduced to 64 colours (well under 150 KB)."""
    from PIL import Image

    img = Image.open(source).convert("RGB")
    img = img.resize((width, round(img.height * width / img.width)), Image.LANCZOS)
    tmp = target.with_suffix(".tmp.png")
    img.quantize(colors=64, method=Image.Quantize.MEDIANCUT).save(tmp, optimize=True)
    shutil.move(tmp, target)
