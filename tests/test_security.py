"""Crafted or careless inputs (issue 22, the data side): names from files stay inside their root,
only regular files are opened, resources are bounded, crafted index files are refused, and a cache
truncated under a live reader gives an error instead of a signal."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import isus
from isus.index.store import IndexFileError


def _edit_json(path: Path, fn) -> None:
    data = json.loads(path.read_text())
    fn(data)
    path.write_text(json.dumps(data))


@pytest.fixture
def coco(synth_root, tmp_path):
    root = tmp_path / "coco"
    shutil.copytree(synth_root("coco"), root)
    return root


def _copy(synth_root, tmp_path, layout: str) -> Path:
    root = tmp_path / layout
    shutil.copytree(synth_root(layout), root)
    return root


# -- 1. every path from a file stays inside its root ---------------------------------------------
BAD_NAMES = ["../outside.jpg", "sub/../../outside.jpg", "/etc/passwd", "", "a\0b.jpg"]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_coco_image_file_name_must_stay_inside_the_root(coco, name):
    ann = coco / "annotations" / "panoptic_train2017.json"
    (coco / "outside.jpg").write_bytes((coco / "train2017").iterdir().__next__().read_bytes())
    _edit_json(ann, lambda d: d["images"][1].__setitem__("file_name", name))
    with pytest.raises(isus.DatasetError) as e:
        isus.open_dataset("coco", coco)
    msg = str(e.value)
    assert str(ann) in msg and "images[1]" in msg and "relative" in msg


@pytest.mark.parametrize("name", BAD_NAMES)
def test_coco_panoptic_file_name_must_stay_inside_the_root(coco, name):
    ann = coco / "annotations" / "panoptic_train2017.json"
    _edit_json(ann, lambda d: d["annotations"][2].__setitem__("file_name", name))
    with pytest.raises(isus.DatasetError) as e:
        isus.open_dataset("coco", coco)
    msg = str(e.value)
    assert str(ann) in msg and "annotations[2]" in msg and "relative" in msg


@pytest.mark.parametrize("layout,json_rel,kwargs", [
    ("cityscapes", "gtFine/cityscapes_panoptic_train.json", {"source": "panoptic"}),
    ("idd", "gtFine/train_panoptic.json", {"source": "panoptic"}),
    ("mvd", "training/v2.0/panoptic/panoptic_2020.json", {"source": "panoptic", "version": "v2.0"}),
])
@pytest.mark.parametrize("name", ["../../x.png", "/tmp/x.png"])
def test_panoptic_json_file_names_must_stay_inside_the_root(synth_root, tmp_path, layout, json_rel, kwargs, name):
    root = _copy(synth_root, tmp_path, layout)
    pj = root / json_rel
    assert pj.is_file(), sorted(p.relative_to(root).as_posix() for p in root.rglob("*.json"))[:10]
    _edit_json(pj, lambda d: d["annotations"][0].__setitem__("file_name", name))
    with pytest.raises(isus.DatasetError) as e:
        isus.open_dataset(layout, root, **kwargs)
    assert str(pj) in str(e.value) and "annotations[0]" in str(e.value) and "relative" in str(e.value)


def test_symlinked_folders_inside_the_root_stay_allowed(coco, tmp_path):
    """Datasets are often symlinked: a name through a symlinked folder is accepted (the names are
    checked, not the resolved paths)."""
    elsewhere = tmp_path / "elsewhere"
    shutil.move(str(coco / "train2017"), str(elsewhere))
    (coco / "train2017").symlink_to(elsewhere)
    (elsewhere / "sub").mkdir()
    ann = coco / "annotations" / "panoptic_train2017.json"
    data = json.loads(ann.read_text())
    first = data["images"][0]["file_name"]
    (coco / "linked").symlink_to(elsewhere)
    shutil.move(str(elsewhere / first), str(elsewhere / "sub" / first))
    data["images"][0]["file_name"] = f"sub/{first}"
    ann.write_text(json.dumps(data))
    ds = isus.open_dataset("coco", coco)
    assert ds.load_image(0).shape[:2] == (ds.image_info(0).height, ds.image_info(0).width)


# -- 2. only regular files are opened -------------------------------------------------------------
def _run(code: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter. The timeout is only a safety net so that a regression
    (a blocking open) fails instead of hanging the suite; the tests assert on the error."""
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "PYTHONWARNINGS": "error"})


