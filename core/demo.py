"""The built-in demo: procedurally generated compositional scenes with five differently worded captions.

A scene is one or two groups of identical objects (one to three objects in all) on a background. A
group has a shape, colour, size, fill style, count and region (left/right/top/bottom/centre; two
groups stand left/right or above/below each other). Scenes come in near-miss clusters: every scene has
a sibling in the same split that differs in exactly one attribute (a colour, a shape, a size, a style,
a count, the arrangement or the background), so a caption one attribute away exists for every scene.

Captions are drawn from several template families (full description, background first, relation
reversed, partial mention of one group, no relation, object count first) with synonyms and varying
detail. Each caption is a claim with a meaning (`Claim`), and it is kept only if it is true of its own
scene and false of every other scene of the dataset: so no caption text is shared by two scenes, and a
caption can only be matched by looking at the image (every caption of a scene mentions what tells it
from its sibling). Everything is drawn from one seeded generator in a fixed order, and PNGs are encoded
with fixed settings, so the same seed gives byte-identical files.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass, field, replace
from itertools import permutations
from pathlib import Path
from typing import Iterator

import pandas as pd
from PIL import Image, ImageDraw

from core.hashing import bytes_hash
from core.progress import Progress

# ---------------------------------------------------------------- vocabulary
SHAPES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {  # name: (singular synonyms, plural synonyms)
    "circle": (("circle", "disc", "round shape"), ("circles", "discs", "round shapes")),
    "square": (("square", "box"), ("squares", "boxes")),
    "triangle": (("triangle",), ("triangles",)),
    "star": (("star", "five-pointed star"), ("stars", "five-pointed stars")),
    "diamond": (("diamond", "rhombus"), ("diamonds", "rhombuses")),
    "hexagon": (("hexagon", "six-sided shape"), ("hexagons", "six-sided shapes")),
    "pentagon": (("pentagon",), ("pentagons",)),
    "cross": (("cross", "plus sign"), ("crosses", "plus signs")),
    "heart": (("heart",), ("hearts",)),
    "crescent": (("crescent", "crescent moon"), ("crescents", "crescent moons")),
}
COLOURS: dict[str, tuple[tuple[int, int, int], tuple[str, ...]]] = {
    "red": ((220, 30, 30), ("red", "scarlet")),
    "orange": ((245, 135, 20), ("orange",)),
    "yellow": ((245, 220, 30), ("yellow",)),
    "green": ((40, 170, 60), ("green",)),
    "cyan": ((30, 200, 210), ("cyan", "turquoise")),
    "blue": ((40, 80, 230), ("blue",)),
    "purple": ((140, 50, 190), ("purple", "violet")),
    "pink": ((250, 130, 190), ("pink",)),
    "brown": ((130, 80, 35), ("brown",)),
    "white": ((250, 250, 250), ("white",)),
    "black": ((15, 15, 15), ("black",)),
    "gray": ((128, 128, 128), ("gray", "grey")),
}
BACKGROUNDS: dict[str, tuple[tuple[int, int, int], tuple[str, ...]]] = {
    "white": ((238, 238, 238), ("white",)),
    "black": ((30, 30, 30), ("black", "dark")),
    "beige": ((225, 205, 160), ("beige", "sand-coloured", "cream")),
    "navy": ((25, 40, 95), ("navy", "dark blue")),
    "sky": ((150, 195, 235), ("light blue", "pale blue", "sky-blue")),
    "olive": ((85, 100, 40), ("olive", "dark green")),
}
PATTERNS: dict[str, tuple[str, ...]] = {  # adjectives; "plain" may also go unsaid
    "plain": ("plain", "flat"),
    "striped": ("striped", "stripy"),
    "checkered": ("checkered", "chequered"),
}
SIZES: dict[str, tuple[tuple[str, ...], float]] = {
    "small": (("small", "little", "tiny"), 0.085),
    "large": (("large", "big"), 0.15),
}
STYLES: dict[str, tuple[str, ...]] = {"solid": ("solid", "filled"), "outlined": ("outlined", "hollow")}
REGIONS: dict[str, tuple[str, ...]] = {
    "left": ("on the left", "on the left side", "at the left"),
    "right": ("on the right", "on the right side", "at the right"),
    "top": ("at the top", "near the top", "in the upper half"),
    "bottom": ("at the bottom", "near the bottom", "in the lower half"),
    "center": ("in the middle", "in the center", "in the centre"),
}
NUMBERS = {1: ("a", "one", "a single"), 2: ("two", "a pair of"), 3: ("three",)}
_CENTRES = {"left": (0.27, 0.5), "right": (0.73, 0.5), "top": (0.5, 0.27), "bottom": (0.5, 0.73),
            "center": (0.5, 0.5)}
_MIN_CONTRAST = 110.0
_SUPERSAMPLE = 4


# ---------------------------------------------------------------- scenes
@dataclass(frozen=True)
class Group:
    """`count` identical objects standing in `region`."""

    shape: str
    colour: str
    size: str
    style: str
    count: int
    region: str


@dataclass(frozen=True)
class Scene:
    """One image's content; `jitter` holds per-object (dx, dy, scale, angle) so rendering is pure."""

    groups: tuple[Group, ...]
    background: str
    pattern: str
    jitter: tuple[tuple[float, float, float, float], ...] = field(default=(), compare=False)

    @property
    def signature(self) -> tuple:
        """The scene without jitter, up to the order of its groups."""
        return tuple(sorted(self.groups, key=lambda g: g.region)), self.background, self.pattern

    @property
    def objects(self) -> int:
        return sum(g.count for g in self.groups)


