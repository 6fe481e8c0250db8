"""Shared storage of a run (`cluster.storage`): Tune's experiments and a copy of the ledger, on a path every
machine mounts (NFS) or any URI pyarrow opens (``s3://``, ``gs://``, ``file://``).

The driver keeps working in its run directory; `RunStorage` copies what a resume needs to
``<storage>/<run folder name>/``: the snapshot (`state.json`, `results.csv`, `recipe.yaml`) whenever one is written,
each journal line as its own small object (``journal/<seq>.json``: object stores cannot append), and the latency
predictors the driver built (``predictors/``). `--resume` on a machine whose run directory lacks the ledger fetches
it from there first (`fetch_run`), so a driver lost with its machine is continued from another one, and the
predictors come with it rather than being measured again on different hardware.
"""
from __future__ import annotations

from pathlib import Path

from core.errors import InputError

LEDGER_FILES = ("state.json", "recipe.yaml", "results.csv")


class StorageError(InputError):
    """Storage that cannot be opened or written; one line naming `cluster.storage`."""


def filesystem(uri: str):
    """(pyarrow filesystem, path) of a storage location: a URI pyarrow opens, or a local path made absolute."""
    import pyarrow.fs

    if "://" in uri:
        return pyarrow.fs.FileSystem.from_uri(uri)
    return pyarrow.fs.LocalFileSystem(), str(Path(uri).expanduser().resolve())


def tune_location(uri: str, run_name: str) -> str:
    """Where Tune keeps the run's experiments on the storage: `<uri>/<run_name>/tune` (a local path made
    absolute)."""
    root = uri.rstrip("/") if "://" in uri else filesystem(uri)[1]
    return f"{root}/{run_name}/tune"


class RunStorage:
    """One run's folder on shared storage.

    Args:
        uri: `cluster.storage`: a local path (made absolute) or a URI pyarrow opens.
        run_name: the run folder's name (several runs share one storage).
    """

    def __init__(self, uri: str, run_name: str):
        self.uri = uri
        try:
            self.fs, base = filesystem(uri)
        except (OSError, ValueError) as err:   # pyarrow's ArrowInvalid is a ValueError
            raise StorageError(f"cluster.storage: {uri!r} cannot be opened ({err})") from None
        self.base = f"{base.rstrip('/')}/{run_name}"

    def check_writable(self) -> None:
        """Write and remove a probe file, or a `StorageError` (before any trial starts)."""
        probe = f"{self.base}/.write-probe"
        try:
            self.fs.create_dir(self.base, recursive=True)
            with self.fs.open_output_stream(probe) as f:
                f.write(b"ok")
            self.fs.delete_file(probe)
        except OSError as err:
            raise StorageError(f"cluster.storage: cannot write to {self.uri} ({self.base}): {err}") from None

    def put(self, name: str, data: bytes) -> None:
        path = f"{self.base}/{name}"
        parent = path.rpartition("/")[0]
        self.fs.create_dir(parent, recursive=True)
        tmp = f"{parent}/.{path.rpartition('/')[2]}.tmp"
        with self.fs.open_output_stream(tmp) as f:   # then moved: a reader never sees half a file
            f.write(data)
        self.fs.move(tmp, path)

    def get(self, name: str) -> bytes | None:
        try:
            with self.fs.open_input_stream(f"{self.base}/{name}") as f:
                return f.read()
        except FileNotFoundError:
            return None

    def names(self, folder: str) -> list[str]:
        """Files under `folder` (relative to the run's folder), sorted."""
        import pyarrow.fs

        found = self.fs.get_file_info(pyarrow.fs.FileSelector(f"{self.base}/{folder}", recursive=True,
                                                              allow_not_found=True))
        return sorted(f.path[len(self.base) + 1:] for f in found if f.type == pyarrow.fs.FileType.File
                      and not f.base_name.startswith("."))

    # ---- the ledger's mirror (`nas.results.RunLog.mirror`) ------------------------------------------------------
    def snapshot(self, run_dir: Path, seq: int) -> None:
        """Copy the snapshot files, then drop the journal lines it holds (seq <= `seq`)."""
        for name in LEDGER_FILES:
            if (Path(run_dir) / name).is_file():
                self.put(name, (Path(run_dir) / name).read_bytes())
        for name in self.names("journal"):
            if int(Path(name).stem) <= seq:
                self.fs.delete_file(f"{self.base}/{name}")

    def journal(self, seq: int, line: str) -> None:
        self.put(f"journal/{seq:09d}.json", line.encode())

    def put_files(self, files: dict[str, bytes]) -> None:
        """Copy files by their path relative to the run folder (e.g. the predictors: `nas.trial.run_files`)."""
        for name, data in files.items():
            self.put(name, data)

    def fetch_run(self, run_dir: Path) -> bool:
        """Write the stored ledger (snapshot, journal lines in order, predictors) into `run_dir`; False when the
        storage holds no run of this name."""
        from core.io import atomic_write

        state = self.get("state.json")
        if state is None:
            return False
        run_dir = Path(run_dir)
        files = {"state.json": state}
        files.update((name, self.get(name)) for name in (*LEDGER_FILES[1:], *self.names("predictors")))
        files["journal.jsonl"] = b"".join(self.get(n).rstrip(b"\n") + b"\n" for n in self.names("journal"))
        for name, data in files.items():
            if data is not None:
                atomic_write(run_dir / name, lambda tmp, data=data: tmp.write_bytes(data))
        return True
