import { withDefaults } from '../../core/auth/connections.ts';
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { basename, join, relative } from 'node:path';
import { randomBytes } from 'node:crypto';
import { parse } from 'yaml';
import { loadConfig } from '../../core/config.ts';
import { Engine } from '../../core/engine.ts';
import { BUILTIN_PROVIDERS_DIR, loadCatalog, providerFiles } from '../../core/format/provider-loader.ts';
import type { Provider } from '../../core/format/provider-types.ts';
import { formatError } from '../../core/format/yaml-source.ts';
import { createLogger } from '../../core/logger.ts';
import { createApp } from '../app.ts';
import { diffLines, sameJson, toYaml, unify } from './diff.ts';
import { pointedAt, rawProvider } from './provider-hosts.ts';
import { loadRecordings, recordingsDir, type ConnectionRecording, type Recording } from './recordings.ts';
import { ReplayServer, type Track } from './replay-server.ts';

export interface ReplayOptions {
  /** The folder of provider files and their .recordings folders (default: the built-in catalogue). */
  dir?: string;
  /** Only these providers (default: every provider of the folder). */
  providers?: string[];
  /** Write the snapshots instead of comparing them (review them in the diff). */
  update?: boolean;
  /**
   * How long a sync run may take, from its trigger, before it counts as stuck. Every provider's
   * auto-started runs queue for the same few worker threads at once, so on a loaded machine a
   * run's start alone can take tens of seconds: 120 s by default.
   */
  runTimeoutMs?: number;
}

export interface RecordingResult {
  /** The recording file, relative to the working folder. */
  file: string;
  kind: 'sync' | 'action';
  target: string;
  /** Exchanges answered / recorded. */
  answered: number;
  exchanges: number;
  problems: string[];
  /** --update: the snapshot was written (new or changed). */
  written?: boolean;
}

export interface ProviderResult {
  provider: string;
  /** Problems not tied to one recording: files that do not load, the connection, stray requests. */
  problems: string[];
  /** Whether its recordings were replayed (not when its files, or the catalogue, do not load). */
  replayed: boolean;
  recordings: RecordingResult[];
}

export interface ReplayReport {
  results: ProviderResult[];
  ms: number;
}

const CONNECTION_ID = 'replay';
const OAUTH_CLIENT = { oauth_client_id: 'replay-client-id', oauth_client_secret: 'replay-client-secret' };
/** A path as the user wrote it: relative to the working folder when inside it. */
const short = (file: string) => {
  const rel = relative(process.cwd(), file);
  return rel && !rel.startsWith('..') ? rel : file;
};

/**
 * Replays providers' recordings offline through the real engine: a real server on the embedded store,
 * each provider's hosts played by a local ReplayServer (its URLs pointed there by an override layer),
 * a connection made with the recorded credentials, every sync run (on its own, as a new connection's
 * syncs start) and every action triggered through the API. Checks the requests against the
 * recordings and the records and outputs against the snapshots beside them.
 */
