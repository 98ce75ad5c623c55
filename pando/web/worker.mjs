// One Pando worker: a Pyodide interpreter running the user's module.
//
// The page starts several of these (module workers: Pyodide refuses classic
// ones), as soon as it starts joining: Python starts while the root's module
// is still on its way. Messages from the page:
//   {type: 'boot', snapshot, makeSnapshot}     start Python and the pando helpers: from `snapshot`
//                                              ({key, blob} or null) if it fits, else afresh, then
//                                              post a snapshot if `makeSnapshot`
//   {type: 'load', filename, source, bundle, raw, interval, timeout}
//                                              load the module (once Python is up), with the files
//                                              of its bundle (base64, or ''); report every
//                                              `interval` seconds; with `raw`, the function gets
//                                              each item's text as it is
//   {type: 'items', items: [[id, text], ...]}  compute these, in order
//   {type: 'interval', interval}               report every `interval` seconds from now on
//   {type: 'timeout', timeout}                 the run's --timeout (seconds, or null) from now on
// Messages to the page:
//   {type: 'snapshot', key, bytes}             Python's memory just after its start, and what it fits
//   {type: 'booted', restored}                 Python and the helpers are up (from a snapshot or not)
//   {type: 'ready', ms, steps}                 the module is loaded (steps: timings in ms)
//   {type: 'broken', message}                  the module cannot run here (its fault)
//   {type: 'failed', message}                  Pyodide could not start (not the module's fault)
//   {type: 'unserved', message}                the root serves no Pyodide: no worker can start
//   {type: 'answers', answers}                 JSON text of [["ok", id, line] | ["error", id, message, traceback], ...]
//   {type: 'fatal', message}                   the interpreter died; this worker is unusable
//   {type: 'report', report}                   JSON text of {items, cpu_time, data_transfer_time, units}
//                                              for the interval that just ended (pando.reporting.take)
// A snapshot (Pyodide's memory snapshot, taken before any module code runs)
// spares the slowest part of a start: Python importing its own modules, which
// Pyodide ships as source. It fits only the same Pyodide, helpers and BOOT
// code: its key says which.
// Reports fall on multiples of the interval of the shared clock (Date.now()),
// so the page, which sums its workers' reports, can send one just after each
// boundary. A worker that is busy reports from its item loop, one that is
// idle from a timer; a worker that did nothing in an interval stays silent.
// Answers come in the order the items were given. Every error is caught and
// posted, so that a failure never leaves the page waiting.
// With a timeout, each answer is posted as soon as its item is done: the page
// then knows which item runs (the first it has no answer for) and since when,
// and terminates this worker if that takes too long. Nothing here can stop
// an item: while Python runs, this worker reads no message.

const HELPERS = ['__init__.py', 'module.py', 'items.py', 'reporting.py', 'bundle.py'];
const PYODIDE = './node_modules/pyodide/pyodide.mjs';
const INDEX_URL = new URL('./node_modules/pyodide/', import.meta.url).href;
const LIB = '/home/pyodide/.pando-lib';
const FLUSH_SECONDS = 0.005; // answers are gathered this long before they are posted (without a timeout): pace.py's

// Runs once in the interpreter after the helpers are in place. Items go in and
// answers come out as JSON text: cheaper than proxying many small objects.
const BOOT = `
import asyncio, json, math, os, sys, tempfile, time
sys.path.insert(0, ${JSON.stringify(LIB)})
from pando import bundle as _bundle, items as _items, module as _module, reporting as _reporting
_items.allow_big_integers()

_FLUSH_SECONDS = ${FLUSH_SECONDS}
_NO_PACKAGES = (
    "\\n(browser volunteers run Pyodide offline: Python's standard library, and the pure-Python "
    "modules and packages the root sends with the module; one that needs others can run on native "
    "volunteers: pando-volunteer)"
)


# This interval's own measures: items answered and CPU seconds spent on them.
_count = 0
_cpu = 0.0
_every = 3.0  # seconds between reports
_next = None  # time.time() of the next report, once the module is loaded


def _set_interval(seconds):
    global _every, _next
    _every = max(0.05, float(seconds))
    _next = _boundary(time.time())


def _boundary(now):
    return (math.floor(now / _every) + 1) * _every


def _report_due():
    """Post the interval's report if a boundary has passed; the seconds to the next one."""
    global _count, _cpu, _next
    now = time.time()
    if _next is None:
        return _every
    if now >= _next:
        _next = _boundary(now)
        report = _reporting.take(_count, _cpu)
        _count = 0
        _cpu = 0.0
        if any(report.get(key) for key in ("items", "cpu_time", "data_transfer_time", "units")):
            _post_report(json.dumps(report))
    return max(0.0, _next - now)


def _place(filename, source):
    """Write the module where its tracebacks say it is, so they show its lines."""
    try:
        path = filename if os.path.isabs(filename) else os.path.join(os.getcwd(), filename)
        os.makedirs(os.path.dirname(path) or "/", exist_ok=True)
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(source)
    except (OSError, ValueError):
        pass  # tracebacks then lack the source lines, nothing worse


def _load(filename, source, files, raw):
    """Load the user's module, its bundle (base64 files) unpacked first; None, or the text saying why it cannot run."""
    global _fn, _raw
    _raw = bool(raw)
    _place(filename, source)
    if files:
        folder = tempfile.mkdtemp(prefix="pando-job-")  # this worker's own file system: private to it
        try:
            _bundle.unpack(files, folder)
        except _bundle.BundleError as exc:
            return f"the module's files from the root are refused: {exc}"
        _bundle.use(folder)
    try:
        _fn = _module.load(source, filename)
    except _module.ModuleError as exc:
        text = str(exc)
        if "ModuleNotFoundError" in text or "is included in the Pyodide distribution" in text:
            text += _NO_PACKAGES
        return text
    return None


async def _compute(item_id, text):
    loop = asyncio.get_running_loop()
    outcome = loop.create_future()

    def callback(err=None, result=None):
        if not outcome.done():  # only the first call counts
            outcome.set_result((err, result))

    try:
        _fn(_items.value(text, _raw), callback)
    except BaseException as exc:  # noqa: B036 - even SystemExit must not kill the worker
        return _module.answer(item_id, exc, None)
    return _module.answer(item_id, *(await outcome))


async def _run(batch, post, flush_seconds=_FLUSH_SECONDS):
    """Compute a JSON list of [id, text]; post answers every flush_seconds, return the rest."""
    global _count, _cpu
    answers = []
    flushed = time.monotonic()
    for item_id, text in json.loads(batch):
        started = time.process_time()
        answers.append(await _compute(item_id, text))
        _cpu += time.process_time() - started
        _count += 1
        if _next is not None and time.time() >= _next:
            _report_due()
        if time.monotonic() - flushed >= flush_seconds:
            post(json.dumps(answers, ensure_ascii=False))
            answers = []
            flushed = time.monotonic()
    return json.dumps(answers, ensure_ascii=False)
`;

