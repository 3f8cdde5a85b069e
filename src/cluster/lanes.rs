//! Lanes: a long-lived libp2p stream per peer (`libp2p-stream`) carrying length-prefixed
//! frames — raft messages, price rounds, and the calls a request forwards to a group's leader.
//!
//! Request-response opens a stream per frame: a yamux stream, a protocol negotiation, the
//! request, its answer and a timer on a thread of its own, each step a hand-off between the
//! swarm's task and the connection's. A lane writes every frame queued for a peer into one
//! stream, in order, and the peer's reader hands each frame up as it comes: a message as
//! `Inbound::Message` (raft retransmits what is lost), a call as `Inbound::Request`, whose
//! answer comes back down the caller's lane under the call's id.
//!
//! A frame is a tag, then for a call or an answer the call's id (u64, big-endian), then the
//! bytes. Limits: a bounded queue per peer (a frame that does not fit is dropped and counted),
//! a bounded number of calls in flight and of inbound lanes, every frame under the transport's
//! size limit, every open and write and call under the request timeout. A frame that cannot be
//! read (over the limit, an unknown tag) is counted and ends that stream: a stream cannot be
//! resynchronised after a bad length, and the sender opens a new one. A call whose lane broke
//! or whose peer went away fails at once; like every transport failure, its outcome is unknown.

use super::transport::{read_frame, Counters, Inbound, Limits};
use futures_util::{AsyncWriteExt, StreamExt};
use libp2p::{PeerId, StreamProtocol};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

pub const LANE_PROTOCOL: StreamProtocol = StreamProtocol::new("/moneta/lane/1");

/// Frames queued per peer before new ones are dropped.
const QUEUE_FRAMES: usize = 1024;
/// Frames written to a stream in one write.
const WRITE_FRAMES_MAX: usize = 64;
/// Inbound lanes open at once (a member opens one per connection; more is misbehaviour).
const INBOUND_LANES_MAX: usize = 64;
/// Calls waiting for an answer, over all peers.
const CALLS_IN_FLIGHT_MAX: usize = 8192;
/// Calls of one peer this node serves at once; a call beyond it is answered "no answer" at
/// once (each call is a task here, and some read storage: a peer must not start without bound).
const SERVED_PER_PEER_MAX: usize = 1024;
/// How long frames to a peer without lanes go as requests before a lane is tried again (the
/// peer may have been upgraded meanwhile).
const LEGACY_RECHECK: Duration = Duration::from_secs(30);
/// Opening a lane: a dial and a protocol negotiation (a failed one is tried again with the
/// next frame).
const OPEN_TIMEOUT: Duration = Duration::from_secs(2);
const RETRY_MIN: Duration = Duration::from_millis(20);
const RETRY_MAX: Duration = Duration::from_secs(1);

const TAG_MESSAGE: u8 = 0;
const TAG_CALL: u8 = 1;
const TAG_ANSWER: u8 = 2;
/// The callee will not answer this call (its queue was full, or it dropped the call).
const TAG_NO_ANSWER: u8 = 3;

pub type Deny = Arc<RwLock<HashSet<PeerId>>>;

/// How a frame reaches a peer that does not speak the lane protocol (a member still on an older
/// build): one request-response request per frame, its answer (if any) to `reply`.
pub type Fallback = Arc<dyn Fn(PeerId, Vec<u8>, oneshot::Sender<Result<Vec<u8>, String>>) -> bool + Send + Sync>;

/// Asks the swarm to dial a peer (a no-op when connected or dialing already).
pub type Dial = Arc<dyn Fn(PeerId) + Send + Sync>;

type Pending = HashMap<u64, (PeerId, oneshot::Sender<Result<Vec<u8>, String>>)>;

/// The lanes to every peer; cheap to clone.
#[derive(Clone)]
pub struct Lanes(Arc<Inner>);

struct Inner {
    /// Where lane tasks run: `send` is called from threads outside the runtime too (the
    /// group-commit writer's).
    runtime: tokio::runtime::Handle,
    control: libp2p_stream::Control,
    queues: Mutex<HashMap<PeerId, mpsc::Sender<Vec<u8>>>>,
    calls: Mutex<Pending>,
    /// Calls being served, per calling peer.
    serving: Mutex<HashMap<PeerId, usize>>,
    next_call: AtomicU64,
    limits: Limits,
    counters: Arc<Counters>,
    deny: Deny,
    fallback: Fallback,
    dial: Dial,
}

