"""A store committed to git: read-only use leaves it clean, and branches merge without losing a record."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import nbstore
from nbstore.layout import stage_name
from tests.storetools import executed_nb, write_nb

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def git(repo: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run git in repo (no user config, no hooks, no signing)."""
    env = {
        "PATH": "/usr/bin:/bin:/usr/local/bin",
        "HOME": str(repo.parent),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_TERMINAL_PROMPT": "0",
        "LC_ALL": "C",
    }
    proc = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def init_repo(repo: Path) -> None:
    """Create a repository with a local identity."""
    repo.mkdir(parents=True, exist_ok=True)
    git(repo, "init", "-q", "-b", "main")
    configure(repo)


def configure(repo: Path) -> None:
    """Give a repository (or clone) an identity and plain settings."""
    git(repo, "config", "user.name", "nbstore test")
    git(repo, "config", "user.email", "test@example.invalid")
    git(repo, "config", "commit.gpgsign", "false")
    git(repo, "config", "core.autocrlf", "false")


def clone(src: Path, dst: Path) -> Path:
    """Clone src to dst and configure the clone."""
    git(src.parent, "clone", "-q", str(src), str(dst))
    configure(dst)
    return dst


def commit_all(repo: Path, message: str) -> None:
    """Stage everything (the store's own .gitignore keeps its volatile files out) and commit."""
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)


def porcelain(repo: Path) -> str:
    """Return `git status --porcelain` (untracked files included)."""
    return git(repo, "status", "--porcelain", "--untracked-files=all").stdout


def add(repo: Path, tag: str, *, artifact: bytes | None = None) -> nbstore.NbCacheRecord:
    """Write notebook nbs/<tag>.ipynb in repo (with an artifact if given) and cache it in repo/.nbstore."""
    path = write_nb(repo / "nbs" / f"{tag}.ipynb", executed_nb(tag))
    arts = []
    if artifact is not None:
        (repo / "nbs" / f"{tag}.bin").write_bytes(artifact)
        arts = [f"{tag}.bin"]
    return nbstore.get_cache(repo / ".nbstore").cache_notebook_file(path, artifacts=arts)


READ_ONLY_SCRIPT = """
import sys
import nbstore
cache = nbstore.get_cache(sys.argv[1] + "/.nbstore")
for _ in range(2):
    records = cache.list_cache_records()
    for rec in records:
        cache.get_cache_record(rec.pk)
        bundle = cache.get_cache_bundle(rec.pk)
        for rel in bundle.artifacts.relative_paths:
            bundle.artifacts.read(rel)
        with cache.cache_artefacts_temppath(rec.pk):
            pass
    cache.match_cache_file(sys.argv[1] + "/nbs/a.ipynb")
    cache.merge_match_into_file(sys.argv[1] + "/nbs/a.ipynb")
    cache.list_staged_records()
    cache.staged_keys()
    cache.list_staged_unexecuted()
    for rec in cache.list_staged_records():
        cache.get_staged_record(rec.pk)
        cache.get_staged_notebook(rec.pk)
        cache.get_cache_record_of_staged(rec.pk)
    cache.get_cache_limit()
    assert cache.verify().ok
    cache.gc(dry_run=True)
print(len(records))
"""


