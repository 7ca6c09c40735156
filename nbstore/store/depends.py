"""Declared dependencies resolved into key inputs: globs to files hashed through a stat-cache, env values, @kernel.

The stat-cache lives in the volatile file `stat/depends.json` of the store (git-ignored, rebuilt when lost): a file
whose size, mtime, ctime and inode are unchanged is not read again, as for staged notebooks themselves.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re
import stat
import time
from collections.abc import Iterable
from contextlib import suppress
from pathlib import Path

from nbstore.errors import DependencyError, StoreWriteError
from nbstore.hashing import KERNEL_ENV, KeyInputs, text_hash
from nbstore.store.fsio import atomic_write

__all__ = ["DepCache", "resolve"]

# A file hashed less than this long after its last change may change again in the same tick (git's rule).
_RACY_NS = 100_000_000

# The stat-cache is untrusted input like every store file: a larger one is ignored (and rebuilt).
_MAX_CACHE_BYTES = 64 << 20

_CHUNK = 1 << 20


def _stat_ident(st: os.stat_result) -> list:
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


class DepCache:
    """Content hashes of dependency files and fingerprints of kernel environments, cached by stat."""

    def __init__(self, path: Path, tmpdir: Path) -> None:
        self.path = path
        self.tmpdir = tmpdir
        self._files: dict = {}
        self._kernels: dict = {}
        self._ident: tuple | None = None
        self._dirty = False
        # Per run (this object's life): each kernelspec is looked up and asked at most once.
        self._kernel_memo: dict[str, str] = {}

    def load(self) -> None:
        """Read the cache file again if another process replaced it (a damaged one counts as empty)."""
        try:
            fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except OSError:
            self._ident = None
            return
        try:
            st = os.fstat(fd)
            ident = (st.st_ino, st.st_size, st.st_mtime_ns)
            if ident == self._ident or st.st_size > _MAX_CACHE_BYTES:
                return
            data = os.pread(fd, st.st_size, 0)
        finally:
            os.close(fd)
        try:
            doc = json.loads(data)
            files, kernels = doc["files"], doc["kernels"]
            if not isinstance(files, dict) or not isinstance(kernels, dict):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            files, kernels = {}, {}
        self._files.update(files)
        self._kernels.update(kernels)
        self._ident = ident

    def save(self) -> None:
        """Write the cache if it gained entries (silently not in a read-only store: it is only a cache)."""
        folder = self.path.parent
        if not self._dirty or not folder.parent.is_dir():
            return
        doc = {"files": self._files, "kernels": self._kernels}
        data = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode("utf-8", "surrogatepass")
        with suppress(StoreWriteError, OSError):
            if not folder.is_dir():
                folder.mkdir(exist_ok=True)
                # Stores created before this folder existed do not ignore it at their top level.
                atomic_write(folder / ".gitignore", b"*\n", tmpdir=self.tmpdir, durable=False)
            atomic_write(self.path, data, tmpdir=self.tmpdir, durable=False)
            st = os.stat(self.path)
            self._ident = (st.st_ino, st.st_size, st.st_mtime_ns)
            self._dirty = False

    def file_hash(self, path: str) -> str | None:
        """Return the SHA-256 of a file's content (None if not a regular file), read only if its stat changed."""
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):
            return None
        entry = self._files.get(path)
        try:
            if (
                entry[0] == st.st_size
                and entry[1] == st.st_mtime_ns
                and entry[2] == st.st_ctime_ns
                and entry[3] == st.st_ino
                and entry[5] - st.st_mtime_ns > _RACY_NS
                and isinstance(entry[4], str)
            ):
                return entry[4]
        except (TypeError, IndexError, KeyError):
            pass  # no entry, or a damaged one: hash the file
        ident = [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(_CHUNK):
                digest.update(chunk)
        sha = digest.hexdigest()
        self._files[path] = [*ident, sha, time.time_ns()]
        self._dirty = True
        return sha

    def kernel_hash(self, kernel: str) -> str:
        """Return the hash of the fingerprint of the environment kernelspec `kernel` runs in."""
        memo = self._kernel_memo.get(kernel)
        if memo is not None:
            return memo
        from nbstore.kernelenv import KernelEnvError, ask_interpreter, kernel_interpreter

        try:
            program = kernel_interpreter(kernel)
            entry = self._kernels.get(program)
            if not self._kernel_entry_fresh(program, entry):
                answer = ask_interpreter(program)
                fingerprint = json.dumps({"python": answer.get("python"), "dists": answer["dists"]}, sort_keys=True)
                entry = [
                    _stat_ident(os.stat(program)),
                    [[d, os.stat(d).st_mtime_ns] for d in answer.get("dirs", []) if os.path.isdir(d)],
                    hashlib.sha256(fingerprint.encode("utf-8", "surrogateescape")).hexdigest(),
                ]
                self._kernels[program] = entry
                self._dirty = True
        except (KernelEnvError, OSError) as exc:
            raise DependencyError(f"{KERNEL_ENV}: {exc}") from exc
        self._kernel_memo[kernel] = entry[2]
        return entry[2]

    @staticmethod
    def _kernel_entry_fresh(program: str, entry: object) -> bool:
        # The interpreter's stat, and the mtimes of the folders holding its distributions: an install or
        # an upgrade adds or removes a *.dist-info folder there, which changes the folder's mtime.
        if not (isinstance(entry, list) and len(entry) == 3 and isinstance(entry[1], list)):
            return False
        try:
            if _stat_ident(os.stat(program)) != entry[0]:
                return False
            return all(os.stat(d).st_mtime_ns == m for d, m in entry[1])
        except (OSError, TypeError, ValueError):
            return False


_MAGIC = re.compile(r"[*?[]")

# Plain declared paths, normalised ("./a//b" -> "a/b"): status resolves thousands of them per call.
_NORMAL: dict[str, str] = {}


def _normal(rel: str) -> str:
    out = _NORMAL.get(rel)
    if out is None:
        out = _NORMAL[rel] = os.path.normpath(rel).replace(os.sep, "/")
    return out


def _glob(folder: str, pattern: str, memo: dict) -> list[str]:
    """Return the files (paths relative to folder, normalised, sorted) a glob with wildcards matches."""
    memo_key = (folder, pattern)
    found = memo.get(memo_key)
    if found is None:
        found = memo[memo_key] = sorted(
            {
                _normal(p)
                for p in glob.glob(pattern, root_dir=folder, recursive=True)
                if os.path.isfile(os.path.join(folder, p))
            }
        )
    return found


def resolve(
    cache: DepCache,
    folder: str,
    depends: Iterable[str],
    env: Iterable[str],
    *,
    kernel: str,
    memo: dict | None = None,
) -> KeyInputs:
    """Resolve declarations made relative to folder into KeyInputs (DependencyError naming the pattern)."""
    memo = {} if memo is None else memo
    files: dict[str, str] = {}
    prefix = folder + os.sep
    for pattern in depends:
        if _MAGIC.search(pattern) is None:
            # A plain path, the common case: one stat, not glob's machinery.
            rel = _normal(pattern)
            try:
                sha = cache.file_hash(rel if os.path.isabs(rel) else prefix + rel)
            except FileNotFoundError:
                sha = None
            except OSError as exc:
                raise DependencyError(f"dependency {pattern!r} cannot be read: {exc.strerror or exc}") from exc
            if sha is None:
                raise DependencyError(f"dependency {pattern!r} matches no file (relative to {folder})")
            files[rel] = sha
            continue
        matched = _glob(folder, pattern, memo)
        if not matched:
            raise DependencyError(f"dependency {pattern!r} matches no file (relative to {folder})")
        for rel in matched:
            try:
                sha = cache.file_hash(os.path.join(folder, rel))
            except OSError as exc:
                raise DependencyError(
                    f"dependency {rel} (from {pattern!r}) cannot be read: {exc.strerror or exc}"
                ) from exc
            if sha is None:
                raise DependencyError(f"dependency {rel} (from {pattern!r}) is not a regular file")
            files[rel] = sha
    values: dict[str, str | None] = {}
    for name in env:
        values[name] = cache.kernel_hash(kernel) if name == KERNEL_ENV else text_hash(os.environ.get(name))
    return KeyInputs(files=tuple(sorted(files.items())), env=tuple(sorted(values.items())))