def _contrast(a: tuple[int, int, int], b: tuple[int, int, int]) -> float:
    return math.dist(a, b)


def _valid(scene: Scene) -> bool:
    """Every object stands out from the background; two groups differ in shape or colour."""
    bg = BACKGROUNDS[scene.background][0]
    if any(_contrast(COLOURS[g.colour][0], bg) < _MIN_CONTRAST for g in scene.groups):
        return False
    if len(scene.groups) == 2:
        a, b = scene.groups
        if (a.shape, a.colour) == (b.shape, b.colour):
            return False
    return 1 <= scene.objects <= 3


def _random_group(rng: random.Random, count: int, region: str) -> Group:
    return Group(rng.choice(list(SHAPES)), rng.choice(list(COLOURS)), rng.choice(list(SIZES)),
                 rng.choice(list(STYLES)), count, region)


def random_scene(rng: random.Random) -> Scene:
    """A valid scene with one group (1-3 objects) or two groups (2-3 objects)."""
    while True:
        if rng.random() < 0.45:
            groups: tuple[Group, ...] = (_random_group(rng, rng.choice((1, 1, 2, 3)), rng.choice(list(REGIONS))),)
        else:
            first, second = rng.choice((("left", "right"), ("top", "bottom")))
            counts = rng.choice(((1, 1), (1, 1), (1, 2), (2, 1)))
            groups = (_random_group(rng, counts[0], first), _random_group(rng, counts[1], second))
        scene = Scene(groups, rng.choice(list(BACKGROUNDS)), rng.choice(list(PATTERNS)))
        if _valid(scene):
            return _with_jitter(scene, rng)


def _with_jitter(scene: Scene, rng: random.Random) -> Scene:
    jitter = tuple((rng.uniform(-0.035, 0.035), rng.uniform(-0.035, 0.035), rng.uniform(0.88, 1.12),
                    rng.uniform(-18.0, 18.0)) for _ in range(scene.objects))
    return replace(scene, jitter=jitter)


