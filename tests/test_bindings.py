"""The ctypes mirrors of C structs check their layout against the library's
sizeof/offsetof table (trainer/layouts.c) on every load: a mirror whose field
is out of place, or a struct that grew in C, fails loudly."""
import ctypes
import pytest

import cbind
import test_eval_export, test_kernels, test_loader, test_objective_twin  # noqa: F401 (they register mirrors)


def test_every_mirror_matches_its_c_struct():
    lib = ctypes.CDLL(cbind.LIB_PATH)
    names = set(cbind.MIRRORS.values())
    assert {"VitConfig", "AdamW", "ObjectiveConfig", "ObjectiveLosses", "CheckpointState", "RowSet", "Batch",
            "ViewParams"} <= names, names
    cbind.check_layouts(lib)


def test_a_wrong_mirror_fails_loudly():
    lib = ctypes.CDLL(cbind.LIB_PATH)

    class Swapped(ctypes.Structure):  # RowSet with two fields swapped
        _fields_ = [("index", ctypes.c_void_p), ("start", ctypes.c_void_p), ("total", ctypes.c_int)]

    class Short(ctypes.Structure):  # Batch without its last fields
        _fields_ = [("n", ctypes.c_int), ("channels", ctypes.c_int)]

    for cls, c_name, message in ((Swapped, "RowSet", "Swapped.index at 0, RowSet.index at 8"),
                                 (Short, "Batch", "Short mirrors Batch in 8 bytes")):
        saved = dict(cbind.MIRRORS)
        cbind.MIRRORS.clear()
        cbind.MIRRORS[cls] = c_name
        try:
            with pytest.raises(AssertionError, match=message):
                cbind.check_layouts(lib)
        finally:
            cbind.MIRRORS.clear()
            cbind.MIRRORS.update(saved)
