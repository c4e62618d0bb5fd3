"""tark's passphrase envelope for channel credentials files (docs/auth.md, "Encrypted credentials files").

The file is pretty JSON `{"version": 1, "kdf": "argon2id", "salt", "nonce", "ciphertext"}`; the three byte fields
are standard base64 without padding. The key is 32 bytes of Argon2id (v1.3, 19456 KiB, t=2, p=1) over the UTF-8
passphrase and the 16-byte salt; the cipher is ChaCha20-Poly1305 with a 12-byte nonce and no associated data, so
`ciphertext` is the encrypted text followed by the 16-byte tag. Those are tark's parameters: a file either side
writes opens on the other.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from typing import Any, Callable

import attrs
from argon2.low_level import Type, hash_secret_raw
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

VERSION = 1
KDF = "argon2id"
MEMORY_KIB = 19456
TIME_COST = 2
PARALLELISM = 1
KEY_BYTES = 32
SALT_BYTES = 16
NONCE_BYTES = 12
TAG_BYTES = 16
MIN_SALT_BYTES = 8  # Argon2's own minimum; tark always writes 16
FIELDS = ("version", "kdf", "salt", "nonce", "ciphertext")


class EnvelopeError(Exception):
    """An envelope that cannot be opened; the message names the file and what is wrong."""


class WrongPassphrase(EnvelopeError):
    """Authentication failed: the passphrase is wrong (or the ciphertext was altered, which looks the same)."""


class CorruptEnvelope(EnvelopeError):
    """The file looks like an envelope but a field is missing, malformed or of an unsupported version."""


@attrs.frozen
class Envelope:
    salt: bytes
    nonce: bytes
    ciphertext: bytes = attrs.field(repr=False)

    def to_text(self) -> str:
        """Exactly what tark writes (serde_json's pretty printer: two-space indent, `": "`, no final newline)."""
        return json.dumps({"version": VERSION, "kdf": KDF, "salt": _b64(self.salt), "nonce": _b64(self.nonce),
                           "ciphertext": _b64(self.ciphertext)}, indent=2)


def derive_key(passphrase: str, salt: bytes) -> bytes:
    return hash_secret_raw(passphrase.encode("utf-8"), salt, time_cost=TIME_COST, memory_cost=MEMORY_KIB,
                           parallelism=PARALLELISM, hash_len=KEY_BYTES, type=Type.ID, version=19)


def encrypt(plaintext: str, passphrase: str, *, random_bytes: Callable[[int], bytes] = os.urandom) -> str:
    """The envelope text for `plaintext` under `passphrase`, with a fresh random salt and nonce."""
    salt, nonce = random_bytes(SALT_BYTES), random_bytes(NONCE_BYTES)
    sealed = ChaCha20Poly1305(derive_key(passphrase, salt)).encrypt(nonce, plaintext.encode("utf-8"), None)
    return Envelope(salt, nonce, sealed).to_text()


def looks_encrypted(text: str) -> bool:
    """True when `text` is a JSON object carrying the envelope's fields (tark's test: it deserializes as one).
    Anything else is a plaintext credentials file."""
    document = _json_object(text)
    return document is not None and all(field in document for field in FIELDS)


def parse(text: str, source: str) -> Envelope:
    document = _json_object(text)
    if document is None or not all(field in document for field in FIELDS):
        raise CorruptEnvelope(f"{source} is not an encrypted credentials file (expected the fields "
                              f"{', '.join(FIELDS)})")
    version, kdf = document["version"], document["kdf"]
    if version != VERSION or isinstance(version, bool) or kdf != KDF:
        raise CorruptEnvelope(f"{source} uses envelope version {version!r} with kdf {kdf!r}; only version {VERSION} "
                              f"with {KDF!r} is supported")
    salt = _unb64(document["salt"], "salt", source)
    nonce = _unb64(document["nonce"], "nonce", source)
    ciphertext = _unb64(document["ciphertext"], "ciphertext", source)
    if len(salt) < MIN_SALT_BYTES:
        raise CorruptEnvelope(f"{source} is corrupt: the salt has {len(salt)} bytes (at least {MIN_SALT_BYTES})")
    if len(nonce) != NONCE_BYTES:
        raise CorruptEnvelope(f"{source} is corrupt: the nonce has {len(nonce)} bytes (expected {NONCE_BYTES})")
    if len(ciphertext) < TAG_BYTES:
        raise CorruptEnvelope(f"{source} is corrupt: the ciphertext is shorter than its {TAG_BYTES}-byte tag")
    return Envelope(salt, nonce, ciphertext)


def decrypt(text: str, passphrase: str, source: str) -> str:
    """The plaintext of envelope `text`; `source` (the file's path) names the file in every error."""
    envelope = parse(text, source)
    try:
        opened = ChaCha20Poly1305(derive_key(passphrase, envelope.salt)).decrypt(
            envelope.nonce, envelope.ciphertext, None)
    except InvalidTag:
        raise WrongPassphrase(f"Wrong passphrase for {source}: it does not decrypt the file (if the passphrase is "
                              "right, the file was altered after it was encrypted)") from None
    try:
        return opened.decode("utf-8")
    except UnicodeDecodeError:
        raise CorruptEnvelope(f"{source} decrypts to bytes that are not UTF-8 text") from None


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii").rstrip("=")


def _unb64(value: Any, field: str, source: str) -> bytes:
    if not isinstance(value, str):
        raise CorruptEnvelope(f"{source} is corrupt: '{field}' is not a base64 string")
    stripped = value.rstrip("=")  # tark writes no padding; a padded value is accepted all the same
    try:
        return base64.b64decode(stripped + "=" * (-len(stripped) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise CorruptEnvelope(f"{source} is corrupt: '{field}' is not valid base64") from None


def _json_object(text: str) -> dict[str, Any] | None:
    try:
        document = json.loads(text)
    except ValueError:
        return None
    return document if isinstance(document, dict) else None
