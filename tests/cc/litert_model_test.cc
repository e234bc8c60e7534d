// LiteRtModel on the fixture's formats/model.tflite: signature, runs at several batch
// sizes (resizes), misaligned feeds, concurrency, error paths (missing, empty,
// truncated or foreign files, bad feeds); on dynamic.tflite, outputs whose dims other
// than the batch only LiteRT's run sizes; on unwritten.tflite, an output LiteRT's run
// keeps in its own memory.
#include "cc/litert_model.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <thread>

#include "cc/file_util.h"
#include "cc/loader.h"
#include "gtest/gtest.h"
#include "tests/cc/test_util.h"

namespace servekit {
namespace {

using testing::Floats;
using testing::Int64s;

std::string Tflite() { return testing::FixturePath("formats/model.tflite"); }

// features [[1,0,0],[0,1,2]] through the fixture's weights and bias.
const std::vector<float> kFeatures = {1, 0, 0, 0, 1, 2};
const std::vector<float> kLogits = {0.6f, -1.2f, -1.15f, 2.05f};

// A scratch copy of the model holding its first `keep` bytes (all when npos).
std::string Damaged(const std::string& name, size_t keep) {
  const std::string path = testing::ScratchDir(name) + "/model.tflite";
  auto bytes = ReadFile(Tflite());
  EXPECT_TRUE(bytes.ok());
  EXPECT_TRUE(WriteFile(path, bytes->substr(0, std::min(keep, bytes->size()))).ok());
  return path;
}

class LiteRtModelTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto loaded = LiteRtModel::Load(Tflite(), LoadOptions{});
    ASSERT_TRUE(loaded.ok()) << loaded.status().ToString();
    model_ = std::move(loaded).value().release();
  }
  static void TearDownTestSuite() { delete model_; }
  static LiteRtModel* model_;
};
LiteRtModel* LiteRtModelTest::model_ = nullptr;

TEST_F(LiteRtModelTest, SignatureFromServingDefault) {
  EXPECT_EQ(model_->format(), ModelFormat::kLiteRt);
  ASSERT_EQ(model_->signatures().size(), 1u);
  const Signature& s = model_->signatures()[0];
  EXPECT_EQ(s.name, "serving_default");
  ASSERT_EQ(s.inputs.size(), 1u);
  ASSERT_EQ(s.outputs.size(), 1u);
  EXPECT_EQ(s.inputs[0].name, "features");
  EXPECT_EQ(s.outputs[0].name, "logits");
  // -1 in the signature's shape: dynamic.
  EXPECT_EQ(SpecToString(s.inputs[0]), "float32[?,3]");
  EXPECT_EQ(SpecToString(s.outputs[0]), "float32[?,2]");
}

TEST_F(LiteRtModelTest, RunsAndResizesBothWays) {
  // Batch 2, then 1, then 5, then 2 again: each output sized from the signature.
  for (int64_t batch : {2, 1, 5, 2}) {
    std::vector<float> x;
    for (int64_t r = 0; r < batch; ++r) x.insert(x.end(), kFeatures.begin() + 3 * (r % 2), kFeatures.begin() + 3 * (r % 2) + 3);
    auto out = model_->Run("serving_default", {{"features", Floats({batch, 3}, x)}});
    ASSERT_TRUE(out.ok()) << out.status().ToString();
    const Tensor& logits = (*out)[0].tensor;
    EXPECT_EQ(logits.Describe(), "float32[" + std::to_string(batch) + ",2]");
    for (int64_t r = 0; r < batch; ++r) {
      for (int k = 0; k < 2; ++k) {
        EXPECT_NEAR(logits.data_as<float>()[2 * r + k], kLogits[2 * (r % 2) + k], 1e-6) << batch << " " << r;
      }
    }
  }
}

TEST_F(LiteRtModelTest, MisalignedFeedIsCopiedAndOutputsAreIndependent) {
  // A view 4 bytes into an aligned buffer: not 64-byte aligned.
  alignas(64) float storage[7] = {0, 1, 0, 0, 0, 1, 2};
  auto view = Tensor::View(DType::kFloat32, {2, 3}, storage + 1, 6 * sizeof(float), nullptr);
  ASSERT_TRUE(view.ok());
  auto out = model_->Run("serving_default", {{"features", *view}});
  ASSERT_TRUE(out.ok()) << out.status().ToString();
  for (size_t i = 0; i < kLogits.size(); ++i) EXPECT_NEAR((*out)[0].tensor.data_as<float>()[i], kLogits[i], 1e-6);
  auto later = model_->Run("serving_default", {{"features", Floats({2, 3}, {0, 0, 0, 0, 0, 0})}});
  ASSERT_TRUE(later.ok());
  // The first result is untouched by the second run, and aliases no input.
  EXPECT_NEAR((*out)[0].tensor.data_as<float>()[0], 0.6f, 1e-6);
  EXPECT_FALSE(AliasesInput((*out)[0].tensor.data(), {&*view}));
}

