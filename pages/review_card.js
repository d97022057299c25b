// Review's card (pages/review_card.py): the pair on show, its actions and its suggestions, drawn in the browser
// from the window of queue pairs the server sent. A key press (or a click) shows the next pair of the window at
// once and appends the decision to a log the card sends as its state; the server applies every entry it has not
// applied (each once, in order) and acknowledges the last (`acked`), so the card keeps only what is not yet
// stored. Entries carry the server session's token: after a server restart the new session applies none of the
// old session's entries, and the card says how many were not saved. Captions are set as text, never as HTML.
const DONE = { keep: "Kept", reject: "Rejected", fix: "Fixed", skip: "Skipped" };
const KEY_ACTIONS = { k: "keep", x: "reject", f: "fix", s: "skip", u: "undo" };
const ACTIONS = [["Keep", "keep", "K"], ["Reject", "reject", "X"], ["Fix", "fix", "F"], ["Skip", "skip", "S"],
                 ["Undo", "undo", "U"]];
const EMPTY = "Nothing left in this queue. Pick another order or filter above, or undo the last decision.";
const NO_MATCH = "No pair matches these filters. Widen them above.";

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined && text !== null) e.textContent = text;
  return e;
}

const undoing = (c) => c.log.some((e) => e.action === "undo");
const decidedIds = (c) => new Set(c.log.filter((e) => e.pair).map((e) => e.pair.pair_id));

/** The pair on show: the window's first that no entry waiting in the log decides (null while an undo waits). */
function shownPair(c) {
  if (undoing(c)) return null;
  const decided = decidedIds(c);
  return c.data.pairs.find((p) => !decided.has(p.pair_id)) || null;
}

/** The image element for `uri`, decoded when the window arrived (so that the next pair shows at once). */
function image(c, uri) {
  let img = c.images.get(uri);
  if (!img || img.isConnected) {
    img = new Image();
    img.src = uri;
  }
  return img;
}

function preload(c) {
  const wanted = new Set();
  for (const p of c.data.pairs) {
    for (const uri of [p.image, ...p.images.map((s) => s.uri)]) {
      if (!uri) continue;
      wanted.add(uri);
      if (!c.images.has(uri)) {
        const img = new Image();
        img.src = uri;
        img.decode().catch(() => {});
        c.images.set(uri, img);
      }
    }
  }
  for (const uri of [...c.images.keys()]) if (!wanted.has(uri)) c.images.delete(uri);
}

function buttons(c, specs) {
  const row = el("div", "concord-buttons");
  for (const [label, action, key, name] of specs) {
    const b = el("button", action === "keep" ? "concord-primary" : "", label);
    b.type = "button";
    b.dataset.reviewButton = name || `review_${action}`;
    b.title = action.startsWith("use:") ? "Fix: re-pair the image with this caption" : `${label} (key ${key})`;
    b.append(" ", el("kbd", null, key));
    b.onclick = () => (action.startsWith("use:") ? use(c, Number(action.slice(4))) : act(c, action));
    row.append(b);
  }
  return row;
}

function noticeLine(c) {
  if (c.log.length) {
    const e = c.log[c.log.length - 1];
    const text = e.action === "undo" ? "Undoing the last decision…"
      : `${DONE[e.action]} pair ${e.pair.key}` + (e.action === "fix" ? ` with the caption: ${e.caption}` : "");
    return el("div", "concord-text concord-notice", `${text} · saving ${c.log.length}…`);
  }
  if (c.lost) {
    return el("div", "concord-error",
      `${c.lost} decision${c.lost > 1 ? "s were" : " was"} not saved: the server restarted. Decide again.`);
  }
  const n = c.data.notice;
  return n ? el("div", n[0] === "error" ? "concord-error" : "concord-text concord-notice", n[1]) : null;
}

function progress(c) {
  const p = c.data.progress, waiting = c.log.filter((e) => e.pair);
  const fmt = (v) => v.toLocaleString("en-US");
  let { decided, skipped } = p;
  if (p.exact) {     // a queue of undecided pairs: each waiting entry moves one pair out of it
    skipped += waiting.filter((e) => e.action === "skip").length;
    decided += waiting.length - waiting.filter((e) => e.action === "skip").length;
  }
  const remaining = Math.max(p.remaining - waiting.length, 0);
  const box = el("div", "concord-progress");
  const bar = el("div", "concord-bar");
  bar.style.width = `${p.scope ? (100 * Math.min(decided + skipped, p.scope)) / p.scope : 0}%`;
  box.append(el("div", "concord-track"), el("div", "concord-help",
    `${fmt(decided)} decided · ${fmt(skipped)} skipped · ${fmt(remaining)} left in this queue (of ${fmt(p.scope)})` +
    p.pace));
  box.firstChild.append(bar);
  return box;
}

