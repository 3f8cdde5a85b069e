//! The investors' lives in the cluster: each registers (the registration workflow, from a
//! random node; a client that hears nothing back tries again as a new request, as a browser
//! would), and every third one later asks to be erased (the erasure request); the erasure job,
//! run at each group's leader over the schedules its replica holds, then erases them after the
//! grace period. Their entries are applied by every replica like the clients' (`apply_*`).
//!
//! Checked as they happen: the email index gives an email to one account only; a destroyed
//! data key never comes back. Checked at the end, on every replica: each investor's account
//! exists and its profile opens under the data key its group holds, as the email registered
//! (a key replaced by a second creation would fail here) — and of an erased person nothing is
//! readable: no data key on any replica, no sealed profile in the account, the email free.

use super::flows::{answer_key, Ended, Machine};
use super::market::Purpose;
use super::{user_id, ClusterSim, Failure};
use moneta::cluster::raft::{GroupId, RaftId};
use moneta::domain::account::{AccountRejection, Profile, Role};
use moneta::domain::email_index::EmailIndex;
use moneta::domain::envelope::{Answer, Envelope, RequestMeta};
use moneta::domain::time::{Date, Timestamp};
use moneta::storage::codec;
use moneta::storage::keys::{self, ShardRecord};
use moneta::storage::store::{PendingErasure, WriteSet};
use moneta::storage::vault::Vault;
use moneta::workflows::erasure::{Erase, Erased};
use moneta::workflows::erasure_request::{ErasureRequest, RequestErasure};
use moneta::workflows::onboarding::{Onboarded, SetSuitability, SubmitKyc};
use moneta::workflows::registration::{Register, RegistrationError};
use rand::Rng;
use sha2::{Digest, Sha256};

/// The grace period between asking to be erased and the erasure (simulated).
const ERASURE_GRACE_MS: i64 = 3_000;
/// The erasure job looks at its groups' schedules this often (ticks: 5 simulated seconds;
/// production's default is a minute).
const ERASURE_EVERY: u64 = 500;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Stage {
    /// Registers at this tick (again after a lost attempt).
    Unregistered {
        at: u64,
    },
    Registering,
    /// Registered; this onboarding step goes at this tick (again after a lost attempt).
    Onboarding {
        step: Step,
        at: u64,
    },
    OnboardingRunning,
    /// Registered and onboarded (KYC verified, suitability assessed).
    Registered,
    Requesting,
    /// Asked; the job erases the person once due.
    Requested,
    Erased,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Step {
    Kyc,
    Suitability,
    /// An advised investor's steps (`advised.rs`).
    Consent,
    Deposit,
    Advise,
    Accept,
}

impl Step {
    fn label(self) -> &'static str {
        match self {
            Step::Kyc => "kyc",
            Step::Suitability => "suitability",
            Step::Consent => "adv-consent",
            Step::Deposit => "adv-deposit",
            Step::Advise => "adv-advise",
            Step::Accept => "adv-accept",
        }
    }
}

pub(super) struct Life {
    pub(super) email: String,
    pub(super) email_hash: String,
    pub(super) attempt: u32,
    /// The attempt that registered (later attempts are erasure requests).
    registered_at_attempt: u32,
    /// The account the email index gave the email to (learnt from a claim's answer).
    pub(super) owner: Option<String>,
    pub(super) stage: Stage,
    /// When it asks to be erased (a tick), if it does.
    erase_at: Option<u64>,
    /// An advised investor's advice (none for the others).
    pub(super) advised: Option<super::advised::Advised>,
}

impl Life {
    pub(super) fn new(u: usize, erase_at: Option<u64>, register_at: u64) -> Life {
        let email = format!("investor{u}@sim.example");
        let email_hash = hex::encode(Sha256::digest(email.as_bytes()));
        Life {
            email,
            email_hash,
            attempt: 0,
            registered_at_attempt: 0,
            owner: None,
            stage: Stage::Unregistered { at: register_at },
            erase_at,
            advised: None,
        }
    }

