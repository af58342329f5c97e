#!/usr/bin/env python3
"""Computes envelope-v1.txt independently of the Rust code: SHA-256 for the key and
key id, HChaCha20 written out here, and the `cryptography` package's
ChaCha20-Poly1305 (XChaCha20-Poly1305 = HChaCha20 subkey + ChaCha20-Poly1305)."""
import base64, hashlib, struct
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

def rotl(v, c):
    return ((v << c) & 0xffffffff) | (v >> (32 - c))

def quarter(s, a, b, c, d):
    s[a] = (s[a] + s[b]) & 0xffffffff; s[d] = rotl(s[d] ^ s[a], 16)
    s[c] = (s[c] + s[d]) & 0xffffffff; s[b] = rotl(s[b] ^ s[c], 12)
    s[a] = (s[a] + s[b]) & 0xffffffff; s[d] = rotl(s[d] ^ s[a], 8)
    s[c] = (s[c] + s[d]) & 0xffffffff; s[b] = rotl(s[b] ^ s[c], 7)

def hchacha20(key, nonce16):
    s = [0x61707865, 0x3320646e, 0x79622d32, 0x6b206574]
    s += list(struct.unpack('<8I', key)) + list(struct.unpack('<4I', nonce16))
    for _ in range(10):
        quarter(s, 0, 4, 8, 12); quarter(s, 1, 5, 9, 13); quarter(s, 2, 6, 10, 14); quarter(s, 3, 7, 11, 15)
        quarter(s, 0, 5, 10, 15); quarter(s, 1, 6, 11, 12); quarter(s, 2, 7, 8, 13); quarter(s, 3, 4, 9, 14)
    return struct.pack('<8I', *(s[0:4] + s[12:16]))

material = bytes([0x11] * 32)
key = hashlib.sha256(b"session-kit cookie cipher key v1\0" + material).digest()
key_id = hashlib.sha256(b"session-kit cookie key id v1\0" + material).digest()[:4]
nonce = bytes(range(24))
header = bytes([1, 0]) + key_id
subkey = hchacha20(key, nonce[:16])
sealed = ChaCha20Poly1305(subkey).encrypt(b"\0\0\0\0" + nonce[16:], b'{"hello":"world"}', header + b"id")
print(base64.urlsafe_b64encode(header + nonce + sealed).decode().rstrip("="), end="")
