// TfSavedModel on the fixture: signatures, runs, every error path, concurrency.
#include "cc/tf_saved_model.h"

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
using testing::Strings;

class TfSavedModelTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto loaded = TfSavedModel::Load(testing::FixturePath("saved_model"), LoadOptions{});
    ASSERT_TRUE(loaded.ok()) << loaded.status().ToString();
    model_ = std::move(loaded).value().release();
  }
  static void TearDownTestSuite() { delete model_; }

  static void ExpectError(const std::vector<NamedTensor>& feeds, const std::string& message,
                          const std::string& endpoint = "serving_default") {
    auto out = model_->Run(endpoint, feeds);
    ASSERT_FALSE(out.ok());
    EXPECT_EQ(out.status().message(), message);
  }

  static TfSavedModel* model_;
};
TfSavedModel* TfSavedModelTest::model_ = nullptr;

TEST_F(TfSavedModelTest, Signatures) {
  EXPECT_EQ(model_->format(), ModelFormat::kTfSavedModel);
  ASSERT_EQ(model_->signatures().size(), 3u);
  const Signature* s = model_->FindEndpoint("serving_default");
  ASSERT_NE(s, nullptr);
  EXPECT_EQ(SpecToString(s->inputs[0]), "float32[?,3]");
  EXPECT_EQ(s->outputs[0].name, "logits");
  EXPECT_FALSE(model_->devices().empty());
}

TEST_F(TfSavedModelTest, RunsServingDefault) {
  auto out = model_->Run("serving_default", {{"features", Floats({2, 3}, {1, 0, 0, 0, 1, 2})}});
  ASSERT_TRUE(out.ok()) << out.status().ToString();
  ASSERT_EQ(out->size(), 1u);
  const Tensor& logits = (*out)[0].tensor;
  EXPECT_EQ((*out)[0].name, "logits");
  EXPECT_EQ(logits.Describe(), "float32[2,2]");
  // x @ W + b with W = [[.5,-1],[.25,2],[-.75,.125]], b = [.1,-.2].
  EXPECT_FLOAT_EQ(logits.data_as<float>()[0], 0.6f);
  EXPECT_FLOAT_EQ(logits.data_as<float>()[1], -1.2f);
  EXPECT_FLOAT_EQ(logits.data_as<float>()[2], 0.25f - 1.5f + 0.1f);
  EXPECT_FLOAT_EQ(logits.data_as<float>()[3], 2.0f + 0.25f - 0.2f);
}

TEST_F(TfSavedModelTest, RunsStringsAndInt64) {
  auto out = model_->Run("tokens", {{"ids", Int64s({2, 4}, {1, 2, 3, 4, -1, -1, 0, 5})},
                                    {"words", Strings({2}, {"abc", std::string("z\0y", 3)})}});
  ASSERT_TRUE(out.ok()) << out.status().ToString();
  const Tensor* lengths = FindTensor(*out, "lengths");
  const Tensor* upper = FindTensor(*out, "upper");
  const Tensor* total = FindTensor(*out, "total");
  ASSERT_TRUE(lengths && upper && total);
  EXPECT_EQ(lengths->data_as<int64_t>()[1], 3);
  EXPECT_EQ(upper->strings(), (std::vector<std::string>{"ABC", std::string("Z\0Y", 3)}));
  EXPECT_EQ(total->data_as<int64_t>()[0], 10);
  EXPECT_EQ(total->data_as<int64_t>()[1], 3);
}

