#include "quant/precision_plan.h"

#include <fnmatch.h>

#include <iomanip>
#include <sstream>

#include "core/util/error.h"
#include "core/util/log.h"
#include "core/model/architecture.h"

namespace fp8rl::quant {
namespace {

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// FP32 scales of one FP8 weight [N, K] at the recipe's granularity.
int64_t scale_bytes(const std::string& scaling, int64_t n, int64_t k) {
  if (scaling == "block") return ceil_div(n, 128) * ceil_div(k, 128) * 4;
  if (scaling == "channel") return n * 4;
  return 4;
}

std::string gib(int64_t bytes) {
  std::ostringstream os;
  os << std::fixed << std::setprecision(bytes < (1ll << 30) ? 1 : 2)
     << (bytes < (1ll << 30) ? bytes / double(1 << 20) : bytes / double(1ll << 30))
     << (bytes < (1ll << 30) ? " MiB" : " GiB");
  return os.str();
}

std::string params(int64_t n) {
  std::ostringstream os;
  os << std::fixed << std::setprecision(2);
  if (n >= 1000000000) os << n / 1e9 << " B";
  else if (n >= 1000000) os << n / 1e6 << " M";
  else os << n / 1e3 << " K";
  return os.str();
}

}  // namespace

PrecisionPlan make_precision_plan(const hf::ModelShape& s, const recipe::QuantizationConfig& q, const std::string& dtype,
                                  const std::vector<std::string>& not_converted) {
  PrecisionPlan plan;
  const int64_t elem = dtype == "float32" ? 4 : 2;
  plan.dense_dtype = dtype == "float32" ? "FP32" : "BF16";
  const int64_t h = s.hidden_size;
  std::vector<int> pattern_hits(q.modules_in_bf16.size(), 0);
  const bool fp8 = q.quant_method == "fp8";
  // The decoder's projections by HF name, from the architecture table (core/model/architecture.h).
  for (const model::ProjectionSpec& p : model::decoder_projections(s, /*qkv_bias=*/false)) {
    const int64_t layer = std::stoll(p.name.substr(std::string("model.layers.").size()));
    ModulePlan m{p.name, p.out_features(), p.in_features, Precision::fp8, ""};
    if (!fp8) m.reason = "quant_method: none";
    else if (layer < q.num_first_layers_in_bf16) m.reason = "num_first_layers_in_bf16";
    else if (layer >= s.num_hidden_layers - q.num_last_layers_in_bf16) m.reason = "num_last_layers_in_bf16";
    for (size_t i = 0; i < q.modules_in_bf16.size(); ++i) {
      if (fnmatch(q.modules_in_bf16[i].c_str(), m.name.c_str(), 0) != 0) continue;
      ++pattern_hits[i];
      if (m.reason.empty()) m.reason = "modules_in_bf16: " + q.modules_in_bf16[i];
    }
    for (const std::string& entry : not_converted)
      if (m.reason.empty() && !entry.empty() && m.name.find(entry) != std::string::npos)
        m.reason = "the checkpoint's modules_to_not_convert: " + entry;
    if (!m.reason.empty()) m.precision = Precision::bf16;
    if (m.precision == Precision::fp8) {
      plan.fp8_params += m.params();
      plan.fp8_bytes += m.params() + scale_bytes(q.weight_scaling, m.out_features, m.in_features);
    } else {
      plan.bf16_linear_params += m.params();
      plan.bf16_bytes += m.params() * elem;
    }
    plan.linears.push_back(std::move(m));
  }
  for (size_t i = 0; i < pattern_hits.size(); ++i)
    if (pattern_hits[i] == 0)
      throw ConfigError(cat("quantization.modules_in_bf16: pattern '", q.modules_in_bf16[i],
                            "' matches no module (names look like model.layers.0.mlp.down_proj)"));
  // Embeddings, lm_head (unless tied), and per layer two RMSNorms (+ q/k norms in Qwen3), final norm.
  int64_t other = s.vocab_size * h * (s.tie_word_embeddings ? 1 : 2) + h;
  other += s.num_hidden_layers * (2 * h + (s.model_type == "qwen3" ? 2 * s.head_dim : 0));
  plan.other_bf16_params = other;
  plan.bf16_bytes += other * elem;
  return plan;
}

const ModulePlan* PrecisionPlan::find(const std::string& name) const {
  for (const auto& m : linears)
    if (m.name == name) return &m;
  return nullptr;
}

std::string PrecisionPlan::summary() const {
  int64_t n_fp8 = 0;
  for (const auto& m : linears) n_fp8 += m.precision == Precision::fp8;
  return cat("precision plan: ", n_fp8, " of ", linears.size(), " decoder linears in FP8 (", params(fp8_params),
             " params, ", gib(fp8_bytes), " with scales); ", linears.size() - n_fp8, " in ", dense_dtype, " (",
             params(bf16_linear_params), " params); embeddings, norms, lm_head in ", dense_dtype, " (", params(other_bf16_params),
             " params); weights total ", gib(fp8_bytes + bf16_bytes));
}

}  // namespace fp8rl::quant
