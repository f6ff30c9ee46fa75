// Shoal's dashboard: renders the snapshots the node streams at
// /dashboard/events, and a job's page from /dashboard/api/jobs/ID.
// Everything the grid reports is put in the page as text, never as HTML.
"use strict";

const csrf = document.querySelector('meta[name="shoal-csrf"]').content;

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else if (k === "style") e.style.cssText = v; // the page's CSP allows no style attributes

    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

function svg(tag, attrs) {
  const e = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  return e;
}

const fmt = {
  int: (n) => Math.round(n).toLocaleString("en-US"),
  rate: (n) => n >= 100 ? fmt.int(n) : n >= 10 ? n.toFixed(1) : n > 0 ? n.toFixed(2) : "0",
  ms: (v) => v < 0 ? "—" : v >= 1000 ? (v / 1000).toFixed(2) + " s" : v >= 10 ? v.toFixed(0) + " ms" : v >= 1 ? v.toFixed(1) + " ms" : (v * 1000).toFixed(0) + " µs",
  bytes: (b) => {
    const u = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (b >= 1024 && i < u.length - 1) { b /= 1024; i++; }
    return (i ? b.toFixed(1) : b) + " " + u[i];
  },
  dur: (s) => {
    if (s < 0 || !isFinite(s)) return "—";
    s = Math.round(s);
    if (s < 60) return s + "s";
    if (s < 3600) return Math.floor(s / 60) + "m " + (s % 60) + "s";
    if (s < 86400) return Math.floor(s / 3600) + "h " + Math.floor(s % 3600 / 60) + "m";
    return Math.floor(s / 86400) + "d " + Math.floor(s % 86400 / 3600) + "h";
  },
  pct: (r) => r < 0 ? "—" : (100 * r).toFixed(1) + "%",
  time: (ms) => ms ? new Date(ms).toLocaleString() : "—",
};

// Each node gets a colour of its own, the same on every panel: the
// members in name order take the palette's colours in turn.
const palette = ["#58a6ff", "#f0b429", "#3ecf8e", "#d2a8ff", "#ff7b72", "#79c0ff", "#ffa657", "#7ee787", "#f778ba", "#a5d6ff"];
const colours = new Map();
function colour(name) {
  if (!colours.has(name)) colours.set(name, palette[colours.size % palette.length]);
  return colours.get(name);
}

function badge(state) { return el("span", { class: "badge s-" + state, text: state }); }

function sparkline(history, width, height) {
  const s = svg("svg", { class: "spark", width, height, viewBox: `0 0 ${width} ${height}` });
  const known = history.filter((v) => v >= 0);
  if (known.length === 0) return s;
  const top = Math.max(1, ...known);
  const step = width / Math.max(1, history.length - 1);
  const pts = [];
  history.forEach((v, i) => {
    if (v >= 0) pts.push(`${(i * step).toFixed(1)},${(height - 1 - (v / top) * (height - 3)).toFixed(1)}`);
  });
  const first = pts[0].split(",")[0], last = pts[pts.length - 1].split(",")[0];
  s.append(svg("polygon", { points: `${first},${height} ${pts.join(" ")} ${last},${height}` }));
  s.append(svg("polyline", { points: pts.join(" ") }));
  const title = svg("title", {});
  title.textContent = `peak ${top.toFixed(2)} per slot`;
  s.append(title);
  return s;
}

function shareBar(perNode, title) {
  const entries = Object.entries(perNode || {}).filter(([, v]) => v > 0).sort();
  const total = entries.reduce((a, [, v]) => a + v, 0);
  const bar = el("span", { class: "bar share", title: entries.map(([n, v]) => `${n}: ${fmt.rate(v)}${title}`).join(", ") });
  for (const [name, v] of entries) {
    bar.append(el("span", { style: `width:${(100 * v / total).toFixed(2)}%;background:${colour(name)}`, "data-node": name }));
  }
  return bar;
}

function progress(job) {
  const total = job.total;
  const frac = total > 0 ? job.done / total : job.state === "done" ? 1 : 0;
  const failFrac = total > 0 ? job.failed / total : 0;
  return el("span", { class: "progress", "data-done": job.done, "data-total": total },
    el("span", { class: "bar share", title: `${fmt.int(job.done - job.failed)} ok, ${fmt.int(job.failed)} failed` },
      el("span", { style: `width:${(100 * Math.max(0, frac - failFrac)).toFixed(2)}%;background:var(--info)` }),
      failFrac > 0 ? el("span", { class: "bad", style: `width:${(100 * failFrac).toFixed(2)}%` }) : null),
    el("span", { class: "pct", text: `${fmt.int(job.done)} / ${total >= 0 ? fmt.int(total) : "…"}` + (total > 0 ? ` (${(100 * frac).toFixed(1)}%)` : "") }));
}

function failures(job) {
  const kinds = Object.entries(job.failed_kinds || {}).sort((a, b) => b[1] - a[1]);
  if (kinds.length === 0) return job.failed > 0 ? el("span", { class: "chip bad", text: fmt.int(job.failed) }) : el("span", { class: "dim", text: "none" });
  return kinds.map(([k, v]) => el("span", { class: "chip bad", title: "items that failed with " + k, text: `${k} ${fmt.int(v)}` }));
}

