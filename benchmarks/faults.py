"""Fault drill: bad inputs, kills, damaged files and full disks, end to end through the ``ccvae`` command.

    python benchmarks/faults.py [--only NAME,...] [--keep DIR]

Each case runs the command as a user would (a subprocess, smoke-size synthetic data) and is judged on
what the README promises: the expected exit code; on failure one line on stderr and no traceback;
nothing half-written left behind; and the run still usable afterwards (the retry or ``--resume``
works). Prints one table row per case and exits 1 if any row fails. ``tests/test_faults.py`` runs the
same cases in CI. Cases that need root (tmpfs mounts) say "skipped" with the reason elsewhere.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
SMOKE = ["--preset", "smoke", "--quiet", "--device", "cpu"]


@dataclass
class Outcome:
    code: int
    err: str
    leftovers: str = ""  # what was left behind that should not be ("" = nothing)
    resumable: bool | None = None  # None: not applicable
    note: str = ""


@dataclass
class Case:
    name: str
    defect: str  # the campaign's defect number it guards, or "" for a promise that already held
    expect: int
    run: Callable[[Path, dict], Outcome]
    needs_root: bool = False


@dataclass
class Row:
    case: Case
    outcome: Outcome | None
    checks: dict[str, bool] = field(default_factory=dict)
    skipped: str = ""

    @property
    def ok(self) -> bool:
        return bool(self.skipped) or all(self.checks.values())


# -- helpers ----------------------------------------------------------------------------------------
def ccvae(*argv: str, env: dict | None = None, timeout: float = 240, preexec=None) -> tuple[int, str]:
    p = subprocess.run([sys.executable, "-m", "ccvae", *argv], capture_output=True, text=True, env=env or ENV,
                       timeout=timeout, preexec_fn=preexec)
    return p.returncode, p.stderr


def spawn(*argv: str, session: bool = False) -> subprocess.Popen:
    """``ccvae ARGV`` in the background, stderr piped; ``session``: its own process group (a terminal's Ctrl-C
    reaches the whole group). Its processes carry ``p.tag`` in their environment, so that ``left_running`` finds
    any that outlive it."""
    tag = f"{os.getpid()}-{time.monotonic_ns()}"
    p = subprocess.Popen([sys.executable, "-m", "ccvae", *argv], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                         text=True, env={**ENV, "CCVAE_DRILL_TAG": tag}, start_new_session=session,
                         preexec_fn=_interruptible)
    p.tag = tag
    return p


def _interruptible() -> None:
    """In the child, before exec: SIGINT at its default, as a terminal's Ctrl-C finds it. A shell without job
    control starts a background command (``cmd &``) with SIGINT ignored, its children inherit that, and Python then
    leaves it ignored: the drill's Ctrl-C cases would then test nothing and fail with exit 0."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def left_running(p: subprocess.Popen, grace: float = 5.0) -> str:
    """Processes of ``spawn``'s command still alive ``grace`` seconds after it exited ("" = none)."""
    marker = f"CCVAE_DRILL_TAG={p.tag}".encode()

    def alive() -> list[str]:
        found = []
        for proc in Path("/proc").glob("[0-9]*"):
            try:
                if marker in (proc / "environ").read_bytes().split(b"\0"):
                    found.append(proc.name)
            except OSError:  # gone meanwhile, or not ours
                pass
        return found

    wait_for(lambda: not alive(), timeout=grace)
    pids = alive()
    return f"{len(pids)} processes left running ({' '.join(pids)})" if pids else ""


def train(ws: dict, out: Path, *extra: str, data: Path | None = None) -> tuple[int, str]:
    return ccvae("train", "--data", str(data or ws["D"]), "--out", str(out), *SMOKE, *extra)


def resume(ws: dict, out: Path, *extra: str) -> tuple[int, str]:
    return ccvae("train", "--data", str(ws["D"]), "--out", str(out), "--resume", "--quiet", "--device", "cpu", *extra)


def wait_for(pred: Callable[[], bool], timeout: float = 60) -> bool:
    end = time.time() + timeout
    while time.time() < end:
        if pred():
            return True
        time.sleep(0.05)
    return False


def metrics_rows(run: Path) -> int:
    try:
        return len((run / "metrics.csv").read_text().splitlines()) - 1
    except OSError:
        return 0


