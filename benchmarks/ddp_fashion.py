#!/usr/bin/env python3
"""PyTorch DDP (gloo) training of the Polis seed CNN on Fashion-MNIST: the
peer of Polis' time-to-accuracy benchmark (benchmarks/time_to_accuracy.sh).

Starts --workers processes (torch.multiprocessing), each with 1 thread and a
per-rank batch of 32, Adam(lr 1e-3, eps 1e-7), Glorot init, a per-epoch
seeded permutation split across ranks (DistributedSampler). After every
epoch rank 0 evaluates the whole test set (timed, as Polis' evaluation is).
Stops at --target accuracy or --epochs; prints one JSON line:
{"impl": "pytorch-ddp", "seconds_to_target": ..., "history": [...]}.

Several hosts: run it once per host with --nodes N --node-rank K
--master-addr ADDRESS-OF-NODE-0 (and GLOO_SOCKET_IFNAME where a host has
several interfaces); each host starts --workers processes, global rank =
K * workers + local rank, and node 0 prints the line.

Run with Debian's Python (it has torch):
  GLIBC_TUNABLES=glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=17179869184:glibc.malloc.top_pad=67108864 \
  /usr/bin/python3 benchmarks/ddp_fashion.py --workers 2 --target 0.88
"""

import argparse
import json
import os
import sys
import time

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn as nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_seed_cnn import DATA_DIR, build_model, read_idx  # noqa: E402


def load(split, data_dir):
    prefix = "train" if split == "train" else "t10k"
    x = read_idx(os.path.join(data_dir, f"{prefix}-images-idx3-ubyte.gz")).astype(np.float32) / 255.0
    y = read_idx(os.path.join(data_dir, f"{prefix}-labels-idx1-ubyte.gz")).astype(np.int64)
    return torch.from_numpy(x.reshape(-1, 1, 28, 28)), torch.from_numpy(y)


def worker(rank, args, queue):
    torch.set_num_threads(1)
    torch.set_num_interop_threads(1)
    world = args.nodes * args.workers
    rank = args.node_rank * args.workers + rank
    os.environ["MASTER_ADDR"] = args.master_addr
    os.environ["MASTER_PORT"] = str(args.port)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.manual_seed(args.seed)
    xtr, ytr = load("train", args.data_dir)
    if args.train_limit:
        xtr, ytr = xtr[:args.train_limit], ytr[:args.train_limit]
    xte, yte = load("test", args.data_dir)
    model = nn.parallel.DistributedDataParallel(build_model())
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-7)
    loss_fn = nn.CrossEntropyLoss()
    n = xtr.shape[0]
    dist.barrier()
    start = time.perf_counter()
    history = []
    for epoch in range(args.epochs):
        perm = torch.from_numpy(np.random.default_rng(args.seed + epoch).permutation(n))
        mine = perm[rank::world]
        model.train()
        for b in range(0, mine.numel() - args.batch + 1, args.batch):
            idx = mine[b:b + args.batch]
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(xtr[idx]), ytr[idx])
            loss.backward()
            opt.step()
        acc = torch.zeros(1)
        if rank == 0:
            model.eval()
            correct = 0
            with torch.no_grad():
                for b in range(0, xte.shape[0], 250):
                    correct += (model.module(xte[b:b + 250]).argmax(1) == yte[b:b + 250]).sum().item()
            acc[0] = correct / xte.shape[0]
        dist.broadcast(acc, 0)
        elapsed = time.perf_counter() - start
        history.append({"epoch": epoch + 1, "test_accuracy": round(acc.item(), 4), "elapsed_seconds": elapsed})
        if acc.item() >= args.target:
            break
    if rank == 0:
        reached = [h for h in history if h["test_accuracy"] >= args.target]
        queue.put({"impl": "pytorch-ddp", "torch": torch.__version__, "workers": world,
                   "batch_per_rank": args.batch, "target": args.target,
                   "seconds_to_target": reached[0]["elapsed_seconds"] if reached else None,
                   "history": history})
    dist.destroy_process_group()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--target", type=float, default=0.88)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--port", type=int, default=29517)
    p.add_argument("--data-dir", default=DATA_DIR)
    p.add_argument("--train-limit", type=int, default=0, help="use only the first N training images (0: all)")
    p.add_argument("--nodes", type=int, default=1, help="hosts taking part (this script runs on each)")
    p.add_argument("--node-rank", type=int, default=0, help="this host's index, 0 .. nodes-1")
    p.add_argument("--master-addr", default="127.0.0.1", help="node 0's address (the rendezvous)")
    args = p.parse_args()
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=worker, args=(r, args, queue)) for r in range(args.workers)]
    for pr in procs:
        pr.start()
    result = queue.get() if args.node_rank == 0 else None
    for pr in procs:
        pr.join()
    if result is not None:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