export async function replay(options: ReplayOptions = {}): Promise<ReplayReport> {
  const started = Date.now();
  const dir = options.dir ?? BUILTIN_PROVIDERS_DIR;
  const layers = dir === BUILTIN_PROVIDERS_DIR ? [providerFiles(dir)] : [providerFiles(BUILTIN_PROVIDERS_DIR), providerFiles(dir)];
  const catalog = loadCatalog(layers);
  const inFolder = providerFiles(dir).map((f) => basename(f).replace(/\.ya?ml$/, ''));
  const names = options.providers ?? inFolder;
  const results = new Map<string, ProviderResult>(names.map((n) => [n, { provider: n, problems: [], recordings: [], replayed: false }]));
  for (const name of names) {
    if (!inFolder.includes(name)) results.get(name)!.problems.push(`there is no provider "${name}" in ${short(dir)}; there: ${inFolder.join(', ')}`);
  }
  for (const e of catalog.errors) {
    const name = basename(e.file).replace(/\.ya?ml$/, '');
    results.get(name)?.problems.push(`the provider file does not load: ${formatError(e)}`);
  }

  const work = join(tmpdir(), `terapi-replay-${randomBytes(6).toString('hex')}`);
  const overrides = join(work, 'providers');
  mkdirSync(overrides, { recursive: true });
  const plans: Plan[] = [];
  try {
    for (const name of names) {
      const result = results.get(name)!;
      const provider = catalog.providers.get(name);
      if (result.problems.length || !provider) continue;
      const loaded = loadRecordings(recordingsDir(dir, name), provider);
      result.problems.push(...loaded.errors.map(formatError));
      if (loaded.errors.length || !loaded.connection) continue;
      try {
        plans.push(await plan(provider, loaded.connection, loaded.recordings, result, overrides));
      } catch (e) {
        result.problems.push(`${short(loaded.connection.file)}: ${(e as Error).message}`);
      }
    }
    // A server starts only on a catalogue that loads whole.
    if (catalog.errors.length) for (const p of plans) p.result.problems.push('not replayed: the server cannot start while a provider file has errors');
    else if (plans.length) await withServer(work, dir, plans, options);
  } finally {
    await Promise.all(plans.map((p) => p.replay.close()));
    rmSync(work, { recursive: true, force: true });
  }
  return { results: [...results.values()], ms: Date.now() - started };
}

/** One provider's replay, ready to run: its stand-in hosts, its connection and its tracks. */
interface Plan {
  provider: Provider;
  connection: ConnectionRecording;
  recordings: { recording: Recording; result: RecordingResult; runs: Map<number, Track> ; action?: Track }[];
  connectionTrack: Track;
  replay: ReplayServer;
  result: ProviderResult;
  /** The connection's values once it is made (post_connection may add some). */
  connected: (config: Record<string, string>) => void;
}

async function plan(provider: Provider, connection: ConnectionRecording, recordings: Recording[], result: ProviderResult, overrides: string): Promise<Plan> {
  const raw = rawProvider(provider);
  // The hosts a connection reaches with the provider's defaults for the values it leaves out.
  const config = withDefaults(provider, connection.connection_config ?? {});
  const { origins } = pointedAt(raw, config, (o) => o);
  let connected!: (config: Record<string, string>) => void;
  const made = new Promise<Record<string, string>>((r) => (connected = r));
  const base = {
    now: () => {
      try {
        return provider.api.base_url.renderUrl(config);
      } catch {
        return undefined; // a value the connection gets when it is made (Jira's cloud id)
      }
    },
    later: made.then((config) => provider.api.base_url.renderUrl(config)),
  };
  base.later.catch(() => {}); // awaited by requests, when any waits for it
  const credentials = connection.credentials ?? {};
  // What must never reach an API call but where the recording puts the credential: every secret of the
  // connection and the integration's client secret.
  const secrets = [...Object.entries(credentials).filter(([k]) => !['type', 'username', 'client_id', 'expires_at'].includes(k)).map(([, v]) => v), connection.integration?.oauth_client_secret ?? OAUTH_CLIENT.oauth_client_secret].filter((s): s is string => typeof s === 'string');
  const replay = await ReplayServer.open(origins, { base, credential: connection.credential, secrets });
  const { override } = pointedAt(raw, config, (o) => replay.local(o));
  writeFileSync(join(overrides, `${provider.name}.yaml`), JSON.stringify(override, null, 2));
  const track = (label: string, exchanges: Recording['exchanges']): Track => ({ label, exchanges, next: 0, problems: [] });
  return {
    provider,
    connection,
    replay,
    result,
    connected,
    connectionTrack: track(basename(connection.file), connection.exchanges),
    recordings: recordings.map((recording) => {
      const label = basename(recording.file);
      const runs = new Map<number, Track>();
      if (recording.kind === 'sync') {
        for (const run of [...new Set(recording.exchanges.map((e) => e.run))].sort((a, b) => a - b)) runs.set(run, track(`${label} (run ${run})`, recording.exchanges.filter((e) => e.run === run)));
      }
      const recordingResult: RecordingResult = { file: short(recording.file), kind: recording.kind, target: recording.target, answered: 0, exchanges: recording.exchanges.length, problems: [] };
      result.recordings.push(recordingResult);
      return { recording, result: recordingResult, runs, action: recording.kind === 'action' ? track(label, recording.exchanges) : undefined };
    }),
  };
}