def hidden(folder: Path) -> list[str]:
    """Temp files and folders a crash could leave (``.eval-*``, ``.*.tmp``)."""
    if not folder.exists():
        return []
    return sorted(str(p.relative_to(folder)) for p in folder.rglob(".*") if p.name != ".lock")


@contextlib.contextmanager
def tmpfs(path: Path, size: str = "1m", ro: bool = False) -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True,
                   capture_output=True)
    try:
        if ro:
            subprocess.run(["mount", "-o", "remount,ro", str(path)], check=True, capture_output=True)
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def can_mount() -> str:
    if os.geteuid() != 0:
        return "needs root (tmpfs mounts)"
    probe = Path(tempfile.mkdtemp(prefix="ccvae-mount-"))
    try:
        with tmpfs(probe):
            pass
    except (subprocess.CalledProcessError, OSError) as e:
        return f"cannot mount tmpfs here ({e})"
    finally:
        shutil.rmtree(probe, ignore_errors=True)
    return ""


def flip_bytes(path: Path, offset: int, n: int = 64, seed: int = 0) -> None:
    data = bytearray(path.read_bytes())
    rng = np.random.default_rng(seed)
    data[offset:offset + n] = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))


def trained(ws: dict, name: str, *extra: str) -> Path:
    """A copy of the workspace's trained smoke run (20 steps, checkpoints every 10)."""
    out = ws["root"] / name
    shutil.copytree(ws["R"], out)
    (out / ".lock").unlink(missing_ok=True)
    return out


def evaluated(ws: dict, name: str) -> Path:
    out = ws["root"] / name
    shutil.copytree(ws["E"], out)
    return out


def doctored_npz(path: Path, n: int) -> Path:
    """A packed file whose headers claim ``n`` characters (ids, attributes and the 'images' header agree)
    over a few bytes of image data: only the header-against-size check can tell."""
    src = dict(np.load(DATA_CACHE["D"]))
    src["character_ids"] = np.arange(n, dtype=np.uint16)
    src["attributes"] = np.zeros((n, 7), dtype=np.uint8)
    with zipfile.ZipFile(path, "w") as zf:
        for k, arr in src.items():
            with zf.open(f"{k}.npy", "w") as f:
                if k in ("images", "masks"):
                    descr, shape = ("|u1", (n, *arr.shape[1:])) if k == "images" else ("|b1", (n, *arr.shape[1:]))
                    np.lib.format.write_array_header_1_0(f, {"descr": descr, "fortran_order": False, "shape": shape})
                    f.write(b"\0" * 1000)
                else:
                    np.lib.format.write_array(f, arr)
    return path


DATA_CACHE: dict = {}


# -- cases --------------------------------------------------------------------------------------------
def c_missing_source(root, ws):
    return Outcome(*ccvae("data", "prepare", "--source", str(root / "nope"), "--out", str(root / "o.npz")),
                   leftovers="o.npz" if (root / "o.npz").exists() else "")


def c_no_splits(root, ws):
    s = root / "s"
    shutil.copytree(ws["S"], s)
    (s / "sprites_splits.mat").unlink()
    return Outcome(*ccvae("data", "prepare", "--source", str(s), "--out", str(root / "o.npz")),
                   leftovers="o.npz" if (root / "o.npz").exists() else "")


def _prepare_damaged(root, ws, damage, workers="1"):
    s = root / "s"
    shutil.copytree(ws["S"], s)
    damage(s / "sprites_0.mat")
    out = root / "o.npz"
    code, err = ccvae("data", "prepare", "--source", str(s), "--out", str(out), "--workers", workers, "--quiet")
    return Outcome(code, err, leftovers=" ".join(p.name for p in root.glob("*.npz")) + " ".join(hidden(root)))


def c_truncated_hdf5(root, ws):
    return _prepare_damaged(root, ws, lambda p: p.write_bytes(p.read_bytes()[:5000]))


# Offsets into the synthetic sprites_0.mat where h5py raised KeyError ("bad object header version
# number", "message not aligned") and RuntimeError ("bad local heap signature"), not OSError.
def c_hdf5_object_header(root, ws):
    return _prepare_damaged(root, ws, lambda p: flip_bytes(p, 2304, 64, seed=2304))


def c_hdf5_object_header_parallel(root, ws):
    return _prepare_damaged(root, ws, lambda p: flip_bytes(p, 2368, 64, seed=2368), workers="2")


