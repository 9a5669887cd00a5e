#!/usr/bin/python3
"""Writes the small .npy files that tests/cli/*.sh feed to `graph run`.

Committed so the CLI tests need no NumPy; rerun with Debian's /usr/bin/python3
only to change them. The graph they go with is written inline in
tests/cli/run_vars.sh: dot = sum(x * w), and the op `step` does w := w + 1.
"""
import os

import numpy as np

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data")


def main():
    x = np.array([1, 2, 3], dtype=np.float32)
    w = np.array([0.5, -1, 2], dtype=np.float32)
    np.save(os.path.join(DATA, "cli_x3.npy"), x)
    np.save(os.path.join(DATA, "cli_w3.npy"), w)
    np.save(os.path.join(DATA, "cli_dot.npy"), np.array((x * w).sum(), dtype=np.float32))
    np.save(os.path.join(DATA, "cli_w3_plus1.npy"), w + np.float32(1))


if __name__ == "__main__":
    main()
