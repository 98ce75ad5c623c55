// The Pando volunteer page: joins the root over a link (link.js: a WebSocket on
// a LAN, or a WebRTC data channel opened through a rendezvous, signal.js), runs
// the user's Python module in Pyodide Web Workers (pool.js, worker.mjs), and
// sends results back. Joined over WebRTC in a tree (--degree), the page is a
// node of it: tree.js takes children, lends them part of the items, and sends
// their results up with the page's own.
//
// Everything that comes from outside (device names, module names, error
// messages, tracebacks) is put on the page with textContent, never as HTML.

import * as protocol from './protocol.js';
import { pageClock } from './clock.js';
import { WebSocketLink } from './link.js';
import { chooseTransport, join } from './signal.js';
import { Pool } from './pool.js';
import { TreeNode, newNodeId } from './tree.js';

const DEFAULT_MAX_WORKERS = 4; // each Pyodide costs ~75 MB and a few seconds to start
const MAX_WORKERS = 64;
const FIRST_BACKOFF_MS = 500;
const MAX_BACKOFF_MS = 10_000;
const NEXT_JOB_BACKOFF_MS = 5_000; // longest pause between two looks for the next run
const RATE_WINDOW_MS = 5_000;
const REPORT_GRACE_MS = 250; // after a report boundary, wait this long for the workers' reports
const OVERRUN_CHECK_MS = 1000; // with a timeout, workers are checked at least this often, and 4 times per timeout
const LOG_LINES = 80;
const NAME_KEY = 'pando.device';
const WORKERS_KEY = 'pando.workers';

const $ = (id) => document.getElementById(id);

// -- small helpers ---------------------------------------------------------

const storage = {
  get(key) {
    try {
      return localStorage.getItem(key);
    } catch {
      return null; // storage disabled: nothing remembered
    }
  },
  set(key, value) {
    try {
      localStorage.setItem(key, value);
    } catch {
      // storage disabled or full
    }
  },
};

function defaultWorkers() {
  let cap = DEFAULT_MAX_WORKERS;
  if (navigator.deviceMemory && navigator.deviceMemory < 4) cap = 2; // phones with little memory
  return Math.max(1, Math.min(navigator.hardwareConcurrency || 1, cap));
}

function clampWorkers(value) {
  const n = Number.parseInt(value, 10);
  return Number.isFinite(n) && n >= 1 ? Math.min(n, MAX_WORKERS) : null;
}

function describe(err) {
  return err && err.message ? err.message : String(err);
}

// -- the volunteer ------------------------------------------------------------

function emptyReport() {
  return { items: 0, cpu_time: 0, data_transfer_time: 0, units: 0 };
}

const UNREACHABLE = 'Root unreachable';
const NO_JOB = 'No job here yet';
const NEXT_JOB = 'The job is over — thank you! Waiting for the next job…';

const ENDED = new Set(['done', 'refused', 'broken', 'stopped', 'no-key']);

class Volunteer {
  constructor(ui) {
    this.ui = ui;
    this.clock = pageClock();
    const hash = protocol.fragmentSettings(location.hash);
    if (hash.device) storage.set(NAME_KEY, hash.device.slice(0, 200));
    this.name = storage.get(NAME_KEY) || '';
    this.workers = clampWorkers(hash.workers) || clampWorkers(storage.get(WORKERS_KEY)) || defaultWorkers();
    this.key = protocol.joinKey(location.hash); // only ever from the URL, never stored
    this.node = newNodeId(); // this page's id in the tree, for as long as it is open
    this.tree = null; // a TreeNode (tree.js) while the page is a node of the tree
    this.state = 'idle';
    this.gen = 0; // one per connection
    this.link = null; // the open link to the root (link.js), if any
    this.joining = null; // an AbortController while a link is being opened
    this.waiting = UNREACHABLE; // what the page says while it waits to retry
    this.looking = false; // after a job: looking for the next run at this address
    this.nextBackoff = FIRST_BACKOFF_MS;
    this.session = null; // {id, heartbeat, batchSize, adaptive} of the current connection
    this.pace = new protocol.Pace(this.workers); // what to ask the root for, when batching adapts
    this.helloAt = 0; // performance.now() when the hello went, for the first measure of the link
    this.pool = null; // the Python workers, started with the first attempt to join
    this.failure = null; // [message, heading, summary]: Python cannot start here, to tell the root once it listens
    this.outResults = [];
    this.outErrors = [];
    this.flushTimer = null;
    this.reconnectTimer = null;
    this.beatTimer = null;
    this.reconnectAt = 0;
    this.backoff = FIRST_BACKOFF_MS;
    this.lastSent = 0;
    this.computed = 0;
    this.errors = 0;
    this.recent = []; // [time, count] of answers, for the throughput
    this.rateSince = 0;
    this.idleSince = 0;
    this.reportTimer = null;
    this.overrunTimer = null; // checks the workers for items past the timeout, while there is one
    this.reportSince = null; // performance.now() at the start of the interval being reported
    this.sums = emptyReport(); // the workers' reports since the last report frame
    this.clock.every(1000, () => this.tick());
  }

