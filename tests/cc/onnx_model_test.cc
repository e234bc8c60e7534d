// OnnxModel on the fixture: symbolic signature, runs, every error path, concurrency.
#include "cc/onnx_model.h"

#include <algorithm>
#include <thread>

#include "cc/file_util.h"
#include "cc/loader.h"
#include "gtest/gtest.h"
#include "tests/cc/test_util.h"

namespace servekit {
namespace {

using testing::Floats;
using testing::Int64s;

// features [[1,0,0],[0,1,2]] through the fixture's weights and bias.
const std::vector<float> kFeatures = {1, 0, 0, 0, 1, 2};
const std::vector<float> kLogits = {0.6f, -1.2f, -1.15f, 2.05f};

class OnnxModelTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto loaded = OnnxModel::Load(testing::FixturePath("model.onnx"), LoadOptions{});
    ASSERT_TRUE(loaded.ok()) << loaded.status().ToString();
    model_ = std::move(loaded).value().release();
  }
  static void TearDownTestSuite() { delete model_; }
  static OnnxModel* model_;
};
OnnxModel* OnnxModelTest::model_ = nullptr;

TEST_F(OnnxModelTest, SignatureHasSymbolicBatch) {
  ASSERT_EQ(model_->signatures().size(), 1u);
  const Signature& s = model_->signatures()[0];
  EXPECT_EQ(s.name, "serving_default");
  ASSERT_EQ(s.inputs.size(), 1u);
  EXPECT_EQ(SpecToString(s.inputs[0]), "float32[batch,3]");
  EXPECT_EQ(SpecToString(s.outputs[0]), "float32[batch,2]");
}

TEST_F(OnnxModelTest, Runs) {
  auto out = model_->Run("serving_default", {{"features", Floats({2, 3}, {1, 0, 0, 0, 1, 2})}});
  ASSERT_TRUE(out.ok()) << out.status().ToString();
  const Tensor& logits = (*out)[0].tensor;
  EXPECT_EQ(logits.Describe(), "float32[2,2]");
  EXPECT_FLOAT_EQ(logits.data_as<float>()[0], 0.6f);
  EXPECT_FLOAT_EQ(logits.data_as<float>()[3], 2.05f);
  // Predictable outputs are written by ONNX Runtime into buffers servekit owns.
  EXPECT_NE(logits.mutable_data(), nullptr);
}

TEST_F(OnnxModelTest, OutputsOutliveLaterRuns) {
  auto first = model_->Run("serving_default", {{"features", Floats({1, 3}, {1, 0, 0})}});
  auto second = model_->Run("serving_default", {{"features", Floats({1, 3}, {0, 0, 0})}});
  ASSERT_TRUE(first.ok() && second.ok());
  EXPECT_FLOAT_EQ((*first)[0].tensor.data_as<float>()[0], 0.6f);
  EXPECT_FLOAT_EQ((*second)[0].tensor.data_as<float>()[0], 0.1f);
}

TEST_F(OnnxModelTest, ReusedInputBufferSeesNewContentsAndShapes) {
  // The same caller buffer fed again (cached input view) must show its current bytes.
  std::vector<float> buffer = {1, 0, 0, 0, 0, 0};
  auto run = [&](Shape shape) {
    const size_t bytes = static_cast<size_t>(shape[0]) * 3 * sizeof(float);
    auto view = Tensor::View(DType::kFloat32, shape, buffer.data(), bytes, nullptr);
    EXPECT_TRUE(view.ok());
    auto out = model_->Run("serving_default", {{"features", *view}});
    EXPECT_TRUE(out.ok()) << out.status().ToString();
    return out.ok() ? (*out)[0].tensor.Copy().value() : Tensor();
  };
  EXPECT_FLOAT_EQ(run({1, 3}).data_as<float>()[0], 0.6f);
  buffer[0] = 0;
  EXPECT_FLOAT_EQ(run({1, 3}).data_as<float>()[0], 0.1f);
  buffer[3] = 1;
  const Tensor two = run({2, 3});
  EXPECT_EQ(two.Describe(), "float32[2,2]");
  EXPECT_FLOAT_EQ(two.data_as<float>()[2], 0.6f);
}

