// dataset.source COORDINATOR (docs/datasets.md): only the coordinator's host
// holds a SHARDS dataset. At start the coordinator describes it to every
// rank (DescribeForWorkers: shape, classes, part sizes, largest record;
// for time-series windows also the packed spec, statistics and baselines); a
// worker's dataset then asks the coordinator for the records it will need
// (RecordRequest on the control channel, the receive of the answer posted
// at once) and the coordinator answers with their stored bytes
// (RecordServer: a RecordBatch on the data channel, tag kTagRecords), which
// travel while the worker computes. The worker checks each record's CRC-32
// and decodes it as if it had read it from its own copy, so LOCAL and
// COORDINATOR give the same samples, bit for bit.
//
// Thread-safety: one thread at a time calls a RecordClient (the training
// thread, between steps, when no other thread of the rank uses MPI).
#pragma once

#include <cstdint>
#include <deque>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "common/comm/channel.h"
#include "common/data/dataset.h"
#include "common/proto/control.pb.h"

namespace polis::data {

// What a worker knows of the coordinator's dataset.
struct RemoteDescription {
  std::vector<int64_t> shape;  // images: C, H, W; time-series windows: lookback, features
  int64_t classes = 0;         // images
  // Time-series windows (a regression): the forecast's steps, the packed
  // statistics (Dataset::PreprocessingJson), the test baselines (JSON) and
  // the packed TimeSeriesSpec (text proto).
  bool windows = false;
  int64_t horizon = 0;
  std::string preprocessing, baselines, timeseries_spec;
  int64_t train = 0, validation = 0, test = 0;  // samples per part
  std::string dir;  // on the coordinator's host, for messages
  int64_t max_record_bytes = 0;  // the largest record: the receive buffers' size
};

// JSON text of `local`'s description (a SHARDS dataset opened from files).
std::string DescribeForWorkers(const Dataset& local, const std::string& dir);

// One record as the coordinator sent it.
struct FetchedRecord {
  int32_t label = 0;
  uint32_t target_at = 0;  // windows: Dataset::EncodedRecord::target_at
  std::string bytes;  // the stored image file, or a window's two .npy members
  std::string error;  // the coordinator could not read it ("" when read)
};

class RecordClient {
 public:
  // InvalidArgument naming the field when `json` is not a description.
  static StatusOr<std::shared_ptr<RecordClient>> FromDescription(const std::string& json);

  const RemoteDescription& description() const { return desc_; }
  // Before the first Request.
  void Attach(comm::Channel* ctrl, comm::Channel* data, int coordinator);

  // Asks for the records of `indices` of part `p` and posts the receive of
  // the answer; returns at once, so the answer travels while the caller
  // computes. Answers come back in the order asked.
  Status Request(Part p, std::vector<int64_t> indices);
  struct Answer {
    Part part = Part::kTrain;
    std::vector<int64_t> indices;
    std::vector<FetchedRecord> records;  // in the order of `indices`
  };
  // The oldest request's answer. Without `wait`, NotFound while it has not
  // arrived. RemoteError when it is not what was asked (count, sizes, CRC-32
  // of the bytes as sent); Timeout past POLIS_TIMEOUT_S.
  Status Next(bool wait, Answer* out);
  size_t pending() const { return pending_.size(); }
  // The goodbye (RecordRequest.leaving): no request follows. Then every
  // pending answer is sure to come (the coordinator serves until it has
  // every worker's goodbye); once is enough.
  Status Leave();

  int64_t round_trips() const { return round_trips_; }
  int64_t bytes_received() const { return bytes_received_; }
  double seconds_waiting() const { return seconds_waiting_; }  // in Next(wait = true)

 private:
  struct Pending {
    Part part;
    std::vector<int64_t> indices;
    std::string buffer;
    comm::Request request;
  };
  Status Parse(Pending& p, Answer* out);

  RemoteDescription desc_;
  comm::Channel* ctrl_ = nullptr;
  comm::Channel* data_ = nullptr;
  int coordinator_ = 0;
  std::deque<Pending> pending_;  // stable addresses: receives are posted into them
  proto::RecordBatch batch_;
  int64_t round_trips_ = 0, bytes_received_ = 0;
  double seconds_waiting_ = 0;
  bool left_ = false;
};

// The coordinator's side. Serve reads the records rank `to` asked for from
// `local` and starts sending them (a RecordBatch after its 8-byte length);
// the sends complete while the coordinator goes on (Progress, between
// messages), so a worker that is computing holds nobody up. RemoteError
// naming the rank when it asks for a part or a record that does not exist;
// a record that cannot be read goes with its error (the worker's
// shards.malformed_policy decides).
class RecordServer {
 public:
  explicit RecordServer(comm::Channel* data) : data_(data) {}
  ~RecordServer();  // withdraws the sends still in flight
  RecordServer(const RecordServer&) = delete;
  RecordServer& operator=(const RecordServer&) = delete;

  Status Serve(const Dataset& local, const proto::RecordRequest& req, int to, const std::string& who);
  // Forgets the sends that have completed.
  Status Progress();
  // Waits for every send; Timeout naming the rank past `deadline`.
  Status Flush(comm::Clock::time_point deadline);
  // A worker's goodbye (RecordRequest.leaving) came.
  void OnLeave(int from) { left_.insert(from); }
  bool Left(int from) const { return left_.count(from) > 0; }
  size_t in_flight() const { return sends_.size(); }

 private:
  struct Send {
    std::string wire;
    comm::Request request;
    std::string who;
  };
  comm::Channel* data_;
  std::deque<Send> sends_;
  std::set<int> left_;  // ranks that said goodbye
};

}  // namespace polis::data
