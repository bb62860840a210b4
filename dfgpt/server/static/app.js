// dfgpt explorer: the page. Plain JavaScript, no build step, no network beyond this server.
// Every number shown comes from the JSON API (which returns the Python API's answers);
// colours come from /api/colors, which is dfgpt.views.colors.COLORS.
"use strict";

const W = 64; // the server's window of rows and columns
const S = { model: null, text: null, view: "overview", block: null, head: null, tensor: null, lead: 0, r0: 0, c0: 0,
  cell: null };
let COLORS = {}, MODELS = [], HISTORY = { undo: 0, redo: 0 }, STALE = {}, GRIDS = [], BEFORE = {}, CHANGED = false;
let distSeq = 0;
const RANKED = new Set(); // cells whose influence the user asked for (large models rank on request)
const $ = (sel) => document.querySelector(sel);
const esc = (s) => String(s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);

// -- numbers and colours ------------------------------------------------------------------------
function fmt(x) { // like Python's f"{x:.4g}" (dfgpt.views.colors.fmt)
  if (typeof x === "string") return x === "-inf" ? "−∞" : x === "inf" ? "∞" : "nan";
  if (x === 0) return "0";
  const e = Math.floor(Math.log10(Math.abs(Number(x.toPrecision(4)))));
  if (e < -4 || e >= 4) {
    const [m, ex] = x.toExponential(3).split("e");
    return m.replace(/\.?0+$/, "") + "e" + ex[0] + ex.slice(1).padStart(2, "0");
  }
  const s = x.toPrecision(4);
  return s.includes(".") && !s.includes("e") ? s.replace(/\.?0+$/, "") : s;
}
function hex(c) { return [1, 3, 5].map((i) => parseInt(c.slice(i, i + 2), 16)); }
function mix(a, b, t) {
  const x = hex(a), y = hex(b);
  return "#" + x.map((v, i) => Math.round(v + (y[i] - v) * t).toString(16).padStart(2, "0")).join("");
}
function heat(t) { return mix(COLORS.heat_0, COLORS.heat_1, Math.min(1, Math.max(0, t))); }
function signed(v, absmax) {
  const t = absmax > 0 ? Math.min(1, Math.abs(v) / absmax) : 0;
  return v >= 0 ? heat(t) : mix(COLORS.heat_0, COLORS.negative, t);
}
const isProb = (name) => /(^|\.)(att|prob)$/.test(name);

// -- requests -------------------------------------------------------------------------------------
async function get(verb, params) {
  const q = new URLSearchParams({ model: S.model, text: S.text, ...params });
  return answer(await fetch(`/api/${verb}?${q}`));
}
async function post(verb, body) {
  return answer(await fetch(`/api/${verb}`, { method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ model: S.model, text: S.text, ...body }) }));
}
async function answer(r) {
  const data = await r.json();
  if (!r.ok) throw new Error(`${data.error}: ${data.message}`);
  return data;
}
function showError(e) { const el = $("#error"); el.textContent = String(e.message || e); el.hidden = false; }
function clearError() { $("#error").hidden = true; }

// -- the URL is the state ----------------------------------------------------------------------------
const KEYS = ["model", "text", "view", "block", "head", "tensor", "lead", "r0", "c0", "cell"];
function readURL() {
  const q = new URLSearchParams(location.search);
  for (const k of KEYS) S[k] = q.has(k) ? q.get(k) : (k === "view" ? null : ["lead", "r0", "c0"].includes(k) ? 0 : null);
  for (const k of ["lead", "r0", "c0", "block", "head"]) if (S[k] !== null) S[k] = Number(S[k]);
}
function writeURL(push) {
  const q = new URLSearchParams();
  for (const k of KEYS) {
    if (S[k] === null || S[k] === undefined || (["lead", "r0", "c0"].includes(k) && !S[k])) continue;
    if (k === "view" && S.view === "overview") continue;
    q.set(k, S[k]);
  }
  const url = "/?" + q.toString().replace(/%5B/g, "[").replace(/%5D/g, "]").replace(/%2A/g, "*");
  if (push) history.pushState(null, "", url); else history.replaceState(null, "", url);
}
function go(changes) { Object.assign(S, changes); writeURL(true); render(); }

