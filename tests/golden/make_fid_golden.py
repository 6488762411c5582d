#!/usr/bin/python3
"""make_fid_golden.py: writes tests/golden/fid_golden.txt, the golden values the C Frechet
distance (trainer/eval/linalg.c) is checked against (tests/unit/test_eval_fid.c). Run by hand with
Debian's Python, which has numpy and scipy:

    /usr/bin/python3 tests/golden/make_fid_golden.py [OUT]

Each case draws two sets of correlated Gaussian features with numpy (fixed seeds), fits their
means and unbiased covariances in float64, and computes the FID the way pytorch-fid and
torch-fidelity's reference do:
    |mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr(scipy.linalg.sqrtm(S1 @ S2))  (real part)

Text format, one number per token:
    umdq-fid-golden 1
    cases K
    then per case: d | mu1 (d) | S1 (d*d, row-major) | mu2 (d) | S2 (d*d) | fid
with every float written as repr() (17 significant digits).
"""
import os
import sys

import numpy as np
from scipy import linalg


def case(rng, d, n1, n2, shift, scale):
    a = rng.standard_normal((d, d)) / np.sqrt(d)
    b = rng.standard_normal((d, d)) / np.sqrt(d)
    x1 = rng.standard_normal((n1, d)) @ a
    x2 = (rng.standard_normal((n2, d)) @ (a + scale * b)) + shift * rng.standard_normal(d)
    mu1, mu2 = x1.mean(0), x2.mean(0)
    s1, s2 = np.cov(x1, rowvar=False), np.cov(x2, rowvar=False)
    covmean, _ = linalg.sqrtm(s1.dot(s2), disp=False)
    covmean = covmean.real
    diff = mu1 - mu2
    fid = diff.dot(diff) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean)
    return d, mu1, s1, mu2, s2, float(fid)


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(os.path.abspath(__file__)), "fid_golden.txt")
    rng = np.random.default_rng(20240617)
    cases = [case(rng, 4, 50, 60, 0.5, 0.3), case(rng, 16, 200, 180, 0.2, 0.5),
             case(rng, 64, 500, 400, 0.1, 0.2), case(rng, 32, 300, 300, 0.0, 0.0)]
    with open(out, "w") as f:
        f.write("umdq-fid-golden 1\ncases %d\n" % len(cases))
        for d, mu1, s1, mu2, s2, fid in cases:
            f.write("%d\n" % d)
            for arr in (mu1, s1, mu2, s2):
                f.write(" ".join(repr(float(v)) for v in np.asarray(arr).ravel()) + "\n")
            f.write(repr(fid) + "\n")


if __name__ == "__main__":
    main()
