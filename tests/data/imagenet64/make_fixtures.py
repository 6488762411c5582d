#!/usr/bin/python3
"""Small files in the downsampled ImageNet 64x64 layout (Chrabaszcz et al. 2017) for
tests/unit/test_data_imagenet64.c: train_data_batch_1..10.npz and val_data.npz, each an .npz
holding 'data' uint8 (N, 12288) (per image the R, G, B planes of 64x64, row-major) and 'labels'
1..1000. Batches 1-3 are written by np.savez (stored zip entries), the rest by
np.savez_compressed (deflated), with the labels' integer type varying as the published files'
(a Python list saved as int64) and others would. Image k of batch b has
  pixel (c, y, x) = (37 * b + 11 * k + 5 * c + y + 2 * x) % 256
and label 1 + (97 * b + 13 * k) % 1000 (val: b = 0), which the test recomputes.
Run from this directory: /usr/bin/python3 make_fixtures.py"""
import numpy as np

SIDE = 64


def images(b, n):
    c, y, x = np.meshgrid(np.arange(3), np.arange(SIDE), np.arange(SIDE), indexing="ij")
    out = np.empty((n, 3 * SIDE * SIDE), dtype=np.uint8)
    for k in range(n):
        out[k] = ((37 * b + 11 * k + 5 * c + y + 2 * x) % 256).astype(np.uint8).reshape(-1)
    return out


def labels(b, n):
    return [1 + (97 * b + 13 * k) % 1000 for k in range(n)]


for b in range(1, 11):
    n = 1 if b <= 3 else 2
    lab = labels(b, n)
    if b <= 3:
        np.savez("train_data_batch_%d.npz" % b, data=images(b, n), labels=lab)
    else:
        kind = [np.int64, np.int32, np.uint16][b % 3]
        np.savez_compressed("train_data_batch_%d.npz" % b, data=images(b, n),
                            labels=np.array(lab, dtype=kind), mean=np.zeros(12288))
np.savez_compressed("val_data.npz", data=images(0, 4), labels=labels(0, 4))
