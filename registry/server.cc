#include "registry/server.h"

#include <malloc.h>
#include <sched.h>

#include <algorithm>
#include <cmath>
#include <charconv>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <filesystem>
#include <mutex>
#include <optional>
#include <thread>

#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include "common/data/csv.h"
#include "common/data/timeseries.h"
#include "common/fs.h"
#include "common/log.h"
#include "common/thread_name.h"
#include "polis_config.h"
#include "registry/aliases.h"
#include "common/echo.h"
#include "common/http/request_target.h"
#include "registry/explain_queue.h"
#include "registry/grpc_service.h"
#include "registry/http.h"
#include "registry/image_input.h"
#include "registry/metrics.h"
#include "registry/model_card.h"
#include "registry/repository.h"
#include "registry/store.h"
#include "registry/tensor_json.h"
#include "registry/tokens.h"

namespace polis::registry {
namespace {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

std::vector<std::string> OutputNames(const ServedVersion& sv) { return OutputNamesOf(sv.header()); }

std::string Dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

HttpResponse JsonResponse(int status, const json& j) {
  return HttpResponse{status, "application/json", Dump(j), {}};
}

// Every error leaves through here: whatever a message echoes, the body stays
// small and no NUL or control character cuts it where it is printed.
HttpResponse ErrorResponse(int status, const std::string& message) {
  return JsonResponse(status, json{{"error", ClipMessage(message)}});
}

// Triton's mapping of failures to HTTP status codes.
int HttpStatusFor(const Status& st) {
  switch (st.code()) {
    case Code::kOk: return 200;
    case Code::kInvalidArgument: return 400;
    case Code::kNotFound: return 404;
    case Code::kAlreadyExists: return 409;
    case Code::kFailedPrecondition: return 409;
    case Code::kTimeout: return 503;
    case Code::kCancelled: return 503;
    case Code::kUnimplemented: return 501;
    case Code::kRemote: return 502;
    case Code::kDataLoss:
    case Code::kIo:
    case Code::kInternal: return 500;
  }
  return 500;
}

HttpResponse StatusResponse(const Status& st) { return ErrorResponse(HttpStatusFor(st), st.message()); }

// Blocking work (loads, publishes, alias writes, file reads) off the I/O
// threads. Stop() runs what is queued, then joins.
class TaskRunner {
 public:
  void Start(int threads) {
    for (int i = 0; i < std::max(1, threads); ++i)
      threads_.emplace_back([this, i] {
        SetThreadName(fmt::format("tasks/{}", i));
        std::unique_lock<std::mutex> lock(mu_);
        while (true) {
          cv_.wait(lock, [&] { return stop_ || !tasks_.empty(); });
          if (tasks_.empty()) return;
          auto task = std::move(tasks_.front());
          tasks_.pop_front();
          lock.unlock();
          task();
          lock.lock();
        }
      });
  }
  void Submit(std::function<void()> task) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      tasks_.push_back(std::move(task));
    }
    cv_.notify_one();
  }
  void Stop() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    for (auto& t : threads_) t.join();
    threads_.clear();
  }
  ~TaskRunner() { Stop(); }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> tasks_;
  bool stop_ = false;
  std::vector<std::thread> threads_;
};

using Target = http::RequestTarget;
using http::ParseTarget;

bool IsUpload(std::string_view method, std::string_view target) {
  if (method != "POST") return false;
  std::string_view path = target.substr(0, target.find('?'));
  while (!path.empty() && path.back() == '/') path.remove_suffix(1);
  constexpr std::string_view kPrefix = "/v2/registry/models/", kSuffix = "/versions";
  return path.size() > kPrefix.size() + kSuffix.size() && path.substr(0, kPrefix.size()) == kPrefix &&
         path.substr(path.size() - kSuffix.size()) == kSuffix;
}

// Explanations are watched for a client that hangs up (they may take long).
bool IsExplain(std::string_view method, std::string_view target) {
  std::string_view path = target.substr(0, target.find('?'));
  while (!path.empty() && path.back() == '/') path.remove_suffix(1);
  constexpr std::string_view kSuffix = "/explain";
  return method == "POST" && path.size() > kSuffix.size() &&
         path.substr(path.size() - kSuffix.size()) == kSuffix;
}

StatusOr<json> ParseJsonBody(const std::string& body, bool allow_empty) {
  if (body.empty()) {
    if (allow_empty) return json::object();
    return InvalidArgument("the request body is empty; expected a JSON object");
  }
  try {
    json j = json::parse(body);
    if (!j.is_object()) return InvalidArgument("the request body must be a JSON object, got {}", j.type_name());
    return j;
  } catch (const json::parse_error& e) {
    return InvalidArgument("the request body is not valid JSON: {}", EchoValue(e.what(), 200));
  }
}

// The CPUs this process may run on: its affinity mask, or the machine's
// count where the mask cannot be read (over 1024 CPUs).
int UsableCpus() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) != 0)
    return static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  return std::max(1, CPU_COUNT(&set));
}

}  // namespace

// ------------------------------------------------------------------ Impl

struct RegistryServer::Impl {
  ServerOptions opt;
  Metrics metrics;
  TokenSet tokens;
  std::unique_ptr<Repository> repo;
  TaskRunner runner;
  std::unique_ptr<ExplainQueue> explainer;
  std::unique_ptr<HttpServer> http;
  std::unique_ptr<HttpServer> plain;  // the plain-HTTP port beside TLS, if any
  std::unique_ptr<GrpcFrontend> grpc;
  std::atomic<HttpServer*> http_ptr{nullptr};  // http, for the batching threads
  std::atomic<HttpServer*> plain_ptr{nullptr}; // plain, likewise
  std::atomic<int64_t> decoding{0};            // infer requests not yet queued
  std::atomic<int64_t> inferring{0};           // infer requests not yet answered
  int usable_cpus = UsableCpus();              // this process may run on, at start
  bool started = false, stopped = false;

  // Under load, whether each HTTP I/O thread runs the batch of what it read
  // itself (CallerRuns::kLater) instead of handing it to an inference
  // thread: only with an idle instance for each I/O thread, and when either
  // there are several I/O threads (their batches compute at once) or the
  // process may use no CPU beyond them (taskset, a cgroup's cpuset), where
  // an inference thread could only take turns with the I/O thread on its
  // core (docs/design/serving-threads.md).
  bool IoThreadsRunBatches(const ServedVersion& sv) const {
    return sv.options().instances >= opt.threads && (opt.threads > 1 || usable_cpus <= opt.threads);
  }

  // ---- helpers

  bool TlsOn() const { return !opt.tls_cert_file.empty(); }

  bool Authorize(const HttpRequest& req, const Target& t, Scope scope, const std::string& model,
                 const Respond& done, std::string* who) {
    if (!req.tls && TlsOn() && (scope == kScopePublish || scope == kScopeAdmin)) {
      // Refused before the token is looked at: it crossed the network in the clear.
      const std::string why = fmt::format(
          "{} {} is a write, which this plain-HTTP port refuses: use https on the TLS port "
          "(https://{}:{})", req.method, t.path, opt.host, http ? http->port() : opt.port);
      POLIS_LOG(kWarn, kRegistry, "403 {} {} from {} on the plain-HTTP port (writes need TLS)", req.method,
                t.path, req.remote);
      metrics.CountAuthRefusal(403);
      done(ErrorResponse(403, why));
      return false;
    }
    AuthDecision d = tokens.Authorize(req.authorization, scope, model);
    if (d.outcome == AuthOutcome::kAllowed) {
      if (who) *who = d.who;
      return true;
    }
    const int code = d.outcome == AuthOutcome::kUnauthenticated ? 401 : 403;
    POLIS_LOG(kWarn, kRegistry, "{} {} {} from {} (caller '{}'): {}", code, req.method, t.path,
              req.remote, d.who, d.message);
    metrics.CountAuthRefusal(code);
    HttpResponse r = ErrorResponse(code, d.message);
    if (code == 401) r.headers.emplace_back("WWW-Authenticate", "Bearer realm=\"polis-registry\"");
    done(std::move(r));
    return false;
  }

  // Runs `cont` with the loaded version `ref` of `model`; loads it on the
  // runner first if needed.
  void WithVersion(const std::string& model, const std::string& ref, const Respond& done,
                   std::function<void(std::shared_ptr<ServedVersion>)> cont) {
    auto r = repo->Acquire(model, ref);
    if (r.ok() && *r) return cont(*r);
    if (!r.ok() && (r.status().code() != Code::kNotFound ||
                    !std::filesystem::is_directory(opt.root + "/" + model)))
      return done(StatusResponse(r.status()));
    // Not loaded (or not yet seen by the poller): load off the I/O thread.
    runner.Submit([this, model, ref, done, cont = std::move(cont)] {
      auto l = repo->Load(model, ref);
      if (!l.ok()) {
        const Status& st = l.status();
        const bool client = st.code() == Code::kNotFound || st.code() == Code::kInvalidArgument;
        return done(ErrorResponse(client ? HttpStatusFor(st) : 503,
                                  client ? st.message()
                                         : fmt::format("model '{}' version '{}' is not ready: {}",
                                                       model, ref, st.message())));
      }
      cont(*l);
    });
  }

