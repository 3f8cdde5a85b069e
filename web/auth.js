// Sign in (with the authenticator step when two-factor is on) and registration.
import { api, login, Problem } from './api.js';
import { h, page, field, form, card, showProblem, fieldError, announce } from './ui.js';
import { navigate } from './app.js';

/** This browser's device id (not a secret, and not a token): lets the server tell a sign-in
 * from a new device. Kept in localStorage: it must outlive the page. */
function deviceId() {
  let id = null;
  try { id = localStorage.getItem('moneta.device'); } catch { /* storage blocked */ }
  if (!id || !/^web-[0-9a-f-]{36}$/.test(id)) {
    id = `web-${crypto.randomUUID()}`;
    try { localStorage.setItem('moneta.device', id); } catch { /* one id for this page */ }
  }
  return id;
}

export function loginPage(message) {
  const email = field({ name: 'email', label: 'Email', type: 'email', required: true, attrs: { autocomplete: 'username' } });
  const password = field({ name: 'password', label: 'Password', type: 'password', required: true, attrs: { autocomplete: 'current-password' } });
  const code = field({ name: 'totp_code', label: 'Authenticator code', type: 'text',
    hint: 'Two-factor authentication is on for this account: enter the 6-digit code your authenticator app shows now.',
    attrs: { inputmode: 'numeric', autocomplete: 'one-time-code', pattern: '[0-9]{6}', maxlength: 6 } });
  code.row.hidden = true;
  const f = form({
    fields: [email, password, code],
    submit: 'Sign in',
    onSubmit: async (v, ctx) => {
      try {
        await login(v.email, v.password, code.row.hidden ? undefined : v.totp_code, deviceId());
      } catch (e) {
        if (e instanceof Problem && e.code === 'mfa_required') {
          const first = code.row.hidden;
          code.row.hidden = false;
          if (first && !v.totp_code) {
            announce('Enter the code from your authenticator app.');
            code.input.focus();
            return;
          }
          fieldError(code, v.totp_code ? 'That code is not right, or was already used. Enter the code shown now.' : 'Enter the 6-digit code.');
          code.input.focus();
          return;
        }
        showProblem(ctx, e, { invalid_credentials: 'password' });
        return;
      }
      navigate('#/');
    },
  });
  f.el.id = 'login-form';
  page('Sign in',
    message ? h('p', { class: 'ok', role: 'status' }, message) : null,
    card(f.el),
    h('p', {}, 'New to Moneta? ', h('a', { href: '#/register' }, 'Create an account')));
}

export function registerPage() {
  const fields = [
    field({ name: 'full_name', label: 'Full name', required: true, attrs: { autocomplete: 'name', maxlength: 200 },
      hint: 'As it appears on your passport or identity card: we check it when we verify your identity.' }),
    field({ name: 'email', label: 'Email', type: 'email', required: true, attrs: { autocomplete: 'email' } }),
    field({ name: 'password', label: 'Password', type: 'password', required: true, attrs: { autocomplete: 'new-password', minlength: 12 },
      hint: 'At least 12 characters, and not a common password. A few unrelated words make a strong one.' }),
    field({ name: 'date_of_birth', label: 'Date of birth', type: 'date', required: true, attrs: { autocomplete: 'bday' },
      hint: 'You must be 18 or older to invest.' }),
    field({ name: 'country', label: 'Country of residence', type: 'select', required: true,
      options: [['GB', 'United Kingdom'], ['IE', 'Ireland'], ['FR', 'France'], ['DE', 'Germany'], ['NL', 'Netherlands'], ['ES', 'Spain'], ['IT', 'Italy'], ['US', 'United States']] }),
  ];
  const f = form({
    fields,
    submit: 'Create account',
    onSubmit: async (v, ctx) => {
      try {
        await api('POST', '/v1/auth/register', { body: v, auth: false });
      } catch (e) {
        showProblem(ctx, e, { email_taken: 'email', weak_password: 'password', invalid_email: 'email', underage: 'date_of_birth', invalid_date_of_birth: 'date_of_birth', invalid_name: 'full_name', invalid_country: 'country' });
        return;
      }
      await login(v.email, v.password, undefined, deviceId());
      navigate('#/onboarding');
    },
  });
  f.el.id = 'register-form';
  page('Create your account',
    h('p', {}, 'Your name, email and date of birth are stored encrypted. You can download everything we hold about you, or delete your account, at any time.'),
    card(f.el),
    h('p', {}, 'Already have an account? ', h('a', { href: '#/login' }, 'Sign in')));
}
