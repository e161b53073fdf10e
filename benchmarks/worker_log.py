"""A worker's epoch line (worker/worker.cc, logged with POLIS_DEBUG=INFO),
read by the parameter-server benchmarks (ps_overlap.sh, secagg.sh)."""
import re

_EPOCH = re.compile(r"epoch \d+ done: (\d+) samples, (\d+) steps, compute ([\d.]+)s comm ([\d.]+)s "
                    r"\(forward waiting for parameters ([\d.]+)s, steps without data ([\d.]+)s\), "
                    r"waiting for shards ([\d.]+)s")


def epoch_lines(path):
    """(samples, steps, compute, comm, forward waits, steps without data, shard waits) per line, seconds."""
    return [tuple(map(float, m.groups())) for m in _EPOCH.finditer(open(path).read())]