impl Lanes {
    /// Starts accepting inbound lanes (what they carry goes to `inbound`) and returns the
    /// sending side. Called inside the tokio runtime the lanes then run on.
    pub fn start(
        mut control: libp2p_stream::Control,
        inbound: mpsc::Sender<Inbound>,
        limits: Limits,
        counters: Arc<Counters>,
        deny: Deny,
        fallback: Fallback,
        dial: Dial,
    ) -> Result<Lanes, String> {
        let incoming = if limits.accept_lanes {
            Some(control.accept(LANE_PROTOCOL).map_err(|e| format!("cluster transport (lanes): {e}"))?)
        } else {
            None
        };
        let lanes = Lanes(Arc::new(Inner {
            runtime: tokio::runtime::Handle::current(),
            control,
            queues: Mutex::new(HashMap::new()),
            calls: Mutex::new(HashMap::new()),
            serving: Mutex::new(HashMap::new()),
            // Ids start at random: a call id of a process that ran before (same peer id, kept in
            // `node.key`) may still be answered by a peer after a restart, and must not match
            // a new call (found in review).
            next_call: AtomicU64::new(rand::random::<u64>() >> 1),
            limits,
            counters,
            deny,
            fallback,
            dial,
        }));
        if let Some(incoming) = incoming {
            lanes.0.runtime.spawn(accept(incoming, inbound, lanes.clone()));
        }
        Ok(lanes)
    }

    fn frame_max(&self) -> usize {
        self.0.limits.max_request_bytes.max(self.0.limits.max_response_bytes) + 9
    }

    fn cut(&self, peer: &PeerId) -> bool {
        self.0.deny.read().expect("deny lock").contains(peer)
    }

    /// Queues a message for `peer` without waiting. False when it was dropped: the link is cut,
    /// the frame is over the size limit, or the peer's queue is full.
    pub fn send(&self, peer: PeerId, bytes: &[u8]) -> bool {
        if bytes.len() > self.0.limits.max_request_bytes {
            self.0.counters.lane_frames_dropped.inc();
            return false;
        }
        self.enqueue(peer, tagged(TAG_MESSAGE, None, bytes))
    }

