"""The app in a real browser: headless Chromium (Debian's `chromium`) driven by Playwright.

Installs for CI are in .ci/browser (apt-get install chromium; pip install playwright). The tests skip, saying why,
only where no browser can be had. Set GAN_STUDIO_SCREENSHOTS=<folder> to keep screenshots of each step.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from app import EMPTY_CANVAS_MESSAGE
from gan_models.errors import first_line

from .conftest import UPSCALE_ID, app_settings, build_app_models, serve, write_hub_models

pytestmark = pytest.mark.browser

CHROMIUM = os.environ.get("GAN_STUDIO_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
TIMEOUT_MS = 60_000


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (.ci/browser)")
    if not (Path(CHROMIUM).is_file() or shutil.which(CHROMIUM)):
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium, or set GAN_STUDIO_CHROMIUM)")
    with playwright_api.sync_playwright() as p:
        try:
            instance = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        except Exception as exc:  # noqa: BLE001 - a browser that cannot start is the skip case, whatever the cause
            pytest.skip(f"Chromium at {CHROMIUM} does not start: {first_line(exc)}")
        yield instance
        instance.close()


@pytest.fixture(scope="module")
def url(tmp_path_factory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("browser_server")
    write_hub_models(root / "hf" / "hub")
    with serve(build_app_models(root / "models"), app_settings(concurrency=2), root / "hf") as address:
        yield address


@pytest.fixture
def page(browser, url):
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(url)
    page.get_by_text("GAN Image Studio").first.wait_for()
    yield page
    page.close()


def _screenshot(page, name: str) -> None:
    folder = os.environ.get("GAN_STUDIO_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / f"{name}.png"), full_page=True)


def _loaded_image(page, selector: str) -> None:
    """Wait until an <img> under `selector` has decoded pixels (not just a src)."""
    page.wait_for_function(
        "sel => [...document.querySelectorAll(sel + ' img')].some(i => i.complete && i.naturalWidth > 0)",
        arg=selector,
    )


def test_upscale_shows_before_and_after(page):
    page.get_by_role("tab", name="Upscale").click()
    page.locator("#upscale-input input[type=file]").set_input_files(str(EXAMPLES / "logo_rgba.png"))
    page.locator("#upscale-input img").first.wait_for()
    page.locator("#upscale-run").click()
    page.locator("#upscale-info").get_by_text("tiny-upscale").wait_for()
    _loaded_image(page, "#upscale-slider")
    sizes = page.eval_on_selector_all("#upscale-slider img", "imgs => imgs.map(i => [i.naturalWidth, i.naturalHeight])")
    assert [512, 512] in sizes  # 128 px logo, x4
    assert page.get_by_text("Lossless PNG").first.is_visible()
    _screenshot(page, "upscale")


def test_drawing_on_the_canvas_gives_a_photo(page):
    page.get_by_role("tab", name="Sketch to photo").click()
    canvas = page.locator("#sketch-canvas canvas").first
    canvas.wait_for()
    page.locator("#sketch-canvas button[aria-label='Brush']").click()
    box = canvas.bounding_box()
    x, y = box["x"] + box["width"] * 0.35, box["y"] + box["height"] * 0.3
    page.mouse.move(x, y)
    page.mouse.down()
    for step in range(1, 13):
        page.mouse.move(x + step * box["width"] * 0.025, y + step * box["height"] * 0.03)
    page.mouse.up()
    page.locator("#sketch-run").click()
    page.locator("#sketch-info").get_by_text("tiny-sketch2photo").wait_for()
    _loaded_image(page, "#sketch-output")
    assert "tiny-sketch2photo" in page.locator("#sketch-info").inner_text()
    sizes = page.eval_on_selector_all("#sketch-output img", "imgs => imgs.map(i => [i.naturalWidth, i.naturalHeight])")
    assert sizes == [[64, 64]]  # the 512 px canvas resized to the tiny model's training size
    _screenshot(page, "sketch")


def test_empty_canvas_shows_the_error(page):
    page.get_by_role("tab", name="Sketch to photo").click()
    page.locator("#sketch-canvas canvas").first.wait_for()
    page.locator("#sketch-run").click()
    page.get_by_text(EMPTY_CANVAS_MESSAGE).first.wait_for()
    assert page.get_by_text(EMPTY_CANVAS_MESSAGE).first.is_visible()
    assert page.locator("#sketch-output img").count() == 0  # no photo, and no model named as if one had run
    assert "tiny-sketch2photo" not in page.locator("#sketch-info").inner_text()


def test_custom_model_by_hub_id_upscales(page):
    page.get_by_role("tab", name="Upscale").click()
    page.locator("#upscale-input input[type=file]").set_input_files(str(EXAMPLES / "logo_rgba.png"))
    page.locator("#upscale-input img").first.wait_for()
    assert not page.locator("#upscale-custom-id").is_visible()  # hidden until the custom entry is chosen
    page.locator("#upscale-model input").click()
    page.get_by_role("option", name="Custom model…").click()
    page.locator("#upscale-custom-id textarea, #upscale-custom-id input").first.fill(UPSCALE_ID)
    assert page.locator("#upscale-custom-file").is_visible()
    # The id field's change event puts the typed id in the model dropdown, which is the run button's input
    page.wait_for_function("id => document.querySelector('#upscale-model input').value === id", arg=UPSCALE_ID)
    assert page.locator("#upscale-custom-id").is_visible()  # the custom fields stay while the id is not offered
    page.locator("#upscale-run").click()
    page.locator("#upscale-info").get_by_text(UPSCALE_ID).wait_for()
    _loaded_image(page, "#upscale-slider")
    sizes = page.eval_on_selector_all("#upscale-slider img", "imgs => imgs.map(i => [i.naturalWidth, i.naturalHeight])")
    assert [512, 512] in sizes  # 128 px logo, x4 by the custom ESRGAN
    _screenshot(page, "custom-upscale")
    page.locator("#upscale-model input").click()
    page.get_by_role("option", name="Tiny upscale").click()
    page.locator("#upscale-custom-id").wait_for(state="hidden")
    page.locator("#upscale-model input").click()
    page.get_by_role("option", name="Custom model…").click()  # the id still in its field is the model again
    page.wait_for_function("id => document.querySelector('#upscale-model input').value === id", arg=UPSCALE_ID)


def test_video_tab_gives_a_playable_clip_with_sound(page, tmp_path):
    from .clips import make_clip

    clip = make_clip(tmp_path / "clip.mp4", frames=12, size=(64, 48), fps=12)
    page.get_by_role("tab", name="Video").click()
    page.locator("#video-input input[type=file]").set_input_files(str(clip))
    page.locator("#video-run").click()
    page.locator("#video-info").get_by_text("12 frames, 64x48").wait_for()
    # the browser itself decodes the result: H.264 frames of the right size, and AAC sound once it plays
    page.wait_for_function("() => { const v = document.querySelector('#video-output video'); "
                           "return v && v.readyState >= 2 && v.videoWidth === 64 && v.videoHeight === 48; }")
    page.evaluate("() => { const v = document.querySelector('#video-output video'); v.muted = true; "
                  "return v.play(); }")
    page.wait_for_function("() => document.querySelector('#video-output video').webkitAudioDecodedByteCount > 0")
    duration = page.evaluate("() => document.querySelector('#video-output video').duration")
    assert duration == pytest.approx(1.0, abs=0.1)
    _screenshot(page, "video")
