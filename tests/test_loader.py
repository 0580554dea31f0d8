"""Data loader checks against Python's own tools: tarfile-written PAX/GNU
shards, torchvision's ImageFolder class order, and PIL's resize for a fixed
crop box (the resampling must match PIL bit for bit: tolerance 0 levels)."""
import ctypes, io, os, tarfile
import numpy as np
import pytest
from conftest import require

import cbind

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PHOTOS = os.path.join(ROOT, "tests", "fixtures", "photos")  # six real ImageNet JPEGs (fixtures/README.md)


def photo_classes():
    return sorted(d for d in os.listdir(PHOTOS) if os.path.isdir(os.path.join(PHOTOS, d)))


@cbind.mirrors("Batch")
class Batch(ctypes.Structure):
    _fields_ = [("n", ctypes.c_int), ("channels", ctypes.c_int), ("height", ctypes.c_int), ("width", ctypes.c_int),
                ("view1", ctypes.POINTER(ctypes.c_float)), ("view2", ctypes.POINTER(ctypes.c_float)),
                ("clean1", ctypes.POINTER(ctypes.c_float)), ("clean2", ctypes.POINTER(ctypes.c_float)),
                ("labels", ctypes.POINTER(ctypes.c_int32)), ("epoch", ctypes.c_int64), ("step", ctypes.c_int64)]


class PyLoader:
    """The C loader through ctypes; options by name (loader_config_set)."""

    def __init__(self, lib, **opts):
        self.lib = lib
        lib.loader_open.restype = ctypes.c_void_p
        lib.loader_class_name.restype = ctypes.c_char_p
        lib.loader_num_samples.restype = ctypes.c_int64
        self.cfg = ctypes.create_string_buffer(4096)  # larger than LoaderConfig
        lib.loader_config_defaults(self.cfg)
        self.keep = []
        err = ctypes.create_string_buffer(256)
        for k, v in opts.items():
            val = str(v).encode()
            self.keep.append(val)
            assert lib.loader_config_set(self.cfg, k.encode(), val, err, 256) == 0, err.value
        self.h = ctypes.c_void_p(lib.loader_open(self.cfg))

    def epoch(self):
        """Every batch of one eval epoch: (clean1 [N,C,H,W], labels [N])."""
        b, imgs, labels = Batch(), [], []
        while self.lib.loader_next(self.h, ctypes.byref(b)):
            shape = (b.n, b.channels, b.height, b.width)
            imgs.append(np.ctypeslib.as_array(b.clean1, shape=shape).copy())
            labels.append(np.ctypeslib.as_array(b.labels, shape=(b.n,)).copy())
        return np.concatenate(imgs), np.concatenate(labels)

    def class_names(self):
        return [self.lib.loader_class_name(self.h, i).decode() for i in range(self.lib.loader_num_classes(self.h))]

    def close(self):
        self.lib.loader_close(self.h)


def png_bytes(arr):
    require("PIL", "python3-pil"); from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize("fmt", [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT])
def test_tarfile_written_shards_with_long_names(lib, tmp_path, fmt):
    rng = np.random.default_rng(0)
    want = []
    path = tmp_path / "pax-000000.tar"
    with tarfile.open(path, "w", format=fmt) as tf:
        d = tarfile.TarInfo("some/dir")
        d.type = tarfile.DIRTYPE
        tf.addfile(d)
        for i in range(5):
            img = rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)
            key = "some/dir/" + "very_long_directory_name_" * 6 + f"/sample.{i:03d}.tail_" + "x" * 80
            key = key.replace(".", "_", 1) if i % 2 else key  # keys with and without inner dots
            base = key.split("/")[-1].split(".")[0]
            key = "/".join(key.split("/")[:-1] + [base])
            for ext, data in ((".png", png_bytes(img)), (".cls", str(i + 3).encode()), (".json", b"{}")):
                info = tarfile.TarInfo(key + ext)
                info.size = len(data)
                info.pax_headers = {"comment": "é" * 10} if fmt == tarfile.PAX_FORMAT else {}
                tf.addfile(info, io.BytesIO(data))
            want.append(img)
    assert len(tarfile.open(path).getnames()[1].split("/")[-2]) > 100
    L = PyLoader(lib, shards=str(path), mode="eval", batch_size=2, image_size=20, eval_resize=20, num_threads=2)
    imgs, labels = L.epoch()
    L.close()
    assert list(labels) == [3, 4, 5, 6, 7]
    got = np.rint(imgs.transpose(0, 2, 3, 1) * 255).astype(np.uint8)
    assert np.array_equal(got, np.stack(want))