def c_hdf5_heap(root, ws):
    return _prepare_damaged(root, ws, lambda p: flip_bytes(p, 1152, 64, seed=1152))


def c_not_a_tar(root, ws):
    bad = root / "x.tar.gz"
    bad.write_bytes(b"this is not an archive\n" * 100)
    return Outcome(*ccvae("data", "prepare", "--source", str(bad), "--out", str(root / "o.npz")))


def c_truncated_tar(root, ws):
    tar = root / "t.tar.gz"
    subprocess.run(["tar", "czf", str(tar), "-C", str(ws["S"].parent), ws["S"].name], check=True)
    tar.write_bytes(tar.read_bytes()[:2000])
    return Outcome(*ccvae("data", "prepare", "--source", str(tar), "--out", str(root / "o.npz")))


def c_md5_upper_case(root, ws):
    tar = root / "t.tar.gz"
    d = root / "data" / "sprites"
    shutil.copytree(ws["S"], d)
    subprocess.run(["tar", "czf", str(tar), "-C", str(root), "data"], check=True)
    import hashlib
    md5 = hashlib.md5(tar.read_bytes()).hexdigest().upper()
    code, err = ccvae("data", "prepare", "--source", str(tar), "--out", str(root / "o.npz"), "--md5", md5, "--quiet")
    return Outcome(code, err, resumable=(root / "o.npz").is_file())


def c_md5_with_folder(root, ws):
    return Outcome(*ccvae("data", "prepare", "--source", str(ws["S"]), "--out", str(root / "o.npz"),
                          "--md5", "4e866a7919c1beedf53964e6f7a23686"))


def c_prepare_read_only(root, ws):
    with tmpfs(root / "ro", ro=True) as ro:
        code, err = ccvae("data", "prepare", "--source", str(ws["S"]), "--out", str(ro / "o.npz"), "--quiet")
    return Outcome(code, err)


def c_prepare_out_is_dir(root, ws):
    return Outcome(*ccvae("data", "prepare", "--source", str(ws["S"]), "--out", str(root)))


def c_npz_random_bytes(root, ws):
    bad = root / "r.npz"
    bad.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    code, err = ccvae("data", "info", "--data", str(bad))
    return Outcome(code, err, note="says pickled" if "pickle" in err else "")


def c_npz_header_claims_60000(root, ws):
    bad = doctored_npz(root / "big.npz", 60000)
    code, err = ccvae("data", "info", "--data", str(bad))
    return Outcome(code, err, note="" if "claims" in err else "size not checked")


def c_npz_header_claims_60000_train(root, ws):
    bad = doctored_npz(root / "big.npz", 60000)
    code, err = train(ws, root / "run", data=bad)
    return Outcome(code, err, leftovers="run" if (root / "run").exists() else "")


def c_npz_truncated(root, ws):
    bad = root / "t.npz"
    bad.write_bytes(ws["D"].read_bytes()[:20000])
    return Outcome(*ccvae("data", "info", "--data", str(bad)))


def c_bad_data_then_retry(root, ws):
    bad = root / "t.npz"
    bad.write_bytes(ws["D"].read_bytes()[:20000])
    run = root / "run"
    code, err = train(ws, run, data=bad)
    left = "run folder left" if run.exists() else ""
    ok, _ = train(ws, run)
    return Outcome(code, err, leftovers=left, resumable=ok == 0)


def c_bad_data_then_resume(root, ws):
    bad = root / "t.npz"
    bad.write_bytes(ws["D"].read_bytes()[:20000])
    run = root / "run"
    train(ws, run, data=bad)
    code, err = resume(ws, run)
    return Outcome(code, err, note="" if "no checkpoints/last.pt" not in err else "old message")


def c_image_size(root, ws):
    return Outcome(*train(ws, root / "run", "--set", "model.image_size=64"),
                   leftovers="run" if (root / "run").exists() else "")


def c_image_size_architecture(root, ws):
    return Outcome(*train(ws, root / "run", "--set", "model.image_size=8"),
                   leftovers="run" if (root / "run").exists() else "")


def c_seed_too_big(root, ws):
    return Outcome(*train(ws, root / "run", "--seed", str(2 ** 70)))


def c_config_is_folder(root, ws):
    return Outcome(*train(ws, root / "run", "--config", str(root)))


def c_lr_inf(root, ws):
    return Outcome(*train(ws, root / "run", "--set", "train.lr=inf"))


