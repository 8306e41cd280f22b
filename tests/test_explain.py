"""Heat-maps (`dogbreed.explain`): Grad-CAM overlays from the CLI, the API and the library."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image
from typer.testing import CliRunner

from dogbreed.cli import app as cli_app
from dogbreed.explain import (
    Explainer,
    mass_inside,
    overlay,
    overlay_name,
    preprocess_image,
    to_tensor,
    torch_classifier,
)

runner = CliRunner()
# Four breeds of different build and colour; ImageNet *validation* photos (no backbone trained on them).
DOGS = ["n02111889-Samoyed/ILSVRC2012_val_00003808.jpg", "n02088364-beagle", "n02099601-golden_retriever",
        "n02105641-Old_English_sheepdog"]


@pytest.fixture(scope="module")
def explainer() -> Explainer:
    return Explainer(torch_classifier("default"))


def noise(size: tuple[int, int], seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def test_overlay_and_heat_have_the_photos_size(explainer: Explainer) -> None:
    img = noise((333, 250))
    e = explainer.explain(img)
    assert e.overlay.size == (333, 250)
    assert e.heat.shape == (250, 333)
    assert 0 <= e.heat.min() and e.heat.max() <= 1
    png = Image.open(io.BytesIO(e.png()))
    assert png.format == "PNG" and png.size == (333, 250)


def test_overlay_of_a_big_photo_is_reduced_to_the_cap(explainer: Explainer) -> None:
    """`predict --explain` on a 12 MP photo must not write a 12 MP overlay (the API had this cap already)."""
    big = noise((4000, 3000))
    e = explainer.explain(big, max_pixels=4_000_000)
    assert e.overlay.size == (2000, 1500) and e.heat.shape == (1500, 2000)  # the smallest whole factor: 2
    assert explainer.explain(noise((600, 400)), max_pixels=4_000_000).overlay.size == (600, 400)


def test_a_dog_asked_of_a_whole_photo_answer_says_dogs_are_not_looked_for(explainer: Explainer) -> None:
    """With --whole-photo no dogs are listed; `?dog=1` said "the photo has 0 dogs" of a photo that says "dog"."""
    from dogbreed.inference.scoring import BreedScore, Prediction

    answer = Prediction("x.jpg", "dog", 0.99, [BreedScore("n02111889", "Samoyed", 0.9)])  # dogs None: not looked for
    with pytest.raises(ValueError, match="dogs are not looked for here"):
        explainer.explain_answer(noise((200, 150)), answer, dog=1)
    with pytest.raises(ValueError, match="has 0 dogs"):  # looked for, none found
        explainer.explain_answer(noise((200, 150)), Prediction("x.jpg", "no_dog", 0.01, answer.breeds, dogs=[]), dog=1)


def test_a_long_thin_photo_is_explained_on_a_bounded_input(explainer: Explainer,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """A 5000x10 photo, its shorter side taken to the explainer's 448 px, was a 224,000x448 input whose backward
    pass took `predict --explain` to 24 GB and the OOM killer. Its input is now at most `CAM_MAX_AREA` times the
    size squared, its heat-map still the photo's size; an ordinary photo's input is as before."""
    from dogbreed import explain as explain_module

    shapes = []
    plain = explain_module.to_tensor
    monkeypatch.setattr(explain_module, "to_tensor", lambda *a: shapes.append(a[0].size) or plain(*a))
    size = explainer.cfg.size
    # 20000x3 and its like (a 5 px shorter side once bounded) failed in the backbone and stopped the whole run
    for photo in ((5000, 10), (10, 5000), (640, 480), (20000, 3), (3, 20000), (3000, 1)):
        e = explainer.explain(noise(photo))
        assert e.heat.shape == (photo[1], photo[0])
    (w1, h1), (w2, h2), ordinary, *thinnest = shapes
    assert w1 * h1 <= explain_module.CAM_MAX_AREA * size * size * 1.01 and w1 > h1
    assert w2 * h2 <= explain_module.CAM_MAX_AREA * size * size * 1.01 and h2 > w2
    assert min(ordinary) == size
    for w, h in thinnest:
        assert min(w, h) == explain_module.CAM_MIN_SIDE and w * h <= explain_module.CAM_MAX_AREA * size * size


def test_a_jpeg_over_the_decode_limit_gets_its_overlay_from_its_draft(explainer: Explainer,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A 108-megapixel phone JPEG is predicted at its draft size, but its heat-map decoded it whole and was refused.
    At a 3-megapixel limit here: a 2400x1800 JPEG is drawn from its half-size draft, reduced by a whole factor to
    the 1-megapixel overlay (600x450), while a PNG that size is refused as before."""
    from dogbreed.errors import ImageTooLarge

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 3_000_000)
    buf = io.BytesIO()
    noise((2400, 1800)).save(buf, "JPEG")
    e = explainer.explain(buf.getvalue(), max_pixels=1_000_000)
    assert e.overlay.size == (600, 450) and e.heat.shape == (450, 600)
    with pytest.raises(ImageTooLarge):
        explainer.explain(buf.getvalue(), max_pixels=None)  # the photo's own size was asked for
    png = io.BytesIO()
    noise((2400, 1800)).save(png, "PNG")
    with pytest.raises(ImageTooLarge):
        explainer.explain(png.getvalue(), max_pixels=1_000_000)