  json ModelMetadata(const ServedVersion& sv, const ModelStatus* ms, bool version_route) {
    std::vector<int64_t> in_shape{-1};
    in_shape.insert(in_shape.end(), sv.input_shape().begin(), sv.input_shape().end());
    std::vector<int64_t> out_shape{-1};
    out_shape.insert(out_shape.end(), sv.output_shape().begin(), sv.output_shape().end());
    json versions = json::array();
    if (version_route || !ms) versions.push_back(std::to_string(sv.version()));
    else
      for (int64_t v : ms->versions) versions.push_back(std::to_string(v));
    json aliases = json::object();
    if (ms)
      for (const auto& [a, v] : ms->aliases) aliases[a] = std::to_string(v);
    json metrics_json = json::object();
    for (const auto& m : sv.header().metric()) metrics_json[m.name()] = m.value();
    json outputs = json::array();
    const proto::ArtifactHeader& h = sv.header();
    for (const auto& name : OutputNames(sv))
      outputs.push_back(json{{"name", name}, {"datatype", "FP32"}, {"shape", out_shape},
                             {"description", TensorDescription(h, name)}});
    json inputs =
        json::array({json{{"name", kInputName}, {"datatype", "FP32"}, {"shape", in_shape}}});
    const auto image = ImageInputOf(sv.header());
    if (image)
      inputs.push_back(json{{"name", kImageInputName}, {"datatype", "BYTES"}, {"shape", json::array({-1})}});
    if (sv.timeseries()) {
      const proto::TimeSeriesSpec& ts = sv.timeseries_spec();
      inputs.push_back(json{{"name", kRowsInput}, {"datatype", "BYTES"},
                            {"shape", json::array({-1, ts.lookback()})}});
      inputs.push_back(json{{"name", kHeaderInput}, {"datatype", "BYTES"}, {"shape", json::array({-1})},
                            {"optional", !sv.timeseries_header().empty()}});
    }
    for (json& in : inputs) in["description"] = TensorDescription(h, in["name"].get<std::string>());
    json meta = json{
        {"name", sv.model_name()},
        {"versions", versions},
        {"platform", "polis_onednn"},
        {"inputs", inputs},
        {"outputs", outputs},
        {"parameters",
         {{"version", std::to_string(sv.version())},
          {"aliases", aliases},
          {"sha256", sv.sha256()},
          {"max_batch_size", sv.options().max_batch_size},
          {"task", sv.classifier() ? "classification" : "regression"},
          {"max_queue_delay_us", sv.options().max_queue_delay_us},
          {"precision", sv.options().precision},
          {"instances", sv.options().instances},
          {"bf16_layers", sv.bf16_layers()},
          {"accepted_input_datatypes", {"FP16", "FP32", "FP64", "INT8", "INT16", "INT32", "INT64",
                                        "UINT8", "UINT16", "UINT32", "UINT64"}},
          {"integer_input_scale", sv.input_scale()},
          {"integer_input_shift", sv.input_shift()},
          {"metrics", metrics_json},
          {"class_names", json(std::vector<std::string>(h.class_names().begin(), h.class_names().end()))},
          {"description", h.job().model_card().description()},
          {"input_description", h.input_description()},
          {"output_description", h.output_description()}}},
    };
    if (image)
      meta["parameters"]["image"] = json{
          {"channels", image->channels},
          {"height", image->height},
          {"width", image->width},
          {"encodings", {"PNG", "JPEG"}},
          {"preprocessing", fmt::format("decoded to {} channel{}, resized (bilinear) to {}x{} when the size "
                                        "differs, value * {} + {}",
                                        image->channels, image->channels == 1 ? "" : "s", image->height,
                                        image->width, image->scale, image->shift)}};
    if (sv.timeseries()) {
      const proto::TimeSeriesSpec& ts = sv.timeseries_spec();
      json header = sv.timeseries_header();
      meta["parameters"]["timeseries"] = json{
          {"lookback", ts.lookback()},
          {"horizon", ts.horizon()},
          {"frequency_seconds", ts.frequency_seconds()},
          {"timestamp_column", ts.timestamp_column()},
          {"timestamp_format", ts.timestamp_format()},
          {"hour_column", ts.has_hour_column() ? json(ts.hour_column()) : json(nullptr)},
          {"target_column", ts.target_column()},
          {"target_mean", sv.timeseries_stats().target_mean},
          {"target_stddev", sv.timeseries_stats().target_stddev},
          {"feature_names", sv.timeseries_stats().feature_names},
          {"header", header.empty() ? json(nullptr) : header},
          {"predictions", "original units of the target for input 'rows'; standardised for 'input'"}};
    }
    return meta;
  }

  // What a model's infer request may name, for refusals: "'input' (FP32,
  // shape [-1,3,16,16]) or 'image' (BYTES, shape [-1], PNG or JPEG files)".
  static std::string InputsTaken(const ServedVersion& sv) {
    std::vector<int64_t> shape{-1};
    shape.insert(shape.end(), sv.input_shape().begin(), sv.input_shape().end());
    std::string out = fmt::format("'{}' (FP32, shape {})", kInputName, ShapeJson(shape));
    if (ImageInputOf(sv.header()))
      out += fmt::format(" or '{}' (BYTES, shape [-1], PNG or JPEG files)", kImageInputName);
    if (sv.timeseries())
      out += fmt::format(" or '{}' (BYTES CSV lines) with an optional '{}'", kRowsInput, kHeaderInput);
    return out;
  }

  // Raw CSV rows of a time-series model: input 'rows' (BYTES, [N] or [B, N]
  // CSV lines, N lines a window) and optionally 'header' (BYTES, column
  // names), preprocessed window by window with the job's row policies and
  // the artifact's stats.
  // Either may come as binary data (`slices`, per input; gRPC sends BYTES so).
  StatusOr<DecodedInput> DecodeTimeSeriesRows(
      const json& inputs, const std::vector<std::optional<std::string_view>>& slices,
      const ServedVersion& sv, bool* too_large) {
    const json* rows_t = nullptr;
    const json* header_t = nullptr;
    const std::string_view* rows_bin = nullptr;
    const std::string_view* header_bin = nullptr;
    for (size_t i = 0; i < inputs.size(); ++i) {
      const json& t = inputs[i];
      if (!t.is_object() || !t.contains("name") || !t["name"].is_string())
        return InvalidArgument("inputs[{}] needs a \"name\" (string)", i);
      const std::string name = t["name"].get<std::string>();
      const json** slot = name == kRowsInput ? &rows_t : name == kHeaderInput ? &header_t : nullptr;
      if (!slot)
        return InvalidArgument(
            "unknown input '{}' next to '{}'; time-series model '{}' takes '{}' (BYTES CSV lines) "
            "with an optional '{}', or '{}' (FP32, already preprocessed) alone",
            EchoValue(name), kRowsInput, sv.model_name(), kRowsInput, kHeaderInput, kInputName);
      if (*slot) return InvalidArgument("input '{}' given twice", name);
      *slot = &t;
      if (i < slices.size() && slices[i]) (slot == &rows_t ? rows_bin : header_bin) = &*slices[i];
    }
    if (!rows_t)
      return InvalidArgument("input '{}' needs input '{}' (BYTES, CSV lines)", kHeaderInput, kRowsInput);
    auto check_bytes = [](const json& t, const char* name, bool binary) -> Status {
      auto dt = t.find("datatype");
      if (dt == t.end() || !dt->is_string() || dt->get<std::string>() != "BYTES")
        return InvalidArgument("input '{}': datatype must be \"BYTES\" (strings), got {}", name,
                               dt == t.end() ? "none" : EchoValue(Dump(*dt)));
      if (!binary && (!t.contains("data") || !t["data"].is_array()))
        return InvalidArgument("input '{}': \"data\" must be an array of strings", name);
      return Status::Ok();
    };
    POLIS_RETURN_IF_ERROR(check_bytes(*rows_t, kRowsInput, rows_bin != nullptr));
    const proto::TimeSeriesSpec& spec = sv.timeseries_spec();
    const int64_t lookback = spec.lookback();
    // Shape: [N] or [B, N].
    auto sh = rows_t->find("shape");
    std::vector<int64_t> shape;
    if (sh == rows_t->end() || !sh->is_array() || sh->empty() || sh->size() > 2)
      return InvalidArgument("input '{}': \"shape\" must be [N] or [B, N]: N CSV lines a window that "
                             "give lookback = {} consecutive steps under the job's row policies",
                             kRowsInput, lookback);
    for (const auto& d : *sh) {
      if (!d.is_number_integer() || d.get<int64_t>() < 1)
        return InvalidArgument("input '{}': shape {} must hold positive integers", kRowsInput,
                               EchoValue(Dump(*sh)));
      shape.push_back(d.get<int64_t>());
    }
    const int64_t windows = shape.size() == 2 ? shape[0] : 1;
    // Any number of lines a window: duplicates, malformed rows and filled
    // gaps are handled as training handled them, and the last `lookback`
    // steps are the window (data::PreprocessTimeSeriesWindow).
    const int64_t per_window = shape.back();
    if (windows > sv.options().max_batch_size)
      return InvalidArgument("input '{}': {} windows; model '{}' takes at most max_batch_size = {}",
                             kRowsInput, windows, sv.model_name(), sv.options().max_batch_size);
    if (opt.max_tensor_elements > 0 &&
        windows * sv.input_elements() > opt.max_tensor_elements) {
      *too_large = true;
      return InvalidArgument("input '{}': {} windows of {} values exceed the limit of {} elements",
                             kRowsInput, windows, sv.input_elements(), opt.max_tensor_elements);
    }
    // Data: binary, or JSON strings flat or nested one level per window.
    std::vector<std::string_view> lines;
    if (rows_bin) {
      POLIS_ASSIGN_OR_RETURN(lines, SplitBinaryBytes(*rows_bin, fmt::format("input '{}'", kRowsInput)));
    } else {
      const json& data = (*rows_t)["data"];
      auto take = [&](const json& v, const std::string& where) -> Status {
        if (!v.is_string())
          return InvalidArgument("input '{}': {} is {}; expected a CSV line (string)", kRowsInput,
                                 where, v.type_name());
        lines.push_back(v.get_ref<const std::string&>());
        return Status::Ok();
      };
      for (size_t i = 0; i < data.size(); ++i) {
        if (data[i].is_array()) {
          for (size_t j = 0; j < data[i].size(); ++j)
            POLIS_RETURN_IF_ERROR(take(data[i][j], fmt::format("data[{}][{}]", i, j)));
        } else {
          POLIS_RETURN_IF_ERROR(take(data[i], fmt::format("data[{}]", i)));
        }
      }
    }
    if (static_cast<int64_t>(lines.size()) != windows * per_window)
      return InvalidArgument("input '{}': {} CSV lines for shape {} ({} expected)", kRowsInput,
                             lines.size(), sh->dump(), windows * per_window);
    // Columns: named by the request, or recorded in the artifact (bound at load).
    const data::WindowPreprocessor* pre = nullptr;
    std::optional<data::WindowPreprocessor> own;
    if (header_t) {
      std::vector<std::string> header;
      POLIS_RETURN_IF_ERROR(check_bytes(*header_t, kHeaderInput, header_bin != nullptr));
      if (header_bin) {
        POLIS_ASSIGN_OR_RETURN(auto names,
                               SplitBinaryBytes(*header_bin, fmt::format("input '{}'", kHeaderInput)));
        header.assign(names.begin(), names.end());
      } else {
        const json& hd = (*header_t)["data"];
        for (size_t i = 0; i < hd.size(); ++i) {
          if (!hd[i].is_string())
            return InvalidArgument("input '{}': data[{}] is {}; expected a column name (string)",
                                   kHeaderInput, i, hd[i].type_name());
          header.push_back(hd[i].get<std::string>());
        }
      }
      // One string holding the whole header line is accepted too.
      if (header.size() == 1 && header[0].find(',') != std::string::npos) {
        auto split = data::SplitCsvLine(header[0]);
        if (!split.ok())
          return InvalidArgument("input '{}': {}", kHeaderInput, split.status().message());
        header = std::move(split).value();
      }
      if (header.empty()) return InvalidArgument("input '{}' holds no column names", kHeaderInput);
      auto bound = data::WindowPreprocessor::Create(spec, sv.timeseries_stats(), header);
      if (!bound.ok()) return InvalidArgument("input '{}': {}", kHeaderInput, bound.status().message());
      own = std::move(bound).value();
      pre = &*own;
    } else {
      auto recorded = sv.timeseries_preprocessor();
      if (!recorded.ok())
        return InvalidArgument("input '{}': the training file's columns, as model '{}' version {} "
                               "records them: {}",
                               kRowsInput, sv.model_name(), sv.version(), recorded.status().message());
      pre = *recorded;
      if (pre == nullptr)
        return InvalidArgument(
            "input '{}' is required: model '{}' version {} does not record the training file's "
            "column names; send them as input '{}' (BYTES, shape [C])",
            kHeaderInput, sv.model_name(), sv.version(), kHeaderInput);
    }
    if (pre->elements() != sv.input_elements())
      return InvalidArgument("input '{}': a window preprocesses to {} values; the model takes {}",
                             kRowsInput, pre->elements(), sv.input_elements());
    DecodedInput out;
    out.rows = windows;
    out.datatype = "BYTES";
    out.values.resize(static_cast<size_t>(windows * sv.input_elements()));
    std::vector<std::string_view> window(static_cast<size_t>(per_window));
    for (int64_t b = 0; b < windows; ++b) {
      std::copy_n(lines.begin() + b * per_window, per_window, window.begin());
      const Status st = pre->Preprocess(window, out.values.data() + b * sv.input_elements());
      if (!st.ok()) return WindowError(st, b, per_window);
    }
    return out;
  }

