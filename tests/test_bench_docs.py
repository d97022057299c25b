"""Benchmarks write their figures into docs/benchmarks.md in place, keeping everything else."""
from __future__ import annotations

from pathlib import Path

from core.benchmarks import write_section


def test_write_section_adds_then_replaces_in_place(tmp_path: Path) -> None:
    doc = tmp_path / "b.md"
    doc.write_text("# Benchmarks\n\nhand-written notes\n", encoding="utf-8")
    write_section("quality", "first", doc)
    write_section("other", "second", doc)
    write_section("quality", "third", doc)
    text = doc.read_text(encoding="utf-8")
    assert "hand-written notes" in text and "first" not in text
    assert text.index("third") < text.index("second")
