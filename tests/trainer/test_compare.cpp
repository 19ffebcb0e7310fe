// `fp8rl compare`'s host logic (trainer/run_history.h, compare.h, svg_chart.h, compare_report.h)
// on the committed FP8-vs-BF16 experiment runs (docs/experiment/first-run/runs). The report as a browser
// renders it is tested by tests/cli/test_compare_report.sh.
#include <cmath>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "core/util/error.h"
#include "tests/catch.h"
#include "tests/test_util.h"
#include "trainer/compare.h"
#include "trainer/compare_report.h"
#include "trainer/run_history.h"
#include "trainer/svg_chart.h"

using namespace fp8rl;
using namespace fp8rl::trainer;
namespace fs = std::filesystem;

namespace {

std::string run(const std::string& name) { return std::string(FP8RL_SOURCE_DIR) + "/docs/experiment/first-run/runs/" + name; }

size_t count(const std::string& text, const std::string& needle) {
  size_t n = 0;
  for (size_t at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1)) ++n;
  return n;
}

}  // namespace

TEST_CASE("compare: a run's history, its series on step and wall-clock, tail means", "[compare]") {
  const RunHistory r = read_run_history(run("a-bf16-s1"));
  CHECK(r.records.size() == 61);  // step 0 (validation before training) + 60 steps
  CHECK(r.last_step == 60);
  CHECK(r.total_steps == 60);
  CHECK(r.finished());
  CHECK(r.recipe.at("quantization.quant_method") == "none");
  const auto val = metric_series(r, "val/accuracy");
  REQUIRE(val.size() == 7);  // steps 0, 10, ..., 60
  CHECK(val.front().first == 0);
  CHECK(val.back().first == 60);
  const auto acc = metric_series(r, "score/accuracy");
  REQUIRE(acc.size() == 60);
  const auto timed = metric_series(r, "score/accuracy", /*wall_clock=*/true);
  REQUIRE(timed.size() == 60);
  double total = 0;
  for (const StepRecord& s : r.records)
    if (s.step > 0) total += s.values.at("timing_s/step");
  CHECK(std::fabs(timed.back().first - total) < 1e-9);
  for (size_t i = 1; i < timed.size(); ++i) CHECK(timed[i].first >= timed[i - 1].first);
  double last10 = 0;
  for (size_t i = 50; i < 60; ++i) last10 += acc[i].second;
  CHECK(std::fabs(tail_mean(r, "score/accuracy", 10) - last10 / 10) < 1e-12);
  CHECK(std::isnan(tail_mean(r, "no/such_metric", 10)));
  CHECK(tail_mean(r, "val/accuracy", 10) == val.back().second);  // one validation in the last 10 steps
  CHECK(std::fabs(run_mean(r, "val/accuracy") - (val[1].second + val[2].second + val[3].second + val[4].second +
                                                 val[5].second + val[6].second) / 6) < 1e-12);  // step 0 left out
  // Final: the last value logged, however sparse the metric.
  CHECK(final_value(r, "score/accuracy") == acc.back().second);
  CHECK(final_value(r, "val/accuracy") == val.back().second);
  CHECK(std::isnan(final_value(r, "no/such_metric")));
}

TEST_CASE("compare: recipe differences and configurations across seeds", "[compare]") {
  const std::vector<RunHistory> runs = {read_run_history(run("a-bf16-s1")), read_run_history(run("b-fp8-bf16fwd-tis-s1")),
                                        read_run_history(run("a-bf16-s2"))};
  CHECK(differing_recipe_keys(runs) == std::vector<std::string>{"data.seed", "quantization.quant_method", "trainer.seed"});
  CHECK(group_by_configuration(runs) == std::vector<std::vector<size_t>>{{0, 2}, {1}});
  const MeanSpread m = mean_spread({1.0, 2.0, 3.0, std::nan("")});
  CHECK(m.n == 3);
  CHECK(m.mean == 2.0);
  CHECK(std::fabs(m.spread - 1.0) < 1e-12);
  CHECK(mean_spread({5.0}).spread == 0.0);
  CHECK(mean_spread({}).n == 0);
}

TEST_CASE("compare: labels, ticks and escaping", "[compare]") {
  CHECK(run_label(0) == "A");
  CHECK(run_label(25) == "Z");
  CHECK(run_label(26) == "AA");
  CHECK(run_label(27) == "AB");
  CHECK(run_label(701) == "ZZ");
  CHECK(run_label(702) == "AAA");
  CHECK(group_label({0, 2, 4}) == "A+C+E");
  const std::vector<double> t = nice_ticks(0, 1, 5);
  REQUIRE(t.size() == 6);
  CHECK(std::fabs(t[1] - 0.2) < 1e-12);
  const std::vector<double> fine = nice_ticks(0.99885, 1.00005, 5);
  REQUIRE(fine.size() >= 3);
  CHECK(fine.front() >= 0.99885);
  CHECK(fine.back() <= 1.00005 + 1e-12);
  CHECK(nice_ticks(3, 3, 5).size() == 1);
  // A range of a few ulps (a plateau through a moving average) ends, with a few ticks.
  CHECK(nice_ticks(0.1, 0.10000000000000002, 5).size() <= 1000);
  CHECK(nice_ticks(-1e308, 1e308, 5).size() <= 1000);
  CHECK(html_escape("a<b & \"c\" 'd'>") == "a&lt;b &amp; &quot;c&quot; &#39;d&#39;&gt;");
}

