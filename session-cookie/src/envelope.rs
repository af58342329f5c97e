//! The sealed cookie value: a versioned envelope around XChaCha20-Poly1305.
//!
//! ```text
//! base64url( version | flags | key id (4) | nonce (24) | ciphertext | tag (16) )
//! ```
//!
//! The first six bytes (the header) and the cookie's name are the associated data:
//! changing any of them, or presenting the value under another cookie name, fails
//! authentication like changing the ciphertext does.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use chacha20poly1305::aead::{Aead, Payload};
use chacha20poly1305::XNonce;

use crate::key::Key;

/// The envelope's version; a cookie of any other version is refused.
const VERSION: u8 = 1;
/// Flag: the plaintext was deflated before sealing.
const DEFLATED: u8 = 1;
const HEADER_LEN: usize = 6;
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
/// The shortest possible envelope: a header, a nonce and a tag.
const MIN_LEN: usize = HEADER_LEN + NONCE_LEN + TAG_LEN;
/// Values longer than a browser could have sent are not even decoded.
const MAX_VALUE_LEN: usize = 4096;
/// A deflated plaintext may not inflate past this: a cookie of at most 4 KB that
/// would is hostile, not a session.
const MAX_INFLATED_LEN: usize = 64 * 1024;

/// What a store does with a plaintext before sealing it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Compression {
    /// Plaintexts of at least this many bytes are deflated (if that makes them
    /// smaller); `None` never deflates.
    pub(crate) threshold: Option<usize>,
}

/// Seals `plaintext` for the cookie `name` under `key`, with a fresh random nonce.
pub(crate) fn seal(key: &Key, name: &str, plaintext: &[u8], compression: Compression) -> String {
    let mut nonce = [0u8; NONCE_LEN];
    // A nonce must never repeat under one key; without the OS generator there is no
    // safe way to seal at all.
    getrandom::fill(&mut nonce).expect("the OS random generator failed");
    seal_with_nonce(key, name, plaintext, compression, nonce)
}

pub(crate) fn seal_with_nonce(
    key: &Key,
    name: &str,
    plaintext: &[u8],
    compression: Compression,
    nonce: [u8; NONCE_LEN],
) -> String {
    let deflated = compression
        .threshold
        .filter(|&threshold| plaintext.len() >= threshold)
        .map(|_| miniz_oxide::deflate::compress_to_vec(plaintext, 6))
        .filter(|deflated| deflated.len() < plaintext.len());
    let (flags, body) = match &deflated {
        Some(deflated) => (DEFLATED, deflated.as_slice()),
        None => (0, plaintext),
    };
    let header = [VERSION, flags, key.id[0], key.id[1], key.id[2], key.id[3]];
    let aad = associated_data(&header, name);
    // Encryption with a valid key and nonce only fails past 256 GiB of plaintext.
    let ciphertext = key
        .cipher
        .encrypt(
            XNonce::from_slice(&nonce),
            Payload {
                msg: body,
                aad: &aad,
            },
        )
        .expect("XChaCha20-Poly1305 seals any cookie-sized plaintext");
    let mut envelope = Vec::with_capacity(HEADER_LEN + NONCE_LEN + ciphertext.len());
    envelope.extend_from_slice(&header);
    envelope.extend_from_slice(&nonce);
    envelope.extend_from_slice(&ciphertext);
    URL_SAFE_NO_PAD.encode(envelope)
}

/// Opens a value sealed for `name` by one of `keys`; returns the plaintext and the
/// index of the key that opened it. Anything else, of any shape, is `None`.
pub(crate) fn open(keys: &[Key], name: &str, value: &str) -> Option<(Vec<u8>, usize)> {
    if value.len() > MAX_VALUE_LEN {
        return None;
    }
    let envelope = URL_SAFE_NO_PAD.decode(value).ok()?;
    if envelope.len() < MIN_LEN || envelope[0] != VERSION || envelope[1] & !DEFLATED != 0 {
        return None;
    }
    let (header, rest) = envelope.split_at(HEADER_LEN);
    let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
    let aad = associated_data(header, name);
    // Key ids are public (every cookie shows one); two keys may share one, so every
    // key with the id is tried.
    let (body, index) = keys
        .iter()
        .enumerate()
        .filter(|(_, key)| key.id == header[2..HEADER_LEN])
        .find_map(|(index, key)| {
            let payload = Payload {
                msg: ciphertext,
                aad: &aad,
            };
            let body = key
                .cipher
                .decrypt(XNonce::from_slice(nonce), payload)
                .ok()?;
            Some((body, index))
        })?;
    if header[1] & DEFLATED == 0 {
        return Some((body, index));
    }
    let inflated =
        miniz_oxide::inflate::decompress_to_vec_with_limit(&body, MAX_INFLATED_LEN).ok()?;
    Some((inflated, index))
}

