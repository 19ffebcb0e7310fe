// Charts as inline SVG for the self-contained HTML report of `fp8rl compare` (no scripts, no
// network): line charts of a metric against step or time, and horizontal bar charts (stacked
// phases of a step, or one bar per value). Each drawn element carries data-* attributes naming
// what it shows, so a test in a real browser can check that every plot holds the points it should.
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace fp8rl::trainer {

struct ChartSeries {
  std::string label;   // run label (data-run)
  std::string title;   // hover text
  std::string color;   // CSS colour
  std::string dash;    // stroke-dasharray ("" = solid)
  std::vector<std::pair<double, double>> points;  // (x, y), x ascending
};

struct LineChart {
  std::string metric;  // data-metric
  std::string title, x_label, note;
  std::vector<ChartSeries> series;
};

struct BarSegment {
  std::string name;  // data-segment; legend entry
  std::string color;
  double value = 0;
};

struct BarRow {
  std::string label;  // data-run
  std::vector<BarSegment> segments;  // drawn end to end
};

struct BarChart {
  std::string metric, title, x_label, note;
  std::vector<BarRow> rows;
};

// A <figure> holding the chart's <svg> and its legend.
std::string render_line_chart(const LineChart& chart);
std::string render_bar_chart(const BarChart& chart);

// Text safe inside HTML/SVG elements and attribute values.
std::string html_escape(std::string_view text);

// About `target` round tick values covering [lo, hi] (1, 2 or 5 times a power of ten apart).
std::vector<double> nice_ticks(double lo, double hi, int target);

// A number as a short label: 3 significant digits, no trailing zeros.
std::string short_number(double v);

}  // namespace fp8rl::trainer
