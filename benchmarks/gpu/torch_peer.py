#!/usr/bin/env python3
"""PyTorch peer of polis-gpu-bench: the same two networks, batches and
optimizers on the same GPU, each training step timed with CUDA events
(median and p90 after warm-up). Synthetic data of the same shapes (the
device check compares step time, not accuracy).

  python3 benchmarks/gpu/torch_peer.py --steps 200 --warmup 20 --precision fp32

Networks (jobs/fashion_cnn.pbtxt, jobs/bike_demand_transformer.pbtxt):
  seed CNN: Conv(32,3)-ReLU-MaxPool(2)-Conv(64,3)-ReLU-MaxPool(2)-Conv(64,3)-ReLU
            -Flatten-Dense(64)-ReLU-Dense(10); softmax cross-entropy; Adam 1e-3.
  bike Transformer: sinusoidal positions + one pre-norm encoder block (2 heads,
            ff 64, GELU erf) over [168, F], last step, Dense(32)-ReLU-Dense(1);
            Huber(1.0); Adam 2e-3.
"""
import argparse
import math
import statistics

import torch
from torch import nn


class SeedCnn(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, 32, 3), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(64, 64, 3), nn.ReLU(), nn.Flatten(),
            nn.Linear(576, 64), nn.ReLU(), nn.Linear(64, 10))

    def forward(self, x):
        return self.net(x)


class BikeTransformer(nn.Module):
    def __init__(self, steps, features, heads=2, ff=64):
        super().__init__()
        pe = torch.zeros(steps, features)
        for t in range(steps):
            for i in range(features):
                angle = t / math.pow(10000.0, (i - i % 2) / features)
                pe[t, i] = math.sin(angle) if i % 2 == 0 else math.cos(angle)
        self.register_buffer("pe", pe)
        self.ln1 = nn.LayerNorm(features)
        self.attn = nn.MultiheadAttention(features, heads, batch_first=True)
        self.ln2 = nn.LayerNorm(features)
        self.ffn = nn.Sequential(nn.Linear(features, ff), nn.GELU(), nn.Linear(ff, features))
        self.head = nn.Sequential(nn.Linear(features, 32), nn.ReLU(), nn.Linear(32, 1))

    def forward(self, x):
        x = x + self.pe
        a = self.ln1(x)
        x = x + self.attn(a, a, a, need_weights=False)[0]
        x = x + self.ffn(self.ln2(x))
        return self.head(x[:, -1, :])


def run(name, model, x, y, loss_fn, lr, eps, steps, warmup, precision):
    opt = torch.optim.Adam(model.parameters(), lr=lr, eps=eps)
    times, first, last = [], None, None
    for step in range(warmup + steps):
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss = loss_fn(model(x[step % len(x)]), y[step % len(y)])
        loss.backward()
        opt.step()
        stop.record()
        if step == 0:
            first = loss.item()
        if step == warmup + steps - 1:
            last = loss.item()
        if step >= warmup:
            times.append((start, stop))
    torch.cuda.synchronize()
    ms = sorted(s.elapsed_time(e) for s, e in times)
    med = statistics.median(ms)
    p90 = ms[min(len(ms) - 1, int(0.9 * (len(ms) - 1) + 0.5))]
    batch = x[0].shape[0]
    params = sum(p.numel() for p in model.parameters())
    print(f"| {name} | pytorch {torch.__version__} | {precision} | {batch} | {params} | {med:.3f} | "
          f"{p90:.3f} | {batch * 1000.0 / med:.0f} | {first:.4f} -> {last:.4f} | synthetic |")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--precision", choices=["fp32", "tf32", "bf16"], default="fp32")
    ap.add_argument("--cnn-batch", type=int, default=32)
    ap.add_argument("--tf-batch", type=int, default=32)
    ap.add_argument("--features", type=int, default=18)
    ap.add_argument("--steps-per-sample", type=int, default=168)
    args = ap.parse_args()
    tf32 = args.precision != "fp32"
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    torch.backends.cudnn.benchmark = True
    torch.manual_seed(0)
    dev = torch.device("cuda")
    print(f"reproduce: python3 benchmarks/gpu/torch_peer.py --steps {args.steps} --warmup {args.warmup} "
          f"--precision {args.precision} --cnn-batch {args.cnn_batch} --tf-batch {args.tf_batch} "
          f"--features {args.features}")
    print(f"device: {torch.cuda.get_device_name(0)}")
    stage = 16
    x = [torch.rand(args.cnn_batch, 1, 28, 28, device=dev) for _ in range(stage)]
    y = [torch.randint(0, 10, (args.cnn_batch,), device=dev) for _ in range(stage)]
    run("seed CNN", SeedCnn().to(dev), x, y, nn.CrossEntropyLoss(), 1e-3, 1e-7,
        args.steps, args.warmup, args.precision)
    T, F = args.steps_per_sample, args.features
    x = [torch.rand(args.tf_batch, T, F, device=dev) for _ in range(stage)]
    y = [torch.randn(args.tf_batch, 1, device=dev) for _ in range(stage)]
    run("bike Transformer", BikeTransformer(T, F).to(dev), x, y, nn.HuberLoss(delta=1.0), 2e-3, 1e-7,
        args.steps, args.warmup, args.precision)


if __name__ == "__main__":
    main()
