"""Shared fixtures: tiny synthetic 2D Sprites files in the original layouts, and the real data if present."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from ccvae.data.synthetic import (  # noqa: F401  (re-exported for the test modules)
    make_sprites_dir,
    random_character,
    synthetic_packed,
    write_character_mat,
    write_splits_mat,
)

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "sprites"
REAL_NPZ = Path(os.environ.get("CCVAE_DATA") or SHARED / "sprites60.npz")
REAL_SAMPLE = SHARED / "reed2015-sample"


def pytest_configure(config) -> None:
    """Under pytest-xdist (the README's ``-n auto``), one torch thread per worker, and for what it starts: two
    workers of two threads each on two cores slow each other far more than twice over."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        import torch

        os.environ["OMP_NUM_THREADS"] = "1"
        torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_npz(tmp_path_factory) -> Path:
    return synthetic_packed(tmp_path_factory.mktemp("data") / "tiny.npz")


def _missing(what: str) -> None:
    """Skip where the real data is absent; fail in CI (CCVAE_REQUIRE_DATA=1), where it must be present."""
    if os.environ.get("CCVAE_REQUIRE_DATA"):
        pytest.fail(f"{what} is required here (CCVAE_REQUIRE_DATA=1) but missing")
    pytest.skip(f"{what} not found (set CCVAE_DATA or place ../shared/data/sprites beside the checkout)")


@pytest.fixture(scope="session")
def real_npz() -> Path:
    if not REAL_NPZ.is_file():
        _missing(f"real data {REAL_NPZ}")
    return REAL_NPZ


@pytest.fixture(scope="session")
def real_sample() -> Path:
    if not REAL_SAMPLE.is_dir():
        _missing(f"original sample files {REAL_SAMPLE}")
    return REAL_SAMPLE


def images_loaded_in_chromium(page_text: str, tmp_path: Path) -> tuple[int, str]:
    """Open a copy of an HTML page in headless Chromium and count the images that decoded.

    Returns (number of <img> tags, Chromium's "ok/total" count, or "" when it printed none). Skips the
    test where Debian's chromium is absent (.ci/run installs it).
    """
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("Debian's chromium is not installed (.ci/run installs it)")
    probe = tmp_path / "probe.html"
    probe.write_text(page_text.replace("</body>", """<script>
window.addEventListener('load', () => {
  const imgs = [...document.images];
  const ok = imgs.filter(i => i.complete && i.naturalWidth > 0).length;
  document.body.setAttribute('data-images', ok + '/' + imgs.length);
});</script></body>"""))
    res = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                          "--disable-background-networking", "--disable-component-update", "--disable-sync",
                          f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000", "--dump-dom",
                          probe.as_uri()], capture_output=True, text=True, timeout=120)
    found = [part.split('"')[1] for part in res.stdout.split("data-images=")[1:2]]
    return page_text.count("<img "), (found[0] if found else "")


def load_benchmark(name: str):
    """The module ``benchmarks/<name>.py`` (benchmarks are scripts, not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