def c_lr_nan(root, ws):
    return Outcome(*train(ws, root / "run", "--set", "train.kl_coef=nan"))


def c_unknown_key(root, ws):
    return Outcome(*train(ws, root / "run", "--set", "train.bogus=1"))


def c_bad_toml(root, ws):
    f = root / "c.toml"
    f.write_text("[train\nlr = ")
    return Outcome(*train(ws, root / "run", "--config", str(f)))


def c_nan_before_checkpoint(root, ws):
    run = root / "run"
    code, err = train(ws, run, "--set", "train.lr=1e30", "--set", "train.log_every=1",
                      "--set", "train.checkpoint_every=1000", "--max-steps", "20")
    left = "run folder left" if run.exists() else ""
    ok, _ = train(ws, run)
    return Outcome(code, err, leftovers=left, resumable=ok == 0,
                   note="names a missing last.pt" if "last.pt" in err else "")


def c_nan_after_checkpoint(root, ws):
    run = trained(ws, "run")
    cfg = json.loads((run / "config.json").read_text())
    cfg["train"]["lr"] = 1e30
    (run / "config.json").write_text(json.dumps(cfg))
    code, err = resume(ws, run, "--max-steps", "40")
    return Outcome(code, err, resumable=(run / "checkpoints" / "last.pt").is_file() and "last.pt" in err)


def c_bitrot_checkpoint(root, ws):
    run = trained(ws, "run")
    last = run / "checkpoints" / "last.pt"
    flip_bytes(last, last.stat().st_size // 2, 64)
    code, err = resume(ws, run, "--max-steps", "30")
    prev = run / "checkpoints" / "last.prev.pt"
    ok = False
    if prev.is_file():
        shutil.copyfile(prev, last)
        ok = resume(ws, run, "--max-steps", "30")[0] == 0
    return Outcome(code, err, resumable=ok)


def _doctor_checkpoint(ws, key, value):
    import torch
    run = trained(ws, f"run-{key}")
    last = run / "checkpoints" / "last.pt"
    state = torch.load(last, weights_only=True)
    state[key] = value
    torch.save(state, last)
    return Outcome(*resume(ws, run, "--max-steps", "30"))


def c_checkpoint_step_str(root, ws):
    return _doctor_checkpoint(ws, "step", "abc")


def c_checkpoint_config_int(root, ws):
    return _doctor_checkpoint(ws, "config", 5)


def c_checkpoint_truncated(root, ws):
    run = trained(ws, "run")
    last = run / "checkpoints" / "last.pt"
    last.write_bytes(last.read_bytes()[:3000])
    return Outcome(*resume(ws, run))


def c_resume_below_step(root, ws):
    run = trained(ws, "run")
    before = (run / "config.json").read_text()
    code, err = resume(ws, run, "--max-steps", "5")
    return Outcome(code, err, leftovers="" if (run / "config.json").read_text() == before else "config.json rewritten")


def c_concurrent_resume(root, ws):
    run = trained(ws, "run")
    first = spawn("train", "--data", str(ws["D"]), "--out", str(run), "--resume", "--max-steps", "100000",
                  "--quiet", "--device", "cpu")
    started = wait_for(lambda: metrics_rows(run) > 5)
    code, err = resume(ws, run, "--max-steps", "100000")
    first.send_signal(signal.SIGINT)
    first.communicate(timeout=60)
    return Outcome(code, err, note="" if started and "pid" in err else "no pid named")


def c_concurrent_fresh(root, ws):
    run = root / "run"
    a = spawn("train", "--data", str(ws["D"]), "--out", str(run), *SMOKE, "--max-steps", "200")
    b = spawn("train", "--data", str(ws["D"]), "--out", str(run), *SMOKE, "--max-steps", "200")
    ea, eb = a.communicate(timeout=240)[1], b.communicate(timeout=240)[1]
    codes = sorted([a.returncode, b.returncode])
    err = eb if b.returncode else ea
    # Either one refused with the owner's pid while the other trained, or the second found a finished run.
    code = 2 if codes == [0, 2] else 99
    return Outcome(code, err, resumable=(run / "checkpoints" / "last.pt").is_file())


def c_kill9_resume(root, ws):
    run = root / "run"
    p = spawn("train", "--data", str(ws["D"]), "--out", str(run), *SMOKE, "--max-steps", "100000",
              "--set", "train.checkpoint_every=5")
    wait_for(lambda: (run / "checkpoints" / "last.pt").is_file() and metrics_rows(run) > 8)
    p.kill()
    p.communicate(timeout=30)
    code, err = resume(ws, run, "--max-steps", "60")
    return Outcome(code, err, leftovers=" ".join(hidden(run / "checkpoints")), resumable=code == 0)


def _interrupt_early(root, ws, delay, sig=signal.SIGINT):
    run = root / "run"
    p = spawn("train", "--data", str(ws["D"]), "--out", str(run), *SMOKE)
    time.sleep(delay)
    p.send_signal(sig)
    _, err = p.communicate(timeout=60)
    ok, _ = train(ws, run) if not (run / "checkpoints" / "last.pt").is_file() else resume(ws, run)
    return Outcome(p.returncode, err, resumable=ok == 0)


def c_sigint_during_imports(root, ws):
    return _interrupt_early(root, ws, 0.15)


def c_sigint_during_loading(root, ws):
    return _interrupt_early(root, ws, 1.2)


def c_sigterm_during_training(root, ws):
    run = root / "run"
    p = spawn("train", "--data", str(ws["D"]), "--out", str(run), *SMOKE, "--max-steps", "100000")
    wait_for(lambda: metrics_rows(run) > 3)
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=60)
    ok, _ = resume(ws, run, "--max-steps", "40")
    return Outcome(p.returncode, err, resumable=ok == 0)


