//! Session ids (the secret the client holds) and session keys (what stores see).

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Random bytes in an id: 192 bits, comfortably above the 128 that OWASP asks for.
const ID_BYTES: usize = 24;
/// Length of an encoded id: 24 bytes are exactly 32 base64url characters, so every
/// character carries 6 uniform bits and there is no padding to canonicalise.
pub(crate) const ID_LEN: usize = 32;

/// The secret that names a session, carried by the client in a cookie or header.
///
/// It is made only from the operating system's random generator and never printed:
/// `Debug` shows `SessionId(…)`. Stores never see it; they see its [`SessionKey`].
/// Comparing two ids takes the same time wherever they differ.
#[derive(Clone)]
pub struct SessionId([u8; ID_BYTES]);

/// Constant time (docs/security.md 25): an id is a secret, and `==` on bytes stops at the
/// first difference.
impl PartialEq for SessionId {
    fn eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl Eq for SessionId {}

impl SessionId {
    /// Draws a fresh id from the OS random generator.
    ///
    /// # Panics
    ///
    /// If the operating system cannot provide randomness, which leaves no safe way
    /// to issue sessions at all.
    pub(crate) fn generate() -> Self {
        let mut bytes = [0u8; ID_BYTES];
        // An OS without a working CSPRNG cannot issue safe ids; refusing is the only
        // secure answer, and it does not happen on any supported platform.
        getrandom::fill(&mut bytes).expect("the OS random generator failed");
        Self(bytes)
    }

    /// Parses an id as the client sent it. Anything that is not exactly 32 base64url
    /// characters is rejected.
    pub fn parse(token: &str) -> Option<Self> {
        Self::parse_bytes(token.as_bytes())
    }

    /// [`parse`](Self::parse) for a header's bytes, which need not be text.
    ///
    /// Decoded by hand: the `base64` crate's general decoder, made for any length,
    /// took 460 of the ~5,000 instructions the layer adds to a request; a table
    /// lookup per character takes about 240 (`scripts/instructions-per-request`).
    pub(crate) fn parse_bytes(token: &[u8]) -> Option<Self> {
        if token.len() != ID_LEN {
            return None;
        }
        let mut bytes = [0u8; ID_BYTES];
        // One test for the whole id, after it, rather than a branch per character.
        let mut seen = 0u8;
        for (four, three) in token.chunks_exact(4).zip(bytes.chunks_exact_mut(3)) {
            let mut bits = 0u32;
            for &character in four {
                let value = DECODE[usize::from(character)];
                seen |= value;
                bits = bits << 6 | u32::from(value);
            }
            three.copy_from_slice(&bits.to_be_bytes()[1..]);
        }
        (seen & NOT_IN_ALPHABET == 0).then_some(Self(bytes))
    }

    /// The id as the client carries it: 32 base64url characters.
    pub(crate) fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.0)
    }

    /// The key under which stores keep this session: a versioned hash of the id.
    pub fn key(&self) -> SessionKey {
        let mut hasher = Sha256::new();
        hasher.update(KEY_DOMAIN);
        hasher.update(self.0);
        SessionKey(hasher.finalize().into())
    }
}

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionId(…)")
    }
}

/// The base64url alphabet ids are written in.
const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
/// Set in [`DECODE`] for every byte outside the alphabet; no 6-bit value has it.
const NOT_IN_ALPHABET: u8 = 0x80;
/// Each byte's 6-bit value in [`ALPHABET`], or [`NOT_IN_ALPHABET`].
const DECODE: [u8; 256] = {
    let mut table = [NOT_IN_ALPHABET; 256];
    let mut value = 0;
    while value < ALPHABET.len() {
        table[ALPHABET[value] as usize] = value as u8;
        value += 1;
    }
    table
};

