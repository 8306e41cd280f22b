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
from fixtures import TWO_DOGS
from fixtures import two_dog_photo as make_two_dog_photo

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


def drop_file(page, path: Path, mime: str) -> None:
    """Drag and drop, the way a browser delivers it: a DataTransfer holding the file, dropped on the zone."""
    page.evaluate(
        """([b64, name, mime]) => {
            const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
            const dt = new DataTransfer();
            dt.items.add(new File([bytes], name, {type: mime}));
            const zone = document.getElementById("dropzone");
            zone.dispatchEvent(new DragEvent("dragenter", {dataTransfer: dt, bubbles: true}));
            zone.dispatchEvent(new DragEvent("drop", {dataTransfer: dt, bubbles: true, cancelable: true}));
        }""",
        [base64.b64encode(path.read_bytes()).decode(), path.name, mime],
    )


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
        # one dog: today's answer, plus its numbered box on the photo
        box = page.locator("#boxes .dog-box")
        assert box.count() == 1 and box.locator(".dog-num").inner_text() == "1"
        assert box.get_attribute("aria-label").startswith("Dog 1, Samoyed")
        assert within(box.bounding_box(), page.locator("#preview").bounding_box())
        assert page.locator("#dogs").is_hidden()  # no per-dog list for a single dog
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "page-prediction.png"), full_page=True)
    assert (ARTIFACTS / "page-prediction.png").stat().st_size > 10_000


def test_cat_dropped_on_page_says_no_dog(page, chelsea_png: Path) -> None:
    drop_file(page, chelsea_png, "image/png")
    assert wait_for_verdict(page) == "no_dog"
    assert page.locator("#verdict h2").inner_text() == "No dog found"
    assert "reference only" in page.locator("#breeds-caption").inner_text()
    assert page.locator("#boxes").is_hidden() and page.locator("#boxes .dog-box").count() == 0
    assert page.locator("#dogs").is_hidden()
    assert page.locator("#filename").inner_text() == "chelsea.png"
    # no breed to confirm, but a dog the model missed can be reported with its breed (the form was hidden, so
    # such photos never reached retraining); the photo as a whole, no box
    assert page.locator("#feedback legend").inner_text() == "Is there a dog here after all?"
    assert page.locator("#fb-yes").is_hidden() and page.locator("#fb-or").inner_text() == "It's a"
    page.fill("#fb-breed", "Pug")
    with page.expect_response("**/v1/feedback") as resp:
        page.click("#fb-send")
    page.wait_for_selector("#fb-message.ok", timeout=10_000)
    assert page.locator("#fb-message").inner_text() == "Thank you! Saved as Pug."
    stored = resp.value.json()
    assert stored["predicted"] == "no_dog" and stored["box"] is None and stored["breed"]["name"] == "Pug"


def test_a_second_photo_dropped_at_once_aborts_the_first_request(page, dog_photo: Path, chelsea_png: Path) -> None:
    """The older request is aborted, not left to run (the server drops an abandoned request's photos from its
    queue), and the newer photo's answer is the one shown, with no error for the first."""
    from playwright.sync_api import Error as PlaywrightError

    failed: list[str] = []
    page.on("requestfailed", lambda r: failed.append(r.url))
    held: list = []

    def hold_the_first(route) -> None:  # the first answer waits until the second photo is dropped
        if held:
            route.continue_()
        else:
            held.append(route)

    page.route("**/v1/predict**", hold_the_first)
    drop_file(page, dog_photo, "image/jpeg")
    for _ in range(100):
        if held:
            break
        page.wait_for_timeout(50)
    assert held
    drop_file(page, chelsea_png, "image/png")
    assert wait_for_verdict(page) == "no_dog"
    assert page.locator("#filename").inner_text() == "chelsea.png"
    try:
        held[0].continue_()  # too late: the page aborted it
    except PlaywrightError:
        pass
    page.wait_for_timeout(300)
    assert [u for u in failed if "/v1/predict" in u] == [page.url.rstrip("/") + "/v1/predict?top_k=5"]
    assert page.locator("#verdict").get_attribute("data-verdict") == "no_dog"  # the first's answer never shows


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
        _one_column_below_the_photo(page, "#verdict", "page-phone.png")
    finally:
        ctx.close()


