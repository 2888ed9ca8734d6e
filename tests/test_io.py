"""Atomic writes (groundsynth.io): both the unnamed-file path and the rename fallback."""

from __future__ import annotations

import errno
import os
import re

import pytest

from groundsynth import io


def _supports_unnamed_files(folder) -> bool:
    """Whether O_TMPFILE and /proc/self/fd work here, found without asking ``io`` (whose
    cached answer an earlier failure may have turned off)."""
    if not hasattr(os, "O_TMPFILE") or not os.path.isdir("/proc/self/fd"):
        return False
    try:
        os.close(os.open(folder, os.O_TMPFILE | os.O_WRONLY, 0o666))
    except OSError:
        return False
    return True


@pytest.fixture
def fresh_proc(tmp_path, monkeypatch):
    """/proc not opened yet, as in a new process; what the test opens is closed after it."""
    if not _supports_unnamed_files(tmp_path):
        pytest.skip("no O_TMPFILE / /proc here")
    monkeypatch.setattr(io, "_PROC", None)
    yield
    if type(io._PROC) is int:
        os.close(io._PROC)


@pytest.fixture(params=["linked", "rename"])
def mode(request, monkeypatch):
    """Run each test with unnamed files (where the OS has them) and with the fallback."""
    if request.param == "rename":
        monkeypatch.setattr(io, "_PROC", False)
    else:
        request.getfixturevalue("fresh_proc")
    return request.param


def _listing(folder):
    return sorted(os.listdir(folder))


def test_write_bytes_creates_parents_and_content(tmp_path, mode):
    dest = tmp_path / "a" / "b" / "x.png"
    io.write_bytes(dest, b"hello")
    assert dest.read_bytes() == b"hello"
    assert _listing(dest.parent) == ["x.png"]


def test_write_bytes_replaces_existing_file(tmp_path, mode):
    dest = tmp_path / "x.bin"
    io.write_bytes(dest, b"first")
    io.write_bytes(dest, b"second, longer")
    assert dest.read_bytes() == b"second, longer"
    assert _listing(tmp_path) == ["x.bin"]


def test_write_bytes_mode_follows_umask(tmp_path, mode):
    old = os.umask(0o027)
    try:
        io.write_bytes(tmp_path / "x.bin", b"data")
    finally:
        os.umask(old)
    assert (tmp_path / "x.bin").stat().st_mode & 0o777 == 0o640
    old = os.umask(0)
    try:
        io.write_bytes(tmp_path / "y.bin", b"data")
    finally:
        os.umask(old)
    assert (tmp_path / "y.bin").stat().st_mode & 0o777 == 0o666  # created 0666, like open()


def test_write_bytes_large_buffer(tmp_path, mode):
    data = os.urandom(3 * 1024 * 1024 + 17)
    io.write_bytes(tmp_path / "big.bin", memoryview(data))
    assert (tmp_path / "big.bin").read_bytes() == data


def test_target_absent_until_complete_and_nothing_left_on_error(tmp_path, mode, monkeypatch):
    dest = tmp_path / "x.bin"
    seen = {}
    real = io._write_all

    def failing(fd, data):
        real(fd, data[:3])
        seen["during"] = _listing(tmp_path)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(io, "_write_all", failing)
    with pytest.raises(OSError, match="No space"):
        io.write_bytes(dest, b"abcdef")
    assert "x.bin" not in seen["during"]  # never visible half-written
    assert _listing(tmp_path) == []  # and no temporary left behind


def test_failed_replacement_keeps_the_old_file(tmp_path, mode, monkeypatch):
    dest = tmp_path / "x.bin"
    io.write_bytes(dest, b"old")

    def failing(fd, data):
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(io, "_write_all", failing)
    with pytest.raises(OSError, match="I/O error"):
        io.write_bytes(dest, b"new")
    assert dest.read_bytes() == b"old"
    assert _listing(tmp_path) == ["x.bin"]


def _spy(monkeypatch, module, name, calls):
    """Record the calls of ``module.name`` (positional arguments and keywords) in ``calls``."""
    real = getattr(module, name)

    def spy(*args, **kwargs):
        calls.append(
            (tuple(os.fspath(a) if isinstance(a, os.PathLike) else a for a in args), kwargs)
        )
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, spy)


