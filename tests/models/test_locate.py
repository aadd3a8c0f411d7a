"""Hugging Face model IDs wherever a model folder goes, without the network: a Hugging Face cache
in the Hub's own layout (models--org--name/blobs, snapshots/<commit>/, refs/main) is built here
and read with HF_HUB_OFFLINE=1, as on a machine that downloaded the model earlier."""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from huggingface_hub import constants as hub_constants
from huggingface_hub import errors as hub_errors

from umr_jax import cli
from umr_jax.errors import InputError, ModelLoadError
from umr_jax.models import architectures, hf_io, locate
from umr_jax.demo.models import PRETRAINED
from tests.models.hf_reference import make_bert

REPO = Path(__file__).resolve().parents[2]
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def add_to_hf_cache(cache: Path, repo_id: str, folder: Path, commit: str = COMMIT, ref: str = "main") -> Path:
    """Put `folder`'s files into `cache` as the Hub does: content-addressed blobs, a snapshot of
    relative symlinks per commit, and refs/<ref> naming the commit. Returns the snapshot folder."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / commit
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        data = path.read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = snapshot / path.relative_to(folder)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / ref).write_text(commit)
    return snapshot


@pytest.fixture(scope="module")
def hf_home(tmp_path_factory):
    """HF_HOME with a cache holding `umr-test/tiny-bert` (a tiny BERT with its tokenizer) and
    `umr-test/demo-scorer` (the demo's shipped mT5 scorer)."""
    home = tmp_path_factory.mktemp("hf_home")
    models = tmp_path_factory.mktemp("made")
    make_bert(models / "tiny-bert")
    add_to_hf_cache(home / "hub", "umr-test/tiny-bert", models / "tiny-bert")
    add_to_hf_cache(home / "hub", "umr-test/demo-scorer", PRETRAINED / "scorer")
    add_to_hf_cache(home / "hub", "umr-test/demo-retriever", PRETRAINED / "retriever")
    return home


@pytest.fixture
def offline_cache(hf_home, monkeypatch):
    """This process reads `hf_home`'s cache, offline; every test resolves afresh."""
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(hf_home / "hub"))
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    locate._hub_snapshot.cache_clear()
    yield hf_home / "hub"
    locate._hub_snapshot.cache_clear()


def _snapshot(cache: Path, repo_id: str) -> Path:
    return cache / ("models--" + repo_id.replace("/", "--")) / "snapshots" / COMMIT


@pytest.mark.parametrize("spec,expected", [
    ("facebook/mcontriever", ("facebook/mcontriever", None)),
    ("xlm-roberta-base", ("xlm-roberta-base", None)),
    ("google/mt5-xl@main", ("google/mt5-xl", "main")),
    ("google/mt5-xl@refs/pr/3", ("google/mt5-xl", "refs/pr/3")),
    (f"org/name@{COMMIT}", ("org/name", COMMIT)),
    ("runs/xor/iter0/train/best", None),  # a path of three parts
    ("/models/mcontriever", None),
    ("./mcontriever", None),
    ("gs://bucket/models/mcontriever", None),
    ("org--x/name", None),
    ("org/na..me", None),
    ("", None),
])
def test_what_reads_as_a_model_id(spec, expected):
    assert locate.parse_model_id(spec) == expected


def test_a_local_folder_is_itself_and_a_missing_path_is_one_line(tmp_path, monkeypatch):
    assert locate.resolve_model_dir(tmp_path) == tmp_path
    assert locate.resolve_model_dir(str(PRETRAINED / "scorer")) == PRETRAINED / "scorer"
    (tmp_path / "org" / "name").mkdir(parents=True)  # an existing folder wins over the ID it spells
    monkeypatch.chdir(tmp_path)
    assert locate.resolve_model_dir("org/name") == Path("org/name") and not locate.is_model_id("org/name")
    with pytest.raises(InputError, match=r"^/nowhere/model: no such model folder; expected a Hugging Face model folder "
                                         r"or a model ID \(org/name\[@revision\]\)$"):
        locate.resolve_model_dir("/nowhere/model")


def test_a_cached_id_resolves_offline_at_any_revision_spelling(offline_cache):
    snapshot = _snapshot(offline_cache, "umr-test/tiny-bert")
    for spec in ("umr-test/tiny-bert", "umr-test/tiny-bert@main", f"umr-test/tiny-bert@{COMMIT}"):
        assert locate.resolve_model_dir(spec) == snapshot, spec
    assert locate.model_label("umr-test/tiny-bert") == "umr-test/tiny-bert"
    assert locate.model_label(PRETRAINED / "scorer") == str((PRETRAINED / "scorer").absolute())


