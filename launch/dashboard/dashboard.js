// Polis job dashboard: polls GET api/status every POLL_MS and redraws.
// No libraries: the two charts are drawn on <canvas> by drawChart() below.
// Each chart's canvas carries data-points="N" (the points drawn) and every
// worker row data-rank="R", so headless checks can read them from the DOM.
// Helpers ($, el, fmt*, setText, setHeading, showBanner, pollJson) come
// from common.js.
'use strict';

const POLL_MS = 2000;

function fmtPercent(v) {
  return typeof v === 'number' && isFinite(v) ? `${(v * 100).toFixed(2)}%` : '-';
}
function fmtBytes(b) {
  if (typeof b !== 'number' || !isFinite(b)) return '-';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let u = 0;
  while (b >= 1024 && u < units.length - 1) { b /= 1024; u++; }
  return u === 0 ? `${b} B` : `${b.toFixed(1)} ${units[u]}`;
}

// A line chart of points [{x, y}] on a canvas; x is seconds since the start.
function drawChart(canvas, points, color) {
  const dpr = window.devicePixelRatio || 1;
  const cssW = canvas.clientWidth || canvas.width, cssH = canvas.clientHeight || canvas.height;
  if (canvas.width !== Math.round(cssW * dpr)) { canvas.width = Math.round(cssW * dpr); canvas.height = Math.round(cssH * dpr); }
  const ctx = canvas.getContext('2d');
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, cssW, cssH);
  const pts = points.filter((p) => typeof p.x === 'number' && typeof p.y === 'number' && isFinite(p.x) && isFinite(p.y));
  canvas.setAttribute('data-points', String(pts.length));
  const left = 52, right = 12, top = 10, bottom = 26;
  const w = cssW - left - right, h = cssH - top - bottom;
  ctx.font = '11px system-ui, sans-serif';
  ctx.fillStyle = '#6b7385';
  ctx.strokeStyle = '#dde1e8';
  ctx.lineWidth = 1;
  if (pts.length === 0) {
    ctx.fillText('no data yet', left + w / 2 - 30, top + h / 2);
    return;
  }
  let x0 = Math.min(...pts.map((p) => p.x)), x1 = Math.max(...pts.map((p) => p.x));
  let y0 = Math.min(...pts.map((p) => p.y)), y1 = Math.max(...pts.map((p) => p.y));
  if (x1 === x0) x1 = x0 + 1;
  if (y1 === y0) { y0 -= Math.abs(y0) * 0.1 || 1; y1 += Math.abs(y1) * 0.1 || 1; }
  const pad = (y1 - y0) * 0.05; y0 -= pad; y1 += pad;
  if (y0 < 0 && pts.every((p) => p.y >= 0)) y0 = 0;
  const X = (x) => left + ((x - x0) / (x1 - x0)) * w;
  const Y = (y) => top + h - ((y - y0) / (y1 - y0)) * h;
  // Grid and axis labels: 4 horizontal lines, time at both ends.
  ctx.textAlign = 'right';
  for (let i = 0; i <= 4; i++) {
    const v = y0 + ((y1 - y0) * i) / 4, yy = Math.round(Y(v)) + 0.5;
    ctx.beginPath(); ctx.moveTo(left, yy); ctx.lineTo(left + w, yy); ctx.stroke();
    ctx.fillText(fmtAxis(v), left - 6, yy + 4);
  }
  ctx.textAlign = 'left';
  ctx.fillText(fmtDuration(x0), left, cssH - 8);
  ctx.textAlign = 'right';
  ctx.fillText(fmtDuration(x1), left + w, cssH - 8);
  // The line, and a dot on the latest point.
  ctx.strokeStyle = color;
  ctx.lineWidth = 1.8;
  ctx.beginPath();
  pts.forEach((p, i) => (i ? ctx.lineTo(X(p.x), Y(p.y)) : ctx.moveTo(X(p.x), Y(p.y))));
  ctx.stroke();
  const last = pts[pts.length - 1];
  ctx.fillStyle = color;
  ctx.beginPath(); ctx.arc(X(last.x), Y(last.y), 3, 0, 2 * Math.PI); ctx.fill();
}

