"""The `dogbreed` command: a thin shell over the library (parse, call, print)."""

from __future__ import annotations

import csv
import json
import sys

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Tell a dog's breed from a photo.")
data_app = typer.Typer(no_args_is_help=True, help="Inspect, split and preview datasets.")
app.add_typer(data_app, name="data")


def _err(msg: str) -> None:
    typer.secho(msg, err=True, fg=typer.colors.RED)


VERDICT_TEXT = {"dog": "dog", "no_dog": "NO DOG FOUND", "uncertain_breed": "dog, mixed or uncertain breed"}


def _print_table(preds: list[dict]) -> None:
    for p in preds:
        if "error" in p:
            typer.echo(f"{p['path']}: ERROR {p['error']}")
            continue
        head = f"{p['path']}: {VERDICT_TEXT[p['verdict']]} (dog probability {p['dog_probability']:.1%})"
        if p.get("several_breeds_likely"):
            head += " - more than one breed is likely"
        typer.echo(head)
        if p["verdict"] == "no_dog":
            typer.echo("  (closest breeds, for reference only)")
        for rank, b in enumerate(p["breeds"], 1):
            bar = "#" * int(round(b["probability"] * 30))
            typer.echo(f"  {rank}. {b['name']:<32} {b['probability']:7.1%}  {bar}")


def _print_csv(preds: list[dict]) -> None:
    w = csv.writer(sys.stdout, lineterminator="\n")
    w.writerow(["path", "verdict", "dog_probability", "rank", "wnid", "name", "probability", "error"])
    for p in preds:
        if "error" in p:
            w.writerow([p["path"], "error", "", "", "", "", "", p["error"]])
            continue
        for rank, b in enumerate(p["breeds"], 1):
            w.writerow([p["path"], p["verdict"], p["dog_probability"], rank, b["wnid"] or "", b["name"],
                        b["probability"], ""])


@app.command()
def predict(
    paths: list[str] = typer.Argument(..., help="Image files, folders (recursive) or globs."),
    model: str = typer.Option("default", help="'default', a run directory, or an .onnx file."),
    top_k: int = typer.Option(5, "--top-k", "-k", min=1),
    fmt: str = typer.Option("table", "--format", "-f", help="table | json | csv"),
    quality: str = typer.Option("fast", help="fast (one model) | best (ensemble + flip TTA)"),
    runtime: str = typer.Option("torch", help="torch | onnx"),
    device: str = typer.Option("cpu", help="cpu | cuda | auto"),
    batch_size: int = typer.Option(16, min=1),
    dog_threshold: float | None = typer.Option(None, help="Override the model's dog/no-dog threshold."),
) -> None:
    """Predict the breed of the dog in each photo."""
    from .predict import Predictor, expand_inputs

    if fmt not in ("table", "json", "csv"):
        raise typer.BadParameter("--format must be table, json or csv")
    files = expand_inputs(paths)
    if not files:
        _err("no images found in the given paths")
        raise typer.Exit(2)
    try:
        pred = Predictor(model=model, quality=quality, runtime=runtime, device=device, top_k=top_k,
                         batch_size=batch_size)
    except (FileNotFoundError, ValueError, RuntimeError) as e:
        _err(f"cannot load model: {e}")
        raise typer.Exit(2) from e
    if dog_threshold is not None:
        pred.decision.dog_threshold = dog_threshold
    results = []
    it = pred.iter_predict(files)
    if len(files) > 1 and fmt == "table" or len(files) > pred.batch_size:
        from tqdm import tqdm

        it = tqdm(it, total=len(files), unit="img", file=sys.stderr, disable=None)
    for r in it:
        results.append(r.to_dict())
        if "error" in results[-1] and fmt != "table":
            _err(f"{r.path}: {r.error}")
    if fmt == "json":
        typer.echo(json.dumps(results, indent=2))
    elif fmt == "csv":
        _print_csv(results)
    else:
        _print_table(results)
    if all("error" in r for r in results):
        raise typer.Exit(1)


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


def main() -> None:
    app()


if __name__ == "__main__":
    main()
