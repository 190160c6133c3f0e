// evo ui: polls the JSON endpoints of app.py and redraws each run's column. Plain JS, no build step.
// Cheap beside a run on the same machine: each poll says which version it holds (?since=N), an unchanged
// answer is a few bytes and draws nothing, and a change redraws only what changed (the heatmap's tiles in
// place, a table only when its rows differ). A hidden tab does not poll.
"use strict";
const runs = [];  // {info, el, overview, details, tiles}

const $ = (root, sel) => root.querySelector(sel);
const esc = s => String(s ?? "").replace(/[&<>"]/g, c => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"}[c]));
const fmt = v => v === null || v === undefined ? "–" : (Math.abs(v) >= 1e4 || (v !== 0 && Math.abs(v) < 1e-3) ? v.toExponential(3) : (+v.toPrecision(6)).toString());

async function getJSON(url) {
  const r = await fetch(url, {cache: "no-store"});
  if (!r.ok) throw new Error(`${url}: ${r.status}`);
  return r.json();
}

// A value in [0, 1] as a viridis-like colour.
const STOPS = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];
function colour(t) {
  t = Math.min(1, Math.max(0, isFinite(t) ? t : 0)) * (STOPS.length - 1);
  const i = Math.min(STOPS.length - 2, Math.floor(t)), f = t - i;
  const c = STOPS[i].map((a, k) => Math.round(a + f * (STOPS[i + 1][k] - a)));
  return `rgb(${c})`;
}

// Set an element's HTML only when it differs from what was set last: no re-layout for the same table.
function setHTML(el, html) {
  if (el._html !== html) { el.innerHTML = html; el._html = html; }
}

function table(el, cols, rows, render) {
  if (!rows || !rows.length) { setHTML(el, "<tr><td><small>none</small></td></tr>"); return; }
  setHTML(el, "<tr>" + cols.map(c => `<th>${esc(c)}</th>`).join("") + "</tr>" +
    rows.map(r => "<tr>" + render(r).map(v => `<td>${v}</td>`).join("") + "</tr>").join(""));
}

function line(svg, xs, ys, opts = {}) {
  const w = 360, h = svg.viewBox.baseVal.height, pad = 14;
  const pts = xs.map((x, i) => [x, ys[i]]).filter(p => p[1] !== null && isFinite(p[1]));
  if (pts.length < 1) { svg.innerHTML = `<text x="4" y="12">no data yet</text>`; return; }
  let [x0, x1] = [Math.min(...pts.map(p => p[0])), Math.max(...pts.map(p => p[0]))];
  let [y0, y1] = [Math.min(...pts.map(p => p[1])), Math.max(...pts.map(p => p[1]))];
  if (x1 === x0) x1 = x0 + 1; if (y1 === y0) { y1 += 0.5; y0 -= 0.5; }
  const X = x => pad + (x - x0) / (x1 - x0) * (w - 2 * pad), Y = y => h - pad - (y - y0) / (y1 - y0) * (h - 2 * pad);
  let path = pts.map(p => [X(p[0]), Y(p[1])]);
  if (opts.step) path = path.flatMap((p, i) => i ? [[p[0], path[i - 1][1]], p] : [p]);
  svg.innerHTML = `<polyline points="${path.map(p => p.join(",")).join(" ")}"/>` +
    `<text x="2" y="10">${esc(fmt(y1))}</text><text x="2" y="${h - 3}">${esc(fmt(y0))}</text>` +
    `<text x="${w - 3}" y="${h - 3}" text-anchor="end">${esc(opts.xlabel || "")} ${esc(fmt(x1))}</text>`;
}

