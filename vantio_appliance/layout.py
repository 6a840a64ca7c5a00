"""Where things live in a ledger directory (FORMATS.md section 2)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Final

DEFAULT_DIR: Final = Path("/var/log/vantio")
DEFAULT_SOCKET: Final = Path("/run/vantio/ingest.sock")
_SEGMENT_RE: Final = re.compile(r"[0-9]{16}\.worm")


def segment_name(first_seq: int) -> str:
    return f"{first_seq:016d}.worm"


def segment_first_seq(name: str) -> int:
    return int(name[:16])


@dataclass(frozen=True)
class Layout:
    root: Path

    @property
    def segments(self) -> Path:
        return self.root / "segments"

    @property
    def link(self) -> Path:
        return self.root / "ledger.worm"

    @property
    def checkpoint(self) -> Path:
        return self.root / "checkpoint"

    @property
    def vkey(self) -> Path:
        return self.root / "vkey"

    @property
    def epoch0_vkey(self) -> Path:
        """Epoch 0's verifier key, public: handed to auditors with ``vkey``."""
        return self.root / "epoch0.vkey"

    @property
    def keys(self) -> Path:
        return self.root / "keys"

    @property
    def identity(self) -> Path:
        return self.keys / "identity.key"

    @property
    def epoch_key(self) -> Path:
        """The current epoch's private key (docs/anchoring.md section 1)."""
        return self.keys / "epoch.key"

    @property
    def epoch_next(self) -> Path:
        """The next epoch's private key, only while a rotation is under way."""
        return self.keys / "epoch.next"

    @property
    def anchors(self) -> Path:
        return self.root / "anchors"

    @property
    def last_export(self) -> Path:
        """The signed checkpoint of the last anchor export."""
        return self.anchors / "last-export"

    @property
    def tenants(self) -> Path:
        return self.keys / "tenants"

    @property
    def state(self) -> Path:
        """A cache of the tree's right edge, so that opening need not rehash everything."""
        return self.root / "state"

    @property
    def lock(self) -> Path:
        return self.root / "lock"

    def segment_names(self) -> list[str]:
        """Segment files in ledger order; anything else in the folder is ignored."""
        try:
            names = [p.name for p in self.segments.iterdir()]
        except FileNotFoundError:
            return []
        return sorted(n for n in names if _SEGMENT_RE.fullmatch(n))
