"""One vocabulary across the commands: the same flag for the same thing (`--model`, `--run`,
`--mesh [ROLE:]SPEC`, `--quiet/--verbose/--no-progress/--json`), the format table's names in every
format option, old spellings still accepted, and every flag an error message names present on the
command that prints it."""

from __future__ import annotations

import ast
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.test_bad_input_cli import _run

from umr_jax import cli
from umr_jax.data import formats
from umr_jax.demo import models as demo_models
from umr_jax.errors import FlagHint, InputError, with_hint
from umr_jax.runtime import Runtime
from tests.retrieval.towers import demo_questions, write_demo_tsv

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "umr_jax"


@pytest.fixture(scope="module")
def parsers():
    return cli.command_parsers()


def _parse(parsers, command: str, argv: list[str]):
    return parsers[command].parse_args(argv)


# ---------------------------------------------------------------------------------------------
# The shared flags, on every command


def test_every_command_has_the_shared_output_flags(parsers):
    assert {"encode", "retrieve", "score", "train", "loop", "scaling", "compile", "demo", "index build", "index search",
            "data validate", "data convert", "data index", "model inspect", "evaluate xor-retrieve", "evaluate xor-full",
            "evaluate ir", "evaluate compare"} == set(parsers)
    for name, parser in parsers.items():
        for flag in ("--quiet", "-q", "--verbose", "-v", "--no-progress", "--json"):
            assert flag in parser._option_string_actions, (name, flag)


def test_quiet_implies_no_progress_and_excludes_verbose(parsers, capsys):
    from umr_jax.parallel.cli_flags import settle_output_flags

    args = _parse(parsers, "data index", ["x.tsv", "--quiet"])
    assert args.no_progress is False
    settle_output_flags(args)
    assert args.no_progress is True
    assert _run(["data", "index", "x.tsv", "--quiet", "--verbose"]) == 2
    assert "not allowed with argument" in capsys.readouterr().err


def test_every_mesh_command_takes_mesh_and_rules(parsers):
    for name in ("encode", "retrieve", "score", "train", "loop", "scaling", "compile", "demo"):
        assert {"--mesh", "--rules"} <= set(parsers[name]._option_string_actions), name


def test_mesh_role_spec_sets_that_role_like_the_override(parsers):
    args = _parse(parsers, "loop", ["--config", "c.py", "--mesh", "data=2,fsdp=-1", "--mesh", "score:data=1,fsdp=-1,model=4",
                                    "--rules", "score:fsdp_tp"])
    flags = Runtime.from_config(None, args).layouts
    from umr_jax.config import load_config

    override = Runtime.from_config(load_config(str(ROOT / "configs" / "demo.py"), [
        "runtime.encode.mesh=data=2,fsdp=-1", "runtime.train.mesh=data=2,fsdp=-1",
        "runtime.score.mesh=data=1,fsdp=-1,model=4", "runtime.score.rules=fsdp_tp",
        "runtime.encode.rules=data_parallel", "runtime.train.rules=data_parallel"])).layouts
    for role in ("encode", "score", "train"):
        assert (flags[role].mesh, flags[role].rules) == (override[role].mesh, override[role].rules), role
    assert flags["score"].mesh == "data=1,fsdp=-1,model=4" and flags["encode"].mesh == "data=2,fsdp=-1"


def test_a_one_role_command_refuses_another_roles_mesh(parsers):
    args = _parse(parsers, "score", ["--model", "m", "--run", "r", "--output", "o", "--mesh", "train:data=2"])
    with pytest.raises(InputError, match=r"^--mesh train:data=2: this command runs the score role only; give --mesh data=2$"):
        Runtime.from_args(args, role="score")
    same = _parse(parsers, "score", ["--model", "m", "--run", "r", "--output", "o", "--mesh", "score:data=2,fsdp=4"])
    assert Runtime.from_args(same, role="score").layouts["score"].mesh == "data=2,fsdp=4"


def test_bad_role_or_rule_set_is_a_usage_error(capsys):
    assert _run(["loop", "--config", "c.py", "--mesh", "scorer:data=1"]) == 2
    assert "'scorer' is not a role; expected [ROLE:]MESH with ROLE one of encode, score, train" in capsys.readouterr().err
    assert _run(["score", "--model", "m", "--run", "r", "--output", "o", "--rules", "zero3"]) == 2
    assert "unknown rule set 'zero3'; choose from data_parallel, fsdp, fsdp_tp" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# Renamed flags and formats: the new names, and the old ones still working


