// The artifact header's lineage and privacy record as JSON: the same
// objects in a version's metadata.json and in the registry's model card.
#pragma once

#include <nlohmann/json.hpp>

#include "common/proto/artifact.pb.h"

namespace polis {

// job_file, job_sha256, dataset_files [{path, sha256}], source_revision,
// run_dir, created_at, host; study when polis-tune published the model.
nlohmann::json LineageJson(const proto::Lineage& l);

// epsilon, delta, max_grad_norm, noise_multiplier, sample_rate, steps,
// sampler, accountant, secure_aggregation; target_epsilon when set.
nlohmann::json PrivacyJson(const proto::PrivacyRecord& p);

}  // namespace polis
