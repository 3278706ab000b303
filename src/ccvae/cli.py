"""The ``ccvae`` command line. Every user error is one line on stderr and exit code 2."""

from __future__ import annotations

import argparse
import os
import re
import signal
import sys
from dataclasses import replace
from pathlib import Path

from ccvae import __version__
from ccvae.errors import TrainingDiverged, UserError

# Spelled out here so that ``--help`` needs no torch import; tests check them against config.PRESETS / METHOD_NAMES
# and checkpoint.WEIGHTS.
PRESET_NAMES = ("paper", "paper-z512-s64", "paper-z1024-s512", "quick", "quick-v1", "quick-v2", "quick-v3",
                "quick-v4", "quick-sharp", "quick-mathieu", "quick-szabo", "quick-mlvae", "smoke")
METHOD_NAMES = ("ccvae", "mathieu", "szabo", "mlvae")
WEIGHTS = ("auto", "ema", "live")

EXIT_CODES = """exit codes:
  0    success
  2    bad input (a file, an option, a config value), a full or read-only disk, or out of memory:
       one line on stderr naming what is wrong; nothing is left half-written
  3    training diverged (a NaN or Inf loss); the last good checkpoint is kept
  130  interrupted (Ctrl-C or SIGTERM); training saves a checkpoint first (continue with --resume)
"""


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
    return build_config(args.preset, args.config, overrides, method=args.method)


def _default_run_dir(args: argparse.Namespace) -> Path:
    """runs/<preset>[-<method>]-<time>."""
    import time

    name = args.preset if not args.method or args.preset.endswith(args.method) else f"{args.preset}-{args.method}"
    return Path("runs") / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"


def _check_resume_args(args: argparse.Namespace) -> None:
    if not args.out:
        raise UserError("--resume needs --out RUN_DIR (the run to continue)")
    changed = [f for f in ("config", "set", "seed", "method") if getattr(args, f)] + (
        ["preset"] if args.preset != "paper" else [])
    if changed:
        raise UserError(f"--resume continues a run with its own config; drop --{changed[0].replace('_', '-')} "
                        "(only --epochs and --max-steps may change)")


def _train(args: argparse.Namespace) -> int:
    from ccvae.data.paths import resolve_data_path

    if args.resume:
        _check_resume_args(args)
        cfg = None
        overrides = {k: v for k, v in (("epochs", args.epochs), ("max_steps", args.max_steps)) if v is not None}
    else:
        cfg, overrides = _train_config(args), None
    data = resolve_data_path(args.data)
    run_dir = Path(args.out) if args.out else _default_run_dir(args)
    # torch: only once the options, the config and the data path have passed.
    from ccvae.train import train

    _stop_if_signalled()
    result = train(cfg, data, run_dir, args.device, resume=args.resume, quiet=args.quiet,
                   resume_overrides=overrides)
    if result.interrupted:
        print(f"ccvae: interrupted at step {result.step}; resume with: ccvae train --out {run_dir} --resume",
              file=sys.stderr)
        return 130
    print(run_dir)
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from ccvae.data.paths import resolve_data_path

    data = resolve_data_path(args.data)
    # torch: only once the data path has passed.
    from ccvae.evaluate.probes import ProbeSettings
    from ccvae.evaluate.runner import EvalSettings, evaluate_run
    from ccvae.hardware import resolve_device

    _stop_if_signalled()
    log = (lambda msg: None) if args.quiet else (lambda msg: print(f"evaluate: {msg}", file=sys.stderr))
    probe = ProbeSettings(precision=args.probe_precision)
    settings = EvalSettings(probe=probe, checkpoints=args.checkpoints, weights=args.weights,
                            curve_probe=replace(EvalSettings().curve_probe, precision=args.probe_precision))
    m = evaluate_run(args.run_dir, data, settings, device=resolve_device(args.device), log=log)
    print(Path(args.run_dir) / "eval" / "metrics.json")
    if not args.quiet:
        _print_summary(m)
    return 0


