// A small CNN built from fusednorm's LibTorch modules, trained for a few steps on
// synthetic data: each image holds a bright blob in one of four quadrants, the
// label says which. Prints the loss; exits non-zero if training did not lower it.
// Usage: train_cnn [device]   (default: cuda when available, else cpu)
#include <fusednorm/fusednorm.h>
#include <torch/torch.h>

#include <cstdio>
#include <cstdlib>

namespace {

// conv -> fused (batch norm + ReLU), a residual block whose second norm takes the
// skip connection as `residual`, then a linear classifier.
struct SmallCNNImpl : torch::nn::Module {
  SmallCNNImpl() {
    stem = register_module(
        "stem", torch::nn::Sequential(
                    torch::nn::Conv2d(torch::nn::Conv2dOptions(1, 16, 3).padding(1).bias(false)),
                    fusednorm::BatchNorm2d(fusednorm::BatchNormOptions(16).activation(fusednorm::Activation::relu())),
                    torch::nn::MaxPool2d(2)));
    conv1 = register_module("conv1", torch::nn::Conv2d(torch::nn::Conv2dOptions(16, 16, 3).padding(1).bias(false)));
    bn1 = register_module("bn1", fusednorm::BatchNorm2d(fusednorm::BatchNormOptions(16).activation("silu")));
    conv2 = register_module("conv2", torch::nn::Conv2d(torch::nn::Conv2dOptions(16, 16, 3).padding(1).bias(false)));
    bn2 = register_module(
        "bn2",
        fusednorm::BatchNorm2d(fusednorm::BatchNormOptions(16).activation(fusednorm::Activation::leaky_relu(0.1))));
    head = register_module("head", torch::nn::Linear(16, 4));
  }

  torch::Tensor forward(const torch::Tensor& x) {
    const torch::Tensor h = stem->forward(x);
    const torch::Tensor block = bn2(conv2(bn1(conv1(h))), /*residual=*/h);  // leaky_relu(bn2(...) + h)
    return head(block.mean(torch::IntArrayRef{2, 3}));
  }

  torch::nn::Sequential stem{nullptr};
  torch::nn::Conv2d conv1{nullptr}, conv2{nullptr};
  fusednorm::BatchNorm2d bn1{nullptr}, bn2{nullptr};
  torch::nn::Linear head{nullptr};
};
TORCH_MODULE(SmallCNN);

std::pair<torch::Tensor, torch::Tensor> synthetic_batch(int64_t batch_size, const torch::Device& device) {
  const torch::Tensor labels = torch::randint(4, {batch_size}, torch::kLong);
  torch::Tensor images = torch::randn({batch_size, 1, 16, 16}) * 0.3;
  for (int64_t i = 0; i < batch_size; ++i) {
    const int64_t quadrant = labels[i].item<int64_t>();
    const int64_t row = (quadrant / 2) * 8, col = (quadrant % 2) * 8;
    images[i].slice(1, row + 2, row + 6).slice(2, col + 2, col + 6) += 1.5;
  }
  return {images.to(device), labels.to(device)};
}

}  // namespace

int main(int argc, char** argv) {
  torch::manual_seed(0);
  const torch::Device device = argc > 1                      ? torch::Device(argv[1])
                               : torch::cuda::is_available() ? torch::Device(torch::kCUDA)
                                                             : torch::Device(torch::kCPU);
  SmallCNN model;
  model->to(device);
  std::cout << model << "\n";
  torch::optim::SGD optimizer(model->parameters(), torch::optim::SGDOptions(0.1).momentum(0.9));

  constexpr int kSteps = 30;
  double first_loss = 0.0, last_loss = 0.0;
  for (int step = 1; step <= kSteps; ++step) {
    auto [images, labels] = synthetic_batch(32, device);
    optimizer.zero_grad();
    const torch::Tensor loss = torch::nn::functional::cross_entropy(model->forward(images), labels);
    loss.backward();
    optimizer.step();
    last_loss = loss.item<double>();
    if (step == 1) {
      first_loss = last_loss;
    }
    if (step == 1 || step % 5 == 0) {
      std::printf("step %2d  loss %.4f\n", step, last_loss);
    }
  }

  model->eval();
  torch::NoGradGuard no_grad;
  auto [images, labels] = synthetic_batch(256, device);
  const double accuracy = model->forward(images).argmax(1).eq(labels).to(torch::kDouble).mean().item<double>();
  std::printf("eval accuracy on fresh data: %.3f (device: %s)\n", accuracy, device.str().c_str());
  if (!(last_loss < first_loss)) {
    std::fprintf(stderr, "training did not lower the loss (%.4f -> %.4f)\n", first_loss, last_loss);
    return EXIT_FAILURE;
  }
  return EXIT_SUCCESS;
}