  // A window's "window row K: why" (K from 1) as the request's row index.
  static Status WindowError(const Status& st, int64_t b, int64_t per_window) {
    const std::string& msg = st.message();
    constexpr std::string_view kPrefix = "window row ";
    if (msg.rfind(kPrefix, 0) == 0) {
      const size_t colon = msg.find(": ", kPrefix.size());
      int64_t k = 0;
      if (colon != std::string::npos)
        std::from_chars(msg.data() + kPrefix.size(), msg.data() + colon, k);
      if (k >= 1 && k <= per_window)
        return InvalidArgument("input '{}': row {} (window {}, row {}): {}", kRowsInput,
                               b * per_window + k - 1, b, k - 1, msg.substr(colon + 2));
    }
    return InvalidArgument("input '{}': window {} (rows {}..{}): {}", kRowsInput, b, b * per_window,
                           b * per_window + per_window - 1, msg);
  }

  // The single input tensor of an infer or explain request.
  // *raw_rows (when given) tells raw time-series rows from model inputs.
  StatusOr<DecodedInput> DecodeRequestInput(const ParsedBody& parsed, const ServedVersion& sv,
                                            bool* too_large, bool* raw_rows = nullptr) {
    const json& body = parsed.doc;
    *too_large = false;
    if (raw_rows) *raw_rows = false;
    POLIS_ASSIGN_OR_RETURN(auto slices, BinarySlices(parsed));
    auto inputs = body.find("inputs");
    const auto image = ImageInputOf(sv.header());
    if (inputs == body.end() || !inputs->is_array() || inputs->empty())
      return InvalidArgument("\"inputs\" is required: an array with one tensor named '{}'{}{}",
                             kInputName,
                             image ? fmt::format(", or '{}' (BYTES, PNG or JPEG files)", kImageInputName) : "",
                             sv.timeseries() ? fmt::format(", or '{}' (BYTES CSV lines) with an "
                                                           "optional '{}'", kRowsInput, kHeaderInput)
                                             : "");
    bool names_rows = false, names_image = false;
    for (const auto& t : *inputs)
      if (t.is_object() && t.contains("name") && t["name"].is_string()) {
        if (t["name"] == kRowsInput || t["name"] == kHeaderInput) names_rows = true;
        if (t["name"] == kImageInputName) names_image = true;
      }
    if (names_image) {
      if (!image)
        return InvalidArgument("input '{}' (PNG or JPEG files) is for image models; model '{}' version {} "
                               "takes {}",
                               kImageInputName, sv.model_name(), sv.version(), InputsTaken(sv));
      if (inputs->size() != 1)
        return InvalidArgument("input '{}' goes alone: {} inputs given; model '{}' takes {}", kImageInputName,
                               inputs->size(), sv.model_name(), InputsTaken(sv));
      ImageInputSpec spec = *image;
      spec.max_batch = sv.options().max_batch_size;
      spec.max_elements = opt.max_tensor_elements;
      return DecodeImageTensor((*inputs)[0], spec, slices[0] ? &*slices[0] : nullptr, too_large);
    }
    if (names_rows) {
      if (!sv.timeseries())
        return InvalidArgument(
            "inputs '{}' and '{}' (raw CSV rows) are for time-series models; model '{}' version {} "
            "has no time-series preprocessing (dataset format CSV with preprocessing_json); send "
            "'{}'",
            kRowsInput, kHeaderInput, sv.model_name(), sv.version(), kInputName);
      if (raw_rows) *raw_rows = true;
      return DecodeTimeSeriesRows(*inputs, slices, sv, too_large);
    }
    if (inputs->size() != 1) {
      std::vector<std::string> names;
      for (const auto& t : *inputs)
        names.push_back(t.is_object() && t.contains("name") && t["name"].is_string()
                            ? "'" + EchoValue(t["name"].get<std::string>()) + "'"
                            : "?");
      return InvalidArgument("{} inputs given ({}); model '{}' takes one input: {}", inputs->size(),
                             fmt::join(names, ", "), sv.model_name(), InputsTaken(sv));
    }
    const json& t = (*inputs)[0];
    if (!t.is_object() || !t.contains("name") || !t["name"].is_string())
      return InvalidArgument("inputs[0] needs a \"name\" (string); model '{}' takes {}", sv.model_name(),
                             InputsTaken(sv));
    const std::string name = t["name"].get<std::string>();
    if (name != kInputName)
      return InvalidArgument("unknown input '{}'; model '{}' takes {}", EchoValue(name), sv.model_name(),
                             InputsTaken(sv));
    InputTensorSpec spec;
    spec.name = kInputName;
    spec.sample_shape = sv.input_shape();
    spec.max_batch = sv.options().max_batch_size;
    spec.max_elements = opt.max_tensor_elements;
    spec.scale = sv.input_scale();
    spec.shift = sv.input_shift();
    return DecodeInputTensor(t, spec, too_large,
                             parsed.has_fast_data && parsed.fast_index == 0 ? &parsed.fast_data
                                                                            : nullptr,
                             slices[0] ? &*slices[0] : nullptr);
  }

  // ---- OIP handlers

  // Counts a request while it lives: `decoding` from an infer request's
  // arrival until it is queued (or refused; while any is counted, a forming
  // batch waits for it), `inferring` until it is answered.
  class DecodingScope {
   public:
    explicit DecodingScope(std::atomic<int64_t>& n) : n_(n) { n_++; }
    ~DecodingScope() { Release(); }
    void Release() {
      if (!released_.exchange(true)) n_--;
    }

   private:
    std::atomic<int64_t>& n_;
    std::atomic<bool> released_{false};
  };

  // BatchingOptions::more_may_arrive: a request is being decoded, or some
  // connection has no request at the server and may send one.
  bool MoreMayArrive() const {
    if (decoding.load() > 0) return true;
    const HttpServer* p = plain_ptr.load();
    if (p && p->active_requests() < static_cast<int64_t>(p->connections())) return true;
    const HttpServer* h = http_ptr.load();
    return !h || h->active_requests() < static_cast<int64_t>(h->connections());
  }

