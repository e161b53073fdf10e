#!/usr/bin/env python3
"""Checks one chaos trial's run directory after the job ended; prints JSON.

  check_run.py RUN_DIR SAMPLE_LOG_DIR TRAIN_SIZE SEED EPOCHS

- attempts: RUN_DIR/restarts.jsonl (polis-run --max-restarts), one line per
  failed attempt; a file belongs to the attempt during which it was last
  written (its mtime against the records' unix_time: a record is written
  after every rank of the failed attempt ended, before the next starts).
- checkpoints: every manifest.json reads (its own SHA-256 over the compact,
  key-sorted manifest, as common/checkpoint.cc writes it), every shard file
  matches its SHA-256 and the shards tile [0, parameter_count).
- samples, exactly once per epoch, counting only what the final model grew
  from. Attempt j starts from checkpoint C_j (or from scratch). What C_j
  holds of epoch k, S(j, k):
    * k is C_j's unfinished epoch: exactly its `consumed` ranges (positions
      in the epoch's permutation, common/data/shard_plan.cc);
    * k is before that (or C_j ends epoch k): S(m, k) plus everything attempt
      m logged for epoch k, where m is the attempt that wrote C_j (a finished
      epoch's log lines are flushed at its end);
    * k is after it: nothing.
  The samples of epoch k in the final model are S(n, k) plus what the last
  attempt n logged for k. Samples a killed attempt trained after its last
  checkpoint are not in it and are trained again: never counted (a killed
  worker's last log lines may be lost with its buffer; they are not needed).
"""
import collections, glob, hashlib, json, os, re, sys

MASK = (1 << 64) - 1


class MT19937_64:
    def __init__(self, seed):
        self.mt = [0] * 312
        self.mt[0] = seed & MASK
        for i in range(1, 312):
            self.mt[i] = (6364136223846793005 * (self.mt[i - 1] ^ (self.mt[i - 1] >> 62)) + i) & MASK
        self.i = 312

    def __call__(self):
        if self.i >= 312:
            mt = self.mt
            for k in range(312):
                y = (mt[k] & 0xFFFFFFFF80000000) | (mt[(k + 1) % 312] & 0x7FFFFFFF)
                v = mt[(k + 156) % 312] ^ (y >> 1)
                if y & 1:
                    v ^= 0xB5026F5AA96619E9
                mt[k] = v
            self.i = 0
        y = self.mt[self.i]
        self.i += 1
        y ^= (y >> 29) & 0x5555555555555555
        y ^= (y << 17) & 0x71D67FFFEDA60000
        y ^= (y << 37) & 0xFFF7EEE000000000
        y ^= y >> 43
        return y & MASK


