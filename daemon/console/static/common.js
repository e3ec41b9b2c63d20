// Shared by the fusewatch pages: DOM and SVG building without innerHTML (alert text and
// transcripts are untrusted), times, and the operator name kept in the browser and sent with
// acknowledgements.
"use strict";

function text(value) { return value === null || value === undefined ? "" : String(value); }
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  for (const child of children) node.append(child instanceof Node ? child : document.createTextNode(text(child)));
  return node;
}
function svg(tag, attrs, ...children) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  for (const child of children) node.append(child instanceof Node ? child : document.createTextNode(text(child)));
  return node;
}
function time(ms) { return new Date(ms).toLocaleString(); }

const operator = document.getElementById("operator");
operator.value = localStorage.getItem("fusewatch.operator") || "operator";
operator.addEventListener("change", () => localStorage.setItem("fusewatch.operator", operator.value));

async function acknowledge(alertId) {
  return fetch(`/api/alerts/${encodeURIComponent(alertId)}/ack`, {
    method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify({by: operator.value || "operator"}),
  });
}
