//! Encrypted, integrity-protected backups of a node's data folder.
//!
//! A backup holds every entry of the node's one sled tree (`state`: entities, their shard
//! records — schedules, queues, ledgers, job progress, wrapped personal-data keys — and the
//! audit chain; every write goes through the journal's group commit) and the secret files, taken
//! at one point in time (the running node takes it on the journal's writer thread, between group
//! commits; a stopped node's folder is read directly).
//!
//! File format (version 1): `MONETA-BACKUP\x01` ‖ key id (8) ‖ nonce prefix (4) ‖ chunks. Each
//! chunk is `len u32 BE ‖ AES-256-GCM(plaintext ≤ 1 MiB)` with nonce `prefix ‖ counter u64 BE`
//! and associated data `header ‖ counter ‖ final flag` — so an altered, reordered, dropped or
//! truncated chunk fails to open (the STREAM construction). The plaintext is a sequence of
//! records (tree entry, key file) ended by a trailer carrying the state digest.

use crate::storage::keys;
use crate::storage::{Store, StoreError};
use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 14] = b"MONETA-BACKUP\x01";
const CHUNK: usize = 1 << 20;
const TAG_LEN: usize = 16;
/// The trees a backup carries: everything is in `state`.
pub const TREES: [&str; 1] = ["state"];

const REC_ENTRY: u8 = 1;
const REC_KEY_FILE: u8 = 2;
const REC_END: u8 = 3;

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("backup key file {path}: {reason}")]
    KeyFile { path: String, reason: String },
    #[error("secret file {path}: {reason}")]
    Secret { path: String, reason: String },
    #[error("{0}")]
    Io(String),
    #[error("the backup is not a Moneta backup, was made with another key, or was altered: {0}")]
    Tampered(&'static str),
    #[error("the target data folder {0} is not empty; restore only into an empty folder")]
    NotEmpty(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<std::io::Error> for BackupError {
    fn from(e: std::io::Error) -> Self {
        BackupError::Io(e.to_string())
    }
}

impl From<sled::Error> for BackupError {
    fn from(e: sled::Error) -> Self {
        BackupError::Store(e.into())
    }
}

/// Why a node (or a stopped node's folder) holding replicas of `held` of the cluster's `groups`
/// shard groups cannot be backed up: a member of a larger cluster may hold some groups only,
/// and a backup of it would leave everyone else out without a word. None: it holds them all.
pub fn partial_holding(held: usize, groups: u32) -> Option<String> {
    (held != groups as usize)
        .then(|| format!("this node holds replicas of {held} of the cluster's {groups} shard groups: a backup of every group needs a node that holds them all"))
}

/// The backup key: 32 bytes from the file, created (0600) when `create` and absent.
pub fn load_key(path: &Path, create: bool) -> Result<Vec<u8>, BackupError> {
    let err = |reason: String| BackupError::KeyFile {
        path: path.display().to_string(),
        reason,
    };
    if !path.exists() {
        if !create {
            return Err(err("not found".into()));
        }
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;
        }
        let mut k = [0u8; 32];
        aws_lc_rs::rand::fill(&mut k).map_err(|_| err("no system randomness".into()))?;
        crate::storage::files::write_private_file(path, &k).map_err(|e| err(e.to_string()))?;
    }
    let bytes = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    if bytes.len() != 32 {
        return Err(err(format!("expected 32 bytes, found {}", bytes.len())));
    }
    crate::storage::files::check_private_file(path).map_err(err)?;
    Ok(bytes)
}

fn key_id(key: &[u8]) -> [u8; 8] {
    let d = Sha256::digest([b"moneta-backup-kid:".as_slice(), key].concat());
    d[..8].try_into().expect("8 bytes")
}

fn header(kid: &[u8; 8], prefix: &[u8; 4]) -> Vec<u8> {
    [MAGIC.as_slice(), kid, prefix].concat()
}

fn aad(header: &[u8], counter: u64, last: bool) -> Vec<u8> {
    [header, &counter.to_be_bytes(), &[u8::from(last)]].concat()
}

fn nonce(prefix: &[u8; 4], counter: u64) -> Nonce {
    let mut n = [0u8; 12];
    n[..4].copy_from_slice(prefix);
    n[4..].copy_from_slice(&counter.to_be_bytes());
    Nonce::assume_unique_for_key(n)
}

/// Encrypts a plaintext stream chunk by chunk.
struct SealWriter<W: Write> {
    out: W,
    key: LessSafeKey,
    header: Vec<u8>,
    prefix: [u8; 4],
    counter: u64,
    buf: Vec<u8>,
}

impl<W: Write> SealWriter<W> {
    fn new(mut out: W, key: &[u8]) -> Result<Self, BackupError> {
        let mut prefix = [0u8; 4];
        aws_lc_rs::rand::fill(&mut prefix).map_err(|_| BackupError::Io("no system randomness".into()))?;
        let header = header(&key_id(key), &prefix);
        out.write_all(&header)?;
        let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key).map_err(|_| BackupError::Tampered("key length"))?);
        Ok(SealWriter {
            out,
            key,
            header,
            prefix,
            counter: 0,
            buf: Vec::with_capacity(CHUNK),
        })
    }

    fn write(&mut self, mut bytes: &[u8]) -> Result<(), BackupError> {
        while !bytes.is_empty() {
            let n = (CHUNK - self.buf.len()).min(bytes.len());
            self.buf.extend_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
            if self.buf.len() == CHUNK {
                self.flush_chunk(false)?;
            }
        }
        Ok(())
    }

    fn flush_chunk(&mut self, last: bool) -> Result<(), BackupError> {
        let mut chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        self.key
            .seal_in_place_append_tag(nonce(&self.prefix, self.counter), Aad::from(aad(&self.header, self.counter, last)), &mut chunk)
            .map_err(|_| BackupError::Io("encryption failed".into()))?;
        self.out.write_all(&(chunk.len() as u32).to_be_bytes())?;
        self.out.write_all(&chunk)?;
        self.counter += 1;
        Ok(())
    }

    fn finish(mut self) -> Result<W, BackupError> {
        self.flush_chunk(true)?;
        self.out.flush()?;
        Ok(self.out)
    }
}

