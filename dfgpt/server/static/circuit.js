// dfgpt explorer: the circuit view (issue 30). Loaded after app.js, whose state (S), links (href) and
// requests (post) it uses. One request per interaction: POST /api/circuit answers the circuit (found by
// ACDC, EAP or EAP-IG over the pairs, or loaded by `dfgpt serve --circuit FILE`), its picture (the SVG of
// dfgpt.Circuit.picture), its faithfulness curve, and, with "keep only these edges", each pair's metric
// with only the circuit's edges from the clean run. Every colour is the one colour map's (colors.css).
"use strict";

const METRICS = ["kl", "logit_diff:B,C", "prob:B", "logprob:B", "logit:B"]; // suggestions; any spec is typed

function askCircuit() { // the view's request: the circuit's fields, and the page around it (show)
  const pairs = S.pairs.length ? S.pairs : S.circuit ? [] : defaultPairs(); // sort's task pairs are the server's default
  const body = { pairs: pairs.length ? pairs : undefined, metric: S.metric || undefined, method: S.method || undefined,
    threshold: S.threshold ?? undefined, top: S.top ?? undefined, steps: S.steps ?? undefined, keep: S.keep,
    circuit: S.circuit || undefined };
  const t0 = performance.now(), what = S.circuit ? `opening ${S.circuit}` : `finding the circuit (${S.method || "acdc"}`
    + `${CIRCUIT ? `, ${CIRCUIT.circuit.n_edges.toLocaleString("en")} edges` : ""})`;
  const busyText = $("#busy").textContent;
  const tick = setInterval(() => { $("#busy").textContent = `${what}… ${((performance.now() - t0) / 1000).toFixed(0)} s`; }, 250);
  return post("circuit", body).finally(() => { clearInterval(tick); $("#busy").textContent = busyText; });
}

function defaultPairs() { // what the form starts from: sort's task pairs (the server's), else the input and a change of its last token
  const m = MODELS.find((x) => x.name === S.model);
  if (!m || isSortModel(m)) return [];
  if (m.tokenizer === "ids" || !m.vocab) {
    const ids = String(S.text).trim().split(/\s+/);
    const last = (Number(ids[ids.length - 1]) + 1) % m.vocab_size;
    return [[S.text, [...ids.slice(0, -1), String(last)].join(" ")]];
  }
  const chars = [...String(S.text)], last = chars[chars.length - 1], v = m.vocab;
  return [[S.text, chars.slice(0, -1).join("") + v[(v.indexOf(last) + 1) % v.length]]];
}
function isSortModel(m) { return m.name.startsWith("sort") && Boolean(m.vocab); }

function nodeLink(node) { // a component of the circuit: the view that shows it
  const head = /^h\[(\d+)\]\.head\[(\d+)\](?:\.[qkv])?$/.exec(node), mlp = /^h\[(\d+)\]\.mlp$/.exec(node);
  if (head) return { ...CLEAR, view: "head", block: Number(head[1]), head: Number(head[2]), path: null };
  if (mlp) return { ...CLEAR, view: "block", block: Number(mlp[1]), path: null };
  const have = PAGE ? new Set(PAGE.overview.stages.flatMap((s) => s.tensors.map((t) => t.name))) : new Set();
  const tensor = node === "emb" ? "emb" : node === "logits" ? "logit" : null;
  return tensor && have.has(tensor) ? { ...CLEAR, view: "tensor", tensor, path: null } : { ...CLEAR, view: "overview", path: null };
}
const nodeA = (node) => `<a class="go node-link" data-node="${esc(node)}" href="${href(nodeLink(node))}">${esc(node)}</a>`;
const num = (x) => (typeof x === "number" ? fmt(x) : esc(String(x)));
const signedNum = (x) => (typeof x === "number" && x > 0 ? "+" : "") + num(x);

