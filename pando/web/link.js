// A link to the root: what the volunteer sends its frames over and hears them
// from, whatever carries them. Two kinds:
//
//   WebSocketLink  a WebSocket to the root's /volunteer (on a LAN, as before);
//   ChannelLink    a WebRTC data channel, opened through a rendezvous (signal.js).
//
// Both offer the same small interface:
//
//   link.transport          'WebSocket' or 'WebRTC', for the page to show
//   link.isOpen             frames can be sent now
//   link.send(text)         send one frame (a JSON text); false if the link is not open
//   link.onmessage = (text) => …   one frame received, as text
//   link.onclose = (reason) => …   the link ended without close() being called: the peer
//                                  closed it, the network failed, or it was silent too long;
//                                  called at most once, and never after close()
//   link.watch(ms)          end the link (onclose) once nothing was heard for `ms` (null: never)
//   link.close(code, reason)  end it ourselves (frames already sent still go out)
//
// A relay (tree.js) also holds a ChannelLink to each of its children: their
// messages then name the peer as `peer` says ('a child' rather than 'the root').
//
// The frames themselves (docs/protocol.md) are the same over both; only the
// data channel needs framing of its own, described with ChannelLink below.

import { MAX_FRAME_BYTES } from './protocol.js';
import { pageClock } from './clock.js';

/** A frame whose UTF-8 is longer than this goes over a data channel as binary chunks of at most this. */
export const CHUNK_BYTES = 60 * 1024;

/** Above this many bytes buffered in a data channel, frames wait in the page… */
export const HIGH_WATER_BYTES = 4 * 1024 * 1024;

/** …until the channel's buffer falls to this (its bufferedamountlow event). */
export const LOW_WATER_BYTES = 1024 * 1024;

/** A data channel closing by choice may send what it holds as long as that moves; it is hung up
 * once nothing went out for LINGER_MS (SCTP's retransmissions back off from 1 s: two losses in a
 * row stall a healthy channel for 3 s), and after MAX_LINGER_MS in all, as rtc.py's STALL_SECONDS
 * and DRAIN_SECONDS do for a native end. */
const LINGER_MS = 5000;
const MAX_LINGER_MS = 60_000;

/** The longest peer-supplied text (a close reason) a link repeats. */
const MAX_REASON = 200;

const ENCODER = new TextEncoder();

function clip(text) {
  const value = String(text || '');
  return value.length > MAX_REASON ? `${value.slice(0, MAX_REASON)}…` : value;
}

/** What both kinds of link share: the callbacks, the silence watchdog, closing once. */
class Link {
  constructor(transport, { clock = pageClock(), silenceMs = null, peer = 'the root' } = {}) {
    this.transport = transport;
    this.clock = clock;
    this.peer = peer; // who is at the other end, for the messages
    this.onmessage = () => {};
    this.onclose = () => {};
    this.ended = false; // close() was called or onclose fired
    this.lastHeard = performance.now();
    this.silenceMs = null;
    this.watchdog = null;
    this.watch(silenceMs);
  }

  get isOpen() {
    return false;
  }

  /** End the link once nothing has been heard from the peer for `ms` (null or 0: no limit). */
  watch(ms) {
    if (this.watchdog !== null) this.clock.cancel(this.watchdog);
    this.watchdog = null;
    this.silenceMs = ms || null;
    if (!this.silenceMs || this.ended) return;
    const step = Math.max(20, Math.min(1000, this.silenceMs / 4));
    this.watchdog = this.clock.every(step, () => {
      const quiet = performance.now() - this.lastHeard;
      if (quiet > this.silenceMs) this.fail(`${this.peer} went silent (nothing heard for ${(quiet / 1000).toFixed(1)} s)`);
    });
  }

  /** Something came from the peer: it is alive. */
  heard() {
    this.lastHeard = performance.now();
  }

  deliver(text) {
    this.heard();
    if (!this.ended) this.onmessage(text);
  }

  /** The link is over, not by our choice: tear it down and say why (once). */
  fail(reason) {
    if (this.ended) return;
    this.ended = true;
    this.watch(null);
    this.teardown(4000, reason, true);
    this.onclose(reason);
  }

  /** End the link ourselves; onclose is not called. */
  close(code = 1000, reason = '') {
    if (this.ended) return;
    this.ended = true;
    this.watch(null);
    this.teardown(code, reason, false);
  }

  /** Close the transport: at once when `failing`, else letting what was sent go out. */
  // eslint-disable-next-line class-methods-use-this, no-unused-vars
  teardown(code, reason, failing) {}
}

// -- over a WebSocket ----------------------------------------------------------

/** A code a page may close a WebSocket with (1000 or 3000-4999): 1008 becomes 4008. */
function pageCloseCode(code) {
  return code === 1000 || (code >= 3000 && code <= 4999) ? code : 4000 + (code % 1000);
}