  // -- connection --------------------------------------------------------

  start() {
    if (this.reconnectTimer !== null) this.clock.cancel(this.reconnectTimer);
    this.reconnectTimer = null;
    this.ui.problem(null);
    if (!this.key) {
      this.end('no-key', 'Not connected: no join key');
      this.ui.problem(protocol.NO_KEY);
      this.log('this address has no join key (#key=…); not connecting', true);
      return;
    }
    this.failure = null;
    if (!this.pool) {
      // Python starts while the page joins: the module it needs comes with the session.
      this.pool = new Pool(this.workers, this.poolEvents());
      this.log(`starting ${this.workers} Python worker(s)…`);
    }
    this.connect();
  }

  /** One attempt to join: choose the transport, open a link, say hello. */
  async connect() {
    if (this.joining) this.joining.abort(); // a join still under way is given up
    this.joining = null;
    const gen = ++this.gen;
    this.session = null;
    if (!this.looking) this.setState('connecting', `Connecting to ${location.host}…`);
    let link;
    try {
      link = await this.openLink(gen);
    } catch (err) {
      if (gen !== this.gen) return; // stopped or replaced meanwhile
      this.joining = null;
      if (this.looking) {
        this.lookForNextJob(true); // no run here yet
      } else if (err.reason === 'no-root') {
        if (this.waiting !== NO_JOB) this.log(`no job yet: ${describe(err)}; waiting for one`);
        this.lost(NO_JOB);
      } else if (err.reason === 'unsupported') {
        this.end('broken', 'This browser cannot join over WebRTC');
        this.ui.problem(describe(err));
        this.log(describe(err), true);
      } else {
        this.log(describe(err), true);
        this.lost();
      }
      return;
    }
    this.joining = null;
    if (gen !== this.gen) {
      link.close(1000, 'stopped');
      return;
    }
    this.link = link;
    this.waiting = UNREACHABLE;
    link.onmessage = (text) => {
      if (gen === this.gen) this.receive(text);
    };
    link.onclose = (reason) => {
      if (gen !== this.gen) return;
      this.link = null;
      if (this.looking) {
        this.lookForNextJob(true);
        return;
      }
      if (ENDED.has(this.state)) return;
      const why = reason ? `: ${reason}` : '';
      this.log(this.session ? `connection to the root lost${why}` : `cannot reach the root${why}`, true);
      this.lost();
    };
    if (!this.looking) this.log(`connected over ${link.transport}`); // else its module says a run was found
    // Over a data channel the page can take children of its own (a relay of the tree).
    const relay = link.transport === 'WebRTC';
    this.helloAt = performance.now();
    this.send(protocol.hello(this.name, this.workers, this.key, { node: this.node, relay }));
  }