def c_disk_full(root, ws):
    with tmpfs(root / "small", size="600k") as small:
        run = small / "run"
        # A smoke checkpoint is ~0.3 MB: the first fits, the second (beside the first) does not.
        code, err = train(ws, run, "--max-steps", "100000", "--set", "train.checkpoint_every=5")
        last = run / "checkpoints" / "last.pt"
        intact = True
        if last.is_file():
            sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
            from ccvae.checkpoint import load_checkpoint
            from ccvae.errors import UserError
            try:
                load_checkpoint(last)
            except UserError:
                intact = False
        left = " ".join(hidden(run / "checkpoints"))
    return Outcome(code, err, leftovers=left, resumable=intact)


def c_out_of_memory(root, ws):
    import resource

    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))

    run = root / "run"
    code, err = ccvae("train", "--data", str(ws["D"]), "--out", str(run), *SMOKE, "--set", "model.dec_hidden=300000000",
                      preexec=limit)
    return Outcome(code, err, leftovers="run folder left" if run.exists() else "")


def c_evaluate_read_only(root, ws):
    run = trained(ws, "run")
    with tmpfs(root / "ro", size="20m") as ro:
        shutil.copytree(run, ro / "run")
        subprocess.run(["mount", "-o", "remount,ro", str(ro)], check=True)
        t0 = time.time()
        code, err = ccvae("evaluate", str(ro / "run"), "--data", str(ws["D"]), "--device", "cpu", "--quiet")
        took = time.time() - t0
    return Outcome(code, err, note="" if took < 30 else f"failed only after {took:.0f} s")


def _interrupt_evaluate(root, ws, stage: str, delay: float, group: bool) -> Outcome:
    """Signal ``ccvae evaluate`` ``delay`` s after its progress line ``stage``: SIGTERM to the command, or SIGINT to
    its process group (a terminal's Ctrl-C). Exit 130, one line, no temp folder, no worker process left."""
    run = trained(ws, "run")
    p = spawn("evaluate", str(run), "--data", str(ws["D"]), "--device", "cpu", session=group)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(p.stderr.readline, "")), daemon=True)
    reader.start()  # the progress lines ("evaluate: ..." on stderr) say where it is
    reached = wait_for(lambda: any(stage in ln for ln in list(lines)), timeout=120)
    time.sleep(delay)
    if group:
        os.killpg(p.pid, signal.SIGINT)
    else:
        p.send_signal(signal.SIGTERM)
    p.wait(timeout=60)
    reader.join(timeout=30)  # EOF comes once every process holding its stderr is gone
    notes = ([] if reached else [f"never reached '{stage}'"]) + (["stderr held open after exit"] if reader.is_alive() else [])
    err = "".join(ln for ln in list(lines) if not ln.startswith("evaluate: "))  # what it said besides its progress
    left = " ".join([*hidden(run), left_running(p)]).strip()
    return Outcome(p.returncode, err, leftovers=left, note="; ".join(notes))


