// The operator page: plain JS, no library, talks to this server only. The token lives in sessionStorage and
// travels in the Authorization header (events via fetch streaming, media via authenticated blob fetches).
'use strict';

const $ = (sel) => document.querySelector(sel);
const MAX_STREAMS = 3; // browsers allow ~6 connections per host; keep room for the rest of the page
const S = {
  token: sessionStorage.getItem('spark-token'),
  jobs: new Map(), streams: new Map(), selected: null, file: null,
  timers: [], player: null, log: { id: null, offset: 0, timer: null },
};

class Unauthorized extends Error {}

async function api(path, opts = {}) {
  const headers = Object.assign({}, opts.headers, { Authorization: 'Bearer ' + S.token });
  const r = await fetch(path, Object.assign({}, opts, { headers }));
  if (r.status === 401) {
    logout('The server refused the token. Enter the right one.');
    throw new Unauthorized('unauthorized');
  }
  return r;
}

async function errorText(r) {
  try { const b = await r.json(); return b.message || b.error || `HTTP ${r.status}`; } catch { return `HTTP ${r.status}`; }
}

async function apiJson(path, opts) {
  const r = await api(path, opts);
  if (!r.ok) throw new Error(await errorText(r));
  return r.status === 204 ? null : r.json();
}

function show(el, text, isError) {
  el.textContent = text || '';
  el.hidden = !text;
  if (isError !== undefined) el.classList.toggle('error', isError);
}

function banner(text) { show($('#banner'), text); }

function fmtTime(s) {
  if (!isFinite(s)) s = 0;
  const m = Math.floor(s / 60);
  return `${m}:${(s - 60 * m).toFixed(1).padStart(4, '0')}`;
}

function fmtEta(s) {
  if (s == null) return '';
  return s < 90 ? `~${Math.round(s)} s left` : `~${Math.round(s / 60)} min left`;
}

function randomKey() { // crypto.randomUUID needs a secure context; getRandomValues does not
  return Array.from(crypto.getRandomValues(new Uint8Array(16)), (b) => b.toString(16).padStart(2, '0')).join('');
}

// ---------------------------------------------------------------- login
async function login(token) {
  S.token = token;
  let r;
  try { r = await fetch('/status', { headers: { Authorization: 'Bearer ' + token } }); } catch {
    show($('#login-msg'), 'Cannot reach the server.'); return;
  }
  if (r.status === 401) { show($('#login-msg'), 'Wrong token: the server refused it.'); return; }
  if (!r.ok) { show($('#login-msg'), await errorText(r)); return; }
  sessionStorage.setItem('spark-token', token);
  show($('#login-msg'), '');
  $('#login').hidden = true; $('#app').hidden = false; $('#logout').hidden = false;
  renderStatus(await r.json());
  refresh();
  S.timers.push(setInterval(refresh, 5000));
}

function logout(message) {
  sessionStorage.removeItem('spark-token');
  S.token = null;
  S.timers.forEach(clearInterval); S.timers = [];
  S.streams.forEach((c) => c.abort()); S.streams.clear();
  stopLog(); closePlayer();
  S.jobs.clear(); S.selected = null;
  $('#job-list').textContent = ''; $('#detail').hidden = true;
  $('#app').hidden = true; $('#logout').hidden = true; $('#login').hidden = false;
  $('#server-status').textContent = '';
  show($('#login-msg'), message || '');
  $('#token').value = '';
}

function renderStatus(st) {
  const q = st.queue;
  const pack = st.pack.kind === 'demo' ? 'DEMO pack (demo quality)' : `pack ${st.pack.kind || '?'} (${st.pack.state})`;
  $('#server-status').textContent = `${pack} · ${q.running} running · ${q.queued}/${q.capacity} queued`;
}

// ---------------------------------------------------------------- job list
async function refresh() {
  try {
    const [list, st] = await Promise.all([apiJson('/jobs?limit=50'), apiJson('/status')]);
    renderStatus(st);
    const seen = new Set(list.jobs.map((j) => j.id));
    for (const id of [...S.jobs.keys()]) if (!seen.has(id)) removeJob(id);
    list.jobs.slice().reverse().forEach(updateJob);
    list.jobs.filter(active).slice(0, MAX_STREAMS).forEach((j) => follow(j.id));
    banner('');
  } catch (e) {
    if (!(e instanceof Unauthorized)) banner(`Cannot refresh the job list: ${e.message}`);
  }
}

