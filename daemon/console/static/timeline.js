// fusewatch stream timeline: a stream's period summaries (objects, speech, loudness, alerts) on
// one time axis. An alert marker links to the alert's page; a click anywhere else opens that
// moment: its period's summary, the snapshot of the nearest window with one, and a clip of the
// moment cut on demand from fw.media (POST /api/clips).
"use strict";

const stream = decodeURIComponent(location.pathname.split("/").pop());
const RANGES = {
  hour: {period: "1m", span: 3_600_000},
  day: {period: "1h", span: 86_400_000},
};
const LANES = [["objects", 96], ["speech", 34], ["loudness", 80], ["alerts", 30]];  // name, height (px)
const LEFT = 92, RIGHT = 16, GAP = 6, TOP = 4, AXIS = 24;
const DB_FLOOR = -80;
const CLIP_BEFORE_MS = 5_000, CLIP_AFTER_MS = 10_000, CLIP_PAD_MS = 1_000, CLIP_MAX_MS = 120_000;
const REFRESH_MS = 30_000;
const PALETTE = ["#4ea1ff", "#6ad46a", "#ffb347", "#c792ea", "#4dd0c8", "#ff8a80", "#e6d36a", "#9fa8da"];
const TICK_STEPS = [1, 2, 5, 10, 15, 30, 60, 120, 180, 360, 720].map(minutes => minutes * 60_000);

const view = {summaries: [], severities: new Map(), periodMs: 60_000, from: 0, to: 1, width: 0, selected: null};
let refresh = null;
let momentSeq = 0;

function clock(ms, seconds) {
  return new Date(ms).toLocaleTimeString([], seconds ? {hour: "2-digit", minute: "2-digit", second: "2-digit"} : {hour: "2-digit", minute: "2-digit"});
}
function rangeName() {
  const asked = new URLSearchParams(location.search).get("range");
  return asked !== null && Object.hasOwn(RANGES, asked) ? asked : "hour";
}

// ------------------------------------------------------------------ data

async function load() {
  const range = RANGES[rangeName()];
  const now = Date.now();
  const since = now - range.span;
  const query = new URLSearchParams({stream, period: range.period, since_ms: String(since)});
  const state = document.getElementById("timeline-state");
  try {
    const [summaries, alerts] = await Promise.all([
      fetch(`/api/summaries?${query}`), fetch(`/api/alerts?since_ms=${since}&limit=1000`)]);
    if (!summaries.ok) {
      state.textContent = `could not load the summaries (${summaries.status})`;
      state.className = "error";
      return;
    }
    const data = await summaries.json();
    if (alerts.ok) {
      for (const alert of (await alerts.json()).alerts) view.severities.set(alert.id, alert.severity);
    }
    Object.assign(view, {summaries: data.summaries, periodMs: data.period_s * 1000, from: since, to: now});
    state.className = "muted";
    state.textContent = data.summaries.length
      ? `${data.summaries.length} periods · updated ${clock(now, true)}`
      : `no ${range.period} summaries of ${stream} in this range yet: the fuse role writes one when a period closes`;
    draw();
  } catch (error) {
    state.textContent = "the dashboard does not answer: retrying";
    state.className = "error";
  } finally {
    clearTimeout(refresh);
    refresh = setTimeout(load, REFRESH_MS);
  }
}

// ------------------------------------------------------------------ drawing

function scaleX(width) {
  const span = view.to - view.from;
  return t => LEFT + (t - view.from) / span * (width - LEFT - RIGHT);
}

function classesOf(summaries) {
  const totals = new Map();
  for (const s of summaries) {
    for (const [label, o] of Object.entries(s.objects)) totals.set(label, (totals.get(label) || 0) + o.max_count);
  }
  return [...totals.entries()].filter(([, n]) => n > 0).sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1)).map(([label]) => label);
}

function periodBox(s, x) {
  const x0 = x(Math.max(s.period_start, view.from)), x1 = x(Math.min(s.period_end, view.to));
  return {x: x0 + 0.5, width: Math.max(x1 - x0 - 1, 1)};
}