    /// Nothing more to do: registered (and erased, if it asked).
    pub(super) fn settled(&self) -> bool {
        match self.stage {
            Stage::Registered => self.erase_at.is_none(),
            Stage::Erased => true,
            _ => false,
        }
    }
}

/// Investor `u`'s identity document (the sandbox verifies it).
fn kyc_document(u: usize) -> moneta::domain::kyc::KycDocument {
    moneta::domain::kyc::validate_document("passport", &format!("P{u:08}"), "1 High Street, London").expect("a well-formed document")
}

/// The suitability answers every simulated investor gives.
fn answers() -> moneta::domain::suitability::Answers {
    moneta::domain::suitability::parse_answers(&serde_json::json!({
        "objective": "growth", "horizon_years": 15, "loss_tolerance": "medium", "investment_experience_years": 5,
        "knows_complex_products": false, "annual_income": "60000.00", "liquid_net_worth": "80000.00", "emergency_fund_months": 6
    }))
    .expect("well-formed answers")
}

/// The erasure schedules among a replica's records of group `g` (a range of each of its shards).
fn erasure_schedules(records: &std::collections::BTreeMap<Vec<u8>, Vec<u8>>, g: GroupId, groups: u32) -> Vec<(String, PendingErasure)> {
    let mut found = Vec::new();
    for shard in (0..moneta::domain::ids::SHARD_COUNT).filter(|&sh| moneta::domain::ids::group_of(sh, groups) == g) {
        let prefix = keys::shard_record_prefix(shard, ShardRecord::Erasure);
        for (k, v) in records.range(prefix.clone()..).take_while(|(k, _)| k.starts_with(&prefix)) {
            if let (Ok(id), Ok(p)) = (String::from_utf8(k[prefix.len()..].to_vec()), codec::decode::<PendingErasure>(v)) {
                found.push((id, p));
            }
        }
    }
    found
}

/// Draws each investor's life: when it registers, whether (and when) it asks to be erased.
/// The `advised` after the `users` with clients take advice instead (and stay).
pub(super) fn draw_lives(users: usize, advised: usize, ticks: u64, rng: &mut impl Rng) -> Vec<Life> {
    (0..users + advised)
        .map(|u| {
            let register_at = rng.random_range(1..(ticks / 10).max(2));
            if u >= users {
                let mut life = Life::new(u, None, register_at);
                life.advised = Some(Default::default());
                return life;
            }
            let erase_at = (u % 3 == 2).then(|| rng.random_range(ticks / 4..(ticks / 2).max(ticks / 4 + 1)));
            Life::new(u, erase_at, register_at)
        })
        .collect()
}

impl ClusterSim {
    fn random_node(&mut self) -> RaftId {
        let nodes: Vec<RaftId> = self.raft.nodes.keys().copied().collect();
        nodes[self.rng.random_range(0..nodes.len())]
    }

    /// Starts what is due: registrations, erasure requests, and (every `ERASURE_EVERY` ticks)
    /// the erasure job at each group's leader.
    pub(super) fn lives(&mut self) -> Result<(), Failure> {
        while let Some(entry) = self.life_wake.first_entry() {
            if *entry.key() > self.tick {
                break;
            }
            for u in entry.remove() {
                self.life_due(u);
            }
        }
        if self.tick.is_multiple_of(ERASURE_EVERY) {
            self.erasure_job()?;
        }
        self.end_of_day();
        self.drive_flows()
    }

    pub(super) fn wake_life(&mut self, u: usize, at: u64) {
        self.life_wake.entry(at.max(self.tick + 1)).or_default().push(u);
    }

