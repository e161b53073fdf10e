// polis-grpc-load: a closed-loop load generator for OIP v2 ModelInfer over
// gRPC, the gRPC twin of wrk in benchmarks/serving.sh. C connections (one
// channel each), each with one call in flight; one raw input tensor per
// call. Prints wrk's lines that serving_sweep.sh reads (Requests/sec, the
// latency distribution) plus p99.9, and exits 1 if any call failed.
//
//   polis-grpc-load --port P --model M --input FILE --datatype UINT8 --shape 1,1,28,28
//                   [--input-name input] [--output-name probabilities]
//                   [--connections 16] [--duration 5]
// A BYTES input (a forecaster's raw CSV `rows`) is given as the protocol's
// raw contents: each element a 4-byte little-endian length, then its bytes.
#include <grpcpp/grpcpp.h>

#include <CLI/CLI.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <vector>

#include "registry/proto/grpc_predict_v2.grpc.pb.h"

namespace {

using Clock = std::chrono::steady_clock;
namespace pb = ::inference;

struct Slot {
  std::unique_ptr<pb::GRPCInferenceService::Stub> stub;
  std::unique_ptr<grpc::ClientContext> ctx;
  pb::ModelInferResponse resp;
  Clock::time_point sent;
};

struct Load {
  pb::ModelInferRequest req;
  Clock::time_point end;
  std::mutex mu;
  std::condition_variable cv;
  std::vector<double> latencies_us;  // under mu
  int64_t errors = 0;
  std::string first_error;
  int running = 0;

  void Send(Slot* s) {
    s->ctx = std::make_unique<grpc::ClientContext>();
    s->resp.Clear();
    s->sent = Clock::now();
    s->stub->async()->ModelInfer(s->ctx.get(), &req, &s->resp, [this, s](grpc::Status st) {
      const auto now = Clock::now();
      {
        std::lock_guard<std::mutex> lock(mu);
        if (st.ok()) {
          latencies_us.push_back(std::chrono::duration<double, std::micro>(now - s->sent).count());
        } else if (errors++ == 0) {
          first_error = st.error_message();
        }
      }
      if (now < end) return Send(s);
      std::lock_guard<std::mutex> lock(mu);
      if (--running == 0) cv.notify_all();
    });
  }
};

std::string Ms(double us) {
  char b[32];
  if (us < 1000) std::snprintf(b, sizeof(b), "%.2fus", us);
  else std::snprintf(b, sizeof(b), "%.2fms", us / 1000);
  return b;
}

}  // namespace

int main(int argc, char** argv) {
  int port = 0, connections = 16;
  double duration = 5;
  std::string model, input, datatype = "UINT8", shape_text, input_name = "input", output_name = "probabilities";
  CLI::App app{"polis-grpc-load: closed-loop OIP v2 gRPC ModelInfer load"};
  app.add_option("--port", port, "the server's gRPC port (127.0.0.1)")->required();
  app.add_option("--model", model, "model name")->required();
  app.add_option("--input", input, "file with the raw input tensor bytes")->required();
  app.add_option("--datatype", datatype, "the input's datatype")->capture_default_str();
  app.add_option("--shape", shape_text, "the input's shape, e.g. 1,1,28,28")->required();
  app.add_option("--input-name", input_name, "the input tensor's name")->capture_default_str();
  app.add_option("--output-name", output_name, "the output to request")->capture_default_str();
  app.add_option("--connections", connections, "channels, one call in flight each")->capture_default_str();
  app.add_option("--duration", duration, "seconds")->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  std::ifstream f(input, std::ios::binary);
  if (!f) {
    std::fprintf(stderr, "polis-grpc-load: cannot read --input '%s'\n", input.c_str());
    return 2;
  }
  const std::string bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  Load load;
  load.req.set_model_name(model);
  auto* t = load.req.add_inputs();
  t->set_name(input_name);
  t->set_datatype(datatype);
  std::stringstream ss(shape_text);
  for (std::string d; std::getline(ss, d, ',');) t->add_shape(std::stoll(d));
  load.req.add_raw_input_contents(bytes);
  load.req.add_outputs()->set_name(output_name);

  std::vector<Slot> slots(connections);
  for (int i = 0; i < connections; ++i) {
    grpc::ChannelArguments args;
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);  // a TCP connection per channel
    args.SetInt("polis.load.channel", i);
    slots[i].stub = pb::GRPCInferenceService::NewStub(grpc::CreateCustomChannel(
        "127.0.0.1:" + std::to_string(port), grpc::InsecureChannelCredentials(), args));
  }
  // Warm: one call per channel (connects), not counted.
  for (auto& s : slots) {
    grpc::ClientContext ctx;
    pb::ModelInferResponse resp;
    grpc::Status st = s.stub->ModelInfer(&ctx, load.req, &resp);
    if (!st.ok()) {
      std::fprintf(stderr, "polis-grpc-load: ModelInfer failed: %s\n", st.error_message().c_str());
      return 1;
    }
  }
  const auto start = Clock::now();
  load.end = start + std::chrono::microseconds(static_cast<int64_t>(duration * 1e6));
  load.running = connections;
  for (auto& s : slots) load.Send(&s);
  {
    std::unique_lock<std::mutex> lock(load.mu);
    load.cv.wait(lock, [&] { return load.running == 0; });
  }
  const double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
  std::vector<double>& l = load.latencies_us;
  std::sort(l.begin(), l.end());
  auto pct = [&](double p) {
    return l.empty() ? 0.0 : l[std::min(l.size() - 1, static_cast<size_t>(p / 100 * l.size()))];
  };
  std::printf("polis-grpc-load: %d connections, %.0f s, model %s\n", connections, duration, model.c_str());
  std::printf("  Latency Distribution\n");
  for (double p : {50.0, 75.0, 90.0, 99.0})
    std::printf("  %5.0f%%  %s\n", p, Ms(pct(p)).c_str());
  std::printf("  p99.9 %.0f us\n  max %.0f us\n", pct(99.9), l.empty() ? 0.0 : l.back());
  std::printf("  %zu requests in %.2fs\n", l.size(), elapsed);
  std::printf("Requests/sec: %.2f\n", l.size() / elapsed);
  if (load.errors) {
    std::printf("Non-2xx or errors: %lld (first: %s)\n", static_cast<long long>(load.errors),
                load.first_error.c_str());
    return 1;
  }
  return 0;
}
