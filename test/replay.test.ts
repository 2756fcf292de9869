/**
 * The offline provider tests (CONTRIBUTING.md, "Testing offline"): every built-in provider's
 * recordings replayed through the real engine, and the harness itself shown to fail, with a diff,
 * when a mapping, a request or the credential's place changes, when a request is missing or extra,
 * and when a sync or action has no recording.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { cpSync, mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { BUILTIN_PROVIDERS_DIR, providerFiles } from '../core/format/provider-loader.ts';
import { replay, type ProviderResult, type ReplayReport } from '../server/replay/replay.ts';
import { ROOT, runCommand, tempDir } from './support.ts';

const problemsOf = (p: ProviderResult) => [...p.problems, ...p.recordings.flatMap((r) => r.problems.map((m) => `${r.file}: ${m}`))];

let builtin: ReplayReport;
before(async () => {
  builtin = await replay();
});

test('every built-in provider has recordings for each of its syncs and actions, and they replay as recorded', () => {
  const names = providerFiles(BUILTIN_PROVIDERS_DIR).map((f) => f.replace(/^.*\/|\.yaml$/g, ''));
  assert.deepEqual(builtin.results.map((r) => r.provider).sort(), names.sort());
  for (const p of builtin.results) {
    assert.deepEqual(problemsOf(p), [], `${p.provider}:\n${problemsOf(p).join('\n')}`);
    assert.ok(p.replayed && p.recordings.length > 0);
    for (const r of p.recordings) assert.equal(r.answered, r.exchanges, `${r.file}: every recorded exchange is asked for`);
  }
  // The whole catalogue, well under the minute the issue allows (measured: about 10 s on 2 busy cores).
  assert.ok(builtin.ms < 60_000, `the replay took ${builtin.ms} ms`);
});

/**
 * Copies of github.yaml and its recordings under other names, each broken in one way; replayed in
 * one run, as a folder of TERAPI_PROVIDERS_DIR would be.
 */
const dir = tempDir('terapi-replay-test-');
after(() => rmSync(dir, { recursive: true, force: true }));
const github = readFileSync(join(BUILTIN_PROVIDERS_DIR, 'github.yaml'), 'utf8');
function variant(name: string, edit: (provider: string) => string = (p) => p, editRecording?: (file: string, text: string) => string | undefined): void {
  writeFileSync(join(dir, `${name}.yaml`), edit(github));
  const recordings = join(dir, `${name}.recordings`);
  cpSync(join(BUILTIN_PROVIDERS_DIR, 'github.recordings'), recordings, { recursive: true });
  for (const file of readdirSync(recordings)) {
    const text = readFileSync(join(recordings, file), 'utf8');
    const changed = editRecording?.(file, text.replace(/terapi test github/g, `terapi test ${name}`));
    if (changed === undefined) continue;
    if (changed === '') rmSync(join(recordings, file));
    else writeFileSync(join(recordings, file), changed);
  }
}
const replace = (text: string, from: string, to: string) => {
  assert.ok(text.includes(from), `the fixture still holds ${JSON.stringify(from)}`);
  return text.replace(from, to);
};

variant('gh-same');
variant('gh-mapping', (p) => replace(p, '"title": title,', '"title": $uppercase(title),'));
variant('gh-request', (p) => replace(p, 'direction: asc', 'direction: desc'));
variant('gh-credential', (p) => replace(p, 'api:\n', 'api:\n  credentials: { in: query, name: access_token, value: "${access_token}" }\n'));
variant('gh-missing-page', undefined, (file, text) => (file === 'issues.yaml' ? text.replace(/\n +link: .*/, '') : undefined));
variant('gh-extra-request', undefined, (file, text) => (file === 'issues.yaml' ? text.replace(/ {2}- source: https:\/\/docs.github.com\/en\/rest\/using-the-rest-api\/using-pagination-in-the-rest-api[\s\S]*?(?= {2}- source)/, '') : undefined));
variant('gh-uncovered', undefined, (file) => (file.startsWith('update_issue') ? '' : undefined));
variant('gh-typo', undefined, (file, text) => (file === 'create_issue.yaml' ? replace(text, '    request:\n', '    reqest:\n') : undefined));
variant('gh-new', undefined, (file) => (file.endsWith('.snapshot.yaml') ? '' : undefined));