def _mutations(scene: Scene) -> Iterator[Scene]:
    """Every scene one attribute away from `scene` (unjittered; may be invalid)."""
    for i, g in enumerate(scene.groups):
        def with_group(new: Group) -> Scene:
            return replace(scene, groups=scene.groups[:i] + (new,) + scene.groups[i + 1:])
        for shape in SHAPES:
            if shape != g.shape:
                yield with_group(replace(g, shape=shape))
        for colour in COLOURS:
            if colour != g.colour:
                yield with_group(replace(g, colour=colour))
        yield with_group(replace(g, size="large" if g.size == "small" else "small"))
        yield with_group(replace(g, style="outlined" if g.style == "solid" else "solid"))
        for count in (1, 2, 3):
            if count != g.count:
                yield with_group(replace(g, count=count))
        if len(scene.groups) == 1:
            for region in REGIONS:
                if region != g.region:
                    yield with_group(replace(g, region=region))
    if len(scene.groups) == 2:
        a, b = scene.groups
        yield replace(scene, groups=(replace(a, region=b.region), replace(b, region=a.region)))
    for background in BACKGROUNDS:
        if background != scene.background:
            yield replace(scene, background=background)
    for pattern in PATTERNS:
        if pattern != scene.pattern:
            yield replace(scene, pattern=pattern)


def near_miss(scene: Scene, rng: random.Random, taken: set) -> Scene | None:
    """A random valid scene differing from `scene` in one attribute and not in `taken` (signatures)."""
    options = [m for m in _mutations(scene) if _valid(m) and m.signature not in taken]
    return _with_jitter(rng.choice(options), rng) if options else None


# ---------------------------------------------------------------- captions as claims
@dataclass(frozen=True)
class GroupClaim:
    """What a caption says of one group; None means not said. `counts`: the counts it allows."""

    shape: str
    colour: str | None = None
    size: str | None = None
    style: str | None = None
    counts: frozenset[int] | None = None
    region: str | None = None

    def holds(self, g: Group) -> bool:
        return (g.shape == self.shape and self.colour in (None, g.colour) and self.size in (None, g.size)
                and self.style in (None, g.style) and (self.counts is None or g.count in self.counts)
                and self.region in (None, g.region))


@dataclass(frozen=True)
class Claim:
    """A caption's meaning: groups it mentions (distinct groups of the scene), the background colour and
    pattern, and the total number of objects, each None when not said."""

    groups: tuple[GroupClaim, ...]
    background: str | None = None
    pattern: str | None = None
    total: int | None = None

    def holds(self, scene: Scene) -> bool:
        if self.background not in (None, scene.background) or self.pattern not in (None, scene.pattern):
            return False
        if self.total is not None and self.total != scene.objects:
            return False
        if len(self.groups) > len(scene.groups):
            return False
        return any(all(c.holds(g) for c, g in zip(self.groups, chosen))
                   for chosen in permutations(scene.groups, len(self.groups)))


def shares_objects(scene: Scene, claim: Claim) -> bool:
    """Whether every object a caption mentions is in the scene with that shape (and that colour, when the
    caption names one): a suggestion a person finds plausible for the image, whatever it says of counts,
    sizes or the background. A caption that mentions no object shares none."""
    return bool(claim.groups) and all(any(g.shape == c.shape and c.colour in (None, g.colour) for g in scene.groups)
                                      for c in claim.groups)


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _group_phrase(g: Group, rng: random.Random, detail: float) -> tuple[str, GroupClaim]:
    """A noun phrase for `g` that says each attribute with probability `detail` (the shape always)."""
    say = {a: rng.random() < detail for a in ("colour", "size", "style")}
    exact_count = g.count == 1 or rng.random() < 0.85
    singular, plural = SHAPES[g.shape]
    noun = rng.choice(singular if g.count == 1 else plural)
    words = []
    if say["size"]:
        words.append(rng.choice(SIZES[g.size][0]))
    if say["style"]:
        words.append(rng.choice(STYLES[g.style]))
    if say["colour"]:
        words.append(rng.choice(COLOURS[g.colour][1]))
    words.append(noun)
    phrase = " ".join(words)
    if g.count == 1:
        number = rng.choice(NUMBERS[1])
        phrase = f"{_article(phrase) if number == 'a' else number} {phrase}"
    elif exact_count:
        phrase = f"{rng.choice(NUMBERS[g.count])} {phrase}"
    claim = GroupClaim(g.shape, g.colour if say["colour"] else None, g.size if say["size"] else None,
                       g.style if say["style"] else None,
                       frozenset({g.count}) if exact_count else frozenset({2, 3}))
    return phrase, claim


