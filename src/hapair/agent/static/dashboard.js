// hapair dashboard: renders the agent's document from its event stream (/events).
// Text only ever goes in through textContent; the admin token lives in sessionStorage and
// leaves the page only in the Authorization header of a POST. A frame changes only the
// nodes whose content changed (patch): live regions speak only of real changes, focus and
// a text selection survive updates. "Pause updates" stops applying frames (WCAG 2.2.2).
"use strict";

const TOKEN_KEY = "hapair.admin-token";
const STALE_MS = 3000; // no document for this long: the stream is dead, open a new one
const RETRY_MS = 1000;

let doc = null;
let source = null;
let lastMessage = 0;
let retryTimer = null;
let paused = false;
let held = 0; // frames received while paused

function $(id) { return document.getElementById(id); }

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v;
    else node.setAttribute(k, v);
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

// Make `parent`'s children equal to `fresh`, touching only what differs: equal nodes stay (with
// their focus and selection), a node with the same tag and attributes is patched inside, any
// other is replaced.
function sameShell(a, b) {
  if (a.nodeType !== b.nodeType || a.nodeName !== b.nodeName) return false;
  if (a.nodeType !== Node.ELEMENT_NODE) return true;
  if (a.attributes.length !== b.attributes.length) return false;
  for (const at of b.attributes) if (a.getAttribute(at.name) !== at.value) return false;
  return true;
}

function patch(parent, fresh) {
  const kids = parent.childNodes;
  fresh.forEach((n, i) => {
    const o = kids[i];
    if (!o) parent.append(n);
    else if (o.isEqualNode(n)) return;
    else if (!sameShell(o, n)) parent.replaceChild(n, o);
    else if (o.nodeType === Node.ELEMENT_NODE) patch(o, [...n.childNodes]);
    else o.nodeValue = n.nodeValue;
  });
  while (kids.length > fresh.length) parent.lastChild.remove();
}

function setText(node, text) { if (node.textContent !== text) node.textContent = text; }

function badge(text, kind) { return el("span", { class: "badge " + kind }, text); }
function yesNo(v, good) {
  if (v === null || v === undefined) return badge("unknown", "warn");
  return badge(v ? "yes" : "no", v === good ? "ok" : "bad");
}
function ms(v) { return v === null || v === undefined ? "–" : Math.round(v) + " ms"; }
function pct(v) { return v === null || v === undefined ? "–" : (100 * v).toFixed(1) + " %"; }
function cpu(p) { return p && p.cpu_percent !== null && p.cpu_percent !== undefined ? p.cpu_percent.toFixed(1) + " %" : "–"; }
function mib(p) { return p && p.rss_bytes ? (p.rss_bytes / 1048576).toFixed(1) + " MiB" : "–"; }
function num(v) { return v === null || v === undefined ? "–" : String(v); }
function list(v) { return v && v.length ? v.join(", ") : "none"; }

// ------------------------------------------------------------------ the token
function token() { return sessionStorage.getItem(TOKEN_KEY) || ""; }

function showToken() {
  const have = token() !== "";
  setText($("token-state"), have
    ? "Token set for this tab: the buttons act."
    : "No token: read-only, the buttons are disabled.");
  for (const b of document.querySelectorAll("button[data-action]")) b.disabled = !have;
}

function setupToken() {
  $("token-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const value = $("token").value.trim();
    $("token").value = "";
    if (value) sessionStorage.setItem(TOKEN_KEY, value);
    showToken();
  });
  $("forget").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    showToken();
  });
  showToken();
}

// A button: standby/online of an LB, or drain/ready/maint of a server (data-server) of its HAProxy.
async function act(node, action, server) {
  const t = token();
  const out = $("action-result");
  if (!t || !doc) { out.textContent = "Read-only: enter the admin token first."; return; }
  // Named, not "this node or its peer": after a VIP move this page may be served by the other
  // agent than the one it last heard from; whichever receives the call applies it to `node`.
  const what = server ? action + " " + server + " on " + node : action + " " + node;
  const path = "/node/" + encodeURIComponent(node) +
    (server ? "/server/" + encodeURIComponent(server) : "") + "/" + action;
  out.textContent = what + " …";
  try {
    const r = await fetch(path, {
      method: "POST", cache: "no-store", credentials: "omit",
      headers: { "Authorization": "Bearer " + t },
    });
    let body = {};
    try { body = await r.json(); } catch (e) { body = {}; }
    if (r.status === 401) {
      sessionStorage.removeItem(TOKEN_KEY);
      showToken();
      out.textContent = "Refused: the admin token is wrong (forgotten; enter it again).";
    } else if (r.ok) {
      out.textContent = body.message || (what + ": done");
    } else {
      out.textContent = what + " failed: " + (body.error || r.status);
    }
  } catch (e) {
    out.textContent = what + " failed: " + e;
  }
}

