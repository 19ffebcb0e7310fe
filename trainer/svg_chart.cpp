#include "trainer/svg_chart.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <map>

#include "core/util/log.h"

namespace fp8rl::trainer {

namespace {

// Geometry of one chart (SVG user units; the SVG scales with the page through viewBox).
constexpr double kWidth = 640, kHeight = 300;
constexpr double kLeft = 64, kRight = 16, kTop = 12, kBottom = 40;
constexpr double kBarLeft = 150, kBarRow = 20, kBarGap = 6;
constexpr size_t kMaxMarkers = 40;  // series this short also get a dot per point

std::string num(double v) {  // a coordinate
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f", v);
  return buf;
}

std::string legend(const std::vector<std::pair<std::string, std::pair<std::string, std::string>>>& entries) {
  std::string s = "<div class=\"legend\">";
  for (const auto& [name, style] : entries)
    s += cat("<span><svg width=\"22\" height=\"10\"><line x1=\"1\" y1=\"5\" x2=\"21\" y2=\"5\" stroke=\"", style.first,
             "\" stroke-width=\"3\"", style.second.empty() ? "" : cat(" stroke-dasharray=\"", style.second, "\""),
             "/></svg>", html_escape(name), "</span>");
  return s + "</div>";
}

std::string figure_open(const std::string& metric, const std::string& title, const std::string& note) {
  return cat("<figure class=\"chart\" data-metric=\"", html_escape(metric), "\"><figcaption>", html_escape(title),
             note.empty() ? "" : cat(" <small>", html_escape(note), "</small>"), "</figcaption>");
}

// A tick value with as many decimals as the tick spacing needs (0.9985 and 0.999 stay apart).
std::string tick_label(double v, const std::vector<double>& ticks) {
  const double step = ticks.size() > 1 ? ticks[1] - ticks[0] : 0;
  if (!(step > 0) || !std::isfinite(step)) return short_number(v);
  if (std::fabs(v) >= 1e6 || step < 1e-6) {  // significant digits enough to tell neighbours apart
    const int digits = std::clamp(static_cast<int>(std::ceil(std::log10(std::max(std::fabs(v), step) / step))) + 1, 3, 17);
    char buf[48];
    std::snprintf(buf, sizeof buf, "%.*g", digits, v);
    return buf;
  }
  const int decimals = std::max(0, static_cast<int>(std::ceil(-std::log10(step) - 1e-9)));
  char buf[48];
  std::snprintf(buf, sizeof buf, "%.*f", decimals, v);
  return buf;
}

}  // namespace

std::string html_escape(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&#39;"; break;
      default: out += c;
    }
  }
  return out;
}

std::string short_number(double v) {
  if (v == 0) return "0";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.3g", v);
  return buf;
}

std::vector<double> nice_ticks(double lo, double hi, int target) {
  if (!(hi > lo) || !std::isfinite(lo) || !std::isfinite(hi)) return {lo};
  const double raw = hi / std::max(1, target) - lo / std::max(1, target);  // halves first: no overflow
  const double mag = std::pow(10.0, std::floor(std::log10(raw)));
  double step = mag;
  for (double m : {1.0, 2.0, 5.0, 10.0})
    if (m * mag >= raw) {
      step = m * mag;
      break;
    }
  // Ticks by index (k * step), never by repeated addition: a step below the values' resolution
  // (a range of a few ulps) would otherwise never advance.
  const double k0 = std::ceil(lo / step - 1e-9), k1 = std::floor(hi / step + 1e-9);
  if (!(step > 0) || !std::isfinite(k0) || !std::isfinite(k1) || k1 - k0 > 1000 || !(lo + step > lo)) return {lo, hi};
  std::vector<double> ticks;
  for (double k = k0; k <= k1; k += 1) {
    const double t = k * step;
    ticks.push_back(std::fabs(t) < step * 1e-9 ? 0.0 : t);
  }
  return ticks;
}

