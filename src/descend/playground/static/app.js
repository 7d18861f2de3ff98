// descend playground: this script only draws and sends requests.
// Every number on the page (steps, losses, schedules, boundaries, statistics) comes
// from the server, which runs the library's code.
"use strict";

const COLORS = ["#2f6fde", "#e8590c", "#2b8a3e", "#c2255c", "#7048e8", "#0b7285", "#e67700", "#495057"];
const $ = (id) => document.getElementById(id);
const state = { options: null, surface: null, race: null, frame: 0, anim: null,
                session: null, trainer: null, history: [], playing: false, looping: false, points: null };
window.playground = state;  // read by the browser tests

// ------------------------------------------------------------------ helpers

function fmt(v) {
  if (v === null || v === undefined) return "—";
  return Number(v).toPrecision(6);
}

function showError(msg) {
  const box = $("error");
  if (!msg) { box.hidden = true; box.textContent = ""; return; }
  box.hidden = false;
  box.textContent = msg;
}

async function api(method, path, body) {
  const init = { method, headers: {} };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(path, init);
  } catch (e) {
    throw new Error("the playground server does not answer (" + e.message + ")");
  }
  const data = await res.json();
  if (!res.ok) throw new Error(data.error || ("HTTP " + res.status));
  return data;
}

function option(select, values) {
  select.innerHTML = "";
  for (const v of values) {
    const o = document.createElement("option");
    o.value = o.textContent = v;
    select.appendChild(o);
  }
}

// A block of text inputs, one per hyperparameter, from a spec {name, hyper:[{name, default, advanced}]};
// the advanced ones (clipping, noise, L1, ...) fold under "more".
function hyperFields(container, spec, values) {
  container.innerHTML = "";
  const more = document.createElement("details");
  more.innerHTML = "<summary>more</summary>";
  for (const h of spec.hyper) {
    const l = document.createElement("label");
    const v = values && values[h.name] !== undefined ? values[h.name] : h.default;
    l.textContent = h.name + " ";
    const inp = document.createElement("input");
    inp.dataset.name = h.name;
    inp.value = v === null ? "" : Array.isArray(v) ? v.join(", ") : String(v);
    l.appendChild(inp);
    (h.advanced ? more : container).appendChild(l);
  }
  if (more.children.length > 1) container.appendChild(more);
}

// The typed text of each field: the server parses and validates it.
function readFields(container) {
  const out = {};
  for (const inp of container.querySelectorAll("input[data-name]")) out[inp.dataset.name] = inp.value;
  return out;
}

function toCanvas(canvas, bounds) {
  const [x0, x1, y0, y1] = bounds;
  return (x, y) => [(x - x0) / (x1 - x0) * canvas.width, canvas.height - (y - y0) / (y1 - y0) * canvas.height];
}

// Viridis-like colour ramp for t in [0, 1].
const RAMP = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];
function ramp(t) {
  t = Math.min(1, Math.max(0, t)) * (RAMP.length - 1);
  const i = Math.min(RAMP.length - 2, Math.floor(t)), f = t - i;
  return RAMP[i].map((c, k) => c + f * (RAMP[i + 1][k] - c));
}

// Paint an n x n grid (row i = i-th y from the bottom) with colour(v) onto the canvas.
function paintGrid(canvas, n, values, colour) {
  const off = document.createElement("canvas");
  off.width = off.height = n;
  const ctx = off.getContext("2d");
  const img = ctx.createImageData(n, n);
  for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) {
    const c = colour(values[i * n + j]);
    const p = ((n - 1 - i) * n + j) * 4;
    img.data[p] = c[0]; img.data[p + 1] = c[1]; img.data[p + 2] = c[2]; img.data[p + 3] = 255;
  }
  ctx.putImageData(img, 0, 0);
  const g = canvas.getContext("2d");
  g.imageSmoothingEnabled = true;
  g.drawImage(off, 0, 0, canvas.width, canvas.height);
}