// One listener for every button, the ones rows bring and take away included.
function onButton(ev) {
  const b = ev.target.closest("button[data-action]");
  if (!b || b.disabled) return;
  act(b.dataset.node, b.dataset.action, b.dataset.server);
}

function button(label, attrs) {
  const b = el("button", { type: "button", ...attrs }, label);
  b.disabled = token() === "";
  return b;
}

// ------------------------------------------------------------------ rendering
function lbCard(name) {
  let card = $("lb-" + name);
  if (card) return card;
  card = el("article", { id: "lb-" + name, class: "card", "aria-labelledby": "lb-" + name + "-title" });
  card.append(el("h3", { id: "lb-" + name + "-title" }, name, " ", el("span", { class: "role" })));
  const dl = el("dl");
  for (const [key, label] of [
    ["state", "State"], ["healthy", "Healthy"], ["summary", "Health"], ["standby", "Standby"],
    ["heartbeat", "Last heartbeat"], ["loss", "Heartbeat loss"], ["held", "Holds"],
    ["cpu", "Agent CPU"], ["rss", "Agent memory"],
  ]) {
    dl.append(el("dt", {}, label), el("dd", { class: key }));
  }
  card.append(dl);
  const actions = el("div", { class: "actions" });
  for (const action of ["standby", "online"]) {
    actions.append(button((action === "standby" ? "Standby " : "Online ") + name,
      { "data-node": name, "data-action": action }));
  }
  card.append(actions);
  $("lbs").append(card);
  showToken();
  return card;
}

function setField(card, key, value) {
  const dd = card.querySelector("dd." + key);
  patch(dd, [value instanceof Node ? value : document.createTextNode(String(value))]);
}

function stateBadge(lb) {
  if (lb.self) return badge("this node", "ok");
  const kind = { up: "ok", warn: "warn", dead: "bad", init: "warn" }[lb.state] || "warn";
  return badge(lb.state, kind);
}

function renderLbs(d) {
  const lbs = [...d.lbs].sort((a, b) => a.name.localeCompare(b.name));
  for (const lb of lbs) {
    const card = lbCard(lb.name);
    setText(card.querySelector(".role"), lb.self ? "(this page's agent)" : (d.etcd ? "(a peer)" : "(its peer)"));
    setField(card, "state", stateBadge(lb));
    setField(card, "healthy", lb.alive ? yesNo(lb.healthy, true) : badge("unknown (no heartbeat)", "bad"));
    setField(card, "summary", lb.summary || (lb.alive ? (lb.serving ? "serving" : "as its heartbeat says") : "–"));
    setField(card, "standby", lb.alive ? yesNo(lb.standby, false) : "–");
    setField(card, "heartbeat", lb.self ? "–" : ms(lb.heartbeat_age_ms) + " ago");
    setField(card, "loss", lb.self ? "–" : pct(lb.loss));
    setField(card, "held", lb.alive ? list(lb.held) : "unknown");
    setField(card, "cpu", cpu(lb.process));
    setField(card, "rss", mib(lb.process));
  }
}

function fillBody(table, rows) { patch($(table).querySelector("tbody"), rows); }