def test_unnamed_file_is_linked_into_place_where_supported(tmp_path, monkeypatch, fresh_proc):
    """Where O_TMPFILE works, a new file never exists under a temporary name and is not
    renamed: the unnamed file is linked to its name from /proc/self/fd."""
    links, temps, renames = [], [], []
    _spy(monkeypatch, os, "link", links)
    _spy(monkeypatch, io, "_create_temp", temps)
    _spy(monkeypatch, os, "replace", renames)
    dest = tmp_path / "x.bin"
    io.write_bytes(dest, b"data")
    assert dest.read_bytes() == b"data" and _listing(tmp_path) == ["x.bin"]
    assert temps == [] and renames == []  # not the fallback
    ((src, dst), kwargs) = links[0]
    assert len(links) == 1 and src.startswith("self/fd/") and dst == str(dest)
    assert kwargs["src_dir_fd"] == io._proc_fd()
    # replacing a file: linked under a hidden name, renamed over it; no temporary created
    io.write_bytes(dest, b"new")
    assert dest.read_bytes() == b"new" and _listing(tmp_path) == ["x.bin"]
    assert temps == [] and len(links) == 3  # the refused link to x.bin, then the hidden one
    hidden = links[2][0][1]
    assert re.fullmatch(r"\.x\.bin\.[0-9a-f]{8}\.tmp", os.path.basename(hidden))
    assert os.path.dirname(hidden) == str(tmp_path) and renames == [((hidden, str(dest)), {})]


def test_unsupported_file_system_falls_back_to_rename(tmp_path, monkeypatch):
    if not hasattr(os, "O_TMPFILE"):
        pytest.skip("no O_TMPFILE on this system")
    real_open = os.open

    def no_tmpfile(path, flags, *args, **kwargs):
        if flags & os.O_TMPFILE == os.O_TMPFILE:
            raise OSError(errno.EOPNOTSUPP, "Operation not supported")
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", no_tmpfile)
    links, temps, renames = [], [], []
    _spy(monkeypatch, os, "link", links)
    _spy(monkeypatch, io, "_create_temp", temps)
    _spy(monkeypatch, os, "replace", renames)
    io.write_bytes(tmp_path / "x.bin", b"data")
    assert (tmp_path / "x.bin").read_bytes() == b"data"
    assert _listing(tmp_path) == ["x.bin"]
    assert links == [] and len(temps) == 1  # a hidden temporary file, renamed into place
    ((tmp, dst), _) = renames[0]
    assert len(renames) == 1 and dst == str(tmp_path / "x.bin")
    assert re.fullmatch(r"\.x\.bin\.[0-9a-f]{8}\.tmp", os.path.basename(tmp))


def test_write_json_and_text(tmp_path, mode):
    io.write_json(tmp_path / "d" / "x.json", {"b": [1, 2], "a": tmp_path / "p"})
    expected = '{\n  "b": [\n    1,\n    2\n  ],\n  "a": "%s"\n}\n' % (tmp_path / "p")
    assert (tmp_path / "d" / "x.json").read_text() == expected  # key order kept, str() fallback
    io.write_text(tmp_path / "t.txt", "é\n")
    assert (tmp_path / "t.txt").read_text(encoding="utf-8") == "é\n"


def test_atomic_path_keeps_suffix_and_cleans_up_on_error(tmp_path):
    dest = tmp_path / "sub" / "table.parquet"
    with pytest.raises(RuntimeError), io.atomic_path(dest, suffix=".parquet") as tmp:
        assert tmp.name.startswith(".table.parquet.") and tmp.suffix == ".parquet"
        tmp.write_bytes(b"partial")
        raise RuntimeError("writer failed")
    assert not dest.exists() and _listing(dest.parent) == []
    with io.atomic_path(dest, suffix=".parquet") as tmp:
        tmp.write_bytes(b"complete")
    assert dest.read_bytes() == b"complete" and _listing(dest.parent) == ["table.parquet"]


def test_atomic_open_rejects_read_mode(tmp_path):
    with pytest.raises(ValueError, match="for writing"), io.atomic_open(tmp_path / "x", "r"):
        pass


def test_proc_is_opened_once_as_a_close_on_exec_directory(monkeypatch, fresh_proc):
    import fcntl  # POSIX only, like /proc

    opens = []
    _spy(monkeypatch, os, "open", opens)
    fd = io._proc_fd()
    assert type(fd) is int and fd >= 0 and fd == io._PROC
    assert io._proc_fd() == fd  # cached: opened once per process
    assert opens == [(("/proc", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC), {})]
    assert os.path.samestat(os.fstat(fd), os.stat("/proc"))
    assert fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC


