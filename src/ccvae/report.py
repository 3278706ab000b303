"""``ccvae report RUN_DIR``: one self-contained HTML page (images embedded) from the run folder's files."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

from ccvae.errors import UserError
from ccvae.fileio import ensure_writable, last_metric, write_text

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

METHOD_TITLES = {"ccvae": "Cycle-consistent VAE", "mathieu": "Mathieu et al. (2016)", "szabo": "Szabó et al. (2018)",
                 "mlvae": "ML-VAE (Bouchacourt et al. 2018)"}
LATENT_LABELS = {"s": "s", "z": "z (sampled)", "z_mean": "z mean (raw)", "z_mean_std": "z mean (standardised)"}

FIGURES = [
    ("style_transfer.png", "Style transfer: the top row supplies z (pose), the left column s (identity); "
                           "cell (i, j) = dec(z of column j, s of row i)."),
    ("interpolation_1.png", "Linear interpolation: z interpolated across columns, s down rows; "
                            "top-left dec(z1, s1), bottom-right dec(z2, s2)."),
    ("interpolation_2.png", "Linear interpolation, second test pair."),
    ("interpolation_3.png", "Linear interpolation, third test pair."),
    ("reconstruction.png", "Reconstructions: originals (odd rows) above dec(z_mu, s) (even rows)."),
    ("losses.png", "Training losses, drawn from metrics.csv."),
    ("learning_curve.png", "Learning curve: every kept checkpoint scored with fast probes and the swap PSNR, "
                           "against training step and wall time."),
    ("partition.png", "Partition table: for each ground-truth factor, a linear probe's balanced accuracy from s and "
                      "from sampled z (trained on 80 % of the test characters, scored on the rest), chance, and each "
                      "part's share of the per-dimension mutual information."),
    ("mutual_info.png", "Mutual information of every dimension (s, then sampled z) with every factor."),
    ("traversals.png", "Latent traversals: one row per active z dimension, swept from -3 to +3 standard deviations "
                       "of its mean across images, s fixed."),
    ("classifier_curves.png", "Classifier probes: accuracy per epoch, train and test (solid s, dashed sampled z, "
                              "dotted standardised z mean)."),
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


def _read_json(path: Path, run_dir: Path) -> dict:
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path}: not found; run 'ccvae evaluate {run_dir}' first") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: damaged ({type(e).__name__}); run 'ccvae evaluate {run_dir}' again") from None
    except OSError as e:
        raise UserError(f"{path}: cannot read ({e.strerror or e})") from None
    if not isinstance(d, dict):
        raise UserError(f"{path}: damaged (not a JSON object); run 'ccvae evaluate {run_dir}' again")
    return d


def build_report(run_dir: str | Path) -> Path:
    """Write ``RUN_DIR/report/index.html`` from config.json, metrics.csv and eval/."""
    run_dir = Path(run_dir)
    eval_dir = run_dir / "eval"
    m = _read_json(eval_dir / "metrics.json", run_dir)
    cfg = _read_json(run_dir / "config.json", run_dir)
    ensure_writable(run_dir / "report", "report folder")
    try:
        page = _page(run_dir, eval_dir, m, cfg)
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as e:
        raise UserError(f"{eval_dir / 'metrics.json'}: damaged or from another version "
                        f"({type(e).__name__}: {str(e)[:80]}); run 'ccvae evaluate {run_dir}' again") from None
    out = run_dir / "report" / "index.html"
    write_text(out, page)
    return out


def _page(run_dir: Path, eval_dir: Path, m: dict, cfg: dict) -> str:
    """The HTML of the report (raises KeyError / TypeError on a malformed metrics.json)."""

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
    method = cfg.get("method", {}).get("name", "ccvae")
    compare.append([f"This run ({method})", dims, "672 identities, held-out 20% of poses",
                    _pct(ia["z"]["test_acc"]), _pct(ia["s"]["test_acc"]),
                    f"{m['predictors']['s_to_z']['regeneration_mse']:.5f}",
                    f"{m['predictors']['z_to_s']['regeneration_mse']:.4f}",
                    "-" if final_recon is None else f"{final_recon:.4f}"])

    probe_rows = []
    for name, task in (("identity_all", ia), ("identity_heldout", ih), ("pose", po)):
        for latent, label in LATENT_LABELS.items():
            r = task.get(latent)
            if r is not None:
                probe_rows.append([name, label, task["n_classes"], _pct(r["train_acc"]), _pct(r["test_acc"]),
                                   _pct(task["chance"]), r["epochs"]])
    lat = m.get("latents", {})
    headline = [
        ("ground-truth swap PSNR", f"{m['swap']['swap_psnr']:.2f} dB",
         f"reconstruction {m['swap']['reconstruction_psnr']:.2f} dB; no pose transfer {m['swap']['wrong_pose_psnr']:.2f} dB"),
        ("identity of unseen characters from s", f"{_pct(ih['s']['test_acc'])} %", f"chance {_pct(ih['chance'])} %"),
        ("identity from sampled z", f"{_pct(ih['z']['test_acc'])} % / {_pct(ia['z']['test_acc'])} %",
         f"unseen / all characters; chance {_pct(ih['chance'])} % / {_pct(ia['chance'])} %"),
        ("pose from sampled z", f"{_pct(po['z']['test_acc'])} %",
         f"chance {_pct(po['chance'])} %; {lat.get('active_units', '-')} of {lat.get('dims', '-')} z dimensions active"),
    ]
    cards = "".join(f'<div class="card"><div class="num">{html.escape(v)}</div><div>{html.escape(k)}</div>'
                    f'<div class="sub">{html.escape(sub)}</div></div>' for k, v, sub in headline)
    grid = eval_dir / "style_transfer.png"
    top_grid = (f"<figure>{_img(grid)}<figcaption>{html.escape(FIGURES[0][1])}</figcaption></figure>"
                if grid.is_file() else "")
    dis = m.get("disentanglement")
    dis_rows, part_rows, dis_n = [], [], "-"
    if dis:
        dis_n = (f"{dis['n_train']:,} / {dis['n_test']:,} training / test images (SAP) and "
                 f"{dis['dci_train']:,} / {dis['dci_test']:,} (DCI, on s + sampled z only)")
        for rep, label in (("s", "s"), ("z", "z (sampled)"), ("z_mean", "z mean"), ("s+z", "s + z (sampled)")):
            d = dis["dci"].get(rep)
            dis_rows.append([label, f"{dis['mig'][rep]['mig']:.3f}", f"{dis['sap'][rep]['sap']:.3f}",
                             *(("-", "-", "-") if d is None else (f"{d['disentanglement']:.3f}",
                               f"{d['completeness']:.3f}", f"{d['informativeness_test']:.3f}"))])
        part_rows = [[r["factor"], r["kind"], r["values"], _pct(r["s_balanced_acc"]), _pct(r["z_balanced_acc"]),
                      _pct(r["chance"]), f"{r['s_mi_share']:.2f}"] for r in dis["partition"]]
    latent_rows = []
    if lat:
        latent_rows = [["active z dimensions (variance of the mean over test images > 0.01)",
                        f"{lat['active_units']} of {lat['dims']}"],
                       ["KL(q(z|x) || N(0, I)), mean over test images", f"{lat['kl_total']:.3f} nats"],
                       ["active dimensions", ", ".join(map(str, lat["active"])) or "none"]]
    pred_rows = [[k, f"{v['train_loss']:.6f}", f"{v['val_loss']:.6f}", f"{v['val_r2']:.3f}",
                  f"{v['regeneration_mse']:.6f}"] for k, v in m["predictors"].items() if isinstance(v, dict)]
    sw = m["swap"]
    swap_rows = [["ground-truth swap dec(z_B,k, s_A,k') vs x_A,k", sw["n_swaps"], f"{sw['swap_mse']:.5f}", f"{sw['swap_psnr']:.2f}"],
                 ["plain reconstruction dec(z, s) of test images", sw["n_reconstructed"], f"{sw['reconstruction_mse']:.5f}",
                  f"{sw['reconstruction_psnr']:.2f}"],
                 ["no pose transfer: dec(z_A,k', s_A,k') vs x_A,k", sw["n_swaps"], f"{sw['wrong_pose_mse']:.5f}",
                  f"{sw['wrong_pose_psnr']:.2f}"]]
    if "same_character_mse" in sw:  # evaluations before the decomposition lack these rows
        swap_rows += [["same character: dec(z_A,k, s_A,k') vs x_A,k", sw["n_swaps"], f"{sw['same_character_mse']:.5f}",
                       f"{sw['same_character_psnr']:.2f}"],
                      ["pose code: dec(mean of z_C,k over C != A, s_A,k') vs x_A,k", sw["n_swaps"],
                       f"{sw['mean_pose_code_mse']:.5f}", f"{sw['mean_pose_code_psnr']:.2f}"]]
    # torch comes with it: not before metrics.json has been read and checked.
    from ccvae.checkpoint import describe_weights

    run = m.get("run", {})
    train_s = run.get("train_wall_s")
    facts = [["training steps", run.get("steps")], ["parameters", run.get("parameters")],
             ["precision", run.get("precision")],
             ["weights scored", describe_weights(m.get("settings", {}).get("weights", "live"))],
             ["training wall time", "-" if train_s is None else f"{train_s:.0f} s ({train_s / 60:.1f} min)"],
             ["evaluation wall time", f"{m.get('eval_wall_s', 0):.0f} s"
              + "".join(f"; {k.replace('_', ' ')} {v:.0f} s" for k, v in m.get("eval_stage_s", {}).items())],
             ["device", cfg.get("device")],
             ["data", m["data"]["path"]]]
    figs = []
    for name, caption in FIGURES[1:]:  # the style grid opens the page
        p = eval_dir / name
        if p.is_file():
            figs.append(f"<figure>{_img(p)}<figcaption>{html.escape(caption)}</figcaption></figure>")
    cfg_text = json.dumps({k: cfg[k] for k in ("model", "train", "method") if k in cfg}, indent=2)
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>ccvae report: {html.escape(run_dir.name)}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; color: #222; }}
table {{ border-collapse: collapse; margin: 0.5em 0 1.5em; }} th, td {{ border: 1px solid #ccc; padding: 3px 8px; text-align: right; }}
th {{ background: #f3f3f3; }} td:first-child {{ text-align: left; }}
figure {{ margin: 1.5em 0; }} figure img {{ image-rendering: pixelated; max-width: 100%; }}
pre {{ background: #f7f7f7; padding: 1em; overflow: auto; }}
.cards {{ display: flex; gap: 1em; margin: 1em 0; }} .card {{ flex: 1; border: 1px solid #ccc; padding: 0.6em; }}
.num {{ font-size: 1.6em; font-weight: bold; }} .sub {{ color: #666; font-size: 0.85em; }}
</style></head><body>
<h1>{html.escape(METHOD_TITLES.get(method, method))} on 2D Sprites: {html.escape(run_dir.name)}</h1>
<p>Method: {html.escape(METHOD_TITLES.get(method, method))}. The package reproduces Jha, Anand, Singh, Veeravasarapu,
<i>Disentangling Factors of Variation with Cycle-Consistent Variational Auto-Encoders</i>, ECCV 2018, and the methods it
was compared with. Model in eval mode; images, swaps and predictors use z = its mean.</p>
<div class="cards">{cards}</div>
{top_grid}
<h2>Side by side with the paper and the reference run</h2>
<p>Identity classification accuracy (%) from z (should be low) and from s (should be high); regeneration error of
the predictors (image MSE); the final training reconstruction loss (MSE(x1', x1) + MSE(x2', x2)). The paper's and the
reference run's protocols differ from ours in details (see the caption of each column); chance for 672 identities is
{100 / 672:.2f} %.</p>
{_table(["method", "dims", "protocol", "z acc", "s acc", "regen s->z", "regen z->s", "final recon"], compare)}
<p>Which z: the reference re-implementation probed the raw z mean (its <code>reparameterize(training=False)</code>
returns mu); the paper does not say and its probe code is unpublished. This run's row gives the sampled z, the headline
of this package; the table below gives all three.</p>
<h2>Latent classifiers</h2>
<p>identity_all: all characters, each one's poses split 80/20. identity_heldout: only the 100 test characters, never
seen in training. pose: test characters, trained on 80 % of them and tested on the others. z is probed three ways:
a posterior sample (what the decoder is fed), the raw mean, and the mean standardised per dimension (which blows the
residue of collapsed dimensions, never passed on by sampling, up to unit variance).</p>
{_table(["task", "latent", "classes", "train acc %", "test acc %", "chance %", "epochs"], probe_rows)}
<h2>Disentanglement metrics (disentanglement_lib definitions)</h2>
<p>On the test characters' images; factors: 7 attributes (identity), action, direction and frame (pose).
MIG on all images; SAP and DCI on {dis_n}. The ideal: identity factors in s only, pose factors in z only.</p>
{_table(["representation", "MIG", "SAP", "DCI disentanglement", "DCI completeness", "DCI informativeness (test acc)"], dis_rows)}
{_table(["factor", "kind", "values", "s balanced acc %", "z balanced acc %", "chance %", "s share of MI"], part_rows)}
<h2>What z transmits</h2>
{_table(["", "value"], latent_rows)}
<h2>Predictors</h2>
<p>Trained on training characters' encodings, validated on test characters'. Regeneration error: image MSE of
dec(predicted z, true s) (s_to_z) or dec(true z, predicted s) (z_to_s) on all test images.</p>
{_table(["predictor", "train MSE", "validation MSE", "validation R^2", "regeneration MSE"], pred_rows)}
<h2>Ground-truth swaps</h2>
<p>Every character is drawn in the same poses, so dec(z of B in pose k, s of A in pose k') has a true answer: A in pose k.
The last two rows say where the swap's error comes from: with A's own z (the forward cycle's task) and with a pose code
that holds no single character (pose k's z mean over the other characters). A swap well below the same-character row
means z carries the character as well as the pose, or that the decoder renders a z differently under another s.</p>
{_table(["measure", "images", "MSE", "PSNR dB"], swap_rows)}
<h2>Run</h2>
{_table(["", "value"], facts)}
<h2>Figures</h2>
{''.join(figs)}
<h2>Config</h2>
<pre>{html.escape(cfg_text)}</pre>
</body></html>
"""
    return page
