"""Every anticipated failure of every command ends in one line, `umr-jax CMD: error: path[:line]:
what is wrong; what is expected`, with exit status 1 (2 for argparse's usage errors), never a
traceback, and leaves no output behind.

Each case runs the real command line (`umr_jax.cli.main`) on tiny inputs: the demo's shipped
tiny models (copied, so they can be damaged), a few demo passages and questions, an index and a
retrieval file made by the commands themselves.

Unwritable outputs are made two ways that fail for root too (the tests run as root, and
`chmod 0o555` does not stop root): an output under a regular file (ENOTDIR / EEXIST), and an
output under `/sys`, where even root may not create anything (sysfs: EPERM). As a normal user the
second is refused up front (`os.access`); as root the check passes and the real OS error is
turned into the same kind of line by `umr_jax.cli.main`.
"""

from __future__ import annotations

import argparse
import dataclasses
import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from umr_jax import cli
from umr_jax.data import formats
from umr_jax.demo import models as demo_models
from umr_jax.errors import describe_os_error
from umr_jax.outputs import removed_on_failure
from tests.retrieval.towers import demo_questions, write_demo_tsv

REPO = Path(__file__).resolve().parents[1]
DEMO_CONFIG = str(REPO / "configs" / "demo.py")
SYSFS = Path("/sys")


def _run(argv: list) -> int:
    try:
        return cli.main([str(a) for a in argv])
    except SystemExit as exit:  # argparse's usage errors
        return int(exit.code)


@pytest.fixture(scope="module")
def fx(tmp_path_factory):
    """Good inputs, made once: models, passages, questions, embeddings, an exact index, a
    retrieval file and pseudo labels."""
    root = tmp_path_factory.mktemp("inputs")
    shutil.copytree(demo_models.PRETRAINED / "retriever", root / "retriever")
    shutil.copytree(demo_models.PRETRAINED / "scorer", root / "scorer")
    write_demo_tsv(root / "passages.tsv", 24)
    questions = demo_questions(6, "train")
    formats.write_questions(root / "questions.jsonl", questions)
    assert _run(["encode", "--model", root / "retriever", "--passages", root / "passages.tsv", "--output", root / "emb",
                 "--dtype", "float32", "--no-progress"]) == 0
    assert _run(["index", "build", "--embeddings", root / "emb", "--backend", "exact", "--output", root / "index"]) == 0
    assert _run(["retrieve", "--model", root / "retriever", "--index", root / "index", "--queries", root / "questions.jsonl",
                 "--passages", root / "passages.tsv", "--top-k", "3", "--dtype", "float32", "--no-progress",
                 "--output", root / "retrieved.jsonl"]) == 0
    retrieved = list(formats.read_retrieval(root / "retrieved.jsonl"))
    formats.write_retrieval(root / "labels.jsonl", [dataclasses.replace(r, scorer="synthetic") for r in retrieved])
    np.save(root / "queries.npy", np.random.default_rng(0).standard_normal((2, 64)).astype(np.float32))
    return root


def _train(fx: Path, *overrides: str, output: Path) -> list:
    return ["train", "--config", DEMO_CONFIG, f"model.init={fx / 'retriever'}", f"data.pseudo_labels={fx / 'labels.jsonl'}",
            "train.questions_per_batch=4", "data.candidates_per_question=2", "data.top_k=3", *overrides, "--output", output]


# ---------------------------------------------------------------------------------------------
# 1. Outputs that cannot be written, in every command that writes


