//! The cluster simulation's events: every event of a run as one JSON line (`--trace FILE`), and
//! the most recent ones kept in memory so that a failure shows the last events about the entity
//! (or group) it concerns.

use serde::Serialize;
use std::collections::VecDeque;
use std::io::Write;
use std::path::Path;

/// How many recent events a run keeps for a failure's context.
const RECENT: usize = 50_000;

#[derive(Clone, Debug, Serialize)]
pub struct TraceEvent {
    pub tick: u64,
    pub kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entity: Option<String>,
    pub detail: String,
}

pub struct Trace {
    file: Option<std::io::BufWriter<std::fs::File>>,
    recent: VecDeque<TraceEvent>,
    /// Events recorded so far.
    pub events: u64,
    /// The first write error (the run goes on; `finish` reports it).
    error: Option<String>,
}

impl Trace {
    /// A trace kept in memory only, or also written to `path` (created or truncated).
    pub fn new(path: Option<&Path>) -> Result<Trace, String> {
        let file = match path {
            None => None,
            Some(p) => Some(std::io::BufWriter::new(
                std::fs::File::create(p).map_err(|e| format!("--trace {}: {e}", p.display()))?,
            )),
        };
        Ok(Trace {
            file,
            recent: VecDeque::new(),
            events: 0,
            error: None,
        })
    }

    pub fn record(&mut self, e: TraceEvent) {
        self.events += 1;
        if let Some(f) = &mut self.file {
            let line = serde_json::to_string(&e).expect("trace events serialise");
            if let Err(err) = writeln!(f, "{line}") {
                self.error = Some(err.to_string());
                self.file = None;
            }
        }
        if self.recent.len() == RECENT {
            self.recent.pop_front();
        }
        self.recent.push_back(e);
    }

    /// Flushes the file; a write error met during the run is reported here.
    pub fn finish(&mut self) -> Result<(), String> {
        if let Some(f) = &mut self.file {
            f.flush().map_err(|e| format!("--trace: {e}"))?;
        }
        match self.error.take() {
            Some(e) => Err(format!("--trace: {e}")),
            None => Ok(()),
        }
    }

    /// The last `n` events about `entity` (or, without one, about `group`), oldest first, as
    /// JSON lines.
    pub fn about(&self, entity: Option<&str>, group: Option<u32>, n: usize) -> Vec<String> {
        let mut out: Vec<String> = self
            .recent
            .iter()
            .rev()
            .filter(|e| match (entity, group) {
                (Some(id), _) => e.entity.as_deref() == Some(id),
                (None, Some(g)) => e.group == Some(g),
                (None, None) => true,
            })
            .take(n)
            .map(|e| serde_json::to_string(e).expect("trace events serialise"))
            .collect();
        if out.is_empty() && (entity.is_some() || group.is_some()) {
            // Nothing names it among the recent events: the last events of the run, then.
            return self.about(None, None, n);
        }
        out.reverse();
        out
    }
}
