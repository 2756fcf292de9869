import { createTerapiClient } from '@terapi/client';

const terapi = createTerapiClient({
  baseUrl: process.env.TERAPI_URL ?? 'http://localhost:3003',
  secretKey: process.env.TERAPI_SECRET_KEY!,
});
const github = { provider_config_key: 'github', connection_id: 'user-1' };

// 1. A connect session for one of your users: open its connect_url in their browser
//    (or give its token to connect.js), and they connect their account.
const { data: session, error } = await terapi.POST('/connect/sessions', {
  body: { connection_id: 'user-1', allowed_integrations: ['github'] },
});
if (error) throw new Error(`${error.error}: ${error.message}`);
console.log('connect at', session.connect_url);

// 2. The connections your users made.
const { data: list } = await terapi.GET('/connection', { params: { query: { provider_config_key: 'github' } } });
for (const c of list!.connections) console.log('connection', c.id, c.needs_reauth ? 'needs re-authorisation' : 'ok');

// 3. A token for calling the provider yourself (Terapi refreshes it when it is due).
const { data: token } = await terapi.GET('/auth/token/{provider_config_key}/{connection_id}', {
  params: { path: github },
});
console.log('token', token!.type);

// 4. Run a sync now, without waiting for its schedule.
const { data: run } = await terapi.POST('/sync/trigger', { body: { ...github, syncs: ['issues'] } });
console.log('sync', run!.syncs.map((s) => `${s.name} ${s.status}`).join(', '));

// 5. Read what the syncs stored, every page (the helper follows next_cursor).
for await (const issue of terapi.records<{ id: string; title: string }>({ ...github, model: 'GithubIssue' })) {
  console.log('issue', issue.id, issue.title, issue._terapi_metadata.last_action);
}
