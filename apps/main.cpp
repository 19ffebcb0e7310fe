// fp8rl: the command line. Parses arguments, dispatches to a subcommand, and turns errors into
// one line and an exit code (core/util/error.h): 0 ok, 2 usage or config error, 1 runtime failure.
// Every exception kind is mapped in one place (apps/cli_errors.h) and every message passes
// one_line() (control characters escaped, length bounded). A failed write of stdout (a full
// disk, `> /dev/full`) is a runtime failure, not a silent exit 0.
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <exception>
#include <iostream>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "apps/cli_errors.h"
#include "apps/cli_seed.h"
#include "apps/commands.h"
#include "apps/generate.h"
#include "trainer/compare.h"
#include "core/util/env.h"
#include "core/util/error.h"
#include "core/util/strings.h"

namespace {

int fail(int code, const std::string& what) {
  std::cout.flush();
  std::fflush(stdout);
  std::cerr << "fp8rl: error: " << fp8rl::one_line(what) << "\n" << std::flush;
  return code;
}

// What the command printed must have reached stdout: flushed without error.
int finish(int code) {
  errno = 0;
  std::cout.flush();
  int err = errno;
  const bool flushed = std::fflush(stdout) == 0;
  if (!err) err = errno;
  const bool failed = !std::cout || !flushed || std::ferror(stdout);
  if (failed && code == fp8rl::kExitOk)
    return fail(fp8rl::kExitRuntime, std::string("cannot write to standard output: ") +
                                         (err ? std::strerror(err) : "write failed"));
  return code;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace fp8rl;
  CLI::App app{"fp8rl: GRPO/DAPO training with FP8 rollouts, in one process", "fp8rl"};
  app.set_version_flag("--version", std::string("fp8rl ") + FP8RL_VERSION);
  app.require_subcommand(1);
  app.fallthrough(false);

  CheckArgs check_args;
  CLI::App* check = app.add_subcommand("check", "Validate a recipe and print the resolved config as YAML");
  check->add_option("recipe", check_args.recipe, "recipe YAML file");
  check->add_option("overrides", check_args.overrides, "dotted overrides: section.key=value ...");
  check->add_flag("--keys", check_args.list_keys, "list every recipe key with its type, default and meaning");
  check->add_flag("--plain", check_args.plain, "print the YAML without where-each-value-came-from comments");

  TrainArgs train_args;
  CLI::App* train = app.add_subcommand("train", "Train a policy with GRPO/DAPO from a recipe");
  train->add_option("recipe", train_args.recipe, "recipe YAML file")->required();
  train->add_option("overrides", train_args.overrides, "dotted overrides: section.key=value ...");
  train->add_option("--resume", train_args.resume, "auto: continue the run's latest checkpoint; or a checkpoint dir");
  train->add_option("--gpus", train_args.gpus,
                    "data-parallel ranks on this node (trainer.n_gpus_per_node): one process per GPU, or per CPU share")
      ->check(CLI::Range(1, 1024));

  SftArgs sft_args;
  CLI::App* sft = app.add_subcommand("sft", "Supervised warm-up on the recipe's data: the starting skill of a small model");
  sft->add_option("recipe", sft_args.recipe, "recipe YAML file")->required();
  sft->add_option("overrides", sft_args.overrides, "dotted overrides: section.key=value ...");

  DataArgs data_args;
  CLI::App* data = app.add_subcommand("data", "Write a synthetic task's prompts and answers as JSONL");
  data->add_option("task", data_args.task, "addition | copy | countdown")->required();
  data->add_option("-o,--output", data_args.output, "output JSONL file")->required();
  data->add_option("--count", data_args.count, "examples")->check(CLI::Range(1, 100000000))->capture_default_str();
  data->add_option("--seed", data_args.seed, "seed")->check(fp8rl::seed_validator())->capture_default_str();

  trainer::CompareOptions compare_args;
  CLI::App* cmp = app.add_subcommand("compare", "Compare runs: recipe differences and final metrics side by side, and an HTML report");
  cmp->add_option("runs", compare_args.runs, "run directories (the first is the reference of the ratios)")->required();
  cmp->add_option("--window", compare_args.window, "last steps averaged")->check(CLI::Range(1, 1000000))->capture_default_str();
  cmp->add_option("-o,--output", compare_args.html_output, "also write a self-contained HTML report with plots to this file");
  cmp->add_option("--smooth", compare_args.smooth, "moving average (steps) of the report's per-step curves")
      ->check(CLI::Range(1, 100000))
      ->capture_default_str();

  std::string export_source, export_out;
  CLI::App* exp = app.add_subcommand("export", "Write a run's checkpoint as an HF model (LoRA merged) and PEFT adapters");
  exp->add_option("source", export_source, "a run directory (its newest good checkpoint) or a checkpoint directory")->required();
  exp->add_option("-o,--output", export_out, "output directory")->required();
  bool export_fp8 = false;
  exp->add_flag("--fp8", export_fp8, "write the run's FP8 projections in HF's FP8 format (E4M3, 128x128 block scales, quantization_config)");

  EvalArgs eval_args;
  CLI::App* ev = app.add_subcommand("eval", "Score a run's checkpoint with one fixed evaluator (dense, greedy, data.val_files)");
  ev->add_option("source", eval_args.source, "a run directory (its newest good checkpoint) or a checkpoint dir")->required();
  ev->add_option("overrides", eval_args.overrides, "dotted overrides on the checkpoint's recipe, e.g. data.val_files=[val.jsonl]");
  ev->add_option("-o,--output", eval_args.output, "also write the JSON result to this file");

  InitArgs init_args;
  CLI::App* init = app.add_subcommand("init", "Write a randomly initialised HF checkpoint (config.json + safetensors)");
  init->add_option("--arch", init_args.arch, "model family")
      ->check(CLI::IsMember({"qwen3", "qwen2", "llama"}))
      ->capture_default_str();
  init->add_option("--preset", init_args.preset, "shape: tiny, 76m, 0.6b, 1.7b, 4b, 8b, 14b, 32b (Qwen3 sizes)")
      ->capture_default_str();
  init->add_option("--out", init_args.out, "output directory")->required();
  init->add_option("--seed", init_args.seed, "initialisation seed (>= 0)")
      ->check(fp8rl::seed_validator())
      ->capture_default_str();
  init->add_flag("--fp8", init_args.fp8,
                 "store the decoder projections in HF's FP8 format (E4M3, 128x128 block scales, quantization_config): "
                 "about half the BF16 file, for quantization.quant_method: fp8");
  init->add_option("--device", init_args.device,
                   "draw (and with --fp8 quantize) the weights on this device; cuda is much faster for large presets "
                   "but draws other numbers than cpu for the same seed")
      ->check(CLI::IsMember({"cpu", "cuda"}))
      ->capture_default_str();

  BenchGemmArgs gemm_args;
  CLI::App* bench = app.add_subcommand("bench", "Measure speed and memory (CUDA builds)");
  bench->require_subcommand(1);
  CLI::App* gemm = bench->add_subcommand("gemm", "TFLOP/s of BF16 vs FP8 (tensor, channel, block) GEMMs on Qwen3 shapes");
  gemm->add_option("--models", gemm_args.models, "Qwen3 presets whose linear shapes to time")
      ->delimiter(',')
      ->capture_default_str();
  gemm->add_option("--m", gemm_args.ms, "tokens per GEMM (M)")->delimiter(',')->capture_default_str();
  gemm->add_option("--reps", gemm_args.reps, "timed calls per cell (median reported)")
      ->check(CLI::Range(3, 100000))
      ->capture_default_str();
  gemm->add_flag("--no-backward", gemm_args.no_backward, "skip the dX = dY W comparison");
  gemm->add_option("-o,--output", gemm_args.output, "also write the Markdown report to this file");
  BenchForwardArgs fwd_args;
  CLI::App* fwd = bench->add_subcommand(
      "forward", "Trainer forward+backward step: padded [B, T] + dense mask vs packed + flash varlen attention");
  fwd->add_option("--preset", fwd_args.options.preset, "Qwen3 preset shape (random weights)")->capture_default_str();
  fwd->add_option("--batch", fwd_args.options.batch, "sequences per step")->check(CLI::Range(1, 1 << 20))->capture_default_str();
  fwd->add_option("--seq", fwd_args.options.seq, "longest sequence (padded length)")->check(CLI::Range(1, 1 << 20))->capture_default_str();
  fwd->add_option("--min-len", fwd_args.options.min_len, "shortest sequence; lengths are uniform in [min-len, seq]")
      ->check(CLI::Range(1, 1 << 20))
      ->capture_default_str();
  fwd->add_option("--reps", fwd_args.options.reps, "timed steps (median reported)")->check(CLI::Range(1, 1000))->capture_default_str();
  fwd->add_option("--seed", fwd_args.options.seed, "seed of weights, lengths and tokens")
      ->check(fp8rl::seed_validator())
      ->capture_default_str();
  fwd->add_option("-o,--output", fwd_args.output, "also write the Markdown report to this file");
  BenchRolloutArgs roll_args;
  CLI::App* roll = bench->add_subcommand("rollout", "Engine generation speed, BF16 vs FP8 weights, on RL-shaped work");
  CLI::Option* roll_preset =
      roll->add_option("--preset", roll_args.options.preset, "Qwen3 preset shape (random weights)")->capture_default_str();
  roll->add_option("--model", roll_args.options.model_dir,
                   "benchmark this HF checkpoint directory instead (e.g. one written once by `fp8rl init`)")
      ->check(CLI::ExistingDirectory)
      ->excludes(roll_preset);
  roll->add_option("--batch", roll_args.options.batches, "sequences in flight (prompts x n), comma-separated")
      ->delimiter(',')
      ->check(CLI::Range(1, 4096))
      ->capture_default_str();
  roll->add_option("--n", roll_args.options.n, "samples per prompt")->check(CLI::Range(1, 4096))->capture_default_str();
  roll->add_option("--prompt-len", roll_args.options.prompt_len, "prompt tokens")->check(CLI::Range(1, 1 << 20))->capture_default_str();
  roll->add_option("--gen-len", roll_args.options.gen_len, "generated tokens per sample")->check(CLI::Range(1, 1 << 20))->capture_default_str();
  roll->add_option("--gen-len-min", roll_args.options.gen_len_min,
                   "spread the prompts' response lengths evenly over [this, --gen-len] (0: all --gen-len)")
      ->check(CLI::Range(0, 1 << 20))
      ->capture_default_str();
  roll->add_option("--max-num-seqs", roll_args.options.max_num_seqs,
                   "sequences decoded together (rollout.max_num_seqs); below --batch, waiting ones are admitted mid-rollout")
      ->check(CLI::Range(1, 1 << 16))
      ->capture_default_str();
  roll->add_option("--seed", roll_args.options.seed, "seed of weights, prompts and sampling")
      ->check(fp8rl::seed_validator())
      ->capture_default_str();
  roll->add_option("--configs", roll_args.options.configs,
                   "weights / KV configurations to run, comma-separated: bf16, fp8, fp8-kv (default: all three)")
      ->delimiter(',')
      ->check(CLI::IsMember({"bf16", "fp8", "fp8-kv"}));
  roll->add_option("--weight-scaling", roll_args.options.weight_scaling,
                   "FP8 weights' scaling: block (1x128 activation groups), channel (per-token activations) or tensor")
      ->check(CLI::IsMember({"block", "channel", "tensor"}))
      ->capture_default_str();
  roll->add_option("--reps", roll_args.options.reps, "timed rollouts per cell (median)")->check(CLI::Range(1, 100))->capture_default_str();
  roll->add_flag("--compare-eager", roll_args.options.compare_eager, "also run every cell without CUDA graphs (rollout.enforce_eager)");
  roll->add_flag("--compare-async", roll_args.options.compare_async,
                 "also run every cell with one step in flight (rollout.async_scheduling)");
  roll->add_flag("--compare-shared-prefix", roll_args.options.compare_shared_prefix,
                 "also run every cell with a prompt's samples reading its KV blocks together (rollout.shared_prefix_decode: "
                 "true; the plain cells then run with false, not the default's size rule)");
  roll->add_flag("--profile", roll_args.options.profile,
                 "also profile one more rollout and one prefill per cell (CUDA graphs) and tabulate their GPU time by kernel");
  roll->add_option("-o,--output", roll_args.output, "also write the Markdown report to this file");

  GenerateArgs gen_args;
  CLI::App* generate = add_generate_command(app, gen_args);

  // --version stands alone: `fp8rl --version check r.yaml` is a usage error, not ignored.
  for (int i = 1; i < argc; ++i)
    if (std::string(argv[i]) == "--version" && argc > 2)
      return fail(kExitUsage, "--version takes no other arguments (see fp8rl --help)");

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp&) {
    std::cout << app.help();
    return finish(kExitOk);
  } catch (const CLI::CallForAllHelp&) {
    std::cout << app.help("", CLI::AppFormatMode::All);
    return finish(kExitOk);
  } catch (const CLI::CallForVersion& e) {
    std::cout << e.what() << "\n";
    return finish(kExitOk);
  } catch (const CLI::ParseError& e) {
    // --help of a subcommand arrives as CallForHelp too; anything else is a usage error.
    if (argc > 1 && argv[1][0] != '-' && app.get_subcommands().empty()) {
      std::vector<std::string> names;
      for (const CLI::App* sub : app.get_subcommands({})) names.push_back(sub->get_name());
      auto hint = closest_match(argv[1], names);
      return fail(kExitUsage, std::string("unknown subcommand '") + argv[1] + "'" +
                                  (hint ? " (did you mean '" + *hint + "'?)" : "") + "; subcommands: " + join(names, ", "));
    }
    std::string what = e.what();
    if (what.empty()) what = e.get_name();
    return fail(kExitUsage, what + " (see fp8rl --help)");
  }

  train_args.argv.assign(argv, argv + argc);  // a data-parallel launch runs this command line again
  try {
    check_env_settings();  // a bad FP8RL_* value: one line now, not after a model has loaded
    if (*check) return finish(run_check(check_args));
    if (*train) return finish(run_train_command(train_args));
    if (*sft) return finish(run_sft_command(sft_args));
    if (*exp) return finish(run_export(export_source, export_out, export_fp8));
    if (*ev) return finish(run_eval(eval_args));
    if (*cmp) {
      std::cout << trainer::compare_runs(compare_args);
      return finish(kExitOk);
    }
    if (*data) return finish(run_data(data_args));
    if (*gemm) return finish(run_bench_gemm(gemm_args));
    if (*fwd) return finish(run_bench_forward(fwd_args));
    if (*roll) return finish(run_bench_rollout(roll_args));
    if (*init) return finish(run_init(init_args));
    if (*generate) return finish(run_generate(gen_args));
    return fail(kExitUsage, "no subcommand (see fp8rl --help)");
  } catch (...) {
    const CliError e = describe_exception(std::current_exception());
    return fail(e.code, e.message);
  }
}
