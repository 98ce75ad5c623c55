// The page as a node of the tree (docs/protocol.md, "The tree"): a tab that
// joined over WebRTC takes children of its own, over data channels it answers
// itself, and lends them part of what its parent lent it.
//
// Toward its parent the page stays an ordinary volunteer (volunteer.js speaks
// to it); toward its children a TreeNode is what the root is to its own:
//
//   - a lender (lender.js) over the items the parent lent, whose holders are
//     the page's own workers (one holder) and each child;
//   - a child session per open data channel: hello checked against the page's
//     join key, the module with the tree's fields, lend/result/error/report/
//     heartbeat/status/answer frames, and its items lent again when it goes;
//   - an overlay: where a join goes (taken here while there is room, else
//     passed to the child with the nearest free slot), the JS twin of
//     pando/overlay.py; joins taken here are answered with an
//     RTCPeerConnection of the page's own;
//   - status frames up (the subtree's size, workers, free slots, and with
//     global monitoring a row per device below), reports up that include the
//     children's.
//
// The parent's lease is all a node holds: when its parent goes, it forgets
// every item, tells its children (reset), and joins again with its subtree;
// its children keep their links to it.
//
// What a child sends (names, messages) is checked by protocol.js and passed on
// as data; the page shows none of it as HTML.

import * as protocol from './protocol.js';
import { ChannelLink } from './link.js';
import { Lender } from './lender.js';
import { gathered } from './signal.js';

/** A join passed down more often than this is refused (the tree is never this deep). */
export const MAX_HOPS = 32;
/** Most joins passed down and not yet answered, and most waiting for room (each expires after the bootstrap timeout anyway). */
const MAX_PASSED = 1024;
const MAX_WAITING = 1024;
/** A subtree change reaches the parent within this many milliseconds. */
const STATUS_DELAY_MS = 200;
/** Most bytes of device rows a status frame carries (global monitoring); at most MAX_DEVICES rows. */
const MAX_ROWS_BYTES = 48 * 1024;
/** Lost holders after which an item fails here (and goes up as an error). */
const MAX_LOSSES = 3;
/** The data channel a joiner opens. */
const LABEL = 'pando';

const NO_KEY = 'wrong or missing join key: open the URL the root printed, with its #key=...';

/** A fresh node id: 16 hex digits. */
export function newNodeId() {
  const bytes = crypto.getRandomValues(new Uint8Array(8));
  return Array.from(bytes, (byte) => byte.toString(16).padStart(2, '0')).join('');
}

/** The join key a child sent against this page's, compared in a time that depends on the key's length only. */
function sameKey(given, key) {
  const a = new TextEncoder().encode(String(given));
  const b = new TextEncoder().encode(String(key));
  let differ = a.length ^ b.length;
  for (let i = 0; i < b.length; i++) differ |= (i < a.length ? a[i] : 0) ^ b[i];
  return b.length > 0 && differ === 0;
}

/** The largest frame a child holding `capacity` items can need: its results, escaped (pando/protocol.py's frame_limit). */
/** Items per worker a holder starts with: the batch size, or under an adaptive module what a session starts with. */
function startPerWorker(module) {
  return module.adaptive ? protocol.START_PER_WORKER : module.batchSize;
}

function frameLimit(capacity) {
  return Math.min(protocol.MAX_FRAME_BYTES, protocol.MAX_GREETING_BYTES + capacity * (6 * protocol.MAX_ITEM_BYTES + 64));
}

function describe(err) {
  return err && err.message ? err.message : String(err);
}

// -- where joins go: the JS twin of pando/overlay.py -----------------------------

/**
 * One node's view of the tree: its children (keys: their sessions) with their
 * subtrees from their latest status, and the joins it took but has not seen
 * open. Route a join with route(); tell the parent with summary().
 */
export class Overlay {
  constructor(degree, relay = true) {
    this.degree = relay ? degree : 0;
    this.subtrees = new Map(); // key -> {node, relay, workers, nodes, free, depth, nearest}
    this.joining = 0;
  }