def _print_summary(m: dict) -> None:
    from ccvae.checkpoint import describe_weights

    c, sw, lat = m["classifiers"], m["swap"], m["latents"]
    print("  test accuracy %      s      z (sampled)  z mean  z mean std.  chance", file=sys.stderr)
    for task in ("identity_all", "identity_heldout", "pose"):
        t = c[task]
        print(f"  {task:17s} {100 * t['s']['test_acc']:6.2f}  {100 * t['z']['test_acc']:8.2f}    "
              f"{100 * t['z_mean']['test_acc']:6.2f}  {100 * t['z_mean_std']['test_acc']:8.2f}    "
              f"{100 * t['chance']:.2f}", file=sys.stderr)
    print(f"  z active units {lat['active_units']} of {lat['dims']} (variance of the mean > {lat['active_threshold']}); "
          f"KL {lat['kl_total']:.2f} nats", file=sys.stderr)
    print(f"  swap PSNR {sw['swap_psnr']:.2f} dB (MSE {sw['swap_mse']:.5f}); reconstruction PSNR "
          f"{sw['reconstruction_psnr']:.2f} dB", file=sys.stderr)
    print(f"  weights scored: {describe_weights(m.get('settings', {}).get('weights', 'live'))}", file=sys.stderr)


def _compare(args: argparse.Namespace) -> int:
    from ccvae.compare import build_compare

    print(build_compare(args.run_dirs, args.out))
    return 0


def _report(args: argparse.Namespace) -> int:
    from ccvae.report import build_report

    print(build_report(args.run_dir))
    return 0


def _run(args: argparse.Namespace) -> int:
    """prepare (if needed) -> train -> evaluate -> report."""
    from ccvae.data.paths import candidate_data_path, ccvae_home
    from ccvae.data.prepare import prepare
    from ccvae.evaluate.runner import EvalSettings, evaluate_run
    from ccvae.hardware import resolve_device
    from ccvae.report import build_report
    from ccvae.train import train

    _stop_if_signalled()
    if args.resume:
        _check_resume_args(args)
    cfg = None if args.resume else _train_config(args)
    data = candidate_data_path(args.data)
    if not data.is_file():
        if args.data:
            raise UserError(f"{data}: --data file not found")
        print(f"data not found at {data}; preparing it", file=sys.stderr)
        prepare(None, data, cache=ccvae_home(), quiet=args.quiet)
    run_dir = Path(args.out) if args.out else _default_run_dir(args)
    overrides = {k: v for k, v in (("epochs", args.epochs), ("max_steps", args.max_steps)) if v is not None}
    result = train(cfg, data, run_dir, args.device, resume=args.resume, quiet=args.quiet,
                   resume_overrides=overrides if args.resume else None)
    if result.interrupted:
        print(f"ccvae: interrupted at step {result.step}; finish it with: ccvae run --out {run_dir} --resume",
              file=sys.stderr)
        return 130
    log = (lambda msg: None) if args.quiet else (lambda msg: print(f"evaluate: {msg}", file=sys.stderr))
    m = evaluate_run(run_dir, data, EvalSettings(checkpoints=True), device=resolve_device(args.device), log=log)
    if not args.quiet:
        _print_summary(m)
    report = build_report(run_dir)
    print(f"report: {report}")
    return 0