// -- where a cell sits in its tensor's grid --------------------------------------------------------------
function place(info) { // {tensor, index, axes} -> the grid's lead / window of the cell
  const idx = info.index, axes = info.axes;
  let lead = 0, row = 0, col = 0;
  if (idx.length === 3) { lead = idx[0]; row = idx[1]; col = idx[2]; }
  else if (idx.length === 2) { row = idx[0]; col = idx[1]; }
  else if (idx.length === 1) { if (axes[0] === "pos") row = idx[0]; else col = idx[0]; }
  return { tensor: info.tensor, lead, r0: Math.floor(row / W) * W, c0: Math.floor(col / W) * W };
}
async function openCell(name) {
  try {
    const info = await get("cellview", { name });
    go({ view: "tensor", ...place(info), cell: info.name, block: null, head: null });
  } catch (e) { showError(e); }
}

// -- grids ------------------------------------------------------------------------------------------
function gridHTML(t, small) {
  const prob = isProb(t.name), rowAx = t.row_axis, colAx = t.col_axis;
  let h = `<table class="grid" data-tensor="${esc(t.name)}"><tr><th class="rowh">${esc(rowAx || "")}${colAx ? " \\ " + esc(colAx) : ""}</th>`;
  for (const c of t.cols) h += `<th>${esc(c)}</th>`;
  h += "</tr>";
  t.values.forEach((row, i) => {
    h += `<tr><th class="rowh">${esc(t.rows[i])}</th>`;
    row.forEach((v, j) => {
      const name = t.prefix + (rowAx ? `[${t.rows[i]}]` : "") + (colAx ? `[${t.cols[j]}]` : "");
      const masked = v === "-inf" && /score$/.test(t.name);
      const num = typeof v === "number" ? v : 0;
      const bg = masked ? "" : prob ? heat(num) : signed(num, typeof t.absmax === "number" ? t.absmax : 0);
      const dark = !masked && (prob ? num > 0.55 : Math.abs(num) > 0.55 * t.absmax);
      h += `<td class="v${masked ? " masked" : ""}" data-cell="${esc(name)}" data-value="${esc(v)}" title="${esc(name)} = ${esc(v)}"`
        + ` style="background:${bg};color:${dark ? "#fff" : "#222"}">${small ? "" : esc(fmt(v))}</td>`;
    });
    h += "</tr>";
  });
  return h + "</table>";
}
function gridKey(t) { return `${t.name}|${t.lead.join(",")}|${t.r0}|${t.c0}`; }
async function addGrid(el, params, small) {
  const t = await get("tensor", params);
  el.innerHTML = gridHTML(t, small);
  const key = gridKey(t), table = el.querySelector("table");
  GRIDS.push({ t, table });
  if (CHANGED && BEFORE[key]) markChanged(table, BEFORE[key], t.values);
  BEFORE[key] = t.values;
  table.addEventListener("click", (ev) => {
    const td = ev.target.closest("td.v");
    if (td) selectCell(td.dataset.cell);
  });
  return t;
}
function markChanged(table, old, now) {
  const tds = table.querySelectorAll("td.v");
  let k = 0;
  now.forEach((row, i) => row.forEach((v, j) => {
    const was = old[i] && old[i][j];
    if (was !== undefined && was !== v) tds[k].classList.add("changed");
    k++;
  }));
}
async function markCone() {
  for (const g of GRIDS) g.table.querySelectorAll("td.cone, td.selected").forEach((td) => td.classList.remove("cone", "selected"));
  if (!S.cell) return;
  for (const g of GRIDS) {
    const sel = g.table.querySelector(`td[data-cell="${CSS.escape(S.cell)}"]`);
    if (sel) sel.classList.add("selected");
    try {
      const c = await get("cone", { name: S.cell, tensor: g.t.name, lead: g.t.lead[0] || 0, r0: g.t.r0, c0: g.t.c0 });
      const tds = g.table.querySelectorAll("td.v");
      let k = 0;
      for (const row of c.mask) for (const m of row) { if (m) tds[k].classList.add("cone"); k++; }
    } catch (e) { /* a grid of another model state: ignore */ }
  }
}