  /**
   * A child joined; a relay has this node's degree of free slots until its
   * first status says otherwise. `joined`: it is a join this node accepted
   * (route()), which stops counting as under way at the same moment, so that
   * no other join takes its slot in between.
   */
  add(key, { node = '', relay = false, workers = 1 }, joined = false) {
    this.subtrees.set(key, {
      node, relay, workers, nodes: 1, free: relay ? this.degree : 0, depth: 0, nearest: relay ? 0 : null,
    });
    if (joined) this.joining = Math.max(0, this.joining - 1);
  }

  remove(key) {
    this.subtrees.delete(key);
  }

  /** A child's status. */
  update(key, { nodes, workers, free, depth, nearest }) {
    const child = this.subtrees.get(key);
    if (child) Object.assign(child, { nodes, workers, free, depth, nearest });
  }

  /** A join this node accepted failed (no answer, no channel, no hello): its slot is free again. */
  joinEnded() {
    this.joining = Math.max(0, this.joining - 1);
  }

  /**
   * Where a joiner bringing `nodes` goes: {accept: true} while there is room
   * here (counted against it until joinEnded()), else {forward: key} toward
   * the nearest free slot below (then the most free slots, then the smallest
   * subtree; never a node in `avoid`), else {wait: true} until the tree
   * changes (a node that takes no children: {refuse: message}).
   */
  route(nodes, avoid = [], hops = 0) {
    if (hops > MAX_HOPS) return { refuse: `the join went down ${MAX_HOPS} levels without finding room` };
    if (this.subtrees.size + this.joining < this.degree) {
      this.joining++;
      return { accept: true };
    }
    let best = null;
    for (const [key, child] of this.subtrees) {
      if (!child.relay || avoid.includes(child.node) || child.nearest === null) continue;
      const rank = [child.nearest, -child.free, child.nodes];
      if (!best || less(rank, best.rank)) best = { key, rank };
    }
    // A crowd arrives faster than statuses climb: holding its joins until room shows beats refusing them.
    if (!best) return this.degree ? { wait: true } : { refuse: 'this volunteer takes no children' };
    // Until its next status, count the slot this join will take: a burst of joins
    // spreads over the children instead of piling onto the one that looked roomiest.
    const child = this.subtrees.get(best.key);
    child.free = Math.max(0, child.free - 1);
    if (!child.free) child.nearest = null;
    return { forward: best.key };
  }

  /** This node's subtree, as its status frame tells its parent: itself with `ownWorkers` and all below. */
  summary(ownWorkers) {
    const children = [...this.subtrees.values()];
    const room = Math.max(0, this.degree - children.length - this.joining);
    const below = children.filter((c) => c.relay && c.nearest !== null).map((c) => c.nearest);
    return {
      nodes: 1 + children.reduce((sum, c) => sum + c.nodes, 0),
      workers: ownWorkers + children.reduce((sum, c) => sum + c.workers, 0),
      free: room + children.reduce((sum, c) => sum + c.free, 0),
      depth: children.length ? 1 + Math.max(...children.map((c) => c.depth)) : 0,
      nearest: room ? 0 : below.length ? 1 + Math.min(...below) : null,
    };
  }
}

function less(a, b) {
  for (let i = 0; i < a.length; i++) {
    if (a[i] !== b[i]) return a[i] < b[i];
  }
  return false;
}

// -- one child ------------------------------------------------------------------------

