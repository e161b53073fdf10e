#!/usr/bin/env bash
# Installs the Debian 12 packages Polis needs to build, run and test.
# Idempotent: packages already present are not touched; apt-get runs only when
# something is missing. Needs root (or sudo) the first time.
set -euo pipefail

PACKAGES=(
  build-essential cmake pkg-config git ca-certificates
  openmpi-bin libopenmpi-dev
  libprotobuf-dev protobuf-compiler
  # OIP v2 over gRPC (registry/grpc_service.h): the C++ library and
  # grpc_cpp_plugin (CMake's gRPC config needs both), and Python's grpcio
  # with grpc_python_plugin for the test's independent client.
  libgrpc++-dev protobuf-compiler-grpc python3-grpcio
  libboost-dev
  libdnnl-dev
  zlib1g-dev libssl-dev
  # The openssl CLI: the TLS tests make their CA and certificates with it.
  openssl
  # Image decoding for SHARDS datasets and polis-data (docs/datasets.md).
  libpng-dev libjpeg62-turbo-dev
  nlohmann-json3-dev libsimdjson-dev libcli11-dev libfmt-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  dataset-fashion-mnist
  # Services the tests start on loopback: Prometheus, headless Chromium, a
  # single-node Slurm with munge; the emulated hosts of the multi-host tests
  # (network namespaces, veth, tc: launch/cluster/emucluster) and their
  # multi-node Slurm (emucluster up --slurm: slurm-wlm, munge, nsenter).
  prometheus chromium slurm-wlm munge iproute2 util-linux
  # ONNX export of published models, and the test that checks the export
  # with onnx.checker and OpenCV's DNN module (registry/tools/check_onnx.py).
  libonnx-dev python3-numpy python3-onnx python3-opencv
  # SimGrid's SMPI (smpicxx, smpirun): the simulation build of the
  # collectives and parameter-server rounds (-DPOLIS_SIMULATION=ON,
  # benchmarks/scaling/, docs/scaling.md).
  libsimgrid-dev
)
# Extra groups: "bench" adds the PyTorch peer used by benchmarks/.
if [[ " $* " == *" bench "* ]]; then
  PACKAGES+=(python3-torch python3-pil wrk)
fi

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
if ((${#missing[@]} == 0)); then
  exit 0
fi
echo "polis: installing missing packages: ${missing[*]}" >&2
SUDO=""
if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