    fn life_due(&mut self, u: usize) {
        let node = self.random_node();
        let life = &mut self.lives[u];
        match life.stage {
            Stage::Unregistered { at } if at <= self.tick => {
                let candidate = match life.attempt {
                    0 => user_id(u),
                    a => format!("{}r{a}", user_id(u)),
                };
                let profile = Profile {
                    email: life.email.clone(),
                    full_name: format!("Investor {u}"),
                    date_of_birth: Some(Date {
                        year: 1980,
                        month: 1 + (u % 12) as u8,
                        day: 1 + (u % 28) as u8,
                    }),
                    country: Some("GB".into()),
                };
                let request_id = format!("reg-{u}-{}", life.attempt);
                let flow = Register::new(
                    life.email_hash.clone(),
                    candidate,
                    profile,
                    "sim-password-hash".into(),
                    vec![Role::User],
                    request_id,
                );
                life.stage = Stage::Registering;
                self.start_flow(u, node, Machine::Register(Box::new(flow)));
            }
            Stage::Onboarding { step, at } if at <= self.tick => {
                let owner = life.owner.clone().expect("a registered life knows its account");
                let meta = RequestMeta {
                    request_id: format!("{}-{u}-{}", step.label(), life.attempt),
                    actor: owner.clone(),
                };
                life.stage = Stage::OnboardingRunning;
                let machine = match step {
                    Step::Consent | Step::Deposit | Step::Advise | Step::Accept => match self.advised_machine(u, step, owner, meta) {
                        Some(m) => m,
                        None => {
                            self.onboard(u, step, self.tick + 100);
                            return;
                        }
                    },
                    Step::Kyc => {
                        let document = kyc_document(u);
                        Machine::Kyc(Box::new(SubmitKyc::new(owner, document, "sandbox".into(), meta)))
                    }
                    Step::Suitability => {
                        let answers = answers();
                        let profile = moneta::domain::suitability::assess(&answers);
                        Machine::Suitability(Box::new(SetSuitability::new(owner, answers, profile, meta)))
                    }
                };
                self.start_flow(u, node, machine);
            }
            Stage::Registered if life.erase_at.is_some_and(|t| t <= self.tick) => {
                let owner = life.owner.clone().expect("a registered life knows its account");
                let pending = PendingErasure {
                    due_at: Timestamp(super::EPOCH_MS + (self.tick * moneta::cluster::raft::sim::TICK_MS) as i64 + ERASURE_GRACE_MS),
                    email_hash: life.email_hash.clone(),
                    replay: false,
                };
                let meta = RequestMeta {
                    request_id: format!("erase-request-{u}-{}", life.attempt),
                    actor: owner.clone(),
                };
                life.stage = Stage::Requesting;
                self.start_flow(u, node, Machine::RequestErasure(Box::new(RequestErasure::new(owner, pending, meta))));
            }
            _ => {}
        }
    }

