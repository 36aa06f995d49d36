// The operator page (plain JS modules, no library, talks to this server only). The token lives in sessionStorage
// and travels in the Authorization header; stems and zips stream from their own URLs, authorised by a short-lived
// HttpOnly download cookie (service/media_cookie.py) that the page renews while it is open.
import { $, S, apiJson, show, quiet, Offline, LOST, saved, renewMediaCookie } from './util.js';
import { initForm, wireForm } from './form.js';
import { J, active, updateJob, removeJob, stopAll, follow, select, wireDetail } from './jobs.js';
import { togglePlay, redraw } from './player.js';

const MEDIA_COOKIE_RENEW_MS = 5 * 60 * 1000; // the cookie lives 15 min
let timers = [];
let packState = null; // the catalogue is read again when the pack's state changes (loading -> ready)

function banner(text) { show($('#banner'), text); }
J.banner = banner;

async function renewCookie() {
  try { await renewMediaCookie(); } catch (e) { if (!quiet(e)) banner(e instanceof Offline ? LOST : e.message); }
}

async function login(token) {
  S.token = token;
  let r;
  try { r = await fetch('/status', { headers: { Authorization: 'Bearer ' + token } }); } catch {
    show($('#login-msg'), `${LOST}. Check that it is running, then try again.`); return;
  }
  if (r.status === 401) { show($('#login-msg'), 'Wrong token: the server refused it.'); return; }
  if (!r.ok) { show($('#login-msg'), `The server cannot answer now (status ${r.status}).`); return; }
  sessionStorage.setItem('spark-token', token);
  show($('#login-msg'), '');
  renderStatus(await r.json());
  try {
    await renewMediaCookie();
    initForm(await apiJson('/recipes'), onQueued);
  } catch (e) {
    if (!quiet(e)) show($('#login-msg'), `Cannot read what this server can do: ${e.message}`);
    return;
  }
  $('#login').hidden = true; $('#app').hidden = false; $('#logout').hidden = false;
  await refresh();
  const open = saved.get('open', null); // the job open before a reload
  if (open && J.jobs.has(open)) select(open);
  timers.push(setInterval(refresh, 5000), setInterval(renewCookie, MEDIA_COOKIE_RENEW_MS));
}

function logout(message) {
  if (S.token) fetch('/media-cookie', { method: 'DELETE', headers: { Authorization: 'Bearer ' + S.token } }).catch(() => {});
  sessionStorage.removeItem('spark-token');
  S.token = null;
  timers.forEach(clearInterval); timers = []; packState = null;
  stopAll();
  $('#app').hidden = true; $('#logout').hidden = true; $('#login').hidden = false;
  $('#server-status').textContent = '';
  show($('#login-msg'), message || '');
  $('#token').value = '';
  $('#token').focus();
}
S.onUnauthorized = logout;

async function reloadCatalogue() {
  try { initForm(await apiJson('/recipes'), onQueued); } catch (e) { if (!quiet(e)) banner(`Cannot read what this server can do: ${e.message}`); }
}

function renderStatus(st) {
  if (packState !== null && packState !== st.pack.state) reloadCatalogue();
  packState = st.pack.state;
  const q = st.queue;
  const pack = st.pack.kind === 'demo' ? 'DEMO pack (demo quality)' : `pack ${st.pack.kind || '?'} (${st.pack.state})`;
  $('#server-status').textContent = `${pack} · ${q.running} running · ${q.queued}/${q.capacity} queued`;
}

function onQueued(job) {
  show($('#submit-msg'), `Queued ${job.input.name || 'the URL'}.`, false);
  setTimeout(() => show($('#submit-msg'), ''), 4000); // a note, not a state: the job list carries the state
  updateJob(job); select(job.id); follow(job.id, refresh);
}

async function refresh() {
  try {
    const [list, st] = await Promise.all([apiJson('/jobs?limit=50'), apiJson('/status')]);
    renderStatus(st);
    const seen = new Set(list.jobs.map((j) => j.id));
    for (const id of [...J.jobs.keys()]) if (!seen.has(id)) removeJob(id);
    list.jobs.slice().reverse().forEach(updateJob);
    list.jobs.filter(active).slice(0, 3).forEach((j) => follow(j.id, refresh));
    banner('');
  } catch (e) {
    if (quiet(e)) return;
    banner(e instanceof Offline ? `${LOST}. Retrying every few seconds…` : `Cannot refresh the job list: ${e.message}`);
  }
}

document.addEventListener('DOMContentLoaded', () => {
  $('#login-form').addEventListener('submit', (e) => { e.preventDefault(); login($('#token').value.trim()); });
  $('#logout').addEventListener('click', () => logout(''));
  wireForm();
  wireDetail();
  $('#play').addEventListener('click', togglePlay);
  window.addEventListener('resize', redraw);
  if (S.token) login(S.token);
});