let broken: Map<string, ProviderResult>;
before(async () => {
  const report = await replay({ dir, providers: ['gh-same', 'gh-mapping', 'gh-request', 'gh-credential', 'gh-missing-page', 'gh-extra-request', 'gh-uncovered', 'gh-typo'] });
  broken = new Map(report.results.map((r) => [r.provider, r]));
});
const text = (name: string) => problemsOf(broken.get(name)!).join('\n');

test('an unchanged copy replays as the original does (the failures below come from their changes)', () => {
  assert.equal(text('gh-same'), '');
});

test('a changed mapping fails, with the records diffed against the snapshot', () => {
  const out = text('gh-mapping');
  assert.match(out, /issues\.yaml: the runs or records differ from .*gh-mapping\.recordings\/issues\.snapshot\.yaml; - snapshot, \+ now/);
  assert.match(out, /\n\s+- +title: Found a bug\n\s+\+ +title: FOUND A BUG\n/);
  // The actions do not use the mapping: they still pass.
  assert.deepEqual(broken.get('gh-mapping')!.recordings.filter((r) => r.kind === 'action').flatMap((r) => r.problems), []);
});

test('a changed request fails, with the request diffed against the recorded exchange', () => {
  const out = text('gh-request');
  assert.match(out, /a request does not match exchange 1 of issues\.yaml \(run 1\) \(issues\.yaml:\d+\); - recorded, \+ sent:/);
  assert.match(out, /\n\s+- +direction: asc\n\s+\+ +direction: desc\n/);
  assert.match(out, /2 recorded requests were never sent, from exchange 1 of issues\.yaml \(run 1\) \(line 4: GET \/repos\/octocat\/Hello-World\/issues\): Terapi sent 0 of 2/);
});

test('a credential sent elsewhere than the recording says fails, naming where it went', () => {
  const out = text('gh-credential');
  assert.match(out, /- +authorization: Bearer gho_16C7e42F292c6912E7710c838347Ae178B4a/);
  assert.match(out, /\+ +access_token: gho_16C7e42F292c6912E7710c838347Ae178B4a/);
  assert.match(out, /the credential also goes in query access_token: it must go only where the recording says/);
});

test('a recorded request Terapi does not send, and a request no recording expects, both fail', () => {
  assert.match(text('gh-missing-page'), /1 recorded request was never sent, from exchange 2 of issues\.yaml \(run 1\) \(line \d+: GET \/repositories\/1296269\/issues\): Terapi sent 1 of 2/);
  // Without the second page its issue is not seen: the next run asks from an earlier checkpoint.
  assert.match(text('gh-missing-page'), /\n\s+- +since: 2011-04-24T10:00:00Z\n\s+\+ +since: 2011-04-22T13:33:48Z\n/);
  const extra = text('gh-extra-request');
  assert.match(extra, /a request does not match exchange 2 of issues\.yaml \(run 1\)|a request no recording expects/);
  assert.match(extra, /path: \/repositories\/1296269\/issues/);
});

test('a sync or action without a recording, or a recording that breaks its schema, fails at file:line:col', () => {
  assert.match(text('gh-uncovered'), /gh-uncovered\.recordings:1:1: action "update_issue" of provider "gh-uncovered" has no recording: add a file with "action: update_issue"/);
  assert.match(text('gh-typo'), /gh-typo\.recordings\/create_issue\.yaml:\d+:5: unknown key "reqest" in "exchanges\.0": did you mean "request"\?/);
});

