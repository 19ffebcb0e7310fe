#include "core/model/architecture.h"

#include "core/util/error.h"
#include "core/util/log.h"

namespace fp8rl::model {
namespace {

// Sizes a row refers to, resolved against the config.
enum class Dim { none, vocab, hidden, q_out, kv_out, intermediate, head_dim };
// When a row exists.
enum class When { always, qkv_bias, qk_norm, untied };

struct Row {
  const char* name;  // relative to "model.layers.<i>." for layer rows
  Dim d0, d1;        // shape [d0] or [d0, d1]
  TensorSpec::Init init;
  When when;
};

using I = TensorSpec::Init;

// ---- the table -------------------------------------------------------------------------------
// One decoder layer, in HF's tensor order. `<module>.weight` of a `*_proj` module is a linear
// projection's weight [out, in]; `<module>.bias` its bias.
constexpr Row kLayerRows[] = {
    {"input_layernorm.weight", Dim::hidden, Dim::none, I::ones, When::always},
    {"self_attn.q_proj.weight", Dim::q_out, Dim::hidden, I::normal, When::always},
    {"self_attn.q_proj.bias", Dim::q_out, Dim::none, I::zeros, When::qkv_bias},
    {"self_attn.k_proj.weight", Dim::kv_out, Dim::hidden, I::normal, When::always},
    {"self_attn.k_proj.bias", Dim::kv_out, Dim::none, I::zeros, When::qkv_bias},
    {"self_attn.v_proj.weight", Dim::kv_out, Dim::hidden, I::normal, When::always},
    {"self_attn.v_proj.bias", Dim::kv_out, Dim::none, I::zeros, When::qkv_bias},
    {"self_attn.o_proj.weight", Dim::hidden, Dim::q_out, I::normal, When::always},
    {"self_attn.q_norm.weight", Dim::head_dim, Dim::none, I::ones, When::qk_norm},
    {"self_attn.k_norm.weight", Dim::head_dim, Dim::none, I::ones, When::qk_norm},
    {"post_attention_layernorm.weight", Dim::hidden, Dim::none, I::ones, When::always},
    {"mlp.gate_proj.weight", Dim::intermediate, Dim::hidden, I::normal, When::always},
    {"mlp.up_proj.weight", Dim::intermediate, Dim::hidden, I::normal, When::always},
    {"mlp.down_proj.weight", Dim::hidden, Dim::intermediate, I::normal, When::always},
};
constexpr Row kBeforeLayers[] = {{"model.embed_tokens.weight", Dim::vocab, Dim::hidden, I::normal, When::always}};
constexpr Row kAfterLayers[] = {
    {"model.norm.weight", Dim::hidden, Dim::none, I::ones, When::always},
    {"lm_head.weight", Dim::vocab, Dim::hidden, I::normal, When::untied},
};

// The slots of a decoder layer and the HF projections that fill them (fused name first).
struct Slot {
  const char* fused;
  std::vector<const char*> parts;
};
const Slot kQkv{"self_attn.qkv_proj", {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"}};
const Slot kO{"self_attn.o_proj", {"self_attn.o_proj"}};
const Slot kGateUp{"mlp.gate_up_proj", {"mlp.gate_proj", "mlp.up_proj"}};
const Slot kDown{"mlp.down_proj", {"mlp.down_proj"}};
// ----------------------------------------------------------------------------------------------

struct Switches {
  bool qkv_bias = false, qk_norm = false, tied = false;
};

bool present(When w, const Switches& s) {
  switch (w) {
    case When::always: return true;
    case When::qkv_bias: return s.qkv_bias;
    case When::qk_norm: return s.qk_norm;
    case When::untied: return !s.tied;
  }
  return false;
}

int64_t size_of(Dim d, const hf::ModelShape& s) {
  switch (d) {
    case Dim::none: return 0;
    case Dim::vocab: return s.vocab_size;
    case Dim::hidden: return s.hidden_size;
    case Dim::q_out: return s.num_attention_heads * s.head_dim;
    case Dim::kv_out: return s.num_key_value_heads * s.head_dim;
    case Dim::intermediate: return s.intermediate_size;
    case Dim::head_dim: return s.head_dim;
  }
  return 0;
}

TensorSpec spec_of(const Row& r, const std::string& prefix, const hf::ModelShape& s) {
  TensorSpec t{prefix + r.name, {size_of(r.d0, s)}, r.init};
  if (r.d1 != Dim::none) t.shape.push_back(size_of(r.d1, s));
  return t;
}

const Row& layer_row(const std::string& name) {
  for (const Row& r : kLayerRows)
    if (name == r.name) return r;
  FP8RL_CHECK(false, "architecture: no layer row " + name);
  return kLayerRows[0];
}

ProjectionGroup group(const Slot& slot, const std::string& prefix, const hf::ModelShape& s, const Switches& sw) {
  ProjectionGroup g{prefix + slot.fused, {}};
  for (const char* part : slot.parts) {
    const Row& w = layer_row(std::string(part) + ".weight");
    const std::string bias_name = std::string(part) + ".bias";
    bool bias = false;
    for (const Row& r : kLayerRows)
      if (bias_name == r.name) bias = present(r.when, sw);
    g.parts.push_back(ProjectionSpec{prefix + part, {prefix + part}, {size_of(w.d0, s)}, size_of(w.d1, s), bias});
  }
  return g;
}

}  // namespace

int64_t ProjectionSpec::out_features() const {
  int64_t n = 0;
  for (int64_t o : part_out) n += o;
  return n;
}

ProjectionSpec ProjectionGroup::fuse() const {
  FP8RL_CHECK(!parts.empty(), "ProjectionGroup::fuse: no parts");
  if (parts.size() == 1) return parts.front();
  ProjectionSpec f{fused, {}, {}, parts.front().in_features, parts.front().bias};
  for (const ProjectionSpec& p : parts) {
    FP8RL_CHECK(p.in_features == f.in_features && p.bias == f.bias, "ProjectionGroup::fuse: parts disagree");
    f.parts.insert(f.parts.end(), p.parts.begin(), p.parts.end());
    f.part_out.insert(f.part_out.end(), p.part_out.begin(), p.part_out.end());
  }
  return f;
}

LayerProjections layer_projections(const hf::ModelShape& shape, bool qkv_bias, int64_t layer) {
  const Switches sw{qkv_bias, false, false};
  const std::string p = cat("model.layers.", layer, ".");
  return {group(kQkv, p, shape, sw), group(kO, p, shape, sw), group(kGateUp, p, shape, sw), group(kDown, p, shape, sw)};
}

std::vector<ProjectionSpec> decoder_projections(const hf::ModelShape& shape, bool qkv_bias) {
  std::vector<ProjectionSpec> out;
  for (int64_t i = 0; i < shape.num_hidden_layers; ++i) {
    LayerProjections l = layer_projections(shape, qkv_bias, i);
    for (ProjectionGroup* g : {&l.qkv, &l.o, &l.gate_up, &l.down})
      for (ProjectionSpec& spec : g->parts) out.push_back(std::move(spec));
  }
  return out;
}

std::vector<TensorSpec> checkpoint_tensors(const ModelConfig& c) {
  const Switches sw{c.qkv_bias, c.qk_norm, c.shape.tie_word_embeddings};
  std::vector<TensorSpec> out;
  for (const Row& r : kBeforeLayers)
    if (present(r.when, sw)) out.push_back(spec_of(r, "", c.shape));
  for (int64_t i = 0; i < c.shape.num_hidden_layers; ++i) {
    const std::string p = cat("model.layers.", i, ".");
    for (const Row& r : kLayerRows)
      if (present(r.when, sw)) out.push_back(spec_of(r, p, c.shape));
  }
  for (const Row& r : kAfterLayers)
    if (present(r.when, sw)) out.push_back(spec_of(r, "", c.shape));
  return out;
}

}  // namespace fp8rl::model
