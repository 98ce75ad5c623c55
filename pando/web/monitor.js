// The Pando monitoring page: one WebSocket to the root (path /monitor) that
// pushes a status object every reporting interval (docs/monitoring.md), shown
// as run totals, a table of volunteers, two small hand-drawn SVG charts and,
// for a tree (--degree), the volunteers indented under the node they hang under.
//
// The run's last status says how it ended (its outcome): the page then shows
// "Done: …" or "Failed: …" instead of "the root is gone", which is left for a
// root that vanished without a word. It keeps looking for the next run at the
// same address, quietly, and follows it when it starts.
//
// Device names and failure texts come from volunteers and modules: everything
// from the feed is put on the page with textContent (or as an attribute
// value), never as HTML.

import { NO_KEY, joinKey, runOutcome } from './protocol.js';

const MONITOR_PATH = '/monitor';
const FIRST_BACKOFF_MS = 500;
const MAX_BACKOFF_MS = 5_000;
const HISTORY_SECONDS = 600; // the charts show the last ten minutes
const MAX_POINTS = 1_200; // per series, whatever the interval
const TOP_DEVICES = 5; // lines on the per-device chart
const TREE_LINES = 200; // volunteers drawn in the tree at most; the rest are counted
const PALETTE = ['#2f7d4f', '#1f6fb2', '#c2571a', '#8a3ffc', '#b3261e', '#00857c', '#a56eff', '#6b7c1f'];
const SVG_NS = 'http://www.w3.org/2000/svg';

const $ = (id) => document.getElementById(id);

// -- formatting ------------------------------------------------------------------

// One formatter for all: toLocaleString() builds a new one at every call, which is slow.
const INTEGER = new Intl.NumberFormat('en-US', { maximumFractionDigits: 0 });

function count(value) {
  return Number.isFinite(value) ? INTEGER.format(Math.round(value)) : '—';
}

function rate(value) {
  if (!Number.isFinite(value)) return '—';
  if (value === 0) return '0';
  if (value < 10) return value.toFixed(value < 1 ? 2 : 1);
  return INTEGER.format(Math.round(value));
}

function percent(value) {
  return Number.isFinite(value) ? `${Math.round(Math.max(0, value) * 100)} %` : '—';
}

function duration(seconds) {
  if (!Number.isFinite(seconds) || seconds < 0) return '—';
  const s = Math.floor(seconds);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const rest = String(s % 60).padStart(2, '0');
  return h ? `${h}:${String(m).padStart(2, '0')}:${rest}` : `${m}:${rest}`;
}

function clockTime(date) {
  return date.toLocaleTimeString('en-GB');
}

function num(value) {
  return typeof value === 'number' && Number.isFinite(value) ? value : null;
}

function text(value) {
  return typeof value === 'string' ? value : value === null || value === undefined ? '' : String(value);
}

function setText(element, value) {
  if (element.textContent !== value) element.textContent = value;
}

// -- the connection -----------------------------------------------------------------

function monitorURL() {
  const url = new URL(location.href);
  url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
  url.pathname = MONITOR_PATH;
  url.search = '';
  url.hash = '';
  return url.toString();
}

class Feed {
  constructor(key, onStatus, onState) {
    this.key = key;
    this.onStatus = onStatus;
    this.onState = onState;
    this.ws = null;
    this.backoff = FIRST_BACKOFF_MS;
    this.everConnected = false;
    this.goneSince = null; // Date the connection was lost
    this.retryAt = 0;
    this.retryTimer = null;
    this.lastStatusAt = 0; // performance.now() of the last status
    this.interval = 3;
    this.ended = false; // the run said how it ended: what the page shows until the next run's first status
    setInterval(() => this.tick(), 1000);
  }