def _cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return _run(f"import sys; sys.argv = ['isus', *{list(args)!r}]\nfrom isus_cli.main import cli\ncli()", timeout)


def test_fifos_and_directories_are_refused_not_waited_on(coco, tmp_path):
    """An image, an annotation PNG, a JSON, an index file or a cache entry that is a FIFO, a device
    or a directory gives an error naming it (opening a FIFO for reading would block forever)."""
    index_path = tmp_path / "c.isusidx"
    isus.build_index(isus.open_dataset("coco", coco), workers=1, cache_dir=tmp_path / "c.cache").save(index_path)
    img = sorted((coco / "train2017").iterdir())[1]
    img.unlink()
    os.mkfifo(img)
    png = sorted((coco / "annotations" / "panoptic_train2017").iterdir())[2]
    png.unlink()
    os.mkfifo(png)
    fifo_index = tmp_path / "fifo.isusidx"
    os.mkfifo(fifo_index)
    entry = isus.Index.load(index_path).cache_path(0)
    entry.unlink()
    os.mkfifo(entry)
    (tmp_path / "dir.json").mkdir()
    r = _run(f"""
        import json, pathlib
        import isus
        from isus.datasets.io import image_size, read_json
        from isus.index.fingerprint import file_sample
        ds = isus.open_dataset("coco", {str(coco)!r})
        out = {{}}
        def probe(name, fn):
            try:
                fn()
                out[name] = "no error"
            except isus.IsusError as e:
                out[name] = type(e).__name__ + ": " + str(e)
        probe("image_size", lambda: image_size(pathlib.Path({str(img)!r})))
        probe("load_image", lambda: ds.load_image(1))
        probe("load_panoptic", lambda: ds.load_panoptic(2))
        probe("file_sample", lambda: file_sample(pathlib.Path({str(img)!r})))
        probe("index", lambda: isus.Index.load({str(fifo_index)!r}))
        probe("read_json", lambda: read_json(pathlib.Path({str(tmp_path / "dir.json")!r}), "JSON"))
        probe("device", lambda: isus.Index.load("/dev/zero"))
        ix = isus.Index.load({str(index_path)!r})
        from isus.index.cache import CachedAnnotationSource
        probe("cache", lambda: CachedAnnotationSource(ix).load(0))
        print(json.dumps(out))
    """)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    for name, path in [("image_size", img), ("load_image", img), ("load_panoptic", png), ("file_sample", img),
                       ("index", fifo_index), ("read_json", tmp_path / "dir.json"), ("device", "/dev/zero"),
                       ("cache", entry)]:
        assert str(path) in out[name] and "not a regular file" in out[name], (name, out[name])
    r = _cli("index", "info", str(fifo_index))
    assert r.returncode == 1 and "not a regular file" in r.stderr and "Traceback" not in r.stderr, r.stderr
    r = _cli("index", "build", "--dataset", "coco", "--root", str(coco), "--out", str(tmp_path / "new.isusidx"),
             "--workers", "1")
    assert r.returncode == 1 and "not a regular file" in r.stderr and str(img.name) in r.stderr, r.stderr


# -- 5. no SIGBUS: a cache truncated under a live reader -----------------------------------------
@pytest.fixture
def cached_index(coco, tmp_path):
    path = tmp_path / "c.isusidx"
    isus.build_index(isus.open_dataset("coco", coco), workers=1, cache_dir=tmp_path / "c.isusidx.cache",
                     image_cache=True).save(path)
    return path


