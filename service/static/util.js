// Shared pieces of the page: the token, calls to the server, messages people can read, formatting.
export const $ = (sel) => document.querySelector(sel);

export const S = {
  token: sessionStorage.getItem('spark-token'),
  onUnauthorized: () => {},
};

export class Unauthorized extends Error {}
export class Offline extends Error {}
export const LOST = 'Lost connection to the server';

// fetch with the token in the Authorization header; a network failure becomes Offline (one wording everywhere).
export async function api(path, opts = {}) {
  const headers = Object.assign({}, opts.headers, { Authorization: 'Bearer ' + S.token });
  let r;
  try { r = await fetch(path, Object.assign({}, opts, { headers })); } catch (e) {
    if (e.name === 'AbortError') throw e;
    throw new Offline(LOST);
  }
  if (r.status === 401) {
    S.onUnauthorized('The server refused the token. Enter the right one.');
    throw new Unauthorized('unauthorized');
  }
  return r;
}

// The server's message, without the validation library's wording ("Value error, ...", "Input should be ...").
export function humanMessage(text) {
  return String(text || '').replace(/\b(Value|Assertion) error,\s*/g, '').replace(/^options:\s*/, '')
    .replace(/^(\w+): Input should be (.*)$/, (m, f, rest) => `${f.replace(/_/g, ' ')} must be ${rest}`);
}

// The download cookie (service/media_cookie.py): <audio> and download links carry it instead of the token.
export async function renewMediaCookie() {
  const r = await api('/media-cookie', { method: 'POST' });
  if (!r.ok) throw new Error(await errorText(r));
}

export async function errorText(r) {
  try { const b = await r.json(); return humanMessage(b.message || b.error) || `the server answered ${r.status}`; } catch {
    return `the server answered ${r.status}`;
  }
}

export async function apiJson(path, opts) {
  const r = await api(path, opts);
  if (!r.ok) throw new Error(await errorText(r));
  return r.status === 204 ? null : r.json();
}

export function show(el, text, isError) {
  el.textContent = text || '';
  el.hidden = !text;
  if (isError !== undefined) el.classList.toggle('error', isError);
}

export const quiet = (e) => e instanceof Unauthorized || (e && e.name === 'AbortError');

export function fmtTime(s) {
  if (!isFinite(s) || s < 0) s = 0;
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = (s % 60).toFixed(1).padStart(4, '0');
  return h ? `${h}:${String(m).padStart(2, '0')}:${sec}` : `${m}:${sec}`;
}

export function fmtDuration(s) {
  if (!isFinite(s)) return '?';
  if (s < 10) return `${Number(s.toFixed(1))} s`;
  if (s < 90) return `${Math.round(s)} s`;
  if (s < 5400) return `${Math.round(s / 60)} min`;
  return `${(s / 3600).toFixed(1)} h`;
}

export function fmtBytes(n) {
  if (n >= 1 << 30) return `${(n / (1 << 30)).toFixed(1)} GB`;
  return `${(n / (1 << 20)).toFixed(1)} MB`;
}

export function randomKey() { // crypto.randomUUID needs a secure context; getRandomValues does not
  return Array.from(crypto.getRandomValues(new Uint8Array(16)), (b) => b.toString(16).padStart(2, '0')).join('');
}

// sessionStorage (this tab only, survives a reload): the open job, the form, titles of URL jobs.
export const saved = {
  get(key, fallback) { try { return JSON.parse(sessionStorage.getItem('spark-' + key)) ?? fallback; } catch { return fallback; } },
  set(key, value) { sessionStorage.setItem('spark-' + key, JSON.stringify(value)); },
};