def _writers(fx: Path, out: Path) -> dict[str, list]:
    """Each writing command with its output under `out` (a path that cannot be created)."""
    return {
        "data convert": ["data", "convert", "--from", "retrieval", "--to", "xor-predictions", fx / "retrieved.jsonl", out / "pred.json"],
        "encode": ["encode", "--model", fx / "retriever", "--queries", fx / "questions.jsonl", "--output", out / "emb", "--no-progress"],
        "index build": ["index", "build", "--embeddings", fx / "emb", "--backend", "exact", "--output", out / "index"],
        "index search": ["index", "search", "--index", fx / "index", "--query-embeddings", fx / "queries.npy", "--top-k", "2",
                         "--output", out / "r.npz"],
        "retrieve": ["retrieve", "--model", fx / "retriever", "--index", fx / "index", "--queries", fx / "questions.jsonl",
                     "--passages", fx / "passages.tsv", "--top-k", "2", "--no-progress", "--output", out / "run.jsonl"],
        "score": ["score", "--scorer", fx / "scorer", "--retrieved", fx / "retrieved.jsonl", "--top-k", "2", "--no-progress",
                  "--output", out / "labels"],
        "train": _train(fx, output=out / "train"),
        "loop": ["loop", "--config", DEMO_CONFIG, f"loop.scorer={fx / 'scorer'}", f"loop.retriever={fx / 'retriever'}",
                 "--output", out / "loop"],
        "evaluate": ["evaluate", "xor-retrieve", "--gold", fx / "questions.jsonl", "--predictions", fx / "retrieved.jsonl",
                     "--tokenizer", "nltk-line", "--output", out / "eval.json"],
        "scaling": ["scaling", "--config", str(REPO / "configs" / "demo_scaling.py"), "--output", out / "study"],
        "demo": ["demo", "--output", out / "demo"],
    }


WRITERS = ["data convert", "encode", "index build", "index search", "retrieve", "score", "train", "loop", "evaluate", "scaling", "demo"]


def _one_error_line(err: str, command: str) -> str:
    """The error line of stderr; asserts there is exactly one and no traceback."""
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if ": error: " in line]
    assert len(lines) == 1, err
    assert lines[0].startswith(f"umr-jax {command}: error: "), err
    return lines[0]


@pytest.mark.parametrize("command", WRITERS)
def test_output_under_a_file_is_one_line(command, fx, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    argv = _writers(fx, blocker / "out")[command]
    assert _run(argv) == 1
    line = _one_error_line(capsys.readouterr().err, argv[0])
    assert f"{blocker}: " in line and "not a folder" in line, line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"] and blocker.read_text() == "not a folder"


@pytest.fixture
def sysfs_output(tmp_path):
    """A path under /sys: nothing may be created there, not even by root."""
    target = SYSFS / f"umr-jax-test-{os.getpid()}"
    try:
        target.mkdir()
    except OSError:
        return target
    target.rmdir()
    pytest.skip("/sys is writable here")


@pytest.mark.skipif(not SYSFS.is_dir(), reason="no /sys (not Linux)")
@pytest.mark.parametrize("command", [c for c in WRITERS if c != "scaling"])  # scaling reads its sources first
def test_unwritable_output_folder_is_one_line(command, fx, sysfs_output, capsys):
    argv = _writers(fx, sysfs_output)[command]
    assert _run(argv) == 1
    line = _one_error_line(capsys.readouterr().err, argv[0])
    assert f"{sysfs_output}" in line, line
    assert any(word in line for word in ("permission denied", "read-only", "cannot be written")), line
    assert not sysfs_output.exists()


def test_data_index_that_cannot_be_written_is_one_line(fx, tmp_path, capsys):
    shutil.copy(fx / "passages.tsv", tmp_path / "p.tsv")
    (tmp_path / "p.tsv.idx").mkdir()  # where the offset index goes
    assert _run(["data", "index", tmp_path / "p.tsv"]) == 1
    line = _one_error_line(capsys.readouterr().err, "data")
    assert line == f"umr-jax data: error: {tmp_path / 'p.tsv.idx'}: is a folder; expected a file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.tsv", "p.tsv.idx"]  # no temporary file left


def test_os_errors_name_the_path_and_what_is_expected():
    rofs = OSError(errno.EROFS, "Read-only file system", "/mnt/ro/out")
    assert describe_os_error(rofs) == "/mnt/ro/out: on a read-only file system; expected a writable location"
    rename = IsADirectoryError(errno.EISDIR, "Is a directory", "/data/.run.jsonl.x1.tmp", None, "/data/run.jsonl")
    assert describe_os_error(rename) == "/data/run.jsonl: is a folder; expected a file"  # the target, not our temp file
    assert describe_os_error(OSError(errno.ENOSPC, "No space left on device")) == "no space left on the device; free some space or write elsewhere"
    assert describe_os_error(OSError(errno.EIO, "I/O error", "/x")) is None  # not anticipated: keeps its traceback


