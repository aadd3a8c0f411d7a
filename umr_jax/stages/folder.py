"""The stage folder: what every stage's output folder guarantees, in one place.

    stage = StageFolder("emb/", "encode", settings_file="encode.json")
    with stage.session():                    # exclusive lock; removes the folder again if this run
        resumed = stage.begin(settings)      # made it and failed before recording any shard
        ...
        write_shard(...); stage.record_shard("shard-00003", ["shard-00003.npy", "shard-00003.ids.txt"])
        ...
        write the manifest last                # its presence says the stage finished

- **Lock.** `session()` takes an exclusive lock on `<folder>/.umr-jax.lock` (`flock`, so the
  kernel drops it when its holder dies, even by kill -9) and writes the holder's host, pid,
  command and start time into it. A second run into the same folder is refused at once with a
  one-line error naming the holder. The file is removed when the lock is released; a killed
  holder leaves it behind, unlocked, and the next run simply takes it. Only the writing process
  (process 0) locks.
- **Settings.** `begin(settings)` compares the run's settings with the folder's settings file and
  refuses, naming every key that differs, whenever they are not the same, even when no shard has
  been written yet. A folder holding shards but no settings file is refused too. `check` does
  the same comparison and changes nothing (a command's early check, before its model loads). A
  stage whose settings file records more than the settings (the score stage's `state.json`)
  overrides `saved_settings`, and may word the refusal its own way (`refusal`).
- **Shards.** A shard is complete only when `.records/<name>.json` lists each of its files with
  its size and SHA-256 under the fingerprint of the folder's settings (`shard_is_recorded`). A
  file under its final name is whole (atomic writes), but only a record says which run wrote it.
- **Temporaries.** `begin` removes the `.*.tmp` files and folders a killed run left behind (the
  lock guarantees no live writer owns them).
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import hashlib
import json
import os
import shutil
import socket
import sys
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping

from umr_jax import storage
from umr_jax.data.files import AtomicFile
from umr_jax.errors import InputError

LOCK_FILE = ".umr-jax.lock"
# The sub-folders a folder of stage folders (the loop's, a scaling study's) does not bring from a
# bucket when it is opened: each stage that needs them fetches its own when it runs.
LARGE = ("checkpoints", "embeddings", "index")
RECORDS = ".records"


def file_sha256(path: str | os.PathLike) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def settings_fingerprint(settings: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode("utf-8")).hexdigest()


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """`obj` as indented JSON (UTF-8, keys sorted), written atomically."""
    with AtomicFile(path) as f:
        f.write((json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8"))


def differing_keys(saved: Mapping[str, Any], requested: Mapping[str, Any], ignore: Iterable[str] = ()) -> list[str]:
    """The keys, sorted, whose values differ between `saved` and `requested`, but those in `ignore`."""
    ignore, missing = set(ignore), object()  # a key one side lacks differs, even from None
    return [key for key in sorted(set(saved) | set(requested))
            if key not in ignore and saved.get(key, missing) != requested.get(key, missing)]


def describe_differences(saved: Mapping[str, Any], requested: Mapping[str, Any],
                         labels: Mapping[str, str] | None = None, ignore: Iterable[str] = ()) -> list[str]:
    """`key saved -> requested` for every key whose values differ, but those in `ignore`
    (`labels[key]` replaces the line for keys whose values mean nothing to a reader, such as file
    fingerprints)."""
    labels = labels or {}
    return [labels.get(key, f"{key} {saved.get(key)!r} -> {requested.get(key)!r}")
            for key in differing_keys(saved, requested, ignore)]


class FolderLock:
    """An exclusive, advisory lock on a folder (see the module docstring)."""

    def __init__(self, folder: Path, stage: str):
        self.folder, self.stage = folder, stage
        self._fd: int | None = None

    def acquire(self) -> None:
        path = self.folder / LOCK_FILE
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_holder(fd)
                os.close(fd)
                raise InputError(f"in use by another run ({holder}); wait for it to finish, or write to another output folder",
                                 self.folder) from None
            except OSError as err:  # a filesystem without locks would silently allow two writers
                os.close(fd)
                raise InputError(f"cannot lock {LOCK_FILE} ({err.strerror}); put the output on a filesystem with file "
                                 "locks", self.folder) from None
            try:  # the holder we waited on may have removed the file between our open and flock
                same = os.stat(path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        holder = {"stage": self.stage, "host": socket.gethostname(), "pid": os.getpid(), "command": " ".join(sys.argv),
                  "since": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(holder) + "\n").encode("utf-8"), 0)
        self._fd = fd

    def release(self) -> None:
        """Remove the lock file, then unlock (a run that opened it meanwhile sees it gone and
        retries on a new file). A killed holder leaves the file, unlocked: the next run takes it."""
        if self._fd is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.folder / LOCK_FILE)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
    storage.unpublish(path)


def _read_holder(fd: int) -> str:
    try:
        holder = json.loads(os.pread(fd, 4096, 0).decode("utf-8"))
        return (f"{holder.get('stage', 'a stage')} on host {holder.get('host')} as pid {holder.get('pid')} since "
                f"{holder.get('since')}: {holder.get('command')}")
    except (OSError, ValueError, AttributeError):
        return "holder unknown"


class StageFolder:
    """One stage's output folder: lock, settings, shard records, temporaries (module docstring).

    `settings_file` names the JSON file holding the settings (None: the stage keeps none);
    `labels` replaces the difference line of keys like file fingerprints in refusals; `ignore`
    names settings that are recorded but not compared (they do not change the output: the
    scorer's path, when the scorer is compared by a fingerprint of its files).
    """

    def __init__(self, path: str | os.PathLike, stage: str, *, settings_file: str | None = None,
                 labels: Mapping[str, str] | None = None, ignore: Iterable[str] = (),
                 not_fetched: tuple[str, ...] = ()):
        self.path = storage.local(path)
        self.url = storage.url_of(self.path)  # a gs:// folder, worked on in its local mirror
        # Opening a bucket folder brings it into the mirror but the sub-folders `not_fetched`: a
        # train folder's Orbax checkpoints (Orbax reads them from the bucket), or in a folder of
        # stage folders (the loop, a study) the large ones each stage fetches when it runs.
        self._fetch = dict(skip=tuple(not_fetched))
        self.stage = stage
        self.settings_file = settings_file
        self.labels = dict(labels or {})
        self.ignore = frozenset(ignore)
        self._fingerprint: str | None = None
        self._recorded_this_session = False

    @contextlib.contextmanager
    def session(self, *, writer: bool = True, remove_on_failure: bool = True,
                keep_if: Callable[[], bool] | None = None) -> Iterator["StageFolder"]:
        """Hold the folder's lock (writer only). When the block raises an `Exception` (bad input,
        a model that does not load, a full disk) and the session recorded no shard (`keep`), what
        the session created is removed: the whole folder (and the folders it made above it) when
        the session made it, else the entries that were not there before. Nothing is removed
        with `remove_on_failure=False` (a driver whose sub-stages keep their own work) or when
        `keep_if()`, asked at the failure, says the work is worth keeping. An interruption
        (Ctrl-C, SIGTERM, kill) removes nothing."""
        if self.url is not None:  # what reached the bucket (a run on another machine) is here too
            storage.fetch(self.url, **self._fetch)
        if self.path.exists() and not self.path.is_dir():
            raise InputError(f"exists and is not a folder; expected the {self.stage} output folder", self.path)
        if not writer:
            yield self
            return
        created = None  # the outermost folder this session makes: the output or a missing folder above it
        # (in a bucket's mirror only the output itself: the mirror's folders above it are not the bucket's)
        for folder in (self.path,) if self.url is not None else (self.path, *self.path.absolute().parents):
            if folder.exists():
                break
            created = folder
        self.path.mkdir(parents=True, exist_ok=True)
        before = set(os.listdir(self.path))
        lock = FolderLock(self.path, self.stage)
        # A refused lock removes nothing: the run that holds it may have made the folder a moment
        # ago, both of them seeing it missing.
        lock.acquire()
        remote_lock = None
        if self.url is not None:
            remote_lock = storage.RemoteLock(self.url, self.stage)
            try:
                remote_lock.acquire()
            except BaseException:
                lock.release()
                raise
            storage.fetch(self.url, **self._fetch)  # what the previous holder uploaded after the first look
            before = set(os.listdir(self.path))
        try:
            yield self
        except Exception:
            if remove_on_failure and not self._recorded_this_session and not (keep_if is not None and keep_if()):
                lock.release()
                if created is not None:
                    _remove(created)
                else:
                    for name in set(os.listdir(self.path)) - before:
                        _remove(self.path / name)
            raise
        finally:
            lock.release()
            if remote_lock is not None:
                remote_lock.release()

    def refresh(self) -> None:
        """A folder in a bucket: bring its mirror up to date (what other hosts uploaded)."""
        if self.url is not None:
            storage.fetch(self.url, **self._fetch)

    def keep(self) -> None:
        """Say that this session wrote work worth keeping: a failure no longer removes the folder."""
        self._recorded_this_session = True

    # -- settings -------------------------------------------------------------------------------

    def saved_settings(self) -> dict | None:
        """The folder's settings (None when it has no settings file); refuses an unreadable one."""
        path = self.path / self.settings_file
        if not path.is_file():
            return None
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise InputError(f"unreadable ({err}); delete the folder to start over", path) from None
        if not isinstance(saved, dict):
            raise InputError("not a settings object; delete the folder to start over", path)
        return saved

    def refusal(self, saved: Mapping[str, Any], requested: Mapping[str, Any], keys: list[str]) -> str:
        """What `check` says when the folder's settings differ from the run's in `keys` (sorted).
        A stage may override it to word the refusal its own way."""
        return (f"this folder holds an earlier {self.stage} run with other settings "
                f"({'; '.join(describe_differences(saved, requested, self.labels, self.ignore))}); resume with the same "
                "settings, or write to another output folder")

    def check(self, settings: Mapping[str, Any], *, leftovers: Iterable[str] = ()) -> bool:
        """Compare `settings` with the folder's, changing nothing. True when the folder holds an
        earlier run with the same settings (but for those in `ignore`). Raises `InputError`
        naming every difference (`refusal`), and for `leftovers` (names of outputs found) in a
        folder without settings."""
        settings = dict(settings)
        saved = self.saved_settings()
        if saved is None:
            leftovers = list(leftovers)
            if leftovers:
                raise InputError(f"holds {self.stage} output ({leftovers[0]}, ...) but no {self.settings_file}, so it cannot "
                                 "be checked for a resume; write to another output folder or delete this one", self.path)
            return False
        keys = differing_keys(saved, settings, self.ignore)
        if keys:
            raise InputError(self.refusal(saved, settings, keys), self.path / self.settings_file)
        return True

    def begin(self, settings: Mapping[str, Any], *, leftovers: Iterable[str] = (), write: bool = True) -> bool:
        """`check` the settings, sweep temporaries and (`write`) record the settings when the
        folder has none. True when the folder holds an earlier run with the same settings (a
        resume). Runs under the lock (`session`): the sweep removes what no live writer owns."""
        settings = dict(settings)
        self._fingerprint = settings_fingerprint(settings)
        resumed = self.check(settings, leftovers=leftovers)
        self.sweep_temporaries()
        if not resumed and write:
            write_json(self.path / self.settings_file, settings)
        return resumed

    def sweep_temporaries(self) -> list[str]:
        """Remove `.*.tmp` files and folders left by killed runs; returns their names."""
        swept = []
        for folder in (self.path, self.path / RECORDS):
            if not folder.is_dir():
                continue
            for entry in folder.iterdir():
                if entry.name.startswith(".") and entry.name.endswith(".tmp"):
                    _remove(entry)
                    swept.append(entry.name)
        return swept

    # -- shards ---------------------------------------------------------------------------------

    def _record_path(self, name: str) -> Path:
        return self.path / RECORDS / f"{name}.json"

    def record_shard(self, name: str, file_names: Iterable[str]) -> dict:
        """Record shard `name` as complete: each file's size and SHA-256 under this run's
        settings fingerprint (`begin` must have run, on this process or the writer)."""
        if self._fingerprint is None:
            raise RuntimeError("StageFolder.begin(settings) must run before record_shard")
        entry = {"settings_sha256": self._fingerprint,
                 "files": {f: {"bytes": (self.path / f).stat().st_size, "sha256": file_sha256(self.path / f)} for f in file_names}}
        write_json(self._record_path(name), entry)
        self.keep()
        return entry

    def shard_is_recorded(self, name: str, file_names: Iterable[str]) -> bool:
        """True when shard `name` is recorded under this run's settings and each of its files is
        there with the recorded size and checksum."""
        try:
            entry = json.loads(self._record_path(name).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            return False
        file_names = list(file_names)
        if not isinstance(entry, dict) or entry.get("settings_sha256") != self._fingerprint or \
                sorted(entry.get("files", {})) != sorted(file_names):
            return False
        for f in file_names:
            path, want = self.path / f, entry["files"][f]
            if not path.is_file() or path.stat().st_size != want.get("bytes") or file_sha256(path) != want.get("sha256"):
                return False
        return True

    def follow(self, settings: Mapping[str, Any]) -> None:
        """For processes other than the writer, after the writer's `begin`: check that the folder
        holds `settings` and use their fingerprint for `record_shard`/`shard_is_recorded`."""
        settings = dict(settings)
        if self.url is not None:  # the writer on another host uploaded them
            storage.fetch(self.path / self.settings_file)
        saved = self.saved_settings()
        if saved is None or differing_keys(saved, settings, self.ignore):
            found = "none" if saved is None else "; ".join(describe_differences(saved, settings, self.labels, self.ignore))
            raise InputError(f"the writing process recorded other settings ({found}); every process must run the same "
                             "command", self.path / self.settings_file)
        self._fingerprint = settings_fingerprint(settings)
