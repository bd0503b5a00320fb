//! Room secrets: hashing a new room's secret and checking a joiner's, with argon2id, bounded
//! so that no burst of joins can cost the instance its memory or its event loop.
//!
//! argon2id is memory-hard on purpose: each hash fills 19 MiB (the crate's default
//! parameters). Run unbounded, twenty concurrent wrong-secret joins took the server to
//! ~400 MB, and glibc kept it afterwards (each blocking thread's arena holds on to what it
//! once freed). So:
//!
//! - at most `SECRET_HASH_CONCURRENCY` hashes run at once (default: one per CPU, since each is
//!   pure CPU work); a join that cannot start within [`QUEUE_WAIT`] gets 503 `unavailable` with
//!   `Retry-After`, and waiting costs it no memory;
//! - the 19 MiB working areas are allocated once per permit and reused (argon2's
//!   `hash_password_into_with_memory`), never freed and allocated again: the instance's
//!   memory for secrets is `SECRET_HASH_CONCURRENCY` × 19 MiB at most, whatever the load.
//!
//! Everything runs on the blocking pool, so the reactor never stalls on a hash.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use argon2::password_hash::{Output, ParamsString, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use subtle::ConstantTimeEq;
use tokio::sync::Semaphore;

use crate::domain::RoomSecret;
use crate::error::ApiError;

/// How long a join may wait for a free hashing slot before it is told to retry.
pub const QUEUE_WAIT: Duration = Duration::from_secs(2);

/// The room secret hasher shared by every transport. Cheap to clone.
#[derive(Clone)]
pub struct SecretHasher {
    permits: Arc<Semaphore>,
    /// argon2's working areas, one per permit at most: a hash takes one and puts it back.
    areas: Arc<Mutex<Vec<Vec<Block>>>>,
}

impl SecretHasher {
    pub fn new(concurrency: usize) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(concurrency.max(1))),
            areas: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// The PHC string (`$argon2id$v=19$m=19456,t=2,p=1$salt$hash`) of a new secret.
    pub async fn hash(&self, secret: RoomSecret) -> Result<String, ApiError> {
        self.run(move |area| hash_into(area, secret.expose().as_bytes()))
            .await?
            .map_err(|err| {
                tracing::error!(error = %err, "hashing a room secret failed");
                ApiError::Unavailable
            })
    }

    /// Whether `secret` is the one `phc` was made from (compared in constant time). A stored
    /// hash that cannot be read, or asks for more memory than ours do, matches nothing.
    pub async fn verify(&self, secret: RoomSecret, phc: String) -> Result<bool, ApiError> {
        self.run(move |area| verify_into(area, secret.expose().as_bytes(), &phc))
            .await
    }

    /// Runs `work` with a working area on the blocking pool, once a permit is free.
    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Vec<Block>) -> T + Send + 'static,
    ) -> Result<T, ApiError> {
        let permit =
            match tokio::time::timeout(QUEUE_WAIT, self.permits.clone().acquire_owned()).await {
                Ok(Ok(permit)) => permit,
                // Timed out (or the semaphore closed, which never happens): too busy right now.
                _ => {
                    metrics::counter!("chat_secret_checks_refused_total", "reason" => "busy")
                        .increment(1);
                    return Err(ApiError::Unavailable);
                }
            };
        let areas = self.areas.clone();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let mut area = lock(&areas).pop().unwrap_or_default();
            let answer = work(&mut area);
            lock(&areas).push(area);
            answer
        })
        .await
        .map_err(|_| ApiError::Unavailable)
    }
}

fn lock(areas: &Mutex<Vec<Vec<Block>>>) -> std::sync::MutexGuard<'_, Vec<Vec<Block>>> {
    areas
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Grows `area` to `blocks` (the first use of an area; our own hashes never need more).
fn area_of(area: &mut Vec<Block>, blocks: usize) -> &mut [Block] {
    if area.len() < blocks {
        area.resize(blocks, Block::default());
    }
    &mut area[..blocks]
}

