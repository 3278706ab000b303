"""``ccvae train|run --seeds 0,1,2``: one process per seed, side by side, then a mean and spread.

Each seed is an ordinary run folder, ``OUT/seed<N>``, trained by a child ``ccvae`` process with the
same arguments plus ``--seed N`` (so resume, checkpoints and evaluation are the ones of a single run);
its output goes to ``OUT/seed<N>.log``. On a CPU the cores are split between the children (threads);
on a GPU they share the device (independent small processes fill a launch-bound GPU better than one).
After ``run``, ``OUT/seeds.json`` holds every seed's headline numbers with their mean and standard deviation.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from ccvae.errors import UserError
from ccvae.fileio import write_json

# Headline numbers aggregated over seeds: (name, path into eval/metrics.json).
HEADLINE = [
    ("identity_all_s_test", ("classifiers", "identity_all", "s", "test_acc")),
    ("identity_all_z_test", ("classifiers", "identity_all", "z", "test_acc")),
    ("identity_all_z_mean_test", ("classifiers", "identity_all", "z_mean", "test_acc")),
    ("identity_heldout_s_test", ("classifiers", "identity_heldout", "s", "test_acc")),
    ("identity_heldout_z_test", ("classifiers", "identity_heldout", "z", "test_acc")),
    ("pose_z_test", ("classifiers", "pose", "z", "test_acc")),
    ("pose_s_test", ("classifiers", "pose", "s", "test_acc")),
    ("swap_psnr", ("swap", "swap_psnr")),
    ("reconstruction_psnr", ("swap", "reconstruction_psnr")),
    ("active_units", ("latents", "active_units")),
]


def parse_seeds(text: str) -> list[int]:
    """``"0,1,2"`` -> [0, 1, 2]; a clear error for anything else."""
    try:
        seeds = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise UserError(f"--seeds {text!r}: expected comma-separated integers, e.g. 0,1,2") from None
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise UserError(f"--seeds {text!r}: expected distinct non-negative integers, e.g. 0,1,2")
    return seeds


def _strip(argv: list[str], options: tuple[str, ...]) -> list[str]:
    """``argv`` without ``options`` and their values (``--out X`` and ``--out=X`` alike)."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a in options:
            skip = True
            continue
        if any(a.startswith(o + "=") for o in options):
            continue
        out.append(a)
    return out


def run_seeds(argv: list[str], seeds: list[int], out_dir: Path, resume: bool, cuda: bool) -> int:
    """Start one child per seed with ``argv`` (the parent's arguments), wait for all, aggregate after ``run``."""
    command = argv[0]
    base = _strip(argv[1:], ("--seeds", "--out", "--seed"))
    out_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    if not cuda:  # split the cores; oversubscribed threads slow every child far more than the split does
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // len(seeds)))
    children = []
    for s in seeds:
        child = [sys.executable, "-m", "ccvae", command, *base, "--out", str(out_dir / f"seed{s}"), "--quiet"]
        if not resume:
            child += ["--seed", str(s)]
        log = open(out_dir / f"seed{s}.log", "w")  # noqa: SIM115  (closed below, after the child ends)
        children.append((s, subprocess.Popen(child, stdout=log, stderr=subprocess.STDOUT, env=env), log))
        print(f"seed {s}: {out_dir / f'seed{s}'} (log {out_dir / f'seed{s}.log'})", file=sys.stderr)
    codes = {}
    try:
        for s, proc, log in children:
            codes[s] = proc.wait()
            log.close()
    except KeyboardInterrupt:  # children got the same Ctrl-C (one process group): they checkpoint and stop
        for s, proc, log in children:
            codes[s] = proc.wait()
            log.close()
        raise
    failed = {s: c for s, c in codes.items() if c != 0}
    for s, c in failed.items():
        print(f"seed {s}: exit code {c}; see {out_dir / f'seed{s}.log'}", file=sys.stderr)
    if command == "run" and not failed:
        summary = aggregate([out_dir / f"seed{s}" for s in seeds])
        write_json(out_dir / "seeds.json", summary)
        for k, v in summary["mean"].items():
            print(f"  {k:26s} {v:9.4f} +- {summary['std'][k]:.4f}", file=sys.stderr)
        print(out_dir / "seeds.json")
    return max(failed.values(), default=0)


def aggregate(run_dirs: list[Path]) -> dict:
    """Every run's headline numbers (eval/metrics.json) with their mean and sample standard deviation."""
    per_run = {}
    for run in run_dirs:
        path = run / "eval" / "metrics.json"
        try:
            m = json.loads(path.read_text())
            row = {}
            for name, keys in HEADLINE:
                v = m
                for k in keys:
                    v = v[k]
                row[name] = float(v)
        except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            raise UserError(f"{path}: cannot read the run's metrics ({type(e).__name__}: {e})") from None
        per_run[run.name] = row
    names = [n for n, _ in HEADLINE]
    cols = {n: [r[n] for r in per_run.values()] for n in names}
    return {"runs": per_run, "n": len(per_run),
            "mean": {n: statistics.fmean(v) for n, v in cols.items()},
            "std": {n: statistics.stdev(v) if len(v) > 1 else 0.0 for n, v in cols.items()}}
