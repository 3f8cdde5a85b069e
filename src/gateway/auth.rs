//! Authentication: Ed25519-signed JWT access tokens (with a published JWKS) and Argon2id
//! password hashing on the blocking pool behind a concurrency cap.
//!
//! The signing key is read from `<data_dir>/keys/jwt-ed25519.pk8` (PKCS#8), or generated there on
//! first start with 0600 permissions. It is never logged.

use crate::config::AuthConfig;
use crate::domain::account::Role;
use crate::gateway::problem::ApiError;
pub use crate::storage::files::{create_private_dir, write_private_file};
use argon2::{Argon2, PasswordHasher, PasswordVerifier};
use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::Path;
use std::sync::Arc;
use tokio::sync::Semaphore;

pub const TOKEN_TYPE: &str = "at+jwt";
/// Refresh tokens: `rt1.<user id>.<session id>.<256 random bits, base64url>`.
const REFRESH_PREFIX: &str = "rt1";

/// A refresh token as presented: where it routes, and the hash the account compares.
pub struct PresentedRefresh {
    pub user_id: String,
    pub family: String,
    pub hash: [u8; 32],
}

pub fn refresh_token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// A new refresh token of a session: the token (given once to the client) and its hash (stored).
pub fn new_refresh_token(user_id: &str, family: &str) -> (String, [u8; 32]) {
    let mut secret = [0u8; 32];
    aws_lc_rs::rand::fill(&mut secret).expect("system randomness");
    let token = format!(
        "{REFRESH_PREFIX}.{user_id}.{family}.{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret)
    );
    let hash = refresh_token_hash(&token);
    (token, hash)
}

pub fn parse_refresh_token(token: &str) -> Option<PresentedRefresh> {
    if token.len() > 512 {
        return None;
    }
    let mut parts = token.split('.');
    let (prefix, user_id, family, secret) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let plain = |s: &str| !s.is_empty() && s.len() <= 64 && s.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_');
    if parts.next().is_some() || prefix != REFRESH_PREFIX || !plain(user_id) || !plain(family) || secret.len() != 43 {
        return None;
    }
    Some(PresentedRefresh {
        user_id: user_id.to_string(),
        family: family.to_string(),
        hash: refresh_token_hash(token),
    })
}

pub use crate::actors::random_id;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    pub iss: String,
    pub aud: String,
    pub sub: String,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
    pub jti: String,
    pub roles: Vec<Role>,
    /// Authentication methods (RFC 8176): `pwd`, and `otp` after a TOTP code.
    pub amr: Vec<String>,
    /// The refresh-token family (session) this token was issued under; logout revokes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
}

pub struct SigningKey {
    pub kid: String,
    encoding: EncodingKey,
    decoding: DecodingKey,
    public_x: String,
}

pub struct Auth {
    /// The active signing key first, then retired keys still published for verification.
    keys: Vec<SigningKey>,
    issuer: String,
    audience: String,
    ttl_secs: i64,
    hashing: Arc<Semaphore>,
    /// A real Argon2id hash of a random password: verified against when the email is unknown,
    /// so the answer takes as long as for a known email.
    dummy_hash: String,
    /// Tokens already verified (`token_cache`): a token seen again is not verified again.
    verified: super::token_cache::VerifiedTokens,
}

/// Seconds a token is accepted before its `nbf` (clock skew: a token issued by a node whose
/// clock runs a little ahead). Past its `exp` a token is refused from that second on, with no
/// leeway: the expiry a client was given is the one held.
const LEEWAY_SECS: i64 = 5;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("key file {path}: {reason}")]
    File { path: String, reason: String },
}

