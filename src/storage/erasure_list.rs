//! The erasure list: one line per person erased (user id and email-index key, no personal
//! data), kept outside the data folder so that a restored backup replays every erasure made
//! since it was taken.

use std::path::Path;

/// Appends one carried-out erasure to the erasure list (user id and email-index key; no
/// personal data) and syncs it to disk. A person listed already is not listed again (the node
/// that runs an erasure lists it, and so does its replica when it applies it).
pub fn append_erasure_list(path: &Path, user_id: &str, email_hash: &str) -> std::io::Result<()> {
    use std::io::Write;
    let line = format!("{user_id} {email_hash}");
    match std::fs::read_to_string(path) {
        Ok(text) if text.lines().any(|l| l.trim() == line) => return Ok(()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
    writeln!(f, "{line}")?;
    f.sync_all()
}

/// Reads the erasure list; `None` when the file does not exist, which the caller must tell
/// apart from an empty list: no one erased yet, or the list lost (then a restore would bring
/// back everyone erased since the backup). Any other read failure, or a malformed line, is an
/// error naming it. A person listed more than once (every replica of their group lists the
/// erasure it applies, beside the node that ran it) is one erasure, in the order first listed.
pub fn read_erasure_list(path: &Path) -> Result<Option<Vec<(String, String)>>, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("erasure list {}: {e}", path.display())),
    };
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| match l.split_whitespace().collect::<Vec<_>>().as_slice() {
            [u, h]
                if !u.is_empty()
                    && u.len() <= 64
                    && u.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-')
                    && h.len() == 64
                    && h.bytes().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)) =>
            {
                Ok((u.to_string(), h.to_string()))
            }
            _ => Err(format!(
                "erasure list {} line {}: expected `<user id> <email hash>` (the hash 64 lower-case hex digits)",
                path.display(),
                i + 1
            )),
        })
        .collect::<Result<Vec<_>, String>>()
        .map(|lines| {
            let mut seen = std::collections::HashSet::new();
            Some(lines.into_iter().filter(|l| seen.insert(l.clone())).collect())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_erasure_is_listed_once_however_often_it_is_appended() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let list = dir.path().join("erasures.list");
        let (a, b) = ("a".repeat(64), "b".repeat(64));
        append_erasure_list(&list, "usr_a", &a).unwrap();
        append_erasure_list(&list, "usr_b", &b).unwrap();
        append_erasure_list(&list, "usr_a", &a).unwrap();
        assert_eq!(std::fs::read_to_string(&list).unwrap().lines().count(), 2);
        assert_eq!(
            read_erasure_list(&list).unwrap(),
            Some(vec![("usr_a".to_string(), a), ("usr_b".to_string(), b)])
        );
    }

    #[test]
    fn a_line_whose_hash_is_not_hex_or_whose_user_id_is_odd_is_refused_with_its_number() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let list = dir.path().join("erasures.list");
        for bad in [
            format!("usr_a {}", "z".repeat(64)),
            format!("usr_a {}", "A".repeat(64)),
            format!("usr_a {}", "a".repeat(63)),
            format!("usr/a {}", "a".repeat(64)),
        ] {
            std::fs::write(&list, format!("usr_b {}\n{bad}\n", "b".repeat(64))).unwrap();
            let e = read_erasure_list(&list).unwrap_err();
            assert!(e.contains("line 2"), "{bad}: {e}");
        }
    }
}
