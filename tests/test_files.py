"""The one rule every command reads spec files by (archdsl/files.py), through `fmt`, `check` and imports."""
from __future__ import annotations

import os
import time

import pytest

from archdsl import ArchError
from archdsl.cli import main
from archdsl.files import MAX_SOURCE_BYTES, read_spec, shown

GOOD = "model m() {\n    input x: [3, 8, 8]\n    output x -> relu\n}\n"


def cli(capsys, *argv):
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def refused(capsys, path, command="fmt") -> str:
    rc, out, err = cli(capsys, command, path)
    assert rc == 1 and out == ""
    return err.strip()


@pytest.mark.parametrize("command", ["fmt", "check"])
def test_a_link_named_arch_to_another_kind_of_file_is_not_read(capsys, short_tmp_path, command):
    secret = short_tmp_path / "secret.txt"
    secret.write_text("root:x:0:0:the first line\n")
    link = short_tmp_path / "x.arch"
    link.symlink_to(secret)
    err = refused(capsys, link, command)
    assert err == (f"{link}: error: The spec file '{link}' is a symbolic link to '{secret}', which is not an .arch "
                   "file; the file was not read.")
    assert "root:x" not in err


def test_a_link_to_an_arch_file_is_followed(capsys, short_tmp_path):
    real = short_tmp_path / "real.arch"
    real.write_text(GOOD)
    link = short_tmp_path / "link.arch"
    link.symlink_to(real)
    rc, out, _ = cli(capsys, "fmt", link)
    assert rc == 0 and out == GOOD


@pytest.mark.parametrize("command", ["fmt", "check"])
def test_a_link_loop_is_a_diagnostic(capsys, short_tmp_path, command):
    a, b = short_tmp_path / "a.arch", short_tmp_path / "b.arch"
    a.symlink_to(b)
    b.symlink_to(a)
    assert refused(capsys, a, command) == f"{a}: error: The spec file '{a}' is a symbolic link loop."


def test_directories_and_fifos_are_not_read(capsys, short_tmp_path):
    d = short_tmp_path / "d.arch"
    d.mkdir()
    assert refused(capsys, d) == f"{d}: error: '{d}' is a directory; a spec must be a regular file, and this one was " \
                                 "not read."
    fifo = short_tmp_path / "f.arch"
    os.mkfifo(fifo)
    assert refused(capsys, fifo) == (f"{fifo}: error: '{fifo}' is not a regular file (a FIFO, device or socket); a "
                                     "spec must be a regular file, and this one was not read.")


def test_the_size_is_checked_before_reading(capsys, short_tmp_path):
    big = short_tmp_path / "big.arch"
    with open(big, "wb") as f:
        f.truncate(300 * 2**20)                 # 300 MB, sparse: costs nothing unless read
    start = time.perf_counter()
    err = refused(capsys, big)
    assert time.perf_counter() - start < 1.0
    assert err == (f"{big}: error: The spec file '{big}' is larger than {MAX_SOURCE_BYTES} bytes; split it into "
                   "imported files.")


@pytest.mark.parametrize("command", ["fmt", "check"])
def test_non_utf8_names_the_file_and_the_line(capsys, short_tmp_path, command):
    bad = short_tmp_path / "bad.arch"
    bad.write_bytes(b"model m() {\n  input x: [3]  # caf\xe9\n}\n")
    assert refused(capsys, bad, command) == (f"{bad}: error: The spec file '{bad}' is not UTF-8 text (an invalid "
                                             "byte on line 2); save it as UTF-8.")


@pytest.mark.skipif(not hasattr(os, "getuid") or os.getuid() != 0, reason="needs root to own a file as another user")
def test_a_hard_link_to_another_users_file_is_refused(capsys, short_tmp_path):
    theirs = short_tmp_path / "theirs.txt"
    theirs.write_text(GOOD)
    os.chown(theirs, 65534, 65534)
    link = short_tmp_path / "mine.arch"
    os.link(theirs, link)
    assert refused(capsys, link) == (f"{link}: error: The spec file '{link}' is a hard link to a file another user "
                                     "owns; copy it instead of linking it.")


def test_the_api_raises_the_typed_error(short_tmp_path):
    with pytest.raises(ArchError) as err:
        read_spec(short_tmp_path / "none.arch")
    assert str(err.value) == f"{short_tmp_path / 'none.arch'}: error: The spec file '{short_tmp_path / 'none.arch'}' does not exist."


def test_messages_shorten_long_file_names_and_write_nul_out():
    assert shown("a" * 120) == "a" * 120
    assert shown("a" * 40 + "b" * 41 + "c" * 40) == "a" * 40 + "..." + "b" * 37 + "c" * 40
    deep = "/home/someone/projects/" + "nested/" * 20 + "resnet_variant_with_a_long_name.arch"
    assert shown(deep) == ("/home/someone/projects/nested/nested/nes"
                           "...ested/nested/nested/nested/nested/nested/resnet_variant_with_a_long_name.arch")
    assert shown("x\0y.arch") == "x\\0y.arch"


def test_a_long_name_keeps_its_file_name_in_messages(short_tmp_path):
    long = short_tmp_path / ("d" * 100) / "my_model.ar"
    with pytest.raises(ArchError) as err:
        read_spec(long)
    name = shown(long)
    assert name.startswith(str(short_tmp_path)) and name.endswith("ddd/my_model.ar") and "..." in name
    assert str(err.value) == (f"{name}: error: Only .arch spec files can be compiled, and '{name}' is not one; "
                              "the file was not read.")
