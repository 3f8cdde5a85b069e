// The account: profile, two-factor enrolment (a QR code of the otpauth URI), data export
// (JSON or CSV download), account deletion with its grace period; statements; notifications.
import { api } from './api.js';
import { h, page, field, form, card, table, facts, announce, busy, download, showProblem } from './ui.js';
import { fmtMoney, fmtTime, bandName } from './words.js';
import { refreshMe } from './app.js';
import qrcode from './qrcode.mjs';

export async function accountPage() {
  const me = await refreshMe();
  const investor = (me.roles || []).includes('user');
  page('Your account',
    card(h('h2', {}, 'Profile'), facts([
      ['Name', h('span', { class: 'literal', id: 'profile-name' }, me.full_name || '—')],
      ['Email', me.email],
      ['Country', me.country],
      ['Roles', (me.roles || []).join(', ')],
      investor ? ['Risk band', me.risk_profile ? bandName(me.risk_profile.risk_band) : 'Questionnaire not answered'] : null,
      ['Two-factor authentication', h('span', { id: 'profile-mfa' }, me.mfa_enabled ? 'On' : 'Off')],
    ].filter(Boolean))),
    card(h('h2', {}, 'Two-factor authentication'), me.mfa_enabled
      ? h('p', { id: 'mfa-on' }, 'On: signing in asks for a code from your authenticator app.')
      : mfaEnrolment()),
    investor ? card(h('h2', {}, 'Your data'),
      h('p', {}, 'Download everything we hold about you: your profile, consents, answers, orders, advice and audit records.'),
      h('div', { class: 'actions' }, exportButton('json'), exportButton('csv'))) : null,
    investor ? card(h('h2', {}, 'Consents'), h('p', {}, h('a', { href: '#/onboarding' }, 'Change your consents'))) : null,
    investor ? deletion(me.erasure_due_at) : null);
}

function mfaEnrolment() {
  const box = h('div', { id: 'mfa-enrolment' });
  const start = h('button', { type: 'button', id: 'mfa-start' }, 'Turn on two-factor authentication');
  start.addEventListener('click', () => busy(start, async () => {
    const r = await api('POST', '/v1/me/mfa/totp');
    start.remove();
    const code = field({ name: 'code', label: 'Code from your app', required: true, attrs: { inputmode: 'numeric', autocomplete: 'one-time-code', maxlength: 6 },
      hint: 'The 6-digit code your app shows now. Each code works once.' });
    const f = form({
      fields: [code],
      submit: 'Confirm',
      onSubmit: async (v, ctx) => {
        try {
          await api('POST', '/v1/me/mfa/totp/confirm', { body: { code: v.code } });
        } catch (e) {
          showProblem(ctx, e, { invalid_code: 'code' });
          return;
        }
        box.replaceChildren(h('p', { class: 'ok', id: 'mfa-on' }, 'Two-factor authentication is on. From now on, signing in asks for a code.'));
        const shown = document.getElementById('profile-mfa');
        if (shown) shown.textContent = 'On';
        announce('Two-factor authentication is on.');
        await refreshMe();
      },
    });
    f.el.id = 'mfa-confirm-form';
    box.append(
      h('p', {}, 'Scan this code with an authenticator app (for example Aegis, Google Authenticator or 1Password), then enter the code it shows.'),
      qr(r.otpauth_uri),
      h('p', {}, 'Cannot scan? Enter this key in the app: ', h('code', { id: 'mfa-secret' }, r.secret)),
      f.el);
  }));
  box.append(h('p', {}, 'Protect your account with a code from an app on your phone as well as your password.'), start);
  return box;
}

