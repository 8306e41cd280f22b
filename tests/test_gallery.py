"""Look-alike photos (`dogbreed.gallery`): build, store, search, and show with predictions."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image
from typer.testing import CliRunner

from dogbreed.cli import app as cli_app
from dogbreed.gallery import Gallery, build_gallery
from dogbreed.predict import Predictor

runner = CliRunner()
FOLDERS = ("n02111889-Samoyed", "n02088364-beagle")


@pytest.fixture(scope="module")
def photo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two breed folders of generated pictures (one colour family each) and one unreadable file."""
    root = tmp_path_factory.mktemp("gallery-data")
    rng = np.random.default_rng(0)
    for b, folder in enumerate(FOLDERS):
        (root / folder).mkdir()
        for i in range(3):
            base = np.array([[230, 230, 225], [150, 90, 40]][b], dtype=float)
            arr = np.clip(base + rng.normal(0, 25, (150 + 10 * i, 200, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(arr).save(root / folder / f"p{i}.jpg")
    (root / FOLDERS[0] / "broken.jpg").write_bytes(b"\xff\xd8 truncated")
    return root


@pytest.fixture(scope="module")
def gallery_file(photo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    g, skipped = build_gallery(photo_dir, use_cache=False)
    assert skipped == 1
    return g.save(tmp_path_factory.mktemp("gallery") / "g")


def test_gallery_round_trip_and_thumbnails(gallery_file: Path) -> None:
    assert gallery_file.name == "g.safetensors"
    g = Gallery.load(gallery_file)
    assert len(g) == 6 and sorted(b["name"] for b in g.breeds) == ["Beagle", "Samoyed"]
    assert sorted(g.paths)[0] == "n02088364-beagle/p0.jpg"  # relative to the data folder
    assert torch.allclose(g.features.norm(dim=1), torch.ones(6), atol=1e-5)
    for i in range(len(g)):
        th = Image.open(io.BytesIO(g.thumbnail(i)))
        assert th.format == "JPEG" and max(th.size) <= 96
    with pytest.raises(IndexError):
        g.thumbnail(6)


def test_nearest_photos_are_of_the_asked_breed_best_first(gallery_file: Path) -> None:
    g = Gallery.load(gallery_file)
    beagle_label = next(j for j, b in enumerate(g.breeds) if b["wnid"] == "n02088364")
    q = g.features[int(torch.nonzero(g.labels == beagle_label)[0])]  # a beagle-folder photo
    res = g.nearest(q, [("n02088364", "Beagle"), ("n02111889", "Samoyed"), ("n02099601", "Golden retriever")], k=2)
    assert [r["name"] for r in res] == ["Beagle", "Samoyed", "Golden retriever"]
    beagle = res[0]["photos"]
    assert len(beagle) == 2 and beagle[0]["similarity"] == pytest.approx(1.0, abs=1e-4)
    assert beagle[0]["similarity"] >= beagle[1]["similarity"]
    assert all(g.breeds[int(g.labels[p["id"]])]["name"] == "Beagle" for p in beagle)
    assert res[2]["photos"] == []  # not in the gallery: said, not invented


def test_bad_gallery_files_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="gallery build"):
        Gallery.load(tmp_path / "missing")
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(ValueError, match="unreadable|not a dogbreed gallery"):
        Gallery.load(tmp_path / "junk.safetensors")
    (tmp_path / "rex.jpg").write_bytes(b"\xff\xd8 a photo, not a gallery")  # given by its own name, not "missing"
    with pytest.raises(ValueError, match="unreadable|not a dogbreed gallery"):
        Gallery.load(tmp_path / "rex.jpg")


def test_predictor_adds_look_alikes_only_with_a_gallery(default_predictor: Predictor, gallery_file: Path,
                                                        photo_dir: Path) -> None:
    photo = str(photo_dir / FOLDERS[1] / "p0.jpg")
    assert "look_alikes" not in default_predictor.predict([photo])[0].to_dict()
    p = default_predictor.with_options(gallery=str(gallery_file))
    d = p.predict([photo])[0].to_dict()
    assert [la["name"] for la in d["look_alikes"]] == [b["name"] for b in d["breeds"][:3]]
    for la in d["look_alikes"]:
        assert len(la["photos"]) <= 3


@pytest.mark.slow
def test_cli_gallery_build_and_predict(tmp_path: Path, photo_dir: Path) -> None:
    r = runner.invoke(cli_app, ["gallery", "build", "--data", str(photo_dir), "--out", str(tmp_path / "gal")])
    assert r.exit_code == 0, r.output
    assert "6 photos, 2 breeds" in r.output and "1 unreadable" in r.output
    r = runner.invoke(cli_app, ["predict", str(photo_dir / FOLDERS[0] / "p1.jpg"), "--gallery",
                                str(tmp_path / "gal.safetensors"), "--format", "json"])
    assert r.exit_code == 0, r.output
    assert "look_alikes" in json.loads(r.stdout)[0]
    r = runner.invoke(cli_app, ["predict", str(photo_dir / FOLDERS[0] / "p1.jpg"), "--gallery",
                                str(tmp_path / "nope")])
    assert r.exit_code == 2 and "gallery build" in r.output
    r = runner.invoke(cli_app, ["gallery", "build", "--data", str(tmp_path / "empty"), "--out", str(tmp_path / "x")])
    assert r.exit_code == 2


def test_api_answers_carry_look_alikes_and_serves_thumbnails(default_predictor: Predictor, gallery_file: Path,
                                                             photo_dir: Path) -> None:
    from dogbreed.serve.app import create_app

    data = (photo_dir / FOLDERS[0] / "p2.jpg").read_bytes()
    with TestClient(create_app(predictor=default_predictor, gallery=str(gallery_file))) as c:
        # the look-alikes of the breeds listed, as the CLI and the library give them (found by QA: three breeds'
        # look-alikes beside the two listed)
        p = c.post("/v1/predict?top_k=2", files={"file": ("x.jpg", data, "image/jpeg")}).json()["predictions"][0]
        assert [la["name"] for la in p["look_alikes"]] == [b["name"] for b in p["breeds"]]
        p = c.post("/v1/predict?top_k=5", files={"file": ("x.jpg", data, "image/jpeg")}).json()["predictions"][0]
        assert [la["name"] for la in p["look_alikes"]] == [b["name"] for b in p["breeds"][:3]]
        ids = [ph["id"] for la in p["look_alikes"] for ph in la["photos"]]
        for i in ids:
            r = c.get(f"/v1/gallery/{i}.jpg")
            assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
        assert c.get("/v1/gallery/99.jpg").status_code == 404
        assert c.get("/healthz").json()["gallery_photos"] == 6
    with TestClient(create_app(predictor=default_predictor)) as c:
        p = c.post("/v1/predict", files={"file": ("x.jpg", data, "image/jpeg")}).json()["predictions"][0]
        assert "look_alikes" not in p
        assert c.get("/v1/gallery/0.jpg").status_code == 404
