"""The executor: pick the staged notebooks that are outdated, run them in worker processes, report each outcome."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from nbstore.errors import NbStoreError, RecordNotFoundError
from nbstore.executors.wire import Job, Report

if TYPE_CHECKING:
    from nbstore.records import NbStageRecord
    from nbstore.store.cache import NbStore
    from nbstore.store.locking import Claim

__all__ = ["STATUSES", "ExecutionEvent", "ExecutionResult", "Executor", "NotebookOutcome"]

#: The three ways a notebook's run can end, in the order the result lists them.
STATUSES = ("succeeded", "excepted", "errored")

# Workers that die before they are ready, in a row, before the run gives up starting more.
_MAX_START_FAILURES = 3

# Seconds between tries of a claim that another process holds.
_CLAIM_POLL = 0.2


@dataclass(frozen=True)
class NotebookOutcome:
    """How one staged notebook's run ended: status, wall seconds, the cache record made, a one-line reason."""

    pk: int
    uri: str
    status: str
    seconds: float = 0.0
    cache_pk: int | None = None
    reason: str = ""


@dataclass(frozen=True)
class ExecutionEvent:
    """A notebook starting ('start') or ending ('end', with status and seconds); index counts from 0 to total - 1."""

    kind: str
    pk: int
    uri: str
    index: int
    total: int
    status: str | None = None
    seconds: float | None = None
    reason: str = ""


@dataclass(frozen=True, eq=False, repr=False)
class ExecutionResult(Mapping):
    """The outcomes of run_and_cache; also a read-only {'succeeded'|'excepted'|'errored': [uris]} mapping."""

    outcomes: tuple[NotebookOutcome, ...] = ()

    def __getitem__(self, status: str) -> list[str]:
        if status not in STATUSES:
            raise KeyError(status)
        return [o.uri for o in self.outcomes if o.status == status]

    def __iter__(self) -> Iterator[str]:
        return iter(STATUSES)

    def __len__(self) -> int:
        return len(STATUSES)

    def __repr__(self) -> str:
        return repr(self.as_dict())

    def as_dict(self) -> dict[str, list[str]]:
        """Return the seed's form: {'succeeded': [uris], 'excepted': [uris], 'errored': [uris]}."""
        return {status: self[status] for status in STATUSES}

    def as_json(self) -> dict[str, list[str]]:
        """Return jupyter-cache 1.0's form, the same as as_dict."""
        return self.as_dict()

    def all(self) -> list[str]:
        """Return the URIs of every notebook the run handled: succeeded, then excepted, then errored."""
        return [uri for status in STATUSES for uri in self[status]]

    @property
    def succeeded(self) -> list[str]:
        """Return the URIs of the notebooks that ran and were cached."""
        return self["succeeded"]

    @property
    def excepted(self) -> list[str]:
        """Return the URIs of the notebooks in which a cell raised or timed out."""
        return self["excepted"]

    @property
    def errored(self) -> list[str]:
        """Return the URIs of the notebooks that could not be run at all."""
        return self["errored"]