  connect() {
    clearTimeout(this.retryTimer);
    this.retryTimer = null;
    if (!this.key) {
      this.end('no-key', NO_KEY);
      return;
    }
    let ws;
    try {
      ws = new WebSocket(monitorURL());
    } catch {
      this.closed();
      return;
    }
    this.ws = ws;
    if (!this.everConnected) this.onState('connecting', 'Connecting to the root…');
    ws.onopen = () => {
      if (ws !== this.ws) return;
      this.everConnected = true;
      this.goneSince = null;
      this.backoff = FIRST_BACKOFF_MS;
      this.lastStatusAt = performance.now();
      ws.send(JSON.stringify({ type: 'watch', key: this.key }));
      if (!this.ended) this.onState('live', 'Connected — waiting for the first status…');
    };
    ws.onmessage = (event) => {
      if (ws !== this.ws || typeof event.data !== 'string') return;
      let status;
      try {
        status = JSON.parse(event.data);
      } catch {
        return; // not ours to judge: skip it
      }
      if (status && status.type === 'bye') {
        const why = text(status.message) || 'this page was not let in';
        this.end('refused', `Refused by the root: ${why}`);
        return;
      }
      if (!status || typeof status !== 'object' || (status.type !== undefined && status.type !== 'status')) return;
      this.lastStatusAt = performance.now();
      if (num(status.interval) > 0) this.interval = status.interval;
      this.onStatus(status);
      const outcome = runOutcome(status);
      this.ended = outcome !== null;
      if (outcome) this.onState(outcome.status === 0 ? 'done' : 'failed', endText(status, outcome));
      else this.onState('live', `Live — updated ${clockTime(new Date())}`);
    };
    ws.onclose = () => {
      if (ws !== this.ws) return;
      this.ws = null;
      this.closed();
    };
  }

  /** Stop for good: the root refused this page, or it has no key to show. */
  end(state, message) {
    const ws = this.ws;
    this.ws = null;
    if (ws) ws.close(1000, state);
    clearTimeout(this.retryTimer);
    this.retryTimer = null;
    this.onState(state, message);
  }

  closed() {
    if (this.goneSince === null) this.goneSince = new Date();
    const delay = Math.round(this.backoff * (0.5 + Math.random() * 0.5));
    this.backoff = Math.min(this.backoff * 2, MAX_BACKOFF_MS);
    this.retryAt = performance.now() + delay;
    this.retryTimer = setTimeout(() => this.connect(), delay);
    if (!this.ended) this.showGone(); // an ended run's last word stays while the page looks for the next
  }

  showGone() {
    const seconds = Math.max(0, Math.ceil((this.retryAt - performance.now()) / 1000));
    const retry = seconds ? `retrying in ${seconds} s` : 'retrying…';
    if (this.everConnected) {
      this.onState(
        'gone',
        `The root is gone (since ${clockTime(this.goneSince)}): the run ended or the root stopped — ${retry}`,
      );
    } else {
      this.onState('gone', `Cannot reach the root — ${retry}`);
    }
  }

  tick() {
    if (!this.ws) {
      if (this.retryTimer !== null && !this.ended) this.showGone();
      return;
    }
    if (this.ws.readyState !== WebSocket.OPEN || this.ended) return;
    const silent = (performance.now() - this.lastStatusAt) / 1000;
    if (silent > 3 * this.interval + 2) {
      this.onState('stale', `Connected, but no news from the root for ${Math.round(silent)} s`);
    }
  }
}

/** The line for a run that ended: "Done: N results, exit status 0, took T", or why it failed. */
function endText(status, outcome) {
  const items = status.items && typeof status.items === 'object' ? status.items : {};
  const written = num(items.written);
  const results = `${count(written)} result${written === 1 ? '' : 's'}`;
  const took = duration(num(status.elapsed));
  if (outcome.status === 0) return `Done: ${results}, exit status 0, took ${took}`;
  const why = outcome.failure || 'the run did not finish';
  return `Failed: ${why}, exit status ${outcome.status} (${results} written, took ${took})`;
}

// -- history for the charts ------------------------------------------------------------

class History {
  constructor() {
    this.runs = 0; // runs seen: a root that restarts starts a new one
    this.runStart = null; // Unix time the current run started
    this.clear();
  }

  clear() {
    this.total = []; // [elapsed, throughput]
    this.devices = new Map(); // id -> {name, points: [[elapsed, throughput]], last}
    this.colors = new Map(); // id -> palette index
    this.lastElapsed = -Infinity;
  }