def test_model_and_run_are_the_flags_and_the_old_names_still_parse(parsers):
    new = _parse(parsers, "score", ["--model", "m", "--run", "r.jsonl", "--output", "o"])
    old = _parse(parsers, "score", ["--scorer", "m", "--retrieved", "r.jsonl", "--output", "o"])
    assert (new.model, new.run) == (old.model, old.run) == ("m", "r.jsonl")
    for command in ("evaluate xor-retrieve",):
        assert _parse(parsers, command, ["--gold", "g", "--predictions", "p"]).run == "p"
    assert _parse(parsers, "evaluate xor-full", ["--gold", "g", "--predictions", "p"]).predictions == "p"  # answers, not a run
    assert _parse(parsers, "index search", ["--index", "i", "--query-embeddings", "q.npy", "--output", "o"]).queries == "q.npy"


@pytest.mark.parametrize("old,new", [("jsonl", "retrieval"), ("trec", "trec-run")])
def test_format_names_are_the_format_tables(parsers, old, new):
    base = ["--model", "m", "--index", "i", "--queries", "q", "--passages", "p", "--output", "o"]
    assert _parse(parsers, "retrieve", [*base, "--format", old]).format == new
    assert _parse(parsers, "retrieve", [*base, "--format", new]).format == new
    assert _parse(parsers, "data convert", ["--from", "retrieval", "--to", old, "a", "b"]).target_format == new
    assert new in formats.FORMATS


def test_passages_format_is_dpr_passages(parsers):
    for name in ("dpr-tsv", "dpr-passages"):
        assert _parse(parsers, "encode", ["--model", "m", "--passages", "p", "--output", "o", "--passages-format", name]).passages_format == "dpr-passages"
    from umr_jax.retrieval.encode import EncodeInput

    assert EncodeInput.passages("p.tsv", "dpr-passages").format == "dpr-tsv"  # what encode.json records, unchanged


def test_compile_json_to_stdout_and_json_out(parsers):
    bare = _parse(parsers, "compile", ["--config", "c.py", "--topology", "v5e-4", "--json"])
    assert bare.json == "-" and bare.json_out is None
    assert _parse(parsers, "compile", ["--config", "c.py", "--topology", "v5e-4", "--json", "r.json"]).json == "r.json"
    override = _parse(parsers, "compile", ["--config", "c.py", "--topology", "v5e-4", "--json", "score.top_k=4"])
    assert override.json == "-" and override.json_overrides == ["score.top_k=4"]
    assert _parse(parsers, "compile", ["--config", "c.py", "--topology", "v5e-4", "--json-out", "r.json"]).json_out == "r.json"


# ---------------------------------------------------------------------------------------------
# Real runs: index search from an encode folder, the aliases end to end, --json


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    root = tmp_path_factory.mktemp("vocab")
    shutil.copytree(demo_models.PRETRAINED / "retriever", root / "retriever")
    write_demo_tsv(root / "passages.tsv", 16)
    formats.write_questions(root / "questions.jsonl", demo_questions(4, "train"))
    common = ["--model", root / "retriever", "--dtype", "float32", "--quiet"]
    assert _run(["encode", *common, "--passages", root / "passages.tsv", "--passages-format", "dpr-tsv", "--output", root / "emb"]) == 0
    assert _run(["encode", *common, "--queries", root / "questions.jsonl", "--output", root / "q_emb"]) == 0
    assert _run(["index", "build", "--embeddings", root / "emb", "--backend", "exact", "--output", root / "index"]) == 0
    return root


