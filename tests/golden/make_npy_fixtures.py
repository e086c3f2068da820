#!/usr/bin/python3
"""Regenerates the numpy-written .npy fixtures that test_npy.cpp reads.

Run with the system Python (numpy installed): /usr/bin/python3 tests/golden/make_npy_fixtures.py
The files are committed so the C++ tests do not need Python; rerun only to change them.
"""
import os

import numpy as np

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "npy")


def main():
    os.makedirs(HERE, exist_ok=True)
    # Values -1.0, -0.5, 0.0, 0.5, 1.0, 1.5: exact in float32, so the test compares with ==.
    matrix = np.arange(6, dtype=np.float32).reshape(2, 3) * np.float32(0.5) - np.float32(1)
    np.save(os.path.join(HERE, "numpy_written_2x3.npy"), matrix)
    np.save(os.path.join(HERE, "numpy_written_scalar.npy"), np.array(np.float32(3.25)))


if __name__ == "__main__":
    main()