TEST_F(OnnxModelTest, ServingLoopSeesNewValuesAndReusesOutputs) {
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

TEST(OnnxModelOutputsTest, ServingLoopThroughAMispredictionAndStrings) {
  // RunInto with outputs handed back, on the model whose 'doubled' defies its declared
  // shape (the first run is retried with ONNX Runtime's own outputs) and has strings.
  auto loaded = OnnxModel::Load(testing::FixturePath("extra.onnx"), LoadOptions{});
  ASSERT_TRUE(loaded.ok()) << loaded.status().ToString();
  std::vector<NamedTensor> outputs;
  Tensor x = Floats({2, 3}, {1, 2, 3, 4, 5, 6});
  const std::vector<NamedTensor> inputs = {{"x", x}, {"words", testing::Strings({2}, {"a", "b"})}};
  for (int round = 0; round < 3; ++round) {
    static_cast<float*>(x.mutable_data())[0] = static_cast<float>(round);
    ASSERT_TRUE((*loaded)->RunInto("serving_default", inputs, &outputs).ok()) << round;
    ASSERT_EQ(outputs.size(), 3u);
    const Tensor* doubled = FindTensor(outputs, "doubled");
    const Tensor* same = FindTensor(outputs, "same");
    ASSERT_TRUE(doubled && same);
    EXPECT_EQ(doubled->Describe(), "float32[4,3]");
    EXPECT_EQ(same->data_as<float>()[0], static_cast<float>(round));
    EXPECT_EQ(FindTensor(outputs, "words_out")->strings(), (std::vector<std::string>{"a", "b"}));
  }
}

TEST_F(OnnxModelTest, FeedErrors) {
  auto out = model_->Run("serving_default", {{"features", Int64s({2, 3}, {1, 2, 3, 4, 5, 6})}});
  ASSERT_FALSE(out.ok());
  EXPECT_EQ(out.status().message(),
            "endpoint 'serving_default' input 'features': expected float32[batch,3], got int64[2,3]");
  out = model_->Run("serving_default", {{"features", Floats({2, 3, 1}, {1, 2, 3, 4, 5, 6})}});
  EXPECT_EQ(out.status().message(),
            "endpoint 'serving_default' input 'features': expected float32[batch,3], got float32[2,3,1]");
  out = model_->Run("serving_default", {{"x", Floats({1, 3}, {1, 2, 3})}});
  EXPECT_EQ(out.status().message(), "endpoint 'serving_default' has no input 'x'; its inputs are: 'features'");
  out = model_->Run("predict", {});
  EXPECT_EQ(out.status().code(), StatusCode::kNotFound);
}

TEST_F(OnnxModelTest, ConcurrentRunsAreCorrect) {
  constexpr int kThreads = 8;
  std::vector<int> failures(kThreads, 0);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([t, &failures] {
      for (int i = 0; i < 200; ++i) {
        const float v = static_cast<float>(t * 1000 + i);
        auto out = model_->Run("serving_default", {{"features", Floats({1, 3}, {0, v, 0})}});
        // logits = [0.25 v + 0.1, 2 v - 0.2]
        if (!out.ok() || std::abs((*out)[0].tensor.data_as<float>()[0] - (0.25f * v + 0.1f)) > 1e-2f ||
            std::abs((*out)[0].tensor.data_as<float>()[1] - (2 * v - 0.2f)) > 1e-2f) {
          ++failures[t];
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  for (int t = 0; t < kThreads; ++t) EXPECT_EQ(failures[t], 0) << "thread " << t;
}

TEST(OnnxModelOutputsTest, WrongShapePredictionFallsBackAndPassThroughIsCopied) {
  auto loaded = OnnxModel::Load(testing::FixturePath("extra.onnx"), LoadOptions{});
  ASSERT_TRUE(loaded.ok()) << loaded.status().ToString();
  const OnnxModel& model = **loaded;
  EXPECT_EQ(SpecToString(model.signatures()[0].outputs[1]), "float32[?,3]");
  std::vector<float> x = {1, 2, 3, 4, 5, 6};
  for (int round = 0; round < 3; ++round) {  // the first run mispredicts 'doubled'; later ones do not try
    auto view = Tensor::View(DType::kFloat32, {2, 3}, x.data(), x.size() * sizeof(float), nullptr);
    auto out = model.Run("serving_default", {{"x", *view}, {"words", testing::Strings({2}, {"a", std::string("\0b", 2)})}});
    ASSERT_TRUE(out.ok()) << out.status().ToString();
    const Tensor* doubled = FindTensor(*out, "doubled");
    const Tensor* same = FindTensor(*out, "same");
    const Tensor* words = FindTensor(*out, "words_out");
    ASSERT_TRUE(doubled && same && words);
    EXPECT_EQ(doubled->Describe(), "float32[4,3]");
    EXPECT_EQ(doubled->data_as<float>()[11], 6.0f);
    EXPECT_EQ(same->Describe(), "float32[2,3]");
    EXPECT_NE(same->data(), x.data()) << "an output must never be the caller's buffer";
    x[0] = 100;  // the caller reuses its buffer ...
    EXPECT_EQ(same->data_as<float>()[0], 1.0f);  // ... without changing earlier outputs
    x[0] = 1;
    EXPECT_EQ(words->strings(), (std::vector<std::string>{"a", std::string("\0b", 2)}));
  }
}

// ---- Loading errors ------------------------------------------------------------------

Status LoadError(const std::string& path, LoadOptions options = {}) {
  auto m = OnnxModel::Load(path, options);
  return m.ok() ? Status::Ok() : m.status();
}

std::string FixtureBytes() {
  auto bytes = ReadFile(testing::FixturePath("model.onnx"));
  EXPECT_TRUE(bytes.ok());
  return bytes.ok() ? *bytes : std::string();
}

TEST(OnnxModelLoadTest, MissingFile) {
  Status s = LoadError("/nonexistent/model.onnx");
  EXPECT_EQ(s.code(), StatusCode::kNotFound);
  EXPECT_EQ(s.message(), "no ONNX model at /nonexistent/model.onnx: no such file");
}

TEST(OnnxModelLoadTest, DirectoryWithoutModelOnnx) {
  const std::string dir = testing::ScratchDir("no_model_onnx");
  Status s = LoadError(dir);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("is a directory, not an ONNX file"), std::string::npos);
}

// An export directory of an ONNX model with external data holds model.onnx: it loads.
TEST(OnnxModelLoadTest, DirectoryWithModelOnnxLoadsIt) {
  auto m = OnnxModel::Load(testing::FixtureDir(), {});
  ASSERT_TRUE(m.ok()) << m.status().message();
  EXPECT_EQ((*m)->path(), testing::FixturePath("model.onnx"));
}

TEST(OnnxModelLoadTest, EmptyFile) {
  const std::string path = testing::ScratchDir("empty") + "/model.onnx";
  ASSERT_TRUE(WriteFile(path, "").ok());
  Status s = LoadError(path);
  EXPECT_EQ(s.code(), StatusCode::kDataLoss);
  EXPECT_EQ(s.message(), path + " is empty, not an ONNX model");
}

TEST(OnnxModelLoadTest, NotAProtocolBuffer) {
  const std::string path = testing::ScratchDir("text") + "/model.onnx";
  ASSERT_TRUE(WriteFile(path, "this is not a model\n").ok());
  Status s = LoadError(path);
  EXPECT_EQ(s.code(), StatusCode::kDataLoss);
  EXPECT_NE(s.message().find("is not an ONNX model: malformed protocol buffer"), std::string::npos) << s.message();
}

TEST(OnnxModelLoadTest, Truncated) {
  const std::string bytes = FixtureBytes();
  const std::string path = testing::ScratchDir("truncated") + "/model.onnx";
  ASSERT_TRUE(WriteFile(path, bytes.substr(0, bytes.size() - 10)).ok());
  Status s = LoadError(path);
  EXPECT_EQ(s.code(), StatusCode::kDataLoss);
  EXPECT_NE(s.message().find("is not an ONNX model"), std::string::npos) << s.message();
}

TEST(OnnxModelLoadTest, CorruptedGraphIsOrtsErrorAsStatus) {
  // Rename the MatMul op to one that does not exist: well-formed bytes, invalid model.
  std::string bytes = FixtureBytes();
  const auto pos = bytes.find("MatMul");
  ASSERT_NE(pos, std::string::npos);
  bytes.replace(pos, 6, "NoSuch");
  const std::string path = testing::ScratchDir("corrupted") + "/model.onnx";
  ASSERT_TRUE(WriteFile(path, bytes).ok());
  Status s = LoadError(path);
  EXPECT_EQ(s.code(), StatusCode::kInternal);
  EXPECT_NE(s.message().find("ONNX Runtime could not load"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("NoSuch"), std::string::npos) << s.message();
}

TEST(OnnxModelLoadTest, FromBytes) {
  auto m = OnnxModel::LoadFromBytes(FixtureBytes(), {}, "bytes");
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_EQ((*m)->path(), "bytes");
  EXPECT_FALSE(OnnxModel::LoadFromBytes("", {}, "bytes").ok());
}

// With a CUDA-enabled ONNX Runtime the model must run on the CUDA execution
// provider and compute the right values; otherwise the request fails clearly.
TEST(OnnxModelLoadTest, GpuRunsWhereOrtHasCudaElseAClearError) {
  LoadOptions options;
  options.device = Device::kGpu;
  auto m = OnnxModel::Load(testing::FixturePath("model.onnx"), options);
  if (m.ok()) {
    auto out = (*m)->Run("serving_default", {{"features", Floats({1, 3}, {1, 0, 0})}});
    ASSERT_TRUE(out.ok()) << out.status().ToString();
    EXPECT_FLOAT_EQ((*out)[0].tensor.data_as<float>()[0], 0.6f);  // x @ W + b of the fixture
    EXPECT_FLOAT_EQ((*out)[0].tensor.data_as<float>()[1], -1.2f);
    return;
  }
  EXPECT_EQ(m.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(m.status().message().find("no CUDAExecutionProvider"), std::string::npos) << m.status().message();
}

TEST(OnnxModelLoadTest, OptionsAndLoadModel) {
  LoadOptions options;
  options.intra_op_threads = 1;
  options.inter_op_threads = 1;
  options.onnx_optimization = OnnxOptimization::kDisabled;
  auto m = LoadModel(testing::FixturePath("model.onnx"), options);
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_EQ((*m)->format(), ModelFormat::kOnnx);
  EXPECT_TRUE((*m)->Run("serving_default", {{"features", Floats({1, 3}, {1, 2, 3})}}).ok());
}

TEST(OnnxModelLoadTest, CallerThreadInterOpRunsAndBadThreadCountsAreRejected) {
  LoadOptions options;
  options.inter_op_threads = LoadOptions::kCallerThread;
  auto m = OnnxModel::Load(testing::FixturePath("model.onnx"), options);
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_TRUE((*m)->Run("serving_default", {{"features", Floats({2, 3}, {1, 2, 3, 4, 5, 6})}}).ok());
  options.inter_op_threads = -2;
  auto bad = OnnxModel::Load(testing::FixturePath("model.onnx"), options);
  EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("inter-op threads must be >= -1"), std::string::npos)
      << bad.status().message();
}

}  // namespace
}  // namespace servekit
