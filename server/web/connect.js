// connect.js: Terapi's connect UI for an app's own pages (README, "The connect UI").
//
//   import { connect } from 'https://terapi.example.com/connect.js';
//   const result = await connect({ sessionToken, onEvent: (e) => console.log(e.type) });
//   if (result.ok) ... result.provider_config_key, result.connection_id
//
// It opens Terapi's connect page in a popup (call it from a click, or the browser blocks the popup),
// hands it the session token by postMessage (so the token is in no URL and no history), and
// answers a promise that always resolves:
//   { ok: true, provider_config_key, connection_id }              connected
//   { ok: false, error: 'closed', message, last_error? }          the window was closed first
//   { ok: false, error: 'popup_blocked', message }                the browser refused the popup
// onEvent hears { type: 'opened' }, { type: 'error', error, message, provider_config_key? } (a
// failed attempt: the window stays open for another), { type: 'connected', ... } and { type: 'closed' }.
// Messages are taken from Terapi's own origin and from the popup it opened only.

/** Where this module was loaded from: the Terapi server, with its path prefix. */
const here = new URL('.', import.meta.url);

export function connect({ sessionToken, onEvent, baseUrl } = {}) {
  if (typeof sessionToken !== 'string' || sessionToken === '') {
    throw new TypeError('connect() needs { sessionToken }: the token your backend got from POST /connect/sessions');
  }
  const base = new URL(baseUrl ?? here);
  if (!base.pathname.endsWith('/')) base.pathname += '/';
  const origin = base.origin;
  const emit = (event) => {
    try {
      onEvent?.(event);
    } catch (e) {
      setTimeout(() => { throw e; });
    }
  };

  return new Promise((resolve) => {
    const popup = window.open(new URL('connect', base).href, 'terapi-connect', 'popup,width=480,height=720');
    if (!popup) {
      const result = { ok: false, error: 'popup_blocked', message: 'the browser blocked the connect window: call connect() from a click or a key press' };
      emit({ type: 'error', error: result.error, message: result.message });
      resolve(result);
      return;
    }
    let lastError;
    let settled = false;
    const finish = (result, event) => {
      if (settled) return;
      settled = true;
      window.removeEventListener('message', listen);
      clearInterval(watch);
      emit(event);
      resolve(result);
    };
    function listen(event) {
      if (event.origin !== origin || event.source !== popup) return;
      const data = event.data;
      if (!data || typeof data !== 'object') return;
      if (data.type === 'terapi:ready') {
        popup.postMessage({ type: 'terapi:session', token: sessionToken }, origin);
        emit({ type: 'opened' });
      } else if (data.type === 'terapi:connect' && data.ok === true) {
        const result = { ok: true, provider_config_key: data.provider_config_key, connection_id: data.connection_id };
        finish(result, { type: 'connected', ...result });
      } else if (data.type === 'terapi:connect') {
        lastError = { error: String(data.error), message: String(data.message), ...(data.provider_config_key ? { provider_config_key: data.provider_config_key } : {}) };
        emit({ type: 'error', ...lastError });
      }
    }
    window.addEventListener('message', listen);
    const watch = setInterval(() => {
      if (!popup.closed) return;
      finish({ ok: false, error: 'closed', message: 'the connect window was closed before an account was connected', ...(lastError ? { last_error: lastError } : {}) }, { type: 'closed' });
    }, 250);
  });
}
