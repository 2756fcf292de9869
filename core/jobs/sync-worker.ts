/**
 * What a run thread does (loaded through thread-entry.mjs): sync runs. Runs here cannot stall the
 * API, and the thread's memory is capped: a runaway ends this thread, never the process.
 *
 * A run thread holds no database handle: it asks the thread that started it for fresh credentials
 * and to store each page (RunStore, over its port). A thread the watchdog stops may then be cut
 * anywhere without leaving a native database call behind it (SQLite's binding aborts the process
 * when a call returns to a thread that is gone), and the embedded store has one writer.
 */
import { createHash } from 'node:crypto';
import { readlinkSync } from 'node:fs';
import { setPriority } from 'node:os';
import { isMainThread } from 'node:worker_threads';
import type { Fresh } from '../auth/tokens.ts';
import { scrubberOf } from '../auth/secrets.ts';
import { limits } from '../http/send.ts';
import { reportDeadlines } from '../expression/expression.ts';
import { loadCatalog, type SourceFile } from '../format/provider-loader.ts';
import type { Provider } from '../format/provider-types.ts';
import { runSync, type RunStore } from '../sync/run.ts';
import { ConnectionGone, RunLost } from '../sync/sync-store.ts';
import { fromWire, type FreshAnswer, type StoreAnswer, type SyncOutcome, type RunRequest, type SyncTask, type WorkerMessage } from './run-wire.ts';

/**
 * How much lower than the API's a run thread's scheduling priority is (a Linux nice value): runs are
 * background work. A run parses and maps for as long as pages come, and a request needs a fraction
 * of a millisecond: when they want the same core, the request goes first (API p99 during syncs).
 */
const RUN_NICENESS = 10;

/** Lowers this thread's priority, on Linux (a thread's id is its own there); elsewhere it stays as it is. */
function yieldToTheApi(): void {
  try {
    const tid = Number(readlinkSync('/proc/thread-self').split('/').pop());
    if (Number.isInteger(tid) && tid > 0) setPriority(tid, RUN_NICENESS);
  } catch {
    // No /proc/thread-self, or not allowed: the run keeps the process's priority.
  }
}
// Only in a run thread: on the main thread it would lower the API's own priority, and that of every
// thread it starts afterwards (libuv's pool, where SQLite works), which inherit it.
if (!isMainThread) yieldToTheApi();

export default function work(task: SyncTask): Promise<SyncOutcome> {
  return sync(task);
}

/** How long a run reuses the credentials the API thread gave it (a change elsewhere is seen after this at most). */
const REUSE_FRESH_MS = 1000;

const providers = new Map<string, Provider>();
function providerFor(name: string, sources: SourceFile[]): Provider {
  const hash = createHash('sha256');
  for (const s of sources) hash.update(s.file).update('\0').update(s.text).update('\0');
  const key = hash.digest('hex');
  let provider = providers.get(key);
  if (!provider) {
    const { providers: loaded, errors } = loadCatalog(sources.map((s) => [s]));
    provider = loaded.get(name);
    if (!provider) throw new Error(`provider "${name}" did not load in the worker: ${errors.map((e) => e.message).join('; ')}`);
    if (providers.size >= 200) providers.delete(providers.keys().next().value!);
    providers.set(key, provider);
  }
  return provider;
}

async function sync(task: SyncTask): Promise<SyncOutcome> {
  limits.responseBytes = task.maxResponseBytes;
  const provider = providerFor(task.provider, task.sources);
  const definition = Object.hasOwn(provider.syncs ?? {}, task.sync) ? provider.syncs![task.sync] : undefined;
  if (!definition) throw new Error(`provider "${task.provider}" has no sync "${task.sync}"`);
  const port = task.port;
  const waiting = new Map<number, (a: FreshAnswer & StoreAnswer) => void>();
  let next = 0;
  port.on('message', (a: FreshAnswer & StoreAnswer) => waiting.get(a.id)?.(a));
  const ask = <T>(message: RunRequest, take: (a: FreshAnswer & StoreAnswer) => T, transfer: ArrayBuffer[] = []) =>
    new Promise<T>((resolve, reject) => {
      const id = next++;
      waiting.set(id, (a) => {
        waiting.delete(id);
        if (a.error) reject(fromWire(a.error));
        else resolve(take(a));
      });
      port.postMessage({ ...message, id } as WorkerMessage, transfer);
    });
  // A run asks for credentials for every page's request and its mapping: the last answer is reused
  // for a moment (two round trips to the API thread a page, busy storing pages), never close to
  // its expiry, never for a request the API refused (`stale`), and only while no newer ask is out.
  let reused: { until: number; fresh: Promise<Fresh> } | undefined;
  let latest: Promise<Fresh> | undefined;
  const fresh = (stale?: string) => {
    if (!stale && reused && performance.now() < reused.until) return reused.fresh;
    const answer = ask({ kind: 'fresh', ...(stale ? { stale } : {}) }, (a): Fresh => {
      const { secrets, ...rest } = a.fresh!;
      return { ...rest, provider, scrub: scrubberOf(secrets) };
    });
    const asked = performance.now();
    reused = undefined;
    latest = answer;
    answer.then(
      (f) => {
        const expires = Date.parse((f.credentials as { expires_at?: string }).expires_at ?? '');
        if (latest === answer && !(expires - Date.now() < REUSE_FRESH_MS + 1000)) reused = { until: asked + REUSE_FRESH_MS, fresh: answer };
      },
      () => {},
    );
    return answer;
  };
  const store: RunStore = {
    // The page's bytes move to the API thread rather than being copied there.
    writePage: (...args) => ask({ kind: 'store', method: 'writePage', args }, (a) => a.value as Awaited<ReturnType<RunStore['writePage']>>, [args[1].rows.buffer as ArrayBuffer]),
    finish: (...args) => ask({ kind: 'store', method: 'finish', args }, (a) => a.value as Awaited<ReturnType<RunStore['finish']>>),
  };
  reportDeadlines(task.deadline, (expr) => port.postMessage({ kind: 'evaluating', where: expr.describe() } satisfies WorkerMessage));
  try {
    return { ok: true, result: await runSync({ store, fresh }, definition, task.run) };
  } catch (e) {
    if (e instanceof RunLost) return { ok: false, lost: 'run', message: e.message };
    if (e instanceof ConnectionGone) return { ok: false, lost: 'connection', message: e.message };
    throw e;
  } finally {
    reportDeadlines(undefined);
    port.close();
  }
}

