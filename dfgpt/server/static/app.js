// dfgpt explorer: the page. Plain JavaScript, no build step, no network beyond this server.
// Every number shown comes from the JSON API (which returns the Python API's answers);
// colours come from /api/colors, which is dfgpt.views.colors.COLORS.
// The address is the state: view, selection, sampling controls and every edit, so a copied
// address shows the same numbers in another browser. One interaction is one request
// (POST /api/view, or an edit's POST answering its receipt and the view after it).
"use strict";

const W = 64; // the server's window of rows and columns
const VIEW_KEYS = ["view", "block", "head", "tensor", "lead", "r0", "c0", "cell"];
const NUMS = ["block", "head", "lead", "r0", "c0"];
const DEFAULTS = { model: null, text: null, view: null, block: null, head: null, tensor: null, lead: 0, r0: 0, c0: 0,
  cell: null, edits: [], temperature: 1, top_k: 0, top_p: 1, seed: 0, path: null,
  pairs: [], metric: null, method: null, threshold: null, top: null, steps: null, keep: false, circuit: null };
const CIRCUIT_KEYS = ["metric", "method", "threshold", "top", "steps", "circuit"]; // the circuit view's fields (and pair=, keep=1)
const S = { ...DEFAULTS };
let COLORS = {}, MODELS = [], PAGE = null, HISTORY = { undo: 0, redo: 0 }, STALE = {}, BEFORE = {}, CHANGED = false;
let distSeq = 0, loadSeq = 0, busy = 0, LOADED = false, CIRCUIT = null; // CIRCUIT: the circuit view's answer
const RANKED = new Set(); // cells whose influence the user asked for (large models rank on request)
const $ = (sel) => document.querySelector(sel);
const esc = (s) => String(s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
const short = (s, n) => (s.length > n ? s.slice(0, n - 1) + "…" : s);

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

// -- errors, in the user's words, at the field they belong to ------------------------------------------
class ApiError extends Error { constructor(kind, message, field) { super(message); this.kind = kind; this.field = field; } }
function plain(message) { // the Python API's message, without Python
  return String(message)
    .replace(/;? ?write e\.g\. sheet\.set\('[^']*', ([^)]*)\)\.?/g, "; type a number, e.g. $1.")
    .replace(/ \(generate\(\.\.\., crop=True\) keeps the last block_size tokens\)/g, "")
    .replace(/cannot parse name '' at '⟨here⟩': expected a name like/g, "type a cell name, like")
    .replace(/cannot parse name '([^']*)' at '[^']*':/g, "$1 is not a cell name:")
    .replace(/; see sheet\.tensors\(\)\.?/g, "; the model overview lists them.")
    .replace(/start a sheet from a shorter input/g, "shorten the input")
    .replace(/sheet\.(\w+)\(/g, "$1(")
    .replace(/, or a callable of a sheet/g, "");
}
function fieldError(field, e) {
  const el = $(`#${field}-error`);
  let msg = plain(e.message || e);
  if (field === "text" && e.kind === "TokenError") msg += capitalsHint($("#text").value);
  el.textContent = msg; el.hidden = false;
  const input = { text: "#text", model: "#model", whatif: "#whatif-cell", edit: "#edit-value", goto: "#goto",
    pairs: "#circuit-pairs", metric: "#circuit-metric", method: "#circuit-method", threshold: "#circuit-threshold",
    top: "#circuit-top", steps: "#circuit-steps" }[field];
  if (input && $(input)) $(input).setAttribute("aria-invalid", "true");
}
function clearErrors() {
  document.querySelectorAll(".field-error").forEach((el) => { el.hidden = true; el.textContent = ""; });
  document.querySelectorAll("[aria-invalid]").forEach((el) => el.removeAttribute("aria-invalid"));
}
function capitalsHint(text) {
  const m = MODELS.find((x) => x.name === S.model);
  if (!m || !m.vocab) return "";
  const up = text.toUpperCase();
  return up !== text && [...up].every((c) => m.vocab.includes(c)) ? ` This model reads capital letters: try ${up}.` : "";
}
function tooLarge(raw) { // "1e400" parses to Infinity: too large for a float64, not "not a number"
  return /^[+-]?(\d+\.?\d*|\.\d+)(e[+-]?\d+)?$/i.test(raw) && !Number.isFinite(Number(raw))
    ? `${raw} is too large: a cell holds numbers up to about ±1.8e308.` : null;
}

// -- requests -------------------------------------------------------------------------------------
function setBusy(d) {
  busy += d;
  document.body.classList.toggle("busy", busy > 0);
  $("#busy").hidden = busy === 0;
}
async function request(url, init) {
  setBusy(1);
  try {
    const r = await fetch(url, init);
    const data = await r.json();
    if (!r.ok) throw new ApiError(data.error, data.message, data.field);
    return data;
  } finally { setBusy(-1); }
}
function state() { // what every request carries: the sheet's state and the view
  const v = {};
  for (const k of VIEW_KEYS) if (S[k] !== null && S[k] !== undefined) v[k] = S[k];
  return { model: S.model, text: S.text, edits: S.edits, temperature: S.temperature, top_k: S.top_k || "",
    top_p: S.top_p < 1 ? S.top_p : "", ...v, show: true };
}
const post = (verb, body) => request(`/api/${verb}`, { method: "POST", headers: { "Content-Type": "application/json" },
  body: JSON.stringify({ ...state(), ...body }) });

// -- the address is the state -----------------------------------------------------------------------
function fromQuery(q) {
  const out = { ...DEFAULTS, edits: [] };
  for (const k of ["model", "text", ...VIEW_KEYS]) if (q.has(k)) out[k] = q.get(k);
  for (const k of NUMS) if (out[k] !== null) out[k] = Number(out[k]) || 0;
  for (const [k, d] of [["temperature", 1], ["top_k", 0], ["top_p", 1], ["seed", 0]]) {
    const v = q.has(k) ? Number(q.get(k)) : d;
    out[k] = Number.isFinite(v) ? v : d;
  }
  out.path = q.has("path") && Number.isInteger(Number(q.get("path"))) ? Number(q.get("path")) : null;
  for (const k of CIRCUIT_KEYS) if (q.has(k)) out[k] = q.get(k);
  out.keep = q.get("keep") === "1";
  out.pairs = q.getAll("pair").map((x) => { const i = x.indexOf("|"); return i < 0 ? [x, ""] : [x.slice(0, i), x.slice(i + 1)]; });
  for (const e of q.getAll("edit")) { const i = e.lastIndexOf("="); if (i > 0) out.edits.push([e.slice(0, i), Number(e.slice(i + 1))]); }
  return out;
}
function toQuery(st) {
  const q = new URLSearchParams();
  for (const k of ["model", "text", ...VIEW_KEYS]) {
    const v = st[k];
    if (v === null || v === undefined || (["lead", "r0", "c0"].includes(k) && !v) || (k === "view" && v === "overview" && !st.cell)) continue;
    q.set(k, v);
  }
  if (st.temperature !== 1) q.set("temperature", st.temperature);
  if (st.top_k) q.set("top_k", st.top_k);
  if (st.top_p !== 1) q.set("top_p", st.top_p);
  if (st.seed) q.set("seed", st.seed);
  if (st.path !== null && st.path !== undefined) q.set("path", st.path);
  for (const [n, v] of st.edits) q.append("edit", `${n}=${v}`);
  if (st.view === "circuit") { // the circuit's fields, only on its view (a link out of it leaves them behind)
    for (const [a, b] of st.pairs || []) q.append("pair", `${a}|${b}`);
    for (const k of CIRCUIT_KEYS) if (st[k] !== null && st[k] !== undefined && st[k] !== "") q.set(k, st[k]);
    if (st.keep) q.set("keep", "1");
  }
  return "/?" + q.toString().replace(/%5B/g, "[").replace(/%5D/g, "]").replace(/%2A/g, "*").replace(/%3D/g, "=")
    .replace(/%7C/g, "|").replace(/%2C/g, ",").replace(/%3A/g, ":");
}
function writeURL(push) {
  const url = toQuery(S);
  if (url === location.pathname + location.search) return;
  if (push) history.pushState(null, "", url); else history.replaceState(null, "", url);
}
function href(changes) { return esc(toQuery({ ...S, ...changes })); } // a link: the address of S with these changes
const CLEAR = { block: null, head: null, tensor: null, lead: 0, r0: 0, c0: 0, cell: null };
const sameSheet = (a, b) => a.model === b.model && a.text === b.text && JSON.stringify(a.edits) === JSON.stringify(b.edits);

// -- loading a view: one request -------------------------------------------------------------------
async function load(push, receiptOf, asked) { // asked: the view's request, already under way (the page's first)
  const seq = ++loadSeq, t0 = performance.now();
  if (!receiptOf) writeURL(push);
  try {
    const r = receiptOf ? await receiptOf() : await (asked || (S.view === "circuit" ? askCircuit() : post("view", {})));
    if (seq !== loadSeq) return; // a later click already asked
    const page = r.page || r;
    CIRCUIT = r.circuit ? r : receiptOf && S.view === "circuit" ? CIRCUIT : null; // an edit keeps the circuit shown
    if (receiptOf) { STALE = r.stale_by_tensor || {}; CHANGED = true; showReceipt(r); }
    else if (page.receipt) showReceipt(page.receipt, page.receipt.restored);
    show(page, Boolean(receiptOf));
    clearErrorsBut(page.errors);
  } catch (e) {
    if (seq !== loadSeq) return;
    failed(e, receiptOf);
  }
  CHANGED = false;
  // the time from the action to the result on screen (after the next paint), for benchmarks/bench_server.py
  requestAnimationFrame(() => setTimeout(() => {
    document.body.dataset.ms = (performance.now() - t0).toFixed(1);
    if (!document.body.dataset.loaded) document.body.dataset.loaded = performance.now().toFixed(1);
    document.body.dataset.ready = String(Number(document.body.dataset.ready || 0) + 1);
  }));
}
function clearErrorsBut(errors) {
  clearErrors();
  for (const [k, msg] of Object.entries(errors || {})) fieldError(k === "cell" ? "goto" : k === "sampling" ? "gen" : "view", { message: msg });
}
let FAIL_FIELD = null;
function failed(e, action) { // a request that could not be answered: said at its field, the page still usable
  const m = String(e.message || e);
  let field = FAIL_FIELD || (action ? "whatif" : e.field || "text");
  if (!action && /no model .* is served/.test(m)) field = "model";
  else if (!action && /^edits:/.test(m)) field = "badge";
  clearErrors();
  if (field === "badge") renderBadge();
  if (S.view === "circuit" && !action && !$("#circuit-form")) viewCircuit($("#view"), null); // the form, to fix a field
  fieldError(field, e);
  if (!LOADED && !e.field) $("#view").innerHTML = `<p class="hint" id="view-help">The sheet could not be computed: fix the ${field === "model" ? "model (choose one above)" : field === "badge" ? "edits (reset them)" : "input above and press run"}.</p>`;
  if (field === "model" && MODELS.length) { $("#model").value = ""; }
}
function show(page, push) {
  PAGE = page; LOADED = true;
  HISTORY = page.history;
  S.text = page.text; S.edits = page.edits;
  Object.assign(S, { view: page.view.view, block: page.view.block, head: page.view.head, tensor: page.view.tensor,
    lead: page.view.lead, r0: page.view.r0, c0: page.view.c0 });
  if (CIRCUIT) Object.assign(S, { view: "circuit", tensor: null }, CIRCUIT.fields); // the circuit as the server understood it
  if (page.view.cell) S.cell = page.view.cell; else if (!(page.errors || {}).cell) S.cell = null;
  writeURL(push);
  $("#model").value = S.model;
  $("#text").value = page.text;
  $("#top-k").max = String(Math.min(50, page.model.vocab_size));
  $("#undo").disabled = !HISTORY.undo; $("#redo").disabled = !HISTORY.redo;
  const el = $("#view");
  document.body.classList.toggle("circuit-view", S.view === "circuit"); // the what-if and next-token tools step aside
  if (S.view === "circuit") viewCircuit(el, CIRCUIT);
  else if (S.view === "block") viewBlock(el, page);
  else if (S.view === "head") viewHead(el, page);
  else if (S.view === "tensor") viewTensor(el, page);
  else viewOverview(el, page);
  if (S.path !== null) el.insertAdjacentHTML("afterbegin", pathHTML(page));
  crumbs(page);
  renderBadge();
  renderCell(page.cell);
  renderDist(page.dist);
}

// -- grids ------------------------------------------------------------------------------------------
function axisLabel(ax, label) { // positions carry their token, so every grid reads in words
  if ((ax === "pos" || ax === "key" || ax === "position") && PAGE) { const tok = PAGE.overview.tokens[Number(label)]; return tok === undefined ? label : `${label} ${tok}`; }
  return label;
}
function gridHTML(t, small) {
  const prob = isProb(t.name), rowAx = t.row_axis, colAx = t.col_axis;
  const cone = t.cone || [];
  let h = `<table class="grid${small ? " mini" : ""}" data-tensor="${esc(t.name)}" aria-label="${esc(t.prefix)}"><tr><th class="rowh">${esc(rowAx || "")}${colAx ? " \\ " + esc(colAx) : ""}</th>`;
  for (const c of t.cols) h += `<th scope="col">${esc(axisLabel(colAx, c))}</th>`;
  h += "</tr>";
  t.values.forEach((row, i) => {
    h += `<tr><th class="rowh" scope="row">${esc(axisLabel(rowAx, t.rows[i]))}</th>`;
    row.forEach((v, j) => {
      const name = t.prefix + (rowAx ? `[${t.rows[i]}]` : "") + (colAx ? `[${t.cols[j]}]` : "");
      const masked = v === "-inf" && /score$/.test(t.name);
      const num = typeof v === "number" ? v : 0;
      const bg = masked ? "" : prob ? heat(num) : signed(num, typeof t.absmax === "number" ? t.absmax : 0);
      const dark = !masked && (prob ? num > 0.55 : Math.abs(num) > 0.55 * t.absmax);
      const cls = `v${masked ? " masked" : ""}${cone[i] && cone[i][j] ? " cone" : ""}${name === S.cell ? " selected" : ""}`;
      h += `<td class="${cls}" data-cell="${esc(name)}" data-value="${esc(v)}" title="${esc(name)} = ${esc(v)}"`
        + (small ? "" : ` tabindex="-1"`) + ` style="background:${bg};color:${dark ? "#fff" : "#222"}">${small ? "" : esc(fmt(v))}</td>`;
    });
    h += "</tr>";
  });
  return h + "</table>";
}
function gridKey(t) { return `${t.name}|${t.lead.join(",")}|${t.r0}|${t.c0}`; }
function fillGrid(el, t, small) {
  el.innerHTML = gridHTML(t, small);
  const key = gridKey(t), table = el.querySelector("table");
  if (CHANGED && BEFORE[key]) markChanged(table, BEFORE[key], t.values);
  BEFORE[key] = t.values;
  if (small) return; // a head card's map is a picture inside a link: a click opens the head, selects nothing
  const first = table.querySelector("td.selected") || table.querySelector("td.v");
  if (first) first.tabIndex = 0;
  table.addEventListener("click", (ev) => { const td = ev.target.closest("td.v"); if (td) selectCell(td.dataset.cell); });
  table.addEventListener("keydown", gridKeys);
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
function gridKeys(ev) { // arrow keys move between cells, Enter selects one (and shows its cone)
  const td = ev.target.closest("td.v");
  if (!td) return;
  const tr = td.parentElement, rows = [...tr.parentElement.children], r = rows.indexOf(tr), c = [...tr.children].indexOf(td);
  const to = { ArrowUp: [r - 1, c], ArrowDown: [r + 1, c], ArrowLeft: [r, c - 1], ArrowRight: [r, c + 1] }[ev.key];
  if (to) {
    const next = rows[to[0]] && rows[to[0]].children[to[1]];
    if (next && next.matches("td.v")) { td.tabIndex = -1; next.tabIndex = 0; next.focus(); }
    ev.preventDefault();
  } else if (ev.key === "Enter") { ev.preventDefault(); selectCell(td.dataset.cell); }
}

// -- views --------------------------------------------------------------------------------------------
function chip(t) {
  const mark = STALE[t.name] ? " stale-mark" : "";
  const stale = STALE[t.name] ? ` title="${STALE[t.name]} cells made stale by the last edit"` : "";
  return `<a class="chip ${t.kind}${mark}" data-tensor="${esc(t.name)}" href="${href({ ...CLEAR, view: "tensor", tensor: t.name })}"${stale}>${esc(t.name)}<small>${t.shape.join("×") || "scalar"}</small></a>`;
}
function groupBy(list, key) { const m = new Map(); for (const x of list) { const k = key(x); if (!m.has(k)) m.set(k, []); m.get(k).push(x); } return m; }
const blockLink = (b, text) => `<a class="go" data-block="${b}" href="${href({ ...CLEAR, view: "block", block: b })}">${text}</a>`;
const headLink = (b, i, text) => `<a class="go" data-block="${b}" data-head="${i}" href="${href({ ...CLEAR, view: "head", block: b, head: i })}">${text}</a>`;
const tensorLink = (name, lead, text, row) => `<a class="tensor-link" data-tensor="${esc(name)}" href="${href({ ...CLEAR, view: "tensor", tensor: name, lead: lead || 0, r0: row ? Math.floor(row / W) * W : 0 })}">${text}</a>`;
const cellLink = (name, text) => `<a class="ref" data-cell="${esc(name)}" href="${href({ view: null, tensor: null, cell: name })}">${text === undefined ? esc(name) : text}</a>`;

function viewOverview(el, page) {
  const o = page.overview, m = page.model;
  let h = `<h1>${esc(m.name)} <small>${esc(m.title)}</small></h1>`;
  if (S.path === null) h += `<p class="start"><a class="go" id="path-start" href="${href({ ...CLEAR, view: "overview", path: 0 })}">follow one token through the model, step by step →</a>`
    + ` <span class="sep">·</span> <a class="go" id="circuit-start" href="${href({ ...CLEAR, view: "circuit", path: null })}">find the circuit behind a behaviour →</a></p>`;
  if (page.architecture) h += `<div class="card" id="arch-card"><h2>the architecture: embedding → ${m.n_layer} blocks → logits${page.cell ? ` · the trace of <span class="name">${esc(page.cell.name)}</span>: <span class="key in">reads</span> <span class="key out">read by</span> <span class="key cone">in its cone</span>` : " · every box opens its tensor, block or heads"}</h2><div class="scroll">${archSVG(page.architecture, page.cell)}</div></div>`;
  h += `<div class="card"><h2>the flow of “<span class="name">${esc(short(o.text, 60))}</span>” through the model: size of the residual stream per position</h2><div class="scroll"><table class="flow"><tr><th></th>`;
  for (const f of o.flow) h += `<th>${f.pos}</th>`;
  const prompt = isSort() ? PROMPT[m.name] : null; // a task's prompt, then the model's own tokens
  h += `</tr><tr><th>token</th>${o.flow.map((f) => `<td class="tok${prompt === null ? "" : f.pos < prompt ? " prompt" : " generated"}"${prompt === null ? "" : ` title="${f.pos < prompt ? "prompt" : "generated"}"`}>${esc(f.token)}</td>`).join("")}</tr>`;
  const rows = o.resid;
  rows.forEach((name, r) => {
    h += `<tr><th>${tensorLink(name, 0, name)}</th>`;
    for (const f of o.flow) {
      const v = f.norms[r], t = v / o.norm_max;
      h += `<td class="v" style="background:${heat(t)};color:${t > 0.55 ? "#fff" : "#222"}" title="‖${name}[${f.pos}]‖"><a class="plain" href="${href({ ...CLEAR, view: "tensor", tensor: name, r0: Math.floor(f.pos / W) * W })}">${fmt(v)}</a></td>`;
    }
    h += "</tr>";
  });
  h += `<tr><th>${tensorLink("prob", 0, "next")}</th>${o.flow.map((f) => `<td class="tok" title="p = ${f.p}">${esc(f.next)} <small>${fmt(f.p)}</small></td>`).join("")}</tr></table></div>`;
  if (prompt !== null) h += `<p class="hint" id="prompt-note"><span class="tok prompt">prompt</span> positions 0–${prompt - 1}, the letters to sort; <span class="tok generated">generated</span> from ${prompt} on, the sorted letters the model writes.</p>`;
  h += "</div>";
  h += `<div class="cards">`;
  for (const st of o.stages) {
    const parts = groupBy(st.tensors, (t) => t.part);
    let inner = "";
    for (const [part, ts] of parts) inner += `<div class="sub"><h3>${esc(part)}</h3><div class="chips">${ts.map(chip).join("")}</div></div>`;
    if (/\[\d+\]$/.test(st.stage)) {
      const b = Number(st.stage.slice(st.stage.lastIndexOf("[") + 1, -1));
      const heads = Array.from({ length: m.n_head }, (_, i) => headLink(b, i, `head ${i}`)).join(" ");
      h += `<details class="card block" data-block="${b}"${b === 0 ? " open" : ""}><summary>block ${esc(st.stage)}${blockLink(b, "open block →")}</summary>${inner}<div class="sub"><h3>attention heads</h3>${heads}</div></details>`;
    } else {
      h += `<div class="card"><h2>${esc(st.stage)}</h2>${inner}</div>`;
    }
  }
  el.innerHTML = h + "</div>";
}

function viewBlock(el, page) {
  const b = S.block, m = page.model;
  const P = page.overview.prefix; // h (GPT-2), layers (Llama, NeoX)
  let h = `<h1>block ${P}[${b}] <small>${b > 0 ? blockLink(b - 1, `← ${P}[${b - 1}]`) + " " : ""}${b < m.n_layer - 1 ? blockLink(b + 1, `${P}[${b + 1}] →`) : ""}</small></h1>`;
  h += `<div class="card"><h2>attention of each head (query position ↓, key position →); open a head</h2><div class="heads">`;
  for (let i = 0; i < m.n_head; i++) h += `<a class="head-card" data-block="${b}" data-head="${i}" href="${href({ ...CLEAR, view: "head", block: b, head: i })}"><span class="hint">head ${i}</span><span class="gridwrap small" id="att-${i}"></span></a>`;
  const st = page.overview.stages.find((s) => s.stage === `${P}[${b}]`);
  h += `</div></div><div class="card"><h2>the block's tensors, by sub-layer</h2>`;
  for (const [part, ts] of groupBy(st.tensors, (t) => t.part)) h += `<div class="sub"><h3>${esc(part)}</h3><div class="chips">${ts.map(chip).join("")}</div></div>`;
  el.innerHTML = h + "</div>";
  page.grids.forEach((t, i) => fillGrid($(`#att-${i}`), t, true));
}

function viewHead(el, page) {
  const b = S.block, hd = S.head, m = page.model;
  let h = `<h1>${esc(page.grids[0].name.replace(/\.att$/, ""))} head ${hd} <small>`;
  for (let i = 0; i < m.n_head; i++) if (i !== hd) h += headLink(b, i, `head ${i}`) + " ";
  h += `</small></h1><div class="headgrid">`;
  const what = { att: "attention map: softmax of the scores", score: "scores q·k/√d (masked: future keys)", q: "queries", k: "keys", v: "values" };
  page.grids.forEach((t, i) => {
    const p = t.name.split(".").pop();
    h += `<div class="card"><h2><span class="name">${tensorLink(t.name, t.lead.length ? t.lead[0] : hd, `${esc(t.name)}[${t.lead.length ? t.lead[0] : hd}]`)}</span> — ${what[p]}</h2><div class="gridwrap small" id="g-${i}"></div></div>`;
  });
  el.innerHTML = h + "</div>";
  page.grids.forEach((t, i) => fillGrid($(`#g-${i}`), t, false));
}

function viewTensor(el, page) {
  const t = page.grids[0];
  let bar = `<span>${esc(t.doc || "")}</span>`;
  if (t.lead.length) bar += " " + Array.from({ length: t.shape[0] }, (_, i) => i === S.lead ? `<span class="lead on">${esc(t.axes[0])} ${i}</span>` : `<a class="lead" href="${href({ lead: i, cell: null })}">${esc(t.axes[0])} ${i}</a>`).join(" ");
  if (t.n_rows > W || t.n_cols > W) {
    bar += ` <span>rows ${t.r0}–${Math.min(t.n_rows, t.r0 + W) - 1} of ${t.n_rows}, columns ${t.c0}–${Math.min(t.n_cols, t.c0 + W) - 1} of ${t.n_cols}</span>`;
    const page_ = (k, to, ok, text) => ok ? `<a class="page" href="${href({ [k]: to })}">${text}</a>` : `<span class="page off">${text}</span>`;
    bar += page_("r0", t.r0 - W, t.r0 > 0, "↑") + page_("r0", t.r0 + W, t.r0 + W < t.n_rows, "↓")
      + page_("c0", t.c0 - W, t.c0 > 0, "←") + page_("c0", t.c0 + W, t.c0 + W < t.n_cols, "→")
      + ` <span class="hint">Ctrl+G goes to any row or cell</span>`;
  }
  el.innerHTML = `<h1 id="tensor-title">${esc(t.name)} <small>${t.shape.join(" × ") || "scalar"} · ${esc(t.axes.join(", ") || "scalar")}</small><span class="tag ${t.kind}">${t.kind}</span></h1><div class="gridbar" id="gridbar">${bar}</div><div class="gridwrap" id="grid-main"></div>`;
  fillGrid($("#grid-main"), t, false);
}

function crumbs(page) {
  const parts = [`<a class="go" data-home="1" href="${href({ ...CLEAR, view: "overview" })}" title="${esc(page.text)}">${esc(S.model)} · “${esc(short(page.text, 24))}”</a>`];
  const t = S.tensor || "";
  const blk = S.view === "tensor" ? (t.match(/^[A-Za-z_][\w.]*\[(\d+)\]\./) || [])[1] : S.block;
  if (blk !== undefined && blk !== null && S.view !== "overview") parts.push(blockLink(blk, `block ${page.overview.prefix}[${blk}]`));
  if (S.view === "head") parts.push(`<span>head ${S.head}</span>`);
  if (S.view === "circuit") parts.push(`<span>circuit</span>`);
  if (S.view === "tensor" && /\.(attn|self_attn|attention)\.(q|k|v|score|att)$/.test(t)) parts.push(headLink(blk, S.lead, `head ${S.lead}`));
  if (S.view === "tensor") parts.push(tensorLink(t, S.lead, esc(t)));
  if (S.cell) parts.push(cellLink(S.cell));
  $("#crumbs-path").innerHTML = parts.join('<span class="sep">›</span>');
}
function renderBadge() { // "edited: N changes [list] [reset]": an edited sheet says so, on every view
  const el = $("#badge"), n = S.edits.length;
  if (!n) { el.hidden = true; el.innerHTML = ""; return; }
  el.hidden = false;
  const list = S.edits.map(([c, v]) => `<li>${cellLink(c)} = ${esc(fmt(v))}</li>`).join("");
  el.innerHTML = `<details><summary id="badge-summary">edited: ${n} change${n === 1 ? "" : "s"}</summary><ul id="badge-list">${list}</ul></details>`
    + ` <a id="reset" href="${href({ edits: [] })}" title="the unedited model">reset</a><span class="field-error" id="badge-error" role="alert" hidden></span>`;
}

// -- the architecture as a picture: the graph dfgpt.draw draws, one block whole; trace arrows ---------------------
const ROW_H = 34, BOX_H = 20, GAP = 8, LEFT = 110, PAD = 10;
function boxOf(a, name) { // the box a tensor is drawn in: its own, or its block's
  if (a.nodes.some((n) => n.id === name)) return name;
  const m = /^h\[(\d+)\]/.exec(name);
  return m ? `h[${m[1]}]` : null;
}
function archLayout(a) {
  const rows = new Map();
  for (const n of a.nodes) { if (!rows.has(n.row)) rows.set(n.row, []); rows.get(n.row).push(n); }
  let width = 0;
  for (const ns of rows.values()) width = Math.max(width, ns.reduce((s, n) => s + n.width + GAP, -GAP));
  const pos = {};
  for (const [r, ns] of rows) {
    let x = LEFT + PAD + (width - ns.reduce((s, n) => s + n.width + GAP, -GAP)) / 2;
    for (const n of ns) { pos[n.id] = { x, y: PAD + r * ROW_H, w: n.width }; x += n.width + GAP; }
  }
  return { pos, width: LEFT + 2 * PAD + width, height: 2 * PAD + a.rows * ROW_H - (ROW_H - BOX_H) };
}
function arrow(p, q, cls) { // from box p to box q: down between rows, sideways within one
  let d;
  if (Math.abs(p.y - q.y) < 1) {
    const [x1, x2] = p.x < q.x ? [p.x + p.w, q.x] : [p.x, q.x + q.w];
    d = `M${x1},${p.y + BOX_H / 2} L${x2},${q.y + BOX_H / 2}`;
  } else {
    const x1 = p.x + p.w / 2, y1 = p.y + (q.y > p.y ? BOX_H : 0), x2 = q.x + q.w / 2, y2 = q.y + (q.y > p.y ? 0 : BOX_H);
    const bend = Math.abs(y2 - y1) > ROW_H ? (x1 < x2 ? -1 : 1) * Math.min(60, Math.abs(y2 - y1) / 3) : 0;
    d = `M${x1},${y1} C${x1 + bend},${(y1 + y2) / 2} ${x2 + bend},${(y1 + y2) / 2} ${x2},${y2}`;
  }
  return `<path class="${cls}" d="${d}" marker-end="url(#${cls === "edge" ? "head" : cls})"/>`;
}
function archSVG(a, cell, compact) {
  const { pos, width, height } = archLayout(a);
  const cone = cell ? cell.cone.tensors : {};
  const inCone = (id) => Object.keys(cone).some((t) => t === id || boxOf(a, t) === id);
  const target = cell ? boxOf(a, cell.tensor) : null;
  let s = `<svg class="arch" id="arch" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" role="img" aria-label="the architecture of ${esc(PAGE.model.name)}">`
    + `<defs>${["head", "trace-in", "trace-out"].map((k) => `<marker id="${k}" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="${k === "head" ? 6 : 9}" markerHeight="${k === "head" ? 6 : 9}" markerUnits="userSpaceOnUse" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" class="${k}"/></marker>`).join("")}</defs>`;
  const [b0, b1] = a.block_rows;
  s += `<rect class="blockframe" x="4" y="${PAD + b0 * ROW_H - 8}" width="${width - 8}" height="${(b1 - b0) * ROW_H + BOX_H + 16}" rx="8"/>`
    + `<a href="${href({ ...CLEAR, view: "block", block: a.block, path: null })}" class="partlink"><text class="framelabel" x="10" y="${PAD + b1 * ROW_H + 6}">${esc(a.prefix)}[${a.block}]</text><text class="framenote" x="10" y="${PAD + b1 * ROW_H + 19}">1 of ${a.n_layer}</text></a>`;
  for (const p of a.parts) { // a sub-layer's frame around its own boxes: NeoX's attention and MLP side by side
    const mine = a.nodes.filter((n) => n.part === p.part).map((n) => pos[n.id]);
    const x0 = Math.min(...mine.map((q) => q.x)) - 4, x1 = Math.max(...mine.map((q) => q.x + q.w)) + 4;
    const y = PAD + p.rows[0] * ROW_H - 4, h = (p.rows[1] - p.rows[0]) * ROW_H + BOX_H + 8;
    s += `<rect class="part" x="${x0}" y="${y}" width="${x1 - x0}" height="${h}" rx="5"/>`
      + `<a class="partlink" href="${href({ ...CLEAR, ...p.link, path: null })}"><text class="partlabel" x="${x0 - 3}" y="${y + 14}" text-anchor="end">${esc(short(p.label, 14))}</text></a>`;
  }
  for (const [f, t] of a.edges) if (pos[f] && pos[t]) s += arrow(pos[f], pos[t], "edge");
  if (cell) { // the trace: arrows from what the cell reads, to what reads it (a spreadsheet's trace precedents / dependents)
    for (const p of cell.trace.precedents) { const f = boxOf(a, p); if (pos[f] && pos[target] && f !== target) s += arrow(pos[f], pos[target], "trace-in"); }
    for (const d of cell.trace.dependents) { const t = boxOf(a, d); if (pos[t] && pos[target] && t !== target) s += arrow(pos[target], pos[t], "trace-out"); }
  }
  for (const n of a.nodes) {
    const p = pos[n.id], kind = n.kind === "block" ? "blockbox" : n.kind;
    const cls = `${kind}${inCone(n.id) ? " in-cone" : ""}${n.id === target ? " traced" : ""}`;
    const link = n.kind === "block" ? { ...CLEAR, view: "block", block: n.link.block } : { ...CLEAR, view: "tensor", tensor: n.id };
    const count = cone[n.id] ? `; ${cone[n.id].toLocaleString("en")} cells in the cone` : "";
    s += `<a class="box" data-tensor="${esc(n.id)}" href="${href({ ...link, path: null })}"><title>${esc(n.id)} ${n.shape.join("×")}${count}</title>`
      + `<rect class="${cls}" x="${p.x}" y="${p.y}" width="${p.w}" height="${BOX_H}" rx="3"/>`
      + `<text x="${p.x + p.w / 2}" y="${p.y + 14}" text-anchor="middle">${esc(short(n.label, Math.floor(p.w / 6.2)))}</text></a>`;
  }
  return s + "</svg>";
}
function traceHTML(c) { // the cell panel's trace: what the cell reads → its tensor → what reads it
  const col = (list) => list.map((t) => `<a class="tbox" href="${href({ ...CLEAR, view: "tensor", tensor: t, path: null })}">${esc(t)}</a>`).join("") || '<span class="hint">none</span>';
  return `<div class="trace" id="cell-trace"><div class="tcol" id="trace-precedents">${col(c.trace.precedents)}</div><div class="tarrow in">↓ reads</div>`
    + `<div class="tcol"><span class="tbox traced">${esc(c.tensor)}</span></div><div class="tarrow out">↓ read by</div><div class="tcol" id="trace-dependents">${col(c.trace.dependents)}</div></div>`
    + `<a id="trace-arch" class="go" href="${href({ ...CLEAR, view: "overview", cell: c.name, path: null })}">trace it on the architecture →</a>`;
}

// -- the learner's path: one output token's computation, stage by stage, on the real cells ---------------------
const PROMPT = { sort: 6, "sort-random": 6, "sort-neat": 6 }; // the task's prompt length: the rest is generated
function isSort() { return Boolean(PAGE && PROMPT[PAGE.model.name] && PAGE.model.vocab); }
function pathSteps(page) {
  const o = page.overview, m = page.model, t = o.T - 1, tok = o.tokens[t];
  const have = new Set(o.stages.flatMap((s) => s.tensors.map((x) => x.name)));
  const pred = o.flow[t].next;
  const cell = (tensor, idx) => ({ ...CLEAR, view: "tensor", tensor, cell: `${tensor}${idx}` });
  const steps = [{ title: "the task", state: { ...CLEAR, view: "overview" }, text: isSort()
    ? `<b>sort</b> reads ${PROMPT[m.name]} letters (A, B, C) and writes them in sorted order, one letter at a time. The prompt is positions 0–${PROMPT[m.name] - 1}; from ${PROMPT[m.name]} on, the letters are the model's own (press “generate one token”). We follow position ${t} (“${esc(tok)}”) through the model to the letter it predicts next.`
    : `We follow position ${t} (“${esc(tok)}”) through the model to the token it predicts next.` }];
  steps.push({ title: "the token", state: cell("tokens", `[${t}]`), text: `Position ${t} holds the token “${esc(tok)}”. Every number below is a cell of the sheet: click one for its formula, or type a new value to see what changes.` });
  steps.push({ title: "embedding", state: cell("emb", `[${t}][0]`), text: `The token becomes a vector of ${m.n_embd} numbers: its row of the token embedding plus the position's row of the position embedding (the formula shows both cells). This row is the start of the residual stream.` });
  const P = o.prefix, names = o.stages.flatMap((s) => s.tensors.map((x) => x.name));
  for (let b = 0; b < m.n_layer; b++) { // by the family's names: h[b].attn (GPT-2), layers[b].self_attn (Llama)
    const att = names.find((n) => n.startsWith(`${P}[${b}].`) && n.endsWith(".att")) || "", attn = att.slice(0, -4);
    if (att) steps.push({ title: `block ${b}: attention`, state: { ...CLEAR, view: "head", block: b, head: 0, cell: `${att}[0][${t}][${t}]` },
      text: `Row ${t} of head 0's attention map: how much position ${t} takes from each position up to itself (the rows sum to 1; later positions are masked). The other heads are one click away.` });
    if (have.has(`${attn}.out`)) steps.push({ title: `block ${b}: attention out`, state: cell(`${attn}.out`, `[${t}][0]`), text: `The heads' mixed values, projected back to the stream's width: what attention adds to position ${t}.` });
    if (have.has(`${P}[${b}].mlp.out`)) steps.push({ title: `block ${b}: MLP`, state: cell(`${P}[${b}].mlp.out`, `[${t}][0]`), text: `The MLP reads position ${t} alone (no mixing across positions) and adds its output to the stream.` });
    if (have.has(`${P}[${b}].out`)) steps.push({ title: `block ${b}: out`, state: cell(`${P}[${b}].out`, `[${t}][0]`), text: `The residual stream after block ${b}: what came in, plus attention, plus the MLP.` });
  }
  const norm = names.find((n) => !/\[\d+\]/.test(n) && n !== "emb" && n.endsWith(".out")); // ln_f.out, norm.out
  if (norm) steps.push({ title: "final norm", state: cell(norm, `[${t}][0]`), text: "The last LayerNorm rescales the stream before it is read out." });
  steps.push({ title: "logits", state: cell("logit", `[${t}][${pred}]`), text: `One score per token of the vocabulary: the dot product of the normalised stream with that token's row of the unembedding. “${esc(pred)}” scores highest.` });
  steps.push({ title: "prediction", state: cell("prob", `[${t}][${pred}]`), text: `Softmax turns the scores into probabilities: the model predicts “${esc(pred)}” after position ${t}. Edit any cell on the way (a weight, a token, an activation) and watch this number move.` });
  return steps;
}
function pathHTML(page) {
  const steps = pathSteps(page), k = Math.min(Math.max(S.path, 0), steps.length - 1), st = steps[k];
  const go = (i, text, id) => i < 0 || i >= steps.length ? `<span class="page off">${text}</span>`
    : `<a class="page" id="${id}" href="${href({ ...steps[i].state, path: i })}">${text}</a>`;
  const value = page.cell && page.cell.name === st.state.cell ? ` <span class="mono" id="path-value">${esc(page.cell.name)} = ${esc(fmt(page.cell.value))}</span>` : "";
  return `<div class="card path" id="path"><h2>follow one token · step ${k + 1} of ${steps.length}: ${esc(st.title)}</h2>`
    + `<p id="path-text">${st.text}${value}</p><div class="row">${go(k - 1, "← back", "path-prev")} ${go(k + 1, "next →", "path-next")}`
    + ` <a class="page" id="path-close" href="${href({ path: null })}">close</a>`
    + `<span class="steps">${steps.map((x, i) => `<a class="dot${i === k ? " on" : ""}" href="${href({ ...x.state, path: i })}" title="${esc(x.title)}">${i + 1}</a>`).join("")}</span></div></div>`;
}

// -- the cell panel -------------------------------------------------------------------------------------
const NAME = /[A-Za-z_]\w*(?:\[[^\]\s]+\]|\.[A-Za-z_]\w*)*\[[^\]\s]+\]/g; // a whole dotted name, every [...] in it
function linkify(formula) { // cell names in a formula become links; a name indexed by a sum's variable stays text
  const vars = [...formula.matchAll(/Σ_\{(\w+)=/g)].map((m) => m[1]);
  return esc(formula).replace(NAME, (m) =>
    vars.some((v) => m.includes(`[${v}]`)) ? `<span class="range">${m}</span>` : cellLink(m.replace(/&amp;/g, "&"), m));
}
const SHOWN = 120; // links in a precedents or dependents list: a GPT-2 logit reads 1,536 cells (Ctrl+G reaches any)
function names(list, n) {
  const shown = list.slice(0, SHOWN).map((c) => cellLink(c)).join(" ");
  const rest = n - Math.min(SHOWN, list.length);
  return (shown || '<span class="hint">none</span>') + (rest > 0 ? ` <span class="hint">… ${rest.toLocaleString("en")} more</span>` : "");
}
function renderCell(c) {
  const body = $("#cell-body");
  if (!c) { body.innerHTML = '<p class="hint">Click any cell of a grid (or move to it with the arrow keys and press Enter), or a name in a formula.</p>'; return; }
  const editable = c.kind === "input" ? "a token" : c.kind === "parameter" ? "a number" : "a number (pins the cell)";
  body.innerHTML = `<div id="cell-name" class="mono"><b>${esc(c.name)}</b> <span class="tag ${c.kind}">${c.kind}</span><span class="tag">${esc(c.state)}</span></div>
    <div class="value-big" id="cell-value" data-value="${esc(c.value)}">${esc(c.value)}</div>
    <div class="formula" id="cell-formula">${linkify(c.formula)}</div>
    <div class="kv"><span>precedents <kbd>Ctrl+[</kbd></span><div class="list" id="cell-precedents">${names(c.precedents, c.n_precedents)}</div>
    <span>dependents <kbd>Ctrl+]</kbd></span><div class="list" id="cell-dependents">${names(c.dependents, c.n_dependents)}</div>
    <span>cone</span><div id="cell-cone" class="hint">it reads ${c.cone.cells.toLocaleString("en")} cells in ${Object.keys(c.cone.tensors).length} tensors, directly or not (outlined in red on the grids)</div>
    <span>trace</span><div>${traceHTML(c)}</div></div>
    <form class="edit" id="edit-form"><input id="edit-value" aria-label="new value of ${esc(c.name)}" placeholder="new value: ${editable}" value="${c.kind === "input" ? "" : esc(c.value)}"><button id="edit-apply">set</button></form>
    <span class="field-error" id="edit-error" role="alert" hidden></span>
    <h2 style="margin-top:10px">top influences (gradient × value)</h2><div id="influence" class="hint">…</div>`;
  $("#edit-form").addEventListener("submit", (ev) => { ev.preventDefault(); edit(c.name, c.kind, $("#edit-value").value, "edit"); });
  const inf = $("#influence");
  if (c.influence) {
    inf.innerHTML = `<table class="infl" id="influence-table"><tr><td>cell</td><td class="n">value</td><td class="n">gradient</td><td class="n">score</td></tr>`
      + c.influence.items.map((i) => `<tr><td>${cellLink(i.cell)}</td><td class="n">${fmt(i.value)}</td><td class="n">${fmt(i.grad)}</td><td class="n" data-score="${i.score}">${fmt(i.score)}</td></tr>`).join("") + "</table>";
  } else if (c.kind === "computed") {
    inf.innerHTML = `<button id="rank">rank the top 10</button> <span class="hint">one backward pass through ${PAGE.model.n_params.toLocaleString("en")} parameters: seconds at this size</span>`;
    $("#rank").addEventListener("click", async () => {
      inf.textContent = "ranking…";
      try {
        const r = await request(`/api/influence?${new URLSearchParams({ model: S.model, text: S.text, edits: JSON.stringify(S.edits), name: c.name, top: 10 })}`);
        renderCell({ ...c, influence: r });
      } catch (e) { inf.textContent = plain(e.message); }
    });
  } else {
    inf.textContent = `a ${c.kind} reads no cell; its dependents show what it feeds.`;
  }
}
function selectCell(name) { S.cell = name; FOCUS = "td.selected"; load(true); }

// -- what-ifs, receipts, generation ---------------------------------------------------------------------
function edit(name, kind, raw, field) {
  raw = raw.trim();
  const big = tooLarge(raw);
  clearErrors();
  if (!name) return fieldError(field, { message: "type a cell name, e.g. wpe[5][0] or lm_head.w[A][26]." });
  if (big) return fieldError(field, { message: big });
  if (raw === "") return fieldError(field, { message: `type the new value of ${name}: ${kind === "input" ? "a token" : "a number"}.` });
  const value = kind === "input" || isNaN(Number(raw)) ? raw : Number(raw);
  whatIf("set", { name, value }, field);
}
function whatIf(verb, body, field) {
  FAIL_FIELD = field;
  return load(true, () => post(verb, body)).finally(() => { FAIL_FIELD = null; });
}
function showReceipt(r, restored) {
  const ch = r.max_change || {};
  const pred = r.prediction.tokens.slice(0, 5).map((t) => `${esc(t.token)} ${fmt(t.prob)}`).join(" · ");
  const cells = r.cells || [];
  const what = cells.slice(0, 3).map((c) => esc(short(c, 48))).join(", ") + (cells.length > 3 ? ` and ${cells.length - 3} more` : "");
  let change = "";
  if (r.action === "append") change = `<div class="hint">the new position was computed; every earlier one was reused (no change)</div>`;
  else if (r.action === "append, cropped") change = `<div class="hint">the context was full: the first token (${esc(r.cropped)}) was dropped and the last ${esc(String(PAGE ? PAGE.model.block_size : ""))} tokens recomputed, as nanoGPT's generate does${r.dropped_pins ? `; ${r.dropped_pins} pinned cells dropped` : ""} (undo starts afresh)</div>`;
  else if (r.stale !== undefined) change = `<div class="hint">largest change: logit ${ch.logit == null ? "–" : fmt(ch.logit)}, prob ${ch.prob == null ? "–" : fmt(ch.prob)}${r.flipped ? ' · <span class="flip">the prediction flipped</span>' : ""}</div>`;
  $("#receipt").innerHTML = `<div class="mono" id="receipt-action" title="${esc(cells.join(", "))}">${restored ? "the address's edits, " : ""}${esc(r.action)}: ${what}</div>`
    + (r.stale === undefined ? "" : `<div class="receipt-nums"><div class="stale">stale<b id="receipt-stale">${r.stale.toLocaleString("en")}</b></div>
    <div class="recomputed">recomputed<b id="receipt-recomputed">${r.recomputed.toLocaleString("en")}</b></div>
    <div class="reused">reused<b id="receipt-reused">${r.reused.toLocaleString("en")}</b></div>
    <div class="cutoff">cut off<b id="receipt-cutoff">${r.cutoff.toLocaleString("en")}</b></div></div>`)
    + change + `<div>next after “${esc(short(r.text, 24))}”: <b id="receipt-prediction">${pred}</b></div>`;
}
function clearReceipt() { $("#receipt").innerHTML = '<p class="hint">Edit a weight, a token or an activation (here, or in the cell panel) to see what it recomputes.</p>'; }
function renderDist(d) {
  $("#temperature").value = S.temperature; $("#top-k").value = S.top_k; $("#top-p").value = S.top_p; $("#seed").value = S.seed;
  $("#temperature-out").textContent = Number(S.temperature).toFixed(2);
  $("#top-k-out").textContent = S.top_k ? String(S.top_k) : "all";
  $("#top-p-out").textContent = Number(S.top_p).toFixed(2);
  const max = Math.max(...d.tokens.map((t) => t.p), 1e-12);
  $("#dist").innerHTML = `<div class="hint">after position ${d.pos}; ${d.kept} of ${d.vocab_size} tokens kept</div>`
    + d.tokens.map((t) => `<div class="bar${t.p > 0 ? "" : " dropped"}" data-token="${esc(t.token)}" data-p="${t.p}">${cellLink(`logit[${d.pos}][${t.token}]`, `<span class="tok">${esc(t.token)}</span>`)}<div><div class="fill" style="width:${(100 * t.p / max).toFixed(1)}%"></div></div>${cellLink(`prob[${d.pos}][${t.token}]`, `<span class="p">${fmt(t.p)}</span>`)}</div>`).join("");
}
async function sliders() { // a slider's move: the distribution only (one request), and the address
  S.temperature = Number($("#temperature").value); S.top_k = Number($("#top-k").value); S.top_p = Number($("#top-p").value);
  S.seed = Number($("#seed").value) || 0;
  writeURL(false);
  const seq = ++distSeq;
  try {
    const d = await request(`/api/dist?${new URLSearchParams({ model: S.model, text: S.text, edits: JSON.stringify(S.edits), temperature: S.temperature, top_k: S.top_k || "", top_p: S.top_p < 1 ? S.top_p : "" })}`);
    if (seq === distSeq) { renderDist(d); $("#gen-error").hidden = true; }
  } catch (e) { fieldError("gen", e); }
}

// -- keyboard: links are links; these are the shortcuts ---------------------------------------------------
function typing(el) { return el && (el.matches("input, textarea, select") || el.isContentEditable); }
document.addEventListener("keydown", (ev) => {
  const ctrl = ev.ctrlKey || ev.metaKey;
  if (!ctrl) { if (ev.key === "Escape" && document.activeElement === $("#goto")) $("#goto").blur(); return; }
  const k = ev.key.toLowerCase();
  if (k === "g") { ev.preventDefault(); $("#goto").focus(); $("#goto").select(); return; }
  if (typing(document.activeElement)) return;
  if (k === "z" && !ev.shiftKey) { ev.preventDefault(); if (HISTORY.undo) whatIf("undo", {}, "whatif"); }
  else if (k === "y" || (k === "z" && ev.shiftKey)) { ev.preventDefault(); if (HISTORY.redo) whatIf("redo", {}, "whatif"); }
  else if ((ev.key === "[" || ev.key === "]" || ev.code === "BracketLeft" || ev.code === "BracketRight") && PAGE && PAGE.cell) {
    ev.preventDefault(); // Excel's Ctrl+[ and Ctrl+]: to the precedents, to the dependents
    const list = ev.key === "[" || ev.code === "BracketLeft" ? "precedents" : "dependents";
    const first = PAGE.cell[list][0];
    if (first) { FOCUS = "td.selected"; S.cell = first; S.view = null; S.tensor = null; load(true); }
  }
});
let FOCUS = null;
document.addEventListener("click", (ev) => { // a plain click on a link of this page: the view in one request, no reload
  const a = ev.target.closest("a[href]");
  if (!a || ev.ctrlKey || ev.metaKey || ev.shiftKey || ev.button !== 0 || a.id === "home" || a.getAttribute("target")) return;
  const url = new URL(a.getAttribute("href"), location.href); // an SVG link's .href is not a text
  if (url.origin !== location.origin || url.pathname !== "/") return;
  ev.preventDefault();
  navigate(fromQuery(url.searchParams), true);
});
function navigate(to, push) {
  if (!sameSheet(S, to)) { clearReceipt(); STALE = {}; }
  Object.assign(S, to);
  load(push);
}
window.addEventListener("popstate", () => navigate(fromQuery(new URLSearchParams(location.search)), false));

// -- the top bar's forms ------------------------------------------------------------------------------------
$("#whatif").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const name = $("#whatif-cell").value.trim();
  edit(name, /^tokens\[/.test(name) ? "input" : "parameter", $("#whatif-value").value, "whatif");
});
$("#undo").addEventListener("click", () => whatIf("undo", {}, "whatif"));
$("#redo").addEventListener("click", () => whatIf("redo", {}, "whatif"));
$("#step").addEventListener("click", () => whatIf("step", { seed: S.seed }, "gen"));
$("#input-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const nw = $("#text").value;
  if (!nw.trim()) return fieldError("text", { message: "type an input, e.g. CABACA." });
  if (!LOADED) { S.text = nw; clearErrors(); return load(true); } // no sheet yet (a bad address): open this input afresh
  if (nw === S.text) return load(false);
  whatIf("input", { new: nw }, "text");
});
$("#model").addEventListener("change", () => {
  const m = MODELS.find((x) => x.name === $("#model").value);
  if (!m) return;
  let text = S.text || "";
  if (m.vocab && !(text && [...text].every((c) => m.vocab.includes(c)))) text = defaultText(m);
  if (m.tokenizer === "ids" && !/^[\d\s]+$/.test(text)) text = defaultText(m);
  clearReceipt(); STALE = {}; LOADED = false;
  Object.assign(S, { model: m.name, text, ...CLEAR, view: "overview", edits: [] });
  clearErrors();
  load(true);
});
for (const id of ["#temperature", "#top-k", "#top-p"]) $(id).addEventListener("input", sliders);
$("#seed").addEventListener("change", sliders);
$("#goto-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const q = $("#goto").value.trim();
  if (!q) return;
  try {
    const to = await request(`/api/goto?${new URLSearchParams({ model: S.model, text: S.text, edits: JSON.stringify(S.edits), q })}`);
    clearErrors();
    Object.assign(S, CLEAR, to);
    FOCUS = to.cell ? "td.selected" : [`#grid-main td.v[data-cell^="${CSS.escape(q)}["]`, "#grid-main td.v"]; // the row typed
    load(true);
  } catch (e) { clearErrors(); fieldError("goto", e); }
});
new MutationObserver(() => { // after a keyboard jump, the focus goes where the keys will continue
  if (!FOCUS) return;
  const el = [].concat(FOCUS).map((sel) => document.querySelector(sel)).find((x) => x);
  if (el) { FOCUS = null; el.tabIndex = 0; el.focus(); }
}).observe($("#view").parentElement.parentElement, { childList: true, subtree: true });

