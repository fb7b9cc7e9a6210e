// The colour editor's page: points on the photo, their colours, undo/redo, and the server's previews.
// The server is stateless about edits: every preview or save request carries the whole list of hints,
// in the photo's own pixels ({x, y, color}); undo and redo are snapshots of that list kept here.
"use strict";

const $ = (id) => document.getElementById(id);
const view = { W: 1, H: 1, scale: 1, fit: true };      // photo size (full resolution) and display scale
let hints = [];                                        // [{x, y, color, radius?}]
let selected = -1;                                     // index into hints, or -1
const undoStack = [], redoStack = [];
let mode = "edited";                                   // "grey" | "auto" | "edited"
const urls = { grey: "/api/grey", auto: null, edited: null };
let shownHints = "";                                   // JSON of the hints the edited preview shows
const pixels = { canvas: document.createElement("canvas"), ready: false };

// ---- requests ------------------------------------------------------------------------------------
async function api(path, body) {
  const init = body === undefined ? {} : {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) };
  const r = await fetch(path, init);
  if (!r.ok) {
    let reason = r.statusText;
    try { reason = (await r.json()).error || reason; } catch (e) { /* not JSON */ }
    throw new Error(reason);
  }
  return r;
}

function say(text, error = false) {
  const s = $("status");
  s.textContent = text;
  s.title = text;
  s.classList.toggle("error", error);
}

// One preview request at a time; edits made meanwhile are sent when it returns (the latest wins).
let inFlight = false, wanted = false;
async function refresh() {
  if (inFlight) { wanted = true; return; }
  inFlight = true;
  const sent = JSON.stringify(hints);
  try {
    const blob = await (await api("/api/colorize", { hints: JSON.parse(sent) })).blob();
    if (urls.edited) URL.revokeObjectURL(urls.edited);
    urls.edited = URL.createObjectURL(blob);
    shownHints = sent;
    if (mode === "edited") show();
  } catch (e) {
    say(e.message, true);
  } finally {
    inFlight = false;
    if (wanted) { wanted = false; refresh(); }
  }
}

async function show() {
  if (mode === "auto" && !urls.auto) {
    try {
      urls.auto = URL.createObjectURL(await (await api("/api/colorize", { hints: [] })).blob());
    } catch (e) { say(e.message, true); return; }
  }
  const img = $("preview");
  img.dataset.pending = mode === "edited" ? shownHints : "";
  img.src = urls[mode] || urls.grey;
}

$("preview").addEventListener("load", () => {
  const img = $("preview");
  img.dataset.mode = mode;
  img.dataset.hints = img.dataset.pending || "";      // what the browser test waits for
  if (mode === "edited") {                            // keep the pixels: a new point takes the colour shown
    pixels.canvas.width = img.naturalWidth;
    pixels.canvas.height = img.naturalHeight;
    pixels.canvas.getContext("2d").drawImage(img, 0, 0);
    pixels.ready = true;
  }
});

// ---- edits and history ---------------------------------------------------------------------------
function snapshot() { return JSON.stringify(hints); }

function remember(before = snapshot()) {
  undoStack.push(before);
  if (undoStack.length > 200) undoStack.shift();
  redoStack.length = 0;
  updateButtons();
}

function restore(from, to) {
  if (!from.length) return;
  to.push(snapshot());
  hints = JSON.parse(from.pop());
  if (selected >= hints.length) selected = -1;
  changed();
}

function updateButtons() {
  $("undo").disabled = !undoStack.length;
  $("redo").disabled = !redoStack.length;
}

function changed(suggest = false) {
  updateButtons();
  drawPoints();
  panel(suggest);
  if (mode !== "edited") setMode("edited"); else refresh();
}

function colourAt(x, y) {
  if (!pixels.ready) return "#808080";
  const px = Math.min(pixels.canvas.width - 1, Math.floor((x + 0.5) * pixels.canvas.width / view.W));
  const py = Math.min(pixels.canvas.height - 1, Math.floor((y + 0.5) * pixels.canvas.height / view.H));
  const d = pixels.canvas.getContext("2d").getImageData(px, py, 1, 1).data;
  return "#" + [d[0], d[1], d[2]].map((v) => v.toString(16).padStart(2, "0")).join("");
}