fn associated_data(header: &[u8], name: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(header.len() + name.len());
    aad.extend_from_slice(header);
    aad.extend_from_slice(name.as_bytes());
    aad
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLAIN: Compression = Compression { threshold: None };

    fn key(byte: u8) -> Key {
        Key::from_bytes(&[byte; 32]).expect("key")
    }

    /// docs/security.md 20, known answers: this envelope was produced by this code and
    /// checked against an independent XChaCha20-Poly1305 (Python's `cryptography`
    /// ChaCha20-Poly1305 with HChaCha20 written out); it must keep opening, and
    /// sealing with its nonce must keep producing it, or cookies already issued
    /// would stop working.
    #[test]
    fn known_answer() {
        let key = key(0x11);
        let nonce: [u8; NONCE_LEN] = std::array::from_fn(|i| i as u8);
        let sealed = seal_with_nonce(&key, "id", b"{\"hello\":\"world\"}", PLAIN, nonce);
        assert_eq!(sealed, KNOWN_ENVELOPE);
        assert_eq!(
            open(&[key], "id", KNOWN_ENVELOPE),
            Some((b"{\"hello\":\"world\"}".to_vec(), 0))
        );
    }

    const KNOWN_ENVELOPE: &str = include_str!("../tests/vectors/envelope-v1.txt");

    #[test]
    fn every_single_byte_change_is_refused() {
        let key = key(0x22);
        let sealed = seal(&key, "id", b"{\"user\":\"alice\"}", PLAIN);
        let envelope = URL_SAFE_NO_PAD.decode(&sealed).expect("base64");
        assert!(open(std::slice::from_ref(&key), "id", &sealed).is_some());
        for position in 0..envelope.len() {
            for flip in [0x01, 0x80, 0xff] {
                let mut tampered = envelope.clone();
                tampered[position] ^= flip;
                let tampered = URL_SAFE_NO_PAD.encode(&tampered);
                assert_eq!(
                    open(std::slice::from_ref(&key), "id", &tampered),
                    None,
                    "byte {position} ^ {flip:#x} was accepted"
                );
            }
        }
    }

    #[test]
    fn another_name_or_key_is_refused() {
        let sealed = seal(&key(1), "id", b"{}", PLAIN);
        assert_eq!(open(&[key(1)], "other", &sealed), None);
        assert_eq!(open(&[key(2)], "id", &sealed), None);
        assert_eq!(
            open(&[key(2), key(1)], "id", &sealed),
            Some((b"{}".to_vec(), 1))
        );
    }

    #[test]
    fn compression_applies_past_the_threshold_and_round_trips() {
        let compressible = vec![b'a'; 3000];
        let deflating = Compression {
            threshold: Some(256),
        };
        let small = seal(&key(3), "id", &compressible, deflating);
        let large = seal(&key(3), "id", &compressible, PLAIN);
        assert!(small.len() < 200, "{}", small.len());
        assert!(large.len() > 4000, "{}", large.len());
        assert_eq!(open(&[key(3)], "id", &small), Some((compressible, 0)));
        // Below the threshold nothing is deflated.
        let short = seal(&key(3), "id", b"aaaa", deflating);
        let envelope = URL_SAFE_NO_PAD.decode(&short).expect("base64");
        assert_eq!(envelope[1], 0);
    }

    #[test]
    fn a_deflate_bomb_is_refused() {
        let key = key(4);
        let bomb = miniz_oxide::deflate::compress_to_vec(&vec![0u8; 1 << 20], 10);
        assert!(bomb.len() < 4096);
        let nonce = [9u8; NONCE_LEN];
        let header = [
            VERSION, DEFLATED, key.id[0], key.id[1], key.id[2], key.id[3],
        ];
        let ciphertext = key
            .cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: &bomb,
                    aad: &associated_data(&header, "id"),
                },
            )
            .expect("seal");
        let mut envelope = header.to_vec();
        envelope.extend_from_slice(&nonce);
        envelope.extend_from_slice(&ciphertext);
        assert_eq!(open(&[key], "id", &URL_SAFE_NO_PAD.encode(envelope)), None);
    }
}