/** A child's session over its data channel: what the root's pando/session.py is to a volunteer. */
class Child {
  constructor(node, pc, channel) {
    this.node = node;
    this.id = '';
    this.label = 'a child';
    this.name = '';
    this.workers = 1;
    this.subtreeWorkers = 1; // what it is lent for
    this.capacity = 1; // items it may hold at once
    this.joined = false; // its hello was accepted
    this.subtree = false; // it has children: its end says nothing about any one item
    this.items = 0; // results of it accepted here
    this.rows = []; // its status's device rows (global monitoring)
    this.more = 0;
    this.over = false;
    const heartbeat = node.module.heartbeat;
    this.link = new ChannelLink(pc, channel, {
      clock: node.clock,
      silenceMs: Math.min(protocol.GREETING_MS, heartbeat), // the hello comes first, and soon
      maxBytes: protocol.MAX_GREETING_BYTES,
      peer: 'a child',
    });
    this.link.onmessage = (text) => this.receive(text);
    this.link.onclose = (reason) => this.ended(reason, false);
  }

  send(text) {
    return this.link.send(text);
  }

  receive(text) {
    if (this.over) return;
    let frame;
    try {
      frame = protocol.decode(text, protocol.FROM_CHILD);
      if (!this.joined && frame.type !== 'hello') throw new protocol.ProtocolError('the first frame must be hello');
      if (this.joined && frame.type === 'hello') throw new protocol.ProtocolError('a second hello');
    } catch (err) {
      this.node.log(`${this.label} sent a bad frame (${describe(err)}); closing its session`, true);
      this.close(1008, 'bad frame');
      return;
    }
    if (frame.type === 'hello') this.hello(frame);
    else this.node.fromChild(this, frame);
  }

  hello(frame) {
    const node = this.node;
    if (frame.protocol !== protocol.VERSION) {
      this.refuse(`this volunteer speaks Pando protocol ${protocol.VERSION}, not ${frame.protocol}; update the volunteer`);
      return;
    }
    if (frame.role !== 'volunteer' || !sameKey(frame.key, node.key)) {
      this.refuse(NO_KEY);
      return;
    }
    const { module } = node;
    if (module.raw && !frame.raw) {
      this.refuse('this run gives the function its items as text (--raw), which this volunteer would not; update the volunteer');
      return;
    }
    this.id = node.childId(frame.node);
    this.name = frame.name;
    this.workers = frame.workers;
    this.label = `child ${this.id}${frame.name ? ` (${frame.name})` : ''}`;
    this.joined = true;
    this.link.maxBytes = frameLimit(frame.workers * (module.adaptive ? protocol.MAX_PER_WORKER : module.batchSize));
    this.send(protocol.module({ ...module, id: this.id, tree: node.childTree() }));
    this.link.watch(1.5 * module.heartbeat); // a child silent this long is dropped
    node.childJoined(this, frame);
  }

  /** Tell an uninvited peer why, and nothing else. */
  refuse(message) {
    this.node.log(`refused a child: ${message}`, true);
    this.send(protocol.bye('refused', message));
    this.close(1008, 'refused');
  }

  lend(items) {
    for (const group of protocol.pack(items)) this.send(protocol.lend(group));
  }

  /** Pass a joiner's offer down to this child. */
  join(frame) {
    this.send(protocol.join(frame));
  }

  /** Everything lent to this child is void: this node lost its parent. */
  reset() {
    this.send(protocol.reset());
  }

  /** The job is over: say bye, then close. */
  finish() {
    this.send(protocol.bye('done'));
    this.close(1000, 'done');
  }

  /** Close the session ourselves: its items are lent again without counting against them. */
  close(code, reason) {
    this.link.close(code, reason);
    this.ended(reason, true);
  }

  /** The session is over (`byUs`: we closed it): its items go back to the lender. */
  ended(reason, byUs) {
    if (this.over) return;
    this.over = true;
    this.node.childLeft(this, reason, byUs);
  }
}

// -- the node -----------------------------------------------------------------------------

/** The page's own workers, as one holder of the lender. */
const OWN = Object.freeze({ label: "this page's workers" });

/**
 * The page as a node of the tree. `host` is the volunteer (volunteer.js):
 *   host.send(text)        a frame to the parent (false when there is no link now)
 *   host.give(items)       [id, text] pairs for the page's own workers
 *   host.deliver(results)  accepted [id, line] pairs to send up (grouped)
 *   host.fail(text)        an error frame to send up
 *   host.log(text, bad)    a line in the page's log
 * `module` is the parsed module frame (with its `tree`), `workers` the page's own, `pace` the page's
 * measures (protocol.Pace): under an adaptive module, children hold what they ask for, and so do
 * the page's own workers.
 */