// -- views --------------------------------------------------------------------------------------------
function chip(t) {
  const mark = STALE[t.name] ? " stale-mark" : "";
  const stale = STALE[t.name] ? ` title="${STALE[t.name]} cells made stale by the last edit"` : "";
  return `<span class="chip ${t.kind}${mark}" data-tensor="${esc(t.name)}"${stale}>${esc(t.name)}<small>${t.shape.join("×") || "scalar"}</small></span>`;
}
function groupBy(list, key) { const m = new Map(); for (const x of list) { const k = key(x); if (!m.has(k)) m.set(k, []); m.get(k).push(x); } return m; }

async function viewOverview(el, o) {
  const m = o.model;
  let h = `<h1>${esc(m.name)} <small>${esc(m.title)}</small></h1>`;
  h += `<div class="card"><h2>the flow of “${esc(o.text)}” through the model: size of the residual stream per position</h2><table class="flow"><tr><th></th>`;
  for (const f of o.flow) h += `<th>${f.pos}</th>`;
  h += `</tr><tr><th>token</th>${o.flow.map((f) => `<td class="tok">${esc(f.token)}</td>`).join("")}</tr>`;
  const rows = ["emb", ...Array.from({ length: m.n_layer }, (_, i) => `h[${i}].out`)];
  rows.forEach((name, r) => {
    h += `<tr><th><a class="tensor-link" data-tensor="${name}">${name}</a></th>`;
    for (const f of o.flow) {
      const v = f.norms[r];
      const t = v / o.norm_max;
      h += `<td class="v" data-cell-tensor="${name}" data-row="${f.pos}" style="background:${heat(t)};color:${t > 0.55 ? "#fff" : "#222"}" title="‖${name}[${f.pos}]‖">${fmt(v)}</td>`;
    }
    h += "</tr>";
  });
  h += `<tr><th><a class="tensor-link" data-tensor="prob">next</a></th>${o.flow.map((f) => `<td class="tok" title="p = ${f.p}">${esc(f.next)} <small>${fmt(f.p)}</small></td>`).join("")}</tr></table></div>`;
  h += `<div class="cards">`;
  for (const st of o.stages) {
    const isBlock = st.stage.startsWith("h[");
    const parts = groupBy(st.tensors, (t) => t.part);
    let inner = "";
    for (const [part, ts] of parts) inner += `<div class="sub"><h3>${esc(part)}</h3><div class="chips">${ts.map(chip).join("")}</div></div>`;
    if (isBlock) {
      const b = Number(st.stage.slice(2, -1));
      const heads = Array.from({ length: m.n_head }, (_, i) => `<a class="go" data-block="${b}" data-head="${i}">head ${i}</a>`).join(" ");
      h += `<details class="card block" data-block="${b}"${b === 0 ? " open" : ""}><summary>block ${esc(st.stage)}<a class="go" data-block="${b}">open block →</a></summary>${inner}<div class="sub"><h3>attention heads</h3>${heads}</div></details>`;
    } else {
      h += `<div class="card"><h2>${esc(st.stage)}</h2>${inner}</div>`;
    }
  }
  el.innerHTML = h + "</div>";
  el.querySelectorAll("td[data-cell-tensor]").forEach((td) => td.addEventListener("click", () =>
    go({ view: "tensor", tensor: td.dataset.cellTensor, lead: 0, r0: Math.floor(td.dataset.row / W) * W, c0: 0, cell: null })));
}

async function viewBlock(el, o) {
  const b = S.block, m = o.model;
  const st = o.stages.find((s) => s.stage === `h[${b}]`);
  if (!st) throw new Error(`QueryError: this model has blocks h[0]..h[${m.n_layer - 1}]`);
  let h = `<h1>block h[${b}] <small>${b > 0 ? `<a class="go" data-block="${b - 1}">← h[${b - 1}]</a> ` : ""}${b < m.n_layer - 1 ? `<a class="go" data-block="${b + 1}">h[${b + 1}] →</a>` : ""}</small></h1>`;
  h += `<div class="card"><h2>attention of each head (query position ↓, key position →); click a head</h2><div class="heads">`;
  for (let i = 0; i < m.n_head; i++) h += `<div class="head-card" data-block="${b}" data-head="${i}"><div class="hint">head ${i}</div><div class="gridwrap small" id="att-${i}"></div></div>`;
  h += `</div></div><div class="card"><h2>the block's tensors, by sub-layer</h2>`;
  for (const [part, ts] of groupBy(st.tensors, (t) => t.part)) h += `<div class="sub"><h3>${esc(part)}</h3><div class="chips">${ts.map(chip).join("")}</div></div>`;
  el.innerHTML = h + "</div>";
  await Promise.all(Array.from({ length: m.n_head }, (_, i) => addGrid($(`#att-${i}`), { name: `h[${b}].attn.att`, lead: i }, true)));
  el.querySelectorAll(".head-card").forEach((d) => d.addEventListener("click", (ev) => {
    ev.stopPropagation(); go({ view: "head", block: Number(d.dataset.block), head: Number(d.dataset.head), cell: null });
  }));
}

