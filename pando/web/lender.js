// The lending rules of pando/lender.py, for a page that relays: what its parent
// lent it goes to its own workers and to its children exactly as a Python relay
// would lend it. test/test_lender_js.py checks every call against the Python
// Lender on the same random call sequences.
//
// Only what a relay uses is here: pando/node.py builds its lender as
// Lender(retries=0, halt_on_failure=False, straggler_floor=math.inf). So there
// is no verification (the root verifies), no timeout, lease or sweep, no
// straggler copies, no local holder, no retries (an error fails its item at
// once) and no halt after a failure (the relay passes failures up and the root
// decides). No lock either: a page has one thread.
//
// The rules kept:
// - a holder holds at most its capacity (at least 1); resizing below what it
//   holds takes nothing back, it just gets nothing more for a while;
// - with fewer items than room, every holder first gets one item per idle
//   worker, and only then items to queue;
// - items lent again go before new ones, the oldest (smallest id) first; new
//   ones go in the order they came;
// - holders are served in the order they got room;
// - a result counts only from a holder with a live copy of the item;
// - an item whose holders were lost maxLosses times fails instead of going out
//   again; a holder that leaves costs a loss only to the items it could have
//   been computing (its first items, one per worker, in the order it got them);
// - a copy whose item was done elsewhere stays counted against its holder until
//   that holder answers for it (at a relay this happens only when the parent
//   lends an id it still holds again).
//
// Holders are any values (Map keys). A failure is {id, value, details, holder},
// holder being the name given to join() (String(holder) without one), like
// Python's Failure; its details read word for word as Python's.

/** Lost holders after which an item fails instead of being lent again. */
export const MAX_LOSSES = 3;

export class Lender {
  constructor({ maxLosses = MAX_LOSSES } = {}) {
    this._maxLosses = maxLosses;
    this._values = new Map(); // every item not yet done or failed: id -> text
    // Those lent at least once: id -> {copies: Set of holders with a live copy, losses, queued}. An item
    // is queued while its id is in _again, and only an item no holder has a copy of is: the heap goes
    // before new ids, so a queued item is lent from the heap before any second entry of its id.
    this._items = new Map();
    this._fresh = []; // ids never lent, in input order, from _freshStart on
    this._freshStart = 0;
    this._again = []; // min-heap of ids that want another copy
    this._holders = new Map(); // holder -> {name, capacity, held: Set of ids, live or stale}
    // Holders with room, in the order they got room (Map keeps insertion order,
    // and setting a key already there leaves it in place, as Python's dict does).
    this._hungry = new Map();
    // Holders with a worker that has nothing to do, in the order they came to that.
    this._idle = new Map();
    this._counts = { lent: 0, relent: 0, done: 0, failed: 0 };
  }

  /** New items from the parent: [[id, text], ...]. */
  add(items) {
    for (const [id, value] of items) {
      this._values.set(id, value);
      this._fresh.push(id);
    }
  }

  /** A holder starts holding items, at most `capacity` at a time, computed by `workers` (default: capacity). */
  join(holder, capacity, { name = '', workers = null } = {}) {
    if (this._holders.has(holder)) {
      throw new Error(`${String(holder)} has already joined`); // would silently drop what it holds
    }
    const room = Math.max(1, capacity);
    this._holders.set(holder, { name: name || String(holder), capacity: room, workers: Math.max(1, workers || room), held: new Set() });
    this._recheck(holder);
  }

  /**
   * A holder is gone: lend its items again; return those that ran out of
   * holders. The loss counts against the items it could have been computing;
   * blameItems false (it broke the protocol, say) lends them all again
   * without counting a loss.
   */
  leave(holder, { blameItems = true } = {}) {
    const holding = this._holders.get(holder);
    if (holding === undefined) return [];
    this._holders.delete(holder);
    this._hungry.delete(holder);
    this._idle.delete(holder);
    const failures = [];
    // Items computed in the order they came: only the first, one per worker, can have been running.
    const running = new Set(blameItems ? [...holding.held].slice(0, holding.workers) : []);
    for (const id of [...holding.held].sort((a, b) => a - b)) {
      const item = this._items.get(id);
      if (item === undefined || !item.copies.has(holder)) continue; // a stale copy: nothing to give back
      item.copies.delete(holder);
      if (!running.has(id)) {
        this._wantAgain(id, item);
      } else {
        const failure = this._lose(id, item, holding.name, 'its volunteer disconnected');
        if (failure !== null) failures.push(failure);
      }
    }
    return failures;
  }