export class TreeNode {
  constructor(host, { id, key, workers, relay, module, clock, pace }) {
    this.host = host;
    this.pace = pace;
    this.id = id;
    this.key = key;
    this.workers = workers;
    this.clock = clock;
    this.module = module;
    this.depth = module.tree.depth;
    this.parent = module.tree.node; // the parent's node id: avoided when joining again
    this.relay = relay && typeof RTCPeerConnection !== 'undefined';
    this.lender = new Lender({ maxLosses: MAX_LOSSES });
    this.ownCapacity = startPerWorker(module) * workers;
    this.lender.join(OWN, this.ownCapacity, { name: OWN.label, workers });
    this.overlay = new Overlay(module.tree.degree, this.relay);
    this.children = new Set(); // every open child session, joined or not yet
    this.answering = new Set(); // peer connections of joins taken here, not yet open
    this.passed = new Map(); // joiner -> {child, deadline}: joins passed down, answers owed up
    this.waiting = []; // {frame, deadline}: joins with no room yet, in order of arrival
    this.routing = false;
    this.usedIds = new Set([id]);
    this.figures = emptyFigures(); // the children's reports since the last one sent up
    this.statusTimer = null;
    this.statusEvery = null;
    this.dispatching = false;
    this.closed = false;
    this.every(module.reportingInterval);
    this.changed();
  }

  log(text, bad = false) {
    this.host.log(text, bad);
  }

  // -- toward the parent ---------------------------------------------------------

  /** Under a (new) parent: its module frame says this node's depth and the parent's id; `workers`: the page's now. */
  attached(module, workers) {
    this.module = module;
    this.workers = workers;
    this.depth = module.tree.depth;
    this.parent = module.tree.node;
    if (!module.adaptive) this.ownCapacity = module.batchSize * this.workers;
    this.lender.resize(OWN, this.ownCapacity, this.workers);
    this.every(module.reportingInterval);
    this.changed();
    this.dispatch();
  }

  /** The parent lent items. */
  lent(items) {
    this.lender.add(items);
    this.dispatch();
  }

  /** The parent is gone (or said reset): its lease is void here and below. */
  orphaned() {
    this.lender.clear();
    this.passed.clear();
    this.waiting = []; // their answers were owed to the parent that is gone
    for (const child of this.children) if (child.joined) child.reset();
  }

  /** A joiner's offer from the parent: take it here, pass it down, hold it until there is room, or say why not. */
  join(frame) {
    if (this.waiting.length >= MAX_WAITING) {
      this.host.send(protocol.answer(frame.from, '', 'too many joins under way; try again shortly'));
      return;
    }
    this.waiting.push({ frame, deadline: performance.now() + this.bootstrapMs });
    this.routeWaiting();
  }

  /** Route the waiting joins in order, until one must wait on (again after each change of the tree here). */
  routeWaiting() {
    if (this.routing) return; // a change made while routing: the loop below sees it
    this.routing = true;
    try {
      while (this.waiting.length) {
        const now = performance.now();
        for (const stale of this.waiting.filter((w) => w.deadline < now)) {
          this.host.send(protocol.answer(stale.frame.from, '', 'no room in the tree before the bootstrap timeout'));
        }
        this.waiting = this.waiting.filter((w) => w.deadline >= now);
        if (!this.waiting.length) return;
        const { frame } = this.waiting[0];
        const route = this.overlay.route(frame.nodes, frame.avoid, frame.hops);
        if (route.wait) return;
        this.waiting.shift();
        this.routeOne(frame, route);
      }
    } finally {
      this.routing = false;
    }
  }