def test_cache_truncated_under_a_live_reader_is_an_error_not_a_signal(cached_index):
    """The file is truncated right after the reader opened and checked it (the worst moment: a
    memory-mapped reader dies with SIGBUS there). Run in a subprocess, so a signal shows as a
    negative exit code."""
    r = _run(f"""
        import os
        import numpy as np
        import isus
        from isus.index import image_cache
        from isus.index.cache import CachedAnnotationSource
        from isus.index.store import IndexFileError
        ix = isus.Index.load({str(cached_index)!r})
        images, annotations = image_cache.CachedImageSource(ix), CachedAnnotationSource(ix)
        h, w = ix.image_info(0).height, ix.image_info(0).width
        images.window(0, 1, (0, 0, w, h))
        annotations.sample(0, np.arange(h), np.arange(w), False)
        orig = image_cache.OpenEntries.get
        def get(self, path, digest):
            e = orig(self, path, digest)
            os.truncate(path, 200)  # after the open and the identity check, before the reads
            return e
        image_cache.OpenEntries.get = get
        image_cache._OPEN.clear()
        for name, read in [("image", lambda: images.window(0, 1, (0, 0, w, h))),
                           ("annotation", lambda: annotations.sample(1, np.arange(h), np.arange(w), False)),
                           ("annotation again", lambda: annotations.sample(1, np.arange(h), np.arange(w), False)),
                           ("window", lambda: annotations.load(1, (0, 0, 10, 10)))]:
            try:
                read()
                print(name, "no error")
            except IndexFileError as e:
                print(name, "IndexFileError", e)
    """)
    assert r.returncode == 0, (r.returncode, r.stderr)
    lines = dict(l.split(" IndexFileError ") if " IndexFileError " in l else (l[:-len(" no error")], "")
                 for l in r.stdout.strip().splitlines())
    # an annotation entry is read whole before it is parsed: the first read may still succeed,
    # with the content from before the truncation (digest-checked)
    assert "truncated" in lines["image"] and "truncated" in lines["annotation again"], r.stdout
    assert "truncated" in lines["window"] and lines.keys() == {"image", "annotation", "annotation again", "window"}


# -- 3. bounded resources -------------------------------------------------------------------------
def _children() -> set[int]:
    """Live child processes of this process (from /proc, no psutil)."""
    me, out = os.getpid(), set()
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == me and fields[0] != "Z":
                out.add(int(d))
    return out


def _pid(state, item):
    return os.getpid()


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="counts child processes through /proc")
def test_workers_are_capped_at_the_cores_and_the_items(caplog):
    from isus._parallel import run_parallel, usable_cores

    seen, peak = set(), [0]
    # children this process already has (e.g. multiprocessing's resource tracker, started by an
    # earlier test) are not the pool's
    before = _children()

    def on_done(item, pid):
        seen.add(pid)
        peak[0] = max(peak[0], len(_children() - before))

    with caplog.at_level("WARNING", logger="isus"):
        run_parallel(_pid, None, range(40), 10000, on_done)
    assert 1 <= peak[0] <= usable_cores() and len(seen) <= usable_cores()
    assert "10000 workers requested" in caplog.text and f"using {min(usable_cores(), 40)}" in caplog.text
    peak[0] = 0
    run_parallel(_pid, None, range(2), 10000, on_done)  # never more processes than items
    assert peak[0] <= 2


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="counts child processes through /proc")
def test_index_build_workers_far_above_the_cores(coco, tmp_path):
    r = _run(f"""
        import os, isus
        peak = [0]
        def children():
            me, n = os.getpid(), 0
            for d in os.listdir("/proc"):
                if d.isdigit():
                    try:
                        with open(f"/proc/{{d}}/stat") as fh:
                            f = fh.read().rsplit(")", 1)[1].split()
                    except OSError:
                        continue
                    n += int(f[1]) == me
            return n
        def progress(done, total):
            peak[0] = max(peak[0], children())
        isus.build_index(isus.open_dataset("coco", {str(coco)!r}), workers=10000, progress=progress)
        print("peak", peak[0])
    """)
    assert r.returncode == 0, r.stderr
    from isus._parallel import usable_cores

    assert 1 <= int(r.stdout.split()[-1]) <= usable_cores()
    assert "10000 workers requested" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def _claim_size(jpeg: bytes, width: int, height: int) -> bytes:
    """The JPEG with its frame header's size replaced (the coded data left as they are)."""
    b = bytearray(jpeg)
    i = b.find(b"\xff\xc0")
    b[i + 5:i + 9] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    return bytes(b)