// Line chart of several series [{values, color}] over steps 0..; log scale on y.
function chart(canvas, series, upto) {
  const g = canvas.getContext("2d");
  const W = canvas.width, H = canvas.height, L = 46, B = 18;
  g.clearRect(0, 0, W, H);
  let lo = Infinity, hi = -Infinity, len = 1;
  for (const s of series) {
    len = Math.max(len, s.values.length);
    for (const v of s.values) if (v !== null && v > 0) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
  }
  g.strokeStyle = "#d0d5dd"; g.strokeRect(L, 4, W - L - 4, H - B - 4);
  g.fillStyle = "#667085"; g.font = "10px sans-serif";
  if (!isFinite(lo)) return;
  if (hi / lo < 10) { hi *= 3; lo /= 3; }
  const ly0 = Math.log10(lo), ly1 = Math.log10(hi);
  const X = (k) => L + k / Math.max(1, len - 1) * (W - L - 6);
  const Y = (v) => 4 + (ly1 - Math.log10(v)) / (ly1 - ly0) * (H - B - 8);
  g.fillText(hi.toExponential(1), 2, 12);
  g.fillText(lo.toExponential(1), 2, H - B);
  g.fillText("0", L, H - 5);
  const steps = series.find((s) => s.steps && s.steps.length);
  g.fillText(String(steps ? steps.steps[steps.steps.length - 1] : len - 1), W - 30, H - 5);
  for (const s of series) {
    g.strokeStyle = s.color; g.lineWidth = 1.5; g.beginPath();
    let pen = false;
    const n = Math.min(s.values.length, upto === undefined ? Infinity : upto + 1);
    for (let k = 0; k < n; k++) {
      const v = s.values[k];
      if (v === null || !(v > 0)) { pen = false; continue; }
      const x = X(s.steps ? s.steps[k] / Math.max(1, s.steps[s.steps.length - 1]) * (len - 1) : k), y = Y(v);
      if (pen) g.lineTo(x, y); else g.moveTo(x, y);
      pen = true;
    }
    g.stroke();
  }
}

// ------------------------------------------------------------------ optimizer race

function optimizerSpec(name) { return state.options.optimizers.find((o) => o.name === name); }
function scheduleSpec(name) { return state.options.schedules.find((o) => o.name === name); }

function addRacer(name, hyper) {
  const div = document.createElement("div");
  div.className = "racer";
  const sel = document.createElement("select");
  sel.className = "opt-name";
  // the race runs one 2-D parameter: the layer-wise methods (K-FAC, Shampoo, ...) are left out
  option(sel, state.options.optimizers.filter((o) => o.race).map((o) => o.name));
  sel.value = name;
  const remove = document.createElement("button");
  remove.className = "remove"; remove.type = "button"; remove.textContent = "✕";
  remove.onclick = () => { div.remove(); colourRacers(); };
  const hyp = document.createElement("div"); hyp.className = "hyper";
  const ssel = document.createElement("select"); ssel.className = "sched-name";
  option(ssel, state.options.schedules.map((o) => o.name));
  const shyp = document.createElement("div"); shyp.className = "hyper sched";
  sel.onchange = () => hyperFields(hyp, optimizerSpec(sel.value));
  ssel.onchange = () => hyperFields(shyp, scheduleSpec(ssel.value));
  const sl = document.createElement("label"); sl.textContent = "lr schedule "; sl.appendChild(ssel);
  div.append(remove, sel, hyp, sl, shyp);
  $("racers").appendChild(div);
  hyperFields(hyp, optimizerSpec(name), hyper);
  hyperFields(shyp, scheduleSpec("none"));
  colourRacers();
}

function colourRacers() {
  [...document.querySelectorAll(".racer")].forEach((d, i) => { d.style.borderLeftColor = COLORS[i % COLORS.length]; });
}

function surfaceRequest() {
  const body = { surface: $("surface").value };
  if (body.surface === "expression") body.expression = $("expression").value;
  return body;
}

async function loadSurface() {
  const name = $("surface").value;
  $("expression-row").hidden = name !== "expression";
  const spec = state.options.surfaces.find((s) => s.name === name);
  $("formula").textContent = spec ? "f(x, y) = " + spec.formula : "";
  try {
    state.surface = await api("POST", "/api/surface", surfaceRequest());
    showError(null);
  } catch (e) { showError(e.message); return; }
  $("start-x").value = state.surface.start[0];
  $("start-y").value = state.surface.start[1];
  state.race = null;
  drawRace();
}