# ---------------------------------------------------------------------------------------------
# 2-15. Bad inputs: a table of cases, each a command and what its one line must say


@dataclasses.dataclass
class Case:
    argv: list
    says: list[str]  # substrings of the error line
    code: int = 1
    never_says: tuple[str, ...] = ()


def _model_copy(fx: Path, tmp: Path, name: str, which: str = "retriever") -> Path:
    folder = tmp / name
    shutil.copytree(fx / which, folder)
    return folder


def _truncated(fx: Path, tmp: Path, which: str = "retriever") -> Path:
    folder = _model_copy(fx, tmp, f"cut-{which}", which)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    return folder


def _with_config(fx: Path, tmp: Path, which: str = "retriever", **changes) -> Path:
    folder = _model_copy(fx, tmp, "odd-config", which)
    config = json.loads((folder / "config.json").read_text())
    config.update(changes)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def _torch_bin(fx: Path, tmp: Path, name: str, extra=None, legacy: bool = False) -> Path:
    import torch
    from safetensors.numpy import load_file

    folder = tmp / name
    shutil.copytree(fx / "retriever", folder, ignore=shutil.ignore_patterns("model.safetensors"))
    state = {k: torch.from_numpy(v) for k, v in load_file(str(fx / "retriever" / "model.safetensors")).items()}
    if extra is not None:
        state["extra"] = extra
    torch.save(state, folder / "pytorch_model.bin", _use_new_zipfile_serialization=not legacy)
    return folder


def _index_over_npy(tmp: Path, rows_now: int) -> Path:
    """An exact index over a 5-row .npy with ids, whose .npy is then replaced by `rows_now` rows."""
    np.save(tmp / "m.npy", np.ones((5, 4), np.float32))
    (tmp / "ids.txt").write_text("a\nb\nc\nd\ne\n")
    assert _run(["index", "build", "--embeddings", tmp / "m.npy", "--ids", tmp / "ids.txt", "--backend", "exact",
                 "--output", tmp / "index"]) == 0
    np.save(tmp / "m.npy", np.ones((rows_now, 4), np.float32))
    np.save(tmp / "q.npy", np.ones((2, 4), np.float32))
    return tmp / "index"


def _search(index: Path, queries: Path, tmp: Path, *extra) -> list:
    return ["index", "search", "--index", index, "--query-embeddings", queries, *extra, "--output", tmp / "out" / "r.npz"]


def _encode(model: Path, tmp: Path, *source) -> list:
    return ["encode", "--model", model, *source, "--output", tmp / "out" / "emb", "--no-progress"]


def _score(scorer: Path, retrieved: Path, tmp: Path, *extra) -> list:
    return ["score", "--scorer", scorer, "--retrieved", retrieved, "--no-progress", *extra, "--output", tmp / "out" / "labels"]


def _retrieve(fx: Path, tmp: Path, *, queries=None, output=None, extra=()) -> list:
    return ["retrieve", "--model", fx / "retriever", "--index", fx / "index", "--queries", queries or fx / "questions.jsonl",
            "--passages", fx / "passages.tsv", "--no-progress", *extra, "--output", output or tmp / "out" / "run.jsonl"]


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _npy(path: Path, matrix: np.ndarray) -> Path:
    np.save(path, matrix)
    return path


def _folder(path: Path) -> Path:
    path.mkdir()
    return path


def _damaged_index(fx: Path, tmp: Path, meta: str) -> Path:
    shutil.copytree(fx / "index", tmp / "index")
    (tmp / "index" / "index.json").write_text(meta)
    return tmp / "index"


def _index_without_ids(tmp: Path) -> Path:
    index = _index_over_npy(tmp, 5)
    (index / "ids.txt").unlink()
    return index


