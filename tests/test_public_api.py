"""The public surface: nbstore.__all__ is pinned, every name resolves, and the seed's import paths work."""

from __future__ import annotations

import pickle
import subprocess
import sys

import pytest

import nbstore
from nbstore import errors

EXPECTED = [
    "ArtifactPathError",
    "CachingError",
    "DependencyError",
    "ExecutionError",
    "ExecutionEvent",
    "ExecutionResult",
    "Executor",
    "ExecutorNotFoundError",
    "GcReport",
    "ImportReport",
    "KeyInfo",
    "NbArtifacts",
    "NbBundleIn",
    "NbBundleOut",
    "NbCacheRecord",
    "NbProjectRecord",
    "NbStageRecord",
    "NbStore",
    "NbStoreError",
    "NbValidityError",
    "NotebookFailedError",
    "NotebookNotFoundError",
    "NotebookOutcome",
    "NotebookReadError",
    "Problem",
    "ProjectNb",
    "ReaderNotFoundError",
    "RecordNotFoundError",
    "RemoteError",
    "RetrievalError",
    "StoreBusyError",
    "StoreCorruptError",
    "StoreFormatError",
    "StoreNotFoundError",
    "StoreUnsafeError",
    "StoreWriteError",
    "SyncReport",
    "VerifyReport",
    "__version__",
    "compat_path",
    "get_cache",
    "import_jupyter_cache",
    "list_executors",
    "list_readers",
    "load_executor",
    "notebook_key",
    "pull_remote",
    "push_remote",
    "tabulate_cache_records",
    "tabulate_project_records",
    "tabulate_stage_records",
]


def test_all_is_pinned():
    """__all__ changes only on purpose: this list is the public API."""
    assert nbstore.__all__ == EXPECTED


def test_every_public_name_resolves():
    """Every name in __all__ is importable from nbstore, lazy ones included."""
    for name in nbstore.__all__:
        assert getattr(nbstore, name) is not None
    with pytest.raises(AttributeError):
        nbstore.no_such_name  # noqa: B018


def test_seed_import_paths():
    """The seed's imports work under nbstore and give the same objects as the top level."""
    from nbstore.base import CachingError, NbBundleIn, NbBundleOut, NbValidityError, RetrievalError
    from nbstore.executors import list_executors, load_executor
    from nbstore.utils import tabulate_cache_records, tabulate_stage_records

    assert NbBundleIn is nbstore.NbBundleIn and NbBundleOut is nbstore.NbBundleOut
    assert (CachingError, NbValidityError, RetrievalError) == (
        nbstore.CachingError,
        nbstore.NbValidityError,
        nbstore.RetrievalError,
    )
    assert load_executor is nbstore.load_executor and list_executors is nbstore.list_executors
    assert tabulate_cache_records is nbstore.tabulate_cache_records
    assert tabulate_stage_records is nbstore.tabulate_stage_records


def test_seed_modules_are_attributes_after_a_plain_import():
    """After only `import nbstore`, nbstore.utils, nbstore.base and nbstore.executors resolve (as in a notebook)."""
    code = (
        "import nbstore\n"
        "print(nbstore.utils.tabulate_cache_records.__module__, nbstore.base.NbBundleIn.__name__,"
        " nbstore.executors.load_executor.__name__)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["nbstore.utils", "NbBundleIn", "load_executor"]


def test_import_is_light():
    """Importing nbstore loads none of nbformat, nbclient, jupyter_client, nbdime, typer or rich."""
    code = (
        "import sys, nbstore\n"
        "heavy = [m for m in ('nbformat', 'nbclient', 'jupyter_client', 'nbdime', 'typer', 'rich')"
        " if m in sys.modules]\n"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


@pytest.mark.parametrize("name", errors.__all__)
def test_errors_pickle_and_share_one_root(name):
    """Every error derives from NbStoreError and survives pickling (errors cross the process pool)."""
    cls = getattr(errors, name)
    assert issubclass(cls, errors.NbStoreError)
    err = cls("something went wrong")
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is cls and str(back) == str(err)


def test_errors_derive_from_the_builtins_callers_expect():
    """Missing record: KeyError; bad notebook: ValueError; missing file: FileNotFoundError; busy: TimeoutError."""
    assert issubclass(errors.RecordNotFoundError, KeyError)
    assert issubclass(errors.NotebookReadError, ValueError)
    assert issubclass(errors.NbValidityError, ValueError)
    assert issubclass(errors.NotebookNotFoundError, FileNotFoundError)
    assert issubclass(errors.StoreNotFoundError, FileNotFoundError)
    assert issubclass(errors.StoreBusyError, TimeoutError)
    assert issubclass(errors.StoreWriteError, OSError)
    assert issubclass(errors.ReaderNotFoundError, ValueError)
