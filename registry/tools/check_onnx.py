#!/usr/bin/python3
"""Checks an exported model.onnx against Polis's own outputs.

1. onnx.checker.check_model(full_check=True) (Debian: python3-onnx);
2. OpenCV's DNN module (python3-opencv) loads the model and runs every image
   of an IDX file, preprocessed as the ONNX metadata says
   (polis.input_preprocessing = "pixel * SCALE + SHIFT");
3. its class probabilities are compared with those Polis served for the same
   images (`polis-registry predict ... --out FILE`: raw float32, images x classes).

    registry/tools/check_onnx.py --onnx ROOT/fashion_cnn/1/model.onnx \\
        --images /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz \\
        --polis-probs probs.bin [--labels t10k-labels-idx1-ubyte.gz] [--tolerance 1e-4]

Prints one JSON line (max_abs_diff, images, argmax agreement, ...).
Exit codes: 0 within tolerance, 1 a check failed, 2 usage or unreadable input,
77 python3-onnx, python3-opencv or numpy missing (the tests' "skip").
"""
import argparse
import gzip
import json
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


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--onnx", required=True, help="model.onnx written by polis-registry export-onnx")
    ap.add_argument("--images", required=True, help="IDX images (gzip or raw)")
    ap.add_argument("--polis-probs", required=True, help="raw float32 outputs of polis-registry predict")
    ap.add_argument("--labels", help="IDX labels: also report both accuracies")
    ap.add_argument("--tolerance", type=float, default=1e-4, help="max abs difference allowed (default 1e-4)")
    ap.add_argument("--batch", type=int, default=500, help="images per OpenCV forward pass")
    ap.add_argument("--output", default="probabilities", help="ONNX output to compare (default probabilities)")
    args = ap.parse_args()

    try:
        import numpy as np
        import onnx
        import onnx.checker
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
        outs.append(np.array(net.forward(args.output)).reshape(-1, k))
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
    ok = bool(np.isfinite(diff).all()) and report["max_abs_diff"] <= args.tolerance
    report["ok"] = ok
    print(json.dumps(report))
    if not ok:
        print(f"check_onnx: OpenCV and Polis differ by {report['max_abs_diff']:.3g} > "
              f"{args.tolerance:g} (image {worst[0]}, class {worst[1]})", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
