"""Random access to a DPR TSV by id and by row through the sidecar offset index."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest

from umr_jax.data import formats as F
from umr_jax.data.passage_store import PassageStore, build_index, index_path_for
from umr_jax.errors import InputError
from tests.data import samples

# DPR-style rows: quoted texts with "" escapes, a quoted field spanning lines, a tab in a title.
TSV = (
    'id\ttext\ttitle\n'
    '1\t"Aaron Aaron ( or ; ""Ahärôn"") is a prophet"\tAaron\n'
    '20\tplain text\tPlain\n'
    '3\t"first line\nsecond line"\t"Tab\tTitle"\n'
    'wiki:4\t"東京は""首都""である"\t東京\n'
)
EXPECTED = [
    F.Passage("1", "Aaron", 'Aaron Aaron ( or ; "Ahärôn") is a prophet'),
    F.Passage("20", "Plain", "plain text"),
    F.Passage("3", "Tab\tTitle", "first line\nsecond line"),
    F.Passage("wiki:4", "東京", '東京は"首都"である'),
]


def test_random_access_by_id_and_row_on_quoted_fields(tmp_path):
    path = tmp_path / "psgs.tsv"
    path.write_bytes(TSV.encode())
    store = PassageStore(path)
    assert index_path_for(path) == tmp_path / "psgs.tsv.idx" and store.index_path.is_file()
    assert len(store) == 4
    for row in (3, 0, 2, 1):
        assert store[row] == EXPECTED[row]
    assert store[-1] == EXPECTED[-1]
    for passage in reversed(EXPECTED):
        assert store.get(passage.id) == passage and passage.id in store
    assert store.row_of("20") == 1 and store.row_of("2") is None and "wiki:40" not in store
    with pytest.raises(KeyError):
        store.get("missing")
    with pytest.raises(IndexError):
        store[4]
    assert list(store) == EXPECTED == list(F.read_dpr_passages(path))
    store.close()


def test_index_layout_holds_offsets_and_sorted_order(tmp_path):
    path = tmp_path / "psgs.tsv"
    path.write_bytes(TSV.encode())
    table = np.load(build_index(path))
    assert table.dtype.names == ("id", "offset", "by_id")
    with open(path, "rb") as f:
        data = f.read()
    assert [data[o:o + 3] for o in table["offset"]] == [b"1\t\"", b"20\t", b"3\t\"", b"wik"]
    assert [table["id"][i] for i in table["by_id"]] == sorted(table["id"])


def test_index_is_rebuilt_when_the_tsv_is_newer(tmp_path):
    path = tmp_path / "psgs.tsv"
    F.write_dpr_passages(path, samples.PASSAGES)
    assert PassageStore(path).get("2") == samples.PASSAGES[1]
    changed = [F.Passage("2", "New", "replaced text"), F.Passage("9", "", "added")]
    F.write_dpr_passages(path, changed)
    older = path.stat().st_mtime_ns - 10**9  # the index predates the new TSV
    os.utime(index_path_for(path), ns=(older, older))
    store = PassageStore(path)
    assert len(store) == 2 and store.get("2") == changed[0] and store.get("9") == changed[1]
    # Up to date: not rebuilt.
    before = index_path_for(path).stat().st_mtime_ns
    PassageStore(path)
    assert index_path_for(path).stat().st_mtime_ns == before


def test_store_pickles_without_its_file_handle(tmp_path):
    path = tmp_path / "psgs.tsv"
    path.write_bytes(TSV.encode())
    store = PassageStore(path)
    store.get("3")
    clone = pickle.loads(pickle.dumps(store))
    assert clone.get("wiki:4") == EXPECTED[3] and len(clone) == 4


def test_index_build_rejects_duplicates_and_bad_rows(tmp_path):
    path = tmp_path / "psgs.tsv"
    path.write_bytes((TSV + "20\tagain\tX\n").encode())
    with pytest.raises(InputError) as info:
        PassageStore(path)
    assert str(info.value) == f"{path}:7: duplicate id '20' (first at {path}:3); ids must be unique within a file"
    assert not index_path_for(path).exists()
    path.write_bytes(b"id\ttext\ttitle\n1\t\tT\n")
    with pytest.raises(InputError, match=r"psgs.tsv:2: empty 'text'"):
        build_index(path)
    with pytest.raises(InputError, match="decompress it first"):
        build_index(tmp_path / "psgs.tsv.gz")


def test_index_never_written_into_the_package(tmp_path, monkeypatch):
    from umr_jax.demo import demo_paths
    from umr_jax.data.passage_store import PassageStore, index_path_for

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    tsv = demo_paths()["passages"]
    where = index_path_for(tsv)
    assert where.parent == tmp_path / "cache" / "umr-jax" / "passage-index"
    store = PassageStore(tsv)
    assert store.index_path == where and where.is_file()
    assert not tsv.with_name(tsv.name + ".idx").exists()
    assert store.get(store[0].id) == store[0]