function objectsLane(height, x, colours) {
  const top = Math.max(1, ...view.summaries.map(s => Object.values(s.objects).reduce((n, o) => n + o.max_count, 0)));
  const unit = (height - 14) / top;
  const marks = [];
  for (const s of view.summaries) {
    const {x: left, width} = periodBox(s, x);
    let bottom = height;
    for (const [label, colour] of colours) {
      const o = s.objects[label];
      if (!o || o.max_count <= 0) continue;
      const h = o.max_count * unit;
      const tip = `${label}: max ${o.max_count}, mean ${o.mean_count.toFixed(2)}, ${o.new_tracks} new tracks`;
      marks.push(svg("rect", {class: `bar${s.complete ? "" : " incomplete"}`, x: left, y: bottom - h, width, height: h,
        fill: colour, "data-label": label}, svg("title", {}, `${clock(s.period_start)} ${tip}`)));
      const meanY = bottom - Math.min(o.mean_count, o.max_count) * unit;
      marks.push(svg("line", {class: "mean", x1: left, x2: left + width, y1: meanY, y2: meanY}));
      bottom -= h;
    }
  }
  return [svg("text", {class: "scale", x: LEFT - 6, y: 12}, `${top}`), svg("text", {class: "scale", x: LEFT - 6, y: height - 2}, "0"), ...marks];
}

function speechLane(height, x) {
  return view.summaries.flatMap(s => s.speech.map(line => {
    const x0 = x(line.start_ms);
    return svg("rect", {class: "said", x: x0, y: 5, width: Math.max(x(line.end_ms) - x0, 3), height: height - 10,
      "data-from": line.start_ms, "data-to": line.end_ms},
      svg("title", {}, `${clock(line.start_ms, true)}–${clock(line.end_ms, true)} “${line.text}”`));
  }));
}

function loudnessLane(height, x) {
  const y = db => height - (Math.min(Math.max(db, DB_FLOOR), 0) - DB_FLOOR) / -DB_FLOOR * (height - 6);
  const levels = [], moments = [], peaks = [];
  for (const s of view.summaries) {
    if (!s.loudness) continue;
    const {x: left, width} = periodBox(s, x);
    const level = s.loudness;
    levels.push(svg("rect", {class: "level", x: left, y: y(level.mean_dbfs), width, height: height - y(level.mean_dbfs)},
      svg("title", {}, `${clock(s.period_start)} mean ${level.mean_dbfs.toFixed(1)} dBFS, peak ${level.peak_dbfs.toFixed(1)} dBFS`)));
    peaks.push(svg("circle", {class: "peak", cx: left + width / 2, cy: y(level.peak_dbfs), r: 3},
      svg("title", {}, `peak ${level.peak_dbfs.toFixed(1)} dBFS`)));
    for (const m of level.loud_moments) {
      const x0 = x(m.start_ms);
      moments.push(svg("rect", {class: "loud", x: x0, y: 1, width: Math.max(x(m.end_ms) - x0, 3), height: height - 2,
        "data-from": m.start_ms, "data-to": m.end_ms},
        svg("title", {}, `loud ${clock(m.start_ms, true)}–${clock(m.end_ms, true)}: ${m.loudness_dbfs.toFixed(1)} dBFS, peak ${m.peak_dbfs.toFixed(1)}`)));
    }
  }
  return [svg("text", {class: "scale", x: LEFT - 6, y: 12}, "0 dB"), svg("text", {class: "scale", x: LEFT - 6, y: height - 2}, `${DB_FLOOR}`),
    ...levels, ...moments, ...peaks];
}

function alertsLane(height, x) {
  const seen = new Map();
  for (const s of view.summaries) for (const a of s.alerts) seen.set(a.id, a);
  const middle = height / 2, r = 7;
  return [...seen.values()].sort((a, b) => a.window_start - b.window_start).map(a => {
    const cx = x(a.window_start), severity = view.severities.get(a.id) || "unknown";
    return svg("a", {class: "alert-link", href: `/alerts/${encodeURIComponent(a.id)}`, "data-id": a.id},
      svg("path", {class: `alert-mark sev-${severity}`, id: `mark-${a.id}`,
        d: `M${cx} ${middle - r} L${cx + r} ${middle} L${cx} ${middle + r} L${cx - r} ${middle} Z`}),
      svg("title", {}, `${a.event} ${a.score.toFixed(2)} at ${clock(a.window_start, true)} (${severity}): open the alert`));
  });
}

