//! Keys that seal and open cookies.

use std::fmt;

use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine as _;
use chacha20poly1305::aead::KeyInit;
use chacha20poly1305::XChaCha20Poly1305;
use sha2::{Digest, Sha256};

/// The least key material accepted: 256 bits.
pub const MIN_KEY_BYTES: usize = 32;

/// Domain separation: the cipher key and the key id are different hashes of the
/// material, so the id (which every cookie shows) says nothing about the key.
const CIPHER_DOMAIN: &[u8] = b"session-kit cookie cipher key v1\0";
const ID_DOMAIN: &[u8] = b"session-kit cookie key id v1\0";

/// Key text may come padded or not, in either alphabet.
const ANY_PADDING: GeneralPurposeConfig =
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
const STANDARD: GeneralPurpose = GeneralPurpose::new(&alphabet::STANDARD, ANY_PADDING);
const URL_SAFE: GeneralPurpose = GeneralPurpose::new(&alphabet::URL_SAFE, ANY_PADDING);

/// A key that seals (when it is the current one) and opens cookies.
///
/// Made from at least 32 random bytes, for example the output of
/// `head -c 32 /dev/urandom | base64`. Every cookie names its key by a 4-byte id
/// derived from the key, so a ring of keys opens each cookie with the right one.
/// `Debug` shows the id, never the key.
///
/// ```
/// use session_cookie::Key;
///
/// let key = Key::from_base64("q83vEjRWeJCrze8SNFZ4kKvN7xI0VniQq83vEjRWeJA=")?;
/// assert!(Key::from_base64("dG9vIHNob3J0").is_err());
/// # let _ = key;
/// # Ok::<(), session_cookie::KeyError>(())
/// ```
#[derive(Clone)]
pub struct Key {
    pub(crate) cipher: XChaCha20Poly1305,
    pub(crate) id: [u8; 4],
}

/// Why key material was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// Fewer than 32 bytes.
    #[error("a cookie key needs at least {MIN_KEY_BYTES} bytes, this one has {0}")]
    TooShort(usize),
    /// Not base64 (standard or URL-safe, padded or not).
    #[error("a cookie key must be base64")]
    NotBase64,
}

impl Key {
    /// A key from raw material of at least 32 bytes.
    pub fn from_bytes(material: &[u8]) -> Result<Self, KeyError> {
        if material.len() < MIN_KEY_BYTES {
            return Err(KeyError::TooShort(material.len()));
        }
        let cipher_key = Sha256::new()
            .chain_update(CIPHER_DOMAIN)
            .chain_update(material)
            .finalize();
        let id_hash = Sha256::new()
            .chain_update(ID_DOMAIN)
            .chain_update(material)
            .finalize();
        let mut id = [0u8; 4];
        id.copy_from_slice(&id_hash[..4]);
        Ok(Self {
            cipher: XChaCha20Poly1305::new(&cipher_key),
            id,
        })
    }

    /// A key from base64 text (standard or URL-safe alphabet, padding optional), as
    /// `head -c 32 /dev/urandom | base64` prints it.
    pub fn from_base64(text: &str) -> Result<Self, KeyError> {
        let text = text.trim();
        let material = STANDARD
            .decode(text)
            .or_else(|_| URL_SAFE.decode(text))
            .map_err(|_| KeyError::NotBase64)?;
        Self::from_bytes(&material)
    }

    /// A fresh random key, for tests and for applications that keep no session
    /// across restarts.
    ///
    /// # Panics
    ///
    /// If the operating system cannot provide randomness.
    pub fn generate() -> Self {
        let mut material = [0u8; MIN_KEY_BYTES];
        getrandom::fill(&mut material).expect("the OS random generator failed");
        Self::from_bytes(&material).expect("32 bytes are enough")
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key(id {:02x?})", self.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn material_is_checked_and_either_alphabet_accepted() {
        assert_eq!(
            Key::from_bytes(&[1; 31]).unwrap_err(),
            KeyError::TooShort(31)
        );
        assert!(Key::from_bytes(&[1; 32]).is_ok());
        assert!(Key::from_bytes(&[1; 64]).is_ok());
        assert_eq!(
            Key::from_base64("not base64!").unwrap_err(),
            KeyError::NotBase64
        );
        let standard = STANDARD.encode([0xfb; 32]);
        let url_safe = URL_SAFE.encode([0xfb; 32]);
        assert_ne!(standard, url_safe);
        let a = Key::from_base64(&standard).expect("standard");
        let b = Key::from_base64(url_safe.trim_end_matches('=')).expect("url-safe");
        assert_eq!(a.id, b.id);
    }

    #[test]
    fn debug_shows_the_id_only() {
        let key = Key::from_bytes(&[0x42; 32]).expect("key");
        let printed = format!("{key:?}");
        assert!(printed.starts_with("Key(id "), "{printed}");
        assert!(!printed.contains("42, 42"), "{printed}");
    }
}
