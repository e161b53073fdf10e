#include "common/png.h"

#include <zlib.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>

namespace polis {
namespace {

// The font: each glyph is 5 rows of 3 pixels, a row one octal digit (4 the
// left pixel, 1 the right).
const char* Glyph(char c) {
  switch (std::toupper(static_cast<unsigned char>(c))) {
    case '0': return "75557"; case '1': return "26227"; case '2': return "71747"; case '3': return "71317";
    case '4': return "55711"; case '5': return "74717"; case '6': return "74757"; case '7': return "71122";
    case '8': return "75757"; case '9': return "75717"; case '.': return "00002"; case '-': return "00700";
    case '+': return "02720"; case ':': return "02020"; case '=': return "07070"; case '_': return "00007";
    case '/': return "11244"; case '(': return "24442"; case ')': return "21112"; case '%': return "51245";
    case ',': return "00024"; case '[': return "64446"; case ']': return "31113"; case '<': return "12421";
    case '>': return "42124"; case 'A': return "25755"; case 'B': return "65656"; case 'C': return "34443";
    case 'D': return "65556"; case 'E': return "74647"; case 'F': return "74644"; case 'G': return "34553";
    case 'H': return "55755"; case 'I': return "72227"; case 'J': return "11152"; case 'K': return "55655";
    case 'L': return "44447"; case 'M': return "57755"; case 'N': return "65555"; case 'O': return "25552";
    case 'P': return "65644"; case 'Q': return "25563"; case 'R': return "65655"; case 'S': return "34216";
    case 'T': return "72222"; case 'U': return "55557"; case 'V': return "55552"; case 'W': return "55775";
    case 'X': return "55255"; case 'Y': return "55222"; case 'Z': return "71247";
    default: return "00000";
  }
}

void PutU32(std::string& out, uint32_t v) {
  out += static_cast<char>(v >> 24);
  out += static_cast<char>(v >> 16);
  out += static_cast<char>(v >> 8);
  out += static_cast<char>(v);
}

void Chunk(std::string& out, const char type[5], const std::string& data) {
  PutU32(out, static_cast<uint32_t>(data.size()));
  std::string body(type, 4);
  body += data;
  out += body;
  PutU32(out, static_cast<uint32_t>(crc32(0L, reinterpret_cast<const Bytef*>(body.data()), body.size())));
}

}  // namespace

Image::Image(int width, int height, Rgb background)
    : width_(std::max(1, width)), height_(std::max(1, height)), rgb_(size_t(width_) * height_ * 3) {
  FillRect(0, 0, width_ - 1, height_ - 1, background);
}

Rgb Image::At(int x, int y) const {
  if (x < 0 || y < 0 || x >= width_ || y >= height_) return {};
  const size_t i = (size_t(y) * width_ + x) * 3;
  return {rgb_[i], rgb_[i + 1], rgb_[i + 2]};
}

void Image::Set(int x, int y, Rgb c) {
  if (x < 0 || y < 0 || x >= width_ || y >= height_) return;
  const size_t i = (size_t(y) * width_ + x) * 3;
  rgb_[i] = c.r;
  rgb_[i + 1] = c.g;
  rgb_[i + 2] = c.b;
}

void Image::FillRect(int x0, int y0, int x1, int y1, Rgb c) {
  for (int y = std::min(y0, y1); y <= std::max(y0, y1); ++y)
    for (int x = std::min(x0, x1); x <= std::max(x0, x1); ++x) Set(x, y, c);
}

void Image::Line(int x0, int y0, int x1, int y1, Rgb c, int thickness) {
  // Bresenham; a thick line is a square brush along it.
  const int dx = std::abs(x1 - x0), dy = -std::abs(y1 - y0);
  const int sx = x0 < x1 ? 1 : -1, sy = y0 < y1 ? 1 : -1;
  int err = dx + dy;
  const int lo = -(thickness - 1) / 2, hi = thickness / 2;
  while (true) {
    FillRect(x0 + lo, y0 + lo, x0 + hi, y0 + hi, c);
    if (x0 == x1 && y0 == y1) break;
    const int e2 = 2 * err;
    if (e2 >= dy) { err += dy; x0 += sx; }
    if (e2 <= dx) { err += dx; y0 += sy; }
  }
}

void Image::Marker(int x, int y, Rgb c, int radius, bool cross) {
  if (!cross) {
    FillRect(x - radius, y - radius, x + radius, y + radius, c);
    return;
  }
  Line(x - radius, y - radius, x + radius, y + radius, c, 2);
  Line(x - radius, y + radius, x + radius, y - radius, c, 2);
}

int Image::Text(int x, int y, std::string_view text, Rgb c, int scale) {
  for (size_t i = 0; i < text.size(); ++i) {
    const char* g = Glyph(text[i]);
    for (int row = 0; row < 5; ++row)
      for (int col = 0; col < 3; ++col)
        if ((g[row] - '0') & (4 >> col))
          FillRect(x + (int(i) * 4 + col) * scale, y + row * scale, x + (int(i) * 4 + col) * scale + scale - 1,
                   y + row * scale + scale - 1, c);
  }
  return TextWidth(text, scale);
}

void Image::TextUp(int x, int y, std::string_view text, Rgb c, int scale) {
  for (size_t i = 0; i < text.size(); ++i) {
    const char* g = Glyph(text[i]);
    for (int row = 0; row < 5; ++row)
      for (int col = 0; col < 3; ++col)
        if ((g[row] - '0') & (4 >> col)) {
          // Rotated 90 degrees counter-clockwise: font x runs up, font y runs right.
          const int px = x + row * scale, py = y - (int(i) * 4 + col) * scale;
          FillRect(px, py - scale + 1, px + scale - 1, py, c);
        }
  }
}

std::string EncodePng(const Image& image) {
  const int w = image.width(), h = image.height();
  std::string raw;
  raw.reserve(size_t(h) * (size_t(w) * 3 + 1));
  const auto& px = image.rgb();
  for (int y = 0; y < h; ++y) {
    raw += '\0';  // filter: none
    raw.append(reinterpret_cast<const char*>(px.data()) + size_t(y) * w * 3, size_t(w) * 3);
  }
  uLongf bound = compressBound(raw.size());
  std::string z(bound, '\0');
  compress2(reinterpret_cast<Bytef*>(z.data()), &bound, reinterpret_cast<const Bytef*>(raw.data()), raw.size(), 6);
  z.resize(bound);
  std::string out("\x89PNG\r\n\x1a\n", 8);
  std::string ihdr;
  PutU32(ihdr, static_cast<uint32_t>(w));
  PutU32(ihdr, static_cast<uint32_t>(h));
  ihdr += '\x08';  // bit depth
  ihdr += '\x02';  // colour type: RGB
  ihdr += '\0';    // compression
  ihdr += '\0';    // filter method
  ihdr += '\0';    // no interlace
  Chunk(out, "IHDR", ihdr);
  Chunk(out, "IDAT", z);
  Chunk(out, "IEND", "");
  return out;
}

}  // namespace polis
