"""AES-GCM for opening envelopes, through the OpenSSL the interpreter already links.

Opening is what an edge does with every sealed ClusterTask. `cryptography` would do it, but
importing it maps its whole Rust extension (about 7 MiB of resident memory, measured on top of
the `ssl` module an edge needs anyway), more than the rest of the envelope code by far. The
interpreter's own `ssl` and `hashlib` modules are linked against OpenSSL's libcrypto, which
carries AES-GCM: this module calls its EVP interface through `ctypes` (0.3 MiB), so an edge
opens its desired state without `cryptography` in memory.

Where that libcrypto cannot be found or lacks the functions (a statically linked interpreter),
`cryptography` opens the envelope instead; `backend()` says which one is in use. Sealing stays
with `cryptography` (the hub seals; an edge never does).
"""

from __future__ import annotations

import ctypes
import functools
from collections.abc import Callable
from pathlib import Path

TAG_SIZE = 16

_EVP_CTRL_GCM_SET_IVLEN = 0x9
_EVP_CTRL_GCM_SET_TAG = 0x11
_CIPHERS = {16: "EVP_aes_128_gcm", 24: "EVP_aes_192_gcm", 32: "EVP_aes_256_gcm"}


class TagMismatch(Exception):
    """The ciphertext, its associated data or the key does not match the tag."""


def _linked_libcrypto() -> str | None:
    """The path of the libcrypto the interpreter's `_ssl` (or `_hashlib`) is linked to."""
    try:
        import _hashlib  # noqa: F401  (loads libcrypto into this process)
        import _ssl  # noqa: F401
    except ImportError:
        return None
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return None
    for line in maps.splitlines():
        fields = line.split(maxsplit=5)
        path = fields[5].strip() if len(fields) == 6 else ""
        if "/libcrypto" in path and ".so" in path:
            return path
    return None


class _LibCrypto:
    def __init__(self, lib: ctypes.CDLL) -> None:
        self.ctx_new = lib.EVP_CIPHER_CTX_new
        self.ctx_new.restype = ctypes.c_void_p
        self.ctx_new.argtypes = []
        self.ctx_free = lib.EVP_CIPHER_CTX_free
        self.ctx_free.restype = None
        self.ctx_free.argtypes = [ctypes.c_void_p]
        self.ctrl = lib.EVP_CIPHER_CTX_ctrl
        self.ctrl.restype = ctypes.c_int
        self.ctrl.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.c_void_p]
        self.init = lib.EVP_DecryptInit_ex
        self.init.restype = ctypes.c_int
        self.init.argtypes = [ctypes.c_void_p] * 3 + [ctypes.c_char_p] * 2
        self.update = lib.EVP_DecryptUpdate
        self.update.restype = ctypes.c_int
        self.update.argtypes = [
            ctypes.c_void_p,
            ctypes.c_void_p,
            ctypes.POINTER(ctypes.c_int),
            ctypes.c_char_p,
            ctypes.c_int,
        ]
        self.final = lib.EVP_DecryptFinal_ex
        self.final.restype = ctypes.c_int
        self.final.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.POINTER(ctypes.c_int)]
        self.ciphers: dict[int, int] = {}
        for size, name in _CIPHERS.items():
            cipher = getattr(lib, name)
            cipher.restype = ctypes.c_void_p
            cipher.argtypes = []
            self.ciphers[size] = int(cipher())

    def decrypt(self, key: bytes, nonce: bytes, sealed: bytes, aad: bytes) -> bytes:
        cipher = self.ciphers.get(len(key))
        if cipher is None:
            raise ValueError(f"an AES-GCM key is 16, 24 or 32 bytes, not {len(key)}")
        if len(sealed) < TAG_SIZE:
            raise TagMismatch("shorter than its tag")
        body, tag = sealed[:-TAG_SIZE], sealed[-TAG_SIZE:]
        ctx = self.ctx_new()
        if not ctx:
            raise MemoryError("OpenSSL could not allocate a cipher context")
        try:
            out = ctypes.create_string_buffer(len(body) + TAG_SIZE)
            written = ctypes.c_int(0)
            final = ctypes.c_int(0)
            ok = (
                self.init(ctx, cipher, None, None, None) == 1
                and self.ctrl(ctx, _EVP_CTRL_GCM_SET_IVLEN, len(nonce), None) == 1
                and self.init(ctx, None, None, key, nonce) == 1
                and (not aad or self.update(ctx, None, ctypes.byref(written), aad, len(aad)) == 1)
                and self.update(ctx, out, ctypes.byref(written), body, len(body)) == 1
                and self.ctrl(ctx, _EVP_CTRL_GCM_SET_TAG, TAG_SIZE, tag) == 1
            )
            if not ok:
                raise TagMismatch("OpenSSL refused the key, nonce or data")
            plain_size = written.value
            address = ctypes.addressof(out) + plain_size
            if self.final(ctx, ctypes.c_void_p(address), ctypes.byref(final)) != 1:
                raise TagMismatch("the tag does not match")
            return out.raw[: plain_size + final.value]
        finally:
            self.ctx_free(ctx)


@functools.cache
def _libcrypto() -> _LibCrypto | None:
    path = _linked_libcrypto()
    if path is None:
        return None
    try:
        return _LibCrypto(ctypes.CDLL(path))
    except (OSError, AttributeError):
        return None


def _cryptography_decrypt(key: bytes, nonce: bytes, sealed: bytes, aad: bytes) -> bytes:
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    try:
        return AESGCM(key).decrypt(nonce, sealed, aad)
    except InvalidTag as e:
        raise TagMismatch("the tag does not match") from e


def backend() -> str:
    """`libcrypto` when envelopes open through the interpreter's OpenSSL, else `cryptography`."""
    return "libcrypto" if _libcrypto() is not None else "cryptography"


def decrypt(key: bytes, nonce: bytes, sealed: bytes, aad: bytes) -> bytes:
    """AES-GCM: the plaintext of `sealed` (ciphertext then 16-byte tag); `TagMismatch` when
    the key, nonce, associated data or any byte does not match."""
    lib = _libcrypto()
    opener: Callable[[bytes, bytes, bytes, bytes], bytes] = (
        lib.decrypt if lib is not None else _cryptography_decrypt
    )
    return opener(key, nonce, sealed, aad)
