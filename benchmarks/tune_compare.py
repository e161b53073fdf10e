#!/usr/bin/env python3
"""Compares two finished studies (random search, ASHA) for
benchmarks/tune_asha_vs_random.sh.

  tune_compare.py RANDOM_DIR ASHA_DIR LABEL WALL_RANDOM WALL_ASHA   one table row
  tune_compare.py --medians ROWS.md                                 the medians row

Epochs are counted in the order they ended (the "time" of each row of the
trials' metrics.jsonl), over every trial of a study: "epochs to X" is how
many epochs the study had trained when its best val_accuracy so far first
reached X.
"""
import json
import os
import statistics
import sys


def epoch_rows(study_dir):
    """[(time, trial, epoch, val_accuracy)] of every trial, in time order."""
    study = json.load(open(os.path.join(study_dir, "study.json")))
    rows, seen = [], set()
    for t in study["trials"]:
        path = os.path.join(t["run_dir"], "metrics.jsonl")
        if not os.path.exists(path):
            continue
        for line in open(path):
            line = line.strip()
            if not line:
                continue
            r = json.loads(line)
            key = (t["id"], r["epoch"])
            if key in seen or "val_accuracy" not in r:
                continue
            seen.add(key)
            rows.append((r["time"], t["id"], r["epoch"], r["val_accuracy"]))
    rows.sort()
    return study, rows


def epochs_to_reach(rows, target):
    best = -1.0
    for n, (_, _, _, v) in enumerate(rows, start=1):
        best = max(best, v)
        if best >= target - 1e-12:
            return n
    return None


def best_test_accuracy(study):
    best = study.get("best") or {}
    for t in study["trials"]:
        if t["id"] == best.get("trial"):
            result = json.load(open(os.path.join(t["run_dir"], "result.json")))
            return result["test_accuracy"]
    return float("nan")


def row(random_dir, asha_dir, label, wall_random, wall_asha):
    rs, rrows = epoch_rows(random_dir)
    as_, arows = epoch_rows(asha_dir)
    target = max(v for *_, v in rrows)
    r_to = epochs_to_reach(rrows, target)
    a_to = epochs_to_reach(arows, target)
    a_best = max(v for *_, v in arows)
    a_cell = f"{a_to} / {len(arows)}" if a_to else f"not reached / {len(arows)}"
    ratio = f"{a_to / len(rrows):.2f}" if a_to else "—"
    return (f"| {label} | {target:.4f} | {r_to} / {len(rrows)} | {a_cell} | {ratio} | {a_best:.4f} | "
            f"{best_test_accuracy(rs):.4f} / {best_test_accuracy(as_):.4f} | "
            f"{float(wall_random):.0f} / {float(wall_asha):.0f} |")


def medians(path):
    cells = [[c.strip() for c in line.strip().strip("|").split("|")] for line in open(path) if line.strip()]

    def med(i, part=0):
        vals = []
        for c in cells:
            v = c[i].split("/")[part].strip()
            try:
                vals.append(float(v))
            except ValueError:
                pass
        return statistics.median(vals) if vals else float("nan")

    return (f"| median | {med(1):.4f} | {med(2):.0f} / {med(2, 1):.0f} | {med(3):.0f} / {med(3, 1):.0f} | "
            f"{med(4):.2f} | {med(5):.4f} | {med(6):.4f} / {med(6, 1):.4f} | {med(7):.0f} / {med(7, 1):.0f} |")


if __name__ == "__main__":
    if sys.argv[1] == "--medians":
        print(medians(sys.argv[2]))
    else:
        print(row(*sys.argv[1:6]))