const active = (j) => j.state === 'queued' || j.state === 'running';

function stageText(j) {
  if (j.state === 'queued') return `queued${j.queue_position ? ' #' + j.queue_position : ''}`;
  if (j.state === 'running') return `${j.stage || 'running'} · ${Math.round(j.progress * 100)}% ${fmtEta(j.eta_s)}`;
  if (j.state === 'failed') return `failed: ${j.error ? j.error.message : 'unknown error'}`;
  return j.state;
}

function updateJob(job) {
  const prev = S.jobs.get(job.id);
  S.jobs.set(job.id, job);
  let li = document.getElementById('job-' + job.id);
  if (!li) {
    li = document.createElement('li');
    li.id = 'job-' + job.id;
    li.innerHTML = '<div class="row"><span class="name"></span><span class="state"></span></div>' +
      '<progress max="1" value="0"></progress><div class="stage muted"></div>';
    li.addEventListener('click', () => select(job.id));
    $('#job-list').prepend(li);
  }
  li.querySelector('.name').textContent = (job.input && job.input.name) || job.id.slice(0, 8);
  const badge = li.querySelector('.state');
  badge.textContent = job.state; badge.className = 'state ' + job.state;
  li.querySelector('progress').value = job.progress;
  li.querySelector('.stage').textContent = stageText(job);
  $('#no-jobs').hidden = S.jobs.size > 0;
  if (S.selected === job.id) renderDetail(job, !prev || prev.state !== job.state);
}

function removeJob(id) {
  S.jobs.delete(id);
  const li = document.getElementById('job-' + id);
  if (li) li.remove();
  if (S.streams.has(id)) S.streams.get(id).abort();
  if (S.selected === id) { S.selected = null; $('#detail').hidden = true; stopLog(); closePlayer(); }
  $('#no-jobs').hidden = S.jobs.size > 0;
}

// Server-sent events read with fetch, so the token stays in a header.
async function follow(id) {
  if (S.streams.has(id) || S.streams.size >= MAX_STREAMS) return;
  const ctl = new AbortController();
  S.streams.set(id, ctl);
  try {
    const r = await api(`/jobs/${id}/events`, { signal: ctl.signal });
    if (!r.ok) return;
    const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
    let buf = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += value;
      let cut;
      while ((cut = buf.indexOf('\n\n')) >= 0) {
        onEvent(buf.slice(0, cut));
        buf = buf.slice(cut + 2);
      }
    }
  } catch (e) {
    if (e.name !== 'AbortError' && !(e instanceof Unauthorized)) console.warn('events', id, e);
  } finally {
    S.streams.delete(id);
  }
}

function onEvent(block) {
  let name = 'message', data = '';
  for (const line of block.split('\n')) {
    if (line.startsWith('event:')) name = line.slice(6).trim();
    else if (line.startsWith('data:')) data += line.slice(5).trim();
  }
  if (name !== 'job' || !data) return;
  const job = JSON.parse(data);
  if (job.state === 'deleted') removeJob(job.id); else updateJob(job);
  if (!active(job)) refresh(); // the queue counts and the next job to follow
}

// ---------------------------------------------------------------- submit
function pickFile(file) {
  S.file = file || null;
  $('#drop-text').textContent = file ? `${file.name} (${(file.size / 1048576).toFixed(1)} MB)` : 'Drop a media file here or';
  if (file) $('#url').value = '';
}