function closeReason(reason) {
  // At most 123 bytes of UTF-8 in a close frame.
  let text = String(reason || '');
  while (ENCODER.encode(text).length > 123) text = text.slice(0, -1);
  return text;
}

/** Why a WebSocket closed, as its peer said ('' when it said nothing). */
function whyClosed(event) {
  if (event.reason) return clip(event.reason);
  return event.code && event.code !== 1006 ? `code ${event.code}` : '';
}

export class WebSocketLink extends Link {
  /**
   * Open a WebSocket to `url`; resolves with the link once it is open, or
   * rejects with an Error saying why not. `abort` (an AbortSignal) gives up.
   */
  static open(url, { clock = pageClock(), abort = null } = {}) {
    return new Promise((resolve, reject) => {
      let ws;
      try {
        ws = new WebSocket(url);
      } catch (err) {
        reject(new Error(`cannot open a WebSocket to ${url}: ${err && err.message ? err.message : err}`));
        return;
      }
      const onAbort = () => {
        ws.onopen = null;
        ws.onclose = null;
        ws.close(1000, 'stopped');
        reject(new Error('stopped'));
      };
      if (abort) {
        if (abort.aborted) {
          onAbort();
          return;
        }
        abort.addEventListener('abort', onAbort, { once: true });
      }
      ws.onopen = () => {
        if (abort) abort.removeEventListener('abort', onAbort);
        resolve(new WebSocketLink(ws, { clock }));
      };
      ws.onclose = (event) => {
        if (abort) abort.removeEventListener('abort', onAbort);
        const why = whyClosed(event);
        reject(new Error(`cannot reach the root${why ? `: ${why}` : ''}`));
      };
    });
  }

  constructor(ws, options) {
    super('WebSocket', options);
    this.ws = ws;
    // A binary frame is handed on as it is: the volunteer's decoding refuses it.
    ws.onmessage = (event) => this.deliver(event.data);
    ws.onclose = (event) => this.fail(whyClosed(event));
  }

  get isOpen() {
    return !this.ended && this.ws.readyState === WebSocket.OPEN;
  }

  send(text) {
    if (!this.isOpen) return false;
    this.ws.send(text);
    return true;
  }

  teardown(code, reason) {
    try {
      // A WebSocket sends what it holds before its close frame, even when failing.
      this.ws.close(pageCloseCode(code), closeReason(reason));
    } catch {
      // already closing
    }
  }
}

// -- over a WebRTC data channel ---------------------------------------------------

/**
 * A link over an open RTCDataChannel (`channel`, of the connection `pc`).
 *
 * Framing (docs/protocol.md, "Data channel framing"):
 * - a text message is one frame;
 * - a frame over CHUNK_BYTES of UTF-8 goes as binary messages, each a flag
 *   byte (1: more follows, 0: last) and at most CHUNK_BYTES of the frame's
 *   UTF-8; the receiver joins them and closes the link beyond `maxBytes`;
 * - above HIGH_WATER_BYTES buffered in the channel, frames wait in a queue
 *   here until the channel's buffer falls to LOW_WATER_BYTES (Chromium closes
 *   a channel whose own send queue overflows);
 * - a killed peer may show as open for half a minute, so the owner sets a
 *   silence limit with watch() (2 × the heartbeat once it is known; until then
 *   `silenceMs`, the rendezvous's bootstrap timeout).
 */
export class ChannelLink extends Link {
  constructor(pc, channel, { clock = pageClock(), silenceMs = null, maxBytes = MAX_FRAME_BYTES, peer = 'the root' } = {}) {
    super('WebRTC', { clock, silenceMs, peer });
    this.pc = pc;
    this.channel = channel;
    this.maxBytes = maxBytes;
    this.queue = []; // messages (text, or a chunk's bytes) waiting for room in the channel
    this.parts = []; // chunks of the frame being received
    this.partBytes = 0;
    this.linger = null;
    this.closingChannel = false; // close() was called on the channel: it closes once its buffer is sent
    this.decoder = new TextDecoder('utf-8', { fatal: true });
    channel.binaryType = 'arraybuffer';
    channel.bufferedAmountLowThreshold = LOW_WATER_BYTES;
    channel.onmessage = (event) => this.received(event.data);
    channel.onbufferedamountlow = () => this.drain();
    channel.onerror = (event) => {
      const error = event.error && event.error.message ? `: ${clip(event.error.message)}` : '';
      this.fail(`the data channel failed${error}`);
    };
    channel.onclose = () => {
      this.fail('the data channel was closed');
      this.hangUp();
    };
    this.onStateChange = () => {
      const state = pc.connectionState;
      if (state === 'failed' || state === 'closed') this.fail(`the connection to ${this.peer} ${state}`);
    };
    pc.addEventListener('connectionstatechange', this.onStateChange);
  }

