"""The `dogbreed` command: a thin shell over the library (parse, call, print).

Each command imports the library inside its body, on purpose: `dogbreed --help` then costs about 0.2 s of CPU
instead of the 1.6 s that importing torch, ONNX Runtime and the models takes (measured with `time`), and a command
loads only what it runs. tests/test_layout.py still sees these imports when it checks the layering.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import inspect
import json
import os
import sys
import textwrap
import typing
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:
    from .data import DatasetIndex
    from .inference.options import PredictOptions
    from .predict import Prediction, Predictor

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Tell a dog's breed from a photo.")
data_app = typer.Typer(no_args_is_help=True, help="Inspect, split and preview datasets.")
app.add_typer(data_app, name="data")
gallery_app = typer.Typer(no_args_is_help=True, help="Reference galleries of labelled photos (look-alikes).")
app.add_typer(gallery_app, name="gallery")


@contextlib.contextmanager
def _one_sentence() -> Iterator[None]:
    """A file that is missing, not ours or cannot be written ends the command in one sentence (exit code 2)."""
    from .errors import DogbreedError

    try:
        yield
    except (DogbreedError, FileNotFoundError, FileExistsError, IsADirectoryError, NotADirectoryError,
            PermissionError) as e:
        _err(str(e) if isinstance(e, DogbreedError) or not e.filename else f"{e.filename}: {e.strerror}")
        raise typer.Exit(2) from e


def _refuse_existing(paths: Iterable[Path | str], overwrite: bool) -> None:
    """An output already there is kept unless --overwrite: `fit-dog-detector --out my_model/model` wrote over an
    adapted model's model.json, and `gallery build` over a gallery, without a word."""
    there = [p for p in map(Path, paths) if p.exists() or p.is_symlink()]
    if there and not overwrite:
        _err(f"{there[0]} already exists: give another --out, or --overwrite to replace it")
        raise typer.Exit(2)


def _plain(text: str) -> str:
    """Help text shown as written: the help renderer reads "[as many as ...]" or "[ray]" as a style tag and drops
    it, so brackets are escaped."""
    try:
        from rich.markup import escape
    except ImportError:  # no rich: help is plain text already
        return text
    return escape(text)


def _err(msg: str) -> None:
    typer.secho(msg, err=True, fg=typer.colors.RED)


# Set once `predict` (the local engine) has written every answer and closed its outputs: `run` may then end the
# process without Python's teardown.
_ANSWERED: list[bool] = []
VERDICT_TEXT = {"dog": "dog", "no_dog": "NO DOG FOUND", "uncertain_breed": "dog, mixed or uncertain breed"}


def _print_table(preds: Iterable[dict]) -> None:
    for p in preds:
        if "error" in p:
            typer.echo(f"{p['path']}: ERROR {p['error']}")
            continue
        dogs = p.get("dogs")
        if dogs and len(dogs) > 1:
            typer.echo(f"{p['path']}: {len(dogs)} dogs")
            for i, d in enumerate(dogs, 1):
                _print_answer(d, f"  dog {i} at {_box(d['box'])}: ", "    ")
        else:
            where = f" at {_box(dogs[0]['box'])}" if dogs else ""
            _print_answer(p, f"{p['path']}{where}: ", "  ")
        if p.get("explanation"):
            typer.echo(f"  heat-map: {p['explanation']}")


def _box(box: list[int]) -> str:
    return f"[{box[0]}, {box[1]}, {box[2]}, {box[3]}]"


def _print_answer(p: dict, head: str, indent: str) -> None:
    """A verdict line and the breeds (and look-alikes) of a photo or of one dog in it."""
    head += f"{VERDICT_TEXT[p['verdict']]} (dog probability {p['dog_probability']:.1%})"
    if p.get("several_breeds_likely"):
        head += " - more than one breed is likely"
    typer.echo(head)
    if p["verdict"] == "no_dog":
        typer.echo(f"{indent}(closest breeds, for reference only)")
    for rank, b in enumerate(p["breeds"], 1):
        bar = "#" * int(round(b["probability"] * 30))
        typer.echo(f"{indent}{rank}. {b['name']:<32} {b['probability']:7.1%}  {bar}")
    for la in p.get("look_alikes") or []:
        shown = ", ".join(f"{x['path']} ({x['similarity']:.2f})" for x in la["photos"]) or "none in the gallery"
        typer.echo(f"{indent}looks like ({la['name']}): {shown}")


def _print_csv(preds: Iterable[dict]) -> None:
    """One row per breed rank of each photo's main dog (every dog and its box: --format json, or --out rows)."""
    w = csv.writer(sys.stdout, lineterminator="\n")
    w.writerow(["path", "verdict", "dog_probability", "rank", "wnid", "name", "probability", "error"])
    for p in preds:
        if "error" in p:
            w.writerow([p["path"], "error", "", "", "", "", "", p["error"]])
            continue
        for rank, b in enumerate(p["breeds"], 1):
            w.writerow([p["path"], p["verdict"], p["dog_probability"], rank, b["wnid"] or "", b["name"],
                        b["probability"], ""])


def _print_json(preds: Iterable[dict]) -> None:
    """The same text as ``json.dumps(list, indent=2)``, written element by element as answers arrive."""
    first = True
    for p in preds:
        sys.stdout.write(("[\n" if first else ",\n") + textwrap.indent(json.dumps(p, indent=2), "  "))
        first = False
    sys.stdout.write("[]\n" if first else "\n]\n")
    sys.stdout.flush()


def _option(f: Any) -> Any:
    """A `PredictOptions` field as a Typer option, from the field's own declaration."""
    meta = f.metadata
    return typer.Option(f.default, *meta["flags"], help=_plain(meta["help"]), **meta["typer"])


def _cli_type(f: Any, hints: dict[str, Any]) -> Any:
    t = hints[f.name]
    return str | None if t is Any else t  # the gallery: a path on the command line, a loaded one in a notebook


