// The connect UI (GET /connect): an end user connects an account to the app. Its session token
// comes either in the fragment of connect_url (#connect_session_token=...), which no browser sends
// to a server and which this page takes out of the address bar at once, or from the app's page
// that opened it (connect.js), by postMessage between the two windows. It is then kept in this
// tab's sessionStorage only, so that the OAuth round trip can come back here, and sent to the API as
// Authorization: Bearer, never in a URL.
import { ApiError, focus, h, logo, request, show } from './ui.js';

const STORAGE_KEY = 'terapi_connect_session';
/** How long the page waits for the app's page to hand it the token. */
const HANDOFF_MS = 10_000;
const main = document.getElementById('main');
const origins = JSON.parse(document.querySelector('meta[name="terapi-allowed-origins"]').content);

/** Tells the app's page (window.opener) how things went, for the app's origins only. */
function tellApp(message) {
  if (!window.opener) return;
  for (const origin of origins) window.opener.postMessage({ type: 'terapi:connect', ...message }, origin);
}

/** The session token: from the fragment, from this tab's storage, or handed over by the app's page. */
async function sessionToken() {
  const fromFragment = new URLSearchParams(location.hash.slice(1)).get('connect_session_token');
  if (fromFragment) {
    sessionStorage.setItem(STORAGE_KEY, fromFragment);
    history.replaceState(null, '', location.pathname + location.search);
  }
  const kept = sessionStorage.getItem(STORAGE_KEY);
  if (kept || !window.opener) return kept;
  return new Promise((resolve) => {
    const timer = setTimeout(() => done(null), HANDOFF_MS);
    function done(token) {
      clearTimeout(timer);
      window.removeEventListener('message', listen);
      if (token) sessionStorage.setItem(STORAGE_KEY, token);
      resolve(token);
    }
    function listen(event) {
      if (event.source !== window.opener || !origins.includes(event.origin)) return;
      if (event.data?.type === 'terapi:session' && typeof event.data.token === 'string') done(event.data.token);
    }
    window.addEventListener('message', listen);
    for (const origin of origins) window.opener.postMessage({ type: 'terapi:ready' }, origin);
  });
}

/** A page that cannot go on: no session, an expired one. */
function problem(title, text) {
  const heading = h('h1', {}, title);
  show(main, h('div', { class: 'result failure', role: 'alert' }, heading, h('p', {}, text)), h('p', { class: 'actions' }, h('button', { type: 'button', onclick: () => window.close() }, 'Close')));
  focus(heading);
}

function chooser(token, session) {
  const heading = h('h1', {}, 'Connect an account');
  show(
    main,
    heading,
    h('p', { class: 'lead' }, 'Choose the service to connect.'),
    h('ul', { class: 'integrations' }, session.integrations.map((integration) =>
      h('li', {}, h('button', { type: 'button', class: 'integration', onclick: () => form(token, session, integration) }, logo(integration), h('span', {}, integration.display_name))),
    )),
  );
  focus(heading);
}

const humanize = (name) => name.replace(/[_-]+/g, ' ').replace(/^./, (c) => c.toUpperCase());

/** A provider pattern as JavaScript reads it, anchored; null where RE2 syntax is not JavaScript's (the server checks it anyway). */
function matcher(pattern) {
  if (!pattern) return null;
  try {
    return new RegExp(`^(?:${pattern})$`, 'u');
  } catch {
    return null;
  }
}

/** One field of the form: a label, the input, the provider's description, and where its error shows. */
function field(spec, group) {
  const id = `${group}-${spec.name}`;
  const label = spec.label ?? humanize(spec.name);
  const hint = [spec.description, spec.default ? `Leave empty for ${spec.default}.` : spec.example ? `For example: ${spec.example}` : null].filter(Boolean).join(' ');
  const input = h('input', {
    id,
    name: spec.name,
    type: spec.secret ? 'password' : spec.format === 'url' ? 'url' : 'text',
    required: !spec.optional,
    ...(spec.default ? { placeholder: spec.default } : {}),
    autocomplete: 'off',
    autocapitalize: 'off',
    spellcheck: 'false',
    'aria-describedby': [hint ? `${id}-hint` : null, `${id}-error`].filter(Boolean).join(' '),
  });
  const error = h('p', { id: `${id}-error`, class: 'field-error', hidden: true });
  const pattern = matcher(spec.pattern);
  const check = () => {
    const value = input.value;
    const message =
      value === '' ? (spec.optional ? null : `Enter your ${label}.`)
      : pattern && !pattern.test(value) ? `This does not look like a ${label}${spec.example ? ` (for example ${spec.example})` : ''}.`
      : null;
    error.hidden = message === null;
    error.textContent = message ?? '';
    input.toggleAttribute('aria-invalid', message !== null);
    return message === null;
  };
  input.addEventListener('change', check);
  return {
    spec,
    input,
    check,
    element: h('div', { class: 'field' },
      h('label', { for: id }, label, spec.optional ? h('span', { class: 'optional' }, ' (optional)') : null),
      hint ? h('p', { id: `${id}-hint`, class: 'hint' }, hint) : null,
      input,
      error),
  };
}

