// dataset.source COORDINATOR in one process, for the data tests: rank 0 of
// a LocalFabric serves the records of its copy (RecordServer) on a thread,
// rank 1 reads them through a RecordClient.
#pragma once

#include <gtest/gtest.h>

#include <atomic>
#include <memory>
#include <thread>

#include "common/comm/control.h"
#include "common/comm/local_transport.h"
#include "common/data/dataset.h"
#include "common/data/remote_shards.h"
#include "common/data/shard_dataset.h"

namespace polis::data {

// Ends when rank 1 sends a FatalError (the destructor).
class CoordinatorThread {
 public:
  explicit CoordinatorThread(const proto::DatasetSpec& spec) : fabric_(2, {1}), server_(fabric_.transport(0)->data()) {
    auto local = OpenDataset(spec, 7);
    EXPECT_TRUE(local.ok()) << local.status().ToString();
    local_ = std::move(*local);
    thread_ = std::thread([this] { Serve(); });
  }
  ~CoordinatorThread() {
    proto::ControlMessage bye;
    bye.mutable_fatal_error()->set_message("done");
    EXPECT_TRUE(comm::SendControl(fabric_.transport(1)->control(), 0, bye).ok());
    thread_.join();
  }
  StatusOr<std::unique_ptr<Dataset>> OpenRemote(const proto::DatasetSpec& spec) {
    POLIS_ASSIGN_OR_RETURN(auto client, RecordClient::FromDescription(DescribeForWorkers(*local_, spec.dir())));
    client->Attach(fabric_.transport(1)->control(), fabric_.transport(1)->data(), 0);
    return OpenRemoteShardDataset(spec, 7, client);
  }
  const Dataset& local() const { return *local_; }
  int requests() const { return requests_; }

 private:
  void Serve() {
    comm::Transport* t = fabric_.transport(0);
    while (true) {
      int from = -1;
      proto::ControlMessage msg;
      Status st = comm::RecvControl(t->control(), comm::kAnySource, &from, &msg, comm::DeadlineFromNow(), "a request");
      if (!st.ok() || msg.has_fatal_error()) return;
      if (msg.record_request().leaving()) continue;  // the remote dataset's goodbye
      ++requests_;
      EXPECT_TRUE(server_.Serve(*local_, msg.record_request(), from, "rank 1 (worker)").ok());
    }
  }
  comm::LocalFabric fabric_;
  data::RecordServer server_;
  std::unique_ptr<Dataset> local_;
  std::atomic<int> requests_{0};
  std::thread thread_;
};

}  // namespace polis::data
