"""push/pull against a real S3-compatible server on 127.0.0.1 (moto, started here) and a file:// remote."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nbstore import NbStore, RemoteError, StoreFormatError, StoreNotFoundError, pull_remote, push_remote
from nbstore.hashing import object_id
from nbstore.store import exchange
from tests.remote_worker import fill
from tests.test_readme import BLOCKS, COPIED, console_steps, matches
from tests.test_readme import _env as _readme_env

fsspec = pytest.importorskip("fsspec", reason="the remote tests need the extra nbstore-cache[remote]")
ROOT = Path(__file__).resolve().parents[1]
DUMMY_AWS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def s3_endpoint():
    """A moto S3 server on 127.0.0.1 for this module, found by fsspec through its usual configuration."""
    from moto.server import ThreadedMotoServer

    saved = {k: os.environ.get(k) for k in (*DUMMY_AWS, "FSSPEC_S3_ENDPOINT_URL")}
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    old_conf = fsspec.config.conf.get("s3")
    try:
        os.environ.update(DUMMY_AWS)
        # The environment reaches the worker processes; fsspec read its own at import, so set it here too.
        os.environ["FSSPEC_S3_ENDPOINT_URL"] = endpoint
        fsspec.config.conf["s3"] = {"endpoint_url": endpoint}
        yield endpoint
    finally:
        server.stop()
        if old_conf is None:
            fsspec.config.conf.pop("s3", None)
        else:
            fsspec.config.conf["s3"] = old_conf
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(params=["file", "s3"])
def remote_url(request, tmp_path):
    """An empty remote: a file:// folder, or a fresh bucket (with a prefix) on the local S3 server."""
    if request.param == "file":
        return f"file://{tmp_path}/remote"
    request.getfixturevalue("s3_endpoint")
    bucket = f"nbstore-{uuid.uuid4().hex[:12]}"
    fs = fsspec.filesystem("s3")
    fs.mkdir(bucket)
    fs.invalidate_cache()
    return f"s3://{bucket}/shared/store"


def _fs(url: str):
    fs, root = fsspec.core.url_to_fs(url)
    fs.invalidate_cache()
    return fs, root.rstrip("/")


def _state(store: NbStore) -> dict:
    """{hashkey: (uri, notebook object, artifacts)} of a store's records."""
    return {r.hashkey: (r.uri, r.notebook, r.artifacts) for r in store.list_cache_records()}


def _store(tmp_path: Path, name: str, first: int, count: int) -> NbStore:
    store = NbStore(tmp_path / name / ".nbstore")
    fill(store, first, count, tmp_path / name / "arts")
    return store


def test_two_stores_push_and_pull_crossing_sets(tmp_path, remote_url):
    """Two machines with overlapping records end with the same records, the earlier one kept for a shared key."""
    a = _store(tmp_path, "a", 0, 6)
    b = _store(tmp_path, "b", 4, 6)  # keys 4 and 5 on both sides, b's created later
    shared = {r.hashkey for r in a.list_cache_records()} & {r.hashkey for r in b.list_cache_records()}
    assert len(shared) == 2
    a_shared = {k: v for k, v in _state(a).items() if k in shared}
    assert len(push_remote(a, remote_url).records) == 6
    report = push_remote(b, remote_url)
    assert len(report.records) == 4  # b's records of the two shared keys were created later: never seen
    assert len(pull_remote(a, remote_url).records) == 4
    assert len(pull_remote(b, remote_url).records) == 6  # 4 new, and the 2 shared keys now hold a's records
    assert _state(a) == _state(b) and len(_state(a)) == 10
    assert {k: v for k, v in _state(b).items() if k in shared} == a_shared
    for store in (a, b):
        assert store.verify().ok
        pks = [r.pk for r in store.list_cache_records()]
        assert len(set(pks)) == len(pks)
        for record in store.list_cache_records():
            assert (
                store.get_cache_bundle(record.pk).artifacts.read(f"out{record.uri[2:-6]}.txt").startswith(b"artifact")
            )
    # Nothing left to move either way; the remote has nbstore's layout.
    assert push_remote(a, remote_url).records == () and pull_remote(b, remote_url).records == ()
    fs, root = _fs(remote_url)
    names = {p.rsplit("/", 1)[-1] for p in fs.ls(root)}
    assert {"nbstore.json", "objects", "cache"} <= names
    assert json.loads(fs.cat_file(f"{root}/nbstore.json"))["format"] == 1


