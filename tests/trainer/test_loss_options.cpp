// The recipe's algorithm.* section mapped onto loss/'s option structs (trainer/loss_options.h):
// every key lands, bad strings fail at mapping time naming the key, and the structs' own defaults
// are the recipe's defaults (so a test or caller using the structs directly means the same).
#include "core/util/error.h"
#include "core/recipe/recipe.h"
#include "loss/kl.h"
#include "loss/rollout_correction.h"
#include "tests/catch.h"
#include "tests/test_util.h"
#include "trainer/loss_options.h"

using namespace fp8rl;
using namespace fp8rl::recipe;
using namespace fp8rl::trainer;
using namespace fp8rl::loss;

TEST_CASE("loss options: the recipe's strings are parsed once, when the recipe is mapped", "[trainer][loss]") {
  AlgorithmConfig a;
  a.loss_agg_mode = "seq-mean-token-sum-norm";
  a.tis_level = "sequence";
  a.tis_mode = "mask";
  a.kl_loss_type = "k2";
  a.clip_ratio_high = 0.28;
  a.clip_ratio_c = 3.0;
  a.tis_cap = 1.4;
  a.tis_mask_lower = 0.7;
  a.use_kl_loss = true;
  a.kl_loss_coef = 0.1;
  a.entropy_coeff = 0.01;
  a.adv_estimator = "dr_grpo";
  a.norm_adv_by_batch = true;
  const PolicyObjectiveOptions o = policy_objective_options(a);
  CHECK(o.loss_agg_mode == LossAggMode::seq_mean_token_sum_norm);
  CHECK(o.correction.level == TisLevel::sequence);
  CHECK(o.correction.mode == TisMode::mask);
  CHECK(o.kl_loss_type == KlType::k2);
  CHECK(o.policy.clip_ratio_high == 0.28);
  CHECK(o.policy.clip_ratio_c == 3.0);
  CHECK(o.correction.cap == 1.4);
  CHECK(o.correction.mask_lower == 0.7);
  CHECK(o.use_kl_loss);
  CHECK(o.kl_loss_coef == 0.1);
  CHECK(o.entropy_coeff == 0.01);
  const AdvantageOptions adv = advantage_options(a);
  CHECK(adv.estimator == AdvEstimator::dr_grpo);
  CHECK(adv.norm_adv_by_batch);

  auto bad = [](auto edit) {
    AlgorithmConfig b;
    edit(b);
    (void)advantage_options(b);
    return policy_objective_options(b);
  };
  REQUIRE_THROWS_CONTAINING(bad([](AlgorithmConfig& b) { b.loss_agg_mode = "sum"; }), ConfigError,
                            "algorithm.loss_agg_mode");
  REQUIRE_THROWS_CONTAINING(bad([](AlgorithmConfig& b) { b.kl_loss_type = "k7"; }), ConfigError,
                            "algorithm.kl_loss_type");
  REQUIRE_THROWS_CONTAINING(bad([](AlgorithmConfig& b) { b.tis_level = "seq"; }), ConfigError, "algorithm.tis_level");
  REQUIRE_THROWS_CONTAINING(bad([](AlgorithmConfig& b) { b.tis_mode = "clip"; }), ConfigError, "algorithm.tis_mode");
  REQUIRE_THROWS_CONTAINING(bad([](AlgorithmConfig& b) { b.adv_estimator = "ppo"; }), ConfigError,
                            "algorithm.adv_estimator");
}

TEST_CASE("loss options: the structs' defaults are the recipe's defaults", "[trainer][loss]") {
  const PolicyObjectiveOptions mapped = policy_objective_options(AlgorithmConfig{});
  const PolicyObjectiveOptions plain{};
  CHECK(plain.loss_agg_mode == mapped.loss_agg_mode);
  CHECK(plain.kl_loss_type == mapped.kl_loss_type);
  CHECK(plain.correction.level == mapped.correction.level);
  CHECK(plain.correction.mode == mapped.correction.mode);
  CHECK(plain.use_kl_loss == mapped.use_kl_loss);
  CHECK(plain.kl_loss_coef == mapped.kl_loss_coef);
  CHECK(plain.entropy_coeff == mapped.entropy_coeff);
  CHECK(plain.correction.cap == mapped.correction.cap);
  CHECK(plain.correction.mask_lower == mapped.correction.mask_lower);
  CHECK(plain.policy.clip_ratio_low == mapped.policy.clip_ratio_low);
  CHECK(plain.policy.clip_ratio_high == mapped.policy.clip_ratio_high);
  CHECK(plain.policy.clip_ratio_c == mapped.policy.clip_ratio_c);
  const AdvantageOptions adv_plain{}, adv_mapped = advantage_options(AlgorithmConfig{});
  CHECK(adv_plain.estimator == adv_mapped.estimator);
  CHECK(adv_plain.norm_adv_by_batch == adv_mapped.norm_adv_by_batch);
}
