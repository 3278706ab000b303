"""The ``ccvae`` command line. Every user error is one line on stderr and exit code 2."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ccvae.errors import UserError


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse already exits 2; keep it to one line
        self.exit(2, f"{self.prog}: error: {message}\n")


def _data_prepare(args: argparse.Namespace) -> int:
    from ccvae.data.paths import ccvae_home, default_data_path
    from ccvae.data.prepare import prepare

    out = Path(args.out) if args.out else default_data_path()
    if out.is_dir():
        raise UserError(f"{out}: --out is a directory; give a file path ending in .npz")
    prepare(args.source, out, cache=ccvae_home(), md5=args.md5, workers=args.workers, quiet=args.quiet)
    print(out)
    return 0


def _data_info(args: argparse.Namespace) -> int:
    from ccvae.data.info import describe
    from ccvae.data.paths import resolve_data_path

    print(describe(resolve_data_path(args.data)))
    return 0


def _train_config(args: argparse.Namespace):
    from ccvae.config import build_config

    overrides = list(args.set or [])
    for flag, key in (("epochs", "train.epochs"), ("max_steps", "train.max_steps"), ("seed", "train.seed")):
        if getattr(args, flag, None) is not None:
            overrides.append(f"{key}={getattr(args, flag)}")
    return build_config(args.preset, args.config, overrides)


def _default_run_dir(preset: str) -> Path:
    import time

    return Path("runs") / f"{preset}-{time.strftime('%Y%m%d-%H%M%S')}"


def _train(args: argparse.Namespace) -> int:
    from ccvae.data.paths import resolve_data_path
    from ccvae.train import train

    if args.resume:
        if not args.out:
            raise UserError("--resume needs --out RUN_DIR (the run to continue)")
        changed = [f for f in ("config", "set", "seed") if getattr(args, f)] + (
            ["preset"] if args.preset != "paper" else [])
        if changed:
            raise UserError(f"--resume continues a run with its own config; drop --{changed[0].replace('_', '-')} "
                            "(only --epochs and --max-steps may change)")
        cfg = None
        overrides = {k: v for k, v in (("epochs", args.epochs), ("max_steps", args.max_steps)) if v is not None}
    else:
        cfg, overrides = _train_config(args), None
    data = resolve_data_path(args.data)
    run_dir = Path(args.out) if args.out else _default_run_dir(args.preset)
    result = train(cfg, data, run_dir, args.device, resume=args.resume, quiet=args.quiet,
                   resume_overrides=overrides)
    if result.interrupted:
        print(f"interrupted at step {result.step}; resume with: ccvae train --out {run_dir} --resume", file=sys.stderr)
        return 130
    print(run_dir)
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from ccvae.data.paths import resolve_data_path
    from ccvae.evaluate.runner import evaluate_run
    from ccvae.hardware import resolve_device

    data = resolve_data_path(args.data)
    log = (lambda msg: None) if args.quiet else (lambda msg: print(f"evaluate: {msg}", file=sys.stderr))
    m = evaluate_run(args.run_dir, data, device=resolve_device(args.device), log=log)
    print(Path(args.run_dir) / "eval" / "metrics.json")
    if not args.quiet:
        _print_summary(m)
    return 0


def _print_summary(m: dict) -> None:
    c, sw = m["classifiers"], m["swap"]
    for task in ("identity_all", "identity_heldout", "pose"):
        print(f"  {task:17s} s acc {100 * c[task]['s']['test_acc']:6.2f} %   z acc {100 * c[task]['z']['test_acc']:6.2f} %"
              f"   (chance {100 * c[task]['chance']:.2f} %)", file=sys.stderr)
    print(f"  swap PSNR {sw['swap_psnr']:.2f} dB (MSE {sw['swap_mse']:.5f}); reconstruction PSNR "
          f"{sw['reconstruction_psnr']:.2f} dB", file=sys.stderr)


def _report(args: argparse.Namespace) -> int:
    from ccvae.report import build_report

    print(build_report(args.run_dir))
    return 0


def _run(args: argparse.Namespace) -> int:
    """prepare (if needed) -> train -> evaluate -> report."""
    from ccvae.data.paths import candidate_data_path, ccvae_home
    from ccvae.data.prepare import prepare
    from ccvae.evaluate.runner import evaluate_run
    from ccvae.hardware import resolve_device
    from ccvae.report import build_report
    from ccvae.train import train

    cfg = _train_config(args)
    data = candidate_data_path(args.data)
    if not data.is_file():
        if args.data:
            raise UserError(f"{data}: --data file not found")
        print(f"data not found at {data}; preparing it", file=sys.stderr)
        prepare(None, data, cache=ccvae_home(), quiet=args.quiet)
    run_dir = Path(args.out) if args.out else _default_run_dir(args.preset)
    result = train(cfg, data, run_dir, args.device, quiet=args.quiet)
    if result.interrupted:
        print(f"interrupted; resume with: ccvae train --out {run_dir} --resume", file=sys.stderr)
        return 130
    log = (lambda msg: None) if args.quiet else (lambda msg: print(f"evaluate: {msg}", file=sys.stderr))
    m = evaluate_run(run_dir, data, device=resolve_device(args.device), log=log)
    if not args.quiet:
        _print_summary(m)
    report = build_report(run_dir)
    print(f"report: {report}")
    return 0


def _add_train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", help="packed .npz (default: $CCVAE_DATA, then $CCVAE_HOME/sprites60.npz)")
    p.add_argument("--preset", default="paper", choices=("paper", "quick", "smoke"),
                   help="paper: the reference run; quick: ~35 min on a 2-core CPU; smoke: seconds")
    p.add_argument("--config", help="TOML file with [model] and [train] tables, applied over the preset")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override any config field, e.g. --set train.lr=5e-4 --set model.norm=batch")
    p.add_argument("--out", help="run folder (default: runs/<preset>-<time>)")
    p.add_argument("--epochs", type=int, help="= --set train.epochs=N")
    p.add_argument("--max-steps", type=int, help="= --set train.max_steps=N (0: no cap)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--seed", type=int, help="= --set train.seed=N")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="ccvae", description="Cycle-consistent VAE on 2D Sprites (Jha et al., ECCV 2018).")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    data = sub.add_parser("data", help="prepare and inspect the 2D Sprites data")
    dsub = data.add_subparsers(dest="data_command", required=True, parser_class=_Parser)
    prep = dsub.add_parser("prepare", help="pack the original files into sprites60.npz")
    prep.add_argument("--source", help="URL, nips2015-analogy-data.tar.gz, or a folder of sprites_*.mat "
                                       "(default: download the upstream tarball)")
    prep.add_argument("--out", help="output .npz (default: $CCVAE_HOME/sprites60.npz)")
    prep.add_argument("--md5", help="expected MD5 of the tarball (default for downloads: the upstream one)")
    prep.add_argument("--workers", type=int, default=None, help="parallel readers (default: CPU count)")
    prep.add_argument("--quiet", action="store_true")
    prep.set_defaults(func=_data_prepare)
    info = dsub.add_parser("info", help="summarise a packed file")
    info.add_argument("--data", help="packed .npz (default: $CCVAE_DATA, then $CCVAE_HOME/sprites60.npz)")
    info.set_defaults(func=_data_info)
    tr = sub.add_parser("train", help="train the cycle-consistent VAE")
    _add_train_args(tr)
    tr.add_argument("--resume", action="store_true", help="continue RUN_DIR from checkpoints/last.pt")
    tr.set_defaults(func=_train)

    ev = sub.add_parser("evaluate", help="probes, swap metrics and figures of a trained run -> RUN_DIR/eval/")
    ev.add_argument("run_dir")
    ev.add_argument("--data", help="packed .npz (default: $CCVAE_DATA, then $CCVAE_HOME/sprites60.npz)")
    ev.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    ev.add_argument("--quiet", action="store_true")
    ev.set_defaults(func=_evaluate)

    rp = sub.add_parser("report", help="write RUN_DIR/report/index.html from the run folder")
    rp.add_argument("run_dir")
    rp.set_defaults(func=_report)

    rn = sub.add_parser("run", help="the main job: prepare data if missing, train, evaluate, report")
    _add_train_args(rn)
    rn.set_defaults(func=_run)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except UserError as e:
        from ccvae.train import TrainingDiverged

        if isinstance(e, TrainingDiverged):
            print(f"ccvae: training diverged: {e}", file=sys.stderr)
            return 3
        print(f"ccvae: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ccvae: interrupted", file=sys.stderr)
        return 130