  void Infer(const HttpRequest& req, const Target& t, const std::string& model,
             const std::string& ref, Respond done, Post post, Protocol protocol) {
    const auto start = Clock::now();
    // Answered once, by whichever path ends the request.
    auto alive = std::make_shared<DecodingScope>(inferring);
    done = [alive, done = std::move(done)](HttpResponse r) {
      alive->Release();
      done(std::move(r));
    };
    if (!Authorize(req, t, kScopeInfer, model, done, nullptr)) return;
    auto scope = std::make_shared<DecodingScope>(decoding);
    auto parsed = ParseRequestBody(req.body, false, kInputName, req.inference_header_length);
    if (!parsed.ok()) return done(StatusResponse(parsed.status()));
    auto body = std::make_shared<ParsedBody>(std::move(parsed).value());
    const double read_seconds = req.read_seconds;
    WithVersion(model, ref, done,
                [this, body, done, post, start, scope, protocol,
                 read_seconds](std::shared_ptr<ServedVersion> sv) {
                  RunInfer(sv, *body, start, done, post, scope.get(), protocol, read_seconds);
                });
  }

  struct OutputRequest {
    std::string name;
    int64_t classification = 0;  // top-k as "score:index" strings
    bool binary = false;         // raw bytes after the JSON (binary tensor extension)
  };

  void RunInfer(const std::shared_ptr<ServedVersion>& sv, const ParsedBody& parsed,
                Clock::time_point start, const Respond& done, const Post& post,
                DecodingScope* scope, Protocol protocol, double read_seconds) {
    const json& body = parsed.doc;
    const std::string model = sv->model_name();
    const int64_t version = sv->version();
    auto fail = [&](int code, const std::string& message) {
      metrics.ObserveInference(model, version, false,
                               std::chrono::duration<double>(Clock::now() - start).count(), 0);
      done(ErrorResponse(code, message));
    };
    // id, parameters, outputs
    std::string id;
    bool has_id = false;
    if (auto it = body.find("id"); it != body.end()) {
      if (!it->is_string()) return fail(400, "\"id\" must be a string");
      id = it->get<std::string>();
      has_id = true;
    }
    bool binary_default = false;  // parameters.binary_data_output
    if (auto it = body.find("parameters"); it != body.end()) {
      if (!it->is_object()) return fail(400, "\"parameters\" must be an object");
      if (auto b = it->find("binary_data_output"); b != it->end()) {
        if (!b->is_boolean()) return fail(400, "parameters.binary_data_output must be true or false");
        binary_default = b->get<bool>();
      }
    }
    std::vector<OutputRequest> outputs;
    if (auto it = body.find("outputs"); it != body.end()) {
      if (!it->is_array()) return fail(400, "\"outputs\" must be an array");
      for (size_t i = 0; i < it->size(); ++i) {
        const json& o = (*it)[i];
        if (!o.is_object() || !o.contains("name") || !o["name"].is_string())
          return fail(400, fmt::format("outputs[{}] needs a \"name\" (string)", i));
        OutputRequest r;
        r.name = o["name"].get<std::string>();
        r.binary = binary_default;
        const auto names = OutputNames(*sv);
        if (std::find(names.begin(), names.end(), r.name) == names.end())
          return fail(400, fmt::format("unknown output '{}'; model '{}' has outputs: {}",
                                       EchoValue(r.name), model, fmt::join(names, ", ")));
        for (const auto& prev : outputs)
          if (prev.name == r.name) return fail(400, fmt::format("output '{}' requested twice", r.name));
        if (auto p = o.find("parameters"); p != o.end()) {
          if (!p->is_object()) return fail(400, fmt::format("outputs[{}].parameters must be an object", i));
          if (auto b = p->find("binary_data"); b != p->end()) {
            if (!b->is_boolean())
              return fail(400, fmt::format("outputs[{}].parameters.binary_data must be true or false", i));
            r.binary = b->get<bool>();
          }
          if (auto c = p->find("classification"); c != p->end()) {
            if (!sv->classifier())
              return fail(400, fmt::format("output '{}': classification needs a classifier; model "
                                           "'{}' is a regression model", r.name, model));
            if (!c->is_number_integer() || c->get<int64_t>() < 1 || c->get<int64_t>() > sv->classes())
              return fail(400, fmt::format("output '{}': classification must be an integer in 1..{}",
                                           r.name, sv->classes()));
            r.classification = c->get<int64_t>();
          }
        }
        outputs.push_back(std::move(r));
      }
    } else {
      for (const auto& name : OutputNames(*sv)) outputs.push_back({name, 0, binary_default});
    }
    bool too_large = false, raw_rows = false;
    auto input = DecodeRequestInput(parsed, *sv, &too_large, &raw_rows);
    if (!input.ok()) return fail(too_large ? 413 : 400, input.status().message());
    // Predictions from raw time-series rows go back in the target's units.
    const bool to_original = raw_rows && !sv->classifier();
    const double target_mean = to_original ? sv->timeseries_stats().target_mean : 0;
    const double target_std = to_original ? sv->timeseries_stats().target_stddev : 1;
    const int64_t rows = input->rows;
    const int64_t k = sv->classes();
    std::vector<int64_t> out_shape(sv->output_shape().begin(), sv->output_shape().end());
    // Classification answers name the class when the model has names.
    std::vector<std::string> class_names;
    if (std::any_of(outputs.begin(), outputs.end(), [](const OutputRequest& r) { return r.classification > 0; }))
      class_names.assign(sv->header().class_names().begin(), sv->header().class_names().end());
    scope->Release();  // about to be queued: the batch need not wait for it
    const double input_seconds = std::chrono::duration<double>(Clock::now() - start).count();
    metrics.ObserveStage(protocol, Stage::kRead, read_seconds);
    metrics.ObserveStage(protocol, Stage::kParse, input_seconds);
    // The callback holds no reference to `sv`: the repository (or this
    // handler, until Infer returns) holds the last one, and a version's
    // destructor drains its queue, so every queued request is answered.
    // Who runs the batch. A REST request that is the only one here runs on
    // its HTTP I/O thread at once: nothing waits for that thread, and the
    // hand-off to an inference thread would only add two wake-ups. Under
    // load, with an instance for each I/O thread, each I/O thread runs the
    // batch of what it has read (after its other ready connections' reads)
    // itself when there are two or more I/O threads, or when the process
    // has no CPU beyond its I/O threads (IoThreadsRunBatches); otherwise the
    // I/O threads keep reading and writing while the inference threads
    // compute. gRPC requests always go to the inference threads: on its few
    // callback threads the shortcut gained 1.1x at one connection and cost
    // 0.80-0.88x at 16 (docs/benchmarks.md, "One request at a time").
    const CallerRuns caller =
        protocol != Protocol::kRest ? CallerRuns::kNever
        : inferring.load() <= 1     ? CallerRuns::kNow
        : IoThreadsRunBatches(*sv)  ? CallerRuns::kLater
                                    : CallerRuns::kNever;
    const bool owes_run = sv->Infer(std::move(input->values), rows,
              [this, model, version, id, has_id, outputs, rows, k, out_shape, start, done, post,
               to_original, target_mean, target_std, protocol, class_names, input_seconds](InferOutcome o) {
                if (to_original && o.status.ok())
                  for (float& v : o.logits)
                    v = static_cast<float>(static_cast<double>(v) * target_std + target_mean);
                // Format on the connection's thread, not the inference thread (gRPC:
                // here; it has no connection thread to hand the result to).
                post([this, model, version, id, has_id, outputs, rows, k, out_shape, start, done,
                      protocol, class_names, input_seconds, o = std::move(o)]() {
                  const double seconds =
                      std::chrono::duration<double>(Clock::now() - start).count();
                  if (!o.status.ok()) {
                    metrics.ObserveInference(model, version, false, seconds, rows);
                    const int code = o.status.code() == Code::kFailedPrecondition
                                         ? 503
                                         : HttpStatusFor(o.status);
                    return done(ErrorResponse(code, o.status.message()));
                  }
                  metrics.ObserveStage(protocol, Stage::kQueue, o.queue_seconds);
                  metrics.ObserveStage(protocol, Stage::kCompute, o.compute_seconds);
                  const auto encode_at = Clock::now();
                  std::string binary;
                  HttpResponse res{200, "application/json",
                                   InferBody(model, version, has_id ? &id : nullptr, outputs, o,
                                             rows, k, out_shape, class_names, &binary),
                                   {}};
                  if (!binary.empty() ||
                      std::any_of(outputs.begin(), outputs.end(),
                                  [](const OutputRequest& r) { return r.binary; })) {
                    res.headers.emplace_back("Inference-Header-Content-Length",
                                             std::to_string(res.body.size()));
                    res.content_type = "application/octet-stream";
                    res.body += binary;
                  }
                  const double encode_seconds = std::chrono::duration<double>(Clock::now() - encode_at).count();
                  metrics.ObserveStage(protocol, Stage::kEncode, encode_seconds);
                  const RequestStages stages{input_seconds, o.queue_seconds, o.compute_seconds, encode_seconds};
                  metrics.ObserveInference(model, version, true, seconds, rows, &stages);
                  if (protocol == Protocol::kRest)
                    res.on_written = [this](double s) {
                      metrics.ObserveStage(Protocol::kRest, Stage::kWrite, s);
                    };
                  done(std::move(res));
                });
              },
              caller);
    if (owes_run) post([sv] { sv->RunQueued(); });
  }

