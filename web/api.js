// The HTTP API client. The access token lives in this module's variables only (never in the
// browser's web storage). The refresh token is never seen by a script at all: signing in with
// `session_cookie` makes the server keep it in an HttpOnly, SameSite=Strict cookie sent only to
// /v1/auth, so a reloaded page restores the session by asking for a new access token.

/** An RFC 9457 problem answered by the API (or a network failure, code "network"). */
export class Problem extends Error {
  constructor(status, code, detail, title, retryAfter) {
    super(detail || title || code);
    this.status = status;
    this.code = code;
    this.detail = detail || '';
    this.title = title || '';
    this.retryAfter = retryAfter;
  }
}

let tokens = null; // { access, expiresAt }
let generation = 0; // bumped at every sign-in and sign-out: a late answer of an old session is dropped
let refreshing = null;
let refreshTimer = null;
const listeners = new Set();

/** Called with true on sign-in and false on sign-out (or when the session ends). */
export function onSession(fn) { listeners.add(fn); }
export function signedIn() { return tokens !== null; }

function setTokens(pair) {
  generation += 1;
  tokens = { access: pair.access_token, expiresAt: Date.now() + pair.expires_in * 1000 };
  clearTimeout(refreshTimer);
  // Rotate a minute before the access token expires (at least 5 s from now).
  const inMs = Math.max(5000, pair.expires_in * 1000 - 60000);
  refreshTimer = setTimeout(() => { refresh().catch(() => {}); }, inMs);
}

function endSession() {
  const was = tokens !== null;
  generation += 1;
  tokens = null;
  clearTimeout(refreshTimer);
  if (was) listeners.forEach((fn) => fn(false));
}

/** A fresh idempotency key: one per deliberate action (a click), reused on its retries. */
export function newKey() {
  return crypto.randomUUID();
}

async function parse(resp, want) {
  const type = (resp.headers.get('content-type') || '').split(';')[0].trim();
  if (!resp.ok) {
    let body = {};
    if (type === 'application/problem+json' || type === 'application/json') {
      try { body = await resp.json(); } catch { body = {}; }
    }
    const retry = resp.headers.get('retry-after');
    throw new Problem(resp.status, body.code || `http_${resp.status}`, body.detail, body.title, retry ? Number(retry) : undefined);
  }
  if (resp.status === 204) return null;
  if (want === 'blob') return resp.blob();
  if (type === 'application/json') return resp.json();
  return resp.text();
}

async function send(method, path, { body, key, headers = {}, want, auth = true } = {}) {
  const h = { Accept: 'application/json, application/problem+json', ...headers };
  if (body !== undefined) h['Content-Type'] = 'application/json';
  if (key) h['Idempotency-Key'] = key;
  if (auth && tokens) h.Authorization = `Bearer ${tokens.access}`;
  let resp;
  try {
    resp = await fetch(path, {
      method,
      headers: h,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: 'no-store',
      credentials: 'same-origin', // the refresh cookie (Path=/v1/auth) and nothing else
      redirect: 'error',
    });
  } catch (e) {
    throw new Problem(0, 'network', 'The server could not be reached. Check your connection and try again.');
  }
  return parse(resp, want);
}

/**
 * One API call. A 401 on a signed-in call rotates the tokens once and retries (the same
 * Idempotency-Key, so a retried money request is never done twice); a second 401 ends the
 * session.
 */
export async function api(method, path, opts = {}) {
  try {
    return await send(method, path, opts);
  } catch (e) {
    if (!(e instanceof Problem) || e.status !== 401 || !tokens || opts.auth === false) throw e;
    try {
      await refresh();
    } catch {
      // refresh() ended the session if the server refused the refresh token; a network
      // failure or a 503 keeps it (the next call tries again).
      throw e;
    }
    try {
      return await send(method, path, opts);
    } catch (again) {
      if (again instanceof Problem && again.status === 401) endSession();
      throw again;
    }
  }
}

/**
 * Runs one refresh-token exchange at a time across every tab of this app: each tab's exchange
 * spends the cookie and sets the next one, so two tabs presenting the same cookie at once would
 * look like a stolen token being reused (and the server would end the session). Where the
 * browser has no Web Locks (not a secure context), the exchange runs as it is.
 */
function exclusive(work) {
  if (globalThis.navigator && navigator.locks && typeof navigator.locks.request === 'function') {
    return navigator.locks.request('moneta-refresh-token', work);
  }
  return work();
}

/** Exchanges the refresh token for a new pair (one exchange at a time). */
export function refresh() {
  if (!tokens) return Promise.reject(new Problem(401, 'unauthorized', 'not signed in'));
  if (!refreshing) {
    const mine = generation;
    // The refresh token travels in its cookie; the answer sets the next one there.
    refreshing = exclusive(() => send('POST', '/v1/auth/refresh', { body: {}, auth: false }))
      .then((pair) => { if (generation === mine) setTokens(pair); })
      .catch((e) => {
        if (generation === mine && e.status >= 400 && e.status < 500 && e.status !== 429) endSession();
        throw e;
      })
      .finally(() => { refreshing = null; });
  }
  return refreshing;
}

/** Signs in. Throws a Problem (`mfa_required` asks for the authenticator code). */
export async function login(email, password, totpCode, deviceId) {
  if (tokens) await logout();
  const body = { email, password, session_cookie: true };
  if (totpCode) body.totp_code = totpCode;
  if (deviceId) body.device_id = deviceId;
  const pair = await send('POST', '/v1/auth/login', { body, auth: false });
  setTokens(pair);
  listeners.forEach((fn) => fn(true));
}

/** A reloaded page: a new access token from the refresh cookie, if the session is alive.
 * Resolves true when signed in again. */
export async function restore() {
  try {
    const pair = await exclusive(() => send('POST', '/v1/auth/refresh', { body: {}, auth: false }));
    setTokens(pair);
    listeners.forEach((fn) => fn(true));
    return true;
  } catch {
    return false;
  }
}

/** Signs out: revokes the session at the server (rotating an expired access token first),
 * then forgets the tokens, whatever the server said. */
export async function logout() {
  try {
    if (tokens) await api('POST', '/v1/auth/logout');
  } catch {
    // Signed out here all the same; the server ends an unused session when its tokens expire.
  } finally {
    endSession();
  }
}