def _emb_without_shard_ids(fx: Path, tmp: Path) -> Path:
    shutil.copytree(fx / "emb", tmp / "emb")
    (tmp / "emb" / "shard-00000.ids.txt").unlink()
    return tmp / "emb"


def _train_pairs(fx: Path, tmp: Path, lines: list[dict], *overrides: str) -> list:
    """A contrastive run (configs/translated_pairs.py) on the pairs `lines`, written to tmp."""
    path = _write(tmp / "pairs.jsonl", "".join(json.dumps(line) + "\n" for line in lines))
    return ["train", "--config", str(REPO / "configs" / "translated_pairs.py"), f"model.init={fx / 'retriever'}",
            f"data.path={path}", "train.batch_size=2", "model.dtype=float32", *overrides, "--output", tmp / "out"]


_PAIRS = [{"query": f"q{i}", "positive": f"p{i}", "lang": ("ar", "ja", "ja")[i % 3], "passage_lang": "en"} for i in range(12)]

CASES: dict[str, Callable[[Path, Path], Case]] = {
    # 16. arms that cannot be trained as declared (issue 21)
    "train: a direction over pairs that do not state it": lambda fx, tmp: Case(
        _train_pairs(fx, tmp, _PAIRS[:3] + [{"query": "q", "positive": "p", "lang": "ja"}], "data.direction=cross-lingual"),
        [f"{tmp}/pairs.jsonl: record 4: data.direction=cross-lingual needs every pair's passage_lang"]),
    "train: no pairs of the direction": lambda fx, tmp: Case(
        _train_pairs(fx, tmp, _PAIRS, "data.direction=monolingual"), [f"{tmp}/pairs.jsonl: no training pairs", "data.direction"]),
    "train: a stratified subset too large": lambda fx, tmp: Case(
        _train_pairs(fx, tmp, _PAIRS, "data.stratify=True", "data.subset_size=10"),
        ["data.stratify: a subset of 10 pairs takes 5 of each of its 2 languages, but ar has 4",
         "the largest stratified subset is 8"]),
    "train: a language the pairs lack": lambda fx, tmp: Case(
        _train_pairs(fx, tmp, _PAIRS, "data.languages=ja,ko"), ["data.languages asks for ko, which this source has no pairs of (of those asked for, it has: ja)"]),
    # 2. a truncated model.safetensors, wherever a model is loaded
    "truncated safetensors: model inspect": lambda fx, tmp: Case(
        ["model", "inspect", _truncated(fx, tmp)], [f"{tmp}/cut-retriever/model.safetensors: not a readable safetensors file", "interrupted download"]),
    "truncated safetensors: encode": lambda fx, tmp: Case(
        _encode(_truncated(fx, tmp), tmp, "--queries", fx / "questions.jsonl"), ["cut-retriever/model.safetensors: not a readable safetensors file"]),
    "truncated safetensors: score": lambda fx, tmp: Case(
        _score(_truncated(fx, tmp, "scorer"), fx / "retrieved.jsonl", tmp), ["cut-scorer/model.safetensors: not a readable safetensors file"]),
    "truncated safetensors: train": lambda fx, tmp: Case(
        _train(fx, f"model.init={_truncated(fx, tmp)}", output=tmp / "out" / "train"), ["cut-retriever/model.safetensors: not a readable safetensors file"]),
    # 3. a pickle that weights_only refuses
    "pickle refused by weights_only": lambda fx, tmp: Case(
        ["model", "inspect", _torch_bin(fx, tmp, "unsafe", extra=argparse.Namespace(a=1))],
        ["unsafe/pytorch_model.bin: refused for safety", "argparse.Namespace", "safetensors.torch.save_file", "save_pretrained"],
        never_says=("weights_only=False",)),
    # 5. nonsense sizes in config.json
    "config hidden_size=-64": lambda fx, tmp: Case(
        ["model", "inspect", _with_config(fx, tmp, hidden_size=-64)], [f"{tmp}/odd-config/config.json: hidden_size=-64; expected an integer >= 1"]),
    "config num_hidden_layers=0": lambda fx, tmp: Case(
        ["model", "inspect", _with_config(fx, tmp, num_hidden_layers=0)], ["config.json: num_hidden_layers=0; expected an integer >= 1"]),
    "config heads do not divide hidden": lambda fx, tmp: Case(
        ["model", "inspect", _with_config(fx, tmp, num_attention_heads=5)], ["config.json: hidden_size=64 is not divisible by num_attention_heads=5"]),
    "config vocab_size=0": lambda fx, tmp: Case(
        _encode(_with_config(fx, tmp, vocab_size=0), tmp, "--queries", fx / "questions.jsonl"), ["config.json: vocab_size=0; expected an integer >= 1"]),
    "config T5 num_heads=0": lambda fx, tmp: Case(
        _score(_with_config(fx, tmp, "scorer", num_heads=0), fx / "retrieved.jsonl", tmp), ["config.json: num_heads=0; expected an integer >= 1"]),
    "config hidden_size missing": lambda fx, tmp: Case(
        ["model", "inspect", _with_config(fx, tmp, hidden_size=None)], ["config.json: no 'hidden_size'; expected it"]),
    # 6. damaged index folders
    "corrupt index.json": lambda fx, tmp: Case(
        _search(_damaged_index(fx, tmp, "{not json"), fx / "queries.npy", tmp),
        [f"{tmp}/index/index.json: not valid JSON", "rebuild the index"]),
    "index.json without its sizes": lambda fx, tmp: Case(
        _search(_damaged_index(fx, tmp, '{"backend": "exact"}'), fx / "queries.npy", tmp),
        [f"{tmp}/index/index.json: dim=None; expected the index.json `umr-jax index build` writes"]),
    "index without its ids.txt": lambda fx, tmp: Case(
        _search(_index_without_ids(tmp), tmp / "q.npy", tmp),
        [f"{tmp}/index/ids.txt: no such file, but index.json says the index has ids", "rebuild the index"]),
    "embeddings without a shard ids file": lambda fx, tmp: Case(
        ["index", "build", "--embeddings", _emb_without_shard_ids(fx, tmp), "--backend", "exact", "--output", tmp / "out" / "index"],
        [f"{tmp}/emb/shard-00000.ids.txt: no such file; expected the ids file"]),
    # 7. non-positive counts are usage errors
    "index search --top-k -3": lambda fx, tmp: Case(
        _search(fx / "index", fx / "queries.npy", tmp, "--top-k", "-3"), ["argument --top-k: -3 is not positive; expected an integer >= 1"], code=2),
    "index search --top-k 0": lambda fx, tmp: Case(
        _search(fx / "index", fx / "queries.npy", tmp, "--top-k", "0"), ["argument --top-k: 0 is not positive"], code=2),
    "index build --top-k 0": lambda fx, tmp: Case(
        ["index", "build", "--embeddings", fx / "emb", "--top-k", "0", "--output", tmp / "out"], ["argument --top-k: 0 is not positive"], code=2),
    "retrieve --top-k 0": lambda fx, tmp: Case(_retrieve(fx, tmp, extra=("--top-k", "0")), ["argument --top-k: 0 is not positive"], code=2),
    "score --top-k -1": lambda fx, tmp: Case(
        _score(fx / "scorer", fx / "retrieved.jsonl", tmp, "--top-k", "-1"), ["argument --top-k: -1 is not positive"], code=2),
    "loop --iterations 0": lambda fx, tmp: Case(
        ["loop", "--config", DEMO_CONFIG, "--iterations", "0", "--output", tmp / "out"], ["argument --iterations: 0 is not positive"], code=2),
    "data convert --num-shards 0": lambda fx, tmp: Case(
        ["data", "convert", "--from", "retrieval", "--to", "dpr-json", "--num-shards", "0", fx / "retrieved.jsonl", tmp / "out.json"],
        ["argument --num-shards: 0 is not positive"], code=2),
    # 8. a results file that is a folder
    "retrieve --output is a folder": lambda fx, tmp: Case(
        _retrieve(fx, tmp, output=_folder(tmp / "results")), [f"{tmp}/results: is a folder; expected a file path"]),
    # 9. a wrongly typed config override
    "override train.epochs=abc": lambda fx, tmp: Case(
        _train(fx, "train.epochs=abc", output=tmp / "out"), ["override train.epochs=abc: train.epochs expects a number (it is 1), got 'abc'"]),
    "override train.grad_cache=yes": lambda fx, tmp: Case(
        _train(fx, "train.grad_cache=yes", output=tmp / "out"), ["train.grad_cache expects a boolean (True or False)", "got 'yes'"]),
    # 10. a plain retrieval file as pseudo labels
    "retrieval file as pseudo labels": lambda fx, tmp: Case(
        _train(fx, f"data.pseudo_labels={fx / 'retrieved.jsonl'}", output=tmp / "out"),
        [f"{fx}/retrieved.jsonl: record 1 (question ", "has no 'scorer'", "not pseudo labels", "umr-jax score"]),
    # 11, 15. no input at all
    "score: empty retrieved file": lambda fx, tmp: Case(
        _score(fx / "scorer", _write(tmp / "empty.jsonl", ""), tmp), [f"{tmp}/empty.jsonl: no questions to score"]),
    "encode: empty question file": lambda fx, tmp: Case(
        _encode(fx / "retriever", tmp, "--queries", _write(tmp / "empty.jsonl", "")), [f"{tmp}/empty.jsonl: no questions; expected at least one"]),
    "encode: header-only passage TSV": lambda fx, tmp: Case(
        _encode(fx / "retriever", tmp, "--passages", _write(tmp / "p.tsv", "id\ttext\ttitle\n")), [f"{tmp}/p.tsv: no passages after the header row"]),
    "retrieve: empty question file": lambda fx, tmp: Case(
        _retrieve(fx, tmp, queries=_write(tmp / "empty.jsonl", "")), [f"{tmp}/empty.jsonl: no questions; expected at least one"]),
    "train: empty pseudo labels": lambda fx, tmp: Case(
        _train(fx, f"data.pseudo_labels={_write(tmp / 'empty.jsonl', '')}", output=tmp / "out"), [f"{tmp}/empty.jsonl: no questions in the pseudo labels"]),
    "index build: no rows": lambda fx, tmp: Case(
        ["index", "build", "--embeddings", _npy(tmp / "m.npy", np.zeros((0, 4), np.float32)), "--backend", "exact", "--output", tmp / "out"],
        [f"{tmp}/m.npy: the embedding matrix has no rows"]),
    # 12. embeddings changed under an index
    "index over fewer rows than its ids": lambda fx, tmp: Case(
        _search(_index_over_npy(tmp, 3), tmp / "q.npy", tmp), [f"{tmp}/index/index.json: the index was built over 5 x 4 embeddings but", "now holds 3 x 4"]),
    "index over more rows than its ids": lambda fx, tmp: Case(
        _search(_index_over_npy(tmp, 8), tmp / "q.npy", tmp), ["the index was built over 5 x 4 embeddings but", "now holds 8 x 4"]),
    # 13. duplicate ids
    "index build: duplicate ids": lambda fx, tmp: Case(
        ["index", "build", "--embeddings", _npy(tmp / "m.npy", np.ones((3, 4), np.float32)), "--ids", _write(tmp / "ids.txt", "a\nb\na\n"),
         "--backend", "exact", "--output", tmp / "out"],
        [f"{tmp}/ids.txt:3: duplicate id 'a' (also on line 1)"]),
}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_one_line_and_leaves_nothing(name, fx, tmp_path, capsys):
    case = CASES[name](fx, tmp_path)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    inputs_before = sorted(p.relative_to(fx) for p in fx.rglob("*"))
    capsys.readouterr()
    assert _run(case.argv) == case.code
    err = capsys.readouterr().err
    command = case.argv[0]
    if case.code == 2:  # argparse: a usage line, then `umr-jax CMD [ACTION]: error: ...`
        assert "Traceback" not in err and err.strip().splitlines()[-1].startswith(f"umr-jax {command}")
        line = err.strip().splitlines()[-1]
    else:
        line = _one_error_line(err, command)
    for text in case.says:
        assert text in line, (text, line)
    for text in case.never_says:
        assert text not in line, (text, line)
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before  # no output, no temporary file
    assert sorted(p.relative_to(fx) for p in fx.rglob("*")) == inputs_before


