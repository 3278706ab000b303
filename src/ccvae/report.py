"""``ccvae report RUN_DIR``: one self-contained HTML page (images embedded) from the run folder's files."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

from ccvae.errors import UserError
from ccvae.fileio import write_text
from ccvae.train import last_metric

# Table 1 of Jha et al. (ECCV 2018), 2D Sprites rows: test accuracy (%) of identity classifiers.
PAPER_TABLE = [
    {"method": "Mathieu et al. (2016)", "dims": "z 512 / s 64", "z_acc": 11.98, "s_acc": 96.75},
    {"method": "Cycle-consistent VAE (paper)", "dims": "z 512 / s 64", "z_acc": 11.47, "s_acc": 97.16},
    {"method": "Mathieu et al. (2016)", "dims": "z 1024 / s 512", "z_acc": 12.25, "s_acc": 97.45},
    {"method": "Cycle-consistent VAE (paper)", "dims": "z 1024 / s 512", "z_acc": 11.61, "s_acc": 97.22},
]
# The public re-implementation's run (its validation numbers).
REFERENCE_RUN = {"s_acc": 77.0, "z_acc": 16.0, "regen_s_to_z": 0.00023, "regen_z_to_s": 0.0054,
                 "final_reconstruction": 0.0033}

FIGURES = [
    ("style_transfer.png", "Style transfer: the top row supplies z (pose), the left column s (identity); "
                           "cell (i, j) = dec(z of column j, s of row i)."),
    ("interpolation_1.png", "Linear interpolation: z interpolated across columns, s down rows; "
                            "top-left dec(z1, s1), bottom-right dec(z2, s2)."),
    ("interpolation_2.png", "Linear interpolation, second test pair."),
    ("interpolation_3.png", "Linear interpolation, third test pair."),
    ("reconstruction.png", "Reconstructions: originals (odd rows) above dec(z_mu, s) (even rows)."),
    ("losses.png", "Training losses, drawn from metrics.csv."),
    ("classifier_curves.png", "Classifier probes: accuracy per epoch, train and test (solid s, dashed z)."),
    ("predictor_curves.png", "Predictors: MSE per epoch on training characters and on test characters."),
    ("predictor_original.png", "Predictors: a batch of original test images."),
    ("predictor_s_to_z.png", "s -> z predictor: dec(predicted z, true s); white underline = identity misclassified."),
    ("predictor_z_to_s.png", "z -> s predictor: dec(true z, predicted s); white underline = identity misclassified."),
    ("embedding.png", "2-D PCA of s and z of the test characters, coloured by identity and by pose."),
]


def _img(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(path.name)}">'


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}"


def _table(header: list[str], rows: list[list]) -> str:
    th = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


def build_report(run_dir: str | Path) -> Path:
    """Write ``RUN_DIR/report/index.html`` from config.json, metrics.csv and eval/."""
    run_dir = Path(run_dir)
    eval_dir = run_dir / "eval"
    try:
        m = json.loads((eval_dir / "metrics.json").read_text())
        cfg = json.loads((run_dir / "config.json").read_text())
    except FileNotFoundError as e:
        raise UserError(f"{e.filename}: not found; run 'ccvae evaluate {run_dir}' first") from None
    except json.JSONDecodeError as e:
        raise UserError(f"{run_dir}: invalid JSON in the run folder ({e})") from None

    c = m["classifiers"]
    ia, ih, po = c["identity_all"], c["identity_heldout"], c["pose"]
    dims = f"z {cfg['model']['style_dim']} / s {cfg['model']['class_dim']}"
    compare = [[r["method"], r["dims"], "672 identities, test poses", f"{r['z_acc']:.2f}", f"{r['s_acc']:.2f}", "-", "-", "-"]
               for r in PAPER_TABLE]
    compare.append(["Reference re-implementation (its run)", "z 512 / s 512", "672 identities, validation",
                    f"{REFERENCE_RUN['z_acc']:.2f}", f"{REFERENCE_RUN['s_acc']:.2f}",
                    f"{REFERENCE_RUN['regen_s_to_z']:.5f}", f"{REFERENCE_RUN['regen_z_to_s']:.4f}",
                    f"{REFERENCE_RUN['final_reconstruction']:.4f}"])
    final_recon = last_metric(run_dir / "metrics.csv", "reconstruction")
    compare.append(["This run (ccvae)", dims, "672 identities, held-out 20% of poses",
                    _pct(ia["z"]["test_acc"]), _pct(ia["s"]["test_acc"]),
                    f"{m['predictors']['s_to_z']['regeneration_mse']:.5f}",
                    f"{m['predictors']['z_to_s']['regeneration_mse']:.4f}",
                    "-" if final_recon is None else f"{final_recon:.4f}"])

    probe_rows = []
    for name, task in (("identity_all", ia), ("identity_heldout", ih), ("pose", po)):
        for latent in ("s", "z"):
            r = task[latent]
            probe_rows.append([name, latent, task["n_classes"], _pct(r["train_acc"]), _pct(r["test_acc"]),
                               _pct(task["chance"]), r["epochs"]])
    pred_rows = [[k, f"{v['train_loss']:.6f}", f"{v['val_loss']:.6f}", f"{v['val_r2']:.3f}",
                  f"{v['regeneration_mse']:.6f}"] for k, v in m["predictors"].items() if isinstance(v, dict)]
    sw = m["swap"]
    swap_rows = [["ground-truth swap dec(z_B,k, s_A,k') vs x_A,k", sw["n_swaps"], f"{sw['swap_mse']:.5f}", f"{sw['swap_psnr']:.2f}"],
                 ["plain reconstruction dec(z, s) of test images", sw["n_reconstructed"], f"{sw['reconstruction_mse']:.5f}",
                  f"{sw['reconstruction_psnr']:.2f}"],
                 ["no pose transfer: dec(z_A,k', s_A,k') vs x_A,k", sw["n_swaps"], f"{sw['wrong_pose_mse']:.5f}",
                  f"{sw['wrong_pose_psnr']:.2f}"]]
    run = m.get("run", {})
    train_s = run.get("train_wall_s")
    facts = [["training steps", run.get("steps")], ["parameters", run.get("parameters")],
             ["precision", run.get("precision")],
             ["training wall time", "-" if train_s is None else f"{train_s:.0f} s ({train_s / 60:.1f} min)"],
             ["evaluation wall time", f"{m.get('eval_wall_s', 0):.0f} s"], ["device", cfg.get("device")],
             ["data", m["data"]["path"]]]
    figs = []
    for name, caption in FIGURES:
        p = eval_dir / name
        if p.is_file():
            figs.append(f"<figure>{_img(p)}<figcaption>{html.escape(caption)}</figcaption></figure>")
    cfg_text = json.dumps({k: cfg[k] for k in ("model", "train")}, indent=2)
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>ccvae report: {html.escape(run_dir.name)}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; color: #222; }}
table {{ border-collapse: collapse; margin: 0.5em 0 1.5em; }} th, td {{ border: 1px solid #ccc; padding: 3px 8px; text-align: right; }}
th {{ background: #f3f3f3; }} td:first-child {{ text-align: left; }}
figure {{ margin: 1.5em 0; }} figure img {{ image-rendering: pixelated; max-width: 100%; }}
pre {{ background: #f7f7f7; padding: 1em; overflow: auto; }}
</style></head><body>
<h1>Cycle-consistent VAE on 2D Sprites: {html.escape(run_dir.name)}</h1>
<p>Jha, Anand, Singh, Veeravasarapu, <i>Disentangling Factors of Variation with Cycle-Consistent Variational
Auto-Encoders</i>, ECCV 2018. Encodings use z = mean and s, model in eval mode.</p>
<h2>Side by side with the paper and the reference run</h2>
<p>Identity classification accuracy (%) from z (should be low) and from s (should be high); regeneration error of
the predictors (image MSE); the final training reconstruction loss (MSE(x1', x1) + MSE(x2', x2)). The paper's and the
reference run's protocols differ from ours in details (see the caption of each column); chance for 672 identities is
{100 / 672:.2f} %.</p>
{_table(["method", "dims", "protocol", "z acc", "s acc", "regen s->z", "regen z->s", "final recon"], compare)}
<h2>Latent classifiers</h2>
<p>identity_all: all characters, each one's poses split 80/20. identity_heldout: only the 100 test characters, never
seen in training. pose: test characters, trained on 80 % of them and tested on the others.</p>
{_table(["task", "latent", "classes", "train acc %", "test acc %", "chance %", "epochs"], probe_rows)}
<h2>Predictors</h2>
<p>Trained on training characters' encodings, validated on test characters'. Regeneration error: image MSE of
dec(predicted z, true s) (s_to_z) or dec(true z, predicted s) (z_to_s) on all test images.</p>
{_table(["predictor", "train MSE", "validation MSE", "validation R^2", "regeneration MSE"], pred_rows)}
<h2>Ground-truth swaps</h2>
<p>Every character is drawn in the same poses, so dec(z of B in pose k, s of A in pose k') has a true answer: A in pose k.</p>
{_table(["measure", "images", "MSE", "PSNR dB"], swap_rows)}
<h2>Run</h2>
{_table(["", "value"], facts)}
<h2>Figures</h2>
{''.join(figs)}
<h2>Config</h2>
<pre>{html.escape(cfg_text)}</pre>
</body></html>
"""
    out = run_dir / "report" / "index.html"
    write_text(out, page)
    return out
