"""Generators of tiny, offline datasets for tests: Stanford Dogs, Kaggle and folder-per-breed trees, bad files."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

# Real Stanford folders, so wnids and clean names can be checked against the breed table.
STANFORD_FOLDERS = (
    "n02085620-Chihuahua",
    "n02106662-German_shepherd",
    "n02086240-Shih-Tzu",
    "n02099601-golden_retriever",
    "n02088364-beagle",
)
KAGGLE_BREEDS = ("boston_bull", "german_shepherd", "shih-tzu", "golden_retriever")


def noise_image(width: int = 64, height: int = 48, seed: int = 0) -> Image.Image:
    """Random pixels: every crop and flip changes them, so pixel comparisons are meaningful."""
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), "RGB")


def write_jpeg(path: Path, img: Image.Image | None = None, seed: int = 0, quality: int = 90) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    (img or noise_image(seed=seed)).save(path, format="JPEG", quality=quality)
    return path


def voc_xml(filename: str, size: tuple[int, int], boxes: list[tuple[int, int, int, int]]) -> str:
    objs = "".join(
        f"<object><name>dog</name><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin><xmax>{b[2]}</xmax>"
        f"<ymax>{b[3]}</ymax></bndbox></object>"
        for b in boxes
    )
    return (f"<annotation><filename>{filename}</filename><size><width>{size[0]}</width><height>{size[1]}</height>"
            f"<depth>3</depth></size>{objs}</annotation>")


def write_mat_list(path: Path, rel_paths: list[str], labels: list[int]) -> Path:
    from scipy.io import savemat

    path.parent.mkdir(parents=True, exist_ok=True)
    cells = np.empty((len(rel_paths), 1), dtype=object)
    for i, p in enumerate(rel_paths):
        cells[i, 0] = p
    savemat(str(path), {"file_list": cells, "labels": np.asarray(labels, dtype=np.uint8).reshape(-1, 1)})
    return path


def make_stanford_tree(
    root: Path,
    breeds: int = 3,
    per_breed: int = 10,
    with_annotations: bool = True,
    with_lists: bool = True,
    test_every: int = 3,
    size: tuple[int, int] = (64, 48),
) -> Path:
    """Images/<wnid>-<Breed>/<wnid>_<n>.jpg, Annotation/ (two boxes per photo: a small one and the largest,
    32x32 at (8 + n % 4, 6)) and lists/{train,test}_list.mat with every ``test_every``-th photo as test."""
    train, test = [], []
    for b, folder in enumerate(STANFORD_FOLDERS[:breeds]):
        wnid = folder.split("-")[0]
        for n in range(per_breed):
            name = f"{wnid}_{n + 1}"
            write_jpeg(root / "Images" / folder / f"{name}.jpg", noise_image(*size, seed=100 * b + n))
            if with_annotations:
                big = (8 + n % 4, 6, 40 + n % 4, 38)
                ann = root / "Annotation" / folder / name
                ann.parent.mkdir(parents=True, exist_ok=True)
                ann.write_text(voc_xml(name, size, [(1, 1, 5, 5), big]))
            (test if n % test_every == 0 else train).append((f"{folder}/{name}.jpg", b + 1))
    if with_lists:
        for split, rows in (("train", train), ("test", test)):
            write_mat_list(root / "lists" / f"{split}_list.mat", [r for r, _ in rows], [lab for _, lab in rows])
    return root


def make_kaggle_tree(root: Path, breeds: tuple[str, ...] = KAGGLE_BREEDS, per_breed: int = 5) -> Path:
    """train/<id>.jpg + labels.csv (id,breed), Kaggle's dog-breed-identification layout."""
    lines = ["id,breed"]
    for b, breed in enumerate(breeds):
        for n in range(per_breed):
            img_id = f"{b:02d}{n:02d}aa{b * 31 + n:04x}"
            write_jpeg(root / "train" / f"{img_id}.jpg", seed=1000 + 10 * b + n)
            lines.append(f"{img_id},{breed}")
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    return root


