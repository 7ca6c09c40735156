"""A store from a stranger is untrusted input: tampered stores never make nbstore reach outside them.

Each case tampers with a copy of one real store made by the CLI, then tests/hostile_driver.py runs every
everyday command and the artifact APIs on it in a subprocess limited to 2 GB of address space. Nothing
outside the store may change (a canary tree is compared before and after), no command may die or print a
traceback, and `verify` must flag the tampering (then repair it, after which the store verifies clean).
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import shutil
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import make_nb, write_nb

ROOT = Path(__file__).resolve().parents[1]
DRIVER = Path(__file__).with_name("hostile_driver.py")
NBSTORE = [sys.executable, "-m", "nbstore"]
LIMIT = 2 << 30  # bytes of address space each command may use


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (LIMIT, LIMIT))


def cli(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    """Run one nbstore command in cwd (for building stores)."""
    return subprocess.run([*NBSTORE, *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    """A project with a real store made by the CLI: a.ipynb cached with an artifact, b.ipynb cached, both staged."""
    project = tmp_path_factory.mktemp("template") / "project"
    project.mkdir()
    write_nb(project / "a.ipynb", make_nb(["x = 1", "print(x)"]))
    write_nb(project / "b.ipynb", make_nb(["y = 2"]))
    write_nb(project / "c.ipynb", make_nb(["z = 3"]))
    (project / "out.csv").write_text("a,b\n1,2\n")
    for args in (
        ["cache", "add", "a.ipynb", "--artifact", "out.csv"],
        ["cache", "add", "b.ipynb"],
        ["stage", "add", "a.ipynb", "b.ipynb"],
        ["status"],
    ):
        done = cli(project, *args)
        assert done.returncode == 0, done.stderr
    return project


class Store:
    """Handy paths into a copied project's store, for the tampering cases."""

    def __init__(self, project: Path, canary: Path) -> None:
        self.project, self.root, self.canary = project, project / ".nbstore", canary

    def record_path(self, pk: int) -> Path:
        for path in sorted((self.root / "cache").glob("*.json")):
            if json.loads(path.read_text())["pk"] == pk:
                return path
        raise AssertionError(f"no record {pk}")

    def record(self, pk: int) -> dict:
        return json.loads(self.record_path(pk).read_text())

    def rewrite(self, pk: int, change: Callable[[dict], None]) -> None:
        path = self.record_path(pk)
        rec = json.loads(path.read_text())
        change(rec)
        replace_file(path, json.dumps(rec, indent=2).encode())

    def object_path(self, oid: str) -> Path:
        return self.root / "objects" / oid[:2] / oid[2:]

    def key(self, pk: int) -> str:
        return self.record(pk)["hashkey"]

    def replace_with_link(self, path: Path, target: Path) -> None:
        """Replace path by a symlink to target (a copy of what path held is left at target, to be tempting)."""
        if path.is_dir() and not path.is_symlink():
            if not target.exists():
                shutil.copytree(path, target)
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            if not target.exists() and path.is_file():
                shutil.copy2(path, target)
            path.chmod(0o644) if not path.is_symlink() else None
            path.unlink()
        path.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(target, path)


def replace_file(path: Path, data: bytes) -> None:
    """Give path new bytes as git does on a checkout: a new file renamed into place (the folder changes)."""
    new = path.with_name(path.name + ".new")
    new.write_bytes(data)
    os.replace(new, path)


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def sparse(path: Path, size: int = 3 << 30) -> None:
    if path.exists():
        path.chmod(0o644)
        path.unlink()
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        fh.truncate(size)


def _claim_link(s: Store) -> None:
    (s.root / "claims").mkdir(exist_ok=True)
    # b's record is removed too, so that execute runs b and takes the claim that links outside.
    s.object_path(s.record(2)["notebook"]).unlink()
    os.symlink(s.canary / "victim", s.root / "claims" / s.key(2))


def _fan_link(s: Store) -> None:
    oid = s.record(1)["notebook"]
    s.replace_with_link(s.object_path(oid).parent, s.canary / "fan")


def _object_link(s: Store) -> None:
    oid = s.record(1)["notebook"]
    s.replace_with_link(s.object_path(oid), s.canary / "object-copy")


def _artifact_name(name: str) -> Callable[[Store], None]:
    def tamper(s: Store) -> None:
        def change(rec: dict) -> None:
            rec["artifacts"] = {name: next(iter(rec["artifacts"].values()))}

        s.rewrite(1, change)

    return tamper


def _notebook_ref(ref: str) -> Callable[[Store], None]:
    def tamper(s: Store) -> None:
        s.rewrite(1, lambda rec: rec.update(notebook=ref))

    return tamper


def _fifo(path_of: Callable[[Store], Path]) -> Callable[[Store], None]:
    def tamper(s: Store) -> None:
        path = path_of(s)
        if path.exists():
            path.chmod(0o644)
            path.unlink()
        os.mkfifo(path)

    return tamper


