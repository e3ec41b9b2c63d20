// fusewatch alert detail: snapshot, transcript, detections and every term's contribution and stream.
"use strict";

const alertId = decodeURIComponent(location.pathname.split("/").pop());

function render(alert) {
  const detail = document.getElementById("detail");
  const ack = alert.ack
    ? el("p", {id: "ack-state", class: "acked"}, `acknowledged by ${alert.ack.by} at ${time(alert.ack.at_ms)}`)
    : el("p", {id: "ack-state"}, el("button", {id: "ack", class: "ack"}, "acknowledge"));
  const terms = el("table", {id: "terms"},
    el("thead", {}, el("tr", {}, ...["signal", "stream", "weight", "value", "g", "contribution"].map(h => el("th", {}, h)))),
    el("tbody", {}, ...alert.terms.map(t => el("tr", {},
      el("td", {}, t.signal), el("td", {class: "stream"}, t.stream ?? "–"), el("td", {}, t.weight.toFixed(2)),
      el("td", {}, t.value === null ? "–" : t.value),
      el("td", {}, t.g.toFixed(2)), el("td", {class: "contribution"}, t.contribution.toFixed(2))))),
    el("tfoot", {}, el("tr", {}, el("td", {colspan: "5"}, `score (threshold ${alert.threshold})`),
      el("td", {}, alert.score.toFixed(2)))));
  const detections = el("table", {id: "detections"},
    el("thead", {}, el("tr", {}, ...["label", "confidence", "track", "box"].map(h => el("th", {}, h)))),
    el("tbody", {}, ...alert.evidence.detections.map(d => el("tr", {},
      el("td", {}, d.label), el("td", {}, d.confidence.toFixed(2)), el("td", {}, d.track_id ?? "–"),
      el("td", {}, d.box.map(v => v.toFixed(2)).join(", "))))));
  detail.replaceChildren(
    el("h2", {class: `sev-${alert.severity}`}, `${alert.event} — ${alert.site}`),
    el("p", {}, `${time(alert.window_start)} – ${time(alert.window_end)} · streams ${alert.streams.join(", ")} · severity ${alert.severity}`),
    ack,
    el("div", {class: "evidence"},
      alert.snapshot_url ? el("img", {id: "snapshot", src: alert.snapshot_url, alt: "snapshot of the window"}) : el("p", {class: "muted"}, "no snapshot"),
      el("div", {},
        el("h3", {}, "Why it fired"), terms,
        el("h3", {}, "Said"), el("blockquote", {id: "transcript"}, alert.evidence.transcript || "(nothing)"),
        el("h3", {}, "Seen"), detections)));
  const button = document.getElementById("ack");
  if (button) button.addEventListener("click", async () => {
    button.disabled = true;
    const response = await acknowledge(alertId);
    if (response.ok) load(); else button.disabled = false;
  });
}

async function load() {
  const response = await fetch(`/api/alerts/${encodeURIComponent(alertId)}`);
  if (!response.ok) {
    document.getElementById("detail").replaceChildren(el("p", {class: "error"}, response.status === 404 ? "No such alert." : `Error ${response.status}`));
    return;
  }
  render(await response.json());
}

load();
