"""``isus show``: the image, the ground truth and the prediction side by side, one PNG per image,
for the images of lowest PQ or those named."""
from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Any

import click

import isus
from isus_cli._options import (DatasetArgs, check_overwrite, dataset_options, out_dir_option, overwrite_option,
                               predictions_option, workers_option)

#: Images drawn at most in one run (each PNG takes about a second and ~1 MB at the default size).
MAX_SHOWN = 200
#: --worst when neither --worst nor --image is given.
DEFAULT_WORST = 8


def safe_name(image_id: Any) -> str:
    """``image_id`` as a file name: characters other than letters, digits, ``.``, ``_``, ``-`` -> ``_``."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(image_id)).strip(".") or "image"


def _resolve(ds: isus.PanopticDataset, wanted: tuple[str, ...]) -> list[int]:
    """Positions in ``ds`` of the images named by id, file name or file name without suffix."""
    names: dict[str, int] = {}
    for i in range(len(ds)):
        info = ds.image_info(i)
        for key in (str(info.image_id), info.file_name, Path(info.file_name).stem):
            names.setdefault(key, i)
    out = []
    for w in wanted:
        if w not in names:
            some = ", ".join(str(ds.image_info(i).image_id) for i in range(min(3, len(ds))))
            raise click.BadParameter(f"{w!r} is no image of {ds.name} {ds.split} (give an image id or file name, "
                                     f"e.g. {some})", param_hint="--image")
        out.append(names[w])
    return list(dict.fromkeys(out))


@click.command()
@dataset_options()
@predictions_option
@click.option("--worst", type=click.IntRange(min=1, max=MAX_SHOWN), default=None,
              help=f"Draw the N images of lowest PQ, worst first (default: {DEFAULT_WORST} when no --image is given).")
@click.option("--image", "images", multiple=True, metavar="ID",
              help="Draw this image (an image id or file name); repeatable.")
@out_dir_option("Output directory (one PNG per image, show.json).", default=Path("show"))
@click.option("--max-size", type=click.IntRange(min=64, max=8192), default=1024, show_default=True,
              help="Longest side of each of the three panels in pixels (larger images are drawn downscaled).")
@workers_option
@overwrite_option
def show(dataset: DatasetArgs, predictions: Path | None, worst: int | None, images: tuple[str, ...], out: Path,
         max_size: int, workers: int | None, overwrite: bool) -> None:
    """Draw predictions beside the ground truth: image | ground truth | prediction, one PNG per image.

    Segments take their class colour, every segment is outlined, thing segments have a box
    (dashed: crowd), the largest segments their class name; each title gives the image's own PQ
    (things, stuff), SQ and RQ. --worst N ranks every predicted image by PQ (isus.eval's
    per-image statistics, the pass isus eval makes) and draws the N lowest; --image draws those
    named. Predictions: COCO panoptic, as isus predict (or panopticapi, detectron2) writes them.
    Writes NNN_<image id>.png (worst first) or <image id>.png, and show.json (the images and their
    scores).

    Example:

    \b
        isus show --dataset mvd --root /data/mvd --split validation --predictions runs/mvd/val --worst 10 --out runs/mvd/show
        isus show --dataset mvd --root /data/mvd --split validation --predictions runs/mvd/val --image img_0003 --out look
    """
    from isus.eval import PanopticEvaluator, PanopticPredictions, per_image_stats
    from isus.eval.run import load_pair
    from isus.eval.view import render_comparison, score_line

    if predictions is None:
        raise click.UsageError("--predictions is required")
    if worst is not None and images:
        raise click.UsageError("give --worst or --image, not both")
    if len(images) > MAX_SHOWN:
        raise click.BadParameter(f"{len(images)} images; at most {MAX_SHOWN} per run", param_hint="--image")
    ds = dataset.open()
    preds = PanopticPredictions(predictions)
    chosen = _resolve(ds, images) if images else None
    stats = per_image_stats(ds, preds, images=chosen, workers=workers or os.cpu_count() or 1, progress=True)
    scores = {}
    for i, st in stats.items():
        ev = PanopticEvaluator(ds.categories)
        ev.add_stats(st)
        scores[i] = ev.result()
    if chosen is None:
        n = worst or DEFAULT_WORST

        def key(i: int) -> tuple[bool, float, int]:
            pq = scores[i].pq
            return (not math.isfinite(pq), pq, i)  # images without any segment last

        chosen = sorted(scores, key=key)[:n]
        names = [f"{k + 1:03d}_{safe_name(ds.image_info(i).image_id)}.png" for k, i in enumerate(chosen)]
        click.echo(f"ranked {len(scores)} images of {ds.name} {ds.split} by PQ; drawing the {len(chosen)} lowest "
                   f"(--worst {n}), panels at most {max_size} px a side (--max-size)")
    else:
        names = [f"{safe_name(ds.image_info(i).image_id)}.png" for i in chosen]
        click.echo(f"drawing {len(chosen)} images of {ds.name} {ds.split}, panels at most {max_size} px a side "
                   "(--max-size)")
    if len(set(names)) != len(names):
        raise click.ClickException("two images map to the same file name: " + ", ".join(sorted(
            {n for n in names if names.count(n) > 1})))
    check_overwrite([out / n for n in [*names, "show.json"]], overwrite)
    out.mkdir(parents=True, exist_ok=True)
    if overwrite:
        _remove_earlier(out)
    from isus.progress import Progress

    bar = Progress(len(chosen), "drawing")
    records = []
    try:
        for k, (i, name) in enumerate(zip(chosen, names)):
            info = ds.image_info(i)
            gt, pred = load_pair(ds, preds, i)
            res = scores[i]
            title = f"{info.file_name} (image_id {info.image_id!r})\n{score_line(res)}"
            render_comparison(ds.load_image(i), gt, pred, ds.categories, out / name, title=title, max_size=max_size)
            st = stats[i]
            records.append({"image_id": info.image_id, "file_name": info.file_name, "png": name,
                            "pq": _num(res.pq), "pq_th": _num(res.pq_th), "pq_st": _num(res.pq_st),
                            "sq": _num(res.sq), "rq": _num(res.rq),
                            "tp": int(st.tp.sum()), "fp": int(st.fp.sum()), "fn": int(st.fn.sum())})
            bar(k + 1, len(chosen))
    finally:
        bar.close()
    from isus.eval.io import write_json

    write_json(out / "show.json", {"dataset": ds.name, "split": ds.split, "predictions": str(preds.json_path),
                                   "ranked": "worst PQ first" if not images else "as given",
                                   "images": records})
    click.echo(f"wrote {len(records)} PNGs and show.json to {out}")


def _num(v: float | None) -> float | None:
    return None if v is None or not math.isfinite(v) else float(v)


def _remove_earlier(out: Path) -> None:
    """With --overwrite: remove the PNGs an earlier run listed in show.json (their names depend on
    the images, so the new run would otherwise leave them beside its own)."""
    try:
        earlier = json.loads((out / "show.json").read_text(encoding="utf-8"))
        pngs = [r["png"] for r in earlier.get("images", [])]
    except (OSError, ValueError, AttributeError, TypeError, KeyError):
        return
    for name in pngs:
        if isinstance(name, str) and name == safe_name(Path(name).stem) + ".png" and "/" not in name:
            (out / name).unlink(missing_ok=True)