def test_image_folder_class_order_matches_torchvision(lib, tmp_path):
    require("torchvision", "python3-torchvision"); import torchvision.datasets as datasets
    names = ["b", "B", "a", "a b", "a-b", "a_b", "Z9", "z10", "z2", "é", "10", "9"]
    rng = np.random.default_rng(1)
    for k, n in enumerate(names):
        os.makedirs(tmp_path / n / "sub")
        for j in range(2):
            img = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
            (tmp_path / n / f"img{j}.png").write_bytes(png_bytes(img))
        (tmp_path / n / "sub" / "deep.png").write_bytes(png_bytes(img))
        (tmp_path / n / "notes.txt").write_text("not an image")
    tv = datasets.ImageFolder(str(tmp_path))
    L = PyLoader(lib, image_folder=str(tmp_path), mode="eval", batch_size=5, image_size=8, eval_resize=8)
    assert L.class_names() == tv.classes
    _, labels = L.epoch()
    L.close()
    assert list(labels) == tv.targets


def test_image_folder_empty_class_is_an_error_as_in_torchvision(tmp_path):
    """A class folder without images (here a stray .ipynb_checkpoints) would shift every later
    label: torchvision refuses it, and so do we, naming the folder."""
    import subprocess
    require("torchvision", "python3-torchvision"); import torchvision.datasets as datasets
    for n in ("cat", "dog"):
        os.makedirs(tmp_path / n)
        (tmp_path / n / "a.png").write_bytes(png_bytes(np.zeros((8, 8, 3), np.uint8)))
    os.makedirs(tmp_path / ".ipynb_checkpoints")
    with pytest.raises(FileNotFoundError):
        datasets.ImageFolder(str(tmp_path))
    p = subprocess.run([os.path.join(ROOT, "build/bin/build_tokenizer"), "--image-folder", str(tmp_path),
                        "--image-size", "8", "--patch", "4", "--k", "2", "--out", str(tmp_path / "t.h5")],
                       capture_output=True, text=True)
    assert p.returncode != 0 and "class folder '.ipynb_checkpoints' holds no" in p.stderr, p.stderr


def resample(lib, img, box, size, interp):
    """Our resample_u8 on the crop box of img (H, W, C uint8)."""
    h, w, c = img.shape
    img = np.ascontiguousarray(img)
    out = np.zeros((size[1], size[0], c), np.uint8)
    scratch = ctypes.create_string_buffer(256)
    d = ctypes.c_double
    lib.resample_u8(img.ctypes.data_as(ctypes.c_void_p), w, h, c, ctypes.c_size_t(w * c), d(0), d(0), d(w), d(h),
                    size[0], size[1], 0, 0, size[0], size[1], {"bilinear": 0, "bicubic": 1}[interp],
                    out.ctypes.data_as(ctypes.c_void_p), scratch)
    lib.resample_scratch_free(scratch)
    return out


