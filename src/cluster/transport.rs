//! The peer transport: libp2p 0.57 — TCP, inside a private network (`pnet`: only peers holding
//! the cluster's pre-shared key complete a handshake), noise, yamux — carrying length-prefixed
//! frames with a hard size limit, two ways:
//! - **lanes** (`cluster::lanes`, one long-lived stream per peer): raft messages, price rounds
//!   and leadership gossip as one-way frames in order (`send`), and the small calls of the
//!   request path, each tagged with an id and answered down the callee's lane (`call`);
//! - **request-response** (`request`): introductions, snapshot chunks, journals, audit
//!   exports, revocations — bulk or rare exchanges — and every frame for a peer that does not
//!   accept lanes (an older build).
//!
//! What a frame means is the cluster layer's business (`cluster::peer`); here a frame is bytes,
//! a refused one is counted (`Counters`, exported as metrics).
//!
//! Every failure is ambiguous to the caller (a request may have been handled before its answer
//! was lost), as NOTES.md measured: responses come out of order and requests beyond the stream
//! cap fail at once. The cluster layer retries under request ids.

use futures_util::stream::{FuturesUnordered, StreamExt};
use futures_util::{AsyncReadExt, AsyncWriteExt};
use libp2p::core::upgrade::Version;
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::SwarmEvent;
use libp2p::{identity, noise, pnet, tcp, yamux, Multiaddr, PeerId, StreamProtocol, Swarm, Transport as _};
use prometheus_client::metrics::counter::Counter;
use std::io;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

pub const PROTOCOL: StreamProtocol = StreamProtocol::new("/moneta/peer/1");

/// Frame limits and timeouts of the transport.
#[derive(Clone, Debug)]
pub struct Limits {
    pub max_request_bytes: usize,
    pub max_response_bytes: usize,
    pub request_timeout: Duration,
    /// Streams in flight per connection (requests beyond fail at once; callers keep a window).
    pub max_concurrent_streams: usize,
    /// Whether peers may open lanes to this node (off: it looks like a build from before
    /// lanes, and peers send it requests instead — tests of that fallback).
    pub accept_lanes: bool,
    /// A lane with nothing to carry for this long is closed (its peer left the cluster; a
    /// member hears leadership gossip several times a second).
    pub lane_idle: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_request_bytes: 16 << 20,
            max_response_bytes: 16 << 20,
            request_timeout: Duration::from_secs(10),
            max_concurrent_streams: 256,
            accept_lanes: true,
            lane_idle: Duration::from_secs(60),
        }
    }
}

/// A length-prefixed frame codec (u32 BE length, then the bytes) that refuses frames over its
/// limits before reading them.
#[derive(Clone)]
pub struct FrameCodec {
    limits: Limits,
    /// libp2p drops a request that fails to read without an event: the codec counts it.
    counters: Arc<Counters>,
}

pub(crate) async fn read_frame<T: futures_util::AsyncRead + Unpin + Send>(io: &mut T, max: usize) -> io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    io.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("a frame of {len} bytes is over the limit of {max}"),
        ));
    }
    let mut buf = vec![0u8; len];
    io.read_exact(&mut buf).await?;
    Ok(buf)
}

async fn write_frame<T: futures_util::AsyncWrite + Unpin + Send>(io: &mut T, bytes: &[u8], max: usize) -> io::Result<()> {
    if bytes.len() > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("a frame of {} bytes is over the limit of {max}", bytes.len()),
        ));
    }
    io.write_all(&(bytes.len() as u32).to_be_bytes()).await?;
    io.write_all(bytes).await?;
    io.close().await
}

impl request_response::Codec for FrameCodec {
    type Protocol = StreamProtocol;
    type Request = Vec<u8>;
    type Response = Vec<u8>;

    async fn read_request<T: futures_util::AsyncRead + Unpin + Send>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>> {
        let frame = read_frame(io, self.limits.max_request_bytes).await;
        if let Err(e) = &frame {
            self.counters.frames_refused.inc();
            tracing::warn!(error = %e, "a peer frame was refused");
        }
        frame
    }

    async fn read_response<T: futures_util::AsyncRead + Unpin + Send>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>> {
        read_frame(io, self.limits.max_response_bytes).await
    }