TEST_F(TfSavedModelTest, SharedBuffersAreCopied) {
  // 'constant' is a Const op's value: TensorFlow shares its buffer, so servekit copies
  // it (the output is writable memory of its own); exclusive outputs are not copied.
  auto out = model_->Run("divide", {{"a", Int64s({1}, {4})}, {"b", Int64s({1}, {2})}});
  ASSERT_TRUE(out.ok()) << out.status().ToString();
  const Tensor* constant = FindTensor(*out, "constant");
  ASSERT_NE(constant, nullptr);
  EXPECT_EQ(constant->Describe(), "int64[3]");
  EXPECT_FALSE(constant->is_view());
  EXPECT_EQ(constant->data_as<int64_t>()[2], 3);
  static_cast<int64_t*>(constant->mutable_data())[2] = 99;
  auto again = model_->Run("divide", {{"a", Int64s({1}, {4})}, {"b", Int64s({1}, {2})}});
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(FindTensor(*again, "constant")->data_as<int64_t>()[2], 3);
  EXPECT_TRUE(FindTensor(*again, "quotient")->is_view());
}

TEST_F(TfSavedModelTest, EmptyBatch) {
  auto out = model_->Run("serving_default", {{"features", *Tensor::Allocate(DType::kFloat32, {0, 3})}});
  ASSERT_TRUE(out.ok()) << out.status().ToString();
  EXPECT_EQ((*out)[0].tensor.Describe(), "float32[0,2]");
}

TEST_F(TfSavedModelTest, FeedErrors) {
  ExpectError({{"features", Int64s({2, 3}, {1, 2, 3, 4, 5, 6})}},
              "endpoint 'serving_default' input 'features': expected float32[?,3], got int64[2,3]");
  ExpectError({{"features", Floats({3}, {1, 2, 3})}},
              "endpoint 'serving_default' input 'features': expected float32[?,3], got float32[3]");
  ExpectError({{"features", Floats({1, 4}, {1, 2, 3, 4})}},
              "endpoint 'serving_default' input 'features': expected float32[?,3], got float32[1,4]");
  ExpectError({{"feature", Floats({1, 3}, {1, 2, 3})}},
              "endpoint 'serving_default' has no input 'feature'; its inputs are: 'features'");
  ExpectError({}, "endpoint 'serving_default' input 'features' (float32[?,3]) is not fed");
  ExpectError({{"features", Floats({1, 3}, {1, 2, 3})}, {"features", Floats({1, 3}, {1, 2, 3})}},
              "endpoint 'serving_default' input 'features' is fed twice");
}

TEST_F(TfSavedModelTest, UnknownEndpointNamesTheKnownOnes) {
  auto out = model_->Run("nope", {});
  ASSERT_FALSE(out.ok());
  EXPECT_EQ(out.status().code(), StatusCode::kNotFound);
  EXPECT_NE(out.status().message().find("no endpoint 'nope'"), std::string::npos);
  EXPECT_NE(out.status().message().find("'divide', 'serving_default', 'tokens'"), std::string::npos);
}

