"""Where files live: local paths and Cloud Storage (`gs://bucket/key`) behind one layer.

Every command and config key that names a file or folder accepts a local path or a `gs://` URL.
Remote files are worked on through a local mirror of the bucket, one fixed place per URL:

    local("gs://bkt/runs/emb")  ->  ~/.cache/umr-jax/mirror/gs/bkt/runs/emb   (UMR_JAX_MIRROR moves it)
    url_of(that path)           ->  "gs://bkt/runs/emb"

- **Inputs** (`fetch`): a remote file, folder or shard set (`name.jsonl` read as
  `name-NNNNN-of-NNNNN.jsonl`) is downloaded into the mirror, each object only when the mirrored
  copy differs in size or modification time (rsync's quick check), and read there by the same
  code that reads local files: the offset-indexed passage collection, memory-mapped embeddings
  and ScaNN indexes need random access that object storage does not give.
- **Outputs**: a stage writes into the mirror as it writes any folder, and every file it commits
  (atomically, `data.files.AtomicFile`) is uploaded at once, before the commit returns
  (`publish`). One object upload is atomic on Cloud Storage (the object appears whole or not at
  all), so the guarantees of local outputs carry over: shards are whole, the manifest is written
  (and uploaded) last and says the stage finished, and a run on a new machine resumes from what
  reached the bucket (a stage folder `fetch`es its URL when it is opened). Removals are
  mirrored (`unpublish`). Orbax checkpoints go to the bucket directly (Orbax writes `gs://`
  itself, with its own commit marker).
- **Locks**: a stage folder in a bucket is locked by an object created only if absent
  (`ifGenerationMatch=0`) and refreshed by its holder; one whose holder stopped refreshing it
  for `UMR_JAX_REMOTE_LOCK_TTL` seconds (default 300), or whose holder was a process of this host
  that is gone, is taken over (`RemoteLock`). A holder that was taken over (it stalled past the
  TTL: a suspended VM, a stopped process) finds out before its next upload or removal there,
  which stops it with one line instead of writing over the new holder's output.

The remote file system is fsspec's (gcsfs for `gs://`, the library etils.epath and tfds use);
`STORAGE_EMULATOR_HOST` points it (and the lock's client) at a Cloud Storage emulator, and
`TENSORSTORE_GCS_HTTP_URL` points Orbax's tensorstore there too (`emulator_environment`).
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import json
import logging
import os
import re
import socket
import sys
import threading
import time
from pathlib import Path

from umr_jax.errors import InputError, JobFailed

PathLike = str | os.PathLike

_URL = re.compile(r"^(?P<scheme>[a-z][a-z0-9+.-]*)://(?P<bucket>[^/]+)(?:/(?P<key>.*))?$")
# `Path("gs://b/x")` is `gs:/b/x`: a URL that went through pathlib once is still recognised.
_COLLAPSED = re.compile(r"^(?P<scheme>gs|s3):/(?P<bucket>[^/]+)(?:/(?P<key>.*))?$")
_SHARD = re.compile(r"-\d{5}-of-\d{5}")
LOCK_OBJECT = ".umr-jax.lock"


def _match(location: PathLike):
    if isinstance(location, Path) or isinstance(location, str) or hasattr(location, "__fspath__"):
        text = os.fspath(location)
        return _URL.match(text) or _COLLAPSED.match(text)
    return None


def is_remote(location: PathLike | None) -> bool:
    """True for `scheme://...` (but `file://`): a location in object storage."""
    match = _match(location) if location is not None else None
    return match is not None and match["scheme"] != "file"


def normalize(location: PathLike) -> str:
    """The URL spelling of a remote location (`gs://b/k`, no trailing slash), else the path as given."""
    match = _match(location)
    if match is None or match["scheme"] == "file":
        return os.fspath(location)
    key = (match["key"] or "").strip("/")
    return f"{match['scheme']}://{match['bucket']}" + (f"/{key}" if key else "")


def cache_root() -> Path:
    return Path(os.environ.get("UMR_JAX_CACHE") or Path.home() / ".cache" / "umr-jax")


def mirror_root() -> Path:
    """The local mirror of remote locations (`UMR_JAX_MIRROR`, default `~/.cache/umr-jax/mirror`).
    On a TPU VM, put it on the data disk when outputs are large."""
    return Path(os.environ.get("UMR_JAX_MIRROR") or cache_root() / "mirror").absolute()


def local(location: PathLike) -> Path:
    """The local path to work on for `location`: itself when local, its mirror when remote (no I/O)."""
    if not is_remote(location):
        return Path(location)
    match = _match(normalize(location))
    key = (match["key"] or "")
    if any(part in ("..", ".") for part in key.split("/")):
        raise InputError("a remote location may not contain '.' or '..' parts", location)
    return mirror_root() / match["scheme"] / match["bucket"] / key


def url_of(path: PathLike) -> str | None:
    """The remote URL a mirror path stands for; None for a path outside the mirror."""
    if is_remote(path):
        return normalize(path)
    try:
        relative = Path(path).absolute().relative_to(mirror_root())
    except ValueError:
        return None
    parts = relative.parts
    if len(parts) < 2:
        return None
    return f"{parts[0]}://" + "/".join(parts[1:])


def shown(path: PathLike) -> str:
    """How to name `path` to a user: its URL when it mirrors one."""
    return url_of(path) or os.fspath(path)


def location(path: PathLike) -> str:
    """What to record in a file that refers to `path` (an index naming its embeddings): the URL of
    a mirrored path, else the absolute local path."""
    return url_of(path) or str(Path(path).absolute())


# -- the remote file system ---------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def _quiet_loggers() -> None:
    # gcsfs asks every bucket whether it is a zonal one and logs a warning when it cannot tell, and
    # logs each failed request's traceback when its retries run out: the caller's one-line
    # InputError (`_remote_error`) is the report.
    for name in ("gcsfs", "gcsfs.core", "gcsfs.extended_gcsfs", "fsspec", "google.auth", "urllib3"):
        logging.getLogger(name).setLevel(logging.CRITICAL)


def filesystem(url: str):
    """(fsspec file system, path inside it) for a remote URL."""
    _quiet_loggers()
    url = normalize(url)
    scheme = url.split("://", 1)[0]
    try:
        fs = _filesystem(scheme, os.environ.get("STORAGE_EMULATOR_HOST"))
    except (ImportError, ValueError) as err:
        raise InputError(f"no file system for this location ({err}); install gcsfs for gs://", url) from None
    return fs, fs._strip_protocol(url)


@functools.lru_cache(maxsize=None)
def _filesystem(scheme: str, emulator: str | None):
    """One file system per scheme and emulator address (a test's emulator is not a cached client's).
    Without fsspec's listings cache: another host writes into the folders this one listed (a
    cached listing says the settings process 0 just uploaded do not exist)."""
    import fsspec

    return fsspec.filesystem(scheme, skip_instance_cache=True, use_listings_cache=False)


def _remote_error(err: Exception, url: str, doing: str) -> InputError:
    text = str(err).splitlines()[0] if str(err) else type(err).__name__
    return InputError(f"{doing} failed: {type(err).__name__}: {text}", url)


def _mtime(info: dict) -> float | None:
    value = info.get("mtime") or info.get("updated")
    if isinstance(value, datetime.datetime):
        return value.timestamp()
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            return datetime.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    if isinstance(value, (int, float)):
        return float(value)
    return None


def _fresh(path: Path, info: dict) -> bool:
    try:
        stat = path.stat()
    except OSError:
        return False
    mtime = _mtime(info)
    return stat.st_size == info.get("size") and mtime is not None and abs(stat.st_mtime - mtime) < 1e-3


def _download(fs, key: str, info: dict, dest: Path) -> bool:
    """Download one object to `dest` (atomically) unless the mirrored copy is fresh; True if it ran."""
    if _fresh(dest, info):
        return False
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.download.tmp")
    try:
        fs.get_file(key, str(tmp))
        mtime = _mtime(info)
        if mtime is not None:
            os.utime(tmp, (mtime, mtime))
        os.replace(tmp, dest)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    return True


def _objects_under(fs, key: str) -> dict[str, dict]:
    """Every object below `key` (a folder), by full key; hidden lock objects excluded."""
    try:
        found = fs.find(key, detail=True, withdirs=False)
    except FileNotFoundError:
        return {}
    return {k: v for k, v in found.items() if v.get("type") != "directory" and not k.endswith("/" + LOCK_OBJECT)}


def _info(fs, key: str) -> dict | None:
    try:
        return fs.info(key)
    except FileNotFoundError:
        return None


def fetch(location: PathLike, *, skip: tuple[str, ...] = ()) -> Path:
    """An input: the local path to read `location` from. A remote file, folder (every object below
    it) or shard set (`name-NNNNN-of-NNNNN...` beside a missing `name...`) is downloaded into the
    mirror first, each object only when the mirrored copy is stale. A location that does not exist
    gives its mirror path, so the reader reports it missing as it would a local file (named by its
    URL: `shown`). For a folder, `skip` names sub-folders (at any depth) not to fetch: a train
    folder's Orbax `checkpoints` (Orbax reads them from the bucket itself), or a loop's embeddings,
    which the stage that needs them fetches when it runs."""
    if not is_remote(location):
        url = url_of(location)  # a mirror path stands for its URL: brought up to date the same way
        if url is None:
            return Path(location)
        location = url
    url = normalize(location)
    fs, key = filesystem(url)
    dest = local(url)
    try:
        info = _info(fs, key)
        if info is not None and info.get("type") != "directory":
            _download(fs, key, info, dest)
        elif info is not None:
            _sync_folder(fs, key, dest, skip=skip)
        else:
            parent, name = key.rsplit("/", 1) if "/" in key else (key, "")
            stem = name.split(".", 1)[0]
            try:
                siblings = fs.ls(parent, detail=True)
            except FileNotFoundError:
                siblings = []
            for entry in siblings:
                base = entry["name"].rsplit("/", 1)[-1]
                if entry.get("type") != "directory" and base.startswith(stem + "-") and _SHARD.search(base):
                    _download(fs, entry["name"], entry, dest.parent / base)
    except InputError:
        raise
    except Exception as err:  # network, permissions, a missing bucket: one line naming the URL
        raise _remote_error(err, url, "download") from None
    return dest


def _sync_folder(fs, key: str, dest: Path, *, skip: tuple[str, ...] = ()) -> int:
    count = 0
    prefix = key.rstrip("/") + "/"
    for full, info in sorted(_objects_under(fs, key).items()):
        relative = full[len(prefix):] if full.startswith(prefix) else full.rsplit("/", 1)[-1]
        if any(part in skip for part in relative.split("/")[:-1]):
            continue
        count += _download(fs, full, info, dest / relative)
    return count


def sync_down(path: PathLike) -> int:
    """Bring a mirrored output folder up to date with the bucket (a resume on a new machine sees
    every shard that reached it); returns how many objects were downloaded. A no-op for local
    paths."""
    url = url_of(path)
    if url is None:
        return 0
    fs, key = filesystem(url)
    try:
        return _sync_folder(fs, key, local(url))
    except Exception as err:
        raise _remote_error(err, url, "download") from None


def publish(path: PathLike) -> None:
    """Upload a just-committed file (or every file of a folder) of the mirror to its URL; a no-op
    outside the mirror. Returns once the objects are in the bucket."""
    url = url_of(path)
    if url is None:
        return
    check_lock(url)
    path = Path(path)
    fs, key = filesystem(url)
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file() and not _temporary(p))
    try:
        for file in files:
            target = key if file == path else f"{key}/{file.relative_to(path).as_posix()}"
            fs.put_file(str(file), target)
            info = fs.info(target)  # the mirrored copy takes the object's time: it is fresh
            mtime = _mtime(info)
            if mtime is not None:
                os.utime(file, (mtime, mtime))
    except Exception as err:
        raise _remote_error(err, url, "upload") from None


def unpublish(path: PathLike) -> None:
    """Remove the remote counterpart of a removed mirror file or folder (a no-op outside the mirror)."""
    url = url_of(path)
    if url is None:
        return
    check_lock(url)
    fs, key = filesystem(url)
    if "/" not in key.strip("/"):
        raise ValueError(f"refusing to remove a whole bucket: {url}")  # a bug, never a user's request
    with contextlib.suppress(FileNotFoundError):
        try:
            if fs.isdir(key):
                fs.rm(key, recursive=True)
            else:
                fs.rm_file(key)
        except FileNotFoundError:
            raise
        except Exception as err:
            raise _remote_error(err, url, "remove") from None


def exists(path: PathLike) -> bool:
    """Whether `path` exists; a mirror path is looked up in its bucket (another host may have
    written it), and brought into the mirror when it is there."""
    url = url_of(path)
    if url is None:
        return Path(path).exists()
    fetch(url)
    return local(url).exists()


def remove(path: PathLike) -> None:
    """Remove a file or folder, and its bucket counterpart when it is in the mirror."""
    import shutil

    path = local(path)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
    unpublish(path)


def _temporary(path: Path) -> bool:
    return path.name.startswith(".") and (path.name.endswith(".tmp") or path.name == LOCK_OBJECT)


def check_remote_output(url: str, kind: str) -> None:
    """Refuse a remote output that cannot be written: a bucket that does not exist (or cannot be
    read), a "folder" that is an object, a "file" that is a folder."""
    fs, key = filesystem(url)
    bucket = key.split("/", 1)[0]
    try:
        if not fs.exists(bucket):
            raise InputError("bucket not found (or not readable with these credentials); create it or fix the URL", url)
        info = _info(fs, key) if "/" in key else None
    except InputError:
        raise
    except Exception as err:
        raise _remote_error(err, url, "checking the output") from None
    if info is not None and kind == "folder" and info.get("type") != "directory":
        raise InputError("exists and is an object, not a folder; expected a folder for the output", url)
    if info is not None and kind == "file" and info.get("type") == "directory":
        raise InputError("is a folder; expected a file path for the output", url)


# -- a lock object ------------------------------------------------------------------------------


def lock_ttl() -> float:
    return float(os.environ.get("UMR_JAX_REMOTE_LOCK_TTL", "300"))


_HELD: dict[str, "RemoteLock"] = {}  # folder URL -> the lock this process holds on it


def check_lock(url: str) -> None:
    """Raise JobFailed when `url` lies in a folder whose lock this process held and has lost
    (`RemoteLock.verify`): another run took it over, and what this one would write now would
    land in that run's output."""
    for folder, lock in list(_HELD.items()):
        if url == folder or url.startswith(folder + "/"):
            lock.verify()


