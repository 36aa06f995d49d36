// The job list and the open job: plain stage names, a steady ETA, the input's facts and waveform while it runs,
// cancel/delete (delete asks first), downloads as plain links (the download cookie, no token in a URL).
import { $, api, apiJson, show, quiet, fmtDuration, saved, humanMessage } from './util.js';
import { openPlayer, closePlayer, inputTrack } from './player.js';

const MAX_STREAMS = 3; // browsers allow ~6 connections per host; keep room for the rest of the page
export const J = { jobs: new Map(), streams: new Map(), selected: null, log: { id: null, offset: 0, timer: null },
  eta: new Map(), banner: () => {} };

export const active = (j) => j.state === 'queued' || j.state === 'running' || j.state === 'downloading';

// "cinematic 97d170e1-dbb4db15" -> "Separating dialog: model 1 of 3"; engine stage names -> words.
export function stageName(job) {
  const st = job.stage || '';
  const done = Object.keys(job.timings || {});
  const models = (prefix) => done.filter((s) => s.startsWith(prefix) && s !== st).length + 1;
  if (st.startsWith('cinematic ')) {
    const n = job.options && job.options.high_quality ? 3 : 1;
    return `Separating dialog, music and effects: model ${models('cinematic ')} of ${n}`;
  }
  const mdx = /^(mdx |demucs |htdemucs|hdemucs)/;
  if (mdx.test(st)) {
    const n = done.filter((s) => mdx.test(s) && s !== st).length + 1;
    return `Separating ${/vocal/i.test(st) ? 'vocals' : 'the instruments'}: model ${n}`;
  }
  return { 'load models': 'Loading the models', decode: 'Reading the input', encode: 'Writing the stems',
    queued: 'Waiting in the queue', running: 'Starting', starting: 'Starting', packing: 'Packing the stems',
    done: 'Done', downloading: 'Fetching the URL' }[st] || st || 'Starting';
}

// The server's ETA swings when a stage is faster or slower than the last. Each new estimate is blended into the
// previous one (aged by the time since); nothing is shown until the last estimates agree within 1.5x over 6 s,
// then a range that moves slowly.
export function smoothEta(e, raw, now) {
  if (!e) return { first: now, last: now, value: raw, raw, recent: [raw], shown: false };
  if (raw === e.raw) return e;
  const aged = Math.max(0, e.value - (now - e.last));
  const recent = [...e.recent, raw].slice(-4);
  const steady = recent.length >= 4 && Math.max(...recent) <= 1.5 * Math.min(...recent) && now - e.first >= 6;
  return { first: e.first, last: now, value: 0.8 * aged + 0.2 * raw, raw, recent, shown: e.shown || steady };
}

export function etaWords(e, now) {
  if (!e || !e.shown) return 'estimating the time left…';
  const left = Math.max(0, e.value - (now - e.last));
  if (left < 60) return 'under a minute left';
  const lo = Math.max(1, Math.floor(left * 0.85 / 60)), hi = Math.ceil(left * 1.15 / 60);
  return `about ${lo}–${Math.max(hi, lo + 1)} min left`;
}

function etaText(job) {
  if (job.state !== 'running' || job.eta_s == null) { J.eta.delete(job.id); return ''; }
  const now = Date.now() / 1000;
  const e = smoothEta(J.eta.get(job.id), job.eta_s, now);
  J.eta.set(job.id, e);
  return etaWords(e, now);
}

function statusText(job) {
  if (job.state === 'queued') return `Waiting in the queue${job.queue_position ? ` (number ${job.queue_position})` : ''}`;
  if (job.state === 'running') return `${stageName(job)} · ${Math.round(job.progress * 100)}% · ${etaText(job)}`;
  return { failed: 'Failed', canceled: 'Canceled', succeeded: 'Done', downloading: 'Fetching the URL' }[job.state] || job.state;
}

export function title(job) {
  return (job.input && job.input.name) || saved.get('titles', {})[job.id] || 'a URL (fetching)';
}

