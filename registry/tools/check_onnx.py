#!/usr/bin/python3
"""Checks an exported model.onnx against Polis's own outputs.

1. onnx.checker.check_model(full_check=True) (Debian: python3-onnx);
2. image models (--images): OpenCV's DNN module (python3-opencv) loads the
   model and runs every image of an IDX file, preprocessed as the ONNX
   metadata says (polis.input_preprocessing = "pixel * SCALE + SHIFT"), and
   its class probabilities are compared with those Polis served for the same
   images (`polis-registry predict ... --out FILE`: raw float32, images x classes);
3. any model (--windows, e.g. time-series windows): the graph is run by the
   reference evaluator below -- numpy code written from the ONNX operator
   specification (opset 13), since onnx 1.12 has no onnx.reference and
   OpenCV 4.6 cannot run every operator the sequence layers use -- on raw
   float32 inputs [n, <input shape>] (`polis-registry predict --csv ...
   --windows-out FILE`), and its outputs are compared with Polis's
   (--polis-outputs, raw float32 [n, outputs]). OpenCV is tried as well and
   its result reported (it is not required to load the model).

    registry/tools/check_onnx.py --onnx ROOT/fashion_cnn/1/model.onnx \\
        --images /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz \\
        --polis-probs probs.bin [--labels t10k-labels-idx1-ubyte.gz] [--tolerance 1e-4]
    registry/tools/check_onnx.py --onnx ROOT/bike/1/model.onnx \\
        --windows windows.f32 --polis-outputs outputs.f32 [--tolerance 1e-4] \\
        [--csv hour.csv --times times.txt]

With --csv and --times, each window is also rebuilt from the raw CSV rows by
window_input() below (the recipe of preprocessing.json, as docs/registry.md
shows it) and compared with the window Polis cut.

Prints one JSON line (max_abs_diff, images or windows, ...).
Exit codes: 0 within tolerance, 1 a check failed, 2 usage or unreadable input,
77 numpy, python3-onnx or (for --images) python3-opencv missing (the tests' "skip").
"""
import argparse
import gzip
import json
import math
import re
import struct
import sys

SKIP = 77


def read_idx(path):
    import numpy as np
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 8:
        raise ValueError(f"{path}: not an unsigned-byte IDX file (magic {data[:4].hex()})")
    ndim = data[3]
    dims = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    payload = data[4 + 4 * ndim:]
    expected = 1
    for d in dims:
        expected *= d
    if len(payload) != expected:
        raise ValueError(f"{path}: {len(payload)} payload bytes, dims {dims} need {expected}")
    return np.frombuffer(payload, dtype=np.uint8).reshape(dims)


class Unsupported(Exception):
    """The graph uses an operator or attribute the evaluator does not implement."""


def _attrs(node):
    import onnx
    out = {}
    for a in node.attribute:
        out[a.name] = onnx.helper.get_attribute_value(a)
    return out


def _lstm(x, w, r, b, hidden, gates):
    """ONNX LSTM (opset 7/14 semantics), forward direction, default
    activations (f = Sigmoid, g = h = Tanh), no peepholes, zero initial
    state. W/R gate blocks in ONNX order i, o, f, c; B = [Wb | Rb]."""
    import numpy as np
    seq, batch, _ = x.shape
    H = hidden
    sig = lambda v: 1.0 / (1.0 + np.exp(-v))
    wb, rb = (b[0, :4 * H], b[0, 4 * H:]) if b is not None else (0.0, 0.0)
    h = np.zeros((batch, H))
    c = np.zeros((batch, H))
    ys = []
    for t in range(seq):
        z = x[t] @ w[0].T + h @ r[0].T + wb + rb
        i, o, f, cc = (z[:, k * H:(k + 1) * H] for k in range(4))
        c = sig(f) * c + sig(i) * np.tanh(cc)
        h = sig(o) * np.tanh(c)
        ys.append(h)
    return np.stack(ys)[:, None], h[None], c[None]


