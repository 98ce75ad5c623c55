// The page's Python workers: a pool of Web Workers (worker.mjs), each a
// Pyodide interpreter running the user's module, fed from a queue of items the
// root lent. The pool starts its workers before it knows the module (Python
// takes seconds to start, the module comes with the session), and gives it to
// them once it comes. The volunteer (volunteer.js) hears of everything through
// the `events` it gives the pool: onReady, onAnswer, onAnswered (with how many
// and how long they took), onReport, onLost, onWorkerDied, onBroken, onFailed,
// onUnserved.

import * as protocol from './protocol.js';
import { readSnapshot, saveSnapshot } from './snapshot.js';

const WORKER_RESTARTS = 3; // replacements per worker slot before it is given up
const RESTART_DELAY_MS = 500; // times the number of failed starts so far
const STAGGER_LIMIT_MS = 20_000; // the longest the other workers wait for the first to start

// An item lent by the root: `gen` is the connection it came on, so that
// answers for a connection that ended are dropped.
// entry = {id, text, gen}

class Slot {
  constructor(pool, restarts = 0) {
    this.pool = pool;
    this.restarts = restarts;
    this.state = 'pending'; // pending → booting → booted (Python is up) → ready (the module is loaded) → dead
    this.held = []; // entries given to the worker and not answered, in order
    this.since = 0; // performance.now() when held[0] began, as far as the page can tell (never earlier)
    this.worker = null;
    this.notBefore = 0; // performance.now() before which it must not start
    this.bootSent = null; // the promise that the worker was told to boot
    this.moduleSent = false;
    this.restored = false; // whether its Python came from a snapshot
  }

  /** Start the worker; the one asked to `makeSnapshot` makes one if it starts without. */
  start(makeSnapshot) {
    if (this.state !== 'pending') return;
    this.state = 'booting';
    this.worker = new Worker(new URL('./worker.mjs', import.meta.url), { type: 'module', name: 'pando-worker' });
    this.worker.onmessage = (event) => this.message(event.data);
    this.worker.onerror = (event) => {
      event.preventDefault();
      const where = event.filename ? ` (${event.filename}:${event.lineno})` : '';
      this.pool.died(this, `its Web Worker crashed: ${event.message || 'the worker script failed'}${where}`);
    };
    this.worker.onmessageerror = () => this.pool.died(this, 'its Web Worker sent a message that cannot be read');
    // The worker downloads Pyodide meanwhile.
    this.bootSent = this.pool.snapshotRead.then(() => {
      if (this.state !== 'dead') this.worker.postMessage({ type: 'boot', snapshot: this.pool.snapshot, makeSnapshot });
    });
    this.sendModule();
  }

  /** Give the worker the pool's module, if there is one and it does not have it yet. */
  sendModule() {
    const pool = this.pool;
    if (this.moduleSent || !this.bootSent || pool.module === null) return;
    this.moduleSent = true;
    this.bootSent.then(() => {
      if (this.state === 'dead') return;
      this.worker.postMessage({
        type: 'load', ...pool.module, interval: pool.interval, timeout: pool.timeout,
      });
    });
  }

  message(message) {
    if (this.state === 'dead') return;
    switch (message.type) {
      case 'snapshot':
        this.pool.snapshotMade({ key: message.key, blob: new Blob([message.bytes]) });
        break;
      case 'booted':
        this.state = 'booted';
        this.restored = message.restored;
        this.pool.startSlots(); // the others may start now
        break;
      case 'ready':
        this.state = 'ready';
        this.steps = message.steps; // timings of the load, in ms
        this.readyAt = performance.now(); // since the page opened
        this.pool.ready(this, message.ms);
        break;
      case 'answers':
        this.pool.answered(this, JSON.parse(message.answers));
        break;
      case 'report':
        this.pool.reported(message.report);
        break;
      case 'broken':
        this.pool.broken(this, message.message);
        break;
      case 'unserved':
        this.pool.unserved(message.message);
        break;
      case 'failed':
      case 'fatal':
        this.pool.died(this, message.message);
        break;
      default:
        break;
    }
  }

  give(entries) {
    if (!this.held.length) this.since = performance.now(); // an idle worker starts the first at once
    for (const entry of entries) this.held.push(entry);
    this.worker.postMessage({ type: 'items', items: entries.map((entry) => [entry.id, entry.text]) });
  }

  terminate() {
    this.state = 'dead';
    if (this.worker) this.worker.terminate();
  }
}