    async fn write_request<T: futures_util::AsyncWrite + Unpin + Send>(&mut self, _: &StreamProtocol, io: &mut T, req: Vec<u8>) -> io::Result<()> {
        write_frame(io, &req, self.limits.max_request_bytes).await
    }

    async fn write_response<T: futures_util::AsyncWrite + Unpin + Send>(&mut self, _: &StreamProtocol, io: &mut T, res: Vec<u8>) -> io::Result<()> {
        write_frame(io, &res, self.limits.max_response_bytes).await
    }
}

/// What the transport hands up.
#[derive(Debug)]
pub enum Inbound {
    /// A request from an authenticated peer of the private network; answer through `reply`
    /// (dropping it answers nothing, and the peer sees a failure).
    Request {
        peer: PeerId,
        bytes: Vec<u8>,
        reply: oneshot::Sender<Vec<u8>>,
    },
    Connected {
        peer: PeerId,
        address: Multiaddr,
    },
    Disconnected {
        peer: PeerId,
    },
    /// A frame that wants no answer, from a peer's lane (`cluster::lanes`).
    Message {
        peer: PeerId,
        bytes: Vec<u8>,
    },
}

enum Command {
    Dial(Multiaddr),
    /// Dials a peer by id (its addresses as the behaviours know them) unless connected or
    /// dialing already.
    DialPeer(PeerId),
    AddAddress(PeerId, Multiaddr),
    Send {
        peer: PeerId,
        bytes: Vec<u8>,
        reply: oneshot::Sender<Result<Vec<u8>, String>>,
    },
}

/// Counters the node exports as metrics (`telemetry::PeerStats`; clones share the counts).
#[derive(Clone, Debug, Default)]
pub struct Counters {
    /// Inbound frames refused: over the limit, unreadable, a full inbound queue, or a peer that
    /// failed the handshake.
    pub frames_refused: Counter,
    /// Requests that failed (no answer; the outcome is unknown to the caller).
    pub requests_failed: Counter,
    /// Frames for a lane dropped before they left: its queue was full, or no lane could be
    /// opened (raft sends again).
    pub lane_frames_dropped: Counter,
}

/// A handle on the running swarm; cheap to clone.
#[derive(Clone)]
pub struct Transport {
    cmd: mpsc::Sender<Command>,
    pub local_peer: PeerId,
    pub counters: Arc<Counters>,
    /// Peers whose links are cut both ways (fault injection for partition tests; empty in
    /// production, where it can only be set when the node was started with test faults on).
    deny: Arc<std::sync::RwLock<std::collections::HashSet<PeerId>>>,
    lanes: super::lanes::Lanes,
}

/// Request-response for bulk and rare exchanges (and peers without lanes); lanes for raft,
/// gossip and the request path's calls.
#[derive(libp2p::swarm::NetworkBehaviour)]
struct Behaviour {
    calls: request_response::Behaviour<FrameCodec>,
    lanes: libp2p_stream::Behaviour,
}

