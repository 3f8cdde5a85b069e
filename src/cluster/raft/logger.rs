//! raft-rs logs through `slog`; this drain hands its records to `tracing`, so the node's log
//! is one stream. raft-rs's info lines (elections, leadership) become debug events: they are
//! frequent and the node reports leadership changes itself.

use slog::{Drain, Level, OwnedKVList, Record, KV};
use std::fmt::Write as _;

pub struct TracingDrain;

struct Collect(String);

impl slog::Serializer for Collect {
    fn emit_arguments(&mut self, key: slog::Key, val: &std::fmt::Arguments) -> slog::Result {
        let _ = write!(self.0, " {key}={val}");
        Ok(())
    }
}

impl Drain for TracingDrain {
    type Ok = ();
    type Err = slog::Never;

    fn log(&self, record: &Record, values: &OwnedKVList) -> Result<(), slog::Never> {
        let enabled = match record.level() {
            Level::Critical | Level::Error => tracing::enabled!(tracing::Level::ERROR),
            Level::Warning => tracing::enabled!(tracing::Level::WARN),
            _ => tracing::enabled!(tracing::Level::DEBUG),
        };
        if !enabled {
            return Ok(());
        }
        let mut kv = Collect(String::new());
        let _ = record.kv().serialize(record, &mut kv);
        let _ = values.serialize(record, &mut kv);
        let message = format!("{}{}", record.msg(), kv.0);
        match record.level() {
            Level::Critical | Level::Error => tracing::error!(target: "raft", "{message}"),
            Level::Warning => tracing::warn!(target: "raft", "{message}"),
            _ => tracing::debug!(target: "raft", "{message}"),
        }
        Ok(())
    }
}

/// The root logger handed to raft-rs.
pub fn logger(node: u64) -> slog::Logger {
    slog::Logger::root(TracingDrain.fuse(), slog::o!("raft_id" => node))
}