  /** A holder may now hold `capacity` items (its subtree changed, it asked), with `workers` if given; nothing is taken back. */
  resize(holder, capacity, workers = null) {
    const holding = this._holders.get(holder);
    if (holding === undefined) return;
    holding.capacity = Math.max(1, capacity);
    if (workers !== null) holding.workers = Math.max(1, workers);
    this._recheck(holder);
  }

  /** Forget every item (the parent's lease is void); holders stay, holding nothing. */
  clear() {
    this._values.clear();
    this._items.clear();
    this._fresh = [];
    this._freshStart = 0;
    this._again = [];
    for (const [holder, holding] of this._holders) {
      holding.held.clear();
      this._recheck(holder);
    }
  }

  /**
   * Fill every holder's free room: [[holder, [[id, text], ...]], ...], holders that got nothing left out.
   * With fewer items than room, every holder first gets one per idle worker, then items to queue.
   */
  assign() {
    const out = new Map();
    if (this._nothingLeft()) return [];
    const hungry = [...this._hungry.keys()];
    const supply = this._again.length + this._fresh.length - this._freshStart;
    let room = 0;
    for (const holder of hungry) room += this._free(this._holders.get(holder));
    if (supply < room) {
      for (const holder of [...this._idle.keys()]) {
        const holding = this._holders.get(holder);
        const idle = Math.min(this._free(holding), holding.workers - holding.held.size);
        if (idle > 0) {
          this._fill(holder, holding, idle, out);
          if (this._nothingLeft()) break;
        }
      }
    }
    for (const holder of hungry) {
      if (this._nothingLeft()) break;
      const holding = this._holders.get(holder);
      if (this._fill(holder, holding, this._free(holding), out) === 0) this._hungry.delete(holder);
    }
    return [...out];
  }

  _nothingLeft() {
    return this._again.length === 0 && this._freshStart === this._fresh.length;
  }

  /**
   * Lend `holder` up to `free` items into `out`; the room left. Counted down per item lent, not
   * recomputed: an id the parent lent twice may go to a holder that already has it, and counts all the same.
   */
  _fill(holder, holding, free, out) {
    let items = out.get(holder);
    if (items === undefined) {
      items = [];
      out.set(holder, items);
    }
    const before = items.length;
    let left = free;
    while (left > 0) {
      const id = this._next();
      if (id === undefined) break;
      let item = this._items.get(id);
      if (item === undefined) {
        item = { copies: new Set(), losses: 0, queued: false };
        this._items.set(id, item);
      }
      item.copies.add(holder);
      holding.held.add(id);
      items.push([id, this._values.get(id)]);
      left -= 1;
    }
    if (holding.held.size >= holding.workers) this._idle.delete(holder);
    this._counts.lent += items.length - before;
    if (items.length === 0) out.delete(holder);
    return left;
  }

  /** Results from a holder: the [[id, line], ...] accepted (held live by it, not done before). */
  complete(holder, results) {
    const accepted = [];
    const holding = this._holders.get(holder);
    if (holding === undefined) return accepted;
    for (const [id, line] of results) {
      if (!holding.held.delete(id)) continue; // not held by it (any more)
      const item = this._items.get(id);
      if (item === undefined || !item.copies.has(holder)) continue; // a stale copy: done elsewhere
      this._values.delete(id);
      this._items.delete(id); // any other copy turns stale: its answer will be dropped
      accepted.push([id, line]);
    }
    this._counts.done += accepted.length;
    this._recheck(holder);
    return accepted;
  }

  /** The function failed on an item: with no retries at a relay, it fails at once. A failure, or null. */
  fail(holder, id, details) {
    const holding = this._release(holder, id);
    if (holding === null) return null;
    // Python words the attempt "attempt 1, on NAME:\n" + details and reports what
    // follows the first ':\n': the same text, for any name.
    const attempt = `attempt 1, on ${holding.name}:\n${details}`;
    return this._failed(id, attempt.slice(attempt.indexOf(':\n') + 2), holding.name);
  }

