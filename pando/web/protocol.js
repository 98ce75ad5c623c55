// The Pando wire protocol, version 2, as the browser volunteer speaks it.
//
// pando/protocol.py is the reference and docs/protocol.md says the same in
// prose; this file follows them. Every frame is one JSON object with a "type"
// key, in one text message of a WebSocket or a WebRTC data channel (link.js
// carries them; signal.js opens a data channel).

/** Bumped on any incompatible change; the root refuses another version. */
export const VERSION = 2;

/** Path of the WebSocket endpoint on the root's port. */
export const VOLUNTEER_PATH = '/volunteer';

/** Largest frame either side accepts. */
export const MAX_FRAME_BYTES = 64 * 1024 * 1024;

/** Largest single item or result, in UTF-8 bytes. */
export const MAX_ITEM_BYTES = 8 * 1024 * 1024;

/** Seconds between two report frames when the module frame does not say. */
export const DEFAULT_REPORTING_INTERVAL = 3;

/** Frame types a volunteer may receive from its parent (the root, or a relay). */
export const FROM_ROOT = Object.freeze(['module', 'lend', 'heartbeat', 'bye', 'join', 'reset']);

/** Frame types a relay may receive from its children (the tree, docs/protocol.md). */
export const FROM_CHILD = Object.freeze(['hello', 'result', 'error', 'report', 'heartbeat', 'status', 'answer']);

/** Largest frame a peer may send before its hello is accepted. */
export const MAX_GREETING_BYTES = 4096;

/** Milliseconds a child has to say hello. */
export const GREETING_MS = 10_000;

/** Most workers a volunteer may declare, and the longest device name kept. */
export const MAX_WORKERS = 1024;
export const MAX_NAME = 200;

/** Most entries of a module frame's native_only. */
export const MAX_NATIVE_ONLY = 64;

/** The tree: device rows in a status frame, nodes a join may avoid, a session description's length. */
export const MAX_DEVICES = 256;
export const MAX_AVOID = 16;
export const MAX_SDP = 60 * 1024;
const MAX_ICE_SERVERS = 8;
const MAX_INT = 2 ** 53;

/** A volunteer's node id in the tree (16 hex digits), and a joiner's id on a rendezvous (32). */
export const NODE_ID = /^[0-9a-f]{16}$/;
export const JOINER_ID = /^[0-9a-f]{32}$/;

/** A run's id in module frames (16 hex digits): a volunteer that finds another run starts afresh. */
export const RUN_ID = /^[0-9a-f]{16}$/;

/** Longest failure text of a run's outcome (the monitoring feed's last status). */
export const MAX_FAILURE = 2000;

/** A frame that is not valid under this protocol. */
export class ProtocolError extends Error {
  constructor(message) {
    super(message);
    this.name = 'ProtocolError';
  }
}

/** What a page shows when its address lacks the join key. */
export const NO_KEY = 'This address lacks its join key: open the full URL the root printed (it ends with #key=…).';

/**
 * The settings in a page URL's fragment, in the original's form and any order:
 * #key=K;device=NAME;workers=N;protocol=webrtc; (protocol: join over a WebRTC
 * data channel even when the page's host does not ask for it).
 */
