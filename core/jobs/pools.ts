import { availableParallelism } from 'node:os';
import { MessageChannel } from 'node:worker_threads';
import { Piscina } from 'piscina';
import { ExpressionError, runEvaluationsWith, type Expression } from '../expression/expression.ts';
import type { EvaluateOutcome } from './eval-worker.ts';
import type { FreshAnswer, StoreAnswer, SyncOutcome, SyncTask, WorkerMessage } from './run-wire.ts';

export interface PoolOptions {
  /** Threads for sync runs; runs mostly wait on the network, so more than the cores. */
  runThreads?: number;
  /** Heap cap of a run thread, in MB: past it the thread ends, not the process. */
  runMemoryMb?: number;
  /** How long past an evaluation's own limit the watchdog waits before it stops the thread. */
  graceMs?: number;
}

let shared: { pools: WorkerPools; users: number } | undefined;

/**
 * The process's pools, shared by every engine in it (tests start several): threads are sized from
 * the machine, not per engine. While any engine holds them, provider expressions evaluated on the
 * API thread are sent to them.
 */
export function acquirePools(): WorkerPools {
  if (!shared) {
    const pools = new WorkerPools();
    runEvaluationsWith((expr, input, bindings, limitMs) => pools.evaluate(expr, input, bindings, limitMs));
    shared = { pools, users: 0 };
  }
  shared.users++;
  return shared.pools;
}

export async function releasePools(pools: WorkerPools): Promise<void> {
  if (!shared || shared.pools !== pools || --shared.users > 0) return;
  shared = undefined;
  runEvaluationsWith(undefined);
  await pools.close();
}

/** A worker thread stopped by its watchdog or its memory cap: the task it ran failed with this. */
export class WorkerStopped extends Error {}

interface Watched {
  slot: Float64Array;
  abort: AbortController;
  where: string;
  stopped?: string;
}

/**
 * The worker threads of this process: one pool for sync runs, one small pool for the evaluations
 * the API thread needs (action bodies and outputs, token responses), so that a long sync never
 * delays an action. Every thread has a heap cap, and a watchdog stops a thread whose evaluation
 * runs past its time limit (a long builtin is one step for JSONata's own check).
 */
export class WorkerPools {
  private readonly runs: Piscina;
  private readonly evals: Piscina;
  private readonly active = new Set<Watched>();
  private readonly timer: NodeJS.Timeout;
  private readonly graceMs: number;
  private readonly runMemoryMb: number;

  constructor(options: PoolOptions = {}) {
    const filename = new URL('./thread-entry.mjs', import.meta.url).href;
    const module = (name: string) => ({ module: new URL(name, import.meta.url).href });
    const cores = availableParallelism();
    this.graceMs = options.graceMs ?? 1000;
    this.runMemoryMb = options.runMemoryMb ?? 512;
    this.runs = new Piscina({ filename, workerData: module('./sync-worker.ts'), minThreads: 1, maxThreads: options.runThreads ?? Math.max(2, cores * 2), idleTimeout: 60_000, resourceLimits: { maxOldGenerationSizeMb: this.runMemoryMb } });
    this.evals = new Piscina({ filename, workerData: module('./eval-worker.ts'), minThreads: 1, maxThreads: Math.max(1, Math.min(2, cores)), idleTimeout: 60_000, resourceLimits: { maxOldGenerationSizeMb: 256 } });
    this.timer = setInterval(() => this.watch(), 100).unref();
  }

  /** Runs a sync in a run thread; `answer` serves its requests (fresh credentials, storing pages). */
  async runSync(task: Omit<SyncTask, 'port' | 'deadline'>, answer: (request: Extract<WorkerMessage, { id: number }>) => Promise<FreshAnswer | StoreAnswer>, signal?: AbortSignal): Promise<SyncOutcome> {
    const { port1, port2 } = new MessageChannel();
    const watched: Watched = { slot: new Float64Array(new SharedArrayBuffer(16)), abort: new AbortController(), where: 'an expression' };
    signal?.addEventListener('abort', () => {
      watched.stopped = String(signal.reason ?? 'stopped');
      watched.abort.abort();
    });
    port1.on('message', (m: WorkerMessage) => {
      if (m.kind === 'evaluating') watched.where = m.where;
      // A thread stopped meanwhile has closed its end: the answer goes nowhere, which is fine.
      else void answer(m).then((a) => port1.postMessage(a, 'spent' in a && a.spent ? [a.spent] : []));
    });
    this.active.add(watched);
    try {
      const full: SyncTask = { ...task, port: port2, deadline: watched.slot };
      return await this.runs.run(full, { transferList: [port2] as any, signal: watched.abort.signal });
    } catch (e) {
      throw this.explain(e, watched, this.runMemoryMb);
    } finally {
      this.active.delete(watched);
      port1.close();
    }
  }

  /**
   * Evaluates a provider expression in an evaluation thread, as `expr.evaluate` would here. Its
   * time limit counts from when the thread starts evaluating (the worker reports the deadline),
   * not from when the task was queued: a thread still starting is not a slow expression.
   */
  async evaluate(expr: Expression, input: unknown, bindings: Record<string, unknown>, limitMs: number): Promise<unknown> {
    const watched: Watched = { slot: new Float64Array(new SharedArrayBuffer(16)), abort: new AbortController(), where: expr.describe() };
    this.active.add(watched);
    let out: EvaluateOutcome;
    try {
      out = await this.evals.run({ source: expr.source, input, bindings, limitMs, deadline: watched.slot }, { signal: watched.abort.signal });
    } catch (e) {
      const stopped = this.explain(e, watched, 256);
      throw stopped instanceof WorkerStopped ? new ExpressionError(stopped.message, undefined, 'expression_limit') : stopped;
    } finally {
      this.active.delete(watched);
    }
    if (!out.ok) throw new ExpressionError(out.message, out.position, out.code);
    return out.json === undefined ? undefined : JSON.parse(out.json);
  }

  /** Starts the evaluation thread now (its first task would otherwise wait for it to load). */
  async warm(): Promise<void> {
    await this.evals.run({ source: '1', input: null, bindings: {}, limitMs: 60_000, deadline: new Float64Array(2) });
  }

  async close(): Promise<void> {
    clearInterval(this.timer);
    await Promise.all([this.runs.destroy(), this.evals.destroy()]);
  }

  private watch() {
    const now = Date.now();
    for (const w of this.active) {
      const deadline = w.slot[0];
      if (deadline > 0 && now > deadline + this.graceMs && !w.stopped) {
        w.stopped = `${w.where} took longer than its time limit of ${w.slot[1]} ms: its worker thread was stopped`;
        w.abort.abort();
      }
    }
  }

  private explain(e: unknown, watched: Watched, memoryMb: number): unknown {
    if (watched.stopped) return new WorkerStopped(watched.stopped);
    if ((e as { code?: string })?.code === 'ERR_WORKER_OUT_OF_MEMORY') {
      return new WorkerStopped(`it used more than the ${memoryMb} MB of memory a worker thread may, and its thread was stopped (the last expression evaluated: ${watched.where})`);
    }
    return e;
  }
}