function setColour(colour, record = true) {
  if (selected < 0) return;
  if (record) remember();
  hints[selected].color = colour;
  changed();
}

function removeSelected() {
  if (selected < 0) return;
  remember();
  hints.splice(selected, 1);
  selected = -1;
  changed();
}

// ---- drawing ---------------------------------------------------------------------------------------
function layout() {
  const vp = $("viewport"), stage = $("stage");
  if (view.fit) {                                      // measured without the scroll bars of a zoomed view
    stage.style.width = stage.style.height = "0px";
    $("points").textContent = "";                      // (its points would still overflow)
    view.scale = Math.min((vp.clientWidth - 8) / view.W, (vp.clientHeight - 8) / view.H, 4);
  }
  stage.style.width = `${Math.round(view.W * view.scale)}px`;
  stage.style.height = `${Math.round(view.H * view.scale)}px`;
  $("zoom-level").textContent = `${Math.round(view.scale * 100)}%`;
  drawPoints();
}

function zoom(factor) {
  view.fit = factor === 0;
  if (!view.fit) view.scale = Math.max(0.05, Math.min(16, view.scale * factor));
  layout();
}

function drawPoints() {
  const layer = $("points");
  layer.textContent = "";
  hints.forEach((h, i) => {
    const dot = document.createElement("div");
    dot.className = "point" + (i === selected ? " selected" : "");
    dot.dataset.index = i;
    dot.style.left = `${(h.x + 0.5) * view.scale}px`;
    dot.style.top = `${(h.y + 0.5) * view.scale}px`;
    dot.style.background = h.color;
    dot.title = `(${h.x}, ${h.y}) ${h.color}`;
    layer.appendChild(dot);
  });
}

let suggestedFor = "";
async function panel(suggest) {
  const tools = $("point-tools");
  if (selected < 0) {
    tools.hidden = true;
    $("where").textContent = hints.length ? "Click a point to choose its colour, or the photo to add one."
                                          : "Click the photo to add a point.";
    return;
  }
  const h = hints[selected];
  tools.hidden = false;
  $("where").textContent = `Point at x ${h.x}, y ${h.y}`;
  $("picker").value = /^#[0-9a-f]{6}$/i.test(h.color) ? h.color.toLowerCase() : "#808080";
  markCurrent();
  const key = `${h.x},${h.y}`;
  if (!suggest || key === suggestedFor) return;
  suggestedFor = key;
  const box = $("suggestions");
  box.textContent = "";
  try {
    const { colors } = await (await api(`/api/suggest?x=${h.x}&y=${h.y}`)).json();
    if (key !== suggestedFor) return;                 // another point was chosen meanwhile
    for (const c of colors) {
      const b = document.createElement("button");
      b.className = "swatch";
      b.style.background = c;
      b.title = c;
      b.dataset.color = c;
      b.addEventListener("click", () => setColour(c));
      box.appendChild(b);
    }
    markCurrent();
  } catch (e) { say(e.message, true); }
}

function markCurrent() {
  const c = selected >= 0 ? hints[selected].color.toLowerCase() : "";
  for (const b of $("suggestions").children) b.classList.toggle("current", b.dataset.color === c);
}

function setMode(m) {
  mode = m;
  for (const r of document.querySelectorAll("input[name=mode]")) r.checked = r.value === m;
  if (m === "edited" && shownHints !== snapshot()) refresh(); else show();
}

// ---- mouse -----------------------------------------------------------------------------------------
function photoPoint(ev) {
  const r = $("stage").getBoundingClientRect();
  const clamp = (v, n) => Math.max(0, Math.min(n - 1, Math.floor(v)));
  return { x: clamp((ev.clientX - r.left) / view.scale, view.W), y: clamp((ev.clientY - r.top) / view.scale, view.H) };
}