function renderVips(d) {
  fillBody("vips", d.vips.map((v) => {
    const holders = v.holders.length ? v.holders.join(" and ") : "nobody";
    const kind = v.holders.length === 1 ? (v.owner === v.home ? "ok" : "warn") : "bad";
    const t = v.traffic;
    return el("tr", { id: "vip-" + v.name, "data-vip": v.name },
      el("th", { scope: "row" }, v.name),
      el("td", {}, v.address),
      el("td", {}, v.home),
      el("td", { class: "owner" }, badge(holders, kind)),
      el("td", {}, t ? num(t.req_rate) : "–"),
      el("td", {}, t ? num(t.err_rate) : "–"),
      el("td", { class: "reason" }, v.reason || "–"));
  }));
  const boxes = d.vips.map((v) => {
    const items = [...v.timeline].reverse().map((m) =>
      el("li", {}, el("time", {}, m.time),
        m.node + (m.label === "holds" ? " holds " : m.take ? " took " : " let go of ") + m.vip +
          " (" + m.label + "): " + m.reason));
    return el("div", { class: "timeline", id: "timeline-" + v.name },
      el("h3", {}, "Moves of " + v.name),
      items.length ? el("ol", { reversed: "" }, ...items) : el("p", { class: "note" }, "none seen"));
  });
  patch($("timelines"), boxes);
  setText($("summary"), d.vips.map((v) =>
    v.name + " on " + (v.holders.length ? v.holders.join(" and ") : "nobody")).join(", "));
}

function renderBackends(d) {
  const rows = [];
  for (const lb of [...d.lbs].sort((a, b) => a.name.localeCompare(b.name))) {
    const h = lb.haproxy;
    if (!h) {
      rows.push(el("tr", {}, el("th", { scope: "row" }, lb.name),
        el("td", { colspan: "10" }, lb.alive ? "not reported yet" : "unknown (no heartbeat)")));
      continue;
    }
    if (!h.answers) {
      rows.push(el("tr", {}, el("th", { scope: "row" }, lb.name),
        el("td", { colspan: "10" }, badge("HAProxy does not answer", "bad"))));
      continue;
    }
    for (const s of h.servers) {
      const up = s.status.startsWith("UP");
      const kind = up ? "ok" : (s.status.startsWith("DOWN") ? "bad" : "warn");
      const r = s.responses || {};
      rows.push(el("tr", { "data-lb": lb.name, "data-server": s.server },
        el("th", { scope: "row" }, lb.name), el("td", {}, s.server),
        el("td", {}, badge(s.status, kind)), el("td", {}, s.check || "–"),
        el("td", {}, num(s.sessions)), el("td", {}, num(s.rate)),
        el("td", {}, num(r["2xx"])), el("td", {}, num(r["3xx"])),
        el("td", {}, num(r["4xx"])), el("td", {}, num(r["5xx"])),
        el("td", { class: "actions" }, ...["drain", "ready", "maint"].map((a) => button(a, {
          "data-node": lb.name, "data-server": s.server, "data-action": a,
          "aria-label": a + " " + s.server + " on " + lb.name })))));
    }
  }
  fillBody("backends", rows);
}

function secs(v) { return v === null || v === undefined ? "–" : v.toFixed(1) + " s"; }

// The etcd panel: only an N-node agent (coordinator "etcd") sends `d.etcd`.
function renderEtcd(d) {
  const section = $("etcd");
  const e = d.etcd;
  section.hidden = !e;
  if (!e) return;
  const leader = e.leader ? "leader " + e.leader : "no leader";
  const quorum = e.quorum === null ? "members not read yet"
    : e.healthy_members + " of " + e.members.length + " members healthy" + (e.quorum ? "" : ", NO QUORUM");
  const lease = e.fenced ? "fenced: " + e.fenced
    : (e.lease_valid ? "lease " + e.lease + " valid" : "no valid lease");
  // the live region says what changes state; the times that change every frame go beside it
  setText($("etcd-summary"), (e.available ? "etcd answers" : "etcd unavailable") + "; " +
    leader + "; " + quorum + "; " + d.self + "'s " + lease);
  setText($("etcd-detail"), (e.lease_valid && !e.fenced ? ms(e.lease_left_ms) + " left on the lease" : "") +
    (e.read_ms_ago === null ? "" : " (read " + ms(e.read_ms_ago) + " ago)"));
  fillBody("etcd-members", e.members.length ? e.members.map((m) => el("tr", { "data-member": m.name },
    el("th", { scope: "row" }, m.name), el("td", {}, m.endpoint),
    el("td", { class: "health" }, badge(m.healthy ? "healthy" : (m.answers ? "unhealthy" : "no answer"),
      m.healthy ? "ok" : "bad")),
    el("td", { class: "role" }, m.leader ? badge("leader", "ok") : (m.answers ? "follower" : "–")),
    el("td", {}, num(m.raft_term)), el("td", {}, num(m.version)),
    el("td", {}, m.error || "–"))) : [el("tr", {}, el("td", { colspan: "7" }, "not read yet"))]);
  fillBody("etcd-leases", e.vips.map((v) => {
    const kind = v.owner === null ? "bad" : (v.expired ? "bad" : "ok");
    const ttl = v.expired ? badge("expired", "bad") : secs(v.ttl_left_s);
    return el("tr", { "data-vip": v.vip },
      el("th", { scope: "row" }, v.vip),
      el("td", { class: "owner" }, badge(v.owner === null ? "nobody" : v.owner + (v.mine ? " (this node)" : ""), kind)),
      el("td", {}, v.lease || "–"),
      el("td", { class: "ttl" }, ttl),
      el("td", {}, num(v.mod_revision)));
  }));
}