    /// Sends a call down the peer's lane and waits for its answer, at most the request timeout.
    /// Every error is ambiguous: the call may have been carried out.
    pub async fn call(&self, peer: PeerId, bytes: &[u8]) -> Result<Vec<u8>, String> {
        if bytes.len() > self.0.limits.max_request_bytes {
            return Err(format!(
                "a call of {} bytes is over the limit of {}",
                bytes.len(),
                self.0.limits.max_request_bytes
            ));
        }
        let id = self.0.next_call.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        {
            let mut calls = self.0.calls.lock().expect("lane calls lock");
            if calls.len() >= CALLS_IN_FLIGHT_MAX {
                return Err(format!("{CALLS_IN_FLIGHT_MAX} calls are already waiting for peers"));
            }
            calls.insert(id, (peer, tx));
        }
        // Whatever ends the wait (an answer, the timeout, or the caller giving up), the call
        // leaves the table.
        let _waiting = CallGuard { lanes: self, id };
        if !self.enqueue(peer, tagged(TAG_CALL, Some(id), bytes)) {
            return Err("the lane to the peer is cut or full".into());
        }
        match tokio::time::timeout(self.0.limits.request_timeout, rx).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(_)) => Err("the call was dropped".into()),
            Err(_) => Err("no answer in time".into()),
        }
    }

    /// Drops the queue of `peer` if it is still `writer`'s (a closing lane's).
    fn forget(&self, peer: &PeerId, writer: &mpsc::WeakSender<Vec<u8>>) {
        let mut queues = self.0.queues.lock().expect("lane queues lock");
        if let (Some(q), Some(mine)) = (queues.get(peer), writer.upgrade()) {
            if q.same_channel(&mine) {
                queues.remove(peer);
            }
        }
    }

    /// Calls waiting for an answer.
    pub fn calls_waiting(&self) -> usize {
        self.0.calls.lock().expect("lane calls lock").len()
    }

    /// Peers with a lane writer (the rest get one with their next frame).
    pub fn peers(&self) -> usize {
        self.0.queues.lock().expect("lane queues lock").len()
    }

    /// Fails every call waiting for `peer` (its lane broke, or it went away).
    pub fn fail_calls(&self, peer: &PeerId, why: &str) {
        let failed: Vec<_> = {
            let mut calls = self.0.calls.lock().expect("lane calls lock");
            let ids: Vec<u64> = calls.iter().filter(|(_, (p, _))| p == peer).map(|(id, _)| *id).collect();
            ids.into_iter().filter_map(|id| calls.remove(&id)).collect()
        };
        for (_, tx) in failed {
            let _ = tx.send(Err(why.to_string()));
        }
    }

    fn answered(&self, peer: &PeerId, id: u64, answer: Result<Vec<u8>, String>) {
        let waiting = take_call(&mut self.0.calls.lock().expect("lane calls lock"), peer, id);
        match waiting {
            Some(tx) => {
                let _ = tx.send(answer);
            }
            // Answered after the caller gave up, or by a peer the call was not sent to.
            None => tracing::debug!(id, "a late or stray answer to a call"),
        }
    }

    fn enqueue(&self, peer: PeerId, frame: Vec<u8>) -> bool {
        if self.cut(&peer) {
            return false;
        }
        let mut queues = self.0.queues.lock().expect("lane queues lock");
        let queue = queues.entry(peer).or_insert_with(|| self.writer(peer));
        match queue.try_send(frame) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.0.counters.lane_frames_dropped.inc();
                false
            }
            Err(mpsc::error::TrySendError::Closed(frame)) => {
                // The writer ended (the runtime is stopping); a new one takes its place.
                let queue = self.writer(peer);
                let sent = queue.try_send(frame).is_ok();
                queues.insert(peer, queue);
                sent
            }
        }
    }

    fn writer(&self, peer: PeerId) -> mpsc::Sender<Vec<u8>> {
        let (tx, rx) = mpsc::channel(QUEUE_FRAMES);
        self.0.runtime.spawn(write_lane(self.clone(), peer, rx, tx.downgrade()));
        tx
    }

    /// A frame for a peer without lanes goes as a request; a call's answer comes back here.
    fn by_request(&self, peer: PeerId, frame: Vec<u8>) {
        let Some((tag, id, bytes)) = untag(&frame) else { return };
        let (tx, rx) = oneshot::channel();
        let sent = (self.0.fallback)(peer, bytes.to_vec(), tx);
        if tag == TAG_CALL {
            if !sent {
                self.answered(&peer, id, Err("the transport's queue is full".into()));
                return;
            }
            let lanes = self.clone();
            self.0.runtime.spawn(async move {
                let answer = rx.await.unwrap_or_else(|_| Err("the peer transport stopped".into()));
                lanes.answered(&peer, id, answer);
            });
        }
    }
}

/// Removes a call from the table when its caller stops waiting.
struct CallGuard<'a> {
    lanes: &'a Lanes,
    id: u64,
}

impl Drop for CallGuard<'_> {
    fn drop(&mut self) {
        self.lanes.0.calls.lock().expect("lane calls lock").remove(&self.id);
    }
}

fn tagged(tag: u8, id: Option<u64>, bytes: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(9 + bytes.len());
    f.push(tag);
    if let Some(id) = id {
        f.extend_from_slice(&id.to_be_bytes());
    }
    f.extend_from_slice(bytes);
    f
}

/// (tag, call id or 0, bytes); None for an unknown tag or a short frame.
fn untag(frame: &[u8]) -> Option<(u8, u64, &[u8])> {
    let (&tag, rest) = frame.split_first()?;
    match tag {
        TAG_MESSAGE => Some((tag, 0, rest)),
        TAG_CALL | TAG_ANSWER | TAG_NO_ANSWER if rest.len() >= 8 => {
            let (id, bytes) = rest.split_at(8);
            Some((tag, u64::from_be_bytes(id.try_into().ok()?), bytes))
        }
        _ => None,
    }
}

