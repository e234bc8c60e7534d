// OpenVinoModel on the fixture's IR (formats/model.xml + model.bin): signature,
// runs, precision, error paths (missing, truncated or foreign files, bad feeds),
// concurrency, the bare benchmark loop.
#include "cc/openvino_model.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <thread>

#include "cc/file_util.h"
#include "cc/loader.h"
#include "gtest/gtest.h"
#include "openvino/openvino.hpp"
#include "openvino/opsets/opset13.hpp"
#include "tests/cc/test_util.h"

namespace servekit {
namespace {

using testing::Floats;
using testing::Int64s;

std::string Xml() { return testing::FixturePath("formats/model.xml"); }

// features [[1,0,0],[0,1,2]] through the fixture's weights and bias.
const std::vector<float> kFeatures = {1, 0, 0, 0, 1, 2};
const std::vector<float> kLogits = {0.6f, -1.2f, -1.15f, 2.05f};

// A scratch copy of the IR's two files, for tests that damage one.
std::string CopyIr(const std::string& name) {
  const std::string dir = testing::ScratchDir(name);
  std::filesystem::copy_file(Xml(), dir + "/model.xml");
  std::filesystem::copy_file(OpenVinoWeightsPath(Xml()), dir + "/model.bin");
  return dir + "/model.xml";
}

void Truncate(const std::string& path, size_t keep) {
  auto bytes = ReadFile(path);
  ASSERT_TRUE(bytes.ok());
  ASSERT_GT(bytes->size(), keep);
  ASSERT_TRUE(WriteFile(path, bytes->substr(0, keep)).ok());
}

class OpenVinoModelTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto loaded = OpenVinoModel::Load(Xml(), LoadOptions{});
    ASSERT_TRUE(loaded.ok()) << loaded.status().ToString();
    model_ = std::move(loaded).value().release();
  }
  static void TearDownTestSuite() { delete model_; }
  static OpenVinoModel* model_;
};
OpenVinoModel* OpenVinoModelTest::model_ = nullptr;

TEST_F(OpenVinoModelTest, SignatureFromTheTensorNames) {
  EXPECT_EQ(model_->format(), ModelFormat::kOpenVino);
  ASSERT_EQ(model_->signatures().size(), 1u);
  const Signature& s = model_->signatures()[0];
  EXPECT_EQ(s.name, "serving_default");
  ASSERT_EQ(s.inputs.size(), 1u);
  ASSERT_EQ(s.outputs.size(), 1u);
  EXPECT_EQ(s.inputs[0].name, "features");
  EXPECT_EQ(s.outputs[0].name, "logits");
  EXPECT_EQ(SpecToString(s.inputs[0]), "float32[?,3]");
  EXPECT_EQ(SpecToString(s.outputs[0]), "float32[?,2]");
  // The IR declares the precision it was verified at; servekit compiled it at f32.
  EXPECT_EQ(model_->declared_precision(), "f32");
  EXPECT_EQ(model_->precision(), InferencePrecision::kFloat32);
}

TEST_F(OpenVinoModelTest, Runs) {
  const Tensor features = Floats({2, 3}, kFeatures);
  auto out = model_->Run("serving_default", {{"features", features}});
  ASSERT_TRUE(out.ok()) << out.status().ToString();
  ASSERT_EQ(out->size(), 1u);
  EXPECT_EQ((*out)[0].name, "logits");
  const Tensor& logits = (*out)[0].tensor;
  EXPECT_EQ(logits.Describe(), "float32[2,2]");
  for (size_t i = 0; i < kLogits.size(); ++i) EXPECT_NEAR(logits.data_as<float>()[i], kLogits[i], 1e-6) << i;
  // Copied out of the request: servekit owns the output, which aliases no input.
  EXPECT_NE(logits.mutable_data(), nullptr);
  EXPECT_FALSE(AliasesInput(logits.data(), {&features}));
}

