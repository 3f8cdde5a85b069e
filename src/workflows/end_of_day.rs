//! End of day: the node's scheduled close of the trading day, and the live valuations.
//!
//! - `end_of_day_job` closes each day at `[statements] close_time` (UTC): every portfolio with
//!   something to state gets a statement (holdings at the closing prices, value, trades, fees),
//!   which is also the point of its daily value series. Each shard group's leader closes its
//!   group's portfolios and records the day in the group, so a close missed while a node was
//!   down or leadership moved is caught up by the group's next leader. `moneta eod run [--date]`
//!   closes a day on demand for every group the node holds.
//! - `track_all` starts the live valuation of every portfolio when the node starts;
//!   `refresh_stale` keeps each one following its portfolio's writes, off the request path.

use crate::actors::RequestMeta;
use crate::domain::audit::AuditDraft;
use crate::domain::ids::EntityKind;
use crate::domain::instrument::Instrument;
use crate::domain::portfolio::{Portfolio, PortfolioCommand, PortfolioRejection};

use super::flow::{unexpected, Effect, Effected, Input, Next, NodeEffects, Workflow};
use super::services::Services;
use crate::domain::envelope::Envelope;
use crate::domain::queries::ClosedThrough;
use crate::domain::time::{Date, Timestamp, MS_PER_DAY};
use crate::storage::scope::Groups;
use rust_decimal::Decimal;
use std::collections::BTreeMap;
use std::sync::Arc;

/// The job record of the last day closed (per shard group, in the group's first shard).
const LAST_CLOSE_KEY: &str = "eod/last_close";
/// How often the job looks for groups it has come to lead whose due close is not recorded (a
/// look reads one local record per group led; a group that changes leader mid-pass, or that
/// this node comes to lead, is closed within this).
const CATCH_UP_CHECK_MS: i64 = 2_000;
/// How long the job waits after a close that failed (a portfolio not reached, no majority)
/// before it tries again.
const RETRY_AFTER_FAILURE_MS: i64 = 30_000;

#[derive(Debug, Default, PartialEq, Eq)]
pub struct CloseSummary {
    pub statements: usize,
    pub already_closed: usize,
    pub nothing_to_state: usize,
    pub failed: usize,
}

pub(super) fn portfolio_ids(state: &Services, scope: &Groups) -> Result<Vec<String>, String> {
    state.router.store().entity_ids_in(EntityKind::Portfolio, scope).map_err(|e| e.to_string())
}

