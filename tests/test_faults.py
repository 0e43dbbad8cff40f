"""Faults that used to pass silently (or leak a foreign exception): each is now a clear error
that names the file or the argument at fault (the reliability issue, items 4-5 and "every
other fault")."""
from __future__ import annotations

import json
import shutil

import pytest
import torch
from click.testing import CliRunner

import isus
from isus.cabb import cabb_loss, cabb_targets
from isus.torch import CropSampler
from isus_cli.main import cli

# -- sampler state -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def indexes():
    return (isus.synth.simulated_index(40, seed=0),
            isus.synth.simulated_index(40, seed=1))


CFG = isus.SamplerConfig(crop_size=(256, 256))


def _saved_state(index, cfg=CFG, **kw):
    s = CropSampler(index, cfg, 100, seed=5, **kw)
    s.set_epoch(2)
    it = iter(s)
    for _ in range(7):
        next(it)
    return s.state_dict()


def test_sampler_state_from_another_config_is_refused(indexes):
    state = _saved_state(indexes[0])
    other = CropSampler(indexes[0], isus.SamplerConfig(crop_size=(512, 256), mode="cus"), 100, seed=5)
    with pytest.raises(isus.IsusError, match=r"crop_size.*mode|mode.*crop_size") as e:
        other.load_state_dict(state)
    assert isinstance(e.value, ValueError)  # still a ValueError, as before
    assert "(256, 256)" in str(e.value) and "(512, 256)" in str(e.value)


def test_sampler_state_from_another_index_is_refused(indexes):
    state = _saved_state(indexes[0])
    with pytest.raises(isus.IsusError, match="another index"):
        CropSampler(indexes[1], CFG, 100, seed=5).load_state_dict(state)


def test_sampler_state_override_is_deliberate(indexes):
    state = _saved_state(indexes[0])
    s = CropSampler(indexes[1], CFG, 100, seed=5)
    s.load_state_dict(state, strict=False)  # documented override: continue anyway
    assert s.epoch == 2 and s.state_dict()["position"] == 7


def test_sampler_state_resume_as_the_example_does(indexes):
    # examples/train_panoptic.py: a longer run, rank and position replaced
    state = _saved_state(indexes[0], rank=1, world_size=2)
    s = CropSampler(indexes[0], CFG, 400, seed=5, rank=0, world_size=2)
    s.load_state_dict({**state, "rank": 0, "position": 3})
    assert s.epoch == 2 and s.state_dict()["position"] == 3


@pytest.mark.parametrize("key", ["epoch", "seed", "position", "config", "index"])
def test_incomplete_sampler_state_names_the_missing_key(indexes, key):
    state = _saved_state(indexes[0])
    del state[key]
    with pytest.raises(ValueError, match=f"lacks '{key}'"):
        CropSampler(indexes[0], CFG, 100, seed=5).load_state_dict(state)


# -- argument errors name the argument ------------------------------------------------------------


@pytest.mark.parametrize("classes,match", [([], r"SamplerConfig\(classes=\).*non-empty"),
                                           (["car"], r"SamplerConfig\(classes=\).*'car'"),
                                           ([1.5], r"SamplerConfig\(classes=\).*1\.5")])
def test_sampler_config_classes(classes, match):
    with pytest.raises(ValueError, match=match):
        isus.SamplerConfig(classes=classes)


@pytest.mark.parametrize("epoch", [-1, 1.5, "2"])
def test_set_epoch_checks_its_argument(indexes, epoch):
    s = CropSampler(indexes[0], CFG, 100)
    with pytest.raises(ValueError, match=r"set_epoch\(epoch=\)"):
        s.set_epoch(epoch)


@pytest.fixture(scope="module")
def index_file(indexes, tmp_path_factory):
    path = tmp_path_factory.mktemp("idx") / "sim.isusidx"
    indexes[0].save(path)
    return path