function drawRace() {
  const cv = $("race-canvas"), g = cv.getContext("2d");
  g.clearRect(0, 0, cv.width, cv.height);
  const s = state.surface;
  if (!s) return;
  const lo = Math.min(...s.shade), hi = Math.max(...s.shade);
  paintGrid(cv, s.n, s.shade, (v) => ramp((v - lo) / (hi - lo || 1)));
  const P = toCanvas(cv, s.bounds);
  g.strokeStyle = "rgba(255,255,255,0.55)"; g.lineWidth = 1;
  for (const c of s.contours) for (const path of c.paths) {
    g.beginPath();
    path.forEach(([x, y], k) => { const [a, b] = P(x, y); if (k) g.lineTo(a, b); else g.moveTo(a, b); });
    g.stroke();
  }
  g.fillStyle = "#fff"; g.strokeStyle = "#000";
  for (const [mx, my] of s.minima) {
    const [a, b] = P(mx, my);
    g.beginPath(); g.arc(a, b, 5, 0, 2 * Math.PI); g.fill(); g.stroke();
  }
  const r = state.race;
  if (!r) {  // a new surface: no paths yet, clear the charts and the table of the last race
    for (const id of ["race-loss", "race-dist"]) $(id).getContext("2d").clearRect(0, 0, $(id).width, $(id).height);
    $("race-table").querySelector("tbody").innerHTML = "";
    return;
  }
  r.runs.forEach((run, i) => {
    const k = Math.min(state.frame, run.x.length - 1);
    g.strokeStyle = COLORS[i % COLORS.length]; g.lineWidth = 2; g.beginPath();
    for (let t = 0; t <= k; t++) {
      const [a, b] = P(run.x[t], run.y[t]);
      if (t) g.lineTo(a, b); else g.moveTo(a, b);
    }
    g.stroke();
    const [a, b] = P(run.x[k], run.y[k]);
    g.fillStyle = COLORS[i % COLORS.length];
    g.beginPath(); g.arc(a, b, 4.5, 0, 2 * Math.PI); g.fill();
  });
  const [sx, sy] = P(r.start[0], r.start[1]);
  g.strokeStyle = "#fff"; g.lineWidth = 2; g.strokeRect(sx - 4, sy - 4, 8, 8);
  const series = (key) => r.runs.map((run, i) => ({ values: run[key] || [], color: COLORS[i % COLORS.length] }));
  chart($("race-loss"), series("loss").map((s) => ({ ...s, values: s.values.map((v) => v === null ? null : v - Math.min(0, lossFloor())) })), state.frame);
  chart($("race-dist"), series("distance"), state.frame);
  raceTable();
}

// Losses can be negative (saddle, typed formulas): the log chart shows f - min(0, lowest f seen).
function lossFloor() {
  let lo = Infinity;
  for (const run of state.race.runs) for (const v of run.loss) if (v !== null) lo = Math.min(lo, v);
  return lo < 0 ? lo - 1e-3 : 0;
}

function raceTable() {
  const body = $("race-table").querySelector("tbody");
  body.innerHTML = "";
  state.race.runs.forEach((run, i) => {
    const k = Math.min(state.frame, run.x.length - 1);
    const tr = document.createElement("tr");
    const done = state.frame >= run.x.length - 1;
    const status = done ? (run.stopped || "ran all steps") : "running";
    tr.innerHTML = `<td><span class="swatch" style="background:${COLORS[i % COLORS.length]}"></span></td>` +
      `<td class="name">${run.name}</td><td class="step">${k}</td><td class="x">${fmt(run.x[k])}</td>` +
      `<td class="y">${fmt(run.y[k])}</td><td class="loss">${fmt(run.loss[k])}</td>` +
      `<td class="dist">${run.distance ? fmt(run.distance[k]) : "—"}</td>` +
      `<td class="status ${run.stopped && done ? "stopped" : ""}"></td>`;
    tr.querySelector(".status").textContent = status;
    body.appendChild(tr);
  });
}

async function runRace() {
  const racers = [...document.querySelectorAll(".racer")].map((d) => ({
    name: d.querySelector(".opt-name").value,
    hyper: readFields(d.querySelector(".hyper")),
    schedule: { name: d.querySelector(".sched-name").value, hyper: readFields(d.querySelector(".sched")) },
  }));
  const body = { ...surfaceRequest(), start: [$("start-x").value, $("start-y").value],
                 steps: $("steps").value, optimizers: racers };
  $("run-race").disabled = true;
  try {
    state.race = await api("POST", "/api/race", body);
    showError(null);
    animateRace();
  } catch (e) {
    showError(e.message);
  } finally {
    $("run-race").disabled = false;
  }
}

function animateRace() {
  if (state.anim) cancelAnimationFrame(state.anim);
  const last = Math.max(...state.race.runs.map((r) => r.x.length - 1));
  const per = Math.max(1, Math.ceil(last / 150));
  state.frame = 0;
  state.raceDone = false;
  const tick = () => {
    drawRace();
    if (state.frame >= last) { state.raceDone = true; state.anim = null; return; }
    state.frame = Math.min(last, state.frame + per);
    state.anim = requestAnimationFrame(tick);
  };
  tick();
}

