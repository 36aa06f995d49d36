// The player: one <audio> per stem streaming from the server (Range requests, the download cookie; nothing is
// fetched whole), kept in sync; waveforms from the peaks route; solo/mute toggles with aria-pressed; each
// waveform is a slider (arrows +-5 s, Page Up/Down +-30 s, Home/End) as well as a click target.
import { $, api, quiet, fmtTime, renewMediaCookie } from './util.js';

let P = null;

export function closePlayer() {
  if (!P) return;
  clearInterval(P.timer);
  P.tracks.forEach((t) => { if (t.audio) { t.audio.pause(); t.audio.removeAttribute('src'); t.audio.load(); } });
  P = null;
  $('#tracks').textContent = ''; $('#player').hidden = true; $('#play').textContent = 'Play';
  $('#play').setAttribute('aria-pressed', 'false');
}

// While a job runs: the input's waveform only (its peaks are made while the job runs).
export function inputTrack(job) {
  closePlayer();
  P = { job, tracks: [], playing: false, timer: null, live: true };
  $('#player').hidden = false;
  $('#play-controls').hidden = true;
  P.tracks.push(makeTrack(P, 'original'));
}

export function openPlayer(job) {
  closePlayer();
  const p = { job, tracks: [], playing: false, timer: null };
  P = p;
  $('#player').hidden = false;
  $('#play-controls').hidden = false;
  $('#player-msg').textContent = '';
  for (const stem of ['original', ...Object.keys(job.stems)]) p.tracks.push(makeTrack(p, stem));
  p.timer = setInterval(() => tick(p), 200);
}

function toggle(p, t, key, label) {
  const b = document.createElement('button');
  b.type = 'button'; b.className = 'toggle ' + key; b.textContent = label;
  b.setAttribute('aria-pressed', 'false');
  b.setAttribute('aria-label', `${label} ${t.stem}`);
  b.addEventListener('click', () => {
    t[key] = !t[key];
    b.classList.toggle('on', t[key]);
    b.setAttribute('aria-pressed', String(t[key]));
    applyMix(p);
  });
  return b;
}

function makeTrack(p, stem) {
  const t = { stem, solo: false, mute: false, peaks: null, audio: null, el: document.createElement('div') };
  t.el.className = 'track'; t.el.dataset.stem = stem;
  t.el.innerHTML = '<div class="row"><strong></strong><span class="buttons"></span><span class="muted note"></span></div><canvas></canvas>';
  const label = stem === 'original' ? 'original (input)' : stem;
  t.el.querySelector('strong').textContent = label;
  const buttons = t.el.querySelector('.buttons');
  if (stem !== 'original' && p.job.stems[stem]) {
    t.audio = document.createElement('audio');
    t.audio.preload = 'metadata';
    t.audio.src = p.job.stems[stem]; // streamed with Range; the download cookie authorises it
    t.audio.addEventListener('error', async () => { // e.g. the cookie ran out while the machine slept: renew once
      const at = t.audio.currentTime;
      if (!t.retried && P === p) {
        t.retried = true;
        try {
          await renewMediaCookie();
          t.audio.src = p.job.stems[stem]; t.audio.currentTime = at;
          return;
        } catch (e) { if (quiet(e)) return; }
      }
      t.el.querySelector('.note').textContent = 'cannot play this stem (the server refused it, or it is gone)';
    });
    t.el.append(t.audio);
    buttons.append(toggle(p, t, 'solo', 'Solo'), toggle(p, t, 'mute', 'Mute'));
    const dl = document.createElement('a');
    dl.className = 'button download'; dl.textContent = 'Download'; dl.href = p.job.stems[stem];
    dl.setAttribute('download', ''); dl.setAttribute('aria-label', `Download ${stem}`);
    buttons.append(dl);
  }
  const canvas = t.el.querySelector('canvas');
  canvas.setAttribute('aria-label', `${label} waveform${p.live ? '' : ', seek with the arrow keys'}`);
  if (!p.live) {
    canvas.tabIndex = 0;
    canvas.setAttribute('role', 'slider');
    canvas.setAttribute('aria-valuemin', '0');
    canvas.addEventListener('click', (e) => {
      const r = canvas.getBoundingClientRect();
      seek(p, ((e.clientX - r.left) / r.width) * duration(p));
    });
    canvas.addEventListener('keydown', (e) => {
      const now = master(p) ? master(p).currentTime : 0;
      const to = { ArrowLeft: now - 5, ArrowRight: now + 5, ArrowDown: now - 5, ArrowUp: now + 5,
        PageDown: now - 30, PageUp: now + 30, Home: 0, End: duration(p) - 0.5 }[e.key];
      if (to === undefined) { if (e.key === ' ') { e.preventDefault(); togglePlay(); } return; }
      e.preventDefault();
      seek(p, Math.min(Math.max(0, to), duration(p)));
    });
  } else {
    canvas.setAttribute('role', 'img');
  }
  $('#tracks').append(t.el);
  loadPeaks(p, t);
  return t;
}

