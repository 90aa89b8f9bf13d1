"""A stored product survives a power cut: its files, their folder and the rename that puts
it in place reach the disk in that order (the store's put, io.durable).

A power cut cannot be made in a test; what is checked is the order of the real system calls:
when the product's folder is renamed into place, every file of it has been flushed (fsync),
and the parent folder's entry is flushed after the rename."""

from __future__ import annotations

import os
from pathlib import Path

from agriseries.io import durable
from agriseries.io.ingest import ingest
from agriseries.io.store import ProductStore

DATA = Path(__file__).parent / "data"
S2 = sorted((DATA / "production" / "inbox").glob("S2_L2A_*m_*.nc"))[:1]


def _recorder(monkeypatch):
    events: list[tuple[str, str]] = []
    real_fsync, real_rename = os.fsync, os.rename

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        return real_fsync(fd)

    def rename(src, dst, *a, **k):
        events.append(("rename", f"{os.fspath(src)} -> {os.fspath(dst)}"))
        return real_rename(src, dst, *a, **k)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "rename", rename)
    return events


def test_product_bytes_reach_the_disk_before_its_rename(tmp_path, monkeypatch):
    store = ProductStore(tmp_path / "store")
    events = _recorder(monkeypatch)
    results = ingest(S2, store)
    assert [r.status for r in results] == ["ingested"]
    final = store.product_dir(results[0].products[0])
    files = sorted(p for p in final.rglob("*"))
    assert len(files) > 3
    (k, rename), = [(i, e) for i, e in enumerate(events)
                    if e[0] == "rename" and e[1].endswith(f"-> {final}")]
    tmp = Path(rename[1].split(" -> ")[0])
    flushed_before = {Path(p) for kind, p in events[:k] if kind == "fsync"}
    for f in files:  # each file as it was in the temporary folder
        assert tmp / f.relative_to(final) in flushed_before, f"{f.name} not flushed before"
    assert tmp in flushed_before
    flushed_after = [Path(p) for kind, p in events[k + 1:] if kind == "fsync"]
    assert final.parent in flushed_after


def test_fsync_tree_flushes_a_folder_and_all_in_it(tmp_path, monkeypatch):
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "x.bin").write_bytes(b"1")
    (tmp_path / "a" / "b" / "y.bin").write_bytes(b"2")
    events = _recorder(monkeypatch)
    durable.fsync_tree(tmp_path / "a")
    got = [Path(p) for _, p in events]
    assert set(got) == {tmp_path / "a", tmp_path / "a" / "b", tmp_path / "a" / "x.bin",
                        tmp_path / "a" / "b" / "y.bin"}
    assert got[-1] == tmp_path / "a"  # the folder after what it holds