  /**
   * A link to the root, over the transport the page's host asks for
   * (GET /rendezvous/config) or the fragment's protocol=webrtc; says why not by throwing.
   */
  async openLink(gen) {
    const choice = await chooseTransport(location.href, protocol.fragmentProtocol(location.hash));
    if (gen !== this.gen) throw new Error('stopped');
    this.joining = new AbortController();
    if (choice.transport === 'websocket') {
      return WebSocketLink.open(protocol.volunteerURL(location.href), { clock: this.clock, abort: this.joining.signal });
    }
    if (!choice.root) {
      const err = new Error('no root is connected to this server');
      err.reason = 'no-root';
      throw err;
    }
    if (!this.looking) this.setState('connecting', 'Joining over WebRTC…');
    return join(location.href, {
      clock: this.clock,
      abort: this.joining.signal,
      // A node joining again brings its subtree, and must not hang under its old parent.
      nodes: this.tree ? this.tree.summary().nodes : 1,
      avoid: this.tree && this.tree.parent ? [this.tree.parent] : [],
      progress: (text) => {
        if (gen === this.gen && this.state === 'connecting') this.ui.stateText(text);
      },
    });
  }

  /** A frame from the root, as text. */
  receive(text) {
    let frame;
    try {
      frame = protocol.decode(text);
    } catch (err) {
      this.log(`the root sent a bad frame (${describe(err)}); reconnecting`, true);
      this.drop(1008, 'bad frame');
      return;
    }
    this.handle(frame);
  }

  /** Close the current link (or give up joining) and forget it; its late events are ignored. */
  hangUp(code, reason) {
    const link = this.link;
    this.link = null;
    this.gen++;
    if (this.joining) this.joining.abort();
    this.joining = null;
    if (link) link.close(code, reason);
  }

  /** Close the current connection ourselves and go on as if it had dropped. */
  drop(code, reason) {
    this.hangUp(code, reason);
    if (this.looking) this.lookForNextJob(true);
    else if (!ENDED.has(this.state)) this.lost();
  }

  /** The connection ended or could not be made: try again later, with back-off. */
  lost(waiting = UNREACHABLE) {
    if (this.session) this.backoff = FIRST_BACKOFF_MS; // we were in: start the back-off again
    if (this.session && this.tree) this.tree.orphaned(); // the parent's lease is void, here and below
    this.session = null;
    this.stopBeating();
    this.stopReporting();
    if (this.pool) this.pool.forget(null); // the root lends them to others
    this.outResults = [];
    this.outErrors = [];
    const delay = Math.round(this.backoff * (0.5 + Math.random() * 0.5)); // jitter spreads a crowd
    this.backoff = Math.min(this.backoff * 2, MAX_BACKOFF_MS);
    this.reconnectAt = performance.now() + delay;
    this.waiting = waiting;
    this.setState('offline', '');
    this.countdown();
    this.reconnectTimer = this.clock.after(delay, () => {
      this.reconnectTimer = null;
      if (this.state === 'offline') this.connect();
    });
  }

  /**
   * After a job, for as long as the page is open: join the next run served at
   * this address (the same key), looking for it with back-off and no log line
   * per look; `again` when a look found none. end() closed the pool: the next
   * job starts with fresh workers.
   */
  lookForNextJob(again) {
    if (!again) this.nextBackoff = FIRST_BACKOFF_MS;
    const delay = Math.round(this.nextBackoff * (0.5 + Math.random() * 0.5));
    this.nextBackoff = Math.min(this.nextBackoff * 2, NEXT_JOB_BACKOFF_MS);
    this.looking = true;
    this.setState('done', NEXT_JOB);
    if (this.reconnectTimer !== null) this.clock.cancel(this.reconnectTimer);
    this.reconnectTimer = this.clock.after(delay, () => {
      this.reconnectTimer = null;
      if (this.looking) this.connect();
    });
  }

  countdown() {
    const seconds = Math.max(0, Math.ceil((this.reconnectAt - performance.now()) / 1000));
    this.ui.stateText(`${this.waiting} — retrying in ${seconds} s`);
  }

  send(text) {
    if (!this.link || !this.link.send(text)) return false;
    this.lastSent = performance.now();
    return true;
  }

  tick() {
    if (this.state === 'offline') this.countdown();
    const idle = this.state === 'computing' && this.pool && !this.pool.busy;
    if (idle && performance.now() - this.idleSince >= 900) this.setState('waiting');
  }

  /** Heartbeats every heartbeat/3 ms while a session lasts (any frame sent counts). */
  startBeating(beat) {
    this.stopBeating();
    this.beatTimer = this.clock.every(Math.max(20, Math.floor(beat / 3)), () => this.beat());
  }

