//! Ports for the servers a test starts, chosen outside the kernel's ephemeral range.
//!
//! A port found by binding port 0 comes from the range the kernel also hands to outgoing
//! connections, so between the test dropping its probe and the node binding the port, any
//! connection on the machine may take it as its local port (CI saw a node refuse to start with
//! "Address already in use"). Ports outside that range are only ever taken by listeners; a
//! counter keeps the tests of one binary from picking the same one, and a start that differs
//! per process keeps consecutive binaries apart.

use std::net::TcpListener;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A loopback TCP port nothing listens on, outside the ephemeral range where there is room.
pub fn free_port() -> u16 {
    static START: OnceLock<u32> = OnceLock::new();
    let Some((low, high)) = listener_range() else {
        return probe(0);
    };
    let span = high - low;
    let start = *START.get_or_init(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        (std::process::id().wrapping_mul(7919) ^ nanos) % span
    });
    for _ in 0..span {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (low + (start + n) % span) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    probe(0)
}

fn probe(port: u16) -> u16 {
    TcpListener::bind(("127.0.0.1", port))
        .expect("bind a loopback port")
        .local_addr()
        .expect("local address")
        .port()
}

/// [low, high) below or above the kernel's ephemeral range, or None when it leaves no room.
fn listener_range() -> Option<(u32, u32)> {
    let text = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap_or_default();
    let mut bounds = text.split_whitespace().filter_map(|w| w.parse::<u32>().ok());
    let (first, last) = match (bounds.next(), bounds.next()) {
        (Some(first), Some(last)) if first <= last => (first, last),
        _ => (32768, 60999),
    };
    const LOWEST: u32 = 10_000;
    const ROOM: u32 = 2_000;
    if first >= LOWEST + ROOM {
        Some((LOWEST, first))
    } else if last + 1 + ROOM <= 65_536 {
        Some((last + 1, 65_536))
    } else {
        None
    }
}
