#include "common/data/pack.h"

#include <fmt/ranges.h>

#include <algorithm>
#include <cmath>
#include <cctype>
#include <filesystem>
#include <numeric>
#include <random>

#include <google/protobuf/text_format.h>
#include <nlohmann/json.hpp>

#include "common/data/idx.h"
#include "common/data/shard_dataset.h"
#include "common/data/shard_format.h"
#include "common/data/timeseries.h"
#include "common/fs.h"

namespace polis::data {
namespace {

namespace fs = std::filesystem;

Status PrepareOut(const PackOptions& o) {
  if (o.out.empty()) return InvalidArgument("no output directory (--out)");
  if (PathExists(o.out + "/" + kManifestName))
    return AlreadyExists("'{}' already holds a dataset ({}); choose another --out or delete it", o.out, kManifestName);
  if (o.records_per_shard < 1) return InvalidArgument("records per shard is {}; expected >= 1", o.records_per_shard);
  if (o.copies < 1) return InvalidArgument("copies is {}; expected >= 1", o.copies);
  if (o.channels != 0 && o.channels != 1 && o.channels != 3)
    return InvalidArgument("channels is {}; expected 1 (grey) or 3 (RGB)", o.channels);
  return MakeDirectories(o.out);
}

// The augmentation of packed copies: mild, label-preserving for photos and
// clothing alike.
proto::AugmentationSpec CopyAugmentation() {
  proto::AugmentationSpec a;
  a.set_crop_padding(2);
  a.set_horizontal_flip(true);
  a.set_brightness(0.1f);
  a.set_contrast(0.1f);
  return a;
}

Pixels Augmented(const Pixels& p, uint64_t seed) {
  static const proto::AugmentationSpec aug = CopyAugmentation();
  std::vector<float> chw(p.hwc.size());
  ImageToFloats(p.hwc.data(), p.height, p.width, p.channels, &aug, seed, 1.0f, 0.0f, chw.data());
  Pixels out = p;
  for (int c = 0; c < p.channels; ++c)
    for (int64_t i = 0; i < int64_t{p.height} * p.width; ++i)
      out.hwc[static_cast<size_t>(i * p.channels + c)] =
          static_cast<uint8_t>(std::clamp(chw[static_cast<size_t>(c * p.height * p.width + i)], 0.0f, 255.0f));
  return out;
}

// Brings a decoded image to the dataset's shape and writes it (and its
// augmented copies) with `w`.
class Encoder {
 public:
  Encoder(const PackOptions& o, int channels, int height, int width)
      : o_(o), channels_(channels), height_(height), width_(width) {}
  Status Add(ShardWriter* w, Pixels px, int32_t label, const std::string& source, int copies, int64_t* count,
             int64_t* bytes) {
    POLIS_ENFORCE_EQ(px.channels, channels_);
    px = Resize(px, height_, width_);
    for (int c = 0; c < copies; ++c) {
      const Pixels& img = c == 0 ? px : (aug_ = Augmented(px, AugmentSeed(o_.seed, c, *count)));
      POLIS_ASSIGN_OR_RETURN(std::string enc, EncodeImage(img, o_.encoding, o_.jpeg_quality));
      *bytes += static_cast<int64_t>(enc.size());
      POLIS_RETURN_IF_ERROR(w->Add(label, enc, c == 0 ? source : source.empty() ? "" : source + " (copy)"));
      ++*count;
    }
    return Status::Ok();
  }

 private:
  const PackOptions& o_;
  int channels_, height_, width_;
  Pixels aug_;
};

bool IsImageFile(const fs::path& p) {
  std::string ext = p.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return std::tolower(c); });
  return ext == ".png" || ext == ".jpg" || ext == ".jpeg";
}

StatusOr<std::vector<std::string>> ImagesIn(const std::string& dir) {
  std::vector<std::string> files;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec))
    if (e.is_regular_file() && IsImageFile(e.path())) files.push_back(e.path().string());
  if (ec) return IoError("cannot list class folder '{}': {}", dir, ec.message());
  std::sort(files.begin(), files.end());
  if (files.empty()) return InvalidArgument("class folder '{}' holds no .png, .jpg or .jpeg images", dir);
  return files;
}