def test_pixel_budget_is_checked_from_the_header_before_decoding(coco):
    img = sorted((coco / "train2017").iterdir())[0]
    img.write_bytes(_claim_size(img.read_bytes(), 9000, 9000))  # 81 Mpx: under PIL's limit, over the budget
    ds = isus.open_dataset("coco", coco)
    for fn in (lambda: ds.load_image(0), lambda: isus.datasets.io.image_size(img)):
        with pytest.raises(isus.DatasetError) as e:
            fn()
        msg = str(e.value)
        assert str(img) in msg and "9000x9000" in msg and str(isus.max_image_pixels()) in msg
        assert "set_max_image_pixels" in msg and "ISUS_MAX_IMAGE_PIXELS" in msg
    assert isus.max_image_pixels() < 89_478_485  # below PIL's decompression-bomb warning
    before = isus.set_max_image_pixels(100)
    try:
        with pytest.raises(isus.DatasetError, match="over the budget of 100 pixels"):
            ds.load_panoptic(1)  # annotation PNGs too
    finally:
        isus.set_max_image_pixels(None)
    assert isus.max_image_pixels() == before
    with pytest.raises(ValueError, match="positive int"):
        isus.set_max_image_pixels(0)


def test_pixel_budget_from_the_environment(coco):
    r = _run(f"""
        import os
        os.environ["ISUS_MAX_IMAGE_PIXELS"] = "1000"
        import isus
        ds = isus.open_dataset("coco", {str(coco)!r})
        try:
            ds.load_image(0)
        except isus.DatasetError as e:
            print(e)
    """)
    assert "over the budget of 1000 pixels" in r.stdout, (r.stdout, r.stderr)


def test_jpeg_with_too_little_data_for_its_size_is_refused(coco):
    """A header claiming 4000x3000 over the data of a small image: libjpeg decodes it with a
    warning and grey pixels; isus refuses it like a truncated JPEG (under the pixel budget, so
    only the data check can catch it)."""
    img = sorted((coco / "train2017").iterdir())[0]
    ann = coco / "annotations" / "panoptic_train2017.json"
    img.write_bytes(_claim_size(img.read_bytes(), 4000, 3000))
    _edit_json(ann, lambda d: d["images"][0].update(width=4000, height=3000))
    ds = isus.open_dataset("coco", coco)
    with pytest.raises(isus.DatasetError, match="corrupt or truncated JPEG") as e:
        ds.load_image(0)
    assert str(img) in str(e.value) and "4000x3000" in str(e.value)


def test_valid_jpegs_pass_the_data_check():
    import cv2
    from PIL import Image

    from isus.datasets.io import jpeg_data_shortfall

    rng = np.random.default_rng(0)
    for shape in [(144, 192, 3), (1001, 1501, 3), (50, 61)]:
        for img in (rng.integers(0, 255, shape, dtype=np.uint8), np.full(shape, 128, np.uint8)):
            for flags in ([], [cv2.IMWRITE_JPEG_PROGRESSIVE, 1], [cv2.IMWRITE_JPEG_QUALITY, 1]):
                assert jpeg_data_shortfall(cv2.imencode(".jpg", img, flags)[1].tobytes()) is None
            for kw in ({"optimize": True, "quality": 1}, {"progressive": True, "quality": 1, "subsampling": 2}):
                import io

                buf = io.BytesIO()
                Image.fromarray(img).save(buf, "JPEG", **kw)
                assert jpeg_data_shortfall(buf.getvalue()) is None


def test_crop_size_is_bounded(tmp_path):
    with pytest.raises(ValueError, match=r"at most 16384 pixels a side and 16777216 pixels.*100000x100000"):
        isus.SamplerConfig(crop_size=(100000, 100000))
    with pytest.raises(ValueError, match="5000x5000"):
        isus.SamplerConfig(crop_size=(5000, 5000))
    isus.SamplerConfig(crop_size=(4096, 4096))
    with pytest.raises(ValueError, match="CropSpec"):
        isus.CropSpec(0, 1, -1, -1, 100.0, (0.0, 0.0, 1000.0, 1000.0), False)
    with pytest.raises(ValueError, match="finite"):
        isus.CropSpec(0, 1, -1, -1, float("inf"), (0.0, 0.0, 1000.0, 1000.0), False)
    from click.testing import CliRunner

    from isus_cli.main import cli

    root = isus.synth.write_dataset(tmp_path / "mvd", "mvd", 2, size=(96, 64))
    assert CliRunner().invoke(cli, ["index", "build", "--dataset", "mvd", "--root", str(root), "--out",
                                    str(tmp_path / "m.isusidx"), "--workers", "1"]).exit_code == 0
    res = CliRunner().invoke(cli, ["preview", str(tmp_path / "m.isusidx"), "--out", str(tmp_path / "p"),
                                   "--crop", "100000"])
    assert res.exit_code != 0 and "at most 16384 pixels a side" in res.output and "Traceback" not in res.output


