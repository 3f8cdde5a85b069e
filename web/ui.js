// DOM helpers. Everything a person or the API supplied is put on the page as text
// (text nodes, textContent, attribute values), never parsed as HTML.
import { Problem } from './api.js';
import { describe } from './words.js';

/** h('tag', {attrs}, ...children): children are nodes or strings (as text); null is skipped. */
export function h(tag, attrs = {}, ...children) {
  const svg = ['svg', 'rect', 'text', 'g', 'title', 'line'].includes(tag);
  const el = svg ? document.createElementNS('http://www.w3.org/2000/svg', tag) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (k === 'text') el.textContent = String(v);
    else if (k === 'value' && !svg) el.value = v;
    else if (k === 'checked') el.checked = Boolean(v);
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

let uid = 0;
/** A unique id for label/field/error wiring. */
export function nextId(prefix) { uid += 1; return `${prefix}-${uid}`; }

/**
 * A labelled form field with its hint and an error slot next to it.
 * spec: { name, label, type, hint, options:[[value,label]], value, required, attrs }
 */
export function field(spec) {
  const id = spec.id || nextId(spec.name);
  const hintId = spec.hint ? `${id}-hint` : null;
  const errId = `${id}-error`;
  const described = [hintId, errId].filter(Boolean).join(' ');
  let input;
  if (spec.type === 'select') {
    input = h('select', { id, name: spec.name, required: spec.required, 'aria-describedby': described },
      (spec.options || []).map(([v, l]) => h('option', { value: v }, l)));
    if (spec.value !== undefined) input.value = spec.value;
  } else if (spec.type === 'textarea') {
    input = h('textarea', { id, name: spec.name, required: spec.required, rows: 3, 'aria-describedby': described, ...(spec.attrs || {}) });
    if (spec.value !== undefined) input.value = spec.value;
  } else if (spec.type === 'checkbox') {
    input = h('input', { id, name: spec.name, type: 'checkbox', checked: spec.value, 'aria-describedby': described });
    const row = h('div', { class: 'row' },
      input, ' ', h('label', { for: id, class: 'inline' }, spec.label),
      spec.hint ? h('p', { class: 'hint', id: hintId }, spec.hint) : null,
      h('p', { class: 'error', id: errId }));
    return { row, input, error: row.querySelector('.error') };
  } else {
    input = h('input', { id, name: spec.name, type: spec.type || 'text', required: spec.required, value: spec.value, 'aria-describedby': described, ...(spec.attrs || {}) });
  }
  const error = h('p', { class: 'error', id: errId });
  const row = h('div', { class: 'row' },
    h('label', { for: id }, spec.label),
    spec.hint ? h('p', { class: 'hint', id: hintId }, spec.hint) : null,
    input, error);
  return { row, input, error };
}

/** A form: fields by name, a form-level alert, a submit button; onSubmit(values, form). */
export function form({ fields, submit, onSubmit, extra = [] }) {
  const byName = {};
  fields.forEach((f) => { byName[f.input.name] = f; });
  const alert = h('div', { class: 'alert', role: 'alert' });
  const button = h('button', { type: 'submit' }, submit);
  const el = h('form', { novalidate: true }, fields.map((f) => f.row), extra, alert, h('div', { class: 'actions' }, button));
  const ctx = { el, fields: byName, alert, button };
  el.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    if (button.disabled) return;
    clearErrors(ctx);
    const values = {};
    for (const [name, f] of Object.entries(byName)) {
      if (f.input.type === 'checkbox') values[name] = f.input.checked;
      else if (f.input.type === 'password') values[name] = f.input.value; // spaces are part of it
      else values[name] = f.input.value.trim();
      if (f.input.required && values[name] === '') {
        fieldError(f, 'This is required.');
      }
    }
    if (el.querySelector('[aria-invalid="true"]')) {
      el.querySelector('[aria-invalid="true"]').focus();
      return;
    }
    button.disabled = true;
    try {
      await onSubmit(values, ctx);
    } catch (e) {
      showProblem(ctx, e);
    } finally {
      button.disabled = false;
      keepFocus(el, ctx.alert.textContent ? ctx.alert : button);
    }
  });
  return ctx;
}

/** A disabled button drops the keyboard focus to the page: give it back — to `to`, if the
 * focus is lost and `to` is still on the page. */
export function keepFocus(within, to) {
  const lost = !document.activeElement || document.activeElement === document.body;
  if (!lost || !to || !to.isConnected || !within.isConnected) return;
  if (!to.hasAttribute('tabindex') && !['BUTTON', 'INPUT', 'SELECT', 'TEXTAREA', 'A'].includes(to.tagName)) to.setAttribute('tabindex', '-1');
  to.focus();
}

