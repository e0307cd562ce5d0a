"""`routelens.atomic`: outputs appear whole or not at all, with the user's umask, and the
temporaries of killed runs are removed by the next run while a live run's are kept."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys

import pytest

from routelens import atomic
from routelens.errors import RoutelensError


@pytest.fixture
def umask():
    """Set a umask for the test and restore the previous one."""
    old = os.umask(0o022)
    os.umask(old)

    def set_(mask: int) -> None:
        os.umask(mask)

    yield set_
    os.umask(old)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def leftovers(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if atomic.TAG in p.name)


@pytest.mark.parametrize(
    "mask, file_mode, dir_mode", [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700), (0o002, 0o664, 0o775)]
)
def test_outputs_follow_the_umask(tmp_path, umask, mask, file_mode, dir_mode):
    umask(mask)
    assert atomic.current_umask() == mask
    assert mode(atomic.write_json(tmp_path / "a.json", {"x": 1})) == file_mode
    assert mode(atomic.write_text(tmp_path / "a.txt", "hi")) == file_mode
    with atomic.atomic_path(tmp_path / "w.bin") as tmp:
        tmp.write_bytes(b"\0")
    assert mode(tmp_path / "w.bin") == file_mode
    with atomic.atomic_dir(tmp_path / "figs") as d:
        (d / "f.png").write_bytes(b"png")
    assert mode(tmp_path / "figs") == dir_mode
    assert mode(tmp_path / "figs" / "f.png") == file_mode
    assert leftovers(tmp_path) == []


def test_current_umask_does_not_change_it(umask):
    umask(0o027)
    for _ in range(3):
        assert atomic.current_umask() == 0o027
    assert os.umask(0o027) == 0o027


def test_json_formatting_and_nan_refused(tmp_path):
    path = atomic.write_json(tmp_path / "r.json", {"a": [1, 2]})
    assert path.read_text() == json.dumps({"a": [1, 2]}, indent=1)
    atomic.write_json(path, {"a": 1}, indent=2, newline=True)
    assert path.read_text() == '{\n  "a": 1\n}\n'
    with pytest.raises(ValueError):
        atomic.write_json(path, {"a": float("nan")})
    assert json.loads(path.read_text()) == {"a": 1}  # the old content survives a refused value
    assert leftovers(tmp_path) == []


def test_failure_mid_write_keeps_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "out.bin"
    atomic.write_bytes(target, b"old")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic.atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("boom")
    assert target.read_bytes() == b"old"
    assert leftovers(tmp_path) == []


def test_failure_mid_folder_keeps_the_old_folder(tmp_path):
    target = tmp_path / "model"
    with atomic.atomic_dir(target) as d:
        (d / "weights").write_text("v1")
    with pytest.raises(KeyboardInterrupt):
        with atomic.atomic_dir(target) as d:
            (d / "weights").write_text("v2 half")
            raise KeyboardInterrupt
    assert (target / "weights").read_text() == "v1"
    with atomic.atomic_dir(target) as d:
        (d / "other").write_text("v3")
    assert sorted(p.name for p in target.iterdir()) == ["other"]  # replaced whole, not merged
    assert leftovers(tmp_path) == []


def test_wrong_kind_of_target_is_a_user_error(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(RoutelensError, match="is a file"):
        with atomic.atomic_dir(tmp_path / "f"):
            pass
    with pytest.raises(RoutelensError, match="is a directory"):
        atomic.write_text(tmp_path, "x")


def test_write_json_refuses_a_folder_or_a_missing_folder_in_one_line(tmp_path):
    """Every JSON file goes through `write_json`, so its checks are every writer's: a folder in the
    file's place is refused, naming the option, and so is a missing folder where the caller says
    it must exist (the simulators' `--json`); elsewhere the folder is made, as for every output."""
    folder = tmp_path / "out"
    folder.mkdir()
    with pytest.raises(RoutelensError) as info:
        atomic.write_json(folder, {}, what="--json", example="x.json")
    assert str(info.value) == f"--json {folder} is a directory; give a file name such as {folder / 'x.json'}."
    missing = tmp_path / "nowhere" / "a.json"
    with pytest.raises(RoutelensError) as info:
        atomic.write_json(missing, {"a": 1}, what="--out", folder_must_exist=True)
    assert str(info.value) == (
        f"--out {missing}: folder {missing.parent} does not exist; create it or choose another path."
    )
    with pytest.raises(RoutelensError, match=rf"^{re.escape(str(missing))}: folder"):
        atomic.check_json_target(missing, folder_must_exist=True)  # no option: the path alone
    assert not missing.parent.exists() and list(folder.iterdir()) == []
    assert atomic.check_json_target(missing) == missing and not missing.parent.exists()  # checking makes nothing
    atomic.write_json(missing, {"a": 1})
    assert json.loads(missing.read_text()) == {"a": 1}
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(RoutelensError, match="is a file, not a folder"):
        atomic.check_json_target(blocker / "deeper" / "a.json", what="--json")


@pytest.mark.parametrize(
    "fmt", [{}, {"indent": 2, "newline": True}, {"indent": None, "newline": True}, {"indent": 2, "allow_nan": True}]
)
def test_write_json_bytes_are_json_dumps_in_the_callers_format(tmp_path, fmt):
    payload = {"b": [1, 2.5, None], "a": {"x": "caf\xe9"}} | ({"n": float("nan")} if fmt.get("allow_nan") else {})
    path = atomic.write_json(tmp_path / "a.json", payload, **fmt)
    want = json.dumps(payload, indent=fmt.get("indent", 1), allow_nan=fmt.get("allow_nan", False))
    assert path.read_bytes() == (want + ("\n" if fmt.get("newline") else "")).encode()


# A child that opens every kind of temporary, reports their names and waits to be killed.
CHILD = """
import sys, time
from pathlib import Path
from routelens import atomic
out = Path(sys.argv[1])
with atomic.atomic_path(out / "a.json") as f, atomic.atomic_dir(out / "figs") as d, atomic.temp_dir(out, "cache") as c:
    print(f.name, d.name, c.name, flush=True)
    time.sleep(60)
"""


def spawn(folder):
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(folder)], stdout=subprocess.PIPE, text=True)
    names = child.stdout.readline().split()
    assert len(names) == 3, names
    return child, names


