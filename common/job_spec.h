// Loading and checking a job spec (common/proto/job.proto, protobuf text).
//
// A bad job is refused before any process starts work: parse errors name the
// file, line and column; missing, out-of-range or inconsistent fields name the
// file and the field path ("model.layer[2].conv2d_param.filters") and the
// reason; a job whose worker would not fit in this machine's memory names the
// setting that needs it and how much. Messages echo user values clipped
// (EchoValue, common/echo.h), so a huge or binary value gives a short line.
//
// Thread-safety: free functions; the range table is built once, thread-safe.
#pragma once

#include <google/protobuf/descriptor.h>

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "common/data/dataset.h"
#include "common/device/device.h"
#include "common/echo.h"
#include "common/fs.h"  // AvailableMemoryBytes
#include "common/nn/model.h"
#include "common/proto/job.pb.h"
#include "common/status.h"

namespace polis {

struct LoadedJob {
  proto::JobSpec spec;
  std::string path;
  std::string sha256;  // of the file's bytes
  // dataset.source COORDINATOR, on every rank but the coordinator: the
  // coordinator's description of the data, and the way to its records.
  std::shared_ptr<data::RecordClient> remote_data;
};

using data::DatasetPaths;
using data::ResolveDataset;

// Parses and validates the fields themselves (not the dataset files): every
// numeric field set against its declared range (and finite), every string for
// length and control bytes, settings that do not apply to the chosen modes,
// and the cross-field rules.
StatusOr<LoadedJob> LoadJobFile(const std::string& path);
StatusOr<LoadedJob> ParseJobText(const std::string& text, const std::string& source);
Status ValidateJobFields(const proto::JobSpec& spec, const std::string& source);

// Reads the dataset files (their whole length and the labels, not just the
// headers) and builds the model from them: checks that the files exist, are
// complete, agree with each other and fit the layers, and that a worker fits
// in memory. Returns the model.
StatusOr<nn::Model> CheckJob(const LoadedJob& job);

// training.device as the device library's kind and precision.
device::Kind JobDeviceKind(const proto::JobSpec& spec);
device::Precision JobPrecision(const proto::JobSpec& spec);

// Name the model is published under (registry.model_name or the job name).
std::string PublishedModelName(const proto::JobSpec& spec);

// A SHARDS pack's class names (dataset.json "classes") as names: empty when
// they are only the indices "0", "1", … — what a pack of IDX files records,
// IDX naming no classes — so the job's dataset.class_names may name them.
std::vector<std::string> PackClassNames(const std::vector<std::string>& classes);

// The bearer token for publishing to registry.url: the first line of
// registry.token_file, else $POLIS_REGISTRY_TOKEN. InvalidArgument naming
// the file when it is unreadable or empty, or naming both sources when
// neither gives a token. Only meaningful when registry.url is set.
StatusOr<std::string> RegistryToken(const proto::RegistrySpec& registry, const std::string& source);


// The values a numeric field accepts, from its (range) annotation in
// job.proto: "[lo, hi]", either end open with '(' or ')', or "any".
struct FieldRange {
  bool any = false;
  long double lo = 0, hi = 0;
  bool lo_open = false, hi_open = false;
  std::string text;  // as declared
  bool Contains(long double v) const;
};
StatusOr<FieldRange> ParseFieldRange(std::string_view text);
// Integers and floats: the fields that must declare a range.
bool IsNumericField(const google::protobuf::FieldDescriptor* field);
// The parsed annotation of a field of job.proto; null when it has none.
const FieldRange* DeclaredRange(const google::protobuf::FieldDescriptor* field);
// The field at a dotted path from JobSpec ("training.epochs"); null if none.
const google::protobuf::FieldDescriptor* FindJobField(std::string_view path);

// For a command-line override of a numeric field: OK, or InvalidArgument
// "FLAG VALUE: out of range for FIELD, which accepts RANGE".
Status CheckOverride(std::string_view flag, std::string_view field_path, long double value);

// What one worker process of the job holds in memory, estimated from the
// built model the way nn::Network allocates (bytes).
struct WorkerMemory {
  double parameters = 0;   // weights, gradients and the kernels' reordered copies
  double optimizer = 0;    // all-reduce workers keep the optimizer state
  double activations = 0;  // training network at training.batch_size
  double eval = 0;         // inference network at training.eval_batch_size
  double batches = 0;      // shard queue, batch indices and targets
  double dataset = 0;      // samples held (train and test) and the epoch permutation
  double total() const { return parameters + optimizer + activations + eval + batches + dataset; }
};
WorkerMemory EstimateWorkerMemory(const proto::JobSpec& spec, const nn::Model& model,
                                  double dataset_bytes, int64_t train_samples);
// "3.1 TiB", "23.4 GiB", "512 B".
std::string HumanBytes(double bytes);

}  // namespace polis
