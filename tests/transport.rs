//! The peer transport (libp2p: TCP + pnet + noise + yamux, length-prefixed frames over
//! request-response): members holding the cluster's secret talk; a peer without it cannot
//! connect at all; a frame over the limit is refused and counted, and the link keeps working.

use libp2p::{identity, Multiaddr, PeerId};
use moneta::cluster::transport::{multiaddr, Inbound, Limits, Transport};
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::mpsc;

async fn node(secret: [u8; 32], limits: Limits) -> (Transport, mpsc::Receiver<Inbound>, Multiaddr) {
    Transport::start(identity::Keypair::generate_ed25519(), secret, multiaddr("127.0.0.1:0").unwrap(), limits)
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
    let before = b.counters.frames_refused.load(Ordering::Relaxed);
    let big = tokio::time::timeout(Duration::from_secs(10), a.request(b.local_peer, vec![0u8; 4096]))
        .await
        .unwrap();
    assert!(big.is_err(), "an oversized frame was answered");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while b.counters.frames_refused.load(Ordering::Relaxed) == before {
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
