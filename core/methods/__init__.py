"""The scoring methods, by name: one entry point (`METHODS`, `make_config`, `method_class`), configs as data.

Each method lives in its own module with a `Method` subclass and a frozen config dataclass
(`core.methods.config`). The CLI's `--set key=value` and the Train page's form both go through
`settings` and `make_config`, so they accept exactly the same keys with the same defaults.
"""
from __future__ import annotations

import dataclasses
import importlib
import typing
from dataclasses import dataclass, field
from typing import Any

from core.errors import ConcordError
from core.methods.config import Range


@dataclass(frozen=True)
class Setting:
    """One config field as the CLI and the Train page show it."""

    name: str
    type: type
    default: Any
    help: str
    choices: tuple | None = None
    range: Range | None = None


@dataclass(frozen=True)
class MethodSpec:
    """A method's name, what it is, and where its code lives (imported on first use)."""

    name: str
    title: str
    summary: str
    module: str
    class_name: str
    needs_pretrained: bool = False
    uses_meta: bool = False
    overrides: dict[str, Any] = field(default_factory=dict)   # config defaults this name changes
    scorer: bool = False   # no network of its own: scores from the dataset's finished runs (`core.detect`)

    @property
    def method_class(self) -> type:
        return getattr(importlib.import_module(self.module), self.class_name)

    @property
    def config_cls(self) -> type:
        return self.method_class.config_cls


METHODS: dict[str, MethodSpec] = {s.name: s for s in [
    MethodSpec("b0", "B0 · model score", "cosine of the pretrained model, split by a GMM; no training",
               "core.methods.b0", "B0", needs_pretrained=True),
    MethodSpec("b1", "B1 · plain contrastive + loss split", "InfoNCE on all pairs, then NCR's per-sample loss GMM",
               "core.methods.b1", "B1"),
    MethodSpec("npc", "NPC · negative pre-aware", "per-sample weights from the harm a sample does to trusted "
               "memory-bank pairs (AAAI 2024)", "core.methods.npc", "NPC", uses_meta=True),
    MethodSpec("npc-released", "NPC · released-code arithmetic", "NPC as the released code computes it "
               "(batch-mean weight, memory-bank loss without gradient)", "core.methods.npc", "NPC", uses_meta=True,
               overrides={"npc_released_behaviour": True}),
    MethodSpec("mscn", "MSCN · meta similarity correction", "a similarity head learned from the trusted "
               "meta-data, with Beta-mixture purification; two co-trained networks by default (CVPR 2023)",
               "core.methods.mscn", "MSCN", uses_meta=True),
    MethodSpec("concord", "Concord · fused consensus score", "neighbour and sibling consensus in every finished "
               "run's space, fused by a classifier fitted on the meta-data and your decisions; refits as you review",
               "core.detect.method", "Concord", uses_meta=True, scorer=True),
]}


def spec(method: str) -> MethodSpec:
    if method not in METHODS:
        raise ConcordError(f"unknown method {method!r} (choose one of {', '.join(METHODS)})")
    return METHODS[method]


def _field_type(cls: type, f: dataclasses.Field) -> type:
    hints = typing.get_type_hints(cls)
    t = hints[f.name]
    return t if isinstance(t, type) else str


def settings(method: str) -> list[Setting]:
    """The method's settings with their defaults (after the name's overrides) and one-line help."""
    s = spec(method)
    cls = s.config_cls
    out = []
    for f in dataclasses.fields(cls):
        default = s.overrides.get(f.name, f.default)
        out.append(Setting(f.name, _field_type(cls, f), default, f.metadata.get("help", ""),
                           f.metadata.get("choices"), f.metadata.get("range")))
    return out


def _parse(value: Any, kind: type, name: str) -> Any:
    if not isinstance(value, str) or kind is str:
        return value
    try:
        if kind is bool:
            low = value.strip().lower()
            if low not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(value)
            return low in ("true", "1", "yes")
        return kind(value)
    except ValueError:
        expected = "true or false (also 1/0, yes/no)" if kind is bool else kind.__name__
        raise ConcordError(f"setting {name}={value!r}: expected {expected}") from None


def make_config(method: str, values: dict[str, Any] | None = None):
    """The method's config from `values` (strings are parsed; unknown keys and bad choices refused)."""
    values = dict(values or {})
    known = {s.name: s for s in settings(method)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConcordError(f"unknown setting(s) for {method}: {', '.join(unknown)} "
                           f"(known: {', '.join(known)})")
    kwargs = {name: s.default for name, s in known.items()}
    for name, value in values.items():
        parsed = _parse(value, known[name].type, name)
        if known[name].choices and parsed not in known[name].choices:
            raise ConcordError(f"setting {name}={parsed!r}: choose one of {', '.join(map(str, known[name].choices))}")
        problem = known[name].range and known[name].range.problem(parsed)
        if problem:
            raise ConcordError(f"setting {name}={parsed!r}: {problem}")
        kwargs[name] = parsed
    return spec(method).config_cls(**kwargs)


def method_class(method: str) -> type:
    return spec(method).method_class
