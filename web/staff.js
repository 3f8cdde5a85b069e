// Staff pages, by role. Compliance: the review queue (approve or reject with a note),
// screening hits, the daily report. Support: the limited view of a user, asking for the
// reason first (every read is audited). Admin: security events, audit verification, and the
// cluster (nodes, groups, leaders, replicas, moves), refreshed live.
import { api, Problem } from './api.js';
import { h, page, field, form, card, table, autoTable, facts, plain, announce, busy, showProblem, fieldError } from './ui.js';
import { fmtTime, describe, bandName } from './words.js';
import { onLeave } from './app.js';

export async function compliancePage() {
  const queueBox = h('div', { id: 'review-queue' });
  const loadQueue = async () => {
    const queue = await api('GET', '/v1/compliance/review-queue');
    queueBox.replaceChildren(queue.length === 0
      ? h('p', { id: 'queue-empty' }, 'No advice is waiting for review.')
      : h('div', {}, queue.map((a) => reviewItem(a, loadQueue))));
  };
  await loadQueue();
  const hits = await api('GET', '/v1/compliance/screening-hits?limit=100');
  const today = new Date().toISOString().slice(0, 10);
  const dateField = field({ name: 'date', label: 'Day (UTC)', type: 'date', value: today, required: true });
  const reportBox = h('div', { id: 'daily-report' });
  const reportForm = form({
    fields: [dateField],
    submit: 'Show the report',
    onSubmit: async (v) => { reportBox.replaceChildren(...report(await api('GET', `/v1/compliance/reports/daily?date=${encodeURIComponent(v.date)}`))); },
  });
  reportBox.replaceChildren(...report(await api('GET', `/v1/compliance/reports/daily?date=${today}`)));
  page('Compliance',
    card(h('h2', {}, 'Advice held for review'), queueBox),
    card(h('h2', {}, 'Screening hits'), screeningHits(hits)),
    card(h('h2', {}, 'Daily report'), reportForm.el, reportBox));
}

function reviewItem(a, reload) {
  const note = field({ name: 'note', label: 'Note for the record (shown to the investor)', type: 'textarea', required: true, attrs: { maxlength: 1000 } });
  const outcome = h('div', { role: 'status' });
  const decide = (decision) => async () => {
    note.error.textContent = '';
    note.input.removeAttribute('aria-invalid');
    if (!note.input.value.trim()) {
      note.error.textContent = 'Write why, for the record.';
      note.input.setAttribute('aria-invalid', 'true');
      note.input.focus();
      return;
    }
    try {
      await api('POST', `/v1/compliance/review-queue/${encodeURIComponent(a.advice_id)}`, { body: { decision, note: note.input.value.trim() } });
      announce(`Advice ${decision === 'approve' ? 'approved' : 'rejected'}.`);
      await reload();
    } catch (e) {
      outcome.replaceChildren(h('p', { class: 'alert' }, e instanceof Problem ? describe(e) : String(e)));
    }
  };
  const heading = `review-${a.advice_id}`;
  const approve = h('button', { type: 'button', class: 'approve', 'aria-describedby': heading }, 'Approve');
  const reject = h('button', { type: 'button', class: 'danger reject', 'aria-describedby': heading }, 'Reject');
  approve.addEventListener('click', () => busy(approve, decide('approve')));
  reject.addEventListener('click', () => busy(reject, decide('reject')));
  return h('article', { class: 'card review-item', 'data-advice-id': a.advice_id },
    h('h3', { id: heading }, `Advice ${a.advice_id}`),
    facts([
      ['Investor', a.user_id],
      ['Generated', `${fmtTime(a.generated_at)} (model ${a.model_version})`],
      ['Risk band', bandName(a.risk_band)],
      ['Why it is held', a.review_reason || 'Unusual advice'],
    ]),
    h('p', { class: 'literal' }, a.rationale),
    table('Proposed orders', [
      { key: 'side', label: 'Side' }, { key: 'symbol', label: 'Instrument' }, { key: 'quantity', label: 'Units', num: true },
    ], a.proposed_orders || []),
    note.row, h('div', { class: 'actions' }, approve, reject), outcome);
}

