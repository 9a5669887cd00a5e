#!/usr/bin/python3
"""Writes the NumPy-made .npy fixtures that tests/test_npy.c reads.

The files are committed so that the tests need no NumPy; rerun this script
(with Debian's /usr/bin/python3 and python3-numpy) only to change them.
Each array's values follow a simple formula that test_npy.c recomputes.
"""
import os

import numpy as np

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data")


def save(name, array, version=None):
    path = os.path.join(DATA, name)
    with open(path, "wb") as f:
        np.lib.format.write_array(f, array, version=version)


def main():
    # values i * 0.5 - 1 for element i (exact in f16 too)
    halves = np.arange(6).reshape(2, 3) * 0.5 - 1
    save("npy_f32.npy", halves.astype("<f4"))
    save("npy_f16.npy", halves.astype("<f2"))
    save("npy_i32.npy", np.arange(-3, 3, dtype="<i4").reshape(3, 2))
    save("npy_i64.npy", np.array([[-2147483648, 2147483647, 0, 5]], dtype="<i8"))
    save("npy_u8.npy", np.arange(250, 256, dtype="u1"))
    save("npy_i8.npy", np.array([-128, -1, 0, 1, 127], dtype="i1"))
    save("npy_bool.npy", np.array([True, False, True]))
    save("npy_scalar.npy", np.array(3.25, dtype="<f4"))
    save("npy_empty.npy", np.zeros((0, 3), dtype="<f4"))
    save("npy_rank6.npy", np.arange(8, dtype="<f4").reshape(1, 2, 1, 2, 1, 2))
    save("npy_v2.npy", np.arange(4, dtype="<f4").reshape(2, 2), version=(2, 0))
    save("npy_v3.npy", np.arange(4, dtype="<f4").reshape(2, 2), version=(3, 0))
    # errors NumPy itself produces: float64 (the NumPy default) and too large i64
    save("npy_f64.npy", np.arange(3, dtype="<f8"))
    save("npy_i64_big.npy", np.array([1, 2, 5000000000], dtype="<i8"))
    save("npy_fortran.npy", np.asfortranarray(np.arange(6, dtype="<f4").reshape(2, 3)))


if __name__ == "__main__":
    main()
