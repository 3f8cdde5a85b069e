//! The peer transport (libp2p: TCP + pnet + noise + yamux, length-prefixed frames over
//! request-response): members holding the cluster's secret talk; a peer without it cannot
//! connect at all; a frame over the limit is refused and counted, and the link keeps working.

use libp2p::{identity, Multiaddr, PeerId};
use moneta::cluster::transport::{multiaddr, Inbound, Limits, Transport};
use std::time::Duration;
use tokio::sync::mpsc;

async fn node(secret: [u8; 32], limits: Limits) -> (Transport, mpsc::Receiver<Inbound>, Multiaddr) {
    Transport::start(
        identity::Keypair::generate_ed25519(),
        secret,
        multiaddr("127.0.0.1:0").unwrap(),
        limits,
        Default::default(),
    )
    .await
    .unwrap()
}

/// Answers every request with its bytes reversed.
fn serve(mut inbound: mpsc::Receiver<Inbound>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while let Some(i) = inbound.recv().await {
            if let Inbound::Request { bytes, reply, .. } = i {
                let _ = reply.send(bytes.into_iter().rev().collect());
            }
        }
    })
}

async fn connect(from: &Transport, to: PeerId, address: &Multiaddr) {
    from.add_address(to, address.clone()).await;
}

#[tokio::test]
async fn members_exchange_frames_a_stranger_cannot_connect_and_an_oversized_frame_is_refused() {
    let secret = [7u8; 32];
    let small = Limits {
        max_request_bytes: 1024,
        request_timeout: Duration::from_secs(5),
        ..Limits::default()
    };
    let (b, b_in, b_addr) = node(secret, small).await;
    let server = serve(b_in);
    let (a, _a_in, _) = node(secret, Limits::default()).await;
    connect(&a, b.local_peer, &b_addr).await;
    let answer = tokio::time::timeout(Duration::from_secs(10), a.request(b.local_peer, b"hello".to_vec()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(answer, b"olleh");

    // Over the receiver's limit: refused before it is read, counted, and the link still works.
    let before = b.counters.frames_refused.get();
    let big = tokio::time::timeout(Duration::from_secs(10), a.request(b.local_peer, vec![0u8; 4096]))
        .await
        .unwrap();
    assert!(big.is_err(), "an oversized frame was answered");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while b.counters.frames_refused.get() == before {
        assert!(std::time::Instant::now() < deadline, "the refused frame was not counted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let again = tokio::time::timeout(Duration::from_secs(10), a.request(b.local_peer, b"ok".to_vec()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again, b"ko");

    // A peer with another secret fails the private-network handshake: nothing gets through.
    let (stranger, _s_in, _) = node([8u8; 32], Limits::default()).await;
    connect(&stranger, b.local_peer, &b_addr).await;
    let refused = tokio::time::timeout(Duration::from_secs(15), stranger.request(b.local_peer, b"let me in".to_vec()))
        .await
        .unwrap();
    assert!(refused.is_err(), "a peer without the secret was answered: {refused:?}");
    server.abort();
}

#[test]
fn host_port_becomes_a_multiaddr_and_nonsense_is_refused() {
    assert_eq!(multiaddr("127.0.0.1:7070").unwrap().to_string(), "/ip4/127.0.0.1/tcp/7070");
    assert_eq!(multiaddr("[::1]:7070").unwrap().to_string(), "/ip6/::1/tcp/7070");
    assert_eq!(multiaddr("moneta-0.moneta:7070").unwrap().to_string(), "/dns/moneta-0.moneta/tcp/7070");
    assert!(multiaddr("7070").is_err());
    assert!(multiaddr("host:port").is_err());
}

/// Answers calls with their bytes reversed (none at all for `b"drop"`); hands messages on.
fn serve_lanes(mut inbound: mpsc::Receiver<Inbound>) -> (tokio::task::JoinHandle<()>, mpsc::UnboundedReceiver<(PeerId, Vec<u8>)>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        while let Some(i) = inbound.recv().await {
            match i {
                Inbound::Request { bytes, reply, .. } if bytes != b"drop" => {
                    let _ = reply.send(bytes.into_iter().rev().collect());
                }
                Inbound::Message { peer, bytes } => {
                    let _ = tx.send((peer, bytes));
                }
                _ => {}
            }
        }
    });
    (task, rx)
}

async fn next_message(rx: &mut mpsc::UnboundedReceiver<(PeerId, Vec<u8>)>) -> (PeerId, Vec<u8>) {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("a lane frame did not arrive in 10 s")
        .expect("the server stopped")
}

/// Frames that want no answer (raft messages) go down one long-lived lane per peer: all of them
/// arrive, in the order sent, as `Inbound::Message`; a frame over the sender's limit is dropped
/// and counted before it leaves. Calls down the lane are answered under their ids, many at once;
/// a call the peer drops fails without waiting for the timeout. A cut link carries nothing and
/// fails calls at once, and carries again once healed.
#[tokio::test]
async fn lanes_carry_messages_in_order_and_calls_to_their_answers() {
    let secret = [7u8; 32];
    let (b, b_in, b_addr) = node(secret, Limits::default()).await;
    let (server, mut messages) = serve_lanes(b_in);
    let small = Limits {
        max_request_bytes: 1024,
        request_timeout: Duration::from_secs(300),
        ..Limits::default()
    };
    let (a, _a_in, _) = node(secret, small).await;
    connect(&a, b.local_peer, &b_addr).await;

    // The first frame to a peer from a thread outside the runtime (as the group-commit
    // writer's raft messages are) opens its lane all the same.
    let (a2, to) = (a.clone(), b.local_peer);
    assert!(std::thread::spawn(move || a2.send(to, b"from a thread")).join().expect("send panicked"));
    assert_eq!(next_message(&mut messages).await.1, b"from a thread");

    // In rounds of 200 (under the lane's queue of 1024), each read back before the next.
    for round in 0..10u32 {
        let frames = round * 200..(round + 1) * 200;
        for i in frames.clone() {
            assert!(a.send(b.local_peer, &i.to_be_bytes()), "frame {i} was dropped");
        }
        for i in frames {
            let (peer, bytes) = next_message(&mut messages).await;
            assert_eq!(peer, a.local_peer);
            assert_eq!(bytes, i.to_be_bytes().to_vec(), "frames out of order");
        }
    }
    assert!(!a.send(b.local_peer, &[0u8; 2048]), "an oversized frame was queued");
    assert_eq!(a.counters.lane_frames_dropped.get(), 1);

    // 300 calls at once, each answered with its own bytes reversed.
    let calls = (0..300u32).map(|i| {
        let a = a.clone();
        let to = b.local_peer;
        async move { (i, a.call(to, format!("call {i}").as_bytes()).await) }
    });
    for (i, answer) in futures_util::future::join_all(calls).await {
        let want: Vec<u8> = format!("call {i}").into_bytes().into_iter().rev().collect();
        assert_eq!(answer.expect("a call failed"), want);
    }
    // The caller's timeout is 300 s: only the callee's "no answer" ends this call in 30.
    let dropped = tokio::time::timeout(Duration::from_secs(30), a.call(b.local_peer, b"drop")).await;
    assert!(dropped.expect("a dropped call waited for the timeout").is_err(), "a dropped call was answered");
    // A caller that gives up (its future dropped) leaves nothing waiting behind.
    let silent = Limits::default();
    let (c, c_in, c_addr) = node(secret, silent).await;
    let hold = tokio::spawn(async move {
        let mut c_in = c_in;
        let mut kept = Vec::new();
        while let Some(i) = c_in.recv().await {
            kept.push(i); // never answered
        }
    });
    connect(&a, c.local_peer, &c_addr).await;
    assert!(tokio::time::timeout(Duration::from_millis(500), a.call(c.local_peer, b"never")).await.is_err());
    assert_eq!(a.calls_waiting(), 0, "an abandoned call stayed in the table");
    hold.abort();

    a.cut_links([b.local_peer].into_iter().collect());
    assert!(!a.send(b.local_peer, b"cut"), "a frame was queued over a cut link");
    assert!(a.call(b.local_peer, b"cut").await.is_err(), "a call crossed a cut link");
    a.cut_links(Default::default());
    assert!(a.send(b.local_peer, b"healed"));
    assert_eq!(next_message(&mut messages).await.1, b"healed");
    assert_eq!(a.call(b.local_peer, b"again").await.unwrap(), b"niaga");
    server.abort();
}

/// A peer that does not accept lanes (a member still on a build from before them) gets the
/// same frames as requests: messages arrive, calls are answered.
#[tokio::test]
async fn a_peer_without_lanes_gets_messages_and_calls_as_requests() {
    let secret = [7u8; 32];
    let old = Limits {
        accept_lanes: false,
        ..Limits::default()
    };
    let (b, mut b_in, b_addr) = node(secret, old).await;
    let (a, _a_in, _) = node(secret, Limits::default()).await;
    connect(&a, b.local_peer, &b_addr).await;
    assert!(a.send(b.local_peer, b"raft"));
    let got = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match b_in.recv().await.expect("transport stopped") {
                Inbound::Request { bytes, reply, .. } => {
                    let _ = reply.send(Vec::new());
                    return bytes;
                }
                _ => continue,
            }
        }
    })
    .await
    .expect("the message did not arrive as a request");
    assert_eq!(got, b"raft");
    let server = serve(b_in);
    assert_eq!(a.call(b.local_peer, b"call").await.unwrap(), b"llac");
    server.abort();
}

