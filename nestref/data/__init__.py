"""Bytes in and out: data sets (IDX, npz, MNIST and its checksums) and atomic storage."""