def _gru(x, w, r, b, hidden, linear_before_reset):
    """ONNX GRU, forward direction, default activations (f = Sigmoid,
    g = Tanh), zero initial state. Gate blocks z, r, h; B = [Wb | Rb]."""
    import numpy as np
    seq, batch, _ = x.shape
    H = hidden
    sig = lambda v: 1.0 / (1.0 + np.exp(-v))
    wb, rb = (b[0, :3 * H], b[0, 3 * H:]) if b is not None else (np.zeros(3 * H), np.zeros(3 * H))
    h = np.zeros((batch, H))
    ys = []
    for t in range(seq):
        xw = x[t] @ w[0].T + wb
        hr = h @ r[0].T
        zt = sig(xw[:, :H] + hr[:, :H] + rb[:H])
        rt = sig(xw[:, H:2 * H] + hr[:, H:2 * H] + rb[H:2 * H])
        if linear_before_reset:
            ht = np.tanh(xw[:, 2 * H:] + rt * (hr[:, 2 * H:] + rb[2 * H:]))
        else:
            ht = np.tanh(xw[:, 2 * H:] + (rt * h) @ r[0][2 * H:].T + rb[2 * H:])
        h = (1 - zt) * ht + zt * h
        ys.append(h)
    return np.stack(ys)[:, None], h[None]


def evaluate(model, feeds):
    """Runs model.graph on `feeds` (name -> numpy array), in float64, with
    the opset-13 semantics of each operator; returns every value by name."""
    import numpy as np
    from onnx import numpy_helper
    v = {}
    for init in model.graph.initializer:
        a = numpy_helper.to_array(init)
        v[init.name] = a.astype(np.float64) if a.dtype == np.float32 else a
    for k, a in feeds.items():
        v[k] = a.astype(np.float64)
    erf = np.frompyfunc(math.erf, 1, 1)
    for node in model.graph.node:
        op, at = node.op_type, _attrs(node)
        ins = [v[n] if n else None for n in node.input]
        x = ins[0]
        if op == "Identity":
            out = [x]
        elif op in ("Add", "Sub", "Mul", "Div", "MatMul"):
            f = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": np.divide,
                 "MatMul": np.matmul}[op]
            out = [f(x, ins[1])]
        elif op == "Pow":
            out = [np.power(x, ins[1])]
        elif op in ("Sqrt", "Tanh", "Relu", "Sigmoid", "Erf", "Exp"):
            f = {"Sqrt": np.sqrt, "Tanh": np.tanh, "Relu": lambda a: np.maximum(a, 0),
                 "Sigmoid": lambda a: 1 / (1 + np.exp(-a)), "Exp": np.exp,
                 "Erf": lambda a: erf(a).astype(np.float64)}[op]
            out = [f(x)]
        elif op == "Transpose":
            out = [np.transpose(x, at.get("perm"))]
        elif op == "Reshape":
            shape = [int(d) for d in ins[1]]
            if at.get("allowzero", 0) == 0:
                shape = [x.shape[i] if d == 0 else d for i, d in enumerate(shape)]
            out = [x.reshape(shape)]
        elif op == "Flatten":
            axis = at.get("axis", 1)
            out = [x.reshape(int(np.prod(x.shape[:axis])), -1)]
        elif op == "Squeeze":
            out = [np.squeeze(x, axis=tuple(int(a) for a in ins[1]))]
        elif op == "Unsqueeze":
            out = [np.expand_dims(x, axis=tuple(int(a) for a in ins[1]))]
        elif op == "Gemm":
            a = x.T if at.get("transA", 0) else x
            b = ins[1].T if at.get("transB", 0) else ins[1]
            y = at.get("alpha", 1.0) * (a @ b)
            if len(ins) > 2 and ins[2] is not None:
                y = y + at.get("beta", 1.0) * ins[2]
            out = [y]
        elif op == "ReduceMean":
            axes = tuple(at["axes"]) if "axes" in at else None
            out = [np.mean(x, axis=axes, keepdims=bool(at.get("keepdims", 1)))]
        elif op == "Softmax":
            axis = at.get("axis", -1)
            e = np.exp(x - np.max(x, axis=axis, keepdims=True))
            out = [e / np.sum(e, axis=axis, keepdims=True)]
        elif op == "Gather":
            idx = ins[1].astype(np.int64)
            axis = at.get("axis", 0)
            if np.any(idx < -x.shape[axis]) or np.any(idx >= x.shape[axis]):
                raise ValueError(f"{node.name}: Gather index out of range [0, {x.shape[axis]})")
            out = [np.take(x, idx, axis=axis)]
        elif op == "Cast":
            import onnx
            to_np = getattr(onnx.helper, "tensor_dtype_to_np_dtype", None)
            out = [x.astype(to_np(at["to"]) if to_np else onnx.mapping.TENSOR_TYPE_TO_NP_TYPE[at["to"]])]
        elif op in ("LSTM", "GRU"):
            if at.get("direction", b"forward") not in (b"forward", "forward"):
                raise Unsupported(f"{node.name}: {op} direction {at['direction']}")
            for name in ("activations", "clip", "input_forget", "layout"):
                if at.get(name):
                    raise Unsupported(f"{node.name}: {op} attribute {name}")
            if any(n for n in node.input[4:]):
                raise Unsupported(f"{node.name}: {op} sequence_lens, initial state or peepholes")
            b = ins[3] if len(ins) > 3 else None
            if op == "LSTM":
                out = list(_lstm(x, ins[1], ins[2], b, at["hidden_size"], 4))
            else:
                out = list(_gru(x, ins[1], ins[2], b, at["hidden_size"], at.get("linear_before_reset", 0)))
        else:
            raise Unsupported(f"operator {op} (node {node.name}) is not in the reference evaluator")
        for name, val in zip(node.output, out):
            if name:
                v[name] = val
    return v