/// Decrypts and authenticates the whole stream (a backup is verified before anything is used).
fn open_stream(mut input: impl Read, key: &[u8]) -> Result<Vec<u8>, BackupError> {
    let mut head = [0u8; 26];
    input.read_exact(&mut head).map_err(|_| BackupError::Tampered("too short"))?;
    if &head[..14] != MAGIC {
        return Err(BackupError::Tampered("not a Moneta backup (version 1)"));
    }
    if head[14..22] != key_id(key) {
        return Err(BackupError::Tampered("made with another backup key"));
    }
    let prefix: [u8; 4] = head[22..26].try_into().expect("4 bytes");
    let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key).map_err(|_| BackupError::Tampered("key length"))?);
    let mut plain = Vec::new();
    let mut counter = 0u64;
    loop {
        let mut len = [0u8; 4];
        input
            .read_exact(&mut len)
            .map_err(|_| BackupError::Tampered("truncated: the final chunk is missing"))?;
        let len = u32::from_be_bytes(len) as usize;
        if !(TAG_LEN..=CHUNK + TAG_LEN).contains(&len) {
            return Err(BackupError::Tampered("chunk length"));
        }
        let mut chunk = vec![0u8; len];
        input.read_exact(&mut chunk).map_err(|_| BackupError::Tampered("truncated chunk"))?;
        // A chunk opens either as the final one or as an inner one, never both.
        let last = {
            let mut try_last = chunk.clone();
            match key.open_in_place(nonce(&prefix, counter), Aad::from(aad(&head, counter, true)), &mut try_last) {
                Ok(p) => {
                    plain.extend_from_slice(p);
                    true
                }
                Err(_) => {
                    let p = key
                        .open_in_place(nonce(&prefix, counter), Aad::from(aad(&head, counter, false)), &mut chunk)
                        .map_err(|_| BackupError::Tampered("a chunk does not authenticate"))?;
                    plain.extend_from_slice(p);
                    false
                }
            }
        };
        counter += 1;
        if last {
            let mut rest = [0u8; 1];
            if input.read(&mut rest)? != 0 {
                return Err(BackupError::Tampered("bytes after the final chunk"));
            }
            return Ok(plain);
        }
    }
}

/// What a backup leaves out: raft logs and the cluster membership are each node's own — a
/// restored folder starts a new cluster of one (which can then grow).
fn backed_up(key: &[u8]) -> bool {
    !key.starts_with(&keys::RAFT_PREFIX) && key != keys::MEMBERSHIP_KEY && key != keys::META_STATE_KEY
}