def _cpu_count() -> int:
    """Return the CPUs this process may use (fewer than os.cpu_count() under an affinity mask or a container)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1


class _Terminated(BaseException):
    """SIGTERM arrived during a run (raised so that the run's cleanup happens before the process ends)."""


@contextmanager
def _sigterm_cleans_up() -> Iterator[None]:
    """Turn SIGTERM into an exception for the run, then end the process by it as the sender asked."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) not in (
        signal.SIG_DFL,
        None,
    ):
        yield  # someone else decides what SIGTERM means here
        return

    def handler(signum: int, frame: object) -> None:
        raise _Terminated()

    signal.signal(signal.SIGTERM, handler)
    try:
        yield
    except _Terminated:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.raise_signal(signal.SIGTERM)
        raise
    finally:
        if signal.getsignal(signal.SIGTERM) is handler:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)


@dataclass(eq=False)
class _Group:
    """Stage records whose notebooks have the same key: one run serves them all."""

    key: str
    records: list = field(default_factory=list)
    claim: Claim | None = None
    job_id: int = 0


class Executor:
    """Base of the executors: run_and_cache runs outdated staged notebooks in worker processes."""

    #: Run in a fresh temporary folder holding the staged assets, and keep the files a run makes.
    in_temp: ClassVar[bool] = False
    #: Run several notebooks at once (workers default to the number of CPUs); else one at a time.
    parallel: ClassVar[bool] = False

    def __init__(self, cache: NbStore, logger: logging.Logger | None = None) -> None:
        self.cache = cache
        self.logger = logger if logger is not None else logging.getLogger("nbstore.executors.base")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(cache={self.cache!r})"

    def worker_count(self, workers: int | None = None) -> int:
        """Return how many notebooks this executor runs at once (serial executors: always 1)."""
        if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
            raise ValueError(f"workers must be a positive integer, not {workers!r}")
        if not self.parallel:
            return 1
        return workers or _cpu_count()

    def run_and_cache(
        self,
        *,
        filter_uris: Iterable[str | os.PathLike[str]] | None = None,
        filter_pks: Iterable[int] | None = None,
        timeout: float | None = 30,
        allow_errors: bool = False,
        force: bool = False,
        workers: int | None = None,
        on_event: Callable[[ExecutionEvent], None] | None = None,
        record_timing: bool = False,
    ) -> ExecutionResult:
        """Run the staged notebooks with no cache match (all selected ones if force) and cache the successes."""
        if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float))):
            raise ValueError(f"timeout must be a number of seconds or None, not {timeout!r}")
        size = self.worker_count(workers)
        run = _Run(self, timeout=timeout, allow_errors=bool(allow_errors), force=bool(force), on_event=on_event)
        run.record_timing = bool(record_timing)
        broken, groups = run.plan(self._select(filter_uris, filter_pks))
        with _sigterm_cleans_up():
            run.execute(broken, groups, size)
        return ExecutionResult(tuple(sorted(run.outcomes, key=lambda o: o.pk)))

    def _select(
        self, filter_uris: Iterable[str | os.PathLike[str]] | None, filter_pks: Iterable[int] | None
    ) -> list[NbStageRecord]:
        records = self.cache.list_staged_records()
        if filter_uris is not None:
            uris = [filter_uris] if isinstance(filter_uris, (str, os.PathLike)) else list(filter_uris)
            forms = {os.fspath(u): {os.fspath(u), str(Path(u).resolve())} for u in uris}
            wanted = set().union(*forms.values())
            records = [r for r in records if r.uri in wanted]
            found = {r.uri for r in records}
            missing = [u for u, alike in forms.items() if not alike & found]
            if missing:
                self.logger.warning("not staged, so not executed: %s", ", ".join(missing))
        if filter_pks is not None:
            pks = {int(pk) for pk in filter_pks}
            unknown = pks - {r.pk for r in records}
            records = [r for r in records if r.pk in pks]
            if unknown:
                self.logger.warning("no staged notebook selected with pk %s", ", ".join(map(str, sorted(unknown))))
        return records


class _Run:
    """The state of one run_and_cache call (kept in the calling process; workers do the heavy lifting)."""

    def __init__(
        self,
        executor: Executor,
        *,
        timeout: float | None,
        allow_errors: bool,
        force: bool,
        on_event: Callable[[ExecutionEvent], None] | None,
    ) -> None:
        self.executor = executor
        self.cache = executor.cache
        self.log = executor.logger
        self.timeout = timeout
        self.allow_errors = allow_errors
        self.force = force
        self.on_event = on_event
        self.started_ns = time.time_ns()
        self.outcomes: list[NotebookOutcome] = []
        self.index: dict[int, int] = {}
        self.total = 0
        self._job_ids = 0
        self._running: dict[int, _Group] = {}
        self.record_timing = False

    # ------------------------------------------------------------------ choosing what runs

    def plan(self, records: list[NbStageRecord]) -> tuple[list[NbStageRecord], list[_Group]]:
        """Split the selected records into unreadable ones and groups (by key) that need a run."""
        keys = self.cache.staged_keys([r.pk for r in records]) if records else {}
        wanted = set(keys.values())
        cached = (
            set()
            if self.force
            else {
                r.hashkey
                for r in self.cache.list_cache_records()
                if r.hashkey in wanted and self.cache.has_objects(r)  # a record missing its objects is no hit
            }
        )
        broken: list[NbStageRecord] = []
        groups: dict[str, _Group] = {}
        for record in sorted(records, key=lambda r: r.pk):
            key = keys.get(record.pk)
            if key is None:
                broken.append(record)
            elif key not in cached:
                groups.setdefault(key, _Group(key)).records.append(record)
        chosen = sorted([*broken, *(r for g in groups.values() for r in g.records)], key=lambda r: r.pk)
        self.index = {r.pk: i for i, r in enumerate(chosen)}
        self.total = len(chosen)
        return broken, sorted(groups.values(), key=lambda g: g.records[0].pk)

    # ------------------------------------------------------------------ reporting

    def _emit(self, event: ExecutionEvent) -> None:
        if self.on_event is not None:
            self.on_event(event)

    def _start(self, group_or_records: list[NbStageRecord], *, log: bool = True) -> None:
        if log:
            self.log.info("Executing: %s", group_or_records[0].uri)
        for record in group_or_records:
            self._emit(ExecutionEvent("start", record.pk, record.uri, self.index[record.pk], self.total))

    def _end(
        self, records: list[NbStageRecord], status: str, seconds: float, reason: str, cache_pk: int | None
    ) -> None:
        for i, record in enumerate(records):
            why = reason
            if i:
                why = f"same code as {records[0].uri}" + (f"; {reason}" if reason else "")
            outcome = NotebookOutcome(record.pk, record.uri, status, seconds, cache_pk, why)
            self.outcomes.append(outcome)
            if status == "succeeded":
                self.log.info("Execution Succeeded: %s", record.uri)
            else:
                self.log.error("Execution Failed: %s", record.uri)
            if why:
                self.log.info("%s: %s", record.uri, why)
            self._emit(
                ExecutionEvent("end", record.pk, record.uri, self.index[record.pk], self.total, status, seconds, why)
            )

    def _set_tracebacks(self, records: list[NbStageRecord], text: str) -> None:
        for record in records:
            try:
                self.cache.set_staged_traceback(record.pk, text)
            except RecordNotFoundError:
                pass
            except NbStoreError as exc:
                self.log.warning("could not record the traceback of %s: %s", record.uri, exc)

    # ------------------------------------------------------------------ claims

    def _try(self, group: _Group) -> str:
        """Claim a group's key: 'run' (claimed), 'busy' (another process runs it) or 'done' (resolved here)."""
        from nbstore.store.locking import try_claim

        claim = try_claim(self.cache.path, group.key)
        if claim is None:
            return "busy"
        previous = claim.previous or {}
        finished = previous.get("finished")
        if isinstance(finished, int) and finished >= self.started_ns and previous.get("status") in STATUSES:
            # Another process ran this key while this run was going: its outcome is this run's outcome.
            status = previous["status"]
            cache_pk = self._cached_pk(group.key)
            if status != "succeeded" or cache_pk is not None:
                claim.release()
                reason = f"run by another process (pid {previous.get('pid')})"
                if previous.get("reason"):
                    reason += f": {previous['reason']}"
                self._start(group.records, log=False)
                self._end(group.records, status, 0.0, reason, cache_pk)
                return "done"
        if not self.force:
            cache_pk = self._cached_pk(group.key)
            if cache_pk is not None:
                claim.release()
                self._start(group.records, log=False)
                self._end(group.records, "succeeded", 0.0, "cached by another process meanwhile", cache_pk)
                return "done"
        group.claim = claim
        return "run"

    def _cached_pk(self, key: str) -> int | None:
        try:
            return self.cache.match_cache_key(key).pk
        except RecordNotFoundError:
            return None

    def _next(self, pending: deque, deferred: list[_Group]) -> _Group | None:
        """Return the next group to run, claimed (resolving on the way those finished elsewhere)."""
        for group in list(deferred):
            verdict = self._try(group)
            if verdict != "busy":
                deferred.remove(group)
            if verdict == "run":
                return group
        while pending:
            group = pending.popleft()
            verdict = self._try(group)
            if verdict == "run":
                return group
            if verdict == "busy":
                deferred.append(group)
        return None

    # ------------------------------------------------------------------ running

    def _broken(self, record: NbStageRecord) -> _Group | None:
        """Report a notebook that cannot be read; return its group instead if it has become readable."""
        try:
            info = self.cache.key_of_staged_notebook(record.pk)
        except RecordNotFoundError:
            reason = "the notebook is no longer staged"
        except NbStoreError as exc:
            reason = str(exc)
        else:
            return _Group(info.key, [record])
        self._start([record])
        self._set_tracebacks([record], reason)
        self._end([record], "errored", 0.0, reason, None)
        return None

    def execute(self, broken: list[NbStageRecord], groups: list[_Group], size: int) -> None:
        """Run the groups on up to size workers, recording an outcome for every selected record."""
        pending = deque(groups)
        for record in broken:
            late = self._broken(record)
            if late is not None:
                pending.append(late)
        if not pending:
            return
        from nbstore.executors.pool import Pool
        from nbstore.tempdirs import make_runtime_dir, remove_dead_runtime_dirs

        remove_dead_runtime_dirs()  # those of runs that were killed before they could clean up
        runtime_dir = make_runtime_dir()
        pool = Pool(runtime_dir)
        finished = False
        try:
            for _ in range(min(size, len(pending))):
                pool.start_worker()
            self._loop(pool, pending, size)
            finished = True
        finally:
            pool.close(force=not finished)
            for group in self._running.values():
                if group.claim is not None:
                    group.claim.release()
            shutil.rmtree(runtime_dir, ignore_errors=True)

    def _loop(self, pool, pending: deque, size: int) -> None:
        deferred: list[_Group] = []
        start_failures = 0
        while pending or deferred or self._running:
            for worker in pool.idle():
                group = self._next(pending, deferred)
                if group is None:
                    break
                self._dispatch(pool, worker, group)
            if not (pending or deferred or self._running):
                break
            waiting = pending or deferred
            if waiting and not pool.alive():
                if start_failures >= _MAX_START_FAILURES:
                    self._give_up(pending, deferred, "no worker process could be started (see the error output)")
                    break
                for _ in range(min(size, len(pending) + len(deferred))):
                    pool.start_worker()
            for kind, worker, *payload in pool.poll(_CLAIM_POLL if deferred else None):
                if kind == "ready":
                    start_failures = 0
                elif kind == "done":
                    self._finish(payload[0])
                elif kind == "died":
                    if not worker.ready:
                        start_failures += 1
                    self._worker_died(worker, payload[0])
                    if (pending or deferred) and len(pool.alive()) < size and start_failures < _MAX_START_FAILURES:
                        pool.start_worker()

    def _dispatch(self, pool, worker, group: _Group) -> None:
        self._job_ids += 1
        group.job_id = self._job_ids
        first = group.records[0]
        job = Job(
            job_id=group.job_id,
            pk=first.pk,
            uri=first.uri,
            key=group.key,
            store_path=str(self.cache.path),
            in_temp=self.executor.in_temp,
            timeout=self.timeout,
            allow_errors=self.allow_errors,
            followers=tuple(r.pk for r in group.records[1:]),
            record_timing=self.record_timing,
        )
        self._running[group.job_id] = group
        self._start(group.records)
        pool.send(worker, job)

    def _finish(self, report: Report) -> None:
        group = self._running.pop(report.job_id)
        if group.claim is not None:
            group.claim.finish(report.status, report.reason)
            group.claim.release()
        self._end(group.records, report.status, report.seconds, report.reason, report.cache_pk)

    def _worker_died(self, worker, returncode: int | None) -> None:
        job = worker.job
        worker.job = None
        if job is None or job.job_id not in self._running:
            return
        group = self._running.pop(job.job_id)
        if returncode is not None and returncode < 0:
            how = f"killed by signal {-returncode}"
        else:
            how = f"exit code {returncode}"
        reason = f"the worker process died ({how}) while running this notebook"
        self._set_tracebacks(group.records, reason)
        if group.claim is not None:
            group.claim.finish("errored", reason)
            group.claim.release()
        self._end(group.records, "errored", 0.0, reason, None)

    def _give_up(self, pending: deque, deferred: list[_Group], reason: str) -> None:
        for group in [*pending, *deferred]:
            self._start(group.records)
            self._set_tracebacks(group.records, reason)
            self._end(group.records, "errored", 0.0, reason, None)
        pending.clear()
        deferred.clear()
