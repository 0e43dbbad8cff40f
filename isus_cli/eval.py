"""``isus eval``: the paper's metrics for predictions in COCO formats, and runs compared in one plot."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import click

import isus
from isus.fsio import naming
from isus_cli._options import (DatasetArgs, check_overwrite, dataset_options, out_dir_option, overwrite_option,
                               predictions_option, workers_option)


def parse_percentiles(ctx, param, value: str) -> tuple[float, ...]:
    try:
        vals = tuple(float(v) for v in value.split(","))
    except ValueError:
        raise click.BadParameter(f"expected comma-separated numbers such as 0,25,50,75,95,100; got {value!r}") from None
    if len(vals) < 2 or not all(math.isfinite(v) for v in vals) or any(b <= a for a, b in zip(vals, vals[1:])) \
            or vals[0] < 0 or vals[-1] > 100:
        raise click.BadParameter(f"expected at least two increasing percentiles within 0..100; got {value!r}")
    return vals


def parse_size_edges(ctx, param, value: str | None) -> tuple[float, ...] | None:
    if value is None:
        return None
    try:
        vals = tuple(float(v) for v in value.split(","))
    except ValueError:
        raise click.BadParameter(f"expected comma-separated areas in pixels such as 0,1024,9216,1e10; got {value!r}") \
            from None
    if len(vals) < 2 or not all(math.isfinite(v) and v >= 0 for v in vals) or any(b <= a for a, b in zip(vals, vals[1:])):
        raise click.BadParameter(f"expected at least two increasing finite areas >= 0 (pixels); got {value!r}")
    return vals


#: ``--size-edges``: size buckets with fixed edges in pixels (instead of percentiles of the evaluated set).
size_edges_option = click.option(
    "--size-edges", "size_edges", callback=parse_size_edges, default=None, metavar="A0,A1,...",
    help="Size-bucket edges as areas in pixels, e.g. 0,1024,9216,1e10 (COCO's small/medium/large), instead "
         "of percentiles (e.g. the validation set's edges when evaluating a subset).")


def parse_ranges(ctx, param, values: tuple[str, ...]) -> dict[str, tuple[float, float]]:
    """``NAME=LO:HI`` (repeatable; HI may be ``inf``) -> ``{name: (lo, hi)}``."""
    out: dict[str, tuple[float, float]] = {}
    for value in values:
        name, eq, rng = value.partition("=")
        lo, colon, hi = rng.partition(":")
        try:
            pair = (float(lo), float(hi))
        except ValueError:
            pair = None
        if not (eq and colon and name.strip()) or pair is None:
            raise click.BadParameter(f"expected NAME=LO:HI in pixels, such as large=16384:inf; got {value!r}")
        if name in out:
            raise click.BadParameter(f"range {name!r} is given twice")
        out[name] = pair
    from isus.eval.extent import check_ranges

    try:
        check_ranges(out, "--range")
    except ValueError as e:
        raise click.BadParameter(str(e)) from None
    return out


@click.command("eval")
@click.argument("runs", nargs=-1, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@dataset_options(required=False)
@predictions_option
@click.option("--instances", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="COCO results JSON of scored instances, for box/mask AP by size.")
@out_dir_option("Output directory (eval.json, eval_by_size.png; with --compare compare.json, compare_by_size.png).",
                default=Path("eval"))
@workers_option
@click.option("--percentiles", callback=parse_percentiles, default="0,25,50,75,95,100", show_default=True,
              help="Size-bucket edges as percentiles of the GT instance areas.")
@size_edges_option
@click.option("--max-dets", type=click.IntRange(min=1), default=100, show_default=True,
              help="Detections per image that AP considers.")
@click.option("--range", "ranges", multiple=True, callback=parse_ranges, metavar="NAME=LO:HI",
              help="Extra named range of GT instance area [LO, HI) in pixels (HI may be inf), with box/mask "
                   "AP and the box extent of matched detections; repeatable.")
@click.option("--only-predicted", is_flag=True,
              help="Evaluate only the ground-truth images that have a prediction (default: every image needs one).")
@click.option("--compare", is_flag=True, help="Compare the eval.json files given as arguments instead.")
@click.option("--labels", default=None, help="With --compare: comma-separated run labels (default: folder names).")
@click.option("--allow-mismatch", is_flag=True,
              help="With --compare: tabulate runs whose dataset, split, evaluated images or bucket edges differ "
                   "(listed as notes; never runs with other categories).")
@overwrite_option
def eval_(runs, dataset: DatasetArgs | None, predictions, instances, out, workers, percentiles, size_edges,
          max_dets, ranges, only_predicted, compare, labels, allow_mismatch, overwrite) -> None:
    """Evaluate panoptic predictions at all scales: PQ, SQ, RQ, PQ†, PC, mIoU, PQ and box/mask AP by size.

    Predictions are COCO panoptic (JSON + RGB PNGs, as panopticapi and detectron2 write them);
    --instances is a COCO results JSON. Prints the Table-1 row, PQ/SQ/RQ/PC and AP per size bucket
    (percent; buckets from --percentiles of the GT instance areas, or --size-edges in pixels), and
    per --range its AP and the median width ratio and IoU of the matched boxes; writes eval.json
    (fractions) and eval_by_size.png (the paper's Fig. 5, with a PQ panel).

    Example:

    --compare refuses runs evaluated on other data (dataset, split, images), other categories or
    other size buckets, listing the differences; --allow-mismatch tabulates them anyway (not with
    other categories).

    \b
        isus eval --dataset mvd --root /data/mvd --split validation --predictions preds/ --instances dets.json --out ev
        isus eval --dataset mvd --root /data/mvd --split validation --predictions preds/ --instances dets.json --range large=16384:inf --out ev
        isus eval --dataset mvd --root /data/mvd --split validation --predictions preds/ --size-edges 0,1024,9216,1e10 --out ev
        isus eval --compare crop/eval.json crop_cabb_isus/eval.json --out cmp
    """
    from isus.eval.plots import (format_buckets, format_by_size, format_compare, format_ranges, format_row,
                                 plot_by_size)

    names_out = ("compare.json", "compare_by_size.png") if compare else ("eval.json", "eval_by_size.png")
    check_overwrite([out / n for n in names_out], overwrite)
    out.mkdir(parents=True, exist_ok=True)
    if compare:
        if len(runs) < 1:
            raise click.UsageError("--compare needs one or more eval.json files")
        given = [flag for flag, value in (("--dataset", dataset), ("--predictions", predictions),
                                          ("--instances", instances), ("--range", ranges),
                                          ("--size-edges", size_edges),
                                          ("--only-predicted", only_predicted or None)) if value]
        if given:
            raise click.UsageError(f"{', '.join(given)} cannot go with --compare (it compares finished eval.json "
                                   "files; evaluate each run first)")
        loaded = [_load_result(p) for p in runs]
        results = [r for r, _ in loaded]
        names = labels.split(",") if labels else [p.parent.name or p.stem for p in runs]
        if len(names) != len(results):
            raise click.BadParameter(f"{len(names)} labels for {len(results)} runs", param_hint="--labels")
        from isus.eval.compare import check_comparable

        try:
            cmp = check_comparable([(str(p), d) for p, (_, d) in zip(runs, loaded)], allow_mismatch)
        except isus.IsusError as e:
            raise click.ClickException(str(e)) from None
        for note in (*cmp.mismatches, *cmp.notes):
            click.echo(f"note: {note}")
        click.echo(format_compare(results, names, by_size=cmp.same_buckets))
        written = [out / "compare.json"]
        _write_json(written[0], {lab: r.to_dict() for lab, r in zip(names, results)})
        if not cmp.same_buckets:
            click.echo("(no AP by size or PQ by size table or plot: the runs' size-bucket edges differ)")
        elif all(r.buckets for r in results) or all(r.by_size for r in results):
            if not all(r.buckets for r in results):
                click.echo("(no AP by size panels: some runs were evaluated without --instances)")
            with naming(out / "compare_by_size.png"):
                written.append(plot_by_size(results, names, out / "compare_by_size.png"))
        else:
            click.echo("(no AP by size plot: some runs were evaluated without --instances)")
        click.echo(f"wrote {', '.join(str(p) for p in written)}")
        return
    if runs:
        raise click.UsageError(f"unexpected arguments {[str(r) for r in runs]} (eval.json files go with --compare)")
    for flag, value in (("--dataset", dataset), ("--predictions", predictions)):
        if value is None:
            raise click.UsageError(f"{flag} is required (or use --compare)")
    if size_edges is not None and click.get_current_context().get_parameter_source("percentiles") \
            is not click.core.ParameterSource.DEFAULT:
        raise click.UsageError("--percentiles and --size-edges both give the size buckets; pass one")
    ds = dataset.open()
    from isus.eval.run import evaluate_dataset

    res = evaluate_dataset(ds, predictions, instances, workers=workers or os.cpu_count() or 1,
                           percentiles=percentiles, edges=size_edges, max_dets=max_dets, ranges=ranges,
                           only_predicted=only_predicted, progress=True)
    part = f" (of {len(ds)}, --only-predicted)" if res.images < len(ds) else ""
    click.echo(f"{ds.name} {ds.split}: {res.images} images{part}, {len(ds.categories)} categories (percent)")
    click.echo(format_row(res, "this run"))
    click.echo("")
    click.echo(format_by_size(res))
    click.echo("")
    click.echo(format_buckets(res))
    if res.ranges:
        click.echo("")
        click.echo(format_ranges(res))
    written = [out / "eval.json"]
    _write_json(written[0], res.to_dict())
    if res.buckets or res.by_size:
        with naming(out / "eval_by_size.png"):
            written.append(plot_by_size([res], [predictions.name], out / "eval_by_size.png"))
    click.echo(f"wrote {', '.join(str(p) for p in written)}")


def _load_result(path: Path):
    """The EvalResult of an eval.json and its raw dict (the dataset identity, a run's own keys)."""
    from isus.eval import EvalResult

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise click.ClickException(f"{path}: not a readable eval.json ({e})") from None
    try:
        return EvalResult.from_dict(data, source=str(path)), data
    except isus.IsusError as e:
        raise click.ClickException(str(e)) from None
    except TypeError as e:
        raise click.ClickException(f"{path}: {e}") from None


def _write_json(path: Path, data) -> None:
    from isus.eval.io import write_json

    write_json(path, data)