  add(status) {
    const t = num(status.elapsed);
    if (t === null) return;
    // A root that restarted (on the same port) starts a new run: its charts start afresh.
    const start = num(status.time) === null ? null : status.time - t;
    const restarted = start !== null && this.runStart !== null && Math.abs(start - this.runStart) > 2;
    if (this.runs === 0 || t < this.lastElapsed || restarted) {
      this.clear();
      this.runs++;
    }
    if (start !== null) this.runStart = start;
    this.lastElapsed = t;
    push(this.total, [t, num(status.throughput) ?? 0]);
    for (const device of devicesOf(status)) {
      const id = text(device.id);
      let entry = this.devices.get(id);
      if (!entry) {
        entry = { name: '', points: [] };
        this.devices.set(id, entry);
      }
      entry.name = text(device.name);
      entry.last = t;
      push(entry.points, [t, num(device.throughput) ?? 0]);
    }
    // Forget devices that left the window (or the feed) long ago.
    const from = t - HISTORY_SECONDS;
    trim(this.total, from);
    for (const [id, entry] of this.devices) {
      trim(entry.points, from);
      if (entry.last < from || !entry.points.length) {
        this.devices.delete(id);
        this.colors.delete(id);
      }
    }
  }

  /** The busiest devices now, each with a colour it keeps while it stays among them. */
  top(status, n) {
    const ranked = devicesOf(status)
      .filter((device) => this.devices.has(text(device.id)))
      .sort((a, b) => (num(b.throughput) ?? 0) - (num(a.throughput) ?? 0))
      .slice(0, n)
      .map((device) => text(device.id));
    const taken = new Set();
    for (const id of ranked) if (this.colors.has(id)) taken.add(this.colors.get(id));
    for (const id of ranked) {
      if (this.colors.has(id)) continue;
      let color = 0;
      while (taken.has(color) && color < PALETTE.length - 1) color++;
      this.colors.set(id, color);
      taken.add(color);
    }
    for (const id of [...this.colors.keys()]) if (!ranked.includes(id)) this.colors.delete(id);
    return ranked.map((id) => ({ id, ...this.devices.get(id), color: PALETTE[this.colors.get(id)] }));
  }
}

function push(points, point) {
  const last = points[points.length - 1];
  if (last && last[0] === point[0]) points[points.length - 1] = point;
  else points.push(point);
  if (points.length > MAX_POINTS) points.splice(0, points.length - MAX_POINTS);
}

function trim(points, from) {
  let drop = 0;
  while (drop < points.length && points[drop][0] < from) drop++;
  if (drop) points.splice(0, drop);
}

function devicesOf(status) {
  return Array.isArray(status.devices) ? status.devices.filter((d) => d && typeof d === 'object') : [];
}

// -- charts: small hand-drawn SVG ----------------------------------------------------------

function svg(name, attributes = {}, parent = null) {
  const element = document.createElementNS(SVG_NS, name);
  for (const [key, value] of Object.entries(attributes)) element.setAttribute(key, String(value));
  if (parent) parent.append(element);
  return element;
}

/** Grid lines for values up to `peak`: a round step (1, 2, 2.5 or 5 times a power of ten), at most 4 lines. */
function niceScale(peak) {
  if (!(peak > 0)) return { step: 0.25, lines: 4 };
  const rough = peak / 4;
  const power = 10 ** Math.floor(Math.log10(rough));
  let step = 10 * power;
  for (const factor of [1, 2, 2.5, 5]) {
    if (factor * power >= rough) {
      step = factor * power;
      break;
    }
  }
  return { step, lines: Math.max(1, Math.ceil(peak / step - 1e-9)) };
}

/**
 * Draw `series` ([{color, points: [[x, y]...], fill}]) into an <svg>,
 * sized to the element, x from `x0` to `x1` (seconds of the run).
 */
