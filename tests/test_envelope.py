"""tark's credentials envelope: files tark writes open here and files written here open in tark.

Two independent references: a golden file produced once with another implementation (@noble/hashes argon2id +
@noble/ciphers chacha20poly1305 in Node, from the documented parameters), and an envelope built inside the test with
`cryptography`'s own Argon2id (not the argon2-cffi code the module uses) and ChaCha20Poly1305.
"""

from __future__ import annotations

import base64
import json
import os

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.argon2 import Argon2id

from supervisor import envelope
from supervisor.envelope import CorruptEnvelope, WrongPassphrase

PASSPHRASE = "correct horse battery staple"
GOLDEN_SALT = bytes(range(16))
GOLDEN_NONCE = bytes.fromhex("a0a1a2a3a4a5a6a7a8a9aaab")
GOLDEN_PLAINTEXT = ('{"config":{"application_id":"123456789012345678","bot_token":"Bot.tökén",'
                    '"public_key":"ab12"}}')
GOLDEN_KEY = "818259b6310026a8e0dbac5d2e6927abcfdb07b32258fac4f61b18b80f929085"
# node: argon2id(utf8(PASSPHRASE), GOLDEN_SALT, {t: 2, m: 19456, p: 1, dkLen: 32, version: 0x13}), then
# chacha20poly1305(key, GOLDEN_NONCE).encrypt(utf8(GOLDEN_PLAINTEXT)); base64 without padding; JSON.stringify(_, null, 2)
GOLDEN_FILE = """{
  "version": 1,
  "kdf": "argon2id",
  "salt": "AAECAwQFBgcICQoLDA0ODw",
  "nonce": "oKGio6Slpqeoqaqr",
  "ciphertext": "/KlJjB8x4sSg/brQVRk56xArDN3xEew4ZYDOrWm9+LgnlMDoddTSTo+60eICihUkBylSCjbS8OBYoY84vwwYJrkJvkfTYK3wnsmoZJB+F4DFOVHU3PVuglDS4fJRsc7mgMZs64jWB/n21hxmCc2iuA"
}"""


def _reference_key(passphrase: str, salt: bytes) -> bytes:
    return Argon2id(salt=salt, length=32, iterations=2, lanes=1, memory_cost=19456).derive(passphrase.encode())


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4))


def _fixed_random(*chunks: bytes):
    queue = list(chunks)

    def take(n: int) -> bytes:
        chunk = queue.pop(0)
        assert len(chunk) == n
        return chunk

    return take


def test_the_key_is_argon2id_with_tarks_parameters():
    assert envelope.derive_key(PASSPHRASE, GOLDEN_SALT).hex() == GOLDEN_KEY
    assert _reference_key(PASSPHRASE, GOLDEN_SALT).hex() == GOLDEN_KEY


def test_a_file_written_by_another_implementation_opens():
    assert envelope.looks_encrypted(GOLDEN_FILE)
    assert envelope.decrypt(GOLDEN_FILE, PASSPHRASE, "golden.json") == GOLDEN_PLAINTEXT


def test_with_the_same_salt_and_nonce_the_file_is_byte_identical_to_the_golden_one():
    written = envelope.encrypt(GOLDEN_PLAINTEXT, PASSPHRASE, random_bytes=_fixed_random(GOLDEN_SALT, GOLDEN_NONCE))
    assert written == GOLDEN_FILE


def test_an_envelope_built_from_the_documented_parameters_opens_here():
    salt, nonce = os.urandom(16), os.urandom(12)
    sealed = ChaCha20Poly1305(_reference_key("pässwörd", salt)).encrypt(nonce, b'{"tokens":{"a":1}}', None)
    text = json.dumps({"version": 1, "kdf": "argon2id", "salt": base64.b64encode(salt).decode().rstrip("="),
                       "nonce": base64.b64encode(nonce).decode().rstrip("="),
                       "ciphertext": base64.b64encode(sealed).decode().rstrip("=")}, indent=2)
    assert envelope.decrypt(text, "pässwörd", "x.json") == '{"tokens":{"a":1}}'


def test_what_is_written_here_opens_with_the_documented_parameters():
    text = envelope.encrypt("secret text ✓", "pw")
    document = json.loads(text)
    assert list(document) == ["version", "kdf", "salt", "nonce", "ciphertext"]
    assert document["version"] == 1 and document["kdf"] == "argon2id"
    assert not any(document[field].endswith("=") for field in ("salt", "nonce", "ciphertext"))
    salt, nonce, sealed = (_unb64(document[f]) for f in ("salt", "nonce", "ciphertext"))
    assert (len(salt), len(nonce), len(sealed)) == (16, 12, len("secret text ✓".encode()) + 16)
    assert ChaCha20Poly1305(_reference_key("pw", salt)).decrypt(nonce, sealed, None) == "secret text ✓".encode()
    with pytest.raises(InvalidTag):  # no associated data: decrypting with some fails
        ChaCha20Poly1305(_reference_key("pw", salt)).decrypt(nonce, sealed, b"tark")


def test_every_encryption_uses_a_fresh_salt_and_nonce():
    first, second = (json.loads(envelope.encrypt("same", "pw")) for _ in range(2))
    assert first["salt"] != second["salt"] and first["nonce"] != second["nonce"]


def test_a_wrong_passphrase_names_the_file_and_says_so():
    with pytest.raises(WrongPassphrase, match=r"Wrong passphrase for /p/oauth\.json"):
        envelope.decrypt(GOLDEN_FILE, "correct horse battery stapler", "/p/oauth.json")


@pytest.mark.parametrize("field", ["ciphertext", "nonce", "salt"])
def test_a_tampered_envelope_is_refused(field):
    document = json.loads(GOLDEN_FILE)
    raw = bytearray(_unb64(document[field]))
    raw[len(raw) // 2] ^= 0x01
    document[field] = base64.b64encode(bytes(raw)).decode().rstrip("=")
    with pytest.raises(WrongPassphrase, match="altered"):
        envelope.decrypt(json.dumps(document), PASSPHRASE, "f.json")


@pytest.mark.parametrize("change, message", [
    ({"nonce": "!!not base64!!"}, "'nonce' is not valid base64"),
    ({"nonce": "AAAA"}, "the nonce has 3 bytes"),
    ({"salt": "AAAA"}, "the salt has 3 bytes"),
    ({"ciphertext": "AAAA"}, "shorter than its 16-byte tag"),
    ({"salt": 7}, "'salt' is not a base64 string"),
    ({"version": 2}, "envelope version 2"),
    ({"kdf": "scrypt"}, "kdf 'scrypt'"),
])
def test_a_corrupt_envelope_says_what_is_wrong(change, message):
    document = {**json.loads(GOLDEN_FILE), **change}
    with pytest.raises(CorruptEnvelope, match=message):
        envelope.decrypt(json.dumps(document), PASSPHRASE, "f.json")


def test_plaintext_is_not_mistaken_for_an_envelope():
    assert not envelope.looks_encrypted('{"config":{"application_id":"1"}}')
    assert not envelope.looks_encrypted("not json")
    assert not envelope.looks_encrypted('["version","kdf","salt","nonce","ciphertext"]')
    with pytest.raises(CorruptEnvelope, match="not an encrypted credentials file"):
        envelope.decrypt('{"config":{}}', PASSPHRASE, "f.json")


def test_a_padded_base64_field_is_accepted():
    document = json.loads(GOLDEN_FILE)
    document["salt"] += "=="
    assert envelope.decrypt(json.dumps(document), PASSPHRASE, "f.json") == GOLDEN_PLAINTEXT