// -- the archive --------------------------------------------------------------------------------
// The grid of each island is built once (its layout is fixed); an update then touches only the tiles whose
// program, colour or selection changed.
function heatmapLayout(info) {
  const lay = info.layout;
  if (lay.kind === "grid") {
    const dims = lay.axes.map(a => a.bins);
    const cols = dims[0], rows = dims.length > 1 ? dims[1] : 1, rest = dims.slice(2).reduce((a, b) => a * b, 1);
    // Row-major cell index (as GridCells): the first two axes drawn, any others folded in (best shown).
    return {cols, rows, place: c => [Math.floor(c / (rows * rest)), rows - 1 - Math.floor(c / rest) % rows],
            axes: `x: ${lay.axes[0].name}` + (lay.axes[1] ? `, y: ${lay.axes[1].name}` : "")};
  }
  const cols = Math.ceil(Math.sqrt(lay.cells)), rows = Math.ceil(lay.cells / cols);
  return {cols, rows, place: c => [c % cols, Math.floor(c / cols)], axes: `${lay.cells} CVT cells`};
}

function buildHeatmap(run) {
  const {info, el} = run, box = $(el, ".heatmap"), g = heatmapLayout(info);
  let html = "";
  for (let island = 0; island < info.islands; island++) {
    html += `<div class="island"><div class="label">island ${island}: <span class="filled-count">0</span> filled</div>` +
      `<div class="grid" style="grid-template-columns: repeat(${g.cols}, 14px)">` +
      `<div class="cell"></div>`.repeat(g.cols * g.rows) + "</div></div>";
  }
  box.innerHTML = html + `<div class="label"><small>${esc(g.axes)}; colour: ${esc(info.metric)}</small></div>`;
  run.grid = g;
  run.tiles = [...box.querySelectorAll(".island")].map(isl => ({
    cells: [...isl.querySelectorAll(".cell")], state: [], count: isl.querySelector(".filled-count")}));
}

function drawHeatmap(run) {
  const {info, overview: ov} = run;
  if (!run.tiles) buildHeatmap(run);
  const g = run.grid, vals = ov.cells.map(c => c.value).filter(v => v !== null);
  const lo = Math.min(...vals), hi = Math.max(...vals);
  const norm = v => { const t = hi > lo ? (v - lo) / (hi - lo) : 1; return info.objective === "maximize" ? t : 1 - t; };
  const better = (a, b) => info.objective === "maximize" ? a > b : a < b;
  run.tiles.forEach((isl, island) => {
    const tiles = new Map();
    for (const c of ov.cells) if (c.island === island) {
      const [x, y] = g.place(c.cell), key = y * g.cols + x, old = tiles.get(key);
      if (!old || (c.value !== null && (old.value === null || better(c.value, old.value)))) tiles.set(key, c);
    }
    isl.count.textContent = tiles.size;
    isl.cells.forEach((cell, k) => {
      const c = tiles.get(k);
      const state = c ? `${c.id}|${colour(norm(c.value))}|${c.id === run.selected}|${c.value}` : "";
      if (isl.state[k] === state) return;
      isl.state[k] = state;
      if (!c) { cell.className = "cell"; delete cell.dataset.pid; cell.removeAttribute("style"); cell.removeAttribute("title"); return; }
      cell.className = "cell filled" + (c.id === run.selected ? " selected" : "");
      cell.dataset.pid = c.id;
      cell.style.background = colour(norm(c.value));
      cell.title = `${c.id.slice(0, 12)}: ${fmt(c.value)}`;
    });
  });
}

// -- one program ----------------------------------------------------------------------------------
async function showProgram(run, pid) {
  run.selected = pid;
  const p = await getJSON(`/api/runs/${run.info.index}/program/${encodeURIComponent(pid)}`);
  const box = $(run.el, ".program");
  box.hidden = false;
  $(box, ".pid").textContent = pid.slice(0, 16);
  box.dataset.pid = pid;
  $(box, ".facts").innerHTML = `${esc(p.status)} · operator ${esc(p.operator)}${p.model ? " (" + esc(p.model) + ")" : ""}` +
    ` · island ${p.island}${p.cell !== null ? " · cell " + p.cell : ""} · evaluation #${p.evaluation ?? "–"}` +
    ` · parents ${p.parents.map(x => `<a href="#" data-pid="${esc(x)}">${esc(x.slice(0, 8))}</a>`).join(", ") || "none"}`;
  table($(box, ".metrics"), ["metric", "value"], [["value", p.value], ...Object.entries(p.metrics),
    ...Object.entries(p.descriptors).map(([k, v]) => ["descriptor " + k, v])], r => [esc(r[0]), esc(fmt(r[1]))]);
  const v = $(box, ".verdict");
  v.className = "verdict " + (p.verdict || "");
  v.innerHTML = `verdict: <b>${esc(p.verdict || "none")}</b>` + (p.reasons.length ? "<ul>" + p.reasons.map(r =>
    `<li>${esc(r.check)}: ${esc(r.reason)}</li>`).join("") + "</ul>" : "") + (p.error ? `<div>error: ${esc(p.error)}</div>` : "");
  $(box, ".code").textContent = p.source;
  $(box, ".lineage").innerHTML = "";
  if (run.overview) drawHeatmap(run);
}