/// The closing price of every listed instrument at `cutoff` (the day's close time): the price
/// as it stood then, not a later tick of the same day — a close that runs late states the
/// positions of the close time at the prices of the close time. The latest price when the
/// history has none.
async fn closing_prices(state: &Services, cutoff: Timestamp) -> BTreeMap<String, Decimal> {
    let mut prices = BTreeMap::new();
    for symbol in state.symbols() {
        let close = state
            .router
            .query::<Instrument, _>(&symbol, crate::domain::queries::PriceAt { at: cutoff })
            .await;
        match close {
            Ok(Some(p)) => {
                prices.insert(symbol, p);
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(symbol = %symbol, error = %e, "no closing price; holdings count at cost"),
        }
    }
    prices
}

/// Closes `date` for every portfolio of the covered groups (a portfolio already closed for it is
/// left alone), group by group: each statement holds what stood at the day's close time and
/// what happened up to it, however late the close runs (a close caught up after a restart, a
/// slow pass over many portfolios, a past day closed on demand). A group whose portfolios all
/// closed records the day.
pub async fn close_day(state: &Services, date: Date, scope: &Groups) -> Result<CloseSummary, String> {
    let offset = state.config.statements.close_offset_ms().unwrap_or(MS_PER_DAY);
    // Not after now: the journal read below then holds every event up to the cutoff, whatever
    // is appended while the close runs.
    let cutoff = Timestamp(date.days_since_epoch() * MS_PER_DAY + offset).min(state.now());
    let prices = closing_prices(state, cutoff).await;
    let groups = state.router.store().groups();
    let mut summary = CloseSummary::default();
    // Only groups with a replica here: their portfolios and their record of the last close are
    // read from this node's store. For another group both would read as empty, and the record
    // written below (forwarded to its leader) would mark a day closed that no portfolio of it
    // was closed for (`moneta eod run` on a node outside the group).
    let held = |g: u32| state.router.journal().leadership(g).replica;
    for group in (0..groups).filter(|g| scope.covers(*g) && held(*g)) {
        let mut closed = CloseSummary::default();
        for user in portfolio_ids(state, &Groups::only([group]))? {
            let portfolio = user.clone();
            let flow = ClosePortfolio::new(user, date, prices.clone(), cutoff, RequestMeta::system(format!("eod-{date}")));
            match super::run(&state.router, &NodeEffects(state), flow).await {
                Ok(Ok(Closed::Statement)) => closed.statements += 1,
                Ok(Ok(Closed::AlreadyClosed)) => closed.already_closed += 1,
                Ok(Ok(Closed::NothingToState)) => closed.nothing_to_state += 1,
                Ok(Err(e)) => {
                    closed.failed += 1;
                    tracing::error!(group, %portfolio, error = %e, "end of day: a portfolio could not be closed");
                }
                Err(e) => {
                    closed.failed += 1;
                    tracing::error!(group, %portfolio, error = %e, "end of day: a portfolio could not be reached");
                }
            }
        }
        // The group's record moves forward only (closing a past day again does not rewind it);
        // it is committed in the group with the audit record of the close.
        let mut writes = crate::storage::store::WriteSet::default();
        if closed.failed == 0 && last_closed(state, group).is_none_or(|d| d < date) {
            writes = crate::storage::records::put_group_job(group, LAST_CLOSE_KEY, &date.to_string());
        }
        writes.shard = Some(crate::storage::records::group_shard(group));
        let draft = AuditDraft::ok("eod.closed")
            .detail("date", date.to_string())
            .detail("group", group.to_string())
            .detail("statements", closed.statements.to_string())
            .detail("failed", closed.failed.to_string());
        state
            .router
            .audit_with(draft, "eod", &RequestMeta::system(format!("eod-{date}")), writes)
            .await?;
        summary.statements += closed.statements;
        summary.already_closed += closed.already_closed;
        summary.nothing_to_state += closed.nothing_to_state;
        summary.failed += closed.failed;
    }
    Ok(summary)
}

/// The last day this group closed. A record that does not read is reported, and counted when
/// it is damage on disk (the days are then closed again from the oldest due, which is
/// idempotent); never skipped silently.
fn last_closed(state: &Services, group: u32) -> Option<Date> {
    let location = || format!("group {group} job {LAST_CLOSE_KEY}");
    match state.router.store().group_job(group, LAST_CLOSE_KEY) {
        Ok(None) => None,
        Ok(Some(v)) => {
            let date = Date::parse(&v);
            if date.is_none() {
                tracing::error!(group, "the record of the last day closed is not a date");
                state.metrics.corrupt_record(&location());
            }
            date
        }
        Err(e) => {
            tracing::error!(group, error = %e, "the record of the last day closed cannot be read");
            if matches!(e, crate::storage::store::StoreError::Corrupt { .. }) {
                state.metrics.corrupt_record(&location());
            }
            None
        }
    }
}

/// The latest close that is due at `now`: today's if its close time has passed, else yesterday's.
fn due_close(now: Timestamp, offset_ms: i64) -> (Date, Timestamp) {
    let day = now.millis().div_euclid(MS_PER_DAY);
    let today_close = day * MS_PER_DAY + offset_ms;
    let close_day = if now.millis() >= today_close { day } else { day - 1 };
    (
        Date::from_timestamp(Timestamp(close_day * MS_PER_DAY)),
        Timestamp(close_day * MS_PER_DAY + offset_ms),
    )
}

/// The latest day whose close time has passed.
pub fn due_date(state: &Services) -> Date {
    due_close(state.now(), state.config.statements.close_offset_ms().unwrap_or(0)).0
}

/// The days to close, oldest first, for groups whose record of the last close is `last` (None:
/// never closed, so only the due day — no history before the group's first close), up to the
/// due day `due`: every day after the last one closed. None is skipped, however long the
/// outage: a later day's close would make the days before it unclosable (a statement's date
/// must be after the last one), so the catch-up takes as many passes as days were missed.
fn days_to_close(last: impl Iterator<Item = Option<Date>>, due: Date) -> Vec<Date> {
    let due_day = due.days_since_epoch();
    let first = last.map(|l| l.map_or(due_day, |d| d.days_since_epoch() + 1)).min().unwrap_or(due_day);
    (first..=due_day).map(|d| Date::from_timestamp(Timestamp(d * MS_PER_DAY))).collect()
}

/// The end-of-day job: at each close time (and every two seconds in between, to catch up a
/// group it has come to lead), closes every day due for each group this node leads whose record
/// is behind it — oldest first, so a close missed while the node was down or leadership moved
/// is stated on its own day, not folded into a later one.
pub async fn end_of_day_job(state: Arc<Services>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let Some(offset) = state.config.statements.close_offset_ms() else {
        return;
    };
    loop {
        let now = state.now();
        let (due, _) = due_close(now, offset);
        let mut failed = false;
        let led = state.router.led_groups();
        let led_list: Vec<u32> = match &led {
            Groups::Only(set) => set.iter().copied().collect(),
            Groups::All => (0..state.router.store().groups()).collect(),
        };
        for date in days_to_close(led_list.iter().map(|g| last_closed(&state, *g)), due) {
            // A group never closed joins at the due day; one closed before catches up from the
            // day after its last close.
            let behind = Groups::only(led_list.iter().copied().filter(|g| last_closed(&state, *g).map_or(date == due, |d| d < date)));
            if behind.is_empty() {
                continue;
            }
            match close_day(&state, date, &behind).await {
                Ok(s) if s.failed == 0 => tracing::info!(date = %date, statements = s.statements, "end of day closed"),
                Ok(s) => {
                    tracing::error!(date = %date, failed = s.failed, "end of day: portfolios failed; retrying at the next check");
                    failed = true;
                    break;
                }
                Err(e) => {
                    tracing::error!(date = %date, error = %e, "end of day failed; retrying at the next check");
                    failed = true;
                    break;
                }
            }
        }
        let next = due_close(now, offset).1.millis() + MS_PER_DAY;
        // Leading nothing yet (just started, or between elections): look again soon.
        let check = if led.is_empty() {
            1_000
        } else if failed {
            RETRY_AFTER_FAILURE_MS
        } else {
            CATCH_UP_CHECK_MS
        };
        let wait = (next - state.now().millis()).clamp(1_000, check);
        tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_millis(wait as u64)) => {}
            _ = stop.changed() => return,
        }
        if *stop.borrow() {
            return;
        }
    }
}