# -- 4. crafted index files: a valid checksum over inconsistent arrays ---------------------------
def _crafted(arrays: dict, meta: dict, case: str) -> tuple[dict, dict]:
    a = {k: np.array(v) for k, v in arrays.items()}
    meta = json.loads(json.dumps(meta))
    h, w = int(a["image_height"][0]), int(a["image_width"][0])
    if case == "anchor outside the image":
        a["inst_anchors"][0, 0] = (w + 50, 3)
    elif case == "class anchor outside the image":
        a["cls_anchors"][0, 0] = (-7, 3)
    elif case == "cell offsets not monotone":
        a["cell_offsets"][2], a["cell_offsets"][3] = a["cell_offsets"][3], a["cell_offsets"][2]
    elif case == "cell offsets past the end":
        a["cell_offsets"][-1] += 1000
    elif case == "short array":
        a["inst_area"] = a["inst_area"][:-1]
    elif case == "class offsets past the end":
        a["inst_class_offsets"][-1] += 5
    elif case == "image out of range":
        a["cls_image"][0] = 10**6
    elif case == "cell index outside the grid":
        a["cell_index"][0] = 60000
    elif case == "box outside the image":
        a["inst_box"][0] = (0, 0, w + 1, h)
    elif case == "zero height":
        a["image_height"][1] = 0
    elif case == "string offsets past the blob":
        a["file_name_offsets"][-1] += 10
    elif case == "missing array":
        del a["cls_pixels"]
    elif case == "wrong dtype":
        a["inst_segment"] = a["inst_segment"].astype(np.int64) + 2**40
    elif case == "category id 2**70":
        meta["categories"][0]["id"] = 2**70
    elif case == "image range beyond the dataset":
        meta["image_range"] = [0, 2**70]
    elif case == "category of a row":
        a["inst_category"][0] = a["inst_category"][-1] + 1
    return a, meta


CRAFTED = ["anchor outside the image", "class anchor outside the image", "cell offsets not monotone",
           "cell offsets past the end", "short array", "class offsets past the end", "image out of range",
           "cell index outside the grid", "box outside the image", "zero height", "string offsets past the blob",
           "missing array", "wrong dtype", "category id 2**70", "image range beyond the dataset", "category of a row"]


@pytest.fixture(scope="module")
def built_index(synth_root, tmp_path_factory):
    path = tmp_path_factory.mktemp("ix") / "c.isusidx"
    isus.build_index(isus.open_dataset("coco", synth_root("coco")), workers=1).save(path)
    return path


@pytest.mark.parametrize("case", CRAFTED)
def test_crafted_index_with_a_valid_checksum_is_refused(built_index, tmp_path, case):
    from isus.index.store import read_arrays, write_arrays

    meta, arrays, _ = read_arrays(built_index)
    a, m = _crafted(arrays, meta, case)
    path = tmp_path / "crafted.isusidx"
    write_arrays(path, m, a)  # a valid checksum over the crafted content
    for verify in (True, False):
        with pytest.raises(IndexFileError, match="malformed") as e:
            isus.Index.load(path, verify=verify)
        assert str(path) in str(e.value)


def test_crafted_index_in_the_cli_is_one_line(built_index, tmp_path):
    from click.testing import CliRunner

    from isus.index.store import read_arrays, write_arrays
    from isus_cli.main import cli

    meta, arrays, _ = read_arrays(built_index)
    a, m = _crafted(arrays, meta, "cell offsets past the end")
    write_arrays(tmp_path / "x.isusidx", m, a)
    res = CliRunner().invoke(cli, ["index", "info", str(tmp_path / "x.isusidx")])
    assert res.exit_code == 1 and "malformed" in res.output and "cell_offsets" in res.output
    assert res.exception is None or isinstance(res.exception, SystemExit)
    assert CliRunner().invoke(cli, ["index", "info", str(built_index)]).exit_code == 0  # the valid one still loads