function renderFailovers(d) {
  const rows = [...d.failovers].reverse().map((f) => el("tr", {},
    el("td", {}, f.time), el("th", { scope: "row" }, f.vip), el("td", {}, f.node),
    el("td", {}, f.label), el("td", {}, f.gap_ms === null ? "none (make-before-break or unknown)" : ms(f.gap_ms)),
    el("td", {}, f.reason)));
  fillBody("failovers", rows.length ? rows : [el("tr", {}, el("td", { colspan: "6" }, "none in this agent's history"))]);
}

function renderEvents(d) {
  setText($("events-node"), d.self);
  const items = [...d.events].reverse().map((e) => el("li", {}, el("time", {}, e.time), e.message));
  patch($("events"), items);
}

function render(d) {
  setText($("cluster"), "cluster " + d.cluster);
  setText($("seen-by"), d.self);
  const updated = $("updated");
  setText(updated, d.time);
  const iso = new Date(d.t * 1000).toISOString();
  if (updated.getAttribute("datetime") !== iso) updated.setAttribute("datetime", iso);
  renderLbs(d);
  renderVips(d);
  renderEtcd(d);
  renderBackends(d);
  renderFailovers(d);
  renderEvents(d);
}

// ------------------------------------------------------------------ the stream
function setLink(text, kind) {
  const b = $("link");
  setText(b, text);
  if (b.className !== "badge " + kind) b.className = "badge " + kind;
}

// ------------------------------------------------------------------ pausing (WCAG 2.2.2)
function showPause() {
  const b = $("pause");
  b.setAttribute("aria-pressed", String(paused));
  setText(b, paused ? "Resume updates" : "Pause updates");
  setText($("pause-state"), paused
    ? "Paused: the page shows the cluster as it was; " + held + " update" + (held === 1 ? "" : "s") +
      " held back. Resume to see the latest."
    : "");
}

function togglePause() {
  paused = !paused;
  if (!paused && doc) render(doc);
  held = 0;
  showPause();
}

function connect() {
  clearTimeout(retryTimer);
  if (source) source.close();
  source = new EventSource("/events");
  lastMessage = Date.now();
  source.onmessage = (ev) => {
    lastMessage = Date.now();
    let d;
    try { d = JSON.parse(ev.data); } catch (e) { return; }
    if (d.error) { setLink("agent error: " + d.error, "bad"); return; }
    setLink("live", "ok");
    doc = d;
    if (paused) { held += 1; showPause(); } else render(d);
  };
  source.onerror = () => {
    setLink("reconnecting…", "warn");
    if (source.readyState === EventSource.CLOSED) retryTimer = setTimeout(connect, RETRY_MS);
  };
}

function watchdog() {
  if (Date.now() - lastMessage > STALE_MS) {
    setLink("no update for " + Math.round((Date.now() - lastMessage) / 1000) + " s: reconnecting…", "bad");
    connect();
  }
}

document.addEventListener("DOMContentLoaded", () => {
  setupToken();
  document.addEventListener("click", onButton);
  $("pause").addEventListener("click", togglePause);
  showPause();
  connect();
  setInterval(watchdog, 1000);
});
