"""Data pipeline: layouts, bad files, splits, manifests, dataset/loader, cache, augmentation, preview, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from fixtures import (
    add_bad_files,
    alpha_png,
    cmyk_jpeg,
    exif_rotated_jpeg,
    grey_jpeg,
    make_folder_tree,
    make_kaggle_tree,
    make_stanford_tree,
    write_jpeg,
)
from PIL import Image
from typer.testing import CliRunner

from dogbreed.cli import app
from dogbreed.data import (
    BreedDataset,
    Sample,
    check_image,
    detect_layout,
    inspect_dataset,
    load_dataset,
    load_manifest,
    make_loader,
    make_split,
    preview_grid,
    save_manifest,
    split_counts,
)
from dogbreed.errors import DataError
from dogbreed.transforms import Augment, Preprocess, load_image

RAW = Preprocess(size=32, resize="squash", mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))  # tensor*255 == pixels


def pixels(t: torch.Tensor) -> np.ndarray:
    return (t.permute(1, 2, 0).numpy() * 255.0).round().astype(np.uint8)


@pytest.fixture(scope="module")
def stanford(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_stanford_tree(tmp_path_factory.mktemp("stanford"), breeds=3, per_breed=10)


# --- layouts ------------------------------------------------------------------------------------------------------


def test_stanford_layout_names_wnids_boxes_and_official_lists(stanford: Path) -> None:
    idx = load_dataset(stanford)
    assert idx.layout == "stanford" and idx.problems == []
    assert len(idx.samples) == 30
    assert idx.classes() == ["Chihuahua", "German shepherd", "Shih-Tzu"]
    wnids = {s.breed: s.wnid for s in idx.samples}
    assert wnids == {"Chihuahua": "n02085620", "German shepherd": "n02106662", "Shih-Tzu": "n02086240"}
    s5 = next(s for s in idx.samples if s.path.endswith("n02085620_6.jpg"))  # n=5
    assert s5.box == (9.0, 6.0, 41.0, 38.0)  # the larger of its two boxes
    assert s5.official_split == "train"
    per_breed_test = split_counts({"x": [s for s in idx.samples if s.official_split == "test"]})
    assert {b: c["x"] for b, c in per_breed_test.items()} == dict.fromkeys(idx.classes(), 4)
    # Pointing at Images/ itself finds the same photos and still the annotations beside it.
    idx2 = load_dataset(stanford / "Images")
    assert idx2.layout == "stanford" and len(idx2.samples) == 30 and idx2.samples[0].box is not None


def test_stanford_without_annotations_or_lists(tmp_path: Path) -> None:
    idx = load_dataset(make_stanford_tree(tmp_path, breeds=2, per_breed=3, with_annotations=False,
                                          with_lists=False))
    assert len(idx.samples) == 6
    assert all(s.box is None and s.official_split is None for s in idx.samples)


def test_kaggle_layout_maps_names_to_the_breed_table(tmp_path: Path) -> None:
    root = make_kaggle_tree(tmp_path, per_breed=3)
    write_jpeg(root / "train" / "unlisted.jpg")
    with open(root / "labels.csv", "a") as f:
        f.write("gone,beagle\n")
    idx = load_dataset(root)
    assert detect_layout(root) == "kaggle" and idx.layout == "kaggle"
    assert idx.classes() == ["Boston bull", "German shepherd", "Golden retriever", "Shih-Tzu"]
    assert {s.breed: s.wnid for s in idx.samples}["Boston bull"] == "n02096585"
    assert len(idx.samples) == 12
    reasons = {Path(p.path).name: p.reason for p in idx.problems}
    assert "labels.csv but missing" in reasons["gone.jpg"]
    assert "not listed" in reasons["unlisted.jpg"]


def test_kaggle_rows_that_cannot_be_read_as_given_are_reported(tmp_path: Path) -> None:
    """Found by QA: a row holding only an id crashed every command (None.strip()); an id listed twice under two
    breeds, a second photo for one id and ids written with their extension went by without a word."""
    root = make_kaggle_tree(tmp_path, per_breed=2)
    ids = [line.split(",")[0] for line in (root / "labels.csv").read_text().splitlines()[1:]]
    write_jpeg(root / "train" / "withext.jpg")
    Image.open(root / "train" / f"{ids[0]}.jpg").save(root / "train" / f"{ids[0]}.png")
    with open(root / "labels.csv", "a") as f:
        f.write(f"shortrow\n,beagle\n{ids[1]},pug\nwithext.jpg,beagle\n")
    idx = load_dataset(root)
    reasons = [p.reason for p in idx.problems]
    assert any("no breed in this row" in r for r in reasons) and any("no id in this row" in r for r in reasons)
    assert any(f"{ids[1]!r} listed again as 'pug'" in r for r in reasons)
    assert any(f"a second photo for id {ids[0]!r}" in r for r in reasons)
    assert len(idx.samples) == 9 and "Beagle" in {s.breed for s in idx.samples}  # 8 + withext.jpg


def test_folders_that_are_no_breed_are_reported_not_listed(tmp_path: Path) -> None:
    """Found by QA: .ipynb_checkpoints became a breed of a Stanford tree, a link back to the dataset became a breed
    holding every other breed's photos again, and a Latin-1 folder name crashed `data split` and `train`."""
    import os

    root = make_stanford_tree(tmp_path / "st", breeds=2, per_breed=3, with_annotations=False, with_lists=False)
    write_jpeg(root / "Images" / ".ipynb_checkpoints" / "a.jpg")
    (root / "Images" / "loop").symlink_to(root / "Images")
    os.makedirs(os.fsencode(root / "Images") + b"/M\xfcnsterl\xe4nder")
    write_jpeg(Path(os.fsdecode(os.fsencode(root / "Images") + b"/M\xfcnsterl\xe4nder/x.jpg")))
    write_jpeg(Path(os.fsdecode(os.fsencode(root / "Images" / "n02085620-Chihuahua") + b"/caf\xe9.jpg")))
    idx = load_dataset(root)
    assert len(idx.classes()) == 2 and len(idx.samples) == 6
    reasons = {Path(p.path).name: p.reason for p in idx.problems}
    assert reasons[".ipynb_checkpoints"] == "hidden folder, skipped"
    assert "which holds this folder: skipped" in reasons["loop"]
    assert sum("is not UTF-8: rename it" in r for r in reasons.values()) == 2
    r = CliRunner().invoke(app, ["data", "split", str(root), "--out", str(tmp_path / "m.csv")])
    assert r.exit_code == 0, r.output


