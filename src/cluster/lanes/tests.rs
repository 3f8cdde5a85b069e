use super::*;

fn frame(bytes: &[u8]) -> Vec<u8> {
    let mut f = (bytes.len() as u32).to_be_bytes().to_vec();
    f.extend_from_slice(bytes);
    f
}

/// The frames `read_lane` hands up from `wire` (each accepted unless it starts with 0xff),
/// and the frames it refused.
async fn read_all(wire: Vec<u8>, max: usize) -> (Vec<Vec<u8>>, u64) {
    let counters = Counters::default();
    let mut got = Vec::new();
    read_lane(PeerId::random(), futures_util::io::Cursor::new(wire), max, &counters, |f| {
        let ok = f.first() != Some(&0xff);
        if ok {
            got.push(f);
        }
        ok
    })
    .await;
    (got, counters.frames_refused.get())
}

#[tokio::test]
async fn a_lane_hands_up_its_frames_in_order_and_stops_at_a_bad_one() {
    let wire = [frame(b"one"), frame(b""), frame(b"three")].concat();
    assert_eq!(read_all(wire, 64).await, (vec![b"one".to_vec(), vec![], b"three".to_vec()], 0));

    // A length over the limit: counted, and nothing after it is read as a frame.
    let wire = [frame(b"one"), frame(&[7u8; 65]), frame(b"three")].concat();
    assert_eq!(read_all(wire, 64).await, (vec![b"one".to_vec()], 1));

    // A frame the lane refuses (here: an unknown tag): counted, the lane ends.
    let wire = [frame(b"one"), frame(&[0xff, 1]), frame(b"three")].concat();
    assert_eq!(read_all(wire, 64).await, (vec![b"one".to_vec()], 1));

    // Cut mid-frame (the connection broke): what came whole is handed up, the rest ends the lane.
    let mut wire = [frame(b"one"), frame(b"two")].concat();
    wire.truncate(wire.len() - 1);
    assert_eq!(read_all(wire, 64).await, (vec![b"one".to_vec()], 0));
}

#[test]
fn an_answer_completes_only_the_call_sent_to_the_peer_that_answers() {
    let (b, c) = (PeerId::random(), PeerId::random());
    let mut calls: HashMap<u64, (PeerId, &str)> = HashMap::new();
    calls.insert(7, (c, "the call to c"));
    assert_eq!(
        take_call(&mut calls, &b, 7),
        None,
        "b answering id 7 (an old call of its own) completes nothing"
    );
    assert_eq!(take_call(&mut calls, &b, 8), None);
    assert_eq!(take_call(&mut calls, &c, 7), Some("the call to c"));
    assert!(calls.is_empty());
    assert_eq!(take_call(&mut calls, &c, 7), None, "once");
}

#[test]
fn one_peer_has_at_most_its_bound_of_calls_served_at_once() {
    let (b, c) = (PeerId::random(), PeerId::random());
    let mut serving = HashMap::new();
    assert!((0..SERVED_PER_PEER_MAX).all(|_| admit_call(&mut serving, b)));
    assert!(!admit_call(&mut serving, b), "one over the bound is refused");
    assert!(admit_call(&mut serving, c), "another peer has its own bound");
    call_served(&mut serving, &b);
    assert!(admit_call(&mut serving, b), "room again once one is answered");
    for _ in 0..SERVED_PER_PEER_MAX {
        call_served(&mut serving, &b);
    }
    call_served(&mut serving, &c);
    assert!(serving.is_empty(), "a peer with nothing served leaves no entry");
}

#[test]
fn frames_are_tagged_and_a_bad_tag_or_short_id_is_refused() {
    assert_eq!(untag(&tagged(TAG_MESSAGE, None, b"raft")), Some((TAG_MESSAGE, 0, &b"raft"[..])));
    assert_eq!(untag(&tagged(TAG_CALL, Some(7), b"fwd")), Some((TAG_CALL, 7, &b"fwd"[..])));
    assert_eq!(untag(&tagged(TAG_ANSWER, Some(u64::MAX), b"")), Some((TAG_ANSWER, u64::MAX, &b""[..])));
    assert_eq!(untag(&tagged(TAG_NO_ANSWER, Some(1), b"")), Some((TAG_NO_ANSWER, 1, &b""[..])));
    assert_eq!(untag(&[]), None);
    assert_eq!(untag(&[9, 0, 0]), None);
    assert_eq!(untag(&[TAG_CALL, 0, 0, 0]), None, "a call without a whole id");
}
