// The router's dashboard: reads /admin/* with an admin key every few
// seconds and draws what it gets. No library, no build step: served as is
// from the binary. Everything shown is set with textContent (never as
// HTML), and every number also sits in a data-value attribute, unformatted,
// for tests and scripts to read.
'use strict';

(function () {
  const STORAGE_KEY = 'router.adminKey';
  const REFRESH_MS = 3000;
  const SVG_NS = 'http://www.w3.org/2000/svg';
  const COLORS = ['#2f6fed', '#e8793b', '#2f855a', '#9b59b6', '#c0392b', '#16a2b8',
    '#b7791f', '#5d6d7e', '#d35490', '#7cb342'];

  const $ = (id) => document.getElementById(id);
  let timer = null;
  let refreshes = 0;
  let last = null; // the latest answers, redrawn when a control changes

  // A request to an admin view; an error answer becomes an Error carrying
  // the status and the OpenAI-shaped error's code and message.
  async function get(path) {
    const key = sessionStorage.getItem(STORAGE_KEY) || '';
    const response = await fetch(path, {
      headers: { Authorization: 'Bearer ' + key },
      cache: 'no-store',
    });
    let body = null;
    try { body = await response.json(); } catch (_) { body = null; }
    if (!response.ok) {
      const error = new Error((body && body.error && body.error.message) || ('HTTP ' + response.status));
      error.status = response.status;
      error.code = body && body.error ? body.error.code : null;
      throw error;
    }
    return body;
  }

  function showLogin(message) {
    clearInterval(timer);
    timer = null;
    $('dashboard').hidden = true;
    $('logout').hidden = true;
    $('login').hidden = false;
    $('login-error').textContent = message || '';
    document.body.dataset.state = message ? 'refused' : 'login';
  }

  function showDashboard() {
    $('login').hidden = true;
    $('dashboard').hidden = false;
    $('logout').hidden = false;
  }

  async function refresh() {
    let answers;
    try {
      answers = await Promise.all([
        get('/admin/models'), get('/admin/keys'), get('/admin/usage'), get('/admin/errors?limit=20'),
      ]);
    } catch (error) {
      if (error.status === 401 || error.status === 403) {
        // A wrong or non-admin key: forget it and say why.
        sessionStorage.removeItem(STORAGE_KEY);
        showLogin(error.status === 403
          ? 'Refused (' + (error.code || 403) + '): ' + error.message
          : 'Refused (' + (error.code || 401) + '): ' + error.message);
      } else {
        $('status').textContent = 'Refresh failed: ' + error.message;
        document.body.dataset.state = 'stale';
      }
      return;
    }
    const [models, keys, usage, errors] = answers;
    last = { models, keys, usage, errors };
    showDashboard();
    draw();
    refreshes += 1;
    $('status').textContent = 'Updated ' + new Date().toLocaleTimeString() + ' · every ' + (REFRESH_MS / 1000) + ' s';
    document.body.dataset.state = 'ready';
    document.body.dataset.refreshes = String(refreshes);
  }

  function start() {
    clearInterval(timer);
    refresh();
    timer = setInterval(refresh, REFRESH_MS);
  }

  // ---- formatting ----------------------------------------------------------

  const integer = new Intl.NumberFormat('en-US');
  function money(value) {
    if (value === 0) return '$0';
    return '$' + (value < 0.01 ? value.toPrecision(3) : value.toFixed(4));
  }
  function seconds(value) {
    if (value < 1) return 'now';
    if (value < 90) return Math.ceil(value) + ' s';
    if (value < 5400) return Math.round(value / 60) + ' min';
    if (value < 172800) return (value / 3600).toFixed(1) + ' h';
    return (value / 86400).toFixed(1) + ' d';
  }
  function utc(text) {
    return text ? text.replace('T', ' ').replace(/\.\d+/, '').replace(/(Z|\+00:00)$/, '') : '';
  }

  function setNumber(id, value, text) {
    const element = $(id);
    element.dataset.value = String(value);
    element.textContent = text;
  }

  function element(tag, text, className) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (className) node.className = className;
    return node;
  }

  function numberCell(field, value, text) {
    const cell = element('td', text, 'num');
    cell.dataset.field = field;
    cell.dataset.value = String(value);
    return cell;
  }

  function fill(tbody, rows, emptyText, columns) {
    tbody.replaceChildren(...rows);
    if (rows.length === 0) {
      const row = element('tr');
      const cell = element('td', emptyText, 'empty');
      cell.colSpan = columns;
      row.append(cell);
      tbody.append(row);
    }
  }

  // ---- drawing -------------------------------------------------------------

  function keyName(id) {
    const key = last.keys.keys.find((k) => String(k.id) === String(id));
    return key ? key.name + ' (#' + id + ')' : '#' + id;
  }

  function draw() {
    const { models, keys, usage, errors } = last;
    setNumber('today-requests', usage.today.requests, integer.format(usage.today.requests));
    setNumber('today-tokens', usage.today.total_tokens, integer.format(usage.today.total_tokens));
    setNumber('today-cost', usage.today.cost_usd, money(usage.today.cost_usd));
    if (models.in_flight === null || models.in_flight === undefined) {
      setNumber('in-flight', '', 'n/a');
    } else {
      setNumber('in-flight', models.in_flight, integer.format(models.in_flight));
    }
    setNumber('error-count', errors.data.length, integer.format(errors.data.length));

    const totalsRow = (attribute, group, label, totals) => {
      const row = element('tr');
      row.dataset[attribute] = group;
      row.append(element('td', label),
        numberCell('requests', totals.requests, integer.format(totals.requests)),
        numberCell('total_tokens', totals.total_tokens, integer.format(totals.total_tokens)),
        numberCell('cost_usd', totals.cost_usd, money(totals.cost_usd)));
      return row;
    };
    fill($('usage-by-model'), usage.today_by_model.map((t) => totalsRow('model', t.group, t.group, t)),
      'No requests today', 4);
    fill($('usage-by-key'), usage.today_by_key.map((t) => totalsRow('keyId', t.group, keyName(t.group), t)),
      'No requests today', 4);

    const healthRows = [];
    for (const model of models.models) {
      for (const entry of model.entries) {
        for (const key of entry.keys) {
          const row = element('tr');
          row.dataset.entry = String(entry.index);
          row.dataset.providerKey = key.index === null ? '' : String(key.index);
          row.dataset.state = key.state;
          const state = element('td');
          state.dataset.field = 'state';
          state.append(element('span', key.state, 'state state-' + key.state));
          const circuit = element('td', key.circuit + (key.circuit_open_until ? ' until ' + utc(key.circuit_open_until) : '') + (key.probing ? ' (probing)' : ''));
          circuit.dataset.field = 'circuit';
          row.append(element('td', model.name), element('td', '#' + entry.index),
            element('td', entry.provider + ' · ' + entry.provider_model_name),
            element('td', key.index === null ? '(none)' : 'key ' + key.index), state,
            element('td', key.resting_until ? utc(key.resting_until) : '–'), circuit,
            numberCell('consecutive_failures', key.consecutive_failures, key.consecutive_failures));
          healthRows.push(row);
        }
      }
    }
    fill($('models'), healthRows, 'No enabled model', 8);

    fill($('keys'), keys.keys.map((key) => {
      const row = element('tr');
      row.dataset.clientKey = String(key.id);
      const flags = [key.active ? 'active' : 'inactive'];
      if (key.admin) flags.push('admin');
      if (key.expires_at) flags.push('expires ' + utc(key.expires_at));
      const list = element('ul', null, 'limits');
      for (const limit of key.limits) {
        const item = element('li');
        item.dataset.limit = limit.limit;
        item.dataset.remaining = String(limit.remaining);
        item.dataset.max = String(limit.max);
        const bar = element('span', null, 'bar');
        const used = element('span');
        used.style.width = (limit.max ? (100 * limit.remaining / limit.max) : 0).toFixed(1) + '%';
        bar.append(used);
        item.append(bar, element('span', limit.limit + ': ' + integer.format(limit.remaining) + ' / ' +
          integer.format(limit.max) + (limit.remaining < limit.max ? ', whole in ' + seconds(limit.reset_seconds) : '')));
        list.append(item);
      }
      if (key.limits.length === 0) list.append(element('li', 'no limits', 'empty'));
      const limits = element('td');
      limits.append(list);
      row.append(numberCell('id', key.id, key.id), element('td', key.name), element('td', flags.join(', ')), limits);
      return row;
    }), 'No client keys', 4);

    fill($('errors'), errors.data.map((error) => {
      const row = element('tr');
      row.dataset.requestId = error.request_id;
      const outcome = element('td', error.outcome + (error.refused_by ? ' (' + error.refused_by + ')' : ''), 'outcome');
      outcome.dataset.field = 'outcome';
      const message = element('td', error.message || '', 'message');
      message.dataset.field = 'message';
      const id = element('td', error.request_id);
      id.dataset.field = 'request_id';
      row.append(element('td', utc(error.time)), id, element('td', error.key_name + ' (#' + error.key_id + ')'),
        element('td', error.model), outcome, message);
      return row;
    }), 'No errors', 6);

    const metric = $('metric').value;
    const split = $('split').value;
    const colors = new Map();
    const color = (group) => {
      if (!colors.has(group)) colors.set(group, COLORS[colors.size % COLORS.length]);
      return colors.get(group);
    };
    const label = (group) => (split === 'key' ? keyName(group) : group);
    chart($('chart-hour'), usage.last_hour, 60, 16, 60000, metric, split, color, label);
    chart($('chart-days'), usage.last_days, 168, 13, 3600000, metric, split, color, label);
    const legend = $('legend');
    legend.replaceChildren();
    for (const [group, fillColor] of colors) {
      const item = element('li');
      const swatch = element('span', null, 'swatch');
      swatch.style.background = fillColor;
      item.append(swatch, element('span', label(group)));
      legend.append(item);
    }
  }

  // A stacked bar chart of one series in inline SVG: `count` buckets of
  // `step` ms from `series.since`, each named by the first `width`
  // characters of its ISO time, as the ledger names them.
  function chart(svg, series, count, width, step, metric, split, color, label) {
    const points = split === 'key' ? series.by_key : series.by_model;
    const start = Date.parse(series.since);
    const names = [];
    const stacks = new Map();
    for (let i = 0; i < count; i += 1) {
      const name = new Date(start + i * step).toISOString().slice(0, width);
      names.push(name);
      stacks.set(name, []);
    }
    let total = 0;
    for (const point of points) {
      const stack = stacks.get(point.bucket);
      if (!stack) continue;
      stack.push(point);
      total += point[metric];
    }
    svg.dataset.total = String(total);
    svg.dataset.metric = metric;
    const W = 1000;
    const H = 150;
    const left = 46;
    const bottom = 18;
    const plotW = W - left - 6;
    const plotH = H - bottom - 8;
    let max = 0;
    for (const stack of stacks.values()) {
      max = Math.max(max, stack.reduce((sum, point) => sum + point[metric], 0));
    }
    svg.setAttribute('viewBox', '0 0 ' + W + ' ' + H);
    svg.setAttribute('preserveAspectRatio', 'none');
    svg.replaceChildren();
    const make = (tag, attributes) => {
      const node = document.createElementNS(SVG_NS, tag);
      for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, String(value));
      svg.append(node);
      return node;
    };
    make('line', { x1: left, y1: 8 + plotH, x2: W - 6, y2: 8 + plotH, class: 'axis' });
    make('line', { x1: left, y1: 8, x2: left, y2: 8 + plotH, class: 'axis' });
    const format = metric === 'cost_usd' ? money : (value) => integer.format(value);
    make('text', { x: left - 4, y: 14, 'text-anchor': 'end' }).textContent = format(max);
    make('text', { x: left - 4, y: 8 + plotH, 'text-anchor': 'end' }).textContent = '0';
    const slot = plotW / count;
    names.forEach((name, index) => {
      let y = 8 + plotH;
      for (const point of stacks.get(name)) {
        const value = point[metric];
        if (!value || !max) continue;
        const height = Math.max(1, (value / max) * plotH);
        y -= height;
        const bar = make('rect', {
          x: left + index * slot + slot * 0.1, y, width: Math.max(1, slot * 0.8), height,
          fill: color(point.group),
        });
        const title = document.createElementNS(SVG_NS, 'title');
        title.textContent = name.replace('T', ' ') + ' · ' + label(point.group) + ': ' + format(value);
        bar.append(title);
      }
      const every = count > 100 ? 24 : 10;
      if (index % every === 0) {
        make('text', { x: left + index * slot, y: H - 4 }).textContent =
          count > 100 ? name.slice(5, 10) : name.slice(11, 16);
      }
    });
    if (total === 0) {
      make('text', { x: left + plotW / 2, y: 8 + plotH / 2, 'text-anchor': 'middle' }).textContent = 'no traffic';
    }
  }

  // ---- wiring --------------------------------------------------------------

  document.addEventListener('DOMContentLoaded', () => {
    $('login-form').addEventListener('submit', (event) => {
      event.preventDefault();
      const key = $('key').value.trim();
      if (!key) return;
      sessionStorage.setItem(STORAGE_KEY, key);
      $('key').value = '';
      $('login-error').textContent = '';
      start();
    });
    $('logout').addEventListener('click', () => {
      sessionStorage.removeItem(STORAGE_KEY);
      showLogin('');
    });
    $('metric').addEventListener('change', () => { if (last) draw(); });
    $('split').addEventListener('change', () => { if (last) draw(); });
    if (sessionStorage.getItem(STORAGE_KEY)) {
      start();
    } else {
      showLogin('');
    }
  });
})();
