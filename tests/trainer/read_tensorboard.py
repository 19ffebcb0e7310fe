#!/usr/bin/env python3
"""Reads fp8rl's TensorBoard event files back with TensorBoard's own loader.

    read_tensorboard.py EVENT_DIR EXPECTED_JSON

EVENT_DIR is a run's tensorboard/ directory; EXPECTED_JSON is what the C++ test
"metrics log: TensorBoard read-back fixture" (FP8RL_TB_OUT=<run dir>) wrote beside it:
    {"files": 2, "scalars": {"<tag>": [[step, value or null for NaN], ...]}}
The event files are hand-encoded (trainer/metrics_log.cpp), so this is the check that
TensorBoard itself accepts them: TFRecord CRCs, the Event/Summary protobuf fields, and the
SessionLog START that makes a resumed run's steps replace the earlier file's.

Exit 0: TensorBoard shows exactly the expected scalars; 1: it does not; 77: the tensorboard
package is not importable (ctest then reports the test as skipped).
"""
import json
import math
import os
import sys

try:
    from tensorboard.backend.event_processing import event_accumulator, event_file_loader
    from tensorboard.backend.event_processing import plugin_event_accumulator
    from tensorboard.util import tensor_util
except ImportError as e:  # tensorboard (and its protobuf) not installed here
    print(f"skipped: cannot import tensorboard ({e})", file=sys.stderr)
    sys.exit(77)


def same(got, want):
    """Values are stored as float32: equal to float32 precision; None stands for NaN."""
    if want is None:
        return math.isnan(got)
    return abs(got - want) <= 1e-6 * max(1.0, abs(want))


def main():
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    event_dir, expected_path = sys.argv[1], sys.argv[2]
    with open(expected_path) as f:
        expected = json.load(f)
    errors = []

    files = sorted(n for n in os.listdir(event_dir) if "tfevents" in n)
    if len(files) != expected["files"]:
        errors.append(f"{len(files)} event files in {event_dir}, expected {expected['files']}")
    for name in files:
        # The raw reader (no data migration): every file opens with its file_version record.
        events = list(event_file_loader.LegacyEventFileLoader(os.path.join(event_dir, name)).Load())
        if not events or events[0].file_version != "brain.Event:2":
            errors.append(f"{name}: the first event is not file_version brain.Event:2")

    # Both Python loaders: the classic one (scalars) and the one behind `tensorboard
    # --load_fast=false` (scalars migrated to tensors); they decide about restarts differently.
    classic = event_accumulator.EventAccumulator(event_dir, size_guidance={event_accumulator.SCALARS: 0})
    classic.Reload()
    plugin = plugin_event_accumulator.EventAccumulator(event_dir, size_guidance={plugin_event_accumulator.TENSORS: 0})
    plugin.Reload()
    loaders = {
        "EventAccumulator": (classic.Tags()["scalars"], lambda tag: [(e.step, e.value) for e in classic.Scalars(tag)]),
        "plugin EventAccumulator": (
            plugin.Tags()["tensors"],
            lambda tag: [(e.step, float(tensor_util.make_ndarray(e.tensor_proto))) for e in plugin.Tensors(tag)],
        ),
    }
    for loader, (tags, read) in loaders.items():
        tags = sorted(tags)
        if tags != sorted(expected["scalars"]):
            errors.append(f"{loader}: scalar tags {tags}, expected {sorted(expected['scalars'])}")
        for tag, want in expected["scalars"].items():
            if tag not in tags:
                continue
            got = read(tag)
            ok = len(got) == len(want) and all(g[0] == w[0] and same(g[1], w[1]) for g, w in zip(got, want))
            if not ok:
                errors.append(f"{loader}: {tag}: TensorBoard shows {got}, expected {[tuple(w) for w in want]}")

    for e in errors:
        print(f"read_tensorboard: {e}", file=sys.stderr)
    if not errors:
        print(f"read_tensorboard: {len(files)} files, tags {sorted(expected['scalars'])}: as expected")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
