// The live page: polls this worker's HTTP API every 2 s and renders it (the figures of the whole cluster).
// Label values and texts come from events, so they are untrusted: every API text reaches the page
// through textContent (the el() helper below), never through markup.
"use strict";

(function () {
  const POLL_MS = 2000;
  const HISTORY_MS = 5 * 60 * 1000;
  const HEALTH_EVERY = 5; // polls between /health reads: the worker's identity rarely changes
  const TOKEN_KEY = "pulse.apiToken";
  const SEVERITIES = ["critical", "high", "medium", "low"];
  const SVG_NS = "http://www.w3.org/2000/svg";
  // The whole cluster's series, of the kinds the page shows only (not every route of every worker).
  const SERIES = "api/v1/series?scope=cluster&kind=requests,orders_all,revenue,inventory,health";

  const history = []; // {t, rps, err}: samples kept in this tab for the chart
  let polls = 0;

  // --- small DOM helpers ------------------------------------------------------------------------

  function $(id) {
    return document.getElementById(id);
  }

  // Build an element; attrs go through setAttribute (callers pass only class/aria/data names), children
  // that are strings become text nodes.
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value !== undefined && value !== null) node.setAttribute(name, String(value));
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(typeof child === "string" ? document.createTextNode(child) : child);
    }
    return node;
  }

  function svg(tag, attrs) {
    const node = document.createElementNS(SVG_NS, tag);
    for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, String(value));
    return node;
  }

  function setFigure(id, text) {
    const node = $(id);
    const empty = text === null;
    node.textContent = empty ? "–" : text;
    node.classList.toggle("empty", empty);
  }

  // --- number formats ---------------------------------------------------------------------------

  const integer = new Intl.NumberFormat(undefined, { maximumFractionDigits: 0 });
  const decimal = new Intl.NumberFormat(undefined, { maximumFractionDigits: 1, minimumFractionDigits: 1 });
  const percent = new Intl.NumberFormat(undefined, { style: "percent", maximumFractionDigits: 2,
    minimumFractionDigits: 2 });

  function isNumber(value) {
    return typeof value === "number" && Number.isFinite(value);
  }

  function money(amount, currency) {
    try {
      return new Intl.NumberFormat(undefined, { style: "currency", currency: currency,
        maximumFractionDigits: 0 }).format(amount);
    } catch (err) {
      // Not an ISO 4217 code (currencies come from events): show the number and the code as given.
      return integer.format(amount) + " " + currency;
    }
  }

  function time(ms) {
    if (!isNumber(ms)) return "–";
    return new Date(ms).toLocaleString(undefined, { dateStyle: "short", timeStyle: "short" });
  }

  function since(iso) {
    const at = Date.parse(iso);
    return Number.isFinite(at) ? "since " + new Date(at).toLocaleTimeString() : "";
  }

  // Re-render a list only when its data changed: a rebuilt list would take keyboard focus away from
  // its buttons every poll.
  const shown = new Map();

  function changed(name, data) {
    const signature = JSON.stringify(data);
    if (shown.get(name) === signature) return false;
    shown.set(name, signature);
    return true;
  }

  // --- API --------------------------------------------------------------------------------------

  class ApiError extends Error {}

  // Relative URLs: the page works behind a proxy that mounts the worker under a path.
  async function api(method, path, body) {
    const headers = { Accept: "application/json" };
    const init = { method: method, headers: headers, cache: "no-store" };
    if (method !== "GET") {
      const token = sessionStorage.getItem(TOKEN_KEY) || "";
      if (token) headers.Authorization = "Bearer " + token;
    }
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let reply;
    try {
      reply = await fetch(path, init);
    } catch (err) {
      throw new ApiError("cannot reach the worker (" + err.message + ")");
    }
    let data = null;
    try {
      data = await reply.json();
    } catch (err) {
      data = null;
    }
    // /health answers 503 with a body while the worker recovers: that is news, not an error.
    if (!reply.ok && !(path === "health" && data)) {
      const reason = data && typeof data.error === "string" ? data.error : reply.statusText;
      throw new ApiError("HTTP " + reply.status + ": " + reason);
    }
    return data;
  }

  // --- key figures and health -------------------------------------------------------------------

  function windowOf(series, kind, name) {
    const found = series.find((s) => s.kind === kind);
    return found && found.windows ? found.windows[name] || null : null;
  }

  function renderFigures(series) {
    const orders = windowOf(series, "orders_all", "5m");
    const perHour = orders && isNumber(orders.per_hour) ? orders.per_hour : null;
    setFigure("orders-per-hour", perHour === null ? null : integer.format(perHour));

    const revenue = series.filter((s) => s.kind === "revenue" && s.today && isNumber(s.today.revenue));
    setFigure("revenue-today", revenue.length
      ? revenue.map((s) => money(s.today.revenue, s.labels.currency || "")).join(" · ")
      : null);

    const five = windowOf(series, "requests", "5m");
    setFigure("error-rate", five && isNumber(five.error_ratio) ? percent.format(five.error_ratio) : null);
    setFigure("p95", five && isNumber(five.p95_ms) ? integer.format(five.p95_ms) + " ms" : null);

    const one = windowOf(series, "requests", "1m");
    setFigure("rps", one && isNumber(one.rps) ? decimal.format(one.rps) : null);

    const found = series.find((s) => s.kind === "inventory" && s.stock);
    const stock = found ? found.stock : {};
    setFigure("stock-outs", isNumber(stock.out_of_stock) ? integer.format(stock.out_of_stock) : null);
    const low = isNumber(stock.low_stock) ? integer.format(stock.low_stock) + " low on stock" : "";
    $("low-stock").textContent = low;
    $("stock-outs").classList.toggle("bad", stock.out_of_stock > 0);

    renderHealth(series.filter((s) => s.kind === "health"));
    record(one, five);
  }

  function renderHealth(services) {
    services.sort((a, b) => String(a.labels.service).localeCompare(String(b.labels.service)));
    if (!changed("health", services.map((s) => [s.labels.service, (s.latest || {}).status]))) return;
    const list = $("health");
    if (!services.length) {
      list.replaceChildren(el("li", { class: "muted" }, "No heartbeats yet"));
      return;
    }
    list.replaceChildren(...services.map((s) => {
      const latest = s.latest || {};
      const status = latest.status === "healthy" ? "healthy" : latest.status === "unhealthy"
        ? "unhealthy" : "unknown";
      return el("li", { class: "service " + status },
        el("span", { class: "dot", "aria-hidden": "true" }),
        el("span", { class: "name" }, String(s.labels.service)),
        el("span", { class: "visually-hidden" }, ": " + status));
    }));
  }

  // --- the whole cluster ------------------------------------------------------------------------

  // The figures are the whole cluster's (scope=cluster); while a worker does not answer, or a partition
  // has no worker (a rebalance), they are partial: the banner names who and what is missing.
  function renderCluster(reply) {
    const missingWorkers = (reply.workers || []).filter((w) => w.status === "missing");
    const missing = reply.missing_partitions || [];
    const partial = Boolean(reply.partial);
    $("figures").classList.toggle("partial", partial);
    const said = missingWorkers.map((w) => [w.url, w.partitions, w.error]);
    if (!changed("partial", [partial, missing, said])) return;
    const banner = $("partial");
    banner.hidden = !partial;
    if (!partial) {
      banner.replaceChildren();
      return;
    }
    const items = missingWorkers.map((w) => el("li", {},
      el("strong", {}, String(w.url)),
      " (" + partitionsText(w.partitions || []) + "): " + String(w.error || "no answer")));
    const held = new Set(missingWorkers.flatMap((w) => w.partitions || []));
    const orphans = missing.filter((p) => !held.has(p));
    if (orphans.length) {
      items.push(el("li", {}, partitionsText(orphans) + ": no worker serves " +
        (orphans.length === 1 ? "it" : "them") + " yet (the group is rebalancing or a worker recovers)"));
    }
    banner.replaceChildren(
      el("strong", {}, "Partial figures: "),
      partitionsText(missing) + (missing.length === 1 ? " is" : " are") + " missing from every figure " +
        "below until " + (missing.length === 1 ? "its" : "their") + " worker answers again.",
      el("ul", {}, ...items));
  }

  function partitionsText(partitions) {
    return (partitions.length === 1 ? "partition " : "partitions ") + partitions.join(", ");
  }

  // --- history chart ----------------------------------------------------------------------------

  function record(one, five) {
    const now = Date.now();
    history.push({
      t: now,
      rps: one && isNumber(one.rps) ? one.rps : null,
      err: five && isNumber(five.error_ratio) ? five.error_ratio : null,
    });
    while (history.length && history[0].t < now - HISTORY_MS) history.shift();
    drawChart(now);
  }

  function line(points, cls) {
    return svg("polyline", { class: "line " + cls, points: points.join(" ") });
  }

  function drawChart(now) {
    const chart = $("chart");
    const W = 600, H = 180, left = 48, right = 56, top = 10, bottom = 22;
    const plotW = W - left - right, plotH = H - top - bottom;
    const maxRps = Math.max(1, ...history.map((p) => p.rps || 0)) * 1.1;
    const maxErr = Math.max(0.01, ...history.map((p) => p.err || 0)) * 1.1;
    const x = (t) => left + plotW * (1 - (now - t) / HISTORY_MS);
    const keep = chart.querySelector("desc");
    const nodes = [keep];
    for (let i = 0; i <= 4; i++) {
      const y = top + (plotH * i) / 4;
      nodes.push(svg("line", { class: "grid", x1: left, x2: W - right, y1: y, y2: y }));
    }
    const label = (text, attrs) => {
      const node = svg("text", attrs);
      node.textContent = text;
      return node;
    };
    nodes.push(label(decimal.format(maxRps),
      { x: left - 6, y: top + 4, class: "axis axis-rps", "text-anchor": "end" }));
    nodes.push(label("0", { x: left - 6, y: top + plotH + 4, class: "axis", "text-anchor": "end" }));
    nodes.push(label(percent.format(maxErr), { x: W - right + 6, y: top + 4, class: "axis axis-err" }));
    nodes.push(label("−5 min", { x: left, y: H - 4, class: "axis" }));
    nodes.push(label("now", { x: W - right, y: H - 4, class: "axis", "text-anchor": "end" }));
    const rps = history.filter((p) => p.rps !== null)
      .map((p) => x(p.t).toFixed(1) + "," + (top + plotH * (1 - p.rps / maxRps)).toFixed(1));
    const err = history.filter((p) => p.err !== null)
      .map((p) => x(p.t).toFixed(1) + "," + (top + plotH * (1 - p.err / maxErr)).toFixed(1));
    if (rps.length) nodes.push(line(rps, "line-rps"));
    if (err.length) nodes.push(line(err, "line-err"));
    chart.replaceChildren(...nodes);
  }

  // --- alerts -----------------------------------------------------------------------------------

  function renderAlerts(alerts) {
    if (!changed("alerts", alerts)) return;
    const box = $("alerts");
    $("alert-count").textContent = alerts.length ? "(" + alerts.length + ")" : "";
    if (!alerts.length) {
      box.replaceChildren(el("p", { class: "muted" }, "No active alerts."));
      return;
    }
    const groups = new Map(SEVERITIES.map((s) => [s, []]));
    for (const alert of alerts) {
      const severity = SEVERITIES.includes(alert.severity) ? alert.severity : "other";
      if (!groups.has(severity)) groups.set(severity, []);
      groups.get(severity).push(alert);
    }
    const sections = [];
    for (const [severity, members] of groups) {
      if (!members.length) continue;
      sections.push(el("section", { class: "severity severity-" + severity, "data-severity": severity },
        el("h3", {}, severity + " (" + members.length + ")"),
        el("ul", { class: "alert-list" }, ...members.map(alertItem))));
    }
    box.replaceChildren(...sections);
  }

  function alertItem(alert) {
    const labels = Object.entries(alert.labels || {})
      .filter(([name]) => name !== "alertname" && name !== "severity")
      .map(([name, value]) => el("span", { class: "label" }, name + "=" + value));
    const value = isNumber(alert.currentValue) ? "value " + alert.currentValue.toPrecision(4) : "";
    const limit = isNumber(alert.threshold) ? "threshold " + alert.threshold : "";
    const state = alert.state === "firing" ? "firing" : "pending";
    return el("li", { class: "alert state-" + state },
      el("div", { class: "alert-head" },
        el("span", { class: "state" }, String(alert.state || "")),
        el("strong", { class: "rule" }, String(alert.rule || (alert.labels || {}).alertname || "")),
        el("span", { class: "when" }, since(alert.starts_at || alert.timestamp))),
      el("div", { class: "title" }, String(alert.title || "")),
      el("div", { class: "meta" }, [value, limit].filter(Boolean).join(" · ")),
      el("div", { class: "labels" }, ...labels),
      contextBlock(alert.context));
  }

  // The context of a firing alert (pipeline/alerting/context.py): one small table per section.
  const CONTEXT_VALUES = { error_ratio: "5xx ratio", amount: "amount" };

  function contextValue(kind, value) {
    if (!isNumber(value)) return "";
    if (kind === "error_ratio") return (value * 100).toFixed(1) + "%";
    if (/_ms$/.test(kind)) return Math.round(value).toLocaleString("en-US") + " ms";
    return value.toLocaleString("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 });
  }

  function contextBlock(context) {
    if (!context || !Array.isArray(context.sections)) return null;
    const over = context.window ? " (" + context.window + ")" : "";
    const parts = context.sections.map((section) => {
      const listed = section.name !== "out_of_stock";
      const kind = typeof section.value === "string" ? section.value : "";
      const head = ["name", ...(listed ? ["count", "share"] : []),
        ...(listed && kind ? [CONTEXT_VALUES[kind] || kind.replace(/_ms$/, "")] : [])];
      const rows = (Array.isArray(section.rows) ? section.rows : []).map((row) => {
        const cells = [String(row.name ?? "")];
        if (listed) {
          cells.push(isNumber(row.count) ? String(row.count) : "",
            isNumber(row.share) ? (row.share * 100).toFixed(1) + "%" : "");
          if (kind) cells.push(contextValue(kind, row.value));
        }
        return el("tr", {}, ...cells.map((cell, i) => el("td", i ? { class: "num" } : {}, cell)));
      });
      if (!rows.length) rows.push(el("tr", {}, el("td", { colspan: head.length, class: "muted" }, "none")));
      if (isNumber(section.more) && section.more > 0) {
        rows.push(el("tr", {}, el("td", { colspan: head.length, class: "muted" }, "and " + section.more + " more")));
      }
      return el("table", { class: "context-table" },
        el("caption", {}, String(section.title ?? section.name ?? "") + over),
        el("thead", {}, el("tr", {}, ...head.map((h, i) => el("th", i ? { class: "num" } : {}, h)))),
        el("tbody", {}, ...rows));
    });
    if (context.partial) {
      const missing = Array.isArray(context.missing) ? context.missing.map(String).join("; ") : "";
      parts.push(el("p", { class: "context-partial" }, "partial: not read in time from " + (missing || "some workers")));
    }
    return el("div", { class: "alert-context" }, ...parts);
  }

  // --- silences ---------------------------------------------------------------------------------

  function renderSilences(silences) {
    if (!changed("silences", silences)) return;
    const body = $("silences-body");
    if (!silences.length) {
      body.replaceChildren(el("tr", {}, el("td", { colspan: 6, class: "muted" }, "No silences.")));
      return;
    }
    body.replaceChildren(...silences.map((s) => {
      const status = ["active", "pending", "expired"].includes(s.status) ? s.status : "unknown";
      const matchers = Object.entries(s.matchers || {}).map(([name, value]) =>
        el("code", { class: "matcher" }, name + (/^(=~|!~|!=)/.test(value) ? "" : "=") + value));
      const action = status === "expired" ? "" : el("button", {
        type: "button", class: "expire", "data-id": s.id, "aria-label": "Expire silence " + s.id,
      }, "Expire");
      return el("tr", { class: "silence status-" + status, "data-id": s.id },
        el("td", {}, el("span", { class: "silence-status badge badge-" + status }, status)),
        el("td", { class: "matchers" }, ...matchers),
        el("td", {}, time(s.endsAt)),
        el("td", {}, String(s.createdBy || "")),
        el("td", { class: "comment" }, String(s.comment || "")),
        el("td", {}, action));
    }));
  }

  // The CLI's syntax (`pulse silence add`): LABEL=VALUE, LABEL!=VALUE, LABEL=~REGEX, LABEL!~REGEX.
  function parseMatchers(text) {
    const spec = {};
    for (const raw of text.split("\n")) {
      const item = raw.trim();
      if (!item) continue;
      let parsed = false;
      for (const op of ["=~", "!~", "!=", "="]) {
        const at = item.indexOf(op);
        if (at > 0) {
          const value = item.slice(at + op.length);
          spec[item.slice(0, at).trim()] = op === "=" ? value : op + value;
          parsed = true;
          break;
        }
      }
      if (!parsed) {
        const syntax = "label=value, label!=value, label=~regex or label!~regex";
        throw new ApiError(JSON.stringify(item) + ": write " + syntax);
      }
    }
    if (!Object.keys(spec).length) {
      throw new ApiError("give at least one matcher, e.g. alertname=high_error_rate");
    }
    return spec;
  }

  function say(text, ok) {
    const box = $("silence-message");
    box.textContent = text;
    box.classList.toggle("ok", Boolean(ok));
    box.classList.toggle("error", !ok && Boolean(text));
  }

  async function createSilence(event) {
    event.preventDefault();
    const button = $("silence-submit");
    button.disabled = true;
    try {
      const body = {
        matchers: parseMatchers($("silence-matchers").value),
        duration: $("silence-duration").value.trim(),
        createdBy: $("silence-author").value.trim(),
        comment: $("silence-comment").value.trim(),
      };
      const reply = await api("POST", "api/v1/silences", body);
      say("Created silence " + reply.data.silenceID + ".", true);
      $("silence-comment").value = "";
      await refreshSilences();
    } catch (err) {
      say("Could not create the silence: " + err.message, false);
    } finally {
      button.disabled = false;
    }
  }

  async function expireSilence(id, button) {
    button.disabled = true;
    try {
      await api("DELETE", "api/v1/silences/" + encodeURIComponent(id));
      say("Expired silence " + id + ".", true);
      await refreshSilences();
    } catch (err) {
      say("Could not expire silence " + id + ": " + err.message, false);
      button.disabled = false;
    }
  }

  async function refreshSilences() {
    const reply = await api("GET", "api/v1/silences");
    renderSilences(reply.data.silences);
  }

  // --- polling ----------------------------------------------------------------------------------

  function renderWorker(health, cluster) {
    const worker = health && health.worker;
    const parts = [];
    if (worker) parts.push("Served by worker pid " + worker.pid + " on " + worker.host);
    if (cluster) {
      const count = (cluster.workers || []).length;
      const partitions = cluster.partitions || [];
      parts.push("cluster of " + count + " worker" + (count === 1 ? "" : "s") + ", partitions " +
        (partitions.length ? partitions.join(", ") : "none yet"));
    }
    if (health && health.version) parts.push("version " + health.version);
    if (parts.length) $("worker").textContent = parts.join(" · ") + ".";
  }

  let lastHealth = null;

  async function poll() {
    const reads = [api("GET", SERIES), api("GET", "api/v1/alerts"), api("GET", "api/v1/silences")];
    if (polls % HEALTH_EVERY === 0) reads.push(api("GET", "health"));
    polls += 1;
    const [series, alerts, silences, health] = await Promise.allSettled(reads);
    const failed = [series, alerts, silences].filter((r) => r.status === "rejected");
    if (series.status === "fulfilled") {
      renderFigures(series.value.series);
      renderCluster(series.value);
    }
    if (alerts.status === "fulfilled") renderAlerts(alerts.value.data.alerts);
    if (silences.status === "fulfilled") renderSilences(silences.value.data.silences);
    if (health && health.status === "fulfilled") lastHealth = health.value;
    renderWorker(lastHealth, series.status === "fulfilled" ? series.value : null);
    // #status is a live region: it changes only between working and failing, so a screen reader
    // hears about an outage and the recovery, not every poll; the time goes to #updated.
    const status = $("status");
    status.classList.toggle("error", failed.length > 0);
    status.textContent = failed.length
      ? "Update failed: " + failed[0].reason.message
      : "Live, every " + POLL_MS / 1000 + " s";
    if (!failed.length) $("updated").textContent = "· updated " + new Date().toLocaleTimeString();
  }

  async function loop() {
    try {
      await poll();
    } catch (err) {
      $("status").textContent = "Update failed: " + err.message;
      $("status").classList.add("error");
    }
    // Scheduled after the answer, so a slow worker is never asked twice at once.
    setTimeout(loop, POLL_MS);
  }

  function start() {
    const token = $("token");
    token.value = sessionStorage.getItem(TOKEN_KEY) || "";
    token.addEventListener("input", () => sessionStorage.setItem(TOKEN_KEY, token.value));
    $("token-forget").addEventListener("click", () => {
      sessionStorage.removeItem(TOKEN_KEY);
      token.value = "";
    });
    // Enter in the token field must not reload the page: the token is saved as it is typed.
    $("token-form").addEventListener("submit", (event) => event.preventDefault());
    $("silence-form").addEventListener("submit", createSilence);
    $("silences-body").addEventListener("click", (event) => {
      const button = event.target.closest("button.expire");
      if (button) expireSilence(button.dataset.id, button);
    });
    loop();
  }

  start();
})();