# ---- preprocessing.json (docs/registry.md "ONNX export" shows this code) ----

def window_input(pre, rows):
    """The graph's input for one window: `rows` are the window's `lookback`
    consecutive CSV rows (dicts by column name, oldest first); returns
    float32 [lookback, features] as preprocessing.json describes."""
    import datetime
    import numpy as np
    fmt = pre["timestamp_format"].replace("%F", "%Y-%m-%d").replace("%T", "%H:%M:%S")
    feats = pre["features"]
    x = np.zeros((len(rows), len(feats)), np.float32)
    for t, row in enumerate(rows):
        when = datetime.datetime.strptime(row[pre["timestamp_column"]].strip(), fmt)
        if pre.get("hour_column"):
            when += datetime.timedelta(hours=int(float(row[pre["hour_column"]])))
        phase = {"hour": (when.hour * 3600 + when.minute * 60 + when.second) / 86400.0,
                 "weekday": (when.isoweekday() % 7) / 7.0,  # 0 = Sunday
                 "month": (when.month - 1) / 12.0}
        for f, feat in enumerate(feats):
            kind = feat["kind"]
            if kind == "numeric":
                raw = float(row[feat["column"]])
            elif kind == "one_hot":  # category null: the "unknown" slot
                value = row[feat["column"]].strip()
                known = [g["category"] for g in feats if g["kind"] == "one_hot" and
                         g["column"] == feat["column"] and g["category"] is not None]
                raw = float(value == feat["category"] if feat["category"] is not None else value not in known)
            elif kind == "category_index":  # 0 = unknown, i + 1 = categories[i]
                value = row[feat["column"]].strip()
                raw = float(feat["categories"].index(value) + 1 if value in feat["categories"] else 0)
            elif kind == "calendar":
                raw = getattr(math, feat["function"])(2 * math.pi * phase[feat["period"]])
            else:
                raise ValueError(f"feature {feat['name']}: unknown kind {kind!r}")
            x[t, f] = np.float32((raw - feat["mean"]) / feat["stddev"])
    return x


def _row_time(pre, fmt, row):
    """The row's time, or None when it has no readable one (a row the job's
    malformed_policy DROP dropped)."""
    import datetime
    try:
        when = datetime.datetime.strptime((row.get(pre["timestamp_column"]) or "").strip(), fmt)
        if pre.get("hour_column"):
            when += datetime.timedelta(hours=int(float(row.get(pre["hour_column"]) or "")))
        return when
    except ValueError:
        return None


def _row_complete(pre, row):
    """Whether every cell a feature reads holds a value (a numeric one a
    number): rows that are not were dropped or filled by the job's policies."""
    for feat in pre["features"]:
        if "column" not in feat:
            continue
        cell = row.get(feat["column"])
        if cell is None or not cell.strip():
            return False
        if feat["kind"] == "numeric":
            try:
                float(cell)
            except ValueError:
                return False
    return True