// ------------------------------------------------------------------ network trainer

function trainerRequest() {
  const ids = ["dataset", "classes", "n", "noise", "test_fraction", "seed", "hidden", "activation", "init",
               "norm", "dropout", "l1", "l2", "batch_size"];
  const body = {};
  for (const id of ids) body[id] = $(id).value;
  body.residual = $("residual").checked;
  const hidden = body.hidden.trim();
  body.hidden = hidden === "" ? [] : hidden.split(",").map((s) => s.trim());
  body.optimizer = $("trainer-opt").querySelector(".opt-name").value;
  body.hyper = readFields($("trainer-opt").querySelector(".hyper"));
  return body;
}

function takeState(data) {
  if (data.data) { state.points = data.data; state.config = data.config; state.history = []; }
  state.history = state.history.slice(0, data.history_from || 0).concat(data.history);
  state.trainer = data;
}

// blobs and spirals take a class count (up to max_classes), the other sets two classes.
function limitClasses() {
  const most = state.options.max_classes[$("dataset").value] || 2;
  const box = $("classes");
  box.disabled = most <= 2;
  box.max = String(most);
  if (most <= 2) box.value = "2";
  else if (!(Number(box.value) >= 2)) box.value = "3";
}

async function newRun() {
  pause();
  try {
    const data = await api("POST", "/api/trainer", trainerRequest());
    if (state.session) api("DELETE", "/api/trainer/" + state.session).catch(() => {});
    state.session = data.session;
    takeState(data);
    showError(null);
  } catch (e) { showError(e.message); }
  drawTrainer();
}

async function stepRun(n) {
  if (!state.session) await newRun();
  if (!state.session) return false;
  try {
    const data = await api("POST", `/api/trainer/${state.session}/step`, { n, since: state.history.length });
    takeState(data);
    showError(null);
  } catch (e) { showError(e.message); pause(); return false; }
  drawTrainer();
  return !state.trainer.stopped;
}

async function play() {
  if (state.playing) { pause(); return; }
  state.playing = true;
  state.looping = true;  // until the step in flight when paused has come back and is drawn
  $("play").textContent = "Pause";
  try {
    while (state.playing) {
      const per = parseInt($("per-frame").value, 10);
      if (!(per >= 1)) { showError("`steps per frame` must be an integer >= 1. Received: " + $("per-frame").value); break; }
      if (!(await stepRun(per))) break;
      await new Promise((r) => requestAnimationFrame(r));
    }
  } finally {
    state.looping = false;
    pause();
  }
}

function pause() { state.playing = false; $("play").textContent = "Play"; }

async function resetRun() {
  pause();
  if (!state.session) return newRun();
  try { takeState(await api("POST", `/api/trainer/${state.session}/reset`, {})); showError(null); }
  catch (e) { showError(e.message); }
  drawTrainer();
}

// "#rrggbb" -> [r, g, b]
function rgb(hex) { return [1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16)); }

// The grid point's colour: its most likely class, faded to white as the probabilities
// even out (strength (p_max - 1/K) / (1 - 1/K)); the boundary is where the colour flips.
function classShade(K) {
  const light = COLORS.slice(0, K).map((c) => rgb(c).map((v) => 255 - 0.5 * (255 - v)));
  return (probs) => {
    let best = 0;
    for (let k = 1; k < K; k++) if (probs[k] > probs[best]) best = k;
    const s = Math.max(0, (probs[best] - 1 / K) / (1 - 1 / K));
    return light[best].map((v) => 255 + s * (v - 255));
  };
}

