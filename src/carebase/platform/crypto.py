"""Keys derived from the one master secret in settings, and the primitives built on them.

- ``derive(purpose)``: independent 32-byte keys per purpose (HKDF-SHA256), so one leaked purpose
  key reveals nothing about another.
- Ed25519 signing key: JWT access tokens (EdDSA) and event-store checkpoints.
- AES-256-GCM: PHI sealed under a per-subject data key; data keys are wrapped by the KEK.
- ``keyed_hash``: HMAC for short secrets (OTP codes, tokens) so a database dump cannot be
  brute-forced offline without the master secret.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from functools import lru_cache

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF


class Keyring:
    def __init__(self, master_secret: bytes):
        self._master = master_secret
        self._derived: dict[str, bytes] = {}
        self.signing_key = Ed25519PrivateKey.from_private_bytes(self.derive("ed25519-signing"))
        self.verify_key: Ed25519PublicKey = self.signing_key.public_key()
        raw = self.verify_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        self.key_id = hashlib.sha256(raw).hexdigest()[:16]
        self._kek = AESGCM(self.derive("subject-kek"))
        self.chain_key = self.derive("event-chain")
        self._hash_key = self.derive("keyed-hash")

    def derive(self, purpose: str) -> bytes:
        # Derived once per purpose: request paths (idempotent replays, TOTP) ask for them often.
        key = self._derived.get(purpose)
        if key is None:
            key = self._derived[purpose] = HKDF(algorithm=hashes.SHA256(), length=32, salt=b"carebase",
                                                info=purpose.encode()).derive(self._master)
        return key

    # -- signatures -------------------------------------------------------------------------
    def sign(self, message: bytes) -> bytes:
        return self.signing_key.sign(message)

    def verify(self, signature: bytes, message: bytes) -> bool:
        try:
            self.verify_key.verify(signature, message)
            return True
        except Exception:
            return False

    def private_pem(self) -> bytes:
        return self.signing_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    def public_pem(self) -> bytes:
        return self.verify_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)

    # -- hashing ----------------------------------------------------------------------------
    def keyed_hash(self, value: str) -> str:
        return hmac.new(self._hash_key, value.encode(), hashlib.sha256).hexdigest()

    def chain_hash(self, prev: bytes, body: bytes) -> bytes:
        return hmac.new(self.chain_key, prev + body, hashlib.sha256).digest()

    # -- envelope encryption ----------------------------------------------------------------
    def new_wrapped_data_key(self) -> bytes:
        key = AESGCM.generate_key(bit_length=256)
        nonce = os.urandom(12)
        return nonce + self._kek.encrypt(nonce, key, b"subject-key")

    def unwrap(self, wrapped: bytes) -> bytes:
        return self._kek.decrypt(wrapped[:12], wrapped[12:], b"subject-key")


def seal(data_key: bytes, plaintext: bytes, aad: bytes) -> str:
    nonce = os.urandom(12)
    return base64.b64encode(nonce + AESGCM(data_key).encrypt(nonce, plaintext, aad)).decode()


def open_sealed(data_key: bytes, token: str, aad: bytes) -> bytes:
    raw = base64.b64decode(token)
    return AESGCM(data_key).decrypt(raw[:12], raw[12:], aad)


@lru_cache(maxsize=8)
def keyring_for(master_secret: bytes) -> Keyring:
    return Keyring(master_secret)


def keyring() -> Keyring:
    """The keyring of the configured master secret."""
    from carebase.settings import get_settings

    return keyring_for(get_settings().master_secret)