async function viewHead(el, o) {
  const b = S.block, hd = S.head, m = o.model;
  let h = `<h1>h[${b}].attn head ${hd} <small>`;
  for (let i = 0; i < m.n_head; i++) if (i !== hd) h += `<a class="go" data-block="${b}" data-head="${i}">head ${i}</a> `;
  h += `</small></h1><div class="headgrid">`;
  const parts = ["att", "score", "q", "k", "v"];
  const what = { att: "attention map: softmax of the scores", score: "scores q·k/√d (masked: future keys)", q: "queries", k: "keys", v: "values" };
  for (const p of parts) h += `<div class="card"><h2><a class="tensor-link" data-tensor="h[${b}].attn.${p}" data-lead="${hd}">h[${b}].attn.${p}[${hd}]</a> — ${what[p]}</h2><div class="gridwrap small" id="g-${p}"></div></div>`;
  el.innerHTML = h + "</div>";
  await Promise.all(parts.map((p) => addGrid($(`#g-${p}`), { name: `h[${b}].attn.${p}`, lead: hd })));
}

async function viewTensor(el) {
  const box = document.createElement("div");
  box.className = "gridwrap";
  el.innerHTML = `<h1 id="tensor-title">${esc(S.tensor)}</h1><div class="gridbar" id="gridbar"></div>`;
  el.appendChild(box);
  const t = await addGrid(box, { name: S.tensor, lead: S.lead, r0: S.r0, c0: S.c0 });
  $("#tensor-title").innerHTML = `${esc(t.name)} <small>${t.shape.join(" × ") || "scalar"} · ${esc(t.axes.join(", ") || "scalar")}</small><span class="tag ${t.kind}">${t.kind}</span>`;
  let bar = `<span>${esc(t.doc || "")}</span>`;
  if (t.lead.length) bar += " " + Array.from({ length: t.shape[0] }, (_, i) => `<button class="lead" data-lead="${i}" ${i === S.lead ? "disabled" : ""}>${esc(t.axes[0])} ${i}</button>`).join("");
  if (t.n_rows > W || t.n_cols > W) {
    bar += ` <span>rows ${t.r0}–${Math.min(t.n_rows, t.r0 + W) - 1} of ${t.n_rows}, columns ${t.c0}–${Math.min(t.n_cols, t.c0 + W) - 1} of ${t.n_cols}</span>`;
    bar += `<button data-page="r0" data-to="${t.r0 - W}" ${t.r0 ? "" : "disabled"}>↑</button><button data-page="r0" data-to="${t.r0 + W}" ${t.r0 + W < t.n_rows ? "" : "disabled"}>↓</button>`;
    bar += `<button data-page="c0" data-to="${t.c0 - W}" ${t.c0 ? "" : "disabled"}>←</button><button data-page="c0" data-to="${t.c0 + W}" ${t.c0 + W < t.n_cols ? "" : "disabled"}>→</button>`;
  }
  $("#gridbar").innerHTML = bar;
  $("#gridbar").querySelectorAll("button.lead").forEach((b) => b.addEventListener("click", () => go({ lead: Number(b.dataset.lead) })));
  $("#gridbar").querySelectorAll("button[data-page]").forEach((b) => b.addEventListener("click", () => go({ [b.dataset.page]: Number(b.dataset.to) })));
}

