//! Re-screening: every investor against the current sanctions list (after a reload).

use super::flow::{unexpected, Effect, Effected, Input, Next, NodeEffects, Workflow};
use super::services::Services;
use crate::actors::RequestMeta;
use crate::domain::account::{Account, AccountCommand};
use crate::domain::envelope::Envelope;
use crate::domain::ids::EntityKind;
use crate::domain::queries::InvestorProfile;
use crate::domain::screening::ScreeningStatus;
use futures_util::StreamExt;

/// Re-screens every investor against the current list; returns (screened, not clear).
pub async fn rescreen_all(state: &Services, request_id: &str) -> Result<(usize, usize), String> {
    let store = state.router.store().clone();
    let ids = tokio::task::spawn_blocking(move || store.entity_ids(EntityKind::Account))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    let results = futures_util::stream::iter(ids)
        .map(|uid| async move {
            let flow = Rescreen::new(uid.clone(), RequestMeta::system(request_id));
            super::run(&state.router, &NodeEffects(state), flow).await.map_err(|e| format!("{uid}: {e}"))?
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
    let mut screened = 0;
    let mut hits = 0;
    for r in results {
        if let Some(hit) = r? {
            screened += 1;
            hits += usize::from(hit);
        }
    }
    Ok((screened, hits))
}

#[derive(Clone, Debug)]
enum Stage {
    Start,
    Reading,
    Screening,
    Recording { hit: bool },
    Finished,
}

/// One investor re-screened (sans-IO): their sealed profile (none for staff or the erased),
/// screened by the sanctions adapter, the outcome recorded on the account. Answers whether it
/// is a hit, or `None` when there was nobody to screen.
#[derive(Clone, Debug)]
pub struct Rescreen {
    user_id: String,
    meta: RequestMeta,
    stage: Stage,
}

impl Rescreen {
    pub fn new(user_id: String, meta: RequestMeta) -> Rescreen {
        Rescreen {
            user_id,
            meta,
            stage: Stage::Start,
        }
    }
}

impl Workflow for Rescreen {
    type Output = Result<Option<bool>, String>;

    fn next(&mut self, input: Input) -> Next<Self::Output> {
        let stage = std::mem::replace(&mut self.stage, Stage::Finished);
        match (stage, input) {
            (Stage::Start, Input::Start) => {
                self.stage = Stage::Reading;
                Next::Call(Envelope::query::<Account, _>(&self.user_id, InvestorProfile))
            }
            (Stage::Reading, Input::Answer(a)) => match a.clone().viewed::<Account, InvestorProfile>() {
                Some(None) => Next::Done(Ok(None)),
                Some(Some(sealed_profile)) => {
                    self.stage = Stage::Screening;
                    Next::Effect(Effect::Screen {
                        user_id: self.user_id.clone(),
                        sealed_profile,
                    })
                }
                None => unexpected("re-screening", &Input::Answer(a)),
            },
            (Stage::Screening, Input::Effected(Effected::Screened(outcome))) => {
                self.stage = Stage::Recording {
                    hit: outcome.status != ScreeningStatus::Clear,
                };
                Next::Call(Envelope::execute::<Account>(
                    &self.user_id,
                    AccountCommand::Rescreen(outcome),
                    self.meta.clone(),
                ))
            }
            (Stage::Screening, Input::Effected(Effected::Failed(e))) => Next::Done(Err(e)),
            (Stage::Recording { hit }, Input::Answer(a)) => match a.clone().executed::<Account>() {
                Some(Ok(_)) => Next::Done(Ok(Some(hit))),
                Some(Err(r)) => Next::Done(Err(format!("{}: {r:?}", self.user_id))),
                None => unexpected("re-screening", &Input::Answer(a)),
            },
            (_, input) => unexpected("re-screening", &input),
        }
    }
}
