"""`make bench`: run every benchmark in turn and print one summary table of their figures.

Each script writes its own `bench/results/<name>.json`; this only sequences them (they share
the 2 cores, so running them side by side would measure each other).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import orjson
from rich.console import Console
from rich.table import Table

BENCH = Path(__file__).resolve().parent
BENCHMARKS = ("ingest", "aggregator", "alerts", "storage", "series_latency")


def main() -> int:
    console = Console()
    failed: list[str] = []
    for name in BENCHMARKS:
        console.rule(f"bench/{name}.py")
        started = time.monotonic()
        code = subprocess.call([sys.executable, str(BENCH / f"{name}.py")])
        console.print(f"{name}: exit {code} after {time.monotonic() - started:.0f} s")
        if code != 0:
            failed.append(name)
    table = Table("benchmark", "figure", "value", title="bench/results")
    for name in BENCHMARKS:
        path = BENCH / "results" / f"{name}.json"
        if not path.exists():
            continue
        for key, value in orjson.loads(path.read_bytes()).items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                table.add_row(name, key, f"{value:,}")
    console.print(table)
    if failed:
        console.print(f"[red]failed:[/red] {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
