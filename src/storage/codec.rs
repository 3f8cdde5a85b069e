//! The one place that knows how records are encoded: a format-version byte, then bincode 2
//! (serde mode, standard config, 64 MiB limit so a corrupt length cannot allocate unbounded).
//! Decoding checks the version and that every byte was consumed.

use serde::de::DeserializeOwned;
use serde::Serialize;

/// The current on-disk format. Bump it when an encoded type changes incompatibly and teach
/// `decode` to read the older versions.
pub const FORMAT_VERSION: u8 = 1;

const LIMIT: usize = 64 * 1024 * 1024;

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<LIMIT>()
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CodecError {
    #[error("empty record")]
    Empty,
    #[error("unknown format version {0} (this build reads version {FORMAT_VERSION})")]
    UnknownVersion(u8),
    #[error("undecodable record: {0}")]
    Malformed(String),
    #[error("{0} trailing bytes after the record")]
    Trailing(usize),
}

pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = vec![FORMAT_VERSION];
    // Encoding our own in-memory types into a Vec cannot fail short of a serde bug.
    let body = bincode::serde::encode_to_vec(value, config()).expect("bincode encoding of an in-memory value failed");
    out.extend_from_slice(&body);
    out
}

/// The digest of a value's encoding: how an entity recognises the command a request id
/// carried (the actor host and the memory host compute it alike).
pub fn digest<T: Serialize>(value: &T) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    Sha256::digest(encode(value)).into()
}

pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let (&version, body) = bytes.split_first().ok_or(CodecError::Empty)?;
    if version != FORMAT_VERSION {
        return Err(CodecError::UnknownVersion(version));
    }
    let (value, used) = bincode::serde::decode_from_slice(body, config()).map_err(|e| CodecError::Malformed(e.to_string()))?;
    if used != body.len() {
        return Err(CodecError::Trailing(body.len() - used));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal::Decimal;
    use std::str::FromStr;

    #[test]
    fn round_trip_and_rejections() {
        let v = (Decimal::from_str("1234.5600").unwrap(), "x".to_string(), 7u64);
        let bytes = encode(&v);
        assert_eq!(bytes[0], FORMAT_VERSION);
        let back: (Decimal, String, u64) = decode(&bytes).unwrap();
        assert_eq!(back, v);
        assert_eq!(back.0.to_string(), "1234.5600");
        assert_eq!(decode::<u64>(&[]), Err(CodecError::Empty));
        assert!(matches!(decode::<u64>(&[9, 1]), Err(CodecError::UnknownVersion(9))));
        let mut long = bytes.clone();
        long.push(0);
        assert!(matches!(decode::<(Decimal, String, u64)>(&long), Err(CodecError::Trailing(1))));
        assert!(matches!(
            decode::<(Decimal, String, u64)>(&bytes[..bytes.len() - 2]),
            Err(CodecError::Malformed(_))
        ));
    }
}