export function fragmentSettings(hash) {
  const out = {};
  for (const part of hash.replace(/^#/, '').split(';')) {
    const eq = part.indexOf('=');
    if (eq <= 0) continue;
    let value = part.slice(eq + 1);
    try {
      value = decodeURIComponent(value);
    } catch {
      // keep it as typed
    }
    out[part.slice(0, eq).trim()] = value;
  }
  return out;
}

/** The run's join key from a page URL's fragment ('' if there is none). */
export function joinKey(hash) {
  return (fragmentSettings(hash).key || '').trim();
}

/** 'webrtc' when the fragment asks for a data channel (protocol=webrtc;), else ''. */
export function fragmentProtocol(hash) {
  return (fragmentSettings(hash).protocol || '').trim().toLowerCase() === 'webrtc' ? 'webrtc' : '';
}

/** The URL of the root's WebSocket endpoint, from the page's own address. */
export function volunteerURL(pageURL) {
  const url = new URL(pageURL);
  url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
  url.pathname = VOLUNTEER_PATH;
  url.search = '';
  url.hash = '';
  return url.toString();
}

function frame(type, body) {
  return JSON.stringify({ ...body, type });
}

/**
 * `key` is the run's join key, from the URL the root printed (#key=K;). In the
 * tree, `node` is this page's id and `relay` says it can take children.
 */
export function hello(name, workers, key, { role = 'volunteer', node = '', relay = false } = {}) {
  const count = Math.max(1, workers | 0);
  // raw: this volunteer honours the module frame's raw (older ones are refused by a --raw run).
  const body = { protocol: VERSION, name: String(name), workers: count, role, key: String(key), raw: true };
  if (node) body.node = node;
  if (relay) body.relay = true;
  return frame('hello', body);
}

/** Finished items; `want`: under an adaptive module, how many items to hold at once from now on. */
export function result(results, want = null) {
  return frame('result', want === null ? { results } : { results, want });
}

/** An item failed (id given), was lost (lost: true), or the volunteer cannot work (no id). */
export function error({ message, id = null, traceback = '', lost = false }) {
  const body = { message: String(message || 'error') };
  if (id !== null && id !== undefined) body.id = id;
  if (traceback) body.traceback = String(traceback);
  if (lost) body.lost = true;
  return frame('error', body);
}

/**
 * What the tab's workers did over the last `interval` seconds, all summed:
 * {items, cpu_time, data_transfer_time, units} (seconds for the times).
 */
export function report(interval, { items = 0, cpu_time = 0, data_transfer_time = 0, units = 0 } = {}) {
  // Finite and at most 2**53: the root refuses a frame with anything else.
  const count = (value) => (Number.isFinite(value) && value > 0 ? Math.min(value, 2 ** 53) : 0);
  return frame('report', {
    interval: count(interval),
    items: Math.round(count(items)),
    cpu_time: count(cpu_time),
    data_transfer_time: count(data_transfer_time),
    units: count(units),
  });
}

export function heartbeat() {
  return frame('heartbeat', {});
}

// -- what a relay sends: up to its parent, down to its children ---------------------

/** Up: this node's subtree (nodes, workers, free, depth, nearest or null, and rows with global monitoring). */
export function status({ nodes, workers, free, depth, nearest = null, devices = null, more = 0 }) {
  const body = { nodes, workers, free, depth };
  if (nearest !== null) body.nearest = nearest;
  if (devices !== null) {
    body.devices = devices;
    body.more = more;
  }
  return frame('status', body);
}

/** Up: the answer to a join (`sdp`), or why nobody here took it (`message`). */
export function answer(to, sdp, message = '') {
  return frame('answer', sdp ? { to, sdp } : { to, message: String(message || 'no answer') });
}

/** Down: the module, with the tree's fields for a child (`tree`: degree, node, depth, iceServers,
 * bootstrapTimeout, monitoring). */
export function module({
  id, filename, source, heartbeat: beat, batchSize, reportingInterval, timeout = null, tree = null, raw = false,
  bundle = '', nativeOnly = [], run = '', adaptive = false,
}) {
  const body = { id, filename, source, heartbeat: beat, batch_size: batchSize, reporting_interval: reportingInterval };
  if (timeout !== null) body.timeout = timeout;
  if (adaptive) body.adaptive = true;
  if (raw) body.raw = true;
  if (bundle) body.bundle = bundle;
  if (nativeOnly.length) body.native_only = nativeOnly;
  if (run) body.run = run;
  if (tree) {
    Object.assign(body, {
      degree: tree.degree,
      node: tree.node,
      depth: tree.depth,
      ice_servers: tree.iceServers,
      bootstrap_timeout: tree.bootstrapTimeout,
      monitoring: tree.monitoring,
    });
  }
  return frame('module', body);
}

export function lend(items) {
  return frame('lend', { items });
}

/** Down: a joiner's offer to take or pass on. */
export function join({ from, sdp, nodes, avoid, hops }) {
  return frame('join', { from, sdp, nodes, avoid, hops });
}

/** Down: everything lent to the child is void. */
export function reset() {
  return frame('reset', {});
}

export function bye(reason, message = '') {
  return frame('bye', message ? { reason, message } : { reason });
}

function isId(value) {
  return Number.isSafeInteger(value) && value >= 0;
}

function str(body, key, fallback) {
  const value = key in body ? body[key] : fallback;
  if (typeof value !== 'string') throw new ProtocolError(`malformed ${body.type} frame: '${key}' must be a string`);
  return value;
}

function int(body, key, minimum, maximum = MAX_INT) {
  const value = body[key];
  if (!Number.isSafeInteger(value) || value < minimum || value > maximum) {
    throw new ProtocolError(`malformed ${body.type} frame: '${key}' must be an integer from ${minimum} to ${maximum}`);
  }
  return value;
}

/** A finite number from `minimum` to 2**53 (a missing one takes `fallback`). */
function number(body, key, minimum = 0, fallback = undefined) {
  const value = key in body ? body[key] : fallback;
  if (typeof value !== 'number' || !Number.isFinite(value) || value < minimum || value > MAX_INT) {
    throw new ProtocolError(`malformed ${body.type} frame: '${key}' must be a number from ${minimum} to ${MAX_INT}`);
  }
  return value;
}

function bool(body, key) {
  const value = key in body ? body[key] : false;
  if (typeof value !== 'boolean') throw new ProtocolError(`malformed ${body.type} frame: '${key}' must be a boolean`);
  return value;
}

/** A non-empty string of at most `limit` characters. */
function bounded(body, key, limit = 512) {
  const value = body[key];
  if (typeof value !== 'string' || !value || value.length > limit) {
    throw new ProtocolError(`malformed ${body.type} frame: '${key}' must be a string of 1 to ${limit} characters`);
  }
  return value;
}

function matching(body, key, pattern, what) {
  const value = body[key];
  if (typeof value !== 'string' || !pattern.test(value)) {
    throw new ProtocolError(`malformed ${body.type} frame: '${key}' must be ${what}`);
  }
  return value;
}

const nodeId = (body, key) => matching(body, key, NODE_ID, 'a node id (16 hex digits)');
const joinerId = (body, key) => matching(body, key, JOINER_ID, 'a joiner id (32 hex digits)');

/** A result line: no line break, and well-formed Unicode (JSON escapes can carry a lone surrogate). */
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

function oneLine(text) {
  return !/[\n\r]/.test(text) && !LONE_SURROGATE.test(text);
}

function positive(body, key, fallback) {
  const value = key in body ? body[key] : fallback;
  if (typeof value !== 'number' || !Number.isFinite(value) || value <= 0) {
    throw new ProtocolError(`malformed ${body.type} frame: '${key}' must be a number > 0`);
  }
  return value;
}

/** An optional field of version 2: a number > 0, or null when absent or null. */
function optionalPositive(body, key) {
  if (body[key] === undefined || body[key] === null) return null;
  return positive(body, key);
}

/** How long the parent asks results to gather between frames (s), or null when it did not say. */
function spacing(body) {
  if (body.spacing === undefined || body.spacing === null) return null;
  const value = number(body, 'spacing');
  if (value > MAX_SPACING) {
    throw new ProtocolError(`malformed ${body.type} frame: 'spacing' must be a number of seconds from 0 to ${MAX_SPACING}`);
  }
  return value;
}

function pairs(body, key, lines = false) {
  const value = body[key];
  if (!Array.isArray(value)) throw new ProtocolError(`malformed ${body.type} frame: '${key}' must be a list`);
  for (const pair of value) {
    if (!Array.isArray(pair) || pair.length !== 2 || !isId(pair[0]) || typeof pair[1] !== 'string') {
      throw new ProtocolError(`malformed ${body.type} frame: '${key}' must hold [id, text] pairs`);
    }
    if (lines && !oneLine(pair[1])) {
      throw new ProtocolError(`malformed ${body.type} frame: a result must be one line of valid Unicode`);
    }
  }
  return value;
}

/** The ICE servers a relay answers joins with, checked as pando/protocol.py checks a join config. */
function iceServers(body) {
  const list = body.ice_servers === undefined ? [] : body.ice_servers;
  if (!Array.isArray(list) || list.length > MAX_ICE_SERVERS) {
    throw new ProtocolError(`malformed ${body.type} frame: 'ice_servers' must be a list of at most ${MAX_ICE_SERVERS}`);
  }
  return list.map((server) => {
    if (server === null || typeof server !== 'object' || Array.isArray(server)) {
      throw new ProtocolError(`malformed ${body.type} frame: an ICE server must be an object`);
    }
    const out = { urls: bounded({ ...server, type: body.type }, 'urls') };
    if (!/^(stun|turn|turns):/.test(out.urls)) {
      throw new ProtocolError(`malformed ${body.type} frame: an ICE server's urls must start with stun:, turn: or turns:`);
    }
    for (const key of ['username', 'credential']) {
      if (server[key] !== undefined && server[key] !== null) out[key] = bounded({ ...server, type: body.type }, key);
    }
    return out;
  });
}

function nativeOnly(body) {
  const value = body.native_only === undefined ? [] : body.native_only;
  if (!Array.isArray(value) || value.length > MAX_NATIVE_ONLY
      || !value.every((entry) => typeof entry === 'string' && entry.length > 0 && entry.length <= MAX_NAME)) {
    throw new ProtocolError(`malformed module frame: 'native_only' must be a list of at most ${MAX_NATIVE_ONLY} short texts`);
  }
  return value;
}

/** The tree's part of a module frame (absent without 'degree'). */
function parseTree(body) {
  if (!('degree' in body)) return null;
  const monitoring = 'monitoring' in body ? body.monitoring : 'local';
  if (monitoring !== 'local' && monitoring !== 'global') {
    throw new ProtocolError("malformed module frame: 'monitoring' must be local or global");
  }
  const bootstrap = number(body, 'bootstrap_timeout', 1, 60);
  if (bootstrap > 3600) throw new ProtocolError("malformed module frame: 'bootstrap_timeout' must be 1 to 3600 s");
  return {
    degree: int(body, 'degree', 0, 1000),
    node: nodeId(body, 'node'),
    depth: int(body, 'depth', 1, 1000),
    iceServers: iceServers(body),
    bootstrapTimeout: bootstrap,
    monitoring,
  };
}

function avoidList(body) {
  const value = body.avoid === undefined ? [] : body.avoid;
  if (!Array.isArray(value) || value.length > MAX_AVOID || !value.every((node) => typeof node === 'string' && NODE_ID.test(node))) {
    throw new ProtocolError(`malformed ${body.type} frame: 'avoid' must be a list of at most ${MAX_AVOID} node ids`);
  }
  return value;
}

/** One device row of a child's status (global monitoring). */
function deviceRow(row) {
  if (row === null || typeof row !== 'object' || Array.isArray(row)) {
    throw new ProtocolError('malformed status frame: a device row must be an object');
  }
  const checked = { ...row, type: 'status' };
  const parent = row.parent === undefined ? null : row.parent;
  if (parent !== null && (typeof parent !== 'string' || !NODE_ID.test(parent))) {
    throw new ProtocolError("malformed status frame: a device's 'parent' must be a node id or null");
  }
  return {
    id: nodeId(checked, 'id'),
    name: str(checked, 'name', '').slice(0, MAX_NAME),
    parent,
    depth: int(checked, 'depth', 1, 1000),
    items: int(checked, 'items', 0),
    workers: int(checked, 'workers', 0, MAX_WORKERS),
  };
}

function parseHello(body) {
  const version = int(body, 'protocol', 0);
  if (version !== VERSION) return { type: 'hello', protocol: version }; // the rest may not parse
  const role = str(body, 'role', 'volunteer');
  if (role !== 'volunteer' && role !== 'local') throw new ProtocolError('malformed hello frame: unknown role');
  const node = body.node === undefined || body.node === '' ? '' : nodeId(body, 'node');
  return {
    type: 'hello',
    protocol: version,
    name: str(body, 'name', '').slice(0, MAX_NAME),
    workers: int(body, 'workers', 1, MAX_WORKERS),
    key: str(body, 'key', ''),
    role,
    node,
    relay: bool(body, 'relay'),
    raw: bool(body, 'raw'),
  };
}

function parseStatus(body) {
  let devices = null;
  if (body.devices !== undefined && body.devices !== null) {
    if (!Array.isArray(body.devices) || body.devices.length > MAX_DEVICES) {
      throw new ProtocolError(`malformed status frame: 'devices' must be a list of at most ${MAX_DEVICES} rows`);
    }
    devices = body.devices.map(deviceRow);
  }
  return {
    type: 'status',
    nodes: int(body, 'nodes', 1),
    workers: int(body, 'workers', 0),
    free: int(body, 'free', 0),
    depth: int(body, 'depth', 0, 1000),
    nearest: body.nearest === undefined || body.nearest === null ? null : int(body, 'nearest', 0, 1000),
    devices,
    more: 'more' in body ? int(body, 'more', 0) : 0,
  };
}

function parseError(body) {
  if (body.id !== undefined && body.id !== null && !isId(body.id)) {
    throw new ProtocolError("malformed error frame: 'id' must be an item id");
  }
  return {
    type: 'error',
    id: body.id === undefined ? null : body.id,
    message: str(body, 'message'),
    traceback: str(body, 'traceback', ''),
    lost: bool(body, 'lost'),
  };
}

const PARSERS = {
  module: (body) => ({
    type: 'module',
    id: str(body, 'id'),
    filename: str(body, 'filename'),
    source: str(body, 'source'),
    heartbeat: int(body, 'heartbeat', 1),
    batchSize: int(body, 'batch_size', 1),
    reportingInterval: positive(body, 'reporting_interval', DEFAULT_REPORTING_INTERVAL),
    timeout: optionalPositive(body, 'timeout'), // seconds an item may run on one worker; null: no limit
    raw: bool(body, 'raw'), // the function gets each item's text as it is (--raw)
    tree: parseTree(body), // what a relay needs to take children, in a tree; else null
    bundle: str(body, 'bundle', ''), // the module's files (base64 zip, pando/bundle.py); '' for none
    nativeOnly: nativeOnly(body), // packages a browser cannot have, each with why: browsers refuse the module
    run: body.run === undefined || body.run === '' ? '' : matching(body, 'run', RUN_ID, 'a run id (16 hex digits)'),
    adaptive: bool(body, 'adaptive'), // hold what we ask for (`want`), and lend children the same way
  }),
  lend: (body) => ({ type: 'lend', items: pairs(body, 'items'), spacing: spacing(body) }),
  heartbeat: () => ({ type: 'heartbeat' }),
  bye: (body) => ({ type: 'bye', reason: str(body, 'reason'), message: str(body, 'message', '') }),
  join: (body) => ({
    type: 'join',
    from: joinerId(body, 'from'),
    sdp: bounded(body, 'sdp', MAX_SDP),
    nodes: int(body, 'nodes', 1),
    avoid: avoidList(body),
    hops: int(body, 'hops', 1, 1000),
  }),
  reset: () => ({ type: 'reset' }),
  // From a child:
  hello: parseHello,
  result: (body) => ({ type: 'result', results: pairs(body, 'results', true), want: 'want' in body ? int(body, 'want', 1) : null }),
  error: parseError,
  report: (body) => ({
    type: 'report',
    interval: number(body, 'interval', 0.001),
    items: int(body, 'items', 0),
    cpu_time: number(body, 'cpu_time'),
    data_transfer_time: number(body, 'data_transfer_time', 0, 0),
    units: number(body, 'units', 0, body.items),
  }),
  status: parseStatus,
  answer: (body) => {
    const to = joinerId(body, 'to');
    if ('sdp' in body) return { type: 'answer', to, sdp: bounded(body, 'sdp', MAX_SDP), message: '' };
    return { type: 'answer', to, sdp: '', message: str(body, 'message').slice(0, 300) || 'no answer' };
  },
};

/** Parse and check one frame from the parent (or, with FROM_CHILD, from a child); throw ProtocolError if it is not valid. */
export function decode(data, allowed = FROM_ROOT) {
  if (typeof data !== 'string') throw new ProtocolError('binary frame; the protocol uses text frames');
  let body;
  try {
    body = JSON.parse(data);
  } catch (err) {
    throw new ProtocolError(`not JSON: ${err.message}`);
  }
  if (body === null || typeof body !== 'object' || Array.isArray(body)) {
    throw new ProtocolError('a frame must be a JSON object');
  }
  if (!allowed.includes(body.type) || !(body.type in PARSERS)) {
    throw new ProtocolError(`unexpected frame type ${JSON.stringify(body.type)}`);
  }
  return PARSERS[body.type](body);
}

/**
 * Split [id, text] pairs into groups of at most `limit` characters of text,
 * so that every frame stays under MAX_FRAME_BYTES once JSON-encoded (a
 * character takes at most six bytes there).
 */
export function pack(list, limit = MAX_FRAME_BYTES / 8) {
  const groups = [[]];
  let size = 0;
  for (const pair of list) {
    if (groups[groups.length - 1].length && size + pair[1].length > limit) {
      groups.push([]);
      size = 0;
    }
    groups[groups.length - 1].push(pair);
    size += pair[1].length + 16;
  }
  return groups;
}

/**
 * How the run ended, from the monitoring feed's last status (its `outcome`
 * field, docs/monitoring.md): {status, failure} (failure: text, or '' when the
 * run succeeded), or null when the status has none or it is malformed.
 */
export function runOutcome(status) {
  const outcome = status && typeof status === 'object' ? status.outcome : null;
  if (!outcome || typeof outcome !== 'object' || !Number.isInteger(outcome.status) || outcome.status < 0) return null;
  const failure = typeof outcome.failure === 'string' ? outcome.failure.slice(0, MAX_FAILURE) : '';
  return { status: outcome.status, failure };
}

// -- adaptive batching: what a volunteer asks to hold (the rules of pando/pace.py) ------------------

/** Longest an answer waits for others to share its message at a worker; the shortest wait for the page's frame (s). */
export const FLUSH_SECONDS = 0.005;
/** Results a frame should carry: a frame costs the parent far more than a result in it. */
export const RESULTS_PER_FRAME = 4;
/** Longest a result waits at the page for others to share its frame (s). */
export const MAX_WINDOW = 0.25;
/** Longest time a parent may ask between result frames (`spacing` in lend frames), in seconds. */
export const MAX_SPACING = 1.0;
/** Items a session holds per worker before its volunteer has said what it wants. */
export const START_PER_WORKER = 2;
/** Most items per worker a volunteer may ask to hold. */
export const MAX_PER_WORKER = 10_000;
const GAIN = 2; // the wait to cover, as a multiple of the measured one
const REFILLS = 16; // refill waits kept; their median is the estimate
const SMOOTHING = 0.2; // how much of each new measure of an item's time goes into the estimate
const RATE_WINDOW = 0.25; // shortest window (s) over which the children's rate is measured
const CHANGE = 0.125; // a want is sent up again only once it changed by more than this fraction

/** Items a worker should hold: the one it computes, and those it computes while a refill comes. */
export function perWorker(refill, item, window = FLUSH_SECONDS) {
  return Math.min(MAX_PER_WORKER, 1 + Math.ceil(waitToCover(refill, window) / Math.max(item, 1e-9)));
}

/**
 * From a result to the refill it brings: it waits at the worker and at the page, then the refill comes
 * back. Covered twice (jitter), except the part of the page's `window` beyond the shortest, which is
 * known and covered once: more held is more left over at a run's end (pace.py's _wait_to_cover).
 */
function waitToCover(refill, window) {
  return GAIN * (refill + 2 * FLUSH_SECONDS) + (window - FLUSH_SECONDS);
}

/** How long a volunteer answering `rate` results a second lets a result wait for others (s). */
export function resultWindow(rate) {
  return rate > 0 ? Math.min(MAX_WINDOW, Math.max(FLUSH_SECONDS, RESULTS_PER_FRAME / rate)) : FLUSH_SECONDS;
}

function median(values) {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = sorted.length >> 1;
  return sorted.length % 2 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2;
}

/**
 * One volunteer's measures and what it asks its parent for: enough items to keep every worker busy
 * while a refill comes (from a result frame sent to the lend frame that answers it); a relay adds what
 * its children asked for, and what they use up while its own refill comes. Times in seconds.
 */
export class Pace {
  constructor(workers, clock = () => performance.now() / 1000) {
    this.workers = workers;
    this.clock = clock;
    this.refills = [];
    this.sentAt = null; // a result frame whose refill has not come yet
    this.item = null; // seconds an item takes on one of the page's workers
    this.relayedCount = 0; // the children's results since the measure began
    this.since = clock();
    this.rate = 0; // the children's results per second
    this.told = null; // the last want sent up
    this.spacing = 0; // what the parent asked for
  }

  /** A measure of the link: the hello → module round trip, before any refill was seen. */
  roundTrip(seconds) {
    this.addRefill(seconds);
  }

  addRefill(seconds) {
    this.refills.push(seconds);
    if (this.refills.length > REFILLS) this.refills.shift();
  }

  /** A result frame went up; the next lend frame is its refill. */
  sent() {
    if (this.sentAt === null) this.sentAt = this.clock();
  }

  /** A lend frame came, with the parent's new `spacing` if it said one (null if not). */
  lent(spacing = null) {
    if (spacing !== null) this.spacing = spacing;
    if (this.sentAt === null) return;
    this.addRefill(this.clock() - this.sentAt);
    this.sentAt = null;
  }

  /** The page's workers computed `count` items in `seconds` of their time. */
  computed(count, seconds) {
    if (count <= 0) return;
    const sample = seconds / count;
    this.item = this.item === null ? sample : this.item + SMOOTHING * (sample - this.item);
  }

  /** Children answered `count` items. */
  relayed(count) {
    this.relayedCount += count;
  }

  /** What the page's own workers should hold; null before any of their items was timed. */
  own() {
    if (this.item === null || !this.refills.length) return null;
    return this.workers * perWorker(median(this.refills), this.item, this.window());
  }

  /**
   * How long a result may wait here for others to share its frame, in seconds: resultWindow of the
   * rate, or the parent's spacing if longer.
   */
  window() {
    const own = this.item === null ? 0 : this.workers / Math.max(this.item, 1e-9);
    return Math.max(resultWindow(own + this.rate), this.spacing);
  }

  /**
   * What to ask the parent for, `children` items being asked for by the children; null while there is
   * nothing to say (no item timed, or no change worth a word since the last time).
   */
  want(children) {
    const now = this.clock();
    if (now - this.since >= RATE_WINDOW) {
      this.rate = (this.rate + this.relayedCount / (now - this.since)) / 2;
      this.relayedCount = 0;
      this.since = now;
    }
    const own = this.own();
    if (own === null && !children) return null;
    const refill = this.refills.length ? median(this.refills) : 0;
    const buffer = Math.ceil(this.rate * waitToCover(refill, this.window()));
    const want = (own === null ? this.workers * START_PER_WORKER : own) + children + buffer;
    if (this.told !== null && Math.abs(want - this.told) <= CHANGE * this.told) return null;
    this.told = want;
    return want;
  }

  /** A new parent: what it was told, what it asked (spacing) and a refill under way no longer count. */
  reset() {
    this.told = null;
    this.sentAt = null;
    this.spacing = 0;
  }
}