@pytest.mark.parametrize("interp", ["bilinear", "bicubic"])
def test_resized_crop_matches_torchvision(lib, interp):
    """A fixed crop box, resized by us and by torchvision's resized_crop on PIL
    images: antialiased downscaling and upscaling; tolerance 0 levels."""
    require("PIL", "python3-pil"); from PIL import Image
    require("torchvision", "python3-torchvision"); import torchvision.transforms.functional as F
    import torchvision.transforms as T
    mode = getattr(T.InterpolationMode, interp.upper())
    wnid = photo_classes()[3]
    photo = Image.open(os.path.join(PHOTOS, wnid, sorted(os.listdir(os.path.join(PHOTOS, wnid)))[0])).convert("RGB")
    for img in (photo, photo.convert("L")):
        arr = np.asarray(img)
        arr = arr[..., None] if arr.ndim == 2 else arr
        for top, left, h, w, size in ((10, 20, 300, 217, (224, 224)), (5, 7, 60, 90, (224, 224)), (0, 0, 100, 100, (28, 28)),
                                      (33, 41, 123, 211, (224, 160))):
            ref = np.asarray(F.resized_crop(img, top, left, h, w, [size[1], size[0]], mode))
            ref = ref[..., None] if ref.ndim == 2 else ref
            ours = resample(lib, arr[top:top + h, left:left + w], None, size, interp)
            diff = np.abs(ours.astype(int) - ref.astype(int)).max()
            assert diff == 0, f"{interp} box {(top, left, h, w)} -> {size}: max diff {diff}"


def test_fashion_mnist_shards_round_trip(lib, tmp_path):
    """make_shards on the Debian IDX files; pixels and labels come back exactly."""
    import gzip, subprocess
    src = "/usr/share/datasets/fashion-mnist"
    out = tmp_path / "fm" / "test"
    subprocess.run([os.path.join(ROOT, "build/bin/make_shards"), "--fashion-mnist", src, "--split", "test", "--out", str(out),
                    "--per-shard", "3000"], check=True, capture_output=True)
    with gzip.open(f"{src}/t10k-images-idx3-ubyte.gz") as f:
        images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    with gzip.open(f"{src}/t10k-labels-idx1-ubyte.gz") as f:
        labels = np.frombuffer(f.read(), np.uint8, offset=8)
    L = PyLoader(lib, shards=f"{out}-{{000000..000003}}.tar", mode="eval", batch_size=1000, image_size=28,
                 eval_resize=28, channels=1, num_threads=2)
    assert lib.loader_num_samples(L.h) == 10000
    assert L.class_names()[0] == "T-shirt/top"
    imgs, got = L.epoch()
    L.close()
    assert np.array_equal(got, labels)
    assert np.array_equal(np.rint(imgs[:, 0] * 255).astype(np.uint8), images)


def test_interrupted_make_shards_leaves_nothing_to_trust(tmp_path):
    """A make_shards killed mid-way (over an earlier complete run) leaves no manifest, so the next
    `make shards` rebuilds, and no truncated shard under a final name: each one is complete or
    still a .tmp file. An empty manifest is refused, naming the file."""
    import signal, subprocess, tarfile, time
    src = "/usr/share/datasets/fashion-mnist"
    out = tmp_path / "fm" / "test"
    cmd = [os.path.join(ROOT, "build/bin/make_shards"), "--fashion-mnist", src, "--split", "test", "--out", str(out),
           "--per-shard", "500"]
    subprocess.run(cmd, check=True, capture_output=True)
    manifest = tmp_path / "fm" / "test-manifest.txt"
    assert manifest.exists()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    while time.time() < deadline and not list((tmp_path / "fm").glob("*.tmp.*")):
        time.sleep(0.01)
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert not manifest.exists(), "an interrupted rewrite left the old manifest vouching for its shards"
    for shard in (tmp_path / "fm").glob("test-*.tar"):
        with tarfile.open(shard) as tf:
            assert len(tf.getmembers()) == 1000, f"{shard} is not a complete shard"
    manifest.write_text("")
    r = subprocess.run([os.path.join(ROOT, "build/bin/build_tokenizer"), "--shards", f"{out}-000000.tar",
                        "--image-size", "28", "--patch", "4", "--channels", "1", "--k", "8", "--out",
                        str(tmp_path / "t.h5")], capture_output=True, text=True)
    assert r.returncode != 0 and "test-manifest.txt is empty" in r.stderr, r.stderr


def pil_rgb_or_l(img, channels):
    return np.asarray(img.convert("RGB" if channels == 3 else "L")).reshape(img.size[1], img.size[0], channels)


