// The fleet page: one row per mobile router, updated from /events/fleet (changed rows only).
"use strict";
(() => {
  const rows = new Map();       // mr -> row data
  const elements = new Map();   // mr -> <tr>
  const body = document.getElementById("rows");
  const search = document.getElementById("search");
  const alerts = document.getElementById("alerts");

  function matches(row, q) {
    if (!q) return true;
    const text = [row.mr, row.ha || "", ...row.alert_kinds, ...Object.keys(row.services)].join(" ");
    return text.toLowerCase().includes(q);
  }

  function render(row) {
    const services = Object.entries(row.services).map(([s, on]) =>
      mn.el("span", { class: on ? "good" : "bad" }, s + (on ? " " : " (offline) ")));
    const ha = mn.el("td", {}, row.ha || "-");
    if (row.ha_offline.length) ha.append(mn.el("span", { class: "bad" }, " (" + row.ha_offline.join(", ") + " offline)"));
    const tr = mn.el("tr", { "data-mr": row.mr, class: row.alerts ? "alerting" : "" },
      mn.el("td", {}, mn.el("a", { href: "/mr/" + encodeURIComponent(row.mr) }, row.mr)),
      ha,
      mn.el("td", {}, ...services),
      mn.el("td", { class: row.links_up < row.links ? "bad" : "" }, row.links_up + " / " + row.links),
      mn.el("td", {}, String(row.bindings)),
      mn.el("td", { class: row.mismatches ? "mismatch" : "" }, String(row.mismatches)),
      mn.el("td", { class: row.alerts ? "bad alerts-cell" : "alerts-cell" },
        row.alerts ? row.alerts + " " + row.alert_kinds.join(", ") : "0"));
    tr.hidden = !matches(row, search.value.trim().toLowerCase());
    return tr;
  }

  function upsert(row) {
    rows.set(row.mr, row);
    const tr = render(row);
    const old = elements.get(row.mr);
    if (old) { old.replaceWith(tr); }
    else {
      // keep the table sorted by name
      let before = null;
      for (const [mr, el] of elements) { if (mr > row.mr && (!before || mr < before[0])) before = [mr, el]; }
      body.insertBefore(tr, before ? before[1] : null);
    }
    elements.set(row.mr, tr);
  }

  function totals(t) {
    const el = document.getElementById("totals");
    el.replaceChildren(
      mn.el("span", {}, "Mobile routers: " + t.routers),
      mn.el("span", { class: t.with_alerts ? "bad" : "" }, "with alerts: " + t.with_alerts),
      mn.el("span", {}, "links up: " + t.links_up + " / " + t.links),
      mn.el("span", { class: t.mismatches ? "bad" : "" }, "class mismatches: " + t.mismatches));
  }

  function nodes(list) {
    const tbody = document.getElementById("nodes");
    tbody.replaceChildren(...list.map((n) => mn.el("tr", {},
      mn.el("td", {}, n.node),
      mn.el("td", {}, ...Object.entries(n.services).map(([s, on]) =>
        mn.el("span", { class: on ? "good" : "bad" }, s + (on ? " " : " (offline) ")))),
      mn.el("td", {}, String(n.routers)),
      mn.el("td", { class: n.alerts.length ? "bad" : "" }, n.alerts.map((a) => a.kind + " " + a.subject).join(", ")))));
  }

  function alertLog(list) {
    for (const a of list) {
      alerts.prepend(mn.el("li", { class: a.event },
        mn.time(a.at) + " " + a.event + ": " + a.kind + " " + a.node + " " + a.subject + " " + a.detail));
    }
    while (alerts.children.length > 100) alerts.lastChild.remove();
  }

  search.addEventListener("input", () => {
    const q = search.value.trim().toLowerCase();
    for (const [mr, tr] of elements) tr.hidden = !matches(rows.get(mr), q);
  });

  mn.stream("/events/fleet", {
    fleet(event) {
      if (event.full) { rows.clear(); elements.clear(); body.replaceChildren(); alerts.replaceChildren(); }
      for (const row of event.rows) upsert(row);
      totals(event.totals);
      if (event.nodes) nodes(event.nodes);
      alertLog(event.alerts);
      // The first fleet in the table: a mark for benchmarks and tests (bench/console.py),
      // set after the frame that draws it (the task after the next animation frame).
      if (!body.dataset.rendered) {
        body.dataset.rendered = String(event.rows.length);
        requestAnimationFrame(() => setTimeout(() => performance.mark("fleet-rendered"), 0));
      }
    },
  });
})();