def _background_phrase(scene: Scene, rng: random.Random, detail: float) -> tuple[str, str | None, str | None]:
    colour = scene.background if rng.random() < max(detail, 0.6) else None
    pattern = scene.pattern if rng.random() < detail else None
    words = []
    if pattern is not None and (pattern != "plain" or rng.random() < 0.5):
        words.append(rng.choice(PATTERNS[pattern]))
    if colour is not None:
        words.append(rng.choice(BACKGROUNDS[colour][1]))
    noun = rng.choice(("background", "backdrop", "background", "ground"))
    if pattern == "plain" and not words:
        pattern = None
    phrase = " ".join(words + [noun])
    return phrase, colour, pattern


_RELATIONS = {("left", "right"): ("to the left of", "left of"), ("right", "left"): ("to the right of", "right of"),
              ("top", "bottom"): ("above", "over"), ("bottom", "top"): ("below", "under", "beneath")}
_TOTALS = {1: "one object", 2: "two objects", 3: "three objects"}
FAMILIES = ("full", "background_first", "partial", "no_relation", "count_first")


def caption_candidate(scene: Scene, family: str, rng: random.Random) -> tuple[str, Claim]:
    """One caption of template `family` for `scene`, with its meaning."""
    detail = {"full": 0.9, "background_first": 0.75, "partial": 0.6, "no_relation": 0.7, "count_first": 0.6}[family]
    order = list(scene.groups)
    rng.shuffle(order)
    phrases = [_group_phrase(g, rng, detail) for g in order]
    bg_phrase, bg_colour, bg_pattern = _background_phrase(scene, rng, detail)
    with_bg = (family in ("full", "background_first") or rng.random() < 0.5) and (bg_colour or bg_pattern) is not None
    if not with_bg:
        bg_colour = bg_pattern = None
    total = None
    if family == "partial" and len(order) == 2:
        order, phrases = order[:1], phrases[:1]
    mentioned = [c for _, c in phrases]
    if len(order) == 2 and family != "no_relation":
        a, b = order
        relation = rng.choice(_RELATIONS[(a.region, b.region)])
        body = f"{phrases[0][0]} {relation} {phrases[1][0]}"
        mentioned = [replace(phrases[0][1], region=a.region), replace(phrases[1][1], region=b.region)]
    elif len(order) == 2:
        body = f"{phrases[0][0]} and {phrases[1][0]}"
    else:
        g = order[0]
        say_region = family != "no_relation" and rng.random() < 0.8
        body = phrases[0][0] + (f" {rng.choice(REGIONS[g.region])}" if say_region else "")
        if say_region:
            mentioned[0] = replace(mentioned[0], region=g.region)
    if family == "count_first":
        total = scene.objects
        lead = rng.choice((f"{_TOTALS[total]}: ", f"{_TOTALS[total]} in all: ", "")) if total > 1 else \
            rng.choice(("just one object: ", "a lone object: ", "only one thing: "))
        if not lead:
            total = None
        body = lead + body
    if with_bg and family == "background_first":
        text = f"{_article(bg_phrase)} {bg_phrase} with {body}"
    elif with_bg:
        text = f"{body} on {_article(bg_phrase)} {bg_phrase}"
    else:
        text = body
    text = text[0].upper() + text[1:] if rng.random() < 0.5 else text
    return text, Claim(tuple(mentioned), bg_colour, bg_pattern, total)


# ---------------------------------------------------------------- the dataset
@dataclass(frozen=True)
class DemoConfig:
    """What the demo generator makes: `images` scenes of `image_size`² pixels with `captions` captions
    each, split by `fractions` (train, val, test) into near-miss clusters, all from `seed`."""

    images: int = 1000
    image_size: int = 64
    seed: int = 0
    captions: int = 5
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)