function crumbs(o) {
  const parts = [`<a class="go" data-home="1">${esc(S.model)} · “${esc(o.text)}”</a>`];
  const t = S.tensor || "";
  const blk = S.view === "tensor" ? (t.match(/^h\[(\d+)\]/) || [])[1] : S.block;
  if (blk !== undefined && blk !== null) parts.push(`<a class="go" data-block="${blk}">block h[${blk}]</a>`);
  if (S.view === "head") parts.push(`<span>head ${S.head}</span>`);
  if (S.view === "tensor" && /\.attn\.(q|k|v|score|att)$/.test(t)) parts.push(`<a class="go" data-block="${blk}" data-head="${S.lead}">head ${S.lead}</a>`);
  if (S.view === "tensor") parts.push(`<a class="tensor-link" data-tensor="${esc(t)}" data-lead="${S.lead}">${esc(t)}</a>`);
  if (S.cell) parts.push(`<a class="ref" data-cell="${esc(S.cell)}">${esc(S.cell)}</a>`);
  $("#crumbs").innerHTML = parts.join('<span class="sep">›</span>');
}

// -- the cell panel -------------------------------------------------------------------------------------
function linkify(formula) { // cell names in a formula become links; a name indexed by a sum's variable stays text
  const vars = [...formula.matchAll(/Σ_\{(\w+)=/g)].map((m) => m[1]);
  return esc(formula).replace(/([A-Za-z_][\w.]*(?:\[[^\]\s]+\])+)/g, (m) =>
    vars.some((v) => m.includes(`[${v}]`)) ? `<span class="range">${m}</span>` : `<a class="ref" data-cell="${m}">${m}</a>`);
}
function names(list, n) {
  const shown = list.map((c) => `<a class="ref" data-cell="${esc(c)}">${esc(c)}</a>`).join(" ");
  return (shown || '<span class="hint">none</span>') + (n > list.length ? ` <span class="hint">… ${n - list.length} more</span>` : "");
}
async function renderCell() {
  const body = $("#cell-body");
  if (!S.cell) { body.innerHTML = '<p class="hint">Click any cell of a grid, or a name in a formula.</p>'; return; }
  const c = await get("cellview", { name: S.cell });
  const editable = c.kind === "input" ? "a token" : c.kind === "parameter" ? "a number" : "a number (pins the cell)";
  body.innerHTML = `<div id="cell-name" class="mono"><b>${esc(c.name)}</b> <span class="tag ${c.kind}">${c.kind}</span><span class="tag">${esc(c.state)}</span></div>
    <div class="value-big" id="cell-value" data-value="${esc(c.value)}">${esc(c.value)}</div>
    <div class="formula" id="cell-formula">${linkify(c.formula)}</div>
    <div class="kv"><span>precedents</span><div class="list" id="cell-precedents">${names(c.precedents, c.n_precedents)}</div>
    <span>dependents</span><div class="list" id="cell-dependents">${names(c.dependents, c.n_dependents)}</div>
    <span>cone</span><div id="cell-cone" class="hint">…</div></div>
    <div class="edit"><input id="edit-value" placeholder="new value: ${editable}" value="${c.kind === "input" ? "" : esc(c.value)}"><button id="edit-apply">set</button></div>
    <h2 style="margin-top:10px">top influences (gradient × value)</h2><div id="influence" class="hint">…</div>`;
  $("#edit-apply").addEventListener("click", () => edit(c));
  $("#edit-value").addEventListener("keydown", (ev) => { if (ev.key === "Enter") edit(c); });
  const big = LAST && LAST.model.n_params > 20e6; // a backward pass takes seconds: rank on request
  if (c.kind === "computed" && big && !RANKED.has(c.name)) {
    $("#influence").innerHTML = `<button id="rank">rank the top 10</button> <span class="hint">one backward pass through ${LAST.model.n_params.toLocaleString("en")} parameters: seconds at this size</span>`;
    $("#rank").addEventListener("click", () => { RANKED.add(c.name); renderCell().catch(showError); });
  } else if (c.kind === "computed") {
    $("#influence").textContent = "ranking…";
    get("influence", { name: c.name, top: 10 }).then((inf) => {
      $("#influence").innerHTML = `<table class="infl" id="influence-table"><tr><td>cell</td><td class="n">value</td><td class="n">gradient</td><td class="n">score</td></tr>`
        + inf.items.map((i) => `<tr><td><a class="ref" data-cell="${esc(i.cell)}">${esc(i.cell)}</a></td><td class="n">${fmt(i.value)}</td><td class="n">${fmt(i.grad)}</td><td class="n" data-score="${i.score}">${fmt(i.score)}</td></tr>`).join("") + "</table>";
    }).catch((e) => { $("#influence").textContent = e.message; });
  } else {
    $("#influence").textContent = `a ${c.kind} reads no cell; its dependents show what it feeds.`;
  }
  get("cone", { name: c.name, tensor: c.tensor }).then((k) => {
    const top = Object.entries(k.tensors).filter(([t]) => t !== c.tensor).length;
    $("#cell-cone").textContent = `it reads ${k.cells.toLocaleString("en")} cells in ${Object.keys(k.tensors).length} tensors, directly or not (outlined in red on the grids)` + (top ? "" : "");
  }).catch(() => { });
}
async function selectCell(name) {
  S.cell = name; writeURL(true);
  crumbs(LAST);
  try { await Promise.all([renderCell(), markCone()]); clearError(); } catch (e) { showError(e); }
}
async function edit(c) {
  const raw = $("#edit-value").value.trim();
  const value = c.kind === "input" || raw === "" || isNaN(Number(raw)) ? raw : Number(raw);
  await whatIf(post("set", { name: c.name, value }));
}