// Runs in an interpreter restored from a snapshot, instead of BOOT: every
// restored interpreter would otherwise draw the same random numbers.
const RESTORED = `
import sys
if "random" in sys.modules:
    sys.modules["random"].seed()
`;

let pyodide = null;
let run = null; // the Python _run coroutine function
let booting = null; // the promise of Python's start (true once up), from the page's 'boot'
let loading = null; // the promise of the module's load, while it runs
let label = 'pando'; // printed before the lines Python writes: the module's file name once known
const queue = []; // [id, text] pairs not yet computed
let working = false;
let interval = 3; // seconds between reports
let flushSeconds = FLUSH_SECONDS; // 0 with a timeout: each answer at once
let reportDue = null; // the Python _report_due function, once the module is loaded
let reportTimer = null;
const started = performance.now();
const steps = {}; // milliseconds since this worker started, for the page's log

// Downloads start with the worker, while the page still looks for a snapshot.
const pyodideModule = import(PYODIDE);
// loadPyodide imports Pyodide's runtime only once pyodide.mjs has run: asked now, it comes meanwhile.
import(new URL('pyodide.asm.mjs', INDEX_URL).href).catch(() => {}); // loadPyodide reports a failure
const helperTexts = Promise.all(
  HELPERS.map(async (name) => {
    const url = new URL(`./py/pando/${name}`, import.meta.url);
    const answer = await fetch(url);
    if (!answer.ok) throw new Error(`cannot fetch ${url.pathname}: HTTP ${answer.status}`);
    return [name, await answer.text()];
  }),
);
pyodideModule.catch(() => {}); // reported once awaited, in boot()
helperTexts.catch(() => {});

function describe(err) {
  if (err && typeof err === 'object') {
    // A PythonError's message is the Python traceback; for anything else the stack says more.
    if (err.constructor && err.constructor.name === 'PythonError') return String(err.message);
    return String(err.stack || err.message || err);
  }
  return String(err);
}

function post(message) {
  self.postMessage(message);
}

function step(name) {
  steps[name] = Math.round(performance.now() - started);
}

/** Report when the next boundary passes (the item loop reports itself while busy). */
function scheduleReport(seconds) {
  clearTimeout(reportTimer);
  if (!reportDue) return;
  reportTimer = setTimeout(() => {
    let next = interval;
    try {
      next = reportDue();
    } catch (err) {
      console.warn(`pando worker: cannot report: ${describe(err)}`);
    }
    scheduleReport(next);
  }, Math.ceil(seconds * 1000) + 2);
}

function applyTimeout(seconds) {
  flushSeconds = typeof seconds === 'number' && seconds > 0 ? 0 : FLUSH_SECONDS;
}

function applyInterval(seconds) {
  if (typeof seconds !== 'number' || !(seconds > 0)) return;
  interval = seconds;
  if (!reportDue) return;
  const set = pyodide.globals.get('_set_interval');
  try {
    set(seconds);
  } finally {
    set.destroy();
  }
  scheduleReport(reportDue());
}

/**
 * Why Pyodide cannot come from the root, if the root answers that it has none
 * (a pando installed without it); null if it serves Pyodide or cannot be asked.
 */