function circuitForm() {
  const f = CIRCUIT ? CIRCUIT.fields : {}, m = MODELS.find((x) => x.name === S.model);
  const pairs = (f.pairs && f.pairs.length ? f.pairs : S.pairs.length ? S.pairs : defaultPairs()).map(([a, b]) => `${a} | ${b}`).join("\n");
  const method = f.method || S.method || "acdc", loaded = f.circuit || S.circuit;
  const val = (k) => { const v = f[k] ?? S[k]; return v === null || v === undefined ? "" : esc(String(v)); };
  const err = (k) => `<span class="field-error" id="${k}-error" role="alert" hidden></span>`;
  return `<form class="card" id="circuit-form"><h2>${loaded ? `the circuit loaded from <span class="name">${esc(loaded)}</span>` : "find a circuit: which edges carry a behaviour"}</h2>`
    + (loaded ? `<p class="hint">Saved by <code>dfgpt circuit … -o ${esc(loaded)}.json</code>. Give its pairs to keep only its edges on them; <a class="go" id="circuit-new" href="${href({ ...CLEAR, view: "circuit", circuit: null, path: null })}">find a new circuit</a>.</p>` : "")
    + `<div class="cform"><div class="pairs"><label for="circuit-pairs">pairs, one a line: <i>clean</i> | <i>corrupted</i>, all of one length</label>`
    + (m && isSortModel(m) ? ` <a class="go" id="circuit-sort-pairs" href="${href({ view: "circuit", pairs: [], keep: S.keep || Boolean(loaded) })}">the sort task's pairs</a>` : "")
    + `<textarea id="circuit-pairs" rows="${Math.min(6, Math.max(2, pairs.split("\n").length))}" spellcheck="false"${m && isSortModel(m) ? ` placeholder="empty: the sort task's four pairs"` : ""}>${esc(pairs)}</textarea>${err("pairs")}</div>`
    + `<div class="cfields"><label>metric <input id="circuit-metric" list="circuit-metrics" value="${esc(f.metric || S.metric || "kl")}" spellcheck="false"${loaded ? " disabled" : ""}>`
    + `<datalist id="circuit-metrics">${METRICS.map((x) => `<option value="${esc(x)}">`).join("")}</datalist>${err("metric")}</label>`
    + `<label>method <select id="circuit-method"${loaded ? " disabled" : ""}>${["acdc", "eap", "eap-ig"].map((x) => `<option value="${x}"${x === method ? " selected" : ""}>${x}</option>`).join("")}</select>${err("method")}</label>`
    + `<label>threshold <input id="circuit-threshold" size="6" value="${val("threshold")}" placeholder="${method === "acdc" ? "0.1" : "none"}"${loaded ? " disabled" : ""}>${err("threshold")}</label>`
    + `<label>top-k <input id="circuit-top" size="4" value="${val("top")}" placeholder="${method === "acdc" ? "—" : "20"}"${loaded || method === "acdc" ? " disabled" : ""}>${err("top")}</label>`
    + `<label>steps <input id="circuit-steps" size="3" value="${val("steps")}" placeholder="${method === "eap-ig" ? "5" : "—"}"${loaded || method !== "eap-ig" ? " disabled" : ""}>${err("steps")}</label>`
    + `<button type="submit" id="circuit-run">${loaded ? "run the pairs" : "find the circuit"}</button></div></div>${err("circuit")}`
    + `<p class="hint">ACDC patches each edge from the corrupted run, from the logits back, and keeps it when the metric moves by at least the threshold; EAP and EAP-IG score every edge by its gradient and keep the top-k (or |score| ≥ threshold). Found on the served model's weights.</p></form>`;
}

function viewCircuit(el, answer) {
  let h = `<h1>circuit <small>edges between the embedding, the heads, the MLPs and the logits</small></h1>` + circuitForm();
  if (answer) {
    const c = answer.circuit, faith = typeof c.faithfulness === "number" ? `${(100 * c.faithfulness).toFixed(0)}%` : num(c.faithfulness);
    h += `<div class="cgrid"><div class="card" id="circuit-summary"><h2>${esc(c.method)} circuit of <span class="name">${esc(c.metric)}</span> over ${c.pairs} pair${c.pairs === 1 ? "" : "s"}</h2>`
      + `<div class="cnums"><div><b id="circuit-kept">${c.kept.length.toLocaleString("en")}</b> of ${c.n_edges.toLocaleString("en")} edges</div>`
      + `<div class="clean">clean <b>${signedNum(c.clean)}</b></div><div class="corrupted">corrupted <b>${signedNum(c.corrupted)}</b></div>`
      + `<div>circuit alone <b id="circuit-value" data-value="${esc(String(c.value))}">${signedNum(c.value)}</b></div><div>faithfulness <b id="circuit-faith">${faith}</b></div></div>`
      + `<label class="toggle"><input type="checkbox" id="circuit-keep"${S.keep ? " checked" : ""}> keep only these edges (every other edge patched from the corrupted run), pair by pair</label>`
      + (answer.keep ? keepHTML(answer.keep, c) : "") + `</div>`;
    h += `<div class="card" id="circuit-picture-card"><h2>the circuit, from the embedding up: a box opens its head, block or tensor</h2>`
      + `<p class="hint"><span class="key pos">blue</span>: score &gt; 0, <span class="key neg">red</span>: &lt; 0, wider: larger; q, k, v: the head's input the edge feeds</p>`
      + `<div class="scroll" id="circuit-picture">${answer.picture || `<p class="hint">${esc(answer.picture_error || "")}</p>`}</div></div>`;
    h += `<div class="card" id="circuit-edges-card"><h2>kept edges, by |score|</h2><div class="scroll tall"><table class="infl" id="circuit-edges"><tr><td>#</td><td>from</td><td>to</td><td class="n">score</td></tr>`
      + c.kept.map((e, i) => `<tr data-edge="${esc(e.edge)}"><td>${i + 1}</td><td>${nodeA(e.src)}</td><td>${nodeA(e.dest)}</td><td class="n" data-score="${esc(String(e.score))}">${signedNum(e.score)}</td></tr>`).join("")
      + `</table></div></div><div class="card" id="circuit-curve-card"><h2>faithfulness: the metric with only the best k edges kept</h2><div class="scroll" id="circuit-curve">${answer.curve || ""}</div></div></div>`;
  }
  el.innerHTML = h;
  document.body.classList.add("circuit-view");
  const pic = $("#circuit-picture svg");
  if (pic) linkNodes(pic);
  $("#circuit-form").addEventListener("submit", (ev) => { ev.preventDefault(); runCircuit(); });
  $("#circuit-method").addEventListener("change", () => { // each method's own fields
    const m = $("#circuit-method").value;
    $("#circuit-top").disabled = m === "acdc"; $("#circuit-steps").disabled = m !== "eap-ig";
    $("#circuit-top").value = ""; $("#circuit-threshold").value = ""; // a threshold means another thing to each method
    $("#circuit-top").placeholder = m === "acdc" ? "—" : "20"; $("#circuit-threshold").placeholder = m === "acdc" ? "0.1" : "none";
  });
  const keep = $("#circuit-keep");
  if (keep) keep.addEventListener("change", () => { S.keep = keep.checked; load(true); });
}

