// The SHARDS dataset (dataset.format SHARDS, docs/datasets.md): images in
// tar shards written by `polis-data pack`, streamed. Open reads only the
// manifest and the indexes (24 bytes a record); Gather preads the granted
// records, checks their CRC-32 and decodes them; Prefetch hands records the
// caller will ask for next to decode threads, so decoding overlaps compute.
// Gather decodes itself a record the decode threads have not finished
// rather than wait for it.
// Decoded records wait in a cache of at most shards.prefetch_records
// (plus the batch being gathered): a worker's memory is bounded by that,
// not by the dataset.
//
// Shards of time-series windows (`polis-data pack csv`) open as a
// regression dataset: record i of the train, validation and test parts is
// window i of that split, its "decode" two memcpy's out of the .npy
// members, and the fitted statistics, baselines and TimeSeriesSpec come
// from the manifest. Such a dataset is read from local files only.
//
// Thread-safety: as Dataset — one thread at a time calls Gather, Prefetch,
// SetEpoch and TakeError; the decode threads are internal.
#pragma once

#include <memory>

#include "common/data/dataset.h"
#include "common/data/image_codec.h"

namespace polis::data {

StatusOr<std::unique_ptr<Dataset>> OpenShardDataset(const proto::DatasetSpec& spec, uint64_t seed);
// dataset.source COORDINATOR on a worker: the same dataset, its records
// fetched from the coordinator (common/data/remote_shards.h) a batch at a
// time, ahead of need as far as prefetch_records allows, and decoded here.
StatusOr<std::unique_ptr<Dataset>> OpenRemoteShardDataset(const proto::DatasetSpec& spec, uint64_t seed,
                                                          std::shared_ptr<RecordClient> remote);

// Augmentation (dataset.augmentation) of one image: HWC bytes to CHW floats
// (value * scale + shift), with the crop, flip and jitter drawn from
// `sample_seed`; aug == nullptr converts only.
void ImageToFloats(const uint8_t* hwc, int height, int width, int channels, const proto::AugmentationSpec* aug,
                   uint64_t sample_seed, float scale, float shift, float* chw);
// The seed of one sample's augmentation: a hash of (seed, epoch, index).
uint64_t AugmentSeed(uint64_t seed, int epoch, int64_t index);

}  // namespace polis::data
