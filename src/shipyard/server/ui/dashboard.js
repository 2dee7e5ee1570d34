// The dashboard: reads the server's JSON routes and draws them. No library; the DOM is
// built with textContent only (no data ever becomes markup).
"use strict";

(function () {
  const Charts = window.ShipyardCharts;
  const TOKEN_KEY = "shipyard.token";
  const MAX_TRAFFIC_SAMPLES = 180; // 6 minutes at one sample every 2 s
  const TOP_FEATURES = 8;
  const HISTORY_POINTS = 1500; // per chart line: more than its width in pixels
  const WINDOW_LABELS = { rows: "count window", time: "time window", all: "since serving" };
  const EVENT_COLORS = [
    ["drift.detected", "#dc2626"], ["drift.", "#ea580c"], ["performance.degraded", "#9333ea"],
    ["performance.", "#a855f7"], ["retrain.", "#2563eb"], ["model.", "#16a34a"],
  ];

  const state = {
    config: null,
    token: null,
    models: [],
    model: null, // the model document from the registry (with versions)
    version: null,
    report: null, // GET /v1/monitoring/models/{name}
    history: null,
    historyKey: null,
    events: [],
    metric: null,
    traffic: [],
    timers: [],
    loading: false,
  };

  const $ = (id) => document.getElementById(id);

  function node(tag, attributes, children) {
    const element = document.createElement(tag);
    for (const [key, value] of Object.entries(attributes || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (key === "text") element.textContent = value;
      else if (key === "class") element.className = value;
      else if (key.startsWith("on")) element.addEventListener(key.slice(2), value);
      else element.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of children || []) {
      if (child !== null && child !== undefined) {
        element.append(child instanceof Node ? child : document.createTextNode(String(child)));
      }
    }
    return element;
  }

  function say(message, bad) {
    const status = $("status");
    status.textContent = message || "";
    status.classList.toggle("bad", Boolean(bad));
  }

  // -- auth -------------------------------------------------------------------------------

  class Unauthenticated extends Error {}

  function tokenExpiry(token) {
    try {
      const payload = JSON.parse(atob(token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/")));
      return typeof payload.exp === "number" ? payload.exp * 1000 : null;
    } catch (error) {
      return null; // an API key, or not a JWT: the server will say
    }
  }

  function storedToken() {
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (!token) return null;
    const expiry = tokenExpiry(token);
    if (expiry !== null && expiry <= Date.now() + 5000) {
      sessionStorage.removeItem(TOKEN_KEY);
      return null;
    }
    return token;
  }

  function showLogin(message) {
    stopTimers();
    state.token = null;
    sessionStorage.removeItem(TOKEN_KEY);
    $("main").hidden = true;
    $("controls").hidden = true;
    $("login").hidden = false;
    $("login-error").textContent = message || "";
    say("");
    $("username").focus();
  }

  async function signIn(event) {
    event.preventDefault();
    const body = new URLSearchParams({
      username: $("username").value,
      password: $("password").value,
    });
    $("login-error").textContent = "";
    let response;
    try {
      response = await fetch(state.config.token_url, {
        method: "POST",
        headers: { "Content-Type": "application/x-www-form-urlencoded" },
        body: body,
      });
    } catch (error) {
      $("login-error").textContent = "The server did not answer: " + error.message;
      return;
    }
    const answer = await response.json().catch(() => ({}));
    if (!response.ok) {
      $("login-error").textContent = answer.error || "Sign-in refused (" + response.status + ")";
      return;
    }
    sessionStorage.setItem(TOKEN_KEY, answer.access_token);
    state.token = answer.access_token;
    $("password").value = "";
    $("signed-in").textContent = "signed in as " + $("username").value;
    await start();
  }

  function signOut() {
    showLogin("Signed out.");
  }

  // -- data -------------------------------------------------------------------------------

  async function api(path) {
    const headers = { Accept: "application/json" };
    if (state.token) headers.Authorization = "Bearer " + state.token;
    const response = await fetch(path, { headers: headers });
    if (response.status === 401) throw new Unauthenticated("Your session ended: sign in again.");
    const body = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error(body.error || path + " answered " + response.status);
    return body;
  }

  function sinceParameter() {
    const seconds = Number($("range").value);
    if (!seconds) return "";
    return "since=" + encodeURIComponent(new Date(Date.now() - seconds * 1000).toISOString());
  }

  // The charts' time axis: the chosen range, narrowed to where there is data (with a
  // margin), so that a few minutes of history are not squeezed into a day's width.
  function xDomain() {
    const now = Date.now();
    const seconds = Number($("range").value);
    const times = [
      ...((state.history && state.history.points) || []).map((p) => Date.parse(p.at)),
      ...state.events.map((e) => Date.parse(e.at)),
    ].filter((t) => isFinite(t));
    const start = seconds ? now - seconds * 1000 : Math.min(...times, now);
    if (!times.length) return [start, now];
    const first = Math.min(...times);
    const margin = Math.max((now - first) * 0.05, 30 * 1000);
    return [Math.max(start, first - margin), now];
  }

  function readHash() {
    const params = new URLSearchParams(location.hash.slice(1));
    return { model: params.get("model"), version: Number(params.get("version")) || null };
  }

  function writeHash() {
    const params = new URLSearchParams();
    if (state.model) params.set("model", state.model.name);
    if (state.version) params.set("version", String(state.version));
    history.replaceState(null, "", "#" + params.toString());
  }

  function failed(error) {
    if (error instanceof Unauthenticated) {
      showLogin(error.message);
    } else {
      say(error.message, true);
    }
  }

  async function refresh() {
    if (state.loading) return;
    state.loading = true;
    try {
      const listed = await api("/v1/registry/models");
      state.models = listed.models;
      renderModels();
      const wanted = readHash();
      const name =
        (state.model && state.models.some((m) => m.name === state.model.name) && state.model.name) ||
        (state.models.some((m) => m.name === wanted.model) && wanted.model) ||
        (state.models[0] && state.models[0].name);
      if (!name) {
        $("model-title").textContent = "No model yet";
        $("model-summary").textContent = "Register one with `shipyard pipeline run SPEC`.";
        say("");
        return;
      }
      await loadModel(name, wanted.version);
      say("Updated " + Charts.formatMoment(Date.now()));
    } catch (error) {
      failed(error);
    } finally {
      state.loading = false;
    }
  }

  async function loadModel(name, wantedVersion) {
    const [model, report] = await Promise.all([
      api("/v1/registry/models/" + encodeURIComponent(name)),
      api("/v1/monitoring/models/" + encodeURIComponent(name) + "?events=0"),
    ]);
    const changed = !state.model || state.model.name !== name;
    state.model = model;
    state.report = report;
    const numbers = model.versions.map((v) => v.version);
    if (changed || !numbers.includes(state.version)) {
      state.version =
        (wantedVersion && numbers.includes(wantedVersion) && wantedVersion) ||
        model.aliases.production ||
        model.latest_version;
      state.metric = null;
    }
    const base = "/v1/monitoring/models/" + encodeURIComponent(name);
    const since = sinceParameter();
    const [history, events] = await Promise.all([
      loadHistory(base + "/versions/" + state.version + "/history", since),
      api(base + "/events?limit=500" + (since ? "&" + since : "")),
    ]);
    state.history = history;
    state.events = events.events;
    writeHash();
    renderModels();
    renderModel();
    renderHistory();
    renderEvents();
  }

  // The version's history: all of the range the first time (thinned by the server to at
  // most HISTORY_POINTS), then only the points since the last one, appended.
  async function loadHistory(path, since) {
    const key = path + "|" + $("range").value;
    const known = state.history && state.historyKey === key ? state.history.points : null;
    let history;
    if (known && known.length) {
      const last = known[known.length - 1].at;
      history = await api(path + "?limit=" + HISTORY_POINTS + "&since=" + encodeURIComponent(last));
      const seen = new Set(known.map((p) => p.at));
      const seconds = Number($("range").value);
      const cut = seconds ? Date.now() - seconds * 1000 : -Infinity;
      history.points = known
        .concat(history.points.filter((p) => !seen.has(p.at)))
        .filter((p) => Date.parse(p.at) >= cut);
    } else {
      history = await api(path + "?limit=" + HISTORY_POINTS + (since ? "&" + since : ""));
    }
    state.historyKey = key;
    return history;
  }

  async function select(name, version) {
    state.model = state.model && state.model.name === name ? state.model : null;
    if (version) state.version = version;
    try {
      await loadModel(name, version);
    } catch (error) {
      failed(error);
    }
  }

  // -- models and versions ----------------------------------------------------------------

  function renderModels() {
    const list = $("model-list");
    list.replaceChildren(
      ...state.models.map((m) => {
        const aliases = Object.entries(m.aliases || {})
          .map(([alias, version]) => alias + " → v" + version)
          .join(", ");
        const button = node(
          "button",
          {
            type: "button",
            class: state.model && state.model.name === m.name ? "selected" : "",
            "data-model": m.name,
            onclick: () => select(m.name, null),
          },
          [
            node("strong", { text: m.name }),
            node("span", { class: "sub", text: "latest v" + m.latest_version }),
            node("span", { class: "sub", text: aliases || "no alias" }),
          ],
        );
        return node("li", {}, [button]);
      }),
    );
  }

  function snapshotOf(version) {
    const entry = (state.report.versions || []).find((v) => v.version === version);
    return entry ? entry.snapshot : null;
  }

  function primaryMetric() {
    for (const v of state.report.versions || []) {
      const primary = v.snapshot && v.snapshot.performance && v.snapshot.performance.primary;
      if (primary && primary.metric) return primary.metric;
    }
    return (state.history && state.history.primary && state.history.primary.metric) || null;
  }

  function renderModel() {
    const model = state.model;
    $("model-title").textContent = model.name;
    const feedback = state.report.feedback || {};
    const lease = state.report.lease;
    $("model-summary").textContent =
      model.versions.length + " version(s) · labels joined " + (feedback.joined || 0) +
      ", pending " + (feedback.pending || 0) + ", unknown " + (feedback.unknown || 0) +
      ", late " + (feedback.late || 0) + " · " +
      (lease && lease.fresh ? "watched by monitor " + lease.owner : "no monitor running now");
    const metric = primaryMetric();
    $("offline-heading").textContent = "offline " + (metric || "");
    $("live-heading").textContent = "live " + (metric || "");
    const rows = [...model.versions]
      .sort((a, b) => b.version - a.version)
      .map((v) => {
        const snapshot = snapshotOf(v.version);
        const all = snapshot && snapshot.performance ? snapshot.performance.all : null;
        const live = all && metric ? all.metrics[metric] : null;
        const drift = snapshot ? snapshot.dataset_drift || {} : {};
        const episodes = snapshot ? snapshot.episodes || {} : {};
        const open = Object.entries(episodes).filter(([, isOpen]) => isOpen).map(([kind]) => kind);
        return node(
          "tr",
          {
            class: v.version === state.version ? "selected" : "",
            "data-version": v.version,
            onclick: () => select(model.name, v.version),
          },
          [
            node("td", { text: "v" + v.version }),
            node("td", {}, v.aliases.map((a) => node("span", { class: "badge " + a, text: a }))),
            node("td", { text: Charts.formatMoment(Date.parse(v.created_at)) }),
            node("td", { text: metric ? Charts.formatNumber(v.metrics[metric]) : "–" }),
            node("td", { text: live === null || live === undefined ? "–" : Charts.formatNumber(live) }),
            node("td", { text: all ? String(all.labelled) : "–" }),
            node("td", { text: snapshot ? String(snapshot.rows_seen) : "not monitored" }),
            node("td", {}, [verdict(drift.rows)]),
            node("td", { text: open.length ? open.join(", ") + " open" : "none" }),
          ],
        );
      });
    $("versions").tBodies[0].replaceChildren(...rows);
    for (const span of document.querySelectorAll(".version-name")) {
      span.textContent = model.name + ":" + state.version;
    }
  }

  function verdict(value) {
    if (value === true) return node("span", { class: "verdict-true", text: "drifted" });
    if (value === false) return node("span", { class: "verdict-false", text: "no drift" });
    return node("span", { class: "muted", text: "no verdict" });
  }

  // -- charts over time -------------------------------------------------------------------

  function eventColor(kind) {
    const match = EVENT_COLORS.find(([prefix]) => kind.startsWith(prefix));
    return match ? match[1] : "#6b7280";
  }

  function markers() {
    return state.events
      .filter((e) => e.version === null || e.version === state.version)
      .map((e) => ({
        x: e.at,
        kind: e.kind,
        label: e.kind + (e.version ? " v" + e.version : ""),
        detail: summary(e),
        color: eventColor(e.kind),
      }));
  }

  function renderHistory() {
    const history = state.history;
    const points = history.points;
    const domain = xDomain();
    const hint = history.hint || "no history yet";

    // Performance: the chosen metric per window, beside the offline value.
    const names = new Set();
    for (const p of points) {
      for (const windowed of Object.values(p.performance || {})) {
        for (const name of Object.keys(windowed.metrics || {})) names.add(name);
      }
    }
    const primary = history.primary || {};
    if (!state.metric || !names.has(state.metric)) {
      state.metric = names.has(primary.metric) ? primary.metric : [...names][0] || primary.metric;
    }
    const select = $("metric");
    select.replaceChildren(
      ...[...names].sort().map((name) =>
        node("option", { value: name, selected: name === state.metric, text: name }),
      ),
    );
    const metric = state.metric;
    const kinds = ["rows", "time", "all"].filter((k) => points.some((p) => p.performance && p.performance[k]));
    const lines = [];
    const offline = metric ? history.offline[metric] : undefined;
    if (offline !== undefined) lines.push({ y: offline, label: "offline", color: "#111827" });
    if (offline !== undefined && metric === primary.metric && primary.margin !== undefined) {
      const lowerIsBetter = ["brier", "mae", "rmse"].includes(metric);
      lines.push({
        y: lowerIsBetter ? offline + primary.margin : offline - primary.margin,
        label: "degraded past",
        color: "#b91c1c",
      });
    }
    Charts.lineChart($("chart-performance"), {
      name: "performance",
      title: "Live " + metric + " over time",
      series: kinds.map((kind) => ({
        name: kind,
        label: metric + " · " + WINDOW_LABELS[kind],
        dashed: kind === "all",
        points: points.map((p) => ({
          x: p.at,
          y: p.performance[kind] ? valueOr(p.performance[kind].metrics[metric]) : null,
        })),
      })),
      lines: lines,
      markers: markers(),
      xDomain: domain,
      yLabel: metric,
      empty: hint,
    });
    Charts.lineChart($("chart-labels"), {
      name: "coverage",
      title: "Share of predictions labelled",
      series: kinds.map((kind) => ({
        name: kind,
        label: "labelled share · " + WINDOW_LABELS[kind],
        dashed: kind === "all",
        points: points.map((p) => ({
          x: p.at,
          y: p.performance[kind] ? valueOr(p.performance[kind].coverage) : null,
        })),
      })),
      yDomain: [0, 1],
      xDomain: domain,
      yLabel: "labelled share",
      empty: hint,
    });
    renderDrift(points, domain, hint);
  }

  function valueOr(value) {
    return typeof value === "number" && isFinite(value) ? value : null;
  }

  function severity(statistic, rule) {
    if (statistic === null || statistic === undefined || !rule) return 0;
    if (rule.drifts === "below") return statistic > 0 ? rule.threshold / statistic : 1e12;
    return rule.threshold ? statistic / rule.threshold : statistic;
  }

  function renderDrift(points, domain, hint) {
    const kind = $("drift-window").value;
    const rules = state.history.drift_rules || { features: {} };
    const withDrift = points.filter((p) => p.drift && p.drift[kind] && p.drift[kind].share !== null);
    const latest = withDrift.length ? withDrift[withDrift.length - 1].drift[kind] : null;
    let features = latest ? Object.keys(latest.features) : [];
    const choice = $("drift-features").value;
    const bySeverity = (a, b) =>
      severity(latest.features[b], rules.features[b]) - severity(latest.features[a], rules.features[a]);
    if (choice === "top") features = features.sort(bySeverity).slice(0, TOP_FEATURES);
    else if (choice === "drifted") features = latest ? latest.drifted.slice().sort(bySeverity) : [];
    else features.sort();
    const shown = features.map((f) => rules.features[f]).filter(Boolean);
    const lines = [];
    const same = shown.length && shown.every((r) => r.threshold === shown[0].threshold && r.drifts === shown[0].drifts);
    if (same) {
      lines.push({
        y: shown[0].threshold,
        label: "drift " + (shown[0].drifts === "below" ? "below" : "at or above"),
        color: "#b91c1c",
      });
    }
    const methods = [...new Set(shown.map((r) => r.method))];
    $("drift-rule").textContent = latest
      ? "Statistic per feature (" + methods.join(", ") + "); " +
        (same ? "" : "thresholds differ by feature; ") +
        "latest: " + latest.drifted.length + " of " + Object.keys(latest.features).length +
        " features drifted."
      : "";
    const series = features.map((feature) => ({
      name: feature,
      label: feature,
      points: withDrift.map((p) => ({ x: p.at, y: valueOr(p.drift[kind].features[feature]) })),
    }));
    if (withDrift.some((p) => p.drift[kind].score !== null && p.drift[kind].score !== undefined) && choice !== "drifted") {
      series.push({
        name: "score",
        label: "model score",
        dashed: true,
        points: withDrift.map((p) => ({ x: p.at, y: valueOr(p.drift[kind].score) })),
      });
    }
    Charts.lineChart($("chart-drift"), {
      name: "drift",
      title: "Drift statistic per feature over time",
      series: series,
      lines: lines,
      markers: markers(),
      xDomain: domain,
      yDomain: [0, 0],
      yLabel: "drift statistic",
      empty: latest ? "no feature drifted in this window" : hint,
    });
    Charts.lineChart($("chart-drift-share"), {
      name: "drift-share",
      title: "Share of features drifted",
      series: [
        {
          name: "share",
          label: "share of features drifted · " + WINDOW_LABELS[kind],
          points: withDrift.map((p) => ({ x: p.at, y: p.drift[kind].share })),
        },
      ],
      lines: rules.drift_share === null || rules.drift_share === undefined
        ? []
        : [{ y: rules.drift_share, label: "dataset drift at", color: "#b91c1c" }],
      markers: markers(),
      yDomain: [0, 1],
      xDomain: domain,
      yLabel: "share",
      empty: hint,
    });
  }

  // -- events -----------------------------------------------------------------------------

  function summary(event) {
    const e = event.evidence || {};
    const parts = [];
    if (typeof e.share === "number") parts.push("share " + Charts.formatNumber(e.share));
    if (e.features && typeof e.features === "object") {
      const names = Object.keys(e.features);
      if (names.length) parts.push("features " + names.slice(0, 6).join(", ") + (names.length > 6 ? " …" : ""));
    }
    if (e.metric && typeof e.live === "number") {
      parts.push(e.metric + " live " + Charts.formatNumber(e.live) + " vs offline " + Charts.formatNumber(e.offline));
    }
    if (e.reason) parts.push(String(e.reason));
    if (e.window && e.window.kind) parts.push(WINDOW_LABELS[e.window.kind] || e.window.kind);
    return parts.join(" · ");
  }

  function renderEvents() {
    const events = state.events;
    const domain = xDomain();
    // The timeline: one row of marks per kind, so a kind's episodes read left to right.
    const kinds = [...new Set(events.map((e) => e.kind))].sort();
    Charts.lineChart($("timeline"), {
      name: "timeline",
      title: "Events over time",
      series: kinds.map((kind) => ({
        name: kind,
        label: kind,
        color: eventColor(kind),
        line: false,
        points: events
          .filter((e) => e.kind === kind)
          .map((e) => ({ x: e.at, y: kinds.length - kinds.indexOf(kind) })),
      })),
      markers: events.map((e) => ({
        x: e.at,
        kind: e.kind,
        label: e.kind + (e.version ? " v" + e.version : ""),
        detail: summary(e),
        color: eventColor(e.kind),
      })),
      yDomain: [0.5, kinds.length + 0.5],
      yFormat: (value) => (Number.isInteger(value) && kinds[kinds.length - value]) || "",
      marginLeft: 150,
      height: 70 + 26 * Math.max(kinds.length, 1),
      xDomain: domain,
      empty: "no event in this range",
    });
    const list = $("event-list");
    list.replaceChildren(
      ...events
        .slice()
        .reverse()
        .map((e) =>
          node("li", { "data-kind": e.kind, "data-event-id": e.id }, [
            node("span", { class: "when", text: Charts.formatMoment(Date.parse(e.at)) }),
            node("span", {}, [
              node("span", { class: "kind kind-" + e.kind.split(".")[0], text: e.kind }),
              e.version ? " · v" + e.version : "",
              summary(e) ? " · " + summary(e) : "",
            ]),
            node("details", {}, [
              node("summary", { text: "evidence" }),
              node("pre", { text: JSON.stringify(e.evidence, null, 2) }),
            ]),
          ]),
        ),
    );
    if (!events.length) list.replaceChildren(node("li", { class: "muted", text: "No event in this range." }));
  }

  // -- traffic ----------------------------------------------------------------------------

  async function sampleTraffic() {
    try {
      const document_ = await api("/v1/server/traffic");
      state.traffic.push({ t: Date.now(), doc: document_ });
      if (state.traffic.length > MAX_TRAFFIC_SAMPLES) state.traffic.shift();
      renderTraffic();
    } catch (error) {
      failed(error);
    }
  }

  function sum(routes, pick) {
    return routes.reduce((total, route) => total + pick(route), 0);
  }

  function buckets(routes) {
    const merged = new Map();
    for (const route of routes) {
      for (const [le, count] of route.latency.buckets) {
        const key = le === null ? Infinity : le;
        merged.set(key, (merged.get(key) || 0) + count);
      }
    }
    return merged;
  }

  // The q-quantile of the requests between two samples, from their cumulative histograms,
  // interpolated inside the bucket as Prometheus's histogram_quantile does.
  function quantile(q, before, after) {
    const bounds = [...after.keys()].sort((a, b) => a - b);
    const counts = bounds.map((le) => after.get(le) - (before.get(le) || 0));
    const total = counts[counts.length - 1];
    if (!(total > 0)) return null;
    const rank = q * total;
    for (let i = 0; i < bounds.length; i++) {
      if (counts[i] >= rank) {
        if (bounds[i] === Infinity) return bounds[i - 1] || null;
        const lower = i === 0 ? 0 : bounds[i - 1];
        const below = i === 0 ? 0 : counts[i - 1];
        const inside = counts[i] - below;
        return lower + (bounds[i] - lower) * (inside > 0 ? (rank - below) / inside : 0);
      }
    }
    return null;
  }

  function renderTraffic() {
    const samples = state.traffic;
    const rates = [];
    for (let i = 1; i < samples.length; i++) {
      const a = samples[i - 1];
      const b = samples[i];
      const seconds = (b.t - a.t) / 1000;
      if (!(seconds > 0)) continue;
      const pick = (doc, inference) => doc.routes.filter((r) => !inference || r.inference);
      const [ai, bi] = [pick(a.doc, true), pick(b.doc, true)];
      const delta = (f, inference) => (sum(pick(b.doc, inference), f) - sum(pick(a.doc, inference), f)) / seconds;
      const [before, after] = [buckets(ai), buckets(bi)];
      const requests = sum(bi, (r) => r.latency.count) - sum(ai, (r) => r.latency.count);
      const latencySum = sum(bi, (r) => r.latency.sum) - sum(ai, (r) => r.latency.sum);
      rates.push({
        x: b.t,
        inference: delta((r) => r.requests, true),
        all: delta((r) => r.requests, false),
        serverErrors: delta((r) => r.server_errors, false),
        clientErrors: delta((r) => r.client_errors, false),
        p50: ms(quantile(0.5, before, after)),
        p99: ms(quantile(0.99, before, after)),
        mean: requests > 0 ? ms(latencySum / requests) : null,
      });
    }
    const last = samples[samples.length - 1].doc;
    const inference = last.routes.filter((r) => r.inference);
    const latest = rates[rates.length - 1] || {};
    const tiles = [
      ["requests/s (inference)", latest.inference],
      ["p50 latency, ms", latest.p50],
      ["p99 latency, ms", latest.p99],
      ["5xx/s", latest.serverErrors],
      ["inference requests since start", sum(inference, (r) => r.requests)],
      ["server errors since start", sum(last.routes, (r) => r.server_errors)],
      ["in flight", last.in_flight],
    ];
    for (const p of last.predictions) tiles.push(["rows predicted by " + p.model + ":" + p.version, p.rows]);
    $("traffic-tiles").replaceChildren(
      ...tiles.map(([label, value]) =>
        node("div", { class: "tile" }, [
          node("div", { class: "value", text: value === undefined || value === null ? "–" : Charts.formatNumber(value) }),
          node("div", { class: "label", text: label }),
        ]),
      ),
    );
    const series = (pairs) =>
      pairs.map(([name, label, key, dashed]) => ({
        name: name, label: label, dashed: dashed,
        points: rates.map((r) => ({ x: r.x, y: r[key] })),
      }));
    const waiting = "sampling: the first rates come with the second sample";
    Charts.lineChart($("chart-requests"), {
      name: "requests",
      title: "Requests per second",
      series: series([["inference", "inference requests/s", "inference"], ["all", "all requests/s", "all", true]]),
      yDomain: [0, 1],
      yLabel: "requests/s",
      empty: waiting,
    });
    Charts.lineChart($("chart-latency"), {
      name: "latency",
      title: "Inference latency",
      series: series([["p50", "p50 ms", "p50"], ["p99", "p99 ms", "p99"], ["mean", "mean ms", "mean", true]]),
      yDomain: [0, 1],
      yLabel: "ms",
      empty: rates.length ? "no inference request while this page was open" : waiting,
    });
    Charts.lineChart($("chart-errors"), {
      name: "errors",
      title: "Errors per second",
      series: series([["5xx", "server errors/s (5xx)", "serverErrors"], ["4xx", "refused requests/s (4xx)", "clientErrors", true]]),
      yDomain: [0, 1],
      yLabel: "errors/s",
      empty: waiting,
    });
  }

  function ms(seconds) {
    return seconds === null || seconds === undefined ? null : seconds * 1000;
  }

  // -- start ------------------------------------------------------------------------------

  function redraw() {
    if (state.history) renderHistory();
    if (state.model) renderEvents();
    if (state.traffic.length) renderTraffic();
  }

  function stopTimers() {
    for (const timer of state.timers) clearInterval(timer);
    state.timers = [];
  }

  function startTimers() {
    stopTimers();
    const refreshMs = state.config.refresh_seconds * 1000;
    const trafficMs = state.config.traffic_seconds * 1000;
    state.timers.push(setInterval(() => $("auto-refresh").checked && refresh(), refreshMs));
    state.timers.push(setInterval(() => $("auto-refresh").checked && sampleTraffic(), trafficMs));
  }

  async function start() {
    $("login").hidden = true;
    $("main").hidden = false;
    $("controls").hidden = false;
    const protectedServer = state.config.protected;
    $("sign-out").hidden = !protectedServer;
    $("signed-in").hidden = !protectedServer;
    say("Loading…");
    await Promise.all([refresh(), sampleTraffic()]);
    if (state.token === null && protectedServer) return; // refused: the login is shown
    startTimers();
  }

  async function boot() {
    $("login-form").addEventListener("submit", signIn);
    $("sign-out").addEventListener("click", signOut);
    $("refresh").addEventListener("click", () => { refresh(); sampleTraffic(); });
    $("range").addEventListener("change", refresh);
    $("metric").addEventListener("change", () => {
      state.metric = $("metric").value;
      renderHistory();
    });
    $("drift-window").addEventListener("change", renderHistory);
    $("drift-features").addEventListener("change", renderHistory);
    let resizing = null;
    window.addEventListener("resize", () => {
      clearTimeout(resizing);
      resizing = setTimeout(redraw, 200);
    });
    window.addEventListener("hashchange", () => {
      const wanted = readHash();
      if (wanted.model && (!state.model || wanted.model !== state.model.name || wanted.version !== state.version)) {
        select(wanted.model, wanted.version);
      }
    });
    try {
      state.config = await (await fetch("/ui/config")).json();
    } catch (error) {
      say("The server did not answer: " + error.message, true);
      return;
    }
    $("server-version").textContent = "v" + state.config.version;
    state.token = storedToken();
    if (state.config.protected && !state.token) {
      showLogin("");
      return;
    }
    await start();
  }

  document.addEventListener("DOMContentLoaded", boot);
})();