def test_without_proc_unnamed_files_are_not_tried(tmp_path, monkeypatch, fresh_proc):
    real_open, opens, links = os.open, [], []

    def no_proc(path, flags, *args, **kwargs):
        opens.append(path)
        if path == "/proc":
            raise PermissionError(errno.EACCES, "Permission denied", path)
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", no_proc)
    _spy(monkeypatch, os, "link", links)
    assert io._proc_fd() is False and io._proc_fd() is False
    io.write_bytes(tmp_path / "x.bin", b"data")
    assert (tmp_path / "x.bin").read_bytes() == b"data" and _listing(tmp_path) == ["x.bin"]
    assert opens.count("/proc") == 1 and links == []  # asked once; no unnamed file


def test_relative_path_is_written_in_the_working_directory(tmp_path, mode, monkeypatch):
    monkeypatch.chdir(tmp_path)
    io.write_bytes("x.bin", b"first")
    io.write_bytes("x.bin", b"second")
    assert (tmp_path / "x.bin").read_bytes() == b"second"
    assert _listing(tmp_path) == ["x.bin"]


def test_parent_folder_created_concurrently(tmp_path, mode, monkeypatch):
    """Another writer creates the missing folder just after this one found it missing."""
    dest = tmp_path / "new" / "x.bin"
    real_isdir = os.path.isdir

    def racing_isdir(path):
        found = real_isdir(path)
        if not found and os.fspath(path) == str(dest.parent):
            os.mkdir(path)
        return found

    monkeypatch.setattr(os.path, "isdir", racing_isdir)
    io.write_bytes(dest, b"data")
    assert dest.read_bytes() == b"data" and _listing(dest.parent) == ["x.bin"]


def test_name_clash_on_the_hidden_name_draws_again(tmp_path, mode, monkeypatch):
    dest = tmp_path / "x.bin"
    io.write_bytes(dest, b"old")  # replacing: both modes then need a hidden name
    clash = tmp_path / ".x.bin.00000000.tmp"
    clash.write_bytes(b"another writer's")
    tokens = iter(["00000000", "11111111"])
    monkeypatch.setattr(io.secrets, "token_hex", lambda n: next(tokens))
    io.write_bytes(dest, b"new")
    assert dest.read_bytes() == b"new" and clash.read_bytes() == b"another writer's"
    assert _listing(tmp_path) == [".x.bin.00000000.tmp", "x.bin"]


def test_failed_rename_keeps_the_old_file_and_no_hidden_name(tmp_path, mode, monkeypatch):
    dest = tmp_path / "x.bin"
    io.write_bytes(dest, b"old")

    def failing(src, dst):
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(os, "replace", failing)
    with pytest.raises(OSError, match="I/O error"):
        io.write_bytes(dest, b"new")
    assert dest.read_bytes() == b"old" and _listing(tmp_path) == ["x.bin"]


def test_atomic_path_error_after_the_writer_removed_its_file(tmp_path):
    dest = tmp_path / "x.bin"
    with pytest.raises(RuntimeError, match="writer failed"), io.atomic_path(dest) as tmp:
        tmp.unlink()
        raise RuntimeError("writer failed")
    assert _listing(tmp_path) == []


def test_temporary_file_refused_in_an_existing_folder_is_raised(tmp_path, monkeypatch):
    """ENOENT in a folder that exists (it vanished, or a dangling link): raised at once."""
    monkeypatch.setattr(io, "_PROC", False)
    opens = []

    def refused(path, flags, *args, **kwargs):
        opens.append(path)
        raise FileNotFoundError(errno.ENOENT, "No such file or directory", path)

    monkeypatch.setattr(os, "open", refused)
    with pytest.raises(FileNotFoundError):
        io.write_bytes(tmp_path / "x.bin", b"data")
    assert len(opens) == 1


def test_unnamed_file_refused_with_enoent_falls_back(tmp_path, monkeypatch, fresh_proc):
    real_open = os.open

    def refused(path, flags, *args, **kwargs):
        if flags & os.O_TMPFILE == os.O_TMPFILE:
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", path)
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", refused)
    io.write_bytes(tmp_path / "x.bin", b"data")
    assert (tmp_path / "x.bin").read_bytes() == b"data" and _listing(tmp_path) == ["x.bin"]