function pairView(c, p) {
  const wrap = el("div", "concord-pair"), left = el("div", "concord-left"), right = el("div", "concord-right");
  if (p.image) {
    const img = image(c, p.image);
    img.className = "concord-main-image";
    img.alt = `image of pair ${p.key}`;
    left.append(img);
  }
  if (p.image_error) left.append(el("div", "concord-warning", p.image_error));
  left.append(el("div", "concord-text concord-caption", p.caption), el("div", "concord-text", `pair ${p.key} · split ${p.split}`),
    el("div", "concord-text", p.scores));
  if (p.flag) left.append(el("div", "concord-text", p.flag));
  const label = el("label", "concord-help", "Fix with this caption");
  label.append(c.input);
  right.append(buttons(c, ACTIONS), label, el("div", "concord-help", c.data.keys));
  if (p.suggestions_error) {
    right.append(el("div", "concord-warning", p.suggestions_error));
  } else {
    right.append(el("h3", null, "Best-matching captions for this image"),
      el("div", "concord-help", `From elsewhere in the dataset, by ${p.basis} under this run.`));
    if (!p.captions.length) {
      right.append(el("div", "concord-help", "None: this image has no embedding under this run."));
    } else {
      right.append(buttons(c, p.captions.map((s, i) => ["Use", `use:${i}`, String(i + 1), `review_use_${i}`])),
        el("div", "concord-text", p.captions.map((s, i) => `${i + 1}  ${s.similarity}  ${s.caption}`).join("\n")));
    }
    right.append(el("h3", null, "Best-matching images for this caption"));
    if (!p.images.length && !p.images_error) {
      right.append(el("div", "concord-help", "None: this caption has no embedding under this run."));
    }
    if (p.images_error) right.append(el("div", "concord-warning", p.images_error));
    const row = el("div", "concord-images");
    for (const s of p.images) {
      const fig = el("figure"), img = image(c, s.uri);
      img.alt = `suggested image, similarity ${s.similarity}`;
      fig.append(img, el("figcaption", null, s.similarity));
      row.append(fig);
    }
    right.append(row);
  }
  wrap.append(left, right);
  return wrap;
}

function render(c) {
  const root = c.root, pair = shownPair(c);
  root.replaceChildren();          // first, so that a decoded image can move into the new view
  const notice = noticeLine(c);
  if (notice) root.append(notice);
  root.append(progress(c));
  if (undoing(c)) {
    root.append(el("div", "concord-help", "Undoing…"));
  } else if (pair) {
    root.append(pairView(c, pair));
  } else if (c.data.progress.remaining - decidedIds(c).size <= 0) {
    root.append(el("div", "concord-info", c.data.progress.scope ? EMPTY : NO_MATCH), buttons(c, [ACTIONS[4]]));
  } else {
    root.append(el("div", "concord-help", "Loading the next pair…"));
  }
  root.dataset.pending = String(c.log.length);
  root.dataset.shown = pair ? pair.key : "";
}

function send(c, entry) {
  c.seq += 1;
  c.lost = 0;
  c.log.push({ token: c.token, seq: c.seq, where: c.data.where, ...entry });
  c.setStateValue("log", c.log.slice());
  render(c);
}

function act(c, action, caption) {
  if (undoing(c)) return;                      // the pair an undo brings back is the server's to show
  if (action === "undo") {
    send(c, { action: "undo" });
    return;
  }
  const p = shownPair(c);
  if (!p) return;
  if (action === "fix") {
    caption = (caption ?? c.input.value).trim() || (p.captions.length ? p.captions[0].caption : "");
    c.input.value = "";
  }
  send(c, { action, pair: { pair_id: p.pair_id, key: p.key, caption: p.caption },
            caption: action === "fix" ? caption : null });
}

function use(c, i) {
  const p = shownPair(c);
  if (p && p.captions[i]) act(c, "fix", p.captions[i].caption);
}

function onKey(c, e) {
  if (e.ctrlKey || e.metaKey || e.altKey || e.repeat || !c.root.isConnected) return;
  const t = e.target;
  if (t && (["INPUT", "TEXTAREA", "SELECT"].includes(t.tagName) || t.isContentEditable)) {
    if (t === c.input && e.key === "Enter") {
      e.preventDefault();
      act(c, "fix");
    }
    return;                                    // typing: no shortcut
  }
  const key = e.key.toLowerCase();
  if (key in KEY_ACTIONS) {
    e.preventDefault();
    act(c, KEY_ACTIONS[key]);
  } else if (/^[1-9]$/.test(key)) {
    e.preventDefault();
    use(c, Number(key) - 1);
  }
}

export default function (component) {
  const { data, parentElement, setStateValue } = component;
  let c = parentElement.concordCard;
  if (!c) {
    c = parentElement.concordCard = { log: [], seq: 0, token: data.token, lost: 0, images: new Map(),
                                      root: el("div", "concord-card"), input: el("input", "concord-fix") };
    c.input.placeholder = "type a caption, or press 1–5 to use a suggestion";
    parentElement.append(c.root);
  }
  if (c.token !== data.token) {   // a new server session: it never applies the old one's entries
    c.lost = c.log.length;
    c.log = [];
    c.token = data.token;
  }
  c.data = data;
  c.setStateValue = setStateValue;
  c.seq = Math.max(c.seq, data.acked);
  c.log = c.log.filter((e) => e.seq > data.acked);
  preload(c);
  render(c);
  if (c.onKey) window.removeEventListener("keydown", c.onKey);
  if (c.onLeave) window.removeEventListener("beforeunload", c.onLeave);
  c.onKey = (e) => onKey(c, e);
  c.onLeave = (e) => {          // closing the tab with decisions not yet stored: the browser asks first
    if (c.log.length) e.preventDefault();
  };
  window.addEventListener("keydown", c.onKey);
  window.addEventListener("beforeunload", c.onLeave);
  return () => {
    window.removeEventListener("keydown", c.onKey);
    window.removeEventListener("beforeunload", c.onLeave);
  };
}