/** N workers running one module (given once known), fed from a queue of lent items. */
export class Pool {
  constructor(size, events) {
    this.module = null; // {filename, source, bundle, raw, run}, once the root has sent it
    this.events = events;
    this.interval = protocol.DEFAULT_REPORTING_INTERVAL; // seconds between the workers' reports
    this.timeout = null; // seconds an item may run on a worker (the run's --timeout), or null
    this.queue = []; // entries not yet given to a worker
    this.perWorker = 1; // items a worker holds at most; null: an even share of what the page holds
    this.slots = [];
    this.closed = false;
    this.staggerOver = false;
    this.snapshot = null; // {key, blob}: the one kept by an earlier tab, or the one a worker made
    this.snapshotKept = false; // whether this.snapshot is in storage, for later tabs
    this.snapshotAsked = false; // one worker, the first to start, makes a snapshot if it starts without
    // The workers are created first: opening IndexedDB may hold the page a moment.
    this.snapshotRead = Promise.resolve().then(readSnapshot).then((kept) => {
      if (this.snapshot || !kept) return;
      this.snapshot = kept;
      this.snapshotKept = true;
    });
    this.resize(size);
    // Should the first worker take very long, the others do not wait for ever.
    setTimeout(() => {
      this.staggerOver = true;
      this.startSlots();
    }, STAGGER_LIMIT_MS);
  }

  /** Whether the workers can run this module: they have none yet, or this one. */
  accepts(module) {
    const mine = this.module;
    return !this.closed && (mine === null || ['filename', 'source', 'bundle', 'raw', 'run'].every(
      (key) => mine[key] === module[key]));
  }

  /** The module to run (once accepted), and the session's reporting interval and item timeout. */
  run(module, interval, timeout) {
    this.setInterval(interval);
    this.setItemTimeout(timeout);
    if (this.module !== null) return;
    this.module = module;
    for (const slot of this.slots) slot.sendModule();
  }

  resize(size) {
    while (this.slots.length < size) this.slots.push(new Slot(this));
    while (this.slots.length > size) {
      const slot = this.slots.pop();
      slot.terminate();
      // Its items belong to a connection that is being replaced: the root lends them again.
    }
    this.startSlots();
  }

  /**
   * Start workers that wait. With more workers than spare cores, starting them
   * all at once makes each take as long as all of them: the first result comes
   * sooner if one starts alone and the others follow once its Python is up (it
   * also warms the browser's caches for them, and makes the snapshot they start from).
   */
  startSlots() {
    if (this.closed) return;
    const now = performance.now();
    const pending = this.slots.filter((slot) => slot.state === 'pending' && !(slot.notBefore > now));
    if (!pending.length) return;
    const spareCores = (navigator.hardwareConcurrency || 1) - 1; // one for the page
    const anyUp = this.slots.some((slot) => slot.state === 'booted' || slot.state === 'ready');
    const booting = this.slots.some((slot) => slot.state === 'booting');
    if (anyUp || this.staggerOver || this.slots.length <= spareCores) {
      for (const slot of pending) this.startSlot(slot);
    } else if (!booting) {
      this.startSlot(pending[0]);
    }
  }

  startSlot(slot) {
    slot.start(!this.snapshotAsked);
    this.snapshotAsked = true;
  }

  /** A worker's snapshot: the workers started from now on restore it, and so will later tabs. */
  async snapshotMade(snapshot) {
    this.snapshot = snapshot;
    this.snapshotKept = false;
    const kept = await saveSnapshot(snapshot);
    if (this.snapshot === snapshot) this.snapshotKept = kept;
  }

  /** Workers report every `seconds` from now on. */
  setInterval(seconds) {
    if (seconds === this.interval) return;
    this.interval = seconds;
    for (const slot of this.slots) {
      if (slot.worker && slot.state !== 'dead') slot.worker.postMessage({ type: 'interval', interval: seconds });
    }
  }

  /** Items may run `seconds` on a worker from now on (null: no limit). */
  setItemTimeout(seconds) {
    if (seconds === this.timeout) return;
    this.timeout = seconds;
    for (const slot of this.slots) {
      if (slot.worker && slot.state !== 'dead') slot.worker.postMessage({ type: 'timeout', timeout: seconds });
    }
  }

