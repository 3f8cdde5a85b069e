// Onboarding: identity verification (with sanctions screening), the suitability
// questionnaire (every answer explained, the risk band it gives), and consents.
import { api } from './api.js';
import { h, page, field, form, card, facts, announce } from './ui.js';
import { QUESTIONS, BANDS, bandName, withCurrency } from './words.js';
import { refreshMe, session } from './app.js';

const KYC_WORDS = {
  pending: ['Not yet verified', 'warn'],
  verified: ['Verified', 'good'],
  rejected: ['Rejected: the document could not be verified', 'bad'],
  review: ['Being reviewed by our team', 'warn'],
};
const SCREENING_WORDS = {
  clear: 'Clear',
  potential_match: 'A possible match with a sanctions list: our compliance team is checking it',
  match: 'Matches a sanctions list: trading is blocked',
};

export async function onboardingPage() {
  const me = await refreshMe();
  const status = h('div', { id: 'onboarding-status' });
  const showStatus = (m) => {
    const [kycText, kycClass] = KYC_WORDS[m.kyc_status] || [m.kyc_status, 'warn'];
    status.replaceChildren(facts([
      ['Identity', h('span', { class: `badge ${kycClass}`, id: 'kyc-status' }, kycText)],
      ['Sanctions screening', m.screening ? (SCREENING_WORDS[m.screening] || m.screening) : 'Not yet screened'],
      ['Risk band', m.risk_profile ? h('span', { id: 'risk-band' }, `${bandName(m.risk_profile.risk_band)} (score ${m.risk_profile.risk_score} of 7)`) : 'Questionnaire not answered'],
      ['Complex products', m.risk_profile ? (m.risk_profile.complex_products_allowed ? 'Allowed' : 'Not allowed') : '—'],
    ]));
  };
  showStatus(me);
  page('Onboarding',
    h('p', {}, 'Three steps before you invest: verify who you are, tell us about your goals and experience, and choose what we may do with your data.'),
    card(h('h2', {}, 'Where you are'), status),
    kycStep(showStatus),
    suitabilityStep(showStatus),
    consentsStep(me.consents));
}

function kycStep(showStatus) {
  const fields = [
    field({ name: 'document_type', label: 'Document type', type: 'select', required: true,
      options: [['passport', 'Passport'], ['national_id', 'National identity card'], ['driving_licence', 'Driving licence']] }),
    field({ name: 'document_number', label: 'Document number', required: true, attrs: { autocomplete: 'off', maxlength: 64 },
      hint: 'As printed on the document. This is a sandbox: 000000000 is always rejected, a number starting REVIEW goes to manual review, and any other well-formed number is verified.' }),
    field({ name: 'address', label: 'Home address', type: 'textarea', required: true, attrs: { autocomplete: 'street-address', maxlength: 500 } }),
  ];
  const result = h('div', { id: 'kyc-result', role: 'status' });
  const f = form({
    fields,
    submit: 'Verify my identity',
    onSubmit: async (v) => {
      const r = await api('POST', '/v1/me/kyc', { body: v });
      const words = (KYC_WORDS[r.kyc_status] || [r.kyc_status])[0];
      result.replaceChildren(h('p', { class: r.kyc_status === 'verified' ? 'ok' : 'alert' },
        `Identity: ${words}. Sanctions screening: ${SCREENING_WORDS[r.screening] || r.screening}.`));
      showStatus(await refreshMe());
    },
  });
  f.el.id = 'kyc-form';
  return card(h('h2', {}, '1. Verify your identity'),
    h('p', {}, 'We are required to check who you are, and to screen your name and date of birth against sanctions lists, before you trade.'),
    f.el, result);
}

function suitabilityStep(showStatus) {
  const fields = QUESTIONS.map((q) => field({ ...q, label: withCurrency(q.label), required: q.type !== 'checkbox' }));
  const result = h('div', { id: 'suitability-result', role: 'status' });
  const f = form({
    fields,
    submit: 'Save my answers',
    onSubmit: async (v) => {
      const answers = {
        objective: v.objective,
        horizon_years: Number(v.horizon_years),
        loss_tolerance: v.loss_tolerance,
        investment_experience_years: Number(v.investment_experience_years),
        knows_complex_products: Boolean(v.knows_complex_products),
        annual_income: v.annual_income,
        liquid_net_worth: v.liquid_net_worth,
        emergency_fund_months: Number(v.emergency_fund_months),
      };
      const r = await api('POST', '/v1/me/suitability', { body: { answers } });
      result.replaceChildren(h('div', { class: 'ok' },
        h('p', {}, `Your risk band: ${bandName(r.risk_band)} (risk score ${r.risk_score} of 7).`),
        h('p', {}, BANDS[r.risk_band] || ''),
        h('p', {}, r.complex_products_allowed
          ? 'You may trade complex products (derivatives and leveraged ETFs).'
          : 'Complex products (derivatives and leveraged ETFs) are not available to you.')));
      announce(`Risk band: ${bandName(r.risk_band)}.`);
      showStatus(await refreshMe());
    },
  });
  f.el.id = 'suitability-form';
  return card(h('h2', {}, '2. Your goals and experience'),
    h('p', {}, 'We use your answers to keep you to investments that suit you. You can answer again whenever your situation changes; your advice follows your latest answers.'),
    f.el, result);
}

function consentsStep(consents = {}) {
  const fields = [
    field({ name: 'ai_profiling', label: 'AI profiling: let a model use my answers and portfolio to give me advice', type: 'checkbox', value: consents.ai_profiling,
      hint: 'Needed for advice. Advice is labelled as AI-generated, and unusual advice is checked by a person before you see it.' }),
    field({ name: 'marketing', label: 'Marketing: send me news about products', type: 'checkbox', value: consents.marketing }),
    field({ name: 'analytics', label: 'Analytics: use my data, without my name, to improve the service', type: 'checkbox', value: consents.analytics }),
  ];
  const result = h('div', { role: 'status', id: 'consents-result' });
  const f = form({
    fields,
    submit: 'Save my choices',
    onSubmit: async (v) => {
      await api('PUT', '/v1/me/consents', { body: { ai_profiling: v.ai_profiling, marketing: v.marketing, analytics: v.analytics } });
      result.replaceChildren(h('p', { class: 'ok' }, 'Your choices are saved. You can change them at any time.'));
      session.me = await refreshMe();
    },
  });
  f.el.id = 'consents-form';
  return card(h('h2', {}, '3. Your consents'),
    h('p', {}, 'Each is optional and can be withdrawn at any time. Withdrawing AI profiling deletes the advice we hold.'),
    f.el, result);
}
