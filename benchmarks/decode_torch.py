#!/usr/bin/env python3
"""PyTorch peer of polis-bench-decode: the same SHARDS records (tar members
located through the same .idx files, read with seek+read) decoded by PIL
inside a torch.utils.data.Dataset and batched by a DataLoader
(num_workers=0: one core), converted to float CHW / 255 as torchvision's
ToTensor does. Prints records_per_second.

Usage: decode_torch.py --dir DATASET [--batch 64] [--limit N]
"""
import argparse
import io
import json
import os
import time

import numpy as np
import torch
from PIL import Image


class Shards(torch.utils.data.Dataset):
    def __init__(self, root, limit):
        m = json.load(open(os.path.join(root, "dataset.json")))
        self.mode = "RGB" if m["channels"] == 3 else "L"
        self.records = []
        for s in m["parts"]["train"]["shards"]:
            ix = json.load(open(os.path.join(root, s["index"])))
            path = os.path.join(root, s["tar"])
            self.records += [(path, r[2], r[3], r[1]) for r in ix["records"]]
        if limit:
            self.records = self.records[:limit]
        self.files = {}

    def __len__(self):
        return len(self.records)

    def __getitem__(self, i):
        path, offset, size, label = self.records[i]
        f = self.files.get(path) or self.files.setdefault(path, open(path, "rb"))
        f.seek(offset)
        img = Image.open(io.BytesIO(f.read(size))).convert(self.mode)
        a = np.asarray(img, dtype=np.float32) / 255.0
        t = torch.from_numpy(a).unsqueeze(0) if a.ndim == 2 else torch.from_numpy(a).permute(2, 0, 1)
        return t, label


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--dir", required=True)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--limit", type=int, default=0)
    a = p.parse_args()
    torch.set_num_threads(1)
    ds = Shards(a.dir, a.limit)
    loader = torch.utils.data.DataLoader(ds, batch_size=a.batch, shuffle=True, num_workers=0,
                                         generator=torch.Generator().manual_seed(7))
    checksum = 0.0
    t0 = time.perf_counter()
    for x, y in loader:
        checksum += float(x[0, 0, 0, 0]) + float(y[0])
    s = time.perf_counter() - t0
    print(f"records {len(ds)} seconds {s:.3f} records_per_second {len(ds) / s:.1f} checksum {checksum:.3f}")


if __name__ == "__main__":
    main()
