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

  svg.querySelectorAll("g.box").forEach((g) => g.addEventListener("click", () => select(g)));
  document.querySelectorAll("#label-buttons button").forEach((b) => b.addEventListener(
    "click", () => send(b.dataset.action || "label", b.dataset.class)));
  document.addEventListener("keydown", (e) => {
    if (e.ctrlKey || e.metaKey || e.altKey) { return; }
    const classes = { "1": "A", "2": "B", "3": "C" };
    if (classes[e.key]) { send("label", classes[e.key]); }
    else if (e.key === "x" || e.key === "X") { send("not-one"); }
    else { return; }
    e.preventDefault();
  });
  const start = window.location.hash && document.querySelector(window.location.hash);
  if (start) { select(start); }
}());