function axis(width, x, y, lanesBottom) {
  const span = view.to - view.from;
  const step = TICK_STEPS.find(ms => ms / span * (width - LEFT - RIGHT) >= 90) || TICK_STEPS[TICK_STEPS.length - 1];
  const offset = -new Date(view.from).getTimezoneOffset() * 60_000;  // ticks on the local clock's round times
  const parts = [];
  for (let t = Math.ceil((view.from + offset) / step) * step - offset; t <= view.to; t += step) {
    parts.push(svg("line", {class: "grid", x1: x(t), x2: x(t), y1: TOP, y2: lanesBottom}));
    parts.push(svg("text", {class: "tick-label", x: x(t), y: y + 16}, clock(t)));
  }
  return svg("g", {class: "axis"}, svg("line", {class: "axis-line", x1: LEFT, x2: width - RIGHT, y1: y, y2: y}), ...parts);
}

function draw() {
  const box = document.getElementById("timeline");
  const width = Math.max(box.clientWidth, 480);
  const x = scaleX(width);
  const colours = classesOf(view.summaries).map((label, i) => [label, PALETTE[i % PALETTE.length]]);
  const backgrounds = [], lanes = [];
  let y = TOP;
  for (const [name, height] of LANES) {
    const marks = {objects: () => objectsLane(height, x, colours), speech: () => speechLane(height, x),
      loudness: () => loudnessLane(height, x), alerts: () => alertsLane(height, x)}[name]();
    backgrounds.push(svg("rect", {class: "lane-bg", x: LEFT, y, width: width - LEFT - RIGHT, height}),
      svg("text", {class: "lane-label", x: 8, y: y + height / 2 + 4}, name));
    lanes.push(svg("g", {class: `lane lane-${name}`, transform: `translate(0 ${y})`}, ...marks));
    y += height + GAP;
  }
  const lanesBottom = y - GAP, total = lanesBottom + AXIS + 4;
  // One area per period under the marks: a click between marks still opens that period.
  const periods = view.summaries.map(s => {
    const {x: left, width: w} = periodBox(s, x);
    return svg("rect", {class: `period${s.period_start === view.selected ? " selected" : ""}`, x: left, y: TOP,
      width: w, height: lanesBottom - TOP, "data-start": s.period_start});
  });
  const chart = svg("svg", {id: "timeline-svg", width, height: total, viewBox: `0 0 ${width} ${total}`},
    svg("g", {class: "backgrounds"}, ...backgrounds), axis(width, x, lanesBottom + 2, lanesBottom),
    svg("g", {class: "periods"}, ...periods), ...lanes);
  chart.addEventListener("click", onChartClick);
  box.replaceChildren(chart);
  view.width = width;
  document.getElementById("legend").replaceChildren(...colours.map(([label, colour]) => el("span", {class: "legend-item"},
    svg("svg", {width: 10, height: 10, viewBox: "0 0 10 10"}, svg("rect", {width: 10, height: 10, fill: colour})), label)));
}

// ------------------------------------------------------------------ the moment

function timeAt(event, chart) {
  const r = chart.getBoundingClientRect();
  const px = (event.clientX - r.left) * (view.width / r.width);
  return view.from + (px - LEFT) / (view.width - LEFT - RIGHT) * (view.to - view.from);
}

function periodAt(t) {
  let best = null, distance = Infinity;
  for (const s of view.summaries) {
    const d = t < s.period_start ? s.period_start - t : t >= s.period_end ? t - s.period_end + 1 : 0;
    if (d < distance) { best = s; distance = d; }
  }
  return distance <= view.periodMs / 2 ? best : null;
}

