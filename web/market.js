// Instruments with price charts from the history route, and placing an order: the form, then
// a confirmation step with the estimated price, fees and total; the answer (the fill, or the
// compliance reason in plain words) is shown in the same place.
import { api, newKey, Problem } from './api.js';
import { h, page, field, card, table, facts, announce, busy, fieldError, clearErrors, showProblem } from './ui.js';
import { fmtMoney, fmtTime, describe } from './words.js';
import { lineChart } from './charts.js';

const KINDS = { equity: 'Share', etf: 'Exchange-traded fund', bond: 'Bond', fund: 'Fund', derivative: 'Derivative (complex)', leveraged_etf: 'Leveraged ETF (complex)' };

export async function instrumentsPage() {
  const list = await api('GET', '/v1/instruments', { auth: false });
  page('Instruments',
    h('p', {}, 'Prices move during the day; an order fills at the latest price when it is placed. Complex products can lose value fast and are only for investors who know them.'),
    table('Listed instruments', [
      { key: 'symbol', label: 'Symbol', render: (r) => h('a', { href: `#/instruments/${encodeURIComponent(r.symbol)}` }, r.symbol) },
      { key: 'name', label: 'Name' },
      { key: 'kind', label: 'Kind', render: (r) => KINDS[r.kind] || r.kind },
      { key: 'risk_class', label: 'Risk (1–7)', num: true },
      { key: 'price', label: 'Price', num: true, render: (r) => fmtMoney(r.price, r.currency) },
      { key: 'as_of', label: 'As of', render: (r) => fmtTime(r.as_of) },
    ], list));
}

export async function instrumentPage(symbol) {
  const i = await api('GET', `/v1/instruments/${encodeURIComponent(symbol)}`, { auth: false });
  const chart = h('div', { id: 'price-chart' });
  const ranges = [['1 day', 1], ['1 month', 30], ['1 year', 365]];
  const buttons = ranges.map(([label, days]) => h('button', {
    type: 'button', class: 'secondary', 'aria-pressed': 'false', 'data-days': days, onclick: () => load(days),
  }, label));
  async function load(days) {
    buttons.forEach((b) => b.setAttribute('aria-pressed', String(Number(b.dataset.days) === days)));
    const to = new Date();
    const from = new Date(to.getTime() - days * 86400000);
    const q = `from=${encodeURIComponent(from.toISOString().replace(/\.\d+Z$/, 'Z'))}&to=${encodeURIComponent(to.toISOString().replace(/\.\d+Z$/, 'Z'))}`;
    try {
      const points = await api('GET', `/v1/instruments/${encodeURIComponent(symbol)}/history?${q}`, { auth: false });
      lineChart(chart, points, { label: `${i.symbol} price` });
    } catch (e) {
      chart.replaceChildren(h('p', { class: 'alert', role: 'alert' }, e.message));
    }
  }
  page(`${i.name} (${i.symbol})`,
    card(facts([
      ['Kind', KINDS[i.kind] || i.kind],
      ['Complex product', i.complex ? 'Yes: derivatives and leveraged products can lose value very fast' : 'No'],
      ['Risk class', i.risk_class ? `${i.risk_class} of 7` : '—'],
      ['Latest price', h('span', { id: 'instrument-price' }, fmtMoney(i.price, i.currency))],
      ['As of', fmtTime(i.as_of)],
    ]), h('p', {}, h('a', { href: `#/trade/${encodeURIComponent(i.symbol)}`, id: 'trade-link' }, `Buy or sell ${i.symbol}`))),
    card(h('h2', {}, 'Price history'), h('div', { class: 'periods', role: 'group', 'aria-label': 'Range' }, buttons), chart));
  load(1);
}

/** The order form and its confirmation step. */
export async function tradePage(symbol) {
  const [list, fees] = await Promise.all([api('GET', '/v1/instruments', { auth: false }), api('GET', '/v1/fees', { auth: false })]);
  const sym = field({ name: 'symbol', label: 'Instrument', type: 'select', required: true,
    options: list.map((i) => [i.symbol, `${i.symbol} — ${i.name}${i.complex ? ' (complex)' : ''}`]), value: symbol || list[0]?.symbol });
  const side = field({ name: 'side', label: 'Buy or sell', type: 'select', required: true, options: [['buy', 'Buy'], ['sell', 'Sell']] });
  const qty = field({ name: 'quantity', label: 'Units', required: true, attrs: { inputmode: 'decimal', autocomplete: 'off' },
    hint: 'How many units, for example 10 or 2.5.' });
  const alert = h('div', { class: 'alert', role: 'alert', id: 'order-problem' });
  const review = h('button', { type: 'submit', id: 'review-order' }, 'Review order');
  const ctx = { fields: { symbol: sym, side, quantity: qty }, alert };
  const confirmBox = h('div', { id: 'order-confirmation' });
  const formEl = h('form', { id: 'order-form', novalidate: true }, sym.row, side.row, qty.row, alert, h('div', { class: 'actions' }, review));
  formEl.addEventListener('submit', (ev) => {
    ev.preventDefault();
    if (review.disabled) return;
    clearErrors(ctx);
    confirmBox.replaceChildren();
    const quantity = qty.input.value.trim();
    if (!/^\d+(\.\d+)?$/.test(quantity) || Number(quantity) <= 0) {
      fieldError(qty, 'Enter a number of units above zero, for example 10 or 2.5.');
      qty.input.focus();
      return;
    }
    const inst = list.find((i) => i.symbol === sym.input.value);
    if (!inst) {
      fieldError(sym, 'Choose an instrument from the list.');
      sym.input.focus();
      return;
    }
    // The estimate comes from the server, priced as the order path prices it.
    const s = side.input.value;
    busy(review, async () => {
      let estimate;
      try {
        estimate = await api('GET', `/v1/instruments/${encodeURIComponent(inst.symbol)}/quote?side=${s}&quantity=${encodeURIComponent(quantity)}`, { auth: false });
      } catch (e) {
        showProblem(ctx, e, { invalid_quantity: 'quantity', unknown_instrument: 'symbol' });
        return;
      }
      confirmBox.replaceChildren(confirmation(inst, s, quantity, estimate, fees, ctx));
      confirmBox.querySelector('h2').focus();
    });
  });
  page('Trade',
    h('p', {}, 'Orders are market orders: they fill at once at the latest price, moved slightly against you by the broker (the spread), plus our fee.'),
    card(formEl), confirmBox);
}

