// `fp8rl eval RUN_OR_CKPT [section.key=value ...] [-o result.json]`: a trained checkpoint scored by
// one fixed evaluator, so runs trained in different precisions are compared on equal terms (the
// FP8-vs-BF16 experiment scores every final checkpoint the same way; docs/EXPERIMENT.md).
//
// The checkpoint (a run directory's newest good one, or a checkpoint directory) is exported to a
// temporary HF directory (under $TMPDIR, removed afterwards; set TMPDIR where a full model fits) (trainer/export.h: LoRA merged, full fine-tuning's masters), loaded
// dense -- `quantization.quant_method: none` unless an override says otherwise -- in the run's
// model.dtype, and validated exactly as training validates (greedy, the run's reward, the
// prompts of data.val_files, which an override may replace). The overrides apply on top of the
// checkpoint's resolved recipe; the model, LoRA and warm-up keys are the evaluator's own.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace fp8rl::trainer {

struct EvalResult {
  std::string checkpoint;  // the checkpoint directory scored
  int64_t step = 0;        // its RL step (from the directory name)
  std::string quant_method, dtype;
  int64_t prompts = 0;
  double accuracy = 0, response_length = 0;
  std::string to_json() const;  // one line
};

// ConfigError for a missing/damaged source or no validation prompts.
EvalResult evaluate_checkpoint(const std::string& source, const std::vector<std::string>& overrides);

}  // namespace fp8rl::trainer