TEST_F(LiteRtModelTest, MisalignedServingLoopSeesNewValues) {
  // NumPy's arrays are rarely 64-byte aligned: a serving loop over one misaligned
  // buffer binds it once and copies its bytes in on every call, so values written
  // into it between calls must reach LiteRT.
  alignas(64) float storage[7] = {0, 1, 0, 0, 0, 1, 2};
  auto view = Tensor::View(DType::kFloat32, {2, 3}, storage + 1, 6 * sizeof(float), nullptr);
  ASSERT_TRUE(view.ok());
  const std::vector<NamedTensor> inputs = {{"features", *view}};
  std::vector<NamedTensor> outputs;
  ASSERT_TRUE(model_->RunInto("serving_default", inputs, &outputs).ok());
  for (size_t i = 0; i < kLogits.size(); ++i) EXPECT_NEAR(outputs[0].tensor.data_as<float>()[i], kLogits[i], 1e-6);
  const std::vector<float> swapped = {0, 1, 2, 1, 0, 0};
  std::copy(swapped.begin(), swapped.end(), storage + 1);
  ASSERT_TRUE(model_->RunInto("serving_default", inputs, &outputs).ok());
  const std::vector<float> expected = {kLogits[2], kLogits[3], kLogits[0], kLogits[1]};
  for (size_t i = 0; i < expected.size(); ++i) EXPECT_NEAR(outputs[0].tensor.data_as<float>()[i], expected[i], 1e-6);
}

TEST_F(LiteRtModelTest, FeedErrorsBeforeLiteRtSeesThem) {
  auto wrong_dtype = model_->Run("serving_default", {{"features", Int64s({2, 3}, {1, 2, 3, 4, 5, 6})}});
  ASSERT_FALSE(wrong_dtype.ok());
  EXPECT_EQ(wrong_dtype.status().message(),
            "endpoint 'serving_default' input 'features': expected float32[?,3], got int64[2,3]");
  auto wrong_shape = model_->Run("serving_default", {{"features", Floats({2, 4}, std::vector<float>(8, 1.0f))}});
  ASSERT_FALSE(wrong_shape.ok());
  EXPECT_EQ(wrong_shape.status().message(),
            "endpoint 'serving_default' input 'features': expected float32[?,3], got float32[2,4]");
  auto missing = model_->Run("serving_default", {});
  EXPECT_EQ(missing.status().code(), StatusCode::kInvalidArgument);
  // The model still runs after refused feeds.
  EXPECT_TRUE(model_->Run("serving_default", {{"features", Floats({1, 3}, {1, 0, 0})}}).ok());
}