TEST_CASE("compare: a line chart draws every point, an empty one says so", "[compare]") {
  LineChart c;
  c.metric = "m";
  c.series.push_back({"A", "run <A>", "#000", "", {{1, 0.5}, {2, 0.25}, {3, 0.75}}});
  c.series.push_back({"B", "run B", "#111", "2 2", {}});
  const std::string svg = render_line_chart(c);
  CHECK(count(svg, "data-n=\"3\"") == 1);
  CHECK(count(svg, "data-n=\"0\"") == 1);
  CHECK(count(svg, "class=\"marker\"") == 3);
  CHECK(svg.find("run &lt;A&gt;") != std::string::npos);
  for (const std::vector<std::pair<double, double>>& pts :
       {std::vector<std::pair<double, double>>{{1, 0.3}, {2, 0.29999999999999993}},
        std::vector<std::pair<double, double>>{{1, -1e308}, {2, 1e308}, {3, 0}}}) {
    LineChart odd;
    odd.metric = "odd";
    odd.series.push_back({"A", "A", "#000", "", pts});
    const std::string drawn = render_line_chart(odd);
    CHECK(drawn.find("data-n=\"" + std::to_string(pts.size()) + "\"") != std::string::npos);
    CHECK(drawn.find("nan") == std::string::npos);
    CHECK(drawn.find("inf") == std::string::npos);
  }
  LineChart empty;
  empty.metric = "e";
  CHECK(render_line_chart(empty).find("no data") != std::string::npos);
}

TEST_CASE("compare: the HTML report and the bad -o paths", "[compare]") {
  test::TempDir dir;
  CompareOptions o;
  o.runs = {run("a-bf16-s1"), run("a-bf16-s2"), run("d-fp8-fp8fwd-tis-s1")};
  o.html_output = (dir.path() / "report.html").string();
  o.smooth = 5;
  const std::string summary = compare_runs(o);
  CHECK(summary.find("across seeds") != std::string::npos);
  CHECK(summary.find("A+B") != std::string::npos);
  std::ifstream in(o.html_output);
  const std::string html((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  CHECK(html.rfind("<!DOCTYPE html>", 0) == 0);
  CHECK(html.find("<script") == std::string::npos);
  CHECK(count(html, "data-metric=\"val/accuracy\"") == 1);
  CHECK(count(html, "data-metric=\"val/accuracy@time\"") == 1);
  CHECK(count(html, "data-n=\"7\"") == 6);  // validation on step and on wall-clock: 7 points per run each
  CHECK(html.find("Final values (last logged)") != std::string::npos);
  CHECK(summary.find("final (last logged value)") != std::string::npos);
  CHECK(html.find("&plusmn;") != std::string::npos);
  o.html_output = (dir.path() / "missing" / "report.html").string();
  REQUIRE_THROWS_AS(compare_runs(o), ConfigError);
  o.html_output = dir.path().string();
  REQUIRE_THROWS_AS(compare_runs(o), ConfigError);
}

TEST_CASE("compare: a run's eval.json (its final checkpoint through the one evaluator) joins the summary", "[compare]") {
  test::TempDir dir;
  for (const char* name : {"a-bf16-s1", "b-fp8-bf16fwd-tis-s1"}) {
    fs::create_directories(dir.path() / name);
    for (const char* f : {"metrics.jsonl", "resolved_recipe.yaml"}) fs::copy_file(fs::path(run(name)) / f, dir.path() / name / f);
  }
  std::ofstream(dir.path() / "a-bf16-s1" / "eval.json") << R"({"checkpoint": "x", "step": 60, "val/accuracy": 0.875})" << "\n";
  std::ofstream(dir.path() / "b-fp8-bf16fwd-tis-s1" / "eval.json") << "not json\n";  // ignored with a warning
  const RunHistory a = read_run_history((dir.path() / "a-bf16-s1").string());
  CHECK(a.eval.at("val/accuracy") == 0.875);
  CHECK(a.eval.at("step") == 60);
  CHECK(summary_value(a, "eval:val/accuracy", 10) == 0.875);
  CHECK(std::isnan(summary_value(read_run_history((dir.path() / "b-fp8-bf16fwd-tis-s1").string()), "eval:val/accuracy", 10)));
  CompareOptions o;
  o.runs = {(dir.path() / "a-bf16-s1").string(), (dir.path() / "b-fp8-bf16fwd-tis-s1").string()};
  CHECK(compare_runs(o).find("eval:val/accuracy") != std::string::npos);
}
