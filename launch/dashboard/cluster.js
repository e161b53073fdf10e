// The cluster page (cluster.html): polls /api/cluster (launch/cluster_view.h)
// and draws one row per job and one per host. Each job row links the job's
// own dashboard (its coordinator's address) while it runs.
'use strict';

function fmtBytes(b) {
  if (typeof b !== 'number' || !isFinite(b)) return '-';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let u = 0;
  while (b >= 1024 && u < units.length - 1) { b /= 1024; u++; }
  return u === 0 ? `${b.toFixed(0)} B` : `${b.toFixed(1)} ${units[u]}`;
}
const fmtRate = (v) => (typeof v === 'number' ? `${fmtBytes(v)}/s` : '-');
const fmtPercent = (v) => (typeof v === 'number' ? `${v.toFixed(0)}%` : '-');

function jobRow(j) {
  const run = j.run_id || `slurm:${j.slurm_job_id}`;
  const ranks = (j.ranks && j.ranks.length) || j.rank_count || '-';
  const epoch = typeof j.epoch === 'number' ? `${j.epoch}${typeof j.epochs === 'number' ? ` / ${j.epochs}` : ''}` : '-';
  const name = j.address && j.state === 'running'
    ? el('a', { href: j.address, class: 'job-dashboard' }, [j.job]) : j.job;
  const progress = el('div', { class: 'progress' }, [el('div', { style: `width:${j.progress_percent || 0}%` })]);
  const notes = [j.reason || ''];
  if (j.stragglers && j.stragglers.length) notes.push(`stragglers: ${j.stragglers.join(', ')}`);
  return el('tr', { 'data-job': run, class: j.state }, [
    el('td', {}, [name]), el('td', { text: run }),
    el('td', {}, [el('span', { class: `badge ${j.state}`, text: j.state })]),
    el('td', { text: (j.hosts || []).join(', ') || '-' }), el('td', { text: String(ranks) }),
    el('td', { text: epoch }),
    el('td', {}, [fmtPercent(j.progress_percent), progress]),
    el('td', { text: fmtDuration(j.eta_seconds) }),
    el('td', { class: 'muted', text: notes.filter((n) => n).join('; ') }),
  ]);
}

function hostRow(h) {
  const byRun = new Map();
  for (const r of h.ranks || []) {
    const key = `${r.job}/${r.run_id}`;
    if (!byRun.has(key)) byRun.set(key, []);
    byRun.get(key).push(`${r.rank} ${r.role}`);
  }
  const ranks = [...byRun].map(([run, list]) => `${run}: ${list.join(', ')}`).join('; ') || '-';
  const mem = typeof h.memory_used_bytes === 'number' && typeof h.memory_total_bytes === 'number'
    ? `${fmtBytes(h.memory_used_bytes)} / ${fmtBytes(h.memory_total_bytes)}` : '-';
  const gpus = (h.gpus || []).map((g) =>
    `${g.index}: ${fmtPercent(g.utilization_percent)} ${fmtBytes(g.memory_used_bytes)} / ${fmtBytes(g.memory_total_bytes)}`);
  return el('tr', { 'data-host': h.host }, [
    el('td', { text: h.host }), el('td', { text: ranks }),
    el('td', { class: 'num', text: fmtPercent(h.cpu_percent) }), el('td', { class: 'num', text: mem }),
    el('td', { class: 'num', text: fmtRate(h.net_rx_bytes_per_second) }),
    el('td', { class: 'num', text: fmtRate(h.net_tx_bytes_per_second) }),
    el('td', { text: gpus.join('; ') || '-' }),
  ]);
}

function render(c) {
  const jobs = c.jobs || [], hosts = c.hosts || [];
  const running = jobs.filter((j) => j.state === 'running').length;
  document.title = `Polis cluster: ${running} running`;
  $('state').textContent = `${running} running`;
  $('state').className = `badge ${running ? 'running' : 'done'}`;
  $('jobs').tBodies[0].replaceChildren(...jobs.map(jobRow));
  $('hosts').tBodies[0].replaceChildren(...hosts.map(hostRow));
  setText('jobs-summary', `${jobs.length} listed, ${running} running`);
  setText('hosts-summary', `${hosts.length}`);
  setText('jobs-dir', c.jobs_dir || '?');
  setText('slurm', c.slurm && c.slurm.available ? `${c.slurm.jobs} job(s) in squeue` : (c.slurm && c.slurm.reason) || '?');
  $('problems').replaceChildren(...(c.problems || []).map((p) => el('li', { text: p })));
  return false;
}

pollJson('/api/cluster', 2000, {
  render,
  starting: 'the cluster view is starting',
  lost: (e) => `polisctl cluster --serve does not answer (${e.message}); retrying`,
});