    /// The erasure job at each group's leader: the schedules its replica holds that are due.
    fn erasure_job(&mut self) -> Result<(), Failure> {
        let now = Timestamp(super::EPOCH_MS + (self.tick * moneta::cluster::raft::sim::TICK_MS) as i64);
        for g in 0..self.s.groups {
            let Some(l) = self.raft.leader(g) else { continue };
            let Some(r) = self.replicas.get(&(l, g)) else { continue };
            let schedules = erasure_schedules(&r.host.records, g, self.s.groups);
            let due: Vec<(String, PendingErasure)> = schedules
                .iter()
                .filter(|(id, p)| p.due_at <= now && !self.erasing.contains(id))
                .cloned()
                .collect();
            // Asked, and no schedule left: an earlier run finished (its answer lost with its
            // node) — then the account is erased — or the request was lost. Judged only once
            // the replicas converged (a job at a leader that has not heard of its successor yet
            // reads an old state: harmless for the job, whose commands would not commit).
            let judge = self.live && self.converged();
            let scheduled: std::collections::BTreeSet<&String> = schedules.iter().map(|(id, _)| id).collect();
            let finished: Vec<(usize, bool)> = self
                .lives
                .iter()
                .enumerate()
                .filter(|_| judge)
                .filter(|(_, life)| life.stage == Stage::Requested)
                .filter_map(|(u, life)| Some((u, life.owner.clone()?)))
                .filter(|(_, owner)| self.group_of_id(owner) == g && !scheduled.contains(owner) && !self.erasing.contains(owner))
                .map(|(u, owner)| (u, r.host.accounts.get(&owner).is_some_and(|h| h.state.is_erased())))
                .collect();
            let seen = format!(
                "the job at node {l} (replica at index {}, term {:?})",
                r.last_index,
                self.raft.nodes[&l].raft.as_ref().and_then(|x| x.status(g)).map(|s| (s.term, s.applied_index))
            );
            for (u, erased) in finished {
                if !erased {
                    let owner = self.lives[u].owner.clone().unwrap_or_default();
                    return self.fail(format!(
                        "{owner}: its erasure was asked for and recorded, but its schedule is gone and the account is not erased (an erasure lost); seen by {seen}"
                    ));
                }
                self.lives[u].stage = Stage::Erased;
                self.report.erasures += 1;
                self.note(
                    "erasure_job",
                    Some(l),
                    Some(g),
                    Some(user_id(u)),
                    "finished by an earlier run (its answer lost)".into(),
                );
            }
            for (id, pending) in due {
                let Some(&u) = self.owners.get(&id) else { continue };
                self.job_runs += 1;
                let meta = RequestMeta {
                    request_id: format!("gdpr-erasure-job/{}", self.job_runs),
                    actor: "system".into(),
                };
                self.erasing.insert(id.clone());
                self.note("erasure_job", Some(l), Some(g), Some(id.clone()), "due: erasing".into());
                self.start_flow(u, l, Machine::Erase(Box::new(Erase::new(id, pending, now, meta))));
            }
        }
        Ok(())
    }

    /// What a workflow's command answered: a claim tells whose the email is (first claim wins).
    pub(super) fn learn(&mut self, u: usize, envelope: &Envelope, answer: &Answer) -> Result<(), Failure> {
        if !matches!(envelope, Envelope::EmailIndex { .. }) {
            return Ok(());
        }
        if let Some(Ok(owner)) = answer.clone().executed::<EmailIndex>() {
            match &self.lives[u].owner {
                Some(o) if *o != owner && self.lives[u].stage != Stage::Erased => {
                    return self.fail(format!("{}: the email index gave the email to {owner} after {o}", user_id(u)));
                }
                Some(_) => {}
                None => {
                    self.owners.insert(owner.clone(), u);
                    self.lives[u].owner = Some(owner);
                }
            }
        }
        Ok(())
    }