@dataclass(frozen=True)
class DemoItem:
    """One generated image: its scene, split, captions and their meanings."""

    index: int
    split: str
    scene: Scene
    captions: tuple[str, ...]
    claims: tuple[Claim, ...]


def split_sizes(n: int, fractions: tuple[float, float, float]) -> dict[str, int]:
    """Image counts per split: val and test rounded, train the rest."""
    val, test = round(n * fractions[1]), round(n * fractions[2])
    return {"train": n - val - test, "val": val, "test": test}


class _Index:
    """Scenes by (shape, colour) and by shape, to test a claim against the few scenes it could fit."""

    def __init__(self) -> None:
        self.by_key: dict[tuple[str, str | None], list[int]] = {}
        self.scenes: list[Scene] = []

    def add(self, scene: Scene) -> int:
        idx = len(self.scenes)
        self.scenes.append(scene)
        for key in self._keys(scene):
            self.by_key.setdefault(key, []).append(idx)
        return idx

    def replace(self, idx: int, scene: Scene) -> None:
        """Scene `idx` becomes `scene`."""
        for key in self._keys(self.scenes[idx]):
            self.by_key[key].remove(idx)
        self.scenes[idx] = scene
        for key in self._keys(scene):
            self.by_key.setdefault(key, []).append(idx)

    @staticmethod
    def _keys(scene: Scene) -> set[tuple[str, str | None]]:
        return {(g.shape, g.colour) for g in scene.groups} | {(g.shape, None) for g in scene.groups}

    def fits(self, claim: Claim) -> Iterator[int]:
        first = claim.groups[0]
        return (i for i in self.by_key.get((first.shape, first.colour), []) if claim.holds(self.scenes[i]))


def _captions_for(idx: int, index: _Index, rng: random.Random, n: int,
                  used: set[str]) -> list[tuple[str, Claim]] | None:
    """`n` captions true of scene `idx` only, new texts, from as many template families as possible."""
    scene = index.scenes[idx]
    out: list[tuple[str, Claim]] = []
    families = list(FAMILIES)
    rng.shuffle(families)
    attempts = 0
    while len(out) < n and attempts < 60 * n:
        family = families[len(out) % len(families)] if attempts < 20 * n else rng.choice(FAMILIES)
        attempts += 1
        text, claim = caption_candidate(scene, family, rng)
        if text in used or text.lower() in {t.lower() for t, _ in out} or not claim.holds(scene):
            continue
        if any(i != idx for i in index.fits(claim)):
            continue
        out.append((text, claim))
    return out if len(out) == n else None


REDRAWS = 100
"""How many new scenes a scene that cannot be captioned may be given in its place before the demo gives up."""


def _captioned(idx: int, cluster: list[int], index: _Index, rng: random.Random, n: int, used: set[str],
               taken: set, items: list[DemoItem]) -> list[tuple[str, Claim]]:
    """`n` captions of scene `idx` (`_captions_for`). A scene can have too few captions true of it alone (its only
    group is part of another scene with the same background, so only a caption that counts the objects tells them
    apart): it is then replaced by a new one, a near miss of the other scene of its cluster where it has one, that
    no caption written so far is true of, until it can be captioned. Only then does the rng draw more, so a demo
    that needed no new scene is unchanged."""
    captions = _captions_for(idx, index, rng, n, used)
    mate = next((index.scenes[m] for m in cluster if m != idx), None)
    redraws = 0
    while captions is None:
        redraws += 1
        if redraws > REDRAWS:
            raise RuntimeError(f"demo scene {idx} could not be given {n} distinct captions")
        scene = near_miss(mate, rng, taken) if mate is not None else random_scene(rng)
        if scene is None or scene.signature in taken or any(c.holds(scene) for it in items for c in it.claims):
            continue
        taken.add(scene.signature)
        index.replace(idx, scene)
        captions = _captions_for(idx, index, rng, n, used)
    return captions


