//! The cluster's pre-shared key (libp2p `pnet`): 32 random bytes, kept as 64 hex characters in
//! a file readable by its owner only. Peers without it cannot complete a connection.

use std::path::Path;

/// Writes a new secret to `path` (0600; an existing file is never overwritten).
pub fn create(path: &Path) -> Result<(), String> {
    let mut key = [0u8; 32];
    aws_lc_rs::rand::fill(&mut key).map_err(|_| "the system random generator failed".to_string())?;
    let text = format!("{}\n", hex::encode(key));
    crate::storage::files::write_private_file(path, text.as_bytes()).map_err(|e| match e.kind() {
        std::io::ErrorKind::AlreadyExists => format!("{} already exists; a cluster secret is never overwritten", path.display()),
        _ => format!("cannot write {}: {e}", path.display()),
    })
}

/// Reads the secret at `path`; a missing, unreadable, too open or malformed file is an error
/// naming it (and never printing its content).
pub fn load(path: &Path) -> Result<[u8; 32], String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cluster.secret_file {}: {e}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)
            .map_err(|e| format!("cluster.secret_file {}: {e}", path.display()))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(format!(
                "cluster.secret_file {} is readable by others (mode {:o}); chmod 600 it",
                path.display(),
                mode & 0o777
            ));
        }
    }
    let bytes = hex::decode(text.trim()).map_err(|_| format!("cluster.secret_file {} is not 64 hex characters", path.display()))?;
    bytes
        .try_into()
        .map_err(|_| format!("cluster.secret_file {} is not 64 hex characters (32 bytes)", path.display()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_new_secret_loads_and_is_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("cluster.secret");
        super::create(&p).unwrap();
        let k = super::load(&p).unwrap();
        assert_ne!(k, [0u8; 32]);
        assert!(super::create(&p).unwrap_err().contains("never overwritten"));
        std::fs::write(dir.path().join("bad"), "xyz").unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir.path().join("bad"), std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        assert!(super::load(&dir.path().join("bad")).unwrap_err().contains("64 hex"));
    }
}