def test_breed_can_be_named_and_unknown_breed_is_an_error(explainer: Explainer) -> None:
    img = noise((200, 180), seed=1)
    e = explainer.explain(img, "Golden retriever")
    assert e.breed.name == "Golden retriever"
    assert explainer.explain(img, e.breed.wnid).class_index == e.class_index
    with pytest.raises(ValueError, match="unknown breed"):
        explainer.explain(img, "Not a breed")
    assert explainer.class_index("Labrador") == explainer.class_index("Labrador retriever")
    with pytest.raises(ValueError, match="more than one breed: Pembroke or Cardigan"):
        explainer.explain(img, "corgi")


def test_overlay_keeps_the_photo_where_there_is_no_heat() -> None:
    img = noise((50, 40), seed=2)
    heat = np.zeros((40, 50), np.float32)
    heat[10:20, 10:20] = 1.0
    out = np.asarray(overlay(img, heat), dtype=float)
    photo = np.asarray(img, dtype=float)
    # cold pixels are lightly tinted, hot ones mostly colour: the hot square differs far more from the photo
    cold = np.abs(out[30:, 30:] - photo[30:, 30:]).mean()
    hot = np.abs(out[10:20, 10:20] - photo[10:20, 10:20]).mean()
    assert hot > 2 * cold


@pytest.mark.real
def test_heat_mass_falls_inside_a_pasted_dog(explainer: Explainer, real_data: Path) -> None:
    """A real dog photo pasted at a known box on a plain background: most of the heat lies on the dog."""
    shares = []
    for i, item in enumerate(DOGS):
        p = real_data / "imagenet-val-dogs" / item
        path = p if p.is_file() else sorted(p.glob("*.jpg"))[0]
        dog = Image.open(path).convert("RGB")
        dog.thumbnail((240, 240))
        canvas = Image.new("RGB", (640, 480), (200, 200, 200))
        x0, y0 = [(360, 180), (20, 20), (200, 120), (380, 30)][i]
        canvas.paste(dog, (x0, y0))
        box = (x0, y0, x0 + dog.width, y0 + dog.height)
        area = dog.width * dog.height / (640 * 480)
        heat, _ = explainer.heatmap(canvas)
        shares.append(mass_inside(heat, box))
        assert shares[-1] > 0.5, f"{path.name}: {shares[-1]:.2f} of the heat on a dog covering {area:.0%}"
    assert np.mean(shares) > 0.7


def test_overlay_names_do_not_collide() -> None:
    used: set[str] = set()
    assert [overlay_name(p, used) for p in ("a/x.jpg", "b/x.jpg", "c/y.png", "x.jpg")] == \
        ["x.png", "x-2.png", "y.png", "x-3.png"]


