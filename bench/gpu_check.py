"""The GPU check: every CUDA figure isus's docs need, in one unattended run of ~8 minutes.

    bash bench/gpu_check.sh            # on the GPU machine: installs what is missing, then this
    python bench/gpu_check.py [--out DIR] [--cpu] [--budget SECONDS | --no-time-limits] [--parts a,b,...]

Parts, each in its own process with its own time limit (a part that fails or runs out of time
is recorded as such and the next one starts):

* ``env``: Python, torch, CUDA, the GPU, the CPU count, which optional packages import;
* ``cuda_tests``: ``pytest -m cuda tests`` (the CABB loss on CUDA, eager and compiled, under
  ``torch.cuda.set_sync_debug_mode("error")``);
* ``cabb_bench``: ``bench/cabb.py`` on CUDA at 16k and 128k boxes (torchvision's box-head
  weights), forward and forward + backward, eager and ``torch.compile``-d; goal: <= 1 ms per
  16k-box loss, forward + backward;
* ``data``: a synthetic MVD dataset (``isus synth``, 4032x3024 images) and its index;
* ``train_isus``: ``examples/train_panoptic.py`` at the MVD preset (1024x1024 ISUS crops, 4 per
  step, ResNet-50-FPN from scratch, AMP, 12 loader workers): samples/s, share of the time spent
  waiting for data (goal: < 5 %), peak GPU memory;
* ``train_full``: the same with ``--sampling full`` (whole images at s0 = 2048): the memory
  comparison of the paper's Sec. 1;
* ``gpu_decode``: ``bench/tile_decode_gpu.py``: the image cache's tiles for a batch of crops decoded by
  nvjpeg (``torchvision.io.decode_jpeg(device="cuda")``) and resampled on the GPU, against the crop
  engine's CPU path on the same windows (on the data part's 4032x3024 images).

Every figure goes to ``OUT/gpu_figures.json`` (rewritten after each part, so a run cut short
keeps what it measured; ``OUT`` is ``$OUT``, else ``./gpu_check_out``), the training logs to
``OUT/train_*.log.jsonl``, and a summary is printed at the end. Without CUDA (or with
``--cpu``) the same parts run at tiny sizes on the CPU in well under a minute, the CUDA-only
ones named as skipped: that mode, with ``--no-time-limits`` (every part runs to its end, so a
loaded machine cannot fail it), is what ``tests/test_gpu_check.py`` runs in CI. See
``docs/benchmarks.md`` ("GPU check") for the device command.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = 1


@dataclasses.dataclass(frozen=True)
class Sizes:
    """What each mode runs: the CUDA check proper, or the CPU fallback's tiny stand-ins."""

    budget_s: float
    limits: dict[str, float]
    cabb_args: tuple[str, ...]
    synth_images: int
    synth_size: str
    train_args: tuple[str, ...]
    train_steps: int
    full_args: tuple[str, ...]
    full_steps: int
    log_every: int
    batch: int


CUDA = Sizes(
    budget_s=480.0,
    limits={"env": 30, "cuda_tests": 90, "cabb_bench": 100, "data": 60, "train_isus": 115, "train_full": 105,
            "gpu_decode": 60, "study2_pilot": 540},
    cabb_args=("--device", "cuda", "--sizes", "16000", "128000", "--backward", "--compile", "--min-time", "0.5"),
    synth_images=8,
    synth_size="4032x3024",
    # the MVD preset: 1024x1024 crops, s0 = 2048, 4 crops per step, ISUS and CABB (the paper's, not the
    # example's defaults: their cost is what is measured); lr scaled down for one GPU,
    # gradients clipped so that a from-scratch start cannot end the measurement with a NaN
    train_args=("--preset", "mvd", "--sampling", "isus", "--box-loss", "cabb", "--backbone", "resnet50", "--amp",
                "--workers", "12", "--lr", "0.01", "--warmup", "50", "--clip-grad", "10", "--device", "cuda"),
    train_steps=150,
    full_args=("--sampling", "full", "--shortest-side", "2048"),
    full_steps=60,
    log_every=10,
    batch=4,
)

