"""A forked child's result handed to its parent: large arrays mapped from the child's files, not read and copied."""

from __future__ import annotations

import mmap
import os
import shutil

import numpy as np
import pytest

from covseg.engines.inference.handover import (
    HANDOVER_PREFIX,
    OUT_OF_BAND_BYTES,
    clean_dead_handovers,
    handover_dir,
    has_result,
    publish_result,
    read_result,
    write_result,
)


def _base(array: np.ndarray) -> object:
    """The object at the bottom of ``array``'s chain of bases (the memory it views)."""
    while isinstance(array, np.ndarray) and array.base is not None:
        array = array.base
    return array.obj if isinstance(array, memoryview) else array


def test_large_arrays_come_back_mapped_and_writable_and_the_rest_in_band(tmp_path):
    rng = np.random.default_rng(0)
    big = rng.random((8, 64, 1100), dtype=np.float32)  # over OUT_OF_BAND_BYTES
    fortran = np.asfortranarray(rng.integers(0, 3, (300, 70, 60), dtype=np.uint8))
    small = np.arange(10, dtype=np.int16)
    assert big.nbytes >= OUT_OF_BAND_BYTES > small.nbytes and fortran.nbytes >= OUT_OF_BAND_BYTES
    write_result({"big": big, "fortran": fortran, "small": small, "name": "chest"}, tmp_path)
    assert not has_result(tmp_path)  # written, not yet published: a reader sees nothing
    publish_result(tmp_path)
    assert has_result(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["buffer-0", "buffer-1", "result.pickle"]
    got = read_result(tmp_path)
    shutil.rmtree(tmp_path)  # the mappings outlive the files
    np.testing.assert_array_equal(got["big"], big)
    np.testing.assert_array_equal(got["fortran"], fortran)
    assert got["fortran"].flags.f_contiguous and got["name"] == "chest"
    np.testing.assert_array_equal(got["small"], small)
    assert isinstance(_base(got["big"]), mmap.mmap) and isinstance(_base(got["fortran"]), mmap.mmap)
    assert not isinstance(_base(got["small"]), mmap.mmap)
    got["big"][0, 0, 0] = -1.0  # copy-on-write: the parent may change its arrays
    assert got["big"][0, 0, 0] == -1.0


def test_a_result_missing_a_buffer_file_is_an_error_not_a_wrong_result(tmp_path):
    write_result({"big": np.ones((1 << 19,), dtype=np.float32)}, tmp_path)
    publish_result(tmp_path)
    os.remove(tmp_path / "buffer-0")
    with pytest.raises(Exception):  # noqa: B017 - pickle says "not enough out-of-band buffers"
        read_result(tmp_path)


def test_the_handover_uses_shared_memory_only_where_it_has_room(tmp_path):
    assert handover_dir(tmp_path / "missing") is None
    assert handover_dir(tmp_path, room=0) == str(tmp_path)
    assert handover_dir(tmp_path, room=1 << 62) is None  # e.g. a container's 64 MB /dev/shm: the temp folder


def test_hand_over_folders_of_dead_processes_are_removed_and_others_kept(tmp_path):
    import subprocess
    import sys

    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()  # its pid now names no process
    dead = tmp_path / f"{HANDOVER_PREFIX}{ended.pid}-a"
    mine = tmp_path / f"{HANDOVER_PREFIX}{os.getpid()}-b"
    odd = tmp_path / f"{HANDOVER_PREFIX}x-c"
    for folder in (dead, mine, odd):
        folder.mkdir()
        (folder / "buffer-0").write_bytes(b"0" * 10)
    clean_dead_handovers(tmp_path)
    assert not dead.exists() and mine.exists() and odd.exists()
