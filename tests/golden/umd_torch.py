"""umd_torch: the UMD model and objective of /work/shared/UMD.md in PyTorch, the twin of the C
trainer (trainer/model.c, trainer/objective.c).

Parameter names and layouts match the C model's tensor table, so weights move between them by
name: a C tensor of shape (rows, cols) is the PyTorch parameter of the same name flattened (vectors
have rows = 1 in C). Linear weights are (out, in) as in PyTorch.

The step's randomness is passed in explicitly (timesteps, noise, keep orders, labels after
dropout), so a caller can feed the C trainer's draws or its own:

  rows [0, n_clean) clean: input x0, t = 0, keep_clean visible tokens, loss MSE(x0 | masked)
  rows [n_clean, B) noisy: x_t = sqrt(abar) x0 + sqrt(1 - abar) eps, t = idx + 1, keep_noisy
                            tokens, loss (MSE(eps | visible) + MSE(x0 | masked)) / 2
  total (1 - n_clean/B) L1 + (n_clean/B) L0; a kind of row with every token visible takes both
  of its MSEs over all pixels.

Run with Debian's /usr/bin/python3 (torch 1.13).
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F


def schedule_abar(kind, T):
    """abar[i], i < T, in float64: cosine (Nichol-Dhariwal, s = 0.008, beta <= 0.999) or linear
    (beta from 1e-4 to 0.02)."""
    betas = []
    for i in range(T):
        if kind == "linear":
            beta = 1e-4 + (0.02 - 1e-4) * i / (T - 1) if T > 1 else 1e-4
        else:
            s = 0.008
            a1 = math.cos((i / T + s) / (1 + s) * math.pi / 2)
            a2 = math.cos(((i + 1) / T + s) / (1 + s) * math.pi / 2)
            beta = min(1 - (a2 * a2) / (a1 * a1), 0.999)
        betas.append(beta)
    out, prod = [], 1.0
    for b in betas:
        prod *= 1 - b
        out.append(prod)
    return torch.tensor(out, dtype=torch.float64)


def patchify(img, p):
    """(n, C, H, W) -> (n, L, p*p*C), each patch ordered (pi, pj, c), patches row-major."""
    n, C, H, W = img.shape
    x = img.reshape(n, C, H // p, p, W // p, p)
    x = x.permute(0, 2, 4, 3, 5, 1)  # n, gi, gj, pi, pj, c
    return x.reshape(n, (H // p) * (W // p), p * p * C)


def timestep_embedding(t, w):
    """[sin(t f_i), cos(t f_i)], f_i = exp(-i ln(10000) / (w/2 - 1)); computed in float64."""
    half = w // 2
    i = torch.arange(half, dtype=torch.float64)
    freqs = torch.exp(-i * math.log(10000.0) / (half - 1)) if half > 1 else torch.ones(1, dtype=torch.float64)
    args = t.to(torch.float64)[:, None] * freqs[None]
    return torch.cat([torch.sin(args), torch.cos(args)], dim=1)


class Attention(nn.Module):
    def __init__(self, w, heads):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(w, 3 * w)
        self.proj = nn.Linear(w, w)

    def forward(self, x):
        n, T, w = x.shape
        hd = w // self.heads
        qkv = self.qkv(x).reshape(n, T, 3, self.heads, hd).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(hd))
        att = att.softmax(dim=-1)
        out = (att @ v).transpose(1, 2).reshape(n, T, w)
        return self.proj(out)


class Mlp(nn.Module):
    def __init__(self, w, hidden):
        super().__init__()
        self.fc1 = nn.Linear(w, hidden)
        self.fc2 = nn.Linear(hidden, w)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class Block(nn.Module):
    """x += g1 Attn(LN1(x) (1 + s1) + h1); x += g2 MLP(LN2(x) (1 + s2) + h2)."""

    def __init__(self, w, heads, mlp_ratio):
        super().__init__()
        self.ada = nn.Linear(w, 6 * w)
        self.norm1 = nn.LayerNorm(w, eps=1e-6)
        self.attn = Attention(w, heads)
        self.norm2 = nn.LayerNorm(w, eps=1e-6)
        self.mlp = Mlp(w, mlp_ratio * w)

    def forward(self, x, cond):
        h1, s1, g1, h2, s2, g2 = self.ada(cond)[:, None, :].chunk(6, dim=2)
        x = x + g1 * self.attn(self.norm1(x) * (1 + s1) + h1)
        x = x + g2 * self.mlp(self.norm2(x) * (1 + s2) + h2)
        return x


class Embedder(nn.Module):
    """Linear(w -> 2w), SiLU, Linear(2w -> w)."""

    def __init__(self, w):
        super().__init__()
        self.fc1 = nn.Linear(w, 2 * w)
        self.fc2 = nn.Linear(2 * w, w)

    def forward(self, x):
        return self.fc2(F.silu(self.fc1(x)))


class LabelEmbedder(Embedder):
    def __init__(self, w, classes):
        super().__init__(w)
        self.table = nn.Parameter(torch.zeros(classes + 1, w))


class UMD(nn.Module):
    def __init__(self, C, H, W, patch, width, depth, dec_depth, heads, mlp_ratio=4, cls_tokens=4,
                 classes=0):
        super().__init__()
        self.C, self.H, self.W, self.p, self.w = C, H, W, patch, width
        self.L = (H // patch) * (W // patch)
        self.P = patch * patch * C
        self.ncls = cls_tokens
        self.classes = classes
        w = width
        self.patch_embed = nn.Linear(self.P, w)
        self.pos_embed = nn.Parameter(torch.zeros(self.L, w))
        self.cls_tokens = nn.Parameter(torch.zeros(cls_tokens, w))
        self.t_embed = Embedder(w)
        if classes > 0:
            self.y_embed = LabelEmbedder(w, classes)
        self.enc = nn.ModuleList([Block(w, heads, mlp_ratio) for _ in range(depth)])
        self.enc_norm = nn.LayerNorm(w, eps=1e-6)
        self.mask_token = nn.Parameter(torch.zeros(w))
        self.dec_pos_embed = nn.Parameter(torch.zeros(self.L, w))
        self.dec = nn.ModuleList([Block(w, heads, mlp_ratio) for _ in range(dec_depth)])
        self.dec_norm = nn.LayerNorm(w, eps=1e-6)
        self.final_mod = nn.Linear(w, 2 * w)
        self.head = nn.Linear(w, 2 * self.P)
        self.init_weights()

    def init_weights(self):
        """The C model's initialisation in distribution (not in bits: C draws from Philox)."""
        for name, p in self.named_parameters():
            with torch.no_grad():
                if name.endswith("bias") or name == "cls_tokens":
                    p.zero_()
                elif "norm" in name:
                    p.fill_(1.0)
                elif name in ("pos_embed", "dec_pos_embed"):
                    p.normal_(0, 1 / math.sqrt(self.L))
                elif name.startswith(("t_embed", "y_embed")) or name in ("mask_token", "head.weight"):
                    p.normal_(0, 0.02)
                elif name.endswith("ada.weight") or name == "final_mod.weight":
                    p.zero_()
                else:
                    nn.init.xavier_uniform_(p)

    def decay_names(self):
        """Names AdamW decays: all but biases, cls_tokens and mask_token (UMD.md)."""
        return [n for n, _ in self.named_parameters()
                if not (n.endswith("bias") or n in ("cls_tokens", "mask_token"))]

    def cond(self, t_net, y_used):
        c = self.t_embed(timestep_embedding(t_net, self.w).to(self.head.weight.dtype))
        if self.classes > 0:
            c = c + self.y_embed(self.y_embed.table[y_used])
        return F.silu(c)

    def encode(self, emb, order, keep, cond):
        """emb (n, L, w) patch embeddings + positions; order (n, L) keep orders. Returns the
        encoder output (n, ncls + keep, w)."""
        n = emb.shape[0]
        ids = order[:, :keep].long()
        vis = torch.gather(emb, 1, ids[:, :, None].expand(-1, -1, self.w))
        x = torch.cat([self.cls_tokens[None].expand(n, -1, -1), vis], dim=1)
        for blk in self.enc:
            x = blk(x, cond)
        return self.enc_norm(x)

    def decoder_input(self, enc, order, keep):
        n = enc.shape[0]
        ids = order[:, :keep].long()
        rep = enc[:, : self.ncls].mean(dim=1)
        full = self.mask_token[None, None].expand(n, self.L, self.w)
        full = full.scatter(1, ids[:, :, None].expand(-1, -1, self.w), enc[:, self.ncls:])
        return torch.cat([rep[:, None], full + self.dec_pos_embed[None]], dim=1)

    def forward(self, xin, t_net, y_used, order, n_clean, keep_clean, keep_noisy):
        """xin (B, L, P) network input in patch space. Returns pred (B, L, 2P)."""
        B = xin.shape[0]
        cond = self.cond(t_net, y_used)
        emb = self.patch_embed(xin) + self.pos_embed[None]
        parts = []
        for r0, n, keep in ((0, n_clean, keep_clean), (n_clean, B - n_clean, keep_noisy)):
            if n == 0:
                continue
            enc = self.encode(emb[r0:r0 + n], order[r0:r0 + n], keep, cond[r0:r0 + n])
            parts.append(self.decoder_input(enc, order[r0:r0 + n], keep))
        x = torch.cat(parts, dim=0)
        for blk in self.dec:
            x = blk(x, cond)
        shift, scale = self.final_mod(cond)[:, None, :].chunk(2, dim=2)
        x = self.dec_norm(x[:, 1:]) * (1 + scale) + shift
        return self.head(x)