  routeOne(frame, route) {
    if (route.accept) {
      this.answer(frame);
      this.changed();
    } else if (route.forward) {
      const now = performance.now();
      for (const [joiner, entry] of this.passed) if (entry.deadline < now) this.passed.delete(joiner);
      if (this.passed.size >= MAX_PASSED) {
        this.host.send(protocol.answer(frame.from, '', 'too many joins under way; try again shortly'));
        return;
      }
      this.passed.set(frame.from, { child: route.forward, deadline: now + this.bootstrapMs });
      route.forward.join({ ...frame, hops: frame.hops + 1 });
    } else {
      this.host.send(protocol.answer(frame.from, '', route.refuse));
    }
  }

  get bootstrapMs() {
    return this.module.tree.bootstrapTimeout * 1000;
  }

  /** What this node's subtree looks like to its parent. */
  summary() {
    return this.overlay.summary(this.workers);
  }

  /** The children's report figures since the last call, to add to the page's own report. */
  takeFigures() {
    const figures = this.figures;
    this.figures = emptyFigures();
    return figures;
  }

  /** The tree's part of a child's module frame. */
  childTree() {
    const { tree } = this.module;
    return {
      degree: tree.degree,
      node: this.id,
      depth: this.depth + 1,
      iceServers: tree.iceServers,
      bootstrapTimeout: tree.bootstrapTimeout,
      monitoring: tree.monitoring,
    };
  }

  /** A session id for a child: its node id if it sent a valid one not in use now, else a fresh one (rows of
   * the tree name their parent by node id: a child's id is its node id whenever it can be). */
  childId(preferred) {
    let id = preferred;
    while (!id || !protocol.NODE_ID.test(id) || this.usedIds.has(id)) id = newNodeId();
    this.usedIds.add(id);
    return id;
  }

  // -- the page's own workers -------------------------------------------------------

  /** A worker's answer: ['ok', id, line] or ['error', id, message, traceback]. */
  ownAnswer(answer) {
    if (answer[0] === 'ok') {
      const accepted = this.lender.complete(OWN, [[answer[1], answer[2]]]);
      if (accepted.length) this.host.deliver(accepted);
    } else {
      const [, id, message, traceback] = answer;
      const failure = this.lender.fail(OWN, id, traceback || message);
      if (failure) this.host.fail(protocol.error({ id, message, traceback: failure.details }));
    }
    this.dispatch();
  }

  /** A worker died (or overran the timeout) under an item. */
  ownLost(id, message) {
    this.failedHere(this.lender.lost(OWN, id, message));
    this.dispatch();
  }

  // -- children ------------------------------------------------------------------------

  /** Answer a joiner's offer with a peer connection of this page's; its data channel becomes a child. */
  async answer(frame) {
    let pc = null;
    let timer = null;
    let state = 'answering'; // then 'open' (a child session has the channel) or 'over' (the join failed)
    const fail = () => {
      if (state !== 'answering') return;
      state = 'over';
      if (timer !== null) this.clock.cancel(timer);
      this.answering.delete(entry);
      if (pc) pc.close();
      this.overlay.joinEnded(); // the slot it held is free again
      this.changed();
    };
    const entry = { close: fail };
    try {
      pc = new RTCPeerConnection({ iceServers: this.module.tree.iceServers });
      const connection = pc;
      this.answering.add(entry);
      // A channel not open in time: the join is abandoned here, as on the joiner's side.
      timer = this.clock.after(this.bootstrapMs, fail);
      let taken = false;
      connection.ondatachannel = (event) => {
        const { channel } = event;
        if (taken || channel.label !== LABEL) return; // one channel per connection, ours
        taken = true;
        const open = () => {
          if (state !== 'answering') return;
          if (this.closed) {
            fail();
            return;
          }
          state = 'open';
          this.clock.cancel(timer);
          this.answering.delete(entry);
          // The slot stays taken until the child's hello (or its session's end without one).
          this.children.add(new Child(this, connection, channel));
        };
        if (channel.readyState === 'open') open();
        else channel.addEventListener('open', open, { once: true });
      };
      await connection.setRemoteDescription({ type: 'offer', sdp: frame.sdp });
      await connection.setLocalDescription(await connection.createAnswer());
      await gathered(connection, this.clock);
      if (state !== 'answering') return; // abandoned meanwhile (the page stopped)
      const sdp = connection.localDescription.sdp;
      if (sdp.length > protocol.MAX_SDP) throw new Error('the answer is too large');
      this.host.send(protocol.answer(frame.from, sdp));
    } catch (err) {
      if (state !== 'answering') return;
      this.log(`cannot answer a joiner: ${describe(err)}`, true);
      fail();
      this.host.send(protocol.answer(frame.from, '', 'cannot answer this offer'));
    }
  }