def test_loading_by_id_equals_loading_the_folder(offline_cache, tmp_path):
    by_id = hf_io.load_bert("umr-test/tiny-bert")
    by_folder = hf_io.load_bert(_snapshot(offline_cache, "umr-test/tiny-bert"))
    assert by_id.folder == _snapshot(offline_cache, "umr-test/tiny-bert")
    flat_id, flat_folder = hf_io.flatten_tree(by_id.params), hf_io.flatten_tree(by_folder.params)
    assert set(flat_id) == set(flat_folder) and all(np.array_equal(flat_id[k], flat_folder[k]) for k in flat_id)
    tokenizer = hf_io.load_tokenizer("umr-test/tiny-bert")
    assert tokenizer.convert_tokens_to_ids(["w0", "w94"]) == [5, 99]


def test_an_id_loads_as_scorer_and_tower_and_fingerprints_as_its_files(offline_cache):
    from umr_jax.labeling.scorer import QuestionLikelihoodScorer
    from umr_jax.parallel.mesh import make_mesh
    from umr_jax.stages.score_folder import scorer_fingerprint
    from umr_jax.training.common import build_dual_encoder

    import jax

    mesh = make_mesh({"data": -1, "fsdp": 1, "model": 1}, jax.devices()[:1])
    scorer = QuestionLikelihoodScorer("umr-test/demo-scorer", mesh=mesh, rules="data_parallel", dtype="float32")
    assert scorer.name == "umr-test/demo-scorer" and scorer.folder == _snapshot(offline_cache, "umr-test/demo-scorer")
    assert scorer_fingerprint("umr-test/demo-scorer") == scorer_fingerprint(PRETRAINED / "scorer")
    setup = build_dual_encoder("umr-test/tiny-bert", separate_towers=True, passage_folder="umr-test/tiny-bert@main",
                               dtype="float32")
    assert setup.family == "bert" and set(setup.params) == {"query_tower", "passage_tower"}


def test_an_id_not_in_the_cache_is_one_line_naming_it(offline_cache):
    with pytest.raises(InputError) as err:
        locate.resolve_model_dir("umr-test/not-cached@v2")
    message = str(err.value)
    assert message.startswith("umr-test/not-cached@v2: no such folder here, and as a Hugging Face model ID it is not in "
                              f"the local cache ({offline_cache}) and HF_HUB_OFFLINE is set")
    assert "`hf download umr-test/not-cached --revision v2`" in message and "HF_HOME" in message and "\n" not in message


