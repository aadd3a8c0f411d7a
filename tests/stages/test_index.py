"""The index stage: a bad embedding matrix or ids file is refused before any index.json is
written, and `umr-jax index build | search` round-trips."""

from __future__ import annotations

import numpy as np
import pytest

from umr_jax.errors import InputError
from umr_jax.stages.index import build_index


@pytest.fixture(scope="module")
def corpus():
    rng = np.random.RandomState(0)
    return rng.randn(2500, 24).astype(np.float32), rng.randn(37, 24).astype(np.float32)


def _numpy_top_k(queries, corpus, k):
    scores = queries.astype(np.float64) @ corpus.astype(np.float64).T
    rows = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return rows, np.take_along_axis(scores, rows, axis=1)


@pytest.mark.parametrize(
    "matrix,message",
    [
        (np.zeros((4,), np.float32), r"expected a 2-D \[rows, dim\] embedding matrix, got shape \(4,\)"),
        (np.zeros((4, 3), np.int64), "expected float16 or float32 embeddings, got dtype int64"),
        (np.array([[0.0, 1.0], [np.nan, 0.0]], np.float32), "row 1 holds NaN or inf"),
    ],
)
def test_bad_npy_gets_clear_error(tmp_path, matrix, message):
    np.save(tmp_path / "bad.npy", matrix)
    with pytest.raises(InputError, match=rf"bad\.npy: {message}"):
        build_index(tmp_path / "bad.npy", tmp_path / "index", backend="exact")
    assert not (tmp_path / "index" / "index.json").exists()


def test_ids_file_must_match_rows(tmp_path, corpus):
    matrix, _ = corpus
    np.save(tmp_path / "m.npy", matrix)
    (tmp_path / "ids.txt").write_text("a\nb\n")
    with pytest.raises(InputError, match=r"ids\.txt: has 2 ids but the embeddings have 2500 rows"):
        build_index(tmp_path / "m.npy", tmp_path / "index", backend="exact", ids_path=tmp_path / "ids.txt")


def test_index_cli_build_and_search(tmp_path, corpus, capsys):
    from umr_jax import cli

    matrix, queries = corpus
    np.save(tmp_path / "m.npy", matrix)
    np.save(tmp_path / "q.npy", queries)
    (tmp_path / "ids.txt").write_text("".join(f"p{i}\n" for i in range(len(matrix))))
    assert cli.main(["index", "build", "--embeddings", str(tmp_path / "m.npy"), "--ids", str(tmp_path / "ids.txt"),
                     "--backend", "exact", "--output", str(tmp_path / "idx")]) == 0
    assert cli.main(["index", "search", "--index", str(tmp_path / "idx"), "--query-embeddings", str(tmp_path / "q.npy"),
                     "--top-k", "4", "--output", str(tmp_path / "r.npz")]) == 0
    result = np.load(tmp_path / "r.npz")
    ref_rows, ref_scores = _numpy_top_k(queries, matrix, 4)
    assert result["ids"].tolist() == [[f"p{r}" for r in row] for row in ref_rows]
    np.testing.assert_allclose(result["scores"], ref_scores, rtol=1e-5)
    np.save(tmp_path / "bad.npy", np.zeros((3, 5, 2), np.float32))
    assert cli.main(["index", "search", "--index", str(tmp_path / "idx"), "--query-embeddings", str(tmp_path / "bad.npy"),
                     "--output", str(tmp_path / "r2.npz")]) == 1
    assert "bad.npy: expected a 2-D" in capsys.readouterr().err
    assert not (tmp_path / "r2.npz").exists()
