"""Inference with a trained checkpoint of ``examples/train_panoptic.py`` (``isus predict``).

A checkpoint (``OUT/checkpoint.pt``) holds the model's weights and the training options
(``args``); :func:`load_predictor` reads it as tensors and plain data only
(``torch.load(weights_only=True)``: a received file runs no code), rebuilds the same model
(backbone, normalisation, ``--length-scale``, the label map of the training categories) and
runs it on whole images at the training s0, as the evaluation at the end of training does.
:func:`predict_to_files` writes what ``isus eval`` reads: COCO panoptic (``panoptic.json`` +
``panoptic/*.png``) and the scored instances as a COCO results JSON (``instances.json``).

Images are not tiled: a whole image at s0 goes through the network at once (MVD at s0 = 2048:
about 2048x2730 px). Where that does not fit the device, a smaller ``shortest_side`` trades
accuracy on small objects for memory.
"""
from __future__ import annotations

import pickle
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import cv2
import numpy as np
import torch

import isus
from examples.panoptic.data import LabelMap
from examples.panoptic.evaluate import to_detections, to_panoptic
from examples.panoptic.model import build_panoptic_fpn, panoptic_fusion
from isus.eval import Detections, PanopticPredictionWriter, write_instances

#: The file train_panoptic.py writes in its --out folder.
CHECKPOINT = "checkpoint.pt"
#: Image files that ``--image-folder`` predicts (other files are left alone).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
#: What predict_to_files writes in its folder.
OUTPUTS = ("panoptic.json", "panoptic", "instances.json")


class PredictError(Exception):
    """A one-line reason why inference cannot run (bad checkpoint, other categories, ...)."""


def read_checkpoint(path: str | Path) -> tuple[Path, dict[str, Any]]:
    """``(file, state)`` of a checkpoint of train_panoptic.py: ``path`` itself or ``path/checkpoint.pt``.

    Loaded with ``weights_only=True`` (tensors and plain data; anything else is refused before
    any of it runs). Raises :class:`PredictError` for a missing, unreadable, crafted or foreign file.
    """
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT
    if not path.is_file():
        raise PredictError(f"{path}: no checkpoint there (expected {CHECKPOINT} in the --out folder of "
                           "examples/train_panoptic.py, or the file itself)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise PredictError(f"{path} holds more than tensors and plain data (refused: loading it could run code; "
                           f"checkpoints of train_panoptic.py hold only tensors and plain data): "
                           f"{str(e).splitlines()[0]}") from None
    except Exception as e:  # truncated or not a torch file: torch's message does not name it
        raise PredictError(f"{path} is not a readable checkpoint ({type(e).__name__}: "
                           f"{str(e).splitlines()[0] if str(e) else ''})") from None
    model, args = (state.get("model"), state.get("args")) if isinstance(state, dict) else (None, None)
    if not (isinstance(model, dict) and model and all(isinstance(v, torch.Tensor) for v in model.values())
            and isinstance(args, dict) and isinstance(args.get("backbone"), str)):
        keys = sorted(state)[:8] if isinstance(state, dict) else type(state).__name__
        raise PredictError(f"{path} is not a checkpoint of examples/train_panoptic.py (found {keys}; expected "
                           "'model' weights and the training 'args')")
    return path, state


def checkpoint_categories(state: dict[str, Any]) -> list[isus.Category] | None:
    """The training categories the checkpoint records (train_panoptic.py writes them), or None."""
    cats = state.get("categories")
    if not isinstance(cats, list):
        return None
    return [isus.Category(int(c["id"]), str(c["name"]), bool(c["isthing"]), tuple(int(v) for v in c["color"]),
                          bool(c.get("evaluate", True))) for c in cats]


def training_shortest_side(args: dict[str, Any]) -> float | None:
    """The s0 the run trained and evaluated at: ``--shortest-side``, else its ``--preset``'s, else
    None (images at their own size), as ``train_panoptic.sampler_config`` decides."""
    if args.get("shortest_side"):
        return float(args["shortest_side"])
    if args.get("preset"):
        return isus.SamplerConfig.preset(args["preset"]).shortest_side
    return None


def _trained_counts(model: dict[str, torch.Tensor]) -> tuple[int | None, int | None]:
    """(thing classes, all classes) the weights were trained for, read from the heads' shapes."""
    cls = model.get("roi_heads.box_predictor.cls_score.weight")
    sem = [v for k, v in model.items() if k.startswith("semantic_head.") and k.endswith("weight") and v.dim() == 4]
    return (int(cls.shape[0]) - 1 if cls is not None else None), (int(sem[-1].shape[0]) if sem else None)


@dataclass
class Predictor:
    """A rebuilt model with its label map, ready for whole images."""

    model: torch.nn.Module
    labels: LabelMap
    categories: tuple[isus.Category, ...]
    shortest_side: float | None
    device: torch.device
    checkpoint: Path
    args: dict[str, Any]

    def __call__(self, images: Sequence[np.ndarray]) -> list[tuple[isus.Panoptic, Detections]]:
        """Predictions of a batch of (H, W, 3) uint8 RGB images, at each image's own size."""
        resized = [_to_s0(img, self.shortest_side) for img in images]
        out: list[tuple[isus.Panoptic, Detections] | None] = [None] * len(images)
        # torchvision's transform rescales a batch to one min_size: images of one shortest side go together
        groups: dict[int, list[int]] = {}
        for k, (x, _) in enumerate(resized):
            groups.setdefault(min(x.shape[:2]), []).append(k)
        for side, members in groups.items():
            results = self._forward([resized[k][0] for k in members], side)
            for k, result in zip(members, results):
                out[k] = self._postprocess(result, images[k].shape[:2], resized[k][1])
        return [o for o in out if o is not None]

    @torch.no_grad()
    def _forward(self, images: list[np.ndarray], side: int) -> list[dict[str, torch.Tensor]]:
        xs = [torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).to(self.device).float().div_(255)
              for img in images]
        transform = self.model.transform
        saved = transform.min_size, transform.max_size
        # the images are at s0 already: keep the transform from rescaling them (scale 1 for each)
        transform.min_size, transform.max_size = (side,), max(max(x.shape[-2:]) for x in xs)
        try:
            return self.model(xs)
        finally:
            transform.min_size, transform.max_size = saved

    def _postprocess(self, result: dict[str, torch.Tensor], size: tuple[int, int],
                     scaled: bool) -> tuple[isus.Panoptic, Detections]:
        h, w = size
        cat, inst = panoptic_fusion(result, self.labels.thing_train_ids, self.labels.stuff_train_ids)
        cat, inst = cat.cpu().numpy().astype(np.int32), inst.cpu().numpy().astype(np.int32)
        if scaled:
            cat = cv2.resize(cat, (w, h), interpolation=cv2.INTER_NEAREST_EXACT)
            inst = cv2.resize(inst, (w, h), interpolation=cv2.INTER_NEAREST_EXACT)
        return (to_panoptic(cat, inst, self.labels, self.categories),
                to_detections(result, self.labels, self.categories, (h, w)))