async function loadPeaks(p, t, attempt = 0) {
  const canvas = t.el.querySelector('canvas');
  const width = Math.max(16, Math.min(8192, Math.round(canvas.clientWidth * (window.devicePixelRatio || 1))));
  try {
    const r = await api(`/jobs/${p.job.id}/stems/${t.stem}/peaks?points=${width}`);
    if (r.status === 409 && attempt < 20 && P === p) { setTimeout(() => loadPeaks(p, t, attempt + 1), 1500); return; }
    if (!r.ok) throw new Error('not available');
    t.peaks = (await r.json()).peaks;
    if (P === p) { t.el.querySelector('.note').textContent = ''; draw(p, t); }
  } catch (e) {
    if (!quiet(e) && P === p) t.el.querySelector('.note').textContent = `no waveform (${e.message})`;
  }
}

function draw(p, t) {
  const canvas = t.el.querySelector('canvas');
  const dpr = window.devicePixelRatio || 1;
  canvas.width = Math.max(1, Math.round(canvas.clientWidth * dpr));
  canvas.height = Math.round(64 * dpr);
  const g = canvas.getContext('2d'), w = canvas.width, h = canvas.height;
  g.clearRect(0, 0, w, h);
  const d = duration(p), at = master(p) ? master(p).currentTime : 0;
  if (!p.live) {
    canvas.setAttribute('aria-valuemax', String(Math.round(d)));
    canvas.setAttribute('aria-valuenow', String(Math.round(at)));
    canvas.setAttribute('aria-valuetext', `${fmtTime(at)} of ${fmtTime(d)}`);
  }
  if (!t.peaks) return;
  const silent = (t.mute || (p.tracks.some((x) => x.solo) && !t.solo)) && t.stem !== 'original';
  g.fillStyle = silent ? '#b8bfcc' : (t.stem === 'original' ? '#69748a' : '#2f6fde');
  const n = t.peaks.length;
  for (let x = 0; x < w; x++) {
    const [lo, hi] = t.peaks[Math.min(n - 1, Math.floor((x * n) / w))];
    const y0 = ((1 - Math.min(1, hi)) / 2) * h, y1 = ((1 - Math.max(-1, lo)) / 2) * h;
    g.fillRect(x, y0, 1, Math.max(1, y1 - y0));
  }
  if (d > 0 && !p.live) { g.fillStyle = '#c2413a'; g.fillRect(Math.round(at / d * w), 0, Math.ceil(dpr), h); }
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
  $('#time').textContent = `${fmtTime(time)} / ${fmtTime(duration(p))}`;
}

export async function togglePlay() {
  const p = P;
  if (!p || !master(p)) return;
  const audios = p.tracks.filter((t) => t.audio).map((t) => t.audio);
  const button = $('#play');
  if (p.playing) {
    audios.forEach((a) => a.pause()); p.playing = false;
    button.textContent = 'Play'; button.setAttribute('aria-pressed', 'false');
    return;
  }
  const at = master(p).ended ? 0 : master(p).currentTime;
  audios.forEach((a) => { if (Math.abs(a.currentTime - at) > 0.05) a.currentTime = at; });
  try {
    await Promise.all(audios.map((a) => a.play()));
    p.playing = true; button.textContent = 'Pause'; button.setAttribute('aria-pressed', 'true');
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
  if (m.ended) { p.playing = false; $('#play').textContent = 'Play'; $('#play').setAttribute('aria-pressed', 'false'); }
  for (const t of p.tracks) { // keep the followers within 50 ms of the first stem
    if (t.audio && t.audio !== m && !t.audio.ended && !t.audio.seeking &&
        Math.abs(t.audio.currentTime - m.currentTime) > 0.05) {
      t.audio.currentTime = m.currentTime;
    }
  }
  p.tracks.forEach((t) => draw(p, t));
}

export function redraw() { if (P) P.tracks.forEach((t) => draw(P, t)); }
