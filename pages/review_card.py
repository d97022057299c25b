"""Review's card: the pair on show, its actions and suggestions, drawn in the browser (`review_card.js`).

The server sends a window of the queue's next pairs (`core.review.pair_view` each) with its progress; a key
press shows the window's next pair at once, without waiting for the server, and the decision goes to the server
in the card's log (its state `log`), which `pending_entries` reads: every entry of this session's token that is
newer than the last one applied, in order. The card drops an entry once the server acknowledges it (`acked`).
"""
from pathlib import Path

import streamlit as st

HERE = Path(__file__).resolve().parent
ACTIONS = ("keep", "reject", "fix", "skip", "undo")

mount = st.components.v2.component("concord.review_card", js=(HERE / "review_card.js").read_text(),
                                   css=(HERE / "review_card.css").read_text(), isolate_styles=False)


def pending_entries(state: object, token: str, applied: int) -> list[dict]:
    """The card's log entries (`state`: its widget state) that this session has not applied yet: those made
    under `token` (this server session's) with a sequence number above `applied`, well formed, in order."""
    log = state.get("log") if hasattr(state, "get") else None
    fresh = []
    for e in log if isinstance(log, list) else []:
        if not (isinstance(e, dict) and e.get("token") == token and isinstance(e.get("seq"), int)
                and e["seq"] > applied and e.get("action") in ACTIONS and isinstance(e.get("where"), list)):
            continue
        if e["action"] != "undo" and not isinstance(e.get("pair"), dict):
            continue
        fresh.append(e)
    return sorted(fresh, key=lambda e: e["seq"])