def keep_counts(L, mask_ratio, mask_ratio_t0):
    return int(math.floor(L * (1 - mask_ratio_t0))), int(math.floor(L * (1 - mask_ratio)))


def umd_loss(model, x0, t_net, eps, order, y_used, n_clean, keep_clean, keep_noisy, abar):
    """The UMD objective for one batch with the given randomness. x0, eps (B, C, H, W); t_net (B)
    (0 clean, idx + 1 noisy); order (B, L); y_used (B) or None. Returns (loss, noisy, clean, eps,
    x0) as tensors (loss differentiable)."""
    B = x0.shape[0]
    dt = model.head.weight.dtype
    p, L, C = model.p, model.L, model.C
    x0p = patchify(x0.to(dt), p)
    epsp = patchify(eps.to(dt), p)
    nn_ = B - n_clean
    xin = x0p
    if nn_ > 0:
        idx = t_net[n_clean:].long() - 1
        sab = abar.sqrt().to(dt)[idx][:, None, None]
        s1m = (1 - abar).sqrt().to(dt)[idx][:, None, None]
        xin = torch.cat([x0p[:n_clean], sab * x0p[n_clean:] + s1m * epsp[n_clean:]], dim=0)
    pred = model(xin, t_net, y_used, order, n_clean, keep_clean, keep_noisy)
    pp = p * p
    pred = pred.reshape(B, L, pp, 2, C)
    x0_pred = pred[:, :, :, 0, :].reshape(B, L, pp * C)
    eps_pred = pred[:, :, :, 1, :].reshape(B, L, pp * C)
    # visible[b, l]: token l is among the first keep of row b's order
    visible = torch.zeros(B, L, dtype=torch.bool)
    if n_clean > 0:
        visible[:n_clean].scatter_(1, order[:n_clean, :keep_clean].long(), True)
    if nn_ > 0:
        visible[n_clean:].scatter_(1, order[n_clean:, :keep_noisy].long(), True)
    zero = torch.zeros((), dtype=dt)

    def mse(a, t, sel):
        d = (a - t) ** 2
        return d[sel].sum() / (sel.sum() * a.shape[-1])

    l_eps = l_x0 = l_noisy = l_clean = zero
    if nn_ > 0:
        vis = visible[n_clean:]
        all_ = keep_noisy >= L
        sel_eps = torch.ones_like(vis) if all_ else vis
        sel_x0 = torch.ones_like(vis) if all_ else ~vis
        l_eps = mse(eps_pred[n_clean:], epsp[n_clean:], sel_eps)
        l_x0 = mse(x0_pred[n_clean:], x0p[n_clean:], sel_x0)
        l_noisy = 0.5 * (l_eps + l_x0)
    if n_clean > 0:
        vis = visible[:n_clean]
        sel = torch.ones_like(vis) if keep_clean >= L else ~vis
        l_clean = mse(x0_pred[:n_clean], x0p[:n_clean], sel)
    loss = (nn_ / B) * l_noisy + (n_clean / B) * l_clean
    return loss, l_noisy, l_clean, l_eps, l_x0


def lr_at(lr, steps, warmup, step):
    """The C schedule (trainer/optim.c): linear warm-up over floor(warmup * steps) steps from
    lr / W, then cosine to 0."""
    warm = min(int(math.floor(warmup * steps)), steps)
    if step < warm:
        return lr * (step + 1) / warm
    rest = steps - warm
    progress = min((step - warm) / rest, 1.0) if rest > 0 else 1.0
    return lr * 0.5 * (1 + math.cos(math.pi * progress))


def make_optimizer(model, lr, beta1, beta2, eps, weight_decay, foreach=None):
    decay = set(model.decay_names())
    groups = [
        {"params": [p for n, p in model.named_parameters() if n in decay], "weight_decay": weight_decay},
        {"params": [p for n, p in model.named_parameters() if n not in decay], "weight_decay": 0.0},
    ]
    kw = {} if foreach is None else {"foreach": foreach}
    return torch.optim.AdamW(groups, lr=lr, betas=(beta1, beta2), eps=eps, **kw)
