#!/usr/bin/python3
"""Peer for bench_loader: what a PyTorch user runs. PIL decode +
torchvision RandomResizedCrop(224, bicubic) + flip + ToTensor + Normalize in a
DataLoader with the same number of workers. Prints images/s.
usage: bench_loader_peer.py IMAGE_FOLDER WORKERS [images=2000]"""
import sys, time
import torch
import torchvision.datasets as datasets
import torchvision.transforms as T

root, workers = sys.argv[1], int(sys.argv[2])
images = int(sys.argv[3]) if len(sys.argv) > 3 else 2000
torch.set_num_threads(1)
tf = T.Compose([T.RandomResizedCrop(224, interpolation=T.InterpolationMode.BICUBIC), T.RandomHorizontalFlip(),
                T.ToTensor(), T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
ds = datasets.ImageFolder(root, transform=tf)
dl = torch.utils.data.DataLoader(ds, batch_size=32, shuffle=True, num_workers=workers, drop_last=True,
                                 persistent_workers=True, prefetch_factor=2)
it = iter(dl)
next(it)  # warm-up: worker start, first batch
n, t = 0, time.time()
while n < images:
    try:
        x, y = next(it)
    except StopIteration:
        it = iter(dl)
        continue
    n += x.shape[0]
dt = time.time() - t
print(f"peer: {n} images in {dt:.2f} s with {workers} workers: {n / dt:.1f} images/s ({n / dt / workers:.1f} per worker)")