function keepHTML(k, c) {
  const row = (r) => `<tr><td class="mono">${esc(r.clean)}</td><td class="mono">${esc(r.corrupted)}</td><td class="n">${signedNum(r.clean_metric)} <small>${esc(r.clean_prediction)}</small></td>`
    + `<td class="n">${signedNum(r.corrupted_metric)}</td><td class="n" data-value="${esc(String(r.circuit_metric))}"><b>${signedNum(r.circuit_metric)}</b> <small>${esc(r.circuit_prediction)}</small></td></tr>`;
  return `<div class="scroll"><table class="infl" id="circuit-keep-table"><tr><td>clean</td><td>corrupted</td><td class="n">clean run</td><td class="n">corrupted run</td><td class="n">only the circuit</td></tr>`
    + k.rows.map(row).join("") + `<tr class="mean"><td colspan="4">mean over the pairs (${esc(c.metric)}; the prediction at position ${k.position} beside each)</td><td class="n"><b id="circuit-keep-mean">${signedNum(k.mean)}</b></td></tr></table></div>`;
}

function linkNodes(svg) { // Graphviz's node groups, each wrapped in a link to its view (the picture itself is untouched)
  for (const k of ["width", "height"]) { // points drawn as pixels: three quarters of Graphviz's size, shrunk further to fit its card
    const v = svg.getAttribute(k);
    if (v && v.endsWith("pt")) svg.setAttribute(k, v.slice(0, -2));
  }
  const box = svg.parentElement; // a picture much wider than its card is read at its size, scrolled, not shrunk to a blur
  if (Number(svg.getAttribute("width")) > 1.6 * box.clientWidth) box.classList.add("wide");
  svg.setAttribute("role", "img"); svg.setAttribute("aria-label", "the circuit");
  for (const g of svg.querySelectorAll("g.node")) {
    const node = g.querySelector("title").textContent;
    const a = document.createElementNS("http://www.w3.org/2000/svg", "a");
    a.setAttribute("href", toQuery({ ...S, ...nodeLink(node) }));
    a.setAttribute("class", "circuit-node"); a.setAttribute("data-node", node); a.setAttribute("aria-label", `open ${node}`);
    g.parentNode.insertBefore(a, g); a.appendChild(g);
  }
}

function runCircuit() { // the form, read into the address's state: one request
  const lines = $("#circuit-pairs").value.split("\n").map((x) => x.trim()).filter((x) => x);
  const pairs = lines.map((x) => { const i = x.indexOf("|"); return i < 0 ? [x, ""] : [x.slice(0, i).trim(), x.slice(i + 1).trim()]; });
  clearErrors();
  const bad = pairs.findIndex(([a, b]) => !a || !b);
  if (bad >= 0) return fieldError("pairs", { message: `line ${bad + 1}: write two inputs, clean | corrupted, e.g. CABACAAAA | CACACAAAA.` });
  const numOrNull = (id) => { const v = $(id).value.trim(); return v === "" || $(id).disabled ? null : v; };
  if (S.circuit) S.keep = true; // a loaded circuit's pairs are run to keep only its edges on them
  Object.assign(S, { view: "circuit", pairs, metric: $("#circuit-metric").value.trim() || null, method: $("#circuit-method").value,
    threshold: numOrNull("#circuit-threshold"), top: numOrNull("#circuit-top"), steps: numOrNull("#circuit-steps") });
  load(true);
}
