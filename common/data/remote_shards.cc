#include "common/data/remote_shards.h"

#include <zlib.h>

#include <cstring>
#include <limits>

#include <google/protobuf/text_format.h>
#include <nlohmann/json.hpp>

#include "common/comm/control.h"
#include "common/comm/wait.h"

namespace polis::data {
namespace {

constexpr int64_t kMaxRecordsPerRequest = 1 << 20;
// An answer is its length (8 bytes, little-endian), then a RecordBatch.
constexpr size_t kLengthBytes = 8;
// What a record adds to the RecordBatch beside its bytes: label, size and
// CRC-32 fields, and an error of at most kMaxErrorBytes.
constexpr int64_t kMaxErrorBytes = 480;
constexpr int64_t kRecordOverhead = 32 + kMaxErrorBytes;

const char* PartName(Part p) {
  return p == Part::kTrain ? "training" : p == Part::kValidation ? "validation" : "test";
}

uint32_t Crc32(const std::string& b) {
  return static_cast<uint32_t>(crc32(0L, reinterpret_cast<const Bytef*>(b.data()), static_cast<uInt>(b.size())));
}

}  // namespace

std::string DescribeForWorkers(const Dataset& local, const std::string& dir) {
  const bool windows = local.task() == Task::kRegression;
  nlohmann::json j = {{"kind", windows ? "timeseries" : "images"},
                      {"shape", local.sample_shape()},
                      {"classes", windows ? 0 : local.target_width()},
                      {"train", local.size(Part::kTrain)},
                      {"validation", local.size(Part::kValidation)},
                      {"test", local.size(Part::kTest)},
                      {"dir", dir},
                      {"max_record_bytes", local.max_encoded_bytes()}};
  if (windows) {
    std::string spec;
    if (local.timeseries_spec() != nullptr) google::protobuf::TextFormat::PrintToString(*local.timeseries_spec(), &spec);
    j["horizon"] = local.target_width();
    j["preprocessing"] = local.PreprocessingJson();
    j["baselines"] = local.Baselines().dump();
    j["timeseries_spec"] = spec;
  }
  return j.dump();
}

StatusOr<std::shared_ptr<RecordClient>> RecordClient::FromDescription(const std::string& json) {
  auto j = nlohmann::json::parse(json, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return InvalidArgument("the coordinator's dataset description is not JSON");
  auto client = std::make_shared<RecordClient>();
  RemoteDescription& d = client->desc_;
  try {
    const std::string kind = j.value("kind", std::string("images"));
    if (kind != "images" && kind != "timeseries")
      return InvalidArgument("the coordinator's dataset description: kind '{}'", kind);
    d.windows = kind == "timeseries";
    if (d.windows) {
      d.horizon = j.at("horizon").get<int64_t>();
      d.preprocessing = j.at("preprocessing").get<std::string>();
      d.baselines = j.at("baselines").get<std::string>();
      d.timeseries_spec = j.at("timeseries_spec").get<std::string>();
    }
    d.shape = j.at("shape").get<std::vector<int64_t>>();
    d.classes = j.at("classes").get<int64_t>();
    d.train = j.at("train").get<int64_t>();
    d.validation = j.at("validation").get<int64_t>();
    d.test = j.at("test").get<int64_t>();
    d.dir = j.at("dir").get<std::string>();
    d.max_record_bytes = j.at("max_record_bytes").get<int64_t>();
  } catch (const nlohmann::json::exception& e) {
    return InvalidArgument("the coordinator's dataset description: {}", e.what());
  }
  bool shape_ok = d.shape.size() == (d.windows ? 2u : 3u);
  for (int64_t v : d.shape) shape_ok &= v >= 1 && v <= (1 << 20);
  const bool target_ok = d.windows ? d.horizon >= 1 && d.horizon <= (1 << 20) : d.classes >= 2;
  if (!shape_ok || !target_ok || d.train < 0 || d.validation < 0 || d.test < 0 || d.max_record_bytes < 0 ||
      d.max_record_bytes > (int64_t{1} << 30))
    return InvalidArgument("the coordinator's dataset description has an impossible shape, class count, size or "
                           "record size");
  return client;
}

void RecordClient::Attach(comm::Channel* ctrl, comm::Channel* data, int coordinator) {
  ctrl_ = ctrl;
  data_ = data;
  coordinator_ = coordinator;
}

Status RecordClient::Request(Part p, std::vector<int64_t> indices) {
  if (ctrl_ == nullptr) return InternalError("records asked of the coordinator before the transport exists");
  if (left_) return InternalError("records asked of the coordinator after this worker's goodbye");
  const int64_t n = static_cast<int64_t>(indices.size());
  const int64_t bytes = kLengthBytes + n * (desc_.max_record_bytes + kRecordOverhead) + 64;
  if (bytes > std::numeric_limits<int32_t>::max())
    return InvalidArgument("{} records of up to {} bytes do not fit one message; lower dataset.shards.prefetch_records "
                           "or training.batch_size",
                           n, desc_.max_record_bytes);
  proto::ControlMessage msg;
  auto* req = msg.mutable_record_request();
  req->set_part(static_cast<int32_t>(p));
  req->mutable_indices()->Add(indices.begin(), indices.end());
  Pending& q = pending_.emplace_back();
  q.part = p;
  q.indices = std::move(indices);
  q.buffer.resize(static_cast<size_t>(bytes));
  // The receive first, so the answer lands in place whenever it comes.
  POLIS_RETURN_IF_ERROR(data_->Irecv(q.buffer.data(), bytes, coordinator_, comm::kTagRecords, &q.request));
  return comm::SendControl(ctrl_, coordinator_, msg);
}

Status RecordClient::Leave() {
  if (left_ || ctrl_ == nullptr) return Status::Ok();
  left_ = true;
  proto::ControlMessage msg;
  msg.mutable_record_request()->set_part(0);
  msg.mutable_record_request()->set_leaving(true);
  return comm::SendControl(ctrl_, coordinator_, msg);
}

Status RecordClient::Next(bool wait, Answer* out) {
  if (pending_.empty()) return InternalError("no records were asked for");
  Pending& q = pending_.front();
  bool done = false;
  POLIS_RETURN_IF_ERROR(data_->Test(&q.request, 1, &done));
  if (!done) {
    if (!wait) return NotFound("not yet");
    const auto start = comm::Clock::now();
    POLIS_RETURN_IF_ERROR(comm::WaitAll(data_, &q.request, 1, comm::DeadlineFromNow(), [&] {
      return fmt::format("{} {} records from the coordinator (rank {})", q.indices.size(), PartName(q.part),
                         coordinator_);
    }));
    seconds_waiting_ += std::chrono::duration<double>(comm::Clock::now() - start).count();
  }
  Status st = Parse(q, out);
  pending_.pop_front();
  return st;
}

Status RecordClient::Parse(Pending& q, Answer* out) {
  uint64_t length = 0;
  std::memcpy(&length, q.buffer.data(), kLengthBytes);
  if (length > q.buffer.size() - kLengthBytes ||
      !batch_.ParseFromArray(q.buffer.data() + kLengthBytes, static_cast<int>(length)))
    return RemoteError("the coordinator (rank {}) sent records that do not parse ({} bytes)", coordinator_, length);
  ++round_trips_;
  bytes_received_ += static_cast<int64_t>(length);
  const int n = static_cast<int>(q.indices.size());
  if (batch_.labels_size() != n || batch_.sizes_size() != n || batch_.crc32_size() != n ||
      batch_.errors_size() != n || batch_.target_at_size() != (desc_.windows ? n : 0))
    return RemoteError("the coordinator (rank {}) answered a request for {} records with {}", coordinator_, n,
                       batch_.labels_size());
  out->part = q.part;
  out->indices = std::move(q.indices);
  out->records.resize(static_cast<size_t>(n));
  const std::string& data = batch_.data();
  size_t at = 0;
  for (int i = 0; i < n; ++i) {
    FetchedRecord& r = out->records[static_cast<size_t>(i)];
    const size_t size = batch_.sizes(i);
    if (size > data.size() - at)
      return RemoteError("the coordinator (rank {}) sent {} bytes of records; their sizes add up to more",
                         coordinator_, data.size());
    r.label = batch_.labels(i);
    r.target_at = desc_.windows ? batch_.target_at(i) : 0;
    r.error = batch_.errors(i);
    r.bytes.assign(data, at, size);
    at += size;
    if (!r.error.empty()) continue;
    if (!desc_.windows && (r.label < 0 || r.label >= desc_.classes))
      return RemoteError("the coordinator (rank {}) sent {} record {} with label {}; the dataset has {} classes",
                         coordinator_, PartName(q.part), out->indices[static_cast<size_t>(i)], r.label,
                         desc_.classes);
    if (Crc32(r.bytes) != batch_.crc32(i))
      return RemoteError("{} record {} arrived from the coordinator (rank {}) with a CRC-32 that does not match "
                         "the one it sent: damaged in transit",
                         PartName(q.part), out->indices[static_cast<size_t>(i)], coordinator_);
  }
  if (at != data.size())
    return RemoteError("the coordinator (rank {}) sent {} bytes of records; their sizes add up to {}", coordinator_,
                       data.size(), at);
  return Status::Ok();
}

RecordServer::~RecordServer() {
  for (Send& s : sends_)
    if (s.request.pending()) data_->Cancel(&s.request, 1);
}

Status RecordServer::Serve(const Dataset& local, const proto::RecordRequest& req, int to, const std::string& who) {
  if (req.part() < 0 || req.part() > static_cast<int>(Part::kTest))
    return RemoteError("{} asked for records of part {}, which does not exist", who, req.part());
  const Part p = static_cast<Part>(req.part());
  const int64_t size = local.size(p);
  if (req.indices_size() > kMaxRecordsPerRequest)
    return RemoteError("{} asked for {} records at once; the limit is {}", who, req.indices_size(),
                       kMaxRecordsPerRequest);
  proto::RecordBatch batch;
  std::string* bytes_out = batch.mutable_data();
  const bool windows = local.task() == Task::kRegression;
  Dataset::EncodedRecord rec;
  for (int64_t i : req.indices()) {
    if (i < 0 || i >= size)
      return RemoteError("{} asked for {} record {}; the part has {}", who, PartName(p), i, size);
    // As a worker reading its own copy: a record that cannot be read is
    // that record's error, not the job's.
    rec.label = 0;  // the bytes' buffer is kept from record to record
    rec.target_at = 0;
    Status st = local.ReadEncoded(p, i, &rec);
    if (!st.ok()) rec.bytes.clear();
    batch.add_labels(rec.label);
    if (windows) batch.add_target_at(rec.target_at);
    batch.add_sizes(static_cast<uint32_t>(rec.bytes.size()));
    batch.add_crc32(Crc32(rec.bytes));
    batch.add_errors(st.ok() ? std::string() : st.message().substr(0, kMaxErrorBytes));
    bytes_out->append(rec.bytes);
  }
  Send& s = sends_.emplace_back();
  s.who = who;
  const uint64_t length = batch.ByteSizeLong();
  s.wire.resize(kLengthBytes + length);
  std::memcpy(s.wire.data(), &length, kLengthBytes);
  batch.SerializeToArray(s.wire.data() + kLengthBytes, static_cast<int>(length));
  POLIS_RETURN_IF_ERROR(
      data_->Isend(s.wire.data(), static_cast<int64_t>(s.wire.size()), to, comm::kTagRecords, &s.request));
  return Progress();
}

Status RecordServer::Progress() {
  for (Send& s : sends_) {
    bool done = false;
    POLIS_RETURN_IF_ERROR(data_->Test(&s.request, 1, &done));
  }
  while (!sends_.empty() && !sends_.front().request.pending()) sends_.pop_front();
  return Status::Ok();
}

Status RecordServer::Flush(comm::Clock::time_point deadline) {
  for (Send& s : sends_)
    POLIS_RETURN_IF_ERROR(comm::WaitAll(data_, &s.request, 1, deadline, [&] { return "records to " + s.who; }));
  sends_.clear();
  return Status::Ok();
}

}  // namespace polis::data