  /** The page's workers were timed again: under an adaptive module, they hold what covers a refill. */
  ownPaced() {
    const own = this.module.adaptive ? this.pace.own() : null;
    if (own === null || own === this.ownCapacity) return;
    this.ownCapacity = own;
    this.lender.resize(OWN, own, this.workers);
    this.dispatch();
  }

  /** What to ask the parent for (protocol.Pace.want): the own workers' share, and the children's. */
  want() {
    let children = 0;
    for (const child of this.children) if (child.joined) children += child.capacity;
    return this.pace.want(children);
  }

  childJoined(child, hello) {
    child.subtreeWorkers = hello.workers; // its subtree's, from its next status on
    child.capacity = hello.workers * startPerWorker(this.module);
    this.lender.join(child, child.capacity, { name: child.label, workers: hello.workers });
    this.overlay.add(child, { node: child.id, relay: hello.relay, workers: hello.workers }, true);
    this.log(`${child.label} joined with ${hello.workers} worker(s)`);
    this.changed();
    this.dispatch();
  }

  /** A frame from a child that said hello. */
  fromChild(child, frame) {
    const { batchSize, adaptive } = this.module;
    switch (frame.type) {
      case 'result': {
        if (adaptive && frame.want !== null) {
          child.capacity = Math.min(frame.want, child.subtreeWorkers * protocol.MAX_PER_WORKER);
          this.lender.resize(child, child.capacity, child.subtreeWorkers);
        }
        const accepted = this.lender.complete(child, frame.results);
        if (accepted.length) {
          child.items += accepted.length;
          this.pace.relayed(accepted.length);
          this.host.deliver(accepted);
        }
        this.dispatch();
        break;
      }
      case 'error':
        if (frame.id === null) {
          this.log(`${child.label} cannot run the module: ${frame.message.split('\n')[0]}`, true);
          child.close(1000, 'cannot run the module');
        } else if (frame.lost) {
          this.failedHere(this.lender.lost(child, frame.id, frame.message));
          this.dispatch();
        } else {
          const failure = this.lender.fail(child, frame.id, frame.traceback || frame.message);
          if (failure) this.host.fail(protocol.error({ id: frame.id, message: frame.message, traceback: failure.details }));
          this.dispatch();
        }
        break;
      case 'report':
        for (const key of Object.keys(this.figures)) this.figures[key] += frame[key];
        break;
      case 'heartbeat':
        child.send(protocol.heartbeat());
        break;
      case 'status':
        child.subtree = frame.nodes > 1;
        child.rows = frame.devices || [];
        child.more = frame.more;
        child.subtreeWorkers = Math.max(1, frame.workers);
        if (!adaptive) child.capacity = child.subtreeWorkers * batchSize;
        this.lender.resize(child, child.capacity, child.subtreeWorkers);
        this.overlay.update(child, frame);
        this.changed();
        this.dispatch();
        break;
      case 'answer': {
        const entry = this.passed.get(frame.to);
        if (entry && entry.child === child) {
          this.passed.delete(frame.to);
          this.host.send(protocol.answer(frame.to, frame.sdp, frame.message));
        }
        break;
      }
      default:
        break;
    }
  }

