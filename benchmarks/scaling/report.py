#!/usr/bin/python3
"""Tables and charts of benchmarks/scaling/run.sh (called by it).

Usage: report.py RESULTS MODELS OUT PLOT CMDLINE ELAPSED LOAD CAL TOTAL
  RESULTS  lines "net model mode hosts median_step_s wall_s"
  MODELS   run.sh's model lines "name|params|layers|compute_s|source"
  OUT      directory for results.tsv, tables.md and the PNGs
  PLOT     the polis-scaling-plot binary
"""
import collections
import datetime
import os
import subprocess
import sys

(results, models_path, out, plot, cmdline, elapsed, load, cal, total) = sys.argv[1:10]
models = {}
order_models = []
for line in open(models_path):
    name, params, layers, compute, piece, env, source = line.rstrip("\n").split("|")
    models[name] = (int(params), float(compute), source)
    order_models.append(name)

MODE_ORDER = ["ring", "auto", "auto-bf16", "flat-x4", "hier-x4", "ps-s4", "ps-s32"]
NET_TITLE = {
    "fattree-1024-10g": "fat tree, 10 Gbit/s",
    "fattree-1024-25g": "fat tree, 25 Gbit/s",
    "fattree-1024-100g": "fat tree, 100 Gbit/s",
    "racks-1024-10g": "racks 8:1 oversubscribed, 10 Gbit/s",
    "racks-1024-25g": "racks 8:1 oversubscribed, 25 Gbit/s",
    "racks-1024-100g": "racks 8:1 oversubscribed, 100 Gbit/s",
}
step = {}
walls = []
nets = []
failed = []
for line in open(results):
    if line.split()[-1] == "FAILED":
        failed.append(" ".join(line.split()[:4]))
        continue
    net, model, mode, hosts, median, wall = line.split()
    step[(net, model, mode, int(hosts))] = float(median)
    walls.append(float(wall))
    if net not in nets:
        nets.append(net)


def eff(net, model, mode, n):
    t = step.get((net, model, mode, n))
    return None if t is None else models[model][1] / t


os.makedirs(out, exist_ok=True)
with open(os.path.join(out, "results.tsv.tmp"), "w") as f:
    f.write("network\tmodel\tmode\thosts\tstep_s\tefficiency\n")
    for (net, model, mode, n), t in sorted(step.items()):
        f.write(f"{net}\t{model}\t{mode}\t{n}\t{t:.6g}\t{models[model][1] / t:.4f}\n")
os.replace(os.path.join(out, "results.tsv.tmp"), os.path.join(out, "results.tsv"))

md = []
md.append(f"Command: `{cmdline}` — {total} simulations in {elapsed} s on "
          f"{os.cpu_count()} CPUs (load average {load} at the start), "
          f"{datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}; "
          f"slowest single simulation {max(walls):.0f} s.  ")
md.append(f"Injected per-float costs (this machine): `{cal}`" + ("  " if failed else ""))
if failed:
    md.append("Failed or timed out (left out): " + "; ".join(failed))
md.append("")
figures = []
for model in order_models:
    params, compute, source = models[model]
    md.append(f"### {model}: {params:,} parameters, {compute * 1e3:.2f} ms compute per step ({source})")
    md.append("")
    for net in nets:
        modes = [m for m in MODE_ORDER if any(k[0] == net and k[1] == model and k[2] == m for k in step)]
        hosts = sorted({k[3] for k in step if k[0] == net and k[1] == model})
        if not modes:
            continue
        md.append(f"**{NET_TITLE.get(net, net)}** — scaling efficiency (compute ÷ step); step ms in brackets")
        md.append("")
        md.append("| hosts | " + " | ".join(modes) + " | best |")
        md.append("|---:|" + "---:|" * len(modes) + "---|")
        # "best": every mode within 1 % of the highest efficiency (ties
        # are not crossovers).
        best_by_n = {}
        for n in hosts:
            cells = []
            effs = {}
            for m in modes:
                e = eff(net, model, m, n)
                if e is None:
                    cells.append("—")
                    continue
                effs[m] = e
                cells.append(f"{e:.2f} ({step[(net, model, m, n)] * 1e3:.3g})")
            top = max(effs.values())
            best_by_n[n] = [m for m in modes if m in effs and effs[m] >= top * 0.99]
            md.append(f"| {n} | " + " | ".join(cells) + " | " + " ≈ ".join(best_by_n[n]) + " |")
        md.append("")
        # Crossovers: where a mode stops being among the best and another
        # takes over, and where PS overtakes the best all-reduce (or the
        # reverse) by more than 1 %.
        changes = []
        prev = None
        for n in hosts:
            if prev is not None and not set(best_by_n[n]) & set(best_by_n[prev]):
                changes.append(f"{' ≈ '.join(best_by_n[prev])} → {' ≈ '.join(best_by_n[n])} "
                               f"between {prev} and {n} hosts")
            prev = n
        ps_vs = []
        last = None
        for n in hosts:
            ar = [eff(net, model, m, n) for m in ("ring", "auto", "auto-bf16")]
            ps = [eff(net, model, m, n) for m in ("ps-s4", "ps-s32")]
            ar = [e for e in ar if e is not None]
            ps = [e for e in ps if e is not None]
            if not ar or not ps:
                continue
            if max(ps) > 1.01 * max(ar):
                winner = "PS"
            elif max(ar) > 1.01 * max(ps):
                winner = "all-reduce"
            else:
                winner = "tie"
            if last is not None and winner != last[1]:
                ps_vs.append(f"{winner} from {n} hosts (was {last[1]} at {last[0]})")
            last = (n, winner)
        md.append("Crossovers: " + ("; ".join(changes) if changes else "none (the best mode stays among the best)")
                  + ". PS against the best all-reduce: " + ("; ".join(ps_vs) if ps_vs else
                  f"{last[1] if last else 'not simulated'} throughout") + ".")
        md.append("")
        tsv = os.path.join(out, f".{model}-{net}.tsv")
        with open(tsv, "w") as f:
            for m in modes:
                for n in hosts:
                    e = eff(net, model, m, n)
                    if e is not None:
                        f.write(f"{m}\t{n}\t{e:.5f}\n")
        png = f"{model}-{net}.png"
        subprocess.run([plot, tsv, os.path.join(out, png),
                        f"{model}: {NET_TITLE.get(net, net)}", "scaling efficiency"], check=True)
        os.remove(tsv)
        figures.append(png)
md.append("Figures: " + ", ".join(f"[{p}]({p})" for p in figures))
with open(os.path.join(out, "tables.md.tmp"), "w") as f:
    f.write("\n".join(md) + "\n")
os.replace(os.path.join(out, "tables.md.tmp"), os.path.join(out, "tables.md"))