def _one_column_below_the_photo(page, below: str, shot: str, width: int = 390) -> None:  # noqa: ANN001
    """On a phone-wide page: nothing runs off the side, ``below`` (its first match) sits under the photo and inside
    the screen; a full-page screenshot in test-artifacts/."""
    assert page.evaluate("document.documentElement.scrollWidth") <= width  # nothing runs off the side
    photo = page.locator("#preview").bounding_box()
    box = page.locator(below).first.bounding_box()
    assert photo["y"] + photo["height"] <= box["y"]  # stacked in one column, below the photo
    assert box["x"] >= 0 and box["x"] + box["width"] <= width
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / shot), full_page=True)


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


# --- several dogs: numbered boxes on the photo, one entry each ---------------------------------------------------

def within(inner: dict, outer: dict, slack: float = 1.0) -> bool:
    return (inner["x"] >= outer["x"] - slack and inner["y"] >= outer["y"] - slack
            and inner["x"] + inner["width"] <= outer["x"] + outer["width"] + slack
            and inner["y"] + inner["height"] <= outer["y"] + outer["height"] + slack)


def overlap(a: dict, b: dict) -> float:
    w = min(a["x"] + a["width"], b["x"] + b["width"]) - max(a["x"], b["x"])
    h = min(a["y"] + a["height"], b["y"] + b["height"]) - max(a["y"], b["y"])
    return max(0.0, w) * max(0.0, h)


# Where the photo and its boxes are, read in one script run: read one at a time, a smooth scroll or a frame of
# layout between two reads shifts one against the other (a box once read 25 px below its photo's frame).
GEOMETRY = """() => {
  const rect = (e) => {
    const b = e.getBoundingClientRect();
    return {x: b.x, y: b.y, width: b.width, height: b.height};
  };
  const img = document.querySelector("#preview:not([hidden]), #overlay:not([hidden])");
  const preview = document.querySelector("#preview");
  return {photo: rect(img), natural: [preview.naturalWidth, preview.naturalHeight],
          boxes: [...document.querySelectorAll("#boxes .dog-box")].map(rect)};
}"""


def on_screen(geometry: dict, rect: tuple[int, int, int, int]) -> dict:
    """A rectangle in the photo's pixels -> where the page shows it (the photo is drawn with object-fit: contain),
    in a `GEOMETRY` snapshot."""
    frame, (nw, nh) = geometry["photo"], geometry["natural"]
    s = min(frame["width"] / nw, frame["height"] / nh)
    ox, oy = frame["x"] + (frame["width"] - nw * s) / 2, frame["y"] + (frame["height"] - nh * s) / 2
    x0, y0, x1, y1 = rect
    return {"x": ox + x0 * s, "y": oy + y0 * s, "width": (x1 - x0) * s, "height": (y1 - y0) * s}


def contrast(rgb: str, other: tuple[int, int, int] = (255, 255, 255)) -> float:
    """WCAG contrast ratio of a computed `rgb(r, g, b)` colour against another."""
    def lum(c: tuple[int, ...]) -> float:
        lin = [(v / 255 / 12.92) if v / 255 <= 0.03928 else ((v / 255 + 0.055) / 1.055) ** 2.4 for v in c]
        return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]

    a, b = lum(tuple(int(v) for v in re.findall(r"\d+", rgb)[:3])), lum(other)
    return (max(a, b) + 0.05) / (min(a, b) + 0.05)


@pytest.fixture(scope="module")
def two_dog_photo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[tuple[str, tuple[int, ...]]]]:
    """`fixtures.two_dog_photo` written to a tmp dir as a JPEG: its path, and each pasted dog's breed and rectangle."""
    if not all((REAL / rel).exists() for rel, _ in TWO_DOGS):
        pytest.skip("needs the real photos in ../shared/data/real/imagenet-val-dogs")
    canvas, pasted = make_two_dog_photo(REAL)
    path = tmp_path_factory.mktemp("two-dogs") / "two-dogs.jpg"
    canvas.save(path, quality=92)
    return path, pasted