StatusOr<std::vector<std::string>> ClassFolders(const std::string& root) {
  std::error_code ec;
  if (!fs::is_directory(root, ec)) return NotFound("image folder '{}' does not exist or is not a directory", root);
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(root, ec))
    if (e.is_directory()) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  if (names.size() < 2)
    return InvalidArgument("image folder '{}' has {} class folders; expected at least 2 (one per class: '{}/CLASS/*.png')",
                           root, names.size(), root);
  return names;
}

// Closes a part's last shard and records its shards in the manifest.
Status FinishPart(ShardWriter* w, bool train, int64_t records, ShardManifest* m, PackSummary* sum) {
  POLIS_ASSIGN_OR_RETURN(auto shards, w->Finish());
  (train ? sum->train : sum->test) = records;
  (train ? sum->train_shards : sum->test_shards) = static_cast<int64_t>(shards.size());
  (train ? m->train : m->test) = std::move(shards);
  return Status::Ok();
}

}  // namespace

std::string PackSummary::ToString(const std::string& out) const {
  if (windows)
    return fmt::format("packed {} training, {} validation and {} test windows in {} + {} + {} shards into '{}' "
                       "({:.1f} MiB of records)",
                       train, validation, test, train_shards, validation_shards, test_shards, out,
                       static_cast<double>(bytes) / (1 << 20));
  return fmt::format("packed {} training records in {} shards and {} test records in {} shards into '{}' "
                     "({:.1f} MiB of images{})",
                     train, train_shards, test, test_shards, out, static_cast<double>(bytes) / (1 << 20),
                     skipped > 0 ? fmt::format(", {} bad images skipped", skipped) : "");
}

StatusOr<PackSummary> PackIdx(const std::string& train_images, const std::string& train_labels,
                              const std::string& test_images, const std::string& test_labels,
                              const PackOptions& o) {
  POLIS_RETURN_IF_ERROR(PrepareOut(o));
  ShardManifest m;
  m.encoding = o.encoding;
  m.channels = o.channels == 0 ? 1 : o.channels;
  m.source = fmt::format("IDX {} {}", train_images, test_images);
  PackSummary sum;
  for (int part = 0; part < 2; ++part) {
    const std::string& ip = part == 0 ? train_images : test_images;
    const std::string& lp = part == 0 ? train_labels : test_labels;
    POLIS_ASSIGN_OR_RETURN(IdxArray images, ReadIdx(ip));
    POLIS_ASSIGN_OR_RETURN(IdxArray labels, ReadIdx(lp));
    if (images.dims.size() != 3) return InvalidArgument("'{}' has {} dims; expected 3 (N, H, W)", ip, images.dims.size());
    if (labels.dims.size() != 1 || labels.dims[0] != images.dims[0])
      return InvalidArgument("'{}' does not hold one label per image of '{}' ({} images)", lp, ip, images.dims[0]);
    const int H = static_cast<int>(images.dims[1]), W = static_cast<int>(images.dims[2]);
    if (part == 0) {
      m.height = o.height > 0 ? o.height : H;
      m.width = o.width > 0 ? o.width : W;
      const int classes = 1 + *std::max_element(labels.data.begin(), labels.data.end());
      for (int c = 0; c < std::max(classes, 2); ++c) m.classes.push_back(std::to_string(c));
    }
    const int64_t limit = part == 0 ? o.train_limit : o.test_limit;
    const int64_t n = limit > 0 ? std::min(limit, images.dims[0]) : images.dims[0];
    ShardWriter w(o.out, part == 0 ? "train" : "test", o.records_per_shard, o.encoding);
    Encoder enc(o, m.channels, m.height, m.width);
    int64_t count = 0;
    for (int64_t i = 0; i < n; ++i) {
      if (labels.data[i] >= m.classes.size())
        return InvalidArgument("'{}': label {} at index {} (byte offset {}) is not one of the training set's {} classes",
                               lp, labels.data[i], i, 8 + i, m.classes.size());
      Pixels px;
      px.height = H;
      px.width = W;
      px.channels = m.channels;
      const uint8_t* src = images.data.data() + i * H * W;
      px.hwc.resize(static_cast<size_t>(H) * W * m.channels);
      for (int64_t p = 0; p < int64_t{H} * W; ++p)
        for (int c = 0; c < m.channels; ++c) px.hwc[static_cast<size_t>(p * m.channels + c)] = src[p];
      POLIS_RETURN_IF_ERROR(enc.Add(&w, std::move(px), labels.data[i], "", part == 0 ? o.copies : 1, &count, &sum.bytes));
      if (o.progress) o.progress(part == 0 ? "train" : "test", i + 1, n);
    }
    POLIS_RETURN_IF_ERROR(FinishPart(&w, part == 0, count, &m, &sum));
  }
  POLIS_RETURN_IF_ERROR(WriteManifest(o.out, m));
  return sum;
}

