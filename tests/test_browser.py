"""The web page in a real browser: Debian's Chromium driven by Playwright, against uvicorn on 127.0.0.1."""

from __future__ import annotations

import base64
import os
import re
import socket
import threading
import time
from pathlib import Path

import pytest

# Real photos are used when ../shared/data/real is there (generated ones otherwise), so these are `real` too.
pytestmark = [pytest.mark.browser, pytest.mark.real]

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
SAMOYED = "imagenet-val-dogs/n02111889-Samoyed/ILSVRC2012_val_00003808.jpg"
REAL = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "real"
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
               "--disable-component-update", "--disable-sync"]


def _need_browser() -> None:
    """Skip on a developer machine without Chromium; in CI a missing browser is a failure, never a silent skip."""
    problem = None
    if not CHROMIUM.exists():
        problem = f"{CHROMIUM} is missing (apt-get install -y chromium)"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            problem = "the Python package playwright is missing (pip install playwright)"
    if problem:
        if os.environ.get("CI"):
            pytest.fail(f"browser test cannot run in CI: {problem}")
        pytest.skip(problem)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def gallery_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small look-alike gallery: real Samoyed and Great Pyrenees photos (linked, not copied) when the shared data
    is there, else generated pictures in a Samoyed folder (then only the page's mechanics are checked)."""
    from dogbreed.gallery import build_gallery

    root = tmp_path_factory.mktemp("gallery-data")
    sources = {"n02111889-Samoyed": REAL / "imagenet-val-dogs" / "n02111889-Samoyed",
               "n02111500-Great_Pyrenees": REAL / "stanford-dogs" / "Images" / "n02111500-Great_Pyrenees"}
    for folder, src in sources.items():
        (root / folder).mkdir()
        if src.is_dir():
            for p in sorted(src.glob("*.jpg"))[:4]:
                (root / folder / p.name).symlink_to(p.resolve())
    if not any(root.rglob("*.jpg")):
        import numpy as np
        from PIL import Image

        for i in range(3):
            arr = np.random.default_rng(i).integers(0, 256, (120, 160, 3), dtype=np.uint8)
            Image.fromarray(arr).save(root / "n02111889-Samoyed" / f"g{i}.jpg")
    g, _ = build_gallery(root)
    return g.save(tmp_path_factory.mktemp("gallery") / "gallery")


@pytest.fixture(scope="module")
def base_url(default_predictor, gallery_file: Path, tmp_path_factory: pytest.TempPathFactory):
    _need_browser()
    import uvicorn

    from dogbreed.serve import create_app

    app = create_app(predictor=default_predictor, feedback_db=tmp_path_factory.mktemp("fb") / "fb.sqlite3",
                     gallery=gallery_file)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=_free_port(), log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            pytest.fail("uvicorn did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{server.config.port}"
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def browser(base_url: str):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=LAUNCH_ARGS)
        yield b
        b.close()


class PageWatch:
    """Records console errors and every URL the page asks for, to prove it works offline."""

    def __init__(self, page, base_url: str) -> None:
        self.errors: list[str] = []
        self.foreign: list[str] = []
        page.on("pageerror", lambda e: self.errors.append(str(e)))
        page.on("console", lambda m: m.type == "error" and "status of 4" not in m.text and self.errors.append(m.text))
        page.on("request", lambda r: r.url.startswith((base_url, "data:", "blob:")) or self.foreign.append(r.url))


@pytest.fixture
def page(browser, base_url: str):
    ctx = browser.new_context(viewport={"width": 1200, "height": 900})
    pg = ctx.new_page()
    watch = PageWatch(pg, base_url)
    pg.goto(base_url + "/")
    yield pg
    ctx.close()
    assert watch.errors == [], f"JavaScript errors: {watch.errors}"
    assert watch.foreign == [], f"page fetched outside the server: {watch.foreign}"


@pytest.fixture(scope="module")
def dog_photo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real dog photo when the shared data is there; otherwise a generated picture (then only the page's mechanics
    are checked, not the breed)."""
    real = REAL / SAMOYED
    if real.exists():
        return real
    import numpy as np
    from PIL import Image

    p = tmp_path_factory.mktemp("img") / "generated.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (240, 320, 3), dtype=np.uint8)).save(p)
    return p


@pytest.fixture(scope="module")
def chelsea_png(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from PIL import Image
    from skimage import data as skdata

    p = tmp_path_factory.mktemp("img") / "chelsea.png"
    Image.fromarray(skdata.chelsea()).save(p)
    return p


def wait_for_verdict(page) -> str:
    page.wait_for_selector("#verdict[data-verdict]", timeout=30_000)
    return page.get_attribute("#verdict", "data-verdict")


def test_upload_shows_verdict_and_bars(page, dog_photo: Path) -> None:
    page.set_input_files("#file", str(dog_photo))
    verdict = wait_for_verdict(page)
    assert verdict in ("dog", "uncertain_breed", "no_dog")
    rows = page.locator("#breeds li")
    assert rows.count() == 5
    for i in range(5):
        assert re.fullmatch(r"(<1|\d{1,3})%", rows.nth(i).locator(".breed-pct").inner_text())
        assert rows.nth(i).locator(".breed-name").inner_text().strip()
    # the bars are drawn to scale: the first is the longest and has a real width
    page.wait_for_timeout(700)  # the bars grow in over 0.6 s
    widths = [rows.nth(i).locator(".bar-fill").bounding_box()["width"] for i in range(5)]
    assert widths[0] > 0 and widths == sorted(widths, reverse=True)
    assert page.locator("#preview").evaluate("img => img.complete && img.naturalWidth > 0")
    if dog_photo.name != "generated.jpg":
        assert verdict == "dog"
        assert page.locator("#verdict h2").inner_text() == "Looks like a Samoyed"
        assert widths[0] > 0.8 * page.locator("#breeds li .bar").first.bounding_box()["width"]  # 97.7%
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "page-prediction.png"), full_page=True)
    assert (ARTIFACTS / "page-prediction.png").stat().st_size > 10_000


def test_cat_dropped_on_page_says_no_dog(page, chelsea_png: Path) -> None:
    # drag and drop, the way a browser delivers it: a DataTransfer holding the file, dropped on the zone
    b64 = base64.b64encode(chelsea_png.read_bytes()).decode()
    page.evaluate(
        """b64 => {
            const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
            const dt = new DataTransfer();
            dt.items.add(new File([bytes], "chelsea.png", {type: "image/png"}));
            const zone = document.getElementById("dropzone");
            zone.dispatchEvent(new DragEvent("dragenter", {dataTransfer: dt, bubbles: true}));
            zone.dispatchEvent(new DragEvent("drop", {dataTransfer: dt, bubbles: true, cancelable: true}));
        }""",
        b64,
    )
    assert wait_for_verdict(page) == "no_dog"
    assert page.locator("#verdict h2").inner_text() == "No dog found"
    assert "reference only" in page.locator("#breeds-caption").inner_text()
    assert page.locator("#feedback").is_hidden()  # no breed to confirm when there is no dog
    assert page.locator("#filename").inner_text() == "chelsea.png"


def test_non_image_shows_error(page, tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("definitely not a dog\n")
    page.set_input_files("#file", str(notes))
    assert wait_for_verdict(page) == "error"
    text = page.locator("#verdict").inner_text()
    assert "didn't work" in text and "notes.txt" in text and "not an image" in text
    assert page.locator("#breeds li").count() == 0
    assert page.locator("#preview").is_hidden()  # no broken-image icon


def test_keyboard_and_screen_reader_basics(page) -> None:
    assert page.get_attribute("#result", "aria-live") == "polite"
    assert page.locator("label[for=file]").inner_text() == "Choose a photo"
    for _ in range(6):  # skip link, header link, then the file input
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.id") == "file":
            break
    assert page.evaluate("document.activeElement.id") == "file"
    outline = page.locator("label[for=file]").evaluate("l => getComputedStyle(l).outlineStyle")
    assert outline == "solid"  # focus is visible on the button the user sees


def test_feedback_from_the_page(page, dog_photo: Path) -> None:
    if dog_photo.name == "generated.jpg":
        pytest.skip("needs a real dog photo for a confident prediction")
    page.set_input_files("#file", str(dog_photo))
    assert wait_for_verdict(page) == "dog"
    page.fill("#fb-breed", "Golden retriever")
    page.click("#fb-send")
    page.wait_for_selector("#fb-message.ok", timeout=10_000)
    assert page.locator("#fb-message").inner_text() == "Thank you! Saved as Golden retriever."


def test_phone_sized_screen(browser, base_url: str, dog_photo: Path) -> None:
    ctx = browser.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True,
                              has_touch=True)
    page = ctx.new_page()
    try:
        page.goto(base_url + "/")
        button = page.locator("label[for=file]").bounding_box()
        assert button["height"] >= 40 and button["width"] >= 200  # a comfortable tap target
        page.set_input_files("#file", str(dog_photo))
        wait_for_verdict(page)
        assert page.evaluate("document.documentElement.scrollWidth") <= 390  # nothing runs off the side
        photo = page.locator("#preview").bounding_box()
        answer = page.locator("#verdict").bounding_box()
        assert photo["y"] + photo["height"] <= answer["y"]  # stacked in one column
        assert answer["x"] >= 0 and answer["x"] + answer["width"] <= 390
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "page-phone.png"), full_page=True)
    finally:
        ctx.close()


def test_heat_map_toggle_shows_the_overlay_on_the_photo(page, dog_photo: Path) -> None:
    from PIL import Image

    page.set_input_files("#file", str(dog_photo))
    wait_for_verdict(page)
    toggle = page.locator("#explain-toggle")
    assert toggle.is_visible() and not toggle.is_checked()
    assert page.locator("#overlay").is_hidden()
    page.locator("#explain-label").click()
    page.wait_for_selector("#overlay:not([hidden])", timeout=60_000)
    size = page.locator("#overlay").evaluate("img => [img.naturalWidth, img.naturalHeight]")
    assert tuple(size) == Image.open(dog_photo).size  # the overlay is the photo's own size
    assert page.locator("#preview").is_hidden()  # shown in the photo's place
    box = page.locator("#overlay").bounding_box()
    assert box["width"] > 100 and box["height"] > 100
    if dog_photo.name != "generated.jpg":
        assert "Samoyed" in page.locator("#explain-status").inner_text()
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "page-heatmap.png"), full_page=True)
    page.locator("#explain-label").click()  # off again: the plain photo is back
    assert page.locator("#overlay").is_hidden() and page.locator("#preview").is_visible()


def test_look_alike_photos_of_the_top_breeds(page, dog_photo: Path) -> None:
    page.set_input_files("#file", str(dog_photo))
    verdict = wait_for_verdict(page)
    if verdict == "no_dog":
        assert page.locator("#lookalikes").is_hidden()
        return
    page.wait_for_selector("#lookalikes:not([hidden]) img", timeout=10_000)
    rows = page.locator("#lookalikes .lookalike-row")
    assert 1 <= rows.count() <= 3
    for i in range(rows.count()):
        imgs = rows.nth(i).locator("img")
        assert 1 <= imgs.count() <= 3
    first = rows.first.locator("img").first
    first.evaluate("img => img.decode()")
    assert first.evaluate("img => img.naturalWidth") > 0
    if dog_photo.name != "generated.jpg":
        assert rows.first.locator(".breed-label").inner_text() == "Samoyed"
        assert rows.first.locator("img").count() == 3


def test_an_over_size_photo_is_refused_before_uploading(page, tmp_path: Path) -> None:
    """The page knows the server's per-file limit (GET /healthz) and says so instead of sending 21 MB."""
    big = tmp_path / "huge.jpg"
    big.write_bytes(b"\xff\xd8\xff" + b"\0" * (21 * 1024 * 1024))
    page.wait_for_load_state("networkidle")  # /healthz answered
    posts: list[str] = []
    page.on("request", lambda r: r.method == "POST" and posts.append(r.url))
    page.set_input_files("#file", str(big))
    assert wait_for_verdict(page) == "error"
    text = page.locator("#verdict").inner_text()
    assert "This photo is 21.0 MB; the largest the server takes is 20.0 MB" in text
    assert posts == []
