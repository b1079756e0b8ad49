// fusednorm's LibTorch LayerNorm, RMSNorm, GroupNorm, InstanceNorm1d/2d/3d and
// BatchLayerNorm1d/2d against torch::nn's modules (RMSNorm: torch::rms_norm, as LibTorch
// has no module for it; BatchLayerNorm: the paper's formula in ATen ops)
// followed by the torch::nn activation: forward, running statistics, every gradient,
// state moving between the two by name, printing and errors.
#include <fusednorm/fusednorm.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "module_test_utils.h"

namespace {

using namespace fusednorm_test;

// Python's torch.nn.RMSNorm, written with torch::rms_norm: the oracle for fusednorm::RMSNorm.
class RMSNormReferenceImpl : public nn::Cloneable<RMSNormReferenceImpl> {
 public:
  RMSNormReferenceImpl(std::vector<int64_t> shape, std::optional<double> eps, bool affine)
      : shape_(std::move(shape)), eps_(eps), affine_(affine) {
    reset();
  }
  void reset() override {
    weight = affine_ ? register_parameter("weight", torch::ones(shape_))
                     : register_parameter("weight", torch::Tensor(), /*requires_grad=*/false);
  }
  torch::Tensor forward(const torch::Tensor& x) {
    return torch::rms_norm(x, shape_, weight.defined() ? std::optional<torch::Tensor>(weight) : std::nullopt, eps_);
  }
  torch::Tensor weight;

 private:
  std::vector<int64_t> shape_;
  std::optional<double> eps_;
  bool affine_;
};
TORCH_MODULE(RMSNormReference);

// Batch-Layer Normalization written with ATen ops (the paper's formula, as the Python
// tests' oracle), with fusednorm::BatchLayerNorm's state and bookkeeping.
class BatchLayerNormReferenceImpl : public nn::Cloneable<BatchLayerNormReferenceImpl> {
 public:
  explicit BatchLayerNormReferenceImpl(fusednorm::BatchLayerNormOptions options) : options_(std::move(options)) {
    reset();
  }
  void reset() override {
    const int64_t C = options_.num_features();
    weight = options_.affine() ? register_parameter("weight", torch::ones({C}))
                               : register_parameter("weight", torch::Tensor(), false);
    bias = options_.affine() ? register_parameter("bias", torch::zeros({C}))
                             : register_parameter("bias", torch::Tensor(), false);
    const bool track = options_.track_running_stats();
    running_mean = register_buffer("running_mean", track ? torch::zeros({C}) : torch::Tensor());
    running_var = register_buffer("running_var", track ? torch::ones({C}) : torch::Tensor());
    num_batches_tracked =
        register_buffer("num_batches_tracked", track ? torch::zeros({}, torch::kLong) : torch::Tensor());
    running_feature_mean = register_buffer("running_feature_mean", track ? torch::zeros({1}) : torch::Tensor());
    running_feature_var = register_buffer("running_feature_var", track ? torch::ones({1}) : torch::Tensor());
  }
  torch::Tensor forward(const torch::Tensor& x) {
    const int64_t N = x.size(0), C = x.size(1);
    std::vector<int64_t> per_channel{0}, per_sample, channel_shape{1, C};
    for (int64_t d = 2; d < x.dim(); ++d) {
      per_channel.push_back(d);
      channel_shape.push_back(1);
    }
    for (int64_t d = 1; d < x.dim(); ++d) per_sample.push_back(d);
    torch::Tensor mean_b = x.mean(per_channel, true), var_b = x.var(per_channel, false, true);
    torch::Tensor mean_l = x.mean(per_sample, true), var_l = x.var(per_sample, false, true);
    const bool track = options_.track_running_stats();
    if (is_training()) {
      if (track) {
        torch::NoGradGuard no_grad;
        num_batches_tracked.add_(1);
        const double momentum = options_.momentum().value_or(1.0 / num_batches_tracked.item<double>());
        const auto bessel = [](int64_t n) { return n > 1 ? double(n) / double(n - 1) : 1.0; };
        running_mean.mul_(1 - momentum).add_(momentum * mean_b.flatten());
        running_var.mul_(1 - momentum).add_(momentum * var_b.flatten() * bessel(x.numel() / C));
        running_feature_mean.mul_(1 - momentum).add_(momentum * mean_l.mean());
        running_feature_var.mul_(1 - momentum).add_(momentum * var_l.mean() * bessel(x.numel() / N));
      }
    } else if (track) {
      const auto use = options_.use_running_stats();
      if (use[0]) mean_b = running_mean.view(channel_shape);
      if (use[1]) var_b = running_var.view(channel_shape);
      if (use[2]) mean_l = running_feature_mean;
      if (use[3]) var_l = running_feature_var;
    }
    const double eps = options_.eps(), zeta = 1e-4, inv_m = 1.0 / double(options_.batch_size());
    const torch::Tensor x_batch = (x - mean_b) / torch::sqrt(var_b + eps);
    const torch::Tensor x_layer = (x - mean_l) / torch::sqrt(var_l + eps);
    torch::Tensor y = ((inv_m - zeta) * x_layer + (1 - (inv_m + zeta)) * x_batch) / std::sqrt(double(C));
    if (weight.defined()) y = y * weight.view(channel_shape) + bias.view(channel_shape);
    return y;
  }
  torch::Tensor weight, bias, running_mean, running_var, num_batches_tracked, running_feature_mean, running_feature_var;