def _seeds(args: argparse.Namespace) -> int:
    """--seeds: one child process per seed into OUT/seed<N>; see ccvae.seeds."""
    from ccvae.seeds import parse_seeds, run_seeds

    seeds = parse_seeds(args.seeds)
    if args.seed is not None:
        raise UserError("--seeds and --seed exclude each other")
    if not args.out:
        raise UserError("--seeds needs --out DIR (the seeds' runs go to DIR/seed<N>)")
    if not args.resume:
        _train_config(args)  # check the config once, before any child starts
    cuda = args.device == "cuda" or (args.device == "auto" and _cuda_available())
    return run_seeds(args.argv, seeds, Path(args.out), args.resume, cuda)


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def _add_train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", help="packed .npz (default: $CCVAE_DATA, then $CCVAE_HOME/sprites60.npz)")
    p.add_argument("--preset", default="paper",
                   choices=PRESET_NAMES,
                   help="paper: the reference run (z 512 / s 512, 150 epochs); paper-z512-s64, paper-z1024-s512: "
                        "the paper's Table 1 rows; quick: 7,874 steps, 15-40 min on a 2-core CPU; quick-sharp: "
                        "quick-v3 for 12,000 steps; quick-v1 to quick-v4: the earlier quick presets; "
                        "quick-<method>: "
                        "the quick budget tuned for a baseline; smoke: seconds")
    p.add_argument("--method", choices=METHOD_NAMES,
                   help="ccvae (default): the cycle-consistent VAE; mathieu: Mathieu et al. 2016; szabo: Szabo et al. "
                        "2018; mlvae: ML-VAE (Bouchacourt et al. 2018). = --set method.name=M, except that with a "
                        "preset P that has a tuned variant P-M (quick-mathieu, ...) that variant is used")
    p.add_argument("--config", help="TOML file with [model], [train] and [method] tables, applied over the preset")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override any config field, e.g. --set train.lr=5e-4 --set model.norm=batch")
    p.add_argument("--out", help="run folder (default: runs/<preset>-<time>)")
    p.add_argument("--epochs", type=int, help="= --set train.epochs=N")
    p.add_argument("--max-steps", type=int, help="= --set train.max_steps=N (0: no cap)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                   help="auto: cuda when available, else cpu")
    p.add_argument("--seed", type=int, help="= --set train.seed=N")
    p.add_argument("--seeds", metavar="N,N,...",
                   help="one run per seed in parallel processes, into OUT/seed<N> (needs --out); after 'run', "
                        "OUT/seeds.json has the mean and spread of the headline numbers")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="ccvae", description="Cycle-consistent VAE on 2D Sprites (Jha et al., ECCV 2018).",
                epilog=EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"ccvae {__version__}")
    sub = p.add_subparsers(dest="command", parser_class=_Parser)

    data = sub.add_parser("data", help="prepare and inspect the 2D Sprites data")
    dsub = data.add_subparsers(dest="data_command", required=True, parser_class=_Parser)
    prep = dsub.add_parser("prepare", help="pack the original files into sprites60.npz")
    prep.add_argument("--source", help="URL, nips2015-analogy-data.tar.gz, or a folder of sprites_*.mat "
                                       "(default: download the upstream tarball)")
    prep.add_argument("--out", help="output .npz (default: $CCVAE_HOME/sprites60.npz)")
    prep.add_argument("--md5", help="expected MD5 of a tarball or URL source, any case (default for downloads: the "
                                    "upstream one); refused with a folder source")
    prep.add_argument("--workers", type=int, default=None, help="parallel readers (default: CPU count, at most 8)")
    prep.add_argument("--quiet", action="store_true", help="no progress bars")
    prep.set_defaults(func=_data_prepare)
    info = dsub.add_parser("info", help="summarise a packed file")
    info.add_argument("--data", help="packed .npz (default: $CCVAE_DATA, then $CCVAE_HOME/sprites60.npz)")
    info.set_defaults(func=_data_info)
    tr = sub.add_parser("train", help="train the cycle-consistent VAE or a baseline (--method)", epilog=EXIT_CODES,
                        formatter_class=argparse.RawDescriptionHelpFormatter,
                        description="Train a run into --out. The default preset is the paper's full 150-epoch run "
                                    "(208,500 steps: 0.27-0.61 s each on a 2-core CPU, so 16-35 hours; use a GPU); --preset quick gives a real result in about "
                                    "15-40 minutes on a 2-core CPU.")
    _add_train_args(tr)
    tr.add_argument("--resume", action="store_true",
                    help="continue the run in --out from its checkpoints/last.pt with its own config; only "
                         "--epochs and --max-steps may change (to a target at or past the current step)")
    tr.set_defaults(func=_train)

    ev = sub.add_parser("evaluate", help="probes, swap metrics and figures of a trained run -> RUN_DIR/eval/")
    ev.add_argument("run_dir", help="a run folder written by ccvae train")
    ev.add_argument("--data", help="packed .npz (default: $CCVAE_DATA, then $CCVAE_HOME/sprites60.npz)")
    ev.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                    help="auto: cuda when available, else cpu")
    ev.add_argument("--quiet", action="store_true", help="no progress messages or summary")
    ev.add_argument("--checkpoints", action="store_true",
                    help="also score every kept checkpoint with fast probes and the swap PSNR (learning curve)")
    ev.add_argument("--probe-precision", default="auto", choices=("auto", "fp32", "bf16"),
                    help="precision of the probes' training steps and per-epoch curves (auto: bf16 where the device "
                         "does it natively; the reported scores are fp32 either way)")
    ev.add_argument("--weights", default="auto", choices=WEIGHTS,
                    help="which weights to score: ema, the moving average a run with train.ema_decay > 0 keeps; "
                         "live, the weights training stepped; auto (default): ema where the run kept it, else live")
    ev.set_defaults(func=_evaluate)

    rp = sub.add_parser("report", help="write RUN_DIR/report/index.html from the run folder")
    rp.add_argument("run_dir", help="a run folder with eval/ (see ccvae evaluate)")
    rp.set_defaults(func=_report)

    cp = sub.add_parser("compare", help="one HTML page comparing evaluated runs (methods) as the paper's Table 1")
    cp.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run folders, each evaluated (ccvae evaluate)")
    cp.add_argument("--out", default="runs/compare", help="folder for index.html (default: runs/compare)")
    cp.set_defaults(func=_compare)

    rn = sub.add_parser("run", help="the main job: prepare data if missing, train, evaluate, report",
                        epilog=EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_train_args(rn)
    rn.add_argument("--resume", action="store_true",
                    help="finish an interrupted 'ccvae run --out RUN_DIR': resume its training, then evaluate and report")
    rn.set_defaults(func=_run)
    return p


# Signals received by this call of main (SIGINT, SIGTERM).
_SIGNALLED: list[int] = []


def _interrupt(signum, frame) -> None:
    _SIGNALLED.append(signum)
    raise KeyboardInterrupt  # SIGTERM unwinds like Ctrl-C, so every cleanup (finally) runs


def _stop_if_signalled() -> None:
    """Raise the KeyboardInterrupt of a signal that Python swallowed.

    A Ctrl-C that lands while a long import (torch) runs importlib's module-lock weakref callback is raised inside
    that callback, where Python prints "Exception ignored" and drops it: the command went on and trained to the
    end with exit 0 (seen in the fault drill's "Ctrl-C while loading data"). Called after each such import."""
    if _SIGNALLED:
        raise KeyboardInterrupt


def _quiet_interrupts(hook):
    """``sys.unraisablehook`` that drops a KeyboardInterrupt (``_stop_if_signalled`` raises it again) and passes on
    everything else, so that an interrupted command still prints its one line."""
    def filtered(unraisable) -> None:
        if not isinstance(unraisable.exc_value, KeyboardInterrupt):
            hook(unraisable)
    return filtered


def _one_line(message: str) -> str:
    """A multi-line message from a library, folded into one line."""
    # Drop list bullets ("- item") but keep option names ("--seeds ..."), which also start with a dash.
    parts = (re.sub(r"^-+\s+|^-+$", "", line.strip()) for line in str(message).splitlines())
    return "; ".join(p for p in parts if p) or "error"


def _out_of_memory(e: BaseException) -> str | None:
    """The one-line report of an allocation failure, or None when ``e`` is something else."""
    text = str(e)
    if not isinstance(e, MemoryError) and not re.search(r"can't allocate memory|out of memory|Unable to allocate", text):
        return None
    asked = re.search(r"allocate (\d+) bytes", text)
    size = f" ({int(asked.group(1)) / 1e9:.1f} GB asked for)" if asked else ""
    hint = re.search(r"Unable to allocate ([\d.]+ \w+)", text)
    size = size or (f" ({hint.group(1)} asked for)" if hint else "")
    return f"out of memory{size}; use a smaller train.batch_size or free memory"


def main(argv: list[str] | None = None) -> int:
    """The ``ccvae`` command. Exit codes: see ``EXIT_CODES``."""
    _SIGNALLED.clear()
    old_handlers = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    old_hook, sys.unraisablehook = sys.unraisablehook, _quiet_interrupts(sys.unraisablehook)
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if not getattr(args, "command", None):
            parser.print_usage(sys.stderr)
            print("ccvae: error: choose a command (ccvae --help lists them)", file=sys.stderr)
            return 2
        args.argv = list(sys.argv[1:] if argv is None else argv)
        if getattr(args, "seeds", None):
            return _seeds(args)
        return args.func(args)
    except KeyboardInterrupt:
        print("ccvae: interrupted", file=sys.stderr)
        return 130
    except UserError as e:
        if isinstance(e, TrainingDiverged):
            print(f"ccvae: training diverged: {_one_line(e)}", file=sys.stderr)
            return 3
        print(f"ccvae: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except OSError as e:  # a full or read-only disk, a folder where a file was expected, ...
        where = f"{e.filename}: " if getattr(e, "filename", None) else ""
        print(f"ccvae: error: {where}{_one_line(e.strerror or e)}", file=sys.stderr)
        return 2
    except (MemoryError, RuntimeError) as e:
        oom = _out_of_memory(e)
        if oom is None:
            raise
        print(f"ccvae: error: {oom}", file=sys.stderr)
        return 2
    finally:
        sys.unraisablehook = old_hook
        for sig, handler in old_handlers.items():
            signal.signal(sig, handler)


def entry() -> None:
    """The ``ccvae`` console script and ``python -m ccvae``: ``main``, its exit code made final."""
    code = main()
    if code == 130:
        # A Ctrl-C that lands while a C extension imports can leave CPython's "unhandled KeyboardInterrupt" flag set
        # although main handled it; the interpreter then kills itself with SIGINT at exit (status -2, not 130; seen
        # in the fault drill's "Ctrl-C while loading data"). main's cleanups have run: flush and leave with 130.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)
