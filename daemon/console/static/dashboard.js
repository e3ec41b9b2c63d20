// fusewatch dashboard: the alert list (loaded once, then live over server-sent events),
// the streams panel (polled; each stream's name opens its timeline) and acknowledgements
// shared by every operator.
"use strict";

const alerts = new Map();   // id -> alert JSON (with .ack)
const tbody = document.querySelector("#alerts tbody");
function why(alert) {
  return [...alert.terms].sort((a, b) => b.contribution - a.contribution).filter(t => t.contribution > 0)
    .slice(0, 3).map(t => `${t.signal} +${t.contribution.toFixed(2)}`).join(", ");
}
function matches(alert) {
  const query = document.getElementById("filter").value.trim().toLowerCase();
  if (document.getElementById("unacked").checked && alert.ack) return false;
  if (!query) return true;
  const hay = [alert.event, alert.site, alert.severity, ...alert.streams, alert.evidence.transcript].join(" ").toLowerCase();
  return query.split(/\s+/).every(word => hay.includes(word));
}

function row(alert) {
  const ack = alert.ack
    ? el("span", {class: "acked", title: time(alert.ack.at_ms)}, `✓ ${alert.ack.by}`)
    : el("button", {class: "ack", "data-id": alert.id}, "acknowledge");
  const tr = el("tr", {id: `alert-${alert.id}`, class: `alert sev-${alert.severity}${alert.ack ? " is-acked" : ""}`, "data-id": alert.id},
    el("td", {class: "thumb"}, alert.snapshot_url
      ? el("a", {href: `/alerts/${alert.id}`}, el("img", {class: "thumb", src: alert.snapshot_url, alt: "", loading: "lazy"}))
      : ""),
    el("td", {}, el("a", {href: `/alerts/${alert.id}`}, time(alert.window_start))),
    el("td", {}, alert.site),
    el("td", {class: "event"}, el("a", {href: `/alerts/${alert.id}`}, alert.event),
      alert.incident && alert.incident.length > 1
        ? el("span", {class: "incident-count", title: `${alert.incident.length} similar alerts, the newest shown`}, ` ×${alert.incident.length}`)
        : ""),
    el("td", {class: "score"}, alert.score.toFixed(2)),
    el("td", {class: "why"}, why(alert)),
    el("td", {class: "said"}, text(alert.evidence.transcript).slice(0, 120)),
    el("td", {}, ack));
  return tr;
}

function render() {
  const sorted = [...alerts.values()].sort((a, b) => b.window_start - a.window_start || (a.id < b.id ? 1 : -1));
  tbody.replaceChildren(...sorted.filter(matches).map(row));
  document.getElementById("no-alerts").hidden = alerts.size > 0;
}

tbody.addEventListener("click", async event => {
  const button = event.target.closest("button.ack");
  if (!button) return;
  button.disabled = true;
  const response = await acknowledge(button.dataset.id);
  if (!response.ok) button.disabled = false;
});
document.getElementById("filter").addEventListener("input", render);
document.getElementById("unacked").addEventListener("change", render);
const grouped = document.getElementById("incidents");
grouped.addEventListener("change", () => { alerts.clear(); loadAlerts(); });

// With "one row per incident", the server groups near-duplicate alerts (same event and site,
// similar moments, close in time) and sends each incident's newest alert with the ids it stands for.
async function loadAlerts() {
  const response = await fetch(`/api/alerts?limit=200${grouped.checked ? "&group=incident" : ""}`);
  if (!response.ok) {
    if (grouped.checked) { grouped.checked = false; loadAlerts(); }  // no search index yet: one row per alert
    return;
  }
  const body = await response.json();
  if (body.grouped) alerts.clear();
  for (const alert of body.alerts) alerts.set(alert.id, alert);
  render();
}

function connect() {
  const state = document.getElementById("feed-state");
  const source = new EventSource("/api/events");
  source.onopen = () => { state.textContent = "live"; state.className = "feed-state live"; loadAlerts(); };
  source.onerror = () => { state.textContent = "reconnecting…"; state.className = "feed-state down"; };
  source.addEventListener("alert", message => {
    const alert = JSON.parse(message.data);
    alert.ack = alerts.get(alert.id)?.ack || null;
    const shot = alert.evidence.snapshot;
    alert.snapshot_url = shot ? `/snapshots/${shot.split("/").map(encodeURIComponent).join("/")}` : null;
    if (grouped.checked) { loadAlerts(); return; }  // it may join an incident already listed
    alerts.set(alert.id, alert);
    render();
  });
  source.addEventListener("ack", message => {
    const {id, ack} = JSON.parse(message.data);
    const alert = alerts.get(id);
    if (alert) { alert.ack = ack; render(); }
  });
}