class RemoteLock:
    """An exclusive lock on a remote folder: the object `<folder>/.umr-jax.lock`, created only if
    absent (`ifGenerationMatch=0`), holding the holder's host, pid, command and last heartbeat,
    rewritten every TTL/5 seconds (matching its generation, so a holder that lost the lock finds
    out). A lock whose heartbeat is older than the TTL belonged to a dead run, and so does one
    held by a process of this host that no longer exists (killed): either is taken over.
    Only gs:// has preconditions; other schemes are not locked (a warning says so)."""

    def __init__(self, url: str, stage: str):
        self.url, self.stage = normalize(url), stage
        self._blob = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._mutex = threading.Lock()  # the heartbeat's rewrite against `verify`'s look
        self.lost = False

    def _bucket_blob(self):
        from google.cloud import storage as gcs  # the Cloud Storage client: preconditions on writes

        match = _URL.match(self.url)
        key = ((match["key"] or "").strip("/") + "/" + LOCK_OBJECT).lstrip("/")
        client = gcs.Client() if os.environ.get("STORAGE_EMULATOR_HOST") else _client()
        return client.bucket(match["bucket"]).blob(key)

    def _holder(self) -> dict:
        return {"stage": self.stage, "host": socket.gethostname(), "pid": os.getpid(), "command": " ".join(sys.argv),
                "heartbeat": time.time(),
                "since": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}

    def acquire(self) -> None:
        if not self.url.startswith("gs://"):
            logging.getLogger(__name__).warning("%s: no lock on this scheme; do not run two writers into it", self.url)
            return
        from google.api_core import exceptions

        _quiet_loggers()
        blob = self._bucket_blob()
        for _ in range(3):
            try:
                blob.upload_from_string(json.dumps(self._holder()), if_generation_match=0)
                break
            except exceptions.PreconditionFailed:
                try:
                    blob.reload()
                    holder = json.loads(blob.download_as_bytes(if_generation_match=blob.generation))
                except exceptions.NotFound:
                    continue  # released meanwhile: try again
                except (exceptions.PreconditionFailed, ValueError):
                    holder = {}
                age = time.time() - float(holder.get("heartbeat", 0))
                if age <= lock_ttl() and not _dead_here(holder):
                    raise InputError(
                        f"in use by another run ({holder.get('stage', 'a stage')} on host {holder.get('host')} as pid "
                        f"{holder.get('pid')} since {holder.get('since')}: {holder.get('command')}); wait for it to finish, "
                        f"or write to another output folder (a dead run's lock expires {lock_ttl():.0f} s after its last "
                        "heartbeat)", self.url) from None
                with contextlib.suppress(exceptions.NotFound, exceptions.PreconditionFailed):
                    blob.delete(if_generation_match=blob.generation)  # a dead holder's: take it over
            except Exception as err:
                raise _remote_error(err, self.url, "locking") from None
        else:
            raise InputError("could not take the lock (it changed hands three times); try again", self.url)
        self._blob = blob
        _HELD[self.url] = self
        self._thread = threading.Thread(target=self._heartbeat, name="umr-jax-lock", daemon=True)
        self._thread.start()

    def _heartbeat(self) -> None:
        from google.api_core import exceptions

        while not self._stop.wait(max(1.0, lock_ttl() / 5)):
            try:
                with self._mutex:
                    self._blob.upload_from_string(json.dumps(self._holder()), if_generation_match=self._blob.generation)
            except exceptions.PreconditionFailed:
                self.lost = True
                logging.getLogger(__name__).error("%s: the lock was taken over by another run", self.url)
                return
            except Exception:  # a transient error: the next beat tries again
                continue

    def verify(self) -> None:
        """Raise JobFailed when the lock object is no longer this holder's (gone, or rewritten by
        another run that took it over); one metadata read. A look that fails for another reason
        (the network) decides nothing: the write it guards reports its own error."""
        if self._blob is None:
            return
        if not self.lost:
            try:
                with self._mutex:
                    current = self._blob.bucket.get_blob(self._blob.name)
                    self.lost = current is None or current.generation != self._blob.generation
            except Exception:
                return
        if self.lost:
            raise JobFailed(f"{self.url}: another run took over this folder's lock (this run sent no heartbeat for "
                            f"{lock_ttl():.0f} s: stalled or suspended); stopping without writing to it, so the other "
                            "run's output stays whole")

    def release(self) -> None:
        if self._blob is None:
            return
        _HELD.pop(self.url, None)
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        with contextlib.suppress(Exception):
            self.verify()  # a lock another run took over is that run's: never deleted (the generation
            # precondition below says so too, where the server honours it on deletes)
            self._blob.delete(if_generation_match=self._blob.generation)
        self._blob = None


def _dead_here(holder: dict) -> bool:
    """A holder on this host whose process is gone (killed): its lock is free at once."""
    if holder.get("host") != socket.gethostname() or not isinstance(holder.get("pid"), int):
        return False
    try:
        os.kill(holder["pid"], 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


@functools.lru_cache(maxsize=1)
def _client():
    from google.cloud import storage as gcs

    return gcs.Client()


def emulator_environment(url: str) -> dict[str, str]:
    """The environment variables that point every client at the emulator at `url`."""
    return {"STORAGE_EMULATOR_HOST": url, "TENSORSTORE_GCS_HTTP_URL": url}
