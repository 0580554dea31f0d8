#!/usr/bin/python3
"""Write the checked-in seed corpora of tests/fuzz/corpus/<name>/ (text, tar, image
and IDX seeds; the HDF5 seeds come from gen_h5_seeds.c). Deterministic; run from
the repository root: /usr/bin/python3 tests/fuzz/make_seeds.py."""
import glob, gzip, io, os, struct, tarfile, zlib

import numpy as np
from PIL import Image

ROOT = "tests/fuzz/corpus"


def put(name, fname, data):
    d = os.path.join(ROOT, name)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, fname), "wb") as f:
        f.write(data)


def tar_bytes(entries, fmt=tarfile.USTAR_FORMAT, pax_headers=None):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt, pax_headers=pax_headers or {}) as t:
        for name, data, kind in entries:
            info = tarfile.TarInfo(name)
            info.mtime = 0
            if kind == "dir":
                info.type = tarfile.DIRTYPE
                t.addfile(info)
            elif kind == "sym":
                info.type = tarfile.SYMTYPE
                info.linkname = data.decode()
                t.addfile(info)
            else:
                info.size = len(data)
                t.addfile(info, io.BytesIO(data))
    return buf.getvalue()


# ---- images -------------------------------------------------------------------------
rng = np.random.default_rng(0)


def png_chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_bytes(w, h, color_type, depth, interlace=0, palette=None, trns=None):
    """A PNG written by hand, so every colour type and bit depth is covered."""
    chans = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}[color_type]
    bits = chans * depth
    def raw_rows(rw, rh):
        out = b""
        for _ in range(rh):
            nbytes = (rw * bits + 7) // 8
            out += b"\x00" + bytes(rng.integers(0, 256, nbytes, dtype=np.uint8))
        return out
    if interlace:
        passes = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]
        raw = b""
        for x0, y0, dx, dy in passes:
            pw, ph = (w - x0 + dx - 1) // dx, (h - y0 + dy - 1) // dy
            if pw > 0 and ph > 0:
                raw += raw_rows(pw, ph)
    else:
        raw = raw_rows(w, h)
    if color_type == 3:  # palette indices must stay below the palette's length
        raw = bytes(b & 0x03 if i % (1 + (w * bits + 7) // 8) else b for i, b in enumerate(raw)) if not interlace else raw
    out = b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, depth, color_type, 0, 0, interlace))
    if palette is not None:
        out += png_chunk(b"PLTE", palette)
    if trns is not None:
        out += png_chunk(b"tRNS", trns)
    out += png_chunk(b"IDAT", zlib.compress(raw, 9)) + png_chunk(b"IEND", b"")
    return out


PARAMS = [bytes([1, 7, 0, 0, 200, 200, 1, 0]), bytes([0, 0, 50, 60, 150, 140, 2, 0]),
          bytes([3, 3, 10, 10, 90, 90, 3, 0]), bytes([5, 1, 190, 0, 255, 255, 4, 0])]

pngs = []
for ct, depths in [(0, [1, 2, 4, 8, 16]), (2, [8, 16]), (4, [8, 16]), (6, [8, 16])]:
    for d in depths:
        pngs.append((f"ct{ct}_d{d}", png_bytes(5, 4, ct, d)))
pal = bytes(rng.integers(0, 256, 12, dtype=np.uint8))
for d in [1, 2, 4, 8]:
    pngs.append((f"ct3_d{d}", png_bytes(5, 4, 3, d, palette=pal, trns=b"\x00\x80")))
pngs.append(("ct2_d8_interlaced", png_bytes(9, 9, 2, 8, interlace=1)))
pngs.append(("ct0_d16_interlaced", png_bytes(9, 9, 0, 16, interlace=1)))
pngs.append(("ct0_d8_trns", png_bytes(5, 4, 0, 8, trns=b"\x00\x10")))
pngs.append(("ct6_d8_interlaced", png_bytes(10, 3, 6, 8, interlace=1)))
for i, (n, b) in enumerate(pngs):
    put("png", f"{n}.png", PARAMS[i % len(PARAMS)] + b)

jpegs = []
for mode, extra in [("L", {}), ("RGB", {"subsampling": 2}), ("RGB", {"subsampling": 0}),
                    ("RGB", {"progressive": True}), ("CMYK", {}), ("RGB", {"subsampling": 1, "optimize": True})]:
    arr = rng.integers(0, 256, (19, 23, {"L": 1, "RGB": 3, "CMYK": 4}[mode]), dtype=np.uint8)
    im = Image.fromarray(arr[:, :, 0] if mode == "L" else arr, "L" if mode == "L" else mode if mode != "CMYK" else "CMYK")
    b = io.BytesIO()
    im.save(b, "JPEG", quality=50, **extra)
    jpegs.append((f"{mode.lower()}_{'_'.join(f'{k}{v}' for k, v in extra.items()) or 'plain'}", b.getvalue()))