/// SHA-256 over every (tree, key, value) of the backed-up trees, in order.
pub fn state_digest(store: &Store) -> Result<String, BackupError> {
    let mut h = Sha256::new();
    for name in TREES {
        let tree = store.open_tree(name)?;
        for item in tree.iter() {
            let (k, v) = item?;
            if !backed_up(&k) {
                continue;
            }
            for part in [name.as_bytes(), &k, &v] {
                h.update((part.len() as u64).to_be_bytes());
                h.update(part);
            }
        }
    }
    Ok(hex::encode(h.finalize()))
}

fn key_files(keys_dir: &Path) -> Result<Vec<(String, Vec<u8>)>, BackupError> {
    let mut out = Vec::new();
    let mut stack = vec![keys_dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        if !dir.exists() {
            continue;
        }
        for e in std::fs::read_dir(&dir)? {
            let p = e?.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(keys_dir).map_err(|_| BackupError::Io("key path".into()))?;
                out.push((rel.to_string_lossy().into_owned(), std::fs::read(&p)?));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Writes an encrypted backup of `store` (and the key files under `keys_dir`) to `out`.
/// Returns the state digest. The caller makes sure nothing writes meanwhile.
pub fn write_backup(store: &Store, keys_dir: &Path, key: &[u8], out: impl Write) -> Result<String, BackupError> {
    let mut w = SealWriter::new(out, key)?;
    for name in TREES {
        let tree = store.open_tree(name)?;
        for item in tree.iter() {
            let (k, v) = item?;
            if !backed_up(&k) {
                continue;
            }
            let mut rec = vec![REC_ENTRY, name.len() as u8];
            rec.extend_from_slice(name.as_bytes());
            rec.extend_from_slice(&(k.len() as u32).to_be_bytes());
            rec.extend_from_slice(&k);
            rec.extend_from_slice(&(v.len() as u32).to_be_bytes());
            rec.extend_from_slice(&v);
            w.write(&rec)?;
        }
    }
    for (rel, bytes) in key_files(keys_dir)? {
        let mut rec = vec![REC_KEY_FILE];
        rec.extend_from_slice(&(rel.len() as u16).to_be_bytes());
        rec.extend_from_slice(rel.as_bytes());
        rec.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
        rec.extend_from_slice(&bytes);
        w.write(&rec)?;
    }
    let digest = state_digest(store)?;
    let mut rec = vec![REC_END];
    rec.extend_from_slice(&hex::decode(&digest).expect("hex"));
    w.write(&rec)?;
    w.finish()?;
    Ok(digest)
}

/// Creates the backup file next to its final name and renames it into place once complete.
pub fn write_backup_file(store: &Store, keys_dir: &Path, key: &[u8], path: &Path) -> Result<String, BackupError> {
    let tmp = path.with_extension("partial");
    let file = std::fs::File::create(&tmp).map_err(|e| BackupError::Io(format!("{}: {e}", tmp.display())))?;
    let mut file = std::io::BufWriter::new(file);
    let digest = write_backup(store, keys_dir, key, &mut file)?;
    let file = file.into_inner().map_err(|e| BackupError::Io(e.to_string()))?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    Ok(digest)
}

struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], BackupError> {
        if self.0.len() < n {
            return Err(BackupError::Tampered("a record is cut short"));
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8, BackupError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<usize, BackupError> {
        Ok(u16::from_be_bytes(self.take(2)?.try_into().expect("2")) as usize)
    }
    fn u32(&mut self) -> Result<usize, BackupError> {
        Ok(u32::from_be_bytes(self.take(4)?.try_into().expect("4")) as usize)
    }
}

/// What a backup holds, read before anything of it is written.
struct Parsed<'a> {
    /// (tree, key, value).
    entries: Vec<(usize, &'a [u8], &'a [u8])>,
    /// (path under the keys folder, bytes).
    secrets: Vec<(PathBuf, &'a [u8])>,
    expected: String,
}

fn parse<'a>(plain: &'a [u8], keys_dir: &Path) -> Result<Parsed<'a>, BackupError> {
    let mut c = Cursor(plain);
    let mut parsed = Parsed {
        entries: Vec::new(),
        secrets: Vec::new(),
        expected: String::new(),
    };
    loop {
        match c.u8()? {
            REC_ENTRY => {
                let n = c.u8()? as usize;
                let name = c.take(n)?;
                let i = TREES
                    .iter()
                    .position(|t| t.as_bytes() == name)
                    .ok_or(BackupError::Tampered("unknown tree (a backup of an earlier storage layout cannot be restored)"))?;
                let kl = c.u32()?;
                let k = c.take(kl)?;
                let vl = c.u32()?;
                let v = c.take(vl)?;
                parsed.entries.push((i, k, v));
            }
            REC_KEY_FILE => {
                let n = c.u16()?;
                let rel = std::str::from_utf8(c.take(n)?).map_err(|_| BackupError::Tampered("key file name"))?;
                let rel = Path::new(rel);
                if rel.is_absolute() || rel.components().any(|p| matches!(p, std::path::Component::ParentDir)) {
                    return Err(BackupError::Tampered("key file path escapes the keys folder"));
                }
                let len = c.u32()?;
                parsed.secrets.push((keys_dir.join(rel), c.take(len)?));
            }
            REC_END => {
                parsed.expected = hex::encode(c.take(32)?);
                return Ok(parsed);
            }
            _ => return Err(BackupError::Tampered("unknown record")),
        }
    }
}

/// Restores a backup into `data_dir`, which must be absent or empty, and its secret files into
/// `keys_dir` (a secret already there must be the same); verifies the digest. Returns the state
/// digest. The whole backup is read and checked — every record, every secret already in
/// `keys_dir` — before anything is written; a restore refused after that (its digest does not
/// match, a write fails) leaves nothing behind: no data in `data_dir`, none of the secrets it
/// wrote.
pub fn restore(backup: &Path, key: &[u8], data_dir: &Path, keys_dir: &Path) -> Result<String, BackupError> {
    fn at(path: &Path) -> impl Fn(std::io::Error) -> BackupError + '_ {
        move |e| BackupError::Io(format!("{}: {e}", path.display()))
    }
    if data_dir.exists() && std::fs::read_dir(data_dir).map_err(at(data_dir))?.next().is_some() {
        return Err(BackupError::NotEmpty(data_dir.display().to_string()));
    }
    let file = std::fs::File::open(backup).map_err(at(backup))?;
    let plain = open_stream(std::io::BufReader::new(file), key)?;
    let parsed = parse(&plain, keys_dir)?;
    for (path, bytes) in &parsed.secrets {
        // A shared secrets folder already holds the cluster's secrets: they must be these.
        if path.exists() && std::fs::read(path).map_err(at(path))? != *bytes {
            return Err(BackupError::Secret {
                path: path.display().to_string(),
                reason: "differs from the secret in the backup".into(),
            });
        }
    }
    let existed = data_dir.exists();
    let mut written: Vec<PathBuf> = Vec::new();
    let restored = write_restored(&parsed, data_dir, &mut written);
    if restored.is_err() {
        for path in &written {
            let _ = std::fs::remove_file(path);
        }
        let _ = std::fs::remove_dir_all(data_dir);
        if existed {
            let _ = std::fs::create_dir_all(data_dir);
        }
    }
    restored
}