def test_split_leaves_out_what_inspect_flags_and_refuses_a_folder_as_out(tmp_path: Path) -> None:
    """Found by QA: without --validate, `data split` said "files left out" but wrote a truncated JPEG and an HTML
    page named .jpg into the manifest; --out naming a folder ended in a traceback."""
    root = make_folder_tree(tmp_path / "d", per_breed=5)
    add_bad_files(root / "beagle")
    out = tmp_path / "m.csv"
    r = CliRunner().invoke(app, ["data", "split", str(root), "--out", str(out)])
    assert r.exit_code == 0, r.output
    text = out.read_text()
    assert "truncated.jpg" not in text and "garbage.jpg" not in text and text.count("img") == 10
    r = CliRunner().invoke(app, ["data", "split", str(root), "--out", str(tmp_path)])
    assert r.exit_code == 2 and "is a folder" in r.output


def test_folder_layout_keeps_unknown_breeds(tmp_path: Path) -> None:
    idx = load_dataset(make_folder_tree(tmp_path))
    assert idx.layout == "folders"
    assert {s.breed: s.wnid for s in idx.samples} == {"Beagle": "n02088364", "My mutt": None}


def test_no_dataset_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_dataset(tmp_path / "missing")
    with pytest.raises(ValueError, match="no dataset found"):
        load_dataset(tmp_path)


# --- bad and odd files --------------------------------------------------------------------------------------------


def test_bad_files_are_reported_with_reasons_and_skipped(tmp_path: Path) -> None:
    root = make_stanford_tree(tmp_path, breeds=2, per_breed=3, with_annotations=False, with_lists=False)
    expected = add_bad_files(root / "Images" / "n02085620-Chihuahua")
    # Cheap listing already drops zero-byte and non-image files...
    quick = load_dataset(root)
    assert {Path(p.path).name for p in quick.problems} == {"zero.jpg", "notes.txt"}
    # ...the header check and a full decode catch the rest, each with a reason.
    for rep in (inspect_dataset(root), inspect_dataset(root, full=True)):
        reasons = {Path(p.path).name: p.reason for p in rep.index.problems}
        assert set(reasons) == set(expected)
        for name, word in expected.items():
            assert word in reasons[name], (name, reasons[name])
        assert sum(rep.counts.values()) == 6
    assert "truncated" in check_image(root / "Images/n02085620-Chihuahua/truncated.jpg")
    assert "truncated" in check_image(root / "Images/n02085620-Chihuahua/truncated.jpg", full=True)
    assert "not an image" in check_image(root / "Images/n02085620-Chihuahua/garbage.jpg")
    validated = load_dataset(root, validate=True)
    assert len(validated.samples) == 6 and len(validated.problems) == 4


