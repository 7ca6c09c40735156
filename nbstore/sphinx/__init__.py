"""Sphinx extension: MyST-NB's cache mode on an nbstore store, with every outdated notebook run in parallel first.

In conf.py::

    extensions = ["myst_nb", "nbstore.sphinx"]
    nb_execution_mode = "cache"
    nbstore_cache_path = ".nbstore"          # relative to the folder of conf.py
    nbstore_executor = "local-parallel"      # the default
    nbstore_workers = None                   # None: one per CPU
    nbstore_retry_failed = False             # True: run again notebooks whose unchanged code failed before
    nbstore_depends = {}                     # {"glob of notebooks": ["dependency glob", ...]}

When Sphinx has decided which documents to read (event ``env-before-read-docs``, before ``-j`` readers fork),
the notebooks among them that MyST-NB would take from its cache are staged in the store and the outdated ones
run on the executor. MyST-NB then reads every notebook as it does in cache mode, finding its outputs in the
store. A notebook whose run failed is not run again while its code is unchanged (its failure is kept in
the build's doctree folder, so a clean build retries it, as does ``nbstore_retry_failed = True``); MyST-NB
reports the failure as if it had just run it. Everything that depends on MyST-NB's internals lives in
:mod:`nbstore.sphinx.mystnb`.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nbstore import __version__

if TYPE_CHECKING:
    from sphinx.application import Sphinx
    from sphinx.config import Config
    from sphinx.environment import BuildEnvironment

__all__ = ["setup"]

DEFAULT_EXECUTOR = "local-parallel"


@dataclass(frozen=True)
class Failure:
    """A notebook's failed run in this build's first phase, handed to MyST-NB instead of running it again."""

    status: str
    seconds: float
    reason: str
    traceback: str


def _logger() -> Any:
    from sphinx.util import logging as sphinx_logging

    return sphinx_logging.getLogger("nbstore.sphinx")


def store_path(app: Sphinx) -> Path:
    """Return the store folder of this build: nbstore_cache_path, relative to the folder of conf.py."""
    base = Path(app.confdir or app.srcdir)
    return (base / (app.config.nbstore_cache_path or ".nbstore")).resolve()


def _config_inited(app: Sphinx, config: Config) -> None:
    # MyST-NB's documented setting for where its cache lives: point it at the nbstore store.
    path = str(store_path(app))
    given = config.nb_execution_cache_path
    if given and str(Path(app.confdir, given).resolve()) != path:
        _logger().warning(
            "nbstore.sphinx: nb_execution_cache_path = %r is replaced by nbstore_cache_path (%s)", given, path
        )
    config.nb_execution_cache_path = path
    # Sphinx must not look for documents inside the store.
    try:
        inside = Path(path).relative_to(Path(app.srcdir).resolve()).as_posix()
    except ValueError:
        inside = None
    if inside and inside not in config.exclude_patterns:
        config.exclude_patterns.append(inside)
    depends = config.nbstore_depends
    if not isinstance(depends, dict) or not all(
        isinstance(k, str) and k and isinstance(v, (list, tuple)) and all(isinstance(g, str) and g for g in v)
        for k, v in depends.items()
    ):
        from sphinx.errors import ConfigError

        raise ConfigError(
            "nbstore_depends must map globs of notebooks to lists of dependency globs, "
            f"like {{'*.ipynb': ['data/*.csv']}}, not {depends!r}"
        )
    workers = config.nbstore_workers
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        from sphinx.errors import ConfigError

        raise ConfigError(f"nbstore_workers must be a positive integer or None, not {workers!r}")


def _builder_inited(app: Sphinx) -> None:
    from nbstore.sphinx import mystnb

    mystnb.install(failures=_FAILURES)


# Failed runs of this build's first phase, by notebook key. A module global on purpose: `sphinx -j N`
# forks its readers after the first phase, and each inherits it.
_FAILURES: dict[str, Failure] = {}


FAILURES_FILE = "nbstore-failures.json"

# By docname, for each notebook keyed in the first phase (inherited by -j readers too): its dependency
# files, and whether environment variables enter its key.
_DEPENDENCIES: dict[str, tuple[tuple[str, ...], bool]] = {}


def _doctree_read(app: Sphinx, doctree: Any) -> None:
    # Told while the document is read (Sphinx forgets a document's dependencies when it reads it again), so
    # that a later build reads it again when a dependency file changes; its key then tells if it must run.
    files, has_env = _DEPENDENCIES.get(app.env.docname, ((), False))
    for path in files:
        app.env.note_dependency(path)
    if has_env:
        # Sphinx cannot see a variable change: such a notebook is read (and its key checked) in every build.
        app.env.note_reread()


def _load_failures(app: Sphinx) -> dict[str, Failure]:
    """The failures remembered from earlier builds, by key ({} after a clean build or if unreadable)."""
    try:
        raw = json.loads((Path(app.doctreedir) / FAILURES_FILE).read_text(encoding="utf-8"))
        return {key: Failure(**value) for key, value in raw.items()}
    except (OSError, ValueError, TypeError, AttributeError):
        return {}


def _save_failures(app: Sphinx, failures: dict[str, Failure]) -> None:
    path = Path(app.doctreedir) / FAILURES_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(json.dumps({k: asdict(v) for k, v in sorted(failures.items())}, indent=1), encoding="utf-8")
    os.replace(tmp, path)


def _executor_name(base: str, in_temp: bool) -> str:
    """The executor that runs in a temporary folder (in_temp) or in the notebook's own folder."""
    if in_temp and base.startswith("local-"):
        return "temp-" + base[len("local-") :]
    if not in_temp and base.startswith("temp-"):
        return "local-" + base[len("temp-") :]
    return base


