// dataset.source COORDINATOR (docs/datasets.md): only the coordinator's host
// holds a SHARDS dataset. At start the coordinator describes it to every
// rank (DescribeForWorkers: shape, classes, part sizes);
// a worker's dataset then asks the coordinator for the records it needs, a
// batch of them per round trip (RecordRequest on the control channel), and
// the coordinator answers with their stored bytes (ServeRecords: a
// RecordBatch on the data channel, tag kTagRecords). The worker checks each
// record's CRC-32 and decodes it as if it had read it from its own copy, so
// LOCAL and COORDINATOR give the same samples, bit for bit.
//
// Thread-safety: one thread at a time calls a RecordClient (the training
// thread, between steps, when no other thread of the rank uses MPI).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/comm/channel.h"
#include "common/data/dataset.h"
#include "common/proto/control.pb.h"

namespace polis::data {

// What a worker knows of the coordinator's dataset.
struct RemoteDescription {
  std::vector<int64_t> shape;  // C, H, W
  int64_t classes = 0;
  int64_t train = 0, validation = 0, test = 0;  // samples per part
  std::string dir;  // on the coordinator's host, for messages
};

// JSON text of `local`'s description (a SHARDS dataset opened from files).
std::string DescribeForWorkers(const Dataset& local, const std::string& dir);

// One record as the coordinator sent it.
struct FetchedRecord {
  int32_t label = 0;
  std::string bytes;  // the stored PNG or JPEG file
  std::string error;  // the coordinator could not read it ("" when read)
};

class RecordClient {
 public:
  // InvalidArgument naming the field when `json` is not a description.
  static StatusOr<std::shared_ptr<RecordClient>> FromDescription(const std::string& json);

  const RemoteDescription& description() const { return desc_; }
  // Before the first Fetch.
  void Attach(comm::Channel* ctrl, comm::Channel* data, int coordinator);
  // The records of `indices` of part `p`, in that order: one round trip.
  // RemoteError when the answer is not what was asked (count, sizes,
  // CRC-32 of the bytes as sent); Timeout past POLIS_TIMEOUT_S.
  Status Fetch(Part p, const std::vector<int64_t>& indices, std::vector<FetchedRecord>* out);

  int64_t round_trips() const { return round_trips_; }
  int64_t bytes_received() const { return bytes_received_; }
  double seconds() const { return seconds_; }  // in Fetch, request to last byte

 private:
  RemoteDescription desc_;
  comm::Channel* ctrl_ = nullptr;
  comm::Channel* data_ = nullptr;
  int coordinator_ = 0;
  std::string buffer_;
  proto::RecordBatch batch_;
  int64_t round_trips_ = 0, bytes_received_ = 0;
  double seconds_ = 0;
};

// The coordinator's side: reads the records rank `to` asked for from
// `local` and sends them. RemoteError naming the rank when it asks for a
// part or a record that does not exist; a record that cannot be read goes
// with its error (the worker's shards.malformed_policy decides).
Status ServeRecords(const Dataset& local, const proto::RecordRequest& req, comm::Channel* data, int to,
                    const std::string& who);

}  // namespace polis::data
