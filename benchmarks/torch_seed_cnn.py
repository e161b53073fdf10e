#!/usr/bin/env python3
"""Single-process PyTorch training throughput of the Polis "seed CNN".

Peer of benchmarks/polis-bench-train: same model, same data (real Fashion-MNIST
training images), same optimizer; data is pre-converted to tensors before the
timed loop, so only zero_grad/forward/loss/backward/step is timed.

Run with the interpreter that has torch (Debian's /usr/bin/python3), e.g.

  OMP_NUM_THREADS=1 \
  GLIBC_TUNABLES=glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=17179869184:glibc.malloc.top_pad=67108864 \
  /usr/bin/python3 benchmarks/torch_seed_cnn.py --batch 32 --threads 1 --json
"""

import argparse
import gzip
import json
import os
import statistics
import sys
import time

import numpy as np
import torch
import torch.nn as nn

DATA_DIR = "/usr/share/datasets/fashion-mnist"
EXPECTED_PARAMS = 93322
SEED = 1234


def read_idx(path):
    """Parses a (gzipped) IDX file into a numpy array."""
    with gzip.open(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"{path}: bad IDX magic")
    dtype_code, ndim = raw[2], raw[3]
    dtypes = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4",
              0x0D: ">f4", 0x0E: ">f8"}
    if dtype_code not in dtypes:
        raise ValueError(f"{path}: unknown IDX dtype 0x{dtype_code:02x}")
    dims = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    offset = 4 + 4 * ndim
    data = np.frombuffer(raw, dtype=dtypes[dtype_code], offset=offset)
    if data.size != int(np.prod(dims)):
        raise ValueError(f"{path}: size mismatch ({data.size} vs {dims})")
    return data.reshape(dims)


def build_model():
    model = nn.Sequential(
        nn.Conv2d(1, 32, 3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(64, 64, 3), nn.ReLU(),
        nn.Flatten(),
        nn.Linear(576, 64), nn.ReLU(),
        nn.Linear(64, 10),
    )
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)
    return model


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--layout", choices=("nchw", "nhwc"), default="nchw")
    p.add_argument("--steps", type=int, default=200, help="timed steps")
    p.add_argument("--warmup", type=int, default=20, help="untimed steps")
    p.add_argument("--repeats", type=int, default=5,
                   help="timed loop is split into this many equal blocks; "
                        "the median block rate is reported")
    p.add_argument("--data-dir", default=DATA_DIR)
    p.add_argument("--json", action="store_true",
                   help="print only the JSON result line")
    args = p.parse_args()
    if args.batch < 1 or args.threads < 1 or args.steps < 1 or args.warmup < 0:
        p.error("batch, threads, steps must be >= 1 and warmup >= 0")
    if args.repeats < 1 or args.steps % args.repeats != 0:
        p.error(f"--steps ({args.steps}) must be a positive multiple of "
                f"--repeats ({args.repeats})")

    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)
    torch.manual_seed(SEED)

    # ---- data (not timed) ----
    images = read_idx(os.path.join(args.data_dir, "train-images-idx3-ubyte.gz"))
    labels = read_idx(os.path.join(args.data_dir, "train-labels-idx1-ubyte.gz"))
    if images.shape[1:] != (28, 28) or labels.shape[0] != images.shape[0]:
        raise SystemExit(f"unexpected data shapes {images.shape} {labels.shape}")
    n = images.shape[0]
    total_steps = args.warmup + args.steps
    needed = total_steps * args.batch
    perm = np.random.default_rng(SEED).permutation(n)
    # Consecutive batches from the fixed permutation; wrap around (re-using
    # the same permutation) if more images are needed than one epoch holds.
    idx = np.resize(perm, needed)
    memory_format = (torch.channels_last if args.layout == "nhwc"
                     else torch.contiguous_format)
    batches = []
    for s in range(total_steps):
        sel = idx[s * args.batch:(s + 1) * args.batch]
        x = torch.from_numpy(images[sel].astype(np.float32) / 255.0)
        x = x.reshape(args.batch, 1, 28, 28).contiguous(memory_format=memory_format)
        y = torch.from_numpy(labels[sel].astype(np.int64))
        batches.append((x, y))

    # ---- model ----
    model = build_model()
    nparams = sum(p_.numel() for p_ in model.parameters())
    assert nparams == EXPECTED_PARAMS, f"param count {nparams} != {EXPECTED_PARAMS}"
    model = model.to(memory_format=memory_format)
    model.train()
    loss_fn = nn.CrossEntropyLoss()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-7)

    def step(x, y):
        opt.zero_grad(set_to_none=True)
        out = model(x)
        loss = loss_fn(out, y)
        loss.backward()
        opt.step()
        return loss

    for s in range(args.warmup):
        step(*batches[s])

    block = args.steps // args.repeats
    block_rates = []
    block_step_ms = []
    loss = None
    s = args.warmup
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        for _ in range(block):
            loss = step(*batches[s])
            s += 1
        dt = time.perf_counter() - t0
        block_rates.append(block * args.batch / dt)
        block_step_ms.append(dt * 1e3 / block)

    result = {
        "impl": "pytorch",
        "torch": torch.__version__,
        "layout": args.layout,
        "batch": args.batch,
        "threads": args.threads,
        "images_per_second": statistics.median(block_rates),
        "block_rates": [round(r, 2) for r in block_rates],
        "step_ms_median": statistics.median(block_step_ms),
        "final_loss": float(loss.item()),
    }
    if not args.json:
        print(f"torch {torch.__version__}, layout {args.layout}, batch {args.batch}, "
              f"threads {args.threads}, {args.warmup} warmup + {args.steps} timed "
              f"steps in {args.repeats} blocks", file=sys.stderr)
        print(f"  {result['images_per_second']:.1f} img/s (median), "
              f"{result['step_ms_median']:.3f} ms/step, final loss "
              f"{result['final_loss']:.4f}", file=sys.stderr)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