/// Writes the frames queued for `peer` into one stream, opening (and after a failure,
/// reopening) it as needed.
async fn write_lane(lanes: Lanes, peer: PeerId, mut queue: mpsc::Receiver<Vec<u8>>, me: mpsc::WeakSender<Vec<u8>>) {
    let mut control = lanes.0.control.clone();
    let (timeout, counters) = (lanes.0.limits.request_timeout, lanes.0.counters.clone());
    let mut stream: Option<libp2p::Stream> = None;
    let mut legacy: Option<tokio::time::Instant> = None;
    let mut retry = RETRY_MIN;
    let mut frames: Vec<Vec<u8>> = Vec::with_capacity(WRITE_FRAMES_MAX);
    let mut buf: Vec<u8> = Vec::new();
    loop {
        let got = match tokio::time::timeout(lanes.0.limits.lane_idle, queue.recv_many(&mut frames, WRITE_FRAMES_MAX)).await {
            Ok(n) => n,
            Err(_) => {
                // Nothing for a while: the peer left the cluster (every member hears leadership
                // gossip several times a second). The lane goes; a later frame opens another.
                lanes.forget(&peer, &me);
                queue.close();
                queue.recv_many(&mut frames, WRITE_FRAMES_MAX).await
            }
        };
        if got == 0 {
            break;
        }
        if lanes.cut(&peer) {
            frames.clear();
            stream = None;
            lanes.fail_calls(&peer, "the link to this peer is cut");
            continue;
        }
        if legacy.is_some_and(|since| since.elapsed() < LEGACY_RECHECK) {
            for f in frames.drain(..) {
                lanes.by_request(peer, f);
            }
            continue;
        }
        legacy = None;
        if stream.is_none() {
            // The swarm dials if not connected: the stream behaviour's own dial request is
            // dropped when another is pending.
            (lanes.0.dial)(peer);
        }
        let s = match stream.as_mut() {
            Some(s) => s,
            None => match tokio::time::timeout(OPEN_TIMEOUT, control.open_stream(peer, LANE_PROTOCOL)).await {
                Ok(Ok(s)) => {
                    if retry > RETRY_MIN {
                        tracing::info!(%peer, "a lane to the peer is open again");
                    }
                    retry = RETRY_MIN;
                    stream.insert(s)
                }
                Ok(Err(libp2p_stream::OpenStreamError::UnsupportedProtocol(_))) => {
                    tracing::info!(%peer, "the peer has no lanes (an older build): frames go as requests");
                    legacy = Some(tokio::time::Instant::now());
                    for f in frames.drain(..) {
                        lanes.by_request(peer, f);
                    }
                    continue;
                }
                Ok(Err(e)) => {
                    drop_frames(&lanes, &mut frames, &peer, &e.to_string(), retry == RETRY_MIN);
                    tokio::time::sleep(retry).await;
                    retry = (retry * 2).min(RETRY_MAX);
                    continue;
                }
                Err(_) => {
                    drop_frames(&lanes, &mut frames, &peer, "opening the lane timed out", retry == RETRY_MIN);
                    retry = (retry * 2).min(RETRY_MAX);
                    continue;
                }
            },
        };
        buf.clear();
        let count = frames.len() as u64;
        for f in frames.drain(..) {
            buf.extend_from_slice(&(f.len() as u32).to_be_bytes());
            buf.extend_from_slice(&f);
        }
        let written = tokio::time::timeout(timeout, async {
            s.write_all(&buf).await?;
            s.flush().await
        })
        .await;
        if !matches!(written, Ok(Ok(()))) {
            counters.lane_frames_dropped.inc_by(count);
            tracing::info!(%peer, "a lane to the peer broke; it is opened again with the next frames");
            stream = None;
            lanes.fail_calls(&peer, "the lane to the peer broke");
        }
    }
}

/// Frames that could not leave (no lane): counted, and calls among them failed. The first
/// failure of a streak is logged; the rest at debug (a peer that is down fails every retry).
fn drop_frames(lanes: &Lanes, frames: &mut Vec<Vec<u8>>, peer: &PeerId, why: &str, first: bool) {
    lanes.0.counters.lane_frames_dropped.inc_by(frames.len() as u64);
    if first {
        tracing::info!(%peer, dropped = frames.len(), reason = why, "no lane to the peer; retrying with the next frames");
    } else {
        tracing::debug!(%peer, dropped = frames.len(), reason = why, "no lane to the peer");
    }
    for f in frames.drain(..) {
        if let Some((TAG_CALL, id, _)) = untag(&f) {
            lanes.answered(peer, id, Err(format!("no lane to the peer: {why}")));
        }
    }
}

