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

/** Frame types a volunteer may receive. */
export const FROM_ROOT = Object.freeze(['module', 'lend', 'heartbeat', 'bye']);

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

/** `key` is the run's join key, from the URL the root printed (#key=K;). */
export function hello(name, workers, key, role = 'volunteer') {
  const count = Math.max(1, workers | 0);
  return frame('hello', { protocol: VERSION, name: String(name), workers: count, role, key: String(key) });
}

export function result(results) {
  return frame('result', { results });
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

function isId(value) {
  return Number.isSafeInteger(value) && value >= 0;
}

function str(body, key, fallback) {
  const value = key in body ? body[key] : fallback;
  if (typeof value !== 'string') throw new ProtocolError(`malformed ${body.type} frame: '${key}' must be a string`);
  return value;
}

function int(body, key, minimum) {
  const value = body[key];
  if (!Number.isSafeInteger(value) || value < minimum) {
    throw new ProtocolError(`malformed ${body.type} frame: '${key}' must be an integer >= ${minimum}`);
  }
  return value;
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

function pairs(body, key) {
  const value = body[key];
  if (!Array.isArray(value)) throw new ProtocolError(`malformed ${body.type} frame: '${key}' must be a list`);
  for (const pair of value) {
    if (!Array.isArray(pair) || pair.length !== 2 || !isId(pair[0]) || typeof pair[1] !== 'string') {
      throw new ProtocolError(`malformed ${body.type} frame: '${key}' must hold [id, text] pairs`);
    }
  }
  return value;
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
  }),
  lend: (body) => ({ type: 'lend', items: pairs(body, 'items') }),
  heartbeat: () => ({ type: 'heartbeat' }),
  bye: (body) => ({ type: 'bye', reason: str(body, 'reason'), message: str(body, 'message', '') }),
};

/** Parse and check one frame from the root; throw ProtocolError if it is not valid. */
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
