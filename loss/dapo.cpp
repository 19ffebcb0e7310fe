#include "loss/dapo.h"

#include <limits>

#include "core/util/error.h"
#include "core/util/log.h"

namespace fp8rl::loss {

at::Tensor filter_groups_mask(const at::Tensor& rewards, const at::Tensor& group_ids) {
  FP8RL_CHECK(rewards.dim() == 1 && group_ids.dim() == 1 && rewards.size(0) == group_ids.size(0),
              cat("rewards ", rewards.sizes(), " and group_ids ", group_ids.sizes(), " must both be [N]"));
  FP8RL_CHECK(group_ids.scalar_type() == at::kLong, cat("group_ids must be int64, got ", group_ids.scalar_type()));
  const at::Tensor r = rewards.detach().to(at::promote_types(rewards.scalar_type(), at::kFloat));
  if (r.size(0) == 0) return at::zeros({0}, r.options().dtype(at::kBool));
  auto [unique_ids, inverse] = at::_unique(group_ids.to(r.device()), /*sorted=*/true, /*return_inverse=*/true);
  const int64_t g = unique_ids.size(0);
  const double inf = std::numeric_limits<double>::infinity();
  // include_self=false: the initial +-inf never takes part, every group has >= 1 sample.
  const at::Tensor gmax = at::full({g}, -inf, r.options()).scatter_reduce(0, inverse, r, "amax", false);
  const at::Tensor gmin = at::full({g}, inf, r.options()).scatter_reduce(0, inverse, r, "amin", false);
  return (gmax > gmin).index_select(0, inverse);
}

at::Tensor filter_groups_indices(const at::Tensor& rewards, const at::Tensor& group_ids) {
  return filter_groups_mask(rewards, group_ids).nonzero().squeeze(1);
}

namespace {
void check_overlong(int64_t max_len, int64_t buffer_len, double factor) {
  if (buffer_len < 0 || buffer_len > max_len) {
    throw ConfigError(cat("reward.overlong_buffer_len must be in [0, rollout.max_response_length = ", max_len,
                          "], got ", buffer_len));
  }
  if (!(factor >= 0)) throw ConfigError(cat("reward.overlong_penalty_factor must be >= 0, got ", factor));
}
}  // namespace

double overlong_penalty(int64_t response_length, int64_t max_response_length, int64_t buffer_len, double factor) {
  check_overlong(max_response_length, buffer_len, factor);
  if (buffer_len == 0) return 0.0;
  const int64_t expected = max_response_length - buffer_len;
  if (response_length <= expected) return 0.0;
  if (response_length > max_response_length) return -factor;
  return static_cast<double>(expected - response_length) / static_cast<double>(buffer_len) * factor;
}

at::Tensor overlong_penalty(const at::Tensor& response_lengths, int64_t max_response_length, int64_t buffer_len,
                            double factor) {
  check_overlong(max_response_length, buffer_len, factor);
  FP8RL_CHECK(response_lengths.dim() == 1, cat("response_lengths must be [N], got ", response_lengths.sizes()));
  const at::Tensor len = response_lengths.to(at::kDouble);  // exact for any realistic length
  if (buffer_len == 0) return at::zeros_like(len, len.options().dtype(at::kFloat));
  const double expected = static_cast<double>(max_response_length - buffer_len);
  // ((Lmax - Lb) - L) / Lb * factor, clamped to [-factor, 0] covers all three cases.
  const at::Tensor p = ((expected - len) / static_cast<double>(buffer_len) * factor).clamp(-factor, 0.0);
  return p.to(at::kFloat);
}

}  // namespace fp8rl::loss
