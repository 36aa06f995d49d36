// The new-job form, built from the server's recipe catalogue (GET /recipes): the recipes, the stems each makes
// (what the pack cannot make is greyed out with the reason), each recipe's options and the engine-wide ones, and
// the limits, checked before an upload starts. The choices are kept in sessionStorage across reloads.
import { $, S, api, show, fmtBytes, fmtDuration, randomKey, saved, humanMessage } from './util.js';

const F = { catalogue: null, file: null, onQueued: () => {} };

export function initForm(catalogue, onQueued) {
  F.catalogue = catalogue;
  F.onQueued = onQueued;
  const sel = $('#recipe');
  sel.textContent = '';
  for (const r of catalogue.recipes) {
    const o = document.createElement('option');
    o.value = r.name;
    o.textContent = r.available ? r.name : `${r.name} (not in this pack)`;
    o.disabled = !r.available;
    sel.append(o);
  }
  const form = saved.get('form', {});
  const first = catalogue.recipes.find((r) => r.name === catalogue.default_recipe && r.available) ||
    catalogue.recipes.find((r) => r.available) || catalogue.recipes[0];
  const chosen = catalogue.recipes.find((r) => r.name === form.recipe && r.available) || first;
  sel.value = chosen ? chosen.name : '';
  renderRecipe(form);
  const lim = catalogue.limits || {};
  $('#limits').textContent = `Up to ${fmtBytes(lim.max_upload_bytes)} and ${fmtDuration(lim.max_duration_s)} per file.`;
}

const recipe = () => F.catalogue.recipes.find((r) => r.name === $('#recipe').value);

function optionControl(opt, value) {
  const id = 'opt-' + opt.name;
  const wrap = document.createElement('div');
  wrap.className = 'opt';
  const label = document.createElement('label');
  label.htmlFor = id;
  label.textContent = opt.name.replace(/_/g, ' ');
  let input;
  if (opt.type === 'bool') {
    input = document.createElement('input');
    input.type = 'checkbox';
    input.checked = value === true;
    wrap.classList.add('check');
  } else if (opt.type === 'choice') {
    input = document.createElement('select');
    for (const c of opt.choices) {
      const o = document.createElement('option');
      o.value = String(c); o.textContent = String(c);
      input.append(o);
    }
    input.value = String(value);
  } else {
    input = document.createElement('input');
    input.type = 'number';
    if (opt.min != null) input.min = opt.min;
    if (opt.max != null) input.max = opt.max;
    input.step = opt.type === 'int' ? '1' : '0.01';
    input.value = value;
  }
  input.id = id; input.dataset.option = opt.name;
  const help = document.createElement('small');
  help.className = 'muted'; help.id = id + '-help'; help.textContent = opt.help || '';
  input.setAttribute('aria-describedby', help.id);
  input.addEventListener('change', saveForm);
  if (opt.type === 'bool') wrap.append(input, label, help); else wrap.append(label, input, help);
  return wrap;
}

function renderRecipe(form = saved.get('form', {})) {
  const r = recipe();
  const box = $('#stems');
  box.querySelectorAll('.stem').forEach((el) => el.remove());
  if (!r) return;
  $('#recipe-help').textContent = r.summary || '';
  const same = form.recipe === r.name;
  for (const s of r.stems) {
    const lab = document.createElement('label');
    lab.className = 'stem' + (s.available ? '' : ' unavailable');
    const cb = document.createElement('input');
    cb.type = 'checkbox'; cb.value = s.name; cb.disabled = !s.available;
    cb.checked = s.available && (same && form.stems ? form.stems.includes(s.name) : r.default_stems.includes(s.name));
    cb.addEventListener('change', saveForm);
    lab.append(cb, ' ' + s.name);
    lab.title = s.summary;
    if (!s.available) {
      const why = document.createElement('small');
      why.className = 'reason'; why.id = `why-${s.name}`; why.textContent = ` (${s.reason})`;
      cb.setAttribute('aria-describedby', why.id);
      lab.append(why);
    }
    box.append(lab);
  }
  // the recipe's switches and choices in view, its numbers (overlaps, shifts, ...) under "More options"
  const opts = $('#recipe-options'), more = $('#more-options');
  opts.textContent = ''; more.textContent = '';
  const values = same ? (form.options || {}) : {};
  const general = saved.get('form', {}).general || {};
  for (const o of r.options) {
    (o.type === 'float' || o.type === 'int' ? more : opts).append(optionControl(o, values[o.name] ?? o.default));
  }
  $('#more-box').hidden = !more.children.length;
  const eng = $('#engine-options');
  eng.textContent = '';
  for (const o of F.catalogue.options) eng.append(optionControl(o, general[o.name] ?? o.default));
  saveForm();
}

function readOptions(container) {
  const out = {};
  for (const el of container.querySelectorAll('[data-option]')) {
    out[el.dataset.option] = el.type === 'checkbox' ? el.checked : el.type === 'number' ? Number(el.value) : el.value;
  }
  return out;
}