/// Starts the live valuation of every stored portfolio (in the background at start).
pub async fn track_all(state: Arc<Services>) {
    let ids = match portfolio_ids(&state, &Groups::All) {
        Ok(ids) => ids,
        Err(e) => {
            tracing::error!(error = %e, "cannot list portfolios to value");
            return;
        }
    };
    for user in ids {
        refresh_valuation(&state, &user).await;
    }
}

/// How long marked valuations wait before a pass refreshes them: a user's burst of writes is
/// one refresh.
const STALE_COALESCE: std::time::Duration = std::time::Duration::from_millis(50);

/// Refreshes the live valuation of every user whose positions moved (`Valuations::mark_stale`,
/// after a deposit, withdrawal or order through this node's gateway), each once per pass
/// however many writes marked it. A write thus answers without reading its portfolio a second
/// time (on a cluster, often a second call to the group's leader). What needs the positions as
/// the group holds them at that moment (the performance series) refreshes them itself.
pub async fn refresh_stale(state: Arc<Services>, mut stop: tokio::sync::watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = state.valuations.stale_marked() => {}
            _ = stop.changed() => return,
        }
        tokio::select! {
            _ = tokio::time::sleep(STALE_COALESCE) => {}
            _ = stop.changed() => return,
        }
        if *stop.borrow() {
            return;
        }
        for user in state.valuations.take_stale() {
            refresh_valuation(&state, &user).await;
        }
    }
}

/// Reads the portfolio's positions into its live valuation (after anything that moved them).
pub async fn refresh_valuation(state: &Services, user: &str) {
    match state.router.query::<Portfolio, _>(user, crate::domain::queries::PositionsOf).await {
        Ok(positions) => state.valuations.update(user, positions, state.now()),
        Err(e) => tracing::warn!(error = %e, "portfolio could not be valued"),
    }
}

/// What closing one portfolio's day did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Closed {
    Statement,
    AlreadyClosed,
    NothingToState,
}

#[derive(Clone, Debug)]
enum Stage {
    Start,
    Checking,
    Reading,
    Closing,
    Finished,
}

/// Closing one portfolio's day (sans-IO): already closed (a catch-up or a re-run) ends it before
/// its whole journal is read; else the journal, folded to the cutoff by the portfolio's own
/// decision, which also refuses a second close.
#[derive(Clone, Debug)]
pub struct ClosePortfolio {
    user_id: String,
    date: Date,
    prices: BTreeMap<String, Decimal>,
    cutoff: Timestamp,
    meta: RequestMeta,
    stage: Stage,
}

