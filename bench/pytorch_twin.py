#!/usr/bin/python3
"""pytorch_twin.py: the baseline of bench/train_cpu: the same UMD model and training step in
PyTorch (tests/golden/umd_torch.py) on the same data, as a researcher would run it on this CPU:
float32, torch.set_num_threads(THREADS) (torch defaults to 1 thread here), AdamW with foreach
updates, the same decay mask, global-norm clipping and lr schedule, and the step's randomness
(timesteps, noise, keep orders) drawn by torch each step.

    /usr/bin/python3 bench/pytorch_twin.py [--steps N] [--warmup N] [--threads N] [--batch B] ...

Prints one JSON line on stdout: img_per_s (from the median step time), median_step_s,
max_rss_kb (this process's peak RSS), steps, threads, torch version.
"""
import argparse
import gzip
import json
import math
import os
import resource
import struct
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "golden"))
import umd_torch as ut  # noqa: E402

FMNIST = "/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"


def load_images(path, limit):
    """IDX images as a uint8 tensor (n, 1, 28, 28), or None when the file is missing."""
    if not os.path.exists(path):
        return None
    with gzip.open(path, "rb") as f:
        data = f.read()
    magic, n, h, w = struct.unpack(">IIII", data[:16])
    if magic != 2051:
        return None
    n = min(n, limit)
    px = torch.frombuffer(bytearray(data[16:16 + n * h * w]), dtype=torch.uint8)
    return px.reshape(n, 1, h, w)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--patch", type=int, default=4)
    ap.add_argument("--width", type=int, default=192)
    ap.add_argument("--depth", type=int, default=6)
    ap.add_argument("--dec-depth", type=int, default=2)
    ap.add_argument("--heads", type=int, default=3)
    ap.add_argument("--r-t0", type=float, default=0.5)
    ap.add_argument("--mask-ratio", type=float, default=0.375)
    ap.add_argument("--mask-ratio-t0", type=float, default=0.75)
    a = ap.parse_args()

    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    B, C, H, W = a.batch, 1, 28, 28
    images = load_images(FMNIST, 60000)
    model = ut.UMD(C, H, W, a.patch, a.width, a.depth, a.dec_depth, a.heads)
    L = model.L
    n_clean = int(math.floor(B * a.r_t0))
    keep_clean, keep_noisy = ut.keep_counts(L, a.mask_ratio, a.mask_ratio_t0)
    abar = ut.schedule_abar("cosine", 1000)
    total = a.warmup + a.steps
    lr = 1.5e-4 * B / 256
    opt = ut.make_optimizer(model, lr, 0.9, 0.95, 1e-8, 0.05, foreach=True)
    times = []
    for k in range(total):
        t0 = time.perf_counter()
        if images is not None:
            idx = torch.randint(0, images.shape[0], (B,))
            x0 = images[idx].float() / 127.5 - 1
        else:
            x0 = torch.rand(B, C, H, W) * 2 - 1
        t_net = torch.randint(1, 1001, (B,))
        t_net[:n_clean] = 0
        eps = torch.randn(B, C, H, W)
        order = torch.argsort(torch.rand(B, L), dim=1)
        for group in opt.param_groups:
            group["lr"] = ut.lr_at(lr, total, 0.05, k)
        opt.zero_grad(set_to_none=True)
        loss = ut.umd_loss(model, x0, t_net, eps, order, None, n_clean, keep_clean, keep_noisy, abar)[0]
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        float(loss)
        times.append(time.perf_counter() - t0)
    timed = sorted(times[a.warmup:])
    med = timed[len(timed) // 2] if len(timed) % 2 else 0.5 * (timed[len(timed) // 2 - 1] + timed[len(timed) // 2])
    print(json.dumps({
        "img_per_s": B / med, "median_step_s": med, "best_step_s": timed[0],
        "max_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "steps": a.steps,
        "threads": torch.get_num_threads(), "torch": torch.__version__, "final_loss": float(loss),
        "data": "fashion-mnist" if images is not None else "random",
    }))


if __name__ == "__main__":
    main()
