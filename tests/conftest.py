"""Shared fixtures: seeded RNG, small synthetic datasets in every layout, the real samples."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import settings

import isus

# No deadlines: the first example of a kernel test includes its JIT compilation. CI runs a
# fixed example sequence, so a red CI always reproduces.
settings.register_profile("dev", deadline=None)
settings.register_profile("ci", deadline=None, derandomize=True, print_blob=True)
settings.load_profile("ci" if os.environ.get("CI") else "dev")

#: Real sample annotations (never copied into the repo); tests using them skip when absent.
REALDATA = Path(os.environ.get("ISUS_REALDATA", Path(__file__).resolve().parents[2] / "shared" / "realdata"))

SYNTH_SIZE = (192, 144)  # (width, height): small for speed, big enough for every feature
SYNTH_IMAGES = 8  # includes index 3, which never has things


def realdata(*parts: str) -> Path:
    """Path under the real sample folder, or skip the test when it is absent."""
    path = REALDATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real sample data not available at {path}")
    return path


@pytest.fixture(autouse=True)
def _seed():
    np.random.seed(0)


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory):
    """``synth_root(layout)``: a synthetic dataset of that layout, written once per session."""
    cache: dict[str, Path] = {}

    def get(layout: str) -> Path:
        if layout not in cache:
            out = tmp_path_factory.mktemp(f"synth_{layout}") / layout
            cache[layout] = isus.synth.write_dataset(out, layout, SYNTH_IMAGES, size=SYNTH_SIZE, seed=7)
        return cache[layout]

    return get


def scene_of(root: Path, image_id):
    """The scene that the synthetic writer drew for ``image_id``."""
    return isus.synth.scene_of(root, image_id)