  get isOpen() {
    return !this.ended && this.channel.readyState === 'open';
  }

  /** Roughly how much waits to be sent, here (in units or bytes) and in the channel (bytes). */
  get bufferedAmount() {
    return this.queue.reduce((sum, message) => sum + message.length, 0) + this.channel.bufferedAmount;
  }

  send(text) {
    if (!this.isOpen) return false;
    // A UTF-16 unit takes at most 3 bytes of UTF-8: most frames need no encoding to be measured.
    const bytes = text.length * 3 <= CHUNK_BYTES ? null : ENCODER.encode(text);
    if (bytes === null || bytes.length <= CHUNK_BYTES) {
      this.push(text);
      return true;
    }
    for (let at = 0; at < bytes.length; at += CHUNK_BYTES) {
      const end = Math.min(at + CHUNK_BYTES, bytes.length);
      const chunk = new Uint8Array(1 + end - at);
      chunk[0] = end < bytes.length ? 1 : 0;
      chunk.set(bytes.subarray(at, end), 1);
      this.push(chunk);
    }
    return true;
  }

  push(message) {
    if (this.queue.length || this.channel.bufferedAmount > HIGH_WATER_BYTES) this.queue.push(message);
    else this.put(message);
  }

  /** Send what waits, while the channel has room; a closing link is closed once all is out. */
  drain() {
    while (this.queue.length && this.channel.readyState === 'open' && this.channel.bufferedAmount <= HIGH_WATER_BYTES) {
      this.put(this.queue.shift());
    }
    if (this.ended && !this.queue.length) this.finishClosing();
  }

  put(message) {
    try {
      this.channel.send(message);
    } catch (err) {
      this.queue = [];
      this.fail(`the data channel refused a message: ${clip(err && err.message ? err.message : err)}`);
    }
  }

  received(data) {
    if (this.ended) return;
    if (typeof data === 'string') {
      if (this.parts.length) {
        this.fail(`${this.peer} sent a text message in the middle of a chunked frame`);
        return;
      }
      if (data.length > this.maxBytes || (data.length * 3 > this.maxBytes && ENCODER.encode(data).length > this.maxBytes)) {
        this.fail(`${this.peer} sent a frame over ${this.maxBytes} bytes`);
        return;
      }
      this.deliver(data);
      return;
    }
    const bytes = new Uint8Array(data);
    if (!bytes.length || bytes[0] > 1 || bytes.length - 1 > CHUNK_BYTES) {
      this.fail(`${this.peer} sent a malformed chunk`);
      return;
    }
    this.heard(); // a large frame takes a while: each chunk is a sign of life
    this.partBytes += bytes.length - 1;
    if (this.partBytes > this.maxBytes) {
      this.fail(`${this.peer} sent a frame over ${this.maxBytes} bytes`);
      return;
    }
    this.parts.push(bytes.subarray(1));
    if (bytes[0] === 1) return;
    const whole = new Uint8Array(this.partBytes);
    let at = 0;
    for (const part of this.parts) {
      whole.set(part, at);
      at += part.length;
    }
    this.parts = [];
    this.partBytes = 0;
    let text;
    try {
      text = this.decoder.decode(whole);
    } catch {
      this.fail(`${this.peer} sent a frame that is not UTF-8`);
      return;
    }
    this.deliver(text);
  }

  teardown(code, reason, failing) {
    this.parts = [];
    if (failing) {
      // The peer is gone or misbehaves: drop what waits and hang up at once.
      this.queue = [];
      this.hangUp();
      return;
    }
    // Closing by choice: what was sent still goes out (an error saying why, say), then the
    // channel closes, and the connection with it; a peer that stops taking it is hung up on.
    const started = performance.now();
    let left = this.bufferedAmount;
    let moved = started;
    this.linger = this.clock.every(LINGER_MS / 4, () => {
      const now = performance.now();
      const still = this.bufferedAmount;
      if (still < left) moved = now;
      left = still;
      if (now - moved >= LINGER_MS || now - started >= MAX_LINGER_MS) this.hangUp();
    });
    this.drain();
  }

  finishClosing() {
    if (this.closingChannel) return;
    this.closingChannel = true;
    if (this.channel.readyState === 'open' || this.channel.readyState === 'connecting') {
      // The channel sends what it holds before it closes; the connection goes once it has.
      this.channel.close();
    } else {
      this.hangUp();
    }
  }

  hangUp() {
    if (this.linger !== null) this.clock.cancel(this.linger);
    this.linger = null;
    this.pc.removeEventListener('connectionstatechange', this.onStateChange);
    try {
      this.channel.close();
    } catch {
      // already closed
    }
    this.pc.close();
  }
}