def test_dry_run_changes_nothing_and_says_what_would_move(tmp_path, remote_url):
    """--dry-run lists the records and objects that would move, and writes nothing on either side."""
    a = _store(tmp_path, "a", 0, 3)
    report = push_remote(a, remote_url, dry_run=True)
    assert report.dry_run and len(report.records) == 3 and report.objects == 6 and report.bytes > 0
    fs, root = _fs(remote_url)
    assert not fs.exists(f"{root}/nbstore.json")
    push_remote(a, remote_url)
    b = NbStore(tmp_path / "b" / ".nbstore")
    report = pull_remote(b, remote_url, dry_run=True)
    assert len(report.records) == 3 and report.objects == 6
    assert not b.path.exists()


def test_prune_removes_only_when_asked(tmp_path, remote_url):
    """Without --prune nothing is deleted on the other side; with it, records the source lacks go."""
    a = _store(tmp_path, "a", 0, 4)
    push_remote(a, remote_url)
    a.remove_cache(a.list_cache_records()[0].pk)
    b = NbStore(tmp_path / "b" / ".nbstore")
    assert len(pull_remote(b, remote_url).records) == 4
    push_remote(a, remote_url)
    assert len(pull_remote(NbStore(tmp_path / "c" / ".nbstore"), remote_url).records) == 4
    report = push_remote(a, remote_url, prune=True)
    assert len(report.pruned) == 1
    assert len(pull_remote(NbStore(tmp_path / "d" / ".nbstore"), remote_url).records) == 3
    fs, root = _fs(remote_url)
    assert len(fs.find(f"{root}/objects")) == 6  # the pruned record's two objects went with it
    report = pull_remote(b, remote_url, prune=True)
    assert len(report.pruned) == 1 and len(b.list_cache_records()) == 3 and b.verify().ok


def test_altered_remote_object_is_refused_on_pull_and_named(tmp_path, remote_url):
    """An object whose bytes were changed on the remote is refused, named; the other records are pulled."""
    a = _store(tmp_path, "a", 0, 3)
    push_remote(a, remote_url)
    victim = a.list_cache_records()[1]
    fs, root = _fs(remote_url)
    path = f"{root}/objects/{victim.notebook[:2]}/{victim.notebook[2:]}"
    data = fs.cat_file(path)
    if remote_url.startswith("file://"):
        os.chmod(path, 0o644)
    fs.pipe_file(path, data.replace(b"x = 1", b"x = 9"))
    b = NbStore(tmp_path / "b" / ".nbstore")
    report = pull_remote(b, remote_url)
    assert not report.ok
    assert any(victim.notebook in p and "corrupt" in p for p in report.problems)
    assert victim.hashkey not in report.records and len(report.records) == 2
    assert victim.hashkey not in _state(b) and b.verify().ok
    proc = _cli(["-c", str(tmp_path / "c"), "pull", remote_url], tmp_path)
    assert proc.returncode == 1 and victim.notebook in proc.stderr


def test_hostile_record_files_are_refused_and_named(tmp_path):
    """Record files with a wrong hash, a path-escaping artifact or a bad size are refused by name."""
    url = f"file://{tmp_path}/remote"
    a = _store(tmp_path, "a", 0, 2)
    push_remote(a, url)
    cache = tmp_path / "remote" / "cache"
    good = sorted(cache.iterdir())[0]
    rec = json.loads(good.read_bytes())
    # A record that names its objects right but an artifact path outside any folder, with a correct name.
    evil = dict(rec, hashkey="f" * 32, artifacts={"../../escape.txt": next(iter(rec["artifacts"].values()))})
    raw = (json.dumps(evil, sort_keys=True, indent=2) + "\n").encode()
    (cache / f"{'f' * 32}.{object_id(raw)[:16]}.json").write_bytes(raw)
    # A record whose bytes do not match the hash in its name.
    (cache / f"{'e' * 32}.{'0' * 16}.json").write_bytes(raw.replace(b"f" * 32, b"e" * 32))
    # A huge file (larger than any record may be).
    with open(cache / f"{'d' * 32}.{'1' * 16}.json", "wb") as f:
        f.truncate((1 << 20) + 1)
    b = NbStore(tmp_path / "b" / ".nbstore")
    report = pull_remote(b, url)
    assert len(report.records) == 2
    text = "\n".join(report.problems)
    assert "escape.txt" in text and "e" * 32 in text and "d" * 32 in text and "larger" in text
    assert set(_state(b)) == set(_state(a)) and b.verify().ok