  // The JSON response; outputs asked for as binary append their bytes to
  // *binary (FP32 little-endian; BYTES as 4-byte length + bytes per element)
  // and carry parameters.binary_data_size instead of "data".
  static std::string InferBody(const std::string& model, int64_t version, const std::string* id,
                               const std::vector<OutputRequest>& outputs, const InferOutcome& o,
                               int64_t rows, int64_t k, const std::vector<int64_t>& out_shape,
                               const std::vector<std::string>& class_names, std::string* binary) {
    std::vector<int64_t> shape{rows};
    shape.insert(shape.end(), out_shape.begin(), out_shape.end());
    std::string b;
    b.reserve(64 + outputs.size() * (rows * k * 12 + 96));
    b += "{\"model_name\":" + JsonQuote(model) + ",\"model_version\":\"" + std::to_string(version) + "\"";
    if (id) b += ",\"id\":" + JsonQuote(*id);
    b += fmt::format(",\"parameters\":{{\"batch_rows\":{},\"queue_time_us\":{},\"compute_time_us\":{}}}",
                     o.batch_rows, static_cast<int64_t>(o.queue_seconds * 1e6),
                     static_cast<int64_t>(o.compute_seconds * 1e6));
    b += ",\"outputs\":[";
    std::vector<float> probs;
    for (size_t i = 0; i < outputs.size(); ++i) {
      const OutputRequest& r = outputs[i];
      const bool is_prob = r.name == kProbabilities;
      if (is_prob && probs.empty()) probs = Softmax(o.logits, rows, k);
      const std::vector<float>& values = is_prob ? probs : o.logits;
      if (i) b += ',';
      b += "{\"name\":\"" + r.name + "\",";
      if (r.classification > 0) {
        // Triton's classification extension: top-k "value:index" strings,
        // "value:index:label" when the model has class names.
        b += fmt::format("\"datatype\":\"BYTES\",\"shape\":[{},{}],", rows, r.classification);
        std::vector<std::string> labels;
        for (int64_t row = 0; row < rows; ++row) {
          std::vector<int64_t> order(k);
          for (int64_t j = 0; j < k; ++j) order[j] = j;
          const float* v = values.data() + row * k;
          std::partial_sort(order.begin(), order.begin() + r.classification, order.end(),
                            [&](int64_t a, int64_t c) { return v[a] > v[c]; });
          for (int64_t j = 0; j < r.classification; ++j) {
            const int64_t c = order[j];
            labels.push_back(static_cast<size_t>(c) < class_names.size()
                                 ? fmt::format("{}:{}:{}", v[c], c, class_names[static_cast<size_t>(c)])
                                 : fmt::format("{}:{}", v[c], c));
          }
        }
        if (r.binary) {
          size_t bytes = 0;
          for (const std::string& s : labels) {
            const uint32_t n = static_cast<uint32_t>(s.size());
            binary->append(reinterpret_cast<const char*>(&n), 4);
            binary->append(s);
            bytes += 4 + s.size();
          }
          b += fmt::format("\"parameters\":{{\"binary_data_size\":{}}}}}", bytes);
        } else {
          b += "\"data\":[";
          for (size_t j = 0; j < labels.size(); ++j) b += (j ? "," : "") + JsonQuote(labels[j]);
          b += "]}";
        }
      } else if (r.binary) {
        b += "\"datatype\":\"FP32\",\"shape\":" + ShapeJson(shape) +
             fmt::format(",\"parameters\":{{\"binary_data_size\":{}}}}}", values.size() * 4);
        binary->append(reinterpret_cast<const char*>(values.data()), values.size() * 4);
      } else {
        b += "\"datatype\":\"FP32\",\"shape\":" + ShapeJson(shape) + ",\"data\":";
        AppendJsonFloats(b, values.data(), values.size());
        b += '}';
      }
    }
    b += "]}";
    return b;
  }

  void Explain(const HttpRequest& req, const Target& t, const std::string& model,
               const std::string& ref, Respond done, Post post) {
    if (!Authorize(req, t, kScopeExplain, model, done, nullptr)) return;
    const auto deadline = Clock::now() + std::chrono::milliseconds(opt.explain.timeout_ms);
    auto parsed = ParseRequestBody(req.body, false, kInputName, req.inference_header_length);
    if (!parsed.ok()) return done(StatusResponse(parsed.status()));
    auto body = std::make_shared<ParsedBody>(std::move(parsed).value());
    auto gone = req.client_gone;
    WithVersion(model, ref, done,
                [this, body, done, post, deadline, gone](std::shared_ptr<ServedVersion> sv) {
                  RunExplain(sv, *body, deadline, gone, done, post);
                });
  }

  // Decodes and checks an explain request here, then queues it on the
  // explanation workers (never on the version's inference thread).
  void RunExplain(const std::shared_ptr<ServedVersion>& sv, const ParsedBody& parsed,
                  Clock::time_point deadline, std::shared_ptr<const std::atomic<bool>> gone,
                  const Respond& done, const Post& post) {
    const json& body = parsed.doc;
    std::string id;
    bool has_id = false;
    if (auto it = body.find("id"); it != body.end()) {
      if (!it->is_string()) return done(ErrorResponse(400, "\"id\" must be a string"));
      id = it->get<std::string>();
      has_id = true;
    }
    bool too_large = false, raw_rows = false;
    auto input = DecodeRequestInput(parsed, *sv, &too_large, &raw_rows);
    if (!input.ok()) return done(ErrorResponse(too_large ? 413 : 400, input.status().message()));
    // A forecaster asked with raw rows answers in the target's units, as its
    // infer does: predictions v * stddev + mean, attributions * stddev (their
    // sum stays prediction - baseline_prediction).
    const bool to_original = raw_rows && !sv->classifier();
    const double target_mean = to_original ? sv->timeseries_stats().target_mean : 0;
    const double target_std = to_original ? sv->timeseries_stats().target_stddev : 1;
    std::vector<std::string> feature_names;
    if (sv->timeseries()) feature_names = sv->timeseries_stats().feature_names;
    ExplainRequest er;
    er.rows = input->rows;
    er.steps = opt.explain_default_steps;
    er.targets.assign(er.rows, -1);
    if (auto p = body.find("parameters"); p != body.end()) {
      if (!p->is_object()) return done(ErrorResponse(400, "\"parameters\" must be an object"));
      if (auto s = p->find("steps"); s != p->end()) {
        if (!s->is_number_integer() || s->get<int64_t>() < 1 || s->get<int64_t>() > kMaxExplainSteps)
          return done(ErrorResponse(
              400, fmt::format("parameters.steps must be an integer in 1..{}", kMaxExplainSteps)));
        er.steps = static_cast<int>(s->get<int64_t>());
      }
      if (auto tg = p->find("target"); tg != p->end()) {
        auto one = [&](const json& v, int64_t* out) {
          if (!v.is_number_integer() || v.get<int64_t>() < 0 || v.get<int64_t>() >= sv->classes())
            return false;
          *out = v.get<int64_t>();
          return true;
        };
        const std::string why = fmt::format(
            "parameters.target must be an output (class) index in 0..{} or an array of one per row "
            "({} rows)",
            sv->classes() - 1, er.rows);
        if (tg->is_array()) {
          if (static_cast<int64_t>(tg->size()) != er.rows) return done(ErrorResponse(400, why));
          for (int64_t r = 0; r < er.rows; ++r)
            if (!one((*tg)[r], &er.targets[r])) return done(ErrorResponse(400, why));
        } else {
          int64_t c = 0;
          if (!one(*tg, &c)) return done(ErrorResponse(400, why));
          er.targets.assign(er.rows, c);
        }
      }
    }
    // The cost of a request is rows x (steps + 1) passes; bounded per request.
    if (er.rows * er.steps > opt.explain.max_row_steps)
      return done(ErrorResponse(
          400, fmt::format("rows x steps = {} x {} = {} exceeds the limit of {} per explanation "
                           "request (--explain-max-row-steps); send fewer rows or steps",
                           er.rows, er.steps, er.rows * er.steps, opt.explain.max_row_steps)));
    er.input = std::move(input->values);
    const std::string model = sv->model_name();
    const int64_t version = sv->version();
    const int steps = er.steps;
    std::vector<int64_t> sample_shape(sv->input_shape().begin(), sv->input_shape().end());
    const int64_t k = sv->classes();
    const bool classifier = sv->classifier();
    ExplainJob job;
    job.version = sv;
    job.request = std::move(er);
    job.deadline = deadline;
    job.client_gone = std::move(gone);
    job.done = [model, version, id, has_id, steps, sample_shape, k, classifier, done, post, target_mean,
                target_std, to_original, feature_names](ExplainOutcome o) {
      post([model, version, id, has_id, steps, sample_shape, k, classifier, done, target_mean, target_std,
            to_original, feature_names, o = std::move(o)]() mutable {
        if (!o.status.ok()) return done(StatusResponse(o.status));
        std::string b = "{\"model_name\":" + JsonQuote(model) + ",\"model_version\":\"" +
                        std::to_string(version) + "\"";
        if (has_id) b += ",\"id\":" + JsonQuote(id);
        if (!classifier) b += fmt::format(",\"units\":\"{}\"", to_original ? "target" : "standardised");
        if (!feature_names.empty()) b += ",\"feature_names\":" + json(feature_names).dump();
        b += ",\"explanations\":[";
        if (to_original)
          for (ExplainRow& row : o.rows) {
            for (float& v : row.logits) v = static_cast<float>(v * target_std + target_mean);
            for (float& v : row.baseline_logits) v = static_cast<float>(v * target_std + target_mean);
            for (float& v : row.saliency) v = static_cast<float>(v * target_std);
            for (float& v : row.integrated_gradients) v = static_cast<float>(v * target_std);
            row.convergence_delta *= target_std;
          }
        const std::string shape = ShapeJson(sample_shape);
        for (size_t r = 0; r < o.rows.size(); ++r) {
          const ExplainRow& row = o.rows[r];
          if (r) b += ',';
          b += fmt::format("{{\"row\":{},\"target\":{},", r, row.target);
          if (classifier)
            b += fmt::format("\"probability\":{},\"logit\":{},\"baseline_logit\":{},",
                             Softmax(row.logits, 1, k)[row.target], row.logits[row.target],
                             row.baseline_logits[row.target]);
          else
            b += fmt::format("\"prediction\":{},\"baseline_prediction\":{},", row.logits[row.target],
                             row.baseline_logits[row.target]);
          b += fmt::format("\"convergence_delta\":{},", std::isfinite(row.convergence_delta)
                                                           ? fmt::format("{}", row.convergence_delta)
                                                           : "null");
          b += "\"saliency\":{\"name\":\"input\",\"datatype\":\"FP32\",\"shape\":" + shape +
               ",\"method\":\"gradient_x_input\",\"data\":";
          AppendJsonFloats(b, row.saliency.data(), row.saliency.size());
          b += fmt::format("}},\"integrated_gradients\":{{\"name\":\"input\",\"datatype\":\"FP32\","
                           "\"shape\":{},\"steps\":{},\"baseline\":\"zero\",\"data\":",
                           shape, steps);
          AppendJsonFloats(b, row.integrated_gradients.data(), row.integrated_gradients.size());
          b += "}}";
        }
        b += "]}";
        done(HttpResponse{200, "application/json", std::move(b), {}});
      });
    };
    if (!explainer->Submit(std::move(job)))
      done(ErrorResponse(
          429, fmt::format("the explanation queue is full ({} requests waiting or running, "
                           "--explain-queue); try again later",
                           opt.explain.max_queue)));
  }

