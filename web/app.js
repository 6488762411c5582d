/* umdq dashboard: sweeps, one sweep (jobs table, result chart, parallel coordinates, curves,
 * compare), one job, workers. Plain JS, no build step; charts with uPlot (web/vendor/).
 * Every value from the daemon goes into the page as text (el(), textContent), never as HTML.
 * Routes live in the fragment: #/, #/sweeps/ID, #/jobs/ID, #/workers; #login=CODE signs in. */
'use strict';
(function () {
  const POLL_MS = 2000;
  const MAX_ROWS = 500;        // table rows drawn at once; filter or sort to see others
  const CURVE_POINTS = 1000;   // points per curve asked of the daemon (it downsamples)
  const PC_MAX_LINES = 2000;   // lines of the parallel coordinates; more jobs are sampled
  const PALETTE = ['#3278d6', '#e4572e', '#2e9d5b', '#9c55c2', '#e6a23c', '#17a2b8', '#c2418a',
                   '#6b7f2a', '#8a5a44', '#5b6b8c'];
  const main = document.getElementById('main');
  let csrf = null;
  let view = null;
  let busy = false;

  /* ---- small helpers ---------------------------------------------------------------------------- */

  // el('td', {class: 'num', onclick: f}, child, 'text', ...): an element; strings become text nodes
  function el(tag, attrs, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
      else if (k === 'class') e.className = v;
      else e.setAttribute(k, v === true ? '' : v);
    }
    for (const k of kids.flat(Infinity)) if (k !== null && k !== undefined) e.append(k instanceof Node ? k : String(k));
    return e;
  }
  function isNum(v) { return typeof v === 'number' && Number.isFinite(v); }
  function fmtNum(v) {
    if (v === null || v === undefined) return '';
    if (typeof v !== 'number') return typeof v === 'object' ? JSON.stringify(v) : String(v);
    if (!Number.isFinite(v)) return String(v);
    if (Number.isInteger(v) && Math.abs(v) < 1e9) return String(v);
    const a = Math.abs(v);
    if (a !== 0 && (a < 1e-3 || a >= 1e6)) return v.toExponential(3);
    return String(Number(v.toPrecision(4)));
  }
  function pad(n) { return String(n).padStart(2, '0'); }
  function fmtTime(t) {
    if (!isNum(t) || t <= 0) return '';
    const d = new Date(t * 1000);
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  }
  function fmtDur(s) {
    if (!isNum(s)) return '';
    s = Math.max(0, Math.round(s));
    if (s < 60) return `${s}s`;
    if (s < 3600) return `${Math.floor(s / 60)}m ${pad(s % 60)}s`;
    if (s < 86400) return `${Math.floor(s / 3600)}h ${pad(Math.floor(s / 60) % 60)}m`;
    return `${Math.floor(s / 86400)}d ${Math.floor(s / 3600) % 24}h`;
  }
  function stateBadge(s) { return el('span', {class: `state ${s}`}, s); }
  const PROGRESS_ORDER = ['SUCCEEDED', 'FAILED', 'LOST', 'CANCELLED', 'PREEMPTED', 'RUNNING', 'QUEUED'];
  function progressBar(counts, total) {
    const bar = el('div', {class: 'progress', title: PROGRESS_ORDER.filter(k => counts[k]).map(k => `${counts[k]} ${k.toLowerCase()}`).join(', ')});
    for (const k of PROGRESS_ORDER) {
      if (!counts[k] || !total) continue;
      bar.append(el('span', {class: k, style: `width:${(100 * counts[k] / total).toFixed(2)}%`}));
    }
    return bar;
  }
  function countsText(c, total) {
    const parts = [`${c.SUCCEEDED || 0}/${total} done`];
    if (c.RUNNING) parts.push(`${c.RUNNING} running`);
    if (c.QUEUED) parts.push(`${c.QUEUED} queued`);
    const bad = (c.FAILED || 0) + (c.LOST || 0);
    if (bad) parts.push(`${bad} failed`);
    const off = (c.CANCELLED || 0) + (c.PREEMPTED || 0);
    if (off) parts.push(`${off} cancelled`);
    return parts.join(' · ');
  }
  function setLive(ok, msg) {
    const live = document.getElementById('live');
    live.className = ok ? 'live' : 'live err';
    const d = new Date();
    live.textContent = ok ? `live · updated ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}` : `not updating: ${msg}`;
  }

  /* ---- the API ---------------------------------------------------------------------------------- */

  async function api(path, opts) {
    opts = opts || {};
    const init = {method: opts.method || 'GET', credentials: 'same-origin', headers: {}};
    if (init.method !== 'GET') init.headers['X-Umdq-Csrf'] = csrf || '';
    if (opts.body !== undefined) {
      init.headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(opts.body);
    }
    const r = await fetch(path, init);
    let doc = null;
    try { doc = await r.json(); } catch (e) { doc = null; }
    if (!r.ok) {
      const err = new Error((doc && doc.error) || `HTTP ${r.status}`);
      err.status = r.status;
      throw err;
    }
    return doc;
  }

  /* ---- charts ----------------------------------------------------------------------------------- */

  // A uPlot chart in box that is made once and then only given new data (no flicker on polls).
  function lineChart(box, height) {
    let plot = null, shape = '';
    function draw(opts) {
      // opts: {x: {label, log, labels}, y: {label}, series: [{label, color, points}], data}
      const width = Math.max(300, box.clientWidth || 600);
      const key = JSON.stringify([width, opts.x, opts.y.label, opts.series.map(s => [s.label, s.color, !!s.points, !!s.line])]);
      if (plot && key === shape) { plot.setData(opts.data); return; }
      if (plot) plot.destroy();
      box.replaceChildren();
      shape = key;
      const labels = opts.x.labels;
      plot = new uPlot({
        width, height,
        legend: {show: opts.series.length > 1 || !!opts.x.labels, live: true},
        cursor: {drag: {x: true, y: false}},
        scales: {x: {time: false, distr: opts.x.log ? 3 : 1}, y: {auto: true}},
        axes: [
          {label: opts.x.label, stroke: '#4a5265', grid: {stroke: '#eef0f4'},
           values: labels ? (u, vals) => vals.map(v => (Number.isInteger(v) && labels[v] !== undefined ? labels[v] : '')) : undefined,
           splits: labels ? () => labels.map((_, i) => i) : undefined},
          {label: opts.y.label, stroke: '#4a5265', grid: {stroke: '#eef0f4'}, size: 60},
        ],
        series: [{label: opts.x.label, value: labels ? (u, v) => (v === null ? '' : labels[v] ?? '') : (u, v) => fmtNum(v)}].concat(opts.series.map(s => ({
          label: s.label, stroke: s.color, width: s.line === false ? 0 : 1.6, spanGaps: true,
          value: (u, v) => fmtNum(v),
          points: {show: s.points !== false, size: s.points ? 6 : 0, fill: s.color, stroke: s.color},
        }))),
      }, opts.data, box);
    }
    return {draw, destroy() { if (plot) plot.destroy(); plot = null; }};
  }

  // Parallel coordinates over axes [{key, label, values(job) -> number|string|null}] as SVG, with a
  // brush per axis (drag along it; a click clears it). onBrush(filter) gets a predicate on jobs.
  function parallelCoords(box, onBrush) {
    const brushes = {};   // axis key -> [lo, hi] in data units (numeric) or Set of labels
    let state = null;
    const NS = 'http://www.w3.org/2000/svg';
    function s(tag, attrs) {
      const e = document.createElementNS(NS, tag);
      for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
      return e;
    }
    function scaleOf(axis, jobs, top, bottom) {
      const vals = jobs.map(axis.value).filter(v => v !== null && v !== undefined);
      const nums = vals.filter(isNum);
      if (nums.length && nums.length === vals.length) {
        let lo = Math.min(...nums), hi = Math.max(...nums);
        const log = lo > 0 && hi / lo >= 100;
        const f = log ? Math.log10 : (v => v);
        let a = f(lo), b = f(hi);
        if (a === b) { a -= 1; b += 1; }
        const px = v => bottom - (f(v) - a) / (b - a) * (bottom - top);
        return {numeric: true, px, lo, hi, log, inv: y => { const t = a + (bottom - y) / (bottom - top) * (b - a); return log ? Math.pow(10, t) : t; }};
      }
      const cats = [...new Set(vals.map(v => fmtNum(v)))].sort();
      const step = cats.length > 1 ? (bottom - top) / (cats.length - 1) : 0;
      const px = v => (cats.length > 1 ? bottom - cats.indexOf(fmtNum(v)) * step : (top + bottom) / 2);
      return {numeric: false, px, cats};
    }
    function passes(job) {
      if (!state) return true;
      for (const ax of state.axes) {
        const b = brushes[ax.key];
        if (!b) continue;
        const v = ax.value(job);
        if (v === null || v === undefined) return false;
        const y = ax.scale.px(v);
        if (y < b[0] || y > b[1]) return false;
      }
      return true;
    }
    function draw(axes, jobs, colorOf) {
      const width = Math.max(400, box.clientWidth || 600), height = 310, top = 44, bottom = height - 22;
      const left = 50, right = width - 50;
      const gap = axes.length > 1 ? (right - left) / (axes.length - 1) : 0;
      axes.forEach((ax, i) => { ax.x = left + i * gap; ax.scale = scaleOf(ax, jobs, top, bottom); });
      for (const k of Object.keys(brushes)) if (!axes.some(a => a.key === k)) delete brushes[k];
      state = {axes, jobs, top, bottom};
      const svg = s('svg', {class: 'pc', width, height, viewBox: `0 0 ${width} ${height}`});
      const lines = s('g');
      for (const job of jobs) {
        let d = '', pen = false;
        for (const ax of axes) {
          const v = ax.value(job);
          if (v === null || v === undefined) { pen = false; continue; }
          d += `${pen ? 'L' : 'M'}${ax.x.toFixed(1)},${ax.scale.px(v).toFixed(1)}`;
          pen = true;
        }
        if (!d) continue;
        const p = s('path', {d, class: passes(job) ? 'line' : 'line dim', stroke: colorOf(job)});
        p.dataset.job = job.id;
        lines.append(p);
      }
      svg.append(lines);
      for (const ax of axes) {
        const g = s('g', {class: 'axis'});
        g.append(s('line', {x1: ax.x, x2: ax.x, y1: top, y2: bottom}));
        const stagger = gap < 110 && axes.indexOf(ax) % 2 === 1;   // neighbours' labels would overlap
        const anchor = ax.x === left ? 'start' : ax.x === right ? 'end' : 'middle';
        const label = s('text', {x: anchor === 'start' ? ax.x - 8 : anchor === 'end' ? ax.x + 8 : ax.x, y: stagger ? 28 : 13, 'text-anchor': anchor, 'font-weight': 600});
        label.textContent = ax.label.length > 22 ? '…' + ax.label.slice(-21) : ax.label;
        g.append(label);
        const ticks = ax.scale.numeric ? [[ax.scale.lo, fmtNum(ax.scale.lo)], [ax.scale.hi, fmtNum(ax.scale.hi)]]
                                       : ax.scale.cats.map(c => [c, c]);
        const shown = ticks.length > 12 ? [ticks[0], ticks[ticks.length - 1]] : ticks;
        for (const [v, text] of shown) {
          const t = s('text', {x: ax.x + 5, y: ax.scale.px(ax.scale.numeric ? v : text) + 4});
          t.textContent = text;
          g.append(t);
        }
        const b = brushes[ax.key];
        if (b) g.append(s('rect', {class: 'brush', x: ax.x - 7, y: b[0], width: 14, height: Math.max(2, b[1] - b[0])}));
        const grab = s('rect', {class: 'grab', x: ax.x - 12, y: top - 4, width: 24, height: bottom - top + 8});
        grab.addEventListener('mousedown', ev => startBrush(ev, ax, svg));
        g.append(grab);
        svg.append(g);
      }
      box.replaceChildren(svg);
    }
    function startBrush(ev, ax, svg) {
      ev.preventDefault();
      const rect = svg.getBoundingClientRect();
      const y0 = ev.clientY - rect.top;
      let moved = false;
      const move = e => {
        const y1 = e.clientY - rect.top;
        if (Math.abs(y1 - y0) < 3) return;
        moved = true;
        brushes[ax.key] = [Math.max(state.top - 2, Math.min(y0, y1)), Math.min(state.bottom + 2, Math.max(y0, y1))];
        restyle();
      };
      const up = () => {
        window.removeEventListener('mousemove', move);
        window.removeEventListener('mouseup', up);
        if (!moved) { delete brushes[ax.key]; restyle(); }
        onBrush(Object.keys(brushes).length ? passes : null);
      };
      window.addEventListener('mousemove', move);
      window.addEventListener('mouseup', up);
    }
    function restyle() {
      const byId = new Map(state.jobs.map(j => [String(j.id), j]));
      for (const p of box.querySelectorAll('path.line')) p.classList.toggle('dim', !passes(byId.get(p.dataset.job)));
      box.querySelectorAll('rect.brush').forEach(r => r.remove());
      const groups = box.querySelectorAll('g.axis');
      state.axes.forEach((ax, i) => {
        const b = brushes[ax.key];
        if (!b) return;
        const grab = groups[i].querySelector('rect.grab');
        groups[i].insertBefore(s('rect', {class: 'brush', x: ax.x - 7, y: b[0], width: 14, height: Math.max(2, b[1] - b[0])}), grab);
      });
    }
    function highlight(id) {
      for (const p of box.querySelectorAll('path.line')) p.classList.toggle('hl', p.dataset.job === String(id));
    }
    return {draw, highlight, clear() { for (const k of Object.keys(brushes)) delete brushes[k]; onBrush(null); }};
  }

  // A colour from blue (low) to red (high) for t in [0, 1]
  function ramp(t) {
    const a = [50, 120, 214], b = [228, 87, 46];
    const c = a.map((x, i) => Math.round(x + (b[i] - x) * Math.max(0, Math.min(1, t))));
    return `rgb(${c[0]},${c[1]},${c[2]})`;
  }

  /* ---- view: sweeps ----------------------------------------------------------------------------- */

  function sweepsView() {
    const tbody = el('tbody');
    const empty = el('p', {class: 'muted'});
    main.append(el('h1', null, 'Sweeps'), el('div', {class: 'card'},
      el('table', {id: 'sweeps'}, el('thead', null, el('tr', null,
        el('th', null, 'Sweep'), el('th', null, 'State'), el('th', null, 'Progress'), el('th', null, 'Jobs'),
        el('th', null, 'Started'), el('th', {class: 'num'}, 'Elapsed'))), tbody), empty));
    return {
      async refresh() {
        const d = await api('/api/sweeps');
        empty.textContent = d.sweeps.length ? '' : 'No sweeps yet: submit one with `umdq submit sweep.json`.';
        tbody.replaceChildren(...d.sweeps.map(s => el('tr', null,
          el('td', null, el('a', {href: `#/sweeps/${s.id}`}, s.name), el('span', {class: 'muted'}, `  #${s.id}`)),
          el('td', null, stateBadge(s.state)),
          el('td', null, progressBar(s.counts, s.total)),
          el('td', null, countsText(s.counts, s.total)),
          el('td', null, fmtTime(s.started)),
          el('td', {class: 'num'}, fmtDur(s.elapsed)))));
      },
    };
  }

  /* ---- view: one sweep -------------------------------------------------------------------------- */

  function resultRank(k) {
    if (k.startsWith('probe_ridge')) return 0;
    if (k.startsWith('probe_')) return 0.5;
    if (k.startsWith('fid')) return 1;
    if (k.includes('img_per_s') || k === 'img/s') return 2;
    return 3;
  }

  // A filter text: terms "key<0.5", "lr>=0.01", "state=FAILED", "width!=64" or free text; all must hold.
  function parseFilter(text, columns) {
    const terms = text.trim().split(/\s+/).filter(Boolean);
    const tests = [];
    for (const t of terms) {
      const m = t.match(/^([^<>=!]+)(<=|>=|!=|=|<|>)(.*)$/);
      if (m) {
        const col = columns.find(c => c.label === m[1]) || columns.find(c => c.label.endsWith('.' + m[1]) || c.label.endsWith(m[1]));
        if (!col) return {error: `no column ${m[1]}`};
        const want = m[3], wn = Number(want);
        tests.push(job => {
          const v = col.get(job);
          if (m[2] === '=' || m[2] === '!=') {
            const eq = fmtNum(v) === want || String(v) === want || (isNum(v) && want !== '' && v === wn);
            return m[2] === '=' ? eq : !eq;
          }
          if (!isNum(v) || Number.isNaN(wn)) return false;
          return m[2] === '<' ? v < wn : m[2] === '>' ? v > wn : m[2] === '<=' ? v <= wn : v >= wn;
        });
      } else {
        const low = t.toLowerCase();
        tests.push(job => columns.some(c => fmtNum(c.get(job)).toLowerCase().includes(low)));
      }
    }
    return {test: job => tests.every(f => f(job))};
  }

  // The rows of GET /api/sweeps/SWEEP/table as job objects {id, idx, state, ..., params, results}.
  function tableJobs(t) {
    const col = Object.fromEntries(t.columns.map((c, i) => [c, i]));
    return t.rows.map(r => {
      const params = {}, results = {};
      t.swept.forEach((k, i) => { params[k] = r[col.params][i]; });
      t.results.forEach((k, i) => { if (r[col.results][i] !== null) results[k] = r[col.results][i]; });
      return {id: r[col.id], idx: r[col.idx], state: r[col.state], attempts: r[col.attempts], step: r[col.step],
              seed: r[col.seed], worker: r[col.worker], params, results};
    });
  }

  function sweepView(ref) {
    const st = {sweep: null, jobs: [], columns: [], sort: null, dir: 1, filter: '', brush: null,
                selected: new Set(), curves: new Map(), autoSelected: false, lastKey: '', lastFull: 0, sig: ''};
    const head = el('div');
    const err = el('div');
    const chartCtl = el('div', {class: 'bar'});
    const chartBox = el('div', {class: 'chart', id: 'result-chart'});
    const chartNote = el('div', {class: 'legend-note'});
    const pcBox = el('div', {class: 'chart', id: 'parallel'});
    const pcNote = el('div', {class: 'legend-note'}, 'Drag along an axis to keep the jobs in that range; click the axis to clear it.');
    const filterIn = el('input', {type: 'search', id: 'filter', placeholder: 'filter: lr<0.1 state=SUCCEEDED text…'});
    const shownNote = el('span', {class: 'muted'});
    const thead = el('thead'), tbody = el('tbody');
    const tableBox = el('div', {class: 'scroll fit'}, el('table', {id: 'jobs'}, thead, tbody));
    const curveCtl = el('div', {class: 'bar'});
    const curveBox = el('div', {class: 'chart', id: 'curves'});
    const curveNote = el('div', {class: 'legend-note'});
    const compareBox = el('div', {id: 'compare'});
    const sel = {y: el('select', {id: 'chart-y'}), x: el('select', {id: 'chart-x'}), g: el('select', {id: 'chart-g'}),
                 curve: el('select', {id: 'curve-key'})};
    chartCtl.append(el('label', null, 'plot'), sel.y, el('label', null, 'against'), sel.x, el('label', null, 'one line per'), sel.g);
    curveCtl.append(el('label', null, 'metric'), sel.curve,
      el('button', {onclick: () => { st.selected.clear(); renderTable(); drawCurves(true); renderCompare(); }}, 'clear selection'));
    main.append(head, err,
      el('div', {class: 'row'},
        el('div', {class: 'card'}, el('h2', null, 'Result against a swept key'), chartCtl, chartBox, chartNote),
        el('div', {class: 'card'}, el('h2', null, 'Parallel coordinates'), pcBox, pcNote)),
      el('div', {class: 'card'}, el('div', {class: 'bar'}, el('h2', {style: 'margin:0'}, 'Jobs'), filterIn, shownNote),
        tableBox),
      el('div', {class: 'row'},
        el('div', {class: 'card'}, el('h2', null, 'Curves of the selected jobs'), curveCtl, curveBox, curveNote),
        el('div', {class: 'card'}, el('h2', null, 'Compare the selected jobs'), compareBox)));
    const chart = lineChart(chartBox, 300);
    const curves = lineChart(curveBox, 300);
    const pc = parallelCoords(pcBox, f => { st.brush = f; renderTable(); });
    for (const k of ['y', 'x', 'g']) sel[k].addEventListener('change', () => { drawChart(); drawPC(); });
    sel.curve.addEventListener('change', () => drawCurves(false));
    filterIn.addEventListener('input', () => { st.filter = filterIn.value; renderTable(); });

    function numericResults() {
      const keys = new Set();
      for (const j of st.jobs) for (const [k, v] of Object.entries(j.results || {})) if (isNum(v)) keys.add(k);
      return [...keys].sort((a, b) => resultRank(a) - resultRank(b) || a.localeCompare(b));
    }
    function buildColumns() {
      const swept = st.sweep.swept || [];
      const cols = [{label: 'job', get: j => j.id, num: true, link: j => `#/jobs/${j.id}`}];
      for (const k of swept) cols.push({label: k, get: j => (j.params ? j.params[k] : null), num: true, param: true});
      if (!swept.includes('seed') && new Set(st.jobs.map(j => j.seed)).size > 1) cols.push({label: 'seed', get: j => j.seed, num: true});
      for (const k of numericResults()) cols.push({label: k, get: j => j.results[k], num: true, result: true});
      cols.push({label: 'state', get: j => j.state, badge: true}, {label: 'attempts', get: j => j.attempts, num: true});
      if (st.jobs.some(j => j.step > 0)) cols.push({label: 'step', get: j => j.step, num: true});
      cols.push({label: 'worker', get: j => j.worker});
      st.columns = cols;
    }
    function fillSelect(s, options, keep) {
      const cur = s.dataset.sig === undefined ? undefined : s.value;
      const sig = options.join('\u0001');
      if (s.dataset.sig !== sig) {
        s.replaceChildren(...options.map(o => el('option', {value: o}, o === '' ? '(none)' : o)));
        s.dataset.sig = sig;
      }
      if (options.includes(cur)) s.value = cur;
      else if (keep !== undefined && options.includes(keep)) s.value = keep;
    }

    function renderHead() {
      const s = st.sweep;
      head.replaceChildren(
        el('h1', null, s.name, el('small', null, `sweep #${s.id}`)),
        el('div', {class: 'card bar'}, stateBadge(s.state), progressBar(s.counts, s.total),
          el('span', {class: 'counts'}, countsText(s.counts, s.total)),
          el('span', {class: 'counts'}, s.started ? `started ${fmtTime(s.started)} · elapsed ${fmtDur(s.elapsed)}` : 'not started'),
          el('span', {style: 'margin-left:auto'}),
          confirmButton('sweep-cancel', 'Cancel open jobs', !(s.counts.QUEUED || s.counts.RUNNING),
                        async () => { await api(`/api/sweeps/${s.id}/cancel`, {method: 'POST'}); await refresh(); }),
          el('button', {disabled: !((s.counts.FAILED || 0) + (s.counts.LOST || 0) + (s.counts.CANCELLED || 0) + (s.counts.PREEMPTED || 0)),
                        onclick: async () => { await api(`/api/sweeps/${s.id}/requeue?failed=1`, {method: 'POST'}); await refresh(); }},
             'Requeue failed')));
    }

    function visibleJobs() {
      const f = parseFilter(st.filter, st.columns);
      filterIn.setCustomValidity(f.error || '');
      filterIn.title = f.error || '';
      let rows = st.jobs.filter(j => (!f.test || f.test(j)) && (!st.brush || st.brush(j)));
      if (st.sort !== null) {
        const col = st.columns.find(c => c.label === st.sort);
        if (col) {
          rows = rows.slice().sort((a, b) => {
            const x = col.get(a), y = col.get(b);
            const xn = x === null || x === undefined, yn = y === null || y === undefined;
            if (xn || yn) return xn && yn ? 0 : xn ? 1 : -1;   // empty cells last either way
            if (isNum(x) && isNum(y)) return (x - y) * st.dir;
            return String(x).localeCompare(String(y), undefined, {numeric: true}) * st.dir;
          });
        }
      }
      return rows;
    }
    function renderTable() {
      const cols = st.columns;
      thead.replaceChildren(el('tr', null, el('th', {title: 'select for curves and compare'}, '✓'), ...cols.map(c => el('th', {
        class: `sort ${c.num ? 'num' : ''} ${st.sort === c.label ? (st.dir > 0 ? 'asc' : 'desc') : ''}`,
        'data-col': c.label,
        onclick: () => { if (st.sort === c.label) st.dir = -st.dir; else { st.sort = c.label; st.dir = c.result && /loss|fid/.test(c.label) ? 1 : c.result ? -1 : 1; } renderTable(); },
      }, c.label))));
      const rows = visibleJobs();
      shownNote.textContent = rows.length === st.jobs.length ? `${rows.length} jobs` : `${rows.length} of ${st.jobs.length} jobs`;
      if (rows.length > MAX_ROWS) shownNote.textContent += ` (first ${MAX_ROWS} shown)`;
      tableBox.classList.toggle('fit', rows.length <= 16);   // a long table scrolls in a box of its own
      tbody.replaceChildren(...rows.slice(0, MAX_ROWS).map(j => {
        const box = el('input', {type: 'checkbox', checked: st.selected.has(j.id), 'aria-label': `select job ${j.id}`,
          onchange: e => { if (e.target.checked) st.selected.add(j.id); else st.selected.delete(j.id); e.target.closest('tr').classList.toggle('sel', e.target.checked); drawCurves(true); renderCompare(); }});
        return el('tr', {class: st.selected.has(j.id) ? 'sel' : null, 'data-job': j.id,
                         onmouseenter: () => pc.highlight(j.id), onmouseleave: () => pc.highlight(null)},
          el('td', null, box),
          ...cols.map(c => {
            const v = c.get(j);
            if (c.link) return el('td', {class: 'num'}, el('a', {href: c.link(j)}, String(v)));
            if (c.badge) return el('td', null, stateBadge(v));
            return el('td', {class: c.num && isNum(v) ? 'num' : null}, fmtNum(v));
          }));
      }));
    }

    // one point per (x, line) value: the mean over the jobs that share them (seeds, other keys)
    function drawChart() {
      const ys = numericResults(), swept = st.sweep.swept || [];
      fillSelect(sel.y, ys, ys[0]);
      fillSelect(sel.x, swept, swept[0]);
      const others = [''].concat(swept.filter(k => k !== sel.x.value && k !== 'seed'));
      fillSelect(sel.g, others, others[1] || '');
      const y = sel.y.value, x = sel.x.value, g = sel.g.value;
      chartCtl.hidden = !y || !x;
      if (!y || !x) {
        chartNote.textContent = '';
        chartBox.replaceChildren(el('p', {class: 'muted'}, ys.length ? 'This sweep sweeps no key.' : 'No job has reported a numeric result yet.'));
        chart.destroy();
        return;
      }
      const jobs = st.jobs.filter(j => isNum(j.results[y]) && j.params && j.params[x] !== undefined && j.params[x] !== null);
      const xvals = [...new Set(jobs.map(j => j.params[x]))];
      const numeric = xvals.every(isNum);
      xvals.sort((a, b) => (numeric ? a - b : String(a).localeCompare(String(b), undefined, {numeric: true})));
      const groups = g ? [...new Set(jobs.map(j => fmtNum(j.params[g])))].sort((a, b) => a.localeCompare(b, undefined, {numeric: true})) : [''];
      const xs = numeric ? xvals : xvals.map((_, i) => i);
      const series = [], data = [xs];
      groups.forEach((gv, gi) => {
        const col = xvals.map(xv => {
          const hit = jobs.filter(j => j.params[x] === xv && (!g || fmtNum(j.params[g]) === gv));
          return hit.length ? hit.reduce((s, j) => s + j.results[y], 0) / hit.length : null;
        });
        data.push(col);
        series.push({label: g ? `${g}=${gv}` : y, color: PALETTE[gi % PALETTE.length], points: true});
      });
      const log = numeric && xvals.length > 2 && xvals[0] > 0 && xvals[xvals.length - 1] / xvals[0] >= 100;
      if (!jobs.length) {
        chartBox.replaceChildren(el('p', {class: 'muted'}, `No job has ${y} yet.`));
        chart.destroy();
        return;
      }
      if (chartBox.querySelector('p')) chartBox.replaceChildren();
      chart.draw({x: {label: x, log, labels: numeric ? null : xvals.map(v => fmtNum(v))}, y: {label: y}, series, data});
      chartNote.textContent = `${jobs.length} jobs with ${y}; each point is the mean over the jobs that share its ${x}${g ? ' and ' + g : ''}.`;
    }

    function drawPC() {
      const swept = (st.sweep.swept || []).filter(k => k !== 'seed');
      const results = numericResults().slice(0, 6);
      const axes = swept.map(k => ({key: 'p:' + k, label: k, value: j => (j.params ? j.params[k] ?? null : null)}))
        .concat(results.map(k => ({key: 'r:' + k, label: k, value: j => (isNum(j.results[k]) ? j.results[k] : null)})));
      if (axes.length < 2) {
        pcBox.replaceChildren(el('p', {class: 'muted'}, 'Drawn once the sweep has two swept keys or results.'));
        pcNote.textContent = '';
        return;
      }
      const y = sel.y.value;
      let lo = Infinity, hi = -Infinity;
      for (const j of st.jobs) if (isNum(j.results[y])) { lo = Math.min(lo, j.results[y]); hi = Math.max(hi, j.results[y]); }
      // a large sweep draws an even sample of its jobs (every k-th), so the page stays quick
      const k = Math.ceil(st.jobs.length / PC_MAX_LINES);
      const jobs = k > 1 ? st.jobs.filter((_, i) => i % k === 0) : st.jobs;
      pc.draw(axes, jobs, j => (isNum(j.results[y]) ? ramp(hi > lo ? (j.results[y] - lo) / (hi - lo) : 0.5) : '#b8bfcc'));
      pcNote.textContent = `${k > 1 ? `${jobs.length} of ${st.jobs.length}` : st.jobs.length} jobs; colour: ${y || 'none'} (blue low, red high). Drag along an axis to keep a range; click it to clear.`;
    }

    async function drawCurves(selectionChanged) {
      const ids = [...st.selected].slice(0, PALETTE.length);
      if (!ids.length) {
        curves.destroy();
        curveBox.replaceChildren(el('p', {class: 'muted'}, 'Tick jobs in the table to overlay their curves.'));
        curveNote.textContent = '';
        return;
      }
      // refetch the curves of running jobs and of jobs not fetched yet
      await Promise.all(ids.map(async id => {
        const job = st.jobs.find(j => j.id === id);
        const have = st.curves.get(id);
        if (have && !(job && job.state === 'RUNNING') && have.state === (job && job.state)) return;
        const d = await api(`/api/jobs/${id}/metrics?max_points=${CURVE_POINTS}`);
        st.curves.set(id, {state: job && job.state, series: d.series});
      }));
      const keys = new Set();
      for (const id of ids) for (const s of st.curves.get(id).series) keys.add(s.key);
      const list = [...keys].sort((a, b) => (a === 'loss' ? -1 : b === 'loss' ? 1 : a.localeCompare(b)));
      fillSelect(sel.curve, list, list.includes('loss') ? 'loss' : list[0]);
      const key = sel.curve.value;
      const tables = [], series = [];
      ids.forEach((id, i) => {
        const s = st.curves.get(id).series.find(x => x.key === key);
        if (!s || !s.points.length) return;
        tables.push([s.points.map(p => p[0]), s.points.map(p => p[1])]);
        const job = st.jobs.find(j => j.id === id);
        let params = job && job.params ? Object.entries(job.params).map(([k, v]) => `${k.split('.').pop()}=${fmtNum(v)}`).join(' ') : '';
        if (job && st.columns.some(c => c.label === 'seed')) params += ` seed=${job.seed}`;
        series.push({label: `#${id} ${params}`, color: PALETTE[i % PALETTE.length], points: false});
      });
      if (!tables.length) {
        curves.destroy();
        curveBox.replaceChildren(el('p', {class: 'muted'}, key ? `No ${key} points for the selected jobs yet.` : 'The selected jobs have reported no metrics yet.'));
        return;
      }
      if (curveBox.querySelector('p')) curveBox.replaceChildren();
      const data = tables.length === 1 ? tables[0] : uPlot.join(tables);
      curves.draw({x: {label: 'step'}, y: {label: key}, series, data});
      curveNote.textContent = `${series.length} job${series.length === 1 ? '' : 's'}; curves downsampled by the daemon to at most ${CURVE_POINTS} points.`;
      if (selectionChanged) renderCompare();
    }

    function renderCompare() {
      const jobs = [...st.selected].map(id => st.jobs.find(j => j.id === id)).filter(Boolean);
      if (!jobs.length) { compareBox.replaceChildren(el('p', {class: 'muted'}, 'Tick jobs in the table to compare them side by side.')); return; }
      const rows = st.columns.filter(c => !c.link && c.label !== 'worker');
      compareBox.replaceChildren(el('div', {class: 'scroll fit'}, el('table', {class: 'diff'},
        el('thead', null, el('tr', null, el('th', null, ''), ...jobs.map(j => el('th', {class: 'num'}, el('a', {href: `#/jobs/${j.id}`}, `job ${j.id}`))))),
        el('tbody', null, rows.map(c => {
          const vals = jobs.map(j => fmtNum(c.get(j)));
          const differ = new Set(vals).size > 1;
          return el('tr', null, el('td', {class: 'muted'}, c.label), ...vals.map(v => el('td', {class: `num ${differ ? 'v' : ''}`}, v)));
        })))),
        el('div', {class: 'legend-note'}, 'Highlighted rows differ between the selected jobs.'));
    }

    async function refresh() {
      const now = Date.now();
      const small = await api(`/api/sweeps/${encodeURIComponent(ref)}?jobs=0`);
      const s = small.sweep;
      const key = JSON.stringify([s.counts, s.total]);
      // the job rows again when counts moved, while jobs run (steps, results), or every 30 s
      if (!st.sweep || key !== st.lastKey || s.counts.RUNNING > 0 || now - st.lastFull > 30000) {
        const t = await api(`/api/sweeps/${encodeURIComponent(ref)}/table`);
        st.sweep = Object.assign(s, {swept: t.swept});
        st.jobs = tableJobs(t);
        st.lastKey = key;
        st.lastFull = now;
        const sig = JSON.stringify(t.rows);
        const changed = sig !== st.sig;
        st.sig = sig;
        buildColumns();
        renderHead();
        if (!st.autoSelected) {
          st.autoSelected = true;
          const y = numericResults()[0];
          const pick = st.jobs.filter(j => j.state === 'SUCCEEDED' || j.state === 'RUNNING')
            .sort((a, b) => (isNum(b.results[y]) ? b.results[y] : -Infinity) - (isNum(a.results[y]) ? a.results[y] : -Infinity));
          pick.slice(0, 4).forEach(j => st.selected.add(j.id));
        }
        if (changed) {
          renderTable();
          drawChart();
          drawPC();
          renderCompare();
        }
        await drawCurves(false);
      } else {
        st.sweep = Object.assign(st.sweep, s);
        renderHead();
      }
    }
    return {refresh, destroy() { chart.destroy(); curves.destroy(); }};
  }

  // A button whose action needs a second click within 3 s (cancel). Views redraw every poll: the
  // first click is remembered by button id and page, not by the element.
  const armedUntil = {};
  function confirmButton(id, label, disabled, action) {
    const key = `${id} ${location.hash}`;
    const armedNow = () => (armedUntil[key] || 0) > Date.now();
    const b = el('button', {class: 'danger', id, disabled}, armedNow() ? 'Click again to confirm' : label);
    b.addEventListener('click', async () => {
      if (!armedNow()) {
        armedUntil[key] = Date.now() + 3000;
        b.textContent = 'Click again to confirm';
        setTimeout(() => { if (!armedNow()) b.textContent = label; }, 3050);
        return;
      }
      delete armedUntil[key];
      b.textContent = label;
      b.disabled = true;
      try { await action(); } catch (e) { showError(e); }
    });
    return b;
  }
  function showError(e) {
    const box = main.querySelector('.view-error') || main.insertBefore(el('div', {class: 'error view-error'}), main.firstChild);
    box.textContent = e.message;
  }

  /* ---- view: one job ---------------------------------------------------------------------------- */

  function jobView(id) {
    const head = el('div'), info = el('div', {class: 'row'}), attempts = el('div', {class: 'card'});
    const curvesCard = el('div', {class: 'card'}, el('h2', null, 'Curves'));
    const curveRow = el('div', {class: 'row', id: 'job-curves'});
    curvesCard.append(curveRow);
    const images = el('div', {class: 'card images', id: 'samples'});
    const logPre = el('pre', {class: 'log', id: 'log'});
    main.append(head, info, attempts, curvesCard,
      el('div', {class: 'row'}, images, el('div', {class: 'card log-card'}, el('h2', null, 'Log (tail)'), logPre)));
    const charts = new Map();
    let last = null, artSig = '', logSig = '';

    function renderHead(j) {
      const open = j.state === 'QUEUED' || j.state === 'RUNNING';
      head.replaceChildren(
        el('h1', null, `Job ${j.id}`, el('small', null, 'of sweep ', el('a', {href: `#/sweeps/${j.sweep}`}, j.sweep_name), ` · index ${j.idx}`)),
        el('div', {class: 'card bar'}, stateBadge(j.state),
          el('span', {class: 'counts'}, `attempt ${j.attempts} of ${j.max_attempts}`),
          j.step > 0 ? el('span', {class: 'counts'}, `step ${j.step}`) : null,
          j.worker ? el('span', {class: 'counts'}, `on ${j.worker}`) : null,
          el('span', {style: 'margin-left:auto'}),
          confirmButton('job-cancel', 'Cancel', !open, async () => { await api(`/api/jobs/${id}/cancel`, {method: 'POST'}); await refresh(); }),
          el('button', {id: 'job-requeue', disabled: open,
                        onclick: async ev => { ev.currentTarget.disabled = true; try { await api(`/api/jobs/${id}/requeue`, {method: 'POST'}); } catch (e) { showError(e); } await refresh(); }},
             'Requeue')));
    }
    function renderInfo(j) {
      const results = Object.entries(j.results || {});
      info.replaceChildren(
        el('div', {class: 'card'}, el('h2', null, 'Config'), el('pre', {id: 'config'}, JSON.stringify(j.config, null, 2))),
        el('div', {class: 'card'}, el('h2', null, 'Results'),
          results.length ? el('dl', {class: 'kv', id: 'results'}, results.map(([k, v]) => [el('dt', null, k), el('dd', null, isNum(v) ? String(Number(v.toPrecision(7))) : fmtNum(v))]))
                         : el('p', {class: 'muted'}, 'No results yet.'),
          el('h2', {style: 'margin-top:14px'}, 'Times'),
          el('dl', {class: 'kv'}, el('dt', null, 'created'), el('dd', null, fmtTime(j.created)),
            el('dt', null, 'started'), el('dd', null, fmtTime(j.started)),
            el('dt', null, 'finished'), el('dd', null, fmtTime(j.finished)),
            el('dt', null, 'config hash'), el('dd', null, (j.config_hash || '').slice(0, 16)))));
    }
    function renderAttempts(list) {
      attempts.replaceChildren(el('h2', null, 'Attempts'), list.length ? el('table', {id: 'attempts'},
        el('thead', null, el('tr', null, ['#', 'worker', 'state', 'started', 'ended', 'duration', 'exit', 'step', 'error'].map(t => el('th', null, t)))),
        el('tbody', null, list.map(a => el('tr', null,
          el('td', {class: 'num'}, a.n), el('td', null, a.worker || ''), el('td', null, stateBadge(a.state)),
          el('td', null, fmtTime(a.started)), el('td', null, fmtTime(a.ended)),
          el('td', {class: 'num'}, a.started ? fmtDur((a.ended || Date.now() / 1000) - a.started) : ''),
          el('td', {class: 'num'}, a.signal ? `signal ${a.signal}` : fmtNum(a.exit_code)),
          el('td', {class: 'num'}, fmtNum(a.step)), el('td', {class: 'err'}, a.error || '')))))
        : el('p', {class: 'muted'}, 'Not started yet.'));
    }
    async function renderCurves(force) {
      if (!force) return;
      const d = await api(`/api/jobs/${id}/metrics?max_points=${CURVE_POINTS}`);
      const keys = d.series.map(s => s.key).sort((a, b) => (a === 'loss' ? -1 : b === 'loss' ? 1 : a.localeCompare(b))).slice(0, 8);
      if (!keys.length) {
        for (const c of charts.values()) c.chart.destroy();
        charts.clear();
        curveRow.replaceChildren(el('p', {class: 'muted'}, 'No metrics reported yet.'));
        return;
      }
      if (curveRow.querySelector('p')) curveRow.replaceChildren();
      for (const k of keys) {
        if (charts.has(k)) continue;
        const box = el('div', {class: 'chart'});
        curveRow.append(el('div', {class: 'card sub'}, el('h2', null, k), box));
        charts.set(k, {chart: lineChart(box, 220)});
      }
      keys.forEach((k, i) => {
        const c = charts.get(k);
        const s = d.series.find(x => x.key === k);
        c.chart.draw({x: {label: 'step'}, y: {label: k}, series: [{label: k, color: PALETTE[i % PALETTE.length], points: s.points.length < 30}],
                      data: [s.points.map(p => p[0]), s.points.map(p => p[1])]});
      });
    }
    async function renderImages(j) {
      const d = await api(`/api/artifacts/${id}`);
      const sig = JSON.stringify(d.artifacts.map(a => [a.name, a.modified]));
      if (sig === artSig) return;
      artSig = sig;
      const grid = typeof j.results.sample_grid === 'string' ? j.results.sample_grid : null;
      const pngs = d.artifacts.filter(a => /\.png$/i.test(a.name)).sort((a, b) => (a.name === grid ? -1 : b.name === grid ? 1 : a.name.localeCompare(b.name)));
      images.replaceChildren(...[el('h2', null, 'Samples and artifacts'),
        pngs.length ? pngs.map(a => el('figure', {style: 'margin:0 0 10px'},
          el('img', {src: `/api/artifacts/${id}/${encodeURIComponent(a.name)}?m=${a.modified}`, alt: a.name}),
          el('figcaption', {class: 'muted'}, a.name === grid ? `${a.name} (sample grid)` : a.name)))
          : el('p', {class: 'muted'}, 'No sample grid.'),
        d.artifacts.length ? el('table', {id: 'artifacts'}, el('tbody', null, d.artifacts.map(a => el('tr', null,
          el('td', null, el('a', {href: `/api/artifacts/${id}/${encodeURIComponent(a.name)}`, download: a.name}, a.name)),
          el('td', {class: 'num'}, `${fmtNum(a.bytes)} bytes`), el('td', null, fmtTime(a.modified))))))
          : el('p', {class: 'muted'}, 'No artifacts.')].flat());
    }
    async function renderLog() {
      const d = await api(`/api/jobs/${id}/log?offset=-32768`);
      const sig = `${d.size}`;
      if (sig === logSig) return;
      logSig = sig;
      const stick = logPre.scrollTop + logPre.clientHeight >= logPre.scrollHeight - 4;
      logPre.textContent = d.data || '(empty: the job has printed nothing yet)';
      if (d.offset > 0) logPre.prepend(`… ${fmtNum(d.offset)} earlier bytes: umdq logs ${id}\n`);
      if (stick || !last) logPre.scrollTop = logPre.scrollHeight;
    }
    async function refresh() {
      const d = await api(`/api/jobs/${id}`);
      const j = d.job;
      const moved = !last || last.state !== j.state || last.step !== j.step || JSON.stringify(last.results) !== JSON.stringify(j.results);
      renderHead(j);
      if (moved) { renderInfo(j); renderAttempts(d.attempts); }
      await Promise.all([renderCurves(moved || j.state === 'RUNNING'), renderImages(j), renderLog()]);
      last = j;
    }
    return {refresh, destroy() { for (const c of charts.values()) c.chart.destroy(); }};
  }

  /* ---- view: workers ---------------------------------------------------------------------------- */

  function workersView() {
    const tbody = el('tbody'), empty = el('p', {class: 'muted'});
    main.append(el('h1', null, 'Workers'), el('div', {class: 'card'}, el('table', {id: 'workers'},
      el('thead', null, el('tr', null, ['worker', 'host', 'device', 'backend', 'state', 'job', 'step', 'heartbeat', 'jobs done', 'first seen']
        .map(t => el('th', {class: ['step', 'jobs done', 'heartbeat'].includes(t) ? 'num' : null}, t)))), tbody), empty));
    return {
      async refresh() {
        const d = await api('/api/workers');
        empty.textContent = d.workers.length ? '' : 'No worker has connected yet: start one with `umdq up` or umdq-worker.';
        tbody.replaceChildren(...d.workers.map(w => el('tr', null,
          el('td', null, w.id), el('td', null, w.host), el('td', null, w.device), el('td', null, w.backend),
          el('td', null, stateBadge(w.state)),
          el('td', null, w.job ? el('a', {href: `#/jobs/${w.job}`}, `job ${w.job}`) : ''),
          el('td', {class: 'num'}, fmtNum(w.step)),
          el('td', {class: 'num'}, isNum(w.heartbeat_age) ? `${w.heartbeat_age.toFixed(1)} s ago` : ''),
          el('td', {class: 'num'}, fmtNum(w.jobs_done)),
          el('td', null, fmtTime(w.first_seen)))));
      },
    };
  }

  /* ---- routing, polling, login ------------------------------------------------------------------ */

  async function refresh() {
    if (busy || !view) return;
    busy = true;
    const v = view;
    try {
      await v.refresh();
      if (v === view) {
        setLive(true);
        const e = main.querySelector('.view-error');
        if (e) e.remove();
      }
    } catch (e) {
      if (v === view) {
        setLive(false, e.message);
        if (e.status === 401) {
          csrf = null;
          return signedOut('The session has ended.');
        }
        showError(e);
      }
    } finally {
      busy = false;
    }
  }
  function route() {
    if (view && view.destroy) view.destroy();
    main.replaceChildren();
    const path = location.hash.replace(/^#/, '') || '/';
    let m, name = 'sweeps';
    if ((m = path.match(/^\/sweeps\/([^/]+)$/))) view = sweepView(decodeURIComponent(m[1]));
    else if ((m = path.match(/^\/jobs\/(\d+)$/))) view = jobView(Number(m[1]));
    else if (path === '/workers') { view = workersView(); name = 'workers'; } else view = sweepsView();
    document.querySelectorAll('[data-nav]').forEach(a => a.classList.toggle('on', a.dataset.nav === name));
    busy = false;
    refresh();
  }
  function signedOut(why) {
    if (view && view.destroy) view.destroy();
    view = null;
    main.replaceChildren(el('h1', null, 'Sign in'), el('div', {class: 'note'},
      `${why} Run `, el('code', null, 'umdq dashboard'), ' and open the link it prints: it signs this browser in once.'));
  }
  // Signed in when the fragment holds a login code to trade for a session, or the cookie is valid.
  async function signIn() {
    const m = location.hash.match(/^#login=([0-9a-f]+)$/);
    let codeError = null;
    if (m) {
      history.replaceState(null, '', '/#/');
      try {
        csrf = (await api('/api/session', {method: 'POST', body: {login: m[1]}})).csrf;
      } catch (e) {
        // a session this browser has already is as good
        codeError = e.status === 401 ? 'This login link has been used or has expired.' : `This login link cannot be used (${e.message}).`;
      }
    }
    if (!csrf) csrf = (await api('/api/session')).csrf;
    if (!csrf) {
      signedOut(codeError || 'This browser is not signed in.');
      return false;
    }
    return true;
  }
  let polling = false;
  async function start() {
    if (!(await signIn())) return;
    route();
    if (!polling) {
      polling = true;
      setInterval(refresh, POLL_MS);
    }
  }
  const failed = e => signedOut(`The daemon did not answer (${e.message}).`);
  // a login link opened in a tab that shows the page already changes only the fragment
  window.addEventListener('hashchange', () => {
    if (location.hash.startsWith('#login=') || !csrf) start().catch(failed);
    else route();
  });
  start().catch(failed);
})();