function drawChart(element, series, x0, x1) {
  const width = Math.max(200, Math.round(element.clientWidth || 600));
  const height = Math.max(120, Math.round(element.clientHeight || 180));
  element.setAttribute('viewBox', `0 0 ${width} ${height}`);
  const pad = { left: 44, right: 10, top: 10, bottom: 22 };
  const w = width - pad.left - pad.right;
  const h = height - pad.top - pad.bottom;
  let peak = 0;
  for (const line of series) for (const [, y] of line.points) if (y > peak) peak = y;
  const { step, lines } = niceScale(peak);
  const top = step * lines;
  const span = Math.max(1, x1 - x0);
  const X = (x) => pad.left + ((x - x0) / span) * w;
  const Y = (y) => pad.top + h - (Math.min(y, top) / top) * h;

  const frame = document.createDocumentFragment();
  const grid = svg('g', { class: 'grid' }, frame);
  for (let i = 0; i <= lines; i++) {
    const value = step * i;
    const y = Y(value);
    svg('line', { x1: pad.left, x2: pad.left + w, y1: y, y2: y }, grid);
    const label = svg('text', { x: pad.left - 6, y: y + 4, 'text-anchor': 'end' }, grid);
    label.textContent = rate(value);
  }
  const ticks = 4;
  for (let i = 0; i <= ticks; i++) {
    const x = x0 + (span * i) / ticks;
    const label = svg('text', {
      x: X(x),
      y: height - 6,
      'text-anchor': i === 0 ? 'start' : i === ticks ? 'end' : 'middle',
    }, grid);
    label.textContent = duration(x);
  }
  for (const line of series) {
    if (!line.points.length) continue;
    const coords = line.points.map(([x, y]) => `${X(x).toFixed(1)},${Y(y).toFixed(1)}`);
    if (line.fill) {
      const first = line.points[0][0];
      const last = line.points[line.points.length - 1][0];
      svg('polygon', {
        class: 'area',
        points: `${X(first).toFixed(1)},${Y(0)} ${coords.join(' ')} ${X(last).toFixed(1)},${Y(0)}`,
        fill: line.color,
      }, frame);
    }
    svg('polyline', { class: 'line', points: coords.join(' '), stroke: line.color }, frame);
    if (line.points.length === 1) {
      const [x, y] = line.points[0];
      svg('circle', { cx: X(x), cy: Y(y), r: 2.5, fill: line.color }, frame);
    }
  }
  element.replaceChildren(frame);
}

// -- the table ------------------------------------------------------------------------------

const SORTS = {
  name: (d) => text(d.name).toLowerCase(),
  workers: (d) => num(d.workers) ?? -1,
  throughput: (d) => num(d.throughput) ?? -1,
  units: (d) => unitsRate(d) ?? -1,
  cpu: (d) => num(d.cpu_usage) ?? -1,
  items: (d) => num(d.items) ?? -1,
  state: (d) => text(d.state),
};

function unitsRate(device) {
  const report = device.report && typeof device.report === 'object' ? device.report : null;
  if (!report || !(num(report.interval) > 0) || num(report.units) === null) return null;
  return report.units / report.interval;
}

function unitsDiffer(device) {
  const report = device.report && typeof device.report === 'object' ? device.report : null;
  return Boolean(report && num(report.units) !== null && report.units !== report.items);
}

function statsTitle(stats, unit, format) {
  if (!stats || typeof stats !== 'object' || !num(stats.count)) return '';
  return (
    `average ${format(stats.average)} ${unit}, standard deviation ${format(stats.stdev)}, ` +
    `min ${format(stats.min)}, max ${format(stats.max)} over ${count(stats.count)} report(s)`
  );
}

class Table {
  constructor() {
    this.body = $('device-rows');
    this.rows = new Map(); // id -> {tr, cells}
    this.sortKey = 'throughput';
    this.descending = true;
    for (const button of document.querySelectorAll('#devices th button')) {
      button.addEventListener('click', () => {
        const key = button.dataset.sort;
        if (this.sortKey === key) this.descending = !this.descending;
        else {
          this.sortKey = key;
          this.descending = key !== 'name' && key !== 'state';
        }
        this.showSort();
        if (this.last) this.update(this.last);
      });
    }
    this.showSort();
  }

  showSort() {
    for (const th of document.querySelectorAll('#devices th')) {
      const key = th.querySelector('button').dataset.sort;
      if (key === this.sortKey) th.setAttribute('aria-sort', this.descending ? 'descending' : 'ascending');
      else th.removeAttribute('aria-sort');
    }
  }

