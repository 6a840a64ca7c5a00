"""The hot tier: any record by trace id, with its proof, from memory.

The service keeps the whole tree (64 bytes a record) and each record's place
in its segment, fed by the writer after every durable write, so that a read
costs one pread and O(log n) hashes instead of a scan of the ledger. Records in
warm storage are read by decompressing their segment up to them (old records,
seldom asked for). After an expire the tree starts from the expired records'
edge (``merkle.Tree`` with a start) and holds the kept records only.
"""

from __future__ import annotations

import bisect
import gzip
import hashlib
import itertools
import os
import threading
from array import array
from dataclasses import dataclass

from . import merkle, reader
from .layout import Layout

_TRACE_KEY = b'"trace_id":"'


def _trace_id(line: bytes) -> str:
    at = line.rfind(_TRACE_KEY) + len(_TRACE_KEY)  # canonical: one trace_id key a line
    return line[at:at + 36].decode()


@dataclass(frozen=True)
class Found:
    line: bytes
    seq: int
    size: int  # of the tree the proof is for
    root: bytes
    path: list[bytes]


class Index:
    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        self._lock = threading.Lock()
        self._tree = merkle.Tree()
        self._seq: dict[str, int] = {}
        self._offsets = array("Q")
        self._segments: list[tuple[int, str]] = []  # (first seq, name)

    def load(self) -> None:
        """Index what is on disk; call before the writer starts observing."""
        sha = hashlib.sha256
        edge, kept = reader.kept(self.layout, None)
        self._tree = merkle.Tree(start=edge)
        for line in kept:
            self._add(line.segment, line.offset, line.data, sha(b"\x00" + line.data).digest())

    def observe(self, segment: str, offset: int, data: bytes, leaves: list[bytes],
                trace_ids: list[str] | None = None) -> None:
        """The writer's observer (writer.Observer): records just made durable, one group in
        one pass. Trace ids the writer passes save reading them back out of the lines."""
        lines = data.split(b"\n")[:-1]
        if len(lines) != len(leaves):
            raise ValueError(f"{len(lines)} lines but {len(leaves)} leaves")
        starts = itertools.accumulate((len(line) + 1 for line in lines[:-1]), initial=offset)
        with self._lock:
            seq = self._tree.size
            if not self._segments or self._segments[-1][1] != segment:
                self._segments.append((seq, segment))
            self._tree.extend(leaves)
            self._offsets.extend(starts)
            ids = map(_trace_id, lines) if trace_ids is None else trace_ids
            self._seq.update(zip(ids, range(seq, seq + len(lines)), strict=True))

    def _add(self, segment: str, offset: int, line: bytes, leaf: bytes) -> None:
        seq = self._tree.size
        if not self._segments or self._segments[-1][1] != segment:
            self._segments.append((seq, segment))
        self._tree.append(leaf)
        self._offsets.append(offset)
        self._seq[_trace_id(line)] = seq

    @property
    def size(self) -> int:
        return self._tree.size

    def head(self) -> tuple[int, bytes]:
        """(size, root) of the durable tree."""
        with self._lock:
            return self._tree.size, self._tree.root()

    def find(self, trace_id: str) -> Found | None:
        """The record and its proof; None if there is none (or it expired since loading)."""
        with self._lock:
            seq = self._seq.get(trace_id)
            if seq is None:
                return None
            size, root = self._tree.size, self._tree.root()
            path = self._tree.inclusion_proof(seq, size)
            _, segment = self._segments[bisect.bisect_right(self._segments, (seq, "\uffff"))
                                             - 1]
            offset = self._offsets[seq - self._tree.first]
        try:
            line = self._read_line(segment, offset)
        except FileNotFoundError:  # deleted by an expire while the service runs
            if seq >= reader.expired_edge(self.layout).size:
                raise
            with self._lock:
                self._seq.pop(trace_id, None)
            return None
        return Found(line, seq, size, root, path)

    def _read_line(self, segment: str, offset: int) -> bytes:
        try:
            fd = os.open(self.layout.segments / segment, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:  # moved to warm storage
            with gzip.open(self.layout.warm_path(segment), "rb") as f:
                f.seek(offset)
                return f.readline().rstrip(b"\n")
        try:
            data, chunk = b"", 1 << 14
            while b"\n" not in data:
                more = os.pread(fd, chunk, offset + len(data))
                if not more:
                    break
                data += more
        finally:
            os.close(fd)
        return data.split(b"\n", 1)[0]