    pub(super) fn flow_ended(&mut self, flow: super::flows::Flow, ended: Ended) -> Result<(), Failure> {
        let u = flow.user;
        self.note("flow_done", Some(flow.node), None, Some(flow.subject()), format!("{ended:?}"));
        match ended {
            Ended::Single(p @ (Purpose::List(_) | Purpose::Price(_)), a) => return self.fed(p, Some(a)),
            Ended::Suitability(Onboarded::Recorded) if self.lives[u].advised.is_some() => {
                self.report.onboarded += 1;
                self.onboard(u, Step::Consent, self.tick + 1);
            }
            e @ (Ended::Single(..) | Ended::Advised(_) | Ended::Accepted(_)) => return self.advised_ended(u, e),
            Ended::Registered(Ok(_) | Err(RegistrationError::EmailTaken)) => {
                if self.lives[u].owner.is_none() {
                    return self.fail(format!("{}: registered without a claim of its email", user_id(u)));
                }
                self.lives[u].registered_at_attempt = self.lives[u].attempt;
                self.report.registered += 1;
                self.onboard(u, Step::Kyc, self.tick + 1);
            }
            // Recorded now, or by an earlier attempt whose answer was lost.
            Ended::Kyc(Onboarded::Recorded | Onboarded::Refused(AccountRejection::KycAlreadyVerified)) => self.onboard(u, Step::Suitability, self.tick + 1),
            Ended::Suitability(Onboarded::Recorded) => {
                self.lives[u].stage = Stage::Registered;
                self.lives[u].registered_at_attempt = self.lives[u].attempt;
                self.report.onboarded += 1;
                if let Some(at) = self.lives[u].erase_at {
                    self.wake_life(u, at);
                }
            }
            Ended::Kyc(Onboarded::Unavailable(_)) => self.onboard_again(u, Step::Kyc),
            Ended::Suitability(Onboarded::Unavailable(_)) => self.onboard_again(u, Step::Suitability),
            Ended::Kyc(o) | Ended::Suitability(o) => return self.fail(format!("{}: onboarding refused: {o:?}", user_id(u))),
            Ended::Registered(Err(RegistrationError::Unavailable(_))) => self.try_again(u, Stage::Unregistered { at: 0 }),
            Ended::Registered(Err(e)) => return self.fail(format!("{}: registration refused: {e:?}", user_id(u))),
            // The job may have erased the person already (an earlier attempt, whose answer was
            // lost, recorded the request): that stands.
            Ended::ErasureRequested(_) if self.lives[u].stage == Stage::Erased => {}
            Ended::ErasureRequested(ErasureRequest::Due(_)) => {
                self.lives[u].stage = Stage::Requested;
                self.report.erasures_requested += 1;
            }
            // Refused as erased: an earlier attempt recorded the request and the job is at it.
            Ended::ErasureRequested(ErasureRequest::Refused(AccountRejection::NotRegistered))
                if self.lives[u].attempt > self.lives[u].registered_at_attempt =>
            {
                self.lives[u].stage = Stage::Requested;
            }
            Ended::ErasureRequested(ErasureRequest::Unavailable(_)) => self.try_again(u, Stage::Registered),
            Ended::ErasureRequested(ErasureRequest::Refused(r)) => return self.fail(format!("{}: the erasure request was refused: {r:?}", user_id(u))),
            Ended::Closed(result) => {
                if let Machine::Close(m) = &flow.machine {
                    self.close_ended(m.user_id(), Some(result));
                }
            }
            Ended::Erased(result) => {
                let owner = self.lives[u].owner.clone().unwrap_or_default();
                self.erasing.remove(&owner);
                if result == Ok(Erased::Erased) && self.lives[u].stage != Stage::Erased {
                    self.lives[u].stage = Stage::Erased;
                    self.report.erasures += 1;
                }
            }
        }
        Ok(())
    }

    /// A flow's node went down under it: its client tries again (a new request); the job looks
    /// again at its next run.
    pub(super) fn flow_died(&mut self, flow: super::flows::Flow) -> Result<(), Failure> {
        let u = flow.user;
        match flow.machine {
            Machine::Single(m) => match m.purpose {
                p @ (Purpose::List(_) | Purpose::Price(_)) => return self.fed(p, None),
                Purpose::Consent => self.onboard_again(u, Step::Consent),
                Purpose::Deposit => self.onboard_again(u, Step::Deposit),
            },
            Machine::Advise(_) => self.onboard_again(u, Step::Advise),
            Machine::Accept(_) => self.onboard_again(u, Step::Accept),
            Machine::Register(_) => self.try_again(u, Stage::Unregistered { at: 0 }),
            Machine::RequestErasure(_) => self.try_again(u, Stage::Registered),
            Machine::Close(m) => self.close_ended(m.user_id(), None),
            Machine::Kyc(_) => self.onboard_again(u, Step::Kyc),
            Machine::Suitability(_) => self.onboard_again(u, Step::Suitability),
            Machine::Erase(_) => {
                if let Some(o) = &self.lives[u].owner {
                    let o = o.clone();
                    self.erasing.remove(&o);
                }
            }
        }
        Ok(())
    }

    pub(super) fn onboard(&mut self, u: usize, step: Step, at: u64) {
        self.lives[u].stage = Stage::Onboarding { step, at };
        self.wake_life(u, at);
    }