TEST_F(TfSavedModelTest, RuntimeErrorsBecomeStatus) {
  // Feeds that fit the signature but that TensorFlow rejects: integer division by zero.
  auto out = model_->Run("divide", {{"a", Int64s({2}, {7, 9})}, {"b", Int64s({2}, {2, 3})}});
  ASSERT_TRUE(out.ok()) << out.status().ToString();
  EXPECT_EQ(FindTensor(*out, "quotient")->data_as<int64_t>()[0], 3);
  out = model_->Run("divide", {{"a", Int64s({2}, {7, 9})}, {"b", Int64s({2}, {2, 0})}});
  ASSERT_FALSE(out.ok());
  EXPECT_EQ(out.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(out.status().message().find("TensorFlow failed to run endpoint 'divide'"), std::string::npos);
  EXPECT_NE(out.status().message().find("division by zero"), std::string::npos) << out.status().message();
  // ... and the model still works afterwards.
  EXPECT_TRUE(model_->Run("divide", {{"a", Int64s({1}, {1})}, {"b", Int64s({1}, {1})}}).ok());
}

TEST_F(TfSavedModelTest, ConcurrentRunsAreCorrect) {
  constexpr int kThreads = 8;
  constexpr int kRuns = 50;
  std::vector<int> failures(kThreads, 0);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([t, &failures] {
      for (int i = 0; i < kRuns; ++i) {
        const float v = static_cast<float>(t * 100 + i);
        auto out = model_->Run("serving_default", {{"features", Floats({1, 3}, {v, 0, 0})}});
        // logits[0] = 0.5 v + 0.1, logits[1] = -v - 0.2
        if (!out.ok() || std::abs((*out)[0].tensor.data_as<float>()[0] - (0.5f * v + 0.1f)) > 1e-3f ||
            std::abs((*out)[0].tensor.data_as<float>()[1] - (-v - 0.2f)) > 1e-3f) {
          ++failures[t];
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  for (int t = 0; t < kThreads; ++t) EXPECT_EQ(failures[t], 0) << "thread " << t;
}

// ---- Loading errors ------------------------------------------------------------------

Status LoadError(const std::string& path, LoadOptions options = {}) {
  auto m = TfSavedModel::Load(path, options);
  return m.ok() ? Status::Ok() : m.status();
}

TEST(TfSavedModelLoadTest, MissingDirectory) {
  Status s = LoadError("/nonexistent/saved_model");
  EXPECT_EQ(s.code(), StatusCode::kNotFound);
  EXPECT_EQ(s.message(), "no SavedModel at /nonexistent/saved_model: no such directory");
}

TEST(TfSavedModelLoadTest, FileInsteadOfDirectory) {
  Status s = LoadError(testing::FixturePath("model.onnx"));
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("is a file, not a SavedModel directory"), std::string::npos);
}

TEST(TfSavedModelLoadTest, DirectoryWithoutSavedModelPb) {
  Status s = LoadError(testing::FixturePath("reference"));
  EXPECT_EQ(s.code(), StatusCode::kNotFound);
  EXPECT_NE(s.message().find("is not a SavedModel: it has no saved_model.pb"), std::string::npos);
}

TEST(TfSavedModelLoadTest, TruncatedSavedModelPb) {
  const std::string dir = testing::CopyFixture("truncated") + "/saved_model";
  auto bytes = ReadFile(dir + "/saved_model.pb");
  ASSERT_TRUE(bytes.ok());
  ASSERT_TRUE(WriteFile(dir + "/saved_model.pb", bytes->substr(0, bytes->size() / 2)).ok());
  Status s = LoadError(dir);
  EXPECT_EQ(s.code(), StatusCode::kDataLoss);
  EXPECT_NE(s.message().find("saved_model.pb is not a valid SavedModel: malformed protocol buffer: field 2 claims"),
            std::string::npos) << s.message();
}

TEST(TfSavedModelLoadTest, CorruptedSavedModelPb) {
  const std::string dir = testing::CopyFixture("corrupted") + "/saved_model";
  ASSERT_TRUE(WriteFile(dir + "/saved_model.pb", std::string(4096, '\xff')).ok());
  Status s = LoadError(dir);
  EXPECT_EQ(s.code(), StatusCode::kDataLoss);
  EXPECT_NE(s.message().find("is not a valid SavedModel"), std::string::npos) << s.message();
}

TEST(TfSavedModelLoadTest, CorruptedVariablesAreTensorFlowsError) {
  const std::string dir = testing::CopyFixture("bad_variables") + "/saved_model";
  ASSERT_TRUE(WriteFile(dir + "/variables/variables.index", "garbage").ok());
  Status s = LoadError(dir);
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("TensorFlow could not load the SavedModel"), std::string::npos) << s.message();
}

TEST(TfSavedModelLoadTest, WrongTag) {
  LoadOptions options;
  options.tags = {"train"};
  Status s = LoadError(testing::FixturePath("saved_model"), options);
  EXPECT_EQ(s.code(), StatusCode::kNotFound);
  EXPECT_NE(s.message().find("has no MetaGraph tagged {train}; it has: {serve}"), std::string::npos) << s.message();
}

// Where TensorFlow sees a GPU the model must load onto it and compute the right
// values; everywhere else the request must fail clearly. Both branches assert.
TEST(TfSavedModelLoadTest, GpuRunsWhereTensorFlowHasOneElseAClearError) {
  LoadOptions options;
  options.device = Device::kGpu;
  auto m = TfSavedModel::Load(testing::FixturePath("saved_model"), options);
  if (m.ok()) {
    const auto& devices = (*m)->devices();
    EXPECT_TRUE(std::any_of(devices.begin(), devices.end(),
                            [](const std::string& d) { return d.find("GPU") != std::string::npos; }));
    auto out = (*m)->Run("serving_default", {{"features", Floats({1, 3}, {1, 0, 0})}});
    ASSERT_TRUE(out.ok()) << out.status().ToString();
    EXPECT_FLOAT_EQ((*out)[0].tensor.data_as<float>()[0], 0.6f);  // x @ W + b, as in RunsServingDefault
    EXPECT_FLOAT_EQ((*out)[0].tensor.data_as<float>()[1], -1.2f);
    return;
  }
  EXPECT_EQ(m.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(m.status().message().find("device 'gpu' requested"), std::string::npos) << m.status().message();
  EXPECT_NE(m.status().message().find("TensorFlow sees no GPU"), std::string::npos);
}

TEST(TfSavedModelLoadTest, ThreadOptionsAndConfigBytes) {
  LoadOptions options;
  options.intra_op_threads = 2;
  options.inter_op_threads = 3;
  // device_count {"GPU": 0}, intra 2, inter 3, allow_soft_placement: as TF's own ConfigProto serializes.
  EXPECT_EQ(SerializeTfConfig(options), std::string("\x0a\x07\x0a\x03GPU\x10\x00\x10\x02\x28\x03\x38\x01", 15));
  auto m = TfSavedModel::Load(testing::FixturePath("saved_model"), options);
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  auto out = (*m)->Run("serving_default", {{"features", Floats({1, 3}, {1, 1, 1})}});
  EXPECT_TRUE(out.ok());
}

TEST(TfSavedModelLoadTest, CallerThreadInterOpIsTensorFlowsNegativeSetting) {
  LoadOptions options;
  options.intra_op_threads = 1;
  options.inter_op_threads = LoadOptions::kCallerThread;
  // As tf.compat.v1.ConfigProto(device_count={"GPU": 0}, intra_op_parallelism_threads=1,
  // inter_op_parallelism_threads=-1, allow_soft_placement=True).SerializeToString().
  EXPECT_EQ(SerializeTfConfig(options),
            std::string("\x0a\x07\x0a\x03GPU\x10\x00\x10\x01\x28\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01\x38\x01", 24));
  auto m = TfSavedModel::Load(testing::FixturePath("saved_model"), options);
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  auto out = (*m)->Run("serving_default", {{"features", Floats({1, 3}, {1, 0, 0})}});
  ASSERT_TRUE(out.ok()) << out.status().ToString();
  EXPECT_FLOAT_EQ((*out)[0].tensor.data_as<float>()[0], 0.6f);  // x @ W + b, as in RunsServingDefault
  EXPECT_FLOAT_EQ((*out)[0].tensor.data_as<float>()[1], -1.2f);
}

TEST(TfSavedModelLoadTest, RejectsThreadCountsTheRuntimeWouldMisread) {
  for (auto [intra, inter] : {std::pair{-1, 0}, std::pair{0, -2}}) {
    LoadOptions options;
    options.intra_op_threads = intra;
    options.inter_op_threads = inter;
    auto m = TfSavedModel::Load(testing::FixturePath("saved_model"), options);
    EXPECT_EQ(m.status().code(), StatusCode::kInvalidArgument) << intra << "," << inter;
    EXPECT_NE(m.status().message().find("threads must be >="), std::string::npos) << m.status().message();
  }
}

TEST(TfSavedModelLoadTest, LoadModelDetectsTheFormat) {
  auto m = LoadModel(testing::FixturePath("saved_model"));
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_EQ((*m)->format(), ModelFormat::kTfSavedModel);
  EXPECT_EQ(DetectFormat(testing::FixturePath("manifest.json")).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(LoadModel("/nonexistent").status().code(), StatusCode::kNotFound);
}

}  // namespace
}  // namespace servekit
