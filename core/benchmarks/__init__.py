"""Benchmarks behind `python -m core bench NAME`: one module per benchmark, each exposing
`register(subparsers, common)` like a CLI command. Figures go to stdout (JSON with `--json`) and
to `docs/benchmarks.md`."""

from pathlib import Path

from core.paths import REPO_ROOT

DOC = REPO_ROOT / "docs" / "benchmarks.md"


def write_section(key: str, body: str, doc: Path = DOC) -> None:
    """Put `body` into `doc` between markers named `key`, replacing what an earlier run wrote there."""
    start, end = f"<!-- bench {key} -->", f"<!-- /bench {key} -->"
    text = doc.read_text(encoding="utf-8") if doc.exists() else "# Benchmarks\n"
    block = f"{start}\n{body.strip()}\n{end}"
    if start in text and end in text:
        before, rest = text.split(start, 1)
        text = before + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    doc.write_text(text, encoding="utf-8")
