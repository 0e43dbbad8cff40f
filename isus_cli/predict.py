"""``isus predict``: a trained checkpoint of the example on whole images, written in the files
``isus eval`` and ``isus show`` read. The model lives in ``examples/`` (torchvision, the
``examples`` extra): this module only parses options and imports the example's code lazily."""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

import click

from isus_cli._options import DatasetArgs, check_overwrite, dataset_options, out_dir_option, overwrite_option

#: The source checkout's root: ``examples/`` is not installed with the package.
REPO = Path(__file__).resolve().parents[1]


def import_predict(command: str = "isus predict"):
    """``examples.panoptic.predict``, or a one-line error saying what is missing (a source
    checkout with ``examples/``, or torchvision)."""
    if not (REPO / "examples" / "panoptic" / "predict.py").is_file():
        raise click.ClickException(f"{command} runs the model of examples/train_panoptic.py, which is not installed "
                                   f"with the package: run it from a source checkout of isus ({REPO} has no "
                                   "examples/panoptic/predict.py)")
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from examples.panoptic.cli import require_torchvision

    try:
        require_torchvision(command)
    except SystemExit as e:
        raise click.ClickException(str(e)) from None
    from examples.panoptic import predict

    return predict


def parse_device(ctx, param, value: str | None) -> str | None:
    if value is None:
        return None
    import torch

    try:
        dev = torch.device(value)
    except (RuntimeError, ValueError):
        raise click.BadParameter(f"expected cpu, cuda or cuda:N; got {value!r}") from None
    if dev.type not in ("cpu", "cuda"):
        raise click.BadParameter(f"expected cpu, cuda or cuda:N; got {value!r}")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise click.BadParameter(f"{value}: CUDA is not available here (use --device cpu)")
    return value


@click.command()
@click.argument("checkpoint", type=click.Path(exists=True, path_type=Path))
@dataset_options(required=False)
@click.option("--image-folder", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="Predict the images (.jpg, .jpeg, .png) of this folder instead of a dataset split; image ids "
                   "are the file names without their suffix.")
@out_dir_option("Output directory (panoptic.json, panoptic/*.png, instances.json).", default=Path("predictions"))
@click.option("--device", callback=parse_device, default=None,
              help="cpu, cuda or cuda:N (default: cuda when available).")
@click.option("--batch-size", type=click.IntRange(min=1), default=1, show_default=True,
              help="Images per forward pass (images of one shortest side are batched; more needs more memory).")
@click.option("--shortest-side", type=click.FloatRange(min=16), default=None,
              help="s0: images are rescaled so that their shortest side is this (default: the training run's, "
                   "from its --shortest-side or --preset; none: the image's own size).")
@click.option("--max-images", type=click.IntRange(min=1), default=None,
              help="Predict only the first N images (isus eval then needs --only-predicted).")
@overwrite_option
def predict(checkpoint: Path, dataset: DatasetArgs | None, image_folder: Path | None, out: Path, device: str | None,
            batch_size: int, shortest_side: float | None, max_images: int | None, overwrite: bool) -> None:
    """Run a checkpoint of examples/train_panoptic.py on whole images and write its predictions.

    CHECKPOINT is the training run's --out folder or its checkpoint.pt (loaded as tensors and
    plain data only). Images of a dataset split (--dataset/--root/--split) or of --image-folder go
    through the model at the training s0, without tiling; panoptic fusion as in the training's
    evaluation. Writes COCO panoptic predictions (panoptic.json, panoptic/*.png) and the scored
    instances as COCO results (instances.json), the files isus eval and isus show read. Needs
    torchvision (pip install -e ".[examples]").

    Example:

    \b
        isus predict runs/mvd --dataset mvd --root /data/mvd --split validation --out runs/mvd/val
        isus predict runs/mvd/checkpoint.pt --image-folder photos/ --device cuda --batch-size 4 --out photos-pred
    """
    if (dataset is None) == (image_folder is None):
        raise click.UsageError("give the images to predict: --dataset/--root/--split or --image-folder (one of them)")
    check_overwrite([out / n for n in ("panoptic.json", "panoptic", "instances.json")], overwrite)
    pred = import_predict()
    try:
        if dataset is not None:
            ds = dataset.open()
            predictor = pred.load_predictor(checkpoint, ds.categories, device=device, shortest_side=shortest_side)
            items, what = pred.dataset_items(ds, max_images), f"{ds.name} {ds.split}"
        else:
            predictor = pred.load_predictor(checkpoint, device=device, shortest_side=shortest_side)
            items, what = pred.folder_items(image_folder, max_images), str(image_folder)
    except pred.PredictError as e:
        raise click.ClickException(str(e)) from None
    s0 = f"shortest side {predictor.shortest_side:g}" if predictor.shortest_side else "their own size"
    click.echo(f"predicting {len(items)} images of {what} with {predictor.checkpoint} "
               f"({predictor.args.get('backbone')}, {len(predictor.categories)} categories) on {predictor.device}, "
               f"whole images at {s0}, {batch_size} per batch")
    if overwrite and (out / "panoptic").is_dir():
        shutil.rmtree(out / "panoptic")  # an earlier run's PNGs of other images would stay beside the new JSON
    from isus.progress import Progress

    bar = Progress(len(items), "predicting")
    try:
        written = pred.predict_to_files(predictor, items, out, batch_size=batch_size, progress=bar)
    except pred.PredictError as e:
        raise click.ClickException(str(e)) from None
    finally:
        bar.close()
    click.echo(f"wrote {', '.join(str(p) for p in written)}")
    if dataset is not None:
        only = " --only-predicted" if len(items) < len(ds) else ""
        click.echo(f"score them: isus eval with the same dataset options and --predictions {out / 'panoptic.json'} "
                   f"--instances {out / 'instances.json'}{only}; look at them: isus show")