async fn accept(mut incoming: libp2p_stream::IncomingStreams, inbound: mpsc::Sender<Inbound>, lanes: Lanes) {
    let open = Arc::new(AtomicUsize::new(0));
    while let Some((peer, stream)) = incoming.next().await {
        if open.load(Ordering::Relaxed) >= INBOUND_LANES_MAX {
            lanes.0.counters.frames_refused.inc();
            tracing::warn!(%peer, "too many inbound lanes: one was refused");
            continue;
        }
        open.fetch_add(1, Ordering::Relaxed);
        let (inbound, lanes, open) = (inbound.clone(), lanes.clone(), open.clone());
        tokio::spawn(async move {
            let max = lanes.frame_max();
            read_lane(peer, stream, max, &lanes.0.counters, |frame| lanes.arrived(peer, frame, &inbound)).await;
            open.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

impl Lanes {
    /// One frame off a peer's lane. False: it is malformed (the lane is closed).
    fn arrived(&self, peer: PeerId, frame: Vec<u8>, inbound: &mpsc::Sender<Inbound>) -> bool {
        let Some((tag, id, bytes)) = untag(&frame) else {
            return false;
        };
        if self.cut(&peer) {
            return true;
        }
        match tag {
            TAG_MESSAGE => {
                if inbound.try_send(Inbound::Message { peer, bytes: bytes.to_vec() }).is_err() {
                    self.0.counters.frames_refused.inc();
                }
            }
            TAG_CALL => {
                if !admit_call(&mut self.0.serving.lock().expect("serving lock"), peer) {
                    self.0.counters.frames_refused.inc();
                    self.enqueue(peer, tagged(TAG_NO_ANSWER, Some(id), &[]));
                    return true;
                }
                let (reply, answer) = oneshot::channel();
                if inbound
                    .try_send(Inbound::Request {
                        peer,
                        bytes: bytes.to_vec(),
                        reply,
                    })
                    .is_err()
                {
                    call_served(&mut self.0.serving.lock().expect("serving lock"), &peer);
                    self.0.counters.frames_refused.inc();
                    self.enqueue(peer, tagged(TAG_NO_ANSWER, Some(id), &[]));
                    return true;
                }
                let lanes = self.clone();
                self.0.runtime.spawn(async move {
                    let frame = match answer.await {
                        Ok(bytes) if bytes.len() <= lanes.0.limits.max_response_bytes => tagged(TAG_ANSWER, Some(id), &bytes),
                        _ => tagged(TAG_NO_ANSWER, Some(id), &[]),
                    };
                    call_served(&mut lanes.0.serving.lock().expect("serving lock"), &peer);
                    lanes.enqueue(peer, frame);
                });
            }
            TAG_ANSWER => self.answered(&peer, id, Ok(bytes.to_vec())),
            _ => self.answered(&peer, id, Err("the peer did not answer the call".into())),
        }
        true
    }
}

/// Counts a call of `peer` in as served here; false when `SERVED_PER_PEER_MAX` of its calls
/// already are.
fn admit_call(serving: &mut HashMap<PeerId, usize>, peer: PeerId) -> bool {
    let n = serving.entry(peer).or_insert(0);
    if *n >= SERVED_PER_PEER_MAX {
        return false;
    }
    *n += 1;
    true
}

/// A call of `peer` was answered (or dropped): it no longer counts.
fn call_served(serving: &mut HashMap<PeerId, usize>, peer: &PeerId) {
    if let Some(n) = serving.get_mut(peer) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            serving.remove(peer);
        }
    }
}

/// The call `id` waiting for an answer from `peer`, out of the table; None when none waits
/// under that id, or it was sent to another peer (the call stays: its own answer may come).
fn take_call<T>(calls: &mut HashMap<u64, (PeerId, T)>, peer: &PeerId, id: u64) -> Option<T> {
    match calls.get(&id) {
        Some((p, _)) if p == peer => calls.remove(&id).map(|(_, t)| t),
        _ => None,
    }
}

/// Hands every frame of one inbound lane to `arrived` until the lane ends, a frame cannot be
/// read, or `arrived` finds one malformed.
async fn read_lane<S: futures_util::AsyncRead + Unpin + Send>(
    peer: PeerId,
    mut stream: S,
    max: usize,
    counters: &Counters,
    mut arrived: impl FnMut(Vec<u8>) -> bool,
) {
    loop {
        match read_frame(&mut stream, max).await {
            Ok(frame) => {
                if !arrived(frame) {
                    counters.frames_refused.inc();
                    tracing::warn!(%peer, "a malformed lane frame was refused; the lane is closed");
                    return;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return,
            Err(e) => {
                counters.frames_refused.inc();
                tracing::warn!(%peer, error = %e, "a lane frame was refused; the lane is closed");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests;