def generate(config: DemoConfig = DemoConfig(), progress: Progress | None = None) -> list[DemoItem]:
    """The demo's scenes and captions (no images): deterministic for a config."""
    progress = progress or Progress()
    if config.images < 2:
        raise ValueError("the demo needs at least 2 images")
    rng = random.Random(config.seed)
    sizes = split_sizes(config.images, config.fractions)
    index = _Index()
    taken: set = set()
    plan: list[tuple[str, list[int]]] = []  # (split, scene indices of one cluster)
    progress.start("scenes", config.images, message="drawing scenes")
    for split, size in sizes.items():
        remaining = size
        while remaining > 0:
            cluster_size = 3 if remaining == 3 else min(2, remaining)
            while True:
                members = [random_scene(rng)]
                while len(members) < cluster_size:
                    sibling = near_miss(members[0], rng, taken | {m.signature for m in members})
                    if sibling is None:
                        break
                    members.append(sibling)
                signatures = {m.signature for m in members}
                if len(members) == cluster_size and len(signatures) == cluster_size and not signatures & taken:
                    break
            taken |= signatures
            plan.append((split, [index.add(m) for m in members]))
            remaining -= cluster_size
            progress.advance(cluster_size)
    progress.check()
    progress.start("captions", len(index.scenes), message="writing captions")
    used: set[str] = set()
    items: list[DemoItem] = []
    for split, members in plan:
        for idx in members:
            captions = _captioned(idx, members, index, rng, config.captions, used, taken, items)
            texts = tuple(t for t, _ in captions)
            used.update(texts)
            items.append(DemoItem(idx, split, index.scenes[idx], texts, tuple(c for _, c in captions)))
            progress.advance()
        progress.check()
    return sorted(items, key=lambda it: it.index)


# ---------------------------------------------------------------- drawing
def _shape_points(shape: str, r: float) -> list[tuple[float, float]]:
    """Polygon of `shape` with radius `r` around the origin (y down)."""
    def ring(n: int, radius: float, phase: float = -math.pi / 2) -> list[tuple[float, float]]:
        return [(radius * math.cos(phase + 2 * math.pi * i / n), radius * math.sin(phase + 2 * math.pi * i / n))
                for i in range(n)]
    if shape == "circle":
        return ring(48, r)
    if shape == "square":
        return ring(4, r * 1.05, -math.pi / 4)
    if shape == "triangle":
        return [(x, y + 0.18 * r) for x, y in ring(3, r * 1.15)]
    if shape == "star":
        outer, inner = ring(5, r * 1.1), ring(5, r * 0.45, -math.pi / 2 + math.pi / 5)
        return [p for pair in zip(outer, inner) for p in pair]
    if shape == "diamond":
        return [(0, -r * 1.1), (r * 0.7, 0), (0, r * 1.1), (-r * 0.7, 0)]
    if shape == "hexagon":
        return ring(6, r)
    if shape == "pentagon":
        return ring(5, r * 1.02)
    if shape == "cross":
        a, w = r, r * 0.36
        return [(-w, -a), (w, -a), (w, -w), (a, -w), (a, w), (w, w), (w, a), (-w, a), (-w, w), (-a, w),
                (-a, -w), (-w, -w)]
    if shape == "heart":
        pts = []
        for i in range(48):
            t = 2 * math.pi * i / 48
            x = 16 * math.sin(t) ** 3
            y = -(13 * math.cos(t) - 5 * math.cos(2 * t) - 2 * math.cos(3 * t) - math.cos(4 * t))
            pts.append((x * r / 16, (y + 2) * r / 16))
        return pts
    if shape == "crescent":
        d = 0.65 * r
        theta0 = math.acos(d / (2 * r))
        outer = [(r * math.cos(a), r * math.sin(a))
                 for a in (theta0 + (2 * math.pi - 2 * theta0) * i / 32 for i in range(33))]
        inner = [(d + r * math.cos(a), r * math.sin(a))
                 for a in (math.pi + theta0 - 2 * theta0 * i / 16 for i in range(1, 16))]
        return [(x - d / 4, y) for x, y in outer + inner]
    raise ValueError(f"unknown shape {shape!r}")