function diffHTML(text) {
  return text.split("\n").map(l => {
    const cls = l.startsWith("@@") ? "hunk" : l.startsWith("+") ? "add" : l.startsWith("-") ? "del" : "";
    return `<span class="${cls}">${esc(l)}</span>`;
  }).join("\n");
}

async function showLineage(run) {
  const pid = $(run.el, ".program").dataset.pid;
  const lin = await getJSON(`/api/runs/${run.info.index}/lineage/${encodeURIComponent(pid)}`);
  $(run.el, ".lineage").innerHTML = (lin.truncated ? "<small>(older ancestors left out)</small>" : "") +
    lin.chain.map(n => `<div class="node"><b>${esc(n.id.slice(0, 12))}</b> ${esc(n.operator)} → ${esc(fmt(n.value))}` +
      (n.other_parents.length ? ` <small>(also from ${n.other_parents.map(x => esc(x.slice(0, 8))).join(", ")})</small>` : "") +
      (n.diff !== undefined ? `<pre class="diff">${diffHTML(n.diff || "(no change)")}</pre>` : "") + "</div>").join("");
}

// -- polling ----------------------------------------------------------------------------------------
const since = held => held ? `?since=${held.version}` : "";

async function refreshOverview(run) {
  const ov = await getJSON(`/api/runs/${run.info.index}/overview${since(run.overview)}`);
  if (ov.unchanged || (run.overview && run.overview.version === ov.version)) return;  // the run has not moved
  run.overview = ov;
  const el = run.el;
  $(el, ".evals").textContent = ov.evaluations;
  $(el, ".budget").textContent = ov.budget;
  $(el, ".fill").style.width = Math.min(100, 100 * ov.evaluations / ov.budget) + "%";
  $(el, ".rate").textContent = ov.evals_per_min === null ? "–" : ov.evals_per_min.toFixed(1);
  $(el, ".state").textContent = ov.running ? "running" : "not running";
  $(el, ".best").textContent = fmt(ov.best_value);
  $(el, ".elites").textContent = ov.elites;
  el.dataset.elites = ov.elites;
  el.dataset.evaluations = ov.evaluations;
  const best = ov.best.concat(ov.best.length ? [{n: ov.evaluations, value: ov.best[ov.best.length - 1].value}] : []);
  line($(el, ".best-chart"), best.map(b => b.n), best.map(b => b.value), {step: true, xlabel: "evaluations"});
  line($(el, ".rate-chart"), ov.progress.map(p => p.t / 60), windowedRate(ov.progress), {xlabel: "minutes"});
  drawHeatmap(run);
}

// Evaluations per minute at each progress point, over the window before it (a minute, or a fifth of a shorter
// run): two evaluations that end 3 ms apart are no rate of 20,000 a minute.
function windowedRate(pr) {
  const span = pr.length ? pr[pr.length - 1].t - pr[0].t : 0, w = Math.min(60, span / 5);
  let j = 0;
  return pr.map(p => {
    while (j + 1 < pr.length && pr[j + 1].t <= p.t - w) j++;
    const q = pr[j];
    return w > 0 && q.t <= p.t - w ? 60 * (p.n - q.n) / (p.t - q.t) : null;
  });
}