  stopBeating() {
    if (this.beatTimer !== null) this.clock.cancel(this.beatTimer);
    this.beatTimer = null;
  }

  /**
   * A heartbeat when nothing else was sent lately, or nothing was heard: the
   * root answers heartbeats only, and the link ends when the root goes silent
   * (frames sent often, such as a tree node's status, must not stop them).
   */
  beat() {
    if (!this.session || !this.link) return;
    const now = performance.now();
    const often = (this.session.heartbeat / 3) * 0.8;
    if (now - this.lastSent >= often || now - this.link.lastHeard >= often) this.send(protocol.heartbeat());
  }

  // -- reports -------------------------------------------------------------

  /**
   * Send a report frame just after each multiple of the interval (on the
   * shared clock, Date.now()): the workers report at those boundaries too.
   */
  scheduleReport() {
    if (this.reportTimer !== null) this.clock.cancel(this.reportTimer);
    this.reportTimer = null;
    if (!this.session) return;
    const ms = this.session.reportingInterval * 1000;
    const now = Date.now();
    const next = (Math.floor(now / ms) + 1) * ms;
    const grace = Math.min(REPORT_GRACE_MS, ms * 0.2);
    this.reportTimer = this.clock.after(Math.max(1, next - now + grace), () => {
      this.reportTimer = null;
      this.sendReport();
      this.scheduleReport();
    });
  }

  /**
   * With a timeout, check the workers a few times per timeout (at most once a
   * second) on the worker-backed clock, which a hidden tab does not throttle.
   * It goes on between connections: a worker stuck on an item of a connection
   * that ended must still be replaced.
   */
  watchOverruns(timeout) {
    this.stopWatchingOverruns();
    if (timeout === null) return;
    const ms = Math.max(20, Math.min(OVERRUN_CHECK_MS, (timeout * 1000) / 4));
    this.overrunTimer = this.clock.every(ms, () => {
      if (this.pool) this.pool.checkOverruns();
    });
  }

  stopWatchingOverruns() {
    if (this.overrunTimer !== null) this.clock.cancel(this.overrunTimer);
    this.overrunTimer = null;
  }

  stopReporting() {
    if (this.reportTimer !== null) this.clock.cancel(this.reportTimer);
    this.reportTimer = null;
  }

  /** One frame for the whole tab, once the module is loaded (a worker is ready). */
  sendReport() {
    if (!this.session || !this.pool || !this.pool.readyCount) return;
    const now = performance.now();
    if (this.reportSince === null) this.reportSince = now;
    const seconds = (now - this.reportSince) / 1000;
    if (seconds <= 0) return;
    if (this.tree) this.addReport(this.tree.takeFigures()); // the subtree's figures go up with the page's
    if (this.send(protocol.report(seconds, this.sums))) {
      this.reportSince = now;
      this.sums = emptyReport();
    }
  }

  addReport(report) {
    for (const key of Object.keys(this.sums)) {
      const value = report[key];
      if (typeof value === 'number' && Number.isFinite(value) && value > 0) this.sums[key] += value;
    }
  }

  // -- frames from the root ------------------------------------------------

  handle(frame) {
    switch (frame.type) {
      case 'module':
        this.joined(frame);
        break;
      case 'lend':
        this.pace.lent(frame.spacing);
        if (!this.session) {
          this.log('the root lent items before sending the module; reconnecting', true);
          this.drop(1008, 'lend before module');
          return;
        }
        if (this.tree) this.tree.lent(frame.items);
        else this.give(frame.items);
        break;
      case 'heartbeat':
        break; // a sign of life; the root answers ours, we do not answer its
      case 'join': // a joiner's offer, for a node of the tree
        if (this.tree) this.tree.join(frame);
        else this.send(protocol.answer(frame.from, '', 'this volunteer takes no children'));
        break;
      case 'reset': // the parent lost its own parent: what it lent is void
        if (this.pool) this.pool.forget(-1);
        if (this.tree) this.tree.orphaned();
        break;
      case 'bye':
        this.bye(frame);
        break;
      default:
        break;
    }
  }

  /** Items for the page's own workers: lent by the root, or by the tree's lender. */
  give(items) {
    if (!this.pool) return;
    this.pool.give(items.map(([id, text]) => ({ id, text, gen: this.gen })));
    if (this.pool.readyCount) this.setState('computing');
  }

