// TorchAotiModel on tests/cc/aoti_fixture/model_aoti.pt2 (make_aoti_fixture.py):
// the signature from the manifest beside it, runs at several batch sizes, outputs
// checked against the signature, error paths (missing, empty, truncated or foreign
// files, no manifest, bad feeds), validation.
#include "cc/torch_aoti_model.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <thread>

#include "cc/file_util.h"
#include "cc/loader.h"
#include "cc/verify.h"
#include "gtest/gtest.h"
#include "tests/cc/test_util.h"

namespace servekit {
namespace {

using testing::Floats;
using testing::Int64s;

std::string AotiDir() { return testing::FixtureDir() + "/../aoti_fixture"; }
std::string Package() { return AotiDir() + "/model_aoti.pt2"; }

const std::vector<float> kFeatures = {1, 0, 0, 0, 1, 2};
const std::vector<float> kLogits = {0.6f, -1.2f, -1.15f, 2.05f};

// A scratch export: the package (its first `keep` bytes) and the fixture's manifest.
std::string ScratchExport(const std::string& name, size_t keep = std::string::npos) {
  const std::string dir = testing::ScratchDir(name);
  auto bytes = ReadFile(Package());
  EXPECT_TRUE(bytes.ok());
  EXPECT_TRUE(WriteFile(dir + "/model_aoti.pt2", bytes->substr(0, std::min(keep, bytes->size()))).ok());
  std::filesystem::copy_file(AotiDir() + "/manifest.json", dir + "/manifest.json");
  return dir + "/model_aoti.pt2";
}

class TorchAotiModelTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto loaded = LoadModel(Package());
    ASSERT_TRUE(loaded.ok()) << loaded.status().ToString();
    model_ = loaded->release();
  }
  static void TearDownTestSuite() { delete model_; }
  static Model* model_;
};
Model* TorchAotiModelTest::model_ = nullptr;

TEST_F(TorchAotiModelTest, SignatureFromTheManifestBeside) {
  EXPECT_EQ(model_->format(), ModelFormat::kTorchAoti);
  EXPECT_EQ(DetectFormat(Package()).value(), ModelFormat::kTorchAoti);
  ASSERT_EQ(model_->signatures().size(), 1u);
  const Signature& s = model_->signatures()[0];
  EXPECT_EQ(s.name, "serving_default");
  EXPECT_EQ(SpecToString(s.inputs[0]), "float32[batch,3]");
  EXPECT_EQ(SpecToString(s.outputs[0]), "float32[batch,2]");
}

TEST_F(TorchAotiModelTest, RunsAtSeveralBatchSizes) {
  for (int64_t batch : {2, 1, 6}) {
    std::vector<float> x;
    for (int64_t r = 0; r < batch; ++r) {
      x.insert(x.end(), kFeatures.begin() + 3 * (r % 2), kFeatures.begin() + 3 * (r % 2) + 3);
    }
    const Tensor features = Floats({batch, 3}, x);
    auto out = model_->Run("serving_default", {{"features", features}});
    ASSERT_TRUE(out.ok()) << out.status().ToString();
    const Tensor& logits = (*out)[0].tensor;
    EXPECT_EQ(logits.Describe(), "float32[" + std::to_string(batch) + ",2]");
    for (int64_t r = 0; r < batch; ++r) {
      for (int k = 0; k < 2; ++k) EXPECT_NEAR(logits.data_as<float>()[2 * r + k], kLogits[2 * (r % 2) + k], 1e-6);
    }
    EXPECT_FALSE(AliasesInput(logits.data(), {&features}));
  }
}