async function unserved() {
  const url = new URL(PYODIDE, import.meta.url);
  try {
    const answer = await fetch(url, { cache: 'no-store' });
    await answer.body?.cancel();
    if (answer.status !== 404) return null;
  } catch {
    return null; // the network failed: starting again may work
  }
  return `the root has no Pyodide to serve (${url.pathname}: not found); ` +
    'its pando was installed without it, and said at start-up what to run there';
}

/** Python restored from a snapshot, or null (said on the console) if the snapshot does not fit this browser. */
async function restore(loadPyodide, options, blob) {
  try {
    const restored = await loadPyodide({ ...options, _loadSnapshot: blob.arrayBuffer() });
    restored.runPython(RESTORED);
    return restored;
  } catch (err) {
    console.warn(`pando worker: cannot restore Python from its snapshot, starting afresh: ${describe(err)}`);
    return null;
  }
}

/** Start Python and the helpers; true once they are up, false if they cannot start (said to the page). */
async function boot(snapshot, makeSnapshot) {
  let restored = false;
  try {
    const texts = await helperTexts;
    const { loadPyodide, version } = await pyodideModule;
    step('imported');
    const key = JSON.stringify([version, BOOT, texts]);
    const options = {
      indexURL: INDEX_URL,
      stdout: (line) => console.log(`[${label}] ${line}`),
      stderr: (line) => console.warn(`[${label}] ${line}`),
    };
    if (snapshot && snapshot.key === key) pyodide = await restore(loadPyodide, options, snapshot.blob);
    restored = pyodide !== null;
    // A snapshot is taken before any other code runs: the snapshot option must say so from the start.
    if (!restored) pyodide = await loadPyodide({ ...options, _makeSnapshot: makeSnapshot });
    step('pyodide');
    // Restored helpers are imported already; their files are for tracebacks.
    pyodide.FS.mkdirTree(`${LIB}/pando`);
    for (const [name, text] of texts) pyodide.FS.writeFile(`${LIB}/pando/${name}`, text);
    if (!restored) {
      await pyodide.runPythonAsync(BOOT);
      if (makeSnapshot) {
        const bytes = pyodide.makeMemorySnapshot();
        self.postMessage({ type: 'snapshot', key, bytes }, [bytes.buffer]); // moved, not copied
        step('snapshot');
      }
    }
    step('helpers');
  } catch (err) {
    const missing = await unserved();
    if (missing) post({ type: 'unserved', message: missing });
    else post({ type: 'failed', message: `Pyodide could not start: ${describe(err)}` });
    return false;
  }
  post({ type: 'booted', restored });
  return true;
}

async function load(filename, source, bundle, raw) {
  if (!(await booting)) return;
  label = filename;
  try {
    const loadModule = pyodide.globals.get('_load');
    const problem = loadModule(filename, source, bundle || '', raw);
    loadModule.destroy();
    if (problem !== undefined && problem !== null) {
      post({ type: 'broken', message: String(problem) });
      return;
    }
    run = pyodide.globals.get('_run');
    pyodide.globals.set('_post_report', (text) => post({ type: 'report', report: text }));
    reportDue = pyodide.globals.get('_report_due');
    applyInterval(interval);
  } catch (err) {
    post({ type: 'broken', message: `${filename}: cannot load: ${describe(err)}` });
    return;
  }
  step('module');
  post({ type: 'ready', ms: steps.module, steps });
  work();
}

async function work() {
  if (working || !run) return;
  working = true;
  try {
    while (queue.length) {
      const batch = queue.splice(0, queue.length);
      const rest = await run(JSON.stringify(batch), (text) => post({ type: 'answers', answers: text }), flushSeconds);
      post({ type: 'answers', answers: rest });
    }
  } catch (err) {
    // Item errors are answered from Python; reaching here means the interpreter broke.
    run = null;
    post({ type: 'fatal', message: `the Python interpreter failed: ${describe(err)}` });
  } finally {
    working = false;
  }
}

self.onmessage = (event) => {
  const message = event.data;
  try {
    if (message.type === 'boot') {
      if (!booting) booting = boot(message.snapshot, message.makeSnapshot);
    } else if (message.type === 'load') {
      if (typeof message.interval === 'number' && message.interval > 0) interval = message.interval;
      applyTimeout(message.timeout);
      if (!loading) loading = load(message.filename, message.source, message.bundle, message.raw === true);
    } else if (message.type === 'items') {
      for (const pair of message.items) queue.push(pair);
      work();
    } else if (message.type === 'interval') {
      applyInterval(message.interval);
    } else if (message.type === 'timeout') {
      applyTimeout(message.timeout);
    }
  } catch (err) {
    post({ type: 'fatal', message: describe(err) });
  }
};

// A trap in the interpreter (say, memory access out of bounds) surfaces here,
// outside any promise this file awaits: the interpreter is then unusable.
self.addEventListener('unhandledrejection', (event) => {
  event.preventDefault();
  run = null;
  post({ type: 'fatal', message: `the Python interpreter failed: ${describe(event.reason)}` });
});
self.addEventListener('error', (event) => {
  event.preventDefault();
  run = null;
  post({ type: 'fatal', message: `the Python interpreter failed: ${describe(event.error || event.message)}` });
});
