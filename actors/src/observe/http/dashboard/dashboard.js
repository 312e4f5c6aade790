// weir's web dashboard: fills index.html from the JSON API v1 and keeps it live.
//
// Every resource (overview, batches, checkpoints, tree, receivers, WAL, config) is fetched
// through one `Resource`, which coalesces requests so that each is fetched at most once per
// MIN_GAP_MS. The event stream (`/api/v1/events`, EventSource) says what changed; while it is
// down every resource is polled every POLL_MS instead, and the badge says "reconnecting".
// Every string that comes from the server reaches the DOM through textContent or an
// attribute, never through innerHTML. No framework, no build step, no external URL.
(function () {
  'use strict';

  const API = 'api/v1/'; // relative: the page works wherever it is served
  const MIN_GAP_MS = 500; // at most ~2 fetches per second per resource
  const POLL_MS = 2000; // polling period while the event stream is down
  const RECONNECT_MS = 3000; // after the browser gave up on the stream for good
  const BATCH_LIMIT = 1000; // batches fetched (the API's maximum): the charts' window
  const BATCH_ROWS = 25; // batch table rows shown before "show all"
  const EVENT_ROWS = 50; // event log tail
  const CIRCLES_UP_TO = 300; // above this, a chart draws its line without a dot per point
  const SVG_NS = 'http://www.w3.org/2000/svg';

  const $ = (id) => document.getElementById(id);

  // Off loopback the server wants the control token on every request; a browser's
  // EventSource sets no headers, so the page passes it on as `?token=`, taken from its own
  // address (`http://host:port/?token=...`).
  const TOKEN = new URLSearchParams(location.search).get('token');

  function apiUrl(path) {
    if (!TOKEN) return API + path;
    return API + path + (path.includes('?') ? '&' : '?') + 'token=' + encodeURIComponent(TOKEN);
  }

  function httpError(res) {
    if (res.status === 401) {
      return new Error('HTTP 401: this server needs the control token; open the page as ' +
        '/?token=<the contents of <checkpoint-dir>/control-token>');
    }
    return new Error('HTTP ' + res.status);
  }

  // ------------------------------------------------------------------ formatting ---- //

  const intFormat = new Intl.NumberFormat('en-US');
  const fmtInt = (n) => (n == null ? '–' : intFormat.format(n));
  const pad = (n, w) => String(n).padStart(w || 2, '0');

  function fmtTime(ms, withMs) {
    if (ms == null) return '–';
    const d = new Date(ms);
    const t = pad(d.getHours()) + ':' + pad(d.getMinutes()) + ':' + pad(d.getSeconds());
    return withMs ? t + '.' + pad(d.getMilliseconds(), 3) : t;
  }

  function fmtDateTime(ms) {
    if (ms == null) return '–';
    const d = new Date(ms);
    return d.getFullYear() + '-' + pad(d.getMonth() + 1) + '-' + pad(d.getDate()) + ' ' + fmtTime(ms, true);
  }

  function fmtDuration(ms) {
    if (ms == null) return '–';
    if (ms < 1) return (Math.round(ms * 100) / 100) + ' ms';
    if (ms < 1000) return Math.round(ms) + ' ms';
    if (ms < 60000) return (ms / 1000).toFixed(ms < 10000 ? 2 : 1) + ' s';
    const s = Math.floor(ms / 1000);
    if (s < 3600) return Math.floor(s / 60) + ' min ' + (s % 60) + ' s';
    const h = Math.floor(s / 3600);
    if (h < 48) return h + ' h ' + Math.floor((s % 3600) / 60) + ' min';
    return Math.floor(h / 24) + ' d ' + (h % 24) + ' h';
  }

  function fmtBytes(n) {
    if (n == null) return '–';
    const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    let i = 0;
    let v = n;
    while (v >= 1024 && i < units.length - 1) {
      v /= 1024;
      i += 1;
    }
    return (i === 0 ? v : v.toFixed(v < 10 ? 2 : 1)) + ' ' + units[i];
  }

  function fmtRate(r) {
    if (r == null) return '–';
    if (r >= 1e6) return (r / 1e6).toFixed(2) + ' M';
    if (r >= 1e4) return (r / 1e3).toFixed(1) + ' k';
    return r >= 100 ? String(Math.round(r)) : String(Math.round(r * 10) / 10);
  }

  // ------------------------------------------------------------------ DOM helpers --- //

  // el('td', {class: 'num'}, 'text', childNode, ...): text children become text nodes.
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    setAttrs(node, attrs);
    append(node, children);
    return node;
  }

  function svg(tag, attrs, ...children) {
    const node = document.createElementNS(SVG_NS, tag);
    setAttrs(node, attrs);
    append(node, children);
    return node;
  }

  function setAttrs(node, attrs) {
    if (!attrs) return;
    for (const [k, v] of Object.entries(attrs)) {
      if (v == null || v === false) continue;
      if (k === 'onclick') node.addEventListener('click', v);
      else node.setAttribute(k, v === true ? '' : String(v));
    }
  }

  function append(node, children) {
    for (const c of children) {
      if (c == null || c === false) continue;
      node.appendChild(typeof c === 'object' ? c : document.createTextNode(String(c)));
    }
  }

  function replaceChildren(node, children) {
    node.textContent = '';
    append(node, children);
  }

  function setText(id, text) {
    const node = $(id);
    if (node && node.textContent !== text) node.textContent = text;
  }

  const stateClass = (s) => 'state state-' + String(s || 'unknown').replace(/[^a-z_]/g, '');

  function emptyRow(cols, text) {
    return el('tr', { class: 'empty' }, el('td', { colspan: cols }, text));
  }

  // ------------------------------------------------------------------ resources ----- //

  let lastError = null;

  function showFetchError(name, err) {
    lastError = name + ': ' + (err && err.message ? err.message : String(err));
    const node = $('fetch-error');
    node.textContent = 'cannot load ' + lastError;
    node.hidden = false;
  }

  function clearFetchError() {
    if (lastError === null) return;
    lastError = null;
    $('fetch-error').hidden = true;
  }

  // One API resource: `request()` asks for a fetch; requests that arrive while one is in
  // flight, or within MIN_GAP_MS of the last, are coalesced into one later fetch. `apply`
  // gets the parsed JSON only when its text changed.
  function resource(name, path, apply, optional) {
    const r = { name, inflight: false, pending: false, last: 0, timer: null, body: null };
    r.request = function () {
      if (r.inflight) {
        r.pending = true;
        return;
      }
      if (r.timer !== null) return;
      const wait = Math.max(0, r.last + MIN_GAP_MS - Date.now());
      r.timer = setTimeout(run, wait);
    };
    async function run() {
      r.timer = null;
      r.inflight = true;
      r.pending = false;
      r.last = Date.now();
      try {
        const res = await fetch(apiUrl(path), {
          cache: 'no-store',
          headers: { Accept: 'application/json' },
        });
        if (!res.ok) throw httpError(res);
        const body = await res.text();
        clearFetchError();
        setText('last-update', 'updated ' + fmtTime(Date.now()));
        if (body !== r.body) {
          r.body = body;
          apply(JSON.parse(body));
        }
      } catch (err) {
        if (!optional) showFetchError(name, err);
      } finally {
        r.inflight = false;
        if (r.pending) r.request();
      }
    }
    return r;
  }

  const R = {
    overview: resource('overview', 'overview', renderOverview),
    batches: resource('batches', 'batches?limit=' + BATCH_LIMIT, renderBatches),
    checkpoints: resource('checkpoints', 'checkpoints', renderCheckpoints),
    tree: resource('tree', 'tree', renderTree),
    receivers: resource('receivers', 'receivers', renderReceivers),
    sources: resource('sources', 'sources', renderSources, true),
    wal: resource('wal', 'wal', renderWal),
    config: resource('config', 'config', renderConfig),
  };

  function refreshAll() {
    for (const r of Object.values(R)) r.request();
  }

  // ------------------------------------------------------------------ overview ------ //

  let overview = null;
  let clockSkew = 0; // server's now minus ours

  function renderOverview(o) {
    overview = o;
    clockSkew = o.now_ms - Date.now();
    setText('ov-server', o.server || '–');
    setText('ov-pid', o.pid == null ? '–' : String(o.pid));
    setText('ov-interval', fmtDuration(o.batch_interval_ms));
    setText('ov-completed', fmtInt(o.batches_completed));
    setText('ov-failed', fmtInt(o.batches_failed));
    $('ov-failed').classList.toggle('bad', o.batches_failed > 0);
    setText('ov-records', fmtInt(o.records_total));
    setText('ov-checkpoint', o.last_checkpoint_id == null ? 'none' : '#' + o.last_checkpoint_id);
    setText('ov-restarts', fmtInt(o.restarts_total));
    $('ov-restarts').classList.toggle('warn', o.restarts_total > 0);
    const title = (o.name_prefix ? o.name_prefix + ' · ' : '') + 'weir · streaming';
    if (document.title !== title) document.title = title;
    tickUptime();
  }

  function tickUptime() {
    if (!overview) return;
    const ms = Math.max(0, Date.now() + clockSkew - overview.started_ms);
    setText('ov-uptime', ms < 60000 ? Math.floor(ms / 1000) + ' s' : fmtDuration(ms));
  }

  // ------------------------------------------------------------------ charts -------- //

  const METRICS = [
    {
      key: 'input-rate',
      value: (b, interval) => (interval > 0 ? (b.records * 1000) / interval : null),
      format: (v) => fmtRate(v),
      unit: 'records/s',
      intervalLine: false,
    },
    { key: 'scheduling-delay', value: (b) => b.scheduling_delay_ms, format: fmtDuration, intervalLine: true },
    { key: 'processing-time', value: (b) => b.processing_ms, format: fmtDuration, intervalLine: true },
    { key: 'total-delay', value: (b) => b.total_delay_ms, format: fmtDuration, intervalLine: true },
  ];

  const CHART_HEIGHT = 150;
  const MARGIN = { top: 12, right: 14, bottom: 24, left: 56 };

  let chartData = null; // { interval, completed: [batch, ...] oldest first }

  // "Nice" tick values from 0 to at least max.
  function niceTicks(max, count) {
    if (!(max > 0)) return { top: 1, ticks: [0, 1] };
    const raw = max / count;
    const mag = Math.pow(10, Math.floor(Math.log10(raw)));
    const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw) || 10 * mag;
    const top = Math.ceil(max / step) * step;
    const ticks = [];
    for (let v = 0; v <= top + step / 2; v += step) ticks.push(Math.round(v * 1e9) / 1e9);
    return { top, ticks };
  }

  // Round times from x0 to x1, at most `count` of them, a "nice" step apart (1 s, 5 s, 1 min,
  // ...), in local time.
  const TIME_STEPS = [100, 200, 250, 500, 1000, 2000, 5000, 10000, 15000, 30000, 60000, 120000,
    300000, 600000, 900000, 1800000, 3600000, 7200000, 10800000, 21600000, 43200000, 86400000];

  function timeTicks(x0, x1, count) {
    const want = (x1 - x0) / count;
    const step = TIME_STEPS.find((s) => s >= want) || TIME_STEPS[TIME_STEPS.length - 1];
    const offset = step >= 3600000 ? new Date(x0).getTimezoneOffset() * 60000 : 0;
    const ticks = [];
    for (let t = Math.ceil((x0 - offset) / step) * step + offset; t <= x1; t += step) ticks.push(t);
    return { step, ticks };
  }

  function chartWidth(node) {
    const w = node.parentNode ? node.parentNode.clientWidth : 0;
    return Math.max(160, Math.floor(w) - 2);
  }

  function axisLabel(v, metric) {
    if (metric.key === 'input-rate') return fmtRate(v);
    if (v >= 1000) return (Math.round(v / 100) / 10) + ' s';
    return Math.round(v) + ' ms';
  }

  function renderCharts() {
    if (!chartData) return;
    const { interval, completed } = chartData;
    let x0 = Infinity;
    let x1 = -Infinity;
    for (const b of completed) {
      x0 = Math.min(x0, b.batch_time_ms);
      x1 = Math.max(x1, b.batch_time_ms);
    }
    if (completed.length === 0) {
      x0 = Date.now() - 60000;
      x1 = Date.now();
    } else {
      // Half an interval on each side, so the first and last dots are not cut.
      const margin = Math.max((interval || 1000) / 2, (x1 - x0) * 0.01);
      x0 -= margin;
      x1 += margin;
    }
    for (const metric of METRICS) {
      const points = [];
      for (const b of completed) {
        const v = metric.value(b, interval);
        if (v != null && isFinite(v)) points.push({ t: b.batch_time_ms, v, batch: b });
      }
      drawMetric(metric, points, interval, x0, x1);
    }
    const n = completed.length;
    setText('stats-caption', n === 0 ? 'no completed batch yet' : 'last ' + fmtInt(n) + ' completed batch' + (n === 1 ? '' : 'es'));
  }

  function drawMetric(metric, points, interval, x0, x1) {
    let max = 0;
    let sum = 0;
    for (const p of points) {
      max = Math.max(max, p.v);
      sum += p.v;
    }
    const avg = points.length ? sum / points.length : null;
    setText('stat-' + metric.key, points.length
      ? 'avg ' + metric.format(avg) + ' · max ' + metric.format(max)
      : '–');
    const yMaxData = metric.intervalLine && interval ? Math.max(max, interval) : max;
    const { top, ticks } = niceTicks(yMaxData * 1.05, 4);
    drawTimeline($('chart-' + metric.key), metric, points, interval, x0, x1, top, ticks);
    drawHistogram($('hist-' + metric.key), metric, points, interval, top, ticks);
  }

  function drawTimeline(node, metric, points, interval, x0, x1, top, ticks) {
    const W = chartWidth(node);
    const H = CHART_HEIGHT;
    const iw = W - MARGIN.left - MARGIN.right;
    const ih = H - MARGIN.top - MARGIN.bottom;
    const sx = (t) => MARGIN.left + ((t - x0) / (x1 - x0)) * iw;
    const sy = (v) => MARGIN.top + ih - (v / top) * ih;
    const parts = [];

    for (const v of ticks) {
      const y = sy(v);
      parts.push(svg('line', { class: 'grid-line', x1: MARGIN.left, x2: W - MARGIN.right, y1: y, y2: y }));
      parts.push(svg('text', { class: 'axis-label', x: MARGIN.left - 6, y: y + 3.5, 'text-anchor': 'end' }, axisLabel(v, metric)));
    }
    const { step, ticks: xTicks } = timeTicks(x0, x1, Math.max(2, Math.floor(iw / 90)));
    for (const t of xTicks) {
      const x = sx(t);
      const anchor = x - MARGIN.left < 30 ? 'start' : W - MARGIN.right - x < 30 ? 'end' : 'middle';
      parts.push(svg('line', { class: 'tick', x1: x, x2: x, y1: sy(0), y2: sy(0) + 4 }));
      parts.push(svg('text', { class: 'axis-label', x, y: H - 6, 'text-anchor': anchor }, fmtTime(t, step < 1000)));
    }
    parts.push(svg('line', { class: 'axis-line', x1: MARGIN.left, x2: W - MARGIN.right, y1: sy(0), y2: sy(0) }));

    if (metric.intervalLine && interval) {
      const y = sy(interval);
      parts.push(svg('line', { class: 'interval-line', x1: MARGIN.left, x2: W - MARGIN.right, y1: y, y2: y }));
      parts.push(svg('text', { class: 'interval-label', x: W - MARGIN.right - 2, y: y - 4, 'text-anchor': 'end' },
        'batch interval ' + fmtDuration(interval)));
    }

    if (points.length === 0) {
      parts.push(svg('text', { class: 'chart-empty', x: MARGIN.left + iw / 2, y: MARGIN.top + ih / 2, 'text-anchor': 'middle' },
        'waiting for the first completed batch'));
    } else {
      const d = points.map((p, i) => (i === 0 ? 'M' : 'L') + sx(p.t).toFixed(1) + ',' + sy(p.v).toFixed(1)).join('');
      if (points.length > 1) {
        const area = d + 'L' + sx(points[points.length - 1].t).toFixed(1) + ',' + sy(0) + 'L' + sx(points[0].t).toFixed(1) + ',' + sy(0) + 'Z';
        parts.push(svg('path', { class: 'series-area', d: area }));
      }
      parts.push(svg('path', { class: 'series-line', d }));
      if (points.length <= CIRCLES_UP_TO) {
        for (const p of points) {
          const selected = p.t === selectedBatch;
          const dot = svg('circle', {
            class: selected ? 'series-dot selected' : 'series-dot',
            cx: sx(p.t).toFixed(1), cy: sy(p.v).toFixed(1), r: selected ? 4.5 : 2.8,
            'data-batch': p.t,
          }, svg('title', null, fmtTime(p.t, true) + ' · ' + metric.format(p.v) + (metric.unit ? ' ' + metric.unit : '')));
          parts.push(dot);
        }
      }
    }
    node.setAttribute('width', W);
    node.setAttribute('height', H);
    node.setAttribute('viewBox', '0 0 ' + W + ' ' + H);
    node.setAttribute('data-points', String(points.length));
    replaceChildren(node, parts);
  }

  // A histogram sharing the timeline's value axis (as Spark's streaming tab draws it):
  // horizontal bars, one per bucket of values, as long as the batches that fell in it.
  function drawHistogram(node, metric, points, interval, top, ticks) {
    const W = Math.min(chartWidth(node), 360);
    const H = CHART_HEIGHT;
    const left = 8;
    const right = 12;
    const iw = W - left - right;
    const ih = H - MARGIN.top - MARGIN.bottom;
    const sy = (v) => MARGIN.top + ih - (v / top) * ih;
    const buckets = 12;
    const counts = new Array(buckets).fill(0);
    for (const p of points) counts[Math.min(buckets - 1, Math.floor((p.v / top) * buckets))] += 1;
    const most = Math.max(1, ...counts);
    const parts = [];
    for (const v of ticks) {
      const y = sy(v);
      parts.push(svg('line', { class: 'grid-line', x1: left, x2: W - right, y1: y, y2: y }));
    }
    const bh = ih / buckets;
    counts.forEach((c, i) => {
      if (c === 0) return;
      const lo = (top * i) / buckets;
      const hi = (top * (i + 1)) / buckets;
      parts.push(svg('rect', {
        class: 'hist-bar', x: left, y: (sy(hi) + 0.5).toFixed(1),
        width: Math.max(1, (c / most) * iw).toFixed(1), height: Math.max(1, bh - 1).toFixed(1),
      }, svg('title', null, metric.format(lo) + ' – ' + metric.format(hi) + ': ' + c + ' batch' + (c === 1 ? '' : 'es'))));
    });
    parts.push(svg('line', { class: 'axis-line', x1: left, x2: left, y1: MARGIN.top, y2: MARGIN.top + ih }));
    if (metric.intervalLine && interval) {
      const y = sy(interval);
      parts.push(svg('line', { class: 'interval-line', x1: left, x2: W - right, y1: y, y2: y }));
    }
    parts.push(svg('text', { class: 'axis-label', x: left, y: H - 6 }, '0'));
    parts.push(svg('text', { class: 'axis-label', x: W - right, y: H - 6, 'text-anchor': 'end' },
      most + ' batch' + (most === 1 ? '' : 'es')));
    node.setAttribute('width', W);
    node.setAttribute('height', H);
    node.setAttribute('viewBox', '0 0 ' + W + ' ' + H);
    replaceChildren(node, parts);
  }

  // Clicking a point opens its batch.
  for (const m of METRICS) {
    $('chart-' + m.key).addEventListener('click', (e) => {
      const t = e.target && e.target.getAttribute && e.target.getAttribute('data-batch');
      if (t) selectBatch(Number(t), true);
    });
  }

  // ------------------------------------------------------------------ batches ------- //

  let batches = []; // newest first, as the API lists them
  let selectedBatch = null;
  let showAllBatches = false;

  function renderBatches(data) {
    batches = Array.isArray(data.batches) ? data.batches : [];
    const completed = batches.filter((b) => b.status === 'completed').slice().reverse();
    chartData = { interval: data.batch_interval_ms, completed };
    renderCharts();
    renderBatchTable();
    renderBatchDetail();
  }

  function statusBadge(status) {
    return el('span', { class: stateClass(status) }, status);
  }

  function outputsDone(b) {
    const outs = Array.isArray(b.outputs) ? b.outputs : [];
    const done = outs.filter((o) => o.duration_ms != null).length;
    return outs.length ? done + '/' + outs.length : '–';
  }

  function renderBatchTable() {
    const shown = showAllBatches ? batches : batches.slice(0, BATCH_ROWS);
    const rows = shown.map((b) => {
      const tr = el('tr', { 'data-batch': b.batch_time_ms, class: b.batch_time_ms === selectedBatch ? 'selected' : null },
        el('td', { class: 'mono' }, fmtTime(b.batch_time_ms, true)),
        el('td', null, statusBadge(b.status)),
        el('td', { class: 'num' }, fmtInt(b.records)),
        el('td', { class: 'num' }, fmtDuration(b.scheduling_delay_ms)),
        el('td', { class: 'num' }, fmtDuration(b.processing_ms)),
        el('td', { class: 'num' + (b.total_delay_ms > (chartData && chartData.interval) ? ' warn' : '') }, fmtDuration(b.total_delay_ms)),
        el('td', { class: 'num' }, outputsDone(b)));
      return tr;
    });
    replaceChildren($('batch-rows'), rows.length ? rows : [emptyRow(7, 'no batch yet')]);
    const more = $('batch-more');
    more.hidden = batches.length <= BATCH_ROWS;
    more.textContent = showAllBatches ? 'show the newest ' + BATCH_ROWS : 'show all ' + fmtInt(batches.length);
    const failed = batches.filter((b) => b.status === 'failed').length;
    setText('batches-caption', fmtInt(batches.length) + ' listed' + (failed ? ', ' + failed + ' failed' : ''));
  }

  $('batch-rows').addEventListener('click', (e) => {
    const tr = e.target.closest('tr[data-batch]');
    if (tr) selectBatch(Number(tr.getAttribute('data-batch')), false);
  });
  $('batch-more').addEventListener('click', () => {
    showAllBatches = !showAllBatches;
    renderBatchTable();
  });
  $('detail-close').addEventListener('click', () => selectBatch(null, false));

  function selectBatch(t, scroll) {
    selectedBatch = t === selectedBatch ? null : t;
    const hash = selectedBatch == null ? '' : '#batch=' + selectedBatch;
    if (location.hash !== hash && (hash || location.hash.startsWith('#batch='))) {
      history.replaceState(null, '', hash || location.pathname + location.search);
    }
    renderBatchTable();
    renderBatchDetail();
    renderCharts();
    if (scroll && selectedBatch != null) $('batches').scrollIntoView({ behavior: 'smooth', block: 'start' });
  }

  function renderBatchDetail() {
    const panel = $('batch-detail');
    const b = selectedBatch == null ? null : batches.find((x) => x.batch_time_ms === selectedBatch);
    if (!b) {
      panel.hidden = true;
      return;
    }
    panel.hidden = false;
    setText('detail-title', 'Batch ' + fmtDateTime(b.batch_time_ms));
    const fields = [
      ['Status', statusBadge(b.status)],
      ['Batch time (ms)', String(b.batch_time_ms)],
      ['Blocks', fmtInt(b.blocks)],
      ['Records', fmtInt(b.records)],
      ['Scheduling delay', fmtDuration(b.scheduling_delay_ms)],
      ['Processing time', fmtDuration(b.processing_ms)],
      ['Total delay', fmtDuration(b.total_delay_ms)],
    ];
    replaceChildren($('detail-fields'), fields.flatMap(([k, v]) => [el('dt', null, k), el('dd', null, v)]));
    const sources = b.sources && typeof b.sources === 'object' ? Object.entries(b.sources) : [];
    const most = Math.max(1, ...sources.map(([, n]) => n || 0));
    replaceChildren($('detail-sources'), sources.length
      ? sources.map(([source, n]) => el('tr', null,
        el('td', { class: 'mono' }, source),
        el('td', { class: 'num' }, fmtInt(n)),
        el('td', { class: 'bar-col' }, el('span', {
          class: 'bar', style: 'width:' + Math.max(n ? 2 : 0, (100 * n) / most).toFixed(0) + '%',
        }))))
      : [emptyRow(3, b.status === 'completed' ? 'no source reported' : 'known once the batch completes')]);
    const outs = Array.isArray(b.outputs) ? b.outputs : [];
    const longest = Math.max(1, ...outs.map((o) => o.duration_ms || 0));
    replaceChildren($('detail-outputs'), outs.length
      ? outs.map((o) => el('tr', null,
        el('td', { class: 'mono' }, o.output),
        el('td', { class: 'num' }, o.duration_ms == null ? 'running' : fmtDuration(o.duration_ms)),
        el('td', { class: 'bar-col' }, el('span', {
          class: 'bar', style: 'width:' + (o.duration_ms == null ? 0 : Math.max(2, (100 * o.duration_ms) / longest)).toFixed(0) + '%',
        }))))
      : [emptyRow(3, 'no output')]);
    const failure = $('detail-failure');
    failure.hidden = !b.failure;
    failure.textContent = b.failure ? 'Failure: ' + b.failure : '';
  }

  // ------------------------------------------------------------------ checkpoints --- //

  function renderCheckpoints(data) {
    const list = Array.isArray(data.checkpoints) ? data.checkpoints : [];
    const rows = list.slice(0, 100).map((c) => el('tr', null,
      el('td', { class: 'num' }, c.id == null ? '–' : String(c.id)),
      el('td', { class: 'mono' }, fmtTime(c.time_ms, true)),
      el('td', null, el('span', { class: stateClass(c.outcome) }, c.outcome)),
      el('td', { class: 'num' }, fmtDuration(c.duration_ms)),
      el('td', { class: 'num' }, fmtBytes(c.bytes)),
      el('td', { class: 'reason' }, c.reason || '')));
    replaceChildren($('checkpoint-rows'), rows.length ? rows : [emptyRow(6, 'no checkpoint yet')]);
    const failed = list.filter((c) => c.outcome === 'failed').length;
    setText('checkpoints-caption', fmtInt(list.length) + ' listed' + (failed ? ', ' + failed + ' failed' : ''));
  }

  // ------------------------------------------------------------------ tree ---------- //

  const seenRestarts = new Map(); // actor -> restarts at the last render

  function renderTree(data) {
    const actors = Array.isArray(data.actors) ? data.actors : [];
    const depth = new Map();
    const rows = actors.map((a) => {
      const d = a.parent != null && depth.has(a.parent) ? depth.get(a.parent) + 1 : 0;
      depth.set(a.name, d);
      const before = seenRestarts.get(a.name);
      const changed = before !== undefined && before !== a.restarts;
      seenRestarts.set(a.name, a.restarts);
      const cls = ['actor-row'];
      if (a.state !== 'running') cls.push('not-running');
      if (changed) cls.push('changed');
      return el('tr', { class: cls.join(' '), 'data-actor': a.name, 'data-restarts': a.restarts, 'data-state': a.state },
        el('td', { class: 'actor-name' },
          el('span', { class: 'indent', style: 'width:' + d * 16 + 'px' }),
          d > 0 ? el('span', { class: 'branch' }, '└') : null,
          el('span', { class: 'mono' }, a.name)),
        el('td', null, el('span', { class: stateClass(a.state) }, a.state)),
        el('td', { class: 'num' + (a.restarts > 0 ? ' warn' : '') }, fmtInt(a.restarts)),
        el('td', { class: 'reason' }, a.last_failure || ''));
    });
    replaceChildren($('tree-rows'), rows.length ? rows : [emptyRow(4, 'no actor')]);
    const down = actors.filter((a) => a.state !== 'running').length;
    setText('tree-caption', fmtInt(actors.length) + ' actors' + (down ? ', ' + down + ' not running' : ''));
  }

  // ------------------------------------------------------------------ receivers, WAL  //

  function renderReceivers(data) {
    const list = Array.isArray(data.receivers) ? data.receivers : [];
    const rows = list.map((r) => el('tr', { 'data-receiver': r.actor },
      el('td', { class: 'mono' }, r.actor),
      el('td', { class: 'num' }, String(r.stream)),
      el('td', null, el('span', { class: stateClass(r.state) }, r.state)),
      el('td', { class: 'num' }, fmtInt(r.records)),
      el('td', { class: 'num' }, fmtBytes(r.bytes)),
      el('td', { class: 'num' }, fmtInt(r.blocks)),
      el('td', { class: 'reason' }, r.last_error || '')));
    replaceChildren($('receiver-rows'), rows.length ? rows : [emptyRow(7, 'no receiver (file streams read without one)')]);
  }

  // Sources read without a receiver (files, partitioned logs): what the latest batch planned
  // up to, the newest offset seen, and the lag between them. Hidden when there is none.
  function renderSources(data) {
    const list = Array.isArray(data.sources) ? data.sources : [];
    $('sources-block').hidden = list.length === 0;
    replaceChildren($('source-rows'), list.map((s) => el('tr', null,
      el('td', { class: 'mono' }, s.source),
      el('td', { class: 'num' }, s.partition == null ? '–' : String(s.partition)),
      el('td', { class: 'num' }, fmtInt(s.planned)),
      el('td', { class: 'num' }, fmtInt(s.latest)),
      el('td', { class: 'num' + (s.lag > 0 ? ' warn' : '') }, fmtInt(s.lag)))));
  }

  function renderWal(w) {
    const tiles = [
      ['Appends', fmtInt(w.appends)],
      ['Bytes', fmtBytes(w.bytes)],
      ['Group commits', fmtInt(w.groups)],
      ['Fsyncs', fmtInt(w.fsyncs)],
      ['Mean fsync', w.fsync_mean_ms == null ? '–' : fmtDuration(w.fsync_mean_ms)],
      ['Segments rolled', fmtInt(w.segments_rolled)],
      ['Segments cleaned', fmtInt(w.segments_cleaned)],
      ['Torn tails cut', fmtInt(w.torn_tails_cut)],
    ];
    replaceChildren($('wal-fields'), tiles.map(([k, v]) =>
      el('div', { class: 'tile' + (k === 'Torn tails cut' && w.torn_tails_cut > 0 ? ' warn' : '') }, el('dt', null, k), el('dd', null, v))));
  }

  function renderConfig(data) {
    const settings = data && typeof data.settings === 'object' && data.settings ? data.settings : {};
    const rows = Object.keys(settings).sort().map((k) => el('tr', null,
      el('td', { class: 'mono' }, k), el('td', { class: 'mono' }, String(settings[k]))));
    replaceChildren($('config-rows'), rows.length ? rows : [emptyRow(2, 'no setting reported')]);
  }

  // ------------------------------------------------------------------ event log ----- //

  let eventLog = []; // newest first
  const eventKeys = new Set();

  const eventKey = (ev) => JSON.stringify(ev);

  function eventCategory(kind) {
    if (/failed|gave_up|error|lagged|torn/.test(kind)) return 'bad';
    if (/restarted|skipped|stopped/.test(kind)) return 'warn';
    if (kind.startsWith('batch') || kind.startsWith('output')) return 'batch';
    if (kind.startsWith('checkpoint')) return 'checkpoint';
    if (kind.startsWith('actor') || kind.startsWith('receiver')) return 'actor';
    return 'other';
  }

  function eventDetails(ev) {
    const out = [];
    for (const [k, v] of Object.entries(ev)) {
      if (k === 'time_ms' || k === 'kind' || k === 'actor') continue;
      let text;
      if (k.endsWith('_time_ms') || k === 'before_ms') text = fmtTime(v, true);
      else if (k === 'bytes') text = fmtBytes(v);
      else if (k.endsWith('_ms') && typeof v === 'number') text = fmtDuration(v);
      else if (typeof v === 'object') text = JSON.stringify(v);
      else text = String(v);
      out.push(k.replace(/_ms$/, '') + '=' + text);
    }
    return out.join('  ');
  }

  function eventRow(ev) {
    const kind = String(ev.kind || 'unknown');
    return el('li', { class: 'event cat-' + eventCategory(kind), 'data-kind': kind },
      el('span', { class: 'event-time mono' }, fmtTime(ev.time_ms, true)),
      el('span', { class: 'event-kind' }, kind),
      ev.actor != null ? el('span', { class: 'event-actor mono' }, ev.actor) : null,
      el('span', { class: 'event-details mono' }, eventDetails(ev)));
  }

  // block_stored comes once per block and receiver: it would push everything else out.
  const shownInLog = (ev) => ev.kind !== 'block_stored';

  function addEvent(ev) {
    if (!shownInLog(ev)) return;
    const key = eventKey(ev);
    if (eventKeys.has(key)) return;
    eventKeys.add(key);
    eventLog.unshift(ev);
    const list = $('event-log');
    list.insertBefore(eventRow(ev), list.firstChild);
    while (eventLog.length > EVENT_ROWS) {
      eventKeys.delete(eventKey(eventLog.pop()));
      list.removeChild(list.lastChild);
    }
  }

  // Replaces the log with the server's recent events (after a reconnect or while polling).
  async function loadRecentEvents() {
    try {
      const res = await fetch(apiUrl('events/recent?limit=' + EVENT_ROWS * 10), { cache: 'no-store' });
      if (!res.ok) throw httpError(res);
      const data = await res.json();
      // Oldest first; most of them may be block_stored, hence the larger limit.
      const events = (Array.isArray(data.events) ? data.events : []).filter(shownInLog).slice(-EVENT_ROWS);
      const keep = eventLog.filter((ev) => !events.some((x) => eventKey(x) === eventKey(ev)) &&
        (events.length === 0 || ev.time_ms >= events[events.length - 1].time_ms));
      eventLog = [];
      eventKeys.clear();
      $('event-log').textContent = '';
      for (const ev of events) addEvent(ev); // oldest first: each goes on top
      for (const ev of keep.reverse()) addEvent(ev);
    } catch (err) {
      showFetchError('events', err);
    }
  }

  // ------------------------------------------------------------------ live ---------- //

  // Which resources an event invalidates.
  function onEvent(ev) {
    const kind = String(ev.kind || '');
    addEvent(ev);
    if (kind === 'lagged') {
      refreshAll();
      return;
    }
    if (kind.startsWith('batch_') || kind.startsWith('output_')) {
      R.batches.request();
      R.overview.request();
    }
    if (kind === 'batch_generated' || kind === 'batch_completed') R.sources.request();
    if (kind.startsWith('checkpoint_')) {
      R.checkpoints.request();
      R.overview.request();
    }
    if (kind.startsWith('actor_')) {
      R.tree.request();
      R.overview.request();
    }
    if (kind.startsWith('receiver_') || kind === 'block_stored' || kind === 'batch_generated') {
      R.receivers.request();
      R.wal.request();
    }
    if (kind.startsWith('wal_')) R.wal.request();
  }

  let source = null;
  let pollTimer = null;

  function setBadge(state) {
    const badge = $('live-badge');
    badge.textContent = state;
    badge.className = 'badge badge-' + state;
    document.body.setAttribute('data-live', state);
  }

  function startPolling() {
    if (pollTimer !== null) return;
    pollTimer = setInterval(() => {
      refreshAll();
      loadRecentEvents();
    }, POLL_MS);
  }

  function stopPolling() {
    if (pollTimer === null) return;
    clearInterval(pollTimer);
    pollTimer = null;
  }

  function connect() {
    if (typeof EventSource === 'undefined') {
      setBadge('polling');
      startPolling();
      return;
    }
    source = new EventSource(apiUrl('events'));
    source.onopen = () => {
      setBadge('live');
      stopPolling();
      refreshAll(); // catch up on whatever happened while the stream was down
      loadRecentEvents();
    };
    source.onmessage = (m) => {
      let ev;
      try {
        ev = JSON.parse(m.data);
      } catch (_) {
        return;
      }
      if (ev && typeof ev === 'object') onEvent(ev);
    };
    source.onerror = () => {
      setBadge('reconnecting');
      startPolling();
      if (source.readyState === EventSource.CLOSED) {
        // The browser retries by itself unless the answer was not a stream; then we do.
        source.close();
        setTimeout(connect, RECONNECT_MS);
      }
    };
  }

  // ------------------------------------------------------------------ start --------- //

  let resizeTimer = null;
  window.addEventListener('resize', () => {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(renderCharts, 150);
  });

  const m = /^#batch=(\d+)$/.exec(location.hash);
  if (m) selectedBatch = Number(m[1]);

  setInterval(tickUptime, 1000);
  refreshAll();
  loadRecentEvents();
  connect();
})();
