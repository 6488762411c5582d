#!/usr/bin/python3
"""make_golden.py: writes tests/golden/umd_tiny.bin, the golden file the C trainer is checked
against (tests/unit/test_model_golden.c). Run by hand with Debian's Python (torch 1.13):

    /usr/bin/python3 tests/golden/make_golden.py [OUT]

It builds a tiny UMD model with labels in PyTorch (umd_torch.py), random weights everywhere (no
zero-initialised tensor, so every gradient is exercised), and 10 steps of inputs with their
randomness (timesteps, noise, keep orders, labels after dropout). In float64 it records the loss
and every gradient at step 0, and the loss of each of 10 training steps with AdamW (decay mask),
global-norm clipping and the warm-up + cosine learning-rate schedule.

File format (little-endian):
    "UMDGOLD1" | u32 version (1) | u32 header length | header JSON | zero pad to 8 | data
The header names every array: {"name", "dtype" ("f32", "f64", "i32"), "shape", "offset" (bytes
from the start of the data)}, and holds the config.
"""
import json
import math
import os
import struct
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import umd_torch as ut  # noqa: E402

CONFIG = {
    "channels": 2, "height": 8, "width_px": 8, "patch": 2, "width": 16, "depth": 2,
    "dec_depth": 1, "heads": 2, "mlp_ratio": 4, "cls_tokens": 4, "classes": 5, "batch": 6,
    "r_t0": 0.5, "mask_ratio": 0.375, "mask_ratio_t0": 0.75, "schedule": "cosine",
    "timesteps": 1000, "steps": 10, "lr": 2e-3, "warmup": 0.2, "weight_decay": 0.05,
    "beta1": 0.9, "beta2": 0.95, "eps": 1e-8, "clip": 0.5, "label_dropout": 0.3,
}


def main():
    out_path = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(os.path.abspath(__file__)), "umd_tiny.bin")
    c = CONFIG
    g = torch.Generator().manual_seed(20240611)
    model = ut.UMD(c["channels"], c["height"], c["width_px"], c["patch"], c["width"], c["depth"],
                   c["dec_depth"], c["heads"], c["mlp_ratio"], c["cls_tokens"], c["classes"])
    # random weights everywhere, stored as float32 values
    weights = {}
    for name, p in model.named_parameters():
        z = torch.randn(p.shape, generator=g)
        if "norm" in name and name.endswith("weight"):
            v = 1 + 0.2 * z
        elif p.dim() == 1:
            v = 0.2 * z
        else:
            v = z * 0.6 / math.sqrt(p.shape[1])
        weights[name] = v.float()
    B, C, H, W = c["batch"], c["channels"], c["height"], c["width_px"]
    L = (H // c["patch"]) * (W // c["patch"])
    n_clean = int(math.floor(B * c["r_t0"]))
    keep_clean, keep_noisy = ut.keep_counts(L, c["mask_ratio"], c["mask_ratio_t0"])
    steps = []
    for k in range(c["steps"]):
        x = (torch.rand(B, C, H, W, generator=g) * 2 - 1).float()
        y = torch.randint(0, c["classes"], (B,), generator=g)
        drop = torch.rand(B, generator=g) < c["label_dropout"]
        y_used = torch.where(drop, torch.full_like(y, c["classes"]), y)
        y_used[:n_clean] = c["classes"]
        t_net = torch.randint(1, c["timesteps"] + 1, (B,), generator=g)
        t_net[:n_clean] = 0
        eps = torch.randn(B, C, H, W, generator=g).float()
        order = torch.argsort(torch.rand(B, L, generator=g), dim=1)
        steps.append({"x": x, "y_used": y_used.int(), "t_net": t_net.int(), "eps": eps, "order": order.int()})

    abar = ut.schedule_abar(c["schedule"], c["timesteps"])
    model = model.double()
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(weights[name].double().reshape(p.shape))

    def run_loss(s):
        return ut.umd_loss(model, s["x"].double(), s["t_net"].long(), s["eps"].double(), s["order"].long(),
                           s["y_used"].long(), n_clean, keep_clean, keep_noisy, abar)

    # step 0: loss and gradients
    model.zero_grad()
    parts = run_loss(steps[0])
    parts[0].backward()
    loss0 = [float(v) for v in parts]
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters()}

    # 10 training steps
    opt = ut.make_optimizer(model, c["lr"], c["beta1"], c["beta2"], c["eps"], c["weight_decay"])
    curve, norms = [], []
    for k in range(c["steps"]):
        for group in opt.param_groups:
            group["lr"] = ut.lr_at(c["lr"], c["steps"], c["warmup"], k)
        opt.zero_grad()
        loss = run_loss(steps[k])[0]
        loss.backward()
        norms.append(float(torch.nn.utils.clip_grad_norm_(model.parameters(), c["clip"])))
        opt.step()
        curve.append(float(loss))
    print("loss0", loss0)
    print("curve", curve)
    print("grad norms", norms, "(clip %g)" % c["clip"])

    arrays, blob = [], bytearray()

    def add(name, t, dtype):
        tt = {"f32": torch.float32, "f64": torch.float64, "i32": torch.int32}[dtype]
        data = t.detach().to(tt).contiguous().numpy().tobytes()
        while len(blob) % 8:
            blob.append(0)
        arrays.append({"name": name, "dtype": dtype, "shape": list(t.shape), "offset": len(blob)})
        blob.extend(data)

    for name, _ in model.named_parameters():
        add("param/" + name, weights[name], "f32")
    for k, s in enumerate(steps):
        for key in ("x", "t_net", "eps", "order", "y_used"):
            add("step%d/%s" % (k, key), s[key], "i32" if key in ("t_net", "order", "y_used") else "f32")
    for name, gr in grads.items():
        add("grad/" + name, gr, "f64")
    add("loss0", torch.tensor(loss0, dtype=torch.float64), "f64")
    add("curve", torch.tensor(curve, dtype=torch.float64), "f64")
    header = json.dumps({"config": c, "n_clean": n_clean, "keep_clean": keep_clean,
                         "keep_noisy": keep_noisy, "arrays": arrays}, sort_keys=True).encode()
    with open(out_path, "wb") as f:
        f.write(b"UMDGOLD1")
        f.write(struct.pack("<II", 1, len(header)))
        f.write(header)
        pad = (-(16 + len(header))) % 8
        f.write(b"\0" * pad)
        f.write(bytes(blob))
    print("wrote %s (%d bytes)" % (out_path, os.path.getsize(out_path)))


if __name__ == "__main__":
    main()