@pytest.mark.parametrize("cmd", ["synth", "preview", "stats"])
def test_cli_seed_and_out(cmd, index_file, tmp_path):
    head = ["synth", "--size", "64x64", "--images", "1"] if cmd == "synth" else [cmd, str(index_file)]
    res = CliRunner().invoke(cli, head + ["--out", str(tmp_path / "o"), "--seed", "-1"])
    assert res.exit_code == 2 and "--seed" in res.output, res.output
    res = CliRunner().invoke(cli, head + ["--out", ""])
    assert res.exit_code == 2 and "--out" in res.output, res.output
    assert not any(tmp_path.iterdir())


def test_synth_refuses_a_size_that_cannot_fit_before_allocating(tmp_path):
    res = CliRunner().invoke(cli, ["synth", "--out", str(tmp_path / "o"), "--size", "100000x100000"])
    assert res.exit_code == 2 and "--size" in res.output and "pixels" in res.output, res.output
    assert not (tmp_path / "o").exists()
    with pytest.raises(ValueError, match=r"write_dataset\(size=\)"):
        isus.synth.write_dataset(tmp_path / "p", "mvd", 1, size=(100000, 100000))


@pytest.mark.parametrize("split", ["../x", "..", ".", "a/../../x"])
def test_synth_refuses_a_split_outside_out(tmp_path, split):
    out = tmp_path / "o"
    res = CliRunner().invoke(cli, ["synth", "--out", str(out), "--size", "64x64", "--images", "1", "--splits", split])
    assert res.exit_code == 2 and "--splits" in res.output and repr(split) in res.output, res.output
    assert not any(tmp_path.iterdir())
    with pytest.raises(ValueError, match=r"write_dataset\(split=\)"):
        isus.synth.write_dataset(out, "mvd", 1, size=(64, 64), split=split)


def test_write_dataset_seed():
    with pytest.raises(ValueError, match=r"write_dataset\(seed=\)"):
        isus.synth.write_dataset("/nonexistent/never", "mvd", 1, size=(64, 64), seed=-1)


# -- datasets: nothing skipped silently ------------------------------------------------------------


@pytest.fixture
def copy(synth_root, tmp_path):
    def get(layout):
        root = tmp_path / layout
        shutil.copytree(synth_root(layout), root)
        return root
    return get


# (layout, open options, glob of the images, how the annotation of an image is found)
READERS = [
    ("mvd", {}, "training/images/*.jpg", lambda root, img: root / "training/v1.2/instances" / f"{img.stem}.png"),
    ("mvd", {"source": "labels"}, "training/images/*.jpg",
     lambda root, img: root / "training/v1.2/labels" / f"{img.stem}.png"),
    ("mvd", {"version": "v2.0"}, "training/images/*.jpg", None),
    ("cityscapes", {}, "leftImg8bit/train/*/*.png",
     lambda root, img: img.parents[2].parent / "gtFine" / "train" / img.parent.name
     / img.name.replace("_leftImg8bit.png", "_gtFine_instanceIds.png")),
    ("cityscapes", {"source": "polygons"}, "leftImg8bit/train/*/*.png",
     lambda root, img: root / "gtFine/train" / img.parent.name / img.name.replace("_leftImg8bit.png", "_gtFine_polygons.json")),
    ("cityscapes", {"source": "panoptic"}, "leftImg8bit/train/*/*.png", None),
    ("idd", {}, "leftImg8bit/train/*/*.png",
     lambda root, img: root / "gtFine/train" / img.parent.name / img.name.replace("_leftImg8bit.png", "_gtFine_instancelevel3Ids.png")),
    ("coco", {}, "train2017/*.jpg", None),
]


@pytest.mark.parametrize("layout,opts,images,_", READERS)
def test_a_deleted_image_is_an_error_naming_a_file(copy, layout, opts, images, _):
    root = copy(layout)
    img = sorted(root.glob(images))[2]
    img.unlink()
    with pytest.raises(isus.DatasetError) as e:
        isus.open_dataset(layout, root, **opts)
    msg = str(e.value)
    stem = img.name.split("_leftImg8bit")[0].split(".")[0]
    assert stem in msg, msg  # the image's key or the annotation file of the missing image
    assert ("no image" in msg or "not found" in msg or "not in" in msg), msg