def test_duplicate_ids_across_shards_name_both_files(tmp_path, capsys):
    from umr_jax.retrieval.embeddings import write_manifest, write_shard

    matrix = np.ones((3, 4), np.float32)
    write_manifest(tmp_path / "emb", [write_shard(tmp_path / "emb", 0, matrix, ["a", "b", "c"]),
                                      write_shard(tmp_path / "emb", 1, matrix, ["d", "b", "e"])], 4, "float32")
    assert _run(["index", "build", "--embeddings", tmp_path / "emb", "--backend", "exact", "--output", tmp_path / "index"]) == 1
    assert _one_error_line(capsys.readouterr().err, "index") == (
        f"umr-jax index: error: {tmp_path}/emb/shard-00001.ids.txt:2: duplicate id 'b' (also on {tmp_path}/emb/shard-00000.ids.txt:2); "
        "expected one id per row, each unique")
    assert not (tmp_path / "index").exists()


def test_the_console_command_prints_one_line_and_no_traceback(fx, tmp_path):
    """The same through `python -m umr_jax.cli`, in a process of its own."""
    folder = _truncated(fx, tmp_path)
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "UMR_JAX_COMPILATION_CACHE": "off"}
    done = subprocess.run([sys.executable, "-m", "umr_jax.cli", "model", "inspect", str(folder)], capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=300)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [
        f"umr-jax model: error: {folder}/model.safetensors: not a readable safetensors file (Error while deserializing header: "
        "incomplete metadata, file not fully covered); expected a complete file: it may be cut short by an interrupted "
        "download or copy; fetch or export it again"]


