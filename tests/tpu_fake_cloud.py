#!/usr/bin/env python3
"""A stand-in for gcloud and for the tools on TPU VM workers, used by tests/test_tpu_scripts.py.

One file, installed under several names (gcloud, sudo, lsblk, git, pip, umr-jax, ...): what it does
depends on the name it is called by. It VERIFIES rather than accepts: gcloud refuses a command or a
flag that the current gcloud reference does not list for that command (COMMANDS below), a missing
required flag, and a TPU that was never created; `tpu-vm ssh` runs the worker command with bash in
that worker's own home (FAKE_ROOT/NODE/worker-W), so a worker that setup skipped has nothing; the
workers' umr-jax checks that it runs in ~/umr-jax and that its --config exists there; pip checks
that what it installs editable is a project. Every call is recorded as JSON in FAKE_CALLS.
Nothing here talks to Google Cloud.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

VALUE, FLAG = "value", "flag"
# Flags every gcloud command takes (gcloud topic flags); the scripts use --project, --quiet, --format.
GLOBAL_FLAGS = {"--project": VALUE, "--quiet": FLAG, "--format": VALUE, "--verbosity": VALUE,
                "--account": VALUE, "--configuration": VALUE, "--impersonate-service-account": VALUE}
_SSH_COMMON = {"--zone": VALUE, "--worker": VALUE, "--batch-size": VALUE, "--dry-run": FLAG,
               "--force-key-file-overwrite": FLAG, "--plain": FLAG, "--ssh-key-file": VALUE,
               "--strict-host-key-checking": VALUE, "--internal-ip": FLAG, "--tunnel-through-iap": FLAG,
               "--ssh-key-expiration": VALUE, "--ssh-key-expire-after": VALUE}
_CREATE_COMMON = {"--zone": VALUE, "--accelerator-type": VALUE, "--type": VALUE, "--topology": VALUE,
                  "--async": FLAG, "--boot-disk": VALUE, "--data-disk": VALUE, "--description": VALUE,
                  "--internal-ips": FLAG, "--labels": VALUE, "--metadata": VALUE, "--metadata-from-file": VALUE,
                  "--network": VALUE, "--range": VALUE, "--reserved": FLAG, "--scopes": VALUE,
                  "--service-account": VALUE, "--shielded-secure-boot": FLAG, "--spot": FLAG, "--subnetwork": VALUE,
                  "--tags": VALUE}
# The commands the scripts may issue, with the flags the gcloud reference (GA track) lists for each,
# the positional arguments and the flags that must be given.
COMMANDS = {
    ("compute", "tpus", "queued-resources", "create"): dict(
        positionals=1, required=["--zone", "--runtime-version", "--accelerator-type"],
        flags={**_CREATE_COMMON, "--runtime-version": VALUE, "--node-id": VALUE, "--node-count": VALUE,
               "--node-prefix": VALUE, "--guaranteed": FLAG, "--valid-after-duration": VALUE,
               "--valid-after-time": VALUE, "--valid-until-duration": VALUE, "--valid-until-time": VALUE}),
    ("compute", "tpus", "queued-resources", "describe"): dict(positionals=1, required=["--zone"], flags={"--zone": VALUE}),
    ("compute", "tpus", "queued-resources", "delete"): dict(
        positionals=1, required=["--zone"], flags={"--zone": VALUE, "--async": FLAG, "--force": FLAG}),
    ("compute", "tpus", "tpu-vm", "create"): dict(
        positionals=1, required=["--zone", "--version", "--accelerator-type"],
        flags={**_CREATE_COMMON, "--version": VALUE, "--preemptible": FLAG}),
    ("compute", "tpus", "tpu-vm", "describe"): dict(positionals=1, required=["--zone"], flags={"--zone": VALUE}),
    ("compute", "tpus", "tpu-vm", "delete"): dict(positionals=1, required=["--zone"], flags={"--zone": VALUE, "--async": FLAG}),
    ("compute", "tpus", "tpu-vm", "ssh"): dict(
        positionals=1, required=["--zone", "--worker"],
        flags={**_SSH_COMMON, "--command": VALUE, "--output-directory": VALUE, "--ssh-flag": VALUE}),
    ("compute", "tpus", "tpu-vm", "scp"): dict(
        positionals=2, required=["--zone", "--worker"],
        flags={**_SSH_COMMON, "--compress": FLAG, "--recurse": FLAG, "--scp-flag": VALUE}),
    ("storage", "rsync"): dict(
        positionals=2, required=[],
        flags={"--recursive": FLAG, "-r": FLAG, "--delete-unmatched-destination-objects": FLAG, "--dry-run": FLAG,
               "--checksums-only": FLAG, "--exclude": VALUE, "--no-clobber": FLAG}),
}


def fail(message, status=2):
    print(message, file=sys.stderr)
    sys.exit(status)


def record(kind, argv, stdin=None):
    calls = Path(os.environ["FAKE_CALLS"])
    entry = {"argv": argv, "cwd": os.getcwd(), "node": os.environ.get("FAKE_NODE"), "worker": os.environ.get("FAKE_WORKER"),
             "stdin": stdin}
    # named by the time, so that sorting the names puts the calls in order
    fd, _ = tempfile.mkstemp(prefix=f"{kind}.{time.time_ns():020d}.", dir=calls)
    with os.fdopen(fd, "w") as f:
        json.dump(entry, f)


def parse(argv):
    """argv after 'gcloud' -> (command key, positionals, {flag: value or True}); exit 2 on anything unknown."""
    for key in COMMANDS:
        if tuple(argv[:len(key)]) == key:
            break
    else:
        words = [a for a in argv if not a.startswith("-")]
        fail(f"ERROR: (gcloud) Invalid choice: '{' '.join(words)}' is not a command the fake knows")
    spec = COMMANDS[key]
    accepted = {**GLOBAL_FLAGS, **spec["flags"]}
    positionals, flags = [], {}
    for arg in argv[len(key):]:
        if not arg.startswith("-"):
            positionals.append(arg)
            continue
        flag, has_value, value = arg.partition("=")
        kind = accepted.get(flag)
        if kind is None:
            fail(f"ERROR: (gcloud.{'.'.join(key)}) unrecognized arguments: {arg}")
        if (kind == VALUE) != bool(has_value):
            fail(f"ERROR: (gcloud.{'.'.join(key)}) argument {flag}: "
                 + ("expected one argument (the scripts write --flag=value)" if kind == VALUE else "takes no value"))
        if flag in flags and flag != "--ssh-flag":
            fail(f"ERROR: (gcloud.{'.'.join(key)}) argument {flag} given twice")
        flags[flag] = value if kind == VALUE else True
    if len(positionals) != spec["positionals"]:
        fail(f"ERROR: (gcloud.{'.'.join(key)}) expected {spec['positionals']} positional argument(s), got {positionals}")
    missing = [f for f in spec["required"] if f not in flags]
    if key[-1] == "create" and "--accelerator-type" in missing and "--type" in flags and "--topology" in flags:
        missing.remove("--accelerator-type")
    if missing:
        fail(f"ERROR: (gcloud.{'.'.join(key)}) argument {' '.join(missing)}: Must be specified.")
    return key, positionals, flags


def state_dir():
    path = Path(os.environ["FAKE_ROOT"]) / ".state"
    path.mkdir(parents=True, exist_ok=True)
    return path


def node_workers(node):
    home = Path(os.environ["FAKE_ROOT"]) / node
    if not home.is_dir():
        fail(f"ERROR: (gcloud.compute.tpus.tpu-vm) NOT_FOUND: node '{node}' does not exist", 1)
    return sorted(home.glob("worker-*"), key=lambda p: int(p.name.split("-")[1]))


def make_nodes(nodes):
    for node in nodes:
        for w in range(int(os.environ.get("FAKE_WORKERS", "1"))):
            (Path(os.environ["FAKE_ROOT"]) / node / f"worker-{w}").mkdir(parents=True)


def check_worker_value(worker, workers):
    if worker != "all" and not (worker.isdigit() and int(worker) < len(workers)):
        fail(f"ERROR: (gcloud.compute.tpus.tpu-vm) --worker={worker}: the TPU has workers 0-{len(workers) - 1} or 'all'", 1)
    return workers if worker == "all" else [workers[int(worker)]]


def gcloud(argv):
    key, positionals, flags = parse(argv)
    record("gcloud", argv)
    action = key[-1]
    if key[:3] == ("compute", "tpus", "queued-resources"):
        qr = state_dir() / f"qr-{positionals[0]}.json"
        if action == "create":
            if qr.exists():
                fail(f"ERROR: queued resource {positionals[0]} already exists", 1)
            if ("--node-id" in flags) == ("--node-count" in flags):
                fail("ERROR: (gcloud.compute.tpus.queued-resources.create) exactly one of --node-id or --node-count must be specified")
            if "--node-count" in flags:
                if "--node-prefix" not in flags or int(flags["--node-count"]) < 2:
                    fail("ERROR: --node-count (> 1) must come with --node-prefix")
                nodes = [f"{flags['--node-prefix']}-{i}" for i in range(int(flags["--node-count"]))]
            else:
                if "--node-prefix" in flags:
                    fail("ERROR: --node-prefix needs --node-count")
                nodes = [flags["--node-id"]]
            if "--spot" in flags and ("--reserved" in flags or "--guaranteed" in flags):
                fail("ERROR: at most one of --spot, --reserved, --guaranteed")
            make_nodes(nodes)
            qr.write_text(json.dumps({"nodes": nodes, "polls": 0}))
        elif not qr.exists():
            fail(f"ERROR: (gcloud.compute.tpus.queued-resources.{action}) NOT_FOUND: {positionals[0]}", 1)
        elif action == "describe":
            state = json.loads(qr.read_text())
            states = os.environ.get("FAKE_QR_STATES", "ACTIVE").split(",")
            if flags.get("--format") != "value(state.state)":
                fail(f"the fake describes a queued resource only as --format=value(state.state), got {flags.get('--format')}")
            print(states[min(state["polls"], len(states) - 1)])
            state["polls"] += 1
            qr.write_text(json.dumps(state))
        elif action == "delete":
            state = json.loads(qr.read_text())
            alive = [n for n in state["nodes"] if (Path(os.environ["FAKE_ROOT"]) / n).exists()]
            if alive and "--force" not in flags:
                fail(f"ERROR: queued resource {positionals[0]} still has nodes {alive}: delete them first or give --force", 1)
            for n in alive:
                shutil.rmtree(Path(os.environ["FAKE_ROOT"]) / n)
            qr.unlink()
    elif action == "create":  # tpu-vm create
        if (Path(os.environ["FAKE_ROOT"]) / positionals[0]).exists():
            fail(f"ERROR: TPU {positionals[0]} already exists", 1)
        make_nodes(positionals)
    elif action == "delete":
        node_workers(positionals[0])
        shutil.rmtree(Path(os.environ["FAKE_ROOT"]) / positionals[0])
    elif action == "describe":
        workers = node_workers(positionals[0])
        if flags.get("--format") != "value(networkEndpoints[].ipAddress)":
            fail(f"the fake describes a TPU VM only as --format=value(networkEndpoints[].ipAddress), got {flags.get('--format')}")
        print(";".join(f"10.0.0.{i + 2}" for i in range(len(workers))))
    elif action == "scp":
        source, target = positionals
        node, _, remote = target.partition(":")
        if not Path(source).is_file():
            fail(f"ERROR: scp: {source}: no such file", 1)
        for home in check_worker_value(flags["--worker"], node_workers(node)):
            shutil.copy(source, home / remote)
    elif action == "ssh":
        node = positionals[0]
        homes = check_worker_value(flags["--worker"], node_workers(node))
        if "--command" not in flags:
            fail("the fake runs only ssh --command=...")
        status = 0
        for home in homes:
            worker = home.name.split("-")[1]
            if os.environ.get("FAKE_FAIL") == f"{node}:{worker}":
                print("TPU is in use by another process", file=sys.stderr)
                status = 3
                continue
            env = dict(os.environ, HOME=str(home), FAKE_NODE=node, FAKE_WORKER=worker,
                       PATH=f"{home}/.fake-installed:{os.environ['FAKE_WORKER_BIN']}:/usr/bin:/bin")
            status = subprocess.run(["bash", "-c", flags["--command"]], env=env, cwd=home).returncode or status
        sys.exit(status)
    elif key == ("storage", "rsync"):
        if not Path(positionals[0]).is_dir():
            fail(f"ERROR: (gcloud.storage.rsync) {positionals[0]} is not a folder here ({os.getcwd()})", 1)
        if not positionals[1].startswith("gs://"):
            fail(f"ERROR: destination {positionals[1]} is not a bucket path", 1)


def worker_home():
    return Path(os.environ["HOME"])


def sudo(argv):
    record("tool", ["sudo", *argv], stdin=sys.stdin.read() if argv[:1] == ["tee"] else None)
    if argv[:1] == ["apt-get"] and "install" in argv and "gcsfuse" in argv:
        installed = worker_home() / ".fake-installed"
        installed.mkdir(exist_ok=True)
        shutil.copy(__file__, installed / "gcsfuse")
    if argv[:1] == ["blkid"]:
        sys.exit(0 if os.environ.get("FAKE_DISK_FORMATTED") == "1" else 2)


def pip(argv):
    record("tool", ["pip", *argv])
    if argv == ["install", "-q", "--upgrade", "pip"]:
        return
    if argv[:3] != ["install", "-q", "-e"] or len(argv) != 4:
        fail(f"pip: the fake installs pip or one editable project, got {argv}", 1)
    project = argv[3].removesuffix("[tpu]")
    if not (Path(project) / "pyproject.toml").is_file():
        fail(f"ERROR: {project} does not appear to be a Python project: no pyproject.toml", 1)
    (Path(sys.argv[0]).parent / ".installed-from").write_text(project)


def umr_jax(argv):
    record("tool", ["umr-jax", *argv])
    expected = worker_home() / "umr-jax"
    if Path.cwd() != expected:
        fail(f"umr-jax: runs in {Path.cwd()}, expected the checkout {expected}", 1)
    installed = (Path(sys.argv[0]).parent / ".installed-from")
    if not installed.is_file() or Path(installed.read_text()) != expected:
        fail("umr-jax: not installed from the checkout (pip install -e)", 1)
    if "--config" in argv:
        config = argv[argv.index("--config") + 1].split(":")[0]
        path = Path(config) if ("/" in config or config.endswith(".py")) else Path("configs") / f"{config}.py"
        if not path.is_file():
            fail(f"umr-jax: error: config file {config} not found in {Path.cwd()}", 2)
    # What a run writes, it writes under the checkout unless the path is a bucket or absolute.
    for i, arg in enumerate(argv):
        output = argv[i + 1] if arg == "--output" and i + 1 < len(argv) else arg.removeprefix("output_dir=")
        output = output if output != arg else ""
        if output and not output.startswith(("gs://", "/")):
            Path(output).mkdir(parents=True, exist_ok=True)
    print(f"umr-jax on worker {os.environ.get('FAKE_WORKER')} of {os.environ.get('FAKE_NODE')} in {Path.cwd()}")


def git(argv):
    record("tool", ["git", *argv])
    if argv[:4] == ["clone", "-q", "--depth", "1"] and len(argv) == 6:
        if argv[4] != os.environ.get("FAKE_GIT_URL"):
            fail(f"fatal: repository '{argv[4]}' not found", 128)
        shutil.copytree(os.environ["FAKE_GIT_SOURCE"], Path(argv[5]))
        (Path(argv[5]) / ".git").mkdir(exist_ok=True)
    elif argv[:1] == ["-C"] and argv[2:3] in (["fetch"], ["reset"]):
        if not (Path(argv[1]) / ".git").is_dir():
            fail(f"fatal: not a git repository: {argv[1]}", 128)
    else:
        fail(f"git: the fake does not know {argv}", 1)


def python311(argv):
    if argv[:2] != ["-m", "venv"] or len(argv) != 3:
        fail(f"python3.11: the fake only makes venvs, got {argv}", 9)
    bin_dir = Path(argv[2]) / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    for tool in ("pip", "python", "umr-jax"):
        shutil.copy(__file__, bin_dir / tool)
    (bin_dir / "activate").write_text(f'export PATH="{bin_dir}:$PATH"\n')


def venv_python(argv):
    record("tool", ["python", *argv])
    if argv[:1] != ["-c"] or "import jax" not in argv[1]:
        fail(f"python: the fake runs only the jax check, got {argv}", 1)
    print(f"worker {os.environ.get('FAKE_WORKER')}: 4 local / 16 TPU devices (TPU v5 lite)")


def main():
    name, argv = Path(sys.argv[0]).name, sys.argv[1:]
    if name == "gcloud":
        gcloud(argv)
    elif name == "sudo":
        sudo(argv)
    elif name == "pip":
        pip(argv)
    elif name == "umr-jax":
        umr_jax(argv)
    elif name == "git":
        git(argv)
    elif name == "python3.11":
        python311(argv)
    elif name == "python":
        venv_python(argv)
    elif name == "lsblk":
        record("tool", ["lsblk", *argv])
        ro = os.environ.get("FAKE_DISK_RO", "0")
        if ro == "none":
            fail(f"lsblk: {argv[-1]}: not a block device", 32)
        print(ro)
    elif name == "mountpoint":
        sys.exit(32)  # nothing is mounted yet
    elif name == "lsb_release":
        print("jammy")
    elif name == "curl":
        record("tool", ["curl", *argv])
        print("-----BEGIN PGP PUBLIC KEY BLOCK-----")
    elif name == "gcsfuse":
        record("tool", ["gcsfuse", *argv])
    else:
        fail(f"fake: unknown tool {name}", 127)


if __name__ == "__main__":
    main()
