// polis-scaling-plot: line charts of the scaling predictions
// (benchmarks/scaling/run.sh), drawn with common/png.h.
//
// Usage: polis-scaling-plot IN.tsv OUT.png TITLE Y_LABEL [logy]
//   IN.tsv  lines "series<TAB>x<TAB>y" (x > 0: hosts, drawn on a log2 axis);
//           series keep the order of their first line.
// Writes OUT.png (crash-safe: temporary name, then rename).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "common/fs.h"
#include "common/png.h"

namespace {

using polis::Image;
using polis::Rgb;

const Rgb kPalette[] = {{31, 119, 180}, {255, 127, 14}, {44, 160, 44},   {214, 39, 40},  {148, 103, 189},
                        {140, 86, 75},  {227, 119, 194}, {127, 127, 127}, {188, 189, 34}, {23, 190, 207}};
constexpr Rgb kBlack{0, 0, 0}, kGrey{215, 215, 215};

struct Series {
  std::string name;
  std::vector<std::pair<double, double>> points;
};

std::string Upper(std::string s) {
  for (char& c : s) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return s;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 5) {
    std::fprintf(stderr, "usage: polis-scaling-plot IN.tsv OUT.png TITLE Y_LABEL [logy]\n");
    return 1;
  }
  const std::string in = argv[1], out = argv[2], title = argv[3], ylabel = argv[4];
  const bool logy = argc > 5 && std::string(argv[5]) == "logy";
  std::ifstream f(in);
  if (!f) {
    std::fprintf(stderr, "polis-scaling-plot: cannot read %s\n", in.c_str());
    return 1;
  }
  std::vector<Series> series;
  std::map<std::string, size_t> index;
  std::string line;
  int lineno = 0;
  while (std::getline(f, line)) {
    ++lineno;
    if (line.empty() || line[0] == '#') continue;
    std::istringstream ss(line);
    std::string name, xs, ys;
    if (!std::getline(ss, name, '\t') || !std::getline(ss, xs, '\t') || !std::getline(ss, ys, '\t')) {
      std::fprintf(stderr, "polis-scaling-plot: %s:%d: expected series<TAB>x<TAB>y\n", in.c_str(), lineno);
      return 1;
    }
    const double x = std::strtod(xs.c_str(), nullptr), y = std::strtod(ys.c_str(), nullptr);
    if (!(x > 0) || !std::isfinite(y) || (logy && !(y > 0))) {
      std::fprintf(stderr, "polis-scaling-plot: %s:%d: bad point (%s, %s)\n", in.c_str(), lineno, xs.c_str(),
                   ys.c_str());
      return 1;
    }
    auto [it, fresh] = index.emplace(name, series.size());
    if (fresh) series.push_back({name, {}});
    series[it->second].points.emplace_back(x, y);
  }
  if (series.empty()) {
    std::fprintf(stderr, "polis-scaling-plot: %s has no points\n", in.c_str());
    return 1;
  }
  double x0 = 1e300, x1 = 0, y0 = 1e300, y1 = -1e300;
  for (auto& s : series) {
    std::sort(s.points.begin(), s.points.end());
    for (auto [x, y] : s.points) {
      x0 = std::min(x0, x), x1 = std::max(x1, x), y0 = std::min(y0, y), y1 = std::max(y1, y);
    }
  }
  if (!logy) y0 = std::min(y0, 0.0);
  if (logy) {
    y0 = std::pow(10, std::floor(std::log10(y0)));
    y1 = std::pow(10, std::ceil(std::log10(y1)));
  } else {
    y1 = y1 + (y1 - y0) * 0.05 + 1e-12;
  }
  const double lx0 = std::log2(x0), lx1 = std::max(std::log2(x1), lx0 + 1);
  const int W = 900, H = 560, left = 90, right = 250, top = 50, bottom = 70;
  Image img(W, H);
  auto X = [&](double x) { return left + static_cast<int>(std::lround((std::log2(x) - lx0) / (lx1 - lx0) * (W - left - right))); };
  auto Y = [&](double y) {
    const double t = logy ? (std::log10(y) - std::log10(y0)) / (std::log10(y1) - std::log10(y0)) : (y - y0) / (y1 - y0);
    return H - bottom - static_cast<int>(std::lround(t * (H - top - bottom)));
  };
  // Grid and ticks: every power of two on x; 5 (or per decade) on y.
  for (double lx = std::ceil(lx0); lx <= lx1 + 1e-9; lx += 1) {
    const int px = X(std::exp2(lx));
    img.Line(px, top, px, H - bottom, kGrey);
    const std::string t = fmt::format("{:g}", std::exp2(lx));
    img.Text(px - Image::TextWidth(t) / 2, H - bottom + 8, t, kBlack);
  }
  std::vector<double> yt;
  if (logy) {
    for (double v = y0; v <= y1 * 1.0001; v *= 10) yt.push_back(v);
  } else {
    for (int i = 0; i <= 5; ++i) yt.push_back(y0 + i * (y1 - y0) / 5);
  }
  for (double v : yt) {
    const int py = Y(v);
    img.Line(left, py, W - right, py, kGrey);
    const std::string t = fmt::format("{:.3g}", v);
    img.Text(left - 8 - Image::TextWidth(t), py - 5, t, kBlack);
  }
  img.Line(left, top, left, H - bottom, kBlack);
  img.Line(left, H - bottom, W - right, H - bottom, kBlack);
  img.Text(left, 15, Upper(title), kBlack, 2);
  img.Text(left + (W - left - right) / 2 - Image::TextWidth("HOSTS") / 2, H - 30, "HOSTS", kBlack);
  img.TextUp(20, H - bottom - 10, Upper(ylabel), kBlack);
  for (size_t i = 0; i < series.size(); ++i) {
    const Rgb c = kPalette[i % 10];
    const auto& pts = series[i].points;
    for (size_t k = 0; k < pts.size(); ++k) {
      img.Marker(X(pts[k].first), Y(pts[k].second), c, 3, i >= 10);
      if (k > 0) img.Line(X(pts[k - 1].first), Y(pts[k - 1].second), X(pts[k].first), Y(pts[k].second), c, 2);
    }
    const int ly = top + 10 + static_cast<int>(i) * 22;
    img.FillRect(W - right + 15, ly, W - right + 35, ly + 10, c);
    img.Text(W - right + 42, ly, Upper(series[i].name), kBlack, 2);
  }
  const std::string png = polis::EncodePng(img);
  const polis::Status st = polis::WriteFileAtomic(out, png);
  if (!st.ok()) {
    std::fprintf(stderr, "polis-scaling-plot: %s\n", st.ToString().c_str());
    return 1;
  }
  return 0;
}
