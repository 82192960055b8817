"""archdsl.cpu: the host's model name and flags, read once, for quantize and the benchmarks."""
import platform
import shutil
import subprocess

import pytest

from archdsl import cpu

TWO_CORES = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 9B45
flags\t\t: fpu sse2 avx2 avx512f avx512_vnni avx512_bf16
bugs\t\t: sysret_ss_attrs

processor\t: 1
model name\t: Other
flags\t\t: fpu
"""


def test_the_first_processor_gives_name_and_flags(tmp_path):
    (tmp_path / "cpuinfo").write_text(TWO_CORES)
    name, flags = cpu.read(str(tmp_path / "cpuinfo"))
    assert name == "AMD EPYC 9B45"
    assert flags == {"fpu", "sse2", "avx2", "avx512f", "avx512_vnni", "avx512_bf16"}
    assert cpu.int8_isa(flags) == "AVX-512 VNNI"


def test_an_unreadable_file_gives_nothing_and_names_fall_back(tmp_path):
    assert cpu.read(str(tmp_path / "missing")) == ("", frozenset())
    assert cpu.read(str(tmp_path)) == ("", frozenset())           # a directory
    (tmp_path / "odd").write_bytes(b"model name : \xff\xfe\nflags : avx2\n")
    assert cpu.read(str(tmp_path / "odd"))[1] == {"avx2"}


@pytest.mark.parametrize("flags,name", [({"amx_int8", "avx512_vnni"}, "AMX"), ({"avx_vnni", "avx2"}, "AVX-VNNI"),
                                        ({"avx2"}, "AVX2 only"), (set(), "other")])
def test_int8_names(flags, name):
    assert cpu.int8_isa(frozenset(flags)) == name


@pytest.mark.skipif(platform.system() != "Linux" or shutil.which("lscpu") is None, reason="needs Linux's lscpu")
def test_the_host_agrees_with_lscpu():
    out = subprocess.run([shutil.which("lscpu")], capture_output=True, text=True, env={"LC_ALL": "C"}).stdout
    lines = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    assert set(lines["Flags"].split()) == cpu.flags()
    assert cpu.isa() == [f for f in cpu.ISA_FLAGS if f in lines["Flags"].split()]
    assert cpu.model_name() == lines["Model name"].strip()
