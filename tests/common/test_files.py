import os
import pathlib
import signal
import stat
import subprocess
import sys
import textwrap
import time

import pytest

from sb3_fedpg.common.files import _host, atomic_write, atomic_write_text, make_folder, stale_temp_files, temp_name

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def _temps(folder):
    return sorted(p.name for p in pathlib.Path(folder).iterdir() if ".tmp" in p.name)


def test_temp_name_pattern(tmp_path):
    name = temp_name(tmp_path / "model.zip")
    assert name.startswith(".model.zip.") and name.endswith(".tmp.zip") and f"-{os.getpid()}." in name
    assert temp_name("config").endswith(".tmp")


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_new_file_gets_open_permissions_not_0600(tmp_path, umask):
    old = os.umask(umask)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
        with open(tmp_path / "b.txt", "w") as f:
            f.write("x")
    finally:
        os.umask(old)
    assert _mode(tmp_path / "a.txt") == _mode(tmp_path / "b.txt") == 0o666 & ~umask


def test_explicit_mode_and_existing_mode_kept(tmp_path):
    atomic_write_text(tmp_path / "a.txt", "x", mode=0o640)
    assert _mode(tmp_path / "a.txt") == 0o640
    os.chmod(tmp_path / "a.txt", 0o600)  # like open(path, "w"), an overwrite keeps the file's mode
    atomic_write_text(tmp_path / "a.txt", "y")
    assert _mode(tmp_path / "a.txt") == 0o600 and (tmp_path / "a.txt").read_text() == "y"


def test_failing_writer_keeps_old_content_and_leaves_nothing(tmp_path):
    target = tmp_path / "m.zip"
    atomic_write_text(target, "old")

    def boom(file):
        assert file.name.endswith(".tmp.zip") and pathlib.Path(file.name).parent == tmp_path
        file.write(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(target, boom)
    assert target.read_text() == "old" and _temps(tmp_path) == []
    with pytest.raises(FileNotFoundError, match="does not exist"):
        atomic_write_text(tmp_path / "missing" / "x", "y")


def test_stale_rule_by_age_and_by_dead_writer(tmp_path):
    target = tmp_path / "m.zip"
    host_part = _host()
    legacy_old = tmp_path / ".m.zip.ab12cd_9.tmp.zip"  # FederatedPG.save's mkstemp name, from a killed writer
    legacy_new = tmp_path / ".m.zip.zz34yy_0.tmp.zip"  # the same, but fresh: maybe a live writer
    legacy_plain = tmp_path / ".m.zip.qq56rr_1.tmp"  # the first files.py's mkstemp name, old
    live = tmp_path / f".m.zip.{host_part}-{os.getpid()}.deadbeef.tmp.zip"  # this process: alive
    dead_pid = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = tmp_path / f".m.zip.{host_part}-{int(dead_pid.stdout)}.0badf00d.tmp.zip"
    other_host = tmp_path / f".m.zip.elsewhere-{int(dead_pid.stdout)}.0badf00d.tmp.zip"
    other_target = tmp_path / ".n.zip.ab12cd_9.tmp.zip"
    unrelated = tmp_path / "notes.tmp.zip"
    for path in (legacy_old, legacy_new, legacy_plain, live, dead, other_host, other_target, unrelated):
        path.write_text("partial")
    hour_ago = time.time() - 3600
    os.utime(legacy_old, (hour_ago, hour_ago))
    os.utime(legacy_plain, (hour_ago, hour_ago))
    os.utime(other_target, (hour_ago, hour_ago))
    assert sorted(stale_temp_files(target)) == sorted([legacy_old, legacy_plain, dead])
    atomic_write_text(target, "new")
    left = set(_temps(tmp_path))
    assert left == {p.name for p in (legacy_new, live, other_host, other_target, unrelated)}
    assert stale_temp_files(target, stale_after=0.0) != []  # everything of the target counts at age 0


WRITER = textwrap.dedent(
    """
    import sys, time
    from sb3_fedpg.common.files import atomic_write

    def slow(f):
        for _ in range(2000):  # 2000 x 64 KiB, slowly: killed long before the end
            f.write(b"x" * 65536)
            f.flush()
            time.sleep(0.01)

    atomic_write(sys.argv[1], slow)
    """
)


def test_sigkill_mid_write_leaves_old_file_and_next_write_cleans_up(tmp_path):
    target = tmp_path / "model.zip"
    atomic_write_text(target, "previous good content")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(target)], env=env)
    try:
        deadline = time.time() + 60
        while time.time() < deadline:  # wait until the writer is well into its temp file
            temps = [p for p in tmp_path.iterdir() if p.name.startswith(".model.zip.")]
            if temps and temps[0].stat().st_size > 4 * 65536:
                break
            time.sleep(0.02)
        else:
            pytest.fail("the writer never started writing")
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=10) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # The kill left a temp file; the target is its old, complete self.
    assert len(_temps(tmp_path)) == 1 and target.read_text() == "previous good content"
    # The next write (another process: its writer is dead, however recent the file) removes it.
    atomic_write_text(target, "next")
    assert _temps(tmp_path) == [] and target.read_text() == "next"


def test_writer_gets_a_binary_file(tmp_path):
    import numpy as np

    atomic_write(tmp_path / "p.npy", lambda f: np.save(f, np.arange(3)))  # as sb3_fedpg.flower.outputs uses it
    np.testing.assert_array_equal(np.load(tmp_path / "p.npy"), np.arange(3))


def test_write_through_a_symbolic_link_keeps_the_link(tmp_path):
    real = tmp_path / "real.txt"
    real.write_text("old")
    link = tmp_path / "link.txt"
    link.symlink_to(real)
    atomic_write_text(link, "new")
    assert link.is_symlink() and real.read_text() == "new" and link.read_text() == "new"


def test_a_legal_long_name_is_written_and_its_stale_temp_files_found(tmp_path):
    target = tmp_path / ("a" * 240 + ".zip")  # 244 bytes: legal, but a temp name with its full name would not be
    atomic_write_text(target, "x")
    assert target.read_text() == "x"
    tmp = tmp_path / temp_name(target)
    assert len(tmp.name.encode()) <= 255
    tmp.write_text("left by a killed writer")
    os.utime(tmp, (0, 0))
    assert stale_temp_files(target) == [tmp]
    assert stale_temp_files(tmp_path / ("a" * 239 + "b.zip")) == []  # another long target's files are not its own


def test_a_file_where_a_folder_is_needed_is_named(tmp_path):
    (tmp_path / "notes.txt").write_text("keep me")
    with pytest.raises(NotADirectoryError, match=r"notes.txt is a file, not a folder"):
        make_folder(tmp_path / "notes.txt" / "sub")
    with pytest.raises(NotADirectoryError, match=r"notes.txt is not a folder"):
        atomic_write_text(tmp_path / "notes.txt" / "model.zip", "x")
    assert (tmp_path / "notes.txt").read_text() == "keep me"