function submitJob() {
  const url = $('#url').value.trim();
  const msg = $('#submit-msg');
  const stems = [...document.querySelectorAll('#stems input:checked')].map((c) => c.value);
  if (!S.file && !url) { show(msg, 'Choose a file or enter a URL.', true); return; }
  if (!stems.length) { show(msg, 'Choose at least one stem.', true); return; }
  const form = new FormData(); // options first, the file last: the server checks options before the upload
  if ($('#recipe').value) form.append('recipe', $('#recipe').value); // sent only when not the default
  form.append('stems', stems.join(','));
  form.append('format', $('#format').value);
  if (S.file) form.append('file', S.file, S.file.name); else form.append('url', url);

  const xhr = new XMLHttpRequest(); // XHR: fetch has no upload progress
  xhr.open('POST', '/jobs');
  xhr.setRequestHeader('Authorization', 'Bearer ' + S.token);
  xhr.setRequestHeader('Idempotency-Key', randomKey());
  const bar = $('#upload-bar'), text = $('#upload-text');
  $('#upload').hidden = false; bar.value = 0; text.textContent = S.file ? 'uploading…' : 'fetching the URL…';
  show(msg, '');
  $('#send').disabled = true;
  xhr.upload.onprogress = (e) => {
    if (!e.lengthComputable) return;
    bar.value = e.loaded / e.total;
    text.textContent = e.loaded < e.total ? `uploading ${Math.round(100 * e.loaded / e.total)}%` : 'checking the media…';
  };
  xhr.onloadend = () => {
    $('#send').disabled = false; $('#upload').hidden = true;
    if (xhr.status === 401) { logout('The server refused the token. Enter the right one.'); return; }
    let body = null;
    try { body = JSON.parse(xhr.responseText); } catch { /* not JSON */ }
    if (xhr.status === 202 && body) {
      show(msg, `Queued ${body.input.name || body.id}.`, false);
      pickFile(null); $('#file').value = ''; $('#url').value = '';
      updateJob(body); select(body.id); follow(body.id);
    } else if (xhr.status === 0) {
      show(msg, 'The upload failed: the connection was lost.', true);
    } else {
      show(msg, `Refused: ${(body && body.message) || 'HTTP ' + xhr.status}`, true);
    }
  };
  xhr.send(form);
}

// ---------------------------------------------------------------- job detail
function select(id) {
  if (S.selected === id) return;
  closePlayer(); stopLog();
  S.selected = id;
  document.querySelectorAll('#job-list li').forEach((li) => li.classList.toggle('selected', li.id === 'job-' + id));
  $('#detail').hidden = false;
  if (window.innerWidth <= 900) $('#detail').scrollIntoView({ block: 'start' }); // one column: bring it into view
  $('#d-log').textContent = '';
  S.log = { id, offset: 0, timer: null };
  pollLog();
  renderDetail(S.jobs.get(id), true);
}

function renderDetail(job, changed) {
  $('#d-title').textContent = (job.input && job.input.name) || job.id;
  $('#d-bar').value = job.progress;
  $('#d-state').textContent = stageText(job);
  show($('#d-error'), job.state === 'failed' ? `The job failed: ${job.error ? job.error.message : 'unknown error'}` :
    job.state === 'canceled' ? 'The job was canceled.' : '');
  $('#d-cancel').hidden = !active(job);
  $('#d-delete').hidden = active(job);
  $('#d-zip').hidden = job.state !== 'succeeded';
  if (changed && job.state === 'succeeded') openPlayer(job);
  if (!active(job) && S.log.id === job.id) pollLog(); // the last lines
}

async function pollLog() {
  const log = S.log, id = log.id;
  if (log.busy) { log.again = true; return; } // one read at a time, or a chunk would be shown twice
  clearTimeout(log.timer);
  log.busy = true; log.again = false;
  try {
    const chunk = await apiJson(`/jobs/${id}/logs?offset=${log.offset}`);
    if (S.log !== log) return;
    log.offset = chunk.next_offset;
    $('#d-log').textContent += chunk.text;
    if (!chunk.complete) log.timer = setTimeout(pollLog, chunk.text ? 200 : 2000);
  } catch (e) {
    if (!(e instanceof Unauthorized) && S.log === log) $('#d-log').textContent += `\n(log unavailable: ${e.message})`;
  } finally {
    log.busy = false;
    if (log.again && S.log === log) pollLog();
  }
}

function stopLog() { clearTimeout(S.log.timer); S.log = { id: null, offset: 0, timer: null }; }

async function cancelOrDelete() {
  const id = S.selected, job = S.jobs.get(id);
  try {
    const out = await apiJson(`/jobs/${id}`, { method: 'DELETE' });
    if (out) updateJob(out); else removeJob(id);
  } catch (e) {
    if (!(e instanceof Unauthorized)) banner(`Could not ${active(job) ? 'cancel' : 'delete'} the job: ${e.message}`);
  }
}

async function saveBlob(path, fallbackName) {
  const r = await api(path);
  if (!r.ok) throw new Error(await errorText(r));
  const m = /filename="([^"]+)"/.exec(r.headers.get('content-disposition') || '');
  return saveAs(await r.blob(), m ? m[1] : fallbackName);
}