def prediction_options(*, every_command: bool) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Give a command one flag per `PredictOptions` field (those every command shares, with ``every_command``;
    all of them for `predict`) and call it with ``options=PredictOptions(...)``: the options are declared once, in
    `inference/options.py`, and a field added there appears in every command that takes them."""
    from .inference.options import PredictOptions, cli_fields

    flds = cli_fields(every_command)
    hints = typing.get_type_hints(PredictOptions)

    def deco(fn: Callable[..., None]) -> Callable[..., None]:
        sig = inspect.signature(fn)
        own = [p for p in sig.parameters.values() if p.name != "options"]
        types = {p.name: eval(p.annotation, fn.__globals__) if isinstance(p.annotation, str) else p.annotation
                 for p in own}  # noqa: S307 - the annotations of this module's own functions
        extra = [inspect.Parameter(f.name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=_option(f),
                                   annotation=_cli_type(f, hints)) for f in flds]
        args = [p for p in own if isinstance(p.default, typer.models.ArgumentInfo)]
        rest = [p for p in own if p not in args]

        @functools.wraps(fn)
        def wrapper(**kw: Any) -> None:
            from .errors import ConfigError

            try:
                options = PredictOptions(**{f.name: kw.pop(f.name) for f in flds})
            except ConfigError as e:
                raise typer.BadParameter(str(e)) from e
            return fn(options=options, **kw)

        params = [p.replace(annotation=types[p.name]) for p in args] + extra + \
                 [p.replace(annotation=types[p.name]) for p in rest]
        wrapper.__signature__ = sig.replace(parameters=params, return_annotation=None)  # type: ignore[attr-defined]
        wrapper.__annotations__ = {p.name: p.annotation for p in params}
        return wrapper

    return deco

@app.command()
@prediction_options(every_command=False)
def predict(
    paths: list[str] = typer.Argument(..., help="Image files, folders (recursive), globs, or CSV/Parquet manifests "
                                      "(see --path-column)."),
    options: PredictOptions = None,  # type: ignore[assignment] - filled in by prediction_options
    fmt: str | None = typer.Option(None, "--format", "-f", help="table (the default), json or csv, on the screen; with "
                                   "--out the file's suffix decides."),
    explain: str | None = typer.Option(None, "--explain", help="Write a heat-map overlay PNG per photo into this "
                                       "folder (Grad-CAM: which pixels drove the top breed)."),
    explain_breed: str | None = typer.Option(None, help="With --explain: the breed to explain (name or wnid) "
                                             "instead of the top one."),
    out: str | None = typer.Option(None, "--out", "-o", help="Write rows to .csv, .jsonl or .parquet (a folder of "
                                   "parts) as they are produced; rerunning resumes after the rows already there."),
    overwrite: bool = typer.Option(False, "--overwrite", help="With --out: start over instead of resuming."),
    per_dog: bool = typer.Option(False, "--per-dog", help="With --out .csv/.parquet: one row per dog found (rows "
                                 "name the dog and its box) instead of one per photo with the main dog's."),
    workers: int | None = typer.Option(None, min=0, help="Decode/preprocess worker processes [0 on CPU: a "
                                       "background thread decodes; cores-1 on CUDA]."),
    path_column: str = typer.Option("path", help="Manifest column holding the photo paths."),
    engine: str = typer.Option("local", help=_plain("local | ray (Ray Data; needs --out "
                                                                   "DIR.parquet and dogbreed[ray]).")),
    ray_address: str | None = typer.Option(None, help="With --engine ray: join this cluster (e.g. "
                                           "ray://head:10001 or auto); default starts a local Ray."),
    ray_actors: int | None = typer.Option(None, min=1, help=_plain(
                                          "With --engine ray: predicting actors [as many as the cluster's CPUs "
                                          "hold at --ray-cpus-per-actor each; one per GPU].")),
    ray_cpus_per_actor: float = typer.Option(1.0, min=0.01, help="With --engine ray: CPUs each actor asks for."),
) -> None:
    """Predict the breed of the dog in each photo."""
    from .errors import BatchError
    from .inference.sources import iter_sources

    if fmt is not None and out is not None:
        raise typer.BadParameter(f"--format {fmt} is for the screen; with --out the file's suffix (.csv, .jsonl or "
                                 ".parquet) decides what is written")
    fmt = fmt or "table"
    if fmt not in ("table", "json", "csv"):
        raise typer.BadParameter("--format must be table, json or csv")
    if explain_breed is not None and not explain:
        raise typer.BadParameter("--explain-breed says which breed --explain draws; without --explain no heat-map "
                                 "is drawn")
    if overwrite and out is None:
        raise typer.BadParameter("--overwrite starts an --out file over; without --out nothing is written")
    _check_outputs(paths, out, options, per_dog, explain)
    try:
        if next(iter(iter_sources(paths, path_column)), None) is None:
            _err("no images found in the given paths")
            raise typer.Exit(2)
    except BatchError as e:
        _err(str(e))
        raise typer.Exit(2) from e
    if engine == "ray":
        if explain:
            raise typer.BadParameter("--explain runs with the local engine only")
        _predict_ray(paths, out, options, ray_address, path_column, overwrite, per_dog, ray_actors,
                     ray_cpus_per_actor)
        return
    if engine != "local":
        raise typer.BadParameter("--engine must be local or ray")
    pred = _load_predictor(options)
    explainer = _explainer(options.model, options.device, explain_breed) if explain else None
    on_row = _explain_hook(explainer, explain_breed, explain) if explainer is not None else None
    try:
        if out is not None:
            _predict_to_file(pred, paths, out, workers, path_column, overwrite, on_row, per_dog)
        else:
            _predict_to_stdout(pred, paths, fmt, workers, path_column, on_row)
    except typer.Exit as e:  # every photo failed: answered all the same, exit code 1 (2: an error, Python's exit)
        if e.exit_code == 1:
            _ANSWERED.append(True)
        raise
    _ANSWERED.append(True)


def _load_predictor(options: PredictOptions) -> Predictor:
    from .errors import DogbreedError
    from .predict import Predictor

    try:
        return Predictor(options)
    except (DogbreedError, FileNotFoundError, ValueError, RuntimeError) as e:
        _err(str(e) if str(e).startswith("gallery ") else f"cannot load model: {e}")  # the gallery's own sentence
        raise typer.Exit(2) from e


def _explainer(model: str, device: str, breed: str | None):  # noqa: ANN202 - explain is imported lazily
    from .errors import DogbreedError
    from .explain import Explainer, torch_classifier
    from .runtime import resolve_device

    try:
        ex = Explainer(torch_classifier(model), device=resolve_device(device))
    except (DogbreedError, FileNotFoundError, ValueError, RuntimeError) as e:
        _err(f"cannot load model: {e}")
        raise typer.Exit(2) from e
    try:
        ex.class_index(breed)  # an unknown breed fails here, before any photo is read
    except ValueError as e:
        _err(f"--explain-breed: {e}; see `dogbreed breeds`")
        raise typer.Exit(2) from e
    return ex


def _write_overlay(explainer, r: Prediction, breed: str | None, out_dir: str, written: set[str]) -> str:  # noqa: ANN001
    """OUT_DIR/<stem>.png (numbered when two photos share a stem); returns the path written. Several dogs, or one
    small dog: each dog's own heat-map in its numbered box, unless one breed is asked for (`explain_answer`)."""
    from .explain import overlay_info, overlay_name, png_bytes
    from .fileio import atomic_write_bytes

    target = Path(out_dir) / overlay_name(str(r.path), written, out_dir)
    atomic_write_bytes(target, png_bytes(explainer.explain_answer(r.path, r, breed)[0], overlay_info(str(r.path))))
    return str(target)