  joined(frame) {
    if (this.looking) {
      this.looking = false;
      this.setState('connecting'); // out of 'done': the next job begins
    }
    this.session = {
      id: frame.id,
      heartbeat: frame.heartbeat,
      batchSize: frame.batchSize,
      adaptive: frame.adaptive,
      reportingInterval: frame.reportingInterval,
    };
    this.pace.reset();
    this.pace.roundTrip((performance.now() - this.helloAt) / 1000);
    this.startBeating(frame.heartbeat);
    this.link.watch(2 * frame.heartbeat); // a silent root is gone (a data channel may not notice)
    this.ui.module(frame.filename);
    this.log(`joined as volunteer ${frame.id}; module ${frame.filename}`);
    if (frame.nativeOnly.length) {
      // Starting Python would only fail: say why at once, here and to the root, and take nothing of this job.
      this.broken(
        `${frame.filename} needs ${frame.nativeOnly.join('; ')}, which a browser cannot have; ` +
          'native volunteers (pando-volunteer) compute it',
        'This browser cannot run the module',
        'The module needs packages that browsers cannot have.',
      );
      return;
    }
    if (this.failure) {
      this.broken(...this.failure);
      return;
    }
    // The same run's module after a reconnection: its workers go on; another run's starts afresh.
    const { filename, source, bundle, raw, run } = frame;
    const module = { filename, source, bundle, raw, run };
    if (!this.pool || !this.pool.accepts(module)) {
      if (this.pool) this.pool.close();
      this.pool = new Pool(this.workers, this.poolEvents());
      this.log(`starting ${this.workers} Python worker(s) for this module…`);
    }
    this.pool.forget(this.gen);
    this.pool.resize(this.workers);
    this.pool.run(module, frame.reportingInterval, frame.timeout);
    this.watchOverruns(frame.timeout);
    this.pool.perWorker = frame.adaptive ? null : frame.batchSize; // adaptive: an even share of what the page holds
    // Reports start afresh on a new session; the first covers the time since the module was ready.
    this.sums = emptyReport();
    this.reportSince = this.pool.readyCount ? performance.now() : null;
    this.scheduleReport();
    this.joinTree(frame);
    this.afterWork();
  }

  /** A module frame with the tree's fields makes the page a node of the tree (or keeps it one). */
  joinTree(frame) {
    const { module } = this.tree || {};
    if (this.tree && (!frame.tree || module.source !== frame.source || module.bundle !== frame.bundle
      || module.run !== frame.run)) {
      this.tree.close(); // another job, or no tree any more
      this.tree = null;
    }
    if (!frame.tree) return;
    if (this.tree) {
      this.tree.attached(frame, this.workers);
      this.log(`back in the tree at depth ${frame.tree.depth}, with ${this.tree.summary().nodes - 1} device(s) below`);
      return;
    }
    this.tree = new TreeNode(this.treeHost(), {
      id: this.node, key: this.key, workers: this.workers, relay: this.link && this.link.transport === 'WebRTC',
      module: frame, clock: this.clock, pace: this.pace,
    });
    this.log(`a node of the tree at depth ${frame.tree.depth}${this.tree.relay ? `, taking up to ${frame.tree.degree} child(ren)` : ''}`);
  }

  /** What the tree needs of the page: the parent's link, the workers, the log. */
  treeHost() {
    return {
      send: (text) => this.send(text),
      give: (items) => this.give(items),
      deliver: (results) => {
        for (const pair of results) this.outResults.push(pair);
        this.scheduleFlush(false);
      },
      fail: (text) => {
        this.outErrors.push(text);
        this.scheduleFlush(true);
      },
      log: (text, bad) => this.log(text, bad),
    };
  }

  bye(frame) {
    if (frame.reason === 'done') {
      const again = this.looking; // the last run, still closing, says so to every hello
      this.flush();
      this.end('done', NEXT_JOB);
      if (!again) this.log('the root says the job is over; waiting for the next job at this address');
      this.lookForNextJob(again);
    } else {
      const message = frame.message || 'the root refused this volunteer';
      this.end('refused', 'Refused by the root');
      this.ui.problem(message);
      this.log(`refused: ${message}`, true);
    }
  }