    /// An onboarding step lost or refused for now: the client sends it again (a new request).
    pub(super) fn onboard_again(&mut self, u: usize, step: Step) {
        self.lives[u].attempt += 1;
        let at = self.tick + self.rng.random_range(20..100);
        self.onboard(u, step, at);
    }

    fn try_again(&mut self, u: usize, stage: Stage) {
        let at = self.tick + self.rng.random_range(20..100);
        let life = &mut self.lives[u];
        if life.stage == Stage::Erased {
            return;
        }
        life.attempt += 1;
        life.stage = match stage {
            Stage::Unregistered { .. } => Stage::Unregistered { at },
            other => other,
        };
        if stage == Stage::Registered {
            life.erase_at = Some(at);
        }
        self.wake_life(u, at);
    }

    /// The investors whose workflows are unfinished, for a liveness failure's report.
    pub(super) fn describe_lives(&self) -> String {
        let open: Vec<String> = self
            .lives
            .iter()
            .enumerate()
            .filter(|(_, l)| !l.settled())
            .map(|(u, l)| {
                format!(
                    "{} {:?} as {:?} (erasure at tick {:?}, attempt {})",
                    user_id(u),
                    l.stage,
                    l.owner,
                    l.erase_at,
                    l.attempt
                )
            })
            .collect();
        open.join(", ")
    }

    pub(super) fn lives_settled(&self) -> bool {
        self.lives.iter().all(Life::settled) && self.eod_settled()
    }

    /// A workflow's entity command, applied by replica (n, g): answered and chained.
    pub(super) fn apply_flow_call(&mut self, n: RaftId, g: GroupId, index: u64, envelope: Envelope) -> Result<(), Failure> {
        use moneta::domain::ids::EntityKind;
        let key = answer_key(n, &envelope);
        let (kind, id) = (envelope.kind(), envelope.entity_id().to_string());
        let r = self.replicas.get_mut(&(n, g)).expect("replica");
        let answer = match r.host.dispatch(envelope) {
            Ok(a) => a,
            Err(e) => return self.fail(format!("node {n} group {g} index {index}: {}: {e}", key.1)),
        };
        let state = match kind {
            EntityKind::Account => r.host.accounts.get(&id).map(|h| codec::encode(&h.state)),
            EntityKind::EmailIndex => r.host.email_index.get(&id).map(|h| codec::encode(&h.state)),
            EntityKind::Portfolio => r.host.portfolios.get(&id).map(|h| codec::encode(&h.state)),
            // An instrument's listing and latest price (its history follows from its commands).
            EntityKind::Instrument => r
                .host
                .instruments
                .get(&id)
                .map(|h| codec::encode(&(&h.state.listing, h.state.price, h.state.as_of))),
        };
        if let Some(why) = r
            .host
            .portfolios
            .get(&id)
            .filter(|_| kind == EntityKind::Portfolio)
            .and_then(|h| super::replicas::books_broken(&h.state))
        {
            return self.fail(format!("node {n} group {g} index {index}: {id}: {why}"));
        }
        self.note("apply", Some(n), Some(g), Some(key.1.clone()), format!("index {index}: {}", key.2));
        self.flow_answers.insert(key.clone(), answer);
        self.extend_chain(n, g, index, &key.1, &[&state.unwrap_or_default()])
    }

    /// A workflow's records, applied by replica (n, g).
    pub(super) fn apply_write(&mut self, n: RaftId, g: GroupId, index: u64, writes: &WriteSet) -> Result<(), Failure> {
        // A data key destroyed at some index of the group's log is never put at a later one
        // (replicas replaying the log from its start put it again before that index: fine).
        if let Some((k, at)) = writes
            .puts
            .iter()
            .find_map(|(k, _)| self.destroyed_keys.get(&(g, k.clone())).filter(|&&at| at < index).map(|at| (k, *at)))
        {
            let who = String::from_utf8_lossy(&k[4..]).to_string();
            return self.fail(format!(
                "node {n} group {g} index {index}: the data key of {who}, destroyed at index {at}, came back"
            ));
        }
        for k in writes.deletes.iter().filter(|k| keys::is_data_key_record(k)) {
            self.destroyed_keys.entry((g, k.clone())).or_insert(index);
        }
        self.replicas.get_mut(&(n, g)).expect("replica").host.write(writes);
        self.note(
            "apply",
            Some(n),
            Some(g),
            None,
            format!("index {index}: {} records put, {} deleted", writes.puts.len(), writes.deletes.len()),
        );
        self.extend_chain(n, g, index, "records", &[&codec::encode(writes)])
    }