  row(id) {
    let row = this.rows.get(id);
    if (row) return row;
    const tr = document.createElement('tr');
    tr.dataset.id = id;
    const cells = {};
    const columns = [
      ['name', 'Device', ''],
      ['workers', 'Workers', 'num'],
      ['throughput', 'Throughput', 'num'],
      ['units', 'Units/s', 'num units-col'],
      ['cpu', 'CPU', 'num'],
      ['items', 'Items done', 'num'],
      ['state', 'State', ''],
    ];
    for (const [key, label, className] of columns) {
      const td = document.createElement('td');
      td.dataset.label = label;
      td.dataset.col = key;
      if (className) td.className = className;
      tr.append(td);
      cells[key] = td;
    }
    // Name cell: the name as text, and a badge for the root's own helper.
    cells.nameText = document.createElement('span');
    cells.nameText.className = 'name';
    cells.badge = document.createElement('span');
    cells.badge.className = 'badge';
    cells.badge.textContent = 'root';
    cells.badge.hidden = true;
    cells.name.append(cells.nameText, cells.badge);
    // Throughput: the latest, and the average under it.
    cells.rateNow = document.createElement('span');
    cells.rateAvg = document.createElement('small');
    cells.throughput.append(cells.rateNow, cells.rateAvg);
    // CPU: a bar and the figure.
    cells.cpuBar = document.createElement('span');
    cells.cpuBar.className = 'bar';
    cells.cpuFill = document.createElement('span');
    cells.cpuBar.append(cells.cpuFill);
    cells.cpuText = document.createElement('span');
    cells.cpu.append(cells.cpuBar, cells.cpuText);
    // State: a dot and a word.
    cells.stateDot = document.createElement('span');
    cells.stateDot.className = 'dot';
    cells.stateText = document.createElement('span');
    cells.state.append(cells.stateDot, cells.stateText);
    row = { tr, cells };
    this.rows.set(id, row);
    return row;
  }

  update(status) {
    this.last = status;
    const devices = devicesOf(status);
    const key = SORTS[this.sortKey];
    const sign = this.descending ? -1 : 1;
    devices.sort((a, b) => {
      const ka = key(a);
      const kb = key(b);
      if (ka < kb) return -sign;
      if (ka > kb) return sign;
      return text(a.name).localeCompare(text(b.name)) || text(a.id).localeCompare(text(b.id));
    });
    const seen = new Set();
    let showUnits = false;
    const order = [];
    for (const device of devices) {
      const id = text(device.id);
      if (seen.has(id)) continue;
      seen.add(id);
      const { tr, cells } = this.row(id);
      const name = text(device.name);
      setText(cells.nameText, name || '(unnamed)');
      cells.nameText.classList.toggle('unnamed', !name);
      if (tr.title !== `session ${id}`) tr.title = `session ${id}`;
      cells.badge.hidden = device.local !== true;
      setText(cells.workers, count(num(device.workers)));
      setText(cells.rateNow, rate(num(device.throughput)));
      const stats = device.throughput_stats;
      const average = stats && typeof stats === 'object' ? num(stats.average) : null;
      setText(cells.rateAvg, average === null ? '' : `avg ${rate(average)}`);
      cells.throughput.title = statsTitle(stats, 'items/s', rate);
      const units = unitsRate(device);
      setText(cells.units, units === null ? '—' : rate(units));
      if (unitsDiffer(device)) showUnits = true;
      const cpu = num(device.cpu_usage);
      setText(cells.cpuText, percent(cpu));
      cells.cpuFill.style.width = `${Math.round(Math.min(1, Math.max(0, cpu ?? 0)) * 100)}%`;
      cells.cpu.title = statsTitle(device.cpu_stats, '', percent);
      const held = num(device.held);
      setText(cells.items, count(num(device.items)));
      cells.items.title = held === null ? '' : `holds ${count(held)} item(s) now`;
      const state = text(device.state) || 'unknown';
      setText(cells.stateText, state);
      if (tr.dataset.state !== state) tr.dataset.state = state;
      order.push(tr);
    }
    for (const [id, row] of this.rows) {
      if (!seen.has(id)) {
        row.tr.remove();
        this.rows.delete(id);
      }
    }
    // Re-order only what moved: a stable table is kinder to the eye and the browser.
    let cursor = this.body.firstElementChild;
    for (const tr of order) {
      if (tr === cursor) cursor = cursor.nextElementSibling;
      else this.body.insertBefore(tr, cursor);
    }
    $('devices').classList.toggle('with-units', showUnits);
    return seen.size;
  }
}

// -- the tree ---------------------------------------------------------------------------------

/**
 * The rows of a status in the tree's order: each root's child, then what
 * hangs under it (depth first, siblings by name), every row at its depth.
 * Rows whose parent is not listed (left out of the feed) come after, at their
 * own depth. Each line: {device, depth, nodes} (nodes: its subtree, itself
 * included, as its row says or as far as the rows show).
 */