def check_two_dogs(page, pasted: list[tuple[str, tuple[int, ...]]]) -> None:
    """Exactly two numbered boxes over the photo, each on one pasted dog; two entries, each naming its dog's breed."""
    boxes = page.locator("#boxes .dog-box")
    assert boxes.count() == 2
    geometry = page.evaluate(GEOMETRY)
    photo = geometry["photo"]
    entries = page.locator("#dogs > li")
    assert entries.count() == 2
    found = {}
    for i in range(2):
        box = boxes.nth(i)
        assert box.locator(".dog-num").inner_text() == str(i + 1)
        assert box.get_attribute("aria-label").startswith(f"Dog {i + 1}: ")
        r = geometry["boxes"][i]
        assert within(r, photo)
        shares = [overlap(r, on_screen(geometry, rect)) / (r["width"] * r["height"]) for _, rect in pasted]
        j = max(range(2), key=shares.__getitem__)
        target = on_screen(geometry, pasted[j][1])
        assert shares[j] >= 0.85, f"box {i + 1} {r} is not on a pasted dog {target}"
        assert r["width"] * r["height"] >= 0.2 * target["width"] * target["height"], "box too small for its dog"
        found[j] = i
        entry = entries.nth(i)
        assert entry.get_attribute("id") == f"dog-{i + 1}"
        assert entry.locator(".dog-num").inner_text() == str(i + 1)
        assert entry.locator(".dog-head h3").text_content().startswith(f"Dog {i + 1}: ")  # read out with its number
        names = entry.locator(".breeds .breed-name").all_inner_texts()
        assert len(names) == 5
        assert pasted[j][0] in names[:3], f"dog {i + 1} on the {pasted[j][0]}: {names}"
    assert sorted(found) == [0, 1], "both boxes are on the same dog"


def test_two_dogs_get_numbered_boxes_and_an_entry_each(page, two_dog_photo) -> None:
    path, pasted = two_dog_photo
    drop_file(page, path, "image/jpeg")
    assert wait_for_verdict(page) in ("dog", "uncertain_breed")
    page.wait_for_selector("#boxes:not([hidden]) .dog-box", timeout=10_000)
    assert page.locator("#preview").evaluate("img => [img.naturalWidth, img.naturalHeight]") == [800, 500]
    assert page.locator("#verdict h2").inner_text() == "2 dogs in this photo"
    assert page.locator("#breeds").is_hidden() and page.locator("#breeds-caption").is_hidden()
    page.wait_for_timeout(700)  # the bars grow in over 0.6 s
    check_two_dogs(page, pasted)
    # the numbers stand out: white on each dog's colour at 4.5:1 or more
    for i in range(2):
        num = page.locator("#boxes .dog-box .dog-num").nth(i)
        assert contrast(num.evaluate("e => getComputedStyle(e).backgroundColor")) >= 4.5
        assert num.evaluate("e => getComputedStyle(e).color") == "rgb(255, 255, 255)"
    # feedback is about dog 1, the one the photo's answer names
    assert re.match(r"(Is dog 1 an? |Do you know dog 1)", page.locator("#feedback legend").inner_text())
    # a box is a link to its dog's entry
    page.locator("#boxes .dog-box").nth(1).click()
    page.wait_for_function("document.activeElement && document.activeElement.id === 'dog-2'", timeout=5_000)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "page-two-dogs.png"), full_page=True)
    # a narrower window: the photo is drawn smaller, the boxes follow it
    before = page.locator("#boxes .dog-box").first.bounding_box()
    page.set_viewport_size({"width": 820, "height": 900})
    page.wait_for_function(f"document.querySelector('#boxes .dog-box').getBoundingClientRect().width < "
                           f"{before['width'] - 5}", timeout=5_000)
    check_two_dogs(page, pasted)
    # the heat-map takes the photo's place; the boxes stay drawn above it
    page.set_viewport_size({"width": 1200, "height": 900})
    page.locator("#explain-label").click()
    page.wait_for_selector("#overlay:not([hidden])", timeout=60_000)
    page.wait_for_timeout(100)
    check_two_dogs(page, pasted)
    num = page.locator("#boxes .dog-box .dog-num").first.bounding_box()
    on_top = page.evaluate("([x, y]) => document.elementFromPoint(x, y).closest('.dog-box') !== null",
                           [num["x"] + num["width"] / 2, num["y"] + num["height"] / 2])
    assert on_top
    page.screenshot(path=str(ARTIFACTS / "page-two-dogs-heatmap.png"), full_page=True)