  /** Stop for good (until the user asks again, or the next job comes: bye()). */
  end(state, text) {
    this.looking = false;
    this.setState(state, text);
    if (this.tree) {
      if (state === 'done') this.tree.finish(); // the children hear the job is over
      else this.tree.close(); // they join the tree elsewhere
      this.tree = null;
    }
    this.hangUp(1000, state);
    this.session = null;
    this.stopBeating();
    this.stopReporting();
    if (this.reconnectTimer !== null) this.clock.cancel(this.reconnectTimer);
    this.reconnectTimer = null;
    this.stopWatchingOverruns();
    if (this.pool) this.pool.close();
    this.pool = null;
    this.ui.workersReady(0);
    this.recent = [];
  }

  stop() {
    this.end('stopped', 'Stopped');
    this.log('stopped on this device');
  }

  // -- worker events --------------------------------------------------------

  poolEvents() {
    return {
      onReady: (slot, ms) => {
        if (this.reportSince === null) this.reportSince = performance.now();
        this.ui.workersReady(this.pool ? this.pool.readyCount : 0);
        const how = slot.restored ? ', restored from a snapshot' : '';
        this.log(`a Python worker is ready (${(ms / 1000).toFixed(1)} s since it started${how})`);
        this.afterWork();
      },
      onAnswer: (entry, answer) => this.answer(entry, answer),
      onReport: (report) => this.addReport(report),
      onAnswered: (count, seconds) => {
        this.pace.computed(count, seconds);
        if (this.tree) this.tree.ownPaced();
        this.afterWork();
      },
      onLost: (entry, message) => {
        if (entry.gen !== this.gen || !this.session) return;
        this.errors++;
        if (this.tree) {
          this.tree.ownLost(entry.id, message.split('\n')[0]);
          return;
        }
        this.outErrors.push(protocol.error({ id: entry.id, message: message.split('\n')[0], lost: true }));
        this.scheduleFlush(true);
      },
      onWorkerDied: (message, replaced) => {
        console.warn(`pando worker stopped: ${message}`);
        const line = message.split('\n')[0];
        this.log(`a worker stopped: ${line}${replaced ? '; starting a new one' : '; giving up on it'}`, true);
        this.ui.workersReady(this.pool ? this.pool.readyCount : 0);
      },
      onBroken: (message) => this.broken(message),
      onFailed: (message) => this.broken(`Python could not start in this browser: ${message}`),
      onUnserved: (message) => this.broken(message, 'The root cannot serve Python', 'No browser can compute for this root.'),
    };
  }

  answer(entry, answer) {
    if (entry.gen !== this.gen || !this.session) return; // for a connection that ended
    this.computed++;
    const now = performance.now();
    this.pruneRecent(now);
    if (!this.recent.length) this.rateSince = now; // a new streak of work
    const last = this.recent[this.recent.length - 1];
    if (last && now - last[0] < 100) last[1]++;
    else this.recent.push([now, 1]);
    if (this.tree) this.tree.ownAnswer(answer); // through the tree's lender, which sends up what it accepts
    else if (answer[0] === 'ok') this.outResults.push([answer[1], answer[2]]);
    else this.outErrors.push(protocol.error({ id: answer[1], message: answer[2], traceback: answer[3] }));
    if (answer[0] !== 'ok') {
      const [, id, message, traceback] = answer;
      this.errors++;
      // Numbered from 1, as the root numbers items (the id is the position from 0).
      this.ui.problem(`Item ${id + 1} failed: ${message}`, traceback);
      this.log(`item ${id + 1} failed: ${message}`, true);
    }
  }

  afterWork() {
    if (!this.pool || ENDED.has(this.state)) return;
    this.scheduleFlush(!this.pool.busy || this.pool.hungry); // the last owed, or a refill needed soon: at once
    if (!this.session) return;
    const ready = this.pool.readyCount;
    this.ui.workersReady(ready);
    if (!ready) {
      this.setState('loading', `Starting Python (${this.pool.loadingCount} worker${this.pool.loadingCount === 1 ? '' : 's'})…`);
    } else if (this.pool.busy) {
      this.setState('computing');
    } else if (this.state !== 'computing') {
      this.setState('waiting');
    } else {
      this.idleSince = performance.now(); // tick() says so if no item comes within a second
    }
  }