function onChartClick(event) {
  if (event.target.closest("a")) return;  // an alert marker: its link opens the alert's page
  const t = timeAt(event, event.currentTarget);
  if (t < view.from || t > view.to) return;
  const mark = event.target.closest("[data-from]");
  const summary = periodAt(mark ? Number(mark.dataset.from) : t);
  if (!summary) return;
  const span = mark ? [Number(mark.dataset.from) - CLIP_PAD_MS, Number(mark.dataset.to) + CLIP_PAD_MS] : [t - CLIP_BEFORE_MS, t + CLIP_AFTER_MS];
  openMoment(summary, mark ? Number(mark.dataset.from) : Math.round(t), span);
}

function clipSpan([from, to]) {
  const now = Date.now();
  let end = Math.round(Math.min(to, from + CLIP_MAX_MS, now));
  let start = Math.round(from);
  if (end - start < 1_000) start = end - CLIP_BEFORE_MS - CLIP_AFTER_MS;
  return [start, end];
}

function objectsList(summary) {
  const entries = Object.entries(summary.objects).sort((a, b) => b[1].max_count - a[1].max_count);
  if (!entries.length) return el("p", {class: "muted"}, "nothing detected");
  return el("ul", {id: "moment-objects"}, ...entries.map(([label, o]) =>
    el("li", {}, `${label}: max ${o.max_count}, mean ${o.mean_count.toFixed(2)}, ${o.new_tracks} new tracks`)));
}

function zonesList(summary) {
  const entries = Object.entries(summary.zones);
  if (!entries.length) return "";
  return el("ul", {id: "moment-zones"}, ...entries.map(([name, z]) =>
    el("li", {}, `zone ${name}: ${z.entries} entries, up to ${z.max_occupancy} at once, longest stay ${z.dwell_s.toFixed(0)} s`)));
}

function saidList(summary) {
  if (!summary.speech.length) return el("p", {class: "muted"}, "nothing said");
  return el("ul", {id: "moment-said", class: "said-lines"}, ...summary.speech.map(line => el("li", {},
    el("span", {class: "said-time"}, `${clock(line.start_ms, true)}–${clock(line.end_ms, true)}`),
    el("span", {class: "said"}, line.text))));
}

function heard(summary) {
  const level = summary.loudness;
  if (!level) return el("p", {class: "muted"}, "no audio");
  return el("div", {id: "moment-heard"},
    el("p", {}, `mean ${level.mean_dbfs.toFixed(1)} dBFS, peak ${level.peak_dbfs.toFixed(1)} dBFS`),
    level.loud_moments.length ? el("ul", {}, ...level.loud_moments.map(m => el("li", {},
      `loud ${clock(m.start_ms, true)}–${clock(m.end_ms, true)}: ${m.loudness_dbfs.toFixed(1)} dBFS (peak ${m.peak_dbfs.toFixed(1)})`))) : "");
}

function alertsList(summary) {
  if (!summary.alerts.length) return el("p", {class: "muted"}, "no alerts");
  return el("ul", {id: "moment-alerts"}, ...summary.alerts.map(a => el("li", {},
    el("a", {href: `/alerts/${encodeURIComponent(a.id)}`}, `${a.event} ${a.score.toFixed(2)}`), ` at ${clock(a.window_start, true)}`)));
}

