// common/png.h: the encoder's output read back by an independent minimal
// decoder (chunk CRCs, IHDR, zlib stream, filter 0 rows), and the drawing
// primitives.
#include <gtest/gtest.h>
#include <zlib.h>

#include <cstring>

#include "common/png.h"

namespace polis {
namespace {

uint32_t U32(const std::string& s, size_t at) {
  return (uint32_t(uint8_t(s[at])) << 24) | (uint32_t(uint8_t(s[at + 1])) << 16) |
         (uint32_t(uint8_t(s[at + 2])) << 8) | uint32_t(uint8_t(s[at + 3]));
}

struct Decoded {
  int width = 0, height = 0;
  std::string pixels;  // RGB rows
  std::vector<std::string> chunks;
};

// Fails the test on any structural error.
Decoded Decode(const std::string& png) {
  Decoded d;
  EXPECT_EQ(png.substr(0, 8), std::string("\x89PNG\r\n\x1a\n", 8));
  std::string idat;
  size_t at = 8;
  while (at + 12 <= png.size()) {
    const uint32_t len = U32(png, at);
    const std::string type = png.substr(at + 4, 4);
    const std::string body = png.substr(at + 4, 4 + len);
    EXPECT_EQ(U32(png, at + 8 + len), uint32_t(crc32(0, reinterpret_cast<const Bytef*>(body.data()), body.size())))
        << "CRC of " << type;
    d.chunks.push_back(type);
    const std::string data = png.substr(at + 8, len);
    if (type == "IHDR") {
      d.width = int(U32(data, 0));
      d.height = int(U32(data, 4));
      EXPECT_EQ(data.substr(8), std::string("\x08\x02\x00\x00\x00", 5));
    } else if (type == "IDAT") {
      idat += data;
    }
    at += 12 + len;
  }
  EXPECT_EQ(at, png.size());
  std::string raw(size_t(d.height) * (size_t(d.width) * 3 + 1), '\0');
  uLongf n = raw.size();
  EXPECT_EQ(uncompress(reinterpret_cast<Bytef*>(raw.data()), &n, reinterpret_cast<const Bytef*>(idat.data()), idat.size()),
            Z_OK);
  EXPECT_EQ(n, raw.size());
  for (int y = 0; y < d.height; ++y) {
    const size_t row = size_t(y) * (size_t(d.width) * 3 + 1);
    EXPECT_EQ(raw[row], '\0') << "filter of row " << y;
    d.pixels += raw.substr(row + 1, size_t(d.width) * 3);
  }
  return d;
}

TEST(Png, EncodesWhatWasDrawn) {
  Image img(7, 5, {10, 20, 30});
  img.Set(0, 0, {255, 0, 0});
  img.Set(6, 4, {0, 255, 0});
  img.Set(7, 0, {1, 1, 1});  // outside: ignored
  const Decoded d = Decode(EncodePng(img));
  EXPECT_EQ(d.width, 7);
  EXPECT_EQ(d.height, 5);
  EXPECT_EQ(d.chunks, (std::vector<std::string>{"IHDR", "IDAT", "IEND"}));
  ASSERT_EQ(d.pixels.size(), 7u * 5u * 3u);
  EXPECT_EQ(d.pixels.substr(0, 3), std::string("\xff\x00\x00", 3));
  EXPECT_EQ(d.pixels.substr(3, 3), std::string("\x0a\x14\x1e", 3));
  EXPECT_EQ(d.pixels.substr(d.pixels.size() - 3), std::string("\x00\xff\x00", 3));
  EXPECT_EQ(std::memcmp(d.pixels.data(), img.rgb().data(), d.pixels.size()), 0);
}

TEST(Png, LinesAndText) {
  Image img(40, 20);
  img.Line(0, 0, 39, 19, {0, 0, 0});
  EXPECT_EQ(img.At(0, 0), (Rgb{0, 0, 0}));
  EXPECT_EQ(img.At(39, 19), (Rgb{0, 0, 0}));
  EXPECT_EQ(img.At(39, 0), (Rgb{255, 255, 255}));
  Image t(40, 20);
  const int w = t.Text(0, 0, "1", {0, 0, 0}, 1);
  EXPECT_EQ(w, 4);
  // "1" is .#. ##. .#. .#. ###
  EXPECT_EQ(t.At(1, 0), (Rgb{0, 0, 0}));
  EXPECT_EQ(t.At(0, 0), (Rgb{255, 255, 255}));
  EXPECT_EQ(t.At(0, 1), (Rgb{0, 0, 0}));
  EXPECT_EQ(t.At(2, 4), (Rgb{0, 0, 0}));
  EXPECT_EQ(t.At(2, 3), (Rgb{255, 255, 255}));
  // A big image compresses and decodes.
  Image big(800, 500);
  big.Text(10, 10, "TEST_ACCURACY 0.8123", {0, 0, 0});
  const Decoded d = Decode(EncodePng(big));
  EXPECT_EQ(d.width, 800);
  EXPECT_EQ(std::memcmp(d.pixels.data(), big.rgb().data(), d.pixels.size()), 0);
}

}  // namespace
}  // namespace polis
