// Line charts over time as SVG: axes with ticks, a legend, reference lines and event
// markers. Plain DOM, no library. Every drawn point carries its series, time and exact
// value (data-series, data-x, data-y) and a tooltip, so what is drawn can be read back.
"use strict";

(function () {
  const SVG = "http://www.w3.org/2000/svg";
  const DEFAULT_WIDTH = 760;
  const DEFAULT_HEIGHT = 240;
  const MARGIN = { right: 16, bottom: 30, left: 58 };
  const LEGEND_ROW = 15;
  const PALETTE = [
    "#2563eb", "#ea580c", "#16a34a", "#9333ea", "#dc2626",
    "#0891b2", "#ca8a04", "#db2777", "#4b5563", "#65a30d",
  ];
  const SECOND = 1000;
  const MINUTE = 60 * SECOND;
  const HOUR = 60 * MINUTE;
  const DAY = 24 * HOUR;
  const TIME_STEPS = [
    SECOND, 2 * SECOND, 5 * SECOND, 10 * SECOND, 15 * SECOND, 30 * SECOND,
    MINUTE, 2 * MINUTE, 5 * MINUTE, 10 * MINUTE, 15 * MINUTE, 30 * MINUTE,
    HOUR, 2 * HOUR, 3 * HOUR, 6 * HOUR, 12 * HOUR, DAY, 2 * DAY, 7 * DAY, 14 * DAY, 30 * DAY,
  ];

  function el(name, attributes, parent) {
    const node = document.createElementNS(SVG, name);
    for (const [key, value] of Object.entries(attributes || {})) {
      if (value !== undefined && value !== null) node.setAttribute(key, String(value));
    }
    if (parent) parent.appendChild(node);
    return node;
  }

  function text(parent, x, y, content, attributes) {
    const node = el("text", Object.assign({ x: x, y: y }, attributes || {}), parent);
    node.textContent = content;
    return node;
  }

  function tooltip(parent, content) {
    const node = el("title", {}, parent);
    node.textContent = content;
    return node;
  }

  // About `count` round ticks covering [min, max] (1, 2 or 5 times a power of ten apart).
  function niceTicks(min, max, count) {
    if (!(max > min)) {
      const pad = min === 0 ? 1 : Math.abs(min) * 0.1;
      return niceTicks(min - pad, max + pad, count);
    }
    const raw = (max - min) / Math.max(count, 1);
    const power = Math.pow(10, Math.floor(Math.log10(raw)));
    const step = [1, 2, 2.5, 5, 10].map((m) => m * power).find((s) => s >= raw) || 10 * power;
    const ticks = [];
    const first = Math.floor(min / step) * step;
    for (let i = 0; i < 100; i++) {
      const value = first + i * step;
      if (value > max + step * 1e-9) break;
      ticks.push(Number(value.toPrecision(12)));
    }
    if (ticks[ticks.length - 1] < max) ticks.push(Number((ticks[ticks.length - 1] + step).toPrecision(12)));
    return ticks;
  }

  function formatNumber(value) {
    if (value === null || value === undefined || !isFinite(value)) return "–";
    const magnitude = Math.abs(value);
    if (magnitude !== 0 && (magnitude >= 1e6 || magnitude < 1e-3)) return value.toExponential(2);
    return Number(value.toPrecision(4)).toString();
  }

  function pad(n) {
    return String(n).padStart(2, "0");
  }

  function formatTime(ms, span) {
    const d = new Date(ms);
    const hm = pad(d.getHours()) + ":" + pad(d.getMinutes());
    if (span > 2 * DAY) return pad(d.getMonth() + 1) + "-" + pad(d.getDate()) + " " + hm;
    if (span < 10 * MINUTE) return hm + ":" + pad(d.getSeconds());
    return hm;
  }

  function formatMoment(ms) {
    const d = new Date(ms);
    return (
      d.getFullYear() + "-" + pad(d.getMonth() + 1) + "-" + pad(d.getDate()) + " " +
      pad(d.getHours()) + ":" + pad(d.getMinutes()) + ":" + pad(d.getSeconds())
    );
  }

  // Round times between min and max, at most `most` of them.
  function timeTicks(min, max, most) {
    const span = max - min;
    const limit = Math.max(most || 6, 2);
    const step = TIME_STEPS.find((s) => span / s <= limit) || TIME_STEPS[TIME_STEPS.length - 1];
    // Round to the step in local time (the offset matters for hours and days).
    const offset = new Date(min).getTimezoneOffset() * MINUTE;
    const ticks = [];
    let tick = Math.ceil((min - offset) / step) * step + offset;
    for (let i = 0; i < 50 && tick <= max; i++, tick += step) ticks.push(tick);
    return ticks;
  }

  function toMs(x) {
    return x instanceof Date ? x.getTime() : typeof x === "string" ? Date.parse(x) : x;
  }

  // Draw a line chart into `container` (its content is replaced). Options:
  //   name: the chart's data-chart attribute; title: its heading and aria-label;
  //   series: [{name, label, color, dashed, line (false: points only),
  //             points: [{x: Date|ms|ISO, y: number|null}]}];
  //   xDomain: [min, max] times; yDomain: [min, max] to include (e.g. [0, 1]);
  //   yLabel, yFormat(value); lines: [{y, label, color}] horizontal reference lines;
  //   markers: [{x, label, detail, color, kind}] vertical event markers;
  //   empty: what to say when no series has a point; height in pixels (default 240);
  //   marginLeft: room for long y tick labels.
  function lineChart(container, options) {
    const series = (options.series || []).map((s, i) =>
      Object.assign({ color: PALETTE[i % PALETTE.length] }, s, {
        points: (s.points || [])
          .map((p) => ({ x: toMs(p.x), y: p.y }))
          .filter((p) => isFinite(p.x))
          .sort((a, b) => a.x - b.x),
      }),
    );
    const format = options.yFormat || formatNumber;
    // Drawn at the container's size, so that text keeps its size on any screen.
    const WIDTH = Math.max(Math.round(container.clientWidth || DEFAULT_WIDTH), 280);
    const HEIGHT = options.height || DEFAULT_HEIGHT;
    const svg = el("svg", {
      viewBox: "0 0 " + WIDTH + " " + HEIGHT,
      class: "chart",
      role: "img",
      "data-chart": options.name,
      "aria-label": options.title || options.name,
    });
    const values = [];
    const times = [];
    for (const s of series) {
      for (const p of s.points) {
        times.push(p.x);
        if (p.y !== null && p.y !== undefined && isFinite(p.y)) values.push(p.y);
      }
    }
    const markers = (options.markers || []).map((m) => Object.assign({}, m, { x: toMs(m.x) }));
    const lines = (options.lines || []).filter((l) => l.y !== null && isFinite(l.y));

    container.replaceChildren(svg);
    if (values.length === 0) {
      svg.classList.add("empty");
      text(svg, WIDTH / 2, HEIGHT / 2, options.empty || "no data yet", {
        "text-anchor": "middle",
        class: "empty-message",
      });
      return svg;
    }

    let [xMin, xMax] = options.xDomain ? options.xDomain.map(toMs) : [Math.min(...times), Math.max(...times)];
    xMin = Math.min(xMin, ...times);
    xMax = Math.max(xMax, ...times);
    if (xMax - xMin < SECOND) {
      xMin -= 30 * SECOND;
      xMax += 30 * SECOND;
    }
    let yMin = Math.min(...values, ...lines.map((l) => l.y));
    let yMax = Math.max(...values, ...lines.map((l) => l.y));
    if (options.yDomain) {
      yMin = Math.min(yMin, options.yDomain[0]);
      yMax = Math.max(yMax, options.yDomain[1]);
    }
    const yTicks = niceTicks(yMin, yMax, 5);
    yMin = Math.min(yMin, yTicks[0]);
    yMax = Math.max(yMax, yTicks[yTicks.length - 1]);
    // The legend's rows first: the plot starts below them.
    const left = options.marginLeft || MARGIN.left;
    const layout = [];
    let lx = left;
    let ly = 14;
    for (const s of series) {
      const label = s.label || s.name;
      const width = 26 + label.length * 6.6;
      if (lx + width > WIDTH - MARGIN.right && lx > left) {
        lx = left;
        ly += LEGEND_ROW;
      }
      layout.push({ x: lx, y: ly, label: label });
      lx += width;
    }
    const top = ly + 20;
    const plotW = WIDTH - left - MARGIN.right;
    const plotH = HEIGHT - top - MARGIN.bottom;
    const sx = (x) => left + ((x - xMin) / (xMax - xMin)) * plotW;
    const sy = (y) => top + plotH - ((y - yMin) / (yMax - yMin || 1)) * plotH;

    const axes = el("g", { class: "axes" }, svg);
    for (const tick of yTicks) {
      const y = sy(tick);
      el("line", { x1: left, x2: WIDTH - MARGIN.right, y1: y, y2: y, class: "grid" }, axes);
      text(axes, left - 6, y + 4, format(tick), { "text-anchor": "end", class: "tick y-tick" });
    }
    // A label needs about 80 pixels ("09:18:20" and room around it).
    for (const tick of timeTicks(xMin, xMax, Math.min(6, Math.floor(plotW / 80)))) {
      const x = sx(tick);
      el("line", { x1: x, x2: x, y1: top, y2: top + plotH, class: "grid" }, axes);
      // A label at an edge is kept inside the picture.
      const anchor = x + 30 > WIDTH ? "end" : x - 30 < 0 ? "start" : "middle";
      text(axes, x, HEIGHT - MARGIN.bottom + 16, formatTime(tick, xMax - xMin), {
        "text-anchor": anchor,
        class: "tick x-tick",
      });
    }
    el("line", {
      x1: left, x2: left, y1: top, y2: top + plotH, class: "axis",
    }, axes);
    el("line", {
      x1: left, x2: WIDTH - MARGIN.right, y1: top + plotH, y2: top + plotH,
      class: "axis",
    }, axes);
    if (options.yLabel) {
      text(axes, 14, top + plotH / 2, options.yLabel, {
        "text-anchor": "middle",
        transform: "rotate(-90 14 " + (top + plotH / 2) + ")",
        class: "axis-label",
      });
    }

    const reference = el("g", { class: "reference-lines" }, svg);
    for (const line of lines) {
      const y = sy(line.y);
      const g = el("g", { class: "reference-line", "data-y": line.y }, reference);
      el("line", {
        x1: left, x2: WIDTH - MARGIN.right, y1: y, y2: y,
        stroke: line.color || "#6b7280", "stroke-dasharray": "6 4", "stroke-width": 1.2,
      }, g);
      text(g, WIDTH - MARGIN.right - 4, y - 4, line.label + " " + format(line.y), {
        "text-anchor": "end",
        class: "reference-label",
        fill: line.color || "#6b7280",
      });
      tooltip(g, line.label + ": " + line.y);
    }

    const markerLayer = el("g", { class: "event-markers" }, svg);
    for (const marker of markers) {
      if (!(marker.x >= xMin && marker.x <= xMax)) continue;
      const x = sx(marker.x);
      const g = el("g", { class: "event-marker", "data-kind": marker.kind || marker.label }, markerLayer);
      el("line", {
        x1: x, x2: x, y1: top, y2: top + plotH,
        stroke: marker.color || "#9ca3af", "stroke-dasharray": "2 3", "stroke-width": 1.5,
      }, g);
      el("path", {
        d: "M" + (x - 5) + " " + top + " h10 l-5 7 z",
        fill: marker.color || "#9ca3af",
      }, g);
      tooltip(g, formatMoment(marker.x) + " " + marker.label + (marker.detail ? "\n" + marker.detail : ""));
    }

    const plot = el("g", { class: "series" }, svg);
    for (const s of series) {
      const g = el("g", { class: "line-series", "data-series": s.name }, plot);
      let d = "";
      let open = false;
      for (const p of s.points) {
        if (p.y === null || p.y === undefined || !isFinite(p.y)) {
          open = false;
          continue;
        }
        d += (open ? " L" : "M") + sx(p.x).toFixed(2) + " " + sy(p.y).toFixed(2);
        open = true;
      }
      if (d && s.line !== false) {
        el("path", {
          d: d, fill: "none", stroke: s.color, "stroke-width": 2,
          "stroke-dasharray": s.dashed ? "5 3" : null, class: "line",
        }, g);
      }
      for (const p of s.points) {
        if (p.y === null || p.y === undefined || !isFinite(p.y)) continue;
        const dot = el("circle", {
          cx: sx(p.x).toFixed(2), cy: sy(p.y).toFixed(2), r: 3, fill: s.color, class: "point",
          "data-series": s.name, "data-x": new Date(p.x).toISOString(), "data-y": String(p.y),
        }, g);
        tooltip(dot, (s.label || s.name) + " — " + formatMoment(p.x) + ": " + format(p.y));
      }
    }

    // The legend: click a name to hide or show its series.
    const legend = el("g", { class: "legend" }, svg);
    series.forEach((s, i) => {
      const { x: lx, y: ly, label } = layout[i];
      const item = el("g", { class: "legend-item", "data-series": s.name, tabindex: 0 }, legend);
      el("line", {
        x1: lx, x2: lx + 16, y1: ly - 4, y2: ly - 4, stroke: s.color, "stroke-width": 3,
        "stroke-dasharray": s.dashed ? "4 2" : null,
      }, item);
      text(item, lx + 20, ly, label, { class: "legend-label" });
      item.addEventListener("click", () => {
        const hidden = item.classList.toggle("off");
        for (const node of plot.querySelectorAll('.line-series[data-series="' + CSS.escape(s.name) + '"]')) {
          node.classList.toggle("hidden", hidden);
        }
      });
    });
    return svg;
  }

  window.ShipyardCharts = {
    lineChart: lineChart,
    niceTicks: niceTicks,
    formatNumber: formatNumber,
    formatMoment: formatMoment,
    formatTime: formatTime,
    timeTicks: timeTicks,
    PALETTE: PALETTE,
  };
})();
