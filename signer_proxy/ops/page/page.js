// The operator page: polls /operator/status.json and renders it with DOM text nodes only
// (never HTML from data), under a CSP that allows nothing but this script and its style.
"use strict";

const REFRESH_MS = 3000;
const SVG = "http://www.w3.org/2000/svg";

function cell(text, className) {
  const td = document.createElement("td");
  td.textContent = text === undefined || text === null ? "—" : String(text);
  if (className) td.className = className;
  return td;
}

function fill(tableId, rows, makeRow) {
  const body = document.querySelector(`#${tableId} tbody`);
  const fresh = document.createElement("tbody");
  for (const row of rows) {
    const tr = makeRow(row);
    fresh.appendChild(tr);
  }
  body.replaceWith(fresh);
}

function tr(...cells) {
  const row = document.createElement("tr");
  for (const c of cells) row.appendChild(c);
  return row;
}

function ether(wei) {
  if (wei === undefined) return undefined;
  const value = BigInt(wei);
  const whole = value / 10n ** 18n;
  const frac = (value % 10n ** 18n).toString().padStart(18, "0").slice(0, 6).replace(/0+$/, "");
  return frac ? `${whole}.${frac}` : `${whole}`;
}

function age(seconds) {
  if (seconds === undefined || seconds === null) return undefined;
  if (seconds < 120) return `${Math.round(seconds)} s`;
  if (seconds < 7200) return `${Math.round(seconds / 60)} min`;
  return `${(seconds / 3600).toFixed(1)} h`;
}

function renderNodes(data) {
  const rows = [];
  for (const chain of data.chains) for (const node of chain.nodes) rows.push({ chain, node });
  fill("nodes", rows, ({ chain, node }) =>
    tr(
      cell(chain.name),
      cell(node.url, "mono"),
      cell(node.healthy ? "up" : `down: ${node.error || ""}`, node.healthy ? "ok" : "bad"),
      cell(node.chain_id),
      cell(node.head_block),
      cell(node.latency_ms === undefined ? undefined : `${node.latency_ms} ms`),
    ),
  );
}

function pendingByAddress(data) {
  const count = new Map();
  for (const p of data.pending || []) {
    const key = String(p.address || "").toLowerCase();
    const entry = count.get(key) || { n: 0, oldest: 0 };
    entry.n += 1;
    entry.oldest = Math.max(entry.oldest, p.age_seconds || 0);
    count.set(key, entry);
  }
  return count;
}

function renderKeys(data) {
  const pending = pendingByAddress(data);
  const note = document.getElementById("keys-note");
  note.textContent =
    data.keys_shown < data.keys_total
      ? `showing ${data.keys_shown} of ${data.keys_total} keys`
      : `${data.keys_total} key(s)`;
  fill("keys", data.keys, (key) => {
    const p = pending.get(key.address.toLowerCase());
    const budgets = (key.budgets || [])
      .map((b) => `${b.scope}: ${ether(b.used_wei)} / ${ether(b.limit_wei)}`)
      .join("; ");
    const row = tr(
      cell(key.address, "mono"),
      cell(key.backend),
      cell(key.key, "mono"),
      cell(key.error ? `error: ${key.error}` : ether(key.balance_wei), key.error ? "bad" : ""),
      cell(key.next_nonce),
      cell(data.pending === null ? "n/a" : p ? `${p.n} (oldest ${age(p.oldest)})` : "0"),
      cell(key.signed_today),
      cell(budgets || "no budget"),
    );
    row.dataset.address = key.address;
    return row;
  });
}

function renderPending(data) {
  const note = document.getElementById("pending-note");
  if (data.pending === null) {
    note.textContent = "transaction tracking is not on in this proxy";
    fill("pending", [], () => tr());
    return;
  }
  note.textContent = data.pending.length ? "" : "nothing pending";
  fill("pending", data.pending, (p) => {
    const row = tr(
      cell(p.address, "mono"),
      cell(p.nonce),
      cell(p.reason ? `${p.state}: ${p.reason}` : p.state, p.state === "stuck" ? "bad" : p.state === "pending" ? "warn" : "ok"),
      cell(p.hash, "mono"),
      cell(p.bumps),
      cell(age(p.age_seconds)),
    );
    row.dataset.state = p.state;
    return row;
  });
}

function renderDecisions(data) {
  fill("decisions", data.decisions, (d) => {
    const allowed = d.outcome === "allowed";
    const detail = allowed ? d.tx_hash || (d.result === "error" ? d.reason : "") : d.reason;
    const row = tr(
      cell(d.time),
      cell(d.client),
      cell(d.method),
      cell(d.from, "mono"),
      cell(allowed ? (d.result === "error" ? "allowed, failed" : "allowed") : "refused", allowed ? "ok" : "bad"),
      cell(detail || "", "mono"),
    );
    row.dataset.outcome = d.outcome || "";
    return row;
  });
}

function chart(name, points) {
  const svg = document.getElementById(`chart-${name}`);
  while (svg.firstChild) svg.removeChild(svg.firstChild);
  const values = points.flatMap((p) => [p.avg_ms, p.p95_ms]).filter((v) => v !== null && v !== undefined);
  const top = Math.max(1, ...values);
  const x = (i) => (points.length < 2 ? 0 : (i * 300) / (points.length - 1));
  const y = (v) => 95 - (v / top) * 85;
  for (const [field, className] of [["p95_ms", "p95"], ["avg_ms", "avg"]]) {
    const coords = points
      .map((p, i) => (p[field] === null || p[field] === undefined ? null : `${x(i).toFixed(1)},${y(p[field]).toFixed(1)}`))
      .filter((c) => c !== null);
    if (coords.length === 0) continue;
    const line = document.createElementNS(SVG, "polyline");
    line.setAttribute("points", coords.join(" "));
    line.setAttribute("class", className);
    svg.appendChild(line);
  }
  const last = points.length ? points[points.length - 1] : null;
  document.getElementById(`note-${name}`).textContent = values.length
    ? `· now ${last && last.avg_ms !== null ? last.avg_ms.toFixed(1) : "—"} ms avg · top of chart ${top.toFixed(1)} ms`
    : "· no samples yet";
}

function render(data) {
  const s = document.getElementById("summary");
  s.textContent = `v${data.version} · up ${age(data.uptime_seconds)} · ${data.in_flight} in flight · ${data.keys_total} key(s)`;
  renderNodes(data);
  renderKeys(data);
  renderPending(data);
  renderDecisions(data);
  for (const [name, points] of Object.entries(data.latency)) chart(name, points);
  document.getElementById("refreshed").textContent = `updated ${new Date(data.time * 1000).toLocaleTimeString()}`;
  document.body.dataset.loaded = "true";
}

async function refresh() {
  try {
    const response = await fetch("/operator/status.json", { cache: "no-store", credentials: "same-origin" });
    if (!response.ok) throw new Error(`HTTP ${response.status}: ${(await response.text()).trim()}`);
    render(await response.json());
  } catch (error) {
    document.getElementById("refreshed").textContent = `not updated: ${error.message}`;
  }
}

refresh();
setInterval(refresh, REFRESH_MS);
