// Charts: a line chart of a series over time (uPlot, vendored), and a bar chart of weights
// drawn as SVG. Each chart has a text alternative: a summary for screen readers, and the
// numbers it shows in a table next to it where they matter.
import uPlot from './uPlot.esm.js';
import { h } from './ui.js';
import { currencySymbol } from './words.js';

/**
 * A line chart of [{at, value}] into `box` (a fresh element), with `label` as its accessible
 * name. Returns the uPlot instance (null when there is nothing to draw).
 */
const live = new Map(); // box → its uPlot (destroyed before the box is drawn again)

/** Destroys every chart (when the person leaves the page). */
export function destroyCharts() {
  live.forEach((plot) => plot.destroy());
  live.clear();
}

export function lineChart(box, points, { label, money = true } = {}) {
  live.get(box)?.destroy();
  live.delete(box);
  box.replaceChildren();
  const xs = [];
  const ys = [];
  for (const p of points) {
    const t = Date.parse(p.at);
    const v = Number(p.value ?? p.price);
    if (Number.isFinite(t) && Number.isFinite(v)) { xs.push(t / 1000); ys.push(v); }
  }
  if (xs.length === 0) {
    box.append(h('p', { class: 'empty' }, 'No data for this period yet.'));
    return null;
  }
  const first = ys[0];
  const last = ys[ys.length - 1];
  const summary = `${label}: ${xs.length} points from ${new Date(xs[0] * 1000).toUTCString()} to ${new Date(xs[xs.length - 1] * 1000).toUTCString()}, first ${first.toFixed(2)}, last ${last.toFixed(2)}, lowest ${Math.min(...ys).toFixed(2)}, highest ${Math.max(...ys).toFixed(2)}.`;
  const figure = h('figure', { role: 'img', 'aria-label': summary, class: 'chart' });
  box.append(figure);
  const width = Math.max(280, Math.min(900, box.clientWidth || 700));
  const opts = {
    width,
    height: 260,
    legend: { show: false },
    cursor: { drag: { x: false, y: false } },
    scales: { x: { time: true } },
    axes: [{}, { size: 96, values: (u, vals) => vals.map((v) => (money ? `${currencySymbol()}${v.toLocaleString('en-GB')}` : v)) }],
    series: [{}, { label, stroke: '#0b5d4b', width: 2, fill: 'rgba(11,93,75,0.08)' }],
  };
  const plot = new uPlot(opts, [xs, ys], figure);
  live.set(box, plot);
  return plot;
}

/** A horizontal bar chart of [{label, weight}] (weights as fractions of 1) as SVG. */
export function barChart(items, { label }) {
  const rowH = 26;
  const width = 520;
  const labelW = 90;
  const barW = width - labelW - 70;
  const height = items.length * rowH + 8;
  const summary = `${label}: ${items.map((i) => `${i.label} ${(Number(i.weight) * 100).toFixed(1)}%`).join(', ')}.`;
  const svg = h('svg', { viewBox: `0 0 ${width} ${height}`, width: '100%', height, class: 'bars', role: 'img', 'aria-label': summary });
  items.forEach((it, i) => {
    const y = i * rowH + 4;
    const w = Math.max(1, Math.round(Number(it.weight) * barW));
    svg.append(
      h('text', { x: 0, y: y + 16 }, it.label),
      h('rect', { x: labelW, y, width: w, height: rowH - 8, rx: 2 }),
      h('text', { x: labelW + w + 6, y: y + 16 }, `${(Number(it.weight) * 100).toFixed(1)}%`),
    );
  });
  return svg;
}