def _dir_instead(path_of: Callable[[Store], Path]) -> Callable[[Store], None]:
    def tamper(s: Store) -> None:
        path = path_of(s)
        path.chmod(0o644)
        path.unlink()
        path.mkdir()
        (path / "inner").write_text("x")

    return tamper


def _link(path_of: Callable[[Store], Path], target_of: Callable[[Store], Path]) -> Callable[[Store], None]:
    def tamper(s: Store) -> None:
        s.replace_with_link(path_of(s), target_of(s))

    return tamper


def _write(path_of: Callable[[Store], Path], data: bytes) -> Callable[[Store], None]:
    def tamper(s: Store) -> None:
        replace_file(path_of(s), data)

    return tamper


def _index_deep(s: Store) -> None:
    import zlib

    body = b'{"kind":"cache","name":"x","op":"put","rec":' + nested(200_000) + b"}"
    with open(s.root / "index", "ab") as fh:
        fh.write(b"%08x %s\n" % (zlib.crc32(body), body))


def _missing_notebook_object(s: Store) -> None:
    s.object_path(s.record(1)["notebook"]).unlink()


CASES: dict[str, Callable[[Store], None]] = {
    # symlinks anywhere in the store, pointing at tempting copies in the canary tree
    "claims-key-link": _claim_link,
    "claims-folder-link": _link(lambda s: s.root / "claims", lambda s: s.canary / "dir"),
    "objects-fanout-link": _fan_link,
    "objects-folder-link": _link(lambda s: s.root / "objects", lambda s: s.canary / "objects"),
    "object-file-link": _object_link,
    "cache-folder-link": _link(lambda s: s.root / "cache", lambda s: s.canary / "cache"),
    "stage-folder-link": _link(lambda s: s.root / "stage", lambda s: s.canary / "stage"),
    "tmp-folder-link": _link(lambda s: s.root / "tmp", lambda s: s.canary / "dir"),
    "quarantine-folder-link": _link(lambda s: s.root / "quarantine", lambda s: s.canary / "dir"),
    "record-file-link": _link(lambda s: s.record_path(1), lambda s: s.canary / "record.json"),
    "config-link": _link(lambda s: s.root / "nbstore.json", lambda s: s.canary / "nbstore.json"),
    "index-link": _link(lambda s: s.root / "index", lambda s: s.canary / "victim"),
    "lock-link-dangling": _link(lambda s: s.root / "lock", lambda s: s.canary / "dir" / "created-by-lock"),
    # files of the wrong type
    "record-is-folder": _dir_instead(lambda s: s.record_path(1)),
    "object-is-fifo": _fifo(lambda s: s.object_path(s.record(1)["notebook"])),
    "config-is-fifo": _fifo(lambda s: s.root / "nbstore.json"),
    "index-is-folder": _dir_instead(lambda s: s.root / "index"),
    # artifact names and object ids that are not plain
    "artifact-name-dotdot": _artifact_name("../../canary/escaped.sh"),
    "artifact-name-absolute": _artifact_name("/tmp/nbstore-hostile-absolute.sh"),
    "artifact-name-control": _artifact_name("\x1b[2Jout.csv"),
    "artifact-name-backslash": _artifact_name("..\\..\\out.csv"),
    "artifact-name-dot-component": _artifact_name("a/./out.csv"),
    "notebook-ref-path": _notebook_ref("../../../canary/victim"),
    # unbounded memory and nesting
    "object-link-dev-zero": _link(lambda s: s.object_path(s.record(1)["notebook"]), lambda s: Path("/dev/zero")),
    "config-link-dev-zero": _link(lambda s: s.root / "nbstore.json", lambda s: Path("/dev/zero")),
    "record-link-dev-zero": _link(lambda s: s.record_path(1), lambda s: Path("/dev/zero")),
    "object-sparse-3gb": lambda s: sparse(s.object_path(s.record(1)["notebook"])),
    "record-sparse-3gb": lambda s: sparse(s.record_path(1)),
    "index-sparse-3gb": lambda s: sparse(s.root / "index"),
    "record-nested-deep": _write(lambda s: s.record_path(1), nested(200_000)),
    "config-nested-deep": _write(lambda s: s.root / "nbstore.json", nested(200_000)),
    "index-line-nested-deep": _index_deep,
    # a record without its notebook object is no cache hit
    "missing-notebook-object": _missing_notebook_object,
}


# Cases where `execute` runs every staged notebook (a kernel start each); the others execute only b.ipynb.
EXECUTE_ALL = {"claims-key-link", "missing-notebook-object", "artifact-name-dotdot", "object-file-link"}