def _depends_of(app: Sphinx, path: str) -> tuple[str, ...]:
    """The dependency globs nbstore_depends gives the notebook at path (config order, each once)."""
    from sphinx.util.matching import Matcher

    rel = Path(path).resolve().relative_to(Path(app.srcdir).resolve()).as_posix()
    found: list[str] = []
    for pattern, globs in (app.config.nbstore_depends or {}).items():
        if Matcher([pattern])(rel):
            found.extend(globs)
    return tuple(dict.fromkeys(found))


def _stage(store: Any, plan: Any, record: Any, depends: tuple[str, ...]) -> Any:
    """Stage plan's notebook with the build's dependency globs, keeping what else its record declared."""
    return store.stage_notebook_file(
        plan.path,
        record.assets if record is not None else (),
        reader=plan.reader,
        depends=depends,
        env=record.env if record is not None else (),
    )


def run_outdated(app: Sphinx, env: BuildEnvironment, docnames: list[str]) -> None:
    """Stage the notebooks among docnames that MyST-NB takes from its cache, and run the outdated ones."""
    from sphinx.errors import ExtensionError

    from nbstore.errors import ExecutorNotFoundError, NbStoreError
    from nbstore.executors import load_executor
    from nbstore.sphinx import mystnb
    from nbstore.store.cache import NbStore

    log = _logger()
    plans = [plan for name in docnames if (plan := mystnb.plan(env, name)) is not None]
    if not plans:
        return
    store = NbStore(store_path(app))
    try:
        keys = {r.hashkey for r in store.list_cache_records()}
        staged = {r.uri: r for r in store.list_staged_records()} if store.exists() else {}
    except NbStoreError as exc:
        raise ExtensionError(f"nbstore_cache_path: {exc}") from exc
    remembered = {} if app.config.nbstore_retry_failed else _load_failures(app)
    outdated, failed_before, plan_keys = [], [], {}
    for plan in plans:
        depends = _depends_of(app, plan.path)
        record = staged.get(str(Path(plan.path).resolve()))
        try:
            # The stage record carries nbstore_depends: MyST-NB's lookups and the executor key it the same way.
            if (record is None and depends) or (
                record is not None and (record.depends != depends or record.reader != plan.reader)
            ):
                record = _stage(store, plan, record, depends)
            info = store.key_of_file(plan.path, nb=plan.notebook)
        except NbStoreError as exc:
            log.warning("nbstore: not run before reading: %s", exc)
            continue
        key = info.key
        folder = Path(plan.path).parent
        inputs = info.inputs or {}
        _DEPENDENCIES[plan.docname] = (
            tuple(str(folder / rel) for rel in inputs.get("files", ())),
            bool(inputs.get("env")),
        )
        plan_keys[plan.path] = key
        if key in keys:
            continue
        if key in remembered:
            failed_before.append(plan)
            _FAILURES[key] = remembered[key]
        else:
            outdated.append((plan, record, depends))
    log.info(
        "nbstore: %d of %d notebooks outdated, %d failed before with the same code (store %s)",
        len(outdated),
        len(plans),
        len(failed_before),
        store.path,
    )
    for plan in failed_before:
        log.info("nbstore: not run again (failed before, code unchanged): %s", plan.docname)
    if not outdated:
        return
    groups: dict[tuple, list[tuple[int, mystnb.Plan]]] = {}
    for plan, record, depends in outdated:
        try:
            record = _stage(store, plan, record, depends)
        except NbStoreError as exc:
            log.warning("nbstore: not run before reading (MyST-NB will try): %s", exc)
            continue
        options = (plan.in_temp, plan.timeout, plan.allow_errors)
        groups.setdefault(options, []).append((record.pk, plan))
    base = app.config.nbstore_executor or DEFAULT_EXECUTOR
    start = time.perf_counter()
    counts = {"succeeded": 0, "excepted": 0, "errored": 0}

    def on_event(event: Any) -> None:
        if event.kind == "end":
            extra = f" ({event.reason})" if event.reason and event.status != "succeeded" else ""
            log.info("nbstore: %s %s %.2f s%s", event.status, event.uri, event.seconds or 0.0, extra)

    # Options that differ between notebooks (mystnb metadata) need runs of their own; usually there is one.
    for (in_temp, timeout, allow_errors), members in groups.items():
        try:
            executor = load_executor(_executor_name(base, in_temp), cache=store)
        except ExecutorNotFoundError as exc:
            raise ExtensionError(f"nbstore_executor: {exc}") from exc
        timeout = None if timeout is None or timeout <= 0 else timeout
        by_pk = {pk: plan for pk, plan in members}
        try:
            result = executor.run_and_cache(
                filter_pks=list(by_pk),
                timeout=timeout,
                allow_errors=allow_errors,
                workers=app.config.nbstore_workers,
                on_event=on_event,
            )
        except NbStoreError as exc:
            raise ExtensionError(f"nbstore could not run the notebooks: {exc}") from exc
        for outcome in result.outcomes:
            key = plan_keys[by_pk[outcome.pk].path]
            counts[outcome.status] = counts.get(outcome.status, 0) + 1
            if outcome.status == "succeeded":
                remembered.pop(key, None)
                continue
            try:
                text = store.get_staged_record(outcome.pk).traceback
            except NbStoreError:
                text = ""
            failure = Failure(outcome.status, outcome.seconds, outcome.reason, text)
            _FAILURES[key] = remembered[key] = failure
    if counts["excepted"] or counts["errored"] or app.config.nbstore_retry_failed:
        # Only excepted runs are worth remembering: an errored one (no kernel, a dead worker) may pass next time.
        _save_failures(app, {k: v for k, v in remembered.items() if v.status == "excepted"})
    summary = ", ".join(f"{n} {status}" for status, n in counts.items() if n)
    log.info("nbstore: ran %s in %.1f s", summary or "nothing", time.perf_counter() - start)


def setup(app: Sphinx) -> dict[str, Any]:
    """Register the extension with Sphinx (after MyST-NB, which it loads if conf.py has not)."""
    app.setup_extension("myst_nb")
    from nbstore.sphinx import mystnb

    mystnb.check_version()
    app.add_config_value("nbstore_cache_path", ".nbstore", "", str)
    app.add_config_value("nbstore_executor", DEFAULT_EXECUTOR, "", str)
    app.add_config_value("nbstore_workers", None, "", (int, type(None)))
    app.add_config_value("nbstore_retry_failed", False, "", bool)
    app.add_config_value("nbstore_depends", {}, "", dict)
    app.connect("config-inited", _config_inited)
    app.connect("builder-inited", _builder_inited)
    app.connect("env-before-read-docs", run_outdated)
    app.connect("doctree-read", _doctree_read)
    return {"version": __version__, "parallel_read_safe": True, "parallel_write_safe": True}
