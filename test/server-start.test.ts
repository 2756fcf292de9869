/**
 * `npm start` as an operator meets it: the first start makes and prints the secret key once, keeps
 * both keys in the data directory, a bad provider file stops the start with every error, and
 * PostgreSQL without keys is refused.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFileSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { providersDir, tempDir } from './support.ts';

const root = new URL('..', import.meta.url).pathname;

/** Runs the server as `npm start` does; resolves once it listens (then stops it) or exits. */
function start(env: Record<string, string>): Promise<{ code: number | null; stdout: string; stderr: string; listened: boolean }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ['--import', 'tsx', 'server/main.ts'], { cwd: root, env: { PATH: process.env.PATH!, PORT: '0', ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    let listened = false;
    child.stdout.on('data', (d) => {
      stdout += d;
      if (!listened && stdout.includes('terapi listening')) {
        listened = true;
        setTimeout(() => child.kill('SIGTERM'), 200);
      }
    });
    child.stderr.on('data', (d) => (stderr += d));
    child.on('exit', (code) => resolve({ code, stdout, stderr, listened }));
  });
}

test('the first start generates the keys, prints the secret key once, and keeps both with mode 0600', async () => {
  const dataDir = tempDir('terapi-first-');
  try {
    const first = await start({ TERAPI_DATA_DIR: dataDir });
    assert.ok(first.listened, first.stderr);
    const keys = JSON.parse(readFileSync(join(dataDir, 'keys.json'), 'utf8'));
    assert.match(keys.secret_key, /^sk_[0-9a-f]{48}$/);
    assert.match(keys.encryption_key, /^[0-9a-f]{64}$/);
    assert.equal(statSync(join(dataDir, 'keys.json')).mode & 0o777, 0o600);
    assert.ok(first.stdout.includes(`your secret key is ${keys.secret_key}`));
    assert.equal(first.stdout.split(keys.secret_key).length, 2, 'printed exactly once');
    assert.ok(!first.stdout.includes(keys.encryption_key), 'the encryption key is never printed');
    const second = await start({ TERAPI_DATA_DIR: dataDir });
    assert.ok(second.listened);
    assert.ok(!second.stdout.includes(keys.secret_key), 'not printed again');
  } finally {
    rmSync(dataDir, { recursive: true, force: true });
  }
});

test('an invalid provider file stops the start with every error, each as file:line:col', async () => {
  const dir = providersDir({ broken: 'display_name: Broken\ncategories: [x]\ndocs: not a url\nauth: { mode: magic }\napi: { base_url: https://x.example.com }\n' });
  const dataDir = tempDir('terapi-bad-');
  try {
    const r = await start({ TERAPI_DATA_DIR: dataDir, TERAPI_PROVIDERS_DIR: dir });
    assert.equal(r.code, 1);
    assert.equal(r.listened, false);
    assert.match(r.stderr, /cannot start: 2 errors in provider files/);
    assert.ok(r.stderr.includes(`${join(dir, 'broken.yaml')}:3:7: "docs" must be a valid uri; got "not a url"`), r.stderr);
    assert.ok(r.stderr.includes(`${join(dir, 'broken.yaml')}:4:15: "auth.mode" must be one of oauth2, oauth2_client_credentials, api_key, basic, none; got "magic"`), r.stderr);
  } finally {
    rmSync(dataDir, { recursive: true, force: true });
  }
});

test('with PostgreSQL, a start without the secret and encryption keys is refused', async () => {
  const r = await start({ TERAPI_DATABASE_URL: 'postgresql://postgres@127.0.0.1:5432/test', TERAPI_DATA_DIR: tempDir('terapi-pg-') });
  assert.equal(r.code, 1);
  assert.match(r.stderr, /TERAPI_SECRET_KEY and TERAPI_ENCRYPTION_KEY must both be set/);
});