def test_read_only_use_of_a_committed_store_leaves_git_status_clean(tmp_path):
    """Listing, matching, reading bundles, staged keys and verify on a committed store (and a clone) change no file."""
    repo = tmp_path / "proj"
    init_repo(repo)
    add(repo, "a", artifact=b"figure")
    add(repo, "b")
    cache = nbstore.get_cache(repo / ".nbstore")
    cache.stage_notebook_file(repo / "nbs" / "a.ipynb")
    cache.stage_notebook_file(write_nb(repo / "nbs" / "c.ipynb", executed_nb("c")))
    commit_all(repo, "notebooks and their cache")
    assert porcelain(repo) == ""
    other = clone(repo, tmp_path / "elsewhere" / "clone")
    for where in (repo, other):
        proc = subprocess.run([sys.executable, "-c", READ_ONLY_SCRIPT, str(where)], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.strip() == "2"
        assert porcelain(where) == "", f"{where}: read-only use changed committed files"
    # The clone, at another path, resolves staged notebooks inside itself.
    staged = nbstore.get_cache(other / ".nbstore").list_staged_records()
    assert {Path(r.uri).parent for r in staged} == {other / "nbs"}


def _pks(repo: Path) -> dict[str, int]:
    return {r.hashkey: r.pk for r in nbstore.get_cache(repo / ".nbstore").list_cache_records()}


def test_two_branches_merge_without_conflicts_and_pk_clashes_resolve_deterministically(tmp_path):
    """Branches that add and remove records merge cleanly; clashing pks resolve alike in every clone."""
    base = tmp_path / "base"
    init_repo(base)
    shared = b"an artifact two notebooks produce alike" * 50
    keep = add(base, "keep")
    gone1 = add(base, "gone-on-one")
    gone2 = add(base, "gone-on-two", artifact=shared)
    commit_all(base, "three cached notebooks")

    one = clone(base, tmp_path / "one")
    two = clone(base, tmp_path / "two")
    nbstore.get_cache(one / ".nbstore").remove_cache(gone2.pk)
    d1 = add(one, "d1")
    d2 = add(one, "d2")
    commit_all(one, "branch one: remove one record, add two")
    nbstore.get_cache(two / ".nbstore").remove_cache(gone1.pk)
    e1 = add(two, "e1", artifact=shared)  # one object with the artifact of the record branch one removed
    e2 = add(two, "e2")
    commit_all(two, "branch two: remove another record, add two")
    assert (d1.pk, d2.pk) == (e1.pk, e2.pk) == (4, 5)  # the clash a merge must resolve

    git(base, "pull", "-q", "--no-rebase", str(one), "main")
    merge = git(base, "pull", "--no-rebase", "--no-edit", str(two), "main", check=False)
    assert merge.returncode == 0 and "CONFLICT" not in merge.stdout, merge.stdout + merge.stderr

    # Two fresh clones of the merge open it and agree on every pk; the earliest created keeps a clashing pk.
    x = clone(base, tmp_path / "x")
    y = clone(base, tmp_path / "y")
    pks_x, pks_y = _pks(x), _pks(y)
    assert pks_x == pks_y
    assert pks_x == {keep.hashkey: 1, d1.hashkey: 4, d2.hashkey: 5, e1.hashkey: 6, e2.hashkey: 7}
    # The renumbering is written to the sidecars identically, so committing it from either clone agrees.
    assert git(x, "diff").stdout == git(y, "diff").stdout != ""
    for repo in (x, y, base):
        cache = nbstore.get_cache(repo / ".nbstore")
        assert set(_pks(repo)) == {keep.hashkey, d1.hashkey, d2.hashkey, e1.hashkey, e2.hashkey}
        assert cache.verify().problems == ()
        for rec in cache.list_cache_records():
            bundle = cache.get_cache_bundle(rec.pk)
            assert bundle.nb.cells[0].outputs[0].text == f"{Path(rec.uri).stem} 0\n"  # its own outputs
        assert cache.get_cache_bundle(pks_x[e1.hashkey]).artifacts.read("e1.bin") == shared

    # Once the renumbering is committed, the next open changes nothing more.
    commit_all(x, "renumber clashing pks after the merge")
    assert _pks(x) == pks_x and porcelain(x) == ""
    # Removal left the removed records' objects for gc; gc on the merged branch frees exactly those.
    report = nbstore.get_cache(x / ".nbstore").gc()
    gone = {f"objects/{r.notebook[:2]}/{r.notebook[2:]}" for r in (gone1, gone2)}
    assert set(report.removed) == gone
    assert nbstore.get_cache(x / ".nbstore").verify().problems == ()
    assert nbstore.get_cache(x / ".nbstore").get_cache_bundle(pks_x[e1.hashkey]).artifacts.read("e1.bin") == shared


def _conflicting_branches(tmp_path: Path) -> tuple[Path, Path, nbstore.NbCacheRecord, nbstore.NbCacheRecord]:
    """Two clones that each cache and stage the same new notebook and set another cache limit, committed."""
    base = tmp_path / "base"
    init_repo(base)
    add(base, "first")
    commit_all(base, "one record")
    one = clone(base, tmp_path / "one")
    two = clone(base, tmp_path / "two")
    recs = []
    for repo, limit in ((one, 300), (two, 200)):
        recs.append(add(repo, "same"))
        cache = nbstore.get_cache(repo / ".nbstore")
        cache.stage_notebook_file(repo / "nbs" / "same.ipynb")
        cache.change_cache_limit(limit)
        commit_all(repo, f"cache and stage the same notebook, limit {limit}")
    return one, two, recs[0], recs[1]


def test_a_store_left_in_merge_conflict_stays_usable_and_repair_resolves_it_alike(tmp_path):
    """Files git leaves in conflict read as the side created first (larger limit), alike both ways; repair writes it."""
    one, two, first, second = _conflicting_branches(tmp_path)
    assert first.created < second.created
    store_files = {}
    one_before = clone(one, tmp_path / "one-before")  # for the other direction: one's branch before its merge
    for repo, other in ((one, two), (two, one_before)):
        merge = git(repo, "pull", "--no-rebase", "--no-edit", str(other), "main", check=False)
        assert merge.returncode != 0
        conflicted = sorted(git(repo, "diff", "--name-only", "--diff-filter=U").stdout.split())
        stage_file = f".nbstore/stage/{stage_name('nbs/same.ipynb')}.json"
        assert conflicted == sorted([f".nbstore/cache/{first.hashkey}.json", ".nbstore/nbstore.json", stage_file])
        assert b"<<<<<<<" in (repo / conflicted[0]).read_bytes()

        cache = nbstore.get_cache(repo / ".nbstore")
        assert [(r.pk, r.created) for r in cache.list_cache_records() if r.hashkey == first.hashkey] == [
            (first.pk, first.created)
        ]
        assert cache.get_cache_limit() == 300
        staged = cache.get_staged_record(repo / "nbs" / "same.ipynb")
        assert cache.get_cache_record_of_staged(staged.pk).hashkey == first.hashkey
        assert cache.merge_match_into_file(repo / "nbs" / "same.ipynb")[0] == first.pk

        kinds = sorted((p.kind, p.path) for p in cache.verify().problems)
        assert kinds == [
            ("config", "nbstore.json"),
            ("merge-conflict", f"cache/{first.hashkey}.json"),
            ("merge-conflict", stage_file[len(".nbstore/") :]),
        ]
        report = cache.verify(repair=True)
        assert all(p.repaired for p in report.problems) and len(report.problems) == 3
        commit_all(repo, "merge, resolved by nbstore verify --repair")
        assert porcelain(repo) == ""
        assert nbstore.get_cache(repo / ".nbstore").verify().problems == ()
        tracked = git(repo, "ls-files", ".nbstore").stdout.split()
        store_files[repo] = {name: (repo / name).read_bytes() for name in tracked}
    assert store_files[one] == store_files[two]


def test_same_notebook_cached_on_two_branches_either_side_can_be_kept_by_hand(tmp_path):
    """A conflicted record resolved by hand (git checkout --theirs) verifies clean and matches."""
    one, two, _first, second = _conflicting_branches(tmp_path)
    merge = git(one, "pull", "--no-rebase", "--no-edit", str(two), "main", check=False)
    assert merge.returncode != 0
    conflicted = git(one, "diff", "--name-only", "--diff-filter=U").stdout.split()
    git(one, "checkout", "--theirs", "--", *conflicted)
    commit_all(one, "merge: keep their side")
    cache = nbstore.get_cache(one / ".nbstore")
    assert cache.verify().problems == ()
    assert cache.get_cache_limit() == 200
    assert cache.match_cache_file(one / "nbs" / "same.ipynb").created == second.created


def test_removal_in_a_repository_leaves_objects_for_gc(tmp_path):
    """In a git work tree remove_cache keeps the record's objects (a branch may need them); gc frees them."""
    repo = tmp_path / "proj"
    init_repo(repo)
    rec = add(repo, "a", artifact=b"own artifact")
    kept = add(repo, "b")
    cache = nbstore.get_cache(repo / ".nbstore")
    cache.remove_cache(rec.pk)
    own = [rec.notebook, *rec.artifacts.values()]
    assert all(cache.layout.object_path(oid).exists() for oid in own)
    assert cache.verify().problems == ()
    assert sorted(cache.gc().removed) == sorted(f"objects/{oid[:2]}/{oid[2:]}" for oid in own)
    assert cache.get_cache_bundle(kept.pk).nb.cells
    assert cache.verify().problems == ()


@pytest.mark.parametrize("store_on_main", [True, False], ids=["store-on-both", "store-on-branch-only"])
def test_writes_after_a_checkout_that_emptied_the_store_folders(tmp_path, store_on_main):
    """After a checkout that empties the store (git drops its folders, keeps its ignored index), writes work."""
    repo = tmp_path / "proj"
    store = repo / ".nbstore"
    init_repo(repo)
    (repo / "README").write_text("base\n")
    if store_on_main:
        nbstore.get_cache(store).change_cache_limit(500)  # creates the store: settings only, empty folders
    commit_all(repo, "base")
    git(repo, "checkout", "-q", "-b", "work")
    add(repo, "a")
    nbstore.get_cache(store).stage_notebook_file(repo / "nbs" / "a.ipynb")
    commit_all(repo, "cache and stage a")
    git(repo, "checkout", "-q", "main")
    assert not (store / "cache").exists() and not (store / "stage").exists() and (store / "index").exists()
    assert (store / "nbstore.json").exists() == store_on_main
    rec = add(repo, "b")
    staged = nbstore.get_cache(store).stage_notebook_file(repo / "nbs" / "b.ipynb")
    cache = nbstore.get_cache(store)
    assert [r.pk for r in cache.list_cache_records()] == [rec.pk]
    assert cache.get_cache_record_of_staged(staged.pk).pk == rec.pk
    assert cache.get_cache_limit() == (500 if store_on_main else 1000)
    assert cache.verify().problems == ()