@pytest.mark.parametrize("channels", [3, 1])
def test_colour_types_match_pil(lib, tmp_path, channels):
    """Grey, CMYK and progressive JPEGs; palette, RGBA, LA and 16-bit PNGs: decoded as PIL's
    convert("RGB") / convert("L") would. PNG exact; JPEG within 3 levels, 12 with subsampled chroma (PIL
    upsamples chroma with a triangle filter, we replicate). One deliberate
    difference: 16-bit grey keeps its high byte (PIL's I;16 -> L clips at 255)."""
    require("PIL", "python3-pil")
    from PIL import Image
    rng = np.random.default_rng(2)
    base = np.zeros((32, 32, 3), np.uint8)
    base[..., 0] = np.arange(32)[None, :] * 8
    base[..., 1] = np.arange(32)[:, None] * 8
    base[..., 2] = 128
    rgb = Image.fromarray(base)
    cases = {
        "grey.jpg": rgb.convert("L"),
        "progressive.jpg": rgb,
        "cmyk.jpg": rgb.convert("CMYK"),
        "palette.png": rgb.convert("P", palette=Image.ADAPTIVE, colors=64),
        "rgba.png": Image.fromarray(np.dstack([base, rng.integers(0, 256, (32, 32), dtype=np.uint8)]), "RGBA"),
        "la.png": rgb.convert("LA"),
        "grey16.png": Image.fromarray((np.arange(32 * 32).reshape(32, 32) * 61).astype(np.uint16)),
    }
    want = []
    cls = tmp_path / "c"
    cls.mkdir()
    for i, (name, img) in enumerate(cases.items()):
        path = cls / f"{i}_{name}"
        img.save(path, quality=95, progressive=name.startswith("progressive")) if name.endswith(".jpg") else img.save(path)
        if name == "grey16.png":
            hi = (np.asarray(img) >> 8).astype(np.uint8)
            want.append((name, np.repeat(hi[..., None], channels, axis=2)))
        else:
            want.append((name, pil_rgb_or_l(Image.open(path), channels)))
    L = PyLoader(lib, image_folder=str(tmp_path), mode="eval", batch_size=8, image_size=32, eval_resize=32,
                 channels=channels)
    imgs, _ = L.epoch()
    L.close()
    assert len(imgs) == len(cases)
    for (name, ref), got in zip(want, imgs):
        got = np.rint(got.transpose(1, 2, 0) * 255).astype(int)
        diff = np.abs(got - ref.astype(int)).max()
        # progressive.jpg is colour with 4:2:0 chroma: plain vs fancy upsampling shows most there
        tol = 0 if name.endswith(".png") else 12 if name.startswith("progressive") else 3
        assert diff <= tol, f"{name}: max diff {diff}"