export function fieldError(f, message) {
  f.error.textContent = message;
  f.input.setAttribute('aria-invalid', 'true');
}

export function clearErrors(ctx) {
  ctx.alert.textContent = '';
  for (const f of Object.values(ctx.fields)) {
    f.error.textContent = '';
    f.input.removeAttribute('aria-invalid');
  }
}

/**
 * Shows a problem next to the field it concerns (by `where`: code → field name, or a field
 * named in the detail), else in the form's alert; focuses the field.
 */
export function showProblem(ctx, e, where = {}) {
  const message = e instanceof Problem ? describe(e) : 'Something went wrong. Please try again.';
  if (!(e instanceof Problem)) console.error(e);
  let name = e instanceof Problem ? where[e.code] : undefined;
  if (!name && e instanceof Problem && e.code === 'invalid_request') {
    name = Object.keys(ctx.fields).find((n) => e.detail.includes(n));
  }
  const f = name && ctx.fields[name];
  if (f) {
    fieldError(f, message);
    f.input.focus();
  } else {
    ctx.alert.textContent = message;
  }
}

/** A table: columns [{ key, label, num, render(row) }], rows; caption for screen readers. */
export function table(caption, columns, rows, empty = 'Nothing yet.') {
  if (!rows || rows.length === 0) return h('p', { class: 'empty' }, empty);
  // A wide table scrolls sideways: its wrapper is a focusable, named region (keyboard users
  // scroll it with the arrow keys).
  return h('div', { class: 'tablewrap', tabindex: '0', role: 'region', 'aria-label': caption }, h('table', {},
    h('caption', {}, caption),
    h('thead', {}, h('tr', {}, columns.map((c) => h('th', { scope: 'col', class: c.num ? 'num' : null }, c.label)))),
    h('tbody', {}, rows.map((r) => h('tr', {}, columns.map((c) => {
      const v = c.render ? c.render(r) : r[c.key];
      return h('td', { class: c.num ? 'num' : null }, v === null || v === undefined ? '—' : v);
    }))))));
}

/** A table of whatever objects an API list holds (staff views): one column per field. */
export function autoTable(caption, rows, empty) {
  const keys = [];
  (rows || []).forEach((r) => Object.keys(r).forEach((k) => { if (!keys.includes(k)) keys.push(k); }));
  return table(caption, keys.map((k) => ({ key: k, label: k.replaceAll('_', ' '), render: (r) => plain(r[k]) })), rows, empty);
}

/** Any JSON value as plain text. */
export function plain(v) {
  if (v === null || v === undefined) return '—';
  if (typeof v === 'object') return JSON.stringify(v);
  return String(v);
}

/** Announces a message in the polite live region. */
export function announce(message) {
  const s = document.getElementById('status');
  s.replaceChildren(message ? h('p', {}, message) : '');
}

let guard = () => true;
/** The app says whether a page may still be shown (a page whose data arrived after the person
 * signed out, or moved on, is not). */
export function setPageGuard(fn) { guard = fn; }

/** Thrown by page() for a page that is no longer wanted; the router ignores it. */
export class StalePage extends Error {}

/** Replaces the page: a title, an h1 that takes the focus, the content. */
export function page(title, ...children) {
  if (!guard()) throw new StalePage(title);
  document.title = `${title} · Moneta`;
  const main = document.getElementById('main');
  main.replaceChildren(h('h1', { id: 'page-title', tabindex: '-1' }, title), ...children.flat(Infinity).filter((c) => c !== null && c !== undefined && c !== false));
  const h1 = document.getElementById('page-title');
  h1.focus({ preventScroll: false });
  return main;
}

export function card(...children) { return h('section', { class: 'card' }, ...children); }

/** A facts list: [[term, value]] as a dl. */
export function facts(pairs) {
  return h('dl', { class: 'facts' }, pairs.map(([t, v]) => [h('dt', {}, t), h('dd', {}, v === null || v === undefined ? '—' : v)]));
}

/** Disables a button while `work` runs (a second click does nothing meanwhile); a failure is
 * announced in plain words. */
export async function busy(button, work) {
  if (button.disabled) return undefined;
  button.disabled = true;
  try {
    return await work();
  } catch (e) {
    announce(e instanceof Problem ? describe(e) : 'Something went wrong. Please try again.');
    if (!(e instanceof Problem)) console.error(e);
    return undefined;
  } finally {
    button.disabled = false;
    keepFocus(document.body, button);
  }
}

/** Saves a Blob as a download. */
export function download(blob, filename) {
  const url = URL.createObjectURL(blob);
  const a = h('a', { href: url, download: filename });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}
