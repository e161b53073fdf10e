#include "common/data/shard_dataset.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <mutex>
#include <numeric>
#include <string_view>
#include <thread>
#include <unordered_map>

#include <google/protobuf/text_format.h>

#include "common/data/remote_shards.h"
#include "common/data/shard_format.h"
#include "common/data/split.h"
#include "common/data/timeseries.h"
#include "common/log.h"

namespace polis::data {
namespace {

uint64_t Mix(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// Uniform in [0, 1) from a 64-bit stream.
struct Draws {
  uint64_t state;
  uint64_t Next() { return state = Mix(state); }
  float Unit() { return static_cast<float>(Next() >> 40) / static_cast<float>(1ull << 24); }
};

using Policy = proto::ShardsSpec::Malformed;

class ShardDataset : public Dataset {
 public:
  ~ShardDataset() override {
    // The goodbye, then the answers still on their way: taken, so the
    // coordinator's sends complete (it serves until every worker's goodbye).
    if (remote_) {
      Status st = remote_->Leave();
      if (!st.ok()) POLIS_LOG(kWarn, kData, "records from the coordinator: the goodbye failed: {}", st.ToString());
      if (st.ok()) DrainAnswers();
    }
    {
      std::lock_guard<std::mutex> l(mu_);
      stop_ = true;
    }
    work_cv_.notify_all();
    for (auto& t : threads_) t.join();
    for (auto& s : shards_) ::close(s.fd);
    if (decoded_ahead_ + decoded_in_step_ > 0)
      POLIS_LOG(kInfo, kData, "records decoded ahead by the decode threads: {}; decoded in the step (not reached in "
                "time): {}", decoded_ahead_, decoded_in_step_);
    if (remote_ && remote_->round_trips() > 0)
      POLIS_LOG(kInfo, kData, "records from the coordinator: {} requests, {:.1f} MiB, {:.3f} s waiting for answers",
                remote_->round_trips(), remote_->bytes_received() / 1048576.0, remote_->seconds_waiting());
  }

  Status Open(const proto::DatasetSpec& d, uint64_t seed) {
    Configure(d, seed);
    POLIS_ASSIGN_OR_RETURN(manifest_, ReadManifest(dir_));
    if (manifest_.timeseries()) return OpenWindows(d);
    if (manifest_.train.empty()) return InvalidArgument("'{}/{}' lists no training shards", dir_, kManifestName);
    if (manifest_.test.empty()) return InvalidArgument("'{}/{}' lists no test shards", dir_, kManifestName);
    POLIS_RETURN_IF_ERROR(OpenPart(manifest_.train, d.train_limit(), &train_));
    POLIS_RETURN_IF_ERROR(OpenPart(manifest_.test, d.test_limit(), &test_));
    std::vector<int32_t> labels;
    labels.reserve(static_cast<size_t>(train_.size));
    for (int64_t i = 0; i < train_.size; ++i) labels.push_back(Locate(train_, i).label);
    split_ = StratifiedSplit(labels, static_cast<int>(manifest_.classes.size()),
                             ValidationCount(d, train_.size), seed);
    classes_ = static_cast<int64_t>(manifest_.classes.size());
    return Start();
  }

  // dataset.source COORDINATOR, on a worker: the records come from the
  // coordinator's copy through `remote`; no file is opened here.
  Status OpenRemote(const proto::DatasetSpec& d, uint64_t seed, std::shared_ptr<RecordClient> remote) {
    Configure(d, seed);
    remote_ = std::move(remote);
    const RemoteDescription& r = remote_->description();
    if (r.windows) return OpenRemoteWindows(r);
    manifest_.channels = static_cast<int>(r.shape[0]);
    manifest_.height = static_cast<int>(r.shape[1]);
    manifest_.width = static_cast<int>(r.shape[2]);
    classes_ = r.classes;
    return Start();
  }

  // Windows from the coordinator: what OpenWindows reads from the manifest
  // comes in its description.
  Status OpenRemoteWindows(const RemoteDescription& r) {
    windows_ = true;
    manifest_.kind = "timeseries";
    manifest_.timeseries_spec = r.timeseries_spec;
    manifest_.preprocessing = r.preprocessing;
    manifest_.baselines = fmt::format(R"({{"test": {}}})", r.baselines.empty() ? "{}" : r.baselines);
    if (!google::protobuf::TextFormat::ParseFromString(r.timeseries_spec, &timeseries_))
      return InvalidArgument("the coordinator's dataset description: timeseries_spec is not a TimeSeriesSpec");
    POLIS_ASSIGN_OR_RETURN(TimeSeriesStats stats, TimeSeriesStats::FromJson(r.preprocessing));
    if (static_cast<int64_t>(stats.feature_names.size()) != r.shape[1])
      return InvalidArgument("the coordinator's dataset description: windows of {} features but statistics of {}",
                             r.shape[1], stats.feature_names.size());
    target_mean_ = stats.target_mean;
    target_stddev_ = stats.target_stddev;
    manifest_.lookback = r.shape[0];
    manifest_.features = stats.feature_names;
    manifest_.horizon = r.horizon;
    return Start();
  }

  // A time series' windows (manifest kind "timeseries"): the packed
  // validation part follows the training part in train_, so that the
  // split's index maps are plain ranges.
  Status OpenWindows(const proto::DatasetSpec& d) {
    windows_ = true;
    if (!google::protobuf::TextFormat::ParseFromString(manifest_.timeseries_spec, &timeseries_))
      return DataLoss("'{}/{}': timeseries_spec is not a TimeSeriesSpec text proto", dir_, kManifestName);
    POLIS_ASSIGN_OR_RETURN(TimeSeriesStats stats, TimeSeriesStats::FromJson(manifest_.preprocessing));
    target_mean_ = stats.target_mean;
    target_stddev_ = stats.target_stddev;
    if (stats.feature_names.size() != manifest_.features.size())
      return DataLoss("'{}/{}': {} features but the statistics hold {}", dir_, kManifestName,
                      manifest_.features.size(), stats.feature_names.size());
    if (manifest_.train.empty()) return InvalidArgument("'{}/{}' lists no training shards", dir_, kManifestName);
    if (manifest_.test.empty()) return InvalidArgument("'{}/{}' lists no test shards", dir_, kManifestName);
    POLIS_RETURN_IF_ERROR(OpenPart(manifest_.train, d.train_limit(), &train_));
    const int64_t train = train_.size;
    POLIS_RETURN_IF_ERROR(OpenPart(manifest_.validation, 0, &train_));
    POLIS_RETURN_IF_ERROR(OpenPart(manifest_.test, d.test_limit(), &test_));
    test_limited_ = d.test_limit() > 0;
    split_.train.resize(static_cast<size_t>(train));
    std::iota(split_.train.begin(), split_.train.end(), int64_t{0});
    split_.validation.resize(static_cast<size_t>(train_.size - train));
    std::iota(split_.validation.begin(), split_.validation.end(), train);
    return Start();
  }

  Task task() const override { return windows_ ? Task::kRegression : Task::kClassification; }
  int64_t size(Part p) const override {
    if (remote_) {
      const RemoteDescription& r = remote_->description();
      return p == Part::kTrain ? r.train : p == Part::kValidation ? r.validation : r.test;
    }
    if (p == Part::kTest) return test_.size;
    return static_cast<int64_t>(p == Part::kTrain ? split_.train.size() : split_.validation.size());
  }
  std::vector<int64_t> sample_shape() const override {
    if (windows_) return {manifest_.lookback, static_cast<int64_t>(manifest_.features.size())};
    return {manifest_.channels, manifest_.height, manifest_.width};
  }
  int64_t target_width() const override { return windows_ ? manifest_.horizon : classes_; }
  double TargetToOriginal(double v) const override {
    return windows_ ? v * target_stddev_ + target_mean_ : v;
  }
  nlohmann::json Baselines() const override {
    // The pack scored every test window: with a test_limit they are not the
    // windows the model is scored on, so there is no baseline to compare.
    if (!windows_ || test_limited_) return nlohmann::json::object();
    const auto j = nlohmann::json::parse(manifest_.baselines, nullptr, false);
    return j.is_object() && j.contains("test") ? j["test"] : nlohmann::json::object();
  }
  std::string PreprocessingJson() const override { return windows_ ? manifest_.preprocessing : ""; }
  const proto::TimeSeriesSpec* timeseries_spec() const override { return windows_ ? &timeseries_ : nullptr; }
  std::vector<std::string> files() const override {
    if (remote_) return {};  // read by the coordinator, which checks them
    // The indexes hold every record's CRC-32: they stand for the tars.
    std::vector<std::string> f = {dir_ + "/" + kManifestName};
    for (const auto* part : {&manifest_.train, &manifest_.validation, &manifest_.test})
      for (const auto& s : *part) f.push_back(dir_ + "/" + s.index);
    return f;
  }
  std::string Report() const override {
    if (remote_ && windows_) {
      const RemoteDescription& r = remote_->description();
      return fmt::format("windows from the coordinator's copy of '{}' (dataset.source COORDINATOR): {} training, {} "
                         "validation and {} test windows of {} steps x {} features, horizon {}; {} decode threads, "
                         "up to {} records fetched ahead",
                         r.dir, r.train, r.validation, r.test, manifest_.lookback, manifest_.features.size(),
                         manifest_.horizon, threads_.size(), capacity_);
    }
    if (remote_) {
      const RemoteDescription& r = remote_->description();
      return fmt::format("records from the coordinator's copy of '{}' (dataset.source COORDINATOR): {} training, {} "
                         "validation and {} test records of {}x{}x{}, {} classes; {} decode threads, up to {} "
                         "records fetched and decoded ahead",
                         r.dir, r.train, r.validation, r.test, r.shape[0], r.shape[1], r.shape[2], r.classes,
                         threads_.size(), capacity_);
    }
    if (windows_)
      return fmt::format("shards '{}': {} training, {} validation and {} test windows of {} steps x {} features, "
                         "horizon {}; {} decode threads, up to {} records read ahead{}",
                         dir_, split_.train.size(), split_.validation.size(), test_.size, manifest_.lookback,
                         manifest_.features.size(), manifest_.horizon, threads_.size(), capacity_,
                         manifest_.report.empty() ? "" : "\npacked from: " + manifest_.report);
    return fmt::format("shards '{}': {} training records ({} held out for validation) and {} test records of "
                       "{}x{}x{} {}, {} classes; {} decode threads, up to {} records decoded ahead{}",
                       dir_, train_.size, split_.validation.size(), test_.size, manifest_.channels,
                       manifest_.height, manifest_.width, EncodingExtension(manifest_.encoding),
                       manifest_.classes.size(), threads_.size(), capacity_,
                       manifest_.report.empty() ? "" : "\npacked from: " + manifest_.report);
  }

  void SetEpoch(int epoch) const override {
    if (remote_) DrainAnswers();
    std::unique_lock<std::mutex> l(mu_);
    epoch_ = epoch;
    // Records prefetched and never gathered belong to the last epoch.
    done_cv_.wait(l, [&] { return busy_ == 0; });
    queue_.clear();
    slots_.clear();
  }

  void Prefetch(Part p, const int64_t* idx, int64_t n) const override {
    if (threads_.empty()) return;
    if (remote_) {
      TakeAnswers(/*wait=*/false);
      Ask(p, idx, n, /*up_to_capacity=*/true);
      return;
    }
    std::vector<int64_t>& added = added_;
    added.clear();
    {
      std::lock_guard<std::mutex> l(mu_);
      for (int64_t i = 0; i < n && static_cast<int64_t>(slots_.size()) < capacity_; ++i)
        if (const int64_t key = Key(p, idx[i]); Request(key)) added.push_back(key);
      work_cv_.notify_all();
    }
    // The kernel starts reading the records queued now, all at once: on a
    // dataset that is not in the page cache the decode threads' preads then
    // find them there instead of each waiting for the disk in turn.
    for (int64_t key : added) {
      const Shard* sh = nullptr;
      const ShardRecord& r = LocateKey(key, &sh);
      ::posix_fadvise(sh->fd, r.offset - kTarBlock, r.size + kTarBlock, POSIX_FADV_WILLNEED);
    }
  }

  void Gather(Part p, const int64_t* idx, int64_t n, float* x, float* y) const override {
    std::vector<int64_t>& bad = bad_;
    bad.clear();
    Slot slot;
    if (remote_) {
      Ask(p, idx, n, /*up_to_capacity=*/false);  // beyond capacity: the batch itself
      AwaitArrival(p, idx, n);
    } else if (!threads_.empty()) {
      std::lock_guard<std::mutex> l(mu_);
      for (int64_t i = 0; i < n; ++i) Request(Key(p, idx[i]));  // beyond capacity: the batch itself
      work_cv_.notify_all();
    }
    for (int64_t i = 0; i < n; ++i) {
      const int64_t key = Key(p, idx[i]);
      if (remote_) {
        if (!TakeFetched(key, &slot)) {
          CopyRow(idx, i, x, y);
          continue;
        }
      } else if (threads_.empty()) {
        slot = Decode(key);
      } else {
        // Decoded ahead: taken. Not yet (or the same sample twice in one
        // batch, taken already): decoded here rather than waited for, so
        // the training thread works instead of sleeping while the decode
        // threads are behind.
        std::unique_lock<std::mutex> l(mu_);
        auto it = slots_.find(key);
        const bool ready = it != slots_.end() && it->second.ready;
        if (ready) slot = std::move(it->second);
        if (it != slots_.end()) slots_.erase(it);  // a decode thread's late result is dropped
        l.unlock();
        if (!ready) slot = Decode(key);
        ++(ready ? decoded_ahead_ : decoded_in_step_);
      }
      if (!slot.error.empty()) {
        bad.push_back(i);
        if (fail_) {
          if (error_.ok()) error_ = DataLoss("{}", slot.error);
        } else {
          POLIS_LOG(kWarn, kData, "skipping a bad record (shards.malformed_policy SKIP): {}", slot.error);
        }
        std::fill(x + i * elements_, x + (i + 1) * elements_, 0.0f);
        std::fill(y + i * y_width_, y + (i + 1) * y_width_, 0.0f);
        continue;
      }
      if (windows_) {
        std::copy(slot.window.begin(), slot.window.begin() + elements_, x + i * elements_);
        std::copy(slot.window.begin() + elements_, slot.window.end(), y + i * y_width_);
        continue;
      }
      const bool augment = aug_ != nullptr && p == Part::kTrain;
      ImageToFloats(slot.pixels.data(), manifest_.height, manifest_.width, manifest_.channels,
                    augment ? aug_ : nullptr, AugmentSeed(seed_, epoch_, idx[i]),
                    spec_.scale(), spec_.shift(), x + i * elements_);
      y[i] = static_cast<float>(slot.label);
    }
    // SKIP: another record of the batch takes a bad one's place, so the
    // batch keeps its size and the epoch its sample count.
    if (!fail_ && !bad.empty() && static_cast<int64_t>(bad.size()) < n) {
      int64_t good = 0;
      while (std::find(bad.begin(), bad.end(), good) != bad.end()) ++good;
      for (int64_t b : bad) {
        std::copy(x + good * elements_, x + (good + 1) * elements_, x + b * elements_);
        std::copy(y + good * y_width_, y + (good + 1) * y_width_, y + b * y_width_);
      }
    }
  }

  Status TakeError() const override {
    Status s = !fatal_.ok() ? std::move(fatal_) : std::move(error_);
    error_ = fatal_ = Status::Ok();
    return s;
  }

  int64_t max_encoded_bytes() const override { return max_record_; }

  Status ReadEncoded(Part p, int64_t i, EncodedRecord* out) const override {
    if (remote_) return FailedPrecondition("this rank's records come from the coordinator");
    if (i < 0 || i >= size(p)) return InvalidArgument("record {} of a part of {}", i, size(p));
    const Shard* s = nullptr;
    const ShardRecord& r = LocateKey(Key(p, i), &s);
    out->label = r.label;
    out->target_at = r.target_at;
    return ReadRecordBytes(s->fd, s->path, r, s->ext, &out->bytes);
  }

 private:
  struct Shard {
    std::string path;
    int fd = -1;
    const char* ext = "png";  // of each record's first member: ShardIndex::extension()
    std::vector<ShardRecord> records;
  };
  bool test_limited_ = false;  // dataset.test_limit cut the test part
  struct PartShards {
    std::vector<size_t> shard;   // into shards_
    std::vector<int64_t> first;  // the part's first record in each
    int64_t size = 0;
  };
  struct Slot {
    bool ready = false;
    bool started = false;     // a decode thread is on it
    uint64_t generation = 0;  // which request of its key this slot is (a late result must match)
    std::vector<uint8_t> pixels;
    std::vector<float> window;  // time series: the input's floats, then the target's
    int32_t label = 0;
    std::string error;
    std::string encoded;  // dataset.source COORDINATOR: the bytes fetched, until decoded
    uint32_t target_at = 0;  // ... of a window: where its target member starts
    bool asked = false;   // asked of the coordinator, not arrived yet
  };

  void Configure(const proto::DatasetSpec& d, uint64_t seed) {
    dir_ = d.dir();
    spec_ = d;
    seed_ = seed;
    fail_ = d.shards().malformed_policy() == Policy::FAIL;
    aug_ = d.has_augmentation() ? &spec_.augmentation() : nullptr;
  }

  Status Start() {
    elements_ = windows_ ? manifest_.lookback * static_cast<int64_t>(manifest_.features.size())
                         : int64_t{manifest_.channels} * manifest_.height * manifest_.width;
    y_width_ = windows_ ? manifest_.horizon : 1;
    capacity_ = spec_.shards().prefetch_records();
    for (int i = 0; i < spec_.shards().decode_threads(); ++i) threads_.emplace_back([this] { DecodeLoop(); });
    POLIS_LOG(kInfo, kData, "{}", Report());
    return Status::Ok();
  }

  Status OpenPart(const std::vector<ShardFileInfo>& files, int64_t limit, PartShards* part) {
    for (const ShardFileInfo& f : files) {
      if (limit > 0 && part->size >= limit) break;
      POLIS_ASSIGN_OR_RETURN(ShardIndex ix, ReadShardIndex(dir_, f));
      Shard s;
      s.path = dir_ + "/" + f.tar;
      s.ext = ix.extension();
      if (ix.windows != windows_)
        return DataLoss("'{}' holds {} records but '{}/{}' is a dataset of {}", ix.tar, ix.windows ? "time-series" : "image",
                        dir_, kManifestName, manifest_.kind);
      s.fd = ::open(s.path.c_str(), O_RDONLY | O_CLOEXEC);
      if (s.fd < 0) return ErrnoStatus("open", s.path, errno);
      // Records are read in the epoch's random order: no read-ahead past
      // the one asked for (Prefetch says which are needed next).
      ::posix_fadvise(s.fd, 0, 0, POSIX_FADV_RANDOM);
      shards_.push_back(std::move(s));  // owns the fd from here
      Shard& sh = shards_.back();
      struct stat st {};
      ::fstat(sh.fd, &st);
      for (const ShardRecord& r : ix.records) {
        if (!windows_ && (r.label < 0 || r.label >= static_cast<int32_t>(manifest_.classes.size())))
          return DataLoss("'{}' (index '{}'): record {} has label {}; the dataset has {} classes", sh.path, f.index,
                          r.key, r.label, manifest_.classes.size());
      }
      if (st.st_size < ix.tar_bytes) {
        // The records past the end are lost; the ones before are not.
        size_t keep = 0;
        while (keep < ix.records.size() && ix.records[keep].offset + ix.records[keep].size <= st.st_size) ++keep;
        const ShardRecord& first_lost = ix.records[std::min(keep, ix.records.size() - 1)];
        const std::string what = fmt::format(
            "'{}' is truncated: {} bytes, its index says {}; record {} at offset {} and the {} after it are past the end",
            sh.path, st.st_size, ix.tar_bytes, MemberName(first_lost.key, ix.extension()),
            first_lost.offset, ix.records.size() - keep - 1);
        if (fail_) return DataLoss("{} (shards.malformed_policy FAIL)", what);
        POLIS_LOG(kWarn, kData, "{}; skipping them (shards.malformed_policy SKIP)", what);
        ix.records.resize(keep);
      }
      if (limit > 0 && part->size + static_cast<int64_t>(ix.records.size()) > limit)
        ix.records.resize(static_cast<size_t>(limit - part->size));
      for (const ShardRecord& r : ix.records) max_record_ = std::max<int64_t>(max_record_, r.size);
      sh.records = std::move(ix.records);
      sh.records.shrink_to_fit();
      part->shard.push_back(shards_.size() - 1);
      part->first.push_back(part->size);
      part->size += static_cast<int64_t>(sh.records.size());
    }
    return Status::Ok();
  }

  // Keys: training-file records as they are, test records below zero.
  // From the coordinator: the part's index and the part.
  int64_t Key(Part p, int64_t i) const {
    if (remote_) {
      POLIS_ENFORCE_LT(i, size(p));
      return i * 4 + static_cast<int64_t>(p);
    }
    if (p == Part::kTest) {
      POLIS_ENFORCE_LT(i, test_.size);
      return -1 - i;
    }
    const auto& map = p == Part::kTrain ? split_.train : split_.validation;
    POLIS_ENFORCE_LT(i, static_cast<int64_t>(map.size()));
    return map[static_cast<size_t>(i)];
  }
  const ShardRecord& Locate(const PartShards& part, int64_t i, const Shard** shard = nullptr) const {
    const size_t k = static_cast<size_t>(std::upper_bound(part.first.begin(), part.first.end(), i) - part.first.begin()) - 1;
    const Shard& s = shards_[part.shard[k]];
    if (shard) *shard = &s;
    return s.records[static_cast<size_t>(i - part.first[k])];
  }

  // With mu_ held. True when the key was not held yet.
  bool Request(int64_t key) const {
    auto [it, inserted] = slots_.try_emplace(key);
    if (!inserted) return false;
    it->second.generation = ++generations_;
    queue_.push_back(key);
    return true;
  }

  const ShardRecord& LocateKey(int64_t key, const Shard** shard) const {
    return key < 0 ? Locate(test_, -1 - key, shard) : Locate(train_, key, shard);
  }

  // A record's bytes to its pixels in *out; `where()` names the record in
  // an error (and is only called then: this is the hot path).
  template <typename Where>
  void DecodeInto(std::string_view bytes, const Where& where, Slot* out) const {
    auto px = DecodeImage(bytes, manifest_.channels);
    if (!px.ok()) {
      out->error = fmt::format("{}: corrupt image: {}", where(), px.status().message());
    } else if (px->height != manifest_.height || px->width != manifest_.width) {
      out->error = fmt::format("{} is {}x{}; the dataset is {}x{}", where(), px->height, px->width, manifest_.height,
                               manifest_.width);
    } else {
      out->pixels = std::move(px->hwc);
    }
  }

  Slot Decode(int64_t key) const {
    const Shard* s = nullptr;
    const ShardRecord& r = LocateKey(key, &s);
    Slot out;
    out.ready = true;
    out.label = r.label;
    thread_local std::string bytes;
    Status st = ReadRecordBytes(s->fd, s->path, r, s->ext, &bytes);
    if (!st.ok()) {
      out.error = st.message();
      return out;
    }
    auto where = [&] { return fmt::format("'{}' offset {}: record {}", s->path, r.offset, MemberName(r.key, s->ext)); };
    if (windows_) {
      DecodeWindow(bytes, r.target_at, where, &out);
      return out;
    }
    DecodeInto(bytes, where, &out);
    return out;
  }

  // The "decode" of a window: two memcpy's out of its .npy members.
  template <typename Where>
  void DecodeWindow(std::string_view bytes, uint32_t target_at, const Where& where, Slot* out) const {
    ShardRecord r;
    r.target_at = target_at;
    out->window.resize(static_cast<size_t>(elements_ + y_width_));
    const std::string e =
        ParseWindowRecord(bytes, r, manifest_.lookback, static_cast<int64_t>(manifest_.features.size()),
                          manifest_.horizon, out->window.data(), out->window.data() + elements_);
    if (!e.empty()) out->error = fmt::format("{}: {}", where(), e);
  }

  // A record fetched from the coordinator: its bytes to pixels.
  Slot DecodeFetched(int64_t key, Slot in) const {
    Slot out;
    out.ready = true;
    out.label = in.label;
    if (!in.error.empty()) {
      out.error = fmt::format("{} (the coordinator's copy)", in.error);
      return out;
    }
    auto where = [&] {
      const Part p = static_cast<Part>(key % 4);
      return fmt::format("'{}' on the coordinator's host, {} record {} (`polis-data verify` there names the shard "
                         "and offset)",
                         remote_->description().dir,
                         p == Part::kTrain ? "training" : p == Part::kValidation ? "validation" : "test", key / 4);
    };
    if (windows_) DecodeWindow(in.encoded, in.target_at, where, &out);
    else DecodeInto(in.encoded, where, &out);
    return out;
  }

  // dataset.source COORDINATOR: asks the coordinator, in one request, for
  // the records of idx[0, n) that are not held or asked for yet, and holds
  // a place for each until the answer comes. Prefetch (up_to_capacity)
  // asks only once half the cache is free, then fills it: a request every
  // prefetch_records / 2 records rather than every step.
  void Ask(Part p, const int64_t* idx, int64_t n, bool up_to_capacity) const {
    std::vector<int64_t> want;
    {
      std::lock_guard<std::mutex> l(mu_);
      int64_t room = capacity_ - static_cast<int64_t>(slots_.size());
      if (up_to_capacity && room < std::max<int64_t>(capacity_ / 2, 1)) return;
      for (int64_t i = 0; i < n && (!up_to_capacity || room > 0); ++i) {
        auto [it, inserted] = slots_.try_emplace(Key(p, idx[i]));
        if (!inserted) continue;
        it->second.asked = true;
        it->second.generation = ++generations_;
        want.push_back(idx[i]);
        --room;
      }
    }
    if (want.empty()) return;
    Status st = remote_->Request(p, std::move(want));
    if (!st.ok() && fatal_.ok()) fatal_ = st;
  }

  // Takes the oldest answer if it has come (with `wait`, once it comes),
  // handing its records to the decode threads; false when none was taken.
  bool TakeAnswer(bool wait) const {
    if (remote_->pending() == 0 || !fatal_.ok()) return false;
    Status st = remote_->Next(wait, &answer_);
    if (st.code() == Code::kNotFound) return false;
    if (!st.ok()) {
      fatal_ = st;
      return false;
    }
    IngestAnswer();
    return true;
  }
  // All the answers that have come (with `wait`, all there are to come).
  void TakeAnswers(bool wait) const {
    while (TakeAnswer(wait)) {
    }
  }
  void DrainAnswers() const { TakeAnswers(/*wait=*/true); }

  void IngestAnswer() const {
    std::lock_guard<std::mutex> l(mu_);
    for (size_t j = 0; j < answer_.indices.size(); ++j) {
      const int64_t key = Key(answer_.part, answer_.indices[j]);
      auto it = slots_.find(key);
      if (it == slots_.end() || !it->second.asked) continue;  // dropped by SetEpoch meanwhile
      Slot& s = it->second;
      FetchedRecord& r = answer_.records[j];
      s.asked = false;
      s.label = r.label;
      s.target_at = r.target_at;
      s.error = std::move(r.error);
      s.encoded = std::move(r.bytes);
      if (!threads_.empty()) queue_.push_back(key);
    }
    work_cv_.notify_all();
  }

  // Waits until every record of a batch has arrived (answers come in the
  // order asked, so this takes the ones before them too).
  void AwaitArrival(Part p, const int64_t* idx, int64_t n) const {
    auto missing = [&] {
      std::lock_guard<std::mutex> l(mu_);
      for (int64_t i = 0; i < n; ++i) {
        auto it = slots_.find(Key(p, idx[i]));
        if (it != slots_.end() && it->second.asked) return true;
      }
      return false;
    };
    while (missing() && TakeAnswer(/*wait=*/true)) {
    }
  }

  // The decoded record of `key`, waiting for a decode thread or decoding
  // here; false when it is not held: a sample
  // already taken earlier in the same batch, or a fetch that failed.
  bool TakeFetched(int64_t key, Slot* out) const {
    std::unique_lock<std::mutex> l(mu_);
    auto it = slots_.find(key);
    if (it == slots_.end() || it->second.asked) return false;
    // Not decoded yet: decoded here, as in Gather (a decode thread works
    // on a copy of the bytes, so they are still in the slot).
    Slot in = std::move(it->second);
    slots_.erase(it);
    l.unlock();
    if (!threads_.empty()) ++(in.ready ? decoded_ahead_ : decoded_in_step_);
    *out = in.ready ? std::move(in) : DecodeFetched(key, std::move(in));
    return true;
  }

  // Row i of a batch whose record was not held: a copy of the same sample
  // earlier in the batch, or zeros after a failed fetch (TakeError says why).
  void CopyRow(const int64_t* idx, int64_t i, float* x, float* y) const {
    for (int64_t j = 0; j < i; ++j) {
      if (idx[j] != idx[i]) continue;
      std::copy(x + j * elements_, x + (j + 1) * elements_, x + i * elements_);
      std::copy(y + j * y_width_, y + (j + 1) * y_width_, y + i * y_width_);
      return;
    }
    if (fatal_.ok()) fatal_ = InternalError("record {} was neither held nor fetched", idx[i]);
    std::fill(x + i * elements_, x + (i + 1) * elements_, 0.0f);
    std::fill(y + i * y_width_, y + (i + 1) * y_width_, 0.0f);
  }

  // A decode thread takes the next queued record that nobody has started;
  // the training thread may take the slot meanwhile (Gather decodes what is
  // not ready itself), and then the late result is dropped.
  void DecodeLoop() const {
    std::unique_lock<std::mutex> l(mu_);
    while (true) {
      work_cv_.wait(l, [&] { return stop_ || !queue_.empty(); });
      if (stop_) return;
      const int64_t key = queue_.front();
      queue_.pop_front();
      auto it = slots_.find(key);
      if (it == slots_.end() || it->second.ready || it->second.started || it->second.asked) continue;
      it->second.started = true;
      const uint64_t generation = it->second.generation;
      Slot in;
      if (remote_) {  // a copy: the training thread may take the slot and decode it first
        in.label = it->second.label;
        in.target_at = it->second.target_at;
        in.error = it->second.error;
        in.encoded = it->second.encoded;
      }
      ++busy_;
      l.unlock();
      Slot s = remote_ ? DecodeFetched(key, std::move(in)) : Decode(key);
      l.lock();
      --busy_;
      it = slots_.find(key);
      if (it != slots_.end() && it->second.generation == generation) {
        s.generation = generation;
        it->second = std::move(s);
      }
      if (busy_ == 0) done_cv_.notify_all();
    }
  }

  std::string dir_;
  proto::DatasetSpec spec_;
  uint64_t seed_ = 0;
  bool fail_ = true;
  const proto::AugmentationSpec* aug_ = nullptr;
  ShardManifest manifest_;
  int64_t classes_ = 0;
  int64_t max_record_ = 0;
  std::shared_ptr<RecordClient> remote_;  // dataset.source COORDINATOR
  std::deque<Shard> shards_;  // stable addresses: the decode threads hold pointers
  PartShards train_, test_;
  TrainValidationSplit split_;
  int64_t elements_ = 0, y_width_ = 1, capacity_ = 0;
  bool windows_ = false;  // a time series' windows: regression
  proto::TimeSeriesSpec timeseries_;
  double target_mean_ = 0, target_stddev_ = 1;
  std::vector<std::thread> threads_;

  mutable std::mutex mu_;
  mutable std::condition_variable work_cv_, done_cv_;
  mutable std::deque<int64_t> queue_;                  // GUARDED_BY(mu_)
  mutable std::unordered_map<int64_t, Slot> slots_;    // GUARDED_BY(mu_): queued, decoding or ready
  mutable int busy_ = 0;                               // GUARDED_BY(mu_)
  mutable uint64_t generations_ = 0;                   // GUARDED_BY(mu_)
  mutable int64_t decoded_ahead_ = 0, decoded_in_step_ = 0;  // the training thread's
  mutable bool stop_ = false;                          // GUARDED_BY(mu_)
  mutable int epoch_ = 0;
  mutable Status error_;
  mutable Status fatal_;  // a failed fetch: the job stops whatever malformed_policy says
  mutable std::vector<int64_t> bad_;
  mutable RecordClient::Answer answer_;
  mutable std::vector<int64_t> added_;  // Prefetch's scratch  // the training thread's, from TakeAnswers
};

}  // namespace

uint64_t AugmentSeed(uint64_t seed, int epoch, int64_t index) {
  return Mix(Mix(seed ^ 0xA5A5A5A5ull) ^ Mix(static_cast<uint64_t>(epoch) + 0x1234) ^ static_cast<uint64_t>(index));
}

namespace {

// ImageToFloats without augmentation: the hot path of every record.
void ConvertOnly(const uint8_t* hwc, int64_t pixels, int C, float scale, float shift, float* chw) {
  if (C == 1) {
    for (int64_t i = 0; i < pixels; ++i) chw[i] = static_cast<float>(hwc[i]) * scale + shift;
    return;
  }
  for (int c = 0; c < C; ++c) {
    float* out = chw + c * pixels;
    const uint8_t* in = hwc + c;
    for (int64_t i = 0; i < pixels; ++i) out[i] = static_cast<float>(in[i * C]) * scale + shift;
  }
}

}  // namespace

void ImageToFloats(const uint8_t* hwc, int H, int W, int C, const proto::AugmentationSpec* aug, uint64_t sample_seed,
                   float scale, float shift, float* chw) {
  if (aug == nullptr) return ConvertOnly(hwc, int64_t{H} * W, C, scale, shift, chw);
  int dy = 0, dx = 0;
  bool flip = false;
  float gain = 1, offset = 0;
  float mean = 0;
  if (aug != nullptr) {
    Draws d{sample_seed};
    const int pad = aug->crop_padding();
    if (pad > 0) {
      dy = static_cast<int>(d.Next() % static_cast<uint64_t>(2 * pad + 1)) - pad;
      dx = static_cast<int>(d.Next() % static_cast<uint64_t>(2 * pad + 1)) - pad;
    }
    flip = aug->horizontal_flip() && (d.Next() & 1);
    if (aug->brightness() > 0) offset = (2 * d.Unit() - 1) * aug->brightness() * 255.0f;
    if (aug->contrast() > 0) {
      gain = 1 + (2 * d.Unit() - 1) * aug->contrast();
      double sum = 0;
      for (int64_t i = 0; i < int64_t{H} * W * C; ++i) sum += hwc[i];
      mean = static_cast<float>(sum / (double{1} * H * W * C));
    }
  }
  const bool jitter = gain != 1 || offset != 0;
  for (int c = 0; c < C; ++c)
    for (int y = 0; y < H; ++y)
      for (int x = 0; x < W; ++x) {
        const int sy = y + dy, sx0 = x + dx, sx = flip ? W - 1 - sx0 : sx0;
        float v = sy < 0 || sy >= H || sx < 0 || sx >= W ? 0.0f
                                                         : static_cast<float>(hwc[(static_cast<int64_t>(sy) * W + sx) * C + c]);
        if (jitter) v = std::clamp((v - mean) * gain + mean + offset, 0.0f, 255.0f);
        chw[(static_cast<int64_t>(c) * H + y) * W + x] = v * scale + shift;
      }
}

StatusOr<std::unique_ptr<Dataset>> OpenShardDataset(const proto::DatasetSpec& spec, uint64_t seed) {
  auto ds = std::make_unique<ShardDataset>();
  POLIS_RETURN_IF_ERROR(ds->Open(spec, seed));
  return std::unique_ptr<Dataset>(std::move(ds));
}

StatusOr<std::unique_ptr<Dataset>> OpenRemoteShardDataset(const proto::DatasetSpec& spec, uint64_t seed,
                                                          std::shared_ptr<RecordClient> remote) {
  auto ds = std::make_unique<ShardDataset>();
  POLIS_RETURN_IF_ERROR(ds->OpenRemote(spec, seed, std::move(remote)));
  return std::unique_ptr<Dataset>(std::move(ds));
}

}  // namespace polis::data
