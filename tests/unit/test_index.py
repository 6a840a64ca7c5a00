"""The hot tier: every record found by trace id, its line read back, its proof valid."""

from __future__ import annotations

from pathlib import Path

from vantio_appliance import merkle, writer
from vantio_appliance.index import Index


def test_index_fed_by_the_writer_finds_every_record_with_a_valid_proof(tmp_path: Path) -> None:
    writer.init(tmp_path / "l", "vantio.appliance/test/index", use_flags=False)
    led = writer.Ledger(tmp_path / "l", use_flags=False, segment_bytes=4096)
    index = Index(led.layout)
    index.load()
    led.observer = index.observe
    acks: list[writer.Ack] = []
    for size in (1, 2, 3, 7, 16, 5, 33, 1):  # groups of many sizes, across several segments
        acks += led.append([writer.submission("default", {"action": "permit",
                                                          "proc": {"pid": i}})
                            for i in range(size)])
    assert len(led.layout.segment_names()) > 2
    size, root = index.head()
    assert size == led.size
    reloaded = Index(led.layout)
    reloaded.load()  # the same state from the files alone
    assert reloaded.head() == (size, root)
    for ack in acks:
        found = index.find(ack.trace_id)
        assert found is not None and found.seq == ack.seq
        assert merkle.leaf_hash(found.line) == ack.leaf_hash
        merkle.verify_inclusion(found.seq, found.size, ack.leaf_hash, found.path, found.root)
    assert index.find("00000000-0000-4000-8000-000000000000") is None
    led.close()