export function treeLines(devices) {
  const rows = devices.filter((device) => device.local !== true && text(device.id));
  const ids = new Set(rows.map((device) => text(device.id)));
  const below = new Map(); // parent id -> rows
  const tops = [];
  for (const row of rows) {
    const parent = typeof row.parent === 'string' ? row.parent : '';
    if (parent && ids.has(parent) && parent !== text(row.id)) {
      if (!below.has(parent)) below.set(parent, []);
      below.get(parent).push(row);
    } else {
      tops.push(row);
    }
  }
  const byName = (a, b) => text(a.name).localeCompare(text(b.name)) || text(a.id).localeCompare(text(b.id));
  tops.sort((a, b) => (a.parent ? 1 : 0) - (b.parent ? 1 : 0) || byName(a, b));
  for (const list of below.values()) list.sort(byName);
  // Depth first without recursion (a long chain is as deep as it is long); a row listed twice, or a
  // loop of parents, is drawn once.
  const lines = [];
  const seen = new Set();
  const stack = tops.slice().reverse().map((device) => ({ device, level: 1 }));
  while (stack.length) {
    const { device, level } = stack.pop();
    const id = text(device.id);
    if (seen.has(id)) continue;
    seen.add(id);
    const depth = num(device.depth) !== null && device.depth >= 1 ? Math.floor(device.depth) : level;
    lines.push({ device, depth, nodes: num(device.nodes) });
    const children = below.get(id) || [];
    for (let i = children.length - 1; i >= 0; i--) stack.push({ device: children[i], level: depth + 1 });
  }
  // Subtree sizes where a row does not say: itself and the rows listed under it.
  const index = new Map(lines.map((line, i) => [text(line.device.id), i]));
  for (let i = lines.length - 1; i >= 0; i--) {
    const line = lines[i];
    if (line.nodes !== null) continue;
    let count = 1;
    for (const child of below.get(text(line.device.id)) || []) {
      const at = index.get(text(child.id));
      if (at !== undefined && at > i) count += lines[at].nodes ?? 1;
    }
    line.nodes = count;
  }
  return lines;
}

/** The tree section: shown when the run has a tree (its status has children of the root in it, or rows below). */
class TreeView {
  constructor() {
    this.section = $('tree-section');
    this.list = $('tree');
  }

  update(status) {
    const tree = status.tree && typeof status.tree === 'object' ? status.tree : null;
    const devices = tree ? devicesOf(status) : [];
    const below = devices.some((device) => typeof device.parent === 'string' && device.parent);
    this.section.hidden = !tree || !((num(tree.children) ?? 0) > 0 || below);
    if (this.section.hidden) return;
    const lines = treeLines(devices);
    const shown = lines.slice(0, TREE_LINES);
    this.list.replaceChildren(...shown.map((line) => this.line(line)));
    const nodes = num(tree.nodes) ?? lines.length;
    const depth = num(tree.depth) ?? 0;
    const hidden = num(tree.hidden) ?? 0;
    setText($('tree-summary'), `${count(nodes)} volunteer${nodes === 1 ? '' : 's'} in all, ` +
      `${count(num(tree.children) ?? 0)} under the root, ${count(depth)} level${depth === 1 ? '' : 's'} deep` +
      (hidden ? `; ${count(hidden)} too far down to be listed` : ''));
    const more = Math.max(0, nodes - shown.length);
    $('tree-more').hidden = more === 0;
    setText($('tree-more'), more ? `… and ${count(more)} more` : '');
  }

  line({ device, depth, nodes }) {
    const li = document.createElement('li');
    li.dataset.depth = String(depth);
    li.dataset.id = text(device.id);
    li.style.setProperty('--depth', String(depth - 1));
    if (depth > 1) {
      const branch = document.createElement('span');
      branch.className = 'branch';
      branch.setAttribute('aria-hidden', 'true');
      branch.textContent = '└─';
      li.append(branch);
    }
    const name = document.createElement('span');
    name.className = 'name';
    const label = text(device.name);
    name.textContent = label || '(unnamed)';
    name.classList.toggle('unnamed', !label);
    const figures = document.createElement('small');
    const workers = num(device.subtree_workers) ?? num(device.workers);
    const parts = [];
    if (nodes > 1) parts.push(`${count(nodes)} in its subtree`);
    if (workers !== null) parts.push(`${count(workers)} worker${workers === 1 ? '' : 's'}`);
    if (num(device.items) !== null) parts.push(`${count(device.items)} items`);
    figures.textContent = parts.join(' · ');
    li.append(name, figures);
    return li;
  }
}

// -- the page ---------------------------------------------------------------------------------