def test_two_dogs_in_a_photo_the_browser_cannot_show(page, two_dog_photo, tmp_path: Path) -> None:
    """A TIFF (the server reads it, the browser cannot draw it) of two dogs said "Numbered on the photo" with no
    photo shown; the entries are still there, and the words say why there are no numbers on it."""
    from PIL import Image

    path, _ = two_dog_photo
    tiff = tmp_path / "two-dogs.tiff"
    Image.open(path).save(tiff)
    drop_file(page, tiff, "image/tiff")
    assert wait_for_verdict(page) in ("dog", "uncertain_breed")
    page.wait_for_function("document.querySelector('figure.preview').hidden", timeout=10_000)
    assert page.locator("#verdict h2").inner_text() == "2 dogs in this photo"
    page.wait_for_function("document.querySelector('#verdict').innerText.includes('cannot show')", timeout=10_000)
    assert "Numbered on the photo" not in page.locator("#verdict").inner_text()
    assert page.locator("#dogs > li").count() == 2 and page.locator("#boxes .dog-box").count() == 0


def test_a_photo_the_browser_shows_another_way_up_gets_no_boxes_off_its_dogs(page, two_dog_photo,
                                                                             tmp_path: Path) -> None:
    """Found by QA: a WebP with an EXIF rotation is drawn unrotated by Chromium, and its boxes (in the upright
    photo's pixels) landed on empty background. The answer's `size` lets the page tell: boxes only where the photo
    it shows has that size, else the answer as for a photo it cannot show."""
    from PIL import Image

    path, _ = two_dog_photo
    img = Image.open(path)
    exif = Image.Exif()
    exif[0x0112] = 6  # shown rotated 90 degrees clockwise: stored the other way round
    webp = tmp_path / "two-dogs-rotated.webp"
    img.rotate(90, expand=True).save(webp, exif=exif.tobytes())
    with page.expect_response("**/v1/predict**") as resp:
        drop_file(page, webp, "image/webp")
    answer = resp.value.json()["predictions"][0]
    assert answer["size"] == list(img.size) and len(answer["dogs"]) == 2
    assert wait_for_verdict(page) in ("dog", "uncertain_breed")
    page.wait_for_timeout(500)
    shown = page.locator("#preview").evaluate("i => [i.naturalWidth, i.naturalHeight]")
    if shown == answer["size"]:  # a browser that applies the rotation: the boxes are right, and drawn
        assert page.locator("#boxes .dog-box").count() == 2
    else:
        assert page.locator("figure.preview").is_hidden() and page.locator("#boxes .dog-box").count() == 0
        assert page.locator("#dogs > li").count() == 2
        assert "cannot show" in page.locator("#verdict").inner_text()


def test_two_dogs_on_a_phone(browser, base_url: str, two_dog_photo) -> None:
    path, pasted = two_dog_photo
    ctx = browser.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True,
                              has_touch=True)
    page = ctx.new_page()
    try:
        page.goto(base_url + "/")
        page.set_input_files("#file", str(path))
        wait_for_verdict(page)
        page.wait_for_selector("#boxes:not([hidden]) .dog-box", timeout=10_000)
        page.wait_for_timeout(700)
        check_two_dogs(page, pasted)
        _one_column_below_the_photo(page, "#dogs > li", "page-two-dogs-phone.png")
    finally:
        ctx.close()


