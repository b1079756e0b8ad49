// fusednorm's LibTorch modules against torch::nn's: the same module followed by the
// torch::nn activation (residual added before it), forward, running statistics and
// every gradient, in training and eval mode; state moving between the two by name.
#include <fusednorm/fusednorm.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <functional>
#include <sstream>
#include <string>
#include <vector>

namespace {

namespace nn = torch::nn;

struct ActivationCase {
  std::string label;
  fusednorm::Activation activation;
  std::function<nn::AnyModule()> reference;
};

std::vector<ActivationCase> activation_cases() {
  using fusednorm::Activation;
  return {
      {"identity", Activation(), [] { return nn::AnyModule(nn::Identity()); }},
      {"relu", Activation::relu(), [] { return nn::AnyModule(nn::ReLU()); }},
      {"leaky_relu", Activation::leaky_relu(0.2),
       [] { return nn::AnyModule(nn::LeakyReLU(nn::LeakyReLUOptions().negative_slope(0.2))); }},
      {"prelu", Activation::prelu(), [] { return nn::AnyModule(nn::PReLU(nn::PReLUOptions().num_parameters(5))); }},
      {"prelu_shared", Activation::prelu(1, 0.1), [] { return nn::AnyModule(nn::PReLU()); }},
      {"rrelu_eval", Activation::rrelu(0.1, 0.3),
       [] { return nn::AnyModule(nn::RReLU(nn::RReLUOptions().lower(0.1).upper(0.3))); }},
      {"elu", Activation::elu(0.7), [] { return nn::AnyModule(nn::ELU(nn::ELUOptions().alpha(0.7))); }},
      {"selu", Activation::selu(), [] { return nn::AnyModule(nn::SELU()); }},
      // alpha 2: 1/alpha is exact in float32, which torch's CELU backward rounds it to.
      {"celu", Activation::celu(2.0), [] { return nn::AnyModule(nn::CELU(nn::CELUOptions().alpha(2.0))); }},
      {"gelu", Activation::gelu(), [] { return nn::AnyModule(nn::GELU()); }},
      {"gelu_tanh", Activation::gelu("tanh"),
       [] { return nn::AnyModule(nn::GELU(nn::GELUOptions().approximate("tanh"))); }},
      {"silu", "silu", [] { return nn::AnyModule(nn::SiLU()); }},
      {"sigmoid", Activation::sigmoid(), [] { return nn::AnyModule(nn::Sigmoid()); }},
      {"tanh", Activation::tanh(), [] { return nn::AnyModule(nn::Tanh()); }},
  };
}

void expect_close(const torch::Tensor& actual, const torch::Tensor& expected, const std::string& what) {
  ASSERT_EQ(actual.defined(), expected.defined()) << what;
  if (!expected.defined()) {
    return;
  }
  EXPECT_TRUE(torch::allclose(actual, expected, 1e-10, 1e-10))
      << what << ": max difference " << (actual - expected).abs().max().item<double>();
}

// Copies every parameter and buffer of `from` into the same-named one of `to`.
void copy_state(nn::Module& from, nn::Module& to) {
  torch::NoGradGuard no_grad;
  auto params = to.named_parameters();
  for (const auto& item : from.named_parameters()) {
    ASSERT_TRUE(params.contains(item.key())) << item.key();
    params[item.key()].copy_(item.value());
  }
  auto buffers = to.named_buffers();
  for (const auto& item : from.named_buffers()) {
    ASSERT_TRUE(buffers.contains(item.key())) << item.key();
    buffers[item.key()].copy_(item.value());
  }
}

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
void compare_with_torch(const ActivationCase& act, const Setup& setup) {
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
  nn::AnyModule activation = act.reference();
  if (auto prelu = activation.ptr()->as<nn::PReLUImpl>()) {
    torch::NoGradGuard no_grad;
    prelu->weight.uniform_(0.05, 0.5);
  }
  {
    torch::NoGradGuard no_grad;
    for (auto& p : reference->parameters()) {
      p.uniform_(0.5, 1.5);
    }
    if (setup.track_running_stats) {
      reference->running_mean.normal_(0, 0.3);
      reference->running_var.uniform_(0.5, 2.0);
    }
  }
  reference->to(torch::kFloat64);
  activation.ptr()->to(torch::kFloat64);
  fused->to(torch::kFloat64);
  copy_state(*reference, *fused);
  if (auto prelu = activation.ptr()->as<nn::PReLUImpl>()) {
    torch::NoGradGuard no_grad;
    fused->named_parameters()["activation.weight"].copy_(prelu->weight);
  }
  reference->train(setup.training);
  fused->train(setup.training);
  activation.ptr()->eval();  // RReLU: its mean slope (training mode is random, tested below)

  for (int step = 0; step < 2; ++step) {
    const auto options = torch::TensorOptions().dtype(torch::kFloat64);
    torch::Tensor x = torch::randn(setup.shape, options) * 2 + 0.5;
    if (setup.channels_last) {
      x = x.contiguous(setup.shape.size() == 4 ? torch::MemoryFormat::ChannelsLast
                                               : torch::MemoryFormat::ChannelsLast3d);
    }
    x.requires_grad_();
    torch::Tensor residual = torch::randn(setup.shape, options).requires_grad_();
    const torch::Tensor out = setup.with_residual ? fused(x, residual) : fused(x);
    torch::Tensor z = reference(x);
    if (setup.with_residual) {
      z = z + residual;
    }
    const torch::Tensor expected = activation.forward(z);
    expect_close(out, expected, act.label + " output");
    expect_close(fused->running_mean, reference->running_mean, "running_mean");
    expect_close(fused->running_var, reference->running_var, "running_var");
    if (setup.track_running_stats) {
      EXPECT_TRUE(torch::equal(fused->num_batches_tracked, reference->num_batches_tracked));
    }
    if (setup.channels_last) {
      EXPECT_TRUE(out.is_contiguous(x.suggest_memory_format()));
    }

    std::vector<torch::Tensor> inputs{x}, ref_inputs{x};
    if (setup.with_residual) {
      inputs.push_back(residual);
      ref_inputs.push_back(residual);
    }
    for (const auto& item : fused->named_parameters()) {
      inputs.push_back(item.value());
      ref_inputs.push_back(item.key() == "activation.weight" ? activation.ptr()->named_parameters()["weight"]
                                                             : reference->named_parameters()[item.key()]);
    }
    const torch::Tensor grad = torch::randn_like(out);
    const auto grads = torch::autograd::grad({out}, inputs, {grad});
    const auto ref_grads = torch::autograd::grad({expected}, ref_inputs, {grad}, /*retain_graph=*/std::nullopt,
                                                 /*create_graph=*/false, /*allow_unused=*/true);
    for (size_t i = 0; i < inputs.size(); ++i) {
      expect_close(grads[i], ref_grads[i], act.label + " gradient " + std::to_string(i));
    }
  }
}

class BatchNormModule : public ::testing::TestWithParam<int> {};

TEST_P(BatchNormModule, MatchesTorchNnPlusActivation) {
  const ActivationCase act = activation_cases().at(GetParam());
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
                         ::testing::Range(0, static_cast<int>(activation_cases().size())),
                         [](const ::testing::TestParamInfo<int>& info) {
                           return activation_cases()[info.param].label;
                         });

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

  std::vector<std::string> fused_names, torch_names;
  for (const auto& item : fused->named_parameters()) fused_names.push_back(item.key());
  for (const auto& item : fused->named_buffers()) fused_names.push_back(item.key());
  for (const auto& item : reference->named_parameters()) torch_names.push_back(item.key());
  for (const auto& item : reference->named_buffers()) torch_names.push_back(item.key());
  EXPECT_EQ(fused_names, torch_names);
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

std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const c10::Error& e) {
    return e.what();
  }
  return "";
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