TEST_F(TorchAotiModelTest, FeedErrorsAndConcurrency) {
  auto wrong = model_->Run("serving_default", {{"features", Int64s({2, 3}, {1, 2, 3, 4, 5, 6})}});
  EXPECT_EQ(wrong.status().message(),
            "endpoint 'serving_default' input 'features': expected float32[batch,3], got int64[2,3]");
  std::vector<std::thread> threads;
  std::vector<int> bad(3, 0);
  for (int t = 0; t < 3; ++t) {
    threads.emplace_back([t, &bad] {
      for (int i = 0; i < 20; ++i) {
        auto out = model_->Run("serving_default", {{"features", Floats({1, 3}, {float(t), 0, 0})}});
        if (!out.ok() || std::fabs((*out)[0].tensor.data_as<float>()[0] - (0.5f * t + 0.1f)) > 1e-6) ++bad[t];
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(bad, std::vector<int>(3, 0));
}

TEST_F(TorchAotiModelTest, ServingLoopSeesNewValuesAndReusesOutputs) {
  // A serving loop: one input buffer, new values written into it between calls, and
  // each call's outputs handed back to the next (Model::RunInto).
  Tensor features = Floats({2, 3}, kFeatures);
  const std::vector<NamedTensor> inputs = {{"features", features}};
  std::vector<NamedTensor> outputs;
  ASSERT_TRUE(model_->RunInto("serving_default", inputs, &outputs).ok());
  ASSERT_EQ(outputs.size(), 1u);
  EXPECT_EQ(outputs[0].name, "logits");
  for (size_t i = 0; i < kLogits.size(); ++i) EXPECT_NEAR(outputs[0].tensor.data_as<float>()[i], kLogits[i], 1e-6);
  const void* first = outputs[0].tensor.data();
  // The rows swapped in place: same address and shape, new values, which the
  // runtime must read (nothing bound to the buffer may hold a stale copy).
  float* x = static_cast<float*>(features.mutable_data());
  const std::vector<float> swapped = {0, 1, 2, 1, 0, 0};
  std::copy(swapped.begin(), swapped.end(), x);
  ASSERT_TRUE(model_->RunInto("serving_default", inputs, &outputs).ok());
  const std::vector<float> expected = {kLogits[2], kLogits[3], kLogits[0], kLogits[1]};
  for (size_t i = 0; i < expected.size(); ++i) EXPECT_NEAR(outputs[0].tensor.data_as<float>()[i], expected[i], 1e-6);
  EXPECT_EQ(outputs[0].tensor.data(), first);  // written in place
  // An output the caller keeps is left alone: the next call makes a new one.
  const Tensor kept = outputs[0].tensor;
  std::copy(kFeatures.begin(), kFeatures.end(), x);
  ASSERT_TRUE(model_->RunInto("serving_default", inputs, &outputs).ok());
  EXPECT_NE(outputs[0].tensor.data(), kept.data());
  EXPECT_NEAR(kept.data_as<float>()[0], expected[0], 1e-6);
  EXPECT_NEAR(outputs[0].tensor.data_as<float>()[0], kLogits[0], 1e-6);
  // The same buffer seen as one row: a new shape on the same address.
  auto row = Tensor::View(DType::kFloat32, {1, 3}, features.data(), 3 * sizeof(float), features.owner());
  ASSERT_TRUE(row.ok());
  ASSERT_TRUE(model_->RunInto("serving_default", {{"features", *row}}, &outputs).ok());
  EXPECT_EQ(outputs[0].tensor.Describe(), "float32[1,2]");
  EXPECT_NEAR(outputs[0].tensor.data_as<float>()[1], kLogits[1], 1e-6);
  // A failed call leaves no outputs behind.
  EXPECT_FALSE(model_->RunInto("serving_default", {}, &outputs).ok());
  EXPECT_TRUE(outputs.empty());
}

TEST_F(TorchAotiModelTest, BareLoopRuns) {
  const std::vector<NamedTensor> inputs = {{"features", Floats({2, 3}, kFeatures)}};
  auto loop = model_->MakeBareLoop(inputs);
  ASSERT_TRUE(loop.ok()) << loop.status().ToString();
  for (int i = 0; i < 3; ++i) EXPECT_TRUE((*loop)->RunOnce().ok());
  // The runner still runs at other batch sizes while a bare loop exists.
  EXPECT_TRUE(model_->Run("serving_default", {{"features", Floats({1, 3}, {1, 0, 0})}}).ok());
  EXPECT_TRUE((*loop)->RunOnce().ok());
  auto bad = model_->MakeBareLoop({{"features", Int64s({1, 3}, {1, 2, 3})}});
  EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument);
}

TEST(TorchAotiModelLoadTest, ErrorPaths) {
  auto missing = LoadModel("/nonexistent/model_aoti.pt2");
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
  // No manifest beside the package: no signature.
  const std::string lonely = testing::ScratchDir("lonely") + "/model_aoti.pt2";
  std::filesystem::copy_file(Package(), lonely);
  auto no_manifest = LoadModel(lonely);
  EXPECT_EQ(no_manifest.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(no_manifest.status().message().find("an AOTInductor package carries no signature"), std::string::npos);
  const std::string empty = ScratchExport("empty", 0);
  EXPECT_EQ(LoadModel(empty).status().message(), empty + " is empty, not an AOTInductor package");
  const std::string foreign = testing::ScratchDir("foreign") + "/model_aoti.pt2";
  std::filesystem::copy_file(testing::FixturePath("model.onnx"), foreign);
  const Signature signature = (*LoadModel(Package()))->signatures()[0];
  EXPECT_EQ(TorchAotiModel::Load(foreign, LoadOptions{}, signature).status().message(),
            foreign + " is not an AOTInductor package: not a zip archive");
  const std::string truncated = ScratchExport("truncated", 4096);
  auto cut = LoadModel(truncated);
  ASSERT_FALSE(cut.ok());
  EXPECT_EQ(cut.status().code(), StatusCode::kDataLoss) << cut.status().ToString();
  EXPECT_NE(cut.status().message().find("libtorch could not load the AOTInductor package " + truncated),
            std::string::npos)
      << cut.status().message();
  // A signature that misdescribes the package: the output's dtype, named at run time.
  Signature int_output = signature;
  int_output.outputs[0].dtype = DType::kInt64;
  auto lying = TorchAotiModel::Load(Package(), LoadOptions{}, int_output);
  ASSERT_TRUE(lying.ok()) << lying.status().ToString();
  auto out = (*lying)->Run("serving_default", {{"features", Floats({1, 3}, {1, 0, 0})}});
  ASSERT_FALSE(out.ok());
  EXPECT_NE(out.status().message().find("output 'logits': the package returned Float, the signature says int64"),
            std::string::npos)
      << out.status().message();
}

TEST(TorchAotiModelLoadTest, ValidatePasses) {
  auto report = VerifyExport(AotiDir() + "/manifest.json");
  ASSERT_TRUE(report.ok()) << report.status().ToString();
  EXPECT_TRUE(report->passed()) << report->ToText();
  ASSERT_EQ(report->artifacts.size(), 1u);
  EXPECT_EQ(report->artifacts[0].parity.size(), 2u);
}

}  // namespace
}  // namespace servekit