 private:
  fusednorm::BatchLayerNormOptions options_;
};
TORCH_MODULE(BatchLayerNormReference);

// Channels of every test input (dim 1): the per-channel PReLU cases have this many slopes.
constexpr int64_t kChannels = 6;

ModuleActivationCase row_norm_case(int index) {
  return module_activation_cases(kChannels, /*prelu_per_channel=*/false).at(index);
}
ModuleActivationCase channel_norm_case(int index) {
  return module_activation_cases(kChannels, /*prelu_per_channel=*/true).at(index);
}

// Both modes and both residual settings (RReLU only in eval: its training slopes are random).
template <typename Body>
void for_each_mode(const ModuleActivationCase& act, Body body) {
  for (const bool training : {true, false}) {
    if (training && act.activation.name == "rrelu") {
      continue;
    }
    for (const bool with_residual : {false, true}) {
      SCOPED_TRACE(::testing::Message() << "training=" << training << " residual=" << with_residual);
      body(training, with_residual);
    }
  }
}

class LayerNormModule : public ::testing::TestWithParam<int> {};

TEST_P(LayerNormModule, MatchesTorchNnPlusActivation) {
  const ModuleActivationCase act = row_norm_case(GetParam());
  for_each_mode(act, [&](bool training, bool with_residual) {
    torch::manual_seed(0);
    {  // one trailing dim
      nn::LayerNorm reference(nn::LayerNormOptions({9}));
      fusednorm::LayerNorm fused(fusednorm::LayerNormOptions({9}).activation(act.activation));
      compare_with_reference(fused, reference, act, {{4, kChannels, 9}, training, with_residual});
    }
    {  // two trailing dims of a channels_last input, no affine, another eps
      nn::LayerNorm reference(nn::LayerNormOptions({4, 5}).elementwise_affine(false).eps(1e-3));
      fusednorm::LayerNorm fused(
          fusednorm::LayerNormOptions({4, 5}).elementwise_affine(false).eps(1e-3).activation(act.activation));
      compare_with_reference(fused, reference, act, {{3, kChannels, 4, 5}, training, with_residual, true});
    }
  });
}

TEST(LayerNormModule, WeightWithoutBias) {
  torch::manual_seed(0);
  fusednorm::LayerNorm fused(fusednorm::LayerNormOptions({7}).bias(false).activation("gelu"));
  EXPECT_EQ(state_names(*fused), std::vector<std::string>{"weight"});  // as Python's state_dict
  EXPECT_FALSE(fused->bias.defined());
  {
    torch::NoGradGuard no_grad;
    fused->weight.uniform_(0.5, 1.5);
  }
  const torch::Tensor x = torch::randn({3, 5, 7}, options(torch::kFloat64)).requires_grad_();
  fused->to(test_device(), torch::kFloat64);
  const torch::Tensor out = fused(x);
  const torch::Tensor expected = torch::gelu(torch::layer_norm(x, {7}, fused->weight, {}, 1e-5));
  expect_close(out, expected, "output");
  const auto grads = torch::autograd::grad({out.sum()}, {x, fused->weight});
  const auto ref_grads = torch::autograd::grad({expected.sum()}, {x, fused->weight});
  expect_close(grads[0], ref_grads[0], "input gradient");
  expect_close(grads[1], ref_grads[1], "weight gradient");
}

INSTANTIATE_TEST_SUITE_P(EveryActivation, LayerNormModule,
                         ::testing::Range(0, static_cast<int>(num_module_activation_cases())), module_activation_label);

class RMSNormModule : public ::testing::TestWithParam<int> {};

TEST_P(RMSNormModule, MatchesRmsNormPlusActivation) {
  const ModuleActivationCase act = row_norm_case(GetParam());
  for_each_mode(act, [&](bool training, bool with_residual) {
    torch::manual_seed(0);
    {  // torch's default eps (the dtype's machine epsilon)
      RMSNormReference reference(std::vector<int64_t>{9}, std::nullopt, true);
      fusednorm::RMSNorm fused(fusednorm::RMSNormOptions({9}).activation(act.activation));
      compare_with_reference(fused, reference, act, {{4, kChannels, 9}, training, with_residual});
    }
    {
      RMSNormReference reference(std::vector<int64_t>{4, 5}, 1e-3, false);
      fusednorm::RMSNorm fused(
          fusednorm::RMSNormOptions({4, 5}).eps(1e-3).elementwise_affine(false).activation(act.activation));
      compare_with_reference(fused, reference, act, {{3, kChannels, 4, 5}, training, with_residual, true});
    }
  });
}

INSTANTIATE_TEST_SUITE_P(EveryActivation, RMSNormModule,
                         ::testing::Range(0, static_cast<int>(num_module_activation_cases())), module_activation_label);

class GroupNormModule : public ::testing::TestWithParam<int> {};

TEST_P(GroupNormModule, MatchesTorchNnPlusActivation) {
  const ModuleActivationCase act = channel_norm_case(GetParam());
  for_each_mode(act, [&](bool training, bool with_residual) {
    torch::manual_seed(0);
    struct Shape {
      int64_t groups;
      std::vector<int64_t> shape;
      bool channels_last;
      bool affine;
    };
    for (const Shape& s : std::vector<Shape>{{3, {3, kChannels, 4, 5}, false, true},
                                             {2, {3, kChannels, 4, 5}, true, false},
                                             {kChannels, {2, kChannels, 7}, false, true},
                                             {1, {2, kChannels, 3, 2, 3}, true, true}}) {
      nn::GroupNorm reference(nn::GroupNormOptions(s.groups, kChannels).affine(s.affine));
      fusednorm::GroupNorm fused(
          fusednorm::GroupNormOptions(s.groups, kChannels).affine(s.affine).activation(act.activation));
      compare_with_reference(fused, reference, act,
                             {s.shape, training, with_residual, s.channels_last, /*keeps_memory_format=*/true});
    }
  });
}

INSTANTIATE_TEST_SUITE_P(EveryActivation, GroupNormModule,
                         ::testing::Range(0, static_cast<int>(num_module_activation_cases())), module_activation_label);

class InstanceNormModule : public ::testing::TestWithParam<int> {};

template <typename Fused, typename Torch>
void compare_instance_norm(const ModuleActivationCase& act, const Run& run, bool affine, bool track_running_stats,
                           double momentum) {
  torch::manual_seed(0);
  Torch reference(
      nn::InstanceNormOptions(kChannels).affine(affine).track_running_stats(track_running_stats).momentum(momentum));
  Fused fused(fusednorm::InstanceNormOptions(kChannels)
                  .affine(affine)
                  .track_running_stats(track_running_stats)
                  .momentum(momentum)
                  .activation(act.activation));
  compare_with_reference(fused, reference, act, run);
}

TEST_P(InstanceNormModule, MatchesTorchNnPlusActivation) {
  const ModuleActivationCase act = channel_norm_case(GetParam());
  for_each_mode(act, [&](bool training, bool with_residual) {
    compare_instance_norm<fusednorm::InstanceNorm1d, nn::InstanceNorm1d>(
        act, {{4, kChannels, 7}, training, with_residual}, /*affine=*/true, /*track_running_stats=*/true, 0.2);
    compare_instance_norm<fusednorm::InstanceNorm2d, nn::InstanceNorm2d>(
        act, {{3, kChannels, 4, 5}, training, with_residual, true, true}, true, false, 0.1);
    compare_instance_norm<fusednorm::InstanceNorm3d, nn::InstanceNorm3d>(
        act, {{2, kChannels, 3, 2, 3}, training, with_residual, true, true}, false, true, 0.1);
    // Unbatched input; torch::nn::PReLU(C) would slope over the wrong dim of it, so the
    // per-channel PReLU has no oracle here.
    if (act.activation.name != "prelu" || act.activation.prelu_num_parameters == 1) {
      compare_instance_norm<fusednorm::InstanceNorm2d, nn::InstanceNorm2d>(
          act, {{kChannels, 4, 5}, training, with_residual}, true, true, 0.1);
    }
  });
}

INSTANTIATE_TEST_SUITE_P(EveryActivation, InstanceNormModule,
                         ::testing::Range(0, static_cast<int>(num_module_activation_cases())), module_activation_label);

class BatchLayerNormModule : public ::testing::TestWithParam<int> {};

TEST_P(BatchLayerNormModule, MatchesTheFormulaPlusActivation) {
  const ModuleActivationCase act = channel_norm_case(GetParam());
  for_each_mode(act, [&](bool training, bool with_residual) {
    torch::manual_seed(0);
    struct Setup {
      std::vector<int64_t> shape;
      bool channels_last;
      fusednorm::BatchLayerNormOptions options;
    };
    const fusednorm::BatchLayerNormOptions base(kChannels, 8);
    for (const Setup& s : std::vector<Setup>{
             {{4, kChannels, 5, 3}, false, base},
             {{4, kChannels, 5, 3},
              true,
              fusednorm::BatchLayerNormOptions(base).momentum(0.2).use_running_stats({false, true, true, false})},
             {{5, kChannels}, false, fusednorm::BatchLayerNormOptions(base).affine(false)},
             {{3, kChannels, 7}, false, fusednorm::BatchLayerNormOptions(base).track_running_stats(false)}}) {
      BatchLayerNormReference reference(s.options);
      const auto options = fusednorm::BatchLayerNormOptions(s.options).activation(act.activation);
      const fusednorm_test::Run run{s.shape, training, with_residual, s.channels_last, /*keeps_memory_format=*/true};
      if (s.shape.size() == 4) {
        fusednorm::BatchLayerNorm2d fused(options);
        compare_with_reference(fused, reference, act, run);
      } else {
        fusednorm::BatchLayerNorm1d fused(options);
        compare_with_reference(fused, reference, act, run);
      }
    }
  });
}

INSTANTIATE_TEST_SUITE_P(EveryActivation, BatchLayerNormModule,
                         ::testing::Range(0, static_cast<int>(num_module_activation_cases())), module_activation_label);

// torch::save of a torch::nn module loads into the fused one and back; the names match.
template <typename Fused, typename Torch>
void expect_state_moves(Fused fused, Torch reference) {
  {
    torch::NoGradGuard no_grad;
    for (auto& p : reference->parameters()) p.uniform_(-1, 1);
    for (auto& b : reference->buffers()) {
      if (b.is_floating_point()) b.uniform_(0.5, 1.5);
    }
  }
  EXPECT_EQ(state_names(*fused), state_names(*reference));
  std::stringstream stream;
  torch::save(reference, stream);
  torch::load(fused, stream);
  for (const auto& item : reference->named_parameters()) {
    EXPECT_TRUE(torch::equal(fused->named_parameters()[item.key()], item.value())) << item.key();
  }
  for (const auto& item : reference->named_buffers()) {
    EXPECT_TRUE(torch::equal(fused->named_buffers()[item.key()], item.value())) << item.key();
  }
  {
    torch::NoGradGuard no_grad;
    for (auto& p : fused->parameters()) p.fill_(0.25);
  }
  std::stringstream back;
  torch::save(fused, back);
  torch::load(reference, back);
  for (const auto& p : reference->parameters()) {
    EXPECT_TRUE(torch::equal(p, torch::full_like(p, 0.25)));
  }
}

TEST(NormModules, StateMovesToAndFromTorchNnByName) {
  expect_state_moves(fusednorm::LayerNorm(fusednorm::LayerNormOptions({3, 4}).activation("relu")),
                     nn::LayerNorm(nn::LayerNormOptions({3, 4})));
  expect_state_moves(fusednorm::LayerNorm(fusednorm::LayerNormOptions({3}).elementwise_affine(false)),
                     nn::LayerNorm(nn::LayerNormOptions({3}).elementwise_affine(false)));
  expect_state_moves(fusednorm::GroupNorm(fusednorm::GroupNormOptions(2, 4).activation("silu")), nn::GroupNorm(2, 4));
  expect_state_moves(
      fusednorm::InstanceNorm2d(fusednorm::InstanceNormOptions(4).affine(true).track_running_stats(true)),
      nn::InstanceNorm2d(nn::InstanceNormOptions(4).affine(true).track_running_stats(true)));
  expect_state_moves(fusednorm::InstanceNorm1d(4), nn::InstanceNorm1d(4));
  EXPECT_EQ(state_names(*fusednorm::BatchLayerNorm2d(fusednorm::BatchLayerNormOptions(4, 16))),
            (std::vector<std::string>{"weight", "bias", "running_mean", "running_var", "num_batches_tracked",
                                      "running_feature_mean", "running_feature_var"}));  // as Python's
  // As Python's torch.nn.RMSNorm: just "weight".
  EXPECT_EQ(state_names(*fusednorm::RMSNorm(fusednorm::RMSNormOptions({8}))), std::vector<std::string>{"weight"});
}

TEST(NormModules, PReLUWeightIsTheChildActivation) {
  using fusednorm::Activation;
  // Per channel in the channel norms, one shared slope in the row norms (unless sized).
  fusednorm::GroupNorm group(fusednorm::GroupNormOptions(2, 6).activation(Activation::prelu()));
  EXPECT_EQ(group->named_parameters()["activation.weight"].numel(), 6);
  fusednorm::InstanceNorm2d instance(fusednorm::InstanceNormOptions(5).activation(Activation::prelu()));
  EXPECT_EQ(instance->named_parameters()["activation.weight"].numel(), 5);
  fusednorm::LayerNorm layer(fusednorm::LayerNormOptions({16}).activation(Activation::prelu()));
  EXPECT_EQ(layer->named_parameters()["activation.weight"].numel(), 1);
  fusednorm::RMSNorm rms(fusednorm::RMSNormOptions({16}).activation(Activation::prelu(4, 0.1)));
  EXPECT_EQ(rms->named_parameters()["activation.weight"].numel(), 4);
  EXPECT_FLOAT_EQ(rms->named_parameters()["activation.weight"][0].item<float>(), 0.1f);
}

TEST(NormModules, CloneIsDeep) {
  fusednorm::GroupNorm group(fusednorm::GroupNormOptions(2, 4).activation(fusednorm::Activation::prelu()));
  {
    torch::NoGradGuard no_grad;
    group->weight.fill_(2);
  }
  auto copy = std::dynamic_pointer_cast<fusednorm::GroupNormImpl>(group->clone());
  ASSERT_TRUE(copy);
  EXPECT_NE(copy->weight.data_ptr(), group->weight.data_ptr());
  const torch::Tensor x = torch::randn({2, 4, 3, 3});
  EXPECT_TRUE(torch::allclose(copy->forward(x), group(x)));
  auto layer_copy = std::dynamic_pointer_cast<fusednorm::LayerNormImpl>(
      fusednorm::LayerNorm(fusednorm::LayerNormOptions({3}).activation("tanh"))->clone());
  ASSERT_TRUE(layer_copy);
  EXPECT_EQ(layer_copy->options.activation().name, "tanh");
}

TEST(NormModules, WorkInsideSequential) {
  torch::manual_seed(0);
  nn::Sequential net(nn::Conv2d(nn::Conv2dOptions(2, 4, 3)),
                     fusednorm::GroupNorm(fusednorm::GroupNormOptions(2, 4).activation("relu")),
                     fusednorm::InstanceNorm2d(fusednorm::InstanceNormOptions(4).activation("relu")), nn::Flatten(),
                     fusednorm::LayerNorm(fusednorm::LayerNormOptions({36}).activation("relu")),
                     fusednorm::RMSNorm(fusednorm::RMSNormOptions({36}).activation("relu")));
  const torch::Tensor out = net->forward(torch::randn({2, 2, 5, 5}));
  EXPECT_EQ(out.sizes(), (std::vector<int64_t>{2, 36}));
  EXPECT_GE(out.min().item<double>(), 0.0);
}

std::string printed(const nn::Module& module) {
  std::ostringstream stream;
  module.pretty_print(stream);
  return stream.str();
}

TEST(NormModules, PrettyPrint) {
  using fusednorm::Activation;
  EXPECT_EQ(printed(*fusednorm::LayerNorm(fusednorm::LayerNormOptions({4, 8}).activation("gelu"))),
            "fusednorm::LayerNorm([4, 8], eps=1e-05, elementwise_affine=true, activation=gelu)");
  EXPECT_EQ(printed(*fusednorm::LayerNorm(fusednorm::LayerNormOptions({8}).bias(false))),
            "fusednorm::LayerNorm([8], eps=1e-05, elementwise_affine=true, bias=false)");
  EXPECT_EQ(printed(*fusednorm::RMSNorm(fusednorm::RMSNormOptions({8}).activation("silu"))),
            "fusednorm::RMSNorm([8], eps=None, elementwise_affine=true, activation=silu)");
  EXPECT_EQ(printed(*fusednorm::GroupNorm(fusednorm::GroupNormOptions(32, 64).activation(Activation::elu(0.5)))),
            "fusednorm::GroupNorm(32, 64, eps=1e-05, affine=true, activation=elu(0.5))");
  EXPECT_EQ(printed(*fusednorm::BatchLayerNorm1d(fusednorm::BatchLayerNormOptions(8, 32).activation("relu"))),
            "fusednorm::BatchLayerNorm1d(8, batch_size=32, eps=0.001, momentum=None, affine=true, "
            "track_running_stats=true, use_running_stats=(true, true, false, false), activation=relu)");
  EXPECT_EQ(printed(*fusednorm::InstanceNorm3d(8)),
            "fusednorm::InstanceNorm3d(8, eps=1e-05, momentum=0.1, affine=false, track_running_stats=false)");
}

TEST(NormModules, ClearErrors) {
  EXPECT_NE(error_of([] { fusednorm::GroupNorm(3, 8); }).find("num_channels must be divisible by num_groups"),
            std::string::npos);
  EXPECT_NE(error_of([] {
              fusednorm::GroupNorm(fusednorm::GroupNormOptions(2, 4).activation("swishy"));
            }).find("unknown activation 'swishy'"),
            std::string::npos);
  fusednorm::InstanceNorm2d instance(4);
  EXPECT_NE(error_of([&] {
              instance(torch::randn({2, 4}));
            }).find("fusednorm::InstanceNorm2d: expected 3D (unbatched) or 4D input (got 2D input)"),
            std::string::npos);
  fusednorm::LayerNorm layer(fusednorm::LayerNormOptions({5}));
  EXPECT_NE(error_of([&] { layer(torch::randn({2, 4})); }).find("normalized_shape"), std::string::npos);
  fusednorm::RMSNorm rms(fusednorm::RMSNormOptions({4}));
  EXPECT_NE(error_of([&] { rms(torch::randn({2, 4}), torch::randn({2, 3})); }).find("residual"), std::string::npos);
  EXPECT_NE(error_of([] {
              fusednorm::BatchLayerNorm2d(fusednorm::BatchLayerNormOptions(4, 0));
            }).find("fusednorm::BatchLayerNorm2d: batch_size must be positive, got 0"),
            std::string::npos);
  fusednorm::BatchLayerNorm1d bln(fusednorm::BatchLayerNormOptions(4, 8));
  EXPECT_NE(error_of([&] {
              bln(torch::randn({2, 4, 3, 3}));
            }).find("fusednorm::BatchLayerNorm1d: expected 2D or 3D input (got 4D input)"),
            std::string::npos);
  fusednorm::GroupNorm group(2, 4);
  EXPECT_NE(error_of([&] { group(torch::randn({2, 6, 3})); }).find("weight"), std::string::npos);
}

TEST(NormModules, RReLUDrawsRandomSlopesInTraining) {
  fusednorm::LayerNorm layer(fusednorm::LayerNormOptions({64}).activation(fusednorm::Activation::rrelu(0.1, 0.3)));
  const torch::Tensor x = torch::randn({8, 64});
  torch::manual_seed(3);
  const torch::Tensor first = layer(x);
  torch::manual_seed(3);
  EXPECT_TRUE(torch::equal(first, layer(x)));
  const torch::Tensor z = torch::layer_norm(x, {64});
  const torch::Tensor negative = z < 0;
  const torch::Tensor slopes = first.masked_select(negative) / z.masked_select(negative);
  EXPECT_GE(slopes.min().item<double>(), 0.1 - 1e-5);
  EXPECT_LE(slopes.max().item<double>(), 0.3 + 1e-5);
  EXPECT_GT(slopes.max().item<double>() - slopes.min().item<double>(), 0.05);
  layer->eval();
  const torch::Tensor eval_out = layer(x);
  EXPECT_TRUE(torch::allclose(eval_out, torch::rrelu(z, 0.1, 0.3, /*training=*/false), 1e-5, 1e-6));
}

}  // namespace