  /** A child's session ended: what it held is lent again, within this node first. */
  childLeft(child, reason, byUs) {
    this.children.delete(child);
    if (!child.joined) {
      this.overlay.joinEnded(); // the slot its join held is free again
      this.changed();
      return;
    }
    // Only a child that vanished counts against its items, and not one with a subtree (an interior death).
    const failures = this.lender.leave(child, { blameItems: !byUs && !child.subtree });
    for (const failure of failures) this.failedHere(failure);
    this.overlay.remove(child);
    this.usedIds.delete(child.id); // the same device joining again gets its own id back
    for (const [joiner, entry] of this.passed) if (entry.child === child) this.passed.delete(joiner);
    if (!byUs) this.log(`${child.label} left${reason ? `: ${reason}` : ''}`, true);
    this.changed();
    this.dispatch();
  }

  /** An item that failed in this subtree (lost too often): the parent decides. */
  failedHere(failure) {
    if (failure) this.host.fail(protocol.error({ id: failure.id, message: 'failed below', traceback: failure.details }));
  }

  /** Lend what there is to whoever has room: soon, once, after whatever changed. */
  dispatch() {
    if (this.dispatching || this.closed) return;
    this.dispatching = true;
    queueMicrotask(() => {
      this.dispatching = false;
      if (this.closed) return;
      for (const [holder, items] of this.lender.assign()) {
        if (holder === OWN) this.host.give(items);
        else holder.lend(items);
      }
    });
  }

  // -- status up ----------------------------------------------------------------------------

  /** The subtree changed: the parent hears of it within STATUS_DELAY_MS (a burst goes as one status). */
  changed() {
    this.routeWaiting();
    if (this.statusTimer !== null || this.closed) return;
    this.statusTimer = this.clock.after(STATUS_DELAY_MS, () => {
      this.statusTimer = null;
      this.sendStatus();
    });
  }

  every(seconds) {
    if (this.statusEvery !== null) this.clock.cancel(this.statusEvery);
    this.statusEvery = this.clock.every(Math.max(100, seconds * 1000), () => this.sendStatus());
  }

  sendStatus() {
    if (this.closed) return;
    const summary = this.summary();
    const frame = { ...summary };
    if (this.module.tree.monitoring === 'global') Object.assign(frame, this.rows());
    this.host.send(protocol.status(frame));
  }

  /** A row per device below, depth counted from this node, within a frame's limits; and how many did not fit. */
  rows() {
    const all = [];
    let more = 0;
    for (const child of this.children) {
      if (!child.joined) continue;
      all.push({ id: child.id, name: child.name, parent: this.id, depth: 1, items: child.items, workers: child.workers });
      for (const row of child.rows) all.push({ ...row, depth: row.depth + 1 });
      more += child.more;
    }
    const devices = [];
    let size = 0;
    for (const row of all.slice(0, protocol.MAX_DEVICES)) {
      size += JSON.stringify(row).length + 1;
      if (size > MAX_ROWS_BYTES) break;
      devices.push(row);
    }
    return { devices, more: more + all.length - devices.length };
  }

  // -- the end --------------------------------------------------------------------------------

  /** The job is over: every child hears so, and this node stops. */
  finish() {
    for (const child of [...this.children]) {
      if (child.joined) child.finish();
      else child.close(1000, 'done');
    }
    this.close();
  }

  /** This page stops being a node: children lose their link to it and join the tree elsewhere. */
  close() {
    if (this.closed) return;
    this.closed = true;
    if (this.statusTimer !== null) this.clock.cancel(this.statusTimer);
    if (this.statusEvery !== null) this.clock.cancel(this.statusEvery);
    this.statusTimer = null;
    this.statusEvery = null;
    for (const entry of [...this.answering]) entry.close(); // each join under way fails
    this.answering.clear();
    for (const child of [...this.children]) child.close(1000, 'the page stopped');
    this.lender.clear();
  }
}

function emptyFigures() {
  return { items: 0, cpu_time: 0, data_transfer_time: 0, units: 0 };
}