type Call = (method: string, path: string, body?: unknown, headers?: Record<string, string>) => Promise<{ status: number; body: any }>;

/** A real Terapi server on the embedded store, with the override layer: every plan run on it at once. */
async function withServer(work: string, dir: string, plans: Plan[], options: ReplayOptions): Promise<void> {
  const secret = `sk_replay_${randomBytes(8).toString('hex')}`;
  const env = {
    TERAPI_DATA_DIR: join(work, 'data'),
    TERAPI_SECRET_KEY: secret,
    TERAPI_ENCRYPTION_KEY: randomBytes(32).toString('hex'),
    TERAPI_PROVIDERS_DIR: [...(dir === BUILTIN_PROVIDERS_DIR ? [] : [dir]), join(work, 'providers')].join(':'),
    TERAPI_LOG_LEVEL: 'silent',
    PORT: '0',
  };
  const { config } = loadConfig({ embeddedKeys: true }, env);
  const engine = await Engine.start(config, createLogger('silent'));
  const server: Server = createApp(engine).listen(0, '127.0.0.1');
  try {
    await new Promise((r) => server.once('listening', r));
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    const call: Call = async (method, path, body, headers = {}) => {
      const res = await fetch(url + path, {
        method,
        headers: { authorization: `Bearer ${secret}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}), ...headers },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
      const text = await res.text();
      return { status: res.status, body: text ? JSON.parse(text) : undefined };
    };
    await Promise.all(plans.map((p) => runPlan(p, call, options).catch((e) => p.result.problems.push(`the replay stopped: ${(e as Error).stack ?? e}`))));
  } finally {
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
    await engine.stop();
  }
}

async function runPlan(p: Plan, call: Call, options: ReplayOptions): Promise<void> {
  const { provider, connection, replay } = p;
  const key = provider.name;
  p.result.replayed = true;
  const real = <T>(value: T): T => JSON.parse(replay.toReal(JSON.stringify(value)));
  const mode = provider.auth.mode;
  const oauth = mode === 'oauth2' || mode === 'oauth1' || mode === 'oauth2_client_credentials';
  let r = await call('POST', '/integration', { provider_config_key: key, provider: key, ...(oauth ? { ...OAUTH_CLIENT, ...connection.integration } : {}) });
  if (r.status >= 300) return void p.result.problems.push(`the integration could not be made: ${r.status} ${JSON.stringify(r.body)}`);

  // A new connection starts its syncs on its own: their first runs are expected from the start.
  const syncs = p.recordings.filter((x) => x.recording.kind === 'sync');
  const autoStarted = syncs.filter((x) => provider.syncs![x.recording.target].auto_start !== false);
  // The connection's exchanges stay expected through the runs: a token fetched on first use
  // (client credentials, a token exchange) is recorded with the connection.
  replay.activate(p.connectionTrack, ...autoStarted.map((x) => x.runs.get(1)!));
  replay.connecting = true;
  const verifies = (mode === 'api_key' || mode === 'basic') && provider.verification;
  if (verifies) {
    // Through the connect flow's credential form, which is what runs the verification request.
    r = await call('POST', '/connect/sessions', { connection_id: CONNECTION_ID, allowed_integrations: [key], connection_config: { [key]: connection.connection_config } });
    if (r.status < 300) {
      const { type: _type, ...fields } = connection.credentials ?? {};
      r = await call('POST', `/connect/${key}/credentials?connect_session_token=${encodeURIComponent(r.body.token)}`, fields, { authorization: '' });
    }
  } else {
    r = await call('POST', '/connection', { connection_id: CONNECTION_ID, provider_config_key: key, credentials: connection.credentials, connection_config: connection.connection_config });
  }
  replay.connecting = false;
  if (r.status >= 300) {
    replay.deactivate(p.connectionTrack, ...autoStarted.map((x) => x.runs.get(1)!));
    p.result.problems.push(...p.connectionTrack.problems, ...missing(p.connectionTrack));
    return void p.result.problems.push(`the connection could not be made: ${r.status} ${replay.toReal(JSON.stringify(r.body))}`);
  }
  r = await call('GET', `/connection/${CONNECTION_ID}?provider_config_key=${key}`);
  p.connected(r.body.connection_config ?? {});

  const status = (sync: string) => call('GET', `/sync/${CONNECTION_ID}/${sync}?provider_config_key=${key}`);
  const timeout = options.runTimeoutMs ?? 120_000;
  /** Waits for a run other than `previous` to end; its summary. */
  const ended = async (sync: string, previous?: string): Promise<any> => {
    const deadline = Date.now() + timeout;
    for (;;) {
      const s = await status(sync);
      const run = s.status === 200 ? s.body.last_run : undefined;
      if (run && run.run_id !== previous && run.outcome !== 'running') return run;
      if (Date.now() > deadline) throw new Error(`sync "${sync}" did not end a run within ${timeout / 1000} s`);
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  };
  const runs = new Map<Recording, unknown[]>();
  const settle = (x: Plan['recordings'][number], track: Track, run: unknown) => {
    replay.deactivate(track);
    x.result.problems.push(...track.problems, ...missing(track));
    runs.set(x.recording, [...(runs.get(x.recording) ?? []), summary(run)]);
  };
  await Promise.all(autoStarted.map(async (x) => settle(x, x.runs.get(1)!, await ended(x.recording.target).catch((e) => ({ outcome: 'error', error: e.message })))));

  // Then one at a time: syncs that wait for a trigger, later runs, and actions.
  for (const x of syncs) {
    for (const [run, track] of x.runs) {
      if (run === 1 && autoStarted.includes(x)) continue;
      const previous = (await status(x.recording.target)).body?.last_run?.run_id;
      replay.activate(track);
      await call('POST', '/sync/trigger', { connection_id: CONNECTION_ID, provider_config_key: key, syncs: [x.recording.target] });
      settle(x, track, await ended(x.recording.target, previous).catch((e) => ({ outcome: 'error', error: e.message })));
    }
  }
  const outputs = new Map<Recording, unknown>();
  for (const x of p.recordings.filter((x) => x.action)) {
    replay.activate(x.action!);
    r = await call('POST', '/action/trigger', { connection_id: CONNECTION_ID, provider_config_key: key, action_name: x.recording.target, input: x.recording.input ?? {} });
    replay.deactivate(x.action!);
    x.result.problems.push(...x.action!.problems, ...missing(x.action!));
    outputs.set(x.recording, r.status < 300 ? { output: r.body.output } : { error: { status: r.status, code: r.body?.error, message: r.body?.message } });
  }
  replay.deactivate(p.connectionTrack);
  p.result.problems.push(...p.connectionTrack.problems, ...missing(p.connectionTrack), ...replay.unexpected);

  for (const x of p.recordings) {
    const tracks = x.action ? [x.action] : [...x.runs.values()];
    x.result.answered = tracks.reduce((n, t) => n + t.next, 0);
    let snapshot: unknown;
    if (x.action) snapshot = real(outputs.get(x.recording));
    else {
      const sync = provider.syncs![x.recording.target];
      snapshot = real({ runs: runs.get(x.recording), records: await records(call, key, sync.model.name, sync.model.id ?? 'id') });
    }
    compareSnapshot(x.recording, x.result, snapshot, options.update === true, provider.name);
  }
}

/** The exchanges of a track that were never asked for. */
function missing(track: Track): string[] {
  if (track.next >= track.exchanges.length) return [];
  const next = track.exchanges[track.next];
  const left = track.exchanges.length - track.next;
  return [`${left} recorded request${left === 1 ? ' was' : 's were'} never sent, from exchange ${track.next + 1} of ${track.label} (line ${next.at.line}: ${next.request.method} ${next.request.path}): Terapi sent ${track.next} of ${track.exchanges.length}`];
}

/** What a snapshot keeps of a run: its counts and outcome, not its times or ids. */
function summary(run: any): Record<string, unknown> {
  const out: Record<string, unknown> = { outcome: run.outcome, pages: run.pages, added: run.added, updated: run.updated, deleted: run.deleted, unchanged: run.unchanged, invalid: run.invalid?.count };
  if (run.invalid?.examples?.length) out.invalid_examples = run.invalid.examples;
  if (run.error) out.error = run.error;
  return Object.fromEntries(Object.entries(out).filter(([, v]) => v !== undefined));
}

/**
 * Every record of a model, as GET /records gives it, with only the last action of its metadata, in
 * order of id: a record that changes stays in its place in the snapshot's diff.
 */
async function records(call: Call, key: string, model: string, id: string): Promise<unknown[]> {
  const out: Record<string, unknown>[] = [];
  let cursor: string | null = null;
  do {
    const r = await call('GET', `/records?provider_config_key=${key}&connection_id=${CONNECTION_ID}&model=${model}&limit=1000${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`);
    if (r.status !== 200) throw new Error(`GET /records for ${model} answered ${r.status}: ${JSON.stringify(r.body)}`);
    for (const { _terapi_metadata: meta, ...record } of r.body.records) out.push({ ...record, _terapi_metadata: { last_action: meta.last_action } });
    cursor = r.body.next_cursor;
  } while (cursor);
  const idOf = (r: Record<string, unknown>) => String(r[id]);
  return out.sort((a, b) => (idOf(a) < idOf(b) ? -1 : idOf(a) > idOf(b) ? 1 : 0));
}

function compareSnapshot(recording: Recording, result: RecordingResult, snapshot: unknown, update: boolean, provider: string): void {
  const file = recording.snapshotFile;
  const written = existsSync(file) ? parse(readFileSync(file, 'utf8')) : undefined;
  // A value that changes on every run may be written { $match: <regular expression> } in a snapshot too.
  const old = written === undefined ? undefined : unify(written, snapshot);
  if (old !== undefined && sameJson(old, snapshot)) return;
  if (update) {
    // A snapshot of requests that went wrong would record the failure as the expected result.
    if (result.problems.length) return void result.problems.push(`${short(file)} not written: the requests do not match the recording`);
    const what = recording.kind === 'sync' ? `the runs and records of sync "${recording.target}"` : `the result of action "${recording.target}"`;
    writeFileSync(file, `# ${what[0].toUpperCase()}${what.slice(1)} after replaying ${basename(recording.file)}.\n# Written by \`terapi test ${provider} --update\`: review it in the diff.\n${toYaml(snapshot)}`);
    result.written = true;
    return;
  }
  if (old === undefined) return void result.problems.push(`${short(file)} does not exist: run \`terapi test ${provider} --update\` and review it`);
  result.problems.push(`${recording.kind === 'sync' ? 'the runs or records differ' : 'the result differs'} from ${short(file)}; - snapshot, + now (\`terapi test ${provider} --update\` accepts the change):\n${diffLines(toYaml(old), toYaml(snapshot)).split('\n').map((l) => `    ${l}`).join('\n')}`);
}
