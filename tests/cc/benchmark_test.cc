// Benchmark: input tiling, random inputs, statistics and a short run of each mode.
#include "cc/benchmark.h"

#include "cc/loader.h"
#include "cc/npy.h"
#include "gtest/gtest.h"
#include "tests/cc/test_util.h"

namespace servekit {
namespace {

TEST(BenchmarkTest, Summarize) {
  std::vector<double> us;
  for (int i = 100; i >= 1; --i) us.push_back(i);
  const LatencyStats s = Summarize(us);
  EXPECT_EQ(s.iterations, 100);
  EXPECT_EQ(s.p50_us, 50);
  EXPECT_EQ(s.p90_us, 90);
  EXPECT_EQ(s.p99_us, 99);
  EXPECT_EQ(s.max_us, 100);
  EXPECT_EQ(s.min_us, 1);
  EXPECT_DOUBLE_EQ(s.mean_us, 50.5);
  EXPECT_EQ(Summarize({}).iterations, 0);
}

TEST(BenchmarkTest, TilesSamplesAndMakesRandomInputs) {
  Signature sig{"s", "", {{"x", DType::kFloat32, {Dim::Dynamic("batch"), Dim::Static(2)}, false, ""},
                          {"w", DType::kString, {Dim::Dynamic()}, false, ""}}, {}};
  std::vector<NamedTensor> sample = {{"x", testing::Floats({2, 2}, {1, 2, 3, 4})},
                                     {"w", testing::Strings({2}, {"a", "b"})}};
  auto tiled = MakeBatchInputs(sig, sample, 5, 1);
  ASSERT_TRUE(tiled.ok()) << tiled.status().ToString();
  EXPECT_EQ((*tiled)[0].tensor.Describe(), "float32[5,2]");
  EXPECT_EQ((*tiled)[0].tensor.data_as<float>()[8], 1.0f);  // row 4 = row 0
  EXPECT_EQ((*tiled)[1].tensor.strings()[3], "b");
  auto random = MakeBatchInputs(sig, {}, 3, 1);
  ASSERT_TRUE(random.ok());
  EXPECT_EQ((*random)[0].tensor.Describe(), "float32[3,2]");
  EXPECT_EQ((*random)[1].tensor.Describe(), "string[3]");
  EXPECT_FALSE(MakeBatchInputs(sig, {}, 0, 1).ok());
  EXPECT_FALSE(MakeBatchInputs(sig, {sample[0]}, 2, 1).ok());  // 'w' missing
}

TEST(BenchmarkTest, OpenVinoAndLiteRtWithBareLoops) {
  for (const char* artifact : {"formats/model.xml", "formats/model.tflite"}) {
    auto model = LoadModel(testing::FixturePath(artifact));
    ASSERT_TRUE(model.ok()) << model.status().ToString();
    BenchmarkOptions options;
    options.batches = {1, 4};
    options.iterations = 20;
    options.warmup = 2;
    options.bare_ort = true;
    auto report = RunBenchmark(**model, options);
    ASSERT_TRUE(report.ok()) << artifact << ": " << report.status().ToString();
    for (const auto& b : report->batches) {
      ASSERT_TRUE(b.bare_ort.has_value()) << artifact;
      EXPECT_EQ(b.bare_ort->iterations, 20) << artifact;
      EXPECT_GT(*b.overhead_ratio, 0.0) << artifact;
    }
  }
}

TEST(BenchmarkTest, OnnxWithBareLoop) {
  auto model = LoadModel(testing::FixturePath("model.onnx"));
  ASSERT_TRUE(model.ok());
  BenchmarkOptions options;
  options.batches = {1, 8};
  options.iterations = 50;
  options.warmup = 5;
  options.bare_ort = true;
  options.sample_inputs = {{"features", *ReadNpy(testing::FixturePath("reference/serving_default.b4.in.features.npy"))}};
  auto report = RunBenchmark(**model, options);
  ASSERT_TRUE(report.ok()) << report.status().ToString();
  ASSERT_EQ(report->batches.size(), 2u);
  EXPECT_EQ(report->batches[1].batch, 8);
  EXPECT_EQ(report->batches[1].runner.iterations, 50);
  ASSERT_TRUE(report->batches[1].bare_ort.has_value());
  EXPECT_GT(*report->batches[1].overhead_ratio, 0.0);
  EXPECT_GT(report->machine.logical_cores, 0);
  const auto j = report->ToJson();
  EXPECT_EQ(j["format"], "onnx");
  EXPECT_EQ(j["inputs"], "sample");
  EXPECT_TRUE(j["batches"][0].contains("overhead_ratio_p50"));
  EXPECT_NE(report->ToText().find("bare_p50"), std::string::npos);
}

TEST(BenchmarkTest, SavedModelTimeBudgetRandomInputs) {
  auto model = LoadModel(testing::FixturePath("saved_model"));
  ASSERT_TRUE(model.ok());
  BenchmarkOptions options;
  options.endpoint = "tokens";
  options.seconds = 0.05;
  options.warmup = 2;
  auto report = RunBenchmark(**model, options);
  ASSERT_TRUE(report.ok()) << report.status().ToString();
  EXPECT_GT(report->batches[0].runner.iterations, 1);
  EXPECT_EQ(report->input_source, "random");
  options.bare_ort = true;
  EXPECT_EQ(RunBenchmark(**model, options).status().code(), StatusCode::kInvalidArgument);
  options.endpoint = "nope";
  EXPECT_EQ(RunBenchmark(**model, options).status().code(), StatusCode::kNotFound);
}

}  // namespace
}  // namespace servekit