  void ModelMetadataRoute(const HttpRequest& req, const Target& t, const std::string& model,
                          const std::string& ref, bool version_route, Respond done) {
    if (!Authorize(req, t, kScopeRead, model, done, nullptr)) return;
    WithVersion(model, ref, done, [this, model, version_route, done](std::shared_ptr<ServedVersion> sv) {
      auto ms = repo->Describe(model);
      done(JsonResponse(200, ModelMetadata(*sv, ms.ok() ? &*ms : nullptr, version_route)));
    });
  }

  // GET /v2/models/{name}[/versions/{v}]/card: the model card
  // (registry/model_card.h), with the metadata's scope.
  void ModelCardRoute(const HttpRequest& req, const Target& t, const std::string& model, const std::string& ref,
                      Respond done) {
    if (!Authorize(req, t, kScopeRead, model, done, nullptr)) return;
    WithVersion(model, ref, done, [done](std::shared_ptr<ServedVersion> sv) {
      done(JsonResponse(200, ModelCard(sv->model_name(), sv->version(), sv->sha256(), sv->header())));
    });
  }

  // GET /v2/models[/{m}[/versions/{v}]]/stats: Triton's statistics
  // extension, from the metrics (VersionStats): every loaded version (and
  // any served since the start) of every model the token may read, of one
  // model, or one version.
  void StatsRoute(const HttpRequest& req, const Target& t, const std::string& model, const std::string& ref,
                  bool version_route, Respond done) {
    if (!Authorize(req, t, kScopeRead, model, done, nullptr)) return;
    std::vector<ModelStatus> models;
    if (model.empty()) {
      for (ModelStatus& ms : repo->DescribeAll())
        if (tokens.Authorize(req.authorization, kScopeRead, ms.name).outcome == AuthOutcome::kAllowed)
          models.push_back(std::move(ms));
    } else {
      auto ms = repo->Describe(model);
      if (!ms.ok()) return done(StatusResponse(ms.status()));
      models.push_back(std::move(*ms));
    }
    json out = json::array();
    for (const ModelStatus& ms : models) {
      if (version_route) {
        auto v = VersionOfRef(ms, ref);
        if (!v.ok()) return done(StatusResponse(v.status()));
        out.push_back(StatsJson(ms.name, *v, metrics.StatsOf(ms.name, *v)));
        continue;
      }
      for (const VersionStatus& vs : ms.version_status) {
        const std::optional<VersionStats> stats = metrics.StatsOf(ms.name, vs.version);
        if (vs.loaded || stats) out.push_back(StatsJson(ms.name, vs.version, stats));
      }
    }
    done(JsonResponse(200, json{{"model_stats", out}}));
  }

  // The version a number, "latest" or an alias names; NotFound naming it.
  static StatusOr<int64_t> VersionOfRef(const ModelStatus& ms, const std::string& ref) {
    if (ref == kLatest && !ms.versions.empty()) return ms.versions.back();
    if (const int64_t n = ParseVersionNumber(ref); n > 0) {
      if (std::find(ms.versions.begin(), ms.versions.end(), n) != ms.versions.end()) return n;
    } else if (auto it = ms.aliases.find(ref); it != ms.aliases.end()) {
      return it->second;
    }
    return NotFound("model '{}' has no version '{}'", ms.name, EchoValue(ref));
  }

  static json StatsJson(const std::string& model, int64_t version, const std::optional<VersionStats>& s) {
    const VersionStats v = s.value_or(VersionStats{});
    auto d = [](const DurationStat& x) { return json{{"count", x.count}, {"ns", x.ns}}; };
    json batches = json::array();
    for (const auto& [rows, stat] : v.batches)
      batches.push_back({{"batch_size", rows}, {"compute_infer", d(stat)}});
    return json{{"name", model},
                {"version", std::to_string(version)},
                {"last_inference", v.last_inference_ms},
                {"inference_count", v.inference_count},
                {"execution_count", v.execution_count},
                {"inference_stats", {{"success", d(v.success)}, {"fail", d(v.fail)}, {"queue", d(v.queue)},
                                     {"compute_input", d(v.compute_input)}, {"compute_infer", d(v.compute_infer)},
                                     {"compute_output", d(v.compute_output)}}},
                {"batch_stats", batches}};
  }

  void ModelReadyRoute(const HttpRequest& req, const Target& t, const std::string& model,
                       const std::string& ref, Respond done) {
    if (!Authorize(req, t, kScopeRead, model, done, nullptr)) return;
    auto r = repo->Acquire(model, ref);
    if (!r.ok()) return done(StatusResponse(r.status()));
    if (*r) return done(JsonResponse(200, json{{"name", model}, {"version", std::to_string((*r)->version())}, {"ready", true}}));
    auto ms = repo->Describe(model);
    done(JsonResponse(503, json{{"name", model}, {"ready", false},
                                {"error", ms.ok() && !ms->reason.empty() ? ms->reason : "not loaded"}}));
  }

  void RepositoryIndex(const HttpRequest& req, const Target& t, Respond done) {
    if (!Authorize(req, t, kScopeRead, "", done, nullptr)) return;
    auto parsed = ParseJsonBody(req.body, true);
    if (!parsed.ok()) return done(StatusResponse(parsed.status()));
    const bool ready_only = parsed->value("ready", false);
    json out = json::array();
    for (const auto& ms : repo->DescribeAll()) {
      for (const auto& vs : ms.version_status) {
        if (ready_only && !vs.loaded) continue;
        json e = {{"name", ms.name}, {"version", std::to_string(vs.version)},
                  {"state", vs.loaded ? "READY" : "UNAVAILABLE"}};
        if (!vs.reason.empty()) e["reason"] = vs.reason;
        out.push_back(std::move(e));
      }
    }
    done(JsonResponse(200, out));
  }

  // ---- registry handlers

  json ChangeJson(const AliasChange& c) {
    json events = json::array();
    for (const auto& e : c.events) events.push_back(AliasEventJson(e));
    json aliases = json::object();
    for (const auto& [a, v] : c.table.aliases) aliases[a] = v;
    return json{{"changed", c.changed()}, {"events", events}, {"aliases", aliases}};
  }

  // Runs a write on the runner and answers with its JSON.
  void AdminTask(Respond done, std::function<StatusOr<json>()> work, int ok_status = 200) {
    runner.Submit([done, work = std::move(work), ok_status] {
      auto r = work();
      if (!r.ok()) return done(StatusResponse(r.status()));
      done(JsonResponse(ok_status, *r));
    });
  }

  std::string Why(const Target& t, const json& body) {
    if (body.contains("why") && body["why"].is_string()) return body["why"].get<std::string>();
    return t.Query("why");
  }