def test_a_killed_runs_temporaries_are_cleaned_and_a_live_runs_are_not(tmp_path):
    live, live_names = spawn(tmp_path)
    try:
        dead, dead_names = spawn(tmp_path)
        dead.kill()
        dead.wait()
        assert leftovers(tmp_path) == sorted(dead_names + live_names)
        assert all(atomic.owner(n) == (dead.pid, atomic.HOST) for n in dead_names)
        # The next writes of each kind clean their own kind of leftover.
        atomic.write_json(tmp_path / "a.json", {})
        with atomic.atomic_dir(tmp_path / "figs"):
            pass
        with atomic.temp_dir(tmp_path, "cache"):
            pass
        assert leftovers(tmp_path) == sorted(live_names)
        assert atomic.clean_stale(tmp_path) == []  # nothing else is stale; the live run's are kept
    finally:
        live.kill()
        live.wait()
    removed = atomic.clean_stale(tmp_path)
    assert sorted(p.name for p in removed) == sorted(live_names)
    assert leftovers(tmp_path) == []


def test_clean_stale_touches_only_routelens_temporaries(tmp_path):
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    gone = int(child.stdout)
    elsewhere = "0123ab" if atomic.HOST != "0123ab" else "ab0123"  # another machine or PID namespace
    keep = [
        ".notes.txt.tmp",
        "routelens-lock",
        ".a.json.routelens-lock",
        f"data-{gone}-x",
        atomic.temp_prefix(".a.json.") + "ab.tmp",  # ours: alive
        f".a.json.routelens-{gone}-{elsewhere}-ab.tmp",
    ]  # its PID means nothing here
    for name in keep:
        (tmp_path / name).write_text("x")
    stale = tmp_path / (
        atomic.temp_prefix(f".routelens-1-{atomic.HOST}-x.json.", pid=gone) + "zz.tmp"
    )  # the last PID counts
    stale.write_text("x")
    assert atomic.owner(stale.name) == (gone, atomic.HOST)
    assert atomic.clean_stale(tmp_path) == [stale]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(keep)


def test_glob_metacharacters_in_a_target_name(tmp_path):
    target = tmp_path / "run[1].json"
    atomic.write_json(target, {"ok": True})
    assert json.loads(target.read_text()) == {"ok": True}
    assert leftovers(tmp_path) == []


def test_the_cache_simulators_spill_of_a_killed_run_is_removed_by_the_next(tmp_path):
    from routelens.simulate.cache import simulate_cache
    from routelens.synthetic import SyntheticSpec, write_synthetic_trace

    trace = tmp_path / "trace"
    write_synthetic_trace(trace, SyntheticSpec(num_docs=3, doc_len=(5, 9), layers=(0,), num_experts=4, top_k=1, seed=0))
    spill = tmp_path / "spill"
    gone = int(
        subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True).stdout
    )
    stale = spill / f"routelens-cache-{gone}-{atomic.HOST}-abc"
    stale.mkdir(parents=True)
    (stale / "layer-0.bin").write_bytes(b"\0" * 64)
    live = spill / f"routelens-cache-{os.getpid()}-{atomic.HOST}-def"  # another simulation still running (here: ours)
    live.mkdir()
    result = simulate_cache(trace, tmp_dir=spill)
    assert result["cache"]  # the simulation ran
    assert sorted(p.name for p in spill.iterdir()) == [live.name]