fn hash_into(area: &mut Vec<Block>, secret: &[u8]) -> Result<String, argon2::password_hash::Error> {
    let params = Params::DEFAULT;
    let salt = SaltString::generate(&mut rand::rngs::OsRng);
    let mut salt_bytes = [0u8; 64];
    let raw_salt = salt.as_salt().decode_b64(&mut salt_bytes)?;
    let mut output = [0u8; Params::DEFAULT_OUTPUT_LEN];
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone())
        .hash_password_into_with_memory(
            secret,
            raw_salt,
            &mut output,
            area_of(area, params.block_count()),
        )?;
    let phc = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(&params)?,
        salt: Some(salt.as_salt()),
        hash: Some(Output::new(&output)?),
    };
    Ok(phc.to_string())
}

fn verify_into(area: &mut Vec<Block>, secret: &[u8], phc: &str) -> bool {
    let checked = (|| {
        let parsed = PasswordHash::new(phc)?;
        let algorithm = Algorithm::try_from(parsed.algorithm)?;
        let version = parsed
            .version
            .map(Version::try_from)
            .transpose()?
            .unwrap_or_default();
        let params = Params::try_from(&parsed)?;
        let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else {
            return Ok(false);
        };
        if params.block_count() > Params::DEFAULT.block_count() {
            tracing::error!("a stored room secret hash asks for more memory than ours; refused");
            return Ok(false);
        }
        let mut salt_bytes = [0u8; 64];
        let raw_salt = salt.decode_b64(&mut salt_bytes)?;
        let mut output = vec![0u8; expected.len()];
        let blocks = params.block_count();
        Argon2::new(algorithm, version, params).hash_password_into_with_memory(
            secret,
            raw_salt,
            &mut output,
            area_of(area, blocks),
        )?;
        Ok::<_, argon2::password_hash::Error>(bool::from(output.ct_eq(expected.as_bytes())))
    })();
    checked.unwrap_or_else(|err| {
        tracing::error!(error = %err, "a stored room secret hash could not be checked");
        false
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_check_that_cannot_start_in_time_is_refused_as_busy() {
        let hasher = SecretHasher::new(1);
        let (release, held) = std::sync::mpsc::channel::<()>();
        let busy = hasher.clone();
        // The one permit, held by a hash that is still running.
        let holder = tokio::spawn(async move { busy.run(move |_| held.recv()).await });
        while hasher.permits.available_permits() > 0 {
            tokio::task::yield_now().await;
        }
        let started = std::time::Instant::now();
        let refused = hasher
            .verify(RoomSecret::parse("secret".into()).unwrap(), "x".into())
            .await;
        assert_eq!(refused, Err(ApiError::Unavailable));
        assert!(started.elapsed() >= QUEUE_WAIT, "{:?}", started.elapsed());
        release.send(()).expect("the holder is waiting");
        holder
            .await
            .expect("the holder ran")
            .expect("it had a permit")
            .expect("released");
        // Free again: a check runs (and a malformed hash matches nothing).
        let checked = hasher
            .verify(RoomSecret::parse("secret".into()).unwrap(), "x".into())
            .await;
        assert_eq!(checked, Ok(false));
    }

    #[test]
    fn a_hash_verifies_its_secret_only_and_reads_as_standard_argon2id() {
        let mut area = Vec::new();
        let phc = hash_into(&mut area, b"open sesame").expect("hashing with default parameters");
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(verify_into(&mut area, b"open sesame", &phc));
        assert!(!verify_into(&mut area, b"open sesame!", &phc));
        assert!(!verify_into(&mut area, b"open sesame", "not a hash"));
        // The argon2 crate's own verifier agrees, so hashes stored before this module (made
        // with `PasswordHasher`) and after it are one format.
        use argon2::password_hash::PasswordVerifier;
        let parsed = PasswordHash::new(&phc).expect("a PHC string");
        assert!(
            Argon2::default()
                .verify_password(b"open sesame", &parsed)
                .is_ok()
        );
        let older = argon2::password_hash::PasswordHasher::hash_password(
            &Argon2::default(),
            b"from before",
            &SaltString::generate(&mut rand::rngs::OsRng),
        )
        .expect("hashing the old way")
        .to_string();
        assert!(verify_into(&mut area, b"from before", &older));
        assert_eq!(
            area.len(),
            Params::DEFAULT.block_count(),
            "one area, reused"
        );
    }
}
