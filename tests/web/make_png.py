"""make_png.py OUT [SEED]: write a small sample-grid PNG (8x8 tiles of 28x28 gray images, with
a 2-pixel gutter) for the dashboard test, with the standard library only."""
import random, struct, sys, zlib

out = sys.argv[1]
rng = random.Random(int(sys.argv[2]) if len(sys.argv) > 2 else 0)
tile, n, gap = 28, 8, 2
size = n * tile + (n + 1) * gap
pix = [[255] * size for _ in range(size)]
for ty in range(n):
    for tx in range(n):
        cx, cy, r = rng.uniform(9, 19), rng.uniform(9, 19), rng.uniform(4, 10)
        for y in range(tile):
            for x in range(tile):
                d = ((x - cx) ** 2 + (y - cy) ** 2) ** 0.5
                v = max(0.0, min(1.0, 1.2 - abs(d - r) / 2.5)) * rng.uniform(0.8, 1.0)
                pix[gap + ty * (tile + gap) + y][gap + tx * (tile + gap) + x] = int(255 * (1 - v) * 0.9 + 20)
raw = b"".join(b"\x00" + bytes(row) for row in pix)

def chunk(kind, data):
    c = struct.pack(">I", len(data)) + kind + data
    return c + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

with open(out, "wb") as f:
    f.write(b"\x89PNG\r\n\x1a\n")
    f.write(chunk(b"IHDR", struct.pack(">IIBBBBB", size, size, 8, 0, 0, 0, 0)))
    f.write(chunk(b"IDAT", zlib.compress(raw, 9)))
    f.write(chunk(b"IEND", b""))