def test_each_dog_says_how_sure_it_is(page, dog_photo: Path) -> None:
    """The per-dog states, from a made-up answer (the page's mechanics, not the model): a dog that could be one of
    two breeds with its own look-alikes, and a dog of no clear breed. The look-alikes are the server's real ones."""
    import json

    from PIL import Image

    real = page.evaluate(
        """async b64 => {
            const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
            const form = new FormData();
            form.append("file", new File([bytes], "dog.jpg", {type: "image/jpeg"}));
            return (await fetch("/v1/predict?top_k=5", {method: "POST", body: form})).json();
        }""",
        base64.b64encode(dog_photo.read_bytes()).decode(),
    )["predictions"][0]
    looks = real.get("look_alikes") or []
    w, h = Image.open(dog_photo).size

    def breeds(*pairs: tuple[str, float]) -> list[dict]:
        return [{"wnid": None, "name": n, "probability": p} for n, p in pairs]

    first = {"box": [0, 0, w // 2, h], "dog_probability": 0.99, "verdict": "dog", "several_breeds_likely": True,
             "breeds": breeds(("Samoyed", 0.55), ("Great Pyrenees", 0.4), ("Kuvasz", 0.03), ("Eskimo dog", 0.01),
                              ("Pomeranian", 0.01)), "look_alikes": looks}
    second = {"box": [w // 2, h // 4, w, h], "dog_probability": 0.97, "verdict": "uncertain_breed",
              "several_breeds_likely": False,
              "breeds": breeds(("Beagle", 0.3), ("English foxhound", 0.25), ("Walker hound", 0.2), ("Basset", 0.15),
                               ("Bloodhound", 0.1))}
    answer = {"predictions": [{**{k: v for k, v in first.items() if k != "box"}, "path": dog_photo.name,
                               "dogs": [first, second]}]}
    page.route("**/v1/predict*", lambda route: route.fulfill(status=200, content_type="application/json",
                                                             body=json.dumps(answer)))
    page.set_input_files("#file", str(dog_photo))
    assert wait_for_verdict(page) == "dog"
    page.wait_for_selector("#boxes:not([hidden]) .dog-box", timeout=10_000)
    assert page.locator("#boxes .dog-box").count() == 2
    entries = page.locator("#dogs > li")
    assert entries.count() == 2
    assert entries.nth(0).locator(".dog-head h3").text_content() == "Dog 1: Samoyed"
    assert "could also be a Great Pyrenees" in entries.nth(0).locator(".dog-head p").inner_text()
    assert entries.nth(1).locator(".dog-head h3").text_content() == "Dog 2: Mixed or uncertain breed"
    assert "1: Samoyed, 2: Mixed or uncertain breed" in page.locator("#verdict").inner_text()
    assert page.locator("#feedback legend").inner_text() == "Is dog 1 a Samoyed?"
    assert page.locator("#lookalikes").is_hidden()  # the look-alikes are in each dog's own entry
    if any(b.get("photos") for b in looks):
        assert entries.nth(0).locator(".lookalikes img").count() >= 1
        entries.nth(0).locator(".lookalikes img").first.evaluate("img => img.decode()")
    assert entries.nth(1).locator(".lookalikes").count() == 0
    # the second box covers the right half, from a quarter down
    geometry = page.evaluate(GEOMETRY)
    r, photo = geometry["boxes"][1], on_screen(geometry, (0, 0, w, h))
    assert abs(r["x"] - (photo["x"] + photo["width"] * (w // 2) / w)) < 2
    assert abs(r["y"] - (photo["y"] + photo["height"] * (h // 4) / h)) < 2
    assert abs(r["x"] + r["width"] - (photo["x"] + photo["width"])) < 2
    page.wait_for_timeout(700)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "page-dog-states.png"), full_page=True)


def test_feedback_names_its_dog_and_a_small_dog_keeps_its_number_beside_it(page, dog_photo: Path) -> None:
    """A made-up answer of three dogs, the third one tiny at the photo's top right corner: its number is drawn
    beside its box, not over it; feedback on dog 2 sends dog 2's box, and the server stores it."""
    import json

    from PIL import Image

    w, h = Image.open(dog_photo).size

    def dog(box: list[int], verdict: str, name: str) -> dict:
        return {"box": box, "dog_probability": 0.98, "verdict": verdict, "several_breeds_likely": False,
                "breeds": [{"wnid": None, "name": name, "probability": 0.9}]}

    dogs = [dog([0, 0, w // 2, h], "dog", "Samoyed"), dog([w // 2, h // 4, w - 40, h], "uncertain_breed", "Beagle"),
            dog([w - 14, 0, w, 12], "dog", "Pug")]
    answer = {"predictions": [{**{k: v for k, v in dogs[0].items() if k != "box"}, "path": dog_photo.name,
                               "dogs": dogs}]}
    page.route("**/v1/predict*", lambda route: route.fulfill(status=200, content_type="application/json",
                                                             body=json.dumps(answer)))
    page.set_input_files("#file", str(dog_photo))
    assert wait_for_verdict(page) == "dog"
    page.wait_for_selector("#boxes:not([hidden]) .dog-box", timeout=10_000)
    tiny, num = page.locator("#boxes .dog-box").nth(2), page.locator("#boxes .dog-box .dog-num").nth(2)
    t, n = tiny.bounding_box(), num.bounding_box()
    assert t["width"] < n["width"]  # the box is drawn smaller than its number
    assert overlap(t, n) == 0, f"the number {n} hides the small dog's box {t}"
    assert n["y"] >= 0 and n["x"] + n["width"] <= page.viewport_size["width"]  # on screen, below and left of it
    big = page.locator("#boxes .dog-box").nth(0).bounding_box()
    assert within(page.locator("#boxes .dog-box .dog-num").nth(0).bounding_box(), big)  # large boxes: inside
    # feedback: the dog is chosen, the legend follows it, and its box goes with the breed
    assert page.locator("#feedback legend").inner_text() == "Is dog 1 a Samoyed?"
    page.select_option("#fb-dog", "1")
    assert page.locator("#feedback legend").inner_text() == "Do you know dog 2's breed?"
    assert page.locator("#fb-yes").is_hidden()
    page.fill("#fb-breed", "Beagle")
    with page.expect_response("**/v1/feedback") as resp:
        page.click("#fb-send")
    body = resp.value.json()
    assert resp.value.status == 200, body
    assert body["box"] == dogs[1]["box"] and body["breed"]["name"] == "Beagle"
    page.wait_for_function("document.getElementById('fb-message').textContent.includes('dog 2')", timeout=5_000)
    assert page.locator("#fb-message").inner_text() == "Thank you! Saved dog 2 as Beagle."


def test_a_crowded_pack_keeps_every_number_apart(browser, base_url: str, dog_photo: Path) -> None:
    """A made-up answer of eight dogs whose boxes overlap their neighbours, as a pack's do, on a phone-wide page:
    no number covers another, each stays on the photo, and a box's number is inside it or, for a box smaller than
    its number, beside it."""
    import json

    from PIL import Image

    w, h = Image.open(dog_photo).size
    # two rows of four boxes, each reaching 40% into the next one and the row below; the last one tiny
    bw, bh = w / 3.4, h / 1.6
    boxes = [[round(c * bw * 0.6), round(r * bh * 0.6), round(c * bw * 0.6 + bw), round(r * bh * 0.6 + bh)]
             for r in range(2) for c in range(4)]
    boxes[-1] = [boxes[-2][0] + 8, boxes[-2][1] + 8, boxes[-2][0] + 20, boxes[-2][1] + 20]
    dogs = [{"box": b, "dog_probability": 0.98, "verdict": "dog", "several_breeds_likely": False,
             "breeds": [{"wnid": None, "name": f"Breed {i}", "probability": 0.9}]} for i, b in enumerate(boxes)]
    answer = {"predictions": [{**{k: v for k, v in dogs[0].items() if k != "box"}, "path": dog_photo.name,
                               "dogs": dogs}]}
    ctx = browser.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True,
                              has_touch=True)
    page = ctx.new_page()
    try:
        page.goto(base_url + "/")
        page.route("**/v1/predict*", lambda route: route.fulfill(status=200, content_type="application/json",
                                                                 body=json.dumps(answer)))
        page.set_input_files("#file", str(dog_photo))
        assert wait_for_verdict(page) == "dog"
        page.wait_for_selector("#boxes:not([hidden]) .dog-box", timeout=10_000)
        # the list grows in beside the photo and the layout settles: read it once two reads agree
        script = GEOMETRY.replace("boxes:", 'nums: [...document.querySelectorAll("#boxes .dog-num")].map(rect), boxes:')
        geometry, deadline = None, time.monotonic() + 10
        while time.monotonic() < deadline:
            page.wait_for_timeout(250)
            now = page.evaluate(script)
            if now == geometry:
                break
            geometry = now
        nums = geometry["nums"]
        assert len(nums) == len(geometry["boxes"]) == 8
        photo = on_screen(geometry, (0, 0, w, h))
        for i, n in enumerate(nums):
            assert within(n, photo), f"number {i + 1} {n} is off the photo {photo}"
            for j in range(i):
                assert overlap(n, nums[j]) == 0, f"number {i + 1} {n} covers number {j + 1} {nums[j]}"
            box = geometry["boxes"][i]
            if box["width"] >= 2 * n["width"] and box["height"] >= 2 * n["height"]:  # as app.js tells small boxes
                assert within(n, box), f"number {i + 1} {n} is not inside its box {box}"
            else:
                assert overlap(n, box) == 0, f"number {i + 1} {n} hides its small dog {box}"
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "page-pack-phone.png"), full_page=True)
    finally:
        ctx.close()
