"""``ccvae compare RUN [RUN ...]``: the methods side by side, as the paper's Table 1, on one HTML page.

Every number comes from the runs' own files (``config.json``, ``eval/metrics.json``), measured by one
protocol; the paper's Table 1 stands beside them. The style grids are each run's
``eval/style_transfer.png``; ``ccvae evaluate`` draws them from the same test characters and poses
for every run of the same data and settings, which the page checks (``metrics.json["style_grid"]``).
"""

from __future__ import annotations

import html
from pathlib import Path

from ccvae.errors import UserError
from ccvae.fileio import ensure_writable, write_text
from ccvae.report import METHOD_TITLES, _img, _pct, _read_json, _table

# Table 1 of Jha et al. (ECCV 2018), 2D Sprites: test accuracy (%) of identity classifiers on z and on s.
PAPER_TABLE_1 = [
    ("szabo", "z 512 / s 64", 99.63, 99.79), ("mathieu", "z 512 / s 64", 11.98, 96.75),
    ("ccvae", "z 512 / s 64", 11.47, 97.16),
    ("szabo", "z 1024 / s 512", 99.65, 99.76), ("mathieu", "z 1024 / s 512", 12.25, 97.45),
    ("ccvae", "z 1024 / s 512", 11.61, 97.22),
]
METHOD_LABELS = METHOD_TITLES


def _run_summary(run_dir: Path) -> dict:
    """The numbers of one evaluated run (UserError when it is not one)."""
    if not run_dir.is_dir():
        raise UserError(f"{run_dir}: not a folder")
    cfg = _read_json(run_dir / "config.json", run_dir)
    m = _read_json(run_dir / "eval" / "metrics.json", run_dir)
    try:
        c, sw = m["classifiers"], m["swap"]
        ia, ih, po = c["identity_all"], c["identity_heldout"], c["pose"]
        return {
            "run": run_dir, "method": cfg.get("method", {}).get("name", "ccvae"),
            "dims": f"z {cfg['model']['style_dim']} / s {cfg['model']['class_dim']}",
            "id_z": ia["z"], "id_z_mean": ia["z_mean"], "id_s": ia["s"], "unseen_s": ih["s"], "unseen_z": ih["z"],
            "pose_z": po["z"], "pose_s": po["s"], "chance_all": ia["chance"], "chance_unseen": ih["chance"],
            "swap_psnr": sw["swap_psnr"], "recon_psnr": sw["reconstruction_psnr"],
            "active": m.get("latents", {}).get("active_units"), "steps": m.get("run", {}).get("steps"),
            "train_s": m.get("run", {}).get("train_wall_s"), "eval_s": m.get("eval_wall_s"),
            "grid": run_dir / "eval" / "style_transfer.png", "grid_inputs": m.get("style_grid"),
        }
    except (KeyError, TypeError) as e:
        raise UserError(f"{run_dir / 'eval' / 'metrics.json'}: damaged or from another version ({type(e).__name__}: "
                        f"{e}); run 'ccvae evaluate {run_dir}' again") from None


def _tt(r: dict) -> str:
    return f"{_pct(r['train_acc'])} / {_pct(r['test_acc'])}"


def _minutes(s: float | None) -> str:
    return "-" if s is None else f"{s / 60:.1f}"


def build_compare(run_dirs: list[str | Path], out_dir: str | Path) -> Path:
    """Write ``OUT_DIR/index.html`` comparing the evaluated runs ``run_dirs``; returns its path."""
    if not run_dirs:
        raise UserError("compare: give at least one run folder")
    runs = [_run_summary(Path(r)) for r in run_dirs]
    out_dir = Path(out_dir)
    ensure_writable(out_dir, "compare folder")
    rows = [[METHOD_LABELS.get(r["method"], r["method"]), r["run"].name, r["dims"],
             _tt(r["id_z"]), _pct(r["id_z_mean"]["test_acc"]), _tt(r["id_s"]), _pct(r["unseen_z"]["test_acc"]),
             _pct(r["unseen_s"]["test_acc"]), _pct(r["pose_z"]["test_acc"]), _pct(r["pose_s"]["test_acc"]),
             f"{r['swap_psnr']:.2f}", f"{r['recon_psnr']:.2f}", r["active"] if r["active"] is not None else "-",
             r["steps"] or "-", _minutes(r["train_s"]), _minutes(r["eval_s"])] for r in runs]
    header = ["method", "run", "dims", "identity from z (sampled) train / test %", "identity from z mean test %",
              "identity from s train / test %", "unseen identity from z %", "unseen identity from s %",
              "pose from z %", "pose from s %", "swap PSNR dB", "reconstruction PSNR dB", "active z dims", "steps",
              "training min", "evaluation min"]
    paper_rows = [[METHOD_LABELS[m], dims, f"{z:.2f}", f"{s:.2f}"] for m, dims, z, s in PAPER_TABLE_1]
    inputs = {repr(r["grid_inputs"]) for r in runs}
    same = len(inputs) == 1 and runs[0]["grid_inputs"] is not None
    note = ("All grids below are drawn from the same test characters and poses." if same else
            "<b>Warning:</b> these runs' grids were drawn from different inputs (other data or evaluation "
            "settings); compare them with care.")
    grids = "".join(
        f"<figure>{_img(r['grid']) if r['grid'].is_file() else '(no style_transfer.png)'}"
        f"<figcaption>{html.escape(METHOD_LABELS.get(r['method'], r['method']))}: {html.escape(r['run'].name)}"
        f"</figcaption></figure>" for r in runs)
    chance = runs[0]
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>ccvae compare</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 1400px; margin: 2em auto; color: #222; }}
table {{ border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }}
th, td {{ border: 1px solid #ccc; padding: 3px 7px; text-align: right; }} th {{ background: #f3f3f3; }}
td:first-child, td:nth-child(2) {{ text-align: left; }}
.grids {{ display: flex; flex-wrap: wrap; gap: 1em; }} figure {{ margin: 0; width: 330px; }}
figure img {{ image-rendering: pixelated; width: 100%; }}
</style></head><body>
<h1>Methods compared on 2D Sprites</h1>
<p>Measured by one protocol (<code>ccvae evaluate</code>): identity of all 672 characters (each one's poses split
80/20, chance {_pct(chance['chance_all'])} %), identity of the 100 unseen test characters (chance
{_pct(chance['chance_unseen'])} %), pose of test characters, ground-truth swaps dec(z of B in pose k, s of A) against
A in pose k. z is the posterior sample the decoder is fed; the z-mean column is the variable the reference
re-implementation probed.</p>
{_table(header, rows)}
<h2>The paper's Table 1 (2D Sprites, test accuracy %)</h2>
<p>Jha et al. (ECCV 2018) measured identity from z (low is better: z should not hold identity) and from s. Its probe
protocol and which z it probed are not published; ML-VAE is not in its table.</p>
{_table(["method", "dims", "identity from z %", "identity from s %"], paper_rows)}
<h2>Style transfer</h2>
<p>Top row: the images that give z (pose); left column: the images that give s (identity); cell (i, j) =
dec(z of column j, s of row i). {note}</p>
<div class="grids">{grids}</div>
</body></html>
"""
    out = out_dir / "index.html"
    write_text(out, page)
    return out