def c_sigterm_during_evaluate(root, ws):
    return _interrupt_evaluate(root, ws, "predictors", 1.0, group=False)


def c_sigterm_during_disentanglement(root, ws):
    return _interrupt_evaluate(root, ws, "disentanglement metrics", 1.0, group=False)


def c_ctrl_c_during_probes(root, ws):
    # 1 s into the first probes: the worker processes are starting or fitting
    return _interrupt_evaluate(root, ws, "classifiers: identity_all", 1.0, group=True)


def c_evaluate_no_checkpoint(root, ws):
    (root / "empty").mkdir()
    return Outcome(*ccvae("evaluate", str(root / "empty"), "--data", str(ws["D"]), "--quiet"))


def _report_damaged(ws, name, damage):
    run = evaluated(ws, name)
    damage(run)
    code, err = ccvae("report", str(run))
    return Outcome(code, err, leftovers=" ".join(hidden(run / "report")))


def c_report_metrics_missing_key(root, ws):
    def damage(run):
        m = json.loads((run / "eval" / "metrics.json").read_text())
        del m["swap"]
        (run / "eval" / "metrics.json").write_text(json.dumps(m))
    return _report_damaged(ws, "r1", damage)


def c_report_metrics_wrong_type(root, ws):
    def damage(run):
        m = json.loads((run / "eval" / "metrics.json").read_text())
        m["classifiers"]["pose"] = "x"
        (run / "eval" / "metrics.json").write_text(json.dumps(m))
    return _report_damaged(ws, "r2", damage)


def c_report_metrics_binary(root, ws):
    return _report_damaged(ws, "r3", lambda run: (run / "eval" / "metrics.json").write_bytes(b"\xff\xfe\x00garbage"))


def c_report_metrics_is_dir(root, ws):
    def damage(run):
        (run / "eval" / "metrics.json").unlink()
        (run / "eval" / "metrics.json").mkdir()
    return _report_damaged(ws, "r4", damage)


def c_report_half_row(root, ws):
    def damage(run):
        with open(run / "metrics.csv", "a") as f:
            f.write("2,25,200,1.5,0.0")  # a kill in the middle of an append
    return _report_damaged(ws, "r5", damage)


def c_report_csv_binary(root, ws):
    return _report_damaged(ws, "r6", lambda run: (run / "metrics.csv").write_bytes(b"\xff\xfe\x00\x81" * 50))


def c_modes(root, ws):
    """With umask 022 every output is 0644 (folders 0755), as plain open()/mkdir() would make them."""
    old = os.umask(0o022)
    try:
        code, err = ccvae("data", "prepare", "--source", str(ws["S"]), "--out", str(root / "o.npz"), "--quiet")
        run = root / "run"
        train(ws, run)
        ccvae("evaluate", str(run), "--data", str(ws["D"]), "--device", "cpu", "--quiet")
        ccvae("report", str(run))
    finally:
        os.umask(old)
    want = {root / "o.npz": 0o644, run / "config.json": 0o644, run / "checkpoints" / "last.pt": 0o644,
            run / "eval": 0o755, run / "eval" / "metrics.json": 0o644, run / "report" / "index.html": 0o644}
    wrong = [f"{p.name} {oct(p.stat().st_mode & 0o777)}" for p, m in want.items()
             if not p.exists() or p.stat().st_mode & 0o777 != m]
    return Outcome(code, err, leftovers=", ".join(wrong))


def c_version(root, ws):
    p = subprocess.run([sys.executable, "-m", "ccvae", "--version"], capture_output=True, text=True, env=ENV)
    return Outcome(p.returncode, p.stderr, note="" if p.stdout.startswith("ccvae ") else "no version printed")


def c_bare_command(root, ws):
    code, err = ccvae()
    # Usage on one line, then the error line.
    lines = err.strip().splitlines()
    ok = len(lines) == 2 and lines[0].startswith("usage: ccvae") and lines[1].startswith("ccvae: error:")
    return Outcome(code, lines[-1] if ok else err, note="" if ok else "no usage line")