/// A lane with nothing to carry closes (its peer left the cluster); the next frame opens another.
#[tokio::test]
async fn an_idle_lane_closes_and_the_next_frame_opens_another() {
    let secret = [7u8; 32];
    let (b, b_in, b_addr) = node(secret, Limits::default()).await;
    let (server, mut messages) = serve_lanes(b_in);
    let quick = Limits {
        lane_idle: Duration::from_millis(300),
        ..Limits::default()
    };
    let (a, _a_in, _) = node(secret, quick).await;
    connect(&a, b.local_peer, &b_addr).await;
    assert!(a.send(b.local_peer, b"one"));
    assert_eq!(next_message(&mut messages).await.1, b"one");
    assert_eq!(a.lanes_open(), 1);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while a.lanes_open() > 0 {
        assert!(std::time::Instant::now() < deadline, "an idle lane stayed open");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(a.send(b.local_peer, b"two"));
    assert_eq!(next_message(&mut messages).await.1, b"two");
    assert_eq!(a.call(b.local_peer, b"three").await.unwrap(), b"eerht");
    server.abort();
}

#[path = "common/ports.rs"]
mod ports;

#[tokio::test]
async fn a_peer_whose_first_dial_failed_is_reached_once_it_listens() {
    // Two nodes of a cluster restarted at once: one dials the other before it listens. The
    // failed dial must not cost the peer's address (the swarm's address book dropped it, and
    // every later request failed with "no addresses for peer").
    let secret = [9u8; 32];
    let (a, _a_in, _) = node(secret, Limits::default()).await;
    let b_key = identity::Keypair::generate_ed25519();
    let b_peer = b_key.public().to_peer_id();
    let b_addr = multiaddr(&format!("127.0.0.1:{}", ports::free_port())).unwrap();
    connect(&a, b_peer, &b_addr).await;
    let early = tokio::time::timeout(Duration::from_secs(10), a.request(b_peer, b"anyone?".to_vec()))
        .await
        .unwrap();
    assert!(early.is_err(), "answered by a peer that is not there: {early:?}");
    let (b, b_in, _) = Transport::start(b_key, secret, b_addr, Limits::default(), Default::default()).await.unwrap();
    let server = serve(b_in);
    let answer = tokio::time::timeout(Duration::from_secs(10), a.request(b.local_peer, b"hello".to_vec()))
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("the peer listens now, but the request failed: {e}"));
    assert_eq!(answer, b"olleh");
    server.abort();
}