/// Domain separation for the key hash; the version in it changes if the hash does.
const KEY_DOMAIN: &[u8] = b"session-kit key v1\0";
/// Prefix of a key's text form, naming the hash version.
const KEY_PREFIX: &str = "v1.";
const KEY_TEXT_LEN: usize = KEY_PREFIX.len() + 43;

/// What stores key a session by: a hash of its [`SessionId`].
///
/// A dump of a store yields keys, and a key is no use as a cookie: the layer hashes
/// whatever the client sends, so presenting a key names a different session.
/// The text form (`Display`) is `v1.` followed by 43 base64url characters.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct SessionKey([u8; 32]);

/// Writes the 32 bytes and nothing else, so that a map can take its hash straight from
/// them: they are SHA-256 output, already uniform.
impl std::hash::Hash for SessionKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write(&self.0);
    }
}

/// Hashes [`SessionKey`]s for a `HashMap` (or any map taking a `BuildHasher`) by
/// their first eight bytes: keys are SHA-256 output, already uniform, so those bytes
/// make a hash as good as any hasher would, for none of the work. Stores that keep
/// sessions in process use it.
///
/// ```
/// use std::collections::HashMap;
/// use session_core::store::{KeyHasher, SessionKey};
///
/// let mut sessions = HashMap::with_hasher(KeyHasher);
/// let key = SessionKey::from_bytes([7; 32]);
/// sessions.insert(key, "record");
/// assert_eq!(sessions.get(&key), Some(&"record"));
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct KeyHasher;

impl std::hash::BuildHasher for KeyHasher {
    type Hasher = KeyHash;

    fn build_hasher(&self) -> KeyHash {
        KeyHash(0)
    }
}

/// The hasher [`KeyHasher`] builds.
#[derive(Debug)]
pub struct KeyHash(u64);

impl std::hash::Hasher for KeyHash {
    fn finish(&self) -> u64 {
        self.0
    }

    /// Takes the first eight bytes of what it is given (`SessionKey` hashes as one
    /// write of its 32 bytes).
    fn write(&mut self, bytes: &[u8]) {
        let word = match bytes.first_chunk::<8>() {
            Some(first) => *first,
            None => {
                let mut short = [0u8; 8];
                short[..bytes.len()].copy_from_slice(bytes);
                short
            }
        };
        self.0 ^= u64::from_le_bytes(word);
    }
}

impl SessionKey {
    /// Parses the text form produced by `Display`, as a store reads it back.
    pub fn parse(text: &str) -> Option<Self> {
        if text.len() != KEY_TEXT_LEN {
            return None;
        }
        let encoded = text.strip_prefix(KEY_PREFIX)?;
        let mut bytes = [0u8; 32];
        match URL_SAFE_NO_PAD.decode_slice(encoded, &mut bytes) {
            Ok(32) => Some(Self(bytes)),
            _ => None,
        }
    }

    /// The raw hash bytes, for stores that keep binary keys.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// A key from raw hash bytes: as a store reads a binary key back, or for a record
    /// that is not a session, under a hash of another domain (no id hashes to it).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }
}

impl fmt::Display for SessionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Encoded on the stack: stores format a key for every call they make.
        let mut text = [0u8; KEY_TEXT_LEN - KEY_PREFIX.len()];
        let written = URL_SAFE_NO_PAD
            .encode_slice(self.0, &mut text)
            .map_err(|_| fmt::Error)?;
        let encoded = std::str::from_utf8(&text[..written]).map_err(|_| fmt::Error)?;
        f.write_str(KEY_PREFIX)?;
        f.write_str(encoded)
    }
}

