//! Re-screening: every investor against the current sanctions list (after a reload).

use super::services::Services;
use crate::actors::RequestMeta;
use crate::adapters::sanctions;
use crate::domain::account::{Account, AccountCommand, Profile};
use crate::domain::ids::EntityKind;
use crate::domain::screening::ScreeningStatus;
use futures_util::StreamExt;

/// Re-screens every investor against the current list; returns (screened, not clear).
pub async fn rescreen_all(state: &Services, request_id: &str) -> Result<(usize, usize), String> {
    let store = state.router.store().clone();
    let ids = tokio::task::spawn_blocking(move || store.entity_ids(EntityKind::Account))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    let list = state.sanctions_list();
    let results = futures_util::stream::iter(ids)
        .map(|uid| {
            let list = list.clone();
            async move {
                let sealed = state.router.query::<Account, _>(&uid, crate::domain::queries::InvestorProfile).await?;
                let Some(sealed) = sealed else { return Ok(None) };
                let profile: Profile = state.vault.open_json(&uid, "profile", &sealed).map_err(|e| e.to_string())?;
                let outcome = sanctions::screen(&list, &profile);
                let hit = outcome.status != ScreeningStatus::Clear;
                state
                    .router
                    .execute::<Account>(&uid, AccountCommand::Rescreen(outcome), RequestMeta::system(request_id))
                    .await
                    .map_err(|e| format!("{uid}: {e:?}"))?;
                Ok::<_, String>(Some(hit))
            }
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