def test_odd_but_valid_images_decode_upright_rgb(tmp_path: Path) -> None:
    folder = tmp_path / "Odd"
    red = np.asarray(load_image(cmyk_jpeg(folder / "cmyk.jpg")), dtype=int)
    assert red.shape == (30, 40, 3) and red[..., 0].mean() > 200 and red[..., 1:].mean() < 60
    alpha = np.asarray(load_image(alpha_png(folder / "alpha.png")))
    assert (alpha[:, :20] == (0, 0, 255)).all() and (alpha[:, 20:] == 255).all()  # transparent -> white
    grey = np.asarray(load_image(grey_jpeg(folder / "grey.jpg")), dtype=int)
    assert grey.shape == (30, 40, 3) and (grey[..., 0] == grey[..., 1]).all() and grey[..., 0].std() > 20
    up = np.asarray(load_image(exif_rotated_jpeg(folder / "exif.jpg")), dtype=int)
    assert up.shape == (60, 40, 3)  # 60x40 stored, 40 wide x 60 high upright
    assert up[:10, -10:, 1].mean() < 60 and up[:10, :10].min() > 200  # the red block went top-right
    rep = inspect_dataset(tmp_path, full=True)
    assert rep.index.problems == [] and rep.counts == {"Odd": 4}
    assert (40, 60) in rep.sizes  # sizes are reported as displayed


# --- splits and manifests -----------------------------------------------------------------------------------------


def fake_samples(sizes: dict[str, int]) -> list[Sample]:
    return [Sample(f"/d/{b}/{i}.jpg", b) for b, n in sizes.items() for i in range(n)]


SIZES = {"A": 50, "B": 23, "C": 7, "D": 2, "E": 1, "F": 10}


def test_split_is_stratified_within_one_per_breed() -> None:
    samples = fake_samples(SIZES)
    ratios = (0.7, 0.2, 0.1)
    splits = make_split(samples, ratios, seed=0)
    paths = [s.path for k in ("train", "val", "test") for s in splits[k]]
    assert sorted(paths) == sorted(s.path for s in samples)  # a partition: nothing lost, nothing twice
    for breed, counts in split_counts(splits).items():
        n = SIZES[breed]
        assert counts["train"] >= 1
        for k, r in zip(("train", "val", "test"), ratios, strict=True):
            assert abs(counts[k] - n * r) <= 1, (breed, counts)
    assert split_counts(splits)["A"] == {"train": 35, "val": 10, "test": 5}


def test_split_is_reproducible_by_seed() -> None:
    samples = fake_samples(SIZES)

    def key(s: dict[str, list[Sample]]) -> dict[str, list[str]]:
        return {k: [x.path for x in v] for k, v in s.items()}

    assert key(make_split(samples, seed=1)) == key(make_split(list(reversed(samples)), seed=1))
    assert key(make_split(samples, seed=1)) != key(make_split(samples, seed=2))
    with pytest.raises(ValueError):
        make_split(samples, (0.8, 0.2))


def test_official_lists_are_honoured(stanford: Path) -> None:
    samples = load_dataset(stanford).samples
    official_test = sorted(s.path for s in samples if s.official_split == "test")
    splits = make_split(samples, (0.8, 0.1, 0.1), seed=0)
    assert sorted(s.path for s in splits["test"]) == official_test
    assert all(s.official_split == "train" for s in splits["val"] + splits["train"])
    # val carved per breed from the 6 official-train photos: 6 * 0.1/0.9 rounds to 1
    assert {b: c["val"] for b, c in split_counts(splits).items()} == dict.fromkeys(
        ["Chihuahua", "German shepherd", "Shih-Tzu"], 1)
    ignored = make_split(samples, (0.8, 0.1, 0.1), seed=0, use_official=False)
    assert sorted(s.path for s in ignored["test"]) != official_test and len(ignored["test"]) == 3