impl Transport {
    /// Starts the swarm on `listen` (e.g. `/ip4/127.0.0.1/tcp/7070`), counting into `counters`.
    /// Returns the handle, the inbound stream and the address it listens on.
    pub async fn start(
        keypair: identity::Keypair,
        secret: [u8; 32],
        listen: Multiaddr,
        limits: Limits,
        counters: Counters,
    ) -> Result<(Transport, mpsc::Receiver<Inbound>, Multiaddr), String> {
        let psk = pnet::PreSharedKey::new(secret);
        let counters = Arc::new(counters);
        let codec = FrameCodec {
            limits: limits.clone(),
            counters: counters.clone(),
        };
        let rr_config = request_response::Config::default()
            .with_request_timeout(limits.request_timeout)
            .with_max_concurrent_streams(limits.max_concurrent_streams);
        let mut swarm = libp2p::SwarmBuilder::with_existing_identity(keypair)
            .with_tokio()
            .with_other_transport(|key| -> Result<_, Box<dyn std::error::Error + Send + Sync>> {
                let noise = noise::Config::new(key)?;
                Ok(tcp::tokio::Transport::new(tcp::Config::default().nodelay(true))
                    .and_then(move |socket, _| pnet::PnetConfig::new(psk).handshake(socket))
                    .upgrade(Version::V1Lazy)
                    .authenticate(noise)
                    .multiplex(yamux::Config::default())
                    .timeout(Duration::from_secs(10)))
            })
            .map_err(|e| format!("cluster transport: {e}"))?
            // Members may be named by host name (`[cluster] join`, `advertise`: e.g. a
            // StatefulSet's stable DNS names); resolved at each dial.
            .with_dns()
            .map_err(|e| format!("cluster transport (DNS resolver): {e}"))?
            .with_behaviour(|_| Behaviour {
                calls: request_response::Behaviour::with_codec(codec, [(PROTOCOL, ProtocolSupport::Full)], rr_config),
                lanes: libp2p_stream::Behaviour::new(),
            })
            .map_err(|e| format!("cluster transport: {e}"))?
            // Idle links between members stay up: raft heartbeats are the traffic.
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(3600)))
            .build();
        // Lanes are accepted before anything can connect (a peer that found no lane protocol
        // would take this node for an older build).
        let (cmd_tx, cmd_rx) = mpsc::channel(4096);
        let (in_tx, in_rx) = mpsc::channel(4096);
        let local_peer = *swarm.local_peer_id();
        let deny = Arc::new(std::sync::RwLock::new(std::collections::HashSet::new()));
        let fallback_cmd = cmd_tx.clone();
        let fallback: super::lanes::Fallback = Arc::new(move |peer, bytes, reply| fallback_cmd.try_send(Command::Send { peer, bytes, reply }).is_ok());
        let dial_cmd = cmd_tx.clone();
        let dial: super::lanes::Dial = Arc::new(move |peer| {
            let _ = dial_cmd.try_send(Command::DialPeer(peer));
        });
        let lanes = super::lanes::Lanes::start(
            swarm.behaviour().lanes.new_control(),
            in_tx.clone(),
            limits,
            counters.clone(),
            deny.clone(),
            fallback,
            dial,
        )?;
        swarm.listen_on(listen.clone()).map_err(|e| {
            // libp2p's transport error may print nothing of its cause.
            let why = e.to_string();
            let why = if why.trim().is_empty() { format!("{e:?}") } else { why };
            format!("cannot listen for peers on {listen} (key `cluster.listen`): {why}")
        })?;
        let bound = loop {
            match swarm.next().await {
                Some(SwarmEvent::NewListenAddr { address, .. }) => break address,
                Some(SwarmEvent::ListenerError { error, .. }) => return Err(format!("peer listener on {listen}: {error}")),
                Some(SwarmEvent::ListenerClosed { reason, .. }) => return Err(format!("peer listener on {listen} closed: {reason:?}")),
                Some(_) => {}
                None => return Err("the peer swarm stopped".into()),
            }
        };
        tokio::spawn(run(swarm, cmd_rx, in_tx, counters.clone(), deny.clone(), lanes.clone()));
        Ok((
            Transport {
                cmd: cmd_tx,
                local_peer,
                counters,
                deny,
                lanes,
            },
            in_rx,
            bound,
        ))
    }

    /// Cuts (or, with an empty set, heals) the links to these peers, both ways: nothing is sent
    /// to them and nothing from them is handed up. For partition tests only.
    pub fn cut_links(&self, peers: std::collections::HashSet<PeerId>) {
        *self.deny.write().expect("deny lock") = peers;
    }

    pub async fn dial(&self, address: Multiaddr) {
        let _ = self.cmd.send(Command::Dial(address)).await;
    }

    pub async fn add_address(&self, peer: PeerId, address: Multiaddr) {
        let _ = self.cmd.send(Command::AddAddress(peer, address)).await;
    }

    /// Sends one frame and waits for the answer; every error is ambiguous.
    pub async fn request(&self, peer: PeerId, bytes: Vec<u8>) -> Result<Vec<u8>, String> {
        let (tx, rx) = oneshot::channel();
        self.cmd
            .send(Command::Send { peer, bytes, reply: tx })
            .await
            .map_err(|_| "the peer transport stopped".to_string())?;
        rx.await.map_err(|_| "the peer transport stopped".to_string())?
    }

    /// Sends a frame that wants no answer down the peer's lane, in order after the frames sent
    /// before it, without waiting (raft messages: raft retransmits what is lost). False when it
    /// was dropped (the lane's queue is full, or the link is cut).
    pub fn send(&self, peer: PeerId, bytes: &[u8]) -> bool {
        self.lanes.send(peer, bytes)
    }

    /// Peers this node keeps a lane to (idle lanes close, see `Limits::lane_idle`).
    pub fn lanes_open(&self) -> usize {
        self.lanes.peers()
    }

    /// Calls down lanes still waiting for their answer.
    pub fn calls_waiting(&self) -> usize {
        self.lanes.calls_waiting()
    }

    /// Sends a call down the peer's lane (behind what was sent before it) and waits for the
    /// answer, at most the request timeout; every error is ambiguous. For the small calls of
    /// the request path; bulk transfers (snapshots, journals) go as requests.
    pub async fn call(&self, peer: PeerId, bytes: &[u8]) -> Result<Vec<u8>, String> {
        self.lanes.call(peer, bytes).await
    }
}