# ---------------------------------------------------------------------------------------------
# 4. A harmless old-format pytorch_model.bin loads (without mmap, still weights_only=True)


def test_legacy_torch_checkpoint_loads_the_same_weights(fx, tmp_path, capsys):
    from umr_jax.models import hf_io

    legacy = _torch_bin(fx, tmp_path, "legacy", legacy=True)
    import zipfile

    assert not zipfile.is_zipfile(legacy / "pytorch_model.bin")
    assert _run(["model", "inspect", legacy, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    reference = hf_io.load_bert(fx / "retriever")
    assert report["family"] == "bert" and report["parameters"] == hf_io.count_params(reference.params)
    loaded = hf_io.load_bert(legacy)
    flat, ref = hf_io.flatten_tree(loaded.params), hf_io.flatten_tree(reference.params)
    assert flat.keys() == ref.keys()
    for key in ref:
        np.testing.assert_array_equal(flat[key], ref[key])


# ---------------------------------------------------------------------------------------------
# 14. Duplicate prediction ids: counted as the official script counts them, and reported


def test_duplicate_predictions_are_counted_officially_and_reported(fx, tmp_path, capsys):
    records = (fx / "retrieved.jsonl").read_text().splitlines()
    (tmp_path / "dup.jsonl").write_text("\n".join(records + records[:2]) + "\n")
    argv = ["evaluate", "xor-retrieve", "--gold", fx / "questions.jsonl", "--tokenizer", "nltk-line", "--json", "--predictions"]
    assert _run([*argv, fx / "retrieved.jsonl"]) == 0
    single = json.loads(capsys.readouterr().out)
    assert _run([*argv, tmp_path / "dup.jsonl"]) == 0
    captured = capsys.readouterr()
    doubled = json.loads(captured.out)
    assert single["duplicate_predictions"] == 0 and doubled["duplicate_predictions"] == 2
    first_two = [json.loads(r)["lang"] for r in records[:2]]
    for lang in set(first_two):  # the official script counts a repeated question again
        assert doubled["counted"][lang] == single["counted"][lang] + first_two.count(lang)
    assert f"umr-jax evaluate: warning: 2 question id(s) are predicted more than once in {tmp_path / 'dup.jsonl'}" in captured.err


# ---------------------------------------------------------------------------------------------
# 16. A failed command removes what it created, and only that


def _bad_second_question(tmp_path: Path) -> Path:
    """A question file whose first record is fine (the command starts) and whose second is not."""
    return _write(tmp_path / "q.jsonl", '{"id": "1", "question": "Who?", "lang": "fi"}\n{"id": "2", "question": 5, "lang": "fi"}\n')


def test_failed_encode_removes_the_folders_it_made(fx, tmp_path, capsys):
    questions = _bad_second_question(tmp_path)
    output = tmp_path / "runs" / "emb"
    assert _run(["encode", "--model", fx / "retriever", "--queries", questions, "--output", output, "--no-progress"]) == 1
    assert f"{questions}:2: field 'question' must be a string" in _one_error_line(capsys.readouterr().err, "encode")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["q.jsonl"]  # no encode.json, no runs/


def test_failed_encode_keeps_what_an_earlier_run_left(fx, tmp_path, capsys):
    questions = _bad_second_question(tmp_path)
    output = tmp_path / "emb"
    output.mkdir()
    (output / "notes.txt").write_text("mine")
    assert _run(["encode", "--model", fx / "retriever", "--queries", questions, "--output", output, "--no-progress"]) == 1
    _one_error_line(capsys.readouterr().err, "encode")
    assert sorted(p.name for p in output.iterdir()) == ["notes.txt"] and (output / "notes.txt").read_text() == "mine"


def test_failed_index_build_removes_its_folder(fx, tmp_path, capsys):
    shutil.copytree(fx / "emb", tmp_path / "emb")
    matrix = np.load(tmp_path / "emb" / "shard-00000.npy")
    matrix[3, 0] = np.nan
    np.save(tmp_path / "emb" / "shard-00000.npy", matrix)
    assert _run(["index", "build", "--embeddings", tmp_path / "emb", "--backend", "exact", "--output", tmp_path / "a" / "b" / "index"]) == 1
    assert "shard-00000.npy: row 3 holds NaN or inf" in _one_error_line(capsys.readouterr().err, "index")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["emb"]


def test_results_written_onto_a_folder_leave_no_temporary_file(tmp_path):
    (tmp_path / "run.jsonl").mkdir()
    with pytest.raises(IsADirectoryError):
        formats.write_retrieval(tmp_path / "run.jsonl", [formats.RetrievalResult("q", "x", "fi", ())])
    assert [p.name for p in tmp_path.iterdir()] == ["run.jsonl"] and not any((tmp_path / "run.jsonl").iterdir())


def test_removed_on_failure_removes_only_what_the_block_made(tmp_path):
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "kept.txt").write_text("earlier run")
    (tmp_path / "neighbour.txt").write_text("not ours")
    with pytest.raises(ValueError), removed_on_failure(tmp_path / "old"):
        (tmp_path / "old" / "new.txt").write_text("this run")
        (tmp_path / "old" / "sub").mkdir()
        raise ValueError
    assert sorted(p.name for p in (tmp_path / "old").iterdir()) == ["kept.txt"]
    with pytest.raises(ValueError), removed_on_failure(tmp_path / "x" / "y" / "run.jsonl"):
        (tmp_path / "x" / "y").mkdir(parents=True)
        (tmp_path / "x" / "y" / "run.jsonl").write_text("partial")
        raise ValueError
    with pytest.raises(ValueError), removed_on_failure(tmp_path / "run.jsonl"):
        (tmp_path / ".run.jsonl.abc.tmp").write_text("temporary")
        (tmp_path / "run-00000-of-00002.jsonl").write_text("a shard")
        (tmp_path / "other.txt").write_text("written by someone else meanwhile")
        raise ValueError
    assert sorted(p.name for p in tmp_path.iterdir()) == ["neighbour.txt", "old", "other.txt"]
    with pytest.raises(KeyboardInterrupt), removed_on_failure(tmp_path / "resumable"):
        (tmp_path / "resumable").mkdir()
        raise KeyboardInterrupt  # an interrupted run keeps its output, to resume from
    assert (tmp_path / "resumable").is_dir()
