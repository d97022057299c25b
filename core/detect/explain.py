"""Plain-text explanations of a fused run: which signals flag one pair, and what carries the classifier.

A signal flags a pair when its value is at or below the run's `signal_lows` (the lowest fifth of the training
pairs, recorded when the run finished): e.g. "caption disagrees with its 4 sibling captions (the least of 5)".
"""
from __future__ import annotations

import math
from typing import Any

LOW_QUANTILE = 0.2
"""A pair's signal counts as flagging it when it is in the lowest fifth of the training pairs' (`signal_lows`)."""

PHRASES = {
    "caption_margin": "the caption matches another image better",
    "image_margin": "the image matches another caption better",
    "image_neighbours": "the captions of the image's nearest images say otherwise",
    "caption_neighbours": "the images of the caption's nearest captions look different",
    "caption_images": "the caption's other images look different",
    "pixels_image_neighbours": "the captions of the images that look most like it, pixel for pixel, say otherwise",
    "pixels_caption_neighbours": "the images of the caption's nearest captions look different, pixel for pixel",
    "pixels_caption_images": "the caption's other images look different, pixel for pixel",
    "look_alikes": "the caption fits poorly the images that look most like this one",
    "read_alikes": "the image fits poorly the captions that read most like this one",
    "similarity_margin": "the image matches its other captions better than this one",
}
SIBLING_SIGNALS = ("siblings", "text_siblings")
SIBLING_MARGINS = ("sibling_margin", "text_sibling_margin")
MARGIN_PHRASE = "the caption agrees more with another image's captions than with its own image's"


def _low(value: float | None, low: float | None) -> bool:
    return value is not None and low is not None and not math.isnan(value) and value <= low


def flagging_signals(extras: dict[str, float], lows: dict[str, float]) -> list[str]:
    """The phrases of the signals that flag the pair (see the module docstring), strongest kind first."""
    out = []
    if any(_low(extras.get(s), lows.get(s)) for s in SIBLING_SIGNALS):
        n = int(extras.get("sibling_count", 0) or 0)
        phrase = f"caption disagrees with its {n} sibling caption{'s' if n != 1 else ''}"
        if extras.get("sibling_rank") == 0.0 and n > 1:
            phrase += f" (the least of {n + 1})"
        out.append(phrase)
    if any(_low(extras.get(s), lows.get(s)) for s in SIBLING_MARGINS):
        out.append(MARGIN_PHRASE)
    out += [text for signal, text in PHRASES.items() if _low(extras.get(signal), lows.get(signal))]
    return out


NO_FLAG_FUSED = "No single signal flags this pair; only their combination in the fused score."
NO_FLAG_TERMS = "No consensus term flags this pair on its own: none is in its lowest fifth over the attached pairs."


def explain_pair(extras: dict[str, float], lows: dict[str, float], none: str = NO_FLAG_FUSED) -> str:
    """One line for the Review page: which signals flag the pair, or `none` when no signal does on its own."""
    found = flagging_signals(extras, lows)
    if not found:
        return none
    return "Flagged by: " + "; ".join(found) + "."


def fused_summary(fused: dict[str, Any], top: int = 3) -> str:
    """One line on the classifier: its cross-validated AUROC, what it learnt from, the signals that carry it, how
    much each network's space and the non-negative fit count."""
    lab = fused.get("labelled", {})
    cv = fused.get("cv_auroc")
    head = (f"Fused classifier: cross-validated AUROC {cv:.3f}" if cv is not None else
            "Fused classifier: too few labelled pairs of a class to cross-validate")
    learnt = (f" on {lab.get('positives', 0)} trusted matched and {lab.get('negatives', 0)} mismatched pairs "
              f"plus {lab.get('constructed', 0)} constructed mismatches")
    weights = fused.get("weights", [])[:top]
    carried = "; carried by " + ", ".join(f"{w['signal']} ({w['coef']:+.2f})" for w in weights) if weights else ""
    spaces = fused.get("space_weights") or {}
    weighed = "; networks weighed " + ", ".join(f"{s} {w:.2f}" for s, w in spaces.items()) if spaces else ""
    signs = fused.get("fit_weights") or {}
    signed = f"; the fit with every weight ≥ 0 counts {signs['nonnegative']:.2f}" if signs else ""
    refits = f"; refitted {fused['refits']}×" if fused.get("refits") else ""
    return head + learnt + carried + weighed + signed + refits + "."


def context_summary(context: dict[str, dict[str, float]]) -> str:
    """One line on the sibling context the trusted pairs were fitted in (`core.detect.context`; a run's
    `metrics["context"]`: space -> rate, near-miss share, whole images); '' when none was fitted."""
    if not context:
        return ""
    text = context.get("text")
    runs = [c["rate"] for space, c in context.items() if space != "text"]
    parts = []
    if text is not None:
        kind = ("whole images at a time" if text.get("whole_images")
                else f"{text['near_miss_share']:.0%} of them near misses")
        parts.append(f"{text['rate']:.0%} in the text tower's space ({kind})")
    if runs:
        spread = f"{min(runs):.0%}" if min(runs) == max(runs) else f"{min(runs):.0%}–{max(runs):.0%}"
        parts.append(f"{spread} in the runs' spaces")
    return ("Fitted in the training split's sibling context: the trusted images' captions swapped at "
            + " and ".join(parts) + ": a rough estimate of the split's noise.")