StatusOr<PackSummary> PackFolder(const std::string& train_root, const std::string& test_root,
                                 const std::vector<std::string>& classes, const PackOptions& o) {
  if (o.height < 1 || o.width < 1)
    return InvalidArgument("an image folder needs the size to resize to (--size HxW, e.g. 32x32)");
  if (test_root.empty() && (o.test_fraction < 0 || o.test_fraction >= 1))
    return InvalidArgument("test fraction {} is outside [0, 1)", o.test_fraction);
  ShardManifest m;
  m.encoding = o.encoding;
  m.channels = o.channels == 0 ? 3 : o.channels;
  m.height = o.height;
  m.width = o.width;
  m.source = test_root.empty() ? fmt::format("folder {}", train_root) : fmt::format("folders {} {}", train_root, test_root);
  POLIS_ASSIGN_OR_RETURN(std::vector<std::string> found, ClassFolders(train_root));
  m.classes = classes.empty() ? found : classes;
  for (const std::string& c : m.classes)
    if (std::find(found.begin(), found.end(), c) == found.end())
      return NotFound("class folder '{}/{}' is missing ({}: {})", train_root, c,
                      classes.empty() ? "the test folder has it" : "--classes names it", fmt::join(m.classes, ", "));
  if (!test_root.empty()) {
    POLIS_ASSIGN_OR_RETURN(std::vector<std::string> test_found, ClassFolders(test_root));
    for (const std::string& c : m.classes)
      if (std::find(test_found.begin(), test_found.end(), c) == test_found.end())
        return NotFound("class folder '{}/{}' is missing (the training folder '{}' has class '{}')", test_root, c,
                        train_root, c);
    for (const std::string& c : test_found)
      if (std::find(m.classes.begin(), m.classes.end(), c) == m.classes.end())
        return InvalidArgument("test class folder '{}/{}' is not a training class ({})", test_root, c,
                               fmt::join(m.classes, ", "));
  }
  POLIS_RETURN_IF_ERROR(PrepareOut(o));
  // (file, label) per part, then a seeded shuffle: the shards mix classes.
  std::vector<std::pair<std::string, int32_t>> parts[2];
  for (int32_t label = 0; label < static_cast<int32_t>(m.classes.size()); ++label) {
    POLIS_ASSIGN_OR_RETURN(auto files, ImagesIn(train_root + "/" + m.classes[label]));
    for (size_t i = 0; i < files.size(); ++i) {
      const bool test = test_root.empty() && std::floor((i + 1) * o.test_fraction) > std::floor(i * o.test_fraction);
      parts[test ? 1 : 0].emplace_back(files[i], label);
    }
    if (!test_root.empty()) {
      POLIS_ASSIGN_OR_RETURN(auto tfiles, ImagesIn(test_root + "/" + m.classes[label]));
      for (auto& f : tfiles) parts[1].emplace_back(std::move(f), label);
    }
  }
  PackSummary sum;
  std::vector<std::string> skipped_lines;  // the first five, for the manifest's report
  for (int part = 0; part < 2; ++part) {
    auto& list = parts[part];
    std::mt19937_64 rng(o.seed + static_cast<uint64_t>(part));
    std::shuffle(list.begin(), list.end(), rng);
    const int64_t limit = part == 0 ? o.train_limit : o.test_limit;
    if (limit > 0 && static_cast<int64_t>(list.size()) > limit) list.resize(static_cast<size_t>(limit));
    if (list.empty())
      return InvalidArgument("no {} images (test fraction {}; give --test-fraction or a test folder)",
                             part == 0 ? "training" : "test", o.test_fraction);
    ShardWriter w(o.out, part == 0 ? "train" : "test", o.records_per_shard, o.encoding);
    Encoder enc(o, m.channels, m.height, m.width);
    int64_t count = 0;
    int64_t seen = 0;
    for (const auto& [file, label] : list) {
      if (o.progress && seen > 0) o.progress(part == 0 ? "train" : "test", seen, static_cast<int64_t>(list.size()));
      ++seen;
      auto bytes = ReadFile(file);
      auto px = bytes.ok() ? DecodeImage(*bytes, m.channels) : StatusOr<Pixels>(bytes.status());
      if (!px.ok()) {
        const std::string line = fmt::format("cannot decode '{}': {}", file, px.status().message());
        if (!o.skip_bad) return InvalidArgument("{} (pass --skip-bad to leave such images out)", line);
        if (o.warn) o.warn(line + "; skipped");
        if (sum.skipped < 5) skipped_lines.push_back("    " + line);
        ++sum.skipped;
        continue;
      }
      POLIS_RETURN_IF_ERROR(enc.Add(&w, std::move(*px), label, file, part == 0 ? o.copies : 1, &count, &sum.bytes));
    }
    POLIS_RETURN_IF_ERROR(FinishPart(&w, part == 0, count, &m, &sum));
  }
  if (sum.skipped > 0)
    m.report = fmt::format("folder {}: {} images that do not decode left out (--skip-bad){}\n{}\n", train_root,
                           sum.skipped, sum.skipped > 5 ? ", the first five:" : ":",
                           fmt::join(skipped_lines, "\n"));
  POLIS_RETURN_IF_ERROR(WriteManifest(o.out, m));
  return sum;
}