def check_preprocessing(args, model, x):
    """--csv with --times: rebuilds each window from the raw CSV rows with
    window_input() and compares it with the window Polis gave. Rows without
    a readable time are left out (dropped by malformed_policy DROP) and a
    repeated time keeps the row preprocessing.json's row_policies.duplicate
    says; windows that need a row the CSV lacks or a cell it leaves empty
    (filled or dropped by the job's missing-value policy) are counted and
    skipped."""
    import csv
    import datetime
    import numpy as np
    meta = {p.key: p.value for p in model.metadata_props}
    if "polis.preprocessing" not in meta:
        raise ValueError(f"{args.onnx}: no polis.preprocessing metadata (not a time-series forecaster)")
    pre = json.loads(meta["polis.preprocessing"])
    fmt = pre["timestamp_format"].replace("%F", "%Y-%m-%d").replace("%T", "%H:%M:%S")
    keep_last = pre.get("row_policies", {}).get("duplicate") == "KEEP_LAST"
    by_time, unreadable = {}, 0
    with open(args.csv, newline="") as f:
        for row in csv.DictReader(f):
            when = _row_time(pre, fmt, row)
            if when is None:
                unreadable += 1
            elif keep_last:
                by_time[when] = row
            else:
                by_time.setdefault(when, row)
    with open(args.times) as f:
        starts = [datetime.datetime.strptime(l.strip(), "%Y-%m-%d %H:%M:%S") for l in f if l.strip()]
    if len(starts) != x.shape[0]:
        raise ValueError(f"{args.times}: {len(starts)} times for {x.shape[0]} windows")
    step = datetime.timedelta(seconds=pre["frequency_seconds"])
    compared, skipped, worst = 0, 0, 0.0
    for i, start in enumerate(starts):
        rows = [by_time.get(start + k * step) for k in range(pre["lookback"])]
        if any(r is None or not _row_complete(pre, r) for r in rows):
            skipped += 1
            continue
        worst = max(worst, float(np.abs(window_input(pre, rows) - x[i]).max()))
        compared += 1
    return {"windows_compared": compared, "windows_skipped_filled_rows": skipped,
            "rows_without_a_time": unreadable, "max_abs_diff": worst}


def read_floats(path, what):
    import numpy as np
    data = np.fromfile(path, dtype="<f4")
    if data.size == 0:
        raise ValueError(f"{path}: no {what} (empty file)")
    return data


def check_windows(args, model):
    """--windows: the reference evaluator (and, where it can, OpenCV) on raw
    float32 inputs, against Polis's outputs."""
    import numpy as np
    input_dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim[1:]]
    per_window = int(np.prod(input_dims))
    output = args.output or model.graph.output[0].name
    try:
        x = read_floats(args.windows, "windows")
        polis = read_floats(args.polis_outputs, "outputs")
    except (OSError, ValueError) as e:
        print(f"check_onnx: {e}", file=sys.stderr)
        return 2
    if x.size % per_window != 0:
        print(f"check_onnx: {args.windows}: {x.size} floats is not a multiple of the model's input "
              f"{input_dims} ({per_window} floats a window)", file=sys.stderr)
        return 2
    n = x.size // per_window
    if polis.size % n != 0:
        print(f"check_onnx: {args.polis_outputs}: {polis.size} floats is not a multiple of the "
              f"{n} windows", file=sys.stderr)
        return 2
    k = polis.size // n
    x = x.reshape([n] + input_dims)
    polis = polis.reshape(n, k)
    ref = []
    try:
        for at in range(0, n, args.batch):
            ref.append(evaluate(model, {model.graph.input[0].name: x[at:at + args.batch]})[output].reshape(-1, k))
    except Unsupported as e:
        print(f"check_onnx: {args.onnx}: {e}", file=sys.stderr)
        return 1
    except (KeyError, ValueError) as e:
        print(f"check_onnx: {args.onnx}: the reference evaluator fails: {e}", file=sys.stderr)
        return 1
    ref = np.concatenate(ref)
    preprocessing = None
    if args.csv:
        try:
            preprocessing = check_preprocessing(args, model, x)
        except (OSError, ValueError, KeyError) as e:
            print(f"check_onnx: preprocessing check: {e}", file=sys.stderr)
            return 2
    diff = np.abs(ref - polis.astype(np.float64))
    worst = np.unravel_index(int(np.argmax(diff)), diff.shape)
    report = {
        "onnx": args.onnx,
        "onnx_version": onnx_version(),
        "checker": "ok (full_check)",
        "evaluator": "reference (numpy, ONNX operator semantics)",
        "output": output,
        "windows": int(n),
        "outputs": int(k),
        "max_abs_diff": float(diff.max()),
        "mean_abs_diff": float(diff.mean()),
        "worst": {"window": int(worst[0]), "output": int(worst[1]),
                  "polis": float(polis[worst]), "onnx": float(ref[worst])},
        "tolerance": args.tolerance,
        "opencv": try_opencv(args.onnx, x, polis, output, k, args.batch),
    }
    problems = []
    if preprocessing is not None:
        report["preprocessing"] = preprocessing
        if preprocessing["windows_compared"] == 0 or preprocessing["max_abs_diff"] > args.tolerance:
            problems.append(f"preprocessing.json applied to {args.csv} gives windows "
                            f"{preprocessing['max_abs_diff']:.3g} away from Polis's "
                            f"({preprocessing['windows_compared']} compared)")
    return finish(report, diff, args.tolerance,
                  f"the ONNX graph and Polis differ by {report['max_abs_diff']:.3g} > {args.tolerance:g} "
                  f"(window {worst[0]}, output {worst[1]})", problems)