function subtitle(job) {
  const o = job.options || {};
  const when = new Date(job.created_at).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit' });
  return `${when} · ${o.recipe || 'mdx23'} · ${(o.stems || []).join(', ')} · #${job.id.slice(0, 6)}`;
}

export function updateJob(job) {
  const prev = J.jobs.get(job.id);
  J.jobs.set(job.id, job);
  let li = document.getElementById('job-' + job.id);
  if (!li) {
    li = document.createElement('li');
    li.id = 'job-' + job.id;
    li.innerHTML = '<button type="button" class="open"><span class="row"><span class="name"></span>' +
      '<span class="state"></span></span><span class="sub muted"></span></button>' +
      '<progress max="1" value="0"></progress><div class="stage muted"></div>';
    li.querySelector('button.open').addEventListener('click', () => select(job.id));
    $('#job-list').prepend(li);
  }
  li.querySelector('.name').textContent = title(job);
  li.querySelector('.sub').textContent = subtitle(job);
  const badge = li.querySelector('.state');
  badge.textContent = job.state; badge.className = 'state ' + job.state;
  const bar = li.querySelector('progress');
  bar.value = job.progress;
  bar.setAttribute('aria-label', `progress of ${title(job)}`);
  li.querySelector('.stage').textContent = active(job) ? statusText(job) : '';
  $('#no-jobs').hidden = J.jobs.size > 0;
  if (J.selected === job.id) renderDetail(job, !prev || prev.state !== job.state);
}

export function removeJob(id) {
  J.jobs.delete(id);
  const li = document.getElementById('job-' + id);
  if (li) li.remove();
  if (J.streams.has(id)) J.streams.get(id).abort();
  if (J.selected === id) { J.selected = null; saved.set('open', null); $('#detail').hidden = true; stopLog(); closePlayer(); }
  $('#no-jobs').hidden = J.jobs.size > 0;
}

export function stopAll() {
  J.streams.forEach((c) => c.abort()); J.streams.clear();
  stopLog(); closePlayer();
  J.jobs.clear(); J.selected = null;
  $('#job-list').textContent = ''; $('#detail').hidden = true;
}

// Server-sent events read with fetch, so the token stays in a header.
export async function follow(id, onEnd) {
  if (J.streams.has(id) || J.streams.size >= MAX_STREAMS) return;
  const ctl = new AbortController();
  J.streams.set(id, ctl);
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
        const job = parseEvent(buf.slice(0, cut));
        buf = buf.slice(cut + 2);
        if (!job) continue;
        if (job.state === 'deleted') removeJob(job.id); else updateJob(job);
        if (!active(job)) onEnd();
      }
    }
  } catch (e) {
    if (!quiet(e)) console.warn('events', id, e.message);
  } finally {
    J.streams.delete(id);
  }
}

function parseEvent(block) {
  let name = 'message', data = '';
  for (const line of block.split('\n')) {
    if (line.startsWith('event:')) name = line.slice(6).trim();
    else if (line.startsWith('data:')) data += line.slice(5).trim();
  }
  return name === 'job' && data ? JSON.parse(data) : null;
}

export function select(id) {
  if (J.selected === id || !J.jobs.has(id)) return;
  closePlayer(); stopLog();
  J.selected = id;
  saved.set('open', id);
  document.querySelectorAll('#job-list li').forEach((li) => {
    const on = li.id === 'job-' + id;
    li.classList.toggle('selected', on);
    li.querySelector('button.open').setAttribute('aria-current', on ? 'true' : 'false');
  });
  $('#detail').hidden = false;
  $('#d-confirm').hidden = true;
  if (window.innerWidth <= 900) $('#detail').scrollIntoView({ block: 'start' }); // one column: bring it into view
  $('#d-log').textContent = '';
  J.log = { id, offset: 0, timer: null };
  pollLog();
  renderDetail(J.jobs.get(id), true);
}

