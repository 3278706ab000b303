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
    from ccvae.data.paths import default_data_path, ccvae_home
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
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except UserError as e:
        print(f"ccvae: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ccvae: interrupted", file=sys.stderr)
        return 130