  /** A holder lost one item's computation (a worker died): lend it again, or fail it. A failure, or null. */
  lost(holder, id, reason) {
    const holding = this._release(holder, id);
    if (holding === null) return null;
    return this._lose(id, this._items.get(id), holding.name, reason);
  }

  /** The ids a holder holds, stale copies included (a new Set). */
  held(holder) {
    const holding = this._holders.get(holder);
    return new Set(holding === undefined ? [] : holding.held);
  }

  /** Items added and not yet done or failed. */
  pending() {
    return this._values.size;
  }

  /** Items lent (each time), lent again, done and failed so far. */
  counts() {
    return { ...this._counts };
  }

  // -- the rules --------------------------------------------------------

  _free(holding) {
    return holding.capacity - holding.held.size;
  }

  /** Keep _hungry and _idle true to a holder's room and load after either changed. */
  _recheck(holder) {
    const holding = this._holders.get(holder);
    if (holding.held.size < holding.workers) {
      if (!this._idle.has(holder)) this._idle.set(holder, true);
    } else {
      this._idle.delete(holder);
    }
    if (this._free(holding) > 0) {
      if (!this._hungry.has(holder)) this._hungry.set(holder, true);
    } else {
      this._hungry.delete(holder);
    }
  }

  /** The next id to lend: one wanting another copy first, the smallest; then the oldest new one. */
  _next() {
    while (this._again.length > 0) {
      const id = heapPop(this._again);
      const item = this._items.get(id);
      if (item === undefined || !item.queued) continue; // done or failed meanwhile: the entry is void
      item.queued = false;
      return id;
    }
    while (this._freshStart < this._fresh.length) {
      const id = this._fresh[this._freshStart++];
      if (this._freshStart * 2 > this._fresh.length && this._freshStart > 1024) {
        this._fresh = this._fresh.slice(this._freshStart);
        this._freshStart = 0;
      }
      // An id the parent lent twice may be done before its second entry comes up:
      // skipped, as the heap skips ids done meanwhile (Python's Lender raises
      // KeyError there; test_lender_js.py marks it).
      if (this._values.has(id)) return id;
    }
    return undefined;
  }

  /** Take a holder's live copy of an item back; its holding, or null if it held none (or a stale one). */
  _release(holder, id) {
    const holding = this._holders.get(holder);
    if (holding === undefined || !holding.held.delete(id)) return null;
    this._recheck(holder);
    const item = this._items.get(id);
    if (item === undefined || !item.copies.has(holder)) return null; // a stale copy: its holder answered at last
    item.copies.delete(holder);
    return holding;
  }

  _lose(id, item, name, reason) {
    item.losses += 1;
    if (item.losses >= this._maxLosses) {
      return this._failed(id, `lost ${item.losses} times; the last time ${reason} (${name})`, name);
    }
    this._wantAgain(id, item);
    return null;
  }

  /** An item lost a copy: lend it again if no other holder has one. */
  _wantAgain(id, item) {
    if (item.copies.size > 0) return;
    item.queued = true;
    heapPush(this._again, id);
    this._counts.relent += 1;
  }

  _failed(id, details, name) {
    this._items.delete(id);
    const value = this._values.get(id);
    this._values.delete(id);
    this._counts.failed += 1;
    return { id, value, details, holder: name };
  }
}

function heapPush(heap, value) {
  let i = heap.push(value) - 1;
  while (i > 0) {
    const parent = (i - 1) >> 1;
    if (heap[parent] <= value) break;
    heap[i] = heap[parent];
    i = parent;
  }
  heap[i] = value;
}

function heapPop(heap) {
  const top = heap[0];
  const last = heap.pop();
  if (heap.length > 0) {
    let i = 0;
    for (;;) {
      let child = 2 * i + 1;
      if (child >= heap.length) break;
      if (child + 1 < heap.length && heap[child + 1] < heap[child]) child += 1;
      if (heap[child] >= last) break;
      heap[i] = heap[child];
      i = child;
    }
    heap[i] = last;
  }
  return top;
}