def _failing_link(monkeypatch, code, calls):
    def link(src, dst, **kwargs):
        calls.append(dst)
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, "link", link)


@pytest.mark.parametrize(
    "code", [errno.EXDEV, errno.EPERM, errno.EOPNOTSUPP, errno.EINVAL, errno.ENOENT]
)
def test_link_refused_falls_back_and_stops_trying(tmp_path, monkeypatch, fresh_proc, code):
    """/proc/self/fd not linkable here (ENOENT: no such entry in a folder that exists)."""
    links = []
    _failing_link(monkeypatch, code, links)
    io.write_bytes(tmp_path / "x.bin", b"data")
    assert (tmp_path / "x.bin").read_bytes() == b"data" and _listing(tmp_path) == ["x.bin"]
    assert len(links) == 1 and io._PROC is False
    io.write_bytes(tmp_path / "y.bin", b"more")  # no second try
    assert (tmp_path / "y.bin").read_bytes() == b"more" and len(links) == 1


@pytest.mark.parametrize("code", [errno.EIO, errno.EACCES, errno.ENOSPC])
def test_link_failure_is_raised(tmp_path, monkeypatch, fresh_proc, code):
    links = []
    _failing_link(monkeypatch, code, links)
    with pytest.raises(OSError) as err:
        io.write_bytes(tmp_path / "x.bin", b"data")
    assert err.value.errno == code and _listing(tmp_path) == []
    assert type(io._PROC) is int  # unnamed files stay on


def test_folder_removed_before_the_link_is_raised(tmp_path, monkeypatch, fresh_proc):
    folder = tmp_path / "sub"
    folder.mkdir()
    real_link = os.link

    def link(src, dst, **kwargs):
        os.rmdir(folder)  # another process removes the (still empty) folder
        return real_link(src, dst, **kwargs)

    monkeypatch.setattr(os, "link", link)
    with pytest.raises(FileNotFoundError):
        io.write_bytes(folder / "x.bin", b"data")
    assert not folder.exists() and type(io._PROC) is int


def test_a_link_renamed_onto_a_link_of_the_same_file_leaves_no_temporary(tmp_path):
    # rename(2) does nothing when both names are links of one file: the temporary must go
    src = tmp_path / "src.png"
    src.write_bytes(b"image")
    dest = tmp_path / "out" / "a.png"
    dest.parent.mkdir()
    os.link(src, dest)
    with io.atomic_path(dest) as tmp:
        tmp.unlink()
        os.link(src, tmp)
    assert _listing(dest.parent) == ["a.png"] and os.path.samefile(src, dest)


def test_an_interrupt_right_after_the_temporary_is_made_removes_it(tmp_path, monkeypatch):
    made, close, create = [], os.close, io._create_temp

    def remember(path, suffix):
        fd, tmp = create(path, suffix)
        made.append(fd)
        return fd, tmp

    def interrupted_close(fd):
        close(fd)
        if fd in made:  # as a cancelled Ray task gets it, before the writer had the path
            raise KeyboardInterrupt

    monkeypatch.setattr(io, "_create_temp", remember)
    monkeypatch.setattr(io.os, "close", interrupted_close)
    with pytest.raises(KeyboardInterrupt), io.atomic_path(tmp_path / "a.png"):
        pass
    monkeypatch.undo()
    assert len(made) == 1 and _listing(tmp_path) == []


def test_remove_temporaries_takes_only_what_writers_leave(tmp_path):
    kept = ["a.png", ".hidden", ".a.png.tmp", "a.png.0123abcd.tmp", ".a.png.0123ABCD.tmp"]
    stale = [".a.png.0123abcd.tmp", ".t.parquet.deadbeef.parquet"]
    for name in kept + stale:
        (tmp_path / name).write_bytes(b"")
    (tmp_path / ".sub.png.00000000.tmp").mkdir()  # a folder is never a writer's temporary
    nested = tmp_path / "sub"
    nested.mkdir()
    (nested / ".b.png.0123abcd.tmp").write_bytes(b"")
    assert io.remove_temporaries(tmp_path, tmp_path / "missing") == 2
    assert _listing(tmp_path) == sorted([*kept, ".sub.png.00000000.tmp", "sub"])
    assert _listing(nested) == [".b.png.0123abcd.tmp"]
    # what the writers of this module name their temporaries is what it removes
    with io.atomic_path(tmp_path / "c.png") as tmp:
        assert io._TEMPORARY.fullmatch(tmp.name)
