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
import type { MessagePort } from 'node:worker_threads';
import type { Fresh } from '../auth/tokens.ts';
import { scrubberOf } from '../auth/secrets.ts';
import { limits } from '../http/send.ts';
import { TerapiError } from '../errors.ts';
import { reportDeadlines } from '../expression/expression.ts';
import { loadCatalog, type SourceFile } from '../format/provider-loader.ts';
import type { Provider } from '../format/provider-types.ts';
import { runSync, type RunResult, type RunStore, type RunTask } from '../sync/run.ts';
import { ConnectionGone, RunLost } from '../sync/sync-store.ts';

export interface SyncTask {
  /** The provider's files by text: the worker loads exactly what the API thread has. */
  sources: SourceFile[];
  provider: string;
  sync: string;
  run: RunTask;
  /** Requests for fresh credentials go to the API thread, which owns refreshes (single flight). */
  port: MessagePort;
  /** The watchdog's slot: the deadline of the evaluation in progress. */
  deadline: Float64Array;
  /** The most bytes of a provider's answer read into memory (TERAPI_MAX_RESPONSE_BYTES), as in the API thread. */
  maxResponseBytes: number;
}


/** A sync task's answer: the run's result, or why it stopped without one. */
export type SyncOutcome = { ok: true; result: RunResult } | { ok: false; lost: 'run' | 'connection'; message: string };

/** Messages a sync task sends on its port: requests (answered with the same id), and news for the watchdog. */
type Request = { kind: 'fresh'; stale?: string } | { kind: 'store'; method: keyof RunStore; args: unknown[] };
export type WorkerMessage = (Request & { id: number }) | { kind: 'evaluating'; where: string };

/** An error that crossed threads: its class by name (RunLost, ConnectionGone, TerapiError) and what it says. */
export interface WireError {
  name: string;
  message: string;
  status?: number;
  code?: string;
}

/** Fresh credentials, and the secrets to scrub from provider text (a function cannot cross threads). */
export type FreshAnswer = { id: number; fresh?: Omit<Fresh, 'provider' | 'scrub'> & { secrets: string[] }; error?: WireError };
/**
 * `spent`: a stored page's bytes, handed back to the run thread to be freed there. Memory outside
 * the heap is freed when the heap holding it is collected: the run thread's is, every few pages;
 * the API thread's, which allocates little, might keep tens of MB of pages before it is.
 */
export type StoreAnswer = { id: number; value?: unknown; error?: WireError; spent?: ArrayBuffer };

/** An error as it crosses threads. */
export function toWire(e: unknown): WireError {
  const err = e instanceof Error ? e : new Error(String(e));
  return { name: err instanceof RunLost ? 'RunLost' : err instanceof ConnectionGone ? 'ConnectionGone' : err instanceof TerapiError ? 'TerapiError' : 'Error', message: err.message, ...(err instanceof TerapiError ? { status: err.status, code: err.code } : {}) };
}

function fromWire(w: WireError): Error {
  if (w.name === 'RunLost') return new RunLost(w.message);
  if (w.name === 'ConnectionGone') return new ConnectionGone(w.message);
  if (w.name === 'TerapiError') return new TerapiError(w.status ?? 500, w.code ?? 'internal_error', w.message);
  return new Error(w.message);
}

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
yieldToTheApi();

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
  const ask = <T>(message: Request, take: (a: FreshAnswer & StoreAnswer) => T, transfer: ArrayBuffer[] = []) =>
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