function saveAs(blob, name) {
  const a = document.createElement('a');
  a.href = URL.createObjectURL(blob); a.download = name;
  document.body.append(a); a.click(); a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 60000);
}

// ---------------------------------------------------------------- player: synced <audio> elements from blobs
function closePlayer() {
  const p = S.player;
  if (!p) return;
  clearInterval(p.timer);
  p.tracks.forEach((t) => { if (t.audio) { t.audio.pause(); URL.revokeObjectURL(t.audio.src); } });
  S.player = null;
  $('#tracks').textContent = ''; $('#player').hidden = true; $('#play').textContent = 'Play';
}

function openPlayer(job) {
  closePlayer();
  const p = { job, tracks: [], playing: false, timer: null };
  S.player = p;
  $('#player').hidden = false;
  $('#player-msg').textContent = 'loading audio…';
  for (const stem of ['original', ...Object.keys(job.stems)]) p.tracks.push(makeTrack(p, stem));
  Promise.all(p.tracks.filter((t) => t.audio).map(loadAudio)).then(() => {
    if (S.player === p) $('#player-msg').textContent = '';
  }).catch((e) => { if (S.player === p && !(e instanceof Unauthorized)) $('#player-msg').textContent = e.message; });
  p.timer = setInterval(() => tick(p), 100);
}

function makeTrack(p, stem) {
  const t = { stem, solo: false, mute: false, peaks: null, audio: null, el: document.createElement('div') };
  t.el.className = 'track'; t.el.dataset.stem = stem;
  t.el.innerHTML = '<div class="row"><strong></strong><span class="buttons"></span><span class="muted note"></span></div><canvas></canvas>';
  t.el.querySelector('strong').textContent = stem === 'original' ? 'original (input)' : stem;
  const buttons = t.el.querySelector('.buttons');
  if (stem !== 'original') {
    t.audio = document.createElement('audio');
    t.audio.preload = 'auto';
    t.el.append(t.audio);
    for (const [label, key] of [['S', 'solo'], ['M', 'mute']]) {
      const b = document.createElement('button');
      b.type = 'button'; b.className = 'toggle ' + key; b.textContent = label; b.title = key;
      b.addEventListener('click', () => { t[key] = !t[key]; b.classList.toggle('on', t[key]); applyMix(p); });
      buttons.append(b);
    }
    const dl = document.createElement('button');
    dl.type = 'button'; dl.className = 'download'; dl.textContent = 'Download';
    dl.addEventListener('click', () => saveBlob(p.job.stems[stem], `${stem}`).catch(
      (e) => { if (!(e instanceof Unauthorized)) banner(`Download failed: ${e.message}`); }));
    buttons.append(dl);
  }
  const canvas = t.el.querySelector('canvas');
  canvas.addEventListener('click', (e) => {
    const r = canvas.getBoundingClientRect();
    seek(p, ((e.clientX - r.left) / r.width) * duration(p));
  });
  $('#tracks').append(t.el);
  loadPeaks(p, t);
  return t;
}

async function loadAudio(t) {
  const r = await api(S.player.job.stems[t.stem]);
  if (!r.ok) throw new Error(`${t.stem}: ${await errorText(r)}`);
  t.blob = await r.blob();
  t.audio.src = URL.createObjectURL(t.blob);
}

async function loadPeaks(p, t) {
  const canvas = t.el.querySelector('canvas');
  const width = Math.max(16, Math.min(8192, Math.round(canvas.clientWidth * (window.devicePixelRatio || 1))));
  try {
    const r = await api(`/jobs/${p.job.id}/stems/${t.stem}/peaks?points=${width}`);
    if (!r.ok) throw new Error(await errorText(r));
    t.peaks = (await r.json()).peaks;
    draw(p, t);
  } catch (e) {
    if (!(e instanceof Unauthorized)) t.el.querySelector('.note').textContent = `no waveform: ${e.message}`;
  }
}