CPU = Sizes(
    budget_s=55.0,
    limits={"env": 10, "cuda_tests": 0, "cabb_bench": 10, "data": 15, "train_isus": 25, "train_full": 20,
            "gpu_decode": 20, "study2_pilot": 120},
    cabb_args=("--device", "cpu", "--sizes", "1000", "--backward", "--min-time", "0.05", "--loop-boxes", "0"),
    synth_images=2,
    synth_size="384x288",
    # a small model doing little per step: this mode tests the script, it measures nothing
    train_args=("--crop", "128", "--sampling", "isus", "--box-loss", "cabb", "--batch-size", "1",
                "--backbone", "resnet18", "--workers", "0",
                "--warmup", "1", "--device", "cpu", "--rpn-pre-nms-top-n-train", "100",
                "--rpn-post-nms-top-n-train", "50", "--rpn-batch-size-per-image", "32",
                "--box-batch-size-per-image", "32"),
    train_steps=2,
    full_args=("--sampling", "full", "--shortest-side", "128"),
    full_steps=1,
    log_every=1,
    batch=1,
)

#: ``--no-time-limits``: each part still stops after this long (a net for a hung process, not a time limit)
SAFETY_NET_S = 1800.0

PART_NAMES = ("env", "cuda_tests", "cabb_bench", "data", "train_isus", "train_full", "gpu_decode", "study2_pilot")
#: what runs without --parts: the ~8-minute check; the study-2 pilot needs a lease of its own
DEFAULT_PARTS = PART_NAMES[:-1]


# --------------------------------------------------------------------------------------
# Running one part


@dataclasses.dataclass
class Proc:
    rc: int | None
    timed_out: bool
    seconds: float
    tail: str


def run_process(cmd: list[str], timeout: float, env: dict[str, str] | None = None) -> Proc:
    """``cmd`` in its own process group, output echoed line by line; on timeout the whole group
    (DataLoader workers included) gets SIGTERM, then SIGKILL."""
    print("$ " + " ".join(cmd), flush=True)
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True, text=True, errors="replace")
    lines: list[str] = []

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            sys.stdout.write("  " + line)
            sys.stdout.flush()
            lines.append(line)
            del lines[:-200]

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    timed_out = False
    try:
        proc.wait(timeout=max(timeout, 1.0))
    except subprocess.TimeoutExpired:
        timed_out = True
        for sig, grace in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                proc.wait(timeout=grace)
                break
            except subprocess.TimeoutExpired:
                continue
    try:  # whatever of the group outlived its leader (e.g. loader workers) goes too
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    reader.join(timeout=5.0)
    return Proc(proc.returncode, timed_out, time.perf_counter() - t0, "".join(lines)[-4000:])


def proc_result(p: Proc, figures: dict | None = None) -> dict:
    status = "timeout" if p.timed_out else ("ok" if p.rc == 0 else "failed")
    out = {"status": status, "seconds": round(p.seconds, 1), "figures": figures or {}}
    if status != "ok":
        out["reason"] = f"timed out after {p.seconds:.0f} s" if p.timed_out else f"exit status {p.rc}"
        out["log_tail"] = p.tail[-2500:]
    return out


def skipped(reason: str) -> dict:
    return {"status": "skipped", "reason": reason, "seconds": 0.0, "figures": {}}


# --------------------------------------------------------------------------------------
# The parts