def test_manifest_round_trip(tmp_path: Path, stanford: Path) -> None:
    splits = make_split(load_dataset(stanford).samples, seed=3)
    out = save_manifest(splits, tmp_path / "sub" / "manifest.csv")
    assert sorted(p.name for p in out.parent.iterdir()) == ["manifest.csv"]  # no temp file left behind
    back = load_manifest(out)
    for k in ("train", "val", "test"):
        assert [(s.path, s.breed, s.wnid, s.box) for s in back[k]] == [
            (s.path, s.breed, s.wnid, s.box) for s in splits[k]]
    # Relative paths are resolved against the manifest's folder, so a manifest can travel with its data.
    rel = tmp_path / "rel.csv"
    rel.write_text("path,breed,wnid,split,box\nimgs/a.jpg,Beagle,,train,1 2 3 4\n")
    s = load_manifest(rel)["train"][0]
    assert s.path == str(tmp_path / "imgs" / "a.jpg") and s.wnid is None and s.box == (1.0, 2.0, 3.0, 4.0)


# --- dataset, cache, augmentation ---------------------------------------------------------------------------------


def test_box_crop_equals_the_annotated_box(stanford: Path, tmp_path: Path) -> None:
    samples = [s for s in load_dataset(stanford).samples if s.breed == "Chihuahua"][:3]
    cfg = Preprocess(size=32, resize="squash", box_crop=True, box_margin=0.0, mean=(0, 0, 0), std=(1, 1, 1))
    for cache in (False, True, True):  # no cache, cache fill, cache hit
        ds = BreedDataset(samples, ["Chihuahua"], cfg, cache=cache, cache_root=tmp_path)
        for i, s in enumerate(samples):
            x, label = ds[i]
            expected = np.asarray(load_image(s.path).crop(tuple(int(v) for v in s.box)))
            assert label == 0 and x.shape == (3, 32, 32)
            np.testing.assert_array_equal(pixels(x), expected)
    assert len(list(tmp_path.rglob("*.png"))) == 3
    # A different preprocessing must not read those entries.
    BreedDataset(samples[:1], ["Chihuahua"], RAW, cache=True, cache_root=tmp_path)[0]
    assert len({p.parent for p in tmp_path.rglob("*.png")}) == 2


def test_augmentations_change_pixels_keep_shape_and_differ_by_epoch(stanford: Path, tmp_path: Path) -> None:
    samples = load_dataset(stanford).samples[:4]
    classes = sorted({s.breed for s in samples})
    plain = BreedDataset(samples, classes, RAW)[0][0]
    for cache in (False, True):
        ds = BreedDataset(samples, classes, RAW, Augment(), seed=0, cache=cache, cache_root=tmp_path)
        a, label = ds[0]
        assert a.shape == plain.shape == (3, 32, 32) and label == classes.index(samples[0].breed)
        assert not torch.equal(a, plain)
        assert torch.equal(a, ds[0][0])  # same seed, epoch, index -> same view
        ds.set_epoch(1)
        assert not torch.equal(a, ds[0][0])
    other_seed = BreedDataset(samples, classes, RAW, Augment(), seed=1)[0][0]
    assert not torch.equal(a, other_seed)


def test_loader_gives_new_views_every_epoch_also_in_workers(stanford: Path) -> None:
    samples = load_dataset(stanford).samples[:8]
    classes = sorted({s.breed for s in samples})
    for workers in (0, 1):
        loader = make_loader(samples, classes, RAW, Augment(), batch_size=8, num_workers=workers, seed=5)
        e0, y0 = next(iter(loader))
        e1, y1 = next(iter(loader))
        assert e0.shape == (8, 3, 32, 32) and torch.equal(y0, y1)
        assert not torch.equal(e0, e1)
        if workers == 0:
            first = e0
        else:
            assert torch.equal(e0, first)  # the view depends on (seed, epoch, index), not on the worker count
    shuffled = [torch.cat([y for _, y in make_loader(samples, classes, RAW, batch_size=3, shuffle=True, seed=s)])
                for s in (7, 7, 8)]
    assert torch.equal(shuffled[0], shuffled[1]) and sorted(shuffled[0].tolist()) == sorted(shuffled[2].tolist())