/** The otpauth URI as a QR code drawn on a canvas (no markup from the library). */
function qr(uri) {
  const q = qrcode(0, 'M');
  q.addData(uri);
  q.make();
  const n = q.getModuleCount();
  const scale = 5;
  const canvas = h('canvas', { width: n * scale, height: n * scale, class: 'qr', id: 'mfa-qr', role: 'img', 'aria-label': 'QR code of your two-factor secret, for your authenticator app' });
  const g = canvas.getContext('2d');
  g.fillStyle = '#fff';
  g.fillRect(0, 0, n * scale, n * scale);
  g.fillStyle = '#000';
  for (let r = 0; r < n; r += 1) {
    for (let c = 0; c < n; c += 1) if (q.isDark(r, c)) g.fillRect(c * scale, r * scale, scale, scale);
  }
  return canvas;
}

function exportButton(format) {
  const b = h('button', { type: 'button', class: 'secondary', id: `export-${format}` }, `Download as ${format.toUpperCase()}`);
  b.addEventListener('click', () => busy(b, async () => {
    const blob = await api('GET', `/v1/me/export?format=${format}`, { want: 'blob' });
    download(blob, `moneta-export.${format}`);
    announce(`Your data is downloaded as moneta-export.${format}.`);
  }));
  return b;
}

function deletion(dueAt) {
  if (dueAt) {
    return card(h('h2', {}, 'Delete your account'),
      h('p', { class: 'ok', id: 'delete-result' }, `Your account is scheduled for erasure on ${fmtTime(dueAt)}. Until then you can still sign in and download your data.`));
  }
  const confirmBox = field({ name: 'confirm', label: 'I understand that my account and personal data will be erased', type: 'checkbox' });
  const result = h('div', { role: 'status', id: 'delete-result' });
  const f = form({
    fields: [confirmBox],
    submit: 'Delete my account',
    onSubmit: async (v, ctx) => {
      if (!v.confirm) {
        confirmBox.error.textContent = 'Tick the box to confirm.';
        confirmBox.input.setAttribute('aria-invalid', 'true');
        confirmBox.input.focus();
        return;
      }
      const r = await api('DELETE', '/v1/me');
      ctx.button.remove();
      result.replaceChildren(h('p', { class: 'ok' }, `Your account is scheduled for erasure on ${fmtTime(r.erasure_due_at)}. Until then you can still sign in and download your data. Records we must keep by law (orders and the audit trail) are kept without your personal details.`));
    },
  });
  f.button.classList.add('danger');
  f.el.id = 'delete-form';
  return card(h('h2', {}, 'Delete your account'),
    h('p', {}, 'Your personal data is erased after a grace period (30 days unless the platform is configured otherwise); the date is shown when you ask. Withdraw your money first.'),
    f.el, result);
}

export async function statementsPage() {
  const list = await api('GET', '/v1/portfolio/statements');
  page('Statements',
    h('p', {}, 'A statement is made at the close of every trading day.'),
    table('Daily statements, newest first', [
      { key: 'date', label: 'Day' },
      { key: 'cash', label: 'Cash', num: true, render: (s) => fmtMoney(s.cash) },
      { key: 'total_value', label: 'Total value', num: true, render: (s) => fmtMoney(s.total_value) },
      { key: 'deposits', label: 'Deposits', num: true, render: (s) => fmtMoney(s.deposits) },
      { key: 'withdrawals', label: 'Withdrawals', num: true, render: (s) => fmtMoney(s.withdrawals) },
      { key: 'fees', label: 'Fees', num: true, render: (s) => fmtMoney(s.fees) },
      { key: 'trades', label: 'Trades', num: true, render: (s) => String((s.trades || []).length) },
    ], list, 'No statements yet: the first is made at the close of your first day.'));
}

export async function notificationsPage() {
  const list = await api('GET', '/v1/me/notifications');
  page('Notifications', table('Notifications, newest first', [
    { key: 'at', label: 'When', render: (n) => fmtTime(n.at) },
    { key: 'kind', label: 'Kind' },
    { key: 'message', label: 'Message', render: (n) => h('span', { class: 'literal' }, n.message) },
  ], list, 'No notifications.'));
}