class Check:
    def __init__(self, args: argparse.Namespace, mode: str) -> None:
        self.args = args
        self.mode = mode
        self.sizes = CUDA if mode == "cuda" else CPU
        self.py = sys.executable
        self.work: Path = args.work
        self.out: Path = args.out
        self.env = dict(os.environ)
        self.env["PYTHONUNBUFFERED"] = "1"
        # isus importable from this checkout even where gpu_check.sh could not install it
        self.env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
        if mode == "cpu":
            self.env["CUDA_VISIBLE_DEVICES"] = ""  # --cpu on a GPU machine: nothing touches the GPU
        self.data_root = self.work / "mvd"
        self.index = self.work / "mvd.isusidx"

    # env ------------------------------------------------------------------------------
    def part_env(self, limit: float) -> dict:
        t0 = time.perf_counter()
        code = (
            "import importlib.metadata as md, importlib.util, json, os, platform, sys\n"
            "import torch\n"
            "info = {'python': platform.python_version(), 'executable': sys.executable, 'torch': torch.__version__,\n"
            "        'cuda_runtime': torch.version.cuda, 'cuda_available': torch.cuda.is_available(),\n"
            "        'cpu_count': os.cpu_count(), 'torch_threads': torch.get_num_threads()}\n"
            "if torch.cuda.is_available():\n"
            "    p = torch.cuda.get_device_properties(0)\n"
            "    info.update(gpu=p.name, gpu_count=torch.cuda.device_count(), gpu_memory_gib=p.total_memory / 2**30,\n"
            "                compute_capability=f'{p.major}.{p.minor}', multiprocessors=p.multi_processor_count)\n"
            "dists = md.packages_distributions()\n"
            "mods = {}\n"
            "for m in ('torchvision', 'numpy', 'numba', 'cv2', 'PIL', 'matplotlib', 'click', 'pycocotools',\n"
            "          'panopticapi', 'scipy', 'hypothesis', 'torchmetrics', 'triton', 'isus'):\n"
            "    spec = importlib.util.find_spec(m)\n"
            "    if spec is None:\n"
            "        mods[m] = 'missing'\n"
            "        continue\n"
            "    try:\n"
            "        mods[m] = md.version(dists.get(m, [m])[0])\n"
            "    except md.PackageNotFoundError:\n"
            "        mods[m] = 'present (' + str(spec.origin) + ')'\n"
            "import isus\n"
            "info['isus_file'] = isus.__file__\n"
            "info['modules'] = mods\n"
            "print('ENV ' + json.dumps(info))\n"
        )
        p = run_process([self.py, "-c", code], limit, self.env)
        figures: dict = {"install": os.environ.get("ISUS_GPU_CHECK_INSTALL", "not via gpu_check.sh")}
        for line in p.tail.splitlines():
            if line.startswith("ENV "):
                figures.update(json.loads(line[4:]))
        smi = shutil.which("nvidia-smi")
        if smi and self.mode == "cuda":
            q = subprocess.run([smi, "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                               capture_output=True, text=True, timeout=20)
            figures["nvidia_smi"] = q.stdout.strip()
        figures["platform"] = platform.platform()
        figures["commit"] = _git_commit()
        res = proc_result(p, figures)
        res["seconds"] = round(time.perf_counter() - t0, 1)
        return res

    # cuda_tests -----------------------------------------------------------------------
    def part_cuda_tests(self, limit: float) -> dict:
        if self.mode != "cuda":
            return skipped("no CUDA device (CPU fallback): `pytest -m cuda` needs one")
        junit = self.work / "junit_cuda.xml"
        cmd = [self.py, "-m", "pytest", "-m", "cuda", "-q", "-p", "no:cacheprovider", "-o", "addopts=-ra",
               "--continue-on-collection-errors", f"--junitxml={junit}", "tests"]
        p = run_process(cmd, limit, self.env)
        figures = _junit_figures(junit) if junit.exists() else {}
        res = proc_result(p, figures)
        if p.rc == 5:  # no test selected
            res.update(status="failed", reason="no test marked cuda was collected")
        return res

    # cabb_bench -----------------------------------------------------------------------
    def part_cabb_bench(self, limit: float) -> dict:
        out = self.work / "cabb.json"
        cmd = [self.py, "bench/cabb.py", "--weights", "10", "10", "5", "5", *self.sizes.cabb_args, "--json", str(out)]
        p = run_process(cmd, limit, self.env)
        rows = json.loads(out.read_text()) if out.exists() else []
        figures: dict = {"rows": rows}
        for r in rows:
            if r["n"] == 16000 and r["device"] == "cuda":
                best = min(r.get("compiled_cabb_fwd_bwd_ms", float("inf")), r.get("cabb_fwd_bwd_ms", float("inf")))
                figures["cabb_16k_fwd_bwd_ms_best"] = best
                figures["goal_16k_fwd_bwd_le_1ms"] = best <= 1.0
        res = proc_result(p, figures)
        if self.mode != "cuda":
            res["skipped_here"] = ["CUDA rows and torch.compile timings (CPU fallback; the compile "
                                   "tests of tests/test_cabb.py cover compiling on the CPU)"]
        return res

    # data -----------------------------------------------------------------------------
    def part_data(self, limit: float) -> dict:
        t0 = time.perf_counter()
        shutil.rmtree(self.data_root, ignore_errors=True)
        for p in (self.index, Path(str(self.index) + ".cache")):
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
        s = self.sizes
        cli = [self.py, "-m", "isus_cli.main"]
        p1 = run_process([*cli, "synth", "--dataset", "mvd", "--out", str(self.data_root), "--images",
                          str(s.synth_images), "--size", s.synth_size], limit, self.env)
        if p1.rc != 0 or p1.timed_out:
            return proc_result(p1)
        workers = str(min(16, os.cpu_count() or 1))
        p2 = run_process([*cli, "index", "build", "--dataset", "mvd", "--root", str(self.data_root), "--out",
                          str(self.index), "--workers", workers], limit - p1.seconds, self.env)
        res = proc_result(p2, {"images": s.synth_images, "size": s.synth_size, "synth_s": round(p1.seconds, 1),
                               "index_s": round(p2.seconds, 1)})
        res["seconds"] = round(time.perf_counter() - t0, 1)
        return res

    # training -------------------------------------------------------------------------
    def _train(self, name: str, extra: tuple[str, ...], steps: int, limit: float) -> dict:
        if not self.index.exists():
            return skipped("no dataset: the data part did not finish")
        run_dir = self.work / name
        shutil.rmtree(run_dir, ignore_errors=True)
        s = self.sizes
        cmd = [self.py, "examples/train_panoptic.py", "--dataset", "mvd", "--root", str(self.data_root),
               "--index", str(self.index), *s.train_args, *extra, "--steps", str(steps),
               "--log-every", str(s.log_every), "--checkpoint-every", str(10**9), "--no-eval",
               "--out", str(run_dir)]
        p = run_process(cmd, limit, self.env)
        log = run_dir / "log.jsonl"
        figures = train_figures(log, s.batch)
        figures["command"] = " ".join(cmd[1:])
        if log.exists():
            shutil.copyfile(log, self.out / f"{name}.log.jsonl")
        res = proc_result(p, figures)
        if res["status"] == "timeout" and figures.get("steps_logged"):
            res["reason"] += f"; figures from the {figures['steps_logged']} steps logged before"
        return res

    def part_train_isus(self, limit: float) -> dict:
        return self._train("train_isus", (), self.sizes.train_steps, limit)

    def part_train_full(self, limit: float) -> dict:
        return self._train("train_full", self.sizes.full_args, self.sizes.full_steps, limit)

    def part_gpu_decode(self, limit: float) -> dict:
        if not self.index.exists():
            return skipped("no dataset: the data part did not finish")
        out = self.work / "tile_decode.json"
        device = "cuda" if self.mode == "cuda" else "cpu"
        samples, batch = ("64", "16") if self.mode == "cuda" else ("4", "2")
        cmd = [self.py, "bench/tile_decode_gpu.py", "--device", device, "--data", str(self.data_root), "--samples",
               samples, "--batch", batch, "--workers", str(min(16, os.cpu_count() or 1)), "--json", str(out)]
        p = run_process(cmd, limit, self.env)
        res = proc_result(p, json.loads(out.read_text()) if out.exists() else {})
        if self.mode != "cuda":
            res["skipped_here"] = ["nvjpeg (the CPU fallback runs the same code with torchvision's CPU decoder)"]
        return res

    # study2_pilot ---------------------------------------------------------------------
    def part_study2_pilot(self, limit: float) -> dict:
        """Study 2's design at the paper's lengths (``examples/scale_study2.py --scale gpu-pilot``:
        1024 crops, ``--length-scale 1``): data, warm start, CROP and CROP+CABB at seed 0, then the
        report. What finished before the limit is reported; the arms' eval figures and the
        report's tables go to OUT."""
        scale = "gpu-pilot" if self.mode == "cuda" else "smoke"
        out = self.work / "study2_pilot"
        study = [self.py, "examples/scale_study2.py", "--out", str(out), "--scale", scale]
        p = run_process([*study, "--arms", "CROP,CROP+CABB", "--seeds", "0"], limit, self.env)
        figures: dict = {"scale": scale, "runs": {}}
        for arm in ("CROP", "CROP+CABB"):
            ev = out / arm / "seed0" / "eval.json"
            if ev.exists():
                e = json.loads(ev.read_text())
                rng = (e.get("ranges") or {}).get("larger_than_crop") or {}
                figures["runs"][arm] = {"pq": e.get("pq"), "ap_box": e.get("ap_box"),
                                        "box_ap_larger_than_crop": (rng.get("box") or {}).get("ap"),
                                        "extent": rng.get("extent"), "train_seconds": e.get("train_seconds"),
                                        "instances_larger_than_crop": rng.get("instances")}
                shutil.copyfile(ev, self.out / f"study2_pilot_{arm.replace('+', '_')}_eval.json")
        if figures["runs"]:
            left = max(limit - p.seconds, 30.0)
            rep = run_process([*study, "--report", "--publish", str(self.work / "study2_pilot_report")], left, self.env)
            table = self.work / "study2_pilot_report" / "table.md"
            if table.exists():
                shutil.copyfile(table, self.out / "study2_pilot_table.md")
            figures["report"] = "ok" if rep.rc == 0 else f"failed: {rep.tail[-500:]}"
        res = proc_result(p, figures)
        if self.mode != "cuda":
            res["skipped_here"] = ["the pilot's sizes (the CPU fallback runs the smoke scale: it tests the part)"]
        return res


def _git_commit() -> str | None:
    try:
        q = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return q.stdout.strip() or None


def _junit_figures(path: Path) -> dict:
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as e:
        return {"junit_error": str(e)}
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    if suite is None:
        return {}
    counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    cases = {}
    for case in suite.iter("testcase"):
        outcome = "passed"
        for tag in ("failure", "error", "skipped"):
            el = case.find(tag)
            if el is not None:
                outcome = f"{tag}: {(el.get('message') or '')[:300]}"
                break
        cases[f"{case.get('classname')}::{case.get('name')}"] = outcome
    return {**counts, "passed": counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"],
            "cases": cases}


def train_figures(log: Path, batch: int) -> dict:
    """Throughput, data-wait share and peak memory from a ``train_panoptic.py`` log.jsonl.

    The first logged window (model and loader start-up, cuDNN autotuning) is reported apart;
    the steady-state figures are over the later windows (all windows if there is only one).
    """
    if not log.exists():
        return {}
    records = []
    for line in log.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            pass  # a line cut by a timeout
    if not records:
        return {}
    steady = records[1:] or records
    prev_step = records[0]["step"] if len(records) > 1 else 0
    seconds = samples = waited = 0.0
    for r in steady:
        n = (r["step"] - prev_step) * batch
        prev_step = r["step"]
        rate = r.get("samples_per_s") or 0.0
        if rate > 0:
            dur = n / rate  # the window's wall time
            seconds += dur
            samples += n
            waited += r.get("data_wait_share", 0.0) * dur
    last = records[-1]
    out = {
        "steps_logged": last["step"],
        "windows": len(records),
        "samples_per_s": samples / seconds if seconds else None,
        "data_wait_share": waited / seconds if seconds else None,
        "first_window_samples_per_s": records[0].get("samples_per_s"),
        "first_window_data_wait_share": records[0].get("data_wait_share"),
        "final_loss": last.get("loss"),
    }
    for k in ("gpu_peak_gib", "gpu_reserved_gib"):
        if k in last:
            out[k] = last[k]
    return out


# --------------------------------------------------------------------------------------
# Driver


def write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str) + "\n")
    os.replace(tmp, path)


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}"


