// dashboard.mjs: the dashboard's views in headless Chromium against the daemon that web_dashboard.sh
// started. Prints PASS name / FAIL name: why lines; screenshots of each view go to $SHOTS.
import { chromium } from 'playwright-core';

const env = process.env;
const base = env.UMDQ_URL, token = env.UMDQ_TOKEN, shots = env.SHOTS;
const doneSweep = env.DONE_SWEEP, runSweep = env.RUN_SWEEP;
let failed = 0;
const pass = name => console.log(`PASS ${name}`);
const fail = (name, why) => { failed++; console.log(`FAIL ${name}: ${String(why).replace(/\s+/g, ' ').slice(0, 400)}`); };
async function check(name, fn) {
  try {
    const why = await fn();
    if (why === true || why === undefined) pass(name); else fail(name, why);
  } catch (e) {
    fail(name, e.message);
  }
}
async function api(path, init = {}) {
  const r = await fetch(base + path, {...init, headers: {Authorization: `Bearer ${token}`, ...(init.headers || {})}});
  return r.json();
}

const browser = await chromium.launch({executablePath: env.CHROMIUM, args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage']});
const context = await browser.newContext({viewport: {width: 1280, height: 640}, deviceScaleFactor: 1});
const page = await context.newPage();
const problems = [];
page.on('console', m => { if (m.type() === 'error' || m.type() === 'warning') problems.push(`${m.type()}: ${m.text()}`); });
page.on('pageerror', e => problems.push(`page error: ${e.message}`));
page.on('requestfailed', r => problems.push(`request failed: ${r.url()} ${r.failure() && r.failure().errorText}`));
// the page down to the end of its content (no empty viewport below)
const shot = async name => {
  await page.mouse.move(1, 1);   // no hover highlight in the picture
  const bottom = await page.evaluate(() => Math.ceil(document.querySelector('main').getBoundingClientRect().bottom + window.scrollY));
  await page.screenshot({path: `${shots}/${name}.png`, fullPage: true, clip: {x: 0, y: 0, width: 1280, height: Math.max(200, bottom)}});
};
// a canvas that uPlot drew on: some pixels are neither blank nor white
const canvasDrawn = sel => page.$eval(`${sel} canvas`, c => {
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  let ink = 0;
  for (let i = 0; i < d.length; i += 4) if (d[i + 3] > 0 && (d[i] < 230 || d[i + 1] < 230 || d[i + 2] < 230)) ink++;
  return ink;
});

try {
  // ---- login: the one-time link becomes an HttpOnly, SameSite=Strict cookie --------------------------
  await page.goto(env.UMDQ_WEB_URL);
  await page.waitForSelector('#sweeps tbody tr', {timeout: 15000});
  await check('web_login_link_sets_cookie', async () => {
    const cookies = await context.cookies();
    const c = cookies.find(x => x.name.startsWith('umdq_session_'));
    if (!c) return `no session cookie: ${JSON.stringify(cookies)}`;
    if (!c.httpOnly || c.sameSite !== 'Strict') return `cookie flags ${JSON.stringify(c)}`;
    if (page.url().includes('login=')) return `the code stays in the address bar: ${page.url()}`;
    return true;
  });

  // ---- sweeps ----------------------------------------------------------------------------------------
  await check('web_sweeps_view', async () => {
    const rows = await page.$$eval('#sweeps tbody tr', trs => trs.map(t => t.innerText));
    if (rows.length !== 2) return `${rows.length} rows: ${rows.join(' | ')}`;
    if (!rows.some(r => r.includes('fmnist-lr-width') && r.includes('DONE') && r.includes('12/12 done'))) return rows.join(' | ');
    if (!rows.some(r => r.includes('long-run') && r.includes('RUNNING'))) return rows.join(' | ');
    if ((await page.$$('#sweeps .progress span')).length < 2) return 'no progress bars';
    return true;
  });
  await shot('sweeps');

  // ---- one sweep: table, sorting, filter, chart, parallel coordinates, curves, compare ------------------
  await page.goto(`${base}/#/sweeps/${doneSweep}`);
  await page.waitForSelector('#jobs tbody tr');
  const apiSweep = await api(`/api/sweeps/${doneSweep}`);
  await check('web_sweep_table_rows_and_results', async () => {
    const heads = await page.$$eval('#jobs thead th', ths => ths.map(t => t.dataset.col).filter(Boolean));
    for (const want of ['params.lr', 'params.width', 'probe_ridge_top1', 'probe_knn_top1', 'fid', 'img_per_s', 'state', 'attempts'])
      if (!heads.includes(want)) return `no column ${want}: ${heads.join(',')}`;
    if (heads.indexOf('probe_ridge_top1') > heads.indexOf('fid')) return `probe columns should come first: ${heads.join(',')}`;
    const rows = await page.$$eval('#jobs tbody tr', trs => trs.map(t => [...t.children].map(td => td.innerText.trim())));
    if (rows.length !== 12) return `${rows.length} rows`;
    const fidCol = heads.indexOf('fid') + 1; // + the checkbox column
    for (const j of apiSweep.jobs) {
      const row = rows.find(r => r[1] === String(j.id));
      if (!row) return `job ${j.id} missing`;
      if (Math.abs(Number(row[fidCol]) - j.results.fid) > 1e-3 * Math.abs(j.results.fid) + 1e-9) return `job ${j.id} fid ${row[fidCol]} != ${j.results.fid}`;
    }
    return true;
  });
  const column = async name => {
    const heads = await page.$$eval('#jobs thead th', ths => ths.map(t => t.dataset.col || ''));
    const i = heads.indexOf(name);
    return page.$$eval('#jobs tbody tr', (trs, i) => trs.map(t => Number(t.children[i].innerText)), i);
  };
  await check('web_sort_ascending_descending', async () => {
    await page.click('#jobs th[data-col="fid"]');
    const up = await column('fid');
    const sortedUp = [...up].sort((a, b) => a - b);
    if (JSON.stringify(up) !== JSON.stringify(sortedUp)) return `after one click: ${up}`;
    await page.click('#jobs th[data-col="fid"]');
    const down = await column('fid');
    if (JSON.stringify(down) !== JSON.stringify([...sortedUp].reverse())) return `after two clicks: ${down}`;
    return true;
  });
  await check('web_filter', async () => {
    await page.fill('#filter', 'lr=0.3');
    const n = await page.$$eval('#jobs tbody tr', t => t.length);
    const lrs = await column('params.lr');
    await page.fill('#filter', 'fid<20 state=SUCCEEDED');
    const m = await page.$$eval('#jobs tbody tr', t => t.length);
    const want = apiSweep.jobs.filter(j => j.results.fid < 20).length;
    await page.fill('#filter', '');
    if (n !== 4 || lrs.some(v => v !== 0.3)) return `lr=0.3 kept ${n} rows: ${lrs}`;
    if (m !== want) return `fid<20 kept ${m} rows, want ${want}`;
    return true;
  });
  await check('web_result_chart_drawn', async () => {
    const ink = await canvasDrawn('#result-chart');
    if (ink < 200) return `${ink} inked pixels`;
    const legend = await page.$$eval('#result-chart .u-legend .u-series', s => s.length);
    return legend >= 3 ? true : `${legend} legend entries (want x + 2 widths)`;
  });
  await check('web_parallel_coordinates', async () => {
    const lines = await page.$$eval('#parallel path.line', p => p.length);
    const axes = await page.$$eval('#parallel g.axis', g => g.length);
    return lines === 12 && axes >= 4 ? true : `${lines} lines, ${axes} axes`;
  });
  await check('web_parallel_brush_filters_table', async () => {
    await page.$eval('#parallel', e => e.scrollIntoView({block: 'center'}));
    const box = await page.$eval('#parallel g.axis rect.grab', r => { const b = r.getBoundingClientRect(); return {x: b.x + b.width / 2, y: b.y, h: b.height}; });
    await page.mouse.move(box.x, box.y + 2);
    await page.mouse.down();
    await page.mouse.move(box.x, box.y + box.h * 0.3, {steps: 5});
    await page.mouse.up();
    const n = await page.$$eval('#jobs tbody tr', t => t.length);
    const dim = await page.$$eval('#parallel path.line.dim', p => p.length);
    await page.mouse.click(box.x, box.y + box.h * 0.5);
    const after = await page.$$eval('#jobs tbody tr', t => t.length);
    if (!(n > 0 && n < 12)) return `brush kept ${n} rows`;
    if (dim !== 12 - n) return `${dim} dimmed lines for ${n} rows`;
    return after === 12 ? true : `clearing the brush left ${after} rows`;
  });
  await check('web_curves_of_selected_jobs', async () => {
    await page.waitForFunction(() => document.querySelectorAll('#curves canvas').length > 0, null, {timeout: 10000});
    const ink = await canvasDrawn('#curves');
    const series = await page.$$eval('#curves .u-legend .u-series', s => s.length - 1);
    return ink > 200 && series >= 2 ? true : `${ink} inked pixels, ${series} curves`;
  });
  await check('web_compare_selection', async () => {
    const before = await page.$$eval('#compare thead th', t => t.length - 1);
    const box = await page.$('#jobs tbody tr:not(.sel) input[type=checkbox]');
    await box.check();
    const after = await page.$$eval('#compare thead th', t => t.length - 1);
    const differing = await page.$$eval('#compare td.v', t => t.length);
    return after === before + 1 && differing > 0 ? true : `compare columns ${before} -> ${after}, ${differing} differing cells`;
  });
  await page.waitForTimeout(500);
  await shot('sweep');

  // ---- one job -----------------------------------------------------------------------------------------
  const doneJob = apiSweep.jobs[0];
  await page.goto(`${base}/#/jobs/${doneJob.id}`);
  await page.waitForSelector('#attempts tbody tr');
  await check('web_job_view', async () => {
    const config = await page.$eval('#config', e => e.innerText);
    if (!config.includes('"lr"')) return `config: ${config.slice(0, 200)}`;
    const attempts = await page.$$eval('#attempts tbody tr', t => t.map(r => r.innerText));
    if (attempts.length !== 1 || !/web\/w[01]/.test(attempts[0]) || !attempts[0].includes('SUCCEEDED')) return `attempts: ${attempts}`;
    const results = await page.$eval('#results', e => e.innerText);
    if (!results.includes('probe_ridge_top1') || !results.includes(String(doneJob.results.fid))) return `results: ${results}`;
    await page.waitForFunction(() => { const i = document.querySelector('#samples img'); return i && i.complete && i.naturalWidth > 0; }, null, {timeout: 10000});
    await page.waitForFunction(() => document.querySelectorAll('#job-curves canvas').length >= 2, null, {timeout: 10000});
    const log = await page.$eval('#log', e => e.innerText);
    if (!log.includes('step 300 loss')) return `log: ${log.slice(0, 200)}`;
    return true;
  });
  await shot('job');

  // ---- workers -----------------------------------------------------------------------------------------
  await page.goto(`${base}/#/workers`);
  await page.waitForSelector('#workers tbody tr');
  await check('web_workers_view', async () => {
    const rows = await page.$$eval('#workers tbody tr', t => t.map(r => r.innerText));
    if (rows.length !== 2) return `${rows.length} rows`;
    return rows.every(r => r.includes('BUSY') && /job \d+/.test(r) && /s ago/.test(r)) ? true : rows.join(' | ');
  });
  await shot('workers');

  // ---- live: the running sweep and job move without a reload -------------------------------------------
  const runJobs = (await api(`/api/sweeps/${runSweep}`)).jobs;
  await page.goto(`${base}/#/jobs/${runJobs[0].id}`);
  await page.waitForSelector('#job-curves canvas');
  await check('web_live_update', async () => {
    const step = async () => Number((await page.$eval('h1 + .card', e => e.innerText)).match(/step (\d+)/)[1]);
    const s0 = await step();
    await page.waitForTimeout(4500);
    const s1 = await step();
    return s1 > s0 ? true : `step ${s0} -> ${s1} in 4.5 s`;
  });
  await shot('job-running');
  await page.goto(`${base}/#/sweeps/${runSweep}`);
  await page.waitForSelector('#curves canvas');
  await page.waitForTimeout(300);
  await shot('sweep-running');

  // ---- cancel from the job page ----------------------------------------------------------------------------
  await page.goto(`${base}/#/jobs/${runJobs[1].id}`);
  await page.waitForSelector('#job-cancel:not([disabled])');
  await check('web_cancel_from_job_page', async () => {
    await page.click('#job-cancel');              // arms it
    await page.waitForTimeout(2300);              // a poll redraws the page in between
    const label = await page.$eval('#job-cancel', b => b.textContent);
    if (label !== 'Click again to confirm') return `after one click and a redraw the button says "${label}"`;
    const still = await api(`/api/jobs/${runJobs[1].id}`);
    if (still.job.state !== 'RUNNING') return `one click cancelled it: ${still.job.state}`;
    await page.click('#job-cancel');              // confirms
    await page.waitForFunction(() => document.querySelector('h1 + .card .state').textContent === 'CANCELLED', null, {timeout: 10000});
    const d = await api(`/api/jobs/${runJobs[1].id}`);
    if (d.job.state !== 'CANCELLED') return `the daemon says ${d.job.state}`;
    const other = await api(`/api/jobs/${runJobs[0].id}`);
    return other.job.state === 'RUNNING' ? true : `the other job is ${other.job.state}`;
  });

  // ---- the page's own cookie cannot post without its header -----------------------------------------------
  await check('web_page_cookie_without_header_refused', async () => {
    const status = await page.evaluate(async id => (await fetch(`/api/jobs/${id}/cancel`, {method: 'POST'})).status, runJobs[0].id);
    problems.splice(0, problems.length, ...problems.filter(p => !p.includes('403')));  // the expected refusal's console line
    const d = await api(`/api/jobs/${runJobs[0].id}`);
    return status === 403 && d.job.state === 'RUNNING' ? true : `status ${status}, job ${d.job.state}`;
  });
  await check('web_no_console_errors', () => (problems.length ? problems.join(' | ') : true));

  // ---- a browser without a session, and one with a used link, is asked to sign in ---------------------------
  await check('web_signed_out_pages', async () => {
    const fresh = await browser.newContext({viewport: {width: 1280, height: 640}});
    const p2 = await fresh.newPage();
    await p2.goto(`${base}/#/sweeps/${doneSweep}`);
    await p2.waitForSelector('.note');
    const note = await p2.$eval('main', e => e.innerText);
    const rows = await p2.$$('#jobs tbody tr');
    await p2.goto(env.UMDQ_WEB_URL);       // its code was used at the start
    await p2.waitForFunction(() => /login link has been used/.test(document.querySelector('main').innerText), null, {timeout: 10000});
    await p2.screenshot({path: `${shots}/signed-out.png`});
    const cookies = await fresh.cookies();
    await fresh.close();
    if (!note.includes('umdq dashboard') || rows.length) return `page: ${note.slice(0, 200)}, ${rows.length} job rows`;
    return cookies.length === 0 ? true : `cookies: ${JSON.stringify(cookies)}`;
  });
} catch (e) {
  fail('web_browser', e.stack || e.message);
  try { await shot('failure'); } catch (e2) { /* the page may be gone */ }
}
await browser.close();
process.exit(failed ? 1 : 0);
