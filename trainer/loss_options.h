// The recipe's algorithm.* section mapped, once, onto the option structs of loss/. loss/ is pure
// tensor code that takes enums; the recipe's strings (adv_estimator, loss_agg_mode, kl_loss_type,
// tis_level, tis_mode) are parsed here with loss/'s parse_* functions, so a bad value fails when
// the recipe is read -- naming the key and the valid values -- and never in the middle of a step.
#pragma once

#include "core/recipe/recipe.h"
#include "loss/advantages.h"
#include "loss/policy_objective.h"

namespace fp8rl::trainer {

loss::AdvantageOptions advantage_options(const recipe::AlgorithmConfig& algorithm);
loss::PolicyObjectiveOptions policy_objective_options(const recipe::AlgorithmConfig& algorithm);

}  // namespace fp8rl::trainer