async function cancelJob(id, button) {
  if (!confirm(`Cancel job ${id}? Its work stops on every node; the results so far stay readable.`)) return;
  button.disabled = true;
  try {
    const r = await fetch(`/dashboard/api/jobs/${encodeURIComponent(id)}/cancel`, {
      method: "POST", headers: { "X-Shoal-CSRF": csrf }, credentials: "same-origin",
    });
    const body = await r.json().catch(() => ({}));
    if (!r.ok) throw new Error(body.error || r.statusText);
  } catch (e) {
    alert(`Could not cancel ${id}: ${e.message}`);
    button.disabled = false;
  }
}

function cancelButton(job) {
  if (job.state !== "running") return null;
  const b = el("button", { class: "cancel", "data-id": job.id, text: "Cancel" });
  b.addEventListener("click", () => cancelJob(job.id, b));
  return b;
}

function fill(table, rows, empty, columns) {
  const body = document.querySelector(`#${table} tbody`);
  body.replaceChildren(...(rows.length ? rows : [el("tr", {}, el("td", { class: "empty", colspan: columns, text: empty }))]));
}

function card(value, label) { return el("div", { class: "card" }, el("b", { text: value }), el("span", { text: label })); }

function render(s) {
  s.members.forEach((m) => colour(m.name));
  const alive = s.members.filter((m) => m.state === "alive");
  const slots = alive.reduce((a, m) => a + m.slots, 0);
  const busy = alive.reduce((a, m) => a + m.running, 0);
  const running = s.jobs.filter((j) => j.state === "running");
  const speed = running.reduce((a, j) => a + j.recent_per_second, 0);
  const hits = s.cache.filter((c) => c.hit_ratio >= 0);
  document.getElementById("cards").replaceChildren(
    card(`${alive.length} / ${s.members.length}`, "members alive"),
    card(`${busy} / ${slots}`, "slots busy"),
    card(String(running.length), "jobs running"),
    card(fmt.rate(speed), "items/s in running jobs"),
    card(hits.length ? fmt.pct(hits.reduce((a, c) => a + c.hit_ratio, 0) / hits.length) : "—", "cache hit ratio"));

  const problems = document.getElementById("problems");
  problems.hidden = s.problems.length === 0;
  problems.replaceChildren(...s.problems.map((p) => el("p", { text: p })));

  fill("members", s.members.map((m) => {
    // A gone member's last gossiped load is history, not load.
    const gone = m.state === "dead" || m.state === "left";
    return el("tr", { "data-name": m.name, "data-state": m.state, class: gone ? "gone" : "" },
    el("td", {}, el("span", { class: "chip", style: `background:${colour(m.name)};color:#0f1720`, text: m.name })),
    el("td", { class: "state" }, badge(m.state)),
    el("td", { text: m.rpc }),
    el("td", { class: "num", text: m.slots }),
    el("td", { class: "num", text: gone ? "—" : m.running }),
    el("td", { class: "num", text: gone ? "—" : m.queued }),
    el("td", {}, sparkline(m.history, 180, 26), el("span", { class: "pct", text: !gone && m.load >= 0 ? m.load.toFixed(2) + " per slot" : "—" })),
    el("td", { text: m.version }),
    el("td", { class: "num", text: m.answered ? m.health_score : "—" }),
    el("td", { class: "num", text: m.answered ? fmt.dur(m.uptime_ms / 1000) : "—" }),
    el("td", { class: "num", text: m.answered ? fmt.bytes(m.heap_bytes) : "—" }));
  }), "no members", 11);

  fill("jobs", s.jobs.map((j) => el("tr", { "data-id": j.id, "data-state": j.state },
    el("td", {}, el("a", { href: `/jobs/${encodeURIComponent(j.id)}`, text: j.id }), el("div", { class: "hint", text: `${j.mode} · ${j.owner || "?"}` })),
    el("td", { text: j.function }),
    el("td", { class: "state" }, badge(j.state)),
    el("td", {}, progress(j)),
    el("td", { class: "num", text: fmt.rate(j.state === "running" ? j.recent_per_second : j.items_per_second) }),
    el("td", { class: "num", text: fmt.dur(j.eta_seconds) }),
    el("td", {}, failures(j)),
    el("td", {}, j.per_node ? shareBar(j.per_node, " items") : el("span", { class: "hint", text: "—" })),
    el("td", { text: j.coordinator }),
    el("td", {}, cancelButton(j)))), "no jobs yet: run one with shoal submit", 10);
  document.getElementById("older-jobs").textContent = s.older_jobs > 0 ? `${fmt.int(s.older_jobs)} older jobs that ended are left out; shoal jobs lists them.` : "";

  document.getElementById("window").textContent = Math.round(s.window_seconds || 10);
  fill("functions", s.functions.map((f) => el("tr", { "data-name": f.name },
    el("td", { text: f.name }),
    el("td", { class: "num calls", text: fmt.rate(f.calls_per_second) }),
    el("td", { class: "num", text: fmt.rate(f.errors_per_second) }),
    el("td", { class: "num", text: fmt.ms(f.p50_ms) }),
    el("td", { class: "num", text: fmt.ms(f.p90_ms) }),
    el("td", { class: "num", text: fmt.ms(f.p99_ms) }),
    el("td", { class: "num", text: fmt.int(f.calls) }),
    el("td", {}, shareBar(f.per_node, " calls/s")))), "no calls yet", 8);

  fill("cache", s.cache.map((c) => el("tr", { "data-name": c.name },
    el("td", { text: c.name }),
    el("td", { text: c.kind }),
    el("td", { class: "num hits", text: fmt.pct(c.hit_ratio) }),
    el("td", {}, c.capacity > 0
      ? [el("span", { class: "bar" }, el("span", { style: `width:${(100 * Math.min(1, c.bytes / c.capacity)).toFixed(2)}%` })), el("span", { class: "pct", text: `${fmt.bytes(c.bytes)} of ${fmt.bytes(c.capacity)}` })]
      : el("span", { text: c.kind === "memcached" ? "in memcached" : "—" })),
    el("td", { class: "num", text: fmt.int(c.entries) }),
    el("td", { class: "num", text: fmt.int(c.stored) }),
    el("td", { class: "num", text: fmt.int(c.evicted) }),
    el("td", {}, (c.breakers || []).map((b) => el("span", { class: "chip " + (b.state === "closed" ? "ok" : b.state === "open" ? "bad" : "warn"), title: `breaker ${b.state}`, text: `${b.server} ${b.state}` }))))), "no cache reported", 8);

  document.getElementById("updated").textContent = new Date(s.now_ms).toLocaleTimeString();
}

