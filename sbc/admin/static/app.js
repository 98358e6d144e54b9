/* sbc admin dashboard: polls the admin API and draws what sbc is doing.
 *
 * Rates are deltas of the counters /api/stats and /api/gateways return,
 * divided by the time between two polls. Nothing here is built: plain
 * browser JavaScript over the vendored uPlot.
 *
 * The names are sbc's own (sbc/core/reasons.py): drops by reason, each with
 * its stage; messages absorbed by design (a retransmission, VOS3000's 100
 * Trying, the answers to sbc's pings) are no drops and are shown apart; parse
 * errors break down the messages that could not be read, dropped or refused.
 */
(function () {
  "use strict";

  const POLL_MS = 1000;
  const WINDOW = 180;          // points kept per chart (3 minutes at one a second)
  const CHART_HEIGHT = 170;
  const TOKEN_KEY = "sbc.admin.token";
  const TOP_ROWS = 10;
  const BAN_ROWS = 500;

  const VERDICT_COLORS = {forward: "#1e8449", reply: "#2364aa", drop: "#c0392b",
                          screened: "#d68910", absorbed: "#95a5a6"};
  const WARM = ["#c0392b", "#d68910", "#7d3c98", "#2364aa", "#17a589", "#a04000",
                "#2e4053", "#b03a2e", "#1f618d", "#7e5109", "#148f77", "#884ea0"];
  const COOL = ["#2364aa", "#17a589", "#7d3c98", "#d68910", "#2e4053", "#148f77",
                "#1f618d", "#884ea0", "#7e5109", "#a04000", "#b03a2e", "#c0392b"];
  const MIN_SPAN = 60;          // seconds of x axis shown at least

  const $ = (id) => document.getElementById(id);
  let token = sessionStorage.getItem(TOKEN_KEY) || "";
  let prev = null;              // the last sample, for deltas
  let timer = null;
  let paused = false;           // after a 401: wait for a new token, do not burn the budget
  let polling = false;
  let again = false;            // the token changed while a poll was out
  let lastCounters = {};

  // ---------------------------------------------------------------- helpers

  class ApiError extends Error {
    constructor(status, message, retryAfter) {
      super(message);
      this.status = status;
      this.retryAfter = retryAfter;
    }
  }

  async function api(path, options) {
    const opts = Object.assign({headers: {}}, options || {});
    if (token) opts.headers.Authorization = "Bearer " + token;
    let response;
    try {
      response = await fetch(path, opts);
    } catch (e) {
      throw new ApiError(0, "sbc does not answer");
    }
    let body = null;
    try { body = await response.json(); } catch (e) { body = null; }
    if (!response.ok) {
      const message = body && body.error ? body.error : "HTTP " + response.status;
      throw new ApiError(response.status, message,
                         Number(response.headers.get("Retry-After")) || 0);
    }
    return body;
  }

  function el(tag, text, cls) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (cls) node.className = cls;
    return node;
  }

  function fmtRate(v) {
    if (v === null || v === undefined || !isFinite(v)) return "–";
    if (v === 0) return "0";
    if (v < 10) return v.toFixed(1);
    return Math.round(v).toLocaleString("en");
  }

  function fmtInt(v) {
    return Number(v || 0).toLocaleString("en");
  }

  function fmtDuration(s) {
    s = Math.max(0, Math.round(s));
    if (s < 120) return s + " s";
    if (s < 7200) return Math.round(s / 60) + " min";
    if (s < 172800) return (s / 3600).toFixed(1) + " h";
    return (s / 86400).toFixed(1) + " d";
  }

  function clock(t) {
    return new Date(t * 1000).toLocaleTimeString("en-GB");
  }

  function sum(obj) {
    let total = 0;
    for (const k in obj) total += Number(obj[k]) || 0;
    return total;
  }

  function rate(now, before, dt) {
    const d = (Number(now) || 0) - (Number(before) || 0);
    return d > 0 && dt > 0 ? d / dt : 0;  // a counter that went back: sbc restarted
  }

  function setStatus(text, error) {
    const node = $("status");
    node.textContent = text;
    node.classList.toggle("error", !!error);
    document.body.dataset.state = error ? "error" : "live";
  }

  // ---------------------------------------------------------------- charts

  class LiveChart {
    constructor(node, palette, colors) {
      this.node = node;
      this.palette = palette;
      this.colors = colors || {};
      this.names = [];
      this.xs = [];
      this.ys = {};
      this.points = 0;
      this.plot = null;
      this.empty = el("div", "waiting for data…", "empty");
      node.appendChild(this.empty);
      if (window.ResizeObserver) {
        let width = 0;
        new ResizeObserver(() => {
          if (this.plot && node.clientWidth !== width) {
            width = node.clientWidth;
            this.plot.setSize({width: width, height: CHART_HEIGHT});
          }
        }).observe(node);
      }
    }

    color(name) {
      if (this.colors[name]) return this.colors[name];
      const used = Object.keys(this.colors).length;
      this.colors[name] = this.palette[used % this.palette.length];
      return this.colors[name];
    }

    push(t, values, order) {
      let added = false;
      const names = order ? order.filter((n) => n in values) : Object.keys(values);
      for (const name of Object.keys(values)) if (!names.includes(name)) names.push(name);
      for (const name of names) {
        if (!this.names.includes(name)) {
          this.names.push(name);
          this.ys[name] = this.xs.map(() => 0);
          added = true;
        }
      }
      this.xs.push(t);
      for (const name of this.names) this.ys[name].push(values[name] || 0);
      if (this.xs.length > WINDOW) {
        this.xs.shift();
        for (const name of this.names) this.ys[name].shift();
      }
      this.points += 1;
      this.node.dataset.points = String(this.points);
      const data = [this.xs.slice()].concat(this.names.map((n) => this.ys[n].slice()));
      if (added || !this.plot) this.build(data);
      else this.plot.setData(data);
      this.showLatest();
    }

    showLatest() {
      // The legend shows the latest figures unless the pointer is on the chart.
      const u = this.plot;
      if (u && !(u.cursor.left >= 0)) u.setLegend({idx: this.xs.length - 1});
    }

    build(data) {
      if (this.plot) this.plot.destroy();
      if (this.empty) { this.empty.remove(); this.empty = null; }
      const series = [{label: "at", value: (u, v) => (v === null || v === undefined ? "" : clock(v))}].concat(this.names.map((name) => ({
        label: name,
        stroke: this.color(name),
        width: 1.5,
        points: {show: false},
        value: (u, v) => fmtRate(v),
      })));
      const axis = {stroke: "#66707c", grid: {stroke: "#eef0f3", width: 1},
                    ticks: {stroke: "#dde1e6", width: 1}, font: "11px system-ui, sans-serif"};
      this.plot = new uPlot({
        width: Math.max(200, this.node.clientWidth),
        height: CHART_HEIGHT,
        series: series,
        scales: {x: {time: true, range: (u, min, max) => [Math.min(min, max - MIN_SPAN), max]},
                 y: {range: (u, min, max) => [0, max > 0 ? max * 1.15 : 1]}},
        axes: [Object.assign({}, axis, {space: 64,
                                        incrs: [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900],
                                        values: (u, ticks) => ticks.map(clock)}),
               Object.assign({}, axis, {size: 44, values: (u, ticks) => ticks.map(fmtRate)})],
        cursor: {drag: {x: false, y: false}},
        legend: {live: true},
        hooks: {setCursor: [() => this.showLatest()]},
      }, data, this.node);
    }
  }

  const charts = {
    verdict: new LiveChart($("chart-verdict"), WARM, Object.assign({}, VERDICT_COLORS)),
    drops: new LiveChart($("chart-drops"), WARM),
    cps: new LiveChart($("chart-cps"), COOL),
    concurrent: new LiveChart($("chart-concurrent"), COOL),
  };

  // ---------------------------------------------------------------- tables

  function fillTable(id, rows, columns, emptyText) {
    const body = $(id).tBodies[0];
    const fresh = document.createElement("tbody");
    for (const row of rows) fresh.appendChild(row);
    if (!rows.length) {
      const tr = el("tr");
      const td = el("td", emptyText, "none");
      td.colSpan = columns;
      tr.appendChild(td);
      fresh.appendChild(tr);
    }
    body.replaceWith(fresh);
  }

  function row(cells, attrs) {
    const tr = el("tr");
    for (const c of cells) tr.appendChild(c instanceof Node ? c : el("td", c));
    for (const k in attrs || {}) tr.dataset[k] = attrs[k];
    return tr;
  }

  function td(text, cls) { return el("td", text, cls); }

  // ---------------------------------------------------------------- one poll

  function stagesOf(stats) {
    // The stage of each engine drop, as the rule table gives it.
    const stages = {};
    for (const chain of stats.chains || []) {
      for (const r of chain.rules || []) if (r.stage) stages[r.rule] = r.stage;
    }
    return stages;
  }

  function countRows(id, counts, prevCounts, dt, emptyText) {
    const rows = Object.keys(counts).map((k) => ({
      reason: k, rate: prevCounts ? rate(counts[k], prevCounts[k], dt) : 0,
      total: Number(counts[k]) || 0}));
    rows.sort((a, b) => b.rate - a.rate || b.total - a.total || (a.reason < b.reason ? -1 : 1));
    fillTable(id, rows.map((d) => row(
      [td(d.reason, "mono"), td(fmtRate(d.rate), "num"), td(fmtInt(d.total), "num")],
      {reason: d.reason})), 3, emptyText);
  }

  function update(t, stats, gateways, bans) {
    const verdicts = stats.verdicts || {};
    const counters = stats.counters || {};
    const screen = counters.screen_drops || {};
    const engineDrops = counters.drops || {};
    const absorbed = counters.absorbed || {};
    const parse = counters.parse_errors || {};
    const stages = stagesOf(stats);
    const figures = {};
    for (const gw of gateways.gateways || []) figures[gw.name] = gw.figures || {};
    const sample = {t: t, verdicts: Object.assign({screened: sum(screen)}, verdicts),
                    screen: screen, engine: engineDrops, absorbed: absorbed, parse: parse,
                    figures: figures};

    const dropRates = {};
    if (prev) {
      const dt = t - prev.t;
      const v = {};
      const kinds = ["forward", "reply", "drop", "screened", "absorbed"];
      for (const k of new Set(Object.keys(sample.verdicts).concat(kinds))) {
        v[k] = rate(sample.verdicts[k], prev.verdicts[k], dt);
      }
      charts.verdict.push(t, v, kinds);
      const total = v.forward + v.reply + v.drop + v.screened + v.absorbed;
      $("latest-verdict").textContent = fmtRate(total) + " pkt/s";

      for (const k in screen) dropRates[k] = (dropRates[k] || 0) + rate(screen[k], prev.screen[k], dt);
      for (const k in engineDrops) {
        dropRates[k] = (dropRates[k] || 0) + rate(engineDrops[k], prev.engine[k], dt);
      }
      charts.drops.push(t, dropRates);  // drops only: absorbed messages are no drops
      $("latest-drops").textContent = fmtRate(sum(dropRates)) + " drops/s";

      const cps = {};
      const conc = {};
      for (const name in figures) {
        const before = prev.figures[name] || {};
        cps[name] = rate(figures[name].admitted, before.admitted, dt);
        conc[name] = Number(figures[name].concurrent) || 0;
      }
      charts.cps.push(t, cps);
      charts.concurrent.push(t, conc);
      $("latest-cps").textContent = fmtRate(sum(cps)) + " calls/s";
      $("latest-concurrent").textContent = fmtInt(sum(conc)) + " calls";
    }

    const dropRows = [];
    const addDrops = (stageOf, counts, prevCounts) => {
      for (const k in counts) {
        const r = prev ? rate(counts[k], prevCounts[k], t - prev.t) : 0;
        dropRows.push({reason: k, stage: stageOf(k), rate: r, total: Number(counts[k]) || 0});
      }
    };
    addDrops(() => "screen", screen, prev ? prev.screen : {});
    addDrops((k) => stages[k] || "engine", engineDrops, prev ? prev.engine : {});
    dropRows.sort((a, b) => b.rate - a.rate || b.total - a.total || (a.reason < b.reason ? -1 : 1));
    fillTable("drop-table", dropRows.map((d) => row(
      [td(d.reason, "mono"), td(d.stage), td(fmtRate(d.rate), "num"), td(fmtInt(d.total), "num")],
      {reason: d.reason, stage: d.stage})), 4, "nothing dropped yet");
    const dt = prev ? t - prev.t : 0;
    countRows("parse-table", parse, prev ? prev.parse : null, dt, "no parse errors");
    countRows("absorbed-table", absorbed, prev ? prev.absorbed : null, dt, "nothing absorbed yet");
    $("latest-absorbed").textContent = prev
      ? fmtRate(rate(sum(absorbed), sum(prev.absorbed), dt)) + " msg/s" : "";

    const gwRows = [];
    for (const gw of gateways.gateways || []) {
      const f = gw.figures || {};
      const limits = gw.limits || {};
      const before = prev ? prev.figures[gw.name] || {} : null;
      const cps = before ? rate(f.admitted, before.admitted, t - prev.t) : Number(f.cps) || 0;
      const rejected = Object.keys(f).filter((k) => k.startsWith("rejected_") && f[k])
        .map((k) => k.slice(9) + " " + fmtInt(f[k])).join(", ");
      const addresses = (gw.ip || []).concat(gw.ip_port || [], gw.digest_users || []).join(" ");
      gwRows.push(row([td(gw.name), td(addresses, "mono wrap"), td(fmtRate(cps), "num"),
                       td(limits.cps ?? "–", "num"), td(fmtInt(f.concurrent), "num"),
                       td(limits.max_concurrent ?? "–", "num"), td(fmtInt(f.admitted), "num"),
                       td(rejected || "–")], {gateway: gw.name}));
    }
    fillTable("gateway-table", gwRows, 8, "no gateways configured");

    lastCounters = counters;
    updateTop(counters, bans);
    updateBans(bans);
    prev = sample;
  }

  function updateTop(counters, bans) {
    // Per-source drop counts when sbc exposes them; otherwise the banned
    // sources with the most offenses.
    const top = counters.top_dropped_sources || counters.top_sources;
    if (top && typeof top === "object" && !Array.isArray(top)) {
      $("top-title").textContent = "Top dropped sources";
      $("top-count-head").textContent = "drops";
      $("top-note").textContent = "";
      const rows = Object.keys(top).map((h) => [h, Number(top[h]) || 0])
        .sort((a, b) => b[1] - a[1]).slice(0, TOP_ROWS);
      fillTable("top-table", rows.map(([h, n]) => row([td(h, "mono"), td(fmtInt(n), "num"),
                                                       td("")], {host: h})),
                3, "nothing dropped");
      return;
    }
    $("top-title").textContent = "Top banned sources";
    $("top-count-head").textContent = "offenses";
    $("top-note").textContent = "by offenses counted towards their ban";
    const rows = (bans.bans || []).map((b) => ({b: b, n: sum(b.offenses || {})}))
      .sort((x, y) => y.n - x.n || (x.b.host < y.b.host ? -1 : 1)).slice(0, TOP_ROWS);
    fillTable("top-table", rows.map(({b, n}) => row(
      [td(b.host, "mono"), td(fmtInt(n), "num"), td(b.reason)], {host: b.host})),
      3, "no bans");
  }

  function offenses(b) {
    const o = b.offenses || {};
    const parts = Object.keys(o).map((k) => k + " " + o[k]);
    return parts.length ? parts.join(", ") : (b.manual ? "by hand" : "–");
  }

  function updateBans(bans) {
    const list = bans.bans || [];
    $("ban-count").textContent = fmtInt(bans.count) + (bans.truncated ? "+" : "") + " active";
    fillTable("ban-table", list.map((b) => {
      const button = el("button", "Unban", "unban");
      button.type = "button";
      button.dataset.host = b.host;
      button.title = "Lift the ban on " + b.host;
      button.addEventListener("click", () => unban(b.host, button));
      const action = el("td");
      action.appendChild(button);
      return row([td(b.host, "mono"), td(b.reason + (b.manual && b.reason !== "manual" ? " (manual)" : "")),
                  td(offenses(b), "wrap"), td(b.ban_level ?? "", "num"),
                  td(fmtDuration(b.expires_in_s), "num"), action], {host: b.host});
    }), 6, "no bans");
  }

  async function poll() {
    if (polling) { again = true; return; }
    polling = true;
    clearTimeout(timer);
    timer = null;
    let delay = POLL_MS;
    const sent = token;
    const t = Date.now() / 1000;
    try {
      const stats = await api("/api/stats");
      const [gateways, bans] = await Promise.all([api("/api/gateways"),
                                                  api("/api/bans?limit=" + BAN_ROWS)]);
      update(t, stats, gateways, bans);
      setStatus("live · " + new Date().toLocaleTimeString("en-GB"));
    } catch (e) {
      if (!(e instanceof ApiError)) {
        setStatus("dashboard error: " + e.message, true);
        console.error(e);
      } else if (e.status === 401 && sent !== token) {
        delay = 0;  // refused with the old token: try the new one now
      } else if (e.status === 401) {
        paused = true;
        setStatus(token ? "the token was refused" : "enter the admin token", true);
        document.body.dataset.state = "auth";
        $("token").focus();
      } else if (e.status === 429) {
        delay = Math.max(POLL_MS, (e.retryAfter || 6) * 1000);
        setStatus("too many failed authentications: waiting " + Math.round(delay / 1000) + " s",
                  true);
      } else {
        setStatus(e.message, true);
      }
    }
    polling = false;
    readiness();
    if (again) { again = false; delay = 0; }
    if (!paused) timer = setTimeout(poll, delay);
  }

  async function refreshBans() {
    // Only the ban list: a poll out of turn would make a rate over a sliver of time.
    try {
      const bans = await api("/api/bans?limit=" + BAN_ROWS);
      updateTop(lastCounters, bans);
      updateBans(bans);
    } catch (e) {
      banMessage("could not refresh the bans: " + e.message, true);
    }
  }

  async function readiness() {
    const pill = $("ready");
    try {
      const response = await fetch("/readyz");
      const body = await response.json();
      const down = Array.isArray(body.down) ? body.down : [];
      pill.textContent = (body.ready ? "VOS3000 ready" : "VOS3000 not ready") +
        (body.ready && down.length ? " (" + down.length + " down)" : "");
      pill.title = body.reason || (down.length ? "down: " + down.join(", ")
                                               : "VOS3000 answers sbc's OPTIONS pings");
      pill.className = "pill " + (body.ready ? "ok" : "bad");
    } catch (e) {
      pill.textContent = "sbc unreachable";
      pill.className = "pill bad";
    }
  }

  // ---------------------------------------------------------------- actions

  function banMessage(text, error) {
    const node = $("ban-message");
    node.textContent = text;
    node.classList.toggle("error", !!error);
  }

  async function unban(host, button) {
    button.disabled = true;
    try {
      await api("/api/bans/" + encodeURIComponent(host), {method: "DELETE"});
      banMessage("unbanned " + host);
    } catch (e) {
      if (e.status !== 404) {
        button.disabled = false;
        banMessage("unban " + host + ": " + e.message, true);
        return;
      }
      banMessage(host + " was not banned any more");
    }
    const tr = button.closest("tr");
    if (tr) tr.remove();
    refreshBans();
  }

  $("ban-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const host = $("ban-host").value.trim();
    const seconds = Number($("ban-seconds").value || 3600);
    const reason = $("ban-reason").value.trim() || "manual";
    try {
      await api("/api/bans", {method: "POST", headers: {"Content-Type": "application/json"},
                              body: JSON.stringify({host: host, seconds: seconds, reason: reason})});
      banMessage("banned " + host + " for " + fmtDuration(seconds));
      $("ban-host").value = "";
    } catch (e) {
      banMessage("ban " + host + ": " + e.message, true);
      return;
    }
    refreshBans();
  });

  $("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    token = $("token").value.trim();
    if (token) sessionStorage.setItem(TOKEN_KEY, token);
    else sessionStorage.removeItem(TOKEN_KEY);
    paused = false;
    setStatus("connecting…");
    poll();
  });

  $("token").value = token;
  poll();
})();
