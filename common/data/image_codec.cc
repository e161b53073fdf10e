#include "common/data/image_codec.h"

#include <png.h>
#include <jpeglib.h>

#include <algorithm>
#include <cmath>
#include <csetjmp>
#include <cstdio>
#include <cctype>
#include <cstring>

namespace polis::data {
namespace {

constexpr uint8_t kPngMagic[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};

Status CheckPixels(const char* format, int64_t width, int64_t height, int64_t max_pixels) {
  if (max_pixels > 0 && width * height > max_pixels)
    return InvalidArgument("{}: {}x{} pixels exceed the limit of {} pixels", format, width, height, max_pixels);
  return Status::Ok();
}

StatusOr<Pixels> DecodePng(std::string_view bytes, int channels, int64_t max_pixels) {
  png_image img;
  std::memset(&img, 0, sizeof img);
  img.version = PNG_IMAGE_VERSION;
  if (!png_image_begin_read_from_memory(&img, bytes.data(), bytes.size()))
    return InvalidArgument("PNG: {}", img.message);
  img.format = channels == 1 ? PNG_FORMAT_GRAY : PNG_FORMAT_RGB;
  Pixels p;
  p.height = static_cast<int>(img.height);
  p.width = static_cast<int>(img.width);
  p.channels = channels;
  if (img.height == 0 || img.width == 0 || img.height > 65535 || img.width > 65535) {
    png_image_free(&img);
    return InvalidArgument("PNG: {}x{} pixels; expected 1..65535 on each side", img.width, img.height);
  }
  if (Status st = CheckPixels("PNG", img.width, img.height, max_pixels); !st.ok()) {
    png_image_free(&img);
    return st;
  }
  p.hwc.resize(PNG_IMAGE_SIZE(img));
  // Transparent pixels are composed over black, whatever the file's bKGD.
  png_color black{0, 0, 0};
  if (!png_image_finish_read(&img, &black, p.hwc.data(), 0, nullptr)) {
    std::string msg = img.message;
    png_image_free(&img);
    return InvalidArgument("PNG: {}", msg);
  }
  return p;
}

// libjpeg reports errors through a callback that must not return: it
// longjmps back into the decoder's frame with the library's message.
struct JpegError {
  jpeg_error_mgr mgr;
  std::jmp_buf jump;
  char message[JMSG_LENGTH_MAX] = {};
};

void JpegErrorExit(j_common_ptr c) {
  auto* e = reinterpret_cast<JpegError*>(c->err);
  (*c->err->format_message)(c, e->message);
  std::longjmp(e->jump, 1);
}

// Warnings (a corrupt entropy segment is one) are errors too: a record
// that decodes with garbage pixels is a bad record.
void JpegWarning(j_common_ptr c, int level) {
  if (level < 0) JpegErrorExit(c);
}

StatusOr<Pixels> DecodeJpeg(std::string_view bytes, int channels, int64_t max_pixels) {
  jpeg_decompress_struct cinfo;
  JpegError err;
  cinfo.err = jpeg_std_error(&err.mgr);
  err.mgr.error_exit = JpegErrorExit;
  err.mgr.emit_message = JpegWarning;
  Pixels p;  // declared before setjmp: nothing with a destructor is skipped
  if (setjmp(err.jump)) {
    jpeg_destroy_decompress(&cinfo);
    return InvalidArgument("JPEG: {}", err.message);
  }
  jpeg_create_decompress(&cinfo);
  jpeg_mem_src(&cinfo, reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size());
  jpeg_read_header(&cinfo, TRUE);
  if (cinfo.jpeg_color_space == JCS_CMYK || cinfo.jpeg_color_space == JCS_YCCK) {
    jpeg_destroy_decompress(&cinfo);
    return InvalidArgument("JPEG: CMYK images are not supported; convert to RGB");
  }
  if (Status st = CheckPixels("JPEG", cinfo.image_width, cinfo.image_height, max_pixels); !st.ok()) {
    jpeg_destroy_decompress(&cinfo);
    return st;
  }
  cinfo.out_color_space = channels == 1 ? JCS_GRAYSCALE : JCS_RGB;
  jpeg_start_decompress(&cinfo);
  p.height = static_cast<int>(cinfo.output_height);
  p.width = static_cast<int>(cinfo.output_width);
  p.channels = channels;
  p.hwc.resize(static_cast<size_t>(p.height) * p.width * channels);
  while (cinfo.output_scanline < cinfo.output_height) {
    JSAMPROW row = p.hwc.data() + static_cast<size_t>(cinfo.output_scanline) * p.width * channels;
    jpeg_read_scanlines(&cinfo, &row, 1);
  }
  jpeg_finish_decompress(&cinfo);
  jpeg_destroy_decompress(&cinfo);
  return p;
}

StatusOr<std::string> EncodePngBytes(const Pixels& p) {
  png_image img;
  std::memset(&img, 0, sizeof img);
  img.version = PNG_IMAGE_VERSION;
  img.width = static_cast<png_uint_32>(p.width);
  img.height = static_cast<png_uint_32>(p.height);
  img.format = p.channels == 1 ? PNG_FORMAT_GRAY : PNG_FORMAT_RGB;
  png_alloc_size_t size = 0;
  if (!png_image_write_get_memory_size(img, size, 0, p.hwc.data(), 0, nullptr))
    return InternalError("PNG encoder: {}", img.message);
  std::string out(size, '\0');
  if (!png_image_write_to_memory(&img, out.data(), &size, 0, p.hwc.data(), 0, nullptr))
    return InternalError("PNG encoder: {}", img.message);
  out.resize(size);
  return out;
}

StatusOr<std::string> EncodeJpegBytes(const Pixels& p, int quality) {
  jpeg_compress_struct cinfo;
  JpegError err;
  cinfo.err = jpeg_std_error(&err.mgr);
  err.mgr.error_exit = JpegErrorExit;
  unsigned char* buf = nullptr;
  unsigned long size = 0;  // NOLINT: libjpeg's type
  if (setjmp(err.jump)) {
    jpeg_destroy_compress(&cinfo);
    std::free(buf);
    return InternalError("JPEG encoder: {}", err.message);
  }
  jpeg_create_compress(&cinfo);
  jpeg_mem_dest(&cinfo, &buf, &size);
  cinfo.image_width = static_cast<JDIMENSION>(p.width);
  cinfo.image_height = static_cast<JDIMENSION>(p.height);
  cinfo.input_components = p.channels;
  cinfo.in_color_space = p.channels == 1 ? JCS_GRAYSCALE : JCS_RGB;
  jpeg_set_defaults(&cinfo);
  jpeg_set_quality(&cinfo, quality, TRUE);
  jpeg_start_compress(&cinfo, TRUE);
  while (cinfo.next_scanline < cinfo.image_height) {
    JSAMPROW row = const_cast<uint8_t*>(p.hwc.data()) +
                   static_cast<size_t>(cinfo.next_scanline) * p.width * p.channels;
    jpeg_write_scanlines(&cinfo, &row, 1);
  }
  jpeg_finish_compress(&cinfo);
  std::string out(reinterpret_cast<char*>(buf), size);
  jpeg_destroy_compress(&cinfo);
  std::free(buf);
  return out;
}

// .npy, version 1.0: magic, 2 version bytes, a 2-byte little-endian header
// length, then a Python dict literal padded with spaces to a multiple of 64
// bytes (NumPy's own layout) and ending with a newline.
constexpr char kNpyMagic[6] = {'\x93', 'N', 'U', 'M', 'P', 'Y'};

std::string EncodeNpyBytes(const Pixels& p) {
  std::string out = NpyHeader("|u1", {p.height, p.width, p.channels});
  out.append(reinterpret_cast<const char*>(p.hwc.data()), p.hwc.size());
  return out;
}

// The value of `key` in the header dict, up to the next comma or brace
// outside parentheses ("(28, 28, 1)", "'|u1'", "False").
std::string_view NpyField(std::string_view dict, std::string_view key) {
  const size_t k = dict.find(key);
  if (k == std::string_view::npos) return {};
  size_t at = dict.find(':', k + key.size());
  if (at == std::string_view::npos) return {};
  ++at;
  while (at < dict.size() && dict[at] == ' ') ++at;
  size_t end = at;
  int depth = 0;
  while (end < dict.size() && (depth > 0 || (dict[end] != ',' && dict[end] != '}'))) {
    depth += dict[end] == '(' ? 1 : dict[end] == ')' ? -1 : 0;
    ++end;
  }
  return dict.substr(at, end - at);
}

StatusOr<Pixels> DecodeNpy(std::string_view bytes, int channels, int64_t max_pixels) {
  POLIS_ASSIGN_OR_RETURN(NpyArray a, ParseNpy(bytes));
  if (a.descr != "|u1" && a.descr != "<u1" && a.descr != "u1")
    return InvalidArgument("npy: dtype '{}'; expected uint8 ('|u1')", a.descr);
  std::vector<int64_t> dims = a.dims;
  if (dims.size() == 2) dims.push_back(1);
  if (dims.size() != 3 || dims[0] < 1 || dims[1] < 1 || dims[0] > 65535 || dims[1] > 65535 ||
      (dims[2] != 1 && dims[2] != 3))
    return InvalidArgument("npy: shape {}; expected (height, width) or (height, width, 1 or 3)", a.shape);
  if (dims[2] != channels)
    return InvalidArgument("npy: {} channel(s); {} expected (an .npy is not converted)", dims[2], channels);
  POLIS_RETURN_IF_ERROR(CheckPixels("npy", dims[1], dims[0], max_pixels));
  const size_t want = static_cast<size_t>(dims[0] * dims[1] * dims[2]);
  if (a.data.size() != want)
    return InvalidArgument("npy: {} bytes of pixels; shape {} holds {}", a.data.size(), a.shape, want);
  Pixels p;
  p.height = static_cast<int>(dims[0]);
  p.width = static_cast<int>(dims[1]);
  p.channels = channels;
  p.hwc.assign(a.data.begin(), a.data.end());
  return p;
}

}  // namespace

const char* EncodingExtension(ImageEncoding e) {
  return e == ImageEncoding::kPng ? "png" : e == ImageEncoding::kJpeg ? "jpg" : "npy";
}

std::string NpyHeader(std::string_view descr, const std::vector<int64_t>& shape) {
  std::string dims;
  for (int64_t d : shape) dims += fmt::format("{}, ", d);
  if (shape.size() > 1) dims.resize(dims.size() - 2);  // "(3,)" but "(3, 4)"
  else if (!shape.empty()) dims.pop_back();
  std::string dict = fmt::format("{{'descr': '{}', 'fortran_order': False, 'shape': ({}), }}", descr, dims);
  const size_t unpadded = sizeof kNpyMagic + 4 + dict.size() + 1;
  dict.append((64 - unpadded % 64) % 64, ' ');
  dict.push_back('\n');
  std::string out(kNpyMagic, sizeof kNpyMagic);
  out.push_back('\x01');
  out.push_back('\x00');
  out.push_back(static_cast<char>(dict.size() & 0xff));
  out.push_back(static_cast<char>(dict.size() >> 8));
  return out + dict;
}

StatusOr<NpyArray> ParseNpy(std::string_view bytes) {
  if (bytes.size() < 10 || std::memcmp(bytes.data(), kNpyMagic, sizeof kNpyMagic) != 0 || bytes[6] != 1)
    return InvalidArgument("npy: not a version 1.0 .npy header");
  const size_t header = static_cast<uint8_t>(bytes[8]) | (size_t{static_cast<uint8_t>(bytes[9])} << 8);
  if (bytes.size() < 10 + header)
    return InvalidArgument("npy: the header says {} bytes; the file has {}", header, bytes.size() - 10);
  const std::string_view dict = bytes.substr(10, header);
  NpyArray a;
  a.data = bytes.substr(10 + header);
  std::string_view descr = NpyField(dict, "'descr'");
  if (descr.size() >= 2 && descr.front() == '\'' && descr.back() == '\'') descr = descr.substr(1, descr.size() - 2);
  a.descr = descr;
  const std::string_view order = NpyField(dict, "'fortran_order'");
  if (order != "False") return InvalidArgument("npy: fortran_order {}; expected False", order);
  a.shape = NpyField(dict, "'shape'");
  for (size_t i = 0; i < a.shape.size();) {
    if (!std::isdigit(static_cast<unsigned char>(a.shape[i]))) {
      ++i;
      continue;
    }
    int64_t v = 0;
    while (i < a.shape.size() && std::isdigit(static_cast<unsigned char>(a.shape[i])) && v < (int64_t{1} << 40))
      v = v * 10 + (a.shape[i++] - '0');
    a.dims.push_back(v);
  }
  return a;
}

StatusOr<ImageEncoding> SniffEncoding(std::string_view b) {
  if (b.size() >= 8 && std::memcmp(b.data(), kPngMagic, 8) == 0) return ImageEncoding::kPng;
  if (b.size() >= sizeof kNpyMagic && std::memcmp(b.data(), kNpyMagic, sizeof kNpyMagic) == 0)
    return ImageEncoding::kNpy;
  if (b.size() >= 3 && static_cast<uint8_t>(b[0]) == 0xFF && static_cast<uint8_t>(b[1]) == 0xD8 &&
      static_cast<uint8_t>(b[2]) == 0xFF)
    return ImageEncoding::kJpeg;
  return InvalidArgument("neither a PNG, a JPEG nor an .npy file (its first {} bytes match no signature)",
                         std::min<size_t>(b.size(), 8));
}

StatusOr<Pixels> DecodeImage(std::string_view bytes, int channels, int64_t max_pixels) {
  if (channels != 1 && channels != 3) return InvalidArgument("channels is {}; expected 1 or 3", channels);
  POLIS_ASSIGN_OR_RETURN(ImageEncoding e, SniffEncoding(bytes));
  if (e == ImageEncoding::kNpy) return DecodeNpy(bytes, channels, max_pixels);
  return e == ImageEncoding::kPng ? DecodePng(bytes, channels, max_pixels)
                                  : DecodeJpeg(bytes, channels, max_pixels);
}

StatusOr<std::string> EncodeImage(const Pixels& p, ImageEncoding e, int jpeg_quality) {
  POLIS_ENFORCE(p.channels == 1 || p.channels == 3);
  POLIS_ENFORCE_EQ(p.hwc.size(), static_cast<size_t>(p.height) * p.width * p.channels);
  if (e == ImageEncoding::kNpy) return EncodeNpyBytes(p);
  return e == ImageEncoding::kPng ? EncodePngBytes(p) : EncodeJpegBytes(p, jpeg_quality);
}

Pixels Resize(const Pixels& src, int height, int width) {
  if (src.height == height && src.width == width) return src;
  Pixels dst;
  dst.height = height;
  dst.width = width;
  dst.channels = src.channels;
  dst.hwc.resize(static_cast<size_t>(height) * width * src.channels);
  const float sy = static_cast<float>(src.height) / height, sx = static_cast<float>(src.width) / width;
  const int C = src.channels;
  for (int y = 0; y < height; ++y) {
    const float fy = std::clamp((y + 0.5f) * sy - 0.5f, 0.0f, static_cast<float>(src.height - 1));
    const int y0 = static_cast<int>(fy), y1 = std::min(y0 + 1, src.height - 1);
    const float wy = fy - y0;
    for (int x = 0; x < width; ++x) {
      const float fx = std::clamp((x + 0.5f) * sx - 0.5f, 0.0f, static_cast<float>(src.width - 1));
      const int x0 = static_cast<int>(fx), x1 = std::min(x0 + 1, src.width - 1);
      const float wx = fx - x0;
      for (int c = 0; c < C; ++c) {
        auto at = [&](int yy, int xx) { return static_cast<float>(src.hwc[(static_cast<size_t>(yy) * src.width + xx) * C + c]); };
        const float v = (at(y0, x0) * (1 - wx) + at(y0, x1) * wx) * (1 - wy) + (at(y1, x0) * (1 - wx) + at(y1, x1) * wx) * wy;
        dst.hwc[(static_cast<size_t>(y) * width + x) * C + c] = static_cast<uint8_t>(std::lround(std::clamp(v, 0.0f, 255.0f)));
      }
    }
  }
  return dst;
}

}  // namespace polis::data
