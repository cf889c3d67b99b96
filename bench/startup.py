"""How fast the commands that only read start: `--help`, `search --help`, `methods`,
`tasks` (the package docstring promises a fast `--help`; target under 0.5 s), and that they
import neither torch nor optuna. Whole processes (`python -m autopeft ...`, the median of
``--runs``) and in-process (imports + parsing + printing, one cold run).

    python bench/startup.py [--runs 7]      # writes its section of BENCHMARKS.md
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

from _report import write_section

COMMANDS = (["--help"], ["search", "--help"], ["methods"], ["methods", "lora"], ["tasks"])
IN_PROCESS = """import sys, time
t = time.perf_counter()
from autopeft import cli
try:
    cli.main({argv!r})
except SystemExit:
    pass
print(time.perf_counter() - t, 'torch' in sys.modules, 'optuna' in sys.modules, file=sys.stderr)
"""


def measure(argv: list[str], runs: int) -> tuple[float, float, bool]:
    """(median process seconds, in-process seconds, heavy imports seen)."""
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "autopeft", *argv], capture_output=True, check=True)
        times.append(time.perf_counter() - t)
    out = subprocess.run([sys.executable, "-c", IN_PROCESS.format(argv=argv)],
                         capture_output=True, text=True, check=True)
    seconds, torch, optuna = out.stderr.split()[-3:]
    return statistics.median(times), float(seconds), torch == "True" or optuna == "True"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=7)
    args = p.parse_args()
    lines = ["## Start-up of the reading commands (bench/startup.py)", "",
             f"Median of {args.runs} whole processes (`python -m autopeft ...`) and one cold "
             "in-process run, on an idle machine. Target: under 0.5 s, without torch or optuna.",
             "", "| command | process (s) | in-process (s) | imports torch or optuna |",
             "| --- | ---: | ---: | --- |"]
    for argv in COMMANDS:
        proc, inproc, heavy = measure(argv, args.runs)
        lines.append(f"| `autopeft {' '.join(argv)}` | {proc:.3f} | {inproc:.3f} | "
                     f"{'yes' if heavy else 'no'} |")
        print(lines[-1])
    write_section("startup", "\n".join(lines))


if __name__ == "__main__":
    main()
