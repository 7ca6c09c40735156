"""Everything nbstore.sphinx takes from MyST-NB's internals, for the MyST-NB versions it is tested with.

MyST-NB offers no plug point for its cache, so this module (and only this one) reaches into it:
- it reads notebooks as MyST-NB's parser does (its reader choice, ``nb_custom_formats``, per-notebook
  ``mystnb`` metadata, exclude patterns), so that the first phase runs exactly the notebooks MyST-NB
  would take from its cache;
- it rebinds the four jupyter-cache names that MyST-NB's cache client (``myst_nb.core.execute.cache``)
  imported, to nbstore's ``jupyter_cache`` compatibility package, so that the client reads the nbstore
  store; a notebook that failed in the first phase is not run a second time: its failure is handed over;
- it wraps the client's ``start_client`` to know which file the notebook being matched was read from,
  since MyST-NB matches the notebook object alone and declared dependencies are relative to its folder.
"""

from __future__ import annotations

import re
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sphinx.environment import BuildEnvironment

__all__ = ["SUPPORTED", "Plan", "check_version", "install", "plan"]

#: The MyST-NB versions (major.minor) whose internals this module was written against and tested with.
SUPPORTED = ("1.4",)


def check_version() -> None:
    """Fail with a clear message on a MyST-NB this module was not written for."""
    from sphinx.errors import ExtensionError

    try:
        import myst_nb
    except ImportError as exc:
        raise ExtensionError("nbstore.sphinx needs MyST-NB: pip install 'nbstore-cache[sphinx]'") from exc
    version = getattr(myst_nb, "__version__", "unknown")
    if ".".join(version.split(".")[:2]) not in SUPPORTED:
        raise ExtensionError(
            f"nbstore.sphinx works with MyST-NB {', '.join(s + '.x' for s in SUPPORTED)}, not {version}: "
            "pip install 'nbstore-cache[sphinx]' installs a supported one"
        )


@dataclass(frozen=True)
class Plan:
    """A notebook MyST-NB will take from its cache: its file, the notebook read, its reader and run options."""

    docname: str
    path: str
    #: The notebook as MyST-NB read it (keyed by the store with the file's folder and stage record).
    notebook: dict = field(repr=False, compare=False)
    reader: str
    timeout: float | None
    allow_errors: bool
    in_temp: bool


def _reader_name(path: str, read_fmt: dict | None, notebook: dict) -> str | None:
    """The nbstore reader that reads path as MyST-NB did (None: no registered reader does)."""
    if read_fmt is not None:
        if read_fmt.get("type") == "plugin" and isinstance(read_fmt.get("name"), str):
            return read_fmt["name"]
        return None
    if path.endswith(".ipynb"):
        return "nbformat"
    # An nb_custom_formats file (MyST-NB's recipe is jupytext.reads): nbstore's jupytext reader serves it
    # if it reads the same code, which the key tells.
    from nbstore.errors import NbStoreError
    from nbstore.hashing import notebook_key
    from nbstore.readers import read_notebook

    try:
        return "jupytext" if notebook_key(read_notebook("jupytext", path)) == notebook_key(notebook) else None
    except NbStoreError:
        return None


def plan(env: BuildEnvironment, docname: str) -> Plan | None:
    """Return how the document would be executed in cache mode, or None if MyST-NB would not cache it."""
    from myst_nb.core.nb_to_tokens import nb_node_to_dict
    from myst_nb.core.read import create_nb_reader

    path = str(env.doc2path(docname))
    if not any(path.endswith(suffix) and kind == "myst-nb" for suffix, kind in dict(env.config.source_suffix).items()):
        return None
    nb_config = env.mystnb_config
    try:
        text = Path(path).read_text(encoding=getattr(env.config, "source_encoding", "utf-8-sig"))
        reader = create_nb_reader(path, env.myst_config, nb_config, text)
        if reader is None:
            return None  # plain Markdown
        notebook = reader.read(text)
    except Exception:  # noqa: BLE001 - MyST-NB reports it when it reads the document
        return None
    overrides = notebook.metadata.get(nb_config.metadata_key)
    if overrides:
        try:
            overrides = nb_node_to_dict(overrides)
            overrides.pop("output_folder", None)
            nb_config = nb_config.copy(**overrides)
        except Exception:  # noqa: BLE001 - MyST-NB warns about it and keeps the build's settings
            nb_config = env.mystnb_config
    if nb_config.execution_mode != "cache":
        return None
    posix = PurePosixPath(Path(path).as_posix())
    if any(posix.match(pattern) for pattern in nb_config.execution_excludepatterns):
        return None
    kernel = (notebook.metadata.get("kernelspec") or {}).get("name")
    if kernel is not None and any(re.fullmatch(rgx, kernel) for rgx in nb_config.kernel_rgx_aliases or {}):
        return None  # MyST-NB renames the kernel before matching: the file's key is not the one it looks up
    reader_name = _reader_name(path, reader.read_fmt, notebook)
    if reader_name is None:
        return None
    return Plan(
        docname=docname,
        path=path,
        notebook=notebook,
        reader=reader_name,
        timeout=nb_config.execution_timeout,
        allow_errors=bool(nb_config.execution_allow_errors),
        in_temp=bool(nb_config.execution_in_temp),
    )