def test_pull_refuses_a_missing_or_newer_remote(tmp_path):
    """A URL with no store is StoreNotFoundError; a remote of a newer format is refused; both change nothing."""
    b = NbStore(tmp_path / "b" / ".nbstore")
    with pytest.raises(StoreNotFoundError, match="no nbstore store"):
        pull_remote(b, f"file://{tmp_path}/nothing")
    (tmp_path / "newer").mkdir()
    (tmp_path / "newer" / "nbstore.json").write_text('{"format": 99, "cache_limit": 1000}')
    with pytest.raises(StoreFormatError, match="format 99"):
        pull_remote(b, f"file://{tmp_path}/newer")
    with pytest.raises(StoreFormatError):
        push_remote(_store(tmp_path, "a", 0, 1), f"file://{tmp_path}/newer")
    assert not b.path.exists() and not (tmp_path / "newer" / "objects").exists()
    with pytest.raises(RemoteError, match="nbstore-cache\\[remote\\]|protocol"):
        pull_remote(b, "nosuchprotocol://x/y")


def _worker(
    tmp_path: Path, name: str, url: str, first: int, count: int, start: Path, stall: str = ""
) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.remote_worker", str(tmp_path / name / ".nbstore"), url, str(first), str(count)]
        + [str(start), stall],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _stop(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


@pytest.mark.slow
def test_four_processes_push_to_one_remote_at_once(tmp_path, remote_url):
    """Four processes pushing overlapping stores at once lose no record and tear no object."""
    start = tmp_path / "start"
    procs = [_worker(tmp_path, f"m{i}", remote_url, i * 9, 12, start) for i in range(4)]  # 3 keys shared per pair
    try:
        for proc in procs:
            assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
        start.touch()
        for proc in procs:
            out, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, err
            assert out.strip().splitlines()[-1].startswith("done ")
    finally:
        _stop(procs)
    c = NbStore(tmp_path / "c" / ".nbstore")
    report = pull_remote(c, remote_url)
    assert report.ok, report.problems
    assert len(_state(c)) == 39 and sorted(r.uri for r in c.list_cache_records()) == sorted(
        f"nb{i}.ipynb" for i in range(39)
    )
    assert c.verify().ok
    fs, root = _fs(remote_url)
    for path in fs.find(f"{root}/objects"):
        oid = "".join(path.rsplit("/", 2)[-2:])
        assert object_id(fs.cat_file(path)) == oid
    # Each shared key resolves to the record of the process that created it first, alike for every reader.
    d = NbStore(tmp_path / "d" / ".nbstore")
    pull_remote(d, remote_url)
    assert _state(d) == _state(c)


@pytest.mark.slow
@pytest.mark.parametrize("phase", ["objects", "records"])
def test_push_killed_midway_then_repeated(tmp_path, remote_url, phase):
    """A push killed (SIGKILL) mid-way shows readers only whole records; pushing again completes it."""
    start = tmp_path / "start"
    start.touch()
    # The worker pauses once 64 files of the phase are written, so that the kill lands mid-way for certain.
    proc = _worker(tmp_path, "m", remote_url, 0, 80, start, stall=f"{phase}:64")
    try:
        assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
        for line in proc.stdout:
            step = json.loads(line)
            if step["phase"] == phase and step["done"] >= 64:
                os.kill(proc.pid, signal.SIGKILL)
                break
        proc.wait(timeout=30)
        assert proc.returncode == -signal.SIGKILL
    finally:
        _stop([proc])
    local = NbStore(tmp_path / "m" / ".nbstore")
    assert len(local.list_cache_records()) == 80
    reader = NbStore(tmp_path / "reader" / ".nbstore")
    report = pull_remote(reader, remote_url)
    # Killed among the objects: no record is there yet. Among the records: those written, each whole.
    assert report.ok and len(report.records) == (0 if phase == "objects" else 64)
    assert reader.verify().ok if report.records else not reader.path.exists()
    again = push_remote(local, remote_url)
    assert len(again.records) == 80 - len(report.records)
    assert again.objects == (160 - 64 if phase == "objects" else 0)  # what arrived before the kill stays
    assert len(pull_remote(reader, remote_url).records) == 80 - len(report.records)
    assert _state(reader) == _state(local) and reader.verify().ok


def _cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "NBSTORE_CACHE"}
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run(
        [sys.executable, "-m", "nbstore", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


def test_cli_push_pull_json_and_dry_run(tmp_path):
    """`nbstore push/pull URL` work from the command line: --dry-run lists, --json prints one document."""
    url = f"file://{tmp_path}/remote"
    _store(tmp_path, "a", 0, 2)
    a = str(tmp_path / "a" / ".nbstore")
    dry = _cli(["-c", a, "push", url, "--dry-run"], tmp_path)
    assert dry.returncode == 0, dry.stderr
    assert "Would push 2 records (4 objects" in dry.stdout and "nb0.ipynb" in dry.stdout
    assert not (tmp_path / "remote").exists()
    pushed = _cli(["-c", a, "push", url, "--json"], tmp_path)
    doc = json.loads(pushed.stdout)
    assert doc["ok"] and len(doc["records"]) == 2 and doc["objects"] == 4
    pulled = _cli(["-c", str(tmp_path / "b"), "pull", url], tmp_path)
    assert pulled.returncode == 0 and "Pulled 2 records" in pulled.stdout
    assert len(NbStore(tmp_path / "b").list_cache_records()) == 2
    missing = _cli(["-c", a, "pull", f"file://{tmp_path}/elsewhere"], tmp_path)
    assert missing.returncode == 1 and "no nbstore store" in missing.stderr


def test_status_does_not_import_fsspec(tmp_path):
    """The commands people run most never import fsspec (only push and pull do)."""
    code = "import sys\nfrom nbstore.cli.app import app\nprint('fsspec' in sys.modules, 's3fs' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False False"


_created = st.datetimes(min_value=dt.datetime(2020, 1, 1), max_value=dt.datetime(2030, 1, 1)).map(
    lambda t: t.isoformat(timespec="microseconds")
)
_versions = st.lists(
    st.fixed_dictionaries(
        {"created": _created, "pk": st.integers(1, 5), "uri": st.sampled_from(["a.ipynb", "b.ipynb"])}
    ),
    min_size=1,
    max_size=6,
)


@settings(max_examples=200, deadline=None)
@given(_versions, st.randoms(use_true_random=False))
def test_every_reader_resolves_a_key_to_the_same_record(versions, rng):
    """The record a key resolves to depends only on the set of versions, never on the order they are seen in."""

    def resolve(seq: list[dict]) -> dict:
        best = seq[0]
        for rec in seq[1:]:
            if exchange.wins(rec, best):
                best = rec
        return best

    shuffled = list(versions)
    rng.shuffle(shuffled)
    first, second = resolve(versions), resolve(shuffled)
    assert exchange.content_without_pk(first) == exchange.content_without_pk(second)
    assert first["created"] == min(v["created"] for v in versions)


def test_readme_sharing_example_runs_as_shown(tmp_path):
    """The README's push/pull shell example runs in a fresh copy of the repository and prints what it shows."""
    repo_copy = tmp_path / "repo"
    repo_copy.mkdir()
    for name in COPIED:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, repo_copy / name, ignore=shutil.ignore_patterns("__pycache__", ".nbstore*"))
        else:
            shutil.copy2(src, repo_copy / name)
    steps = [s for b in BLOCKS if b["group"] == "sharing" for s in console_steps(b["code"])]
    assert len(steps) >= 6
    script = []
    for i, (command, _) in enumerate(steps):
        script.append(f"echo '@@step {i}@@'")
        script.append(command)
    proc = subprocess.run(
        ["bash", "-c", "\n".join(script) + "\n"],
        cwd=repo_copy,
        env=_readme_env(repo_copy),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=300,
    )
    chunks = re.split(r"^@@step \d+@@\n", proc.stdout, flags=re.M)[1:]
    assert len(chunks) == len(steps), proc.stdout
    for (command, expected), chunk in zip(steps, chunks, strict=True):
        assert matches(expected, chunk.rstrip("\n").splitlines()), (
            f"$ {command}\n--- README\n{expected}\n--- got\n{chunk}"
        )
    assert not (repo_copy / "shared-store").exists()