function saveForm() {
  const r = recipe();
  if (!r) return;
  saved.set('form', {
    recipe: r.name, stems: chosenStems(),
    options: { ...readOptions($('#recipe-options')), ...readOptions($('#more-options')) },
    general: readOptions($('#engine-options')),
  });
}

const chosenStems = () => [...document.querySelectorAll('#stems input:checked')].map((c) => c.value);

// Only what differs from the catalogue's defaults is sent (the recipe always is).
function requestFields() {
  const r = recipe();
  const fields = { recipe: r.name, stems: chosenStems().join(',') };
  const defaults = Object.fromEntries([...r.options, ...F.catalogue.options].map((o) => [o.name, String(o.default)]));
  const all = { ...readOptions($('#recipe-options')), ...readOptions($('#more-options')),
    ...readOptions($('#engine-options')) };
  for (const [k, v] of Object.entries(all)) if (String(v) !== defaults[k]) fields[k] = String(v);
  return fields;
}

export function pickFile(file) {
  F.file = file || null;
  $('#drop-text').textContent = file ? `${file.name} (${fmtBytes(file.size)})` : 'Drop a media file here, or';
  if (file) $('#url').value = '';
  show($('#submit-msg'), '');
}

// The duration the browser reads from the file's header (null when it cannot tell quickly).
function localDuration(file) {
  return new Promise((resolve) => {
    const a = document.createElement('audio'), url = URL.createObjectURL(file);
    const done = (v) => { clearTimeout(timer); URL.revokeObjectURL(url); a.removeAttribute('src'); resolve(v); };
    const timer = setTimeout(() => done(null), 3000);
    a.preload = 'metadata';
    a.onloadedmetadata = () => done(isFinite(a.duration) ? a.duration : null);
    a.onerror = () => done(null);
    a.src = url;
  });
}

export async function submitJob() {
  const url = $('#url').value.trim();
  const msg = $('#submit-msg');
  const lim = F.catalogue.limits || {};
  if (!S.token) return;
  if (!recipe() || !recipe().available) { show(msg, 'This server cannot run that recipe.', true); return; }
  if (!F.file && !url) { show(msg, 'Choose a file or enter a URL.', true); $('#file').focus(); return; }
  if (!chosenStems().length) { show(msg, 'Choose at least one stem.', true); return; }
  if (F.file && lim.max_upload_bytes && F.file.size > lim.max_upload_bytes) {
    show(msg, `${F.file.name} is ${fmtBytes(F.file.size)}; this server takes files up to ${fmtBytes(lim.max_upload_bytes)}.`, true);
    return;
  }
  if (F.file && lim.max_duration_s) {
    const d = await localDuration(F.file);
    if (d && d > lim.max_duration_s) {
      show(msg, `${F.file.name} lasts ${fmtDuration(d)}; this server takes up to ${fmtDuration(lim.max_duration_s)}.`, true);
      return;
    }
  }
  const form = new FormData(); // options first, the file last: the server checks options before the upload
  for (const [k, v] of Object.entries(requestFields())) form.append(k, v);
  if (F.file) form.append('file', F.file, F.file.name); else form.append('url', url);
  const title = F.file ? F.file.name : decodeURIComponent(url.split(/[?#]/)[0].replace(/\/+$/, '').split('/').pop() || url);

  const xhr = new XMLHttpRequest(); // XHR: fetch has no upload progress
  xhr.open('POST', '/jobs');
  xhr.setRequestHeader('Authorization', 'Bearer ' + S.token);
  xhr.setRequestHeader('Idempotency-Key', randomKey());
  const bar = $('#upload-bar'), text = $('#upload-text');
  $('#upload').hidden = false; bar.value = 0; text.textContent = F.file ? 'uploading…' : 'fetching the URL…';
  show(msg, '');
  $('#send').disabled = true;
  xhr.upload.onprogress = (e) => {
    if (!e.lengthComputable) return;
    bar.value = e.loaded / e.total;
    text.textContent = e.loaded < e.total ? `uploading ${Math.round(100 * e.loaded / e.total)}%` : 'checking the media…';
  };
  xhr.onloadend = () => {
    $('#send').disabled = false; $('#upload').hidden = true;
    if (xhr.status === 401) { S.onUnauthorized('The server refused the token. Enter the right one.'); return; }
    let body = null;
    try { body = JSON.parse(xhr.responseText); } catch { /* not JSON */ }
    if (xhr.status === 202 && body) {
      const titles = saved.get('titles', {});
      titles[body.id] = title; saved.set('titles', titles);
      pickFile(null); $('#file').value = ''; $('#url').value = '';
      F.onQueued(body);
    } else if (xhr.status === 0) {
      show(msg, `The upload failed: ${'lost connection to the server'}.`, true);
    } else {
      show(msg, `Refused: ${humanMessage((body && body.message) || 'the server answered ' + xhr.status)}`, true);
    }
  };
  xhr.send(form);
}

export function wireForm() {
  $('#recipe').addEventListener('change', () => renderRecipe());
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
}
