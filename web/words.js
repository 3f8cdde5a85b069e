// What the app says: problem codes in plain words, the questionnaire's explanations, the risk
// bands, and how numbers and times are written.

const PROBLEMS = {
  network: 'The server could not be reached. Check your connection and try again.',
  unauthorized: 'Please sign in again.',
  forbidden: 'Your role may not do this.',
  invalid_credentials: 'That email and password do not match an account.',
  mfa_required: 'Enter the 6-digit code from your authenticator app.',
  too_many_attempts: 'Too many failed attempts. Wait a little, then try again.',
  rate_limited: 'Too many requests from this address. Wait a little, then try again.',
  refresh_token_reused: 'Your session was ended for your safety. Please sign in again.',
  underage: 'You must be 18 or older to open an account.',
  kyc_already_verified: 'Your identity is already verified.',
  mfa_already_enabled: 'Two-factor authentication is already on.',
  email_taken: 'An account with this email already exists. Sign in instead.',
  weak_password: 'Choose a longer password: at least 12 characters, and not a common one.',
  invalid_code: 'That code is not right. Enter the code your authenticator app shows now.',
  kyc_required: 'You need to verify your identity before you can trade.',
  sanctions_block: 'We cannot process this order: your account is restricted after sanctions screening. Please contact support.',
  suitability_required: 'Please answer the suitability questionnaire first, so we know which investments suit you.',
  not_appropriate: 'This is a complex product and your answers show you do not yet have the knowledge or experience it needs, so we cannot place the order.',
  unsuitable: 'This investment is riskier than your risk profile allows, so we cannot place the order.',
  insufficient_funds: 'You do not have enough cash for this, fees included.',
  insufficient_holdings: 'You do not hold that many units to sell.',
  advice_outdated: 'Your holdings have changed since this advice was made, so it no longer fits. Show the current advice to see what it proposes now.',
  corrupt_record: 'Part of your account could not be read. Our operators have been alerted; please contact support.',
  unknown_instrument: 'We do not list that instrument.',
  consent_required: 'Advice uses your answers and portfolio to profile you. Turn on the "AI profiling" consent to receive it.',
  advice_pending_review: 'This advice is being reviewed by our compliance team before you can act on it.',
  advice_already_accepted: 'You have already accepted this advice.',
  advice_rejected: 'Our compliance team rejected this advice, so it cannot be accepted.',
  idempotency_key_reused: 'This request was already sent with different details. Please start again.',
  idempotency_key_required: 'This request needs a fresh attempt. Please try again.',
  unavailable: 'The service is busy for a moment. Try again: it is safe, nothing is done twice.',
  unsupported_media_type: 'The app sent a request the server does not accept.',
  cluster_too_small: 'The cluster would be too small without this node.',
};

/** Codes whose server detail names the limit that was broken (say it as the server does). */
const LIMITS = {
  invalid_quantity: 'Enter a quantity above zero, with at most the allowed decimal places.',
  invalid_amount: 'Enter an amount above zero, with at most two decimal places.',
};

/** A problem in plain words: ours for known codes, else the server's detail. */
export function describe(p) {
  if (LIMITS[p.code]) {
    const d = (p.detail || '').trim();
    return d ? `${d.charAt(0).toUpperCase()}${d.slice(1)}.`.replace(/\.\.$/, '.') : LIMITS[p.code];
  }
  if (p.code === 'too_many_attempts' && p.retryAfter) {
    return `Too many failed attempts. Try again in ${Math.ceil(p.retryAfter / 60)} minute(s).`;
  }
  return PROBLEMS[p.code] || p.detail || p.title || `The request failed (${p.status}).`;
}

export const BANDS = {
  conservative: 'Conservative: keeping your money safe matters most; expect small ups and downs and modest growth.',
  moderately_conservative: 'Moderately conservative: mostly lower-risk investments with some growth.',
  balanced: 'Balanced: a mix of growth and stability; the value can fall noticeably in a bad year.',
  growth: 'Growth: mostly shares for long-term growth; the value can fall a lot in a bad year.',
  aggressive: 'Aggressive: the highest growth potential and the largest falls; only money you can leave invested for many years.',
};

export function bandName(b) { return (b || '').replaceAll('_', ' '); }