// -- what-ifs, receipts, generation ---------------------------------------------------------------------
async function whatIf(promise) {
  try {
    const r = await promise;
    S.text = r.text; HISTORY = r.history; STALE = r.stale_by_tensor || {}; CHANGED = true;
    writeURL(false);
    showReceipt(r);
    await render(true);
    clearError();
  } catch (e) { showError(e); }
}
function showReceipt(r) {
  const ch = r.max_change || {};
  const pred = r.prediction.tokens.slice(0, 5).map((t) => `${esc(t.token)} ${fmt(t.prob)}`).join(" · ");
  $("#receipt").innerHTML = `<div class="mono" id="receipt-action">${esc(r.action)}: ${esc((r.cells || []).join(", "))}</div>`
    + (r.stale === undefined ? "" : `<div class="receipt-nums"><div class="stale">stale<b id="receipt-stale">${r.stale.toLocaleString("en")}</b></div>
    <div class="recomputed">recomputed<b id="receipt-recomputed">${r.recomputed.toLocaleString("en")}</b></div>
    <div class="reused">reused<b id="receipt-reused">${r.reused.toLocaleString("en")}</b></div>
    <div class="cutoff">cut off<b id="receipt-cutoff">${r.cutoff.toLocaleString("en")}</b></div></div>
    <div class="hint">largest change: logit ${ch.logit == null ? "–" : fmt(ch.logit)}, prob ${ch.prob == null ? "–" : fmt(ch.prob)}${r.flipped ? ' · <span class="flip">the prediction flipped</span>' : ""}</div>`)
    + `<div>next after “${esc(r.text)}”: <b id="receipt-prediction">${pred}</b></div>`;
}
async function renderDist() {
  const temperature = Number($("#temperature").value), k = Number($("#top-k").value), p = Number($("#top-p").value);
  $("#temperature-out").textContent = temperature.toFixed(2);
  $("#top-k-out").textContent = k ? String(k) : "all";
  $("#top-p-out").textContent = p.toFixed(2);
  const seq = ++distSeq;
  const d = await get("dist", { temperature, top_k: k || "", top_p: p < 1 ? p : "" });
  if (seq !== distSeq) return; // a later move of the slider already asked
  const max = Math.max(...d.tokens.map((t) => t.p), 1e-12);
  $("#dist").innerHTML = `<div class="hint">after position ${d.pos}; ${d.kept} of ${d.vocab_size} tokens kept</div>`
    + d.tokens.map((t) => `<div class="bar${t.p > 0 ? "" : " dropped"}" data-token="${esc(t.token)}" data-p="${t.p}"><span class="tok">${esc(t.token)}</span><div><div class="fill" style="width:${(100 * t.p / max).toFixed(1)}%"></div></div><span class="p">${fmt(t.p)}</span></div>`).join("");
}
function controls() {
  const k = Number($("#top-k").value), p = Number($("#top-p").value);
  return { temperature: Number($("#temperature").value), top_k: k || null, top_p: p < 1 ? p : null, seed: Number($("#seed").value) || 0 };
}

