// Image files as model inputs: the inference input 'image' (datatype BYTES,
// shape [N], each element one PNG or JPEG file's bytes) of a model trained
// on images (dataset format IDX or SHARDS, input C x H x W with C = 1 or 3).
//
// Each file is decoded to the model's channel count, resized to its height
// and width when its size differs (the bilinear resize of `polis-data
// pack`) and preprocessed exactly as training preprocessed its evaluation
// images (value * scale + shift, H x W x C to C x H x W; no augmentation),
// so a file sent here gives the answer its pixels give as FP32 'input'.
//
// In JSON each element is the file base64-encoded; in binary data (the
// binary tensor extension, and gRPC) each element is a 4-byte little-endian
// length followed by the file's bytes. Refusals name the input and the
// element ("input 'image' element 2: neither a PNG, a JPEG nor an .npy file ...").
// Stateless; thread-safe.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/artifact/artifact.h"
#include "common/status.h"
#include "registry/tensor_json.h"

namespace polis::registry {

inline constexpr char kImageInputName[] = "image";
// Pixels (height x width) of one decoded file at most: a client's bytes
// cannot make the server allocate more (an 8192 x 8192 photo is 2^26).
inline constexpr int64_t kMaxImagePixels = int64_t{1} << 26;

struct ImageInputSpec {
  int channels = 0, height = 0, width = 0;  // the model's input C x H x W
  float scale = 1, shift = 0;               // the training dataset's preprocessing
  int64_t max_batch = 0;
  int64_t max_elements = 0;  // per request (files x C x H x W); beyond it, too large (413)
  int64_t max_pixels = kMaxImagePixels;
};

// The image input of a model, from its artifact header: a model trained on
// an IDX or SHARDS dataset whose input is C x H x W with C = 1 or 3.
// nullopt for every other model (time series, sequences, vectors).
std::optional<ImageInputSpec> ImageInputOf(const proto::ArtifactHeader& header);

// One file to the model's C x H x W floats (spec.channels * height * width
// of them at `chw`). InvalidArgument with the codec's message otherwise.
Status PreprocessImage(std::string_view file, const ImageInputSpec& spec, float* chw);

// Decodes the 'image' tensor of a request. `binary`, when given, is the
// tensor's bytes from the binary tensor extension. On refusal, *too_large
// tells a request over max_elements (413) from a malformed one (400).
StatusOr<DecodedInput> DecodeImageTensor(const nlohmann::json& tensor, const ImageInputSpec& spec,
                                         const std::string_view* binary, bool* too_large);

// Standard base64 (RFC 4648, padded), through OpenSSL. Decoding refuses
// anything else, naming the offset of the first bad character.
std::string Base64Encode(std::string_view bytes);
StatusOr<std::string> Base64Decode(std::string_view text);

}  // namespace polis::registry
