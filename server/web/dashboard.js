// The operator dashboard (GET /dashboard). Signing in posts the secret key once; the server answers
// with an HttpOnly session cookie, so the key is in no URL, no script variable after the form, and no
// storage of the browser. Every read goes through the API (operations marked DashboardSession).
import { ApiError, focus, h, request, show } from './ui.js';

const main = document.getElementById('main');
const account = document.getElementById('account');
const OPERATIONS_PAGE = 50;
/** Whether this page has been signed in: a 401 then means the session ended. */
let signedIn = false;

const when = (iso) => (iso ? h('time', { datetime: iso }, new Date(iso).toLocaleString()) : '');
const badge = (value, text = value.replace(/_/g, ' ')) => h('span', { class: `badge ${value}` }, text);

/** A table, or a line saying there is nothing yet. */
function table(caption, columns, rows, empty) {
  if (!rows.length) return h('p', { class: 'empty' }, empty);
  return h('div', { class: 'table-scroll' },
    h('table', {},
      h('caption', { class: 'visually-hidden' }, caption),
      h('thead', {}, h('tr', {}, columns.map((c) => h('th', { scope: 'col' }, c)))),
      h('tbody', {}, rows)));
}

function signIn(problem) {
  account.replaceChildren();
  const input = h('input', { id: 'secret-key', name: 'secret_key', type: 'password', autocomplete: 'current-password', required: true, 'aria-describedby': 'secret-key-hint secret-key-error' });
  const error = h('p', { id: 'secret-key-error', class: 'field-error', role: 'alert', hidden: !problem }, problem ?? '');
  const submit = h('button', { type: 'submit', class: 'primary' }, 'Sign in');
  const sent = async (event) => {
    event.preventDefault();
    if (!input.value) {
      error.textContent = 'Enter the secret key.';
      error.hidden = false;
      return focus(input);
    }
    submit.disabled = true;
    try {
      await request('dashboard/login', { method: 'POST', body: { secret_key: input.value } });
      input.value = '';
      await dashboard();
    } catch (e) {
      submit.disabled = false;
      error.textContent = e instanceof ApiError && e.status === 401 ? "That is not this server's secret key." : e.message;
      error.hidden = false;
      input.setAttribute('aria-invalid', 'true');
      focus(input);
    }
  };
  const heading = h('h1', {}, 'Sign in');
  show(main, h('div', { class: 'card' },
    heading,
    h('form', { novalidate: true, onsubmit: sent },
      h('div', { class: 'field' },
        h('label', { for: 'secret-key' }, 'Secret key'),
        h('p', { id: 'secret-key-hint', class: 'hint' }, "TERAPI_SECRET_KEY, or secret_key in the data directory's keys.json."),
        input,
        error),
      h('p', { class: 'actions' }, submit))));
  focus(input);
}

async function signOut() {
  await request('dashboard/logout', { method: 'POST' }).catch(() => {});
  signedIn = false;
  signIn();
}

/** Reads the API as the signed-in operator; an ended session goes back to the sign-in form. */
async function read(path) {
  try {
    return await request(path);
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) signIn(signedIn ? 'Your session has ended: sign in again.' : undefined);
    throw e;
  }
}

async function dashboard() {
  const [{ integrations }, { connections }, { syncs }] = await Promise.all([read('integration'), read('connection'), read('syncs')]);
  signedIn = true;
  account.replaceChildren(h('button', { type: 'button', onclick: signOut }, 'Sign out'));
  const operations = operationsSection(integrations, connections);
  const heading = h('h2', { id: 'integrations-title' }, `Integrations (${integrations.length})`);
  show(main,
    h('section', { 'aria-labelledby': 'integrations-title' },
      heading,
      table('Integrations', ['Key', 'Provider', 'Auth', 'Connections', 'Created'], integrations.map((i) =>
        h('tr', {}, h('td', {}, i.unique_key), h('td', {}, i.display_name ?? i.provider), h('td', {}, i.auth_mode ?? ''), h('td', {}, String(i.connection_count)), h('td', {}, when(i.created_at)))),
      'No integration yet: POST /integration makes one.')),
    h('section', { 'aria-labelledby': 'connections-title' },
      h('h2', { id: 'connections-title' }, `Connections (${connections.length})`),
      table('Connections', ['Integration', 'Connection', 'State', 'Credentials', 'Created', ''], connections.map((c) =>
        h('tr', { 'data-connection': c.id, 'data-integration': c.provider_config_key },
          h('td', {}, c.provider_config_key),
          h('td', {}, c.id),
          h('td', {}, c.needs_reauth ? [badge('needs_reauth', 'needs reauth'), h('div', { class: 'hint' }, c.reauth_reason ?? '')] : badge('success', 'ok')),
          h('td', {}, c.credentials.type, c.credentials.expires_at ? [' · expires ', when(c.credentials.expires_at)] : ''),
          h('td', {}, when(c.created_at)),
          h('td', {}, h('button', { type: 'button', class: 'link', onclick: () => operations.filter(c.provider_config_key, c.id) }, 'Operations')))),
      'No connection yet.')),
    h('section', { 'aria-labelledby': 'syncs-title' },
      h('h2', { id: 'syncs-title' }, `Syncs (${syncs.length})`),
      table('Syncs', ['Integration', 'Connection', 'Sync', 'Status', 'Last run', 'Records', 'Next run', 'Error'], syncs.map((s) =>
        h('tr', { 'data-sync': `${s.provider_config_key}/${s.connection_id}/${s.sync_name}` },
          h('td', {}, s.provider_config_key),
          h('td', {}, s.connection_id),
          h('td', {}, s.sync_name, h('div', { class: 'hint' }, s.model)),
          h('td', {}, badge(s.status)),
          h('td', {}, s.last_run ? [badge(s.last_run.outcome), ' ', when(s.last_run.finished_at ?? s.last_run.started_at), h('div', { class: 'hint' }, `+${s.last_run.added} ~${s.last_run.updated} −${s.last_run.deleted}${s.last_run.invalid.count ? `, ${s.last_run.invalid.count} invalid` : ''}`)] : ''),
          h('td', {}, String(s.records_count)),
          h('td', {}, when(s.next_sync_date)),
          h('td', { class: 'message' }, s.error ?? ''))),
      'No sync has been scheduled yet.')),
    operations.element);
  await operations.load();
  focus(heading);
}

