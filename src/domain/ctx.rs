//! The context of one decision: the injected time, a seeded random stream, and the effects the
//! decision asks its driver to carry out (today: audit records).

use crate::domain::audit::AuditDraft;
use crate::domain::time::Timestamp;
use rand::RngCore;

/// What a state machine may ask of the world; the driver (actor or simulator) carries it out.
#[derive(Clone, Debug, PartialEq)]
pub enum Effect {
    /// Append this to the audit journal, in the same group commit as the events.
    Audit(AuditDraft),
}

pub struct Ctx<'a> {
    pub now: Timestamp,
    rng: &'a mut dyn RngCore,
    effects: Vec<Effect>,
}

impl<'a> Ctx<'a> {
    pub fn new(now: Timestamp, rng: &'a mut dyn RngCore) -> Ctx<'a> {
        Ctx { now, rng, effects: Vec::new() }
    }
    pub fn rng(&mut self) -> &mut dyn RngCore {
        self.rng
    }
    pub fn new_id(&mut self, prefix: &str) -> String {
        crate::domain::ids::new_id(prefix, self.rng)
    }
    pub fn audit(&mut self, draft: AuditDraft) {
        self.effects.push(Effect::Audit(draft));
    }
    pub fn effects(&self) -> &[Effect] {
        &self.effects
    }
    pub fn take_effects(&mut self) -> Vec<Effect> {
        std::mem::take(&mut self.effects)
    }
}
