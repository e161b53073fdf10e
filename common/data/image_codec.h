// Image files to pixels and back, through libpng and libjpeg-turbo (never
// by hand), plus the bilinear resize that `polis-data pack` uses to bring a
// folder of images to the size a job states.
//
// Pixels are 8-bit, interleaved H x W x C (C = 1 grey or 3 RGB); the
// decoders convert whatever the file holds (palette, 16-bit, alpha, CMYK is
// refused) to the channel count asked for. Every failure is a Status whose
// message says what the library found ("not a PNG file", "Premature end of
// JPEG file"); callers add the file name and offset. Stateless and
// thread-safe: each call owns its codec state.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace polis::data {

// kNpy: NumPy's .npy format (version 1.0) holding the uint8 pixels as they
// are, shape (H, W, C): no compression, nothing to decode but a header.
enum class ImageEncoding { kPng, kJpeg, kNpy };

struct Pixels {
  int height = 0, width = 0, channels = 0;
  std::vector<uint8_t> hwc;  // height * width * channels bytes
};

// "png" / "jpg" / "npy"; the file-name extension of shard members.
const char* EncodingExtension(ImageEncoding e);
// By the file's first bytes: PNG, JPEG or .npy signature; InvalidArgument otherwise.
StatusOr<ImageEncoding> SniffEncoding(std::string_view bytes);

// channels: 1 (grey) or 3 (RGB). Colour is converted as the libraries do
// (an .npy must hold the channels asked for: nothing converts them).
// max_pixels > 0 refuses a larger image (height x width) from its header,
// before any pixel memory is taken: bytes from a client cannot make the
// caller allocate gigabytes.
StatusOr<Pixels> DecodeImage(std::string_view bytes, int channels, int64_t max_pixels = 0);
StatusOr<std::string> EncodeImage(const Pixels& p, ImageEncoding e, int jpeg_quality = 90);

// NumPy's .npy format, version 1.0 (also the time-series window records of
// common/data/shard_format.h): the header (magic, version, length, the
// dict padded to a multiple of 64 bytes) for a C-order array of `descr`
// ("<f4", "|u1") and `shape`; the array's bytes follow it.
std::string NpyHeader(std::string_view descr, const std::vector<int64_t>& shape);
// An .npy's header read back: views into `bytes`.
struct NpyArray {
  std::string_view descr;  // without quotes: "<f4"
  std::string_view shape;  // as written: "(24, 7)"
  std::vector<int64_t> dims;
  std::string_view data;   // everything after the header
};
StatusOr<NpyArray> ParseNpy(std::string_view bytes);

// Bilinear, sampling at pixel centres (as OpenCV's INTER_LINEAR).
Pixels Resize(const Pixels& src, int height, int width);

}  // namespace polis::data