TEST_F(OpenVinoModelTest, DynamicBatchAndOutputsOutliveLaterRuns) {
  auto first = model_->Run("serving_default", {{"features", Floats({1, 3}, {1, 0, 0})}});
  auto second = model_->Run("serving_default", {{"features", Floats({3, 3}, {0, 0, 0, 0, 0, 0, 0, 0, 0})}});
  auto empty = model_->Run("serving_default", {{"features", Floats({0, 3}, {})}});
  ASSERT_TRUE(first.ok() && second.ok()) << first.status().ToString() << second.status().ToString();
  EXPECT_EQ((*first)[0].tensor.Describe(), "float32[1,2]");
  EXPECT_EQ((*second)[0].tensor.Describe(), "float32[3,2]");
  EXPECT_NEAR((*first)[0].tensor.data_as<float>()[0], 0.6f, 1e-6);
  EXPECT_NEAR((*second)[0].tensor.data_as<float>()[4], 0.1f, 1e-6);
  // A batch of zero rows is OpenVINO's to accept or refuse, never a crash.
  if (empty.ok()) {
    EXPECT_EQ((*empty)[0].tensor.Describe(), "float32[0,2]");
  }
}

TEST_F(OpenVinoModelTest, FeedErrorsBeforeOpenVinoSeesThem) {
  auto wrong_dtype = model_->Run("serving_default", {{"features", Int64s({2, 3}, {1, 2, 3, 4, 5, 6})}});
  ASSERT_FALSE(wrong_dtype.ok());
  EXPECT_EQ(wrong_dtype.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(wrong_dtype.status().message(),
            "endpoint 'serving_default' input 'features': expected float32[?,3], got int64[2,3]");
  auto wrong_shape = model_->Run("serving_default", {{"features", Floats({2, 4}, std::vector<float>(8, 1.0f))}});
  ASSERT_FALSE(wrong_shape.ok());
  EXPECT_EQ(wrong_shape.status().message(),
            "endpoint 'serving_default' input 'features': expected float32[?,3], got float32[2,4]");
  auto wrong_rank = model_->Run("serving_default", {{"features", Floats({3}, {1, 2, 3})}});
  ASSERT_FALSE(wrong_rank.ok());
  EXPECT_EQ(wrong_rank.status().code(), StatusCode::kInvalidArgument);
  auto unknown = model_->Run("serving_default", {{"x", Floats({1, 3}, {1, 2, 3})}});
  ASSERT_FALSE(unknown.ok());
  EXPECT_EQ(unknown.status().message(), "endpoint 'serving_default' has no input 'x'; its inputs are: 'features'");
  auto missing = model_->Run("serving_default", {});
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().message(), "endpoint 'serving_default' input 'features' (float32[?,3]) is not fed");
  auto endpoint = model_->Run("predict", {{"features", Floats({1, 3}, {1, 2, 3})}});
  EXPECT_EQ(endpoint.status().code(), StatusCode::kNotFound);
}

