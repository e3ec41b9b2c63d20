// fusewatch alert detail: the clips, the snapshot with its boxes and zones drawn over it, the
// transcript, detections and every term's contribution and stream.
"use strict";

const alertId = decodeURIComponent(location.pathname.split("/").pop());
const CLIP_POLL_MS = 3000;
let clipPoll = null;

// Boxes (normalised x1, y1, x2, y2) and zone polygons (normalised points) in the image's own pixels,
// so labels keep their shape whatever size the image is shown at.
function overlay(image, alert) {
  const w = image.naturalWidth, h = image.naturalHeight;
  const scale = w / (image.clientWidth || w), font = 12 * scale;  // 12 screen pixels at the size shown
  const zones = alert.zones.map(z => svg("g", {class: "zone"},
    svg("polygon", {points: z.polygon.map(([x, y]) => `${x * w},${y * h}`).join(" ")}),
    svg("text", {x: z.polygon[0][0] * w + 3 * scale, y: z.polygon[0][1] * h + font, "font-size": font, "stroke-width": 3 * scale}, z.name)));
  const boxes = alert.evidence.detections.map(d => {
    const [x1, y1, x2, y2] = d.box;
    const label = `${d.label}${d.track_id === null || d.track_id === undefined ? "" : ` #${d.track_id}`} ${d.confidence.toFixed(2)}`;
    return svg("g", {class: "detection"},
      svg("rect", {class: "box", x: x1 * w, y: y1 * h, width: (x2 - x1) * w, height: (y2 - y1) * h}),
      svg("text", {x: x1 * w + 2 * scale, y: Math.max(y1 * h - 3 * scale, font), "font-size": font, "stroke-width": 3 * scale}, label));
  });
  return svg("svg", {id: "overlay", viewBox: `0 0 ${w} ${h}`, preserveAspectRatio: "none"}, ...zones, ...boxes);
}

function snapshot(alert) {
  if (!alert.snapshot_url) return el("p", {class: "muted"}, "no snapshot");
  const image = el("img", {id: "snapshot", src: alert.snapshot_url, alt: "snapshot of the window"});
  const frame = el("div", {class: "frame"}, image);
  image.addEventListener("load", () => frame.append(overlay(image, alert)));
  return el("figure", {class: "snapshot"}, frame,
    el("figcaption", {class: "muted"}, `${alert.snapshot_stream ?? ""} · ${alert.evidence.detections.length} detections`));
}

function clips(alert) {
  if (!alert.clips.length) {
    return el("p", {id: "no-clip", class: "muted"}, "clip: not cut yet (the clips role waits for the post-roll)");
  }
  return el("div", {class: "clips"}, ...alert.clips.map(c => el("figure", {class: "clip"},
    el("video", {id: `clip-${c.stream}`, class: "clip-video", src: c.url, controls: "", preload: "metadata"}),
    el("figcaption", {class: "muted"},
      `${c.stream} · ${time(c.start_ms)} – ${time(c.end_ms)} · ${((c.end_ms - c.start_ms) / 1000).toFixed(1)} s`
        + `${c.complete ? "" : " · ends early (the stream stopped)"}${c.starts_late ? " · starts late" : ""}`,
      " · ", el("a", {href: c.url, download: `${c.id}.mp4`}, "download")))));
}

function render(alert) {
  const detail = document.getElementById("detail");
  const ack = alert.ack
    ? el("p", {id: "ack-state", class: "acked"}, `acknowledged by ${alert.ack.by} at ${time(alert.ack.at_ms)}`)
    : el("p", {id: "ack-state"}, el("button", {id: "ack", class: "ack"}, "acknowledge"));
  const terms = el("table", {id: "terms"},
    el("thead", {}, el("tr", {}, ...["signal", "stream", "weight", "value", "g", "contribution"].map(h => el("th", {}, h)))),
    el("tbody", {}, ...alert.terms.map(t => el("tr", {},
      el("td", {}, t.signal), el("td", {class: "term-stream"}, t.stream ?? "–"), el("td", {}, t.weight.toFixed(2)),
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
      el("div", {}, clips(alert), snapshot(alert)),
      el("div", {},
        el("h3", {}, "Why it fired"), terms,
        el("h3", {}, "Said"), el("blockquote", {id: "transcript"}, alert.evidence.transcript || "(nothing)"),
        el("h3", {}, "Seen"), detections,
        el("h3", {}, "Similar moments before"), el("div", {id: "similar"}, el("p", {class: "muted"}, "looking…")))));
  loadSimilar();
  const button = document.getElementById("ack");
  if (button) button.addEventListener("click", async () => {
    button.disabled = true;
    const response = await acknowledge(alertId);
    if (response.ok) load(); else button.disabled = false;
  });
}

// Has this happened before? The past moments most like this alert's (query by example, /api/search).
async function loadSimilar() {
  const box = document.getElementById("similar");
  if (!box) return;
  const response = await fetch(`/api/alerts/${encodeURIComponent(alertId)}/similar?n=5`);
  const body = response.ok ? await response.json() : null;
  if (!body || !body.results.length) {
    box.replaceChildren(el("p", {class: "muted"}, body ? "no similar moment before this one" : "search is not available"));
    return;
  }
  box.replaceChildren(el("ol", {class: "search-results"}, ...body.results.map(found => {
    const m = found.moment;
    return el("li", {class: "result similar-moment"},
      found.snapshot_url ? el("img", {class: "thumb", src: found.snapshot_url, alt: ""}) : el("span", {class: "thumb none"}, ""),
      el("div", {class: "result-text"},
        el("p", {}, `${time(m.start_ms)} · `, el("a", {href: `/streams/${encodeURIComponent(m.stream)}`}, m.stream),
          ` · similarity ${(found.similarity ?? 0).toFixed(2)}`, m.alerts.length ? ` · alert: ${m.alerts.map(a => a.event).join(", ")}` : ""),
        m.transcript ? el("p", {class: "said"}, `“${m.transcript.slice(0, 160)}”`) : el("p", {class: "muted"}, Object.entries(m.objects).map(([k, n]) => `${n} ${k}`).join(", ") || "nothing seen")));
  })));
}

async function load() {
  const response = await fetch(`/api/alerts/${encodeURIComponent(alertId)}`);
  if (!response.ok) {
    document.getElementById("detail").replaceChildren(el("p", {class: "error"}, response.status === 404 ? "No such alert." : `Error ${response.status}`));
    return;
  }
  const alert = await response.json();
  render(alert);
  // A fresh alert's clip comes once its post-roll is on the topic: look again until it is there.
  clearTimeout(clipPoll);
  if (!alert.clips.length && Date.now() - alert.window_end < 120_000) clipPoll = setTimeout(load, CLIP_POLL_MS);
}

load();