impl fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionKey({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    /// A key hashes to its first eight bytes; shorter writes (what other `Hash`
    /// impls may send) are taken zero-padded, and writes combine.
    #[test]
    fn key_hash_takes_the_first_eight_bytes_of_each_write() {
        use std::hash::{BuildHasher, Hasher};
        let mut bytes = [0u8; 32];
        bytes[..9].copy_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8, 9]);
        let key = SessionKey::from_bytes(bytes);
        assert_eq!(KeyHasher.hash_one(key), 0x0807_0605_0403_0201);
        let mut short = KeyHasher.build_hasher();
        short.write(&[1, 2, 3]);
        assert_eq!(short.finish(), 0x03_0201);
        short.write(&[1]);
        assert_eq!(short.finish(), 0x03_0200);
    }

    /// docs/security.md 1: a million ids, right length and alphabet, no duplicates, and every
    /// position uniform over the 64 characters by a χ² test.
    #[test]
    fn a_million_ids_are_unique_and_uniform() {
        const N: usize = 1_000_000;
        let mut seen = HashSet::with_capacity(N);
        let mut counts = vec![[0u32; 64]; ID_LEN];
        for _ in 0..N {
            let token = SessionId::generate().encode();
            assert_eq!(token.len(), ID_LEN);
            for (position, byte) in token.bytes().enumerate() {
                let symbol = ALPHABET
                    .iter()
                    .position(|&c| c == byte)
                    .expect("character outside the base64url alphabet");
                counts[position][symbol] += 1;
            }
            assert!(seen.insert(token), "duplicate id");
        }
        let expected = N as f64 / 64.0;
        for (position, column) in counts.iter().enumerate() {
            let chi2: f64 = column
                .iter()
                .map(|&observed| (observed as f64 - expected).powi(2) / expected)
                .sum();
            // 63 degrees of freedom: the 99.99th percentile is about 117.
            assert!(chi2 < 117.0, "position {position}: χ² = {chi2}");
        }
    }

    #[test]
    fn parse_round_trips_and_rejects_everything_else() {
        let id = SessionId::generate();
        assert_eq!(SessionId::parse(&id.encode()), Some(id.clone()));
        for bad in [
            "",
            "short",
            &"A".repeat(31),
            &"A".repeat(33),
            &format!("{}=", "A".repeat(31)),
            &format!("{}+", "A".repeat(31)),
            &format!("{}é", "A".repeat(30)),
        ] {
            assert_eq!(SessionId::parse(bad), None, "{bad:?}");
        }
    }

    /// The decoder agrees with the `base64` crate's on every byte value at every
    /// position of an id (the crate accepts exactly the alphabet, and no padding).
    #[test]
    fn parse_decodes_as_the_base64_crate_does() {
        for _ in 0..8 {
            let genuine = SessionId::generate().encode().into_bytes();
            for position in 0..ID_LEN {
                for byte in 0..=u8::MAX {
                    let mut token = genuine.clone();
                    token[position] = byte;
                    let mut decoded = [0u8; ID_BYTES];
                    let expected = URL_SAFE_NO_PAD
                        .decode_slice(&token, &mut decoded)
                        .ok()
                        .map(|_| decoded);
                    assert_eq!(
                        SessionId::parse_bytes(&token).map(|id| id.0),
                        expected,
                        "byte {byte:#04x} at {position}"
                    );
                }
            }
        }
    }

    #[test]
    fn key_text_round_trips_and_is_no_id() {
        let id = SessionId::generate();
        let key = id.key();
        let text = key.to_string();
        assert_eq!(SessionKey::parse(&text), Some(key));
        assert_eq!(SessionId::parse(&text), None);
        assert_ne!(text, id.encode());
        assert_eq!(SessionKey::parse("v2.abc"), None);
    }

    #[test]
    fn ids_compare_by_every_byte() {
        let id = SessionId::generate();
        assert_eq!(id, id.clone());
        for position in 0..ID_BYTES {
            let mut other = id.clone();
            other.0[position] ^= 1;
            assert_ne!(id, other, "a difference at byte {position} went unseen");
        }
    }

    #[test]
    fn debug_hides_the_id() {
        let id = SessionId::generate();
        let printed = format!("{id:?}");
        assert_eq!(printed, "SessionId(…)");
        assert!(!printed.contains(&id.encode()));
    }
}