function draw(p, t) {
  const canvas = t.el.querySelector('canvas');
  const dpr = window.devicePixelRatio || 1;
  canvas.width = Math.max(1, Math.round(canvas.clientWidth * dpr));
  canvas.height = Math.round(64 * dpr);
  const g = canvas.getContext('2d'), w = canvas.width, h = canvas.height;
  g.clearRect(0, 0, w, h);
  if (!t.peaks) return;
  const silent = (t.mute || (p.tracks.some((x) => x.solo) && !t.solo)) && t.stem !== 'original';
  g.fillStyle = silent ? '#b8bfcc' : (t.stem === 'original' ? '#69748a' : '#2f6fde');
  const n = t.peaks.length;
  for (let x = 0; x < w; x++) {
    const [lo, hi] = t.peaks[Math.min(n - 1, Math.floor((x * n) / w))];
    const y0 = ((1 - Math.min(1, hi)) / 2) * h, y1 = ((1 - Math.max(-1, lo)) / 2) * h;
    g.fillRect(x, y0, 1, Math.max(1, y1 - y0));
  }
  const d = duration(p);
  if (d > 0) { g.fillStyle = '#c2413a'; g.fillRect(Math.round((master(p)?.currentTime || 0) / d * w), 0, Math.ceil(dpr), h); }
}

const master = (p) => (p.tracks.find((t) => t.audio) || {}).audio;
const duration = (p) => (master(p) && isFinite(master(p).duration) ? master(p).duration : (p.job.input.duration_s || 0));

function applyMix(p) {
  const anySolo = p.tracks.some((t) => t.solo);
  p.tracks.forEach((t) => { if (t.audio) t.audio.muted = anySolo ? !t.solo : t.mute; draw(p, t); });
}

function seek(p, time) {
  p.tracks.forEach((t) => { if (t.audio) t.audio.currentTime = Math.max(0, time); });
  p.tracks.forEach((t) => draw(p, t));
}

async function togglePlay() {
  const p = S.player;
  if (!p || !master(p)) return;
  const audios = p.tracks.filter((t) => t.audio).map((t) => t.audio);
  if (p.playing) { audios.forEach((a) => a.pause()); p.playing = false; $('#play').textContent = 'Play'; return; }
  const at = master(p).ended ? 0 : master(p).currentTime;
  audios.forEach((a) => { a.currentTime = at; });
  try {
    await Promise.all(audios.map((a) => a.play()));
    p.playing = true; $('#play').textContent = 'Pause';
  } catch (e) {
    audios.forEach((a) => a.pause());
    $('#player-msg').textContent = `cannot play: ${e.message}`;
  }
}

function tick(p) {
  const m = master(p);
  if (!m) return;
  $('#time').textContent = `${fmtTime(m.currentTime)} / ${fmtTime(duration(p))}`;
  if (!p.playing) return;
  if (m.ended) { p.playing = false; $('#play').textContent = 'Play'; }
  for (const t of p.tracks) { // keep the followers within 50 ms of the first stem
    if (t.audio && t.audio !== m && !t.audio.ended && Math.abs(t.audio.currentTime - m.currentTime) > 0.05) {
      t.audio.currentTime = m.currentTime;
    }
  }
  p.tracks.forEach((t) => draw(p, t));
}

// ---------------------------------------------------------------- wiring
document.addEventListener('DOMContentLoaded', () => {
  $('#login-form').addEventListener('submit', (e) => { e.preventDefault(); login($('#token').value.trim()); });
  $('#logout').addEventListener('click', () => logout(''));
  $('#file').addEventListener('change', (e) => pickFile(e.target.files[0]));
  $('#url').addEventListener('input', () => { if ($('#url').value) pickFile(null); });
  const drop = $('#drop');
  drop.addEventListener('dragover', (e) => { e.preventDefault(); drop.classList.add('over'); });
  drop.addEventListener('dragleave', () => drop.classList.remove('over'));
  drop.addEventListener('drop', (e) => {
    e.preventDefault(); drop.classList.remove('over');
    if (e.dataTransfer.files.length) pickFile(e.dataTransfer.files[0]);
  });
  $('#send').addEventListener('click', submitJob);
  $('#d-cancel').addEventListener('click', cancelOrDelete);
  $('#d-delete').addEventListener('click', cancelOrDelete);
  $('#d-zip').addEventListener('click', () => {
    const job = S.jobs.get(S.selected);
    saveBlob(job.result_zip, 'stems.zip').catch((e) => { if (!(e instanceof Unauthorized)) banner(`Download failed: ${e.message}`); });
  });
  $('#play').addEventListener('click', togglePlay);
  window.addEventListener('resize', () => { if (S.player) S.player.tracks.forEach((t) => draw(S.player, t)); });
  if (S.token) login(S.token);
});