def test_index_search_reads_an_encode_folder_and_writes_run_files(made, tmp_path, capsys):
    questions = list(formats.read_questions(made / "questions.jsonl"))
    capsys.readouterr()
    assert _run(["index", "search", "--index", made / "index", "--queries", made / "q_emb", "--top-k", "3",
                 "--format", "trec-run", "--tag", "t1", "--output", tmp_path / "run.trec", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)  # exactly one JSON object
    assert printed == {"paths": [str(tmp_path / "run.trec")], "format": "trec-run", "queries": 4, "top_k": 3}
    entries = list(formats.read_trec_run(tmp_path / "run.trec"))
    assert [e.query_id for e in entries] == [q.id for q in questions for _ in range(3)] and {e.rank for e in entries} == {1, 2, 3}

    assert _run(["index", "search", "--index", made / "index", "--queries", made / "q_emb", "--top-k", "3",
                 "--format", "retrieval", "--output", tmp_path / "run.jsonl"]) == 0
    results = list(formats.read_retrieval(tmp_path / "run.jsonl"))
    assert [(r.id, r.question, r.lang) for r in results] == [(q.id, q.question, q.lang) for q in questions]
    passages = {p.id: p for p in formats.read_dpr_passages(made / "passages.tsv")}
    assert all((c.title, c.text) == (passages[c.id].title, passages[c.id].text) for r in results for c in r.ctxs)
    # what `retrieve` writes for the same questions, with the same model
    assert _run(["retrieve", "--model", made / "retriever", "--dtype", "float32", "--quiet", "--index", made / "index",
                 "--queries", made / "questions.jsonl", "--passages", made / "passages.tsv", "--top-k", "3",
                 "--output", tmp_path / "retrieved.jsonl"]) == 0
    retrieved = list(formats.read_retrieval(tmp_path / "retrieved.jsonl"))
    assert [[c.id for c in r.ctxs] for r in results] == [[c.id for c in r.ctxs] for r in retrieved]
    by_trec = {(e.query_id, e.doc_id) for e in entries}
    assert {(r.id, c.id) for r in results for c in r.ctxs} == by_trec  # the same neighbours either way

    # the .npz as before, and the same neighbours from the encode folder as from its matrix
    assert _run(["index", "search", "--index", made / "index", "--queries", made / "q_emb", "--top-k", "3",
                 "--output", tmp_path / "r.npz"]) == 0
    assert {(questions[i].id, str(d)) for i, row in enumerate(np.load(tmp_path / "r.npz")["ids"]) for d in row} == by_trec


def test_index_search_retrieval_format_needs_questions_for_a_npy(made, tmp_path, capsys):
    np.save(tmp_path / "q.npy", np.ones((2, 64), np.float32))
    assert _run(["index", "search", "--index", made / "index", "--queries", tmp_path / "q.npy", "--format", "retrieval",
                 "--output", tmp_path / "run.jsonl"]) == 1
    assert ("--format retrieval needs each query's question and language, and these query embeddings name no question "
            "file: give --questions FILE" in capsys.readouterr().err)
    assert not (tmp_path / "run.jsonl").exists()


def test_unknown_language_hint_names_the_flag_and_the_flag_works(made, tmp_path, capsys):
    (tmp_path / "q.jsonl").write_text('{"id": "1", "question": "Who is Kaito?", "lang": "xx"}\n')
    argv = ["encode", "--model", made / "retriever", "--queries", tmp_path / "q.jsonl", "--dtype", "float32", "--quiet",
            "--output", tmp_path / "emb"]
    assert _run(argv) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"umr-jax encode: error: {tmp_path / 'q.jsonl'}:1: unknown language code 'xx'")
    assert err.endswith("; accept it with --known-language xx")
    assert _run([*argv, "--known-language", "xx", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["rows"] == 1


def test_hints_show_only_where_the_flag_exists():
    err = with_hint(InputError("unknown language code 'xx'", "q.jsonl", 1), "--known-language", "accept it with --known-language xx")
    assert err.hints == (FlagHint("--known-language", "accept it with --known-language xx"),)
    assert cli._with_hints(err, frozenset({"--known-language"})) == "q.jsonl:1: unknown language code 'xx'; accept it with --known-language xx"
    assert cli._with_hints(err, frozenset({"--output"})) == "q.jsonl:1: unknown language code 'xx'"


def test_quiet_and_json_keep_stdout_to_one_object(made, capsys):
    capsys.readouterr()
    assert _run(["data", "validate", "--format", "xor-questions", made / "questions.jsonl", "--json"]) == 0
    out = capsys.readouterr().out
    report = json.loads(out)
    assert report["valid"] is True and report["files"][0]["records"] == 4 and out.count("\n") == 1
    assert _run(["evaluate", "xor-retrieve", "--gold", made / "questions.jsonl", "--run", made / "missing.jsonl",
                 "--tokenizer", "nltk-line", "--quiet"]) == 1  # --run on evaluate; a missing file is one line
    assert "missing.jsonl" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# Every flag an error message or note names exists on the command(s) that can print it

# Where a module's flag-naming messages can surface: "path" or "path::function" -> the commands.
# Code below the commands names no flag in a message: it attaches a `FlagHint` (`with_hint`), which
# `umr_jax.cli` shows only on commands that have the flag; the entries below are code that only
# the listed commands run.
RUNS_STARTED = ["encode", "retrieve", "score", "train", "loop", "scaling", "demo"]
RAISED_BY = {
    "umr_jax/stages/train_cli.py": ["train"],
    "umr_jax/stages/loop_cli.py": ["loop"],
    "umr_jax/stages/index_cli.py": ["index search"],
    "umr_jax/data/cli.py": ["data convert"],
    "umr_jax/aot/cli.py": ["compile"],
    "umr_jax/aot/chips.py": ["compile"],
    "umr_jax/demo/cli.py": ["demo"],
    "umr_jax/evaluation/cli.py::_run_ir": ["evaluate ir"],
    "umr_jax/evaluation/report.py": ["evaluate compare"],
    "umr_jax/parallel/mesh.py": RUNS_STARTED,  # Runtime.start, on the commands that run on devices
    "umr_jax/training/runner.py": ["train", "loop", "scaling", "demo"],  # the trainers' resume check
}
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")
OTHER_COMMAND = re.compile(r"`umr-jax ([a-z]+(?: [a-z-]+)?)([^`]*)`")
OTHER_PROGRAM = re.compile(r"`python -m [^`]*`")  # another program's flags (umr_jax.demo.make_demo)
MESSAGE_CALLS = {"_note", "_warn", "say"}


def _texts(node: ast.AST) -> str:
    """The constant text of a message expression (f-string parts joined; the formatted values
    stand as '{}')."""
    parts = []
    for child in ast.walk(node):
        if isinstance(child, ast.Constant) and isinstance(child.value, str):
            parts.append(child.value)
        elif isinstance(child, ast.FormattedValue):
            parts.append("{}")
    return " ".join(parts)


def _messages(path: Path) -> list[tuple[str, int, str, tuple | None]]:
    """(function, line, text, hint) of every raised message, note and hint in `path`; hint is
    (flag, text) for a `with_hint` call, whose text is checked against its own flag."""
    found = []

    def visit(node: ast.AST, function: str) -> None:
        for child in ast.iter_child_nodes(node):
            name = child.name if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) else function
            if isinstance(child, ast.Call) and getattr(child.func, "id", None) == "with_hint" and len(child.args) == 3:
                flag, text = child.args[1], child.args[2]
                found.append((function, child.lineno, _texts(text), (flag.value if isinstance(flag, ast.Constant) else None,)))
                visit(child.args[0], function)
                continue
            if isinstance(child, ast.Raise) and child.exc is not None:
                if not (isinstance(child.exc, ast.Call) and getattr(child.exc.func, "id", None) == "with_hint"):
                    found.append((function, child.lineno, _texts(child.exc), None))
            elif isinstance(child, ast.Call) and getattr(child.func, "id", None) in MESSAGE_CALLS:
                found.append((function, child.lineno, _texts(child), None))
            visit(child, name)

    visit(ast.parse(path.read_text(encoding="utf-8")), "")
    return found


def _commands_of(relative: str, function: str) -> list[str] | None:
    return RAISED_BY.get(f"{relative}::{function}", RAISED_BY.get(relative))


def test_every_flag_a_message_names_exists_where_it_is_printed(parsers):
    problems, checked = [], 0
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = str(path.relative_to(ROOT))
        for function, line, text, hint in _messages(path):
            where = f"{relative}:{line}"
            if hint is not None:  # a hint names its own flag and no other
                names = set(FLAG.findall(text))
                if hint[0] is None or names - {hint[0]}:
                    problems.append(f"{where}: hint for {hint[0]} names {sorted(names)}")
                checked += 1
                continue
            for command, rest in OTHER_COMMAND.findall(text):  # `umr-jax score --run FILE ...`: that command's flags
                command = command if command in parsers else command.split()[0]
                for flag in FLAG.findall(rest):
                    checked += 1
                    if command not in parsers or flag not in parsers[command]._option_string_actions:
                        problems.append(f"{where}: `umr-jax {command}` has no {flag}")
            flags = FLAG.findall(OTHER_PROGRAM.sub("", OTHER_COMMAND.sub("", text)))
            if not flags:
                continue
            commands = _commands_of(relative, function)
            if commands is None:
                problems.append(f"{where}: names {flags} but no command is known to print it: use with_hint, or add "
                                f"{relative} to RAISED_BY")
                continue
            for command in commands:
                for flag in flags:
                    checked += 1
                    if flag not in parsers[command]._option_string_actions:
                        problems.append(f"{where}: names {flag}, which `umr-jax {command}` does not have")
    assert problems == []
    assert checked >= 25  # the walk sees the messages (a broken walk would pass vacuously)


def test_the_walk_sees_a_flag_a_command_lacks(tmp_path, parsers):
    bad = tmp_path / "bad.py"
    bad.write_text('def run(args):\n    raise InputError(f"pass --known-language {args.x}")\n'
                   'def other():\n    raise with_hint(InputError("x"), "--tag", "use --tag or --mesh")\n')
    found = _messages(bad)
    assert [(f, line, FLAG.findall(text), hint) for f, line, text, hint in found] == [
        ("run", 2, ["--known-language"], None), ("other", 4, ["--tag", "--mesh"], ("--tag",))]
    assert "--known-language" not in parsers["train"]._option_string_actions
