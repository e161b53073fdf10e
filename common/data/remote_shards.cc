#include "common/data/remote_shards.h"

#include <zlib.h>

#include <nlohmann/json.hpp>

#include "common/comm/control.h"
#include "common/comm/wait.h"

namespace polis::data {
namespace {

constexpr int64_t kMaxRecordsPerRequest = 1 << 20;

const char* PartName(Part p) {
  return p == Part::kTrain ? "training" : p == Part::kValidation ? "validation" : "test";
}

uint32_t Crc32(const std::string& b) {
  return static_cast<uint32_t>(crc32(0L, reinterpret_cast<const Bytef*>(b.data()), static_cast<uInt>(b.size())));
}

}  // namespace

std::string DescribeForWorkers(const Dataset& local, const std::string& dir) {
  nlohmann::json j = {{"shape", local.sample_shape()},
                      {"classes", local.target_width()},
                      {"train", local.size(Part::kTrain)},
                      {"validation", local.size(Part::kValidation)},
                      {"test", local.size(Part::kTest)},
                      {"dir", dir}};
  return j.dump();
}

StatusOr<std::shared_ptr<RecordClient>> RecordClient::FromDescription(const std::string& json) {
  auto j = nlohmann::json::parse(json, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return InvalidArgument("the coordinator's dataset description is not JSON");
  auto client = std::make_shared<RecordClient>();
  RemoteDescription& d = client->desc_;
  try {
    d.shape = j.at("shape").get<std::vector<int64_t>>();
    d.classes = j.at("classes").get<int64_t>();
    d.train = j.at("train").get<int64_t>();
    d.validation = j.at("validation").get<int64_t>();
    d.test = j.at("test").get<int64_t>();
    d.dir = j.at("dir").get<std::string>();
  } catch (const nlohmann::json::exception& e) {
    return InvalidArgument("the coordinator's dataset description: {}", e.what());
  }
  bool shape_ok = d.shape.size() == 3;
  for (int64_t v : d.shape) shape_ok &= v >= 1 && v <= (1 << 20);
  if (!shape_ok || d.classes < 2 || d.train < 0 || d.validation < 0 || d.test < 0)
    return InvalidArgument("the coordinator's dataset description has an impossible shape, class count or size");
  return client;
}

void RecordClient::Attach(comm::Channel* ctrl, comm::Channel* data, int coordinator) {
  ctrl_ = ctrl;
  data_ = data;
  coordinator_ = coordinator;
}

Status RecordClient::Fetch(Part p, const std::vector<int64_t>& indices, std::vector<FetchedRecord>* out) {
  if (ctrl_ == nullptr) return InternalError("records asked of the coordinator before the transport exists");
  proto::ControlMessage msg;
  auto* req = msg.mutable_record_request();
  req->set_part(static_cast<int32_t>(p));
  req->mutable_indices()->Add(indices.begin(), indices.end());
  const auto start = comm::Clock::now();
  POLIS_RETURN_IF_ERROR(comm::SendControl(ctrl_, coordinator_, msg));
  // The answer: probe for its size, then receive it.
  const auto deadline = comm::DeadlineFromNow();
  comm::Backoff backoff;
  comm::Probed found;
  while (true) {
    POLIS_ASSIGN_OR_RETURN(bool here, data_->Probe(coordinator_, comm::kTagRecords, &found));
    if (here) break;
    if (comm::Clock::now() > deadline)
      return Timeout("no answer from the coordinator (rank {}) to a request for {} {} records", coordinator_,
                     indices.size(), PartName(p));
    backoff.Pause();
  }
  buffer_.resize(static_cast<size_t>(found.bytes));
  POLIS_RETURN_IF_ERROR(data_->Recv(buffer_.data(), found.bytes, coordinator_, comm::kTagRecords));
  ++round_trips_;
  bytes_received_ += found.bytes;
  seconds_ += std::chrono::duration<double>(comm::Clock::now() - start).count();
  if (!batch_.ParseFromString(buffer_))
    return RemoteError("the coordinator (rank {}) sent records that do not parse ({} bytes)", coordinator_,
                       found.bytes);
  const int n = static_cast<int>(indices.size());
  if (batch_.labels_size() != n || batch_.sizes_size() != n || batch_.crc32_size() != n ||
      batch_.errors_size() != n)
    return RemoteError("the coordinator (rank {}) answered a request for {} records with {}", coordinator_, n,
                       batch_.labels_size());
  out->resize(static_cast<size_t>(n));
  const std::string& data = batch_.data();
  size_t at = 0;
  for (int i = 0; i < n; ++i) {
    FetchedRecord& r = (*out)[static_cast<size_t>(i)];
    const size_t size = batch_.sizes(i);
    if (size > data.size() - at)
      return RemoteError("the coordinator (rank {}) sent {} bytes of records; their sizes add up to more",
                         coordinator_, data.size());
    r.label = batch_.labels(i);
    r.error = batch_.errors(i);
    r.bytes.assign(data, at, size);
    at += size;
    if (!r.error.empty()) continue;
    if (r.label < 0 || r.label >= desc_.classes)
      return RemoteError("the coordinator (rank {}) sent {} record {} with label {}; the dataset has {} classes",
                         coordinator_, PartName(p), indices[static_cast<size_t>(i)], r.label, desc_.classes);
    if (Crc32(r.bytes) != batch_.crc32(i))
      return RemoteError("{} record {} arrived from the coordinator (rank {}) with a CRC-32 that does not match "
                         "the one it sent: damaged in transit",
                         PartName(p), indices[static_cast<size_t>(i)], coordinator_);
  }
  if (at != data.size())
    return RemoteError("the coordinator (rank {}) sent {} bytes of records; their sizes add up to {}", coordinator_,
                       data.size(), at);
  return Status::Ok();
}

Status ServeRecords(const Dataset& local, const proto::RecordRequest& req, comm::Channel* data, int to,
                    const std::string& who) {
  if (req.part() < 0 || req.part() > static_cast<int>(Part::kTest))
    return RemoteError("{} asked for records of part {}, which does not exist", who, req.part());
  const Part p = static_cast<Part>(req.part());
  const int64_t size = local.size(p);
  if (req.indices_size() > kMaxRecordsPerRequest)
    return RemoteError("{} asked for {} records at once; the limit is {}", who, req.indices_size(),
                       kMaxRecordsPerRequest);
  proto::RecordBatch batch;
  std::string* bytes_out = batch.mutable_data();
  std::string bytes;
  for (int64_t i : req.indices()) {
    if (i < 0 || i >= size)
      return RemoteError("{} asked for {} record {}; the part has {}", who, PartName(p), i, size);
    int32_t label = 0;
    // As a worker reading its own copy: a record that cannot be read is
    // that record's error, not the job's.
    Status st = local.ReadEncoded(p, i, &bytes, &label);
    if (!st.ok()) bytes.clear();
    batch.add_labels(label);
    batch.add_sizes(static_cast<uint32_t>(bytes.size()));
    batch.add_crc32(Crc32(bytes));
    batch.add_errors(st.ok() ? std::string() : st.message());
    bytes_out->append(bytes);
  }
  const std::string wire = batch.SerializeAsString();
  comm::Request r;
  POLIS_RETURN_IF_ERROR(data->Isend(wire.data(), static_cast<int64_t>(wire.size()), to, comm::kTagRecords, &r));
  return comm::WaitAll(data, &r, 1, comm::DeadlineFromNow(),
                       [&] { return fmt::format("sending {} records to {}", req.indices_size(), who); });
}

}  // namespace polis::data