CASES = [
    Case("prepare: missing source", "", 2, c_missing_source),
    Case("prepare: folder without sprites_splits.mat", "", 2, c_no_splits),
    Case("prepare: truncated HDF5", "", 2, c_truncated_hdf5),
    Case("prepare: random bytes in HDF5 object headers", "2", 2, c_hdf5_object_header),
    Case("prepare: damaged HDF5 header, parallel readers", "2", 2, c_hdf5_object_header_parallel),
    Case("prepare: random bytes in HDF5 local heap", "2", 2, c_hdf5_heap),
    Case("prepare: a non-tar file as --source", "11", 2, c_not_a_tar),
    Case("prepare: truncated tarball", "", 2, c_truncated_tar),
    Case("prepare: --md5 in upper case", "16", 0, c_md5_upper_case),
    Case("prepare: --md5 with a folder source", "16", 2, c_md5_with_folder),
    Case("prepare: --out on a read-only file system", "5", 2, c_prepare_read_only, needs_root=True),
    Case("prepare: --out is a folder", "", 2, c_prepare_out_is_dir),
    Case("info: random bytes as .npz", "11", 2, c_npz_random_bytes),
    Case("info: header claims 60,000 characters", "7", 2, c_npz_header_claims_60000),
    Case("train: header claims 60,000 characters", "7", 2, c_npz_header_claims_60000_train),
    Case("info: truncated .npz", "", 2, c_npz_truncated),
    Case("train: bad data, then the retry", "1", 2, c_bad_data_then_retry),
    Case("train: bad data, then --resume", "1", 2, c_bad_data_then_resume),
    Case("train: model.image_size=64 on 60 px data", "8", 2, c_image_size),
    Case("train: model.image_size=8 (no room for the convs)", "8", 2, c_image_size_architecture),
    Case("train: --seed beyond 64 bits", "8", 2, c_seed_too_big),
    Case("train: --config names a folder", "8", 2, c_config_is_folder),
    Case("train: train.lr=inf", "8", 2, c_lr_inf),
    Case("train: train.kl_coef=nan", "8", 2, c_lr_nan),
    Case("train: unknown config key", "", 2, c_unknown_key),
    Case("train: invalid TOML", "", 2, c_bad_toml),
    Case("train: NaN before the first checkpoint", "9", 3, c_nan_before_checkpoint),
    Case("train: NaN after a checkpoint", "", 3, c_nan_after_checkpoint),
    Case("resume: 64 bit-rotted bytes in last.pt", "3", 2, c_bitrot_checkpoint),
    Case("resume: checkpoint with step 'abc'", "12", 2, c_checkpoint_step_str),
    Case("resume: checkpoint with config 5", "12", 2, c_checkpoint_config_int),
    Case("resume: truncated last.pt", "", 2, c_checkpoint_truncated),
    Case("resume: --max-steps below the current step", "14", 2, c_resume_below_step),
    Case("resume: a second process on a running run", "4", 2, c_concurrent_resume),
    Case("train: two fresh processes on one --out", "4", 2, c_concurrent_fresh),
    Case("train: kill -9 mid-run, then --resume", "", 0, c_kill9_resume),
    Case("train: Ctrl-C while importing", "10", 130, c_sigint_during_imports),
    Case("train: Ctrl-C while loading data", "10", 130, c_sigint_during_loading),
    Case("train: SIGTERM while training, then --resume", "", 130, c_sigterm_during_training),
    Case("train: disk full", "5", 2, c_disk_full, needs_root=True),
    Case("train: out of memory", "7", 2, c_out_of_memory),
    Case("evaluate: read-only run folder", "5", 2, c_evaluate_read_only, needs_root=True),
    Case("evaluate: SIGTERM mid-way", "15", 130, c_sigterm_during_evaluate),
    Case("evaluate: SIGTERM in the disentanglement metrics", "", 130, c_sigterm_during_disentanglement),
    Case("evaluate: Ctrl-C to the process group in the probes", "", 130, c_ctrl_c_during_probes),
    Case("evaluate: folder without a checkpoint", "", 2, c_evaluate_no_checkpoint),
    Case("report: metrics.json lacks a key", "13", 2, c_report_metrics_missing_key),
    Case("report: metrics.json field of the wrong type", "13", 2, c_report_metrics_wrong_type),
    Case("report: metrics.json is binary garbage", "13", 2, c_report_metrics_binary),
    Case("report: metrics.json is a folder", "13", 2, c_report_metrics_is_dir),
    Case("report: metrics.csv ends in a half-written row", "13", 0, c_report_half_row),
    Case("report: metrics.csv is binary garbage", "13", 2, c_report_csv_binary),
    Case("outputs: file modes under umask 022", "6", 0, c_modes),
    Case("cli: ccvae --version", "", 0, c_version),
    Case("cli: bare ccvae", "", 2, c_bare_command),
]