def test_dataset_skips_an_unreadable_photo_with_a_warning(tmp_path: Path) -> None:
    good = write_jpeg(tmp_path / "good.jpg")
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"nope")
    ds = BreedDataset([Sample(str(bad), "A"), Sample(str(good), "B")], ["A", "B"], RAW)
    with pytest.warns(UserWarning, match="bad.jpg"):
        x, label = ds[0]
    assert label == 1 and x.shape == (3, 32, 32)
    with pytest.raises(ValueError, match="not in classes"):
        BreedDataset([Sample(str(good), "C")], ["A"], RAW)


def test_preview_grid_is_a_labelled_png(stanford: Path, tmp_path: Path) -> None:
    out = preview_grid(load_dataset(stanford).samples, tmp_path / "grid.png", preprocess=RAW, n=5, seed=0)
    img = Image.open(out)
    assert img.format == "PNG" and img.width > 3 * 32 and img.height > 2 * 32
    again = preview_grid(load_dataset(stanford).samples, tmp_path / "grid2.png", preprocess=RAW, n=5, seed=0)
    assert np.array_equal(np.asarray(img), np.asarray(Image.open(again)))


# --- CLI ----------------------------------------------------------------------------------------------------------


def test_cli_inspect_split_preview(tmp_path: Path) -> None:
    root = make_stanford_tree(tmp_path / "ds", breeds=2, per_breed=6, with_lists=False)
    add_bad_files(root / "Images" / "n02085620-Chihuahua")
    runner = CliRunner()
    r = runner.invoke(app, ["data", "inspect", str(root)])
    assert r.exit_code == 0, r.output
    assert "stanford layout, 2 breeds, 12 good images, 4 problems" in r.output
    assert "German shepherd" in r.output and "median" in r.output and "truncated.jpg: truncated" in r.output
    r = runner.invoke(app, ["data", "inspect", str(root), "--full", "--format", "json"])
    assert r.exit_code == 0 and len(json.loads(r.output)["problems"]) == 4

    manifest = tmp_path / "m.csv"
    r = runner.invoke(app, ["data", "split", str(root), "--out", str(manifest), "--ratios", "0.5,0.25,0.25",
                            "--seed", "1"])
    assert r.exit_code == 0, r.output
    rows = {line.rsplit(None, 3)[0]: line.split()[-3:] for line in r.output.splitlines()[1:3]}
    # the damaged JPEGs are left out by the quick check as `data inspect` flags them (they had gone in)
    assert rows["Chihuahua"] in (["3", "2", "1"], ["3", "1", "2"])
    assert rows["German shepherd"] in (["3", "2", "1"], ["3", "1", "2"])
    assert sum(len(v) for v in load_manifest(manifest).values()) == 12
    r = runner.invoke(app, ["data", "split", str(root), "--out", str(manifest), "--validate"])
    assert r.exit_code == 0 and sum(len(v) for v in load_manifest(manifest).values()) == 12
    assert runner.invoke(app, ["data", "split", str(root), "--ratios", "1,2"]).exit_code != 0

    grid = tmp_path / "grid.png"
    r = runner.invoke(app, ["data", "preview", str(manifest), "--out", str(grid), "--n", "4", "--size", "48"])
    assert r.exit_code == 0, r.output
    assert Image.open(grid).size[0] >= 2 * 48 and "4 photos" in r.output
    # Found by QA: photos that cannot be decoded were drawn as tiles and counted as photos ("65 photos" for 62)
    r = runner.invoke(app, ["data", "preview", str(root), "--out", str(grid), "--n", "256", "--size", "32",
                            "--plain"])
    assert r.exit_code == 0, r.output
    said = " ".join(r.output.split())
    assert "(12 photos; " in said and "unreadable, drawn as red tiles and left out of training: " in said, said
    assert runner.invoke(app, ["data", "inspect", str(tmp_path / "nope")]).exit_code == 2


# --- real data ----------------------------------------------------------------------------------------------------


