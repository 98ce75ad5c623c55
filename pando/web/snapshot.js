// Where the page keeps its Python snapshot: {key, blob}, Pyodide's memory just
// after a worker's start (worker.mjs makes it and says what it fits), so that
// the workers of later tabs skip that start. IndexedDB, not the Cache API: it
// also works on a plain http:// LAN address, which is no secure context. A
// browser that keeps nothing (storage disabled, full, private) only starts
// slower: every failure here reads as "no snapshot".

const DATABASE = 'pando';
const STORE = 'snapshots';
const KEY = 'python';
// Set in localStorage once a snapshot is kept: a browser that never kept one
// (a first visit) does not set up IndexedDB while its first worker starts.
const KEPT = 'pando.snapshot';

let database = null; // the promise of the open database, once asked

function done(request) {
  return new Promise((resolve, reject) => {
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
  });
}

async function objects(mode) {
  if (!database) {
    const opening = indexedDB.open(DATABASE, 1);
    opening.onupgradeneeded = () => opening.result.createObjectStore(STORE);
    database = done(opening);
  }
  return (await database).transaction(STORE, mode).objectStore(STORE);
}

/** The snapshot kept by an earlier tab of this origin, or null. */
export async function readSnapshot() {
  try {
    if (!localStorage.getItem(KEPT)) return null;
    const kept = await done((await objects('readonly')).get(KEY));
    return kept && typeof kept.key === 'string' && kept.blob instanceof Blob ? kept : null;
  } catch {
    return null;
  }
}

/**
 * Keep a snapshot for later tabs, in place of any older one; whether it was
 * kept. Closing the tab before then keeps nothing.
 */
export async function saveSnapshot(snapshot) {
  try {
    const { transaction } = (await objects('readwrite')).put(snapshot, KEY);
    await new Promise((resolve, reject) => {
      transaction.oncomplete = resolve;
      transaction.onabort = () => reject(transaction.error);
    });
    localStorage.setItem(KEPT, '1');
    return true;
  } catch {
    return false;
  }
}