    /// At the end, on every replica: each account as registered, and nothing readable of the
    /// erased.
    pub(super) fn check_lives(&self) -> Result<(), Failure> {
        for (u, life) in self.lives.iter().enumerate() {
            let Some(owner) = &life.owner else {
                return self.fail(format!("{}: never registered", user_id(u)));
            };
            let erased = life.stage == Stage::Erased;
            let g = self.group_of_id(owner);
            for n in self.members_of(g) {
                let Some(r) = self.replicas.get(&(n, g)) else { continue };
                let Some(account) = r.host.accounts.get(owner).map(|h| &h.state) else {
                    return self.fail(format!("{owner} at node {n}: no account"));
                };
                let key = r.host.records.get(&Vault::key_location(owner));
                if erased {
                    let sealed_left = account.kyc.as_ref().is_some_and(|k| k.sealed_document.is_some())
                        || account.suitability.as_ref().is_some_and(|s| !s.sealed_answers.is_empty());
                    if key.is_some() || !account.sealed_profile.is_empty() || sealed_left {
                        return self.fail(format!(
                            "{owner} at node {n}: erased, yet its data key is {} and its sealed profile {} bytes (document or answers left: {sealed_left})",
                            if key.is_some() { "there" } else { "gone" },
                            account.sealed_profile.len()
                        ));
                    }
                    continue;
                }
                let opened = key
                    .ok_or("no data key".to_string())
                    .and_then(|w| self.vault.open_with(owner, w, "profile", &account.sealed_profile).map_err(|e| e.to_string()))
                    .and_then(|b| serde_json::from_slice::<Profile>(&b).map_err(|e| e.to_string()));
                match opened {
                    Ok(p) if p.email == life.email && account.exists() => {
                        let document = account
                            .kyc
                            .as_ref()
                            .and_then(|k| k.sealed_document.as_ref())
                            .and_then(|d| self.vault.open_with(owner, key.expect("a key"), "kyc", d).ok())
                            .and_then(|b| serde_json::from_slice::<moneta::domain::kyc::KycDocument>(&b).ok());
                        let verified = account.kyc_status() == moneta::domain::kyc::KycStatus::Verified;
                        if !verified || document != Some(kyc_document(u)) || account.suitability.is_none() {
                            return self.fail(format!(
                                "{owner} at node {n}: onboarded, yet KYC verified {verified}, document readable {}, suitability {}",
                                document.is_some(),
                                account.suitability.is_some()
                            ));
                        }
                    }
                    Ok(p) => {
                        return self.fail(format!(
                            "{owner} at node {n}: the profile opens as {} (exists: {})",
                            p.email.len(),
                            account.exists()
                        ))
                    }
                    Err(e) => return self.fail(format!("{owner} at node {n}: its profile does not open: {e}")),
                }
            }
            let ge = self.group_of_id(&life.email_hash);
            for n in self.members_of(ge) {
                let Some(r) = self.replicas.get(&(n, ge)) else { continue };
                let held = r.host.email_index.get(&life.email_hash).and_then(|h| h.state.owner.clone());
                let want = (!erased).then(|| owner.clone());
                if held != want {
                    return self.fail(format!("{}: the email index at node {n} holds {held:?}, expected {want:?}", user_id(u)));
                }
            }
        }
        Ok(())
    }
}