async fn run(
    mut swarm: Swarm<Behaviour>,
    mut cmd: mpsc::Receiver<Command>,
    inbound: mpsc::Sender<Inbound>,
    counters: Arc<Counters>,
    deny: Arc<std::sync::RwLock<std::collections::HashSet<PeerId>>>,
    lanes: super::lanes::Lanes,
) {
    let cut = |p: &PeerId| deny.read().expect("deny lock").contains(p);
    let mut waiting: std::collections::HashMap<request_response::OutboundRequestId, oneshot::Sender<Result<Vec<u8>, String>>> =
        std::collections::HashMap::new();
    let mut answers = FuturesUnordered::new();
    let (mut incoming_said, mut outgoing_said) = (Said::default(), Said::default());
    // Every address a peer was given under (members' addresses). The swarm forgets an address
    // whose dial failed at the transport (request-response's address book drops it), and then
    // has none for the peer: a simultaneous dial of two nodes starting together, both
    // handshakes failing, left the two unable to reach each other for good (found by a whole
    // cluster restarted at once). The addresses are given to it again after each failed dial.
    let mut known: std::collections::HashMap<PeerId, std::collections::BTreeSet<Multiaddr>> = std::collections::HashMap::new();
    loop {
        tokio::select! {
            c = cmd.recv() => match c {
                None => break,
                Some(Command::DialPeer(peer)) => {
                    if !swarm.is_connected(&peer) {
                        use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
                        if let Err(e) = swarm.dial(DialOpts::peer_id(peer).condition(PeerCondition::DisconnectedAndNotDialing).build()) {
                            tracing::debug!(%peer, error = %e, "dial failed");
                        }
                    }
                }
                Some(Command::Dial(addr)) => {
                    if let Err(e) = swarm.dial(addr.clone()) {
                        tracing::debug!(%addr, error = %e, "dial failed");
                    }
                }
                Some(Command::AddAddress(peer, addr)) => {
                    let addresses = known.entry(peer).or_default();
                    if addresses.len() < ADDRESSES_PER_PEER_MAX || addresses.contains(&addr) {
                        addresses.insert(addr.clone());
                    }
                    swarm.add_peer_address(peer, addr);
                }
                Some(Command::Send { peer, bytes, reply }) if cut(&peer) => {
                    drop(bytes);
                    let _ = reply.send(Err("the link to this peer is cut".into()));
                }
                Some(Command::Send { peer, bytes, reply }) => {
                    let id = swarm.behaviour_mut().calls.send_request(&peer, bytes);
                    waiting.insert(id, reply);
                }
            },
            Some((channel, answer)) = answers.next(), if !answers.is_empty() => {
                let answer: Result<Vec<u8>, _> = answer;
                if let Ok(bytes) = answer {
                    let _ = swarm.behaviour_mut().calls.send_response(channel, bytes);
                }
            },
            event = swarm.select_next_some() => match event {
                SwarmEvent::Behaviour(BehaviourEvent::Calls(request_response::Event::Message { peer, message, .. })) => match message {
                    request_response::Message::Request { .. } if cut(&peer) => {}
                    request_response::Message::Request { request, channel, .. } => {
                        let (tx, rx) = oneshot::channel();
                        if inbound.try_send(Inbound::Request { peer, bytes: request, reply: tx }).is_err() {
                            counters.frames_refused.inc();
                            continue;
                        }
                        answers.push(async move { (channel, rx.await) });
                    }
                    request_response::Message::Response { request_id, response } => {
                        if let Some(w) = waiting.remove(&request_id) {
                            let _ = w.send(Ok(response));
                        }
                    }
                },
                SwarmEvent::Behaviour(BehaviourEvent::Calls(request_response::Event::OutboundFailure { request_id, error, peer, .. })) => {
                    counters.requests_failed.inc();
                    tracing::debug!(%peer, %error, "peer request failed");
                    if let Some(w) = waiting.remove(&request_id) {
                        let _ = w.send(Err(error.to_string()));
                    }
                }
                SwarmEvent::Behaviour(BehaviourEvent::Calls(request_response::Event::InboundFailure { peer, error, .. }))
                    if !matches!(error, request_response::InboundFailure::ResponseOmission) =>
                {
                    tracing::debug!(%peer, %error, "an inbound peer request failed");
                }
                SwarmEvent::ConnectionEstablished { peer_id, endpoint, .. } => {
                    let address = endpoint.get_remote_address().clone();
                    let _ = inbound.try_send(Inbound::Connected { peer: peer_id, address });
                }
                SwarmEvent::ConnectionClosed { peer_id, num_established: 0, .. } => {
                    lanes.fail_calls(&peer_id, "the connection to the peer closed");
                    let _ = inbound.try_send(Inbound::Disconnected { peer: peer_id });
                }
                SwarmEvent::IncomingConnectionError { error, send_back_addr, .. } => {
                    // A peer without the cluster's secret ends here (its handshake fails), and
                    // so does anything else that is not a cluster peer: counted, and said at
                    // most once per `REFUSALS_SAID_EVERY` (a stream of them must not flood the log).
                    counters.frames_refused.inc();
                    if let Some(more) = incoming_said.due() {
                        tracing::warn!(from = %send_back_addr, %error, more, "a connection was refused at its handshake: a node started with another cluster secret_file, or not a cluster peer");
                    }
                }
                SwarmEvent::OutgoingConnectionError { peer_id, error, .. } => {
                    if let Some(more) = outgoing_said.due() {
                        tracing::warn!(peer = ?peer_id, %error, more, "cannot connect to a cluster peer: is it running, and started with this cluster's secret_file?");
                    }
                    if let Some(addresses) = peer_id.and_then(|p| known.get(&p).map(|a| (p, a))) {
                        for a in addresses.1 {
                            swarm.add_peer_address(addresses.0, a.clone());
                        }
                    }
                }
                _ => {}
            },
        }
    }
}

