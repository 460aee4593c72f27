"""What the benchmarks report with: progress on stderr, figures, Markdown tables, percentiles, the machine."""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def say(text: str) -> None:
    """Progress on stderr, so stdout holds only the report."""
    print(text, file=sys.stderr, flush=True)


def fmt(value: float | None, digits: int = 2) -> str:
    """A figure with thousands separators, or "-" when there is none."""
    return "-" if value is None else f"{value:,.{digits}f}"


def table(head: list[str], rows: list[list[str]]) -> str:
    """A Markdown table with aligned columns."""
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]

    def line(r: list[str]) -> str:
        return "| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)) + " |"

    return "\n".join([line(head), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *(line(r) for r in rows)])


def pct(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def machine() -> dict[str, Any]:
    """CPUs, Python and the load average now: figures are only comparable within one machine and load."""
    return {"cpus": os.cpu_count(), "python": sys.version.split()[0], "loadavg_at_end": os.getloadavg()}


def write_json(result: dict[str, Any], path: str | None) -> None:
    """The JSON document to ``path`` as well, when one was given (--json FILE)."""
    if path:
        Path(path).write_text(json.dumps(result, indent=2, default=str) + "\n")