@pytest.mark.parametrize("layout,opts,images,ann", [r for r in READERS if r[3] is not None])
def test_a_deleted_annotation_is_an_error_at_open(copy, layout, opts, images, ann):
    root = copy(layout)
    img = sorted(root.glob(images))[1]
    path = ann(root, img)
    path.unlink()
    with pytest.raises(isus.DatasetError, match="not found|no annotation") as e:
        isus.open_dataset(layout, root, **opts)
    assert path.name in str(e.value)


@pytest.mark.parametrize("layout", ["cityscapes", "idd"])
@pytest.mark.parametrize("polygon", ["x", "xy", 5, [[0, 0], "ab", [5, 5]], [[0, 0], [1, 2, 3], [4, 4]],
                                     [[0, 0], [None, 1], [4, 4]], [[0, 0], [float("nan"), 1], [4, 4]]])
def test_malformed_polygon_names_file_and_object(copy, layout, polygon):
    root = copy(layout)
    poly = sorted((root / "gtFine" / "train").glob("*/*_polygons.json"))[0]
    data = json.loads(poly.read_text())
    k = len(data["objects"])
    data["objects"].append({"label": "car", "polygon": polygon})
    poly.write_text(json.dumps(data))
    ds = isus.open_dataset(layout, root, source="polygons")
    i = next(i for i in range(len(ds)) if ds.image_path(i).name.startswith(poly.name.split("_gtFine")[0]))
    with pytest.raises(isus.DatasetError, match=rf"objects\[{k}\]") as e:
        ds.load_panoptic(i)
    assert poly.name in str(e.value)


@pytest.mark.parametrize("content", [b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff\xd9", b"GIF89a"])
@pytest.mark.parametrize("layout", ["coco", "mvd", "cityscapes"])
def test_empty_or_undecodable_image_is_a_dataset_error(copy, layout, content):
    root = copy(layout)
    ds = isus.open_dataset(layout, root)
    path = ds.image_path(0)
    info = ds.image_info(0)
    path.write_bytes(content)
    with pytest.raises(isus.DatasetError) as e:
        ds.load_image(0)
    assert path.name in str(e.value)
    assert info.width > 0
    fresh = isus.open_dataset(layout, root)  # no size known yet: read from the header
    with pytest.raises(isus.DatasetError) as e:
        fresh.image_info(0) if layout != "coco" else fresh.load_image(0)
    assert path.name in str(e.value)


# -- CABB: non-finite geometry -------------------------------------------------------------------


def _cabb_inputs():
    pred = torch.zeros(3, 4)
    anchors = torch.tensor([[0.0, 0, 10, 10], [5, 5, 20, 20], [0, 0, 4, 8]])
    boxes = torch.tensor([[1.0, 1, 9, 10], [6, 5, 20, 18], [0, 0, 4, 8]])
    truncated = torch.tensor([[False, False, False, True], [False, False, True, False], [False] * 4])
    crop = torch.tensor([0.0, 0, 20, 10])
    return pred, anchors, boxes, truncated, crop


@pytest.mark.parametrize("arg", [1, 2, 4])
@pytest.mark.parametrize("fn", [cabb_targets, cabb_loss])
def test_cabb_non_finite_geometry_is_refused_on_cpu(fn, arg):
    args = list(_cabb_inputs())
    args[arg] = args[arg].clone()
    args[arg].view(-1, 4)[0] = float("nan")
    name = {1: "anchors", 2: "boxes", 4: "crop_boxes"}[arg]
    with pytest.raises(ValueError, match=rf"{fn.__name__}\({name}=\).*finite"):
        fn(*args)
    # check=False: no value check; the NaN reaches that box's target instead of a made-up number
    out = cabb_targets(*args, check=False)
    assert out.isnan().any()


def test_cabb_nan_prediction_still_gives_finite_targets():
    args = list(_cabb_inputs())
    args[0] = torch.full((3, 4), float("nan"))
    assert torch.isfinite(cabb_targets(*args)).all()