function openMoment(summary, t, span) {
  view.selected = summary.period_start;
  for (const rect of document.querySelectorAll("#timeline-svg .period")) {
    rect.classList.toggle("selected", Number(rect.dataset.start) === summary.period_start);
  }
  const seq = ++momentSeq;
  const [from, to] = clipSpan(span);
  const picture = el("div", {id: "moment-picture"}, el("p", {class: "muted"}, "looking for a snapshot…"));
  const clipBox = el("div", {id: "moment-clip-box"});
  const button = el("button", {id: "clip-moment", class: "clip-button"}, `clip of this moment (${clock(from, true)} – ${clock(to, true)})`);
  button.addEventListener("click", () => cutClip(seq, from, to, button, clipBox));
  const close = el("button", {id: "moment-close", class: "close"}, "close");
  const section = document.getElementById("moment");
  close.addEventListener("click", () => { section.hidden = true; momentSeq++; });
  const minutes = summary.period_s >= 3600 ? `${summary.period_s / 3600} h` : `${summary.period_s / 60} min`;
  section.replaceChildren(
    el("div", {class: "moment-head"},
      el("h2", {id: "moment-title"}, `${stream} at ${clock(t, true)}`),
      el("span", {class: "muted"}, `period ${clock(summary.period_start)} – ${clock(summary.period_end)} (${minutes}${summary.complete ? "" : ", incomplete"})`),
      close),
    el("div", {class: "moment-grid"},
      el("div", {}, picture, button, clipBox),
      el("div", {},
        el("h3", {}, "Seen"), objectsList(summary), zonesList(summary),
        el("h3", {}, "Said"), saidList(summary),
        summary.keywords.length ? el("p", {class: "muted"}, `keywords: ${summary.keywords.join(", ")}`) : "",
        el("h3", {}, "Heard"), heard(summary),
        el("h3", {}, "Alerts"), alertsList(summary))));
  section.hidden = false;
  showSnapshot(seq, summary, t, picture);
}

async function showSnapshot(seq, summary, t, picture) {
  const query = new URLSearchParams({stream, site: summary.site, near_ms: String(t),
    from_ms: String(summary.period_start), to_ms: String(summary.period_end - 1)});
  const response = await fetch(`/api/snapshots?${query}`);
  if (seq !== momentSeq) return;
  if (!response.ok) {
    picture.replaceChildren(el("p", {id: "no-snapshot", class: "muted"},
      response.status === 404 ? "no snapshot in this period (only windows with detections have one)" : `snapshot: error ${response.status}`));
    return;
  }
  const shot = await response.json();
  picture.replaceChildren(el("figure", {class: "snapshot"},
    el("img", {id: "moment-snapshot", src: shot.url, alt: `snapshot of ${stream} at ${clock(shot.window_start, true)}`}),
    el("figcaption", {class: "muted"}, `the nearest window with detections: ${clock(shot.window_start, true)}`)));
}

async function cutClip(seq, from, to, button, clipBox) {
  button.disabled = true;
  clipBox.replaceChildren(el("p", {class: "muted"}, "cutting the clip from fw.media…"));
  let response;
  try {
    response = await fetch("/api/clips", {method: "POST", headers: {"Content-Type": "application/json"},
      body: JSON.stringify({stream, from_ms: from, to_ms: to})});
  } catch (error) {
    response = null;
  }
  if (seq !== momentSeq) return;
  const data = response ? await response.json().catch(() => ({})) : {};
  if (!response || !response.ok) {
    button.disabled = false;
    clipBox.replaceChildren(el("p", {id: "clip-error", class: "error"}, data.error || `the clip could not be cut (${response ? response.status : "no answer"})`));
    return;
  }
  const c = data.clip;
  clipBox.replaceChildren(el("figure", {class: "clip"},
    el("video", {id: "moment-clip", class: "clip-video", src: c.url, controls: "", preload: "metadata"}),
    el("figcaption", {class: "muted"},
      `${clock(c.start_ms, true)} – ${clock(c.end_ms, true)} · ${((c.end_ms - c.start_ms) / 1000).toFixed(1)} s`
        + `${c.complete ? "" : " · ends early (the stream stopped)"}${c.starts_late ? " · starts late" : ""}${data.reused ? " · cut before" : ""}`,
      " · ", el("a", {href: c.url, download: `${c.id}.mp4`}, "download"))));
}

// ------------------------------------------------------------------ page

document.title = `fusewatch — ${stream}`;
document.getElementById("title").textContent = stream;
const rangeSelect = document.getElementById("range");
rangeSelect.value = rangeName();
rangeSelect.addEventListener("change", () => {
  const url = new URL(location.href);
  url.searchParams.set("range", rangeSelect.value);
  history.replaceState(null, "", url);
  document.getElementById("moment").hidden = true;
  view.selected = null;
  load();
});
let resizing = null;
window.addEventListener("resize", () => { clearTimeout(resizing); resizing = setTimeout(draw, 150); });
load();