  /**
   * Terminate every worker whose current item has run for longer than the
   * timeout: its item is reported lost, naming the timeout, and a fresh
   * worker takes its place and its other items. A Web Worker busy in Python
   * cannot be interrupted, only terminated. The page counts from the answer
   * before (workers post each answer at once when there is a timeout), so
   * it may act a little late, never early.
   */
  checkOverruns() {
    if (this.closed || this.timeout === null) return;
    const now = performance.now();
    for (const slot of [...this.slots]) {
      if (slot.state !== 'ready' || !slot.held.length || now - slot.since <= this.timeout * 1000) continue;
      const over = `took longer than --timeout ${this.timeout} s`;
      // Numbered from 1 on the page, as the root numbers items.
      this.died(slot, `item ${slot.held[0].id + 1} ${over}`, `it ${over}; its worker was replaced`);
    }
  }

  /** A worker's report for the interval that just ended (JSON text). */
  reported(text) {
    let report;
    try {
      report = JSON.parse(text);
    } catch {
      return; // a report is a nicety: a bad one is dropped
    }
    if (report && typeof report === 'object') this.events.onReport(report);
  }

  get readyCount() {
    return this.slots.filter((slot) => slot.state === 'ready').length;
  }

  get loadingCount() {
    return this.slots.filter((slot) => ['pending', 'booting', 'booted'].includes(slot.state)).length;
  }

  get busy() {
    return this.queue.length > 0 || this.slots.some((slot) => slot.held.length > 0);
  }

  /** About to run out of work: nothing queued here, and a worker has no item after the one it computes. */
  get hungry() {
    return this.queue.length === 0 && this.slots.some((slot) => slot.state === 'ready' && slot.held.length <= 1);
  }

  give(entries) {
    for (const entry of entries) this.queue.push(entry);
    this.dispatch();
  }

  /** A new connection: items of older ones are no longer ours to compute. */
  forget(gen) {
    this.queue = this.queue.filter((entry) => entry.gen === gen);
  }

  dispatch() {
    if (this.closed) return;
    const ready = this.slots.filter((slot) => slot.state === 'ready');
    if (!ready.length) return;
    let limit = this.perWorker;
    if (limit === null) {
      const held = ready.reduce((sum, slot) => sum + slot.held.length, 0);
      limit = Math.max(1, Math.ceil((this.queue.length + held) / ready.length));
    }
    while (this.queue.length) {
      let best = null;
      for (const slot of ready) {
        if (slot.held.length < limit && (!best || slot.held.length < best.held.length)) best = slot;
      }
      if (!best) return;
      best.give(this.queue.splice(0, limit - best.held.length));
    }
  }

  ready(slot, ms) {
    this.events.onReady(slot, ms);
    this.dispatch();
  }

  answered(slot, answers) {
    for (const answer of answers) {
      const entry = slot.held.shift();
      if (!entry || entry.id !== answer[1]) {
        this.died(slot, 'its Web Worker answered items out of order');
        return;
      }
      this.events.onAnswer(entry, answer);
    }
    const now = performance.now();
    const seconds = (now - slot.since) / 1000; // the answered items' time, as far as the page can tell
    if (answers.length) slot.since = now; // the next item began at the latest now
    this.dispatch();
    this.events.onAnswered(answers.length, seconds);
  }

  broken(slot, message) {
    this.events.onBroken(message);
  }

  /** The root serves no Pyodide: no worker of this page can start, so none is started again. */
  unserved(message) {
    this.events.onUnserved(message);
  }

  /**
   * A worker crashed, could not start or was stopped: its current item is lost
   * (said with `lostMessage`, by default `message`), the rest go back to the queue.
   */
  died(slot, message, lostMessage = message) {
    if (slot.state === 'dead' || this.closed) return;
    const wasReady = slot.state === 'ready';
    slot.terminate();
    const [current, ...rest] = slot.held;
    slot.held = [];
    if (current) this.events.onLost(current, lostMessage);
    this.queue.unshift(...rest);
    const index = this.slots.indexOf(slot);
    this.events.onWorkerDied(message, slot.restarts < WORKER_RESTARTS);
    if (index >= 0 && slot.restarts < WORKER_RESTARTS) {
      // A worker that had been working gets a fresh count; one that never started does not,
      // and its next try waits a little (a network that hiccups may be back by then).
      const fresh = new Slot(this, wasReady ? 1 : slot.restarts + 1);
      if (!wasReady) {
        const delay = RESTART_DELAY_MS * fresh.restarts;
        fresh.notBefore = performance.now() + delay;
        setTimeout(() => this.startSlots(), delay + 10);
      }
      this.slots[index] = fresh;
    }
    if (!this.slots.some((other) => other.state !== 'dead')) {
      this.events.onFailed(message);
      return;
    }
    this.startSlots();
    this.dispatch();
  }

  close() {
    this.closed = true;
    for (const slot of this.slots) slot.terminate();
    this.slots = [];
    this.queue = [];
  }
}
