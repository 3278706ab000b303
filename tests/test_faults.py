"""The fault drill of ``benchmarks/faults.py`` (55 cases through the ``ccvae`` command), one test per case.

Each case guards a promise of the README (exit code, one line, no traceback, nothing left behind,
usable afterwards); the defect numbers of the fault campaign are in ``faults.CASES``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import faults  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def drill() -> dict[str, faults.Row]:
    rows = faults.run_cases(faults.CASES, log=lambda m: None)
    return {r.case.name: r for r in rows}


@pytest.mark.parametrize("name", [c.name for c in faults.CASES])
def test_fault_case(drill, name):
    row = drill[name]
    if row.skipped:
        pytest.skip(row.skipped)
    failed = [k for k, ok in row.checks.items() if not ok]
    assert not failed, (f"{name}: {failed}; exit {row.outcome.code} (expected {row.case.expect}); "
                        f"stderr: {row.outcome.err.strip()[-400:]!r}; left: {row.outcome.leftovers!r}; "
                        f"note: {row.outcome.note!r}")