def test_an_overlay_never_replaces_a_file_that_is_not_its_own(tmp_path: Path) -> None:
    """Found by QA: `predict rex.png --explain .` replaced the photo rex.png with its heat-map, and any PNG of the
    photo's stem in the folder went the same way."""
    from dogbreed.explain import overlay_info

    Image.new("RGB", (8, 8)).save(tmp_path / "rex.png")  # the photo itself, or a user's picture: no chunk
    assert overlay_name(str(tmp_path / "rex.png"), set(), tmp_path) == "rex-2.png"
    Image.new("RGB", (8, 8)).save(tmp_path / "max.png", pnginfo=overlay_info("in/max.jpg"))
    assert overlay_name("in/max.jpg", set(), tmp_path) == "max.png"  # its own heat-map, from a resumed run
    assert overlay_name("other/max.jpg", set(), tmp_path) == "max-2.png"  # another photo's


@pytest.mark.slow
def test_cli_explain_writes_an_overlay_per_photo(tmp_path: Path, chelsea_jpeg: bytes) -> None:
    photos = tmp_path / "in"
    photos.mkdir()
    (photos / "cat.jpg").write_bytes(chelsea_jpeg)
    noise((120, 90)).save(photos / "noise.png")
    (photos / "broken.jpg").write_bytes(b"not an image")
    out = tmp_path / "heat"
    r = runner.invoke(cli_app, ["predict", str(photos), "--explain", str(out), "--format", "json"])
    assert r.exit_code == 0, r.output
    rows = json.loads(r.stdout)
    by_name = {Path(x["path"]).name: x for x in rows}
    assert "explanation" not in by_name["broken.jpg"]
    for name, size in (("cat.jpg", Image.open(io.BytesIO(chelsea_jpeg)).size), ("noise.png", (120, 90))):
        png = Path(by_name[name]["explanation"])
        assert png.parent == out and png.suffix == ".png"
        assert Image.open(png).size == size
    assert sorted(p.name for p in out.iterdir()) == ["cat.png", "noise.png"]


