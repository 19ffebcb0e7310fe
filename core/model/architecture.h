// The architecture table of the decoder family fp8rl runs (Qwen3, Qwen2/2.5, Llama 3.x): every
// tensor a checkpoint holds, with its HF name, shape and initialisation; every linear projection;
// and which HF projections run fused as one GEMM. The loader, random checkpoints, `fp8rl check`,
// the precision plan and (later) export and LoRA targets all read this table, so the architecture
// is spelled once (architecture.cpp). The three families are one architecture with switches
// (q/k/v bias, q/k norm), so they share one table; a family with another block (routed experts)
// gets a table and an MlpBlock of its own.
//
// Fusion: q/k/v run as one `self_attn.qkv_proj` [q + 2 kv, H] and gate/up as one
// `mlp.gate_up_proj` [2 I, H] (one activation quantization and one GEMM instead of three/two).
// Whether a group is fused is the linear factory's call (LoadOptions::fuse): BF16 always can; an
// FP8 block-scaled weight only when every part's rows are 128-aligned, so no scale block straddles
// two parts and HF FP8 checkpoints load as stored. Users, LoRA targets, the precision plan and
// exports keep the HF names (`q_proj`, `up_proj`): a fused projection lists them as its parts.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/model/model_config.h"

namespace fp8rl::model {

// One tensor of an HF checkpoint.
struct TensorSpec {
  std::string name;             // "model.layers.3.self_attn.q_proj.weight"
  std::vector<int64_t> shape;
  enum Init { normal, ones, zeros } init = normal;  // HF's _init_weights for a random model
};

// A linear projection as the model runs it: y [.., out_features()] = x [.., in_features] W^T (+ b),
// where W is the concatenation along rows (N) of the HF modules in `parts`, in order.
struct ProjectionSpec {
  std::string name;                // "model.layers.3.self_attn.qkv_proj" (fused) or the HF module name
  std::vector<std::string> parts;  // HF module names packed along N, e.g. {"...q_proj", "...k_proj", "...v_proj"}
  std::vector<int64_t> part_out;   // out features of each part
  int64_t in_features = 0;         // K
  bool bias = false;               // every part carries `<part>.bias` [part_out]
  int64_t out_features() const;    // N = sum of part_out
  bool fused() const { return parts.size() > 1; }
};

// A slot of a decoder layer that one fused projection may fill: `fused` is the name it then
// takes; `parts` are the HF projections (one part: never fused).
struct ProjectionGroup {
  std::string fused;
  std::vector<ProjectionSpec> parts;  // unfused, one HF module each
  ProjectionSpec fuse() const;        // all parts as one projection named `fused`
};

// The projections of decoder layer `layer`, by the slot the decoder runs them in.
struct LayerProjections {
  ProjectionGroup qkv;      // self_attn.{q,k,v}_proj -> self_attn.qkv_proj
  ProjectionGroup o;        // self_attn.o_proj
  ProjectionGroup gate_up;  // mlp.{gate,up}_proj -> mlp.gate_up_proj
  ProjectionGroup down;     // mlp.down_proj
};
LayerProjections layer_projections(const hf::ModelShape& shape, bool qkv_bias, int64_t layer);

// Every decoder projection as HF names it (unfused), in model order: q, k, v, o, gate, up, down
// per layer. The precision plan decides per entry.
std::vector<ProjectionSpec> decoder_projections(const hf::ModelShape& shape, bool qkv_bias);

// Every tensor the checkpoint of `config` must hold, in HF's order (embed, layers, final norm,
// lm_head unless tied).
std::vector<TensorSpec> checkpoint_tensors(const ModelConfig& config);

}  // namespace fp8rl::model