// -- the whole page ---------------------------------------------------------------------------------------
let LAST = null;
async function render(keepChanged) {
  GRIDS = [];
  if (!keepChanged) CHANGED = false;
  const el = $("#view");
  try {
    const o = await get("overview", {});
    LAST = o; HISTORY = o.history;
    S.text = o.text;
    $("#text").value = o.text;
    $("#top-k").max = String(Math.min(50, o.model.vocab_size));
    $("#undo").disabled = !HISTORY.undo; $("#redo").disabled = !HISTORY.redo;
    if (!S.view) S.view = S.cell ? "tensor" : S.tensor ? "tensor" : S.head !== null ? "head" : S.block !== null ? "block" : "overview";
    if (S.view === "tensor" && !S.tensor && S.cell) { const info = await get("cellview", { name: S.cell }); Object.assign(S, place(info)); S.cell = info.name; }
    writeURL(false);
    crumbs(o);
    if (S.view === "block") await viewBlock(el, o);
    else if (S.view === "head") await viewHead(el, o);
    else if (S.view === "tensor") await viewTensor(el);
    else await viewOverview(el, o);
    await Promise.all([renderCell(), markCone(), renderDist()]);
    clearError();
  } catch (e) { showError(e); }
  CHANGED = false;
  document.body.dataset.ready = String(Number(document.body.dataset.ready || 0) + 1);
}

document.addEventListener("click", (ev) => {
  const a = ev.target.closest("a.ref, a.tensor-link, a.go, .chip");
  if (!a) return;
  ev.preventDefault();
  if (a.dataset.home) go({ view: "overview", block: null, head: null, tensor: null, cell: null });
  else if (a.classList.contains("ref")) openCell(a.dataset.cell);
  else if (a.dataset.tensor) go({ view: "tensor", tensor: a.dataset.tensor, lead: Number(a.dataset.lead || 0), r0: 0, c0: 0 });
  else if (a.dataset.head !== undefined) go({ view: "head", block: Number(a.dataset.block), head: Number(a.dataset.head), tensor: null });
  else if (a.dataset.block !== undefined) go({ view: "block", block: Number(a.dataset.block), head: null, tensor: null });
});
$("#whatif").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const raw = $("#whatif-value").value.trim(), name = $("#whatif-cell").value.trim();
  const value = raw === "" || isNaN(Number(raw)) ? raw : Number(raw);
  whatIf(post("set", { name, value }));
});
$("#undo").addEventListener("click", () => whatIf(post("undo", {})));
$("#redo").addEventListener("click", () => whatIf(post("redo", {})));
$("#step").addEventListener("click", () => whatIf(post("step", controls())));
$("#input-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const nw = $("#text").value;
  if (nw === S.text) return render();
  whatIf(post("input", { new: nw }));
});
$("#model").addEventListener("change", () => {
  const m = MODELS.find((x) => x.name === $("#model").value);
  let text = S.text;
  if (m.vocab && ![...text].every((c) => m.vocab.includes(c))) text = defaultText(m);
  if (m.tokenizer === "ids" && !/^[\d\s]+$/.test(text)) text = defaultText(m);
  go({ model: m.name, text, view: "overview", block: null, head: null, tensor: null, cell: null });
});
for (const id of ["#temperature", "#top-k", "#top-p"]) $(id).addEventListener("input", () => renderDist().catch(showError));
window.addEventListener("popstate", () => { readURL(); render(); });

function defaultText(m) { // an input every model reads: CABACA for the sort models, else the first tokens
  if (m.name.startsWith("sort") && m.vocab) return "CABACA";
  if (m.tokenizer === "ids") return Array.from({ length: Math.min(8, m.block_size) }, (_, i) => String(i)).join(" ");
  if (m.vocab) return Array.from({ length: Math.min(6, m.block_size) }, (_, i) => m.vocab[i % m.vocab.length]).join("");
  return "Hello, world";
}

(async function start() {
  try {
    COLORS = await answer(await fetch("/api/colors"));
    MODELS = (await answer(await fetch("/api/models"))).models;
  } catch (e) { showError(e); return; }
  $("#model").innerHTML = MODELS.map((m) => `<option value="${esc(m.name)}">${esc(m.name)}</option>`).join("");
  readURL();
  if (!S.model) S.model = MODELS[0].name;
  $("#model").value = S.model;
  if (!S.text) {
    const m = MODELS.find((x) => x.name === S.model) || MODELS[0];
    S.text = defaultText(m);
  }
  render();
})();