@pytest.mark.slow
def test_cli_explain_keeps_going_past_a_photo_whose_heat_map_fails(tmp_path: Path, chelsea_jpeg: bytes,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """One photo's heat-map failing (a 20000x3 photo did, inside the backbone) stopped the run with a traceback:
    stdout was cut mid-array and a resumed --out run hit it again each time. Now that photo keeps its answer
    without a heat-map, says why, and the photos after it are answered and explained."""
    from dogbreed.explain import Explainer

    photos = tmp_path / "in"
    photos.mkdir()
    noise((120, 90)).save(photos / "a-fails.png")
    (photos / "b-cat.jpg").write_bytes(chelsea_jpeg)
    plain = Explainer.explain_answer

    def failing(self, src, *a, **k):  # noqa: ANN001, ANN202
        if str(src).endswith("a-fails.png"):
            raise RuntimeError("the backbone could not take it")
        return plain(self, src, *a, **k)

    monkeypatch.setattr(Explainer, "explain_answer", failing)
    out = tmp_path / "heat"
    r = runner.invoke(cli_app, ["predict", str(photos), "--explain", str(out), "--format", "json"])
    assert r.exit_code == 0, r.output
    rows = {Path(x["path"]).name: x for x in json.loads(r.stdout)}
    assert rows["a-fails.png"]["verdict"] in ("dog", "no_dog", "uncertain_breed")
    assert "explanation" not in rows["a-fails.png"] and Path(rows["b-cat.jpg"]["explanation"]).is_file()
    assert "a-fails.png: no heat-map: the backbone could not take it" in r.stderr
    assert sorted(p.name for p in out.iterdir()) == ["b-cat.png"]


@pytest.mark.slow
def test_cli_explain_with_default_flags_draws_each_dog_of_two_in_its_box(tmp_path: Path, real_data: Path) -> None:
    from fixtures import two_dog_photo

    photo, pasted = two_dog_photo(real_data)
    photo.save(tmp_path / "two.jpg", quality=92)
    r = runner.invoke(cli_app, ["predict", str(tmp_path / "two.jpg"), "--explain", str(tmp_path / "heat"),
                                "--format", "json"])
    assert r.exit_code == 0, r.output
    (row,) = json.loads(r.stdout)
    assert len(row["dogs"]) == 2 and all(d["explanation"] == row["explanation"] for d in row["dogs"])
    out = np.asarray(Image.open(row["explanation"]).convert("RGB"), np.float32)
    cold = np.asarray(overlay(Image.open(tmp_path / "two.jpg"), np.zeros((500, 800), np.float32)), np.float32)
    diff = np.abs(out - cold).max(-1)
    outside = np.ones((500, 800), bool)
    for d in row["dogs"]:
        x0, y0, x1, y1 = d["box"]
        outside[max(0, y0 - 4):y1 + 4, max(0, x0 - 4):x1 + 4] = False
        assert diff[y0 + 4:y1 - 4, x0 + 4:x1 - 4].mean() > 5  # each dog's own heat, in its box
    assert diff[outside].max() <= 1  # and none over the scene between them


@pytest.mark.slow
def test_a_resumed_run_keeps_the_heat_maps_written_before(tmp_path: Path, chelsea_jpeg: bytes) -> None:
    for d in ("p1", "p2"):
        (tmp_path / d).mkdir()
    (tmp_path / "p1" / "x.jpg").write_bytes(chelsea_jpeg)
    noise((120, 90)).save(tmp_path / "p2" / "x.jpg")
    out, heat = tmp_path / "r.jsonl", tmp_path / "heat"
    first = [str(tmp_path / "p1" / "x.jpg")]
    args = ["--out", str(out), "--explain", str(heat), "--whole-photo"]
    assert runner.invoke(cli_app, ["predict", *first, *args]).exit_code == 0
    before = (heat / "x.png").read_bytes()
    r = runner.invoke(cli_app, ["predict", *first, str(tmp_path / "p2" / "x.jpg"), *args])  # resumes after p1
    assert r.exit_code == 0, r.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [Path(x["explanation"]).name for x in rows] == ["x.png", "x-2.png"]
    assert (heat / "x.png").read_bytes() == before  # p1's heat-map is still p1's
    assert Image.open(heat / "x-2.png").size == (120, 90)
    # the same photo explained again takes its own name back
    assert runner.invoke(cli_app, ["predict", *first, *args, "--overwrite"]).exit_code == 0
    assert sorted(p.name for p in heat.iterdir()) == ["x-2.png", "x.png"]


@pytest.mark.slow
def test_cli_explain_unknown_breed_fails_before_reading_photos(tmp_path: Path, chelsea_jpeg: bytes) -> None:
    (tmp_path / "cat.jpg").write_bytes(chelsea_jpeg)
    r = runner.invoke(cli_app, ["predict", str(tmp_path / "cat.jpg"), "--explain", str(tmp_path / "o"),
                                "--explain-breed", "Unicorn"])
    assert r.exit_code == 2 and "unknown breed" in r.output
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_api_explain_returns_a_png_the_photos_size(default_predictor, chelsea_jpeg: bytes) -> None:
    from dogbreed.serve.app import create_app

    with TestClient(create_app(predictor=default_predictor)) as c:
        r = c.post("/v1/explain", files={"file": ("cat.jpg", chelsea_jpeg, "image/jpeg")})
        assert r.status_code == 200 and r.headers["content-type"] == "image/png"
        assert Image.open(io.BytesIO(r.content)).size == Image.open(io.BytesIO(chelsea_jpeg)).size
        top = c.post("/v1/predict", files={"file": ("cat.jpg", chelsea_jpeg, "image/jpeg")}).json()
        assert r.headers["x-dogbreed-breed"] == top["predictions"][0]["breeds"][0]["name"]
        r = c.post("/v1/explain?breed=Beagle", files={"file": ("cat.jpg", chelsea_jpeg, "image/jpeg")})
        assert r.status_code == 200 and r.headers["x-dogbreed-breed"] == "Beagle"
        r = c.post("/v1/explain?breed=Unicorn", files={"file": ("cat.jpg", chelsea_jpeg, "image/jpeg")})
        assert r.status_code == 422 and "unknown breed" in r.json()["detail"]
        assert c.post("/v1/explain").status_code == 400
        r = c.post("/v1/explain", files={"file": ("x.jpg", b"not an image", "image/jpeg")})
        assert r.status_code == 415 and "x.jpg" in r.json()["detail"]
        assert "/v1/explain" in c.get("/openapi.json").json()["paths"]


@pytest.mark.slow
def test_api_explains_a_jpeg_over_the_pixel_limit_from_its_draft(default_predictor, chelsea_jpeg: bytes,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A 50-89 megapixel JPEG was answered by /v1/predict (its draft decode fits the limit) but refused by
    /v1/explain with a 413, which decoded it whole for an overlay of at most 4 MP. Here at a 3 MP limit and a
    250,000-pixel overlay: a 3600x2400 JPEG is drawn from its quarter-size draft, reduced to 450x300; a PNG that
    size has no draft and is refused as before."""
    from dogbreed.serve import routes_explain
    from dogbreed.serve.app import create_app

    monkeypatch.setattr(routes_explain, "EXPLAIN_MAX_PIXELS", 250_000)
    big = Image.open(io.BytesIO(chelsea_jpeg)).convert("RGB").resize((3600, 2400))
    jpeg, png = io.BytesIO(), io.BytesIO()
    big.save(jpeg, "JPEG", quality=90)
    big.save(png, "PNG")
    with TestClient(create_app(predictor=default_predictor, max_pixels=3_000_000)) as c:
        assert c.post("/v1/predict", files={"file": ("big.jpg", jpeg.getvalue(), "image/jpeg")}).status_code == 200
        r = c.post("/v1/explain", files={"file": ("big.jpg", jpeg.getvalue(), "image/jpeg")})
        assert r.status_code == 200, r.text
        assert Image.open(io.BytesIO(r.content)).size == (450, 300)
        r = c.post("/v1/explain", files={"file": ("big.png", png.getvalue(), "image/png")})
        assert r.status_code == 413 and "3600x2400 is 8,640,000 pixels; the limit is 3,000,000" in r.json()["detail"]


@pytest.mark.slow
def test_api_explains_each_dog_in_its_box_and_one_dog_by_number(default_predictor, real_data: Path) -> None:
    from fixtures import two_dog_photo

    from dogbreed.serve.app import create_app

    photo, pasted = two_dog_photo(real_data)
    buf = io.BytesIO()
    photo.save(buf, format="JPEG", quality=92)
    jpeg = buf.getvalue()
    with TestClient(create_app(predictor=default_predictor)) as c:
        def post(query: str = "") -> httpx.Response:
            return c.post("/v1/explain" + query, files={"file": ("two.jpg", jpeg, "image/jpeg")})

        dogs = c.post("/v1/predict", files={"file": ("two.jpg", jpeg, "image/jpeg")}).json()["predictions"][0]["dogs"]
        assert len(dogs) == 2
        every = post()
        assert every.status_code == 200 and every.headers["x-dogbreed-dogs"] == "1,2"
        assert every.headers["x-dogbreed-breed"] == "; ".join(d["breeds"][0]["name"] for d in dogs)
        second = post("?dog=2")
        assert second.status_code == 200 and second.headers["x-dogbreed-dogs"] == "2"
        assert second.headers["x-dogbreed-breed"] == dogs[1]["breeds"][0]["name"]
        # only dog 2's box carries heat: outside it the overlay is the photo under the coldest tint everywhere
        img = np.asarray(Image.open(io.BytesIO(second.content)).convert("RGB"), np.float32)
        cold = np.asarray(overlay(Image.open(io.BytesIO(jpeg)), np.zeros((500, 800), np.float32)), np.float32)
        x0, y0, x1, y1 = dogs[1]["box"]
        outside = np.ones((500, 800), bool)
        outside[max(0, y0 - 4):y1 + 4, max(0, x0 - 4):x1 + 4] = False  # the box's outline and number
        assert np.abs(img - cold)[outside].max() <= 1
        assert np.abs(img - cold)[y0 + 4:y1 - 4, x0 + 4:x1 - 4].mean() > 5
        named = post("?dog=1&breed=Beagle")
        assert named.status_code == 200 and named.headers["x-dogbreed-breed"] == "Beagle"
        whole = post("?breed=Beagle")  # a breed without a dog: the whole photo, as before
        assert whole.headers["x-dogbreed-dogs"] == "" and whole.headers["x-dogbreed-breed"] == "Beagle"
        bad = post("?dog=3")
        assert bad.status_code == 422 and "has 2 dogs" in bad.json()["detail"]
        assert post("?dog=0").status_code == 422
        assert "dog" in {p["name"] for p in c.get("/openapi.json").json()["paths"]["/v1/explain"]["post"]["parameters"]}


def test_each_dog_of_a_photo_over_the_overlay_cap_is_explained_in_its_own_box(explainer: Explainer,
                                                                              real_data: Path) -> None:
    """A 3200x2000 photo (6.4 MP, over the 4 MP overlay cap, so drawn at half size): each dog's box, given in the
    photo's own pixels, is scaled to the overlay, and its heat falls there and nowhere else."""
    from fixtures import two_dog_photo

    from dogbreed.inference.dogs import Dog
    from dogbreed.inference.scoring import BreedScore, Prediction

    small, pasted = two_dog_photo(real_data)
    big = small.resize((3200, 2000), Image.BICUBIC)
    buf = io.BytesIO()
    big.save(buf, format="JPEG", quality=90)
    top = [BreedScore(None, "Golden retriever", 0.9)]
    dogs = [Dog([4 * v for v in rect], 0.99, "dog", top) for _, rect in pasted]
    out, breeds, drawn = explainer.explain_answer(buf.getvalue(), Prediction("x.jpg", "dog", 0.99, top, dogs=dogs))
    assert out.size == (1600, 1000) and drawn == [1, 2] and len(breeds) == 2
    cold = np.asarray(overlay(big.reduce(2), np.zeros((1000, 1600), np.float32)), np.float32)
    diff = np.abs(np.asarray(out, np.float32) - cold).max(-1)
    outside = np.ones((1000, 1600), bool)
    for _, (x0, y0, x1, y1) in pasted:  # at half the photo's size: twice the 800x500 rectangle
        outside[2 * y0 - 6:2 * y1 + 6, 2 * x0 - 6:2 * x1 + 6] = False
        assert diff[2 * y0 + 6:2 * y1 - 6, 2 * x0 + 6:2 * x1 - 6].mean() > 5
    assert np.percentile(diff[outside], 99.9) <= 3  # JPEG noise aside, untouched outside the boxes


def test_each_box_number_is_sized_to_the_photo_and_reads_on_any_colour(explainer: Explainer) -> None:
    """A 1600x900 photo: the number is a tag at its box's corner about 35 px tall (the photo's longer side / 45),
    white on black, not Pillow's 11 px default, which nobody can read on a phone's photo."""
    from dogbreed.inference.dogs import Dog
    from dogbreed.inference.scoring import BreedScore

    canvas = Image.new("RGB", (1600, 900), (250, 250, 250))
    top = [BreedScore("n02111889", "Samoyed", 0.9)]
    out, _ = explainer.explain_dogs(canvas, [Dog([400, 300, 900, 700], 0.99, "dog", top),
                                             Dog([1000, 100, 1500, 500], 0.99, "dog", top)])
    for x0, y0 in ((400, 300), (1000, 100)):
        tag = np.asarray(out, np.int32)[y0:y0 + 60, x0:x0 + 60].max(-1)
        dark_rows = (tag < 40).sum(1) > 10
        assert 28 <= dark_rows.sum() <= 55  # the tag's height
        assert (tag[dark_rows] > 200).sum() > 30  # the digit in white inside it
    # a box in the photo's bottom right corner: its tag moves inside the photo, whole
    out, _ = explainer.explain_dogs(canvas, [Dog([1590, 890, 1600, 900], 0.99, "dog", top)], numbers=[12])
    corner = np.asarray(out, np.int32)[-60:, -80:].max(-1)
    dark = corner < 40
    assert 28 <= dark.any(1).sum() <= 55 and dark[-1].any() and dark[:, -1].any()  # the tag reaches both edges
    assert (corner[dark.any(1)] > 200).sum() > 40  # both digits in white inside it


def test_a_small_lone_dog_is_explained_in_its_box(explainer: Explainer, real_data: Path) -> None:
    """A dog 12% of a grey canvas: without a breed asked for, its heat-map is drawn in its box (over the whole photo
    a small dog's map is mostly the scene's); with one, the whole photo, as for a dog filling it."""
    from dogbreed.inference.dogs import Dog
    from dogbreed.inference.scoring import BreedScore, Prediction

    dog = Image.open(real_data / "imagenet-val-dogs" / DOGS[0]).convert("RGB").resize((200, 150))
    canvas = Image.new("RGB", (640, 480), (128, 128, 128))
    canvas.paste(dog, (400, 300))
    top = [BreedScore("n02111889", "Samoyed", 0.9)]
    answer = Prediction("x.jpg", "dog", 0.99, top, dogs=[Dog([400, 300, 600, 450], 0.99, "dog", top)])
    _, breeds, drawn = explainer.explain_answer(canvas, answer)
    assert drawn == [1] and [b.name for b in breeds] == ["Samoyed"]
    _, breeds, drawn = explainer.explain_answer(canvas, answer, breed="Beagle")
    assert drawn == [] and [b.name for b in breeds] == ["Beagle"]
    answer.dogs[0].box = [0, 0, 640, 480]
    assert explainer.explain_answer(canvas, answer)[2] == []  # a dog filling the photo: the whole photo
    with pytest.raises(ValueError, match="has 1 dog"):
        explainer.explain_answer(canvas, answer, dog=2)


@pytest.mark.slow
def test_plain_prediction_does_not_load_explain_or_gallery() -> None:
    code = ("import sys, dogbreed, dogbreed.cli, dogbreed.predict, dogbreed.serve.app; "
            "print(sorted(m for m in sys.modules if m in ('dogbreed.explain', 'dogbreed.gallery')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_heat_map_is_grad_cam_with_no_graph_below_the_map(explainer: Explainer) -> None:
    """The heat-map equals Grad-CAM over a graph from the input, while only the layers after the map record one
    (one ReLU6 module serves several blocks of Lite0: only its last call is the map)."""
    img = noise((160, 120))
    heat, c = explainer.heatmap(img)
    x = to_tensor(preprocess_image(img, explainer.cfg), explainer.cfg.mean, explainer.cfg.std)[None]
    recorded: list[bool] = []  # per 4-D activation of the backbone, in order: does it carry a graph?
    body = explainer.clf.backbone.body
    handles = [m.register_forward_hook(lambda _m, _i, o: recorded.append(o.requires_grad) if o.dim() == 4 else None)
               for m in body.modules() if m is not body]
    try:
        fmap, _ = explainer._forward(x)
    finally:
        for h in handles:
            h.remove()
    assert fmap.grad_fn is None and fmap.requires_grad  # the map is a leaf ...
    assert not any(recorded)  # ... and nothing in the backbone recorded a graph (hooks see outputs before ours)

    seen: list[torch.Tensor] = []
    handles = [m.register_forward_hook(lambda _m, _i, o: seen.append(o) if o.dim() == 4 else None)
               for m in body.modules() if m is not body]
    try:
        with torch.enable_grad():
            full = explainer.clf(x.clone().requires_grad_(True))[0]
    finally:
        for h in handles:
            h.remove()
    (grad,) = torch.autograd.grad(full[0, c], seen[-1])
    cam = torch.relu((grad.mean((2, 3), keepdim=True) * seen[-1]).sum(1, keepdim=True)).detach()
    cam = torch.nn.functional.interpolate(cam, size=(img.height, img.width), mode="bilinear", align_corners=False)
    assert np.allclose(heat, (cam / cam.max())[0, 0].numpy(), atol=1e-5)
