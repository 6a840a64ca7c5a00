"""Where things live in a ledger directory (FORMATS.md section 2)."""

from __future__ import annotations

import gzip
import io
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Final

DEFAULT_DIR: Final = Path("/var/log/vantio")
DEFAULT_SOCKET: Final = Path("/run/vantio/ingest.sock")
_SEGMENT_RE: Final = re.compile(r"[0-9]{16}\.worm")
WARM_SUFFIX: Final = ".gz"  # a warm segment: warm/<first seq>.worm.gz (docs/formats.md)


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

    @property
    def warm(self) -> Path:
        """Sealed segments moved out of hot storage, gzip-compressed (docs/ledger.md)."""
        return self.root / "warm"

    @property
    def expired(self) -> Path:
        """What verification needs of segments deleted after their retention end."""
        return self.warm / "expired"

    @property
    def expired_epochs(self) -> Path:
        """The epoch records of segments deleted after their retention end."""
        return self.warm / "expired.epochs"

    def hot_names(self) -> list[str]:
        return _names(self.segments, "")

    def warm_names(self) -> list[str]:
        return _names(self.warm, WARM_SUFFIX)

    def segment_names(self) -> list[str]:
        """Segments in ledger order, hot and warm (a segment caught in both while it moves
        counts once); anything else in the folders is ignored."""
        return sorted(set(self.hot_names()) | set(self.warm_names()))

    def warm_path(self, name: str) -> Path:
        return self.warm / (name + WARM_SUFFIX)

    def segment_path(self, name: str) -> Path:
        """The hot file while there is one, else the warm copy."""
        hot = self.segments / name
        return hot if hot.exists() else self.warm_path(name)

    def open_segment(self, name: str) -> io.BufferedIOBase:
        """A segment's record bytes, from hot storage or decompressed from warm. A segment
        moved between the listing and the opening is found in warm storage."""
        try:
            return (self.segments / name).open("rb")
        except FileNotFoundError:
            return gzip.open(self.warm_path(name), "rb")

    def read_segment(self, name: str) -> bytes:
        with self.open_segment(name) as f:
            return f.read()


def _names(folder: Path, suffix: str) -> list[str]:
    try:
        names = [p.name for p in folder.iterdir()]
    except FileNotFoundError:
        return []
    return sorted(n[:len(n) - len(suffix)] for n in names
                  if n.endswith(suffix) and _SEGMENT_RE.fullmatch(n[:len(n) - len(suffix)]))