std::string render_line_chart(const LineChart& c) {
  double x0 = std::numeric_limits<double>::infinity(), x1 = -x0, y0 = x0, y1 = -x0;
  size_t npoints = 0;
  for (const ChartSeries& s : c.series)
    for (const auto& [x, y] : s.points) {
      x0 = std::min(x0, x), x1 = std::max(x1, x), y0 = std::min(y0, y), y1 = std::max(y1, y);
      ++npoints;
    }
  // Values are drawn within +-1e300 (the axis arithmetic stays finite); a range of a few ulps
  // (a plateau through a moving average) is drawn as a constant.
  const auto clamp = [](double v) { return std::clamp(v, -1e300, 1e300); };
  x0 = clamp(x0), x1 = clamp(x1), y0 = clamp(y0), y1 = clamp(y1);
  const auto flat = [](double lo, double hi) { return hi - lo <= 1e-12 * std::max(std::fabs(lo), std::fabs(hi)); };
  std::string svg = cat("<svg class=\"plot\" viewBox=\"0 0 ", kWidth, " ", kHeight, "\" role=\"img\" data-series=\"",
                        c.series.size(), "\">");
  const double pw = kWidth - kLeft - kRight, ph = kHeight - kTop - kBottom;
  if (npoints == 0) {
    svg += cat("<text class=\"empty\" x=\"", kWidth / 2, "\" y=\"", kHeight / 2, "\" text-anchor=\"middle\">no data</text>");
  } else {
    if (flat(x0, x1)) x0 -= 1, x1 += 1;
    if (flat(y0, y1)) {
      const double d = y0 == 0 ? 1 : std::fabs(y0) * 0.1;
      y0 -= d, y1 += d;
    } else {
      const double d = (y1 - y0) * 0.05;  // a little air above and below
      y0 -= d, y1 += d;
    }
    const auto X = [&](double x) { return kLeft + (clamp(x) - x0) / (x1 - x0) * pw; };
    const auto Y = [&](double y) { return kTop + (1 - (clamp(y) - y0) / (y1 - y0)) * ph; };
    svg += cat("<rect class=\"frame\" x=\"", kLeft, "\" y=\"", kTop, "\" width=\"", pw, "\" height=\"", ph, "\"/>");
    const std::vector<double> yt = nice_ticks(y0, y1, 5), xt = nice_ticks(x0, x1, 6);
    for (double t : yt)
      svg += cat("<line class=\"grid\" x1=\"", kLeft, "\" x2=\"", kLeft + pw, "\" y1=\"", num(Y(t)), "\" y2=\"", num(Y(t)),
                 "\"/><text class=\"tick\" x=\"", kLeft - 6, "\" y=\"", num(Y(t) + 4), "\" text-anchor=\"end\">",
                 tick_label(t, yt), "</text>");
    for (double t : xt)
      svg += cat("<line class=\"grid\" y1=\"", kTop, "\" y2=\"", kTop + ph, "\" x1=\"", num(X(t)), "\" x2=\"", num(X(t)),
                 "\"/><text class=\"tick\" y=\"", kTop + ph + 16, "\" x=\"", num(X(t)), "\" text-anchor=\"middle\">",
                 tick_label(t, xt), "</text>");
    for (const ChartSeries& s : c.series) {
      std::string pts;
      for (const auto& [x, y] : s.points) pts += cat(pts.empty() ? "" : " ", num(X(x)), ",", num(Y(y)));
      svg += cat("<g class=\"run\" data-run=\"", html_escape(s.label), "\"><polyline class=\"series\" data-run=\"",
                 html_escape(s.label), "\" data-n=\"", s.points.size(), "\" fill=\"none\" stroke=\"", s.color,
                 "\" stroke-width=\"1.6\"", s.dash.empty() ? "" : cat(" stroke-dasharray=\"", s.dash, "\""), " points=\"",
                 pts, "\"><title>", html_escape(s.title), "</title></polyline>");
      if (s.points.size() <= kMaxMarkers)
        for (const auto& [x, y] : s.points)
          svg += cat("<circle class=\"marker\" cx=\"", num(X(x)), "\" cy=\"", num(Y(y)), "\" r=\"2.2\" fill=\"", s.color, "\"/>");
      svg += "</g>";
    }
  }
  svg += cat("<text class=\"axis\" x=\"", kLeft + pw / 2, "\" y=\"", kHeight - 6, "\" text-anchor=\"middle\">",
             html_escape(c.x_label), "</text></svg>");
  std::vector<std::pair<std::string, std::pair<std::string, std::string>>> entries;
  for (const ChartSeries& s : c.series) entries.push_back({s.label, {s.color, s.dash}});
  return figure_open(c.metric, c.title, c.note) + svg + legend(entries) + "</figure>\n";
}