def _rotated(points: list[tuple[float, float]], degrees: float) -> list[tuple[float, float]]:
    a = math.radians(degrees)
    c, s = math.cos(a), math.sin(a)
    return [(x * c - y * s, x * s + y * c) for x, y in points]


def _object_centres(g: Group) -> list[tuple[float, float]]:
    """Where a group's objects stand (fractions of the side), spread along its region."""
    cx, cy = _CENTRES[g.region]
    if g.count == 1:
        return [(cx, cy)]
    vertical = g.region in ("left", "right")
    span = 0.5 if g.count == 2 else 0.62
    offsets = [span * (i / (g.count - 1) - 0.5) for i in range(g.count)]
    return [(cx, cy + o) if vertical else (cx + o, cy) for o in offsets]


def _shade(rgb: tuple[int, int, int], delta: int) -> tuple[int, int, int]:
    return tuple(max(0, min(255, v + delta)) for v in rgb)  # type: ignore[return-value]


def render(scene: Scene, size: int = 64) -> Image.Image:
    """The scene drawn at `size`² pixels (drawn 4× larger, then downsampled)."""
    big = size * _SUPERSAMPLE
    bg = BACKGROUNDS[scene.background][0]
    img = Image.new("RGB", (big, big), bg)
    draw = ImageDraw.Draw(img)
    cell = big / 8
    other = _shade(bg, 40 if sum(bg) < 384 else -40)
    if scene.pattern == "striped":
        for k in range(-8, 16, 2):
            x0 = k * cell
            draw.polygon([(x0, 0), (x0 + cell, 0), (x0 + cell + big, big), (x0 + big, big)], fill=other)
    elif scene.pattern == "checkered":
        for i in range(8):
            for j in range(8):
                if (i + j) % 2:
                    draw.rectangle([i * cell, j * cell, (i + 1) * cell - 1, (j + 1) * cell - 1], fill=other)
    jitter = iter(scene.jitter or [(0.0, 0.0, 1.0, 0.0)] * scene.objects)
    for g in scene.groups:
        colour = COLOURS[g.colour][0]
        radius = SIZES[g.size][1] * big
        for cx, cy in _object_centres(g):
            dx, dy, scale, angle = next(jitter)
            r = radius * scale
            pts = [(x + (cx + dx) * big, y + (cy + dy) * big)
                   for x, y in _rotated(_shape_points(g.shape, r), 0.0 if g.shape == "circle" else angle)]
            if g.style == "solid":
                draw.polygon(pts, fill=colour)
            else:
                draw.polygon(pts, outline=colour, width=max(2, round(r * 0.28)))
    return img.resize((size, size), Image.Resampling.LANCZOS)


def png_bytes(img: Image.Image) -> bytes:
    """PNG with fixed encoder settings (no metadata), so equal pixels give equal bytes."""
    from io import BytesIO
    buf = BytesIO()
    img.save(buf, format="PNG", compress_level=6, optimize=False)
    return buf.getvalue()


def write_demo(folder: Path, config: DemoConfig = DemoConfig(), progress: Progress | None = None) -> pd.DataFrame:
    """Generate the demo into `folder` (images under `images/`); returns its records (one row per pair)."""
    progress = progress or Progress()
    items = generate(config, progress)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    progress.start("images", len(items), message="drawing images")
    rows = []
    for item in items:
        data = png_bytes(render(item.scene, config.image_size))
        rel = f"images/{item.index:05d}.png"
        (folder / rel).write_bytes(data)
        digest = bytes_hash(data)
        for c, caption in enumerate(item.captions):
            rows.append({"image_path": rel, "image_hash": digest, "width": config.image_size,
                         "height": config.image_size, "nbytes": len(data), "caption": caption,
                         "split": item.split, "key": f"{item.index:05d}-{c}"})
        progress.advance()
        if item.index % 64 == 0:
            progress.check()
    return pd.DataFrame(rows)