def _to_s0(img: np.ndarray, shortest_side: float | None) -> tuple[np.ndarray, bool]:
    """The image rescaled so that its shortest side is ``shortest_side`` (as evaluate.predict does)."""
    h, w = img.shape[:2]
    s = shortest_side / min(h, w) if shortest_side else 1.0
    if s == 1.0:
        return img, False
    size = (round(w * s), round(h * s))
    return cv2.resize(img, size, interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR), True


def load_predictor(checkpoint: str | Path, categories: Sequence[isus.Category] | None = None, *,
                   device: str | torch.device | None = None, shortest_side: float | None = None) -> Predictor:
    """Rebuild the model of a train_panoptic.py checkpoint on ``device`` (default: cuda when available).

    ``categories``: those of the dataset to predict on (default: the ones the checkpoint
    records). They must be the training categories: their count, their thing count and (when
    the checkpoint records them) their ids are checked. ``shortest_side``: s0 (default: the
    training run's, :func:`training_shortest_side`).
    """
    path, state = read_checkpoint(checkpoint)
    args = state["args"]
    recorded = checkpoint_categories(state)
    if categories is None:
        if recorded is None:
            raise PredictError(f"{path} does not record its categories (written before they were saved): "
                               "predict on a dataset (--dataset/--root) with the training categories")
        categories = recorded
    categories = tuple(categories)
    if recorded is not None and [(c.id, c.isthing) for c in recorded] != [(c.id, c.isthing) for c in categories]:
        raise PredictError(f"{path} was trained on other categories ({len(recorded)}: ids "
                           f"{[c.id for c in recorded][:6]}...) than the dataset's ({len(categories)}: ids "
                           f"{[c.id for c in categories][:6]}...)")
    labels = LabelMap(len(categories), tuple(k for k, c in enumerate(categories) if c.isthing),
                      tuple(k for k, c in enumerate(categories) if not c.isthing))
    things, classes = _trained_counts(state["model"])
    if (things, classes) != (len(labels.thing_train_ids), labels.num_classes) and None not in (things, classes):
        raise PredictError(f"{path} was trained on {classes} categories ({things} thing), the dataset has "
                           f"{labels.num_classes} ({len(labels.thing_train_ids)} thing): predict on the dataset "
                           f"it was trained on ({args.get('dataset')} at {args.get('root')})")
    if not labels.thing_train_ids:
        raise PredictError("the categories have no thing class: the example's model needs one")
    dev = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise PredictError(f"--device {device}: CUDA is not available here (use --device cpu)")
    try:
        model = build_panoptic_fpn(
            len(labels.thing_train_ids), labels.num_classes, backbone=args["backbone"],
            norm="sync" if args.get("sync_bn") else (args.get("norm") or "group"),
            # the box loss only shapes training; args parsed but not resolved by the trainer hold None
            box_loss=args.get("box_loss") or "cabb", length_scale=float(args.get("length_scale", 1.0)),
            rpn_pre_nms_top_n_test=int(args.get("rpn_pre_nms_top_n_test", 1000)),
            rpn_post_nms_top_n_test=int(args.get("rpn_post_nms_top_n_test", 1000)))
        model.load_state_dict(state["model"], strict=True)
    except (RuntimeError, ValueError, KeyError) as e:
        lines = [x.strip() for x in str(e).splitlines() if x.strip()]
        raise PredictError(f"{path}: its weights do not fit the model its args describe "
                           f"({lines[1] if len(lines) > 1 else lines[0] if lines else type(e).__name__})") from None
    model.to(dev).eval()
    s0 = shortest_side if shortest_side is not None else training_shortest_side(args)
    return Predictor(model, labels, categories, s0, dev, path, args)