/** Screening results that were not clear; a potential match is resolved here (clear or match). */
function screeningHits(hits) {
  // The subject is the entity ("account/usr_…"); the user id is its last part.
  const rows = hits.map((x) => ({ ...x, status: x.details?.status, user: String(x.subject || '').replace(/^account\//, '') }));
  return table('Screening results that were not clear, newest first', [
    { key: 'at', label: 'When', render: (x) => fmtTime(x.at) },
    { key: 'user', label: 'User' },
    { key: 'status', label: 'Result', render: (x) => (x.status || '').replaceAll('_', ' ') },
    { key: 'details', label: 'Details', render: (x) => plain(x.details) },
    {
      key: 'resolve',
      label: 'Resolve',
      render: (x) => (x.resolution
        ? `Resolved: ${x.resolution.decision} (${fmtTime(x.resolution.at)})`
        : (x.status === 'potential_match' ? resolveForm(x.user) : '—')),
    },
  ], rows, 'No screening hits.');
}

function resolveForm(userId) {
  const decision = field({ name: 'decision', label: 'Decision', type: 'select', options: [['clear', 'Not the listed person: clear'], ['match', 'The listed person: block']] });
  const note = field({ name: 'note', label: 'Note for the record', type: 'textarea', required: true, attrs: { maxlength: 1000 } });
  const done = h('div', { role: 'status' });
  const f = form({
    fields: [decision, note],
    submit: 'Resolve',
    onSubmit: async (v) => {
      await api('POST', `/v1/compliance/screening/${encodeURIComponent(userId)}`, { body: { decision: v.decision, note: v.note } });
      f.el.replaceWith(h('p', { class: 'ok' }, `Resolved: ${v.decision}.`));
      announce(`Screening resolved: ${v.decision}.`);
    },
  });
  return h('div', {}, f.el, done);
}

/** The daily report as nodes: its scalar facts first, then one table per list. */
function report(r) {
  const parts = [h('p', {}, `Report for ${r.date || ''}`)];
  // Counts (and counts of counts) as facts, nested ones as facts within.
  const asFacts = (entries) => facts(entries.map(([k, v]) => [k.replaceAll('_', ' '),
    v !== null && typeof v === 'object' && !Array.isArray(v) ? asFacts(Object.entries(v)) : plain(v)]));
  const scalars = Object.entries(r).filter(([k, v]) => k !== 'date' && !Array.isArray(v));
  if (scalars.length > 0) parts.push(asFacts(scalars));
  for (const [k, v] of Object.entries(r)) {
    if (Array.isArray(v)) parts.push(h('h3', {}, k.replaceAll('_', ' ')), autoTable(k.replaceAll('_', ' '), v, 'None.'));
  }
  return parts;
}

export async function supportPage() {
  const user = field({ name: 'user_id', label: 'User id', required: true, attrs: { autocomplete: 'off' }, hint: 'For example usr_… from the ticket.' });
  const reason = field({ name: 'reason', label: 'Why you need to see this account', required: true, attrs: { maxlength: 200, autocomplete: 'off' },
    hint: 'Required, one line of plain characters (it travels in a header), and recorded in the audit trail with your name, for example "ticket 1234: cannot log in".' });
  const out = h('div', { id: 'support-view' });
  const f = form({
    fields: [user, reason],
    submit: 'Show the account',
    onSubmit: async (v, ctx) => {
      out.replaceChildren();
      if (!/^[\x20-\x7E]{1,200}$/.test(v.reason)) {
        fieldError(reason, 'Use plain letters, digits and punctuation (no accents or line breaks), up to 200 characters.');
        reason.input.focus();
        return;
      }
      try {
        const r = await api('GET', `/v1/support/users/${encodeURIComponent(v.user_id)}`, { headers: { 'X-Access-Reason': v.reason } });
        out.replaceChildren(card(h('h2', {}, 'Limited view'), facts(Object.entries(r).map(([k, val]) => [k.replaceAll('_', ' '), plain(val)]))));
        announce('The limited view is shown below; this read is audited.');
      } catch (e) {
        showProblem(ctx, e, { not_found: 'user_id', access_reason_required: 'reason' });
      }
    },
  });
  f.el.id = 'support-form';
  page('Support', h('p', {}, 'You see a limited view: a masked email, no date of birth and no document numbers. Every view is audited.'), card(f.el), out);
}

export async function securityPage() {
  const events = await api('GET', '/v1/admin/security-events?limit=200');
  page('Security events', autoTable('Failed logins, lockouts, refresh-token reuse and denied access, newest first', events, 'No security events.'));
}

export async function auditPage() {
  const out = h('div', { id: 'audit-result', role: 'status' });
  const run = h('button', { type: 'button', id: 'audit-verify' }, 'Verify the audit trail');
  const verify = async () => {
    const r = await api('GET', '/v1/admin/audit/verify');
    out.replaceChildren(h('p', { class: r.ok ? 'ok' : 'alert', id: 'audit-ok' }, r.ok
      ? `The hash chain is intact: ${r.entries} entries verified.`
      : 'The hash chain is broken: an audit record was changed or removed.'),
    facts([['Entries', String(r.entries)], ['Head hash', r.head_hash || '—']]),
    r.groups ? table('Per shard group on this node', [
      { key: 'group', label: 'Group', num: true }, { key: 'entries', label: 'Entries', num: true }, { key: 'head_hash', label: 'Head hash' },
    ], r.groups) : null);
  };
  run.addEventListener('click', () => busy(run, verify));
  page('Audit trail', h('p', {}, 'Every decision is a record in a hash chain; verifying recomputes the chain.'), h('div', { class: 'actions' }, run), out);
  await verify();
}

export async function clusterPage() {
  const box = h('div', { id: 'cluster-view' });
  const stamp = h('p', { class: 'hint', id: 'cluster-updated', role: 'status', 'aria-live': 'off' });
  let timer = null;
  let stopped = false;
  const load = async () => {
    try {
      const c = await api('GET', '/v1/cluster');
      box.replaceChildren(
        facts([['Cluster', c.cluster_id], ['Nodes', String(c.nodes.filter((n) => n.state !== 'removed').length)], ['Groups', String(c.groups.length)]]),
        h('h2', {}, 'Nodes'),
        table('Nodes', [
          { key: 'node_id', label: 'Node' }, { key: 'address', label: 'Address' }, { key: 'state', label: 'State' },
          { key: 'reachable', label: 'Reachable', render: (n) => (n.reachable ? 'yes' : 'no') },
          { key: 'groups_led', label: 'Groups led', num: true, render: (n) => plain(n.groups_led) },
          { key: 'replicas', label: 'Replicas', num: true, render: (n) => plain(n.replicas) },
        ], c.nodes),
        h('h2', {}, 'Shard groups'),
        table('Shard groups', [
          { key: 'group', label: 'Group', num: true }, { key: 'leader', label: 'Leader', render: (g) => g.leader || 'none (electing)' },
          { key: 'replicas', label: 'Replicas', render: (g) => (g.replicas || []).join(', ') },
          { key: 'term', label: 'Term', num: true }, { key: 'commit_index', label: 'Committed', num: true }, { key: 'applied_index', label: 'Applied', num: true },
        ], c.groups),
        h('h2', {}, 'Moves'),
        autoTable('Replica and leadership moves in progress', c.moves || [], 'No moves in progress.'));
      stamp.textContent = `Updated ${new Date().toLocaleTimeString('en-GB')}; refreshes every 2 seconds.`;
    } catch (e) {
      stamp.textContent = `Could not refresh: ${e instanceof Problem ? describe(e) : e}`;
    }
    if (!stopped) timer = setTimeout(load, 2000);
  };
  onLeave(() => { stopped = true; clearTimeout(timer); });
  page('Cluster', stamp, box);
  await load();
}