# -- the drill ----------------------------------------------------------------------------------------
def workspace(root: Path) -> dict:
    """Smoke data, a six-file original-format folder, a trained smoke run and an evaluated copy."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from ccvae.data.synthetic import make_sprites_dir, synthetic_packed

    ws = {"root": root}
    ws["D"] = synthetic_packed(root / "D.npz", n_chars=12)
    DATA_CACHE["D"] = ws["D"]
    ws["S"] = root / "S" / "sprites"
    make_sprites_dir(ws["S"])
    ws["R"] = root / "R"
    code, err = train(ws, ws["R"], "--set", "train.checkpoint_every=10")
    if code:
        raise RuntimeError(f"workspace: smoke training failed: {err}")
    ws["E"] = root / "E"
    shutil.copytree(ws["R"], ws["E"])
    code, err = ccvae("evaluate", str(ws["E"]), "--data", str(ws["D"]), "--device", "cpu", "--quiet")
    if code:
        raise RuntimeError(f"workspace: evaluation failed: {err}")
    return ws


def judge(case: Case, out: Outcome) -> dict[str, bool]:
    lines = [ln for ln in out.err.splitlines() if ln.strip()]
    checks = {"exit code": out.code == case.expect, "no traceback": "Traceback" not in out.err}
    if case.expect != 0:
        checks["one line"] = len(lines) == 1 and lines[0].startswith("ccvae: ")
    checks["nothing left"] = not out.leftovers
    if out.resumable is not None:
        checks["usable after"] = out.resumable
    checks["note"] = not out.note
    return checks


def run_cases(cases: list[Case], keep: Path | None = None, log=print) -> list[Row]:
    base = Path(tempfile.mkdtemp(prefix="ccvae-faults-", dir=keep))
    root_reason = can_mount()
    rows = []
    try:
        ws = workspace(base / "ws")
        for i, case in enumerate(cases):
            if case.needs_root and root_reason:
                rows.append(Row(case, None, skipped=root_reason))
                log(f"{case.name}: skipped ({root_reason})")
                continue
            root = base / f"case{i:02d}"
            root.mkdir()
            ws["root"] = root
            t0 = time.time()
            try:
                out = case.run(root, ws)
            except (subprocess.TimeoutExpired, subprocess.CalledProcessError, OSError) as e:
                out = Outcome(-1, f"drill error: {type(e).__name__}: {e}")
            row = Row(case, out, judge(case, out))
            rows.append(row)
            failed = [k for k, v in row.checks.items() if not v]
            log(f"{case.name}: exit {out.code} in {time.time() - t0:.1f} s"
                + (f"  FAILED {failed}: {out.err.strip()[-300:]} {out.leftovers} {out.note}" if failed else ""))
    finally:
        if keep is None:
            shutil.rmtree(base, ignore_errors=True)
    return rows


def table(rows: list[Row]) -> str:
    head = "| case | defect | exit (expected) | one line | no traceback | nothing left | usable after | result |"
    out = [head, "|" + "---|" * 8]
    for r in rows:
        if r.skipped:
            out.append(f"| {r.case.name} | {r.case.defect} | - | - | - | - | - | skipped: {r.skipped} |")
            continue
        mark = lambda k, c=r.checks: "-" if k not in c else ("yes" if c[k] else "NO")  # noqa: E731
        out.append(f"| {r.case.name} | {r.case.defect} | {r.outcome.code} ({r.case.expect}) | {mark('one line')} | "
                   f"{mark('no traceback')} | {mark('nothing left')} | {mark('usable after')} | "
                   f"{'pass' if r.ok else 'FAIL'} |")
    return "\n".join(out)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", help="comma-separated substrings of case names")
    p.add_argument("--keep", type=Path, help="keep the drill's files under this folder")
    args = p.parse_args()
    cases = [c for c in CASES if not args.only or any(s in c.name for s in args.only.split(","))]
    rows = run_cases(cases, args.keep, log=lambda m: print(m, file=sys.stderr, flush=True))
    print(table(rows))
    n_fail = sum(not r.ok for r in rows)
    print(f"\n{len(rows) - n_fail} passed, {n_fail} failed ({sum(bool(r.skipped) for r in rows)} skipped)")
    return 1 if n_fail else 0


if __name__ == "__main__":
    raise SystemExit(main())