# restart markers (libjpeg's own writer: -restart)
b = io.BytesIO()
Image.fromarray(rng.integers(0, 256, (40, 33, 3), dtype=np.uint8), "RGB").save(b, "JPEG", quality=30)
jpegs.append(("rgb_40x33", b.getvalue()))
photo = sorted(glob.glob("tests/fixtures/photos/*/*.JPEG"))[0]
im = Image.open(photo).convert("RGB").resize((48, 36))
b = io.BytesIO()
im.save(b, "JPEG", quality=70)
jpegs.append(("photo_48x36", b.getvalue()))
for i, (n, b) in enumerate(jpegs):
    put("jpeg", f"{n}.jpg", PARAMS[i % len(PARAMS)] + b)

# ---- tar ------------------------------------------------------------------------------
small_png = pngs[3][1]
small_jpg = jpegs[0][1]
tars = {
    "ustar": tar_bytes([("a/x.txt", b"hello", "file"), ("a", b"", "dir"), ("b.png", small_png[:40], "file")]),
    "ustar_prefix": tar_bytes([("d" * 120 + "/" + "n" * 90 + ".cls", b"3\n", "file")]),
    "pax": tar_bytes([("p" * 150 + "/long name with spaces.cls", b"7", "file"), ("link", b"target", "sym")],
                     fmt=tarfile.PAX_FORMAT, pax_headers={"comment": "global"}),
    "gnu_long": tar_bytes([("g" * 130 + ".cls", b"1", "file"), ("L" * 120, b"", "dir")], fmt=tarfile.GNU_FORMAT),
    "empty": tar_bytes([]),
}
tars["truncated_header"] = tars["ustar"][:700]
tars["truncated_data"] = tars["ustar"][:512 + 3]
for n, b in tars.items():
    put("tar", f"{n}.tar", b"\x00" + b)
put("tar", "ustar_gz.tar", b"\x01" + tars["pax"])
put("tar", "gnu_gz_cut.tar", b"\x0b" + tars["gnu_long"])
put("tar", "gzip_file.tgz", b"\x00" + gzip.compress(tars["ustar"], mtime=0))

# ---- webdataset -----------------------------------------------------------------------
wds = {
    "labelled": tar_bytes([("s/000000.png", small_png, "file"), ("s/000000.cls", b"3", "file"),
                           ("s/000001.jpg", small_jpg, "file"), ("s/000001.cls", b" 12 \n", "file")]),
    "parts": tar_bytes([("k.seg.png", small_png, "file"), ("k.json", b"{}", "file"), ("k.cls", b"x", "file"),
                        ("m.JPEG", small_jpg, "file"), ("n.cls", b"2147483647", "file")], fmt=tarfile.PAX_FORMAT),
    "dup_keys": tar_bytes([("a.png", small_png, "file"), ("b.cls", b"1", "file"), ("a.cls", b"2", "file")]),
}
wds["truncated"] = wds["labelled"][:1500]
for i, (n, b) in enumerate(wds.items()):
    put("webdataset", f"{n}.tar", bytes([i % 4]) + b)

# ---- config ---------------------------------------------------------------------------
for p in sorted(glob.glob("configs/*.yaml"))[:4]:
    put("config", os.path.basename(p), open(p, "rb").read())
put("config", "overrides.txt", b"img_size: 32\npatch_size: 8\n%%\n--lr=1e-3\n--mean=0.5,0.5,0.5\n--std=[0.2, 0.2, 0.2]\n"
    b"--in-chans=3\n--qkv_bias\n%%\ndata/x-{000..012}.tar,{a,b{c,d}}.tgz other-{9..11}.tar\n")
put("config", "shards_only.txt", b"{}\n%%\n%%\nd/{00..3}/{a,b}-{0000..0002}.tar.gz, {x..y} {1..2}{3..4}\n")
put("config", "bad_list.yaml", b"mean: [0.5, 0.6\nstd: {a: 1}\n- x\n")

# ---- IDX (images part, separator, labels part) -------------------------------------------
def idx3(n, r, c):
    return struct.pack(">IIII", 0x803, n, r, c) + bytes(rng.integers(0, 256, n * r * c, dtype=np.uint8))
def idx1(n, top=10):
    return struct.pack(">II", 0x801, n) + bytes(rng.integers(0, top, n, dtype=np.uint8))
SEP = b"%%IDX%%"
put("idx", "plain", idx3(3, 4, 5) + SEP + idx1(3))
put("idx", "gzipped", gzip.compress(idx3(2, 28, 28), mtime=0) + SEP + gzip.compress(idx1(2), mtime=0))
put("idx", "bad_label", idx3(2, 2, 2) + SEP + idx1(2, 200))
put("idx", "truncated", idx3(4, 3, 3)[:30] + SEP + idx1(4))

# ---- list files -------------------------------------------------------------------------
put("list", "labels.txt", b"# comment\nimg/a.jpg 0\n  img/b b.png\t12\n/abs/c.jpeg\n\nrel/d.png 3   \n")
put("list", "crlf.txt", b"a.png 1\r\nb.png\r\n")
put("list", "bad_label.txt", b"a.png -1\n")
# flat-folder trees: one relative path per line, created under a scratch folder, then walked
put("list", "tree.txt", b"%%TREE%%\nx/a.png\nx/y/b.JPG\nz.jpeg\nnotes.txt\nx/y/z/c.png\n")
print("seeds written under", ROOT)