/// Addresses remembered per peer (a member has one; a few more cover a changed address).
const ADDRESSES_PER_PEER_MAX: usize = 4;

/// How often a kind of refused connection is said in the log (each is counted).
const REFUSALS_SAID_EVERY: std::time::Duration = std::time::Duration::from_secs(30);

/// Says a recurring event at most once per [`REFUSALS_SAID_EVERY`], with how many went unsaid.
#[derive(Default)]
struct Said {
    last: Option<tokio::time::Instant>,
    unsaid: u64,
}

impl Said {
    /// `Some(unsaid since the last time)` when this one is to be said.
    fn due(&mut self) -> Option<u64> {
        let now = tokio::time::Instant::now();
        if self.last.is_some_and(|t| now.duration_since(t) < REFUSALS_SAID_EVERY) {
            self.unsaid += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.unsaid))
    }
}

/// `host:port` → a TCP multiaddr (`/ip4/…/tcp/…`, `/ip6/…`, or `/dns/…` for a name).
/// A DNS host name: dot-separated labels of letters, digits, '-' and '_' (1–63 each, not
/// starting or ending with '-'), at most 253 characters.
fn is_host_name(host: &str) -> bool {
    host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        })
}

pub fn multiaddr(host_port: &str) -> Result<Multiaddr, String> {
    let (host, port) = host_port.rsplit_once(':').ok_or_else(|| format!("`{host_port}` is not host:port"))?;
    let port: u16 = port.parse().map_err(|_| format!("`{host_port}`: the port is not a number"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let proto = match host.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(_)) => "ip4",
        Ok(std::net::IpAddr::V6(_)) => "ip6",
        Err(_) if host.is_empty() => return Err(format!("`{host_port}` has no host")),
        Err(_) if is_host_name(host) => "dns",
        Err(_) => return Err(format!("`{host_port}`: `{host}` is neither an IP address nor a host name")),
    };
    format!("/{proto}/{host}/tcp/{port}").parse().map_err(|e| format!("`{host_port}`: {e}"))
}