# -- fresh probe (bench/fault_probe.py, docs/reliability.md "Fresh probe, 2026-12-06"): its BAD cases, fixed --
@pytest.mark.parametrize("layout,edit,field", [
    ("mvd", lambda j: j["labels"][0].update(instances="false"), "true/false"),  # bool("false") was True: a thing
    ("mvd", lambda j: j["labels"][0].update(evaluate="no"), "true/false"),
    ("coco", lambda j: j["categories"][0].update(isthing="yes"), "true/false"),
    ("coco", lambda j: j["categories"][0].update(id=3.7), "integer"),  # was truncated to 3
    ("coco", lambda j: j["annotations"][0]["segments_info"][0].update(category_id="3"), "integer"),
    ("coco", lambda j: j["annotations"][0]["segments_info"][0].update(iscrowd="0"), "true/false"),  # was crowd
    ("coco", lambda j: j["categories"].append(dict(j["categories"][0], name="dup")), "earlier category"),
    ("coco", lambda j: j.update(images=[], annotations=[]), "lists no images"),
])
def test_json_numbers_and_flags_are_not_coerced(synth_root, tmp_path, layout, edit, field):
    root = _copy(synth_root, tmp_path, layout)
    path = root / ("config_v1.2.json" if layout == "mvd" else "annotations/panoptic_train2017.json")
    _edit_json(path, edit)
    with pytest.raises(isus.DatasetError, match=field) as e:
        ds = isus.open_dataset(layout, root)
        for i in range(len(ds)):
            ds.load_panoptic(i)
    assert path.name in str(e.value)


def test_integral_floats_and_0_1_flags_stay_accepted(coco):
    path = coco / "annotations/panoptic_train2017.json"
    _edit_json(path, lambda j: [j["categories"][0].update(id=float(j["categories"][0]["id"]), isthing=False),
                                j["annotations"][0]["segments_info"][0].update(iscrowd=1)])
    ds = isus.open_dataset("coco", coco)
    assert all(ds.load_panoptic(i) is not None for i in range(len(ds)))


def test_deeply_nested_json_is_a_dataset_error_not_a_recursion_error(coco, tmp_path):
    path = coco / "annotations/panoptic_train2017.json"
    path.write_text('{"images": ' + "[" * 100000 + "]" * 100000 + "}")
    with pytest.raises(isus.DatasetError, match="nested too deeply"):
        isus.open_dataset("coco", coco)
    inst = tmp_path / "inst.json"
    inst.write_text("[" * 100000 + "]" * 100000)
    with pytest.raises(isus.IsusError, match="nested too deeply"):
        isus.eval.read_instances(inst)


def test_missing_coco_annotations_json_is_named_before_its_png_folder(coco):
    with pytest.raises(isus.DatasetError, match="nope.json"):
        isus.open_dataset("coco", coco, annotations="annotations/nope.json")


def test_mvd_config_with_more_labels_than_category_ids(synth_root, tmp_path):
    root = _copy(synth_root, tmp_path, "mvd")
    _edit_json(root / "config_v1.2.json", lambda j: j["labels"].extend([dict(j["labels"][0], name=f"x{k}")
                                                                        for k in range(70000)]))
    with pytest.raises(isus.DatasetError, match="config_v1.2.json.*0..65535|0..65535.*config_v1.2.json"):
        isus.open_dataset("mvd", root)


@pytest.mark.parametrize("kw,match", [
    (dict(crop_size=(float("inf"), 64)), "crop_size"), (dict(crop_size=(64, 64, 64)), "crop_size"),
    (dict(shortest_side=float("inf")), "shortest_side"), (dict(shortest_side="800"), "shortest_side"),
    (dict(stuff_scale_range=(0.5, float("inf"))), "stuff_scale_range"),
    (dict(thing_scale_range=(1.0, float("inf"))), "thing_scale_range"),
])
def test_sampler_config_refuses_infinite_and_mistyped_values(kw, match):
    with pytest.raises(ValueError, match=match):
        isus.SamplerConfig(**{"crop_size": (64, 64), **kw})