  void Registry(const HttpRequest& req, const Target& t, Respond done) {
    const auto& s = t.seg;  // v2 registry models ...
    const std::string& method = req.method;
    if (s.size() == 3) {
      if (method != "GET") return MethodNotAllowed(done, "GET");
      if (!Authorize(req, t, kScopeRead, "", done, nullptr)) return;
      json models = json::array();
      for (const auto& ms : repo->DescribeAll()) {
        json aliases = json::object();
        for (const auto& [a, v] : ms.aliases) aliases[a] = v;
        json m{{"name", ms.name}, {"versions", ms.versions}, {"aliases", aliases},
               {"default_version", ms.default_version}, {"ready", ms.ready}};
        if (!ms.reason.empty()) m["reason"] = ms.reason;  // e.g. a damaged aliases.json
        models.push_back(std::move(m));
      }
      return done(JsonResponse(200, json{{"models", models}}));
    }
    const std::string model = s[3];
    if (Status st = ValidateModelName(model); !st.ok()) return done(StatusResponse(st));
    const std::string root = opt.root;

    if (s.size() == 4) {  // /v2/registry/models/{m}
      if (method != "GET") return MethodNotAllowed(done, "GET");
      if (!Authorize(req, t, kScopeRead, model, done, nullptr)) return;
      return AdminTask(done, [root, model]() -> StatusOr<json> {
        POLIS_ASSIGN_OR_RETURN(AliasTable table, ReadAliases(root, model));
        POLIS_ASSIGN_OR_RETURN(auto versions, ListVersions(root, model));
        json metas = json::array();
        for (int64_t v : versions) {
          auto m = ReadMetadata(root, model, v);
          if (m.ok()) metas.push_back(*m);
        }
        json out = AliasTableJson(table);
        out["name"] = model;
        out["versions"] = metas;
        return out;
      });
    }
    const std::string& kind = s[4];
    if (kind == "versions") {
      if (s.size() == 5) {
        if (method == "GET") {
          if (!Authorize(req, t, kScopeRead, model, done, nullptr)) return;
          return AdminTask(done, [root, model]() -> StatusOr<json> {
            POLIS_ASSIGN_OR_RETURN(auto versions, ListVersions(root, model));
            json metas = json::array();
            for (int64_t v : versions) {
              auto m = ReadMetadata(root, model, v);
              if (m.ok()) metas.push_back(*m);
            }
            return json{{"name", model}, {"versions", metas}};
          });
        }
        if (method != "POST") return MethodNotAllowed(done, "GET, POST");
        std::string who;
        if (!Authorize(req, t, kScopePublish, model, done, &who)) return;
        const std::string alias = t.Query("alias");
        if (!alias.empty()) {
          if (Status st = ValidateAliasName(alias); !st.ok()) return done(StatusResponse(st));
          if (!Authorize(req, t, kScopeAdmin, model, done, nullptr)) return;
        }
        Actor actor{who, t.Query("why")};
        auto bytes = std::make_shared<std::string>(std::move(const_cast<HttpRequest&>(req).body));
        Repository* repo_ptr = repo.get();
        return runner.Submit([repo_ptr, model, bytes, actor, alias, done] {
          auto pub = repo_ptr->Publish(model, *bytes, actor);
          bytes->clear();
          if (!pub.ok()) {
            const Status& st = pub.status();
            // Bad bytes are the uploader's problem, not the server's.
            const int code = st.code() == Code::kDataLoss ? 400 : HttpStatusFor(st);
            return done(ErrorResponse(code, st.message()));
          }
          json out = {{"model", pub->model}, {"version", pub->version}, {"sha256", pub->sha256}};
          if (!alias.empty()) {
            auto change = repo_ptr->Promote(model, alias, pub->version, actor);
            if (!change.ok())
              return done(ErrorResponse(HttpStatusFor(change.status()),
                                        fmt::format("published version {}, but promoting it to '{}' "
                                                    "failed: {}",
                                                    pub->version, alias, change.status().message())));
            out["alias"] = alias;
          }
          POLIS_LOG(kInfo, kRegistry, "published model '{}' version {} by {}", model, pub->version,
                    actor.who);
          done(JsonResponse(201, out));
        });
      }
      const std::string ref = s[5];
      if (s.size() == 6) {
        if (method == "GET") {
          if (!Authorize(req, t, kScopeRead, model, done, nullptr)) return;
          return AdminTask(done, [root, model, ref]() -> StatusOr<json> {
            POLIS_ASSIGN_OR_RETURN(int64_t v, ResolveVersionRef(root, model, ref));
            return ReadMetadata(root, model, v);
          });
        }
        if (method != "DELETE") return MethodNotAllowed(done, "GET, DELETE");
        std::string who;
        if (!Authorize(req, t, kScopeAdmin, model, done, &who)) return;
        const int64_t v = ParseVersionNumber(ref);
        if (v <= 0) return done(ErrorResponse(400, fmt::format("'{}' is not a version number (deleting by alias is not allowed)", EchoValue(ref))));
        const bool force = t.Query("force") == "true" || t.Query("force") == "1";
        Actor actor{who, t.Query("why")};
        return AdminTask(done, [this, model, v, force, actor]() -> StatusOr<json> {
          POLIS_ASSIGN_OR_RETURN(AliasChange c, repo->Delete(model, v, force, actor));
          json out = ChangeJson(c);
          out["deleted"] = v;
          return out;
        });
      }
      if (s.size() == 7 && s[6] == "artifact") {
        if (method != "GET") return MethodNotAllowed(done, "GET");
        if (!Authorize(req, t, kScopeRead, model, done, nullptr)) return;
        return runner.Submit([root, model, ref, done] {
          auto v = ResolveVersionRef(root, model, ref);
          if (!v.ok()) return done(StatusResponse(v.status()));
          const std::string path = fmt::format("{}/{}/{}/{}", root, model, *v, kArtifactFileName);
          auto bytes = ReadFile(path);
          if (!bytes.ok()) return done(StatusResponse(bytes.status()));
          // Never send bytes that fail their checksum (or hold a non-finite model).
          if (auto a = DecodeArtifact(*bytes, path); !a.ok())
            return done(ErrorResponse(
                500, fmt::format("version {} of model '{}' is damaged on disk and is not sent: {}",
                                 *v, model, a.status().message())));
          HttpResponse r{200, "application/octet-stream", std::move(bytes).value(), {}};
          r.headers.emplace_back("X-Polis-Sha256", ArtifactSha256(r.body));
          r.headers.emplace_back("X-Polis-Version", std::to_string(*v));
          done(std::move(r));
        });
      }
      return NoRoute(req, t, done);
    }
    if (kind == "aliases") {
      if (s.size() == 5) {
        if (method != "GET") return MethodNotAllowed(done, "GET");
        if (!Authorize(req, t, kScopeRead, model, done, nullptr)) return;
        return AdminTask(done, [root, model]() -> StatusOr<json> {
          POLIS_ASSIGN_OR_RETURN(AliasTable table, ReadAliases(root, model));
          json out = AliasTableJson(table);
          out["name"] = model;
          return out;
        });
      }
      const std::string alias = s[5];
      if (Status st = ValidateAliasName(alias); !st.ok()) return done(StatusResponse(st));
      std::string who;
      if (s.size() == 6) {
        if (method == "PUT" || method == "POST") {
          if (!Authorize(req, t, kScopeAdmin, model, done, &who)) return;
          auto body = ParseJsonBody(req.body, false);
          if (!body.ok()) return done(StatusResponse(body.status()));
          auto v = body->find("version");
          int64_t version = 0;
          if (v != body->end() && v->is_number_integer()) version = v->get<int64_t>();
          else if (v != body->end() && v->is_string()) version = ParseVersionNumber(v->get<std::string>());
          if (version <= 0)
            return done(ErrorResponse(400, "the body needs \"version\": a positive version number"));
          Actor actor{who, Why(t, *body)};
          return AdminTask(done, [this, model, alias, version, actor]() -> StatusOr<json> {
            POLIS_ASSIGN_OR_RETURN(AliasChange c, repo->Promote(model, alias, version, actor));
            json out = ChangeJson(c);
            out["alias"] = alias;
            out["version"] = version;
            return out;
          });
        }
        if (method == "DELETE") {
          if (!Authorize(req, t, kScopeAdmin, model, done, &who)) return;
          Actor actor{who, t.Query("why")};
          return AdminTask(done, [this, model, alias, actor]() -> StatusOr<json> {
            POLIS_ASSIGN_OR_RETURN(AliasChange c, repo->Unalias(model, alias, actor));
            return ChangeJson(c);
          });
        }
        return MethodNotAllowed(done, "PUT, POST, DELETE");
      }
      if (s.size() == 7 && s[6] == "rollback") {
        if (method != "POST") return MethodNotAllowed(done, "POST");
        if (!Authorize(req, t, kScopeAdmin, model, done, &who)) return;
        auto body = ParseJsonBody(req.body, true);
        if (!body.ok()) return done(StatusResponse(body.status()));
        Actor actor{who, Why(t, *body)};
        return AdminTask(done, [this, model, alias, actor]() -> StatusOr<json> {
          POLIS_ASSIGN_OR_RETURN(AliasChange c, repo->Rollback(model, alias, actor));
          json out = ChangeJson(c);
          out["alias"] = alias;
          out["version"] = c.table.aliases.count(alias) ? c.table.aliases.at(alias) : 0;
          return out;
        });
      }
    }
    return NoRoute(req, t, done);
  }

  void MethodNotAllowed(const Respond& done, const std::string& allow) {
    HttpResponse r = ErrorResponse(405, fmt::format("method not allowed here; allowed: {}", allow));
    r.headers.emplace_back("Allow", allow);
    done(std::move(r));
  }

  void NoRoute(const HttpRequest& req, const Target& t, const Respond& done) {
    done(ErrorResponse(404, fmt::format("no route for {} {} (see docs/registry.md)", req.method, t.path)));
  }

  // ---- dispatch

  // REST requests: counted by method and status, then routed.
  void Handle(HttpRequest req, Respond respond, Post post) {
    const std::string method = req.method;
    Respond done = [this, respond, method](HttpResponse r) {
      metrics.CountHttp(method, r.status);
      respond(std::move(r));
    };
    Route(std::move(req), std::move(done), std::move(post), Protocol::kRest);
  }

