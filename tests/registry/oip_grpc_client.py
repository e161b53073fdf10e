#!/usr/bin/python3
"""An OIP v2 gRPC client that is not Polis' own, for tests/registry/grpc_test.cc.

Generates Python stubs from the protocol's .proto with protoc and
grpc_python_plugin (Debian: protobuf-compiler, protobuf-compiler-grpc), calls
polis-registry's gRPC port with grpcio (Debian: python3-grpcio) and prints one
JSON object with what it saw:

  oip_grpc_client.py --port P --proto registry/proto/grpc_predict_v2.proto
      --model M --input FILE (float32 rows x elements) --shape 2,1,8,8
      [--token T] [--bad-token T] [--ca CA.pem [--host NAME]] [--classification K]

With --classification K it also asks for the top K classes of the first
row (the classification extension) and prints the "score:index[:label]"
strings it got.

With --ca the channel is TLS (grpc.ssl_channel_credentials), trusting only
that CA, to --host (default localhost: the name the certificate must hold).

Exit 3 when grpcio or the stub generators are missing (the test decides
whether that skips or fails).
"""
import argparse
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--proto", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--input", required=True)
    ap.add_argument("--shape", required=True)
    ap.add_argument("--token", default="")
    ap.add_argument("--bad-token", default="")
    ap.add_argument("--ca", default="", help="TLS: PEM file of the CA to trust")
    ap.add_argument("--host", default="", help="host to connect to (default 127.0.0.1, with --ca localhost)")
    ap.add_argument("--classification", type=int, default=0, help="also ask for the top K classes")
    a = ap.parse_args()

    try:
        import grpc  # noqa: F401
    except ImportError as e:
        print(f"oip_grpc_client: grpcio is missing ({e}); apt-get install python3-grpcio", file=sys.stderr)
        return 3
    protoc, plugin = shutil.which("protoc"), shutil.which("grpc_python_plugin")
    if not protoc or not plugin:
        print("oip_grpc_client: protoc or grpc_python_plugin is missing; apt-get install "
              "protobuf-compiler protobuf-compiler-grpc", file=sys.stderr)
        return 3
    gen = tempfile.mkdtemp(prefix="oip-stubs-")
    proto_dir, proto_name = os.path.split(os.path.abspath(a.proto))
    subprocess.run([protoc, "-I", proto_dir, f"--python_out={gen}", f"--grpc_out={gen}",
                    f"--plugin=protoc-gen-grpc={plugin}", proto_name], check=True)
    sys.path.insert(0, gen)
    import grpc
    import grpc_predict_v2_pb2 as pb
    import grpc_predict_v2_pb2_grpc as pb_grpc

    shape = [int(d) for d in a.shape.split(",")]
    raw = open(a.input, "rb").read()
    values = list(struct.unpack(f"<{len(raw) // 4}f", raw))
    if a.ca:
        with open(a.ca, "rb") as f:
            credentials = grpc.ssl_channel_credentials(root_certificates=f.read())
        channel = grpc.secure_channel(f"{a.host or 'localhost'}:{a.port}", credentials)
    else:
        channel = grpc.insecure_channel(f"{a.host or '127.0.0.1'}:{a.port}")
    stub = pb_grpc.GRPCInferenceServiceStub(channel)
    md = [("authorization", f"Bearer {a.token}")] if a.token else []
    out = {}

    out["live"] = stub.ServerLive(pb.ServerLiveRequest(), metadata=md, timeout=20).live
    out["ready"] = stub.ServerReady(pb.ServerReadyRequest(), metadata=md, timeout=20).ready
    sm = stub.ServerMetadata(pb.ServerMetadataRequest(), metadata=md, timeout=20)
    out["server"] = {"name": sm.name, "version": sm.version, "extensions": list(sm.extensions)}
    out["model_ready"] = stub.ModelReady(pb.ModelReadyRequest(name=a.model), metadata=md, timeout=20).ready
    mm = stub.ModelMetadata(pb.ModelMetadataRequest(name=a.model), metadata=md, timeout=20)
    out["metadata"] = {
        "name": mm.name, "versions": list(mm.versions), "platform": mm.platform,
        "inputs": [{"name": t.name, "datatype": t.datatype, "shape": list(t.shape)} for t in mm.inputs],
        "outputs": [{"name": t.name, "datatype": t.datatype, "shape": list(t.shape)} for t in mm.outputs]}

    def infer_request(model=a.model, tensor_shape=shape, typed=False, data=raw):
        req = pb.ModelInferRequest(model_name=model, id="grpc-1")
        t = req.inputs.add(name="input", datatype="FP32", shape=tensor_shape)
        if typed:
            t.contents.fp32_contents.extend(struct.unpack(f"<{len(data) // 4}f", data))
        else:
            req.raw_input_contents.append(data)
        for name in ("probabilities", "logits"):
            req.outputs.add(name=name)
        return req

    def decode(resp):
        r = {"model_name": resp.model_name, "model_version": resp.model_version, "id": resp.id,
             "outputs": {}}
        for t, b in zip(resp.outputs, resp.raw_output_contents):
            r["outputs"][t.name] = {"datatype": t.datatype, "shape": list(t.shape),
                                    "data": list(struct.unpack(f"<{len(b) // 4}f", b))}
        return r

    out["infer_raw"] = decode(stub.ModelInfer(infer_request(), metadata=md, timeout=20))
    out["infer_typed"] = decode(stub.ModelInfer(infer_request(typed=True), metadata=md, timeout=20))

    if a.classification > 0:
        req = pb.ModelInferRequest(model_name=a.model, id="grpc-classes")
        req.inputs.add(name="input", datatype="FP32", shape=shape)
        req.raw_input_contents.append(raw)
        o = req.outputs.add(name="probabilities")
        o.parameters["classification"].int64_param = a.classification
        resp = stub.ModelInfer(req, metadata=md, timeout=20)
        t, b = resp.outputs[0], resp.raw_output_contents[0]
        strings = []
        while b:
            n = struct.unpack("<I", b[:4])[0]
            strings.append(b[4:4 + n].decode("utf-8"))
            b = b[4 + n:]
        out["classification"] = {"datatype": t.datatype, "shape": list(t.shape), "data": strings}

    def code_of(call):
        try:
            call()
            return {"code": "OK", "message": ""}
        except grpc.RpcError as e:
            return {"code": e.code().name, "message": e.details()}

    bad_md = [("authorization", f"Bearer {a.bad_token}")]
    out["bad_token"] = code_of(lambda: stub.ModelInfer(infer_request(), metadata=bad_md, timeout=20))
    out["no_token"] = code_of(lambda: stub.ModelInfer(infer_request(), timeout=20))
    out["unknown_model"] = code_of(
        lambda: stub.ModelInfer(infer_request(model="no_such_model"), metadata=md, timeout=20))
    wrong = list(shape)
    wrong[-1] += 1
    out["wrong_shape"] = code_of(
        lambda: stub.ModelInfer(infer_request(tensor_shape=wrong), metadata=md, timeout=20))
    out["unknown_model_ready"] = code_of(
        lambda: stub.ModelReady(pb.ModelReadyRequest(name="no_such_model"), metadata=md, timeout=20))
    json.dump(out, sys.stdout)
    print()
    shutil.rmtree(gen, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