def test_eval_transform_matches_torchvision(lib, tmp_path):
    """Resize(256) + CenterCrop(224), bicubic, on PNG copies of photos (full-
    resolution decode): exact. On the JPEGs themselves we decode at a reduced
    DCT scale (7/8 or less), so only close: mean |diff| < 1.5 levels."""
    require("torchvision", "python3-torchvision")
    from PIL import Image
    import torchvision.transforms as T
    tf = T.Compose([T.Resize(256, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(224)])
    wnids = photo_classes()[:6]
    for fmt in ("png", "jpg"):
        root = tmp_path / fmt
        refs = []
        for k, w in enumerate(wnids):
            (root / f"class{k}").mkdir(parents=True)
            src = os.path.join(PHOTOS, w, sorted(os.listdir(os.path.join(PHOTOS, w)))[0])
            img = Image.open(src).convert("RGB")
            dst = root / f"class{k}" / f"img.{fmt}"
            if fmt == "png":
                img.save(dst)
            else:
                dst.write_bytes(open(src, "rb").read())
            refs.append(np.asarray(tf(img)))
        L = PyLoader(lib, image_folder=str(root), mode="eval", batch_size=4, image_size=224, eval_resize=256,
                     interp="bicubic")
        imgs, _ = L.epoch()
        L.close()
        got = np.rint(imgs.transpose(0, 2, 3, 1) * 255).astype(int)
        diff = np.abs(got - np.stack(refs).astype(int))
        if fmt == "png":
            assert diff.max() == 0, f"PNG eval transform: max diff {diff.max()}"
        else:
            assert diff.mean() < 1.5, f"JPEG eval transform: mean diff {diff.mean():.2f}"


@cbind.mirrors("ViewParams")
class ViewParams(ctypes.Structure):
    """Mirror of augment.h's ViewParams."""
    _fields_ = [("x", ctypes.c_int), ("y", ctypes.c_int), ("w", ctypes.c_int), ("h", ctypes.c_int), ("flip", ctypes.c_int),
                ("jitter", ctypes.c_int), ("jitter_order", ctypes.c_int * 4), ("bright_f", ctypes.c_float),
                ("contrast_f", ctypes.c_float), ("sat_f", ctypes.c_float), ("hue_f", ctypes.c_float),
                ("grayscale", ctypes.c_int), ("blur", ctypes.c_int), ("solarize", ctypes.c_int),
                ("blur_sigma", ctypes.c_float)]


def test_colour_ops_match_torchvision(lib):
    """Each colour op alone, and jitter in a given order, against
    torchvision.transforms.functional on float tensors (tolerance 2e-5; hue 1e-4)."""
    require("torch", "python3-torch")
    import torch
    import torchvision.transforms.functional as F
    S = 64
    cfg = ctypes.create_string_buffer(4096)
    lib.loader_config_defaults(cfg)
    err = ctypes.create_string_buffer(256)
    assert lib.loader_config_set(cfg, b"image_size", str(S).encode(), err, 256) == 0
    rng = np.random.default_rng(5)
    img = rng.random((S, S, 3), dtype=np.float32)
    t = torch.from_numpy(img.transpose(2, 0, 1).copy())
    ks = int(0.1 * S) | 1
    cases = [
        (dict(jitter=1, jitter_order=(0, 1, 2, 3), bright_f=1.3, contrast_f=1, sat_f=1, hue_f=0), F.adjust_brightness(t, 1.3), 2e-5),
        (dict(jitter=1, jitter_order=(1, 0, 2, 3), bright_f=1, contrast_f=0.6, sat_f=1, hue_f=0), F.adjust_contrast(t, 0.6), 2e-5),
        (dict(jitter=1, jitter_order=(2, 0, 1, 3), bright_f=1, contrast_f=1, sat_f=1.4, hue_f=0), F.adjust_saturation(t, 1.4), 2e-5),
        (dict(jitter=1, jitter_order=(3, 0, 1, 2), bright_f=1, contrast_f=1, sat_f=1, hue_f=0.08), F.adjust_hue(t, 0.08), 1e-4),
        (dict(jitter=1, jitter_order=(3, 2, 1, 0), bright_f=0.8, contrast_f=1.3, sat_f=0.5, hue_f=-0.1),
         F.adjust_brightness(F.adjust_contrast(F.adjust_saturation(F.adjust_hue(t, -0.1), 0.5), 1.3), 0.8), 1e-4),
        (dict(grayscale=1), F.rgb_to_grayscale(t, 3), 2e-5),
        (dict(blur=1, blur_sigma=1.2), F.gaussian_blur(t, [ks, ks], [1.2, 1.2]), 2e-5),
        (dict(solarize=1), F.solarize(t, 0.5), 0),
    ]
    for fields, ref, tol in cases:
        v = ViewParams()
        for k, val in fields.items():
            if k == "jitter_order":
                v.jitter_order[:] = val
            else:
                setattr(v, k, val)
        out = img.copy()
        tmp = np.zeros_like(img)
        lib.apply_colour_ops(out.ctypes.data_as(ctypes.c_void_p), S, S, 3, ctypes.byref(v), cfg,
                             tmp.ctypes.data_as(ctypes.c_void_p))
        diff = np.abs(out.transpose(2, 0, 1) - ref.numpy()).max()
        assert diff <= tol, f"{fields}: max diff {diff}"