@dataclass(frozen=True)
class Item:
    """One image to predict: its id, the name of its prediction PNG, and how to decode it."""

    image_id: Any
    file_name: str
    load: Callable[[], np.ndarray]


def dataset_items(ds: isus.PanopticDataset, max_images: int | None = None) -> list[Item]:
    """The images of a split, in order (up to ``max_images``)."""
    n = len(ds) if max_images is None else min(len(ds), max_images)
    return [Item(ds.image_info(i).image_id, f"{ds.image_info(i).image_id}.png", _loader(ds, i)) for i in range(n)]


def _loader(ds: isus.PanopticDataset, i: int) -> Callable[[], np.ndarray]:
    return lambda: ds.load_image(i)


def folder_items(folder: str | Path, max_images: int | None = None) -> list[Item]:
    """The images (``IMAGE_SUFFIXES``) of ``folder``, sorted by name; the image id is the file's stem."""
    folder = Path(folder)
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise PredictError(f"{folder}: no image files ({', '.join(IMAGE_SUFFIXES)})")
    stems: dict[str, Path] = {}
    for p in files:
        if p.stem in stems:
            raise PredictError(f"{folder}: {stems[p.stem].name} and {p.name} would share the image id {p.stem!r}")
        stems[p.stem] = p
    files = files[:max_images] if max_images is not None else files
    return [Item(p.stem, f"{p.stem}.png", _file_loader(p)) for p in files]


def _file_loader(path: Path) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        from PIL import Image

        try:
            with Image.open(path) as im:  # the header first: refuse what exceeds the pixel budget before decoding
                if im.width * im.height > isus.max_image_pixels():
                    raise PredictError(f"{path}: {im.width}x{im.height} exceeds the pixel budget of "
                                       f"{isus.max_image_pixels()} (isus.set_max_image_pixels / ISUS_MAX_IMAGE_PIXELS)")
                return np.asarray(im.convert("RGB"))
        except PredictError:
            raise
        except Exception as e:  # not an image, truncated, Pillow's decompression-bomb limit
            raise PredictError(f"{path}: not a readable image ({type(e).__name__}: {e})") from None

    return load


def _batches(items: Sequence[Item], batch_size: int) -> Iterator[list[Item]]:
    for k in range(0, len(items), batch_size):
        yield list(items[k:k + batch_size])


def predict_to_files(predictor: Predictor, items: Sequence[Item], out: str | Path, *, batch_size: int = 1,
                     progress: Callable[[int, int], None] | None = None) -> list[Path]:
    """Predict every item and write ``out/panoptic.json``, ``out/panoptic/*.png`` (COCO panoptic,
    the dataset's category ids) and ``out/instances.json`` (COCO results: box, score, RLE mask of
    every scored instance before fusion). The next batch is decoded while the model runs."""
    out = Path(out)
    writer = PanopticPredictionWriter(out)
    dets: dict[Any, Detections] = {}
    done = 0
    with ThreadPoolExecutor(1, thread_name_prefix="isus-predict-decode") as pool:
        batches: Iterable[list[Item]] = _batches(items, batch_size)
        it = iter(batches)
        nxt = next(it, None)
        pending = pool.submit(lambda b: [x.load() for x in b], nxt) if nxt is not None else None
        while nxt is not None and pending is not None:
            batch, images = nxt, pending.result()
            nxt = next(it, None)
            pending = pool.submit(lambda b: [x.load() for x in b], nxt) if nxt is not None else None
            for item, (pan, det) in zip(batch, predictor(images)):
                writer.add(item.image_id, pan, file_name=item.file_name)
                dets[item.image_id] = det
            done += len(batch)
            if progress is not None:
                progress(done, len(items))
    written = [writer.close(predictor.categories), out / "panoptic", write_instances(out / "instances.json", dets)]
    return written
