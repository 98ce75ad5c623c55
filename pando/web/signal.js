// Reaching the root beyond the LAN: which transport a page uses, and joining
// over a WebRTC data channel through a rendezvous (docs/protocol.md, "Beyond
// the LAN: rendezvous and data channels").
//
//   const { transport, root } = await chooseTransport(location.href, fragment.protocol);
//   const link = await join(location.href, { clock, abort, progress });   // a ChannelLink
//
// The rendezvous (a pando-server, or the root itself on a LAN) relays one
// offer and one answer; it never sees a frame of the session, nor the join
// key, which goes in the hello over the channel. Every failure is a JoinError
// whose `reason` tells the volunteer what to do (`no-root`: no job there yet)
// and whose message may hold text from the peer: the page shows it as text.

import { pageClock } from './clock.js';
import { ChannelLink } from './link.js';

// Relative to the page, which a pando-server behind a proxy may serve under a path (https://example.org/pando/).
export const CONFIG_PATH = 'rendezvous/config';
export const SIGNAL_PATH = 'rendezvous/signal';

/** Largest rendezvous frame, in UTF-8 bytes. */
export const MAX_RENDEZVOUS_BYTES = 64 * 1024;

const CONFIG_MS = 5000; // for GET /rendezvous/config
const WELCOME_MS = 10_000; // for the signal socket to open and say welcome
const GATHER_MS = 2000; // ICE gathering, at most (there is no trickle: the offer carries the candidates)
const MAX_ICE_SERVERS = 32;
const MAX_PEER_TEXT = 500; // longest message from the rendezvous or the root repeated on the page
const SIGNAL_CLOSE = 4008; // closing a signal socket over a bad frame (a page may not use 1008)

/** Why a join failed. `reason`: a bye's reason (no-root, busy, limit, timeout, refused), or
 * unreachable, reject, bad-frame, failed, unsupported (no WebRTC here), stopped. */
export class JoinError extends Error {
  constructor(reason, message) {
    super(message);
    this.name = 'JoinError';
    this.reason = reason;
  }
}

function peerText(value) {
  const text = String(value || '').replace(/\s+/g, ' ').trim();
  return text.length > MAX_PEER_TEXT ? `${text.slice(0, MAX_PEER_TEXT)}…` : text;
}

/** The rendezvous's signal socket beside the page, as a ws(s): URL. */
export function signalURL(pageURL) {
  const url = new URL(SIGNAL_PATH, pageURL);
  url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
  return url.toString();
}

/**
 * Which transport to use: 'webrtc' when the page's host says so in
 * GET /rendezvous/config or the fragment says protocol=webrtc; 'websocket'
 * otherwise, also when the host does not answer (an older root).
 * `root` is false only when a pando-server says no root is connected now.
 */
export async function chooseTransport(pageURL, fragmentProtocol = '') {
  let config = null;
  try {
    const url = new URL(CONFIG_PATH, pageURL);
    const response = await fetch(url, { cache: 'no-store', signal: AbortSignal.timeout(CONFIG_MS) });
    if (response.ok) config = await response.json();
  } catch {
    config = null;
  }
  if (config === null || typeof config !== 'object' || Array.isArray(config)) config = {};
  const webrtc = String(fragmentProtocol).trim().toLowerCase() === 'webrtc' || config.transport === 'webrtc';
  return {
    transport: webrtc ? 'webrtc' : 'websocket',
    service: typeof config.service === 'string' ? config.service : null,
    root: config.root !== false,
  };
}

// -- rendezvous frames, checked as strictly as the session's -----------------------

function bad(what) {
  return new JoinError('bad-frame', `the rendezvous sent a malformed frame (${what})`);
}

function iceServers(list) {
  if (!Array.isArray(list) || list.length > MAX_ICE_SERVERS) throw bad("'ice_servers' must be a list");
  return list.map((server) => {
    if (server === null || typeof server !== 'object' || Array.isArray(server)) throw bad('an ICE server must be an object');
    const { urls, username, credential } = server;
    const urlsOk = typeof urls === 'string' || (Array.isArray(urls) && urls.length && urls.every((u) => typeof u === 'string'));
    if (!urlsOk) throw bad("an ICE server's 'urls' must be a string");
    const out = { urls };
    if (username !== undefined) {
      if (typeof username !== 'string') throw bad("an ICE server's 'username' must be a string");
      out.username = username;
    }
    if (credential !== undefined) {
      if (typeof credential !== 'string') throw bad("an ICE server's 'credential' must be a string");
      out.credential = credential;
    }
    return out;
  });
}

/** One rendezvous frame from its text: {type: 'welcome', id, iceServers, bootstrapMs} | {type: 'answer', sdp}
 * | {type: 'reject', message} | {type: 'bye', reason, message}. Throws a JoinError if it is not valid. */
