#!/usr/bin/env python3
"""PyTorch gloo all_reduce bandwidth: the reference for polis-bench-allreduce.

One process per rank (benchmarks/allreduce.sh starts them):

    allreduce_torch.py --rank R --world-size N --port P [--addr A] [--min-bytes ...]

--addr is rank 0's address for the tcp:// rendezvous (default 127.0.0.1;
benchmarks/allreduce_hosts.sh gives the first emulated host's).

Same sizes, iteration counts and output as polis-bench-allreduce: rank 0
prints one line per size, "gloo <TAB> N <TAB> bytes <TAB> s,s,...", each value
the slowest rank's time of one iteration. Each timed call follows a barrier
and is verified against the closed-form sum (the same exactly-representable
pattern as the C++ benchmark).
"""
import argparse
import sys
import time

import torch
import torch.distributed as dist


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rank", type=int, required=True)
    p.add_argument("--world-size", type=int, required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--addr", default="127.0.0.1")
    p.add_argument("--min-bytes", type=int, default=4 << 10)
    p.add_argument("--max-bytes", type=int, default=64 << 20)
    p.add_argument("--factor", type=int, default=4)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--min-iters", type=int, default=5)
    p.add_argument("--max-iters", type=int, default=40)
    p.add_argument("--target-mb", type=float, default=256)
    a = p.parse_args()

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://{a.addr}:{a.port}",
                            rank=a.rank, world_size=a.world_size)
    n, r = a.world_size, a.rank
    ranks_sum = float(n * (n + 1) // 2)
    max_count = a.max_bytes // 4
    idx = torch.arange(max_count, dtype=torch.int64)
    pattern = ((idx % 7) - 3).to(torch.float32) * torch.pow(2.0, ((idx % 5) - 2).to(torch.float32))
    mine_all = pattern * (r + 1)
    expected_all = pattern * ranks_sum
    buf_all = torch.empty(max_count, dtype=torch.float32)
    slowest = torch.zeros(1, dtype=torch.float64)
    failures = 0

    size = a.min_bytes
    while size <= a.max_bytes:
        count = size // 4
        iters = int(min(max(a.target_mb * 1e6 / size, a.min_iters), a.max_iters))
        x, mine, expected = buf_all[:count], mine_all[:count], expected_all[:count]
        times = []
        for it in range(-a.warmup, iters):
            x.copy_(mine)
            dist.barrier()
            t0 = time.perf_counter()
            dist.all_reduce(x)
            took = time.perf_counter() - t0
            slowest[0] = took
            dist.all_reduce(slowest, op=dist.ReduceOp.MAX)
            if not torch.equal(x, expected):
                bad = int((x != expected).nonzero()[0])
                print(f"rank {r}: gloo, {size} bytes: element {bad} is {float(x[bad])}, "
                      f"expected {float(expected[bad])}", file=sys.stderr)
                failures += 1
            if it >= 0:
                times.append(float(slowest[0]))
        if r == 0:
            print(f"gloo\t{n}\t{size}\t" + ",".join(f"{t:.9f}" for t in times), flush=True)
        size *= a.factor

    total = torch.tensor([failures], dtype=torch.int64)
    dist.all_reduce(total)
    dist.destroy_process_group()
    if int(total[0]):
        print(f"error: {int(total[0])} verification failures", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