def summary_lines(data: dict) -> list[str]:
    lines = [f"GPU check ({data['mode']}), {data.get('gpu') or 'no GPU'}: {data['seconds']:.0f} s"]
    for name, part in data["parts"].items():
        f = part.get("figures", {})
        line = f"  {name:11} {part['status']:8} {part.get('seconds', 0):6.1f} s"
        if part["status"] != "ok":
            line += f"  ({part.get('reason', '')})"
        if name == "cuda_tests" and "tests" in f:
            line += f"  {f['passed']} passed, {f['failures']} failed, {f['errors']} errors, {f['skipped']} skipped"
        if name == "cabb_bench":
            for r in f.get("rows", []):
                line += (f"\n      {r['device']} N={r['n']}: cabb {r['cabb_ms']:.3f} ms fwd"
                         + (f", {r['cabb_fwd_bwd_ms']:.3f} ms f+b" if "cabb_fwd_bwd_ms" in r else "")
                         + (f", compiled {r['compiled_cabb_fwd_bwd_ms']:.3f} ms f+b"
                            if "compiled_cabb_fwd_bwd_ms" in r else "")
                         + (", torch.compile failed" if "compile_error" in r else "")
                         + f"  (smooth_l1 {r['smooth_l1_ms']:.3f} ms)")
            if "goal_16k_fwd_bwd_le_1ms" in f:
                line += f"\n      goal <= 1 ms per 16k-box loss f+b: {'met' if f['goal_16k_fwd_bwd_le_1ms'] else 'missed'}"
        if name == "gpu_decode" and "device_ms_per_sample" in f:
            line += (f"\n      image step per sample: CPU {f['cpu_ms_per_sample']:.2f} ms, {f['device']} "
                     f"{f['device_ms_per_sample']:.2f} ms ({f['cpu_over_device']:.2f}x), PSNR min {f['psnr_min_db']:.1f} dB")
        if name.startswith("train_") and f.get("samples_per_s") is not None:
            line += (f"\n      {f['samples_per_s']:.2f} samples/s, data wait {100 * f['data_wait_share']:.1f} %"
                     + (f", peak GPU memory {f['gpu_peak_gib']:.1f} GiB allocated / "
                        f"{f['gpu_reserved_gib']:.1f} GiB reserved" if "gpu_peak_gib" in f else "")
                     + f" ({f['steps_logged']} steps)")
        if name == "study2_pilot":
            for arm, r in f.get("runs", {}).items():
                line += (f"\n      {arm}: PQ {_pct(r.get('pq'))}, box AP {_pct(r.get('ap_box'))}, box AP larger than "
                         f"the crop {_pct(r.get('box_ap_larger_than_crop'))} "
                         f"({r.get('instances_larger_than_crop')} instances)")
        for s in part.get("skipped_here", []):
            line += f"\n      skipped here: {s}"
        lines.append(line)
    return lines


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or ROOT / "gpu_check_out"),
                    help="where gpu_figures.json and the logs go (default: $OUT, else ./gpu_check_out)")
    ap.add_argument("--work", type=Path, default=None, help="scratch space (default: a temporary directory)")
    ap.add_argument("--cpu", action="store_true", help="the CPU fallback even where CUDA is available")
    ap.add_argument("--budget", type=float, default=None,
                    help="seconds for all parts together (default: 480 on CUDA, 55 on the CPU)")
    ap.add_argument("--no-time-limits", action="store_true",
                    help="run every part to its end: no budget and no per-part limits (each part still stops after "
                         f"{SAFETY_NET_S:.0f} s, a net for a hung process); the CI test's mode, so that a loaded "
                         "machine cannot fail it")
    ap.add_argument("--parts", default=",".join(DEFAULT_PARTS),
                    help=f"comma-separated subset of {','.join(PART_NAMES)} (default: all but study2_pilot)")
    args = ap.parse_args(argv)
    if args.no_time_limits and args.budget is not None:
        ap.error("--budget and --no-time-limits exclude each other")
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = sorted(set(parts) - set(PART_NAMES))
    if unknown:
        ap.error(f"--parts: unknown {unknown}; expected some of {', '.join(PART_NAMES)}")

    import torch  # here, not at the top: --help stays fast

    mode = "cuda" if torch.cuda.is_available() and not args.cpu else "cpu"
    sizes = CUDA if mode == "cuda" else CPU
    budget = math.inf if args.no_time_limits else args.budget if args.budget is not None else sizes.budget_s
    args.out.mkdir(parents=True, exist_ok=True)
    tmp = None
    if args.work is None:
        tmp = tempfile.TemporaryDirectory(prefix="isus_gpu_check_")
        args.work = Path(tmp.name)
    args.work.mkdir(parents=True, exist_ok=True)
    check = Check(args, mode)
    t_start = time.perf_counter()
    deadline = t_start + budget
    data: dict = {
        "schema": SCHEMA, "mode": mode, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "budget_s": None if args.no_time_limits else budget, "time_limits": not args.no_time_limits,
        "gpu": torch.cuda.get_device_name(0) if mode == "cuda" else None, "seconds": 0.0, "parts": {},
    }
    if mode == "cpu":
        data["note"] = ("CPU fallback: tiny sizes, CUDA-only parts skipped; the figures test the script, "
                        "they are not measurements")
    json_path = args.out / "gpu_figures.json"
    limits = "no time limits" if args.no_time_limits else f"budget {budget:.0f} s"
    print(f"GPU check, {mode} mode, {limits}, figures to {json_path}", flush=True)
    for name in PART_NAMES:
        if name not in parts:
            data["parts"][name] = skipped("not in --parts")
            continue
        if args.no_time_limits:
            limit = SAFETY_NET_S
            print(f"\n== {name} (no time limit)", flush=True)
        else:
            limit = min(sizes.limits.get(name, 30.0), deadline - time.perf_counter())
            print(f"\n== {name} (limit {max(limit, 0):.0f} s)", flush=True)
        fn: Callable[[float], dict] = getattr(check, f"part_{name}")
        if name in sizes.limits and sizes.limits[name] == 0:
            result = fn(0.0)  # a part this mode skips says why
        elif limit < 5.0:
            result = skipped(f"no time left in the {budget:.0f} s budget")
        else:
            try:
                result = fn(limit)
            except Exception as e:  # a broken part is recorded, the next one still runs
                result = {"status": "failed", "reason": f"{type(e).__name__}: {e}", "seconds": 0.0, "figures": {}}
        data["parts"][name] = result
        data["seconds"] = round(time.perf_counter() - t_start, 1)
        write_json(json_path, data)
    data["seconds"] = round(time.perf_counter() - t_start, 1)
    write_json(json_path, data)
    print("\n" + "\n".join(summary_lines(data)), flush=True)
    print(f"wrote {json_path}", flush=True)
    if tmp is not None:
        tmp.cleanup()
    return data


if __name__ == "__main__":
    main()