def epoch_permutation(seed, epoch, n):
    """data::EpochPermutation, bit for bit."""
    perm = list(range(n))
    z = (seed + 0x9E3779B97F4A7C15 * (epoch + 1)) & MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
    rng = MT19937_64(z ^ (z >> 31))
    for i in range(n - 1, 0, -1):
        bound = i + 1
        limit = MASK - (MASK % bound)
        r = rng()
        while r >= limit:
            r = rng()
        j = r % bound
        perm[i], perm[j] = perm[j], perm[i]
    return perm


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_manifest(d):
    """The manifest of checkpoint d, or raises ValueError saying what is wrong."""
    path = os.path.join(d, "manifest.json")
    out = json.load(open(path))
    m = out["manifest"]
    body = json.dumps(m, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    if hashlib.sha256(body.encode()).hexdigest() != out["sha256"]:
        raise ValueError(f"{path}: checksum mismatch")
    at = 0
    for s in sorted(m["shards"], key=lambda s: s["begin"]):
        if s["begin"] != at:
            raise ValueError(f"{path}: shards do not tile at {at}")
        at = s["end"]
        if sha256_file(os.path.join(d, s["file"])) != s["sha256"]:
            raise ValueError(f"{d}/{s['file']}: checksum mismatch")
    if at != m["parameter_count"]:
        raise ValueError(f"{path}: shards end at {at}, parameter_count {m['parameter_count']}")
    return m


def main():
    run, logs, n, seed, epochs = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
    report = {"errors": []}
    records = []
    path = os.path.join(run, "restarts.jsonl")
    if os.path.exists(path):
        for line in open(path):
            try:
                records.append(json.loads(line))
            except ValueError:
                report["errors"].append(f"restarts.jsonl: a line that does not parse: {line.strip()[:80]}")
    bounds = [r["unix_time"] for r in records]
    report["restarts"] = sum(1 for r in records if r.get("action") in ("resume", "restart"))

    def attempt_of(p):
        t = os.stat(p).st_mtime
        return sum(1 for b in bounds if b < t)

    # Every checkpoint that has a manifest must read.
    manifests, bad = {}, []
    for mf in sorted(glob.glob(os.path.join(run, "checkpoints", "*", "manifest.json"))):
        d = os.path.dirname(mf)
        try:
            manifests[os.path.realpath(d)] = read_manifest(d)
        except (ValueError, KeyError, OSError) as e:
            bad.append(str(e))
    report["checkpoints"] = len(manifests)
    report["checkpoints_bad"] = bad

    # Where each attempt started, and the coordinator's word for it.
    start = {0: None}
    for j, r in enumerate(records, start=1):
        if r.get("action") == "resume":
            start[j] = os.path.realpath(r["resume_from"])
        elif r.get("action") == "restart":
            start[j] = None
    final = max(start)
    said = [os.path.realpath(x) for x in re.findall(r"^polis: resuming from (\S+) \(",
                                                     open(os.path.join(run, "stdout.log")).read(), re.M)]
    # A run with every epoch done says "nothing is left to train" instead.
    def trains(c):
        m = manifests.get(c)
        return m is not None and not (m["epoch_complete"] and m["epoch"] == epochs - 1)
    expected = [start[j] for j in sorted(start) if start[j] and trains(start[j])]
    if said != expected:
        report["errors"].append(f"the coordinator resumed from {said}, the launcher recorded {expected}")

    logged = collections.defaultdict(lambda: collections.defaultdict(collections.Counter))
    for f in glob.glob(os.path.join(logs, "worker-*.log")):
        a = attempt_of(f)
        for line in open(f):
            parts = line.split()
            if len(parts) == 2:
                logged[a][int(parts[0])][int(parts[1])] += 1

    perms = {}

    def held(j, k):  # S(j, k) above
        c = start[j]
        if c is None:
            return collections.Counter()
        # The writer of what attempt j resumed from ran before j (a resume
        # that publishes again may touch the kept model).
        if c.endswith("model.polis"):  # a finished run: every epoch done by its writer
            m = min(attempt_of(c), j - 1)
            return held(m, k) + logged[m][k]
        man = manifests.get(c)
        if man is None:
            raise ValueError(f"attempt {j} resumed from {c}, which does not read")
        if k > man["epoch"] or (k == man["epoch"] and not man["epoch_complete"]):
            if k != man["epoch"]:
                return collections.Counter()
            perm = perms.setdefault(k, epoch_permutation(seed, k, n))
            return collections.Counter(perm[p] for b, e in man["consumed"] for p in range(b, e))
        m = min(attempt_of(os.path.join(c, "manifest.json")), j - 1)
        return held(m, k) + logged[m][k]

    report["epochs"] = []
    try:
        for k in range(epochs):
            got = held(final, k) + logged[final][k]
            report["epochs"].append({
                "epoch": k + 1,
                "missing": sum(1 for i in range(n) if got[i] == 0),
                "repeated": sum(1 for i in range(n) if got[i] > 1),
                "extra": sum(1 for i in got if not 0 <= i < n),
            })
    except ValueError as e:
        report["errors"].append(str(e))
    report["exactly_once"] = bool(report["epochs"]) and len(report["epochs"]) == epochs and all(
        e["missing"] == 0 and e["repeated"] == 0 and e["extra"] == 0 for e in report["epochs"])
    print(json.dumps(report))


if __name__ == "__main__":
    main()