# The document MyST-NB's cache client is reading now (one at a time per process; -j readers are processes):
# its path, which keys the notebook with its folder and stage record, and what matching found.
_DOC: ContextVar[dict | None] = ContextVar("nbstore_sphinx_doc", default=None)


def install(*, failures: dict[str, Any]) -> None:
    """Point MyST-NB's cache client at nbstore's compatibility package (idempotent)."""
    import myst_nb.core.execute.cache as client

    from nbstore.errors import DependencyError, NotebookFailedError
    from nbstore.hashing import notebook_key

    compat = _compat()
    run_one = compat.single_nb_execution
    if getattr(client.single_nb_execution, "_nbstore", False):
        return
    book_store = _book_store_class(compat.JupyterCacheBase)

    def get_cache(path: Any) -> Any:
        return compat.get_cache(path, book_store)

    start = client.NotebookClientCache.start_client

    def start_client(self: Any) -> Any:
        # MyST-NB matches the notebook object without its path; the store needs the path to key declarations.
        token = _DOC.set({"path": self.path, "key": None, "error": None})
        try:
            return start(self)
        finally:
            _DOC.reset(token)

    def single_nb_execution(nb: Any, *args: Any, **kwargs: Any) -> Any:
        doc = _DOC.get()
        cwd = kwargs.get("cwd", args[0] if args else None)
        if doc is not None and isinstance(doc["error"], DependencyError):
            # Its key cannot be computed (a declared file is missing): running it would cache nothing.
            error = doc["error"]
            return compat.ExecutionResult(nb=nb, cwd=cwd, time=0.0, err=error, exc_string=str(error))
        failure = failures.get(doc["key"] if doc is not None else notebook_key(nb))
        if failure is None:
            return run_one(nb, *args, **kwargs)
        # It ran (and failed) a moment ago in the first phase: hand MyST-NB that outcome.
        return compat.ExecutionResult(
            nb=nb,
            cwd=cwd,
            time=failure.seconds,
            err=NotebookFailedError(failure.reason),
            exc_string=failure.traceback or failure.reason,
        )

    single_nb_execution._nbstore = True  # type: ignore[attr-defined]
    client.get_cache = get_cache
    client.CacheBundleIn = compat.CacheBundleIn
    client.NbProjectRecord = compat.NbProjectRecord
    client.NotebookClientCache.start_client = start_client
    client.single_nb_execution = single_nb_execution


def _book_store_class(base: type) -> type:
    """The store MyST-NB's client gets: it matches the notebook being read with that notebook's path."""
    from nbstore.errors import DependencyError, RecordNotFoundError

    class BookStore(base):  # type: ignore[misc,valid-type]
        """An nbstore store that keys MyST-NB's notebook objects with the path of the document being read."""

        def match_cache_notebook(self, nb: Any, *, path: Any = None) -> Any:
            """Return the cache record matching nb, keyed as the file of the document being read."""
            doc = _DOC.get()
            if path is not None or doc is None or doc["path"] is None:
                return super().match_cache_notebook(nb, path=path)
            try:
                info = self.key_of_file(doc["path"], nb=nb)
            except DependencyError as exc:
                doc["error"] = exc
                raise RecordNotFoundError(f"no cache record for {doc['path']}: {exc}") from exc
            doc["key"] = info.key
            return self.match_cache_key(info.key)

        def merge_match_into_notebook(self, nb: Any, *args: Any, path: Any = None, **kwargs: Any) -> Any:
            """Return (pk, nb merged with its cached outputs), keyed as the file of the document being read."""
            doc = _DOC.get()
            if path is None and doc is not None:
                path = doc["path"]
            return super().merge_match_into_notebook(nb, *args, path=path, **kwargs)

    return BookStore


def _compat() -> Any:
    """Make the name `jupyter_cache` mean nbstore's compatibility package in this process; return its API."""
    import importlib
    import sys
    from types import SimpleNamespace

    from nbstore import compat_path

    current = sys.modules.get("jupyter_cache")
    if current is None or not getattr(current, "NBSTORE_COMPAT", False):
        # MyST-NB imported the real jupyter-cache (its dependency) already; drop it so the name resolves anew.
        for name in [n for n in sys.modules if n == "jupyter_cache" or n.startswith("jupyter_cache.")]:
            del sys.modules[name]
        folder = compat_path()
        if folder not in sys.path:
            sys.path.insert(0, folder)
        importlib.invalidate_caches()
    package = importlib.import_module("jupyter_cache")
    if not getattr(package, "NBSTORE_COMPAT", False):
        raise RuntimeError(f"`import jupyter_cache` gives {package.__file__}, not nbstore's compatibility package")
    base = importlib.import_module("jupyter_cache.base")
    db = importlib.import_module("jupyter_cache.cache.db")
    main = importlib.import_module("jupyter_cache.cache.main")
    utils = importlib.import_module("jupyter_cache.executors.utils")
    return SimpleNamespace(
        get_cache=package.get_cache,
        CacheBundleIn=base.CacheBundleIn,
        NbProjectRecord=db.NbProjectRecord,
        JupyterCacheBase=main.JupyterCacheBase,
        single_nb_execution=utils.single_nb_execution,
        ExecutionResult=utils.ExecutionResult,
    )