  broken(message, heading = 'This device cannot run the module', summary = 'The module cannot run in this browser.') {
    if (ENDED.has(this.state)) return;
    if (!this.session) {
      // Python failed before the session began: the page says so now, and the root once it listens.
      this.failure = [message, heading, summary];
      if (this.pool) this.pool.close();
      this.pool = null;
      this.ui.problem(summary, message);
      return;
    }
    this.flush();
    this.send(protocol.error({ message }));
    this.end('broken', heading);
    this.ui.problem(summary, message);
    const last = message.split('\n').filter((line) => line.trim() && !line.startsWith('(')).pop();
    this.log(`cannot run the module: ${last || message}`, true);
  }

  // -- sending answers -------------------------------------------------------

  scheduleFlush(now) {
    if (!this.outResults.length && !this.outErrors.length) return;
    if (now) {
      this.flush();
    } else if (this.flushTimer === null) {
      // Answers gather this long to share a frame: a few results' worth (Pace.window).
      this.flushTimer = this.clock.after(this.pace.window() * 1000, () => {
        this.flushTimer = null;
        this.flush();
      });
    }
  }

  flush() {
    if (this.flushTimer !== null) this.clock.cancel(this.flushTimer);
    this.flushTimer = null;
    if (!this.link || !this.link.isOpen) return; // the root lends them again
    const results = this.outResults;
    const errors = this.outErrors;
    this.outResults = [];
    this.outErrors = [];
    if (results.length) {
      let want = null;
      if (this.session && this.session.adaptive) want = this.tree ? this.tree.want() : this.pace.want(0);
      for (const group of protocol.pack(results)) {
        this.send(protocol.result(group, want));
        want = null;
      }
      this.pace.sent();
    }
    for (const text of errors) this.send(text);
  }

  // -- display ----------------------------------------------------------------

  setState(state, text) {
    this.state = state;
    const over = this.link ? ` over ${this.link.transport}` : '';
    const texts = {
      connecting: 'Connecting…',
      loading: 'Starting Python…',
      computing: `Computing — connected${over}`,
      waiting: `Connected${over} — waiting for items`,
      offline: 'Root unreachable',
    };
    this.ui.state(state, text || texts[state] || state, this.looking);
  }

  pruneRecent(now) {
    while (this.recent.length && now - this.recent[0][0] > RATE_WINDOW_MS) this.recent.shift();
  }

  /** Items per second over the last few seconds (or since the work began, if sooner). */
  rate() {
    const now = performance.now();
    this.pruneRecent(now);
    if (!this.recent.length) return 0;
    const count = this.recent.reduce((sum, [, n]) => sum + n, 0);
    const span = Math.min(RATE_WINDOW_MS, Math.max(1000, now - this.rateSince));
    return count / (span / 1000);
  }

  log(text, bad = false) {
    this.ui.log(text, bad);
  }
}

// -- the page ------------------------------------------------------------------

function pageUI() {
  const logList = $('log');
  return {
    state(state, text, looking) {
      $('state').dataset.state = state;
      $('state-text').textContent = text;
      // Looking for the next job (after a job, always), Stop ends the wait; Try again then looks at once.
      $('retry').hidden = !['offline', 'refused', 'broken', 'stopped'].includes(state);
      $('retry').textContent = state === 'offline' ? 'Retry now' : 'Try again';
      $('stop').hidden = ENDED.has(state) && !looking;
    },
    stateText(text) {
      $('state-text').textContent = text;
    },
    workersReady(n) {
      $('workers-ready').textContent = String(n);
    },
    module(filename) {
      $('module').textContent = filename;
    },
    problem(text, details) {
      $('problem').hidden = !text;
      $('problem-text').textContent = text || '';
      $('problem-details').hidden = !details;
      $('problem-details').textContent = details || '';
    },
    log(text, bad) {
      const item = document.createElement('li');
      if (bad) item.className = 'bad';
      const time = document.createElement('time');
      time.textContent = new Date().toLocaleTimeString();
      item.append(time, document.createTextNode(text));
      logList.prepend(item);
      while (logList.children.length > LOG_LINES) logList.lastElementChild.remove();
    },
  };
}

