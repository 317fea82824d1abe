// The spread page: click a box to select it; 1/2/3/X or the buttons relabel it at once.
"use strict";
(function () {
  const svg = document.getElementById("spread");
  if (!svg || svg.dataset.canLabel !== "1") { return; }
  const token = document.querySelector('meta[name="csrf-token"]').content;
  const status = document.getElementById("status");
  const colours = { A: "#0072B2", B: "#E69F00", C: "#D55E00", X: "#CC00CC" };
  let selected = null;
  let chain = Promise.resolve();

  function select(g) {
    if (selected) { selected.classList.remove("selected"); }
    selected = g;
    g.classList.add("selected");
  }

  function mark(state) {
    const g = document.getElementById("crop-" + state.crop_id);
    if (!g) { return; }
    const shown = state.not_one ? "X" : (state.label || g.dataset.shown);
    g.dataset.shown = shown;
    g.classList.toggle("confirmed", Boolean(state.label || state.not_one));
    g.querySelector("rect").setAttribute("stroke", colours[shown] || "#8a8a8a");
    g.querySelector("text").setAttribute("fill", colours[shown] || "#8a8a8a");
    g.querySelector("text").textContent = shown;
  }

  function send(action, cls) {
    if (!selected) { status.textContent = "click a box first"; return; }
    const body = { crop_id: Number(selected.dataset.crop), action: action, class: cls || null };
    chain = chain.then(() => fetch("/api/action", {
      method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": token },
      body: JSON.stringify(body),
    }).then((r) => { if (!r.ok) { throw new Error(String(r.status)); } return r.json(); })
      .then((data) => {
        (data.crops || []).forEach(mark);
        status.textContent = data.message || "saved";
        svg.dataset.saved = String(Number(svg.dataset.saved || 0) + 1);
      }).catch((err) => { status.textContent = "not saved: " + err.message; }));
  }

  // Drawing a missed chromosome: drag on the spread, then 1/2/3 adds it with that class.
  const NS = "http://www.w3.org/2000/svg";
  let pending = null;
  let start = null;

  function point(e) {
    const p = svg.createSVGPoint();
    p.x = e.clientX;
    p.y = e.clientY;
    return p.matrixTransform(svg.getScreenCTM().inverse());
  }

  function box(a, b) {
    return { x: Math.round(Math.min(a.x, b.x)), y: Math.round(Math.min(a.y, b.y)),
             w: Math.round(Math.abs(a.x - b.x)), h: Math.round(Math.abs(a.y - b.y)) };
  }

  function place(rect, b) {
    rect.setAttribute("x", b.x); rect.setAttribute("y", b.y);
    rect.setAttribute("width", b.w); rect.setAttribute("height", b.h);
  }

  function drop() {
    if (pending) { pending.remove(); pending = null; }
  }

  svg.addEventListener("mousedown", (e) => {
    if (e.target.closest("g.box")) { return; }
    drop();
    start = point(e);
    pending = document.createElementNS(NS, "rect");
    pending.setAttribute("class", "pending");
    place(pending, box(start, start));
    svg.appendChild(pending);
    e.preventDefault();
  });
  svg.addEventListener("mousemove", (e) => {
    if (start && pending) { place(pending, box(start, point(e))); }
  });
  window.addEventListener("mouseup", (e) => {
    if (!start) { return; }
    const b = box(start, point(e));
    start = null;
    if (b.w < 4 || b.h < 4) { drop(); return; }
    place(pending, b);
    pending.dataset.box = JSON.stringify(b);
    status.textContent = "new box: press 1, 2 or 3 to add it as A, B or C (Esc drops it)";
  });

  function addBox(cls) {
    const rect = pending;
    pending = null;
    const b = JSON.parse(rect.dataset.box);
    chain = chain.then(() => fetch("/api/images/" + svg.dataset.image + "/boxes", {
      method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": token },
      body: JSON.stringify({ x: b.x, y: b.y, w: b.w, h: b.h, class: cls }),
    }).then((r) => r.json().then((data) => {
      if (!r.ok) { throw new Error(data.error || String(r.status)); }
      const g = document.createElementNS(NS, "g");
      g.setAttribute("class", "box confirmed");
      g.id = "crop-" + data.crop_id;
      g.dataset.crop = data.crop_id;
      rect.removeAttribute("class");
      const text = document.createElementNS(NS, "text");
      text.setAttribute("x", b.x); text.setAttribute("y", b.y - 3);
      g.appendChild(rect); g.appendChild(text);
      svg.appendChild(g);
      g.addEventListener("click", () => select(g));
      mark({ crop_id: data.crop_id, label: cls, not_one: false });
      status.textContent = data.message;
      svg.dataset.saved = String(Number(svg.dataset.saved || 0) + 1);
    })).catch((err) => { rect.remove(); status.textContent = "not saved: " + err.message; }));
  }

  svg.querySelectorAll("g.box").forEach((g) => g.addEventListener("click", () => select(g)));
  document.querySelectorAll("#label-buttons button").forEach((b) => b.addEventListener(
    "click", () => send(b.dataset.action || "label", b.dataset.class)));
  document.addEventListener("keydown", (e) => {
    if (e.ctrlKey || e.metaKey || e.altKey) { return; }
    const classes = { "1": "A", "2": "B", "3": "C" };
    if (e.key === "Escape" && pending) { drop(); }
    else if (classes[e.key] && pending && pending.dataset.box) { addBox(classes[e.key]); }
    else if (classes[e.key]) { send("label", classes[e.key]); }
    else if (e.key === "x" || e.key === "X") { send("not-one"); }
    else { return; }
    e.preventDefault();
  });
  const first = window.location.hash && document.querySelector(window.location.hash);
  if (first) { select(first); }
}());