class Monitor {
  constructor() {
    this.history = new History();
    this.table = new Table();
    this.tree = new TreeView();
    this.status = null;
    this.dirty = false;
    const key = joinKey(location.hash);
    this.feed = new Feed(
      key,
      (status) => this.receive(status),
      (state, message) => this.showState(state, message),
    );
    window.addEventListener('resize', () => this.drawCharts());
    document.addEventListener('visibilitychange', () => {
      if (!document.hidden && this.dirty) this.render();
    });
    // The volunteer page's address, with the key that lets volunteers in.
    const link = new URL('/', location.href);
    link.hash = `key=${key};`;
    $('volunteer-link').href = link.href;
    $('volunteer-link').textContent = link.href;
    $('link').hidden = !key;
    $('top-n').textContent = String(TOP_DEVICES);
  }

  start() {
    this.feed.connect();
  }

  receive(status) {
    this.status = status;
    this.history.add(status);
    // A hidden tab keeps the history but draws nothing until it is looked at.
    if (document.hidden) this.dirty = true;
    else this.render();
  }

  showState(state, message) {
    const box = $('connection');
    if (box.dataset.state !== state) box.dataset.state = state;
    setText($('connection-text'), message);
    $('content').dataset.stale = String(!['live', 'done', 'failed'].includes(state)); // an ended run's figures are final
  }

  render() {
    this.dirty = false;
    const status = this.status;
    if (!status) return;
    const items = status.items && typeof status.items === 'object' ? status.items : {};
    const volunteers = status.volunteers && typeof status.volunteers === 'object' ? status.volunteers : {};
    const total = num(items.total);
    const written = num(items.written);
    setText($('t-written'), count(written));
    setText($('t-read'), count(num(items.read)));
    setText($('t-total'), total === null ? '' : `of ${count(total)}`);
    setText($('t-lent'), count(num(items.lent)));
    setText($('t-relent'), count(num(items.relent)));
    setText($('t-failed'), count(num(items.failed)));
    $('t-failed').classList.toggle('bad', (num(items.failed) ?? 0) > 0);
    setText($('t-throughput'), rate(num(status.throughput)));
    setText($('t-now'), count(num(volunteers.now)));
    setText($('t-ever'), count(num(volunteers.ever)));
    setText($('t-elapsed'), duration(num(status.elapsed)));

    if (total !== null && total > 0 && written !== null) {
      const done = Math.min(1, written / total);
      $('progress').hidden = false;
      $('progress-fill').style.width = `${(done * 100).toFixed(1)}%`;
      const speed = num(status.throughput);
      const left = total - written;
      const eta = left > 0 && speed > 0 ? `, about ${duration(left / speed)} left` : '';
      setText($('progress-text'), `${(done * 100).toFixed(1)} % written${eta}`);
    } else {
      $('progress').hidden = true;
    }

    const shown = this.table.update(status);
    const listed = devicesOf(status).filter((d) => d.local !== true).length;
    const more = Math.max(0, (num(status.more_devices) ?? (num(volunteers.now) ?? 0) - listed));
    $('no-devices').hidden = shown > 0;
    $('more-devices').hidden = more === 0;
    setText($('more-devices'), more ? `… and ${count(more)} more volunteer${more === 1 ? '' : 's'} (the busiest are shown)` : '');
    this.tree.update(status);
    this.drawCharts();
  }

  drawCharts() {
    const status = this.status;
    if (!status || document.hidden) return;
    const history = this.history;
    // From the first point this page saw (at most ten minutes ago), at least ten seconds wide.
    const first = history.total.length ? history.total[0][0] : 0;
    const x1 = Math.max(history.lastElapsed, first + 10);
    const x0 = Math.max(0, first, x1 - HISTORY_SECONDS);
    drawChart($('chart-total'), [{ color: PALETTE[0], points: history.total, fill: true }], x0, x1);
    const top = history.top(status, TOP_DEVICES);
    drawChart($('chart-devices'), top.map((d) => ({ color: d.color, points: d.points })), x0, x1);
    const legend = $('legend');
    const items = top.map((device) => {
      const li = document.createElement('li');
      const swatch = document.createElement('span');
      swatch.className = 'swatch';
      swatch.style.background = device.color;
      const name = document.createElement('span');
      name.textContent = device.name || '(unnamed)';
      li.append(swatch, name);
      return li;
    });
    legend.replaceChildren(...items);
  }
}

const monitor = new Monitor();
window.pandoMonitor = monitor; // for the curious, and for tests
monitor.start();
