// DType names and runtime enum numbers, half/bfloat16 conversion, Tensor invariants.
#include <cmath>

#include "cc/dtype.h"
#include "cc/tensor.h"
#include "gtest/gtest.h"

namespace servekit {
namespace {

TEST(DTypeTest, NamesRoundTrip) {
  for (DType d : kAllDTypes) {
    auto parsed = DTypeFromName(DTypeName(d));
    ASSERT_TRUE(parsed.has_value()) << DTypeName(d);
    EXPECT_EQ(*parsed, d);
  }
  EXPECT_FALSE(DTypeFromName("float").has_value());
  EXPECT_FALSE(DTypeFromName("").has_value());
}

TEST(DTypeTest, RuntimeNumbersRoundTrip) {
  for (DType d : kAllDTypes) {
    EXPECT_EQ(DTypeFromTensorFlow(ToTensorFlow(d)), d) << DTypeName(d);
    EXPECT_EQ(DTypeFromOnnx(ToOnnx(d)), d) << DTypeName(d);
  }
  EXPECT_EQ(ToTensorFlow(DType::kFloat32), 1);
  EXPECT_EQ(ToOnnx(DType::kInt64), 7);
  EXPECT_FALSE(DTypeFromTensorFlow(8).has_value());  // complex64
  EXPECT_EQ(TensorFlowTypeName(20), "resource");
  EXPECT_FALSE(DTypeFromOnnx(14).has_value());  // complex64
  EXPECT_EQ(OnnxTypeName(17), "float8e4m3fn");
}

TEST(DTypeTest, HalfConversions) {
  EXPECT_EQ(HalfToDouble(0x3c00), 1.0);
  EXPECT_EQ(HalfToDouble(0xc000), -2.0);
  EXPECT_EQ(HalfToDouble(0x7bff), 65504.0);
  EXPECT_EQ(HalfToDouble(0x0001), std::ldexp(1.0, -24));
  EXPECT_TRUE(std::isinf(HalfToDouble(0x7c00)));
  EXPECT_TRUE(std::isnan(HalfToDouble(0x7e00)));
  for (uint32_t bits = 0; bits < 0x7c00; ++bits) {  // every finite positive half
    ASSERT_EQ(DoubleToHalf(HalfToDouble(static_cast<uint16_t>(bits))), bits);
  }
  EXPECT_EQ(DoubleToHalf(1e6), 0x7c00);
  EXPECT_EQ(DoubleToHalf(-0.0), 0x8000);
}

TEST(DTypeTest, BFloat16Conversions) {
  EXPECT_EQ(BFloat16ToDouble(0x3f80), 1.0);
  EXPECT_EQ(DoubleToBFloat16(1.0), 0x3f80);
  EXPECT_EQ(DoubleToBFloat16(-2.0), 0xc000);
  EXPECT_NEAR(BFloat16ToDouble(DoubleToBFloat16(3.14159)), 3.14159, 0.02);
}

TEST(TensorTest, AllocateIsZeroedAndOwned) {
  auto t = Tensor::Allocate(DType::kFloat32, {2, 3});
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(t->num_elements(), 6);
  EXPECT_EQ(t->byte_size(), 24u);
  EXPECT_FALSE(t->is_view());
  for (int i = 0; i < 6; ++i) EXPECT_EQ(t->data_as<float>()[i], 0.0f);
  EXPECT_EQ(t->Describe(), "float32[2,3]");
}

TEST(TensorTest, RejectsBadShapes) {
  EXPECT_FALSE(Tensor::Allocate(DType::kFloat32, {2, -1}).ok());
  EXPECT_FALSE(Tensor::Allocate(DType::kFloat32, {int64_t{1} << 40, int64_t{1} << 40}).ok());
  EXPECT_EQ(*NumElements({}), 1);
  EXPECT_EQ(*NumElements({3, 0}), 0);
}

TEST(TensorTest, ViewChecksSizeAndKeepsOwnerAlive) {
  auto storage = std::make_shared<std::vector<float>>(std::vector<float>{1, 2, 3, 4});
  std::weak_ptr<std::vector<float>> weak = storage;
  auto bad = Tensor::View(DType::kFloat32, {3}, storage->data(), 16, storage);
  EXPECT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("needs 12 bytes, got 16"), std::string::npos);
  auto view = Tensor::View(DType::kFloat32, {2, 2}, storage->data(), 16, storage);
  ASSERT_TRUE(view.ok());
  storage.reset();
  EXPECT_FALSE(weak.expired());
  EXPECT_TRUE(view->is_view());
  EXPECT_EQ(view->mutable_data(), nullptr);
  EXPECT_EQ(view->data_as<float>()[3], 4.0f);
  auto copy = view->Copy();
  ASSERT_TRUE(copy.ok());
  EXPECT_FALSE(copy->is_view());
  EXPECT_NE(copy->data(), view->data());
  view = Tensor();
  EXPECT_TRUE(weak.expired());
  EXPECT_EQ(copy->data_as<float>()[3], 4.0f);
}

TEST(TensorTest, Strings) {
  auto t = Tensor::FromStrings({2}, {"a", std::string("b\0c", 3)});
  ASSERT_TRUE(t.ok());
  EXPECT_TRUE(t->is_string());
  EXPECT_EQ(t->strings()[1].size(), 3u);
  EXPECT_FALSE(Tensor::FromStrings({3}, {"a"}).ok());
  EXPECT_FALSE(Tensor::View(DType::kString, {1}, "x", 1, nullptr).ok());
}

}  // namespace
}  // namespace servekit