function form(token, session, integration) {
  const oauth = integration.auth_mode === 'oauth2' || integration.auth_mode === 'oauth1';
  const credentials = integration.credentials.map((spec) => field(spec, 'credential'));
  const config = integration.connection_config.map((spec) => field(spec, 'config'));
  const fields = [...credentials, ...config];
  const alert = h('div', { class: 'form-error', role: 'alert', hidden: true });
  const submit = h('button', { type: 'submit', class: 'primary' }, oauth ? `Continue to ${integration.display_name}` : 'Connect');
  const back = session.integrations.length > 1 ? h('button', { type: 'button', class: 'link', onclick: () => chooser(token, session) }, '← All services') : null;
  const heading = h('h1', { class: 'with-logo' }, logo(integration), h('span', {}, `Connect ${integration.display_name}`));
  const lead = oauth
    ? `You will sign in at ${integration.display_name} and allow access, then come back here.`
    : fields.length ? `Enter the details from your ${integration.display_name} account.` : `Connect your ${integration.display_name} account.`;

  const sent = async (event) => {
    event.preventDefault();
    alert.hidden = true;
    const invalid = fields.filter((f) => !f.check());
    if (invalid.length) {
      focus(invalid[0].input);
      return;
    }
    const values = (list) => Object.fromEntries(list.filter((f) => f.input.value !== '').map((f) => [f.spec.name, f.input.value]));
    const body = { ...values(credentials), ...(config.length ? { connection_config: values(config) } : {}) };
    submit.disabled = true;
    submit.textContent = oauth ? 'Opening…' : 'Checking…';
    try {
      if (oauth) {
        const { authorization_url } = await request(`connect/${encodeURIComponent(integration.provider_config_key)}/oauth`, { method: 'POST', body, token });
        location.assign(authorization_url);
        return;
      }
      const result = await request(`connect/${encodeURIComponent(integration.provider_config_key)}/credentials`, { method: 'POST', body, token });
      connected(integration, result);
    } catch (e) {
      if (e instanceof ApiError && e.status === 401) return problem('This link has expired', 'Go back to the app and start connecting again.');
      tellApp({ ok: false, error: e.code ?? 'error', message: e.message, provider_config_key: integration.provider_config_key, connection_id: session.connection_id });
      alert.replaceChildren(h('strong', {}, 'Not connected. '), e.message);
      alert.hidden = false;
      submit.disabled = false;
      submit.textContent = oauth ? `Continue to ${integration.display_name}` : 'Connect';
      focus(alert);
    }
  };

  show(
    main,
    back,
    heading,
    h('p', { class: 'lead' }, lead),
    h('form', { novalidate: true, onsubmit: sent }, fields.map((f) => f.element), alert, h('p', { class: 'actions' }, submit)),
  );
  if (fields.length) focus(fields[0].input);
  else focus(heading);
}

function connected(integration, result) {
  sessionStorage.removeItem(STORAGE_KEY);
  tellApp({ ok: true, provider_config_key: result.provider_config_key, connection_id: result.connection_id });
  const heading = h('h1', {}, `Connected to ${integration.display_name}`);
  const close = h('button', { type: 'button', class: 'primary', onclick: () => window.close() }, 'Close this window');
  show(main, h('div', { class: 'result success', role: 'status' }, heading, h('p', {}, 'You can close this window and go back to the app.')), h('p', { class: 'actions' }, close));
  focus(close);
  if (window.opener) setTimeout(() => window.close(), 1500);
}

async function start() {
  const token = await sessionToken();
  if (!token) {
    return problem('This link is incomplete', window.opener
      ? 'The app that opened this window did not hand it a connect session (is its address in TERAPI_ALLOWED_ORIGINS?). Go back to the app and try again.'
      : 'Open it from the app: the link it gives holds the session.');
  }
  let session;
  try {
    session = await request('connect/session', { token });
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) {
      sessionStorage.removeItem(STORAGE_KEY);
      return problem('This link has expired', 'Go back to the app and start connecting again.');
    }
    return problem('Something went wrong', e.message);
  }
  if (!session.integrations.length) return problem('Nothing to connect', 'The app allows no service that is set up here. Go back to the app.');
  if (session.integrations.length === 1) form(token, session, session.integrations[0]);
  else chooser(token, session);
}

start();
