"""Several splits in one synthetic dataset root, in every layout, and the scale-study preset."""
from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

import isus
from isus.synth import SYNTH_CLASSES
from isus_cli.main import cli

SPLITS = {"mvd": ("training", "validation"), "cityscapes": ("train", "val"), "idd": ("train", "val"),
          "coco": ("train", "val")}


def _same_segments(ds, i, root):
    """The loaded panoptic map is the scene's, segment for segment."""
    pan = ds.load_panoptic(i)
    scene = isus.synth.scene_of(root, ds.image_info(i).image_id, split=ds.split)
    pairs = np.unique(np.stack([pan.ids.ravel(), scene.ids.ravel()]), axis=1)
    assert len(np.unique(pairs[0])) == len(np.unique(pairs[1])) == pairs.shape[1]
    assert ((pairs[0] == 0) == (pairs[1] == 0)).all()
    return scene


@pytest.mark.parametrize("layout", isus.synth.LAYOUTS)
def test_two_splits_in_one_call_then_a_third_added(layout, tmp_path):
    root = tmp_path / layout
    train, val = SPLITS[layout]
    isus.synth.write_dataset(root, layout, [3, 2], size=(96, 64), seed=5, split=[train, val])
    tr, va = (isus.open_dataset(layout, root, split=s) for s in (train, val))
    assert (len(tr), len(va)) == (3, 2)
    ids_tr = {tr.image_info(i).image_id for i in range(3)}
    ids_va = {va.image_info(i).image_id for i in range(2)}
    assert not ids_tr & ids_va
    for ds in (tr, va):
        for i in range(len(ds)):
            _same_segments(ds, i, root)
    # disjoint scenes of one generator: the validation images are scenes 3 and 4 of the seed
    man = isus.synth.read_manifest(root)
    assert [man["splits"][s]["first_index"] for s in (train, val)] == [0, 3] and man["num_images"] == 5
    for i in range(2):
        k = 3 + man["splits"][val]["image_ids"].index(va.image_info(i).image_id)
        scene = isus.synth.make_scene(5, k, 64, 96, integer_coords=layout == "cityscapes")
        assert ((va.load_panoptic(i).ids == 0) == (scene.ids == 0)).all()
    # a later call adds a split; settings must match and a split cannot be written twice
    isus.synth.write_dataset(root, layout, 1, size=(96, 64), seed=5, split="test")
    te = isus.open_dataset(layout, root, split="test")
    assert len(te) == 1 and isus.synth.read_manifest(root)["splits"]["test"]["first_index"] == 5
    _same_segments(te, 0, root)
    assert len(isus.open_dataset(layout, root, split=train)) == 3  # untouched
    with pytest.raises(FileExistsError, match="already holds the split"):
        isus.synth.write_dataset(root, layout, 1, size=(96, 64), seed=5, split=val)
    with pytest.raises(FileExistsError, match="other settings"):
        isus.synth.write_dataset(root, layout, 1, size=(96, 64), seed=6, split="extra")


def test_cli_splits_and_bad_counts(tmp_path):
    out = tmp_path / "mvd"
    res = CliRunner().invoke(cli, ["synth", "--out", str(out), "--splits", "training,validation", "--images", "2,1",
                                   "--size", "96x64"])
    assert res.exit_code == 0, res.output
    assert "wrote 2 images of split 'training'" in res.output and "wrote 1 images of split 'validation'" in res.output
    res = CliRunner().invoke(cli, ["synth", "--out", str(tmp_path / "x"), "--splits", "a,b", "--images", "2"])
    assert res.exit_code == 2 and "one number of images per split" in res.output
    res = CliRunner().invoke(cli, ["synth", "--out", str(tmp_path / "x"), "--images", "2,x"])
    assert res.exit_code == 2 and "200,50" in res.output
    res = CliRunner().invoke(cli, ["synth", "--out", str(out), "--splits", "validation", "--images", "1",
                                   "--size", "96x64"])
    assert res.exit_code == 1 and "already holds the split 'validation'" in res.output


def test_old_single_split_manifest_still_reads(tmp_path):
    import json

    root = isus.synth.write_dataset(tmp_path / "c", "coco", 2, size=(64, 48), seed=1)
    man = json.loads((root / isus.synth.MANIFEST).read_text())
    sp = man.pop("splits")["train"]
    man.pop("preset")
    old = {**man, "split": "train", "num_images": 2, "image_ids": sp["image_ids"]}
    (root / isus.synth.MANIFEST).write_text(json.dumps(old))
    ds = isus.open_dataset("coco", root)
    _same_segments(ds, 1, root)


def test_scale_study_preset_has_many_objects_larger_than_the_crop():
    """The preset's contract (docs/evidence.md): >= 10 % of thing instances larger than a crop of
    half the image height, sizes from a few pixels to more than the image height."""
    h, w = 240, 320
    crop = h // 2
    sides, areas = [], []
    for k in range(12):
        scene = isus.synth.make_scene(0, k, h, w, preset="scale-study")
        for sid, (c, crowd) in scene.segments.items():
            if SYNTH_CLASSES[c].isthing and not crowd:
                ys, xs = np.nonzero(scene.ids == sid)
                sides.append(max(xs.max() - xs.min() + 1, ys.max() - ys.min() + 1))
                areas.append(len(ys))
    sides, areas = np.array(sides), np.array(areas)
    assert len(sides) >= 150  # every image has things
    assert (sides > crop).mean() >= 0.10
    assert areas.min() <= 36 and sides.max() >= h
    with pytest.raises(ValueError, match="preset"):
        isus.synth.make_scene(0, 0, h, w, preset="huge")
