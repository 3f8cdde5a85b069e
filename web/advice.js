// Advice: labelled as AI-generated, with its disclosure, rationale, target allocation (a
// chart and its table) and proposed orders; accepting it takes one idempotency key per
// click, and the button is disabled while it runs, so a double-click places nothing twice.
import { api, newKey, Problem } from './api.js';
import { h, page, card, table, facts, announce, busy } from './ui.js';
import { fmtTime, bandName, describe } from './words.js';
import { barChart } from './charts.js';

const STATUS = {
  published: ['Ready for you', 'good'],
  pending_review: ['Held for review by our compliance team', 'warn'],
  approved: ['Reviewed and approved by our compliance team', 'good'],
  rejected: ['Rejected by our compliance team', 'bad'],
  accepted: ['Accepted', 'good'],
};

export async function advicePage() {
  let a;
  try {
    a = await api('GET', '/v1/advice');
  } catch (e) {
    if (e instanceof Problem && (e.code === 'consent_required' || e.code === 'suitability_required')) {
      page('Advice', card(h('p', { class: 'alert', id: 'advice-unavailable' }, describe(e)),
        h('p', {}, h('a', { href: '#/onboarding' }, e.code === 'consent_required' ? 'Change your consents' : 'Answer the questionnaire'))));
      return;
    }
    throw e;
  }
  // Advice a compliance officer approved is published, with the decision beside it.
  const shown = a.status === 'published' && a.review_decision === 'approved' ? 'approved' : a.status;
  const [statusText, statusClass] = STATUS[shown] || [a.status, 'warn'];
  const outcome = h('div', { id: 'accept-outcome', role: 'status', tabindex: '-1' });
  const actionable = a.status === 'published' && (a.proposed_orders || []).length > 0;
  const accept = h('button', { type: 'button', id: 'accept-advice' }, 'Accept and place these orders');
  // The key of this acceptance: made by the first click, kept when it went unanswered (a network
  // failure or a 5xx: the next click is a retry, and the server finishes what it began), dropped
  // once the server answered. busy() disables the button at once, so the second click of a
  // double-click finds it disabled and sends nothing.
  let key = null;
  accept.addEventListener('click', () => {
    if (!key) key = newKey();
    busy(accept, async () => {
      try {
        const r = await api('POST', `/v1/advice/${encodeURIComponent(a.advice_id)}/accept`, { key });
        accept.remove();
        outcome.replaceChildren(h('div', { class: 'ok' }, h('p', {}, h('strong', {}, 'Advice accepted.')),
          table('Orders placed from this advice', [
            { key: 'symbol', label: 'Instrument' },
            { key: 'side', label: 'Side' },
            { key: 'quantity', label: 'Units', num: true },
            { key: 'status', label: 'Result', render: (o) => (o.code ? `${o.status}: ${describe({ code: o.code })}` : o.status) },
          ], r.orders || [])));
        announce('Advice accepted.');
        key = null;
      } catch (e) {
        if (!(e instanceof Problem) || (e.status !== 0 && e.status < 500)) key = null;
        // Advice replaced by newer advice (asked for elsewhere, or made after a trade) is gone
        // (404), and advice the holdings no longer fit is refused (409): either way this page
        // is out of date, so it offers the current advice instead of the same button again.
        const stale = e instanceof Problem && (e.code === 'advice_outdated' || e.status === 404);
        if (stale) {
          accept.remove();
          const current = h('button', { type: 'button', id: 'current-advice', onclick: () => { advicePage().catch((err) => console.error(err)); } }, 'Show the current advice');
          outcome.replaceChildren(h('div', { class: 'alert' },
            h('p', {}, e.code === 'advice_outdated' ? describe(e) : 'This advice has been replaced by newer advice, so it can no longer be accepted.'),
            h('div', { class: 'actions' }, current)));
          outcome.focus();
          return;
        }
        outcome.replaceChildren(h('p', { class: 'alert' }, e instanceof Problem ? describe(e) : String(e)));
      }
      outcome.focus();
    });
  });
  // The instruments' weights and the cash kept aside add up to the whole portfolio.
  const allocation = (a.target_allocation || []).map((t) => ({ label: t.symbol, weight: t.weight }));
  if (a.cash_weight !== undefined && a.cash_weight !== null && Number(a.cash_weight) > 0) allocation.push({ label: 'Cash', weight: a.cash_weight });
  page('Your advice',
    card(
      h('p', {}, h('span', { class: 'badge ai', id: 'ai-label' }, 'AI-generated'), ' ',
        h('span', { class: `badge ${statusClass}`, id: 'advice-status' }, statusText)),
      h('p', { class: 'disclosure', id: 'advice-disclosure' }, a.disclosure),
      facts([
        ['Generated', `${fmtTime(a.generated_at)} by model ${a.model_version}`],
        ['For the risk band', bandName(a.risk_band)],
        a.review_note ? ['Reviewer\'s note', h('span', { class: 'literal' }, a.review_note)] : null,
      ].filter(Boolean))),
    card(h('h2', {}, 'Why'), h('p', { class: 'literal', id: 'advice-rationale' }, a.rationale)),
    card(h('h2', {}, 'Target allocation'),
      allocation.length ? barChart(allocation, { label: 'Target allocation' }) : null,
      table('Target allocation', [
        { key: 'label', label: 'Instrument' },
        { key: 'weight', label: 'Share of the portfolio', num: true, render: (r) => `${(Number(r.weight) * 100).toFixed(1)}%` },
      ], allocation, 'No allocation.')),
    card(h('h2', {}, 'What it proposes'),
      table('Proposed orders', [
        { key: 'side', label: 'Side' },
        { key: 'symbol', label: 'Instrument' },
        { key: 'quantity', label: 'Units', num: true },
      ], a.proposed_orders || [], 'Your portfolio is already close to its target: nothing to do.'),
      a.status === 'pending_review' ? h('p', {}, 'Because this advice would change a lot of your portfolio, a person in our compliance team checks it before you can act on it.') : null,
      actionable ? h('div', { class: 'actions' }, accept) : null,
      outcome));
}
