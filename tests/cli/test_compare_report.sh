#!/usr/bin/env bash
# `fp8rl compare -o report.html` rendered by a real browser (headless Chromium): the report loads
# without a console error, and every plot holds exactly the data points it should -- counted by
# the browser's own SVG parser (SVGPolylineElement.points) and compared with counts this script
# takes from the runs' metrics.jsonl itself. The runs are the committed FP8-vs-BF16 experiment
# (docs/experiment/first-run/runs), made awkward: one cut short (a run in progress), one with a torn line,
# one without metrics.
# Usage: test_compare_report.sh <fp8rl binary> <project root> <chromium binary or "">
set -euo pipefail
bin=$(realpath "$1")
root=$(realpath "$2")
chromium=${3:-}
if [ -z "$chromium" ] || ! command -v "$chromium" >/dev/null 2>&1; then
  echo "SKIP: no chromium (scripts/setup.sh installs Debian's chromium package where apt can)"
  exit 77
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cd "$tmp"
src=$root/docs/experiment/first-run/runs
cp -r "$src/a-bf16-s1" "$src/b-fp8-bf16fwd-tis-s1" "$src/b-fp8-bf16fwd-tis-s2" "$src/e-lora-fp8-s1" .
head -n 31 "$src/d-fp8-fp8fwd-tis-s1/metrics.jsonl" >short.jsonl  # step 0 + 30 steps: still running
mkdir d-short && cp "$src/d-fp8-fp8fwd-tis-s1/resolved_recipe.yaml" d-short/ && mv short.jsonl d-short/metrics.jsonl
printf '{"step": 61, "score/accu' >>e-lora-fp8-s1/metrics.jsonl  # a torn last line
mkdir empty && cp "$src/a-bf16-s2/resolved_recipe.yaml" empty/
runs=(a-bf16-s1 b-fp8-bf16fwd-tis-s1 b-fp8-bf16fwd-tis-s2 d-short e-lora-fp8-s1 empty)

"$bin" compare "${runs[@]}" --smooth 5 -o report.html >summary.txt 2>warnings.txt
grep -q 'metrics.jsonl:62: not a metrics line' warnings.txt
grep -q 'empty/metrics.jsonl: no metrics yet' warnings.txt
grep -q '30 steps of 60 (in progress or stopped)' summary.txt
grep -q 'across seeds' summary.txt
if grep -Eq 'https?://|<script|<link' report.html; then echo "report is not self-contained" >&2; exit 1; fi

# The browser's view: a copy of the report with a checker appended that writes, per chart, what
# it parsed (polyline points per run, bars per run and segment) as JSON into the page.
python3 - <<'PY'
html = open("report.html").read()
checker = r"""<script>
const out = {};
for (const fig of document.querySelectorAll("figure.chart")) {
  const c = {lines: {}, bars: [], outside: 0};
  const svg = fig.querySelector("svg");
  const vb = svg.viewBox.baseVal;
  for (const pl of fig.querySelectorAll("polyline.series")) {
    c.lines[pl.dataset.run] = pl.points.numberOfItems;
    for (let i = 0; i < pl.points.numberOfItems; ++i) {
      const p = pl.points.getItem(i);
      if (p.x < vb.x || p.x > vb.x + vb.width || p.y < vb.y || p.y > vb.y + vb.height) c.outside++;
    }
  }
  for (const r of fig.querySelectorAll("rect.bar")) {
    const b = r.getBBox();
    c.bars.push([r.dataset.run, r.dataset.segment, b.width >= 0 && b.height > 0]);
  }
  out[fig.dataset.metric] = c;
}
const pre = document.createElement("pre");
pre.id = "fp8rl-check";
pre.textContent = JSON.stringify(out);
document.body.appendChild(pre);
</script>"""
open("check.html", "w").write(html.replace("</body>", checker + "</body>"))
PY
flags=(--headless --no-sandbox --disable-gpu --enable-logging=stderr --v=0)
"$chromium" "${flags[@]}" --dump-dom "file://$tmp/check.html" >dom.html 2>console.txt
"$chromium" "${flags[@]}" --hide-scrollbars --window-size=1400,3000 --screenshot="$tmp/shot.png" "file://$tmp/report.html" \
  >/dev/null 2>>console.txt