function setLive(state, text) {
  const live = document.getElementById("live");
  live.className = "live " + state;
  live.textContent = text;
}

function watchGrid() {
  const source = new EventSource("/dashboard/events");
  source.addEventListener("snapshot", (e) => {
    setLive("on", "live");
    render(JSON.parse(e.data));
  });
  source.addEventListener("error", () => {
    // EventSource reconnects by itself; a refused stream (a session that
    // expired) sends the page back to the login form.
    setLive("off", "reconnecting…");
    fetch("/dashboard/api/snapshot", { credentials: "same-origin" }).then((r) => {
      if (r.status === 401) location.href = "/login?next=" + encodeURIComponent(location.pathname);
    }).catch(() => {});
  });
}

function renderJob(j) {
  document.getElementById("job-id").textContent = j.id;
  const dl = el("dl", { class: "detail" });
  const row = (k, v) => dl.append(el("dt", { text: k }), el("dd", {}, v));
  row("State", [badge(j.state), " ", cancelButton(j)]);
  if (j.error) row("Error", el("span", { class: "msg", text: j.error }));
  row("Function", j.function);
  row("Mode", `${j.mode}, coordinated by ${j.coordinator}`);
  row("Owner", j.owner || "—");
  row("Progress", progress(j));
  row("Items/s", fmt.rate(j.items_per_second) + " on average");
  row("Cached, retries", `${fmt.int(j.cached)} cached, ${fmt.int(j.retries)} retries`);
  row("Failures", failures(j));
  row("Share per node", j.per_node ? [shareBar(j.per_node, " items"), " ", Object.entries(j.per_node).sort().map(([n, v]) => el("span", { class: "chip", text: `${n} ${fmt.int(v)}` }))] : "—");
  row("Started", fmt.time(j.started_ms));
  row("Ended", fmt.time(j.ended_ms));
  document.getElementById("job-detail").replaceChildren(dl);
  fill("failures", (j.failures || []).map((f) => el("tr", { "data-index": f.index },
    el("td", { class: "num", text: f.index }), el("td", {}, el("span", { class: "chip bad", text: f.kind })), el("td", { class: "msg", text: f.message }))),
  j.failed > 0 ? "this job's failed items are not listed" : "no item failed", 3);
  document.getElementById("updated").textContent = new Date().toLocaleTimeString();
}

async function watchJob(id) {
  document.getElementById("grid-view").hidden = true;
  document.getElementById("job-view").hidden = false;
  document.title = `Shoal · job ${id}`;
  for (;;) {
    try {
      const r = await fetch(`/dashboard/api/jobs/${encodeURIComponent(id)}`, { credentials: "same-origin" });
      if (r.status === 401) { location.href = "/login?next=" + encodeURIComponent(location.pathname); return; }
      const j = await r.json();
      if (!r.ok) throw new Error(j.error || r.statusText);
      setLive("on", "live");
      renderJob(j);
      if (j.state !== "running") setLive("", j.state);
    } catch (e) {
      setLive("off", e.message);
    }
    await new Promise((done) => setTimeout(done, 1000));
  }
}

const jobPath = location.pathname.match(/^\/jobs\/([^/]+)$/);
if (jobPath) watchJob(decodeURIComponent(jobPath[1]));
else watchGrid();