StatusOr<PackSummary> PackTimeSeries(const proto::JobSpec& job, const PackOptions& o) {
  if (job.dataset().format() != proto::DatasetSpec::CSV || !job.dataset().has_timeseries())
    return InvalidArgument("the job's dataset is not a CSV time series (dataset {{ format: CSV timeseries {{ ... }} }})");
  POLIS_ASSIGN_OR_RETURN(TimeSeriesDataset ds, TimeSeriesDataset::Open(job.dataset().timeseries()));
  if (ds.size(TimeSeriesDataset::kTrain) == 0 || ds.size(TimeSeriesDataset::kTest) == 0)
    return InvalidArgument("'{}' gives {} training and {} test windows; both parts need at least one",
                           ds.spec().path(), ds.size(TimeSeriesDataset::kTrain), ds.size(TimeSeriesDataset::kTest));
  POLIS_RETURN_IF_ERROR(PrepareOut(o));
  ShardManifest m;
  m.kind = "timeseries";
  m.encoding = ImageEncoding::kNpy;
  m.source = fmt::format("CSV {} (job '{}')", ds.spec().path(), job.name());
  m.lookback = ds.lookback();
  m.horizon = ds.horizon();
  m.features = ds.feature_names();
  if (!google::protobuf::TextFormat::PrintToString(ds.spec(), &m.timeseries_spec))
    return InternalError("cannot print the TimeSeriesSpec");
  m.preprocessing = ds.PreprocessingJson();
  m.report = ds.report();
  nlohmann::json baselines = nlohmann::json::object();
  PackSummary sum;
  sum.windows = true;
  sum.report = ds.report();
  const char* names[] = {"train", "validation", "test"};
  std::vector<float> x(static_cast<size_t>(ds.lookback() * ds.num_features())), y(static_cast<size_t>(ds.horizon()));
  for (int s = 0; s < 3; ++s) {
    const auto split = static_cast<TimeSeriesDataset::Split>(s);
    if (ds.size(split) > 0) baselines[names[s]] = nlohmann::json::parse(ds.BaselinesJson(split));
    ShardWriter w(o.out, names[s], o.records_per_shard);
    for (int64_t i = 0; i < ds.size(split); ++i) {
      ds.Gather(split, &i, 1, x.data(), y.data());
      const std::string input = FloatNpy(x.data(), {ds.lookback(), ds.num_features()});
      const std::string target = FloatNpy(y.data(), {ds.horizon()});
      sum.bytes += static_cast<int64_t>(input.size() + target.size());
      POLIS_RETURN_IF_ERROR(w.AddWindow(input, target));
      if (o.progress) o.progress(names[s], i + 1, ds.size(split));
    }
    POLIS_ASSIGN_OR_RETURN(auto shards, w.Finish());
    (s == 0 ? sum.train : s == 1 ? sum.validation : sum.test) = ds.size(split);
    (s == 0 ? sum.train_shards : s == 1 ? sum.validation_shards : sum.test_shards) = static_cast<int64_t>(shards.size());
    (s == 0 ? m.train : s == 1 ? m.validation : m.test) = std::move(shards);
  }
  m.baselines = baselines.dump();
  POLIS_RETURN_IF_ERROR(WriteManifest(o.out, m));
  return sum;
}

}  // namespace polis::data
