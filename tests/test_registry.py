"""One home per dataset format (issue 24): each reader class declares its name, aliases, split
layout, sampler preset and cache default, and the presets, split discovery and the CLI ask the
registry. A reader registered here, in a test, must reach all of them without any other edit."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

import isus
from isus import SamplerConfig
from isus.datasets import (MapillaryVistas, PanopticDataset, SamplerPreset, SplitLayout, base, canonical_name,
                           dataset_formats, dataset_names, find_splits, reader_class, reader_options, register_dataset)
from isus_cli.main import cli

#: What the registry held before this change (the aliases were also copied in sampling/config.py,
#: the splits in datasets/base.py): the readers must still declare exactly this.
FORMATS = {
    "mvd": (("mapillary", "vistas"), (1024, 1024), 2048),
    "cityscapes": ((), (512, 512), 1024),
    "idd": ((), (512, 512), 1080),
    "coco": (("coco_panoptic",), (640, 640), 800),
}
#: Two split names per layout, as the synthetic writer names them.
SPLITS = {"mvd": ("training", "validation"), "cityscapes": ("train", "val"), "idd": ("train", "val"),
          "coco": ("train", "val")}


def invoke(*args: object):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture
def registry(monkeypatch):
    """Readers registered in the test are gone after it."""
    monkeypatch.setattr(base, "_REGISTRY", dict(base._REGISTRY))


def test_the_built_in_formats_and_their_names():
    assert dataset_formats() == list(FORMATS)  # the order the CLI lists them in
    assert dataset_names() == sorted([*FORMATS, *(a for aliases, _, _ in FORMATS.values() for a in aliases)])
    for name, (aliases, _, _) in FORMATS.items():
        cls = reader_class(name)
        assert cls.name == name and cls.aliases == aliases
        assert all(reader_class(a) is cls and reader_class(a.upper()) is cls for a in aliases)
    assert reader_class("idd") is isus.datasets.IDD and reader_class("Cityscapes") is isus.datasets.Cityscapes
    assert [f for f in dataset_formats() if reader_class(f).cache_annotations_by_default] == ["mvd"]


@pytest.mark.parametrize("name", sorted(dataset_names()))
def test_every_name_resolves_to_a_reader_whose_preset_is_the_samplers(name):
    cls = reader_class(name)
    assert canonical_name(name) == cls.name and cls.name in dataset_formats()
    preset = cls.sampler_preset
    assert preset is not None
    assert SamplerConfig.preset(name) == SamplerConfig(**preset.as_kwargs())
    _, crop, s0 = FORMATS[cls.name]
    cfg = SamplerConfig.preset(name.upper(), mode="cus")
    assert (cfg.crop_size, cfg.shortest_side, cfg.mode) == (crop, s0, "cus")
    assert (cfg.stuff_scale_range, cfg.thing_scale_range, cfg.flip) == ((0.5, 2.0), (0.25, 4.0), True)


@pytest.mark.parametrize("layout", list(SPLITS))
def test_find_splits_finds_the_splits_of_a_synthetic_dataset(layout, tmp_path):
    root = isus.synth.write_dataset(tmp_path / layout, layout, [1, 1], size=(64, 48), seed=1, split=list(SPLITS[layout]))
    for name in (layout, *reader_class(layout).aliases):
        assert find_splits(name, root) == sorted(SPLITS[layout])
        assert find_splits(name, str(root)) == sorted(SPLITS[layout])
    # each format's layout is its own: the other readers find no split here
    others = {f: find_splits(f, root) for f in dataset_formats() if f != layout and {f, layout} != {"cityscapes", "idd"}}
    assert all(v == [] for v in others.values()), others
    with pytest.raises(isus.DatasetError, match=f"has no split 'nosuch' here; the splits found are "
                                                f"{', '.join(sorted(SPLITS[layout]))} "):
        isus.open_dataset(layout, root, split="nosuch")


def test_unknown_names_raise_the_same_errors(tmp_path):
    expected = ("open_dataset(name=) expects one of cityscapes, coco, coco_panoptic, idd, mapillary, mvd, vistas; "
                "got 'kitti'")
    for lookup in (reader_class, canonical_name, reader_options, lambda n: find_splits(n, tmp_path),
                   lambda n: isus.open_dataset(n, tmp_path)):
        with pytest.raises(ValueError) as e:
            lookup("kitti")
        assert str(e.value) == expected
    with pytest.raises(ValueError) as e:
        SamplerConfig.preset("kitti")
    assert str(e.value) == "SamplerConfig.preset() expects one of ['cityscapes', 'coco', 'idd', 'mvd']; got 'kitti'"
    res = invoke("index", "build", "--dataset", "kitti", "--root", tmp_path)
    assert res.exit_code == 2
    assert ("expected one of mvd, cityscapes, idd, coco (or an alias: coco_panoptic, mapillary, vistas); "
            "got 'kitti'") in res.output


def test_a_reader_needs_a_name_of_its_own(registry):
    class Nameless(PanopticDataset):
        pass

    class Inherits(MapillaryVistas):  # and MVD's aliases with it
        name = "inherits"

    with pytest.raises(TypeError, match="Nameless needs a class attribute name"):
        register_dataset()(Nameless)
    with pytest.raises(ValueError, match="Inherits asks for 'mapillary', 'vistas', already the name of "
                                         "MapillaryVistas"):
        register_dataset()(Inherits)  # called without names, the same
    with pytest.raises(ValueError, match="'coco', already the name of CocoPanoptic"):
        register_dataset("coco")(NoPreset)
    assert "?" not in dataset_names() and "inherits" not in dataset_names() and reader_class("coco").name == "coco"
    assert register_dataset()(MapillaryVistas) is MapillaryVistas  # again: nothing changes
    assert dataset_formats() == list(FORMATS)


class Toy(MapillaryVistas):
    """MVD files under another name, with a split layout, preset and cache default of its own."""

    name = "toy"
    aliases = ("toy_alias",)
    split_layout = (SplitLayout("*/v1.2", r"^([^/]+)/v1\.2$"),)  # MVD's is */images
    sampler_preset = SamplerPreset(crop_size=(256, 256), shortest_side=300, stuff_scale_range=(0.75, 1.5))
    cache_annotations_by_default = True  # as MVD's: the CLI must ask the reader, not compare names


class NoPreset(MapillaryVistas):
    name = "nopreset"
    aliases = ()
    sampler_preset = None
    cache_annotations_by_default = False


def test_a_reader_registered_here_reaches_everything(registry, tmp_path):
    assert register_dataset(Toy) is Toy  # bare, as a decorator without arguments
    register_dataset("also_nopreset")(NoPreset)
    root = isus.synth.write_dataset(tmp_path / "toy", "mvd", [3, 1], size=(96, 64), seed=2,
                                    split=["training", "validation"])
    (root / "other" / "images").mkdir(parents=True)  # a split to MVD's layout, not to Toy's

    # the registry
    assert dataset_formats() == [*FORMATS, "toy", "nopreset"]
    assert {"toy", "toy_alias", "nopreset", "also_nopreset"} <= set(dataset_names())
    assert reader_class("TOY_ALIAS") is Toy and canonical_name("toy_alias") == "toy"
    assert reader_options("toy") == reader_options("mvd")

    # open_dataset and split discovery
    ds = isus.open_dataset("Toy_Alias", root, split="training")
    assert type(ds) is Toy and ds.name == "toy" and len(ds) == 3 and ds.open_args["name"] == "toy"
    assert find_splits("toy", root) == ["training", "validation"]
    assert find_splits("mvd", root) == ["other", "training", "validation"]
    with pytest.raises(isus.DatasetError, match="toy has no split 'nosuch' here; the splits found are training, "
                                                "validation "):
        isus.open_dataset("toy", root, split="nosuch")

    # the sampler presets
    assert SamplerConfig.preset("toy_alias") == SamplerConfig(crop_size=(256, 256), shortest_side=300,
                                                              stuff_scale_range=(0.75, 1.5))
    with pytest.raises(ValueError) as e:
        SamplerConfig.preset("also_nopreset")
    assert str(e.value) == ("SamplerConfig.preset() expects one of ['cityscapes', 'coco', 'idd', 'mvd', 'toy']; "
                            "got 'also_nopreset'")

    # the CLI: --dataset takes it, the annotation cache follows its default, --preset gives its preset
    out = tmp_path / "toy.isusidx"
    res = invoke("index", "build", "--dataset", "toy_alias", "--root", root, "--out", out, "--workers", "1")
    assert res.exit_code == 0, res.output
    index = isus.Index.load(out)
    assert index.meta["dataset"]["name"] == "toy" and index.num_images == 3
    assert out.with_name(out.name + ".cache").is_dir()
    bare = tmp_path / "nopreset.isusidx"
    res = invoke("index", "build", "--dataset", "also_nopreset", "--root", root, "--out", bare, "--workers", "1")
    assert res.exit_code == 0 and not bare.with_name(bare.name + ".cache").exists(), res.output
    res = invoke("stats", out, "--out", tmp_path / "st", "--preset", "toy", "--samples", "20")
    assert res.exit_code == 0, res.output
    settings = json.loads((tmp_path / "st" / "stats.json").read_text())["settings"]
    assert (settings["crop_size"], settings["shortest_side"], settings["stuff_scale_range"]) == ([256, 256], 300,
                                                                                               [0.75, 1.5])
    res = invoke("index", "build", "--dataset", "nope", "--root", root)
    assert res.exit_code == 2
    assert "expected one of mvd, cityscapes, idd, coco, toy, nopreset (or an alias: also_nopreset, coco_panoptic, " \
           "mapillary, toy_alias, vistas); got 'nope'" in res.output
    res = invoke("stats", out, "--out", tmp_path / "st2", "--preset", "nopreset")
    assert res.exit_code == 2 and "expected one of mvd, cityscapes, idd, coco, toy (" in res.output, res.output
    res = invoke("synth", "--dataset", "toy", "--out", tmp_path / "synth")  # a reader, not a synthetic layout
    assert res.exit_code == 2 and "expected one of mvd, cityscapes, idd, coco (" in res.output, res.output


def test_the_registry_is_restored_after_a_test():
    assert "toy" not in dataset_names() and dataset_formats() == list(FORMATS)