def finish(report, diff, tolerance, mismatch, problems=()):
    """Sets report["ok"], prints the report line and what failed; the exit code."""
    import numpy as np
    within = bool(np.isfinite(diff).all()) and report["max_abs_diff"] <= tolerance
    report["ok"] = within and not problems
    print(json.dumps(report))
    for problem in ([] if within else [mismatch]) + list(problems):
        print(f"check_onnx: {problem}", file=sys.stderr)
    return 0 if report["ok"] else 1


def onnx_version():
    import onnx
    return onnx.__version__


def try_opencv(path, x, polis, output, k, batch):
    """OpenCV's result on the same inputs, or why it has none (informative:
    OpenCV 4.6 lacks some operators, e.g. Erf)."""
    import numpy as np
    try:
        import cv2
    except ImportError:
        return {"ran": False, "why": "python3-opencv is not installed"}
    try:
        net = cv2.dnn.readNetFromONNX(path)
        net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
        net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)
        outs = []
        for at in range(0, x.shape[0], batch):
            net.setInput(np.ascontiguousarray(x[at:at + batch], dtype=np.float32))
            outs.append(np.array(net.forward(output)).reshape(-1, k))
        got = np.concatenate(outs)
    except cv2.error as e:
        why = " ".join(l.strip().lstrip("> ").strip() for l in str(e).splitlines() if l.strip() not in ("", ">"))
        return {"ran": False, "version": cv2.__version__, "why": why or "cv2.error"}
    except ValueError as e:
        return {"ran": False, "version": cv2.__version__, "why": str(e)}
    diff = np.abs(got.astype(np.float64) - polis.astype(np.float64))
    return {"ran": True, "version": cv2.__version__, "max_abs_diff": float(diff.max())}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--onnx", required=True, help="model.onnx written by polis-registry export-onnx")
    ap.add_argument("--images", help="IDX images (gzip or raw), with --polis-probs")
    ap.add_argument("--polis-probs", help="raw float32 outputs of polis-registry predict --idx-images")
    ap.add_argument("--labels", help="IDX labels: also report both accuracies")
    ap.add_argument("--windows", help="raw float32 model inputs [n, <input shape>] (e.g. polis-registry "
                    "predict --csv ... --windows-out FILE), with --polis-outputs")
    ap.add_argument("--polis-outputs", help="raw float32 outputs [n, outputs] Polis gave for --windows")
    ap.add_argument("--csv", help="with --windows and --times: the raw CSV the windows were cut from; each "
                    "window is rebuilt from its rows as preprocessing.json says and compared too")
    ap.add_argument("--times", help="each window's first input time, one line each (polis-registry predict "
                    "--times-out)")
    ap.add_argument("--tolerance", type=float, default=1e-4, help="max abs difference allowed (default 1e-4)")
    ap.add_argument("--batch", type=int, default=500, help="images or windows per forward pass")
    ap.add_argument("--output", help="ONNX output to compare (default: probabilities for images, the "
                    "graph's first output for windows)")
    args = ap.parse_args()
    if bool(args.images) == bool(args.windows) or bool(args.images) != bool(args.polis_probs) or \
            bool(args.windows) != bool(args.polis_outputs):
        ap.print_usage(sys.stderr)
        print("check_onnx: give either --images with --polis-probs, or --windows with --polis-outputs",
              file=sys.stderr)
        return 2
    if bool(args.csv) != bool(args.times) or (args.csv and not args.windows):
        print("check_onnx: --csv and --times go together, with --windows", file=sys.stderr)
        return 2

    try:
        import numpy as np
        import onnx
        import onnx.checker
        if args.images:
            import cv2
    except ImportError as e:
        print(f"check_onnx: cannot import {e.name} (Debian: python3-numpy, python3-onnx, "
              f"python3-opencv; launch/install-deps.sh installs them)", file=sys.stderr)
        return SKIP

    try:
        model = onnx.load(args.onnx)
    except Exception as e:  # onnx raises several kinds
        print(f"check_onnx: {args.onnx}: cannot load: {e}", file=sys.stderr)
        return 2
    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as e:
        print(f"check_onnx: {args.onnx}: onnx.checker (full_check) refuses it: {e}", file=sys.stderr)
        return 1

    if args.windows:
        return check_windows(args, model)
    output = args.output or "probabilities"

    meta = {p.key: p.value for p in model.metadata_props}
    pre = meta.get("polis.input_preprocessing")
    m = re.fullmatch(r"\s*pixel \* (\S+) \+ (\S+)\s*", pre or "")
    if not m:
        print(f"check_onnx: {args.onnx}: metadata polis.input_preprocessing is {pre!r}, "
              f"expected 'pixel * SCALE + SHIFT'", file=sys.stderr)
        return 1
    scale, shift = np.float32(float(m.group(1))), np.float32(float(m.group(2)))
    input_dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim[1:]]

    try:
        images = read_idx(args.images)
    except (OSError, ValueError) as e:
        print(f"check_onnx: {e}", file=sys.stderr)
        return 2
    n = images.shape[0]
    per_image = int(np.prod(images.shape[1:]))
    if per_image != int(np.prod(input_dims)):
        print(f"check_onnx: {args.images}: an image has {per_image} values, the model takes "
              f"{input_dims}", file=sys.stderr)
        return 2
    polis = np.fromfile(args.polis_probs, dtype="<f4")
    if polis.size % n != 0:
        print(f"check_onnx: {args.polis_probs}: {polis.size} floats is not a multiple of the "
              f"{n} images", file=sys.stderr)
        return 2
    k = polis.size // n
    polis = polis.reshape(n, k)

    # As Polis does for integer inputs: float32(pixel) * scale + shift, in float32.
    x = images.reshape([n] + input_dims).astype(np.float32) * scale + shift
    try:
        net = cv2.dnn.readNetFromONNX(args.onnx)
    except cv2.error as e:
        print(f"check_onnx: OpenCV {cv2.__version__} cannot load {args.onnx}: {e}", file=sys.stderr)
        return 1
    net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)
    outs = []
    for at in range(0, n, args.batch):
        net.setInput(np.ascontiguousarray(x[at:at + args.batch]))
        outs.append(np.array(net.forward(output)).reshape(-1, k))
    opencv = np.concatenate(outs)
    if opencv.shape != polis.shape:
        print(f"check_onnx: OpenCV gives {opencv.shape}, Polis {polis.shape}", file=sys.stderr)
        return 1

    diff = np.abs(opencv.astype(np.float64) - polis.astype(np.float64))
    worst = np.unravel_index(int(np.argmax(diff)), diff.shape)
    report = {
        "onnx": args.onnx,
        "opencv": cv2.__version__,
        "onnx_version": onnx.__version__,
        "checker": "ok (full_check)",
        "images": int(n),
        "outputs": int(k),
        "max_abs_diff": float(diff.max()),
        "mean_abs_diff": float(diff.mean()),
        "worst": {"image": int(worst[0]), "class": int(worst[1]),
                  "polis": float(polis[worst]), "opencv": float(opencv[worst])},
        "argmax_agreement": float(np.mean(np.argmax(opencv, 1) == np.argmax(polis, 1))),
        "tolerance": args.tolerance,
    }
    if args.labels:
        labels = read_idx(args.labels)[:n]
        report["accuracy_polis"] = float(np.mean(np.argmax(polis, 1) == labels))
        report["accuracy_opencv"] = float(np.mean(np.argmax(opencv, 1) == labels))
    return finish(report, diff, args.tolerance,
                  f"OpenCV and Polis differ by {report['max_abs_diff']:.3g} > {args.tolerance:g} "
                  f"(image {worst[0]}, class {worst[1]})")


if __name__ == "__main__":
    sys.exit(main())
