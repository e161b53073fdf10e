// Polis study page: polls GET api/study (polis-tune's study document, the
// schema of study.json) every POLL_MS and redraws. No libraries: the chart
// of every trial's objective by epoch is SVG built by drawCurves() below.
// For headless checks the DOM carries: on #curves data-lines="N"; on each
// line data-trial and data-points; on each marker data-trial, data-epoch and
// a class (stopped, failed, paused, running); on each rung guide data-epoch;
// on each table row data-trial. Helpers ($, el, fmt*, setText, setHeading,
// showBanner, pollJson) come from common.js.
'use strict';

const POLL_MS = 2000;
const SVG_NS = 'http://www.w3.org/2000/svg';
const PALETTE = ['#2f6fdb', '#e07a1f', '#2a8f4e', '#9b4dca', '#c93434', '#1a9fb0', '#b58900', '#d6589a',
  '#5c6bc0', '#7a8b2f'];

function fmtValue(v) {
  if (typeof v !== 'number' || !isFinite(v)) return '-';
  return Math.abs(v) >= 100 ? v.toFixed(1) : v.toFixed(4);
}

function svgEl(tag, attrs, children) {
  const e = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === 'text') e.textContent = v;
    else e.setAttribute(k, String(v));
  }
  for (const c of children || []) e.appendChild(c);
  return e;
}

function paramsText(t) {
  const order = t.param_order || Object.keys(t.params || {});
  return order.map((f) => `${f}=${t.params[f]}`).join(' ');
}

// "stopped@3": where ASHA stopped it (its last epoch).
function stateText(t) {
  return t.state === 'stopped' ? `stopped@${t.epochs_done}` : t.state;
}

function curvePoints(t) {
  return (t.curve || []).filter((p) => Array.isArray(p) && isFinite(p[0]) && isFinite(p[1]));
}

// The chart's frame: scales from epochs and values to SVG coordinates.
function chartFrame(study, trials) {
  const box = { width: 720, height: 340, left: 60, right: 16, top: 14, bottom: 36 };
  const all = trials.flatMap(curvePoints);
  let x1 = Math.max(study.max_epochs || 1, ...all.map((p) => p[0]), ...(study.rungs || []));
  const x0 = 0;
  if (x1 <= x0) x1 = x0 + 1;
  let y0 = Math.min(...all.map((p) => p[1])), y1 = Math.max(...all.map((p) => p[1]));
  if (!isFinite(y0)) { y0 = 0; y1 = 1; }
  if (y1 === y0) { y0 -= Math.abs(y0) * 0.1 || 1; y1 += Math.abs(y1) * 0.1 || 1; }
  const pad = (y1 - y0) * 0.06;
  y0 -= pad; y1 += pad;
  const w = box.width - box.left - box.right, h = box.height - box.top - box.bottom;
  box.X = (x) => box.left + ((x - x0) / (x1 - x0)) * w;
  box.Y = (y) => box.top + h - ((y - y0) / (y1 - y0)) * h;
  box.x0 = x0; box.x1 = x1; box.y0 = y0; box.y1 = y1;
  return box;
}

function drawAxes(svg, f) {
  for (let i = 0; i <= 4; i++) {
    const v = f.y0 + ((f.y1 - f.y0) * i) / 4, y = f.Y(v);
    svg.appendChild(svgEl('line', { class: 'grid', x1: f.left, x2: f.width - f.right, y1: y, y2: y }));
    svg.appendChild(svgEl('text', { class: 'axis', x: f.left - 6, y: y + 4, 'text-anchor': 'end', text: fmtAxis(v) }));
  }
  const step = Math.max(1, Math.ceil(f.x1 / 12));
  for (let e = step; e <= f.x1; e += step) {
    svg.appendChild(svgEl('text', { class: 'axis', x: f.X(e), y: f.height - f.bottom + 16, 'text-anchor': 'middle',
      text: String(e) }));
  }
  svg.appendChild(svgEl('text', { class: 'axis', x: f.left + (f.width - f.left - f.right) / 2, y: f.height - 4,
    'text-anchor': 'middle', text: 'epoch' }));
}

function drawRungs(svg, f, rungs) {
  rungs.forEach((epoch, k) => {
    const x = f.X(epoch);
    svg.appendChild(svgEl('line', { class: 'rung-guide', 'data-epoch': epoch, x1: x, x2: x, y1: f.top,
      y2: f.height - f.bottom }));
    svg.appendChild(svgEl('text', { class: 'axis rung-label', x: x - 3, y: f.top + 10, 'text-anchor': 'end',
      text: `rung ${k}` }));
  });
}

// The marker at a trial's last point: ✕ stopped (its colour) or failed
// (red), ○ paused, ● running; completed trials have none.
function marker(t, f, color) {
  const pts = curvePoints(t);
  if (pts.length === 0 || !['stopped', 'failed', 'paused', 'running'].includes(t.state)) return null;
  const [epoch, value] = pts[pts.length - 1];
  const x = f.X(epoch), y = f.Y(value), r = 5;
  const g = svgEl('g', { class: `marker ${t.state}`, 'data-trial': t.id, 'data-epoch': epoch },
    [svgEl('title', { text: `trial ${t.id} ${stateText(t)}: ${fmtValue(value)} at epoch ${epoch}` })]);
  if (t.state === 'stopped' || t.state === 'failed') {
    const stroke = t.state === 'failed' ? '#c93434' : color;
    g.appendChild(svgEl('line', { x1: x - r, y1: y - r, x2: x + r, y2: y + r, stroke }));
    g.appendChild(svgEl('line', { x1: x - r, y1: y + r, x2: x + r, y2: y - r, stroke }));
  } else {
    g.appendChild(svgEl('circle', { cx: x, cy: y, r: 4, stroke: color, fill: t.state === 'running' ? color : '#fff' }));
  }
  return g;
}