  // The OIP and registry routes, for REST and for gRPC (GrpcFrontend).
  void Route(HttpRequest req, Respond done, Post post, Protocol protocol) {
    const std::string method = req.method;
    auto parsed = ParseTarget(req.target);
    if (!parsed.ok()) return done(StatusResponse(parsed.status()));
    const Target& t = *parsed;
    const auto& s = t.seg;
    POLIS_LOG(kTrace, kRegistry, "{} {} from {}", req.method, t.path, req.remote);

    if (s.size() == 1 && s[0] == "metrics") {
      if (method != "GET") return MethodNotAllowed(done, "GET");
      return done(HttpResponse{200, "text/plain; version=0.0.4", metrics.Render(), {}});
    }
    if (s.empty() || s[0] != "v2") return NoRoute(req, t, done);
    if (s.size() == 1) {
      if (method != "GET") return MethodNotAllowed(done, "GET");
      return done(JsonResponse(200, json{{"name", "polis-registry"},
                                         {"version", POLIS_VERSION},
                                         {"extensions", {"model_repository", "classification",
                                                         "binary_tensor_data", "statistics", "polis_explain",
                                                         "polis_registry"}}}));
    }
    if (s[1] == "health" && s.size() == 3) {
      if (method != "GET") return MethodNotAllowed(done, "GET");
      if (s[2] == "live") return done(JsonResponse(200, json{{"live", true}}));
      if (s[2] == "ready") {
        if (!repo->ready()) return done(JsonResponse(503, json{{"ready", false}, {"error", "loading models"}}));
        std::vector<std::string> not_ready;
        for (const auto& ms : repo->DescribeAll())
          if (!ms.ready && !ms.versions.empty()) not_ready.push_back(ms.name + ": " + ms.reason);
        if (!not_ready.empty())
          return done(JsonResponse(503, json{{"ready", false},
                                             {"error", fmt::format("models not ready: {}", fmt::join(not_ready, "; "))}}));
        return done(JsonResponse(200, json{{"ready", true}}));
      }
      return NoRoute(req, t, done);
    }
    if (s[1] == "repository" && s.size() == 3 && s[2] == "index") {
      if (method != "POST" && method != "GET") return MethodNotAllowed(done, "POST");
      return RepositoryIndex(req, t, done);
    }
    if (s[1] == "registry" && s.size() >= 3 && s[2] == "models") return Registry(req, t, done);
    if (s[1] == "models" && s.size() == 3 && s[2] == "stats") {
      if (method != "GET") return MethodNotAllowed(done, "GET");
      return StatsRoute(req, t, "", "", false, done);
    }
    if (s[1] == "models" && s.size() >= 3) {
      const std::string& model = s[2];
      if (Status st = ValidateModelName(model); !st.ok()) return done(StatusResponse(st));
      std::string ref;
      size_t at = 3;
      if (s.size() >= 5 && s[3] == "versions") {
        ref = s[4];
        if (ParseVersionNumber(ref) == 0 && ref != kLatest) {
          if (Status st = ValidateAliasName(ref); !st.ok())
            return done(ErrorResponse(400, fmt::format("'{}' is neither a version number nor an alias: {}",
                                                       EchoValue(ref), st.message())));
        }
        at = 5;
      } else if (s.size() == 4 && s[3] == "versions") {
        return NoRoute(req, t, done);
      }
      const bool version_route = at == 5;
      if (s.size() == at) {
        if (method != "GET") return MethodNotAllowed(done, "GET");
        return ModelMetadataRoute(req, t, model, ref, version_route, done);
      }
      if (s.size() == at + 1) {
        const std::string& action = s[at];
        if (action == "ready") {
          if (method != "GET") return MethodNotAllowed(done, "GET");
          return ModelReadyRoute(req, t, model, ref, done);
        }
        if (action == "card") {
          if (method != "GET") return MethodNotAllowed(done, "GET");
          return ModelCardRoute(req, t, model, ref, done);
        }
        if (action == "stats") {
          if (method != "GET") return MethodNotAllowed(done, "GET");
          return StatsRoute(req, t, model, ref, version_route, done);
        }
        if (action == "infer" || action == "explain") {
          if (method != "POST") return MethodNotAllowed(done, "POST");
          if (action == "infer") return Infer(req, t, model, ref, done, post, protocol);
          return Explain(req, t, model, ref, done, post);
        }
      }
    }
    return NoRoute(req, t, done);
  }
};

RegistryServer::RegistryServer(ServerOptions options) : impl_(std::make_unique<Impl>()) {
  impl_->opt = std::move(options);
}

RegistryServer::~RegistryServer() { Stop(0); }

Status RegistryServer::Start() {
  Impl& s = *impl_;
  if (s.started) return FailedPrecondition("the registry server is already started");
  POLIS_RETURN_IF_ERROR(ValidateBatchingOptions(s.opt.batching, "server defaults"));
  if (s.opt.mmap_threshold_bytes > 0) {
    // A fixed threshold (glibc otherwise raises it as large blocks are freed)
    // keeps every large buffer -- weights, networks, request bodies -- in its
    // own mapping, so an unloaded version's memory goes back to the OS.
    mallopt(M_MMAP_THRESHOLD, s.opt.mmap_threshold_bytes);
  }
  POLIS_RETURN_IF_ERROR(ValidateExplainLimits(s.opt.explain));
  // TLS files are checked before any model is loaded: a bad one fails at once.
  http::TlsPem pem;
  if (s.TlsOn() || !s.opt.tls_key_file.empty()) {
    POLIS_ASSIGN_OR_RETURN(pem, http::LoadTlsFiles({s.opt.tls_cert_file, s.opt.tls_key_file}));
  } else if (s.opt.plain_port >= 0) {
    return InvalidArgument("a plain-HTTP port beside the main one needs TLS on the main one "
                           "(--tls-cert and --tls-key)");
  }
  if (!s.opt.tokens_file.empty()) {
    POLIS_ASSIGN_OR_RETURN(s.tokens, TokenSet::Load(s.opt.tokens_file));
    POLIS_LOG(kInfo, kRegistry, "{} tokens from '{}'", s.tokens.size(), s.opt.tokens_file);
  }
  if (s.opt.allow_anonymous_explain) s.tokens.AllowAnonymousExplain();
  RepositoryOptions ro;
  ro.root = s.opt.root;
  ro.batching = s.opt.batching;
  ro.poll_interval_ms = s.opt.poll_interval_ms;
  ro.max_unpinned_versions = s.opt.max_unpinned_versions;
  Impl* self = &s;
  ro.batching.more_may_arrive =
      std::make_shared<const std::function<bool()>>([self] { return self->MoreMayArrive(); });
  s.repo = std::make_unique<Repository>(ro, &s.metrics);
  POLIS_RETURN_IF_ERROR(s.repo->Start());
  s.runner.Start(s.opt.admin_threads);
  s.explainer = std::make_unique<ExplainQueue>(s.opt.explain, &s.metrics);
  s.explainer->Start();

  HttpServerOptions ho;
  ho.host = s.opt.host;
  ho.port = s.opt.port;
  ho.threads = s.opt.threads;
  ho.busy_poll_us = s.opt.busy_poll_us;
  ho.thread_name = "rest";
  ho.max_body_bytes = s.opt.max_body_bytes;
  ho.max_upload_bytes = s.opt.max_upload_bytes;
  ho.is_upload = IsUpload;
  ho.watch_client = IsExplain;
  ho.read_timeout_ms = s.opt.read_timeout_ms;
  ho.idle_timeout_ms = s.opt.idle_timeout_ms;
  Impl* impl = &s;
  ho.on_refused = [impl](const std::string& method, int status, const std::string&) {
    impl->metrics.CountHttp(method.empty() ? "?" : method, status);
  };
  auto handler = [impl](HttpRequest req, Respond respond, Post post) {
    impl->Handle(std::move(req), std::move(respond), std::move(post));
  };
  if (s.TlsOn()) ho.tls = http::TlsFiles{s.opt.tls_cert_file, s.opt.tls_key_file};
  s.http = std::make_unique<HttpServer>(ho, handler);
  POLIS_RETURN_IF_ERROR(s.http->Start());
  if (s.opt.plain_port >= 0) {
    HttpServerOptions po = ho;
    po.tls = {};
    po.thread_name = "rest-plain";
    po.host = s.opt.plain_host;
    po.port = s.opt.plain_port;
    s.plain = std::make_unique<HttpServer>(po, handler);
    if (Status st = s.plain->Start(); !st.ok()) {
      s.http->Stop(0);
      return st.WithContext("the plain-HTTP port");
    }
  }
  s.http_ptr = s.http.get();
  s.plain_ptr = s.plain.get();
  if (s.opt.grpc_port >= 0) {
    GrpcOptions go;
    go.host = s.opt.grpc_host;
    go.port = s.opt.grpc_port;
    go.max_message_bytes = s.opt.max_body_bytes;
    go.tls_cert_chain = pem.cert_chain;
    go.tls_private_key = pem.private_key;
    s.grpc = std::make_unique<GrpcFrontend>(
        go,
        [impl](HttpRequest req, Respond respond, Post post, Protocol protocol) {
          impl->Route(std::move(req), std::move(respond), std::move(post), protocol);
        },
        &s.metrics);
    if (Status st = s.grpc->Start(); !st.ok()) {
      if (s.plain) s.plain->Stop(0);
      s.http->Stop(0);
      s.http_ptr = nullptr;
      s.plain_ptr = nullptr;
      return st;
    }
  }
  s.started = true;
  POLIS_LOG(kInfo, kRegistry, "serving '{}' on {}:{} ({} HTTP I/O thread{}, {} usable CPU{})", s.opt.root,
            s.opt.host, s.http->port(), s.opt.threads, s.opt.threads == 1 ? "" : "s", s.usable_cpus,
            s.usable_cpus == 1 ? "" : "s");
  return Status::Ok();
}

void RegistryServer::Stop(int grace_ms) {
  Impl& s = *impl_;
  if (s.stopped) return;
  s.stopped = true;
  // Order matters: no new requests; then the work that may still answer
  // requests (runner, inference threads) drains into the stopped I/O
  // context; the HttpServer (and its io_context) goes last.
  if (s.grpc) s.grpc->Stop(grace_ms);
  if (s.plain) s.plain->Stop(grace_ms);
  if (s.http) s.http->Stop(grace_ms);
  s.runner.Stop();
  if (s.explainer) s.explainer->Stop();
  if (s.repo) s.repo->Stop();
  s.http_ptr = nullptr;
  s.plain_ptr = nullptr;
  s.plain.reset();
  s.http.reset();
}

int RegistryServer::port() const { return impl_->http ? impl_->http->port() : 0; }
int RegistryServer::plain_port() const { return impl_->plain ? impl_->plain->port() : 0; }
int RegistryServer::grpc_port() const { return impl_->grpc ? impl_->grpc->port() : 0; }
Repository& RegistryServer::repository() { return *impl_->repo; }
Metrics& RegistryServer::metrics() { return impl_->metrics; }

}  // namespace polis::registry