if grep 'CONSOLE' console.txt | grep -qi 'error'; then grep 'CONSOLE' console.txt >&2; exit 1; fi

python3 - "${runs[@]}" <<'PY'
import html, json, os, re, sys
runs = sys.argv[1:]
labels = [chr(ord("A") + i) for i in range(len(runs))]
dom = open("dom.html").read()
m = re.search(r'<pre id="fp8rl-check">(.*?)</pre>', dom, re.S)
assert m, "the checker did not run"
seen = json.loads(html.unescape(m.group(1)))

def lines(run):
    out = []
    try:
        for l in open(os.path.join(run, "metrics.jsonl")):
            try:
                j = json.loads(l)
            except ValueError:
                continue
            if isinstance(j, dict) and isinstance(j.get("step"), int):
                out.append(j)
    except FileNotFoundError:
        pass
    return out

data = {r: lines(r) for r in runs}
def count(run, key, per_step):
    return sum(1 for j in data[run] if key in j and (j["step"] > 0 or not per_step))

expect = {}
for key, per_step in [("score/accuracy", True), ("val/accuracy", False), ("reward/mean", True),
                      ("response_length/mean", True), ("actor/entropy", True), ("rollout_corr/kl", True),
                      ("rollout_corr/rollout_is_mean", True), ("rollout_corr/rollout_is_eff_sample_size", True),
                      ("perf/rollout_tokens_per_s", True)]:
    expect[key] = {lab: count(r, key, per_step) for lab, r in zip(labels, runs)}
expect["score/accuracy@time"] = expect["score/accuracy"]
expect["reward/mean@time"] = expect["reward/mean"]
expect["val/accuracy@time"] = expect["val/accuracy"]
problems = []
for metric, want in expect.items():
    got = seen.get(metric)
    if got is None:
        problems.append(f"{metric}: no chart")
        continue
    if got["lines"] != want:
        problems.append(f"{metric}: points per run {got['lines']}, expected {want}")
    if got["outside"]:
        problems.append(f"{metric}: {got['outside']} points outside the plot")
# Bars: one per phase logged (+ "other") per run with metrics; memory: one per phase per run.
phases = ["rollout", "reward", "old_log_prob", "update", "validation"]
want_t = sorted((lab, p) for lab, r in zip(labels, runs) if data[r]
                for p in [q for q in phases if any(f"timing_s/{q}" in j for j in data[r])] + ["other"])
got_t = sorted((b[0], b[1]) for b in seen["timing_s"]["bars"])
if got_t != want_t:
    problems.append(f"timing bars {got_t} != {want_t}")
want_m = sorted((f"{lab} {p}", p) for lab, r in zip(labels, runs) for p in ["rollout", "old_log_prob", "update"]
                if any(f"memory/{p}_peak_gib" in j for j in data[r]))
got_m = sorted((b[0], b[1]) for b in seen["memory"]["bars"])
if got_m != want_m:
    problems.append(f"memory bars {got_m} != {want_m}")
if not all(b[2] for c in ("timing_s", "memory") for b in seen[c]["bars"]):
    problems.append("a bar has no area")
n_points = sum(sum(c["lines"].values()) for c in seen.values())
print(f"{len(seen)} charts, {n_points} points checked in the browser")
if problems:
    print("\n".join(problems))
    sys.exit(1)
PY
# The screenshot is a real picture, not an empty page.
[ "$(stat -c %s shot.png)" -gt 50000 ] || { echo "screenshot too small: $(stat -c %s shot.png) bytes" >&2; exit 1; }
echo "report renders in Chromium: OK"