impl ClosePortfolio {
    pub fn new(user_id: String, date: Date, prices: BTreeMap<String, Decimal>, cutoff: Timestamp, meta: RequestMeta) -> ClosePortfolio {
        ClosePortfolio {
            user_id,
            date,
            prices,
            cutoff,
            meta,
            stage: Stage::Start,
        }
    }

    /// The portfolio it closes.
    pub fn user_id(&self) -> &str {
        &self.user_id
    }
}

impl Workflow for ClosePortfolio {
    type Output = Result<Closed, String>;

    fn next(&mut self, input: Input) -> Next<Self::Output> {
        let stage = std::mem::replace(&mut self.stage, Stage::Finished);
        match (stage, input) {
            (Stage::Start, Input::Start) => {
                self.stage = Stage::Checking;
                Next::Call(Envelope::query::<Portfolio, _>(&self.user_id, ClosedThrough { date: self.date }))
            }
            (Stage::Checking, Input::Answer(a)) => match a.clone().viewed::<Portfolio, ClosedThrough>() {
                Some(true) => Next::Done(Ok(Closed::AlreadyClosed)),
                Some(false) => {
                    self.stage = Stage::Reading;
                    Next::Effect(Effect::PortfolioJournal(self.user_id.clone()))
                }
                None => unexpected("end of day", &Input::Answer(a)),
            },
            (Stage::Reading, Input::Effected(Effected::Journal(journal))) => {
                self.stage = Stage::Closing;
                let cmd = PortfolioCommand::CloseDay {
                    date: self.date,
                    prices: std::mem::take(&mut self.prices),
                    cutoff: self.cutoff,
                    journal,
                };
                Next::Call(Envelope::execute::<Portfolio>(&self.user_id, cmd, self.meta.clone()))
            }
            (Stage::Reading, Input::Effected(Effected::Failed(e))) => Next::Done(Err(format!("the journal could not be read: {e}"))),
            (Stage::Closing, Input::Answer(a)) => match a.clone().executed::<Portfolio>() {
                Some(Ok(_)) => Next::Done(Ok(Closed::Statement)),
                Some(Err(PortfolioRejection::DayAlreadyClosed)) => Next::Done(Ok(Closed::AlreadyClosed)),
                Some(Err(PortfolioRejection::NothingToState)) => Next::Done(Ok(Closed::NothingToState)),
                Some(Err(r)) => Next::Done(Err(format!("refused: {r:?}"))),
                None => unexpected("end of day", &Input::Answer(a)),
            },
            (_, input) => unexpected("end of day", &input),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_due_close_is_todays_after_close_time_else_yesterdays() {
        let offset = 22 * 3_600_000;
        let day = 20_000 * MS_PER_DAY;
        assert_eq!(
            due_close(Timestamp(day + offset - 1), offset).0,
            Date::from_timestamp(Timestamp(day - MS_PER_DAY))
        );
        assert_eq!(due_close(Timestamp(day + offset), offset).0, Date::from_timestamp(Timestamp(day)));
        assert_eq!(due_close(Timestamp(day + offset), offset).1, Timestamp(day + offset));
    }

    /// A node down over a weekend closes Friday, Saturday and Sunday, each on its own day, not
    /// only the latest (a later close would make the skipped days unclosable).
    #[test]
    fn every_day_missed_since_the_last_close_is_closed_oldest_first() {
        let day = |n: i64| Date::from_timestamp(Timestamp(n * MS_PER_DAY));
        let due = day(20_000);
        assert_eq!(days_to_close([Some(day(19_997))].into_iter(), due), vec![day(19_998), day(19_999), day(20_000)]);
        // Two groups: from the day after the one furthest behind.
        assert_eq!(
            days_to_close([Some(day(19_999)), Some(day(19_998))].into_iter(), due),
            vec![day(19_999), day(20_000)]
        );
        // Closed through the due day: nothing; never closed: only the due day.
        assert_eq!(days_to_close([Some(due)].into_iter(), due), vec![]);
        assert_eq!(days_to_close([None].into_iter(), due), vec![due]);
        assert_eq!(days_to_close(std::iter::empty(), due), vec![due]);
        // A long outage: every day of it (closing a later one first would make the earlier
        // ones unclosable).
        let long = days_to_close([Some(day(19_000))].into_iter(), due);
        assert_eq!(long.len(), 1_000);
        assert_eq!((long.first(), long.last()), (Some(&day(19_001)), Some(&due)));
    }
}