let drag = null;                                       // {index, before, moved}
$("stage").addEventListener("mousedown", (ev) => {
  if (ev.button !== 0) return;
  ev.preventDefault();
  const dot = ev.target.closest(".point");
  if (dot) {
    selected = Number(dot.dataset.index);
    drag = { index: selected, before: snapshot(), moved: false };
    drawPoints();
    panel(true);
    return;
  }
  const p = photoPoint(ev);
  remember();
  hints.push({ x: p.x, y: p.y, color: colourAt(p.x, p.y) });
  selected = hints.length - 1;
  changed(true);
});

window.addEventListener("mousemove", (ev) => {
  if (!drag) return;
  const p = photoPoint(ev);
  const h = hints[drag.index];
  if (p.x === h.x && p.y === h.y) return;
  h.x = p.x; h.y = p.y;
  drag.moved = true;
  drawPoints();
  refresh();
});

window.addEventListener("mouseup", () => {
  if (!drag) return;
  if (drag.moved) { remember(drag.before); panel(true); }
  drag = null;
});

$("stage").addEventListener("contextmenu", (ev) => {
  ev.preventDefault();
  const dot = ev.target.closest(".point");
  if (!dot) return;
  selected = Number(dot.dataset.index);
  removeSelected();
});

// ---- controls and keys -------------------------------------------------------------------------------
let picking = false;                                   // one undo step for a whole drag in the colour dialog
$("picker").addEventListener("input", (ev) => { setColour(ev.target.value, !picking); picking = true; });
$("picker").addEventListener("change", () => { picking = false; });
$("remove").addEventListener("click", removeSelected);
$("undo").addEventListener("click", () => restore(undoStack, redoStack));
$("redo").addEventListener("click", () => restore(redoStack, undoStack));
$("zoom-in").addEventListener("click", () => zoom(1.25));
$("zoom-out").addEventListener("click", () => zoom(0.8));
$("zoom-fit").addEventListener("click", () => zoom(0));
for (const r of document.querySelectorAll("input[name=mode]")) r.addEventListener("change", () => setMode(r.value));
window.addEventListener("resize", () => { if (view.fit) layout(); });

async function save() {
  say("saving …");
  try {
    const paths = await (await api("/api/save", { hints })).json();
    say(`saved ${paths.image} and ${paths.hints}`);
    $("status").dataset.saved = paths.image;
  } catch (e) { say(e.message, true); }
}
$("save").addEventListener("click", save);

window.addEventListener("keydown", (ev) => {
  if (ev.target.tagName === "INPUT" && ev.target.type !== "radio") return;
  const ctrl = ev.ctrlKey || ev.metaKey;
  const k = ev.key.toLowerCase();
  if (ctrl && k === "z") restore(ev.shiftKey ? redoStack : undoStack, ev.shiftKey ? undoStack : redoStack);
  else if (ctrl && k === "y") restore(redoStack, undoStack);
  else if (ctrl && k === "s") save();
  else if (ctrl || ev.altKey) return;
  else if (k === "delete" || k === "backspace") removeSelected();
  else if (k === "escape") { selected = -1; drawPoints(); panel(false); }
  else if (k === "1" || k === "2" || k === "3") setMode(["grey", "auto", "edited"][Number(k) - 1]);
  else if (k === "+" || k === "=") zoom(1.25);
  else if (k === "-") zoom(0.8);
  else if (k === "0") zoom(0);
  else return;
  ev.preventDefault();
});

// ---- start -------------------------------------------------------------------------------------------
(async function start() {
  try {
    const s = await (await api("/api/state")).json();
    view.W = s.width; view.H = s.height;
    $("name").textContent = `${s.name} (${s.width}×${s.height})`;
    $("save").title = `writes ${s.output} and ${s.hints_output} (Ctrl+S)`;
    hints = s.hints;
    layout();
    panel(false);
    refresh();
  } catch (e) { say(`cannot reach the editor: ${e.message}`, true); }
})();