/** The operations log: filters by integration, connection and type, newest first, older pages on demand. */
function operationsSection(integrations, connections) {
  const select = (id, label, options) => {
    const element = h('select', { id, name: id }, h('option', { value: '' }, 'All'), options.map((o) => h('option', { value: o }, o.replace(/_/g, ' '))));
    return { element, field: h('div', { class: 'field' }, h('label', { for: id }, label), element) };
  };
  const integration = select('filter-integration', 'Integration', integrations.map((i) => i.unique_key));
  const connection = select('filter-connection', 'Connection', [...new Set(connections.map((c) => c.id))].sort());
  const type = select('filter-type', 'Type', ['connect', 'refresh', 'sync_run', 'action', 'proxy']);
  const status = h('p', { class: 'hint', role: 'status' });
  const body = h('div');
  const more = h('button', { type: 'button', class: 'more', hidden: true, onclick: () => load(true) }, 'Older operations');
  let cursor = null;
  let rows = [];

  async function load(older = false) {
    const query = new URLSearchParams({ limit: String(OPERATIONS_PAGE) });
    if (integration.element.value) query.set('provider_config_key', integration.element.value);
    if (connection.element.value) query.set('connection_id', connection.element.value);
    if (type.element.value) query.set('type', type.element.value);
    if (older && cursor) query.set('cursor', cursor);
    status.textContent = 'Loading…';
    let page;
    try {
      page = await read(`operations?${query}`);
    } catch (e) {
      status.textContent = e.message;
      return;
    }
    if (!older) rows = [];
    rows.push(...page.operations.map(operationRow));
    cursor = page.next_cursor;
    more.hidden = cursor === null;
    status.textContent = `${rows.length} operation${rows.length === 1 ? '' : 's'} shown${cursor ? '; older ones below' : ''}.`;
    show(body, table('Operations', ['When', 'Type', 'Integration', 'Connection', 'What', 'Outcome', 'Time', 'Message'], rows, 'No operation matches.'));
  }
  for (const s of [integration, connection, type]) s.element.addEventListener('change', () => load());

  const element = h('section', { 'aria-labelledby': 'operations-title', id: 'operations' },
    h('div', { class: 'section-head' }, h('h2', { id: 'operations-title' }, 'Operations'), h('button', { type: 'button', onclick: () => load() }, 'Refresh')),
    h('div', { class: 'filters', role: 'group', 'aria-label': 'Filter operations' }, integration.field, connection.field, type.field),
    status,
    body,
    more);
  return {
    element,
    load,
    /** Shows one connection's operations (the Connections table's links). */
    filter(key, id) {
      integration.element.value = key;
      connection.element.value = id;
      void load();
      focus(connection.element);
    },
  };
}

function operationRow(op) {
  const detail = op.type === 'sync_run' && op.detail
    ? `+${op.detail.added} ~${op.detail.updated} −${op.detail.deleted}${op.detail.invalid ? `, ${op.detail.invalid} invalid` : ''}`
    : op.detail?.status ? `HTTP ${op.detail.status}` : '';
  return h('tr', { 'data-operation': op.id },
    h('td', {}, when(op.at)),
    h('td', {}, op.type.replace(/_/g, ' ')),
    h('td', {}, op.provider_config_key ?? ''),
    h('td', {}, op.connection_id ?? ''),
    h('td', {}, op.name ?? '', detail ? h('div', { class: 'hint' }, detail) : ''),
    h('td', {}, badge(op.outcome)),
    h('td', {}, op.duration_ms === undefined ? '' : `${op.duration_ms} ms`),
    h('td', { class: 'message' }, op.message ?? ''));
}

dashboard().catch((e) => {
  if (e instanceof ApiError && e.status === 401) return; // the sign-in form is shown
  show(main, h('div', { class: 'card' }, h('h1', {}, 'The dashboard cannot load'), h('p', { role: 'alert' }, e.message)));
});
