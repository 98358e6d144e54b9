// The toll-fraud watch panel: blocks in force (with a button to clear one)
// and recent alerts, each with why, the calls that made it and when it clears.
// Reads /api/fraud every two seconds with the token the page keeps.
(function () {
  "use strict";

  const POLL_MS = 2000;
  const TOKEN_KEY = "sbc.admin.token";
  const ALERT_ROWS = 50;
  const $ = (id) => document.getElementById(id);

  function headers(extra) {
    const h = Object.assign({}, extra || {});
    const token = sessionStorage.getItem(TOKEN_KEY) || "";
    if (token) h.Authorization = "Bearer " + token;
    return h;
  }

  function cell(text, cls) {
    const td = document.createElement("td");
    td.textContent = text == null ? "" : String(text);
    if (cls) td.className = cls;
    return td;
  }

  function calls(list) {
    return (list || []).map((c) => c.number + " (" + c.call_id + ")").join(", ");
  }

  function message(text, error) {
    const m = $("fraud-message");
    m.textContent = text;
    m.classList.toggle("error", !!error);
  }

  function fill(id, rows, build, empty) {
    const body = $(id).querySelector("tbody");
    body.replaceChildren();
    if (!rows.length) {
      const tr = document.createElement("tr");
      const td = cell(empty, "empty");
      td.colSpan = $(id).querySelectorAll("thead th").length;
      tr.appendChild(td);
      body.appendChild(tr);
      return;
    }
    for (const r of rows) body.appendChild(build(r));
  }

  function blockRow(b) {
    const tr = document.createElement("tr");
    tr.dataset.gateway = b.gateway;
    tr.dataset.rule = b.rule;
    for (const t of [b.gateway, b.rule, b.why, calls(b.calls), b.clears]) tr.appendChild(cell(t));
    tr.appendChild(cell(b.refused, "num"));
    const td = document.createElement("td");
    const button = document.createElement("button");
    button.className = "fraud-clear";
    button.textContent = "Clear";
    button.dataset.gateway = b.gateway;
    button.dataset.rule = b.rule;
    button.addEventListener("click", () => clear(b.gateway, b.rule, button));
    td.appendChild(button);
    tr.appendChild(td);
    return tr;
  }

  function alertRow(a) {
    const tr = document.createElement("tr");
    tr.dataset.level = a.level;
    tr.className = "fraud-" + a.level;
    for (const t of [a.at, a.level, a.gateway, a.rule, a.why, calls(a.calls), a.clears]) {
      tr.appendChild(cell(t));
    }
    return tr;
  }

  async function clear(gateway, rule, button) {
    button.disabled = true;
    try {
      const response = await fetch("/api/fraud/clear", {
        method: "POST", headers: headers({"Content-Type": "application/json"}),
        body: JSON.stringify({gateway: gateway, rule: rule, by: "dashboard"})});
      const body = await response.json().catch(() => null);
      if (!response.ok) throw new Error(body && body.error ? body.error : "HTTP " + response.status);
      message("cleared " + gateway + " under " + rule, false);
    } catch (e) {
      message("clear failed: " + e.message, true);
      button.disabled = false;
    }
    poll();
  }

  async function poll() {
    try {
      const response = await fetch("/api/fraud", {headers: headers()});
      if (response.status === 401 || response.status === 403) return;
      if (!response.ok) { $("fraud").dataset.state = "off"; return; }
      const data = await response.json();
      $("fraud").dataset.state = "live";
      $("fraud-count").textContent = data.rules.length + " rules, " + data.blocks.length +
        " blocked";
      fill("fraud-block-table", data.blocks, blockRow, "no block in force");
      fill("fraud-alert-table", data.alerts.slice(0, ALERT_ROWS), alertRow, "no alert");
    } catch (e) {
      // sbc does not answer: the main panel says so
    }
  }

  poll();
  setInterval(poll, POLL_MS);
})();
