#include "launch/tune/plots.h"

#include <algorithm>
#include <cmath>
#include <map>

#include "common/fs.h"
#include "common/png.h"

namespace polis::tune {
namespace {

using json = nlohmann::json;

constexpr Rgb kBlack{0, 0, 0}, kGrey{200, 200, 200}, kDark{90, 90, 90}, kRed{214, 39, 40};
const Rgb kPalette[] = {{31, 119, 180}, {255, 127, 14}, {44, 160, 44},  {148, 103, 189}, {140, 86, 75},
                        {227, 119, 194}, {127, 127, 127}, {188, 189, 34}, {23, 190, 207},  {174, 199, 232}};

std::string Tick(double v) {
  std::string s = fmt::format("{:.3g}", v);
  return s;
}

// A linear or log axis from [lo, hi] onto pixels [p0, p1].
struct Axis {
  double lo = 0, hi = 1;
  bool log = false;
  int p0 = 0, p1 = 1;
  int Map(double v) const {
    double t = log ? (std::log10(v) - std::log10(lo)) / (std::log10(hi) - std::log10(lo)) : (v - lo) / (hi - lo);
    if (!std::isfinite(t)) t = 0.5;
    return p0 + static_cast<int>(std::lround(t * (p1 - p0)));
  }
};

Axis Range(double lo, double hi, int p0, int p1, bool log = false) {
  if (!(hi > lo)) {
    const double pad = lo == 0 ? 1 : std::abs(lo) * 0.05;
    lo -= pad;
    hi += pad;
  } else if (!log) {
    const double pad = (hi - lo) * 0.05;
    lo -= pad;
    hi += pad;
  } else {
    lo /= 1.2;
    hi *= 1.2;
  }
  return {lo, hi, log, p0, p1};
}

// Frame, grid and tick labels of one panel.
void Frame(Image& img, const Axis& x, const Axis& y, bool x_integer, const std::vector<std::string>& x_labels) {
  const int left = x.p0, right = x.p1, top = y.p1, bottom = y.p0;
  for (int i = 0; i <= 4; ++i) {
    const double v = y.log ? std::pow(10, std::log10(y.lo) + i / 4.0 * (std::log10(y.hi) - std::log10(y.lo)))
                           : y.lo + i / 4.0 * (y.hi - y.lo);
    const int py = y.Map(v);
    img.Line(left, py, right, py, kGrey);
    const std::string t = Tick(v);
    img.Text(left - Image::TextWidth(t) - 4, py - 5, t, kDark);
  }
  if (!x_labels.empty()) {
    for (size_t i = 0; i < x_labels.size(); ++i) {
      const int px = x.Map(static_cast<double>(i));
      img.Line(px, top, px, bottom, kGrey);
      const std::string t = x_labels[i].substr(0, 10);
      img.Text(px - Image::TextWidth(t) / 2, bottom + 6, t, kDark);
    }
  } else if (x_integer) {
    const int lo = static_cast<int>(std::ceil(x.lo)), hi = static_cast<int>(std::floor(x.hi));
    const int step = std::max(1, (hi - lo) / 10 + 1);
    for (int v = lo; v <= hi; v += step) {
      const int px = x.Map(v);
      img.Line(px, top, px, bottom, kGrey);
      const std::string t = std::to_string(v);
      img.Text(px - Image::TextWidth(t) / 2, bottom + 6, t, kDark);
    }
  } else {
    for (int i = 0; i <= 4; ++i) {
      const double v = x.log ? std::pow(10, std::log10(x.lo) + i / 4.0 * (std::log10(x.hi) - std::log10(x.lo)))
                             : x.lo + i / 4.0 * (x.hi - x.lo);
      const int px = x.Map(v);
      img.Line(px, top, px, bottom, kGrey);
      const std::string t = Tick(v);
      img.Text(px - Image::TextWidth(t) / 2, bottom + 6, t, kDark);
    }
  }
  img.Line(left, top, left, bottom, kBlack);
  img.Line(left, bottom, right, bottom, kBlack);
}

std::string Title(const StudyState& s) {
  const int best = BestTrial(s);
  if (best < 0) return fmt::format("{}: {} - no result yet", s.name, s.objective);
  return fmt::format("{}: best {} {} = {:.4g} at epoch {}", s.name, s.trials[best].id, s.objective,
                     s.trials[best].final_value(), s.trials[best].epochs_done);
}

}  // namespace

std::string CurvesPng(const StudyState& s) {
  const int W = 960, H = 560, left = 90, right = W - 160, top = 50, bottom = H - 60;
  Image img(W, H);
  double lo = INFINITY, hi = -INFINITY;
  int max_epoch = std::max(1, s.max_epochs);
  for (const Trial& t : s.trials)
    for (const auto& [e, v] : t.curve) {
      if (!std::isfinite(v)) continue;
      lo = std::min(lo, v);
      hi = std::max(hi, v);
      max_epoch = std::max(max_epoch, e);
    }
  if (!std::isfinite(lo)) lo = 0, hi = 1;
  Axis x = Range(1, max_epoch, left, right);
  x.lo = 0.8;
  x.hi = max_epoch + 0.2;
  const Axis y = Range(lo, hi, bottom, top);
  img.Text(left, 16, Title(s), kBlack);
  Frame(img, x, y, true, {});
  img.Text((left + right) / 2 - Image::TextWidth("epoch") / 2, bottom + 26, "epoch", kBlack);
  img.TextUp(14, (top + bottom) / 2 + Image::TextWidth(s.objective) / 2, s.objective, kBlack);
  const int best = BestTrial(s);
  auto draw = [&](const Trial& t, Rgb c, int thick) {
    for (size_t i = 0; i < t.curve.size(); ++i) {
      const int px = x.Map(t.curve[i].first), py = y.Map(t.curve[i].second);
      if (i > 0) img.Line(x.Map(t.curve[i - 1].first), y.Map(t.curve[i - 1].second), px, py, c, thick);
      img.Marker(px, py, c, thick);
    }
    if (t.state == "stopped" && !t.curve.empty())
      img.Marker(x.Map(t.curve.back().first), y.Map(t.curve.back().second), kRed, 6, true);
  };
  int legend = 0;
  for (const Trial& t : s.trials) {
    const Rgb c = kPalette[t.index % 10];
    if (t.index != best) draw(t, c, 2);
    if (legend < 24) {
      const int ly = top + legend * 18;
      img.FillRect(right + 16, ly + 2, right + 30, ly + 8, t.index == best ? kBlack : c);
      img.Text(right + 36, ly, fmt::format("{} {}", t.id, t.state), t.index == best ? kBlack : kDark);
      ++legend;
    }
  }
  if (best >= 0) draw(s.trials[best], kBlack, 4);
  img.Text(right + 16, bottom + 26, "X: stopped", kRed);
  return EncodePng(img);
}

std::string ParamsPng(const StudyState& s) {
  std::vector<std::string> fields;
  if (!s.trials.empty())
    for (const ParamValue& p : s.trials.front().params) fields.push_back(p.field);
  const int n = std::max<int>(1, static_cast<int>(fields.size()));
  const int cols = std::min(n, 3), rows = (n + cols - 1) / cols;
  const int PW = 420, PH = 320;
  Image img(cols * PW, rows * PH + 40);
  img.Text(10, 12, Title(s), kBlack);
  const int best = BestTrial(s);
  for (int k = 0; k < static_cast<int>(fields.size()); ++k) {
    const int ox = (k % cols) * PW, oy = 40 + (k / cols) * PH;
    const int left = ox + 80, right = ox + PW - 20, top = oy + 30, bottom = oy + PH - 50;
    // The points: (x, objective, trial).
    std::vector<std::string> labels;
    std::vector<std::tuple<double, double, int>> pts;
    bool numeric = true;
    for (const Trial& t : s.trials)
      if (!t.params[k].value.is_number() && !t.params[k].value.is_null()) numeric = false;
    for (const Trial& t : s.trials) {
      const json& v = t.params[k].value;
      if (!t.has_value() || t.state == "failed" || v.is_null()) continue;  // null: the param did not apply
      double xv;
      if (numeric) {
        xv = v.get<double>();
      } else {
        const std::string text = ParamText(v);
        auto it = std::find(labels.begin(), labels.end(), text);
        if (it == labels.end()) it = labels.insert(labels.end(), text);
        xv = static_cast<double>(it - labels.begin());
      }
      pts.emplace_back(xv, t.final_value(), t.index);
    }
    double xlo = INFINITY, xhi = -INFINITY, ylo = INFINITY, yhi = -INFINITY;
    for (const auto& [xv, yv, i] : pts) {
      xlo = std::min(xlo, xv), xhi = std::max(xhi, xv), ylo = std::min(ylo, yv), yhi = std::max(yhi, yv);
    }
    if (pts.empty()) xlo = 0, xhi = 1, ylo = 0, yhi = 1;
    const bool log = numeric && xlo > 0 && xhi / xlo >= 20;
    Axis x = numeric ? Range(xlo, xhi, left, right, log) : Axis{-0.5, std::max<double>(0.5, labels.size() - 0.5), false, left, right};
    const Axis y = Range(ylo, yhi, bottom, top);
    img.Text(left, oy + 10, fields[k] + (log ? " (log)" : ""), kBlack);
    Frame(img, x, y, false, numeric ? std::vector<std::string>{} : labels);
    for (const auto& [xv, yv, i] : pts) {
      const Trial& t = s.trials[i];
      const Rgb c = i == best ? kRed : (t.state == "stopped" ? Rgb{255, 127, 14} : Rgb{31, 119, 180});
      img.Marker(x.Map(xv), y.Map(yv), c, i == best ? 5 : 3, t.state == "stopped");
    }
  }
  return EncodePng(img);
}

Status WriteStudyPlots(const StudyState& s, const std::string& dir) {
  POLIS_RETURN_IF_ERROR(WriteFileAtomic(dir + "/curves.png", CurvesPng(s)));
  return WriteFileAtomic(dir + "/params.png", ParamsPng(s));
}

}  // namespace polis::tune
