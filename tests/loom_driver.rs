//! Model check of the driver's board (src/cluster/raft/board.rs) with loom: the writer thread
//! publishes rounds (each group's raft status, then its leadership word) while other threads
//! read a word and then the status, over every interleaving. Checked: a reader that sees a
//! round's word finds that round's status or a later one (never an older one, never none), and
//! a reader's successive reads never go back in time. Publishing in the other order (words
//! before the status) fails this check — see `publishing_words_first_is_caught`.

mod sync {
    pub use loom::sync::atomic::{AtomicU64, Ordering};
    pub use loom::sync::Mutex;
}

#[path = "../src/cluster/raft/board.rs"]
#[allow(dead_code)]
mod board;

use board::{Board, Leadership};
use loom::sync::Arc;
use loom::thread;

/// A round's status of group 0, as the model sees it: (round, leader, serving).
type Status = (u64, Option<u64>, bool);

fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(3);
    builder.check(f);
}

/// Round 1: node 1 leads and serves; round 2: node 2 leads (not served here).
fn rounds() -> [(Status, Leadership); 2] {
    [
        (
            (1, Some(1), true),
            Leadership {
                leader: Some(1),
                served: true,
                replica: true,
                sole: true,
            },
        ),
        (
            (2, Some(2), false),
            Leadership {
                leader: Some(2),
                served: false,
                replica: true,
                sole: false,
            },
        ),
    ]
}

fn reader(board: Arc<Board<Status>>) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        let mut last_round = 0;
        for _ in 0..2 {
            let l = board.leadership(0);
            let status = board.status();
            if let Some(leader) = l.leader {
                // The word came from a round whose status was stored before it.
                let round = rounds().iter().position(|(_, w)| w.leader == Some(leader)).unwrap() as u64 + 1;
                let seen = status.first().expect("a published word with no status behind it");
                assert!(seen.0 >= round, "word of round {round}, status of round {}", seen.0);
                if l.served {
                    assert!(seen.0 > round || seen.2, "served, but the status says not serving");
                }
            }
            let round = status.first().map_or(0, |s| s.0);
            assert!(round >= last_round, "the status went back from round {last_round} to {round}");
            last_round = round;
        }
    })
}

#[test]
fn a_reader_never_sees_a_word_ahead_of_its_status() {
    model(|| {
        let board = Arc::new(Board::<Status>::new(1));
        let readers: Vec<_> = (0..2).map(|_| reader(board.clone())).collect();
        for (status, word) in rounds() {
            board.publish(vec![status], [(0, word)]);
        }
        for r in readers {
            r.join().unwrap();
        }
        assert_eq!(board.leadership(0), rounds()[1].1);
    });
}

/// The same check against a board that stores the words first: loom finds the interleaving in
/// which a reader sees round 1's word and no status yet (the check can fail).
#[test]
fn publishing_words_first_is_caught() {
    let failed = std::panic::catch_unwind(|| {
        model(|| {
            let words = Arc::new(loom::sync::atomic::AtomicU64::new(0));
            let status = Arc::new(loom::sync::Mutex::new(Vec::<Status>::new()));
            let (w, s) = (words.clone(), status.clone());
            let r = thread::spawn(move || {
                let l = Leadership::from_word(w.load(loom::sync::atomic::Ordering::Acquire));
                if l.leader.is_some() {
                    assert!(!s.lock().unwrap().is_empty(), "a published word with no status behind it");
                }
            });
            let (st, word) = rounds()[0];
            words.store(word.word(), loom::sync::atomic::Ordering::Release);
            *status.lock().unwrap() = vec![st];
            r.join().unwrap();
        })
    });
    assert!(failed.is_err(), "loom must find the word published ahead of its status");
}