def _explain_hook(explainer, breed: str | None, out_dir: str) -> Callable[[Prediction], None]:  # noqa: ANN001
    from .errors import ImageDecodeError

    written: set[str] = set()

    def on_row(r: Prediction) -> None:
        if r.error is None and r.path is not None:
            try:
                r.explanation = _write_overlay(explainer, r, breed, out_dir, written)
            except ImageDecodeError as e:  # the photo, read again, is gone or changed since it was answered
                _err(f"{r.path}: no heat-map: {e}")
                return
            except OSError:
                raise  # the folder cannot be written: every photo after would fail the same way
            except Exception as e:  # noqa: BLE001 - one photo's heat-map failing keeps its answer and the run
                _err(f"{r.path}: no heat-map: {e}")
                return
            for d in r.dogs or []:
                d.explanation = r.explanation  # one overlay holds every dog's heat-map, in its numbered box

    return on_row


def _predict_to_stdout(pred: Predictor, paths: list[str], fmt: str, workers: int | None, path_column: str,
                       on_row: Callable[[Prediction], None] | None = None) -> None:
    from .batch import count_sources, stream_predictions
    from .fileio import writing

    total = count_sources(paths, path_column)
    preds = stream_predictions(pred, paths, workers=workers, path_column=path_column)
    it: Iterable = preds
    if total > 1 and fmt == "table" or total > pred.batch_size:
        from tqdm import tqdm

        it = tqdm(it, total=total, unit="img", file=sys.stderr, disable=None)
    n_ok = 0

    def rows() -> Iterator[dict]:
        nonlocal n_ok
        for r in it:
            if on_row is not None:
                on_row(r)
            if r.error is not None and fmt != "table":
                _err(f"{r.path}: {r.error}")
            n_ok += r.error is None
            yield r.to_dict()

    try:
        with _stdout_failures(), writing("stdout"):  # a full disk under `> file`: one sentence (a closed pipe stays
            {"json": _print_json, "csv": _print_csv, "table": _print_table}[fmt](rows())  # Python's)
            sys.stdout.flush()  # inside: buffered (a shell's default), the write fails only here
    finally:
        preds.close()  # the decode thread stops before the process exits, also after an error
    if n_ok == 0:
        raise typer.Exit(1)


@contextlib.contextmanager
def _stdout_failures() -> Iterator[None]:
    """A stdout that cannot be written (a full disk) is pointed at /dev/null once it has failed: the bytes left in
    its buffer would fail again at Python's exit, which then printed "Exception ignored" and exited 120 after our
    sentence."""
    from .errors import WriteError

    try:
        yield
    except WriteError:
        with contextlib.suppress(OSError, ValueError, AttributeError):
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, sys.stdout.fileno())
            os.close(null)
        raise


def _predict_to_file(pred: Predictor, paths: list[str], out: str, workers: int | None, path_column: str,
                     overwrite: bool, on_row: Callable[[Prediction], None] | None = None,
                     per_dog: bool = False) -> None:
    from .batch import run_batch
    from .errors import BatchError
    from .inference.sinks import out_format

    if out_format(out) != "jsonl":  # the rows' columns have no place for them; say so rather than drop them unseen
        if pred.gallery is not None:
            _err(f"note: --gallery's look-alikes are written only to .jsonl output, not to {Path(out).name}")
        if on_row is not None:
            _err(f"note: {Path(out).name} does not name each photo's heat-map file (.jsonl output does, as "
                 "'explanation'; each PNG also names its photo in a text chunk)")
    try:
        s = run_batch(pred, paths, out, workers=workers, path_column=path_column, overwrite=overwrite,
                      progress=True, on_prediction=on_row, per_dog=per_dog, explained=on_row is not None)
    except BatchError as e:
        _err(str(e))
        raise typer.Exit(2) from e
    typer.echo(f"{s.out}: {s.total} inputs, {s.skipped} already done, {s.written} written ({s.errors} errors)",
               err=True)
    if s.predicted_none:  # the output as a whole: a resume or a rerun answers as its first run did
        raise typer.Exit(1)


def _check_outputs(paths: list[str], out: str | None, options: PredictOptions, per_dog: bool,
                   explain: str | None) -> None:
    """--per-dog and --explain against the run they would write for: one sentence before any photo is read."""
    from .inference.loading import finds_dogs

    if per_dog and out is None:
        raise typer.BadParameter("--per-dog writes one row per dog to --out (.csv or .parquet); on the screen, "
                                 "--format json lists every dog")
    if per_dog and not finds_dogs(options):  # also --dog-detector none, which had written dogs=0 beside "dog"
        why = ("--whole-photo does" if not options.find_dogs
               else "a run without a dog detector (--dog-detector none) does")
        raise typer.BadParameter(f"--per-dog needs the dogs of each photo, which {why} not look for")
    if per_dog and out is not None and Path(out).suffix.lower() == ".jsonl":
        raise typer.BadParameter("--per-dog is for .csv and .parquet; a .jsonl line already holds every dog of its "
                                 "photo")
    if explain and Path(explain).exists() and not Path(explain).is_dir():
        raise typer.BadParameter(f"--explain {explain} is a file; give a folder for the heat-map PNGs")
    if explain and (inside := next((p for p in paths if Path(p).is_dir()
                                    and Path(explain).resolve().is_relative_to(Path(p).resolve())), None)):
        # its PNGs would be read as photos: by a resume (which then stopped, its rows no longer the first inputs)
        # and by every later run of the folder
        raise typer.BadParameter(f"--explain {explain} is inside the input folder {inside}, whose photos its "
                                 "heat-maps would join; give a folder outside it")


