// The portfolio: cash, holdings and value; performance (a chart, the period selector and the
// time-weighted return); deposits and withdrawals; cash movements and orders.
import { api, newKey } from './api.js';
import { h, page, field, form, card, table, announce } from './ui.js';
import { fmtMoney, fmtQty, fmtPct, fmtTime, withCurrency } from './words.js';
import { lineChart } from './charts.js';

const PERIODS = [['1d', 'Day'], ['1m', 'Month'], ['1y', 'Year'], ['all', 'All']];

export async function portfolioPage() {
  const p = await api('GET', '/v1/portfolio');
  const summary = h('div', { class: 'grid', id: 'portfolio-summary' });
  const holdings = h('div', { id: 'holdings' });
  const show = (pf) => {
    summary.replaceChildren(
      card(h('p', { class: 'label' }, 'Total value'), h('p', { class: 'figure', id: 'total-value' }, fmtMoney(pf.total_value, pf.currency))),
      card(h('p', { class: 'label' }, 'Cash'), h('p', { class: 'figure', id: 'cash' }, fmtMoney(pf.cash, pf.currency))),
      card(h('p', { class: 'label' }, 'Valued at'), h('p', {}, fmtTime(pf.as_of))),
    );
    holdings.replaceChildren(table('Your holdings', [
      { key: 'symbol', label: 'Instrument', render: (r) => h('a', { href: `#/instruments/${encodeURIComponent(r.symbol)}` }, r.symbol) },
      { key: 'quantity', label: 'Units', num: true, render: (r) => fmtQty(r.quantity) },
      { key: 'average_cost', label: 'Average cost', num: true, render: (r) => fmtMoney(r.average_cost, pf.currency) },
      { key: 'price', label: 'Price', num: true, render: (r) => fmtMoney(r.price, pf.currency) },
      { key: 'market_value', label: 'Value', num: true, render: (r) => fmtMoney(r.market_value, pf.currency) },
    ], pf.holdings, 'You hold no investments yet.'));
  };
  show(p);
  const perf = performance();
  const moves = h('div', { id: 'transactions' }, await transactions());
  const orderList = h('div', { id: 'orders' }, await orders());
  // After money moves: the figures, the chart, the cash movements.
  const reload = async () => {
    show(await api('GET', '/v1/portfolio'));
    perf.reload();
    moves.replaceChildren(await transactions());
    orderList.replaceChildren(await orders());
  };

  page('Portfolio',
    summary,
    card(h('h2', {}, 'Performance'), perf.el),
    card(h('h2', {}, 'Holdings'), holdings, h('p', {}, h('a', { href: '#/trade' }, 'Buy or sell'))),
    h('div', { class: 'grid' },
      card(h('h2', {}, 'Add money'), cashForm('deposit', reload)),
      card(h('h2', {}, 'Withdraw money'), cashForm('withdrawal', reload))),
    card(h('h2', {}, 'Cash movements'), moves),
    card(h('h2', {}, 'Orders'), orderList));
  // Drawn once the page is in place (the chart takes its container's width).
  perf.reload();
}

function performance() {
  const twr = h('p', { id: 'twr' });
  const chart = h('div', { id: 'performance-chart' });
  const buttons = PERIODS.map(([period, label]) => h('button', {
    type: 'button', class: 'secondary', 'aria-pressed': 'false', 'data-period': period,
  }, label));
  async function load(period) {
    buttons.forEach((b) => b.setAttribute('aria-pressed', String(b.dataset.period === period)));
    try {
      const r = await api('GET', `/v1/portfolio/performance?period=${period}`);
      twr.replaceChildren('Time-weighted return: ', h('strong', {}, fmtPct(r.twr)),
        ' — how your investments did, leaving out the effect of money you added or took out.');
      lineChart(chart, r.series, { label: 'Portfolio value' });
    } catch (e) {
      chart.replaceChildren(h('p', { class: 'alert', role: 'alert' }, e.message));
    }
  }
  let current = '1m';
  const show = (period) => { current = period; return load(period); };
  buttons.forEach((b) => b.addEventListener('click', () => show(b.dataset.period)));
  return { el: h('div', {}, h('div', { class: 'periods', role: 'group', 'aria-label': 'Period' }, buttons), twr, chart), reload: () => load(current) };
}

function cashForm(kind, reload) {
  const deposit = kind === 'deposit';
  const amount = field({ name: 'amount', label: withCurrency(deposit ? 'Amount to add ({cur})' : 'Amount to withdraw ({cur})'), required: true,
    attrs: { inputmode: 'decimal', autocomplete: 'off' }, hint: 'With at most two decimal places, for example 250.00.' });
  const result = h('div', { role: 'status' });
  // One idempotency key per attempt: kept while the same amount is retried after a failure,
  // replaced once the request is answered (or the amount changes).
  let key = null;
  let keyFor = null;
  const f = form({
    fields: [amount],
    submit: deposit ? 'Add money' : 'Withdraw',
    onSubmit: async (v, ctx) => {
      if (!/^\d+(\.\d{1,2})?$/.test(v.amount) || Number(v.amount) <= 0) {
        amount.error.textContent = 'Enter an amount above zero, with at most two decimal places (for example 250.00).';
        amount.input.setAttribute('aria-invalid', 'true');
        amount.input.focus();
        return;
      }
      if (keyFor !== v.amount) { key = newKey(); keyFor = v.amount; }
      try {
        const r = await api('POST', deposit ? '/v1/portfolio/deposits' : '/v1/portfolio/withdrawals', { body: { amount: v.amount }, key });
        key = null; keyFor = null;
        result.replaceChildren(h('p', { class: 'ok' }, `${deposit ? 'Added' : 'Withdrawn'}: ${fmtMoney(v.amount)}. Cash now ${fmtMoney(r.cash)}.`));
        announce(`Cash now ${fmtMoney(r.cash)}.`);
        amount.input.value = '';
        await reload();
      } catch (e) {
        if (e.status && e.status < 500) { key = null; keyFor = null; }
        throw e;
      }
    },
  });
  f.el.id = `${kind}-form`;
  return [f.el, result];
}

async function transactions() {
  const list = await api('GET', '/v1/portfolio/transactions');
  return table('Cash movements, newest first', [
    { key: 'at', label: 'When', render: (r) => fmtTime(r.at) },
    { key: 'kind', label: 'What' },
    { key: 'amount', label: 'Amount', num: true, render: (r) => fmtMoney(r.amount) },
    { key: 'order_id', label: 'Order' },
  ], list.slice(0, 50), 'No cash movements yet.');
}

export async function orders() {
  const list = await api('GET', '/v1/orders');
  return h('div', {}, table('Orders, newest first', [
    { key: 'executed_at', label: 'When', render: (r) => fmtTime(r.executed_at) },
    { key: 'side', label: 'Side' },
    { key: 'symbol', label: 'Instrument' },
    { key: 'quantity', label: 'Units', num: true },
    { key: 'price', label: 'Price', num: true, render: (r) => fmtMoney(r.price) },
    { key: 'fees', label: 'Fees', num: true, render: (r) => fmtMoney(r.fees) },
    { key: 'status', label: 'Status' },
  ], list.slice(0, 50), 'No orders yet.'));
}

