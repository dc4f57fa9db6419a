// hub's dashboard: what the hub is doing now. Plain JS, no dependencies. It
// polls the API with the session cookie (GET /v1/stats, /v1/channels,
// /v1/notifications) and shows an event's trace from GET /v1/events/{id};
// retries are POSTs carrying the page's CSRF token (X-CSRF-Token).
"use strict";

(function () {
  const POLL_MS = 5000;
  const HISTORY = 60; // queue-depth points kept for the chart (5 minutes at 5 s)
  const LIST = 10; // rows of recent failures and of dead letters
  const DEAD = ["failed", "unknown", "undelivered"];
  const SVG = "http://www.w3.org/2000/svg";
  const $ = (id) => document.getElementById(id);

  const queueHistory = [];
  let timer = null;
  let busy = false;

  // ---- HTTP ---------------------------------------------------------------

  const { api, problem } = window.hubApi;

  function query(params) {
    const search = new URLSearchParams();
    for (const [name, value] of params) search.append(name, value);
    return search.toString();
  }

  // ---- DOM ----------------------------------------------------------------

  // Text only goes in as text nodes: nothing the API returns becomes markup.
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (name === "onclick") node.addEventListener("click", value);
      else node.setAttribute(name, value === true ? "" : String(value));
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function svg(tag, attrs, ...children) {
    const node = document.createElementNS(SVG, tag);
    for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, String(value));
    for (const child of children) node.append(child);
    return node;
  }

  function setRows(tbody, rows, empty) {
    tbody.replaceChildren(...rows);
    if (empty) empty.hidden = rows.length > 0;
  }

  function moment(iso) {
    if (!iso) return "–";
    const at = new Date(iso);
    const node = el("time", { datetime: iso, title: iso }, ago((Date.now() - at.getTime()) / 1000));
    return node;
  }

  function ago(seconds) {
    return duration(seconds) + " ago";
  }

  function duration(seconds) {
    if (seconds === null || seconds === undefined) return "–";
    if (seconds < 1) return Math.round(seconds * 1000) + " ms";
    if (seconds < 90) return Math.round(seconds) + " s";
    if (seconds < 5400) return Math.round(seconds / 60) + " min";
    if (seconds < 172800) return Math.round(seconds / 3600) + " h";
    return Math.round(seconds / 86400) + " d";
  }

  function percent(rate) {
    return rate === null || rate === undefined ? "–" : (rate * 100).toFixed(1) + " %";
  }

  function say(text, bad) {
    const status = $("status");
    status.textContent = text;
    status.className = "status" + (bad ? " bad" : "");
  }

  // ---- Charts -------------------------------------------------------------

  // A bar per slice of the window: sent (bottom) and failed (top), stacked.
  function barChart(series, label) {
    const width = 240, height = 36, gap = 1;
    const most = Math.max(1, ...series.map(([sent, failed]) => sent + failed));
    const bar = width / series.length;
    const chart = svg("svg", {
      width, height, viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": label,
      class: "bars",
    }, svg("title", {}, document.createTextNode(label)));
    series.forEach(([sent, failed], i) => {
      const sentH = (sent / most) * height;
      const failedH = (failed / most) * height;
      const x = i * bar + gap / 2;
      if (sent) chart.append(svg("rect", { x, y: height - sentH, width: bar - gap, height: sentH, class: "sent" }));
      if (failed) {
        chart.append(svg("rect", {
          x, y: height - sentH - failedH, width: bar - gap, height: failedH, class: "failed",
        }));
      }
    });
    chart.append(svg("line", { x1: 0, y1: height - 0.5, x2: width, y2: height - 0.5, class: "axis" }));
    return chart;
  }

  // Messages waiting over the last few minutes, one point per poll.
  function lineChart(points) {
    const width = 320, height = 70, pad = 4;
    const most = Math.max(1, ...points);
    const step = (width - 2 * pad) / Math.max(1, HISTORY - 1);
    const start = width - pad - (points.length - 1) * step;
    const coords = points.map((value, i) => {
      const x = start + i * step;
      const y = height - pad - (value / most) * (height - 2 * pad);
      return `${x.toFixed(1)},${y.toFixed(1)}`;
    });
    const last = points.length ? points[points.length - 1] : 0;
    const label = `Messages waiting over the last ${points.length} polls: now ${last}, at most ${most}`;
    return svg("svg", {
      width, height, viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": label, class: "line",
      preserveAspectRatio: "none",
    },
    svg("title", {}, document.createTextNode(label)),
    svg("line", { x1: pad, y1: height - pad, x2: width - pad, y2: height - pad, class: "axis" }),
    svg("text", { x: pad, y: 12, class: "scale" }, document.createTextNode(String(most))),
    svg("polyline", { points: coords.join(" "), class: "depth" }),
    // The newest point as a dot: a single poll still shows.
    ...coords.slice(-1).map((xy) => {
      const [cx, cy] = xy.split(",");
      return svg("circle", { cx, cy, r: 3, class: "depth-now" });
    }));
  }

  // ---- Panels -------------------------------------------------------------

  function showStats(stats) {
    const byStatus = stats.by_status;
    $("total").textContent = stats.total;
    $("total-sent").textContent = (byStatus.sent || 0) + (byStatus.delivered || 0);
    $("total-failed").textContent = byStatus.failed || 0;
    $("oldest-queued").textContent =
      stats.oldest_queued_age_s === null ? "none" : duration(stats.oldest_queued_age_s);
    $("window-label").textContent = "in the last " + stats.window;

    const rows = Object.entries(stats.by_channel).map(([name, c]) => {
      const sent = (c.by_status.sent || 0) + (c.by_status.delivered || 0);
      const failed = c.by_status.failed || 0;
      const other = c.total - sent - failed;
      const label = `${name}: ${sent} sent, ${failed} failed over ${stats.window}, ` +
        `in ${c.series.length} slices of ${duration(stats.bucket_s)}`;
      return el("tr", { "data-testid": `channel-row-${name}` },
        el("th", { scope: "row" }, name),
        el("td", { class: "num", "data-testid": `sent-${name}` }, sent),
        el("td", { class: "num" + (failed ? " bad" : ""), "data-testid": `failed-${name}` }, failed),
        el("td", { class: "num", "data-testid": `failure-rate-${name}` }, percent(c.failure_rate)),
        el("td", { class: "num", "data-testid": `throughput-${name}` }, c.sent_per_minute.toFixed(2)),
        el("td", { class: "num", title: otherTitle(c.by_status) }, other),
        el("td", { "data-testid": `chart-${name}` }, barChart(c.series, label)));
    });
    setRows($("channel-rows"), rows, $("channels-empty"));

    if (stats.queues) {
      const total = Object.values(stats.queues).reduce((a, b) => a + b, 0);
      $("total-queued").textContent = total;
      $("queues-error").textContent = "";
      queueHistory.push(total);
      if (queueHistory.length > HISTORY) queueHistory.shift();
      $("queue-chart").replaceChildren(lineChart(queueHistory));
      const queueRows = Object.entries(stats.queues).map(([name, depth]) =>
        el("tr", { class: depth ? "" : "idle", "data-testid": `queue-${name}` },
          el("th", { scope: "row" }, name), el("td", { class: "num" }, depth)));
      setRows($("queue-rows"), queueRows);
    } else {
      $("total-queued").textContent = "?";
      $("queues-error").textContent = stats.queues_error || "queue depths unavailable";
    }
  }

  function otherTitle(byStatus) {
    return Object.entries(byStatus)
      .filter(([status]) => !["sent", "delivered", "failed"].includes(status))
      .map(([status, count]) => `${status}: ${count}`)
      .join(", ");
  }

  function showCircuits(channels) {
    const rows = channels.items.map((c) =>
      el("tr", { "data-testid": `circuit-${c.channel}-${c.provider}` },
        el("th", { scope: "row" }, c.channel),
        el("td", {}, c.provider),
        el("td", {}, el("span", { class: `state ${c.state}`, "data-testid": "circuit-state" }, c.state.replace("_", " "))),
        el("td", {}, moment(c.since)),
        el("td", { class: "num" }, c.waiting),
        el("td", { class: "error-text" }, c.last_error || "")));
    setRows($("circuit-rows"), rows);
  }

  function lastError(n) {
    const attempts = n.attempt_log || [];
    for (let i = attempts.length - 1; i >= 0; i--) if (attempts[i].error) return attempts[i].error;
    return n.last_error || "";
  }

  function traceButton(eventId) {
    return el("button", {
      type: "button", "data-testid": "trace-button", "aria-label": `Trace event ${eventId}`,
      onclick: () => { $("trace-id").value = eventId; trace(eventId, true); },
    }, "Trace");
  }

  function showFailures(page) {
    const rows = page.items.map((n) =>
      el("tr", { "data-testid": "failure-row", "data-notification": n.id },
        el("td", {}, moment(n.updated_at)),
        el("td", {}, n.event_type),
        el("td", {}, n.channel),
        el("td", { class: "recipient" }, n.recipient),
        el("td", { class: "error-text", "data-testid": "failure-error" }, lastError(n)),
        el("td", {}, traceButton(n.event_id))));
    setRows($("failure-rows"), rows, $("failures-empty"));
  }

  function showDeadLetters(page) {
    const rows = page.items.map((n) =>
      el("tr", { "data-testid": "dead-letter-row", "data-notification": n.id },
        el("td", {}, moment(n.updated_at)),
        el("td", {}, el("span", { class: `state ${n.status}` }, n.status)),
        el("td", {}, n.channel),
        el("td", { class: "recipient" }, n.recipient),
        el("td", { class: "num" }, n.attempts),
        el("td", { class: "error-text" }, n.last_error || ""),
        el("td", { class: "actions" },
          el("button", {
            type: "button", "data-testid": "retry-button", "aria-label": `Retry ${n.id}`,
            onclick: (e) => retryOne(n.id, e.currentTarget),
          }, "Retry"),
          traceButton(n.event_id))));
    setRows($("dead-rows"), rows, $("dead-empty"));
  }

  // ---- Polling ------------------------------------------------------------

  async function refresh() {
    if (busy) return;
    busy = true;
    const window_ = $("window").value;
    try {
      const [stats, channels, failures, dead] = await Promise.all([
        api("GET", "/v1/stats?" + query([["window", window_]])),
        api("GET", "/v1/channels"),
        api("GET", "/v1/notifications?" + query([
          ["status", "failed"], ["since", window_], ["order", "desc"], ["limit", LIST],
        ])),
        api("GET", "/v1/notifications?" + query([
          ...DEAD.map((s) => ["status", s]), ["order", "desc"], ["limit", LIST],
        ])),
      ]);
      for (const result of [stats, channels, failures, dead]) {
        if (!result.ok) throw new Error(problem(result));
      }
      showStats(stats.data);
      showCircuits(channels.data);
      showFailures(failures.data);
      showDeadLetters(dead.data);
      say("Updated " + new Date().toLocaleTimeString() + ($("live").checked ? " · live" : ""));
    } catch (error) {
      say("Could not update: " + error.message, true);
    } finally {
      busy = false;
    }
  }

  function schedule() {
    if (timer !== null) clearInterval(timer);
    timer = null;
    if ($("live").checked && !document.hidden) timer = setInterval(refresh, POLL_MS);
  }

  // ---- Retries ------------------------------------------------------------

  async function retryOne(id, button) {
    button.disabled = true;
    const result = await api("POST", `/v1/notifications/${encodeURIComponent(id)}/retry`);
    $("retry-result").textContent = result.ok ? `Requeued ${id}.` : `Not requeued: ${problem(result)}`;
    await refresh();
  }

  async function retryAll() {
    if (!window.confirm("Send every failed notification again?")) return;
    const result = await api("POST", "/v1/notifications:retry", { status: ["failed"] });
    $("retry-result").textContent = result.ok
      ? `Requeued ${result.data.requeued.length} notification(s).`
      : `Not requeued: ${problem(result)}`;
    await refresh();
  }

  // ---- Trace --------------------------------------------------------------

  async function trace(eventId, focus) {
    const status = $("trace-status");
    const out = $("trace-out");
    eventId = eventId.trim();
    if (!eventId) return;
    status.textContent = "Loading " + eventId + "…";
    status.className = "status";
    const result = await api("GET", "/v1/events/" + encodeURIComponent(eventId));
    if (!result.ok) {
      out.replaceChildren();
      status.textContent = result.status === 404 ? `No event ${eventId}.` : problem(result);
      status.className = "status bad";
      return;
    }
    const event = result.data;
    status.textContent = `${event.notifications.length} notification(s).`;
    history.replaceState(null, "", "#trace=" + encodeURIComponent(event.id));
    out.replaceChildren(traceView(event));
    if (focus) $("trace-heading").focus();
  }

  function traceView(event) {
    const c = event.counts;
    const head = el("dl", { class: "trace-event", "data-testid": "trace-event" },
      el("dt", {}, "Event"), el("dd", {}, el("code", {}, event.id)),
      el("dt", {}, "Type"), el("dd", {}, event.type),
      el("dt", {}, "Status"), el("dd", {}, el("span", { class: `state ${event.status}` }, event.status)),
      el("dt", {}, "Created"), el("dd", {}, moment(event.created_at)),
      el("dt", {}, "Outcome"),
      el("dd", {}, `${c.delivered} delivered, ${c.failed} failed, ${c.suppressed} suppressed, ` +
        `${c.pending} pending of ${c.total}`),
      event.error ? [el("dt", {}, "Error"), el("dd", { class: "error-text" }, event.error)] : null);
    const notifications = el("ol", { class: "trace-notifications" },
      event.notifications.map((n) =>
        el("li", { "data-testid": "trace-notification", "data-notification": n.id },
          el("p", {},
            el("strong", {}, n.channel), " → ", el("span", { class: "recipient" }, n.recipient), " ",
            el("span", { class: `state ${n.status}`, "data-testid": "trace-notification-status" }, n.status),
            el("span", { class: "muted" },
              ` · ${n.subscription} · template ${n.template}` + (n.provider ? ` · ${n.provider}` : ""))),
          n.last_error ? el("p", { class: "error-text" }, n.last_error) : null,
          attemptsTable(n.attempt_log))));
    return el("div", {}, head, el("h3", {}, "Notifications"), notifications);
  }

  function attemptsTable(attempts) {
    if (!attempts.length) return el("p", { class: "note" }, "No attempts yet.");
    return el("table", { class: "data attempts", "data-testid": "trace-attempts" },
      el("caption", { class: "visually-hidden" }, "Attempts"),
      el("thead", {}, el("tr", {},
        el("th", { scope: "col" }, "#"), el("th", { scope: "col" }, "Started"),
        el("th", { scope: "col" }, "Took"), el("th", { scope: "col" }, "Outcome"),
        el("th", { scope: "col" }, "Error"))),
      el("tbody", {}, attempts.map((a) =>
        el("tr", { "data-testid": "trace-attempt" },
          el("td", { class: "num" }, a.number),
          el("td", {}, moment(a.started_at)),
          el("td", {}, duration(a.duration_s)),
          el("td", {}, el("span", { class: `state ${a.outcome}` }, a.outcome)),
          el("td", { class: "error-text" }, a.error || "")))));
  }

  // ---- Start --------------------------------------------------------------

  $("window").addEventListener("change", () => { queueHistory.length = 0; refresh(); });
  $("live").addEventListener("change", () => { schedule(); refresh(); });
  $("refresh").addEventListener("click", refresh);
  $("retry-all").addEventListener("click", retryAll);
  $("trace-form").addEventListener("submit", (e) => {
    e.preventDefault();
    trace($("trace-id").value, false);
  });
  document.addEventListener("visibilitychange", () => { schedule(); if (!document.hidden) refresh(); });
  document.addEventListener("keydown", (e) => {
    // "r" refreshes, unless typing in a field.
    const typing = e.target.closest && e.target.closest("input, select, textarea");
    if (e.key === "r" && !typing && !e.ctrlKey && !e.metaKey && !e.altKey) {
      e.preventDefault();
      refresh();
    }
  });
  const linked = /^#trace=(.+)$/.exec(window.location.hash);
  if (linked) {
    $("trace-id").value = decodeURIComponent(linked[1]);
    trace($("trace-id").value, false);
  }
  schedule();
  refresh();
})();
