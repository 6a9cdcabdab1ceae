// One mobile router's page: links with sparklines (uPlot), the per-link packet-rate chart with
// event markers (the paper's Figure 7), bindings, classes, decisions.
"use strict";
(() => {
  const heading = document.getElementById("router");
  const history = new Map();   // interface -> {t, rtt_ms, loss, rx_bps, tx_bps, rx_pps, tx_pps}
  const charts = new Map();    // interface -> uPlot
  const KEEP_S = 300;
  const COLORS = ["#1f5fbf", "#2a7d3a", "#b35c00", "#7b3fb5", "#00838f", "#6d4c41"];
  const MARK = { decision: "#1d2330", handover: "#7b3fb5", fallback: "#b3261e", link: "#b35c00" };
  let rate = null;             // {key, plot}: the packet-rate chart
  let markers = [];            // [{at, kind, label}], oldest first
  // What the chart holds, for people and tests alike: its series' labels, aligned data, markers.
  window.mnRate = { labels: [], data: [], markers: [] };

  function merge(iface, h, incremental) {
    let cur = history.get(iface);
    if (!cur || !incremental) cur = { t: [], rtt_ms: [], loss: [], rx_bps: [], tx_bps: [], rx_pps: [], tx_pps: [] };
    // A column the console does not send (an older one) is as long as the times, all null.
    for (const k of Object.keys(cur)) cur[k] = cur[k].concat(h[k] || h.t.map(() => null));
    const last = cur.t.length ? cur.t[cur.t.length - 1] : 0;
    let drop = 0;
    while (drop < cur.t.length && cur.t[drop] < last - KEEP_S) drop++;
    if (drop) for (const k of Object.keys(cur)) cur[k] = cur[k].slice(drop);
    history.set(iface, cur);
    return cur;
  }

  function chart(container, iface, data) {
    if (typeof uPlot === "undefined") return;  // uPlot not installed: numbers only
    const series = [data.t, data.rtt_ms, data.rx_bps.map((v) => v === null ? null : v / 1e6)];
    let plot = charts.get(iface);
    if (plot && plot.root.isConnected) { plot.setData(series); return; }
    plot = new uPlot({
      width: 320, height: 90, legend: { show: false }, cursor: { show: false },
      scales: { x: { time: true } },
      axes: [{ show: false }, { size: 40 }, { side: 1, size: 40, scale: "mbps" }],
      series: [{}, { label: "RTT ms", stroke: "#1f5fbf" }, { label: "rx Mbit/s", stroke: "#2a7d3a", scale: "mbps" }],
    }, series, container);
    charts.set(iface, plot);
  }

  function links(view) {
    const box = document.getElementById("links");
    const seen = new Set();
    for (const link of view.links) {
      seen.add(link.interface);
      const data = merge(link.interface, link.history, view.incremental);
      let card = box.querySelector(`[data-interface="${CSS.escape(link.interface)}"]`);
      if (!card) {
        card = mn.el("div", { class: "link", "data-interface": link.interface },
          mn.el("h3", {}), mn.el("div", { class: "state" }), mn.el("div", { class: "numbers" }), mn.el("div", { class: "spark" }));
        box.append(card);
      }
      const up = link.up === null ? "unknown" : link.up ? "up" : "down";
      card.className = "link" + (link.up === false ? " down" : "");
      card.querySelector("h3").textContent = `${link.interface} (BID ${link.bid}, ${link.technology || "?"})`;
      const state = card.querySelector(".state");
      state.className = "state " + (link.up === false ? "bad" : link.up ? "good" : "muted");
      state.textContent = up + (link.reason ? " - " + link.reason : "") + (link.addresses.length ? " " + link.addresses.join(" ") : "");
      const l = link.latest;
      card.querySelector(".numbers").textContent =
        `RTT ${mn.num(l.rtt_ms, 1)} ms, jitter ${mn.num(l.jitter_ms, 1)} ms, loss ${mn.num(l.loss === null || l.loss === undefined ? null : l.loss * 100, 1)} %, ` +
        `rx ${mn.bps(l.rx_bps)}, tx ${mn.bps(l.tx_bps)}`;
      chart(card.querySelector(".spark"), link.interface, data);
    }
    for (const card of [...box.children]) if (!seen.has(card.dataset.interface)) card.remove();
  }

  function drawMarkers(u) {
    const ctx = u.ctx, r = window.devicePixelRatio || 1;
    const min = u.scales.x.min, max = u.scales.x.max;
    const ends = [];  // per label row, where its last label ends (pixels): labels never overlap
    ctx.save();
    ctx.font = `${11 * r}px system-ui, sans-serif`;
    ctx.lineWidth = r;
    ctx.setLineDash([4 * r, 3 * r]);
    for (const m of markers) {
      if (m.at < min || m.at > max) continue;
      const x = Math.round(u.valToPos(m.at, "x", true));
      ctx.strokeStyle = ctx.fillStyle = MARK[m.kind] || "#555";
      ctx.beginPath();
      ctx.moveTo(x, u.bbox.top);
      ctx.lineTo(x, u.bbox.top + u.bbox.height);
      ctx.stroke();
      const width = ctx.measureText(m.label).width;
      const right = x + width + 6 * r > u.bbox.left + u.bbox.width;  // label left of a late line
      const from = right ? x - width - 3 * r : x + 3 * r;
      let row = ends.findIndex((end) => end < from);
      if (row < 0 && ends.length < 6) row = ends.push(0) - 1;
      if (row < 0) continue;  // crowded: the line only (the list below names it)
      ends[row] = from + width + 4 * r;
      ctx.textAlign = "left";
      ctx.fillText(m.label, from, u.bbox.top + (12 + 13 * row) * r);
    }
    ctx.restore();
  }

  function markerList() {
    const recent = markers.slice(-12).reverse();
    document.getElementById("rate-markers").replaceChildren(...recent.map((m) =>
      mn.el("li", { class: "marker-" + m.kind, "data-kind": m.kind, "data-at": String(m.at) },
        `${mn.time(m.at)} ${m.kind}: ${m.label}`)));
  }

  // Packets per second of every link, received (down, solid) and sent (up, dashed), over the
  // last few minutes, with a vertical line per decision, handover, fallback and link change.
  function rateChart(view) {
    markers = view.markers || [];
    markerList();
    const ifaces = [...history.keys()].sort();
    const tables = ifaces.map((i) => { const h = history.get(i); return [h.t, h.rx_pps, h.tx_pps]; });
    const labels = ifaces.flatMap((i) => [i + " down (rx)", i + " up (tx)"]);
    const joined = typeof uPlot !== "undefined" && tables.length > 1;
    const data = joined ? uPlot.join(tables) : tables[0] || [[]];
    window.mnRate = { labels, data, markers };
    if (typeof uPlot === "undefined" || !tables.length) return;  // uPlot not installed: the list only
    const box = document.getElementById("rates");
    const key = labels.join("|");
    if (rate && rate.key === key && rate.plot.root.isConnected) { rate.plot.setData(data); return; }
    if (rate) rate.plot.destroy();
    box.replaceChildren();
    const value = (u, v) => v === null || v === undefined ? "-" : v.toFixed(0) + " pkt/s";
    const series = [{}].concat(ifaces.flatMap((i, k) => [
      { label: i + " down (rx)", stroke: COLORS[k % COLORS.length], width: 2, spanGaps: true, value },
      { label: i + " up (tx)", stroke: COLORS[k % COLORS.length], width: 1.5, dash: [6, 4], spanGaps: true, value },
    ]));
    const plot = new uPlot({
      width: Math.max(480, Math.min(box.clientWidth || 900, 1200)), height: 260,
      // The time axis reaches the newest marker too: a decision after the last sample shows.
      scales: { x: { time: true, range: (u, min, max) => [min, Math.max(max, ...markers.map((m) => m.at).filter((t) => t >= min))] } },
      axes: [{}, { label: "packets/s", size: 60 }],
      series, hooks: { draw: [drawMarkers] },
    }, data, box);
    rate = { key, plot };
  }

  function table(id, rows) { document.getElementById(id).replaceChildren(...rows); }

  function render(view) {
    document.getElementById("summary").textContent =
      `HA ${view.ha || "unknown"}; services: ` +
      Object.entries(view.services).map(([s, v]) => s + (v.online ? " online" : " OFFLINE")).join(", ") +
      (Object.keys(view.ha_services).length ? "; HA: " + Object.entries(view.ha_services).map(([s, v]) => s + (v.online ? " online" : " OFFLINE")).join(", ") : "");
    document.getElementById("router-alerts").replaceChildren(...view.alerts.map((a) =>
      mn.el("p", { class: "bad alert" }, `${a.kind}: ${a.node} ${a.subject} - ${a.detail} (${mn.time(a.at)})`)));
    links(view);
    rateChart(view);
    table("bindings", view.bindings.map((b) => mn.el("tr", { class: b.active ? "" : "muted" },
      mn.el("td", {}, String(b.bid)), mn.el("td", {}, b.event), mn.el("td", {}, b.care_of_address || "-"),
      mn.el("td", { class: b.pipe ? "" : "muted" }, b.pipe || "unknown"),
      mn.el("td", {}, b.lifetime_s === null ? "-" : b.lifetime_s + " s"), mn.el("td", {}, b.status || "-"),
      mn.el("td", {}, mn.time(b.at)))));
    const bids = (v) => v === null ? "unknown" : v.length ? v.join(", ") : "default path";
    table("classes", view.classes.map((c) => mn.el("tr",
      { class: (c.mismatch ? "mismatch" : "") + (c.override ? " override" : ""), "data-class": c.class },
      mn.el("td", {}, c.class), mn.el("td", {}, bids(c.chosen)),
      mn.el("td", {}, bids(c.ha)), mn.el("td", {}, bids(c.mr)),
      mn.el("td", { class: "override-cell" }, c.override || "-"))));
    document.getElementById("decisions").replaceChildren(...view.decisions.map((d) =>
      mn.el("details", {}, mn.el("summary", {}, `${mn.time(d.at)} ${d.trigger}, ${d.moves} moved (${d.sender})`),
        mn.el("pre", { class: "decision" }, d.text))));
    table("audits", (view.audits || []).map((a) => mn.el("tr",
      { class: a.outcome === "refused" ? "bad" : "", "data-outcome": a.outcome },
      mn.el("td", {}, mn.time(a.at)), mn.el("td", {}, a.user), mn.el("td", {}, a.action),
      mn.el("td", {}, a.class), mn.el("td", {}, a.bid === null ? "-" : String(a.bid)),
      mn.el("td", {}, a.until === null ? "-" : mn.time(a.until)), mn.el("td", {}, a.outcome),
      mn.el("td", {}, [a.detail, a.reason].filter((x) => x).join("; ") || "-"))));
  }

  mn.stream(heading.dataset.events, { router: render });
})();