def snapshot(root: Path) -> dict:
    """Every entry under root (never following links): type, mode, size, mtime and content hash."""
    out = {}
    for dirpath, dirs, files in os.walk(root):
        for name in sorted(dirs + files):
            path = Path(dirpath, name)
            st = path.lstat()
            digest = ""
            if stat.S_ISREG(st.st_mode):
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
            elif stat.S_ISLNK(st.st_mode):
                digest = os.readlink(path)
            out[path.relative_to(root).as_posix()] = (stat.S_IFMT(st.st_mode), st.st_mode, st.st_size, digest)
    return out


def make_canary(where: Path) -> Path:
    """A tree outside the store that tampered links point into."""
    canary = where / "canary"
    (canary / "dir").mkdir(parents=True)
    (canary / "victim").write_text("precious: must never change\n")
    (canary / "dir" / "keep.txt").write_text("keep\n")
    return canary


def run_driver(jobs: list[dict], where: Path) -> None:
    """Run the driver on every job (one process) under the address-space limit."""
    for job in jobs:
        Path(job["out"]).mkdir()
    jobs_file = where / "jobs.json"
    jobs_file.write_text(json.dumps(jobs))
    env = dict(os.environ, PYTHONPATH=str(ROOT), NBSTORE_LOCK_TIMEOUT="5", NO_COLOR="1")
    proc = subprocess.run(
        [sys.executable, str(DRIVER), str(jobs_file)],
        capture_output=True,
        text=True,
        timeout=900,
        preexec_fn=_limit_memory,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, f"the driver died ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"


def tampered(template: Path, where: Path, tamper: Callable[[Store], None], *, execute_all: bool) -> dict:
    """Copy the template project under where, give it a canary and tamper with its store; return its job."""
    project = where / "project"
    shutil.copytree(template, project, symlinks=True)
    canary = make_canary(where)
    tamper(Store(project, canary))
    return {
        "project": str(project),
        "out": str(where / "out"),
        "result": str(where / "result.json"),
        "execute_all": execute_all,
        "canary": str(canary),
        "before": snapshot(canary),
    }


@pytest.fixture(scope="module")
def runs(template, tmp_path_factory) -> dict[str, dict]:
    """Every case's store tampered with, then the driver run on all of them: case -> job with its results."""
    base = tmp_path_factory.mktemp("hostile")
    jobs = {
        case: tampered(template, base / case, tamper, execute_all=case in EXECUTE_ALL) for case, tamper in CASES.items()
    }
    run_driver(list(jobs.values()), base)
    for job in jobs.values():
        job["after"] = snapshot(Path(job["canary"]))
        job["results"] = json.loads(Path(job["result"]).read_text())
    return jobs


def check_results(results: list[dict]) -> None:
    """No command died, let an exception escape or printed a traceback; verify flagged the damage and repaired it."""
    for r in results:
        where = f"`{r['cmd']}` (exit {r['code']}):\n{r['stdout'][-3000:]}\n{r['stderr'][-3000:]}"
        assert isinstance(r["code"], int), where
        assert "Traceback" not in r["stderr"] and "Traceback" not in r["stdout"], where
        assert "unexpected" not in r["stderr"], where
        assert "\x1b" not in r["stdout"] + r["stderr"], where
    by = {}
    for r in results:
        by.setdefault(r["cmd"], []).append(r)
    first_verify, after_repair, after_clear = by["verify"]
    assert first_verify["code"] != 0, f"verify did not flag the tampering:\n{first_verify['stdout']}"
    assert by["verify --repair"][0]["code"] == 0, by["verify --repair"][0]
    assert after_repair["code"] == 0, f"repair left damage:\n{after_repair['stdout']}"
    assert after_clear["code"] == 0, after_clear
    assert "Cleared" in by["clear --yes"][0]["stdout"], by["clear --yes"][0]


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(CASES))
def test_tampered_store_never_reaches_outside(runs, case):
    """Every command and artifact API on a tampered store leaves the canary alone and fails clearly; verify flags it."""
    job = runs[case]
    assert job["after"] == job["before"], "something outside the store changed"
    assert not Path("/tmp/nbstore-hostile-absolute.sh").exists()
    check_results(job["results"])
    # Whatever was written out lies where the caller asked, under out/, as plain files.
    for path in Path(job["out"]).rglob("*"):
        assert not path.is_symlink()