async function refreshDetails(run) {
  const d = await getJSON(`/api/runs/${run.info.index}/details${since(run.details)}`);
  if (d.unchanged || (run.details && run.details.version === d.version)) return;
  run.details = d;
  const el = run.el;
  $(el, ".window").textContent = `(the newest ${d.window} evaluations)`;
  table($(el, ".failures"), ["stage", "kind", "count", "example"], d.failures,
    r => [esc(r.stage), esc(r.kind), r.count, `<small>${esc(r.example)}</small>`]);
  table($(el, ".audit"), ["check", "programs", "example"], d.audit, r => [esc(r.check), r.count, `<small>${esc(r.example)}</small>`]);
  const credit = r => [esc(r.name), r.calls, r.tokens, r.evaluations, r.ok, r.new, r.improve];
  const cols = ["name", "calls", "tokens", "evals", "ok", "new cells", "improved"];
  table($(el, ".credit-operator"), cols, d.credit.operator, credit);
  table($(el, ".credit-model"), cols, d.credit.model, credit);
  $(el, ".lessons-box").hidden = !d.lessons;
  if (d.lessons) table($(el, ".lessons"), d.lessons.columns, d.lessons.rows, r => r.map(v => `<small>${esc(v)}</small>`));
  drawSuite();
}

// One row per run of a kernel task; its last cell, one line per workload: the time of the seed and of the best
// against the workload's speed of light (T_SOL), and how many times T_SOL the best takes.
function drawSuite() {
  const rows = runs.filter(r => r.details && r.details.suite).map(r => [r, r.details.suite]);
  const box = document.getElementById("suite");
  box.hidden = !rows.length;
  setHTML($(box, "tbody"), rows.map(([r, s]) => {
    const wl = s.workloads.length ? `<table class="workloads"><tr><th>workload</th><th>T_SOL µs</th><th>seed µs</th>` +
      `<th>best µs</th><th>best / T_SOL</th></tr>` + s.workloads.map(w => `<tr data-workload="${esc(w.name)}">` +
      `<td>${esc(w.name)}</td><td class="t-sol">${esc(fmt(w.t_sol_us))}</td><td>${esc(fmt(w.seed_us))}</td>` +
      `<td>${esc(fmt(w.best_us))}</td><td class="x-sol">${w.best_x_sol === null ? "–" : esc(fmt(w.best_x_sol)) + "×"}</td></tr>`).join("") +
      `</table><small>T_SOL on ${esc(s.peaks)} datasheet peaks${s.sol_error ? "; " + esc(s.sol_error) : ""}</small>`
      : "<small>no workload timed yet</small>";
    return `<tr><td>${esc(r.info.name)}</td><td>${esc(s.task)}</td><td>${esc(fmt(s.seed?.sol_score))}</td>` +
      `<td>${esc(fmt(s.best?.sol_score))}</td><td>${esc((s.best?.id || "").slice(0, 12))}</td><td>${wl}</td></tr>`;
  }).join(""));
}

function every(ms, fn) {
  const tick = async () => {
    if (!document.hidden) {  // a tab in the background asks nothing; it catches up when shown again
      try { await fn(); document.getElementById("updated").textContent = "updated " + new Date().toLocaleTimeString(); }
      catch (e) { document.getElementById("updated").textContent = "cannot reach evo ui: " + e.message; }
    }
    setTimeout(tick, ms);  // after the answer: a slow server is never asked twice at once
  };
  tick();
}

async function main() {
  const infos = await getJSON("/api/runs");
  const tpl = document.getElementById("run-template");
  for (const info of infos) {
    const el = tpl.content.firstElementChild.cloneNode(true);
    const run = {info, el, overview: null, details: null, selected: null};
    el.dataset.run = info.index;
    $(el, ".title").textContent = info.name;
    $(el, ".sub").textContent = `${info.task} · ${info.objective} ${info.metric} · ${info.run_dir}`;
    $(el, ".metric").textContent = info.metric;
    el.addEventListener("click", ev => {
      const t = ev.target.closest("[data-pid]");
      if (t && !t.classList.contains("program")) { ev.preventDefault(); showProgram(run, t.dataset.pid); }
    });
    $(el, ".show-lineage").addEventListener("click", () => showLineage(run));
    document.getElementById("runs").appendChild(el);
    runs.push(run);
    every(1000 * info.refresh_s, () => refreshOverview(run));
    every(3000 * info.refresh_s, () => refreshDetails(run));
  }
}
main();
