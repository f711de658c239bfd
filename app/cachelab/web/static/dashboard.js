/* Live dashboard for the caching lab. Plain JS, no build step: it draws.
 *
 * Two polls: /api/dashboard (about once a second: health, the breaker, tier 1,
 * Redis INFO, the keys) and /api/dashboard/series (every 2 s: every figure over
 * time, computed by Prometheus from the scraped counters with the PromQL that
 * the answer carries, see cachelab/web/promql.py and prometheus/rules.yml).
 * Nothing here computes a rate, a ratio or a percentile; history lives in
 * Prometheus, so it survives a reload.
 */
(function () {
  "use strict";

  var POLL_MS = 1000;
  var SERIES_MS = 2000;
  var MISSING_KEEP_MS = 60000;
  var RESULT_LABELS = {
    hit: "HIT", stale: "STALE (served, refresh started)", miss: "MISS (ran the slow query)",
    collapsed: "MISS collapsed (waited for another request's query)",
    bypass: "BYPASS (uncached baseline or Redis down)", local: "local copy (Redis down)",
    overloaded: "refused: 503 overloaded (too many misses in flight)",
    unavailable: "503 database unavailable (nothing cached)",
    edge: "Nginx's edge cache (never reached the app)"
  };
  var STATE_ICONS = {
    fresh: "✓", stale: "◐", refreshing: "↻", missing: "∅", tombstone: "†", "not-found": "⊘"
  };
  var MODES = ["ttl", "delete", "write-through", "notify"];
  var TIER_TEXT = {
    tracking: "✓ coherent (tracking)", fallback: "⚠ bounded (no tracking)",
    down: "⚠ reconnecting", starting: "starting", off: "off (CACHE_TRACKING=off)"
  };

  var root = document.getElementById("dashboard");
  if (!root) { return; }

  var latest = null;    // last snapshot received
  var latestAt = 0;     // performance.now() when it arrived
  var lastOk = null;    // Date of the last successful poll
  var pollFailure = null;
  var series = null;    // last /api/dashboard/series answer
  var keyMemory = {};   // key -> {row, seen}
  var charts = {};

  function $(id) { return document.getElementById(id); }

  function setText(id, text) {
    var node = $(id);
    if (node && node.textContent !== text) { node.textContent = text; }
  }

  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (name) {
      if (name === "text") { node.textContent = attrs[name]; } else { node.setAttribute(name, attrs[name]); }
    });
    (children || []).forEach(function (child) { node.appendChild(child); });
    return node;
  }

  function row(cells, header) {
    return el("tr", {}, cells.map(function (cell, i) {
      return el(i === 0 && header ? "th" : "td", i === 0 && header ? { scope: "row", text: cell } : { text: cell });
    }));
  }

  // -- formatting ------------------------------------------------------------
  function missing(v) { return v === null || v === undefined || !isFinite(v); }

  function fmtMs(seconds) {
    if (missing(seconds)) { return "—"; }
    var ms = seconds * 1000;
    if (ms >= 1000) { return (ms / 1000).toFixed(2) + " s"; }
    if (ms >= 100) { return ms.toFixed(0) + " ms"; }
    if (ms >= 10) { return ms.toFixed(1) + " ms"; }
    return ms.toFixed(2) + " ms";
  }

  function fmtRate(value) {
    if (missing(value)) { return "—"; }
    if (value >= 100) { return value.toFixed(0); }
    if (value >= 10) { return value.toFixed(1); }
    return value.toFixed(2);
  }

  function fmtCount(value) { return missing(value) ? "—" : Math.round(value).toLocaleString("en"); }

  function fmtBytes(bytes) {
    if (missing(bytes)) { return "—"; }
    if (bytes >= 1 << 30) { return (bytes / (1 << 30)).toFixed(1) + " GiB"; }
    if (bytes >= 1 << 20) { return (bytes / (1 << 20)).toFixed(1) + " MiB"; }
    return (bytes / 1024).toFixed(0) + " KiB";
  }

  // A histogram bucket [lower, upper]: where a quantile lies, not a made-up point.
  function fmtBucket(bounds) {
    if (!bounds) { return "—"; }
    return bounds[1] === null ? "> " + fmtMs(bounds[0]) : "in (" + fmtMs(bounds[0]) + ", " + fmtMs(bounds[1]) + "]";
  }

  // -- reading the series answer --------------------------------------------
  function figure(name, label) {
    var found = series && series.figures ? series.figures[name] : null;
    if (!found) { return null; }
    var value = found[label === undefined ? "" : label];
    return value === undefined ? null : value;
  }

  function lastPoint(name) {
    var points = series && series.charts && series.charts[name] ? series.charts[name].points : [];
    for (var i = points.length - 1; i >= 0; i--) {
      if (points[i][1] !== null) { return points[i][1]; }
    }
    return null;
  }

  // -- snapshot: health, breaker, tier 1, banners ----------------------------
  function renderSnapshot(snap) {
    setText("strategy", snap.strategy);
    setText("ttl", String(snap.ttl_seconds));
    var redis = snap.health.redis, pg = snap.health.postgres;
    setText("redis-health", redis.status === "up" ? "✓ up · " + redis.latency_ms.toFixed(1) + " ms" : "✗ down");
    setText("pg-health", pg.status === "up" ? "✓ up · " + pg.latency_ms.toFixed(1) + " ms" : "✗ down");
    setText("pg-detail", pg.status === "up" ? "ping round trip" : (pg.error || "not answering"));
    var tier = redis.memory_tier || {};
    setText("memory-tier", tier.enabled ? (TIER_TEXT[tier.mode] || tier.mode) : "not used");
    setText("memory-tier-detail", tier.enabled ? (tier.bound || "") : "strategy " + snap.strategy + " reads Redis every time");
    $("memory-tier").className = "big " + (!tier.enabled || tier.mode === "tracking" ? "ok" : "warn");
    var state = snap.breaker.state;
    setText("breaker", { closed: "✓ closed", "half-open": "⚠ half-open (probing Redis)", open: "✗ open (requests skip Redis)" }[state] || state);
    $("redis-health").className = "big " + (redis.status === "up" ? "ok" : "bad");
    $("pg-health").className = "big " + (pg.status === "up" ? "ok" : "bad");

    var banners = [];
    if (redis.status !== "up") {
      banners.push("The app cannot reach Redis (" + (redis.error || "no answer") + "). Requests fall back to PostgreSQL, one query per key and worker; the key list is unavailable.");
    } else if (state !== "closed") {
      banners.push("The app's Redis circuit breaker is " + state + ": some requests skip Redis for a few seconds.");
    }
    if (pg.status !== "up") {
      banners.push("The app cannot reach PostgreSQL (" + (pg.error || "no answer") + "). Only keys still in Redis can be served; cold keys get a 503.");
    }
    renderBanners(banners);
    renderRedisPanel(snap.redis_info || {});
    renderKeys(snap);
  }

  function renderBanners(list) {
    var box = $("banners");
    var text = list.join("\n");
    if (box.getAttribute("data-text") === text) { return; }
    box.setAttribute("data-text", text);
    box.replaceChildren.apply(box, list.map(function (msg) {
      return el("p", { "class": "banner bad", role: "alert", text: "⚠ " + msg });
    }));
  }

  function row(cells, header) {
    return el("tr", {}, cells.map(function (cell, i) {
      return el(i === 0 && header ? "th" : "td", i === 0 && header ? { scope: "row", text: cell } : { text: cell });
    }));
  }

  function renderRedisPanel(info) {
    if (info.status !== "ok") {
      setText("redis-memory", "unavailable");
      $("redis-info-body").replaceChildren(row(["Redis", "unavailable"], true));
      return;
    }
    var limit = info.maxmemory || 0, used = info.used_memory || 0;
    setText("redis-memory", fmtBytes(used) + (limit ? " of " + fmtBytes(limit) + " (" + (100 * used / limit).toFixed(0) + " %)" : " (no maxmemory)"));
    var meter = $("redis-memory-meter");
    if (meter) { meter.value = limit ? Math.min(1, used / limit) : 0; }
    var perS = function (name) { var v = figure(name); return missing(v) ? "—" : fmtRate(v) + "/s"; };
    var hits = figure("keyspace_hits_per_s"), misses = figure("keyspace_misses_per_s");
    $("redis-info-body").replaceChildren.apply($("redis-info-body"), [
      row(["Engine", (info.valkey_version ? "Valkey " + info.valkey_version : "Redis " + (info.redis_version || "?")) +
        " · " + (info.maxmemory_policy || "")], true),
      row(["Evicted keys", perS("evictions_per_s") + " · " + fmtCount(info.evicted_keys || 0) + " since start"], true),
      row(["Keyspace hits / misses", perS("keyspace_hits_per_s") + " / " + perS("keyspace_misses_per_s") +
        (hits + misses > 0 ? " (" + (100 * hits / (hits + misses)).toFixed(0) + " % hits)" : "")], true),
      row(["Clients", fmtCount(info.connected_clients || 0) + " connected, " +
        fmtCount(info.tracking_clients || 0) + " tracking (tier-1 listeners)"], true)
    ]);
  }

  function renderKeys(snap) {
    var keys = snap.keys, now = performance.now();
    if (keys.status !== "ok") {
      setText("keys-summary", "Redis is unavailable: key states cannot be read.");
      $("keys-body").replaceChildren(el("tr", {}, [el("td", { colspan: "6", "class": "muted", text: "unavailable" })]));
      return;
    }
    var present = {};
    keys.items.forEach(function (item) {
      present[item.key] = true;
      keyMemory[item.key] = { row: item, seen: now };
    });
    // Keys this page saw before that are gone now expired or were evicted.
    if (keys.total <= keys.items.length) {
      Object.keys(keyMemory).forEach(function (k) {
        if (present[k]) { return; }
        var mem = keyMemory[k];
        if (now - mem.seen > MISSING_KEEP_MS) { delete keyMemory[k]; return; }
        mem.row = Object.assign({}, mem.row, { state: "missing", ttl_s: null, expires_s: null, gone: true });
      });
    }
    var maxRows = parseInt(root.getAttribute("data-max-keys"), 10) || 20;
    var rows = Object.keys(keyMemory).map(function (k) { return keyMemory[k].row; });
    rows = rows.filter(function (r) { return !r.gone; }).concat(rows.filter(function (r) { return r.gone; }))
      .slice(0, maxRows);
    rows.sort(function (a, b) { return (a.item === null) - (b.item === null) || (a.item || 0) - (b.item || 0) || (a.key < b.key ? -1 : 1); });
    var summary = keys.total === 0 && !rows.length
      ? "No keys cached yet: send a request."
      : fmtCount(keys.total) + " key" + (keys.total === 1 ? "" : "s") + " in the namespace" +
        (keys.filling ? ", " + keys.filling + " being filled" : "") +
        (keys.total > keys.items.length ? "; showing " + keys.items.length : "") + ".";
    setText("keys-summary", summary);
    if (!rows.length) {
      $("keys-body").replaceChildren(el("tr", {}, [el("td", { colspan: "6", "class": "muted", text: "no keys yet" })]));
      return;
    }
    $("keys-body").replaceChildren.apply($("keys-body"), rows.map(function (r) {
      var tr = el("tr", { "data-key": r.key, "data-state": r.state }, [
        el("td", { text: r.item === null || r.item === undefined ? "?" : String(r.item) }),
        el("td", { "class": "state " + r.state, text: STATE_ICONS[r.state] + " " + r.state }),
        el("td", { "class": "ttl", text: "" }),
        el("td", { text: r.age_s === undefined || r.gone ? "—" : r.age_s.toFixed(0) + " s" }),
        el("td", { text: r.query_s === undefined ? "—" : fmtMs(r.query_s) }),
        el("td", {}, [el("code", { text: r.key })])
      ]);
      return tr;
    }));
    tickTtls();
  }

  // Count TTLs down between polls.
  function tickTtls() {
    if (!latest) { return; }
    var elapsed = (performance.now() - latestAt) / 1000;
    Array.prototype.forEach.call(document.querySelectorAll("#keys-body tr[data-key]"), function (tr) {
      var mem = keyMemory[tr.getAttribute("data-key")];
      if (!mem) { return; }
      var r = mem.row, cell = tr.querySelector(".ttl"), text;
      if (r.state === "missing") {
        text = r.gone ? "expired or evicted" : "being filled";
      } else if (r.state === "tombstone") {
        text = "deleted by a write (v" + r.version + "), gone in " +
          Math.max(0, r.expires_s - elapsed).toFixed(0) + " s";
      } else {
        var left = r.ttl_s - elapsed;
        if (left > 0) {
          text = left.toFixed(1) + " s left";
        } else {
          text = "stale for " + (-left).toFixed(1) + " s";
          if (r.expires_s !== null && r.expires_s !== undefined) {
            text += ", gone in " + Math.max(0, r.expires_s - elapsed).toFixed(0) + " s";
          }
        }
      }
      if (cell.textContent !== text) { cell.textContent = text; }
    });
  }

  // -- series: tiles, tables, charts ------------------------------------------
  function renderSeries() {
    var off = series && series.status !== "ok";
    var box = $("series-status");
    box.hidden = !off;
    if (off) {
      setText("series-status", (series.status === "off" ? "Charts are off: " : "Prometheus is unavailable: ") + series.reason);
      return;
    }
    var link = $("prometheus-link");
    if (series.prometheus_ui) { link.href = series.prometheus_ui + "/graph"; link.hidden = false; }
    var ratio = lastPoint("hit_ratio"), rps = lastPoint("requests");
    var seen = figure("results_total") !== null || Object.keys(series.figures.results_total || {}).length > 0;
    setText("hit-ratio", missing(ratio) ? (seen ? "— (no lookups)" : "no data yet") : (100 * ratio).toFixed(0) + " %");
    setText("rps", missing(rps) ? "no data yet" : fmtRate(rps));
    setText("rps-detail", fmtRate(lastPoint("slow_queries")) + " slow queries/s (PostgreSQL's count)");
    var p50 = lastPoint("p50");
    setText("latency", missing(p50) ? "no data yet" : ["p50", "p95", "p99"].map(function (q) {
      return q + " " + fmtMs(lastPoint(q));
    }).join("\n"));
    renderTables();
    renderCharts();
  }

  function renderTables() {
    var f = series.figures, totals = f.results_total || {}, recent = f.results_5m || {};
    var any = Object.keys(totals).length > 0;
    var t = function (text) { return any ? text : "no data yet"; };
    var buckets = f.slow_quantile_buckets || {};
    $("slow-body").replaceChildren.apply($("slow-body"), [
      row(["Slow queries (PostgreSQL's count)", fmtCount(figure("slow_calls_5m")), fmtCount(figure("slow_calls_total"))], true),
      row(["Mean duration (PostgreSQL, exact)", fmtMs(figure("slow_mean_5m")), "—"], true),
      row(["Fastest · slowest (PostgreSQL, exact)", "—", fmtMs(figure("slow_min")) + " · " + fmtMs(figure("slow_max"))], true),
      row(["p50 · p95 (the app's histogram bucket)", fmtBucket(buckets.p50) + " · " + fmtBucket(buckets.p95), "—"], true)
    ]);
    $("results-body").replaceChildren.apply($("results-body"), Object.keys(RESULT_LABELS).map(function (k) {
      return row([RESULT_LABELS[k], t(fmtCount(recent[k] || 0)), t(fmtCount(totals[k] || 0))], true);
    }));
    $("staleness-body").replaceChildren.apply($("staleness-body"), MODES.map(function (mode) {
      var share = figure("item_stale_share", mode);
      return row([mode,
        missing(figure("item_reads_per_s", mode)) ? "—" : fmtRate(figure("item_reads_per_s", mode)) + "/s",
        missing(share) ? "—" : (100 * share).toFixed(1) + " %",
        fmtMs(figure("staleness_p50", mode)) + " · " + fmtMs(figure("staleness_p99", mode))], true);
    }));
  }

  function axisStroke() {
    return getComputedStyle(document.body).color || "#555";
  }

  function isPowerOf10(v) {
    return v !== null && v > 0 && Math.abs(Math.log10(v) - Math.round(Math.log10(v))) < 1e-9;
  }

  function makeChart(id, series, yScale, yFormat) {
    var fig = $(id), box = fig.querySelector(".plot");
    var stroke = axisStroke();
    var grid = { stroke: "rgba(128,128,128,0.2)", width: 1 };
    // On the log scale, grid lines and ticks at powers of ten only.
    var yGrid = yScale.distr !== 3 ? grid : { stroke: grid.stroke, width: 1, filter: function (u, splits) {
      return splits.map(function (v) { return isPowerOf10(v) ? v : null; });
    } };
    var opts = {
      width: Math.max(200, box.clientWidth), height: 170,
      series: [{}].concat(series),
      // At least a minute wide, so the first points do not stretch over years.
      scales: { x: { time: true, range: function (u, min, max) {
        return min === null || max === null ? [0, 1] : [Math.min(min, max - 60), max];
      } }, y: yScale },
      axes: [
        { stroke: stroke, grid: grid, ticks: grid, space: 70, values: function (u, vals) {
          return vals.map(function (v) { return new Date(v * 1000).toLocaleTimeString([], { hour12: false }); });
        } },
        { stroke: stroke, grid: yGrid, ticks: yGrid, size: 56, values: function (u, vals) { return vals.map(yFormat); } }
      ],
      legend: { show: true, live: false },
      cursor: { drag: { x: false, y: false } }
    };
    var chart = new window.uPlot(opts, [[]].concat(series.map(function () { return []; })), box);
    if (window.ResizeObserver) {
      new ResizeObserver(function () {
        chart.setSize({ width: Math.max(200, box.clientWidth), height: 170 });
      }).observe(box);
    }
    return { chart: chart, fig: fig };
  }

  function initCharts() {
    if (!window.uPlot) { return; }
    charts.hits = makeChart("chart-hits", [
      { label: "hit ratio %", stroke: "#1a7f37", width: 2, fill: "rgba(26,127,55,0.12)" }
    ], { range: [0, 100] }, function (v) { return v + " %"; });
    charts.rps = makeChart("chart-rps", [
      { label: "requests/s", stroke: "#0969da", width: 2 },
      { label: "slow queries/s", stroke: "#cf222e", width: 2, dash: [8, 4] }
    ], { range: function (u, min, max) { return [0, Math.max(1, max * 1.1)]; } }, function (v) { return String(v); });
    charts.latency = makeChart("chart-latency", [
      { label: "p50", stroke: "#1a7f37", width: 2 },
      { label: "p95", stroke: "#9a6700", width: 2, dash: [8, 4] },
      { label: "p99", stroke: "#cf222e", width: 2, dash: [2, 3] }
    ], { distr: 3, log: 10 }, function (v) {
      if (!isPowerOf10(v)) { return ""; }
      return v >= 1000 ? (v / 1000) + " s" : v + " ms";
    });
  }

  // Prometheus' points of `names` on one time axis, each value times `scale`.
  function updateChart(entry, names, scale, floor) {
    if (!entry) { return; }
    var times = {}, maps = names.map(function (name) {
      var map = {};
      ((series.charts[name] || {}).points || []).forEach(function (p) { times[p[0]] = true; map[p[0]] = p[1]; });
      return map;
    });
    var xs = Object.keys(times).map(Number).sort(function (a, b) { return a - b; });
    var ready = maps.some(function (map) { return Object.keys(map).some(function (t) { return map[t] !== null; }); });
    entry.fig.classList.toggle("has-data", ready);
    entry.fig.querySelector("figcaption").title = names.map(function (n) { return series.charts[n].expr; }).join("\n");
    if (!ready) { return; }
    entry.chart.setData([xs].concat(maps.map(function (map) {
      return xs.map(function (t) {
        var v = map[t];
        return v === null || v === undefined ? null : Math.max(v * scale, floor);
      });
    })));
  }

  function renderCharts() {
    updateChart(charts.hits, ["hit_ratio"], 100, 0);
    updateChart(charts.rps, ["requests", "slow_queries"], 1, 0);
    updateChart(charts.latency, ["p50", "p95", "p99"], 1000, 0.01);
  }

  // -- polling ---------------------------------------------------------------
  function renderUpdated() {
    var text;
    if (pollFailure) {
      text = "⚠ Cannot reach the app (" + pollFailure + ")" + (lastOk ? "; last update " + lastOk.toLocaleTimeString() : "") + ". Retrying every second.";
    } else if (lastOk) {
      var up = figure("app_containers");
      text = "Updated " + lastOk.toLocaleTimeString() + " · refreshes every second" +
        (missing(up) ? "" : " · " + up + " app container" + (up === 1 ? "" : "s") + " up (Prometheus)");
    } else {
      text = "Waiting for the first snapshot…";
    }
    setText("updated", text);
    $("updated").className = pollFailure ? "bad" : "muted";
  }

  function getJson(url, timeoutMs) {
    var controller = window.AbortController ? new AbortController() : null;
    var timer = controller ? setTimeout(function () { controller.abort(); }, timeoutMs || 5000) : null;
    return fetch(url, { cache: "no-store", headers: { Accept: "application/json" }, signal: controller ? controller.signal : undefined })
      .then(function (response) {
        return response.json().then(function (body) { return { ok: response.ok, status: response.status, body: body }; },
          function () { throw new Error("HTTP " + response.status); });
      })
      .then(function (result) { if (timer) { clearTimeout(timer); } return result; },
        function (err) { if (timer) { clearTimeout(timer); } throw err; });
  }

  function poll() {
    getJson("/api/dashboard")
      .then(function (result) {
        if (!result.ok) { throw new Error("HTTP " + result.status); }
        pollFailure = null;
        lastOk = new Date();
        latest = result.body;
        latestAt = performance.now();
        renderSnapshot(result.body);
      })
      .catch(function (err) {
        pollFailure = err && err.name === "AbortError" ? "no answer within 5 s" : (err && err.message) || "error";
      })
      .then(function () {
        renderUpdated();
        setTimeout(poll, POLL_MS);
      });
  }

  function pollSeries() {
    getJson("/api/dashboard/series", 10000)
      .then(function (result) {
        series = result.body && result.body.status ? result.body
          : { status: "unavailable", reason: "HTTP " + result.status };
        renderSeries();
      }, function () { /* the snapshot poll reports the app unreachable */ })
      .then(function () { setTimeout(pollSeries, SERIES_MS); });
  }

  // -- try it ----------------------------------------------------------------
  function classify(body) {
    if (!body || !body.cache) { return "error"; }
    if (body.cache === "MISS") { return body.detail === "collapsed" ? "collapsed" : "query"; }
    return body.cache;
  }

  var CLASS_LABELS = {
    query: "MISS ran the slow query", collapsed: "MISS collapsed (waited for that query)",
    HIT: "HIT", STALE: "STALE", BYPASS: "BYPASS", error: "failed"
  };

  // One GET; a request that got no answer at all (connection dropped, e.g.
  // the browser saw a network change) is sent once more, and says so.
  function getVersion(item, retried) {
    var url = "/api/version" + (item === undefined ? "" : "?item=" + item);
    return fetch(url, { cache: "no-store", headers: { Accept: "application/json" } })
      .then(function (response) {
        return response.json().then(function (body) {
          return { ok: response.ok, status: response.status, body: body, retried: !!retried };
        }, function () { return { ok: false, status: response.status, body: null, retried: !!retried }; });
      }, function () {
        return retried ? { ok: false, status: 0, body: null, retried: true } : getVersion(item, true);
      });
  }

  function setBusy(busy) {
    $("send-one").disabled = busy;
    $("send-burst").disabled = busy;
  }

  function sendOne() {
    setBusy(true);
    setText("try-result", "Sending one request…");
    var started = performance.now();
    getVersion().then(function (res) {
      var ms = performance.now() - started;
      if (!res.ok) {
        setText("try-result", "One request: HTTP " + res.status + (res.body && res.body.message ? " — " + res.body.message : "") + ".");
        return;
      }
      var body = res.body, kind = classify(body);
      setText("try-result", "One request for item " + body.item + ": " + CLASS_LABELS[kind] +
        (body.detail && kind !== "collapsed" ? " (" + body.detail + ")" : "") + ", from " + body.source +
        ", in " + ms.toFixed(0) + " ms.");
    }).then(function () { setBusy(false); });
  }

  function sendBurst() {
    var n = parseInt($("burst-size").value, 10);
    if (!(n >= 2 && n <= 50)) { n = 20; $("burst-size").value = "20"; }
    // A fresh item from 8000-8999, a range no Locust scenario uses: its key is cold.
    var item = 8000 + Math.floor(Math.random() * 1000);
    setBusy(true);
    setText("try-result", "Sending " + n + " requests for item " + item + " at once…");
    var started = performance.now();
    var requests = [];
    for (var i = 0; i < n; i++) { requests.push(getVersion(item)); }
    Promise.all(requests).then(function (results) {
      var seconds = (performance.now() - started) / 1000;
      var tally = {}, statuses = {}, retried = 0;
      results.forEach(function (res) {
        if (res.retried) { retried += 1; }
        var kind = res.ok ? classify(res.body) : "error";
        tally[kind] = (tally[kind] || 0) + 1;
        if (kind === "error") {
          var why = res.status ? "HTTP " + res.status : "no answer";
          statuses[why] = (statuses[why] || 0) + 1;
        }
      });
      var parts = ["query", "collapsed", "HIT", "STALE", "BYPASS", "error"].filter(function (k) { return tally[k]; })
        .map(function (k) {
          return tally[k] + " " + CLASS_LABELS[k] + (k === "error" ? " (" + Object.keys(statuses).map(function (w) {
            return statuses[w] + "× " + w;
          }).join(", ") + ")" : "");
        });
      var text = n + " requests for item " + item + " (a cold key) in " + seconds.toFixed(2) + " s: " + parts.join(" · ") + ".";
      if (retried) { text += " (" + retried + " sent twice: the first attempt got no answer.)"; }
      if (n > 6 && tally.HIT) {
        text += " Browsers send at most 6 requests to one host at a time, so the later ones arrived after the fill and were HITs.";
      }
      setText("try-result", text);
    }).then(function () { setBusy(false); });
  }

  // -- start -----------------------------------------------------------------
  $("send-one").addEventListener("click", sendOne);
  $("send-burst").addEventListener("click", sendBurst);
  initCharts();
  setInterval(tickTtls, 250);
  poll();
  pollSeries();
}());