fn key_err(path: &Path, reason: impl ToString) -> KeyError {
    KeyError::File {
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

/// Reads the signing key, or generates one (0600, in a 0700 folder) on first start.
pub fn load_or_create_signing_key(keys_dir: &Path) -> Result<SigningKey, KeyError> {
    use aws_lc_rs::signature::Ed25519KeyPair;
    let path = keys_dir.join("jwt-ed25519.pk8");
    let pkcs8 = if path.exists() {
        std::fs::read(&path).map_err(|e| key_err(&path, e))?
    } else {
        create_private_dir(keys_dir).map_err(|e| key_err(keys_dir, e))?;
        let doc = Ed25519KeyPair::generate_pkcs8(&aws_lc_rs::rand::SystemRandom::new()).map_err(|_| key_err(&path, "key generation failed"))?;
        write_private_file(&path, doc.as_ref()).map_err(|e| key_err(&path, e))?;
        doc.as_ref().to_vec()
    };
    crate::storage::files::check_private_file(&path).map_err(|e| key_err(&path, e))?;
    signing_key_from_pkcs8(&path, &pkcs8)
}

/// Public halves of retired signing keys (`keys/jwt-retired/*.pk8`): tokens they signed still
/// verify until they expire, and the JWKS keeps publishing them through a rotation.
pub fn load_retired_keys(keys_dir: &Path) -> Result<Vec<SigningKey>, KeyError> {
    let dir = keys_dir.join("jwt-retired");
    if !dir.exists() {
        return Ok(Vec::new());
    }
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .map_err(|e| key_err(&dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "pk8"))
        .collect();
    paths.sort();
    paths.iter().map(|p| signing_key_from_file(p)).collect()
}

fn signing_key_from_file(path: &Path) -> Result<SigningKey, KeyError> {
    let pkcs8 = std::fs::read(path).map_err(|e| key_err(path, e))?;
    crate::storage::files::check_private_file(path).map_err(|e| key_err(path, e))?;
    signing_key_from_pkcs8(path, &pkcs8)
}

fn signing_key_from_pkcs8(path: &Path, pkcs8: &[u8]) -> Result<SigningKey, KeyError> {
    use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
    let pair = Ed25519KeyPair::from_pkcs8(pkcs8).map_err(|_| key_err(path, "not an Ed25519 PKCS#8 key"))?;
    let public = pair.public_key().as_ref().to_vec();
    let kid = hex::encode(&Sha256::digest(&public)[..8]);
    Ok(SigningKey {
        kid,
        encoding: EncodingKey::from_ed_der(pkcs8),
        decoding: DecodingKey::from_ed_der(&public),
        public_x: base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&public),
    })
}

/// Rotates the signing key: the active key moves to `jwt-retired/` (still verifying and
/// published) and a new one is generated. Run while the node is stopped.
pub fn rotate_signing_key(keys_dir: &Path, now_secs: i64) -> Result<String, KeyError> {
    let active = keys_dir.join("jwt-ed25519.pk8");
    if active.exists() {
        // Only a key that verifies goes into retirement: a damaged one would be kept and
        // published, and stop the node at its next start.
        signing_key_from_file(&active)?;
        load_retired_keys(keys_dir)?;
        let retired = keys_dir.join("jwt-retired");
        create_private_dir(&retired).map_err(|e| key_err(&retired, e))?;
        let to = retired.join(format!("{now_secs}.pk8"));
        std::fs::rename(&active, &to).map_err(|e| key_err(&to, e))?;
    }
    Ok(load_or_create_signing_key(keys_dir)?.kid)
}

impl Auth {
    pub fn new(key: SigningKey, retired: Vec<SigningKey>, cfg: &AuthConfig) -> Auth {
        let mut random = [0u8; 24];
        aws_lc_rs::rand::fill(&mut random).expect("system randomness");
        let dummy_hash = Argon2::default().hash_password(&random).expect("argon2 hash of a dummy password").to_string();
        let active_kid = key.kid.clone();
        let mut keys = vec![key];
        keys.extend(retired.into_iter().filter(|k| k.kid != active_kid));
        Auth {
            keys,
            issuer: cfg.issuer.clone(),
            audience: cfg.audience.clone(),
            ttl_secs: cfg.access_token_ttl.as_secs() as i64,
            hashing: Arc::new(Semaphore::new(cfg.hash_concurrency)),
            dummy_hash,
            verified: super::token_cache::VerifiedTokens::new(super::token_cache::VERIFIED_TOKENS_MAX, 0),
        }
    }

    pub fn ttl_secs(&self) -> i64 {
        self.ttl_secs
    }

    pub fn issue(&self, user_id: &str, roles: &[Role], amr: &[String], sid: Option<&str>, now_secs: i64) -> String {
        let mut jti = [0u8; 16];
        aws_lc_rs::rand::fill(&mut jti).expect("system randomness");
        let claims = Claims {
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            sub: user_id.to_string(),
            iat: now_secs,
            nbf: now_secs,
            exp: now_secs + self.ttl_secs,
            jti: hex::encode(jti),
            roles: roles.to_vec(),
            amr: amr.to_vec(),
            sid: sid.map(str::to_string),
        };
        let mut header = Header::new(Algorithm::EdDSA);
        header.typ = Some(TOKEN_TYPE.into());
        header.kid = Some(self.keys[0].kid.clone());
        jsonwebtoken::encode(&header, &claims, &self.keys[0].encoding).expect("signing a token with a loaded key")
    }

    /// Verifies an access token: EdDSA only, our `kid`, `typ: at+jwt`, no embedded keys,
    /// issuer, audience, expiry and not-before — once per token: a token verified before is
    /// taken from the cache of verified tokens until it expires. (Revocation is not part of
    /// this: the caller checks it on every request.)
    pub fn verify(&self, token: &str) -> Result<Claims, ApiError> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        if let Some(c) = self.verified.get(token, now) {
            return Ok(c);
        }
        let c = self.verify_signed(token)?;
        if c.exp <= now {
            return Err(ApiError::unauthorized("invalid access token: expired"));
        }
        self.verified.put(token, &c, now);
        Ok(c)
    }

    fn verify_signed(&self, token: &str) -> Result<Claims, ApiError> {
        let bad = |why: &str| ApiError::unauthorized(format!("invalid access token: {why}"));
        let header = jsonwebtoken::decode_header(token).map_err(|_| bad("malformed"))?;
        if header.alg != Algorithm::EdDSA {
            return Err(bad("unsupported algorithm"));
        }
        if header.typ.as_deref() != Some(TOKEN_TYPE) {
            return Err(bad("wrong token type"));
        }
        if header.jwk.is_some() || header.jku.is_some() || header.x5u.is_some() || header.x5c.is_some() {
            return Err(bad("embedded keys are not accepted"));
        }
        // RFC 7515 §4.1.11: a critical extension we do not understand (we understand none).
        if header.crit.is_some() {
            return Err(bad("critical header extensions are not supported"));
        }
        let Some(key) = self.keys.iter().find(|k| Some(k.kid.as_str()) == header.kid.as_deref()) else {
            return Err(bad("unknown key"));
        };
        let mut v = Validation::new(Algorithm::EdDSA);
        v.set_issuer(&[&self.issuer]);
        v.set_audience(&[&self.audience]);
        v.validate_nbf = true;
        v.leeway = LEEWAY_SECS as u64;
        v.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
        jsonwebtoken::decode::<Claims>(token, &key.decoding, &v)
            .map(|d| d.claims)
            .map_err(|e| bad(&e.kind_label()))
    }

    /// The public keys that verify this node's tokens (published to the metadata group).
    pub fn verification_keys(&self) -> Vec<crate::cluster::meta::VerificationKey> {
        self.keys
            .iter()
            .map(|k| crate::cluster::meta::VerificationKey {
                kid: k.kid.clone(),
                x: k.public_x.clone(),
            })
            .collect()
    }

    pub fn jwks(&self) -> serde_json::Value {
        self.jwks_with(&[])
    }

    /// This node's keys and every other member's (from the metadata group), once per key id.
    pub fn jwks_with(&self, members: &[crate::cluster::meta::VerificationKey]) -> serde_json::Value {
        let mut all = self.verification_keys();
        for k in members {
            if !all.iter().any(|mine| mine.kid == k.kid) {
                all.push(k.clone());
            }
        }
        let keys: Vec<_> = all
            .iter()
            .map(|k| serde_json::json!({ "kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "use": "sig", "kid": k.kid, "x": k.x }))
            .collect();
        serde_json::json!({ "keys": keys })
    }

    /// Argon2id (OWASP parameters) on the blocking pool, at most `hash_concurrency` at once.
    pub async fn hash_password(&self, password: String) -> Result<String, ApiError> {
        let _permit = self.hashing.clone().acquire_owned().await.map_err(|_| ApiError::internal())?;
        tokio::task::spawn_blocking(move || Argon2::default().hash_password(password.as_bytes()).map(|h| h.to_string()))
            .await
            .map_err(|_| ApiError::internal())?
            .map_err(|_| ApiError::internal())
    }

    /// Verifies a password against a stored hash (or the dummy hash when there is none).
    pub async fn verify_password(&self, password: String, stored: Option<String>) -> Result<bool, ApiError> {
        let _permit = self.hashing.clone().acquire_owned().await.map_err(|_| ApiError::internal())?;
        let known = stored.is_some();
        let hash = stored.unwrap_or_else(|| self.dummy_hash.clone());
        let ok = tokio::task::spawn_blocking(move || {
            <Argon2 as PasswordVerifier<str>>::verify_password(&Argon2::default(), password.as_bytes(), hash.as_str()).is_ok()
        })
        .await
        .map_err(|_| ApiError::internal())?;
        Ok(ok && known)
    }
}

trait KindLabel {
    fn kind_label(&self) -> String;
}

impl KindLabel for jsonwebtoken::errors::Error {
    fn kind_label(&self) -> String {
        use jsonwebtoken::errors::ErrorKind;
        match self.kind() {
            ErrorKind::ExpiredSignature => "expired".into(),
            ErrorKind::ImmatureSignature => "not yet valid".into(),
            ErrorKind::InvalidAudience => "wrong audience".into(),
            ErrorKind::InvalidIssuer => "wrong issuer".into(),
            ErrorKind::InvalidSignature => "bad signature".into(),
            ErrorKind::MissingRequiredClaim(c) => format!("missing claim {c}"),
            _ => "rejected".into(),
        }
    }
}