function renderWorkers(s) {
  const tbody = $('workers').tBodies[0];
  const stalled = new Set(s.stalled || []);
  const rows = (s.workers || []).map((w) => {
    const isStalled = stalled.has(w.rank);
    const flags = [];
    if (w.straggler) flags.push(el('span', { class: 'flag straggler', text: 'straggler' }));
    if (isStalled) flags.push(el('span', { class: 'flag stalled', text: 'stalled' }));
    const total = (w.compute_seconds || 0) + (w.comm_seconds || 0) + (w.wait_seconds || 0);
    const split = el('div', { class: 'split', title: 'compute / comm / wait' });
    for (const part of ['compute', 'comm', 'wait']) {
      const seg = el('div', { class: part });
      seg.style.flex = String(total > 0 ? (w[`${part}_seconds`] || 0) / total : 0);
      split.appendChild(seg);
    }
    const cls = [w.straggler ? 'straggler' : '', isStalled ? 'stalled' : ''].join(' ').trim();
    const attrs = { 'data-rank': String(w.rank) };
    if (cls) attrs.class = cls;
    return el('tr', attrs, [
      el('td', { text: String(w.rank) }), el('td', { text: fmtInt(w.step) }),
      el('td', { text: fmtInt(w.shards_done) }), el('td', { text: fmtInt(w.samples) }),
      el('td', { text: fmtDuration(w.compute_seconds) }), el('td', { text: fmtDuration(w.comm_seconds) }),
      el('td', { text: fmtDuration(w.wait_seconds) }), el('td', {}, [split]),
      el('td', { text: fmtInt(w.clock) }), el('td', { text: fmtDuration(w.last_heartbeat_age_seconds) }),
      el('td', {}, flags),
    ]);
  });
  tbody.replaceChildren(...rows);
  const notes = [];
  if ((s.stragglers || []).length) notes.push(`stragglers: ${s.stragglers.join(', ')}`);
  if ((s.stalled || []).length) notes.push(`stalled: ${s.stalled.join(', ')}`);
  setText('worker-flags', notes.join(' · '));
}

function renderServers(s) {
  const servers = s.servers || [];
  $('servers-section').hidden = servers.length === 0;
  $('servers').tBodies[0].replaceChildren(...servers.map((v) => el('tr', { 'data-rank': String(v.rank) }, [
    el('td', { text: String(v.rank) }),
    el('td', { text: Array.isArray(v.key_range) ? `[${v.key_range[0]}, ${v.key_range[1]})` : '-' }),
    el('td', { text: fmtBytes(v.bytes_in) }), el('td', { text: fmtBytes(v.bytes_out) }),
    el('td', { text: fmtNumber(v.updates_per_second, 1) }),
  ])));
}

// A forecaster is judged by its mean absolute error in the target's units,
// a classifier by its accuracy.
const isRegression = (s) => s.task === 'regression';

function renderHistory(s) {
  const regression = isRegression(s);
  setText('history-metric', regression ? 'MAE (val, else test)' : 'accuracy (val, else test)');
  $('history').tBodies[0].replaceChildren(...(s.history || []).map((r) => el('tr', {}, [
    el('td', { text: String(r.epoch) }), el('td', { text: fmtNumber(r.train_loss, 4) }),
    el('td', { text: regression ? fmtNumber(r.val_mae ?? r.test_mae, 2) : fmtPercent(r.val_accuracy ?? r.test_accuracy) }),
    el('td', { text: fmtInt(r.samples_per_second ?? r.images_per_second) }),
    el('td', { text: fmtDuration(r.elapsed_seconds) }),
  ])));
}

function render(s) {
  setHeading('job', s.job || 'Polis job', s.state);
  setText('epoch', s.epochs ? `${s.epoch ?? '-'} / ${s.epochs}` : fmtInt(s.epoch));
  const frac = s.epochs ? Math.min(1, Math.max(0, (s.epoch || 0) / s.epochs)) : 0;
  $('progress').style.width = `${(frac * 100).toFixed(1)}%`;
  setText('step', fmtInt(s.step));
  setText('loss', fmtNumber(s.loss, 4));
  setText('metric-label', isRegression(s) ? 'MAE (validation, else test)' : 'accuracy (validation, else test)');
  setText('accuracy', isRegression(s) ? fmtNumber(s.mae, 2) : fmtPercent(s.accuracy));
  setText('throughput', fmtInt(s.samples_per_second));
  setText('elapsed', fmtDuration(s.elapsed_seconds));
  setText('eta', s.state === 'done' ? 'done' : fmtDuration(s.eta_seconds));
  const series = s.series || [];
  drawChart($('loss-chart'), series.map((p) => ({ x: p.t, y: p.loss })), '#2f6fdb');
  drawChart($('throughput-chart'), series.map((p) => ({ x: p.t, y: p.samples_per_second })), '#e07a1f');
  renderWorkers(s);
  renderServers(s);
  renderHistory(s);
}

function poll() {
  pollJson('api/status', POLL_MS, {
    render: (s) => {
      render(s);
      return s.state === 'done';  // the last word: stop polling
    },
    starting: 'The coordinator is starting; no status yet.',
    lost: (e) => `Cannot reach the coordinator (${e.message}); the job may have ended. Retrying.`,
  });
}

async function command(what) {
  const token = $('token').value.trim();
  if (what === 'stop' && !window.confirm('Take a checkpoint and stop the job?')) return;
  setText('command-result', '…');
  try {
    const res = await fetch(`api/${what}`, {
      method: 'POST', cache: 'no-store',
      headers: token ? { Authorization: `Bearer ${token}` } : {},
    });
    const body = await res.json().catch(() => ({}));
    setText('command-result', res.status === 202 ? `${what} requested` : `refused (${res.status}): ${body.error || ''}`);
  } catch (e) {
    setText('command-result', `failed: ${e.message}`);
  }
}

document.addEventListener('DOMContentLoaded', () => {
  $('checkpoint-button').addEventListener('click', () => command('checkpoint'));
  $('stop-button').addEventListener('click', () => command('stop'));
  poll();
});