std::string render_bar_chart(const BarChart& c) {
  double vmax = 0;
  for (const BarRow& r : c.rows) {
    double total = 0;
    for (const BarSegment& s : r.segments) total += std::max(0.0, s.value);
    vmax = std::max(vmax, total);
  }
  if (vmax <= 0) vmax = 1;
  const double height = kTop + static_cast<double>(c.rows.size()) * (kBarRow + kBarGap) + kBottom;
  const double pw = kWidth - kBarLeft - kRight;
  const std::vector<double> ticks = nice_ticks(0, vmax, 5);
  const double xmax = std::max(vmax, ticks.empty() ? vmax : ticks.back());
  const auto X = [&](double v) { return kBarLeft + v / xmax * pw; };
  std::string svg = cat("<svg class=\"bars\" viewBox=\"0 0 ", kWidth, " ", num(height), "\" role=\"img\" data-rows=\"",
                        c.rows.size(), "\">");
  const double bottom = height - kBottom;
  for (double t : ticks)
    svg += cat("<line class=\"grid\" y1=\"", kTop, "\" y2=\"", num(bottom), "\" x1=\"", num(X(t)), "\" x2=\"", num(X(t)),
               "\"/><text class=\"tick\" y=\"", num(bottom + 16), "\" x=\"", num(X(t)), "\" text-anchor=\"middle\">",
               tick_label(t, ticks), "</text>");
  std::map<std::string, std::string> colors;  // legend: segment name -> colour, first seen order below
  std::vector<std::pair<std::string, std::pair<std::string, std::string>>> entries;
  for (size_t i = 0; i < c.rows.size(); ++i) {
    const BarRow& r = c.rows[i];
    const double y = kTop + static_cast<double>(i) * (kBarRow + kBarGap);
    svg += cat("<text class=\"tick\" x=\"", kBarLeft - 6, "\" y=\"", num(y + kBarRow * 0.7), "\" text-anchor=\"end\">",
               html_escape(r.label), "</text>");
    double at = 0;
    for (const BarSegment& s : r.segments) {
      const double v = std::max(0.0, s.value);
      svg += cat("<rect class=\"bar\" data-run=\"", html_escape(r.label), "\" data-segment=\"", html_escape(s.name),
                 "\" data-value=\"", short_number(s.value), "\" x=\"", num(X(at)), "\" y=\"", num(y), "\" width=\"",
                 num(X(at + v) - X(at)), "\" height=\"", kBarRow, "\" fill=\"", s.color, "\"><title>",
                 html_escape(cat(r.label, " ", s.name, ": ", short_number(s.value))), "</title></rect>");
      at += v;
      if (colors.emplace(s.name, s.color).second) entries.push_back({s.name, {s.color, ""}});
    }
  }
  svg += cat("<text class=\"axis\" x=\"", kBarLeft + pw / 2, "\" y=\"", num(height - 6), "\" text-anchor=\"middle\">",
             html_escape(c.x_label), "</text></svg>");
  return figure_open(c.metric, c.title, c.note) + svg + legend(entries) + "</figure>\n";
}

}  // namespace fp8rl::trainer