function main() {
  const ui = pageUI();
  const volunteer = new Volunteer(ui);
  window.pando = volunteer; // for the curious, and for tests

  const form = $('join');
  const input = $('name-input');
  const workersInput = $('workers');

  function showPanel() {
    form.hidden = true;
    $('panel').hidden = false;
    $('device').textContent = volunteer.name;
    workersInput.value = String(volunteer.workers);
  }

  form.addEventListener('submit', (event) => {
    event.preventDefault();
    const name = (input.value.trim() || input.placeholder).slice(0, 200);
    if (!name) return;
    const renamed = volunteer.name && volunteer.name !== name;
    const first = !volunteer.name || volunteer.state === 'idle';
    volunteer.name = name;
    storage.set(NAME_KEY, name);
    showPanel();
    if (first) volunteer.start();
    else if (renamed && !ENDED.has(volunteer.state)) {
      volunteer.log('device renamed; rejoining');
      volunteer.drop(1000, 'renamed');
    }
  });

  $('rename').addEventListener('click', () => {
    input.value = volunteer.name;
    form.hidden = false;
    input.focus();
    input.select();
  });

  workersInput.addEventListener('change', () => {
    const n = clampWorkers(workersInput.value);
    if (!n) {
      workersInput.value = String(volunteer.workers);
      return;
    }
    workersInput.value = String(n);
    if (n === volunteer.workers) return;
    volunteer.workers = n;
    storage.set(WORKERS_KEY, String(n));
    if (!ENDED.has(volunteer.state) && volunteer.state !== 'idle') {
      volunteer.log(`now ${n} worker(s); rejoining`);
      if (volunteer.pool) volunteer.pool.resize(n);
      volunteer.drop(1000, 'workers changed');
    }
  });

  $('retry').addEventListener('click', () => volunteer.start());
  $('stop').addEventListener('click', () => volunteer.stop());

  // The figures, a few times a second; a hidden tab is throttled, which is fine.
  setInterval(() => {
    $('computed').textContent = volunteer.computed.toLocaleString();
    $('errors').textContent = volunteer.errors.toLocaleString();
    const rate = volunteer.rate();
    $('rate').textContent = rate >= 10 ? Math.round(rate).toLocaleString() : rate.toFixed(1);
    // A node of the tree: how many devices reach the root through this tab.
    const below = volunteer.tree ? volunteer.tree.summary().nodes - 1 : 0;
    $('relaying').hidden = !(volunteer.tree && volunteer.tree.relay);
    $('relayed').textContent = below.toLocaleString();
    $('relayed-unit').textContent = below === 1 ? 'device' : 'devices';
  }, 250);

  window.addEventListener('pagehide', () => {
    if (volunteer.link) volunteer.link.close(1000, 'page closed');
  });

  function begin() {
    // Without a key there is nothing to join: say so at once rather than ask for a name.
    if (volunteer.name || !volunteer.key) {
      showPanel();
      volunteer.start();
    } else {
      $('panel').hidden = true;
      input.value = '';
      input.placeholder = guessName();
      form.hidden = false;
      input.focus();
    }
  }

  // The full URL pasted over one without its key changes only the fragment: the page does not reload.
  window.addEventListener('hashchange', () => {
    const key = protocol.joinKey(location.hash);
    if (key === volunteer.key) return;
    volunteer.key = key;
    volunteer.end('stopped', 'Stopped'); // a session under the old key ends
    volunteer.log('new join key');
    begin();
  });

  begin();
}

function guessName() {
  const ua = navigator.userAgent;
  if (/iPhone/.test(ua)) return 'iPhone';
  if (/iPad/.test(ua)) return 'iPad';
  if (/Android/.test(ua)) return /Mobile/.test(ua) ? 'Android phone' : 'Android tablet';
  if (/Mac OS X/.test(ua)) return 'Mac';
  if (/Windows/.test(ua)) return 'Windows PC';
  if (/Linux/.test(ua)) return 'Linux computer';
  return 'My device';
}

main();