function drawTrainer() {
  const t = state.trainer;
  const cv = $("boundary"), g = cv.getContext("2d");
  g.clearRect(0, 0, cv.width, cv.height);
  if (!t) return;
  const K = t.classes, points = [];
  for (let i = 0; i < t.grid * t.grid; i++) points.push(t.boundary.slice(i * K, (i + 1) * K));
  paintGrid(cv, t.grid, points, classShade(K));
  const P = toCanvas(cv, t.bounds);
  const dot = (pts, filled) => pts.x.forEach(([x, y], k) => {
    const [a, b] = P(x, y);
    g.beginPath(); g.arc(a, b, 3.5, 0, 2 * Math.PI);
    g.fillStyle = COLORS[pts.y[k] % COLORS.length];
    g.strokeStyle = filled ? "#fff" : g.fillStyle;
    if (filled) { g.fill(); g.stroke(); } else { g.lineWidth = 1.5; g.stroke(); }
  });
  dot(state.points.train, true);
  dot(state.points.test, false);
  const h = state.history[state.history.length - 1];
  $("m-step").textContent = t.steps;
  $("m-train-loss").textContent = fmt(h.train_loss);
  $("m-test-loss").textContent = fmt(h.test_loss);
  $("m-train-acc").textContent = fmt(h.train_acc);
  $("m-test-acc").textContent = fmt(h.test_acc);
  const st = $("status");
  st.textContent = t.stopped ? "Stopped: " + t.stopped : (state.playing ? "training…" : "");
  st.className = "status" + (t.stopped ? " stopped" : "");
  const steps = state.history.map((e) => e.step);
  chart($("trainer-loss"), [
    { values: state.history.map((e) => e.train_loss), steps, color: "#2f6fde" },
    { values: state.history.map((e) => e.test_loss), steps, color: "#e8590c" }]);
  const body = $("stats").querySelector("tbody");
  body.innerHTML = "";
  const acts = t.stats.activations, grads = t.stats.gradients;
  for (let i = 0; i < Math.max(acts.length, grads.length); i++) {
    const a = acts[i], gr = grads[i];
    const tr = document.createElement("tr");
    tr.innerHTML = `<td class="name act-layer">${a ? a.layer + " " + a.module : ""}</td><td class="act-mean">${a ? fmt(a.mean) : "—"}</td>` +
      `<td class="act-std">${a ? fmt(a.std) : "—"}</td><td class="name grad-layer">${gr ? gr.layer + " " + gr.module : ""}</td>` +
      `<td class="grad-norm">${gr ? fmt(gr.norm) : "—"}</td><td class="grad-std">${gr ? fmt(gr.std) : "—"}</td>`;
    body.appendChild(tr);
  }
}

// ------------------------------------------------------------------ start-up

async function main() {
  try {
    state.options = await api("GET", "/api/options");
  } catch (e) { showError(e.message); return; }
  const o = state.options;
  option($("surface"), o.surfaces.map((s) => s.name).concat(["expression"]));
  if (o.surfaces.some((s) => s.name === "quadratic")) $("surface").value = "quadratic";
  option($("dataset"), o.datasets);
  $("dataset").value = "circles";
  $("dataset").onchange = limitClasses;
  limitClasses();
  option($("activation"), o.activations); $("activation").value = "tanh";
  option($("init"), o.inits); $("init").value = "xavier_uniform";
  option($("norm"), o.norms);
  $("backends").textContent = "computed by: " + Object.entries(o.backends).map(([k, v]) => k + " = " + v).join(" · ");
  for (const b of document.querySelectorAll(".tab")) b.onclick = () => {
    for (const t of document.querySelectorAll(".tab")) t.classList.toggle("active", t === b);
    $("view-race").hidden = b.dataset.view !== "race";
    $("view-trainer").hidden = b.dataset.view !== "trainer";
    if (b.dataset.view === "trainer" && !state.session) newRun();
  };
  $("surface").onchange = loadSurface;
  $("expression").onchange = loadSurface;
  $("add-racer").onclick = () => addRacer("adam", { lr: 0.05 });
  $("run-race").onclick = runRace;
  $("replay-race").onclick = () => state.race && animateRace();
  const names = o.optimizers.map((x) => x.name);
  addRacer("sgd", { lr: 0.01 });
  if (names.includes("sgd")) addRacer("sgd", { lr: 0.01, momentum: 0.9 });
  if (names.includes("adam")) addRacer("adam", { lr: 0.1 });
  // trainer optimizer: one racer-like block without schedule
  const box = $("trainer-opt");
  const sel = document.createElement("select"); sel.className = "opt-name";
  option(sel, names); sel.value = names.includes("sgd") ? "sgd" : names[0];
  const hyp = document.createElement("div"); hyp.className = "hyper";
  const lab = document.createElement("label"); lab.textContent = "optimizer "; lab.appendChild(sel);
  box.append(lab, hyp);
  sel.onchange = () => hyperFields(hyp, optimizerSpec(sel.value));
  hyperFields(hyp, optimizerSpec(sel.value), { lr: 0.1 });
  $("apply").onclick = newRun;
  $("play").onclick = play;
  $("step").onclick = () => { pause(); stepRun(1); };
  $("reset").onclick = resetRun;
  await loadSurface();
  state.ready = true;
}

main();
