// The app's shell: who is signed in, the navigation their roles get, and the hash router.
// Pages are modules; each exports functions that render into <main> through ui.page().
import { api, onSession, signedIn, logout, restore } from './api.js';
import { h, page, announce, setPageGuard, StalePage } from './ui.js';
import { destroyCharts } from './charts.js';
import { setCurrency } from './words.js';
import * as auth from './auth.js';
import * as onboarding from './onboarding.js';
import * as portfolio from './portfolio.js';
import * as market from './market.js';
import * as advice from './advice.js';
import * as account from './account.js';
import * as staff from './staff.js';

/** The signed-in person (GET /v1/me), or null. */
export const session = { me: null };

const INVESTOR = [
  ['#/portfolio', 'Portfolio'],
  ['#/instruments', 'Instruments'],
  ['#/trade', 'Trade'],
  ['#/advice', 'Advice'],
  ['#/onboarding', 'Onboarding'],
  ['#/statements', 'Statements'],
  ['#/notifications', 'Notifications'],
  ['#/account', 'Account'],
];
const STAFF = {
  compliance: [['#/compliance', 'Compliance'], ['#/audit', 'Audit']],
  support: [['#/support', 'Support']],
  admin: [['#/admin', 'Security'], ['#/audit', 'Audit'], ['#/cluster', 'Cluster']],
};

const ROUTES = {
  '': () => (signedIn() ? home() : auth.loginPage()),
  login: () => auth.loginPage(),
  register: () => auth.registerPage(),
  portfolio: () => portfolio.portfolioPage(),
  instruments: (sym) => (sym ? market.instrumentPage(sym) : market.instrumentsPage()),
  trade: (sym) => market.tradePage(sym),
  advice: () => advice.advicePage(),
  onboarding: () => onboarding.onboardingPage(),
  statements: () => account.statementsPage(),
  notifications: () => account.notificationsPage(),
  account: () => account.accountPage(),
  compliance: () => staff.compliancePage(),
  support: () => staff.supportPage(),
  admin: () => staff.securityPage(),
  audit: () => staff.auditPage(),
  cluster: () => staff.clusterPage(),
};
const PUBLIC = new Set(['', 'login', 'register']);

function home() {
  const roles = session.me?.roles || [];
  if (roles.includes('user')) return portfolio.portfolioPage();
  if (roles.includes('compliance')) return staff.compliancePage();
  if (roles.includes('admin')) return staff.clusterPage();
  if (roles.includes('support')) return staff.supportPage();
  return auth.loginPage();
}

/** Re-reads the signed-in person (after onboarding steps change what they may do). */
export async function refreshMe() {
  session.me = await api('GET', '/v1/me');
  renderChrome();
  return session.me;
}

function links() {
  if (!session.me) return [['#/login', 'Sign in'], ['#/register', 'Register']];
  const out = [];
  const roles = session.me.roles || [];
  if (roles.includes('user')) out.push(...INVESTOR);
  for (const r of ['compliance', 'support', 'admin']) {
    if (roles.includes(r)) STAFF[r].forEach((l) => { if (!out.some(([href]) => href === l[0])) out.push(l); });
  }
  if (!roles.includes('user')) out.push(['#/account', 'Account']);
  return out;
}

function renderChrome() {
  const current = `#/${location.hash.replace(/^#\/?/, '').split('/')[0]}`;
  document.getElementById('nav').replaceChildren(h('ul', {}, links().map(([href, text]) =>
    h('li', {}, h('a', { href, 'aria-current': href === current ? 'page' : null }, text)))));
  const who = document.getElementById('who');
  if (session.me) {
    who.replaceChildren(
      h('span', { id: 'who-name', class: 'literal' }, session.me.full_name || session.me.email || ''),
      h('span', { class: 'badge' }, (session.me.roles || []).join(', ')),
      h('button', { type: 'button', id: 'sign-out', onclick: () => { logout(); } }, 'Sign out'),
    );
  } else {
    who.replaceChildren();
  }
}

let stopPage = null;
let routeGen = 0;
let flash = '';
/** A message for the next page (the status line is cleared on every page change). */
export function flashNext(message) { flash = message; }
/** A page may register a function that stops its timers when the person leaves it. */
export function onLeave(fn) { stopPage = fn; }

/** Goes to a route (rendering it again when it is the current one). */
export function navigate(hash) {
  if (location.hash === hash) route();
  else location.hash = hash;
}

async function route() {
  // Only "#/…" is a route ("#main" is the skip link's target, handled below).
  if (location.hash && !location.hash.startsWith('#/')) return;
  if (stopPage) { try { stopPage(); } catch { /* the page is gone anyway */ } stopPage = null; }
  destroyCharts();
  announce(flash);
  flash = '';
  routeGen += 1;
  const gen = routeGen;
  const [name, ...rest] = location.hash.replace(/^#\/?/, '').split('/');
  let arg;
  try {
    arg = rest.length ? decodeURIComponent(rest.join('/')) : undefined;
  } catch {
    arg = '\uFFFD';
  }
  const render = ROUTES[name];
  // A page whose data arrives after the person moved on, or signed out, is not shown.
  setPageGuard(() => gen === routeGen && (signedIn() || PUBLIC.has(name)));
  if (!signedIn() && !PUBLIC.has(name)) {
    location.hash = '#/login';
    return;
  }
  if (signedIn() && !session.me) {
    try { await refreshMe(); } catch { /* shown by the page's own calls */ }
  }
  renderChrome();
  if (!render) {
    page('Not found', h('p', {}, 'There is no such page. '), h('a', { href: '#/' }, 'Go to the start'));
    return;
  }
  try {
    await render(arg);
  } catch (e) {
    if (e instanceof StalePage || gen !== routeGen) return;
    page('Something went wrong', h('p', { class: 'alert', role: 'alert' }, e.message || String(e)));
  }
}

// The skip link moves the focus to the content without changing the route.
document.querySelector('.skip').addEventListener('click', (ev) => {
  ev.preventDefault();
  document.getElementById('main').focus();
});

onSession(async (inNow) => {
  if (!inNow) {
    session.me = null;
    flashNext('You are signed out.');
    renderChrome();
    location.hash = '#/login';
  }
});

window.addEventListener('hashchange', route);
// The platform's currency (every amount is written in it) and, after a reload, the session
// from its cookie; then the page.
Promise.allSettled([
  api('GET', '/v1/fees', { auth: false }).then((f) => setCurrency(f.currency)),
  restore(),
]).finally(route);
