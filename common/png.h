// PNG images: an RGB raster, a few drawing primitives (lines, rectangles,
// markers, a built-in 3x5 pixel font) and a PNG encoder on zlib, so that
// Polis draws its own charts (polis-tune's learning curves) without a
// plotting library or Python.
//
// EncodePng writes 8-bit RGB, no interlace, one IDAT chunk compressed by
// zlib, filter type 0 on every row; CRCs by zlib's crc32. Values only;
// thread-safe.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace polis {

struct Rgb {
  uint8_t r = 0, g = 0, b = 0;
  bool operator==(const Rgb& o) const { return r == o.r && g == o.g && b == o.b; }
};

class Image {
 public:
  Image(int width, int height, Rgb background = {255, 255, 255});
  int width() const { return width_; }
  int height() const { return height_; }
  Rgb At(int x, int y) const;
  // Drawing clips to the image.
  void Set(int x, int y, Rgb c);
  void FillRect(int x0, int y0, int x1, int y1, Rgb c);  // both corners included
  void Line(int x0, int y0, int x1, int y1, Rgb c, int thickness = 1);
  void Marker(int x, int y, Rgb c, int radius = 2, bool cross = false);  // a filled square or an X
  // Text in the built-in font (upper case; digits, . - + : = _ / ( ) % , [ ] < >),
  // `scale` pixels per font pixel, top-left at (x, y). Returns the width drawn.
  int Text(int x, int y, std::string_view text, Rgb c, int scale = 2);
  // Text drawn bottom to top (y axis titles); (x, y) is the bottom-left.
  void TextUp(int x, int y, std::string_view text, Rgb c, int scale = 2);
  static int TextWidth(std::string_view text, int scale = 2) { return static_cast<int>(text.size()) * 4 * scale; }
  const std::vector<uint8_t>& rgb() const { return rgb_; }

 private:
  int width_, height_;
  std::vector<uint8_t> rgb_;
};

// The PNG file's bytes.
std::string EncodePng(const Image& image);

}  // namespace polis