function defaultText(m) { // an input every model reads: CABACA for the sort models, else the first tokens
  if (m.name.startsWith("sort") && m.vocab) return "CABACA";
  if (m.tokenizer === "ids") return Array.from({ length: Math.min(8, m.block_size) }, (_, i) => String(i)).join(" ");
  if (m.vocab) return Array.from({ length: Math.min(6, m.block_size) }, (_, i) => m.vocab[i % m.vocab.length]).join("");
  return "Hello, world";
}

(async function start() {
  Object.assign(S, fromQuery(new URLSearchParams(location.search)));
  // an address naming its model and input asks for its view beside the colours and the models: one round trip less
  const asked = S.model && S.text && S.view !== "circuit" ? post("view", {}) : null; // (circuit.js is not read yet)
  if (asked) asked.catch(() => {}); // its error is shown by load(), which awaits it
  const [colors, models] = await Promise.all([request("/api/colors"), request("/api/models")]);
  COLORS = colors; MODELS = models.models;
  $("#model").innerHTML = MODELS.map((m) => `<option value="${esc(m.name)}">${esc(m.name)}</option>`).join("");
  if (!S.model) S.model = MODELS[0].name;
  $("#model").value = S.model;
  const m = MODELS.find((x) => x.name === S.model);
  if (!S.text) S.text = defaultText(m || MODELS[0]);
  $("#text").value = S.text;
  load(false, null, asked);
})();
