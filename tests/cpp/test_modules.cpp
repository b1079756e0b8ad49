// fusednorm's LibTorch modules against torch::nn's: the same module followed by the
// torch::nn activation (residual added before it), forward, running statistics and
// every gradient, in training and eval mode; state moving between the two by name.
#include <fusednorm/fusednorm.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <sstream>
#include <string>
#include <vector>

#include "module_test_utils.h"

namespace {

using namespace fusednorm_test;

struct Setup {
  std::vector<int64_t> shape;  // channels (shape[1]) must be 5: the per-channel PReLU case has 5 weights
  bool training;
  bool with_residual;
  bool channels_last;
  std::optional<double> momentum;
  bool affine;
  bool track_running_stats;
};

template <typename Fused, typename Torch>
void compare_with_torch(const ModuleActivationCase& act, const Setup& setup) {
  torch::manual_seed(0);
  const int64_t channels = setup.shape[1];
  Torch reference(nn::BatchNormOptions(channels)
                      .momentum(setup.momentum)
                      .affine(setup.affine)
                      .track_running_stats(setup.track_running_stats));
  Fused fused(fusednorm::BatchNormOptions(channels)
                  .momentum(setup.momentum)
                  .affine(setup.affine)
                  .track_running_stats(setup.track_running_stats)
                  .activation(act.activation));
  compare_with_reference(fused, reference, act,
                         {setup.shape, setup.training, setup.with_residual, setup.channels_last,
                          /*keeps_memory_format=*/true});
}

class BatchNormModule : public ::testing::TestWithParam<int> {};

TEST_P(BatchNormModule, MatchesTorchNnPlusActivation) {
  const ModuleActivationCase act = module_activation_cases(5, /*prelu_per_channel=*/true).at(GetParam());
  for (const bool training : {true, false}) {
    if (training && act.activation.name == "rrelu") {
      continue;  // random slopes in training mode: RReLUDrawsRandomSlopesInTraining
    }
    for (const bool with_residual : {false, true}) {
      SCOPED_TRACE(::testing::Message() << "training=" << training << " residual=" << with_residual);
      // (N, C), (N, C, L) with cumulative momentum, (N, C, H, W) contiguous and channels_last
      // without affine, (N, C, D, H, W) channels_last without running statistics.
      compare_with_torch<fusednorm::BatchNorm1d, nn::BatchNorm1d>(
          act, {{6, 5}, training, with_residual, false, 0.1, true, true});
      compare_with_torch<fusednorm::BatchNorm1d, nn::BatchNorm1d>(
          act, {{4, 5, 7}, training, with_residual, false, std::nullopt, true, true});
      compare_with_torch<fusednorm::BatchNorm2d, nn::BatchNorm2d>(
          act, {{3, 5, 4, 6}, training, with_residual, false, 0.3, true, true});
      compare_with_torch<fusednorm::BatchNorm2d, nn::BatchNorm2d>(
          act, {{3, 5, 4, 6}, training, with_residual, true, 0.1, false, true});
      compare_with_torch<fusednorm::BatchNorm3d, nn::BatchNorm3d>(
          act, {{2, 5, 3, 4, 3}, training, with_residual, true, 0.1, true, false});
    }
  }
}

INSTANTIATE_TEST_SUITE_P(EveryActivation, BatchNormModule,
                         ::testing::Range(0, static_cast<int>(num_module_activation_cases())), module_activation_label);

TEST(BatchNormModule, StateMovesToAndFromTorchNnByName) {
  torch::manual_seed(0);
  nn::BatchNorm2d reference(4);
  {
    torch::NoGradGuard no_grad;
    reference->weight.uniform_();
    reference->running_var.uniform_(1, 2);
    reference->num_batches_tracked.fill_(3);
  }
  std::stringstream stream;
  torch::save(reference, stream);
  fusednorm::BatchNorm2d fused(fusednorm::BatchNormOptions(4).activation("relu"));
  torch::load(fused, stream);
  EXPECT_TRUE(torch::equal(fused->weight, reference->weight));
  EXPECT_TRUE(torch::equal(fused->running_var, reference->running_var));
  EXPECT_EQ(fused->num_batches_tracked.item<int64_t>(), 3);

  {
    torch::NoGradGuard no_grad;
    fused->bias.fill_(0.5);
  }
  std::stringstream back;
  torch::save(fused, back);
  nn::BatchNorm2d restored(4);
  torch::load(restored, back);
  EXPECT_TRUE(torch::equal(restored->bias, fused->bias));

  EXPECT_EQ(state_names(*fused), state_names(*reference));
}

TEST(BatchNormModule, PReLUWeightIsTheChildActivation) {
  fusednorm::BatchNorm1d bn(fusednorm::BatchNormOptions(3).activation(fusednorm::Activation::prelu()));
  const auto params = bn->named_parameters();
  ASSERT_TRUE(params.contains("activation.weight"));
  EXPECT_EQ(params["activation.weight"].numel(), 3);
  EXPECT_DOUBLE_EQ(params["activation.weight"][0].item<double>(), 0.25);
  EXPECT_EQ(bn->named_children().size(), 1u);
  fusednorm::BatchNorm1d plain(3);
  EXPECT_EQ(plain->named_children().size(), 0u);
}

TEST(BatchNormModule, CloneIsDeep) {
  fusednorm::BatchNorm2d bn(fusednorm::BatchNormOptions(3).activation(fusednorm::Activation::prelu()));
  {
    torch::NoGradGuard no_grad;
    bn->named_parameters()["activation.weight"].fill_(-0.5);
    bn->running_mean.fill_(0.3);
  }
  auto copy = std::dynamic_pointer_cast<fusednorm::BatchNorm2dImpl>(bn->clone());
  ASSERT_TRUE(copy);
  EXPECT_TRUE(torch::equal(copy->named_parameters()["activation.weight"], bn->named_parameters()["activation.weight"]));
  EXPECT_NE(copy->running_mean.data_ptr(), bn->running_mean.data_ptr());
  bn->eval();
  copy->eval();
  const torch::Tensor x = torch::randn({2, 3, 4, 4});
  EXPECT_TRUE(torch::allclose(copy->forward(x), bn(x)));
}

TEST(BatchNormModule, WorksInsideSequential) {
  torch::manual_seed(0);
  nn::Sequential net(nn::Conv2d(nn::Conv2dOptions(2, 3, 3)),
                     fusednorm::BatchNorm2d(fusednorm::BatchNormOptions(3).activation("relu")), nn::Flatten());
  const torch::Tensor out = net->forward(torch::randn({2, 2, 5, 5}));
  EXPECT_EQ(out.sizes(), (std::vector<int64_t>{2, 27}));
  EXPECT_GE(out.min().item<double>(), 0.0);
}

TEST(BatchNormModule, RReLUDrawsRandomSlopesInTraining) {
  fusednorm::BatchNorm1d bn(fusednorm::BatchNormOptions(3).activation(fusednorm::Activation::rrelu(0.1, 0.3)));
  const torch::Tensor x = torch::randn({64, 3});
  torch::manual_seed(7);
  const torch::Tensor first = bn(x);
  torch::manual_seed(7);
  const torch::Tensor again = bn(x);
  EXPECT_TRUE(torch::equal(first, again));  // the same seed, the same slopes
  const torch::Tensor z = torch::batch_norm(x, {}, {}, {}, {}, true, 0.1, 1e-5, false);
  const torch::Tensor negative = z < 0;
  const torch::Tensor slopes = first.masked_select(negative) / z.masked_select(negative);
  EXPECT_GE(slopes.min().item<double>(), 0.1 - 1e-5);
  EXPECT_LE(slopes.max().item<double>(), 0.3 + 1e-5);
  EXPECT_GT(slopes.max().item<double>() - slopes.min().item<double>(), 0.05);  // not one fixed slope
}

TEST(BatchNormModule, PrettyPrint) {
  std::ostringstream stream;
  stream << *fusednorm::BatchNorm2d(
      fusednorm::BatchNormOptions(8).momentum(std::nullopt).activation(fusednorm::Activation::leaky_relu(0.2)));
  EXPECT_EQ(stream.str(),
            "fusednorm::BatchNorm2d(8, eps=1e-05, momentum=None, affine=true, track_running_stats=true, "
            "activation=leaky_relu(0.2))");
  std::ostringstream plain;
  plain << *fusednorm::BatchNorm1d(4);
  EXPECT_EQ(plain.str(), "fusednorm::BatchNorm1d(4, eps=1e-05, momentum=0.1, affine=true, track_running_stats=true)");
}

TEST(BatchNormModule, ClearErrors) {
  fusednorm::BatchNorm2d bn(4);
  EXPECT_NE(error_of([&] {
              bn(torch::randn({2, 4, 3}));
            }).find("fusednorm::BatchNorm2d: expected 4D input (got 3D input)"),
            std::string::npos);
  fusednorm::BatchNorm1d bn1(4);
  EXPECT_NE(error_of([&] {
              bn1(torch::randn({2, 4, 3, 3}));
            }).find("expected 2D or 3D input (got 4D input)"),
            std::string::npos);
  EXPECT_NE(error_of([] {
              fusednorm::BatchNorm2d(fusednorm::BatchNormOptions(4).activation("swishy"));
            }).find("unknown activation 'swishy'"),
            std::string::npos);
  EXPECT_NE(error_of([] {
              fusednorm::BatchNorm2d(fusednorm::BatchNormOptions(4).activation({"relu", {0.1}}));
            }).find("activation 'relu' takes at most 0 parameters"),
            std::string::npos);
  EXPECT_NE(error_of([&] {
              bn(torch::randn({2, 4, 3, 3}), torch::randn({2, 4, 3, 2}));
            }).find("residual"),
            std::string::npos);
}

}  // namespace
