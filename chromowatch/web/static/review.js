// The review grid's keys. Every answer is POSTed at once, in order, with the CSRF token.
"use strict";
(function () {
  const grid = document.getElementById("grid");
  if (!grid) { return; }
  const tiles = Array.from(grid.querySelectorAll(".tile"));
  const token = document.querySelector('meta[name="csrf-token"]').content;
  const status = document.getElementById("status");
  let focus = 0;
  // A spread that cannot be read (moved, deleted) leaves no broken picture in its tile.
  grid.querySelectorAll("img.context").forEach((img) => {
    if (img.complete && img.naturalWidth === 0) { img.remove(); }
    img.addEventListener("error", () => img.remove());
  });
  let chain = Promise.resolve();

  function show(i) {
    if (!tiles.length) { return; }
    focus = Math.max(0, Math.min(tiles.length - 1, i));
    tiles.forEach((t, j) => t.classList.toggle("focused", j === focus));
    tiles[focus].focus({ preventScroll: true });
    tiles[focus].scrollIntoView({ block: "nearest" });
  }

  function tileOf(cropId) {
    return tiles.find((t) => Number(t.dataset.crop) === cropId);
  }

  function mark(state) {
    const t = tileOf(state.crop_id);
    if (!t) { return; }
    const answer = state.not_one ? "not one" : (state.label || "");
    t.dataset.answer = state.not_one ? "X" : (state.label || "");
    t.querySelector(".answer").textContent = answer ? "→ " + answer : "";
    t.classList.toggle("answered", Boolean(answer));
  }

  function post(url, body) {
    chain = chain.then(() => fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": token },
      body: JSON.stringify(body || {}),
    }).then((r) => {
      if (!r.ok) { throw new Error(r.status + " " + r.statusText); }
      return r.json();
    }).then((data) => {
      (data.crops || []).forEach(mark);
      status.textContent = data.message || "saved";
      grid.dataset.saved = String(Number(grid.dataset.saved || 0) + 1);
    }).catch((err) => {
      status.textContent = "not saved: " + err.message;
      status.classList.add("error");
    }));
    return chain;
  }

  function act(action, cls) {
    const chosen = tiles.filter((t) => t.classList.contains("selected"));
    if (chosen.length) {  // one answer for every selected tile
      post("/api/accept", { crop_ids: chosen.map((t) => Number(t.dataset.crop)),
                            action: action, class: cls || null });
      chosen.forEach((t) => t.classList.remove("selected"));
      return;
    }
    const t = tiles[focus];
    post("/api/action", { crop_id: Number(t.dataset.crop), action: action, class: cls || null });
    show(focus + 1);
  }

  function toggle(i) {
    tiles[i].classList.toggle("selected");
  }

  function columns() {
    const top = tiles[0].offsetTop;
    const n = tiles.findIndex((t) => t.offsetTop !== top);
    return n > 0 ? n : tiles.length;
  }

  const moves = { ArrowRight: 1, ArrowLeft: -1 };
  document.addEventListener("keydown", (e) => {
    if (e.target instanceof HTMLInputElement) { return; }
    if ((e.ctrlKey || e.metaKey) && (e.key === "z" || e.key === "Z")) {
      e.preventDefault();
      post("/api/undo", {});
      return;
    }
    if (e.ctrlKey || e.metaKey || e.altKey) { return; }
    const classes = { "1": "A", "2": "B", "3": "C" };
    if (classes[e.key]) { act("label", classes[e.key]); }
    else if (e.key === "Enter") { act("accept"); }
    else if (e.key === "x" || e.key === "X") { act("not-one"); }
    else if (e.key === " ") { toggle(focus); }
    else if (moves[e.key]) { show(focus + moves[e.key]); }
    else if (e.key === "ArrowDown") { show(focus + columns()); }
    else if (e.key === "ArrowUp") { show(focus - columns()); }
    else { return; }
    e.preventDefault();
  });
  tiles.forEach((t, i) => t.addEventListener("click", (e) => {
    if (e.shiftKey) { toggle(i); }
    show(i);
  }));
  document.getElementById("accept-all").addEventListener("click", () => {
    const ids = tiles.filter((t) => !t.dataset.answer).map((t) => Number(t.dataset.crop));
    post("/api/accept", { crop_ids: ids });
  });
  show(0);
}());