TEST_F(LiteRtModelTest, ConcurrentRunsEachGetTheirOwnResult) {
  std::vector<std::thread> threads;
  std::vector<int> wrong(4, 0);
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([t, &wrong] {
      const float x = static_cast<float>(t);
      for (int i = 0; i < 50; ++i) {
        // Alternating batch sizes: every call resizes.
        const int64_t batch = 1 + (i + t) % 3;
        std::vector<float> rows;
        for (int64_t r = 0; r < batch; ++r) rows.insert(rows.end(), {x, 0, 0});
        auto out = model_->Run("serving_default", {{"features", Floats({batch, 3}, rows)}});
        if (!out.ok() || (*out)[0].tensor.shape()[0] != batch ||
            std::fabs((*out)[0].tensor.data_as<float>()[2 * (batch - 1)] - (0.5f * x + 0.1f)) > 1e-6) {
          ++wrong[t];
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(wrong, std::vector<int>(4, 0));
}

TEST_F(LiteRtModelTest, ServingLoopSeesNewValuesAndReusesOutputs) {
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

TEST_F(LiteRtModelTest, RepeatedCallsStillSeeNewValuesAndStillCheckFeeds) {
  // From the third call of a serving loop on, LiteRT writes into the handed-back
  // outputs and the call only compares itself with the last one (RunAgain): values,
  // names, dtypes, kept outputs and replaced outputs must all count as before.
  alignas(64) float misaligned[7] = {};
  auto view = Tensor::View(DType::kFloat32, {2, 3}, misaligned + 1, 6 * sizeof(float), nullptr);
  ASSERT_TRUE(view.ok());
  for (const Tensor& features : {Floats({2, 3}, kFeatures), *view}) {
    SCOPED_TRACE(features.data() == view->data() ? "misaligned feed" : "aligned feed");
    float* x = const_cast<float*>(features.data_as<float>());
    const std::vector<NamedTensor> inputs = {{"features", features}};
    std::vector<NamedTensor> outputs;
    const std::vector<float> swapped = {0, 1, 2, 1, 0, 0};
    const std::vector<float> swapped_logits = {kLogits[2], kLogits[3], kLogits[0], kLogits[1]};
    for (int call = 0; call < 6; ++call) {
      const bool even = call % 2 == 0;
      std::copy_n((even ? kFeatures : swapped).begin(), 6, x);
      ASSERT_TRUE(model_->RunInto("serving_default", inputs, &outputs).ok()) << call;
      const std::vector<float>& expected = even ? kLogits : swapped_logits;
      for (size_t i = 0; i < expected.size(); ++i) {
        EXPECT_NEAR(outputs[0].tensor.data_as<float>()[i], expected[i], 1e-6) << call;
      }
    }
    // The same bytes under another name, or read as another dtype: refused as ever.
    auto misnamed = model_->RunInto("serving_default", {{"feature", features}}, &outputs);
    EXPECT_EQ(misnamed.message(), "endpoint 'serving_default' has no input 'feature'; its inputs are: 'features'");
    EXPECT_TRUE(outputs.empty());
    for (int call = 0; call < 3; ++call) ASSERT_TRUE(model_->RunInto("serving_default", inputs, &outputs).ok());
    auto as_ints = Tensor::View(DType::kInt32, {2, 3}, features.data(), 6 * sizeof(float), nullptr);
    ASSERT_TRUE(as_ints.ok());
    auto retyped = model_->RunInto("serving_default", {{"features", *as_ints}}, &outputs);
    EXPECT_EQ(retyped.message(), "endpoint 'serving_default' input 'features': expected float32[?,3], got int32[2,3]");
    for (int call = 0; call < 3; ++call) ASSERT_TRUE(model_->RunInto("serving_default", inputs, &outputs).ok());
    EXPECT_EQ(model_->RunInto("serving_default_", inputs, &outputs).code(), StatusCode::kNotFound);
    for (int call = 0; call < 3; ++call) ASSERT_TRUE(model_->RunInto("serving_default", inputs, &outputs).ok());
    // An output the caller keeps, or one it puts in the slot itself, is never written
    // through the buffer LiteRT was left bound to.
    std::copy_n(kFeatures.begin(), 6, x);
    const Tensor kept = outputs[0].tensor;
    const std::vector<float> kept_values(kept.data_as<float>(), kept.data_as<float>() + 4);
    std::copy_n(swapped.begin(), 6, x);
    ASSERT_TRUE(model_->RunInto("serving_default", inputs, &outputs).ok());
    EXPECT_EQ(std::vector<float>(kept.data_as<float>(), kept.data_as<float>() + 4), kept_values);
    EXPECT_NEAR(outputs[0].tensor.data_as<float>()[0], swapped_logits[0], 1e-6);
    for (int call = 0; call < 3; ++call) ASSERT_TRUE(model_->RunInto("serving_default", inputs, &outputs).ok());
    Tensor mine = Floats({2, 2}, {7, 7, 7, 7});
    outputs[0].tensor = mine;  // shared with `mine`: not to be overwritten
    std::copy_n(kFeatures.begin(), 6, x);
    ASSERT_TRUE(model_->RunInto("serving_default", inputs, &outputs).ok());
    EXPECT_EQ(std::vector<float>(mine.data_as<float>(), mine.data_as<float>() + 4), std::vector<float>(4, 7));
    EXPECT_NEAR(outputs[0].tensor.data_as<float>()[3], kLogits[3], 1e-6);
    // A longer outputs vector than the signature's is cut to size.
    outputs.push_back({"extra", Floats({1}, {0})});
    ASSERT_TRUE(model_->RunInto("serving_default", inputs, &outputs).ok());
    EXPECT_EQ(outputs.size(), 1u);
  }
}

TEST_F(LiteRtModelTest, BareLoopRuns) {
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

// dynamic.tflite: x float32[?,?,3] -> scaled = 2x + 1 float32[?,?,3], total = sum(x, -1)
// float32[?,?]: outputs whose dims other than the batch only LiteRT's run sizes.
class LiteRtDynamicOutputsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto loaded = LiteRtModel::Load(testing::FixturePath("dynamic.tflite"), LoadOptions{});
    ASSERT_TRUE(loaded.ok()) << loaded.status().ToString();
    model_ = std::move(loaded).value();
  }

  // x of `shape` ([n, m, 3]), its values 0.5 * i - 3 for the i-th element.
  static Tensor X(const Shape& shape) {
    std::vector<float> x(shape[0] * shape[1] * shape[2]);
    for (size_t i = 0; i < x.size(); ++i) x[i] = 0.5f * static_cast<float>(i) - 3.0f;
    return Floats(shape, x);
  }

  // Checks one call's outputs against NumPy's arithmetic on `x`.
  static void ExpectOutputs(const Tensor& x, const std::vector<NamedTensor>& outputs) {
    ASSERT_EQ(outputs.size(), 2u);
    const int64_t n = x.shape()[0], m = x.shape()[1];
    const Shape rows = {n, m};
    for (const NamedTensor& out : outputs) {
      if (out.name == "scaled") {
        ASSERT_EQ(out.tensor.Describe(), "float32" + ShapeToString(x.shape()));
        for (int64_t i = 0; i < n * m * 3; ++i) {
          EXPECT_FLOAT_EQ(out.tensor.data_as<float>()[i], 2 * x.data_as<float>()[i] + 1) << i;
        }
      } else {
        ASSERT_EQ(out.name, "total");
        ASSERT_EQ(out.tensor.Describe(), "float32" + ShapeToString(rows));
        for (int64_t r = 0; r < n * m; ++r) {
          const float* row = x.data_as<float>() + 3 * r;
          EXPECT_FLOAT_EQ(out.tensor.data_as<float>()[r], row[0] + row[1] + row[2]) << r;
        }
      }
    }
  }

  std::unique_ptr<LiteRtModel> model_;
};

TEST_F(LiteRtDynamicOutputsTest, SignatureKeepsTheDynamicDims) {
  const Signature& s = model_->signatures()[0];
  ASSERT_EQ(s.inputs.size(), 1u);
  EXPECT_EQ(SpecToString(s.inputs[0]), "float32[?,?,3]");
  ASSERT_EQ(s.outputs.size(), 2u);
  for (const TensorSpec& spec : s.outputs) {
    EXPECT_EQ(SpecToString(spec), spec.name == "scaled" ? "float32[?,?,3]" : "float32[?,?]") << spec.name;
  }
}

TEST_F(LiteRtDynamicOutputsTest, RunsAtSeveralSizesInOneModel) {
  // Each size twice (the second call reuses the bound buffers), and back to the first
  // size: the outputs follow every resize.
  for (const Shape& shape : {Shape{1, 4, 3}, Shape{2, 7, 3}, Shape{2, 1, 3}, Shape{1, 4, 3}}) {
    SCOPED_TRACE(ShapeToString(shape));
    const Tensor x = X(shape);
    for (int call = 0; call < 2; ++call) {
      auto out = model_->Run("serving_default", {{"x", x}});
      ASSERT_TRUE(out.ok()) << out.status().ToString();
      ExpectOutputs(x, *out);
    }
  }
}

TEST_F(LiteRtDynamicOutputsTest, ServingLoopFollowsANewSize) {
  // Outputs handed back to the next call (RunInto) are written in place while the
  // size stays, and replaced when it changes.
  std::vector<NamedTensor> outputs;
  for (const Shape& shape : {Shape{2, 5, 3}, Shape{2, 5, 3}, Shape{2, 5, 3}, Shape{3, 2, 3}, Shape{3, 2, 3}}) {
    SCOPED_TRACE(ShapeToString(shape));
    const Tensor x = X(shape);
    ASSERT_TRUE(model_->RunInto("serving_default", {{"x", x}}, &outputs).ok());
    ExpectOutputs(x, outputs);
  }
}

TEST_F(LiteRtDynamicOutputsTest, BareLoopRuns) {
  auto loop = model_->MakeBareLoop({{"x", X({2, 7, 3})}});
  ASSERT_TRUE(loop.ok()) << loop.status().ToString();
  for (int i = 0; i < 3; ++i) EXPECT_TRUE((*loop)->RunOnce().ok());
  // The runner resizes its own compiled model, not the loop's.
  const Tensor x = X({1, 4, 3});
  auto out = model_->Run("serving_default", {{"x", x}});
  ASSERT_TRUE(out.ok()) << out.status().ToString();
  ExpectOutputs(x, *out);
  EXPECT_TRUE((*loop)->RunOnce().ok());
}

TEST(LiteRtUnwrittenOutputTest, AnOutputLiteRtKeepsToItselfIsAClearErrorEveryTime) {
  // unwritten.tflite: rows = reshape(x, [n, 2, 2]) with n read from x's shape. LiteRT's
  // run leaves the buffer bound to it as it was (zeros, the first time), then fails.
  auto model = LiteRtModel::Load(testing::FixturePath("unwritten.tflite"), LoadOptions{});
  ASSERT_TRUE(model.ok()) << model.status().ToString();
  const Tensor x = Floats({2, 4}, {1, 2, 3, 4, 5, 6, 7, 8});
  for (int call = 0; call < 2; ++call) {
    auto out = (*model)->Run("serving_default", {{"x", x}});
    ASSERT_FALSE(out.ok()) << "call " << call << " returned " << (*out)[0].tensor.Describe();
    EXPECT_EQ(out.status().code(), StatusCode::kUnimplemented) << out.status().ToString();
    EXPECT_NE(out.status().message().find("left output 'rows' (float32[?,2,2]) unwritten"), std::string::npos)
        << out.status().ToString();
  }
}

TEST(LiteRtModelLoadTest, LoadModelDetectsTheTflite) {
  EXPECT_EQ(DetectFormat(Tflite()).value(), ModelFormat::kLiteRt);
  auto model = LoadModel(Tflite());
  ASSERT_TRUE(model.ok()) << model.status().ToString();
  EXPECT_EQ((*model)->format(), ModelFormat::kLiteRt);
}

TEST(LiteRtModelLoadTest, MissingFileAndDirectory) {
  auto missing = LiteRtModel::Load("/nonexistent/model.tflite", LoadOptions{});
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
  EXPECT_EQ(missing.status().message(), "no LiteRT model at /nonexistent/model.tflite: no such file");
  EXPECT_EQ(LiteRtModel::Load(testing::FixturePath("formats"), LoadOptions{}).status().code(),
            StatusCode::kInvalidArgument);
}

TEST(LiteRtModelLoadTest, EmptyAndForeignFiles) {
  const std::string empty = Damaged("empty_tflite", 0);
  EXPECT_EQ(LiteRtModel::Load(empty, LoadOptions{}).status().message(), empty + " is empty, not a LiteRT model");
  const std::string onnx = testing::ScratchDir("onnx_tflite") + "/model.tflite";
  std::filesystem::copy_file(testing::FixturePath("model.onnx"), onnx);
  auto foreign = LiteRtModel::Load(onnx, LoadOptions{});
  EXPECT_EQ(foreign.status().code(), StatusCode::kDataLoss);
  EXPECT_EQ(foreign.status().message(), onnx + " is not a LiteRT model: no TFL3 FlatBuffer identifier");
}

TEST(LiteRtModelLoadTest, TruncatedFiles) {
  // Cut at several places: always an error naming the file, never a crash.
  for (size_t keep : {8, 100, 500, 900, 1000}) {
    const std::string path = Damaged("truncated_" + std::to_string(keep), keep);
    auto model = LiteRtModel::Load(path, LoadOptions{});
    ASSERT_FALSE(model.ok()) << keep;
    EXPECT_NE(model.status().message().find(path), std::string::npos) << model.status().message();
  }
}

TEST(LiteRtModelLoadTest, BadOptionsAndGpu) {
  LoadOptions bad;
  bad.inter_op_threads = -5;
  EXPECT_EQ(LiteRtModel::Load(Tflite(), bad).status().code(), StatusCode::kInvalidArgument);
  LoadOptions gpu;
  gpu.device = Device::kGpu;
  EXPECT_EQ(LiteRtModel::Load(Tflite(), gpu).status().code(), StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace servekit