@pytest.mark.real
def test_real_stanford_dogs_official_layout(real_data: Path) -> None:
    root = real_data / "stanford-dogs"
    if not root.is_dir():
        pytest.skip("../shared/data/real/stanford-dogs not present")
    idx = load_dataset(root)
    assert idx.layout == "stanford" and idx.problems == []
    assert len(idx.classes()) == 120 and len(idx.samples) == 14400
    assert {s.breed: s.wnid for s in idx.samples}["Golden retriever"] == "n02099601"
    official = [s.official_split for s in idx.samples]
    assert official.count("train") == 12000 and official.count("test") == 2400
    # The official lists decide test; val is carved from the official train photos, per breed.
    splits = make_split(idx.samples, seed=0, use_official=True)
    counts = split_counts(splits)
    assert {s.path for s in splits["test"]} == {s.path for s in idx.samples if s.official_split == "test"}
    assert all(c["test"] == 20 and c["val"] >= 5 and c["train"] + c["val"] == 100 for c in counts.values())


def test_a_tree_of_split_folders_is_refused_and_numbered_breed_folders_are_read(tmp_path: Path) -> None:
    """Found by QA: Udacity's dogImages/ (train/valid/test/NNN.Breed/) was read as three breeds, Test, Train and
    Valid; and its train/ folder gave "001.Affenpinscher", no breed of the table."""
    for split in ("train", "valid", "test"):
        for breed in ("001.Affenpinscher", "002.Afghan_hound"):
            write_jpeg(tmp_path / "dogImages" / split / breed / "a.jpg")
    with pytest.raises(DataError, match=r"are a split, not breeds; give one of them \(e.g. .*dogImages/train\)"):
        load_dataset(tmp_path / "dogImages")
    idx = load_dataset(tmp_path / "dogImages" / "train")
    assert {s.breed: s.wnid for s in idx.samples} == {"Affenpinscher": "n02110627", "Afghan hound": "n02088094"}


def test_one_folder_round_the_breed_folders_is_refused_but_a_breeds_own_subfolders_are_read(tmp_path: Path) -> None:
    """Found by QA: my_dogs/{beagle,pug}/ given as the data was read as one breed, "My dogs", and `adapt` taught the
    model to call a pug that at 100%."""
    for breed in ("beagle", "pug", "Sam's mutts"):
        write_jpeg(tmp_path / "wrapped" / "my_dogs" / breed / "a.jpg")
    with pytest.raises(DataError, match=r"its one folder, my_dogs/, holds folders of breeds \(beagle, pug\); give "):
        load_dataset(tmp_path / "wrapped")
    assert {s.breed for s in load_dataset(tmp_path / "wrapped" / "my_dogs").samples} == {"Beagle", "Pug", "Sam's mutts"}
    for year in ("2019", "2020"):  # one breed's photos in folders of their own: still that breed
        write_jpeg(tmp_path / "one" / "Rex" / year / "a.jpg")
    assert {s.breed for s in load_dataset(tmp_path / "one").samples} == {"Rex"}


def test_preview_draws_the_augmentations_of_the_epoch_asked(tmp_path: Path) -> None:
    """`data preview` always drew epoch 0, so it could not show that the views differ every epoch."""
    root = make_folder_tree(tmp_path / "d", per_breed=2)
    grids = []
    for epoch in ("0", "0", "1"):
        out = tmp_path / f"p{len(grids)}.png"
        r = CliRunner().invoke(app, ["data", "preview", str(root), "--out", str(out), "--n", "4", "--size", "48",
                                     "--epoch", epoch])
        assert r.exit_code == 0, r.output
        grids.append(np.asarray(Image.open(out)))
    assert np.array_equal(grids[0], grids[1]) and not np.array_equal(grids[0], grids[2])


def test_a_shuffling_loader_draws_a_new_order_every_pass(tmp_path: Path) -> None:
    """Used from Python over several passes, `make_loader(shuffle=True)` gave the same order every epoch: its
    DistributedSampler was never told the epoch (training makes a loader per epoch, so it never met this)."""
    idx = load_dataset(make_folder_tree(tmp_path, per_breed=8))
    loader = make_loader(idx.samples, idx.classes(), Preprocess(size=16), batch_size=16, shuffle=True, seed=3)
    first, second = ([y.tolist() for _, y in loader] for _ in range(2))
    assert sorted(sum(first, [])) == sorted(sum(second, [])) and first != second
    again = make_loader(idx.samples, idx.classes(), Preprocess(size=16), batch_size=16, shuffle=True, seed=3)
    assert [y.tolist() for _, y in again] == first  # still reproducible by seed
