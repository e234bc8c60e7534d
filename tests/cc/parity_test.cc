// Parity: tolerance arithmetic, and the fixture's reference and cross-format cases.
#include "cc/parity.h"

#include <cmath>

#include "cc/loader.h"
#include "gtest/gtest.h"
#include "tests/cc/test_util.h"

namespace servekit {
namespace {

using testing::Floats;
using testing::Int64s;

TEST(CompareTensorsTest, FloatTolerance) {
  const Tensor e = Floats({3}, {0.1f, -0.2f, 1.0f});
  auto r = CompareTensors("y", e, Floats({3}, {0.1f, -0.2f, 1.0f}), {1e-5, 0});
  EXPECT_TRUE(r.passed);
  EXPECT_EQ(r.max_abs_error, 0.0);
  r = CompareTensors("y", e, Floats({3}, {0.10002f, -0.2f, 1.005f}), {1e-5, 1e-2});
  EXPECT_TRUE(r.passed) << r.message;  // 1.005 within rtol 1e-2 of 1
  EXPECT_NEAR(r.max_abs_error, 0.005, 1e-6);
  EXPECT_NEAR(r.max_rel_error, 0.005, 1e-6);
  r = CompareTensors("y", e, Floats({3}, {0.10002f, -0.2f, 1.005f}), {1e-5, 0});
  EXPECT_FALSE(r.passed);
  EXPECT_FALSE(r.scaled);
  EXPECT_EQ(r.mismatches, 2);
  EXPECT_EQ(r.message.rfind("2 of 3 elements differ beyond tolerance; first: element [0]: expected 0.1, found 0.10002", 0),
            0u)
      << r.message;
}

TEST(CompareTensorsTest, TinyOutputsAreCheckedRelativeToTheirScale) {
  // Outputs of about 3e-5 against float32's atol 1e-5: the absolute term alone
  // would accept a 30% error. It becomes kScaledAtol of the scale (3e-8), and an
  // all-zero output is held to kScaledAtol * atol.
  const Tensor e = Floats({2}, {3e-5f, -1e-5f});
  auto r = CompareTensors("y", e, Floats({2}, {3.9e-5f, -1e-5f}), {1e-5, 0});
  EXPECT_FALSE(r.passed);
  EXPECT_TRUE(r.scaled);
  EXPECT_NEAR(r.tolerance.atol, 3e-8, 1e-12);
  r = CompareTensors("y", e, Floats({2}, {3.00001e-5f, -1e-5f}), {1e-5, 0});
  EXPECT_TRUE(r.passed) << r.message;
  // An output of ordinary size keeps the manifest's atol.
  r = CompareTensors("y", Floats({1}, {0.5f}), Floats({1}, {0.500009f}), {1e-5, 0});
  EXPECT_TRUE(r.passed) << r.message;
  EXPECT_FALSE(r.scaled);
  const Tensor zeros = Floats({2}, {0.0f, 0.0f});
  EXPECT_TRUE(CompareTensors("y", zeros, Floats({2}, {5e-9f, 0.0f}), {1e-5, 0}).passed);
  EXPECT_FALSE(CompareTensors("y", zeros, Floats({2}, {5e-6f, 0.0f}), {1e-5, 0}).passed);
}

TEST(CompareTensorsTest, LossyPrecisionsAreScaledByTheirRelativeTolerance) {
  // bfloat16's (1e-2, 1e-2) on an output of scale 0.1: 3 * rtol of the scale (3e-3),
  // not 1e-3 of it, which a bfloat16 model's own roundings exceed; never above atol.
  const Tensor e = Floats({2}, {0.1f, -0.05f});
  auto r = CompareTensors("y", e, Floats({2}, {0.1f, -0.0485f}), {1e-2, 1e-2});
  EXPECT_TRUE(r.passed) << r.message;
  EXPECT_TRUE(r.scaled);
  EXPECT_NEAR(r.tolerance.atol, 3e-3, 1e-9);  // 3e-2 of float32(0.1)
  // A 10% error is refused (the unscaled atol, 1e-2, would have passed it).
  EXPECT_FALSE(CompareTensors("y", e, Floats({2}, {0.1f, -0.045f}), {1e-2, 1e-2}).passed);
  r = CompareTensors("y", Floats({1}, {0.9f}), Floats({1}, {0.9f}), {1e-2, 1e-2});
  EXPECT_NEAR(r.tolerance.atol, 1e-2, 1e-12);  // 3% of 0.9 would exceed atol
}

TEST(CompareTensorsTest, LargeOutputsAreAllowedTheirDtypesAtolPerUnitOfScale) {
  // Outputs of about 1e4: float32 spaces them 1e-3 apart, and a graph's other
  // summation order moves them by about 1e-2. atol' = 1e-5 * 12800.
  const Tensor e = Floats({2}, {12800.0f, -300.0f});
  auto r = CompareTensors("y", e, Floats({2}, {12800.05f, -300.02f}), {1e-5, 0});
  EXPECT_TRUE(r.passed) << r.message;
  EXPECT_TRUE(r.scaled);
  EXPECT_NEAR(r.tolerance.atol, 0.128, 1e-9);
  // A 0.1% error of the largest element is still refused,
  EXPECT_FALSE(CompareTensors("y", e, Floats({2}, {12813.0f, -300.0f}), {1e-5, 0}).passed);
  // and a declared atol above the floor is kept as declared.
  r = CompareTensors("y", e, Floats({2}, {12800.0f, -300.0f}), {1.0, 0});
  EXPECT_FALSE(r.scaled);
  EXPECT_EQ(r.tolerance.atol, 1.0);
}

TEST(CompareTensorsTest, NanAndInf) {
  const Tensor e = Floats({2}, {NAN, INFINITY});
  EXPECT_TRUE(CompareTensors("y", e, Floats({2}, {NAN, INFINITY}), {0, 0}).passed);
  auto r = CompareTensors("y", e, Floats({2}, {0, INFINITY}), {1, 1});
  EXPECT_FALSE(r.passed);
  EXPECT_TRUE(std::isinf(r.max_abs_error));
  EXPECT_FALSE(CompareTensors("y", e, Floats({2}, {NAN, -INFINITY}), {1, 1}).passed);
}

TEST(CompareTensorsTest, IntegersStringsShapesDtypesAreExact) {
  EXPECT_FALSE(CompareTensors("y", Int64s({1}, {5}), Int64s({1}, {6}), {10, 10}).passed);
  // Values beyond 2^53 differ although their doubles are equal.
  EXPECT_FALSE(
      CompareTensors("y", Int64s({1}, {(int64_t{1} << 60) + 1}), Int64s({1}, {int64_t{1} << 60}), {0, 0}).passed);
  auto r = CompareTensors("y", testing::Strings({2}, {"a", "b"}), testing::Strings({2}, {"a", "c"}), {});
  EXPECT_FALSE(r.passed);
  EXPECT_NE(r.message.find("element [1]: expected \"b\", found \"c\""), std::string::npos) << r.message;
  r = CompareTensors("y", Floats({2}, {1, 2}), Floats({1, 2}, {1, 2}), {});
  EXPECT_EQ(r.message, "shape expected [2], found [1,2]");
  r = CompareTensors("y", Floats({1}, {1}), Int64s({1}, {1}), {});
  EXPECT_EQ(r.message, "dtype expected float32, found int64");
}

TEST(ParityTest, ReferenceAndCrossFormat) {
  auto manifest = ReadManifest(testing::FixturePath("manifest.json"));
  ASSERT_TRUE(manifest.ok());
  auto sm = LoadModel(testing::FixturePath("saved_model"));
  auto onnx = LoadModel(testing::FixturePath("model.onnx"));
  ASSERT_TRUE(sm.ok() && onnx.ok());
  for (const auto& c : CheckReferenceParity(**sm, *manifest)) {
    EXPECT_TRUE(c.passed) << ToJson(c).dump();
  }
  const auto onnx_cases = CheckReferenceParity(**onnx, *manifest);
  ASSERT_EQ(onnx_cases.size(), 2u);
  EXPECT_EQ(onnx_cases[1].label, "onnx reference serving_default b4");
  EXPECT_TRUE(onnx_cases[1].passed);
  EXPECT_EQ(onnx_cases[1].outputs[0].elements, 8);
  const auto cross = CheckCrossParity(**sm, **onnx, *manifest);
  ASSERT_EQ(cross.size(), 2u);
  EXPECT_EQ(cross[0].label, "tf_saved_model vs onnx serving_default b1");
  EXPECT_TRUE(cross[0].passed && cross[1].passed);
  const auto lines = DescribeParity(cross[0]);
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_EQ(lines[0].rfind("PASS tf_saved_model vs onnx serving_default b1 logits max_abs=", 0), 0u) << lines[0];
}

}  // namespace
}  // namespace servekit
