"""Where a build lives: a local directory or an object-store prefix, behind one small interface (DESIGN §4).

`open_store(location, options)` is where a `--out`, `--shards` or `DIR` argument is resolved: text with a
scheme (`s3://bucket/prefix`, `gs://...`, any fsspec protocol) is a `RemoteStore`, anything else (or
`file://`) a `LocalStore`. Both offer the same operations on names relative to their root (`name` may hold a
`/`, as in `.parts/x.json`):

- `write_file(name, write)`: `write(tmp)` fills a local temporary file, which then appears whole under
  `name` (a local rename; an object PUT, which is atomic: no reader ever sees part of an object);
- `read_bytes`, `read_range`, `read_ranges` (ranged GETs, issued concurrently), `listing` (name -> size of
  the files directly under a folder, one request), `remove`, `rename`, `sha256`, `fetch` (a local copy).

Local stores do exactly what the build did before (`pipeline.fileio.atomic_write`), so local builds are
byte-identical to those of earlier versions. Remote stores create their fsspec filesystem lazily, once per
process: fsspec's async filesystems (s3fs, gcsfs) refuse to be used after a fork, and data-loader workers
and Ray workers are other processes. Every remote failure that is not "this object is missing" (no
credentials, an unreachable endpoint, a missing bucket, access denied) is a `StorageError` of one line;
retries and timeouts are bounded (`REMOTE_DEFAULTS`), so a bad endpoint is an error within seconds.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pipeline.fileio import atomic_write, first_line

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
HASH_BLOCK = 1 << 20  # bytes per read when hashing or copying
# Defaults for a remote filesystem, where the user set none: bounded retries and timeouts (botocore would
# otherwise wait 60 s per connection attempt), and no listing cache (another process writes the objects).
CONNECT_SECONDS = 5
READ_SECONDS = 60
REMOTE_DEFAULTS: dict[str, dict[str, Any]] = {
    "s3": {
        "config_kwargs": {
            "connect_timeout": CONNECT_SECONDS,
            "read_timeout": READ_SECONDS,
            "retries": {"max_attempts": 3, "mode": "standard"},
        },
    },
}


class StorageError(ValueError):
    """A remote location cannot be used (credentials, endpoint, bucket, permissions); one line saying why."""


def is_url(location: str | Path) -> bool:
    """Whether `location` names a remote store (a scheme other than file://)."""
    match = _SCHEME.match(str(location)) if isinstance(location, str) else None
    return match is not None and match.group(1).lower() != "file"


def parse_storage_options(pairs: Sequence[str]) -> dict[str, Any]:
    """`["endpoint_url=http://host:9000", "anon=true"]` -> keyword arguments of the fsspec filesystem.

    A value that parses as JSON other than a string (true, 3, {"k": 1}) is taken as that value, anything
    else as text: `key="123"` passes the text 123.
    """
    options: dict[str, Any] = {}
    for pair in pairs:
        name, sep, text = pair.partition("=")
        if not sep or not name.strip():
            raise StorageError(f"--storage-option expects KEY=VALUE, got {pair!r}")
        options[name.strip()] = _option_value(text)
    return options


def _option_value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def open_store(location: str | Path | Store, options: Mapping[str, Any] | None = None) -> Store:
    """The store `location` names; a `Store` is returned as it is."""
    if isinstance(location, Store):
        return location
    if is_url(location):
        return RemoteStore(str(location), dict(options or {}))
    text = str(location)
    return LocalStore(Path(text[len("file://") :] if text.startswith("file://") else text))


class Store(ABC):
    """A folder of files: local, or a prefix of an object store. Names are relative, `/`-separated."""

    @property
    @abstractmethod
    def location(self) -> str:
        """How to name the folder to a user (a path or a URL)."""

    @property
    def local(self) -> bool:
        return False

    def where(self, name: str = "") -> str:
        """How to name `name` inside the folder to a user."""
        return f"{self.location.rstrip('/')}/{name}" if name else self.location

    def __str__(self) -> str:
        return self.location

    @abstractmethod
    def child(self, name: str) -> Store:
        """The sub-folder `name`."""

    @abstractmethod
    def write_file(self, name: str, write: Callable[[Path], object]) -> None:
        """`write(tmp)` fills a local temporary file, which then appears whole as `name`."""

    def write_bytes(self, name: str, data: bytes) -> None:
        self.write_file(name, lambda tmp: tmp.write_bytes(data))

    @abstractmethod
    def read_bytes(self, name: str) -> bytes:
        """The whole file; `FileNotFoundError` when it is not there."""

    def read_many(self, names: Sequence[str]) -> dict[str, bytes | None]:
        """Several small files at once (None where one is missing)."""
        out: dict[str, bytes | None] = {}
        for name in names:
            try:
                out[name] = self.read_bytes(name)
            except FileNotFoundError:
                out[name] = None
        return out

    @abstractmethod
    def read_ranges(self, ranges: Sequence[tuple[str, int, int]]) -> list[bytes]:
        """The bytes `[start, end)` of each `(name, start, end)`; remote: concurrent ranged requests."""

    @abstractmethod
    def listing(self, folder: str = "") -> dict[str, int]:
        """Name -> size of the files directly in `folder` (names relative to it); {} when there is none."""

    @abstractmethod
    def remove(self, name: str) -> None:
        """Remove `name`; nothing when it is not there."""

    @abstractmethod
    def rename(self, old: str, new: str) -> None:
        """Give `old` the name `new` (remote: copy, then remove `old`)."""

    @abstractmethod
    def fetch(self, name: str, target: Path) -> None:
        """Copy `name` to the local file `target` (streamed, whatever its size)."""

    @abstractmethod
    def open_read(self, name: str) -> Any:
        """A binary file object of `name` for a sequential read."""

    @abstractmethod
    def prepare(self) -> None:
        """Create the folder if needed and prove it writable; `StorageError` in one line when it is not."""

    def sha256(self, name: str) -> str:
        digest = hashlib.sha256()
        with self.open_read(name) as stream:
            for block in iter(lambda: stream.read(HASH_BLOCK), b""):
                digest.update(block)
        return digest.hexdigest()

    def is_file(self, name: str) -> bool:
        folder, _, base = name.rpartition("/")
        return base in self.listing(folder)

    @contextmanager
    def local_copy(self, name: str) -> Iterator[Path]:
        """A local file holding `name`: the file itself when local, else a temporary download."""
        with tempfile.TemporaryDirectory(prefix="pvit-fetch-") as folder:
            target = Path(folder) / Path(name).name
            self.fetch(name, target)
            yield target


class LocalStore(Store):
    """A local (or shared-filesystem) directory: atomic writes through a temporary file and a rename."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    @property
    def location(self) -> str:
        return str(self.root)

    @property
    def local(self) -> bool:
        return True

    def where(self, name: str = "") -> str:
        return str(self.root / name) if name else str(self.root)

    def path(self, name: str) -> Path:
        return self.root / name

    def child(self, name: str) -> LocalStore:
        return LocalStore(self.root / name)

    def write_file(self, name: str, write: Callable[[Path], object]) -> None:
        atomic_write(self.root / name, write)

    def read_bytes(self, name: str) -> bytes:
        return (self.root / name).read_bytes()

    def read_ranges(self, ranges: Sequence[tuple[str, int, int]]) -> list[bytes]:
        out = []
        for name, start, end in ranges:
            with open(self.root / name, "rb") as stream:
                stream.seek(start)
                out.append(stream.read(end - start))
        return out

    def listing(self, folder: str = "") -> dict[str, int]:
        directory = self.root / folder
        if not directory.is_dir():
            return {}
        return {entry.name: entry.stat().st_size for entry in os.scandir(directory) if entry.is_file()}

    def remove(self, name: str) -> None:
        (self.root / name).unlink(missing_ok=True)

    def rename(self, old: str, new: str) -> None:
        os.replace(self.root / old, self.root / new)

    def fetch(self, name: str, target: Path) -> None:
        shutil.copyfile(self.root / name, target)

    def open_read(self, name: str) -> Any:
        return open(self.root / name, "rb")

    @contextmanager
    def local_copy(self, name: str) -> Iterator[Path]:
        yield self.root / name

    def is_file(self, name: str) -> bool:
        return (self.root / name).is_file()

    def prepare(self) -> None:
        for parent in [self.root, *self.root.parents]:
            if parent.exists():
                if not parent.is_dir():
                    raise StorageError(f"{parent} is a file, not a directory")
                break
        probe = self.root / f".write-probe-{os.getpid()}.tmp"
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as error:
            raise StorageError(f"cannot write to {self.root} ({error.strerror or error})") from None


class RemoteStore(Store):
    """A prefix of an object store, through fsspec (s3fs, gcsfs, ...); one filesystem object per process."""

    def __init__(self, url: str, options: dict[str, Any]) -> None:
        match = _SCHEME.match(url)
        assert match is not None, url
        self.protocol = match.group(1).lower()
        self.root = url[match.end() :].strip("/")
        self.options = options
        self._fs: Any = None
        self._pid = -1

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_fs": None, "_pid": -1}  # a filesystem never crosses a process boundary

    @property
    def location(self) -> str:
        return f"{self.protocol}://{self.root}"

    @property
    def bucket(self) -> str:
        return self.root.split("/", 1)[0]

    @property
    def fs(self) -> Any:
        """This process's filesystem object (made on first use, again after a fork)."""
        if self._fs is None or self._pid != os.getpid():
            self._fs = make_filesystem(self.protocol, self.options, self.location)
            self._pid = os.getpid()
        return self._fs

    def key(self, name: str) -> str:
        return f"{self.root}/{name}" if name else self.root

    def child(self, name: str) -> RemoteStore:
        return RemoteStore(f"{self.location}/{name}", self.options)

    def write_file(self, name: str, write: Callable[[Path], object]) -> None:
        with tempfile.TemporaryDirectory(prefix="pvit-upload-") as folder:
            tmp = Path(folder) / Path(name).name
            write(tmp)
            with self.errors(name):
                self.fs.put_file(str(tmp), self.key(name))

    def read_bytes(self, name: str) -> bytes:
        with self.errors(name):
            return self.fs.cat_file(self.key(name))

    def read_many(self, names: Sequence[str]) -> dict[str, bytes | None]:
        if not names:
            return {}
        with self.errors():
            got = self.fs.cat([self.key(name) for name in names], on_error="return")
        out: dict[str, bytes | None] = {}
        for name in names:
            value = got.get(self.key(name))
            if isinstance(value, BaseException) and not isinstance(value, FileNotFoundError):
                raise self.error_of(value, name)
            out[name] = value if isinstance(value, bytes) else None
        return out

    def read_ranges(self, ranges: Sequence[tuple[str, int, int]]) -> list[bytes]:
        names = sorted({name for name, _, _ in ranges})
        with self.errors(names[0] if len(names) == 1 else ""):
            if len(ranges) == 1:  # one request, without cat_ranges' gathering
                name, start, end = ranges[0]
                return [self.fs.cat_file(self.key(name), start=start, end=end)]
            keys = [self.key(name) for name, _, _ in ranges]
            got = self.fs.cat_ranges(
                keys, [s for _, s, _ in ranges], [e for _, _, e in ranges], on_error="return"
            )
        for (name, _, _), value in zip(ranges, got, strict=True):
            if isinstance(value, BaseException):
                raise self.error_of(value, name)
        return list(got)

    def listing(self, folder: str = "") -> dict[str, int]:
        try:
            with self.errors(folder):
                entries = self.fs.ls(self.key(folder), detail=True, refresh=True)
        except FileNotFoundError:
            return {}
        prefix = self.key(folder).rstrip("/") + "/"
        return {
            entry["name"][len(prefix) :]: int(entry["size"])
            for entry in entries
            if entry.get("type") == "file" and entry["name"].startswith(prefix)
        }

    def remove(self, name: str) -> None:
        try:
            with self.errors(name):
                self.fs.rm_file(self.key(name))
        except FileNotFoundError:
            pass

    def rename(self, old: str, new: str) -> None:
        with self.errors(old):
            self.fs.copy(self.key(old), self.key(new))
        self.remove(old)

    def fetch(self, name: str, target: Path) -> None:
        with self.errors(name):
            self.fs.get_file(self.key(name), str(target))

    def open_read(self, name: str) -> Any:
        with self.errors(name):
            return self.fs.open(self.key(name), "rb", block_size=8 * HASH_BLOCK)

    def prepare(self) -> None:
        """Write and remove a probe object: a missing bucket, bad credentials or a dead endpoint fail here."""
        probe = f".write-probe-{os.getpid()}.tmp"
        self.write_bytes(probe, b"")
        self.remove(probe)

    @contextmanager
    def errors(self, name: str = "") -> Iterator[None]:
        """Remote failures as one-line `StorageError`s; a missing object stays a `FileNotFoundError`."""
        try:
            yield
        except StorageError:
            raise
        except Exception as error:  # every client library raises its own kinds
            raise self.error_of(error, name) from None

    def error_of(self, error: BaseException, name: str) -> BaseException:
        """The error to raise for `error` met while using `name`."""
        where = self.where(name)
        text = first_line(error, limit=300)
        if isinstance(error, FileNotFoundError):
            # s3fs says so in the message only (botocore's NoSuchBucket); a key's path may hold "bucket" too
            if any(sign in text.lower() for sign in ("bucket does not exist", "nosuchbucket")):
                return StorageError(f"{where}: bucket {self.bucket!r} does not exist ({text})")
            return FileNotFoundError(f"{where}: no such object")
        kinds = {kind.__name__ for kind in type(error).__mro__}
        if kinds & {"NoCredentialsError", "PartialCredentialsError", "NoAuthTokenError"}:
            advice = "set credentials in the environment (AWS_ACCESS_KEY_ID, ...) or --storage-option"
            return StorageError(f"{where}: no credentials ({text}); {advice}")
        if kinds & {"EndpointConnectionError", "ConnectTimeoutError", "ClientConnectorError", "TimeoutError"}:
            return StorageError(
                f"{where}: cannot reach the storage endpoint ({text}); check AWS_ENDPOINT_URL, "
                f"--storage-option endpoint_url=... and the network"
            )
        if isinstance(error, PermissionError):
            return StorageError(f"{where}: access denied ({text}); check the credentials' permissions")
        return StorageError(f"{where}: {type(error).__name__}: {text}")


def make_filesystem(protocol: str, options: Mapping[str, Any], location: str) -> Any:
    """The fsspec filesystem of `protocol` with the user's options over `REMOTE_DEFAULTS`."""
    import fsspec

    merged = {"use_listings_cache": False, **REMOTE_DEFAULTS.get(protocol, {}), **options}
    try:
        filesystem = fsspec.get_filesystem_class(protocol)
    except ValueError:
        raise StorageError(f"{location}: unknown storage protocol {protocol}://") from None
    except ImportError as error:
        raise StorageError(
            f"{location}: the {protocol}:// filesystem needs a package that is not installed "
            f"({first_line(error)}); e.g. pip install 'pvit-pipeline[gcs]' for gs://"
        ) from None
    try:
        return filesystem(**merged)
    except (ValueError, TypeError) as error:
        raise StorageError(f"{location}: bad --storage-option ({first_line(error)})") from None