function streamCard(row) {
  const s = row.status;
  const summary = row.summary;
  const objects = summary ? Object.entries(summary.objects).map(([k, v]) => `${v} ${k}`).join(", ") : "";
  return el("div", {class: `stream${row.stale ? " stale" : ""}`, id: `stream-${row.stream}`},
    el("h3", {}, el("a", {href: `/streams/${encodeURIComponent(row.stream)}`, title: "timeline: seen, said, heard, alerted"}, row.stream),
      row.stale ? el("span", {class: "muted"}, " (not reporting)") : ""),
    el("dl", {},
      el("dt", {}, "fps"), el("dd", {}, s ? s.fps.toFixed(1) : "–"),
      el("dt", {}, "dropped"), el("dd", {}, s ? s.frames_dropped : "–"),
      el("dt", {}, "no motion"), el("dd", {}, s && s.frames_analysed ? `${Math.round(100 * (s.frames_without_motion || 0) / s.frames_analysed)} %` : "–"),
      el("dt", {}, "lag"), el("dd", {}, s && s.consumer_lag !== null ? s.consumer_lag : "–"),
      el("dt", {}, "last window"), el("dd", {}, s && s.last_window_end ? time(s.last_window_end) : "–"),
      el("dt", {}, "seen"), el("dd", {}, objects || "–"),
      el("dt", {}, "loudness"), el("dd", {}, summary && summary.loudness_dbfs !== null ? `${summary.loudness_dbfs.toFixed(0)} dBFS` : "–"),
      el("dt", {}, "said"), el("dd", {class: "said"}, summary ? summary.transcript : ""),
      el("dt", {}, "last alert"), el("dd", {}, row.last_alert ? el("a", {href: `/alerts/${row.last_alert.id}`}, `${row.last_alert.event} ${time(row.last_alert.window_start)}`) : "–")));
}

function ago(ms) {
  const seconds = Math.max(0, Math.floor(ms / 1000));
  for (const [unit, size] of [["d", 86400], ["h", 3600], ["min", 60]]) {
    if (seconds >= size) return `${Math.floor(seconds / size)} ${unit}`;
  }
  return `${seconds} s`;
}

// One line per live process of a role; a role without one is listed once, by when it left
// (the server sends only that row, see daemon/telemetry/status.py role_rows).
function roleItem(r, now) {
  if (r.live) {
    return el("li", {class: `role ${r.state}`, title: r.process}, `${r.role} — ${r.state}${r.restarts ? `, ${r.restarts} restarts` : ""}`);
  }
  const since = ago(now - r.gone_ms);
  return el("li", {class: `role ${r.stale ? "stale" : "departed"}`, title: r.process},
    `${r.role} — ${r.stale ? `stopped reporting ${since} ago` : `departed ${since} ago`}`);
}

async function loadStreams() {
  try {
    const response = await fetch("/api/streams");
    if (response.ok) {
      const data = await response.json();
      if (data.streams.length) document.getElementById("streams").replaceChildren(...data.streams.map(streamCard));
      document.getElementById("roles").replaceChildren(...data.roles.map(r => roleItem(r, data.now_ms)));
    }
  } finally {
    setTimeout(loadStreams, 2000);
  }
}

// ------------------------------------------------------------------ search

function searchResult(found, index) {
  const m = found.moment;
  const clipBox = el("div", {class: "result-clip"});
  const button = el("button", {class: "clip-button"}, "clip");
  button.addEventListener("click", () => playMoment(m, button, clipBox));
  const seen = Object.entries(m.objects).map(([label, n]) => `${n} ${label}`).join(", ");
  return el("li", {id: `result-${index}`, class: "result", "data-moment": m.id},
    found.snapshot_url ? el("img", {class: "thumb", src: found.snapshot_url, alt: "", loading: "lazy"}) : el("span", {class: "thumb none"}, ""),
    el("div", {class: "result-text"},
      el("p", {class: "result-head"}, `${time(m.start_ms)} · `, el("a", {href: `/streams/${encodeURIComponent(m.stream)}`}, m.stream),
        ` · ${((m.end_ms - m.start_ms) / 1000).toFixed(0)} s`, m.alerts.length ? ` · alert: ${m.alerts.map(a => a.event).join(", ")}` : ""),
      el("p", {class: "why muted"}, found.why),
      m.transcript ? el("p", {class: "said"}, `“${m.transcript.slice(0, 200)}”`) : el("p", {class: "muted"}, seen || "nothing seen"),
      button, clipBox));
}

async function playMoment(m, button, box) {
  button.disabled = true;
  const to = Math.min(m.end_ms, m.start_ms + 120_000, Date.now());
  const response = await fetch("/api/clips", {method: "POST", headers: {"Content-Type": "application/json"},
    body: JSON.stringify({stream: m.stream, from_ms: m.start_ms, to_ms: Math.max(to, m.start_ms + 1000)})});
  const body = await response.json();
  if (!response.ok) { box.replaceChildren(el("p", {class: "error"}, body.error || `error ${response.status}`)); button.disabled = false; return; }
  box.replaceChildren(el("video", {class: "clip-video", src: body.clip.url, controls: "", preload: "metadata"}));
}

document.getElementById("search-form").addEventListener("submit", async event => {
  event.preventDefault();
  const q = document.getElementById("search-query").value.trim();
  const state = document.getElementById("search-state"), list = document.getElementById("search-results");
  if (!q) { list.hidden = true; state.textContent = ""; return; }
  state.textContent = "searching…";
  const response = await fetch(`/api/search?${new URLSearchParams({q, n: "10"})}`);
  const body = await response.json();
  if (!response.ok) { state.textContent = body.error || `error ${response.status}`; list.hidden = true; return; }
  const n = body.results.length;
  state.textContent = n ? `${n} moment${n === 1 ? "" : "s"}` : `no moment matches “${q}”`;
  list.replaceChildren(...body.results.map(searchResult));
  list.hidden = !body.results.length;
});

connect();
loadStreams();