test('terapi test <provider> replays one provider; --update writes new snapshots, after which it passes', async () => {
  const terapi = (...args: string[]) => runCommand([process.execPath, join(ROOT, 'server/bin.mjs'), 'test', ...args], { cwd: ROOT, env: { PATH: process.env.PATH!, HOME: process.env.HOME ?? '/tmp' } });
  let r = await terapi('gh-new', '--dir', dir);
  assert.equal(r.code, 1);
  assert.match(r.stdout, /✗ sync issues \(.*gh-new\.recordings\/issues\.yaml, 3\/3 exchanges\)\n {6}.*issues\.snapshot\.yaml does not exist: run `terapi test gh-new --update` and review it/);
  r = await terapi('gh-new', '--dir', dir, '--update');
  assert.equal(r.code, 0, r.stdout);
  assert.match(r.stdout, /1 provider, 3 recordings: all passed, 3 snapshots written/);
  assert.equal(readFileSync(join(dir, 'gh-new.recordings/create_issue.snapshot.yaml'), 'utf8'), readFileSync(join(BUILTIN_PROVIDERS_DIR, 'github.recordings/create_issue.snapshot.yaml'), 'utf8').replace('terapi test github', 'terapi test gh-new'));
  r = await terapi('gh-new', '--dir', dir);
  assert.equal(r.code, 0, r.stdout);
  assert.match(r.stdout, /^✓ gh-new\n/);
  r = await terapi('no-such-provider');
  assert.equal(r.code, 1);
  assert.match(r.stdout, /there is no provider "no-such-provider" in providers/);
});

test('a key that goes in the query is checked there, and only there; $match takes a value that changes on every run', async () => {
  const acme = `
display_name: Acme
categories: [testing]
docs: https://developer.acme.example/docs
auth: { mode: api_key, pattern: "ak_[a-z0-9]+" }
api:
  base_url: https://api.acme.example/v1
  credentials: { in: query, name: key, value: "\${api_key}" }
syncs:
  items:
    mode: full
    request: { path: /items }
    records: items
    mapping: "{ 'id': id, 'name': $uppercase(name) }"
    model: { name: AcmeItem }
actions:
  stamp:
    input: { type: object, properties: { note: { type: string } } }
    request: { method: POST, path: /stamps, body: "{ 'note': note, 'at': $now() }" }
    output: "{ 'id': id, 'at': at }"
`;
  const recordings = {
    'connection.yaml': 'credentials: { type: api_key, api_key: ak_1a2b3c }\ncredential: { query: key, value: ak_1a2b3c }\n',
    'items.yaml': `sync: items
exchanges:
  - source: https://developer.acme.example/docs/items
    request: { method: GET, path: /items }
    response: { status: 200, body: { items: [{ id: 1, name: one }, { id: 2, name: two }] } }
`,
    'stamp.yaml': `action: stamp
input: { note: hello }
exchanges:
  - source: https://developer.acme.example/docs/stamps
    request: { method: POST, path: /stamps, body: { note: hello, at: { $match: "^20[0-9]{2}-[0-9]{2}-[0-9]{2}T" } } }
    response: { status: 201, body: { id: st_1, at: "2026-01-02T03:04:05.000Z" } }
`,
  };
  for (const [name, provider] of [['acme', acme], ['acme-leak', acme.replace('api:\n', 'api:\n  headers: { X-Acme-Key: "${api_key}" }\n')]]) {
    writeFileSync(join(dir, `${name}.yaml`), provider);
    mkdirSync(join(dir, `${name}.recordings`), { recursive: true });
    for (const [file, text] of Object.entries(recordings)) writeFileSync(join(dir, `${name}.recordings`, file), text);
  }
  let report = await replay({ dir, providers: ['acme', 'acme-leak'], update: true });
  const [ok, leak] = report.results;
  assert.deepEqual(problemsOf(ok), []);
  assert.deepEqual(ok.recordings.map((r) => r.written), [true, true]);
  assert.match(readFileSync(join(dir, 'acme.recordings/items.snapshot.yaml'), 'utf8'), /records:\n {2}- id: 1\n {4}name: ONE\n/);
  assert.match(problemsOf(leak).join('\n'), /the credential also goes in header x-acme-key: it must go only where the recording says/);
  assert.match(problemsOf(leak).join('\n'), /acme-leak\.recordings\/items\.snapshot\.yaml not written: the requests do not match the recording/);
  // Again, with another $now(): the snapshots written above hold.
  report = await replay({ dir, providers: ['acme'] });
  assert.deepEqual(problemsOf(report.results[0]), []);
});
