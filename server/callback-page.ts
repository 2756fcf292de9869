import type { ConnectOutcome } from '../core/auth/connect.ts';

const escape = (s: string) => s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

/**
 * The page the OAuth callback ends on: it tells the window that opened the sign-in popup how it
 * went (postMessage), then closes; opened without a popup, it just says so.
 */
export function callbackPage(outcome: ConnectOutcome): string {
  const message = { type: 'terapi:connect', ...outcome };
  // JSON in a script: escape < so that no value can close the tag.
  const data = JSON.stringify(message).replace(/</g, '\\u003c');
  const title = outcome.ok ? 'Connected' : 'Connection failed';
  const text = outcome.ok ? 'You can close this window.' : escape(outcome.message);
  return `<!doctype html>
<html><head><meta charset="utf-8"><title>${title}</title></head>
<body><h1>${title}</h1><p>${text}</p>
<script>
const result = ${data};
if (window.opener) { window.opener.postMessage(result, '*'); window.close(); }
</script></body></html>
`;
}
