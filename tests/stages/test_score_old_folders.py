"""Score folders written before the score stage moved to stages/ (labeling/run.py at d6b2c64)
still resume: the same state.json and manifest formats, a finished folder returned untouched, an
interrupted one finished with only its missing pairs scored, its earlier shard kept as it was.

The folders under old_score_folders/ were written by that code from retrieved.jsonl (this
package's test_score.RETRIEVED) with the demo scorer (umr_jax/demo/pretrained/scorer, named
"../scorer"), float32, top-3, 3 questions per chunk, on 8 simulated CPU devices (data=2, fsdp=4):
partial/ was interrupted after its first shard, finished/ is partial/ run to completion. The
scorer is recognised by a fingerprint of its files, so a new demo scorer needs new folders.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from umr_jax.data import formats
from umr_jax.demo.models import PRETRAINED
from umr_jax.errors import InputError
from umr_jax.labeling.scorer import QuestionLikelihoodScorer
from umr_jax.parallel import mesh as mesh_lib
from umr_jax.stages.score import score_retrieved
from umr_jax.stages.score_folder import MANIFEST, SHARDS_NAME, STATE

OLD = Path(__file__).resolve().parent / "old_score_folders"
SHARDS = [f"pseudo_labels-0000{i}-of-00003.jsonl" for i in range(3)]
TIMING_AND_RUN_COUNTERS = {"pairs_scored", "scoring_seconds", "pairs_per_second", "runs", "last_run"}


@pytest.fixture(scope="module")
def scorer():
    return QuestionLikelihoodScorer(str(PRETRAINED / "scorer"), mesh=mesh_lib.make_mesh({"data": 2, "fsdp": 4}), rules="fsdp",
                                    dtype="float32", tokens_per_batch=256)


class Named:
    """The scorer under the name the old folders recorded, counting the pairs it scores (and
    with attribute overrides, a scorer made with other settings)."""

    def __init__(self, scorer, **overrides):
        self.inner, self.overrides, self.keys = scorer, {"name": "../scorer", **overrides}, []

    def __getattr__(self, name):
        return self.overrides[name] if name in self.overrides else getattr(self.inner, name)

    def score(self, pairs, progress=None):
        self.keys += [p.key for p in pairs]
        return self.inner.score(pairs, progress)


@pytest.fixture
def old_folder(tmp_path, monkeypatch):
    """A copy of an old folder as `run/labels`, run/ the working directory and ../scorer the demo
    scorer, as when it was written."""
    shutil.copytree(PRETRAINED / "scorer", tmp_path / "scorer")
    (tmp_path / "run").mkdir()
    shutil.copy(OLD / "retrieved.jsonl", tmp_path / "run" / "retrieved.jsonl")
    monkeypatch.chdir(tmp_path / "run")

    def copy(name: str) -> Path:
        shutil.copytree(OLD / name, tmp_path / "run" / "labels")
        return Path("labels")

    return copy


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_a_finished_old_folder_is_returned_untouched(scorer, old_folder):
    labels = old_folder("finished")
    before = _files(labels)
    named = Named(scorer)
    manifest = score_retrieved("retrieved.jsonl", labels, named, top_k=3, questions_per_chunk=3)
    assert named.keys == [] and _files(labels) == before
    assert manifest == {**json.loads(before[MANIFEST]), "last_run": {"pairs_scored": 0, "pairs_resumed": 16, "elapsed_seconds": 0.0}}


def test_an_interrupted_old_folder_resumes_to_the_old_code_s_labels(scorer, old_folder):
    labels = old_folder("partial")
    named = Named(scorer)
    manifest = score_retrieved("retrieved.jsonl", labels, named, top_k=3, questions_per_chunk=3)
    done_before = [(r.id, c.id) for r in formats.read_retrieval(OLD / "partial" / SHARDS[0]) for c in r.ctxs]
    expected = [(r.id, c.id) for r in formats.read_retrieval(OLD / "finished" / SHARDS_NAME) for c in r.ctxs]
    assert len(done_before) == 6 and sorted(named.keys) == sorted(set(expected) - set(done_before))
    assert sorted(p.name for p in labels.iterdir()) == sorted([*SHARDS, STATE, MANIFEST])
    assert (labels / SHARDS[0]).read_bytes() == (OLD / "partial" / SHARDS[0]).read_bytes()  # kept, not rescored

    new, old = list(formats.read_retrieval(labels / SHARDS_NAME)), list(formats.read_retrieval(OLD / "finished" / SHARDS_NAME))
    assert [(r.id, r.scorer, [c.id for c in r.ctxs]) for r in new] == [(r.id, r.scorer, [c.id for c in r.ctxs]) for r in old]
    np.testing.assert_allclose([c.score for r in new for c in r.ctxs], [c.score for r in old for c in r.ctxs], rtol=1e-5, atol=1e-5)
    for name in (STATE, MANIFEST):  # the same keys in the same order; equal but for timing and run counters
        new_json, old_json = json.loads((labels / name).read_text()), json.loads((OLD / "finished" / name).read_text())
        assert list(new_json) == list(old_json), name
        drop = TIMING_AND_RUN_COUNTERS | {"shard_sha256"}  # the checksums of shards 1 and 2 follow their float bits
        assert {k: v for k, v in new_json.items() if k not in drop} == {k: v for k, v in old_json.items() if k not in drop}, name
    state = json.loads((labels / STATE).read_text())
    assert state["shard_sha256"][SHARDS[0]] == json.loads((OLD / "partial" / STATE).read_text())["shard_sha256"][SHARDS[0]]
    assert (manifest["pairs_scored"], manifest["runs"], manifest["last_run"]["pairs_scored"]) == (16, 2, 10)


def test_an_old_folder_refuses_other_settings_naming_them(scorer, old_folder):
    labels = old_folder("partial")
    before = _files(labels)
    named = Named(scorer, reduction="sum")
    with pytest.raises(InputError) as err:
        score_retrieved("retrieved.jsonl", labels, named, top_k=3, questions_per_chunk=3)
    assert str(err.value) == (f"{labels / STATE}: this folder holds pseudo labels made with reduction='mean'; this run asks for "
                              "reduction='sum'. Score into a new output folder (or delete this one) to relabel")
    assert named.keys == [] and _files(labels) == before


def test_an_old_folder_without_its_state_is_refused(scorer, old_folder):
    labels = old_folder("finished")
    (labels / STATE).unlink()
    before = _files(labels)
    with pytest.raises(InputError) as err:
        score_retrieved("retrieved.jsonl", labels, Named(scorer), top_k=3, questions_per_chunk=3)
    assert str(err.value) == (f"{labels}: holds score output ({SHARDS[0]}, ...) but no {STATE}, so it cannot be checked for a "
                              "resume; write to another output folder or delete this one")
    assert _files(labels) == before