def test_artifact_names_are_refused_when_read_and_when_written(template, tmp_path):
    """A record naming artifact '../x' is refused as damaged by name; write_to never writes outside or over a file."""
    import nbstore
    from nbstore import ArtifactPathError, StoreCorruptError
    from nbstore.bundles import StoredArtifacts

    project = tmp_path / "project"
    shutil.copytree(template, project, symlinks=True)
    s = Store(project, tmp_path)
    _artifact_name("../escaped.sh")(s)
    cache = nbstore.get_cache(project / ".nbstore")
    assert [r.pk for r in cache.list_cache_records()] == [2]  # the tampered record is skipped, not served
    problems = [p for p in cache.verify().problems if p.path.startswith("cache/")]
    assert problems and "'../escaped.sh'" in problems[0].detail and "'..'" in problems[0].detail
    # Artifacts handed out directly (not from a record) are checked again when written out.
    blobs = {"../x.sh": "0" * 64}
    with pytest.raises(ArtifactPathError, match="x.sh"):
        StoredArtifacts(blobs, lambda oid: None).write_to(tmp_path / "w")
    target = tmp_path / "w2"
    target.mkdir()
    (target / "out.csv").write_text("mine")
    good = nbstore.get_cache(Path(str(template)) / ".nbstore")
    with pytest.raises(ArtifactPathError, match="already exists"):
        good.get_cache_bundle(1).artifacts.write_to(target)
    assert (target / "out.csv").read_text() == "mine"
    os.symlink(tmp_path / "elsewhere", tmp_path / "w3")
    (tmp_path / "elsewhere").mkdir()
    sub = tmp_path / "w4"
    sub.mkdir()
    os.symlink(tmp_path / "elsewhere", sub / "nested")
    written = StoredArtifacts({"nested/x.csv": good.get_cache_record(1).artifacts["out.csv"]}, good._open_object)
    with pytest.raises(ArtifactPathError, match="symbolic link"):
        written.write_to(sub)
    assert list((tmp_path / "elsewhere").iterdir()) == []
    with pytest.raises(StoreCorruptError):
        good._open_object("../../etc/passwd")


def test_terminal_gets_store_text_only_as_text(template, tmp_path):
    """A uri, description or data holding escape sequences and newlines is printed escaped by cache list and show."""
    project = tmp_path / "project"
    shutil.copytree(template, project, symlinks=True)
    s = Store(project, tmp_path)
    evil = "x\x1b[2J\x1b]0;pwned\x07\nFAKE LINE\x9b31m.ipynb"
    s.rewrite(1, lambda rec: rec.update(uri=evil, description="d\x1b[31m", data={"k": "v\x1b[5m"}))
    for args in (["cache", "list"], ["cache", "show", "1"], ["cache", "list", "--json"], ["verify"]):
        done = cli(project, *args)
        text = done.stdout + done.stderr
        assert "\x1b" not in text and "\x07" not in text and "\x9b" not in text, args
        assert "FAKE LINE" not in text.splitlines()[-1:], args
    listing = cli(project, "cache", "list").stdout
    assert "x\\x1b[2J\\x1b]0;pwned\\x07\\nFAKE LINE\\x9b31m.ipynb" in listing
    assert not any(line.startswith("FAKE LINE") for line in listing.splitlines())


def test_tampered_store_committed_on_a_branch_then_merged(template, tmp_path):
    """A pull request that commits symlinks and a '../' artifact name into the store is merged and used safely."""
    git = shutil.which("git")
    if git is None:
        pytest.skip("git is not installed")
    project = tmp_path / "project"
    shutil.copytree(template, project, symlinks=True)
    canary = make_canary(tmp_path)
    (project / ".nbstore" / "index").unlink()  # a clone has no index (it is volatile and ignored)
    env = dict(
        os.environ,
        GIT_AUTHOR_NAME="t",
        GIT_AUTHOR_EMAIL="t@example.com",
        GIT_COMMITTER_NAME="t",
        GIT_COMMITTER_EMAIL="t@example.com",
    )

    def g(*args: str) -> None:
        done = subprocess.run([git, *args], cwd=project, capture_output=True, text=True, env=env, check=False)
        assert done.returncode == 0, done.stderr

    g("init", "-q", "-b", "main")
    g("add", "-A")
    g("commit", "-q", "-m", "store")
    g("checkout", "-q", "-b", "pr")
    s = Store(project, canary)
    _artifact_name("../../canary/escaped.sh")(s)
    (s.root / "claims").mkdir(exist_ok=True)
    os.symlink(canary / "victim", s.root / "claims" / s.key(2))
    s.object_path(s.record(2)["notebook"]).unlink()
    s.replace_with_link(s.root / "stage", canary / "stage")
    g("add", "-A", "-f", ".nbstore")
    g("commit", "-q", "-m", "innocent-looking PR")
    g("checkout", "-q", "main")
    g("merge", "-q", "--no-edit", "pr")
    assert (s.root / "claims" / s.key(2)).is_symlink() and (s.root / "stage").is_symlink()
    before = snapshot(canary)
    job = {
        "project": str(project),
        "out": str(tmp_path / "out"),
        "result": str(tmp_path / "r.json"),
        "execute_all": True,
    }
    run_driver([job], tmp_path)
    assert snapshot(canary) == before
    check_results(json.loads(Path(job["result"]).read_text()))