def test_model_inspect_takes_an_id(offline_cache, capsys):
    assert cli.main(["model", "inspect", "umr-test/tiny-bert", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["model"] == "umr-test/tiny-bert" and report["folder"] == str(_snapshot(offline_cache, "umr-test/tiny-bert"))
    assert report["family"] == "bert" and report["config"]["num_hidden_layers"] == 3


def test_the_command_line_reads_the_cache_offline_from_any_folder(hf_home, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1", "JAX_PLATFORMS": "cpu"}
    env.pop("HF_HUB_CACHE", None)

    def umr_jax(*argv):
        return subprocess.run([sys.executable, "-m", "umr_jax.cli", *argv], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=300)

    done = umr_jax("model", "inspect", "umr-test/tiny-bert")
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith(f"umr-test/tiny-bert ({_snapshot(hf_home / 'hub', 'umr-test/tiny-bert')}): bert, ")
    failed = umr_jax("model", "inspect", "facebook/mcontriever")
    assert failed.returncode == 1 and "Traceback" not in failed.stderr
    (line,) = failed.stderr.strip().splitlines()
    assert line.startswith("umr-jax model: error: facebook/mcontriever: no such folder here, and as a Hugging Face model "
                           f"ID it is not in the local cache ({hf_home / 'hub'}) and HF_HUB_OFFLINE is set")
    assert "hf download facebook/mcontriever" in line


class FakeHub:
    """`snapshot_download` against repositories in a folder, copying what `allow_patterns`
    selects into the cache as the Hub would (to test what is fetched)."""

    def __init__(self, repos: dict[str, Path], cache: Path):
        self.repos, self.cache, self.calls = repos, cache, []

    def __call__(self, repo_id, *, revision=None, allow_patterns=None, local_files_only=False):
        self.calls.append((repo_id, tuple(allow_patterns), local_files_only))
        if repo_id not in self.repos:
            http = sys.modules[hub_errors.Response.__module__.split(".")[0]]  # the Hub client's HTTP library
            request = http.Request("GET", f"https://huggingface.co/api/models/{repo_id}")
            raise hub_errors.RepositoryNotFoundError("404", response=hub_errors.Response(404, request=request))
        source = self.repos[repo_id]
        snapshot = self.cache / repo_id / COMMIT
        for path in source.rglob("*"):
            name = path.relative_to(source).as_posix()
            if path.is_file() and any(fnmatch.fnmatch(name, p) for p in allow_patterns):
                (snapshot / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(path, snapshot / name)
        snapshot.mkdir(parents=True, exist_ok=True)
        return str(snapshot)


def test_only_the_files_the_loaders_read_are_fetched(tmp_path, monkeypatch):
    import huggingface_hub

    with_safetensors = tmp_path / "repos" / "st"
    shutil.copytree(PRETRAINED / "retriever", with_safetensors)
    for extra in ("pytorch_model.bin", "tf_model.h5", "flax_model.msgpack", "onnx/model.onnx", "README.md"):
        (with_safetensors / extra).parent.mkdir(parents=True, exist_ok=True)
        (with_safetensors / extra).write_bytes(b"not read")
    torch_only = tmp_path / "repos" / "pt"
    shutil.copytree(with_safetensors, torch_only)
    (torch_only / "model.safetensors").unlink()
    hub = FakeHub({"org/st": with_safetensors, "org/pt": torch_only}, tmp_path / "cache")
    monkeypatch.setattr(huggingface_hub, "snapshot_download", hub)
    locate._hub_snapshot.cache_clear()

    fetched = sorted(p.relative_to(locate.resolve_model_dir("org/st")).as_posix()
                     for p in locate.resolve_model_dir("org/st").rglob("*") if p.is_file())
    assert fetched == ["1_Pooling/config.json", "config.json", "model.safetensors", "modules.json",
                       "sentence_bert_config.json", "tokenizer.json", "tokenizer_config.json"]
    assert len(hub.calls) == 1  # resolved once per process
    folder = locate.resolve_model_dir("org/pt")
    assert (folder / "pytorch_model.bin").is_file() and not (folder / "tf_model.h5").exists()
    assert [call[0] for call in hub.calls] == ["org/st", "org/pt", "org/pt"]  # safetensors first, then the pickle
    assert locate.resolve_model_dir("org/st", config_only=True) and hub.calls[-1][1] == ("config.json",)
    with pytest.raises(InputError, match=r"^org/missing: no such folder here and no model 'org/missing' on the Hugging "
                                         r"Face Hub \(a private one needs `hf auth login`\)"):
        locate.resolve_model_dir("org/missing")
    locate._hub_snapshot.cache_clear()


def test_compile_finds_architectures_of_ids(offline_cache):
    """`umr-jax compile` builds programs without weights: a public checkpoint's ID is its preset
    (no network), any other ID its config.json from the cache."""
    assert architectures.preset_name("google/mt5-xl") == "mt5-xl" == architectures.preset_name("google/mt5-xl@main")
    hf, source = architectures.architecture("google/mt5-xl")
    assert (hf["d_model"], hf["num_layers"], source) == (2048, 24, "preset mt5-xl")
    assert architectures.architecture("facebook/mcontriever")[1] == "preset mcontriever"
    assert architectures.architecture("intfloat/multilingual-e5-large")[0]["hidden_size"] == 1024
    hf, source = architectures.architecture("umr-test/tiny-bert")
    assert hf["hidden_size"] == 32 and source == f"umr-test/tiny-bert ({_snapshot(offline_cache, 'umr-test/tiny-bert')}/config.json)"
    with pytest.raises(ModelLoadError, match=r"^org/unknown-model: no known architecture of that name, and no such folder "
                                             r"here, .*hf download org/unknown-model.*; give a model folder, a model ID or "
                                             r"one of: bert-base-multilingual-cased, "):
        architectures.architecture("org/unknown-model")


def test_encode_by_id_equals_encode_by_folder_and_records_the_id(offline_cache, tmp_path):
    from umr_jax.retrieval.embeddings import EmbeddingStore
    from tests.retrieval.towers import write_demo_tsv

    passages = write_demo_tsv(tmp_path / "passages.tsv", 20)
    stores = {}
    for name, model in (("by_id", "umr-test/demo-retriever"), ("by_folder", str(PRETRAINED / "retriever"))):
        argv = ["encode", "--model", model, "--passages", str(passages), "--output", str(tmp_path / name), "--dtype", "float32",
                "--max-length", "32", "--batch-size", "8", "--no-progress"]
        assert cli.main(argv) == 0
        stores[name] = EmbeddingStore.open(tmp_path / name)
    manifest = json.loads((tmp_path / "by_id" / "manifest.json").read_text())
    assert manifest["encode"]["model"] == "umr-test/demo-retriever"
    assert manifest["encode"]["pooling"] == "mean"  # from the ID's sentence-transformers files
    (by_id, ids), (by_folder, folder_ids) = (next(stores[name].iter_shards()) for name in ("by_id", "by_folder"))
    assert by_id.shape == (20, 64) and ids == folder_ids
    np.testing.assert_array_equal(by_id, by_folder)