def _predict_ray(paths: list[str], out: str | None, options: PredictOptions, ray_address: str | None,
                 path_column: str, overwrite: bool, per_dog: bool = False, actors: int | None = None,
                 cpus_per_actor: float | None = None) -> None:
    from .errors import BatchError

    if out is None or not out.endswith(".parquet"):
        raise typer.BadParameter("--engine ray writes Parquet: give --out DIR.parquet")
    try:
        from .batch_ray import run_ray
    except ImportError as e:
        _err("--engine ray needs Ray: pip install 'dogbreed[ray]'")
        raise typer.Exit(2) from e
    try:
        s = run_ray(paths, out, options, address=ray_address, path_column=path_column, overwrite=overwrite,
                    per_dog=per_dog, actors=actors, cpus_per_actor=cpus_per_actor, progress=True)
    except BatchError as e:
        _err(str(e))
        raise typer.Exit(2) from e
    typer.echo(f"{s.out}: {s.total} inputs, {s.skipped} already done, {s.written} written ({s.errors} errors)",
               err=True)


@app.command("fit-dog-detector")
def fit_dog_detector_cmd(
    dogs: str = typer.Option(..., help="Folder of photos with a dog (recursive)."),
    not_dogs: str = typer.Option(..., help="Folder of photos without a dog (recursive)."),
    out: str = typer.Option("dog_detector", help="Output stem: writes OUT.safetensors and OUT.json."),
    backbone: list[str] = typer.Option(["efficientnet_lite0"], help="Backbone(s) to fit a head for (repeatable)."),
    target_recall: float = typer.Option(0.99, min=0.5, max=0.999, help="Share of validation dogs kept."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace OUT.json / OUT.safetensors already there."),
) -> None:
    """Fit the dog/no-dog detector on your own photos; use it with `predict --dog-detector OUT.json`."""
    from pathlib import Path

    from .dogness import fit_dog_detector
    from .inference.sources import expand_inputs

    for name, folder in (("--dogs", dogs), ("--not-dogs", not_dogs)):
        if not Path(folder).is_dir():
            _err(f"{name} {folder}: not a folder")
            raise typer.Exit(2)
    dog_files, not_dog_files = expand_inputs([dogs]), expand_inputs([not_dogs])
    both = {os.path.realpath(f) for f in dog_files} & {os.path.realpath(f) for f in not_dog_files}
    if both:  # the same photos on both sides fit a detector that says 50% to everything
        _err(f"{len(both)} photo{'s are' if len(both) > 1 else ' is'} in both --dogs and --not-dogs "
             f"(e.g. {sorted(both)[0]}): each photo must be one or the other")
        raise typer.Exit(2)
    from .dogness import detector_files, detector_stem
    from .fileio import out_folder

    with _one_sentence():  # the output path, before the slow fit
        out_folder(detector_stem(out).parent)
        _refuse_existing(detector_files(out), overwrite)
    try:
        det = fit_dog_detector(dog_files, not_dog_files, backbones=backbone, target_recall=target_recall)
    except (ValueError, KeyError) as e:
        _err(f"cannot fit a dog detector: {e}")
        raise typer.Exit(2) from e
    with _one_sentence():
        path = det.save(out)
    used = det.meta.get("unreadable_skipped", 0)
    typer.echo(f"wrote {path} and its .safetensors ({len(dog_files)} dog, {len(not_dog_files)} not-dog photos"
               + (f"; {used} unreadable left out" if used else "") + ")")
    for key, t in det.thresholds.items():
        typer.echo(f"  threshold {t:.4f} keeps {det.target_recall:.1%} of validation dogs for {key}")


@app.command()
def breeds(fmt: str = typer.Option("table", "--format", "-f", help="table | json")) -> None:
    """List the breeds the default model knows."""
    from .breeds import stanford_breeds

    rows = [{"wnid": b.wnid, "name": b.name, "imagenet_index": b.imagenet_index} for b in stanford_breeds()]
    if fmt == "json":
        typer.echo(json.dumps(rows, indent=2))
    else:
        for r in rows:
            typer.echo(f"{r['wnid']}  {r['imagenet_index']:4d}  {r['name']}")


# --- data -------------------------------------------------------------------------------------------------------


def _load_index(path: str, validate: bool = False) -> DatasetIndex:
    from .data import load_dataset

    try:
        return load_dataset(path, validate=validate)
    except (FileNotFoundError, ValueError) as e:
        _err(str(e))
        raise typer.Exit(2) from e


def _rel(path: str, root: str) -> str:
    from pathlib import Path

    try:
        return str(Path(path).relative_to(root))
    except ValueError:
        return path


@data_app.command("inspect")
def data_inspect(
    path: str = typer.Argument(..., help="Dataset folder (Stanford Dogs, Kaggle labels.csv + train/, or folders)."),
    full: bool = typer.Option(False, "--full", help="Decode every pixel (slower; catches damage inside the data)."),
    fmt: str = typer.Option("table", "--format", "-f", help="table | json"),
) -> None:
    """Count images per breed, size statistics, and every bad file with the reason."""
    from .data import inspect_dataset

    try:
        rep = inspect_dataset(path, full=full)
    except (FileNotFoundError, ValueError) as e:
        _err(str(e))
        raise typer.Exit(2) from e
    if fmt == "json":
        typer.echo(json.dumps(rep.to_dict(), indent=2))
        return
    d = rep.to_dict()
    typer.echo(f"{d['root']}: {d['layout']} layout, {len(d['breeds'])} breeds, {d['images']} good images, "
               f"{len(d['problems'])} problems")
    if d["official_split"]:
        typer.echo("official split: " + ", ".join(f"{k} {v}" for k, v in d["official_split"].items()))
    if d["layout"] == "stanford":
        typer.echo(f"bounding boxes: {d['with_box']}/{d['images']}")
    for k, st in d["sizes"].items():
        typer.echo(f"{k:>6} px: min {st['min']:g}  median {st['median']:g}  max {st['max']:g}")
    typer.echo("images per breed:")
    for b in d["breeds"]:
        typer.echo(f"  {b['images']:6d}  {b['breed']}" + (f"  ({b['wnid']})" if b["wnid"] else ""))
    if d["problems"]:
        typer.echo(f"problems ({len(d['problems'])}):")
        for p in d["problems"]:
            typer.echo(f"  {_rel(p['path'], d['root'])}: {p['reason']}")


@data_app.command("split")
def data_split(
    path: str = typer.Argument(..., help="Dataset folder."),
    out: str = typer.Option("manifest.csv", "--out", "-o", help="Manifest CSV to write."),
    seed: int = typer.Option(0, help="Shuffle seed; the same seed gives the same split."),
    ratios: str = typer.Option("0.8,0.1,0.1", help="train,val,test proportions."),
    official: bool = typer.Option(True, "--official/--no-official", help="Use the dataset's own test list."),
    validate: bool = typer.Option(False, "--validate", help="Decode every image first and leave bad ones out."),
) -> None:
    """Write a stratified train/val/test manifest and print per-breed counts."""
    from .data import Problem, leave_out_unreadable, make_split, save_manifest, split_counts

    try:
        r = tuple(float(x) for x in ratios.split(","))
    except ValueError as e:
        raise typer.BadParameter("--ratios must be three numbers like 0.8,0.1,0.1") from e
    index = _load_index(path, validate=validate)
    if not validate:  # the quick check of `data inspect` (headers, a JPEG's end): what it flags is left out too
        index.samples, bad = leave_out_unreadable(index.samples)
        index.problems += [Problem(p, why) for p, why in bad.items()]
    try:
        splits = make_split(index.samples, r, seed=seed, use_official=official)
    except ValueError as e:
        raise typer.BadParameter(str(e)) from e
    if Path(out).is_dir():
        raise typer.BadParameter(f"{out} is a folder; give the manifest's file name "
                                 f"(e.g. {Path(out) / 'manifest.csv'})", param_hint="'--out'")
    with _one_sentence():
        written = save_manifest(splits, out)
    table = split_counts(splits)
    width = max([len(b) for b in table] + [5])
    typer.echo(f"{'breed':<{width}}  {'train':>6} {'val':>6} {'test':>6}")
    for b, c in table.items():
        typer.echo(f"{b:<{width}}  {c['train']:6d} {c['val']:6d} {c['test']:6d}")
    typer.echo(f"{'total':<{width}}  " + " ".join(f"{len(splits[k]):6d}" for k in ("train", "val", "test")))
    if index.problems:
        typer.echo(f"{len(index.problems)} files left out (see `dogbreed data inspect`)")
    if untrained := [b for b, c in table.items() if not c["train"]]:  # an official test list can hold all of one
        _err(f"warning: no training photo of {len(untrained)} breed{'s' * (len(untrained) > 1)} "
             f"({', '.join(untrained[:5])}{', ...' if len(untrained) > 5 else ''}): a model trained on this split "
             "cannot learn them (--no-official splits every breed 80/10/10)")
    typer.echo(f"wrote {written}")


@data_app.command("preview")
def data_preview(
    path: str = typer.Argument(..., help="Dataset folder, or a manifest CSV (its train split is shown)."),
    out: str = typer.Option("preview.png", "--out", "-o", help="PNG to write."),
    n: int = typer.Option(16, "--n", min=1, max=256, help="How many photos."),
    seed: int = typer.Option(0, help="Picks the photos and their augmentations."),
    size: int = typer.Option(224, min=16, max=1024, help="Model input size."),
    box_crop: bool = typer.Option(False, "--box-crop", help="Crop to the annotated box first (Stanford)."),
    plain: bool = typer.Option(False, "--plain", help="Preprocessing only, no augmentation."),
    epoch: int = typer.Option(0, min=0, help="The training epoch whose augmentations are drawn: the same photos "
                              "with another --epoch show how the views differ every epoch."),
) -> None:
    """Write a labelled grid of augmented samples: what the model sees in training."""
    from .data import load_manifest, preview_grid
    from .transforms import Augment, Preprocess

    if path.lower().endswith(".csv"):
        with _one_sentence():
            samples = load_manifest(path)["train"]
    else:
        samples = _load_index(path).samples
    if not samples:
        _err("no images to preview")
        raise typer.Exit(2)
    aug = Augment(rotation=0, translate=0, hflip=0, rrc_scale=(1.0, 1.0), color_jitter=0) if plain else Augment()
    bad: list[str] = []
    written = preview_grid(samples, out, preprocess=Preprocess(size=size, box_crop=box_crop), augment=aug, n=n,
                           seed=seed, epoch=epoch, unreadable=bad)
    shown = min(n, len(samples)) - len(bad)
    # the unreadable ones are red tiles, not photos: training leaves them out ("65 photos" had counted 3 of them)
    typer.echo(f"wrote {written} ({shown} photos" + (f"; {len(bad)} unreadable, drawn as red tiles and left out of "
                                                     f"training: {', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''}"
                                                     if bad else "") + ")")


# -- web service (serve/) ----------------------------------------------------------------------------------------
feedback_app = typer.Typer(no_args_is_help=True, help="Feedback sent from the web page.")
app.add_typer(feedback_app, name="feedback")


@gallery_app.command("build")
def gallery_build(
    data: str = typer.Option(..., help="Labelled photos: Stanford layout, Kaggle labels.csv, or a folder per breed."),
    out: str = typer.Option(..., help="Gallery file to write (.safetensors is added when missing)."),
    backbone: str = typer.Option("efficientnet_lite0", help="Backbone whose pooled features are stored; it must "
                                 "be one the predictor runs (Lite0 is in both fast and best)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a gallery file already there."),
) -> None:
    """Store pooled features, labels and small thumbnails of labelled photos, for look-alikes (no network)."""
    from .gallery import build_gallery, gallery_file

    _refuse_existing([gallery_file(out)], overwrite)  # before the slow build
    try:
        g, skipped = build_gallery(data, backbone=backbone, progress=True)
    except (FileNotFoundError, ValueError) as e:
        _err(f"cannot build a gallery: {e}")
        raise typer.Exit(2) from e
    path = g.save(out)
    mb = path.stat().st_size / 1e6
    typer.echo(f"wrote {path} ({len(g)} photos, {len(g.breeds)} breeds, {mb:.1f} MB"
               + (f"; {skipped} unreadable photos skipped)" if skipped else ")"))


@app.command()
@prediction_options(every_command=True)
def serve(
    options: PredictOptions = None,  # type: ignore[assignment] - filled in by prediction_options
    host: str = typer.Option("127.0.0.1", help="Interface to listen on (0.0.0.0 for all)."),
    port: int = typer.Option(8000, min=1, max=65535),
    feedback_db: str | None = typer.Option(None, help="SQLite file for feedback (default: under the cache dir)."),
    max_mb: float = typer.Option(20.0, min=0.001, help="Largest upload per photo, in MB."),
    max_request_mb: float = typer.Option(25.0, min=0.001, help="Largest request body, in MB, counted as it "
                                         "arrives (chunked uploads too)."),
    max_files: int = typer.Option(32, min=1, help="Most photos per request."),
    max_megapixels: float = typer.Option(50.0, min=0.000001, help="Largest photo, in megapixels."),
    max_request_megapixels: float = typer.Option(200.0, min=0.000001, help="Most pixels per request, all photos "
                                                 "together as they will be decoded, checked before decoding."),
    max_queue: int = typer.Option(128, min=1, help="Most photos decoding, waiting or in inference at once; "
                                  "beyond that requests get 503 with Retry-After."),
    decode_workers: int = typer.Option(2, min=1, help="Photos decoded at full size at once."),
    feedback_max_mb: float = typer.Option(1024.0, min=0.001, help="Most MB of feedback photos stored in all."),
    feedback_per_day: int = typer.Option(1000, min=1, help="Most feedback photos accepted per UTC day."),
    body_timeout: int = typer.Option(30, min=1, help="Seconds a request body may stall before it gets a 408."),
) -> None:
    """Serve the web page and the HTTP API (docs at /docs; every limit at /healthz)."""
    from .serve import run
    from .serve.limits import MB, Limits

    try:
        limits = Limits(max_file_bytes=int(max_mb * MB), max_body_bytes=int(max_request_mb * MB),
                        max_files=max_files, max_pixels=int(max_megapixels * 1e6),
                        max_request_pixels=int(max_request_megapixels * 1e6), max_queue=max_queue,
                        decode_workers=decode_workers, feedback_max_bytes=int(feedback_max_mb * MB),
                        feedback_per_day=feedback_per_day, body_idle_s=body_timeout)
        run(options=options, host=host, port=port, feedback_db=feedback_db, limits=limits)
    except (FileNotFoundError, ValueError, RuntimeError) as e:
        _err(f"cannot start: {e}")
        raise typer.Exit(2) from e


@feedback_app.command("export")
def feedback_export(
    out: str = typer.Option(..., "--out", help="Folder to write, one sub-folder per breed."),
    feedback_db: str | None = typer.Option(None, help="SQLite file for feedback (default: under the cache dir)."),
) -> None:
    """Write the photos users confirmed or corrected as a folder-per-breed dataset for retraining."""
    import sqlite3

    from .fileio import writing
    from .serve.feedback import default_feedback_db, export_feedback

    db = feedback_db or str(default_feedback_db())
    try:
        # a read-only disk, or an --out that is a file: one sentence (they had ended in tracebacks)
        with _one_sentence(), writing(out, missing=True):
            counts = export_feedback(db, out)
    except sqlite3.DatabaseError as e:  # a file that is no SQLite database, or a damaged one
        _err(f"feedback export: {db} cannot be read as a feedback database ({e})")
        raise typer.Exit(2) from e
    if not counts:
        _err(f"no feedback in {db}")
        raise typer.Exit(1)
    for folder, n in counts.items():
        typer.echo(f"{n:5d}  {folder}")
    typer.echo(f"{sum(counts.values())} photos in {len(counts)} breeds -> {out}")


@app.command()
def train(
    preset: str | None = typer.Option(None, help="Preset name (see src/dogbreed/presets) or a .yaml file."),
    data: str | None = typer.Option(None, help="Dataset folder (Stanford, Kaggle CSV or folder-per-breed)."),
    set_: list[str] = typer.Option([], "--set", help="Override a config key: key=value (YAML value, dotted keys)."),
    out: str = typer.Option("runs", help="Folder for run directories."),
    resume: str | None = typer.Option(None, help="Continue an interrupted run directory from its last checkpoint."),
    device: str = typer.Option("cpu", help="cpu | cuda | auto"),
    epochs: int | None = typer.Option(None, min=1, help="max_epochs"),
    seed: int | None = typer.Option(None, help="Random seed (initialisation, shuffling, augmentation)."),
    nproc: int = typer.Option(1, "--nproc", min=1, help="Train with DistributedDataParallel in N processes on this "
                              "machine (runs torchrun; one GPU each with --device cuda). batch_size stays global."),
) -> None:
    """Train a preset; writes a run directory usable by `predict --model RUN_DIR`."""
    from . import train as tr
    from .errors import DogbreedError

    if nproc > 1:
        from .train.distributed import launch, strip_option

        raise typer.Exit(launch(nproc, strip_option(sys.argv[1:], "--nproc")))

    extra = [f"max_epochs={epochs}"] if epochs else []
    extra += [f"seed={seed}"] if seed is not None else []
    try:
        if resume:
            tr.refuse_changes_on_resume(["--preset"] if preset else [], resume)  # train() checks --data and --out
            # Only settings a resumed run can honour are accepted (max_epochs, patience, num_workers).
            run = tr.train(tr.parse_overrides([*set_, *extra]), data=data, out=out, resume=resume, device=device)
        else:
            if not preset:
                raise tr.ConfigError("--preset is needed (or --resume RUN_DIR)")
            cfg = tr.load_preset(preset, [*set_, *extra])  # settings are checked first, data second
            if not data:
                raise tr.ConfigError("--data is needed: a dataset folder to train on")
            run = tr.train(cfg, data, out=out, device=device)
    except (DogbreedError, FileNotFoundError) as e:
        _err(f"train: {e}")
        raise typer.Exit(2) from e
    if os.environ.get("RANK", "0") == "0":  # under torchrun: printed once
        typer.echo(str(run))


@app.command("evaluate")
def evaluate_cmd(
    run_dir: str = typer.Argument(..., help="A run directory written by `dogbreed train`."),
    split: str | None = typer.Option(None, help="test | val | train (from the run's split manifest) [test]"),
    data: str | None = typer.Option(None, help="Evaluate on every photo of another dataset instead."),
    device: str = typer.Option("cpu", help="cpu | cuda | auto"),
) -> None:
    """Metrics, confusion matrix, mistakes grid and report for a trained run."""
    from .errors import DogbreedError
    from .train.reports import evaluate_run

    if split is not None and data is not None:  # --split had been ignored without a word
        raise typer.BadParameter("--split picks a part of the run's own split; --data evaluates every photo of "
                                 "another dataset instead: give one of them")
    try:
        out = evaluate_run(run_dir, split=split or "test", data=data, device=device)
    except (DogbreedError, FileNotFoundError) as e:
        _err(f"evaluate: {e}")
        raise typer.Exit(2) from e
    rep = json.loads((out / "report.json").read_text())
    unknown = rep.get("info", {}).get("photos_skipped_unknown_breed") or 0
    typer.echo(f"{rep['n']} photos: top-1 {rep['top1']:.1%}, top-5 {rep['top5']:.1%}, macro F1 {rep['macro_f1']:.1%}"
               + (f" ({unknown} more of breeds this run does not know: not scored)" if unknown else ""))
    typer.echo(f"report: {out / 'report.md'}")


@app.command()
def compare(run_dirs: list[str] = typer.Argument(..., help="Run directories.")) -> None:
    """Table of runs: preset, parameters, best val accuracy, test accuracy, epochs, time."""
    from .evaluate import format_table
    from .train.reports import COMPARE_COLUMNS, compare_runs

    with _one_sentence():
        rows = compare_runs(run_dirs)
    typer.echo(format_table(rows, COMPARE_COLUMNS))


CARD_IGNORES = {"dog_detector": "--dog-detector", "dog_target_recall": "--target-recall",
                "dog_threshold": "--dog-threshold", "dog_cascade": "--no-dog-cascade",
                "breed_cascade": "--no-breed-cascade", "gallery": "--gallery", "find_dogs": "--whole-photo"}


@app.command()
@prediction_options(every_command=True)
def card(
    data: str = typer.Option(..., help="Labelled photos: Stanford layout, Kaggle CSV or one folder per breed."),
    out: str = typer.Option(..., help="Folder for card.md, card.json, reliability.png, confusion.png."),
    options: PredictOptions = None,  # type: ignore[assignment] - filled in by prediction_options
) -> None:
    """A per-breed model card: recall/precision per breed, confusions, calibration, breed-balanced accuracy."""
    from .card import make_card
    from .errors import WriteError
    from .inference.options import PredictOptions as Defaults
    from .predict import Predictor

    # The card scores the breed model on each photo as a whole (what its calibration and per-breed figures are
    # about): these options change what `predict` answers, not the card, and were taken without a word.
    defaults = Defaults()
    unused = [flag for f, flag in CARD_IGNORES.items() if getattr(options, f) != getattr(defaults, f)]
    if unused:
        _err(f"card: {', '.join(unused)} {'do' if len(unused) > 1 else 'does'} not change a card: it scores the "
             "breed model on each photo as a whole, without the detection stage, the dog-or-not decision, the "
             "cascades or a gallery")
    try:
        pred = Predictor(options)
        c = make_card(pred, data, out, progress=True)
    except (FileNotFoundError, ValueError, RuntimeError, WriteError) as e:
        _err(f"card: {e}")
        raise typer.Exit(2) from e
    typer.echo(f"{c['photos']} photos of {c['breeds']} breeds: top-1 {c['top1']:.1%}, breed-balanced top-1 "
               f"{c['macro_top1']:.1%}, ECE {c['ece']:.3f}")
    typer.echo(f"card: {Path(out) / 'card.md'}")


@app.command()
def adapt(
    data: str = typer.Option(..., help="Labelled photos: Stanford layout (Images/, optional Annotation/) or one "
                                       "folder per breed. Folders that are not one of the 120 breeds become new ones."),
    out: str = typer.Option(..., help="Model directory to write (use it with predict --model)."),
    backbone: str = typer.Option("efficientnet_lite0", help="Backbone whose ImageNet dog rows the head starts from."),
    model: str = typer.Option("default", help="'default' (the shipped adapted heads), 'imagenet' (the plain "
                              "ImageNet head), or a model/run directory to adapt further."),
    l2: float = typer.Option(0.1, help="Pull toward the starting head; larger keeps closer to it."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a model already in --out."),
) -> None:
    """Adapt the breed head to your labelled photos (every breed of the model stays covered)."""
    from .adapt import AdaptConfig, AdaptError
    from .adapt import adapt as run_adapt
    from .errors import DogbreedError

    if model not in ("default", "imagenet") and backbone != "efficientnet_lite0":
        _err(f"adapt: --backbone {backbone} is not used: the model in --model {model} brings its own backbone")
    try:
        clf, summary = run_adapt(data, out, backbone=backbone, model=model, cfg=AdaptConfig(l2=l2), progress=True,
                                  overwrite=overwrite)
    except (DogbreedError, AdaptError, FileNotFoundError, KeyError) as e:
        _err(str(e))
        raise typer.Exit(2) from e
    info = summary["adapt"]
    typer.echo(f"adapted on {info['photos']} photos of {len(info['photos_per_breed'])} breeds "
               f"({info['unreadable']} unreadable); {len(clf.classes)} classes; wrote {out}")
    if info["new_breeds"]:
        typer.echo(f"new breeds: {', '.join(info['new_breeds'])}")
        _shared_names(info["new_breeds"], clf.classes)


@app.command("add-breed")
def add_breed_cmd(
    name: str = typer.Argument(..., help="Name of the new breed."),
    folder: str = typer.Argument(..., help="Folder with at least 3 photos of it."),
    model: str = typer.Option("default", help="'default' (the shipped adapted heads), 'imagenet' (the plain "
                              "ImageNet head), or a model/run directory to grow."),
    out: str = typer.Option(..., help="Model directory to write."),
    backbone: str = typer.Option("efficientnet_lite0", help="Backbone when --model is default or imagenet."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a model already in --out (--model and --out "
                                   "may then be the same folder)."),
) -> None:
    """Teach the model one more breed from a few photos, keeping the others as they are."""
    from .adapt import AdaptError, add_breed
    from .errors import DogbreedError

    try:
        clf, summary = add_breed(name, folder, model=model, backbone=backbone, out=out, overwrite=overwrite)
    except (DogbreedError, AdaptError, FileNotFoundError) as e:
        _err(str(e))
        raise typer.Exit(2) from e
    typer.echo(f"added {summary['name']!r} from {summary['photos']} photos ({summary['unreadable']} unreadable); "
               f"{summary['classes']} classes; wrote {out}")
    _shared_names([summary["name"]], clf.classes)


def _shared_names(added: list[str], classes: list) -> None:
    """A new breed named as several breeds of the model are (a "Corgi" folder beside Pembroke and Cardigan) is
    kept, as asked, and said so: its photos may have been meant for one of them."""
    from .breeds import BreedIndex, listed

    index = BreedIndex(classes)
    for name in added:
        meant = [classes[i].name for i in index.meant(name)]
        if len(meant) > 1:
            _err(f"note: {name!r} is now a breed of its own beside {listed(meant, 'and')}; name its folder after "
                 "one of them to add its photos to that breed instead")


@app.command("export")
def export_cmd(
    model: str = typer.Argument("default", help="'default' (adapted heads), 'imagenet', or a run/model "
                                "directory written by dogbreed train/adapt."),
    fmt: str = typer.Option("onnx", "--format", help="onnx (the only format so far)"),
    out: str | None = typer.Option(None, "--out", "-o", help="Output .onnx path (a .onnx.json sidecar goes next to "
                                   "it). Default: RUN_DIR/model.onnx, or dogbreed-<backbone>.onnx for default."),
    quality: str = typer.Option("fast", help="fast (one model; 'best' is an ensemble, not one graph)"),
    backbone: str = typer.Option("efficientnet_lite0", help="Backbone when MODEL is default."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an export (or its sidecar) already there."),
) -> None:
    """Export a model to ONNX, check its outputs against PyTorch, and write the sidecar predict needs."""
    from .errors import DogbreedError, ModelLoadError
    from .export import PARITY_TOLERANCE, export_classifier, sidecar_path
    from .resolve import PACKAGED, resolve_model

    if fmt != "onnx":
        raise typer.BadParameter("--format must be onnx")
    if out is not None and not out.lower().endswith(".onnx"):  # predict --model knows an export by its suffix
        raise typer.BadParameter(f"--out {out}: name the file .onnx (predict --model reads an export by that suffix)")
    if quality != "fast":
        _err("only --quality fast exports (the 'best' ensemble runs several backbones at different sizes)")
        raise typer.Exit(2)
    try:
        if str(model).lower().endswith(".onnx"):
            raise ModelLoadError(f"{model}: already an ONNX export; give the run or model dir it came from")
        packaged = model in PACKAGED
        resolved = resolve_model(model, backbone=backbone if packaged else None)
        clf = resolved.classifier
        if packaged:
            extra = {"source": f"{model}:{backbone}"}
            target = out or f"dogbreed-{backbone}.onnx"
        else:
            extra = {"source": model, "backbone_in_weights": resolved.backbone_in_weights}
            target = out or str(Path(model) / "model.onnx")
    except DogbreedError as e:
        _err(f"export: {e}")
        raise typer.Exit(2) from e
    _refuse_existing([target, sidecar_path(target)], overwrite)
    try:
        info = export_classifier(clf, target, decision=resolved.decision, extra=extra)
    except (FileNotFoundError, ValueError, RuntimeError, KeyError) as e:
        _err(f"export failed: {e}")
        raise typer.Exit(1) from e
    diffs, scales = info["parity"]["max_abs_diff"], info["parity"]["scale"]
    worst = max(diffs.values(), default=0.0)
    typer.echo(f"wrote {target} and {sidecar_path(target)}")
    typer.echo(f"parity vs PyTorch on {info['parity']['inputs']} inputs: max abs diff {worst:.2e} "
               f"(each output under {PARITY_TOLERANCE:g} of its scale; "
               + ", ".join(f"{k} {v:.1e} of {scales[k]:.3g}" for k, v in diffs.items()) + ")")
    typer.echo(f"use it: dogbreed predict --model {target} PHOTO...")


def main() -> None:
    """The `dogbreed` entry point. An output that cannot be written (a full disk, a quota, a read-only file system,
    a permission taken away), wherever it is met, ends in its one sentence and exit code 2, not a traceback."""
    from .errors import WriteError

    _one_line_warnings()
    try:
        app()
    except WriteError as e:
        _err(str(e))
        sys.exit(2)


def _one_line_warnings() -> None:
    """A warning of this package's own (ONNX Runtime unavailable, so PyTorch runs) reads as one line on stderr, not
    as Python's file name, line number and source line; other libraries' warnings are shown as they show them."""
    import warnings

    show, ours = warnings.showwarning, os.path.dirname(os.path.abspath(__file__)) + os.sep

    def one_line(message, category, filename, lineno, file=None, line=None):  # noqa: ANN001, ANN202 - warnings' own
        if os.path.abspath(str(filename)).startswith(ours):
            _err(f"dogbreed: {message}")
        else:
            show(message, category, filename, lineno, file, line)

    warnings.showwarning = one_line


def run() -> None:
    """The installed `dogbreed` command: `main`, and once `predict` has answered, the process ends at once.

    Python's teardown after a prediction (the compiled OpenVINO graphs and the kernels they built for each batch
    size, freed module by module) took 0.3 s of every `dogbreed predict` run: a third of a one-photo call. After
    `predict` has written and closed its outputs, stdout and stderr are flushed, the atexit handlers run (what
    libraries registered to close), and the process leaves with `os._exit`. Any other ending (another command, an
    error, Ctrl-C, the Ray engine, a stream that cannot be flushed) exits as Python does."""
    # Started with stdout or stderr closed (`2>&-`, some daemons), Python gives None: every progress bar and
    # message then crashed the command. What would go there is dropped instead.
    for name in ("stdout", "stderr"):
        if getattr(sys, name) is None:
            setattr(sys, name, open(os.devnull, "w", encoding="utf-8"))  # noqa: SIM115 - for the process's life
    code: Any = 0
    try:
        main()
    except SystemExit as e:
        code = e.code
        if not _ANSWERED or not (code is None or isinstance(code, int)):
            raise
    if _ANSWERED:
        _leave(code or 0)


def _leave(code: int) -> None:
    import atexit

    run_exitfuncs = getattr(atexit, "_run_exitfuncs", None)  # CPython's; elsewhere the usual exit
    if run_exitfuncs is None:
        sys.exit(code)
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError, AttributeError):  # a closed pipe, or no stream at all (`>&-`, a daemon): Python's
        sys.exit(code)  # own exit deals with it, as before
    run_exitfuncs()
    with contextlib.suppress(OSError, ValueError, AttributeError):
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    run()