function facts(job) {
  const i = job.input || {}, o = job.options || {};
  const rows = [
    ['Input', i.duration_s ? `${fmtDuration(i.duration_s)}, ${i.sample_rate} Hz, ${i.channels === 1 ? 'mono' : i.channels + ' channels'}${i.codec ? ', ' + i.codec : ''}` : 'not read yet'],
    ['Recipe', `${o.recipe || 'mdx23'}${o.high_quality ? ' (high quality)' : ''}${o.layout ? ', layout ' + o.layout : ''}`],
    ['Stems', (o.stems || []).join(', ')],
    ['Output', `${o.format || 'wav'}, ${o.sample_rate === 44100 ? '44.1 kHz' : 'input rate'}${o.mono ? ', mono' : ''}`],
    ['Kept until', job.expires_at ? new Date(job.expires_at).toLocaleString() : 'a while after it ends'],
  ];
  const dl = $('#d-facts');
  dl.textContent = '';
  for (const [k, v] of rows) {
    const dt = document.createElement('dt'), dd = document.createElement('dd');
    dt.textContent = k; dd.textContent = v;
    dl.append(dt, dd);
  }
}

function renderDetail(job, changed) {
  $('#d-title').textContent = title(job);
  $('#d-bar').value = job.progress;
  $('#d-state').textContent = statusText(job);
  // screen readers hear the stage when it changes, not every percent
  const spoken = job.state === 'running' ? stageName(job) : statusText(job);
  if ($('#sr-status').textContent !== spoken) $('#sr-status').textContent = spoken;
  facts(job);
  const err = job.state === 'failed' ? `The job failed: ${humanMessage(job.error ? job.error.message : 'unknown error')}` :
    job.state === 'canceled' ? 'The job was canceled.' : '';
  show($('#d-error'), err);
  $('#d-cancel').hidden = !active(job);
  $('#d-delete').hidden = active(job);
  const zip = $('#d-zip');
  zip.hidden = job.state !== 'succeeded';
  if (job.result_zip) zip.href = job.result_zip; else zip.removeAttribute('href');
  if (changed && job.state === 'succeeded') openPlayer(job);
  else if (changed && active(job)) inputTrack(job);
  else if (changed) closePlayer();
  if (!active(job) && J.log.id === job.id) pollLog(); // the last lines
}

async function pollLog() {
  const log = J.log, id = log.id;
  if (!id) return;
  if (log.busy) { log.again = true; return; } // one read at a time, or a chunk would be shown twice
  clearTimeout(log.timer);
  log.busy = true; log.again = false;
  try {
    const chunk = await apiJson(`/jobs/${id}/logs?offset=${log.offset}`);
    if (J.log !== log) return;
    log.offset = chunk.next_offset;
    $('#d-log').textContent += chunk.text;
    if (!chunk.complete) log.timer = setTimeout(pollLog, chunk.text ? 200 : 2000);
  } catch (e) {
    if (!quiet(e) && J.log === log) log.timer = setTimeout(pollLog, 5000); // the banner says why
  } finally {
    log.busy = false;
    if (log.again && J.log === log) pollLog();
  }
}

function stopLog() { clearTimeout(J.log.timer); J.log = { id: null, offset: 0, timer: null }; }

async function cancelOrDelete() {
  const id = J.selected, job = J.jobs.get(id);
  $('#d-confirm').hidden = true;
  try {
    const out = await apiJson(`/jobs/${id}`, { method: 'DELETE' });
    if (out) updateJob(out); else removeJob(id);
    if (!out) $('#job-list button.open')?.focus();
  } catch (e) {
    if (!quiet(e)) J.banner(`Could not ${active(job) ? 'cancel' : 'delete'} the job: ${e.message}`);
  }
}

export function wireDetail() {
  $('#d-cancel').addEventListener('click', cancelOrDelete);
  $('#d-delete').addEventListener('click', () => {
    $('#d-confirm-text').textContent = `Delete ${title(J.jobs.get(J.selected))} and its stems from the server?`;
    $('#d-confirm').hidden = false;
    $('#d-keep').focus();
  });
  $('#d-really').addEventListener('click', cancelOrDelete);
  $('#d-keep').addEventListener('click', () => { $('#d-confirm').hidden = true; $('#d-delete').focus(); });
}