TEST_F(OpenVinoModelTest, ConcurrentRunsEachGetTheirOwnResult) {
  // Run() is const and thread-safe: each thread feeds a different row, many times.
  std::vector<std::thread> threads;
  std::vector<int> wrong(4, 0);
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([t, &wrong] {
      const float x = static_cast<float>(t);
      for (int i = 0; i < 50; ++i) {
        auto out = model_->Run("serving_default", {{"features", Floats({1, 3}, {x, 0, 0})}});
        // logits[0] = 0.5 * x + 0.1
        if (!out.ok() || std::fabs((*out)[0].tensor.data_as<float>()[0] - (0.5f * x + 0.1f)) > 1e-6) ++wrong[t];
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(wrong, std::vector<int>(4, 0));
}

TEST_F(OpenVinoModelTest, ServingLoopSeesNewValuesAndReusesOutputs) {
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

TEST_F(OpenVinoModelTest, BareLoopRuns) {
  const std::vector<NamedTensor> inputs = {{"features", Floats({2, 3}, kFeatures)}};
  auto loop = model_->MakeBareLoop(inputs);
  ASSERT_TRUE(loop.ok()) << loop.status().ToString();
  for (int i = 0; i < 3; ++i) EXPECT_TRUE((*loop)->RunOnce().ok());
  auto bad = model_->MakeBareLoop({{"features", Int64s({1, 3}, {1, 2, 3})}});
  EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument);
}

TEST(OpenVinoModelLoadTest, Bf16WhenAskedStaysWithinBf16Tolerance) {
  LoadOptions options;
  options.openvino_precision = InferencePrecision::kBFloat16;
  options.intra_op_threads = 1;
  auto model = OpenVinoModel::Load(Xml(), options);
  ASSERT_TRUE(model.ok()) << model.status().ToString();
  EXPECT_EQ((*model)->precision(), InferencePrecision::kBFloat16);
  auto out = (*model)->Run("serving_default", {{"features", Floats({2, 3}, kFeatures)}});
  ASSERT_TRUE(out.ok()) << out.status().ToString();
  for (size_t i = 0; i < kLogits.size(); ++i) {
    EXPECT_NEAR((*out)[0].tensor.data_as<float>()[i], kLogits[i], 1e-2 + 1e-2 * std::fabs(kLogits[i])) << i;
  }
}

TEST(OpenVinoModelLoadTest, LoadModelDetectsTheXml) {
  EXPECT_EQ(DetectFormat(Xml()).value(), ModelFormat::kOpenVino);
  auto model = LoadModel(Xml());
  ASSERT_TRUE(model.ok()) << model.status().ToString();
  EXPECT_EQ((*model)->format(), ModelFormat::kOpenVino);
  EXPECT_EQ(OpenVinoWeightsPath("/a/model.xml"), "/a/model.bin");
}

TEST(OpenVinoModelLoadTest, MissingFile) {
  auto model = OpenVinoModel::Load("/nonexistent/model.xml", LoadOptions{});
  ASSERT_FALSE(model.ok());
  EXPECT_EQ(model.status().code(), StatusCode::kNotFound);
  EXPECT_EQ(model.status().message(), "no OpenVINO IR at /nonexistent/model.xml: no such file");
  EXPECT_EQ(LoadModel("/nonexistent/model.xml").status().code(), StatusCode::kNotFound);
}

TEST(OpenVinoModelLoadTest, Directory) {
  auto model = OpenVinoModel::Load(testing::FixturePath("formats"), LoadOptions{});
  EXPECT_EQ(model.status().code(), StatusCode::kInvalidArgument);
}

TEST(OpenVinoModelLoadTest, MissingBin) {
  const std::string xml = CopyIr("missing_bin");
  std::filesystem::remove(OpenVinoWeightsPath(xml));
  auto model = OpenVinoModel::Load(xml, LoadOptions{});
  ASSERT_FALSE(model.ok());
  EXPECT_EQ(model.status().code(), StatusCode::kNotFound);
  EXPECT_EQ(model.status().message(),
            "OpenVINO IR " + xml + " has no weights file: " + OpenVinoWeightsPath(xml) + " is missing");
}

TEST(OpenVinoModelLoadTest, EmptyXml) {
  const std::string xml = CopyIr("empty_xml");
  Truncate(xml, 0);
  auto model = OpenVinoModel::Load(xml, LoadOptions{});
  EXPECT_EQ(model.status().code(), StatusCode::kDataLoss);
  EXPECT_EQ(model.status().message(), xml + " is empty, not an OpenVINO IR");
}

TEST(OpenVinoModelLoadTest, TruncatedXml) {
  const std::string xml = CopyIr("truncated_xml");
  Truncate(xml, 300);
  auto model = OpenVinoModel::Load(xml, LoadOptions{});
  ASSERT_FALSE(model.ok());
  EXPECT_EQ(model.status().code(), StatusCode::kDataLoss);
  EXPECT_NE(model.status().message().find("OpenVINO could not read the IR " + xml), std::string::npos)
      << model.status().message();
}

TEST(OpenVinoModelLoadTest, TruncatedBin) {
  const std::string xml = CopyIr("truncated_bin");
  Truncate(OpenVinoWeightsPath(xml), 8);  // the IR's constants need 32 bytes
  auto model = OpenVinoModel::Load(xml, LoadOptions{});
  ASSERT_FALSE(model.ok());
  EXPECT_EQ(model.status().code(), StatusCode::kDataLoss) << model.status().ToString();
  EXPECT_NE(model.status().message().find(xml), std::string::npos) << model.status().message();
}

TEST(OpenVinoModelLoadTest, NotAnIr) {
  // An ONNX file renamed .xml: servekit's error, naming the file.
  const std::string dir = testing::ScratchDir("not_ir");
  std::filesystem::copy_file(testing::FixturePath("model.onnx"), dir + "/model.xml");
  std::filesystem::copy_file(OpenVinoWeightsPath(Xml()), dir + "/model.bin");
  auto model = OpenVinoModel::Load(dir + "/model.xml", LoadOptions{});
  ASSERT_FALSE(model.ok());
  EXPECT_EQ(model.status().code(), StatusCode::kDataLoss);
  EXPECT_EQ(model.status().message(),
            dir + "/model.xml is not an OpenVINO IR: not an XML document with a <net> element");
}

// The graph OpenVINO's TensorFlow frontend makes of Keras's RMSNormalization, written as
// servekit writes IRs (the output's tensor named by the signature): the CPU plugin fuses
// it, and the compiled output also answers to the first multiply's name, which sorts
// first. The signature must keep the IR's name.
TEST(OpenVinoModelLoadTest, OutputsKeepTheIrsNamesThroughTheCpuPluginsFusions) {
  using ov::op::v0::Constant;
  auto x = std::make_shared<ov::op::v0::Parameter>(ov::element::f32, ov::PartialShape{-1, 5, 6});
  x->output(0).set_names({"x"});
  auto square = std::make_shared<ov::op::v1::Multiply>(x, x);
  auto mean = std::make_shared<ov::op::v1::ReduceMean>(
      square, Constant::create(ov::element::i32, ov::Shape{1}, {-1}), true);
  auto add = std::make_shared<ov::op::v1::Add>(mean, Constant::create(ov::element::f32, ov::Shape{1, 1, 1}, {1e-6f}));
  auto rsqrt = std::make_shared<ov::op::v1::Power>(add, Constant::create(ov::element::f32, ov::Shape{1, 1, 1}, {-0.5f}));
  auto normalized = std::make_shared<ov::op::v1::Multiply>(x, rsqrt);
  normalized->output(0).set_names({"functional_1/rms_normalization_1/Mul:0"});
  auto scaled = std::make_shared<ov::op::v1::Multiply>(
      normalized, Constant::create(ov::element::f32, ov::Shape{1, 1, 6}, std::vector<float>(6, 1.0f)));
  scaled->output(0).set_names({"rms_normalization"});
  auto result = std::make_shared<ov::op::v0::Result>(scaled);
  const std::string xml = testing::ScratchDir("openvino_rms") + "/model.xml";
  ov::save_model(std::make_shared<ov::Model>(ov::ResultVector{result}, ov::ParameterVector{x}), xml, false);

  auto loaded = OpenVinoModel::Load(xml, LoadOptions{});
  ASSERT_TRUE(loaded.ok()) << loaded.status().ToString();
  const Signature& s = (*loaded)->signatures()[0];
  ASSERT_EQ(s.outputs.size(), 1u);
  EXPECT_EQ(s.outputs[0].name, "rms_normalization");
  std::vector<float> values(30, 2.0f);
  auto out = (*loaded)->Run("serving_default", {{"x", Floats({1, 5, 6}, values)}});
  ASSERT_TRUE(out.ok()) << out.status().ToString();
  EXPECT_EQ((*out)[0].name, "rms_normalization");
  EXPECT_NEAR((*out)[0].tensor.data_as<float>()[0], 1.0f, 1e-5);
}

TEST(OpenVinoModelLoadTest, BadOptionsAndNoGpu) {
  LoadOptions bad;
  bad.intra_op_threads = -3;
  EXPECT_EQ(OpenVinoModel::Load(Xml(), bad).status().code(), StatusCode::kInvalidArgument);
  LoadOptions gpu;
  gpu.device = Device::kGpu;
  auto model = OpenVinoModel::Load(Xml(), gpu);
  // Where OpenVINO sees no GPU (this machine kind), a clear error; else it loads.
  if (!model.ok()) {
    EXPECT_EQ(model.status().code(), StatusCode::kFailedPrecondition);
    EXPECT_NE(model.status().message().find("OpenVINO sees no GPU"), std::string::npos) << model.status().message();
  }
}

}  // namespace
}  // namespace servekit
