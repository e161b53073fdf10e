// Helpers shared by the job dashboard (dashboard.js) and the study page
// (study.js): element lookup and creation, number and duration formats,
// the banner. Loaded before either page's script.
'use strict';

const $ = (id) => document.getElementById(id);

function fmtDuration(s) {
  if (s === null || s === undefined || !(s >= 0) || s > 1e8) return '-';
  const t = Math.round(s);
  if (t >= 3600) return `${Math.floor(t / 3600)}h${String(Math.floor(t / 60) % 60).padStart(2, '0')}m`;
  if (t >= 60) return `${Math.floor(t / 60)}m${String(t % 60).padStart(2, '0')}s`;
  return s < 10 ? `${s.toFixed(1)}s` : `${t}s`;
}
function fmtNumber(v, digits) {
  if (typeof v !== 'number' || !isFinite(v)) return '-';
  return digits === undefined ? v.toLocaleString('en-US') : v.toFixed(digits);
}
function fmtInt(v) {
  return typeof v === 'number' && isFinite(v) ? Math.round(v).toLocaleString('en-US') : '-';
}

function fmtAxis(v) {
  const a = Math.abs(v);
  if (a >= 1e6) return `${(v / 1e6).toFixed(1)}M`;
  if (a >= 1e4) return `${(v / 1e3).toFixed(0)}k`;
  if (a >= 100) return v.toFixed(0);
  if (a >= 1) return v.toFixed(2);
  return v.toPrecision(2);
}

function el(tag, attrs, children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === 'class') e.className = v;
    else if (k === 'text') e.textContent = v;
    else e.setAttribute(k, v);
  }
  for (const c of children || []) e.appendChild(typeof c === 'string' ? document.createTextNode(c) : c);
  return e;
}

function setText(id, text) { $(id).textContent = text; }

// The page's title, its heading (the element `id`) and the #state badge.
function setHeading(id, name, state) {
  document.title = `${name}: ${state || '?'}`;
  setText(id, name);
  $('state').textContent = state || '?';
  $('state').className = `badge ${state || ''}`;
}

function showBanner(text) {
  const b = $('banner');
  b.textContent = text;
  b.hidden = !text;
}

// Fetches the JSON document at `path` every `ms` milliseconds and hands it
// to `render(doc)`, which returns true to stop polling. A 503 shows the
// `starting` banner; no answer marks the #state badge unreachable and shows
// `lost(error)`, and polling goes on. #updated shows the last answer's time.
function pollJson(path, ms, { render, starting, lost }) {
  const tick = async () => {
    try {
      const res = await fetch(path, { cache: 'no-store' });
      if (res.status === 503) {
        showBanner(starting);
      } else if (!res.ok) {
        throw new Error(`HTTP ${res.status}`);
      } else {
        const doc = await res.json();
        showBanner('');
        const done = render(doc);
        setText('updated', new Date().toLocaleTimeString());
        if (done) return;
      }
    } catch (e) {
      $('state').textContent = 'unreachable';
      $('state').className = 'badge lost';
      showBanner(lost(e));
    }
    setTimeout(tick, ms);
  };
  tick();
}