def make_folder_tree(root: Path, breeds: tuple[str, ...] = ("beagle", "My mutt"), per_breed: int = 4) -> Path:
    """<root>/<breed name>/*.jpg; "My mutt" is not one of the 120 and must keep its own name."""
    for b, breed in enumerate(breeds):
        for n in range(per_breed):
            write_jpeg(root / breed / f"img{n}.jpg", seed=2000 + 10 * b + n)
    return root


def jpeg_bytes(img: Image.Image, **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", **kw)
    return buf.getvalue()


def add_bad_files(folder: Path) -> dict[str, str]:
    """Write one of each kind of bad file into ``folder``; returns {file name: word expected in the reason}."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "zero.jpg").write_bytes(b"")
    good = jpeg_bytes(noise_image(80, 60, seed=7), quality=95)
    (folder / "truncated.jpg").write_bytes(good[: len(good) // 2])
    (folder / "garbage.jpg").write_bytes(np.random.default_rng(3).integers(0, 256, 2000, dtype=np.uint8).tobytes())
    (folder / "notes.txt").write_text("not a photo\n")
    return {"zero.jpg": "empty", "truncated.jpg": "truncated", "garbage.jpg": "not a",
            "notes.txt": "not an image file"}


def cmyk_jpeg(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("CMYK", (40, 30), (0, 255, 255, 0)).save(path, format="JPEG", quality=95)  # pure red in CMYK
    return path


def alpha_png(path: Path) -> Path:
    """Left half opaque blue, right half fully transparent (must come out white, not black)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.zeros((30, 40, 4), dtype=np.uint8)
    arr[:, :20] = (0, 0, 255, 255)
    Image.fromarray(arr, "RGBA").save(path, format="PNG")
    return path


def grey_jpeg(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.tile(np.arange(40, dtype=np.uint8) * 6, (30, 1)), "L").save(path, format="JPEG")
    return path


def exif_rotated_jpeg(path: Path) -> Path:
    """Stored 60x40 with a red block top-left and EXIF orientation 6 (display rotated 90° clockwise): upright it
    is 40x60 with the block top-right."""
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.full((40, 60, 3), 255, dtype=np.uint8)
    arr[:12, :12] = (255, 0, 0)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(arr, "RGB").save(path, format="JPEG", quality=95, exif=exif.tobytes())
    return path


def smooth_photo(path: Path, seed: int, size: tuple[int, int] = (300, 260)) -> Path:
    """A smooth photo-like JPEG (8x8 noise upsampled): centre crops and flips change it only a little."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)
    img = Image.fromarray(base).resize(size, Image.Resampling.BICUBIC)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, "JPEG", quality=90)
    return path


# Two breeds that look nothing alike, each photo got its breed alone (../shared/data/real); pasted side by side by
# `two_dog_photo` for the two-dog tests.
TWO_DOGS = (("imagenet-val-dogs/n02099601-golden_retriever/ILSVRC2012_val_00001112.jpg", "Golden retriever"),
            ("imagenet-val-dogs/n02086240-Shih-Tzu/ILSVRC2012_val_00000907.jpg", "Shih-Tzu"))


def two_dog_photo(real: Path) -> tuple[Image.Image, list[tuple[str, tuple[int, int, int, int]]]]:
    """`TWO_DOGS`, each 300 px wide, side by side on a plain 800x500 canvas: the photo, and for each pasted dog its
    breed and the rectangle it was pasted into."""
    canvas = Image.new("RGB", (800, 500), (206, 210, 200))
    pasted = []
    for (rel, breed), x in zip(TWO_DOGS, (60, 440), strict=True):
        im = Image.open(real / rel).convert("RGB")
        w, h = 300, round(im.height * 300 / im.width)
        y = (500 - h) // 2
        canvas.paste(im.resize((w, h), Image.LANCZOS), (x, y))
        pasted.append((breed, (x, y, x + w, y + h)))
    return canvas, pasted