function confirmation(inst, side, quantity, estimate, fees, ctx) {
  const outcome = h('div', { id: 'order-outcome', role: 'status', tabindex: '-1' });
  // One key for this confirmation: a second click, or a retry after a failure, cannot place a
  // second order.
  const key = newKey();
  const place = h('button', { type: 'button', id: 'place-order' }, `Confirm: ${side} ${quantity} ${inst.symbol}`);
  const back = h('button', { type: 'button', class: 'secondary', id: 'change-order', onclick: () => { box.remove(); ctx.fields.quantity.input.focus(); } }, 'Change order');
  place.addEventListener('click', () => busy(place, async () => {
    outcome.replaceChildren(h('p', {}, 'Placing your order…'));
    try {
      const o = await api('POST', '/v1/orders', { body: { symbol: inst.symbol, side, quantity }, key });
      place.remove();
      back.textContent = 'Place another order';
      outcome.replaceChildren(h('div', { class: 'ok' },
        h('p', {}, h('strong', {}, 'Order filled. '), `${o.side === 'buy' ? 'Bought' : 'Sold'} ${o.quantity} ${o.symbol} at ${fmtMoney(o.price)} each; fees ${fmtMoney(o.fees)}.`),
        h('p', {}, `Order ${o.order_id}, executed ${fmtTime(o.executed_at)}.`)));
      announce('Order filled.');
      outcome.focus();
    } catch (e) {
      const refused = e instanceof Problem && e.status === 422;
      // No answer, or the server could not finish: whether the order was placed is not known
      // here (it may have reached the server), so the app does not say it was not.
      const unknown = !(e instanceof Problem) || e.status === 0 || e.status >= 500;
      const lead = refused ? 'We could not place this order. '
        : unknown ? 'We could not confirm whether the order was placed. ' : 'The order was not placed. ';
      outcome.replaceChildren(h('div', { class: 'alert', id: 'order-refused' },
        h('p', {}, h('strong', {}, lead), e instanceof Problem ? describe(e) : String(e)),
        e instanceof Problem && e.code === 'kyc_required' ? h('p', {}, h('a', { href: '#/onboarding' }, 'Verify your identity')) : null,
        e instanceof Problem && ['suitability_required', 'not_appropriate', 'unsuitable'].includes(e.code) ? h('p', {}, h('a', { href: '#/onboarding' }, 'Review your questionnaire answers')) : null));
      // No answer, or the server could not finish: the same confirmation (the same key) may be
      // sent again and never places the order twice. Any other answer is final.
      const retry = e instanceof Problem && (e.status === 0 || e.status >= 500);
      if (retry) outcome.append(h('p', {}, 'Check your orders, or confirm again: the same confirmation never places the order twice.'));
      else place.remove();
      outcome.focus();
    }
  }));
  const box = h('section', { class: 'card confirm', 'aria-labelledby': 'confirm-title' },
    h('h2', { id: 'confirm-title', tabindex: '-1' }, 'Check your order'),
    facts([
      ['Order', `${side === 'buy' ? 'Buy' : 'Sell'} ${quantity} ${inst.symbol} (${inst.name})`],
      ['Estimated price', h('span', { id: 'estimate-price' }, `${fmtMoney(estimate.price)} per unit`)],
      ['Estimated fees', h('span', { id: 'estimate-fees' }, `${fmtMoney(estimate.fees)} (${fees.commission_bps} basis points, at least ${fmtMoney(fees.minimum)})`)],
      [side === 'buy' ? 'Estimated total cost' : 'Estimated proceeds', h('span', { id: 'estimate-total' }, fmtMoney(estimate.total))],
    ]),
    h('p', { class: 'hint' }, `Estimated from the latest price (${fmtMoney(estimate.market_price)} at ${fmtTime(estimate.as_of)}), with the broker's spread of ${fees.slippage_bps} basis points. The order fills at the price when it reaches the market; the fill shows what you paid.`),
    inst.complex ? h('p', { class: 'alert' }, 'This is a complex product: its value can fall very fast and you can lose all you invest in it.') : null,
    h('div', { class: 'actions' }, place, back),
    outcome);
  return box;
}
