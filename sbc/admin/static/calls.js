// Recent calls (/api/calls) with filters, and the SIP ladder of a chosen call
// (/api/calls/{id}/trace): gateway ↔ sbc ↔ VOS3000, one arrow per message in
// order, its first line on the arrow, the whole message on click.
(function () {
  "use strict";

  const POLL_MS = 2000;
  const TOKEN_KEY = "sbc.admin.token";
  const SVGNS = "http://www.w3.org/2000/svg";
  const COLS = { gateway: 110, sbc: 450, vos3000: 790 };
  const ROW = 34;
  const $ = (id) => document.getElementById(id);
  let chosen = null;

  function headers() {
    const token = sessionStorage.getItem(TOKEN_KEY) || "";
    return token ? { Authorization: "Bearer " + token } : {};
  }

  function cell(text, cls) {
    const td = document.createElement("td");
    td.textContent = text == null ? "" : String(text);
    if (cls) td.className = cls;
    return td;
  }

  function when(us) {
    return us ? new Date(us / 1000).toISOString().replace("T", " ").slice(0, 23) : "";
  }

  function query() {
    const q = new URLSearchParams({ limit: "200" });
    for (const [key, id] of [["gateway", "calls-gateway"], ["status", "calls-status"],
                             ["number", "calls-number"]]) {
      const v = $(id).value.trim();
      if (v) q.set(key, v);
    }
    return q.toString();
  }

  function row(c) {
    const tr = document.createElement("tr");
    tr.dataset.callId = c.call_id;
    tr.className = "call" + (c.call_id === chosen ? " chosen" : "");
    const status = c.status == null ? "…" : c.status + " " + c.status_text;
    for (const t of [when(c.start_us), c.gateway, c.from, c.to, status, c.ended_by,
                     c.duration_s == null ? "" : c.duration_s + " s", c.refusal || c.end_reason]) {
      tr.appendChild(cell(t));
    }
    tr.appendChild(cell(c.messages, "num"));
    tr.addEventListener("click", () => choose(c.call_id));
    return tr;
  }

  async function poll() {
    if (document.body.dataset.state !== "live") return;
    let r;
    try {
      r = await fetch("/api/calls?" + query(), { headers: headers() });
    } catch (e) {
      return;
    }
    const body = $("calls-table").querySelector("tbody");
    if (!r.ok) return;
    const data = await r.json();
    const t = data.trace || {};
    $("calls-message").textContent = t.enabled === false
      ? "Tracing is off (trace.enabled in the config)." : "";
    $("calls-count").textContent = (t.calls || 0) + " calls, " +
      Math.round((t.bytes || 0) / 1024) + " of " + Math.round((t.max_bytes || 0) / 1024) + " KiB";
    body.replaceChildren(...data.calls.map(row));
    if (!data.calls.length) {
      const tr = document.createElement("tr");
      const td = cell("no call matches", "empty");
      td.colSpan = 9;
      tr.appendChild(td);
      body.appendChild(tr);
    }
  }

  function ends(m) {
    const far = m.leg === "public" ? "gateway" : "vos3000";
    return m.direction === "in" ? [far, "sbc"] : ["sbc", far];
  }

  function svg(name, attrs, text) {
    const n = document.createElementNS(SVGNS, name);
    for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, String(v));
    if (text != null) n.textContent = text;
    return n;
  }

  function draw(trace) {
    const ladder = $("ladder");
    ladder.replaceChildren();
    const msgs = trace.messages;
    const height = 60 + ROW * msgs.length + 20;
    const root = svg("svg", { width: 900, height: height, viewBox: "0 0 900 " + height });
    const first = (side) => {
      const m = msgs.find((x) => ends(x).includes(side));
      if (!m) return "";
      return m.direction === "in" ? (ends(m)[0] === side ? m.src : m.dst)
                                  : (ends(m)[0] === side ? m.src : m.dst);
    };
    for (const [name, x] of Object.entries(COLS)) {
      const label = { gateway: "gateway", sbc: "sbc", vos3000: "VOS3000" }[name];
      root.appendChild(svg("text", { x: x, y: 18, class: "lane-name", "text-anchor": "middle" },
                           label));
      root.appendChild(svg("text", { x: x, y: 34, class: "lane-addr", "text-anchor": "middle" },
                           first(name)));
      root.appendChild(svg("line", { x1: x, y1: 42, x2: x, y2: height - 10, class: "lane",
                                     "data-column": name }));
    }
    const t0 = msgs.length ? msgs[0].ts_us : 0;
    msgs.forEach((m, i) => {
      const [from, to] = ends(m);
      const y = 60 + ROW * i;
      const x1 = COLS[from], x2 = COLS[to];
      const g = svg("g", { class: "arrow" + (m.note ? " refused" : ""), "data-index": i,
                           "data-from": from, "data-to": to, tabindex: 0 });
      g.appendChild(svg("line", { x1: x1, y1: y, x2: x2, y2: y }));
      const head = x2 > x1 ? -8 : 8;
      g.appendChild(svg("polygon", { points: `${x2},${y} ${x2 + head},${y - 4} ${x2 + head},${y + 4}` }));
      g.appendChild(svg("text", { x: (x1 + x2) / 2, y: y - 5, "text-anchor": "middle",
                                  class: "first-line" }, m.first_line));
      const side = from === "gateway" || to === "gateway" ? 6 : 894;
      g.appendChild(svg("text", { x: side, y: y + 4, class: "when",
                                  "text-anchor": side < 100 ? "start" : "end" },
                        "+" + ((m.ts_us - t0) / 1000).toFixed(1) + " ms"));
      g.appendChild(svg("title", {}, m.transport + " " + m.src + " → " + m.dst +
                        (m.note ? " (" + m.note + ")" : "")));
      g.addEventListener("click", () => show(m, i));
      root.appendChild(g);
    });
    ladder.appendChild(root);
    ladder.dataset.arrows = String(msgs.length);
  }

  function show(m, i) {
    for (const g of document.querySelectorAll("#ladder g.arrow.shown")) g.classList.remove("shown");
    const g = document.querySelector(`#ladder g.arrow[data-index="${i}"]`);
    if (g) g.classList.add("shown");
    $("ladder-message").textContent = when(m.ts_us) + "  " + m.transport + "  " + m.src +
      " → " + m.dst + (m.note ? "  (" + m.note + ")" : "") + "\n\n" + m.text;
    $("ladder-message").dataset.index = String(i);
  }

  async function choose(callId) {
    chosen = callId;
    const r = await fetch("/api/calls/" + encodeURIComponent(callId) + "/trace",
                          { headers: headers() });
    if (!r.ok) {
      $("calls-message").textContent = "no trace for " + callId;
      return;
    }
    const trace = await r.json();
    $("ladder-title").textContent = callId + "  " + trace.call.from + " → " + trace.call.to;
    const pcap = $("ladder-pcap");
    pcap.dataset.callId = callId;
    pcap.hidden = false;
    $("ladder-message").textContent = "";
    draw(trace);
    for (const tr of document.querySelectorAll("#calls-table tr.call")) {
      tr.classList.toggle("chosen", tr.dataset.callId === callId);
    }
  }

  async function download() {
    const callId = $("ladder-pcap").dataset.callId;
    const r = await fetch("/api/calls/" + encodeURIComponent(callId) + "/pcap",
                          { headers: headers() });
    if (!r.ok) return;
    const url = URL.createObjectURL(await r.blob());
    const a = document.createElement("a");
    a.href = url;
    a.download = callId.replace(/[^A-Za-z0-9_.@-]+/g, "_") + ".pcap";
    a.click();
    setTimeout(() => URL.revokeObjectURL(url), 1000);
  }

  // Loaded at the end of the body: the elements are there.
  $("calls-filter").addEventListener("submit", (e) => { e.preventDefault(); poll(); });
  $("ladder-pcap").addEventListener("click", download);
  setInterval(poll, POLL_MS);
  poll();
})();