export function decodeRendezvous(data) {
  if (typeof data !== 'string') throw bad('a binary message');
  if (data.length > MAX_RENDEZVOUS_BYTES || new TextEncoder().encode(data).length > MAX_RENDEZVOUS_BYTES) {
    throw bad(`over ${MAX_RENDEZVOUS_BYTES} bytes`);
  }
  let body;
  try {
    body = JSON.parse(data);
  } catch {
    throw bad('not JSON');
  }
  if (body === null || typeof body !== 'object' || Array.isArray(body)) throw bad('not a JSON object');
  const string = (key, optional = false) => {
    if (optional && body[key] === undefined) return '';
    if (typeof body[key] !== 'string') throw bad(`'${key}' must be a string`);
    return body[key];
  };
  switch (body.type) {
    case 'welcome': {
      const id = string('id');
      if (!/^[0-9a-f]{32}$/.test(id)) throw bad("'id' must be 32 hex digits");
      const { config } = body;
      if (config === null || typeof config !== 'object' || Array.isArray(config)) throw bad("'config' must be an object");
      const seconds = config.bootstrap_timeout;
      if (typeof seconds !== 'number' || !Number.isFinite(seconds) || seconds <= 0) {
        throw bad("'bootstrap_timeout' must be a number > 0");
      }
      return { type: 'welcome', id, iceServers: iceServers(config.ice_servers), bootstrapMs: seconds * 1000 };
    }
    case 'signal': {
      const kind = string('kind');
      if (kind === 'answer') return { type: 'answer', sdp: string('sdp') };
      if (kind === 'reject') return { type: 'reject', message: string('message', true) };
      throw bad(`a signal of kind ${JSON.stringify(kind).slice(0, 40)}`);
    }
    case 'bye':
      return { type: 'bye', reason: string('reason'), message: string('message', true) };
    default:
      throw bad(`unexpected type ${JSON.stringify(body.type === undefined ? null : body.type).slice(0, 40)}`);
  }
}

// -- joining -------------------------------------------------------------------------

/**
 * Resolves when `pc`'s ICE gathering is complete, or after GATHER_MS: there is
 * no trickle, so an offer (or a relay's answer) carries its candidates.
 */
export function gathered(pc, clock = pageClock()) {
  return new Promise((resolve) => {
    if (pc.iceGatheringState === 'complete') {
      resolve();
      return;
    }
    let timer = null;
    const done = () => {
      pc.removeEventListener('icegatheringstatechange', check);
      clock.cancel(timer);
      resolve();
    };
    const check = () => {
      if (pc.iceGatheringState === 'complete') done();
    };
    pc.addEventListener('icegatheringstatechange', check);
    timer = clock.after(GATHER_MS, done);
  });
}

const BYE_TEXT = {
  'no-root': 'no job here yet: no root is connected to this server',
  busy: 'the server is busy',
  limit: 'the server has too many joiners right now',
  timeout: 'the rendezvous timed out',
  refused: 'the rendezvous refused this page',
};

/**
 * One attempt to open a data channel to the root through the rendezvous of
 * the page's host. Resolves with an open ChannelLink; rejects with a
 * JoinError. The whole join, from the signal socket's opening, takes at most
 * the rendezvous's bootstrap timeout; `abort` (an AbortSignal) gives up at
 * once; `progress(text)` hears each step, for the page. A relay joining again
 * with its subtree says how many `nodes` it brings and which node ids to
 * `avoid` (its dead parent's): the offer carries them, and the tree places it.
 */
export function join(pageURL, { clock = pageClock(), abort = null, progress = () => {}, nodes = 1, avoid = [] } = {}) {
  return new Join(pageURL, clock, abort, progress, { nodes, avoid }).promise;
}

class Join {
  constructor(pageURL, clock, abort, progress, { nodes = 1, avoid = [] } = {}) {
    this.clock = clock;
    this.abort = abort;
    this.progress = progress;
    this.nodes = nodes;
    this.avoid = avoid;
    this.ws = null;
    this.pc = null;
    this.channel = null;
    this.timer = null;
    this.settled = false;
    this.phase = 'welcome'; // welcome → offer → answer → open
    this.bootstrapMs = WELCOME_MS;
    this.onAbort = () => this.fail(new JoinError('stopped', 'stopped'));
    this.promise = new Promise((resolve, reject) => {
      this.resolve = resolve;
      this.reject = reject;
    });
    if (abort && abort.aborted) {
      this.onAbort();
      return;
    }
    if (abort) abort.addEventListener('abort', this.onAbort, { once: true });
    this.start(signalURL(pageURL));
  }

