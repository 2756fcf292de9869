/**
 * What a run thread does (loaded through thread-entry.mjs): sync runs. Runs here cannot stall the
 * API, and the thread's memory is capped: a runaway ends this thread, never the process.
 */
import { createHash } from 'node:crypto';
import type { MessagePort } from 'node:worker_threads';
import type { Fresh } from '../auth/tokens.ts';
import { scrubberOf } from '../auth/secrets.ts';
import { limits } from '../http/send.ts';
import { TerapiError } from '../errors.ts';
import { reportDeadlines } from '../expression/expression.ts';
import { loadCatalog, type SourceFile } from '../format/provider-loader.ts';
import type { Provider } from '../format/provider-types.ts';
import { openSql, type Sql } from '../store/sql.ts';
import { runSync, type RunResult, type RunTask } from '../sync/run.ts';
import { ConnectionGone, RunLost, SyncStore } from '../sync/sync-store.ts';

export interface StoreOptions {
  databaseUrl?: string;
  dataDir: string;
}

export interface SyncTask {
  store: StoreOptions;
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

/** Messages a sync task sends on its port. */
export type WorkerMessage = { kind: 'fresh'; id: number } | { kind: 'evaluating'; where: string };
/** Answers to them. */
/** Fresh credentials, and the secrets to scrub from provider text (a function cannot cross threads). */
export type FreshAnswer = { id: number; fresh?: Omit<Fresh, 'provider' | 'scrub'> & { secrets: string[] }; error?: { status: number; code: string; message: string } };

export default function work(task: SyncTask): Promise<SyncOutcome> {
  return sync(task);
}

const stores = new Map<string, SyncStore>();
function storeFor(options: StoreOptions): SyncStore {
  const key = options.databaseUrl ?? options.dataDir;
  let store = stores.get(key);
  if (!store) stores.set(key, (store = new SyncStore(openSql({ ...options, poolSize: 2 }) as Sql)));
  return store;
}

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
  const waiting = new Map<number, (a: FreshAnswer) => void>();
  let next = 0;
  port.on('message', (a: FreshAnswer) => waiting.get(a.id)?.(a));
  const fresh = () =>
    new Promise<Fresh>((resolve, reject) => {
      const id = next++;
      waiting.set(id, (a) => {
        waiting.delete(id);
        if (a.fresh) {
          const { secrets, ...rest } = a.fresh;
          resolve({ ...rest, provider, scrub: scrubberOf(secrets) });
        }
        else reject(new TerapiError(a.error!.status, a.error!.code, a.error!.message));
      });
      port.postMessage({ kind: 'fresh', id } satisfies WorkerMessage);
    });
  reportDeadlines(task.deadline, (expr) => port.postMessage({ kind: 'evaluating', where: expr.describe() } satisfies WorkerMessage));
  try {
    return { ok: true, result: await runSync({ store: storeFor(task.store), fresh }, definition, task.run) };
  } catch (e) {
    if (e instanceof RunLost) return { ok: false, lost: 'run', message: e.message };
    if (e instanceof ConnectionGone) return { ok: false, lost: 'connection', message: e.message };
    throw e;
  } finally {
    reportDeadlines(undefined);
    port.close();
  }
}

