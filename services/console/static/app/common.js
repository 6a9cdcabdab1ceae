// Shared helpers of the console pages (plain JS, no build step).
"use strict";
const mn = {
  el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") node.className = v; else node.setAttribute(k, v);
    }
    for (const c of children) node.append(c === null || c === undefined ? "" : c);
    return node;
  },
  time(t) { return t ? new Date(t * 1000).toLocaleTimeString() : "-"; },
  num(v, digits) { return v === null || v === undefined ? "-" : Number(v).toFixed(digits); },
  bps(v) {
    if (v === null || v === undefined) return "-";
    const units = ["bit/s", "kbit/s", "Mbit/s", "Gbit/s"];
    let i = 0;
    while (v >= 1000 && i < units.length - 1) { v /= 1000; i++; }
    return v.toFixed(1) + " " + units[i];
  },
  // One EventSource per page; `handlers` maps event names to functions of the parsed data.
  stream(url, handlers) {
    const live = document.getElementById("live");
    const source = new EventSource(url);
    source.onopen = () => { live.textContent = "live"; live.className = "live on"; };
    source.onerror = () => { live.textContent = "reconnecting"; live.className = "live off"; };
    source.addEventListener("logout", () => { source.close(); window.location = "/login"; });
    for (const [name, fn] of Object.entries(handlers)) {
      source.addEventListener(name, (e) => fn(JSON.parse(e.data)));
    }
    return source;
  },
};
