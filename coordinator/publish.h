// From trained parameters to a published version, verified before it is
// made visible (docs/design/training-protocol.md, "Publishing"):
//
// 1. The artifact (spec, shapes, metrics, lineage, weights) is written to
//    <run-dir>/model.polis (temp name, fsync, rename, checksum).
// 2. It is read back: checksum, finite weights, the model rebuilt and the
//    test set evaluated; the metric must equal what training reported.
// 3. Only then is it published: as the next version under registry.root, or
//    uploaded to registry.url. A failure leaves the registry as it was.
// 4. <run-dir>/result.json says what happened. When publishing fails the
//    verified model stays in the run directory and result.json says how to
//    publish it later (`polis-registry publish`, or `polis-run --resume`).
//
// Called by the coordinator on its own thread.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/artifact/artifact.h"
#include "common/data/dataset.h"
#include "common/resume.h"
#include "common/role.h"
#include "common/status.h"

namespace polis::coordinator {

// What training reports about itself; `result` becomes result.json with the
// publishing fields added.
struct TrainedRun {
  std::vector<float> params;
  nlohmann::json history = nlohmann::json::array();  // one row per epoch, as metrics.jsonl
  nlohmann::json result = nlohmann::json::object();
  double train_seconds = 0;
  // The published model's figures (the artifact's metrics, and what its
  // reload must reproduce): test_* of the final test evaluation, train_loss
  // and epoch of the epoch it comes from.
  nlohmann::json metrics = nlohmann::json::object();
};

// The artifact of `run` (run.metrics gives its metrics).
StatusOr<ModelArtifact> BuildArtifact(const RoleContext& ctx, const data::Dataset& dataset,
                                      const TrainedRun& run);

// Steps 1–4 above. Returns the publishing failure, if any, after result.json
// is written.
Status VerifyAndPublish(const RoleContext& ctx, const data::Dataset& dataset, ModelArtifact artifact,
                        TrainedRun run);

// A resumed run with nothing left to train (its checkpoint or kept model
// has every epoch the job asks for): publishes the kept, verified model in
// the run directory, or else one built from the final checkpoint.
Status PublishFinishedRun(const RoleContext& ctx, const std::string& kept_artifact);

}  // namespace polis::coordinator