function trialLine(t, f, color, best) {
  const pts = curvePoints(t);
  const line = svgEl('polyline', {
    class: `trial-line ${t.state}${best ? ' best' : ''}`, 'data-trial': t.id, 'data-points': pts.length,
    points: pts.map(([e, v]) => `${f.X(e).toFixed(1)},${f.Y(v).toFixed(1)}`).join(' '),
    stroke: best ? '#1d2330' : color,
  }, [svgEl('title', { text: `trial ${t.id}: ${paramsText(t)}` })]);
  const dots = pts.map(([e, v]) => svgEl('circle', { class: 'point', cx: f.X(e), cy: f.Y(v), r: best ? 3 : 2,
    fill: best ? '#1d2330' : color }));
  return [line, ...dots];
}

// Every trial's objective by epoch, the best thick and black and drawn last.
function drawCurves(svg, study) {
  const bestId = study.best ? study.best.trial : null;
  const trials = (study.trials || []).filter((t) => curvePoints(t).length > 0);
  const f = chartFrame(study, trials);
  svg.replaceChildren();
  drawAxes(svg, f);
  // One rung is no early stopping: no guides.
  if ((study.rungs || []).length > 1) drawRungs(svg, f, study.rungs);
  const ordered = trials.filter((t) => t.id !== bestId).concat(trials.filter((t) => t.id === bestId));
  const markers = [];
  for (const t of ordered) {
    const color = PALETTE[(t.index || 0) % PALETTE.length];
    for (const e of trialLine(t, f, color, t.id === bestId)) svg.appendChild(e);
    const m = marker(t, f, color);
    if (m) markers.push(m);
  }
  for (const m of markers) svg.appendChild(m);
  if (trials.length === 0) {
    svg.appendChild(svgEl('text', { class: 'axis', x: f.width / 2, y: f.height / 2, 'text-anchor': 'middle',
      text: 'no epoch finished yet' }));
  }
  svg.setAttribute('data-lines', String(trials.length));
}

function renderBest(study) {
  const best = study.best;
  const t = best ? (study.trials || []).find((x) => x.id === best.trial) : null;
  setText('best-value', best ? fmtValue(best.value) : '-');
  setText('best-trial', best ? best.trial : 'none yet');
  const epoch = t && t.kept_epoch > 0 ? t.kept_epoch : best ? best.epochs : null;
  setText('best-epoch', best ? `${study.objective} at epoch ${epoch}` : '');
  const rows = t ? (t.param_order || Object.keys(t.params || {})).map((field) => el('tr', {}, [
    el('th', { text: field }), el('td', { text: String(t.params[field]) })])) : [];
  $('best-params').tBodies[0].replaceChildren(...rows);
}

function trialRow(t, bestId) {
  const cls = [t.id === bestId ? 'best' : '', t.state === 'failed' ? 'failed' : ''].join(' ').trim();
  const attrs = { 'data-trial': t.id };
  if (cls) attrs.class = cls;
  if (t.error) attrs.title = t.error;
  const link = t.dashboard
    ? el('a', { class: 'trial-dashboard', href: t.dashboard, target: '_blank', rel: 'noopener', text: 'dashboard' })
    : '';
  return el('tr', attrs, [
    el('td', { text: t.id }), el('td', { text: stateText(t) }), el('td', { text: String(t.rung) }),
    el('td', { text: String(t.epochs_done) }), el('td', { text: fmtValue(t.value) }),
    el('td', { class: 'params', text: paramsText(t) + (t.error ? ` — ${t.error}` : '') }),
    el('td', {}, link ? [link] : []),
  ]);
}

function publishedText(p) {
  return p && p.model ? `published: ${p.model} version ${p.version} (alias ${p.alias}, trial ${p.trial})` : '';
}

function renderSummary(study) {
  const trials = study.trials || [];
  const counts = {};
  for (const t of trials) counts[t.state] = (counts[t.state] || 0) + 1;
  setText('trial-count', String(trials.length));
  setText('trial-states', Object.entries(counts).map(([s, n]) => `${n} ${s}`).join(' · '));
  setText('epochs', fmtInt(trials.reduce((sum, t) => sum + (t.epochs_done || 0), 0)));
  setText('elapsed', fmtDuration(study.wall_seconds));
  setText('objective', `${study.objective} (${study.direction === 'MINIMIZE' ? 'min' : 'max'})`);
  setText('subtitle', [study.sampler && `${study.sampler} sampler`, study.scheduler,
    study.rungs && study.rungs.length ? `rungs at epochs ${study.rungs.join(', ')}` : '',
    study.end_reason, publishedText(study.published)].filter(Boolean).join(' · '));
}

function render(study) {
  setHeading('study', study.name || 'Polis study', study.state);
  renderSummary(study);
  setText('curves-caption', `${study.objective} by epoch, every trial`);
  setText('value-heading', study.objective || 'objective');
  drawCurves($('curves'), study);
  renderBest(study);
  const bestId = study.best ? study.best.trial : null;
  $('trials').tBodies[0].replaceChildren(...(study.trials || []).map((t) => trialRow(t, bestId)));
}

function poll() {
  pollJson('api/study', POLL_MS, {
    render,  // keeps polling after the study ends: polis-tune exits soon after
    starting: 'polis-tune is starting; no study state yet.',
    lost: (e) => `Cannot reach polis-tune (${e.message}); the study may have ended. Retrying.`,
  });
}

document.addEventListener('DOMContentLoaded', poll);