def test_draw_crop_spec_crop_config_and_open_dataset_arguments(built_index):
    index = isus.Index.load(built_index)
    pol = isus.SamplingPolicy(index, isus.SamplerConfig(crop_size=(64, 64)))
    for n in (1.5, float("nan"), "3", -1, True):
        with pytest.raises(ValueError, match=r"draw\(n=\)"):
            pol.draw(np.random.default_rng(0), n)
    with pytest.raises(TypeError, match=r"draw\(rng=\)"):
        pol.draw(None, 5)
    assert len(pol.draw(np.random.default_rng(0), np.int64(3))) == 3
    with pytest.raises(ValueError, match="window="):
        isus.CropSpec(image=0, category=0, instance=-1, level=-1, scale=1.0, window=(0, 0, 64), flip=False)
    with pytest.raises(ValueError, match="min_instance_area"):
        isus.CropConfig(min_instance_area=float("nan"))
    with pytest.raises(TypeError, match=r"root="):
        isus.open_dataset("mvd", None)
    with pytest.raises(TypeError, match=r"split="):
        isus.open_dataset("mvd", index.open_dataset().root, split=123)


def test_eval_cli_conflicts_percentiles_crop_and_huge_segment_ids(tmp_path, synth_root):
    from click.testing import CliRunner

    from isus.eval import PanopticPredictions
    from isus_cli.main import cli
    from tests.test_eval_cli import _write_predictions

    ds = isus.open_dataset("mvd", synth_root("mvd"))
    pred, inst = _write_predictions(ds, tmp_path / "p", shift=1)
    base = ["eval", "--dataset", "mvd", "--root", str(ds.root), "--predictions", str(tmp_path / "p"),
            "--out", str(tmp_path / "ev"), "--workers", "1"]
    res = CliRunner().invoke(cli, [*base, "--percentiles", "nan,50"])
    assert res.exit_code == 2 and "--percentiles" in res.output and "Traceback" not in res.output
    first = CliRunner().invoke(cli, base)
    assert first.exit_code == 0, first.output
    res = CliRunner().invoke(cli, ["eval", "--compare", str(tmp_path / "ev/eval.json"), str(tmp_path / "ev/eval.json"),
                                   "--predictions", str(tmp_path / "p"), "--out", str(tmp_path / "cmp")])
    assert res.exit_code == 2 and "--predictions cannot go with --compare" in res.output
    assert not (tmp_path / "cmp/compare.json").exists()
    _edit_json(pred, lambda j: j["annotations"][0]["segments_info"][0].update(id=2 ** 70))
    with pytest.raises(isus.IsusError, match="segments_info"):
        p = PanopticPredictions(tmp_path / "p")
        p.load(json.loads(pred.read_text())["annotations"][0]["image_id"])


def test_preview_crop_above_the_bound_names_the_option(built_index, tmp_path):
    from click.testing import CliRunner

    from isus_cli.main import cli

    res = CliRunner().invoke(cli, ["preview", str(built_index), "--out", str(tmp_path / "pv"), "--crop", "20000"])
    assert res.exit_code == 2 and "'--crop'" in res.output and "16384 pixels a side" in res.output


@pytest.mark.parametrize("argv,option", [
    (["--steps", "0"], "--steps"), (["--batch-size", "-3"], "--batch-size"), (["--workers", "-1"], "--workers"),
    (["--crop", "100000"], "--crop"), (["--lr", "nan"], "--lr"), (["--lr", "inf"], "--lr"),
    (["--warmup", "-1"], "--warmup"), (["--checkpoint-every", "0"], "--checkpoint-every"),
    (["--log-every", "0"], "--log-every"), (["--momentum", "nan"], "--momentum"),
    (["--weight-decay", "-1"], "--weight-decay"), (["--clip-grad", "-1"], "--clip-grad"),
    (["--shortest-side", "nan"], "--shortest-side"), (["--rpn-batch-size-per-image", "0"], "--rpn-batch-size-per-image"),
])
def test_train_example_refuses_bad_numbers_when_parsing(argv, option, tmp_path, capsys):
    pytest.importorskip("torch")
    from examples.train_panoptic import parse_args

    base = ["--dataset", "mvd", "--root", str(tmp_path), "--index", str(tmp_path / "x.isusidx"), "--out", str(tmp_path / "o")]
    parse_args(base + ["--warmup", "0", "--workers", "0", "--momentum", "0"])  # the edges stay allowed
    with pytest.raises(SystemExit) as e:
        parse_args(base + argv)
    assert e.value.code == 2 and f"argument {option}" in capsys.readouterr().err