/** The questionnaire, each answer explained. */
export const QUESTIONS = [
  { name: 'objective', label: 'What is your main goal?', type: 'select',
    options: [['preservation', 'Keep my money safe (preservation)'], ['income', 'A regular income'], ['growth', 'Grow my money over time'], ['speculation', 'High returns, accepting large losses (speculation)']],
    hint: 'Your goal sets how much risk the portfolio takes: preservation takes the least, speculation the most.' },
  { name: 'horizon_years', label: 'For how many years can you leave this money invested?', type: 'number', attrs: { min: 0, max: 50, step: 1, inputmode: 'numeric' },
    hint: 'A whole number from 0 to 50. Money needed soon should not be in investments that can fall.' },
  { name: 'loss_tolerance', label: 'How large a fall in value could you accept in a bad year?', type: 'select',
    options: [['none', 'None'], ['small', 'Small (up to about 10%)'], ['medium', 'Medium (up to about 25%)'], ['large', 'Large (more than 25%)']],
    hint: 'Higher risk can mean higher returns, and larger falls along the way.' },
  { name: 'investment_experience_years', label: 'How many years have you been investing?', type: 'number', attrs: { min: 0, max: 80, step: 1, inputmode: 'numeric' },
    hint: 'A whole number from 0 to 80; 0 if you are new to investing.' },
  { name: 'knows_complex_products', label: 'I have traded derivatives or leveraged products and understand how they work', type: 'checkbox',
    hint: 'Complex products (derivatives, leveraged ETFs) can lose much more than ordinary shares. We offer them only to people who know them.' },
  { name: 'annual_income', label: 'Annual income ({cur})', type: 'text', attrs: { inputmode: 'decimal', autocomplete: 'off' },
    hint: 'Before tax, for example 45000.00. It tells us how much you could afford to lose.' },
  { name: 'liquid_net_worth', label: 'Savings and investments you could sell quickly ({cur})', type: 'text', attrs: { inputmode: 'decimal', autocomplete: 'off' },
    hint: 'Cash, shares and funds, not your home or pension; for example 20000.00.' },
  { name: 'emergency_fund_months', label: 'How many months of spending could you cover from savings?', type: 'number', attrs: { min: 0, max: 120, step: 1, inputmode: 'numeric' },
    hint: 'A whole number from 0 to 120. With less than 3 months put aside, investing carries more risk for you.' },
];

const money = new Intl.NumberFormat('en-GB', { minimumFractionDigits: 2, maximumFractionDigits: 4 });
let platformCurrency = 'GBP';
/** The platform's currency (GET /v1/fees), set once when the app starts. */
export function setCurrency(c) { if (/^[A-Z]{3}$/.test(c || '')) platformCurrency = c; }
/** The currency's symbol as written here ("£", "US$", "€"). */
export function currencySymbol(currency = platformCurrency) {
  try {
    return new Intl.NumberFormat('en-GB', { style: 'currency', currency }).formatToParts(0).find((p) => p.type === 'currency').value;
  } catch {
    return `${currency} `;
  }
}
/** Puts the currency's symbol where a text says {cur}. */
export function withCurrency(text) { return text.replaceAll('{cur}', currencySymbol()); }
/** A decimal string as money: "1250.5" → "£1,250.50" (the string is parsed only for display). */
export function fmtMoney(s, currency = platformCurrency) {
  if (s === null || s === undefined) return '—';
  const n = Number(s);
  if (!Number.isFinite(n)) return String(s);
  return `${n < 0 ? '−' : ''}${currencySymbol(currency)}${money.format(Math.abs(n))}`;
}

export function fmtQty(s) { return s === null || s === undefined ? '—' : String(s); }

export function fmtPct(s) {
  if (s === null || s === undefined) return '—';
  const n = Number(s) * 100;
  return `${n >= 0 ? '+' : '−'}${Math.abs(n).toFixed(2)}%`;
}

const when = new Intl.DateTimeFormat('en-GB', { dateStyle: 'medium', timeStyle: 'short', timeZone: 'UTC' });
export function fmtTime(s) {
  if (!s) return '—';
  const d = new Date(s);
  return Number.isNaN(d.getTime()) ? String(s) : `${when.format(d)} UTC`;
}