/// The parsed backup into a new store and the keys folder (each secret written is added to
/// `written`); the restored state's digest checked against the backup's.
fn write_restored(parsed: &Parsed<'_>, data_dir: &Path, written: &mut Vec<PathBuf>) -> Result<String, BackupError> {
    let store = Store::open(data_dir)?;
    let trees: Vec<sled::Tree> = TREES.iter().map(|n| store.open_tree(n)).collect::<Result<_, _>>()?;
    for (i, k, v) in &parsed.entries {
        trees[*i].insert(*k, *v)?;
    }
    for (path, bytes) in &parsed.secrets {
        if path.exists() {
            continue;
        }
        if let Some(parent) = path.parent() {
            crate::storage::files::create_private_dir(parent)?;
        }
        crate::storage::files::write_private_file(path, bytes)?;
        written.push(path.clone());
    }
    store.flush()?;
    let digest = state_digest(&store)?;
    if digest != parsed.expected {
        return Err(BackupError::Tampered("the restored state does not match the backup's digest"));
    }
    Ok(digest)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every file under `dir`.
    fn walk(dir: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
        out
    }

    fn fresh_dir(root: &tempfile::TempDir) -> PathBuf {
        root.path().join(format!("d{}", rand::random::<u32>()))
    }

    #[test]
    fn round_trip_and_tamper_detection() {
        let src = tempfile::tempdir().unwrap();
        let store = Store::open(src.path()).unwrap();
        // Enough data for several chunks.
        for i in 0..3000u32 {
            store.tree().insert(i.to_be_bytes(), vec![7u8; 1000]).unwrap();
        }
        store.tree().insert(b"usr_a wrapped key", b"wrapped".to_vec()).unwrap();
        std::fs::create_dir_all(src.path().join("keys/jwt-retired")).unwrap();
        std::fs::write(src.path().join("keys/master.key"), [1u8; 32]).unwrap();
        std::fs::write(src.path().join("keys/jwt-retired/1.pk8"), b"old").unwrap();
        let key = [9u8; 32];
        let mut bytes = Vec::new();
        let digest = write_backup(&store, &src.path().join("keys"), &key, &mut bytes).unwrap();
        assert!(!bytes.windows(7).any(|w| w == b"wrapped"), "the backup is encrypted");
        let file = src.path().join("b.bin");
        std::fs::write(&file, &bytes).unwrap();

        let dst = tempfile::tempdir().unwrap();
        let target = dst.path().join("data");
        assert_eq!(restore(&file, &key, &target, &target.join("keys")).unwrap(), digest);
        assert_eq!(std::fs::read(target.join("keys/jwt-retired/1.pk8")).unwrap(), b"old");
        // Not into a folder with data in it.
        assert!(matches!(restore(&file, &key, &target, &target.join("keys")), Err(BackupError::NotEmpty(_))));
        // A shared secrets folder that already holds the cluster's keys: the same ones are kept,
        // another one is refused.
        let shared = dst.path().join("shared");
        let again = dst.path().join("again");
        assert_eq!(restore(&file, &key, &again, &shared).unwrap(), digest);
        assert_eq!(std::fs::read(shared.join("jwt-retired/1.pk8")).unwrap(), b"old");
        assert_eq!(
            restore(&file, &key, &dst.path().join("third"), &shared).unwrap(),
            digest,
            "identical secrets are kept"
        );
        std::fs::write(shared.join("jwt-retired/1.pk8"), b"other").unwrap();
        // Found in review: a refused restore left the data folder filled and the other secrets
        // written. Nothing is written now: the secrets are checked before anything.
        let listing = |dir: &Path| {
            let mut names: Vec<PathBuf> = walk(dir);
            names.sort();
            names
        };
        let before = listing(&shared);
        std::fs::remove_file(shared.join("master.key")).unwrap();
        let fourth = dst.path().join("fourth");
        let e = restore(&file, &key, &fourth, &shared).unwrap_err();
        assert!(matches!(e, BackupError::Secret { .. }) && e.to_string().starts_with("secret file"), "{e}");
        assert!(!fourth.exists(), "nothing of a refused restore is in the data folder");
        assert!(!shared.join("master.key").exists(), "no secret written by a refused restore");
        assert_eq!(listing(&shared).len(), before.len() - 1);
        // A backup file that is not there is named.
        let missing = dst.path().join("no-such.backup");
        let e = restore(&missing, &key, &fresh_dir(&dst), &shared).unwrap_err();
        assert!(e.to_string().contains("no-such.backup"), "{e}");

        let fresh = || dst.path().join(format!("t{}", rand_suffix()));
        // Another key, a flipped byte anywhere, truncation, an extra byte: all refused.
        assert!(matches!(
            restore(&file, &[8u8; 32], &fresh(), &dst.path().join("k")),
            Err(BackupError::Tampered(_))
        ));
        for at in [3, 20, 30, 40, bytes.len() / 2, bytes.len() - 1] {
            let mut t = bytes.clone();
            t[at] ^= 0x20;
            std::fs::write(&file, &t).unwrap();
            assert!(
                matches!(restore(&file, &key, &fresh(), &dst.path().join("k")), Err(BackupError::Tampered(_))),
                "flip at {at}"
            );
        }
        // Dropping the final chunk (cut at an inner chunk boundary) is detected.
        let first_len = u32::from_be_bytes(bytes[26..30].try_into().unwrap()) as usize;
        std::fs::write(&file, &bytes[..30 + first_len]).unwrap();
        assert!(matches!(restore(&file, &key, &fresh(), &dst.path().join("k")), Err(BackupError::Tampered(_))));
        let mut extra = bytes.clone();
        extra.push(0);
        std::fs::write(&file, &extra).unwrap();
        assert!(matches!(restore(&file, &key, &fresh(), &dst.path().join("k")), Err(BackupError::Tampered(_))));
    }

    fn rand_suffix() -> u64 {
        let mut b = [0u8; 8];
        aws_lc_rs::rand::fill(&mut b).unwrap();
        u64::from_le_bytes(b)
    }
}
