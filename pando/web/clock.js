// Timers that keep time in a background tab.
//
// A hidden tab's main-thread timers are throttled to one a second or less; a
// worker's are not. Heartbeats, answer flushing, reconnection and a link's
// silence watchdog must keep going when the tab is hidden, so they run on a
// tiny timer worker. Without workers (or if it fails) the page's own timers
// stand in.

const CLOCK_SOURCE = `
const timers = new Map();
onmessage = (event) => {
  const { op, id, ms } = event.data;
  if (op === 'after') timers.set(id, setTimeout(() => { timers.delete(id); postMessage(id); }, ms));
  else if (op === 'every') timers.set(id, setInterval(() => postMessage(id), ms));
  else if (op === 'cancel') { clearTimeout(timers.get(id)); clearInterval(timers.get(id)); timers.delete(id); }
};`;

export class Clock {
  constructor() {
    this.next = 1;
    this.callbacks = new Map();
    this.repeating = new Set();
    this.worker = null;
    try {
      const url = URL.createObjectURL(new Blob([CLOCK_SOURCE], { type: 'text/javascript' }));
      this.worker = new Worker(url);
      this.worker.onmessage = (event) => this.fire(event.data);
      this.worker.onerror = () => {
        this.worker = null; // fall back to the page's own timers
      };
    } catch {
      this.worker = null;
    }
  }

  fire(id) {
    const callback = this.callbacks.get(id);
    if (!callback) return;
    if (!this.repeating.has(id)) this.callbacks.delete(id);
    callback();
  }

  start(op, ms, callback) {
    const id = this.next++;
    this.callbacks.set(id, callback);
    if (op === 'every') this.repeating.add(id);
    if (this.worker) {
      this.worker.postMessage({ op, id, ms });
    } else {
      const handle = op === 'every' ? setInterval(() => this.fire(id), ms) : setTimeout(() => this.fire(id), ms);
      this.callbacks.get(id).handle = handle;
    }
    return id;
  }

  /** Call `callback` once, `ms` from now; returns an id for cancel(). */
  after(ms, callback) {
    return this.start('after', ms, callback);
  }

  /** Call `callback` every `ms`; returns an id for cancel(). */
  every(ms, callback) {
    return this.start('every', ms, callback);
  }

  /** Stop a timer (an unknown or finished id is ignored). */
  cancel(id) {
    const callback = this.callbacks.get(id);
    if (!callback) return;
    this.callbacks.delete(id);
    this.repeating.delete(id);
    if (this.worker) this.worker.postMessage({ op: 'cancel', id });
    else if (callback.handle !== undefined) {
      clearTimeout(callback.handle);
      clearInterval(callback.handle);
    }
  }

  /** A promise that resolves after `ms`. */
  sleep(ms) {
    return new Promise((resolve) => this.after(ms, resolve));
  }
}

let shared = null;

/** The page's one clock (one timer worker for everything). */
export function pageClock() {
  if (!shared) shared = new Clock();
  return shared;
}