  start(url) {
    this.progress('Asking the rendezvous for the way in…');
    this.openedAt = performance.now();
    this.deadline(WELCOME_MS, `the rendezvous at ${new URL(url).host} did not answer within ${WELCOME_MS / 1000} s`);
    try {
      this.ws = new WebSocket(url);
    } catch (err) {
      this.fail(new JoinError('unreachable', `cannot open a WebSocket to ${url}: ${err && err.message ? err.message : err}`));
      return;
    }
    this.ws.onmessage = (event) => {
      this.frame(event.data).catch((err) => this.fail(err));
    };
    this.ws.onclose = (event) => {
      if (this.phase === 'open') return; // the answer is in: the signal socket is no longer needed
      const why = event.reason ? `: ${peerText(event.reason)}` : event.code && event.code !== 1006 ? ` (code ${event.code})` : '';
      this.fail(new JoinError('unreachable', this.phase === 'welcome' ? `cannot reach the rendezvous${why}` : `the rendezvous closed the connection${why}`));
    };
  }

  deadline(ms, message) {
    if (this.timer !== null) this.clock.cancel(this.timer);
    this.timer = this.clock.after(Math.max(1, ms), () => {
      this.timer = null;
      this.fail(new JoinError('timeout', message));
    });
  }

  async frame(data) {
    if (this.settled) return;
    const frame = decodeRendezvous(data);
    if (frame.type === 'bye') {
      const text = peerText(frame.message) || BYE_TEXT[frame.reason] || `the rendezvous said bye (${peerText(frame.reason)})`;
      throw new JoinError(frame.reason, text);
    }
    if (frame.type === 'welcome' && this.phase === 'welcome') {
      this.phase = 'offer';
      await this.offer(frame);
    } else if (frame.type === 'answer' && this.phase === 'answer') {
      this.phase = 'open';
      this.progress('Opening the data channel…');
      await this.pc.setRemoteDescription({ type: 'answer', sdp: frame.sdp });
    } else if (frame.type === 'reject' && this.phase === 'answer') {
      throw new JoinError('reject', `the root turned this page away${frame.message ? `: ${peerText(frame.message)}` : ''}`);
    } else {
      throw bad(`a ${frame.type} frame out of turn`);
    }
  }

  async offer(welcome) {
    // The whole join is bounded by the bootstrap timeout, counted from the socket's opening.
    this.bootstrapMs = welcome.bootstrapMs;
    const left = welcome.bootstrapMs - (performance.now() - this.openedAt);
    this.deadline(left, `the data channel did not open within ${Math.round(welcome.bootstrapMs / 100) / 10} s`);
    if (typeof RTCPeerConnection === 'undefined') {
      throw new JoinError('unsupported', 'this browser cannot use WebRTC (it has no RTCPeerConnection)');
    }
    try {
      this.pc = new RTCPeerConnection({ iceServers: welcome.iceServers });
    } catch (err) {
      throw new JoinError('failed', `the rendezvous's ICE servers cannot be used: ${peerText(err && err.message ? err.message : err)}`);
    }
    this.pc.addEventListener('connectionstatechange', () => {
      if (this.pc && this.pc.connectionState === 'failed') {
        this.fail(new JoinError('failed', 'no network path to the root was found (ICE failed); a TURN server may be needed'));
      }
    });
    this.channel = this.pc.createDataChannel('pando', { ordered: true });
    this.channel.onopen = () => this.opened();
    this.channel.onclose = () => this.fail(new JoinError('failed', 'the data channel closed before it opened'));
    this.progress('Gathering network addresses…');
    await this.pc.setLocalDescription(await this.pc.createOffer());
    await this.gathered();
    if (this.settled) return;
    this.phase = 'answer';
    this.progress('Waiting for the root to answer…');
    const offer = { type: 'signal', kind: 'offer', sdp: this.pc.localDescription.sdp };
    if (this.nodes > 1) offer.nodes = this.nodes;
    if (this.avoid.length) offer.avoid = this.avoid;
    this.ws.send(JSON.stringify(offer));
  }

  gathered() {
    return gathered(this.pc, this.clock);
  }

  opened() {
    if (this.settled) return;
    const link = new ChannelLink(this.pc, this.channel, { clock: this.clock, silenceMs: this.bootstrapMs });
    this.pc = null; // the link owns them now
    this.channel = null;
    this.settle();
    this.resolve(link);
  }

  fail(err) {
    if (this.settled) return;
    if (this.ws && err.reason === 'bad-frame') {
      try {
        this.ws.close(SIGNAL_CLOSE, 'bad frame');
      } catch {
        // already closing
      }
    }
    if (this.channel) {
      this.channel.onopen = null;
      this.channel.onclose = null;
    }
    if (this.pc) this.pc.close();
    this.pc = null;
    this.settle();
    this.reject(err instanceof JoinError ? err : new JoinError('failed', `joining failed: ${err && err.message ? err.message : err}`));
  }

  settle() {
    this.settled = true;
    if (this.timer !== null) this.clock.cancel(this.timer);
    this.timer = null;
    if (this.abort) this.abort.removeEventListener('abort', this.onAbort);
    if (this.ws) {
      this.ws.onmessage = null;
      this.ws.onclose = null;
      try {
        this.ws.close(1000, 'done');
      } catch {
        // already closing
      }
    }
  }
}
