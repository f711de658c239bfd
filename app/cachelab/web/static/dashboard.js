/* Live dashboard for the caching lab. Plain JS, no build step.
 *
 * Polls /api/dashboard (cumulative counters and histogram buckets from the
 * app's merged Prometheus registry) about once a second and derives
 * everything over time here: rates and ratios from the difference of two
 * snapshots, percentiles by interpolating inside histogram buckets as
 * Prometheus' histogram_quantile() does. Counters are per app container, so
 * differences are taken per instance and then added up. History (5 minutes)
 * lives only in this page.
 */
(function () {
  "use strict";

  var POLL_MS = 1000;
  var WINDOW_S = 10;        // tiles and chart points: change over the last 10 s
  var HISTORY_S = 300;      // charts and "last 5 min" tables
  var INSTANCE_STALE_MS = 15000;
  var MISSING_KEEP_MS = 60000;
  var HIT_RESULTS = ["hit", "stale", "local"];
  var RESULT_LABELS = {
    hit: "HIT", stale: "STALE (served, refresh started)", miss: "MISS (ran the slow query)",
    collapsed: "MISS collapsed (waited for another request's query)",
    bypass: "BYPASS (uncached baseline or Redis down)", local: "local copy (Redis down)",
    overloaded: "refused: 503 overloaded (too many misses in flight)",
    unavailable: "503 database unavailable (nothing cached)"
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

  var instances = {};   // id -> {snaps: [...], seen: ms}
  var points = [];      // chart points
  var seenTraffic = false;
  var latest = null;    // last snapshot received (any instance)
  var latestAt = 0;     // performance.now() when it arrived
  var lastOk = null;    // Date of the last successful poll
  var pollFailure = null;
  var keyMemory = {};   // key -> {row, seen}
  var charts = {};

  function $(id) { return document.getElementById(id); }

  function setText(id, text) {
    var el = $(id);
    if (el && el.textContent !== text) { el.textContent = text; }
  }

  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (name) {
      if (name === "text") { node.textContent = attrs[name]; } else { node.setAttribute(name, attrs[name]); }
    });
    (children || []).forEach(function (child) { node.appendChild(child); });
    return node;
  }

  // -- numbers ---------------------------------------------------------------
  function fmtMs(seconds) {
    if (seconds === null || seconds === undefined || !isFinite(seconds)) { return "—"; }
    var ms = seconds * 1000;
    if (ms >= 1000) { return (ms / 1000).toFixed(2) + " s"; }
    if (ms >= 100) { return ms.toFixed(0) + " ms"; }
    if (ms >= 10) { return ms.toFixed(1) + " ms"; }
    return ms.toFixed(2) + " ms";
  }

  function fmtRate(value) {
    if (value >= 100) { return value.toFixed(0); }
    if (value >= 10) { return value.toFixed(1); }
    return value.toFixed(2);
  }

  function fmtCount(value) { return Math.round(value).toLocaleString("en"); }

  function sumCacheRequests(snap) {
    var total = 0;
    Object.keys(snap.cache_requests).forEach(function (k) { total += snap.cache_requests[k]; });
    return total;
  }

  function hitsOf(snap) {
    return HIT_RESULTS.reduce(function (acc, k) { return acc + (snap.cache_requests[k] || 0); }, 0);
  }

  function bucketMap(hist) {
    var map = {};
    hist.buckets.forEach(function (pair) { map[pair[0] === null ? "+Inf" : String(pair[0])] = pair[1]; });
    return map;
  }

  function addBuckets(acc, cur, base) {
    var c = bucketMap(cur), b = base ? bucketMap(base) : {};
    Object.keys(c).forEach(function (le) { acc[le] = (acc[le] || 0) + c[le] - (b[le] || 0); });
  }

  // histogram_quantile(): linear interpolation inside the bucket holding the rank.
  function quantile(q, buckets) {
    var bounds = Object.keys(buckets).map(function (le) {
      return { le: le === "+Inf" ? Infinity : parseFloat(le), count: buckets[le] };
    }).sort(function (a, b) { return a.le - b.le; });
    if (!bounds.length) { return null; }
    var total = bounds[bounds.length - 1].count;
    if (!(total > 0)) { return null; }
    var rank = q * total;
    for (var i = 0; i < bounds.length; i++) {
      if (bounds[i].count >= rank) {
        if (bounds[i].le === Infinity) { return i > 0 ? bounds[i - 1].le : null; }
        var lower = i > 0 ? bounds[i - 1].le : 0;
        var below = i > 0 ? bounds[i - 1].count : 0;
        var inBucket = bounds[i].count - below;
        if (inBucket <= 0) { return bounds[i].le; }
        return lower + (bounds[i].le - lower) * (rank - below) / inBucket;
      }
    }
    return null;
  }

  // For every live app container: its latest snapshot, the one about `span`
  // seconds before it, and the seconds between them.
  function eachWindow(span, visit) {
    var now = performance.now();
    Object.keys(instances).forEach(function (id) {
      var inst = instances[id];
      if (now - inst.seen > INSTANCE_STALE_MS) { return; }
      var snaps = inst.snaps, cur = snaps[snaps.length - 1], base = null;
      for (var i = snaps.length - 2; i >= 0; i--) {
        base = snaps[i];
        if (cur.server_time - snaps[i].server_time >= span) { break; }
      }
      if (!base) { return; }
      var dt = cur.server_time - base.server_time;
      if (dt > 0) { visit(cur, base, dt); }
    });
  }

  // The change over `span` seconds, added over every live instance.
  function aggregate(span) {
    var agg = {
      lookups: 0, hits: 0, requests: 0, requestRate: 0, slow: 0, slowRate: 0, slowSum: 0,
      latency: {}, slowBuckets: {}, results: {}, covered: false
    };
    eachWindow(span, function (cur, base, dt) {
      agg.covered = true;
      agg.lookups += sumCacheRequests(cur) - sumCacheRequests(base);
      agg.hits += hitsOf(cur) - hitsOf(base);
      Object.keys(cur.cache_requests).forEach(function (k) {
        agg.results[k] = (agg.results[k] || 0) + cur.cache_requests[k] - (base.cache_requests[k] || 0);
      });
      var dReq = cur.lookups.count - base.lookups.count;
      agg.requests += dReq;
      agg.requestRate += dReq / dt;
      addBuckets(agg.latency, cur.lookups, base.lookups);
      ["ok", "error"].forEach(function (outcome) {
        var c = cur.slow_query[outcome], b = base.slow_query[outcome];
        if (!c) { return; }
        var dCalls = c.count - (b ? b.count : 0);
        agg.slow += dCalls;
        agg.slowRate += dCalls / dt;
        agg.slowSum += c.sum - (b ? b.sum : 0);
        addBuckets(agg.slowBuckets, c, b);
      });
    });
    return agg;
  }

  // Redis INFO counters and item staleness over `span`, for the Redis and staleness panels.
  function aggregateExtras(span) {
    var out = { evicted: 0, hits: 0, misses: 0, dt: 0, modes: {} };
    eachWindow(span, function (cur, base, dt) {
      var ci = cur.redis_info || {}, bi = base.redis_info || {};
      if (ci.status === "ok" && bi.status === "ok" && !out.dt) {  // one server: count it once
        out.dt = dt;
        out.evicted = Math.max(0, ci.evicted_keys - bi.evicted_keys);
        out.hits = Math.max(0, ci.keyspace_hits - bi.keyspace_hits);
        out.misses = Math.max(0, ci.keyspace_misses - bi.keyspace_misses);
      }
      MODES.forEach(function (mode) {
        var m = out.modes[mode] || (out.modes[mode] = { fresh: 0, stale: 0, buckets: {}, dt: 0 });
        var cr = (cur.item_reads || {})[mode] || {}, br = (base.item_reads || {})[mode] || {};
        m.fresh += (cr.fresh || 0) - (br.fresh || 0);
        m.stale += (cr.stale || 0) - (br.stale || 0);
        m.dt = Math.max(m.dt, dt);
        var ch = (cur.item_staleness || {})[mode], bh = (base.item_staleness || {})[mode];
        if (ch) { addBuckets(m.buckets, ch, bh); }
      });
    });
    return out;
  }

  function fmtBytes(bytes) {
    if (bytes === undefined || bytes === null) { return "—"; }
    if (bytes >= 1 << 30) { return (bytes / (1 << 30)).toFixed(1) + " GiB"; }
    if (bytes >= 1 << 20) { return (bytes / (1 << 20)).toFixed(1) + " MiB"; }
    return (bytes / 1024).toFixed(0) + " KiB";
  }

  function renderRedisPanel(snap) {
    var info = snap.redis_info || {}, x = aggregateExtras(WINDOW_S);
    if (info.status !== "ok") {
      setText("redis-memory", "unavailable");
      $("redis-info-body").replaceChildren(row(["Redis", "unavailable"], true));
      return;
    }
    var limit = info.maxmemory || 0;
    var used = info.used_memory || 0;
    setText("redis-memory", fmtBytes(used) + (limit ? " of " + fmtBytes(limit) + " (" + (100 * used / limit).toFixed(0) + " %)" : " (no maxmemory)"));
    var meter = $("redis-memory-meter");
    if (meter) { meter.value = limit ? Math.min(1, used / limit) : 0; }
    var perS = function (n) { return x.dt ? fmtRate(n / x.dt) + "/s" : "—"; };
    var lookups = x.hits + x.misses;
    $("redis-info-body").replaceChildren.apply($("redis-info-body"), [
      row(["Engine", (info.valkey_version ? "Valkey " + info.valkey_version : "Redis " + (info.redis_version || "?")) +
        " · " + (info.maxmemory_policy || "")], true),
      row(["Evicted keys", perS(x.evicted) + " · " + fmtCount(info.evicted_keys || 0) + " since start"], true),
      row(["Keyspace hits / misses", perS(x.hits) + " / " + perS(x.misses) +
        (lookups ? " (" + (100 * x.hits / lookups).toFixed(0) + " % hits)" : "")], true),
      row(["Clients", fmtCount(info.connected_clients || 0) + " connected, " +
        fmtCount(info.tracking_clients || 0) + " tracking (tier-1 listeners)"], true)
    ]);
  }

  function renderStaleness() {
    var x = aggregateExtras(HISTORY_S);
    var rows = MODES.map(function (mode) {
      var m = x.modes[mode] || { fresh: 0, stale: 0, buckets: {}, dt: 0 };
      var reads = m.fresh + m.stale;
      return row([mode,
        m.dt ? fmtRate(reads / m.dt) + "/s" : "—",
        reads ? (100 * m.stale / reads).toFixed(1) + " %" : "—",
        m.stale ? fmtMs(quantile(0.5, m.buckets)) + " · " + fmtMs(quantile(0.99, m.buckets)) : "—"], true);
    });
    $("staleness-body").replaceChildren.apply($("staleness-body"), rows);
  }

  function latestTotals() {
    var totals = { results: {}, slow: 0, slowSum: 0, slowBuckets: {} };
    var now = performance.now();
    Object.keys(instances).forEach(function (id) {
      var inst = instances[id];
      if (now - inst.seen > INSTANCE_STALE_MS) { return; }
      var cur = inst.snaps[inst.snaps.length - 1];
      Object.keys(cur.cache_requests).forEach(function (k) {
        totals.results[k] = (totals.results[k] || 0) + cur.cache_requests[k];
      });
      ["ok", "error"].forEach(function (outcome) {
        var c = cur.slow_query[outcome];
        if (!c) { return; }
        totals.slow += c.count;
        totals.slowSum += c.sum;
        addBuckets(totals.slowBuckets, c, null);
      });
    });
    return totals;
  }

  // -- snapshots -------------------------------------------------------------
  function ingest(snap) {
    var id = snap.instance || "app";
    var inst = instances[id] || (instances[id] = { snaps: [], seen: 0 });
    var last = inst.snaps[inst.snaps.length - 1];
    if (last && (snap.lookups.count < last.lookups.count || sumCacheRequests(snap) < sumCacheRequests(last))) {
      inst.snaps = [];  // the container restarted: its counters began again
    }
    inst.snaps.push(snap);
    inst.seen = performance.now();
    while (inst.snaps.length > 2 && snap.server_time - inst.snaps[1].server_time > HISTORY_S + WINDOW_S) {
      inst.snaps.shift();
    }
    latest = snap;
    latestAt = performance.now();

    var agg = aggregate(WINDOW_S);
    if (agg.covered && agg.requests + agg.lookups > 0) { seenTraffic = true; }
    if (agg.covered) {
      points.push({
        t: snap.server_time,
        ratio: agg.lookups > 0 ? 100 * agg.hits / agg.lookups : null,
        rps: seenTraffic ? agg.requestRate : null,
        slowRate: seenTraffic ? agg.slowRate : null,
        p50: quantile(0.5, agg.latency), p95: quantile(0.95, agg.latency), p99: quantile(0.99, agg.latency)
      });
      while (points.length && snap.server_time - points[0].t > HISTORY_S) { points.shift(); }
    }
    renderTiles(snap, agg);
    renderRedisPanel(snap);
    renderStaleness();
    renderTables();
    renderKeys(snap);
    renderCharts();
  }

  // -- rendering -------------------------------------------------------------
  function renderTiles(snap, agg) {
    setText("strategy", snap.strategy);
    setText("ttl", String(snap.ttl_seconds));
    if (!agg.covered || agg.lookups <= 0) {
      setText("hit-ratio", seenTraffic ? "— (no lookups)" : "no data yet");
      setText("hit-detail", "HIT + STALE ÷ all cache lookups");
    } else {
      setText("hit-ratio", (100 * agg.hits / agg.lookups).toFixed(0) + " %");
      setText("hit-detail", fmtCount(agg.hits) + " of " + fmtCount(agg.lookups) + " lookups from the cache");
    }
    if (!seenTraffic) {
      setText("rps", "no data yet");
      setText("latency", "no data yet");
    } else {
      setText("rps", fmtRate(agg.requestRate));
      setText("rps-detail", fmtRate(agg.slowRate) + " slow queries/s");
      setText("latency", agg.requests > 0
        ? [["p50", 0.5], ["p95", 0.95], ["p99", 0.99]].map(function (q) {
          return q[0] + " " + fmtMs(quantile(q[1], agg.latency));
        }).join("\n")
        : "— (no requests)");
    }

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

  function renderTables() {
    if (!Object.keys(instances).length) { return; }
    var win = aggregate(HISTORY_S), total = latestTotals();
    var totalLookups = Object.keys(total.results).reduce(function (acc, k) { return acc + total.results[k]; }, 0);
    // "no data yet" rather than zeros until there has been a request.
    var w = function (text) { return seenTraffic && win.covered ? text : "no data yet"; };
    var t = function (text) { return totalLookups + total.slow > 0 ? text : "no data yet"; };
    var slowRows = [
      row(["Slow query calls", w(fmtCount(win.slow)), t(fmtCount(total.slow))], true),
      row(["Mean duration", w(win.slow > 0 ? fmtMs(win.slowSum / win.slow) : "—"),
        t(total.slow > 0 ? fmtMs(total.slowSum / total.slow) : "—")], true),
      row(["p50 · p95 (bucket estimate)",
        w(win.slow > 0 ? fmtMs(quantile(0.5, win.slowBuckets)) + " · " + fmtMs(quantile(0.95, win.slowBuckets)) : "—"),
        t(total.slow > 0 ? fmtMs(quantile(0.5, total.slowBuckets)) + " · " + fmtMs(quantile(0.95, total.slowBuckets)) : "—")], true)
    ];
    $("slow-body").replaceChildren.apply($("slow-body"), slowRows);
    var resultRows = Object.keys(RESULT_LABELS).map(function (k) {
      return row([RESULT_LABELS[k], w(fmtCount(win.results[k] || 0)), t(fmtCount(total.results[k] || 0))], true);
    });
    $("results-body").replaceChildren.apply($("results-body"), resultRows);
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

  // -- charts ----------------------------------------------------------------
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

  function hasData(fields) {
    return points.some(function (p) {
      return fields.some(function (f) { return p[f] !== null && p[f] !== undefined; });
    });
  }

  function updateChart(entry, fields, scale) {
    if (!entry) { return; }
    var ready = hasData(fields);
    entry.fig.classList.toggle("has-data", ready);
    if (!ready) { return; }
    var data = [points.map(function (p) { return p.t; })];
    fields.forEach(function (f) {
      data.push(points.map(function (p) {
        var v = p[f];
        if (v === null || v === undefined) { return null; }
        return scale ? Math.max(v * scale, 0.01) : v;
      }));
    });
    entry.chart.setData(data);
  }

  function renderCharts() {
    updateChart(charts.hits, ["ratio"]);
    updateChart(charts.rps, ["rps", "slowRate"]);
    updateChart(charts.latency, ["p50", "p95", "p99"], 1000);
  }

  // -- polling ---------------------------------------------------------------
  function renderUpdated() {
    var text;
    if (pollFailure) {
      text = "⚠ Cannot reach the app (" + pollFailure + ")" + (lastOk ? "; last update " + lastOk.toLocaleTimeString() : "") + ". Retrying every second.";
    } else if (lastOk) {
      text = "Updated " + lastOk.toLocaleTimeString() + " · refreshes every second · " +
        Object.keys(instances).length + " app container" + (Object.keys(instances).length === 1 ? "" : "s") + " seen";
    } else {
      text = "Waiting for the first snapshot…";
    }
    setText("updated", text);
    $("updated").className = pollFailure ? "bad" : "muted";
  }

  function poll() {
    var controller = window.AbortController ? new AbortController() : null;
    var timer = controller ? setTimeout(function () { controller.abort(); }, 5000) : null;
    fetch("/api/dashboard", { cache: "no-store", headers: { Accept: "application/json" }, signal: controller ? controller.signal : undefined })
      .then(function (response) {
        if (!response.ok) { throw new Error("HTTP " + response.status); }
        return response.json();
      })
      .then(function (snap) {
        pollFailure = null;
        lastOk = new Date();
        ingest(snap);
      })
      .catch(function (err) {
        pollFailure = err && err.name === "AbortError" ? "no answer within 5 s" : (err && err.message) || "error";
      })
      .then(function () {
        if (timer) { clearTimeout(timer); }
        renderUpdated();
        setTimeout(poll, POLL_MS);
      });
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
}());
