"""Key files: the host's Ed25519 identity key and the tenants' API keys.

Every private file is created 0600 inside a 0700 directory with O_EXCL, so a
key is never world-readable, not even for an instant, whatever the umask.
"""

from __future__ import annotations

import base64
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import msgspec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    load_pem_private_key,
)

from ._internal.osutil import fsync_dir
from .records import TENANT_RE

ROLES: Final = ("writer", "reader")


class KeyFileError(ValueError):
    """A key file is missing, malformed, or would be overwritten."""


def write_private(path: Path, data: bytes) -> None:
    """Create ``path`` (0600) whole or not at all: a reader never sees it half-written.

    The data goes to a temporary file first; link(2) then publishes it, and
    fails if ``path`` exists, so creation stays exclusive.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, data)
        os.fsync(fd)
        os.close(fd)
        fd = -1
        os.link(tmp, path)
    finally:
        if fd >= 0:
            os.close(fd)
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)


def make_private_dir(path: Path) -> None:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path, 0o700)


def write_key(path: Path, key: Ed25519PrivateKey) -> Ed25519PrivateKey:
    """Write ``key`` to ``path`` (PKCS#8 PEM, 0600, durable, exclusive)."""
    write_private(path, key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    return key


def generate_key(path: Path) -> Ed25519PrivateKey:
    """A new Ed25519 key, written to ``path`` (PKCS#8 PEM, 0600, durable, exclusive)."""
    return write_key(path, Ed25519PrivateKey.generate())


def generate_identity(path: Path) -> Ed25519PrivateKey:
    return generate_key(path)


def load_key(path: Path, what: str = "identity key") -> Ed25519PrivateKey:
    try:
        key = load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:  # TypeError: encrypted
        raise KeyFileError(f"cannot load {what} {path}: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"{path} is not an Ed25519 key")
    return key


def load_identity(path: Path) -> Ed25519PrivateKey:
    return load_key(path, "identity key")


def shred(path: Path) -> None:
    """Overwrite ``path`` in place with random bytes and fsync: the key it held is gone
    from this file's blocks (not from copies a journal, SSD or backup may keep)."""
    fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        view = memoryview(secrets.token_bytes(max(os.fstat(fd).st_size, 1)))
        offset = 0
        while offset < len(view):
            offset += os.pwrite(fd, view[offset:], offset)
        os.fsync(fd)
    finally:
        os.close(fd)


def destroy(path: Path) -> None:
    """Shred a private key file, unlink it, and make the unlink durable."""
    shred(path)
    path.unlink()
    fsync_dir(path.parent)


@dataclass(frozen=True)
class Tenant:
    name: str
    api_key: str
    role: str


class TenantStore:
    """One 0600 JSON file per tenant under ``keys/tenants``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def _path(self, name: str) -> Path:
        if not TENANT_RE.fullmatch(name):
            raise KeyFileError(f"tenant name {name!r} must match {TENANT_RE.pattern}")
        return self.directory / f"{name}.json"

    def add(self, name: str, role: str = "writer") -> Tenant:
        if role not in ROLES:
            raise KeyFileError(f"role must be one of {', '.join(ROLES)}")
        path = self._path(name)
        make_private_dir(self.directory)
        api_key = "vt_" + base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")
        tenant = Tenant(name, api_key, role)
        try:
            data = {"name": name, "api_key": api_key, "role": role}
            write_private(path, msgspec.json.encode(data))
        except FileExistsError:
            raise KeyFileError(f"tenant {name!r} exists already") from None
        return tenant

    def get(self, name: str) -> Tenant:
        path = self._path(name)
        try:
            data = msgspec.json.decode(path.read_bytes())
            return Tenant(data["name"], data["api_key"], data["role"])
        except FileNotFoundError:
            raise KeyFileError(f"no tenant {name!r} in {self.directory}") from None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise KeyFileError(f"tenant file {path} is unreadable: {exc}") from None

    def names(self) -> list[str]:
        if not self.directory.is_dir():
            return []
        return sorted(p.stem for p in self.directory.glob("*.json"))
