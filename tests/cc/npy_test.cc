// .npy reading and writing: NumPy's own files, round trips, and malformed input.
#include "cc/npy.h"

#include <cstdint>
#include <optional>

#include "gtest/gtest.h"
#include "tests/cc/test_util.h"

namespace servekit {
namespace {

using testing::FixturePath;

std::string Header(const std::string& dict, int version = 1) {
  std::string out("\x93NUMPY", 6);
  out.push_back(static_cast<char>(version));
  out.push_back('\0');
  if (version == 1) {
    out.push_back(static_cast<char>(dict.size() & 0xff));
    out.push_back(static_cast<char>(dict.size() >> 8));
  } else {
    for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>((dict.size() >> (8 * i)) & 0xff));
  }
  return out + dict;
}

TEST(NpyTest, ReadsNumpyFloat32) {
  auto t = ReadNpy(FixturePath("reference/serving_default.b4.in.features.npy"));
  ASSERT_TRUE(t.ok()) << t.status().ToString();
  EXPECT_EQ(t->Describe(), "float32[4,3]");
  EXPECT_FLOAT_EQ(t->data_as<float>()[0], -4.0f / 3.0f);
  EXPECT_FLOAT_EQ(t->data_as<float>()[11], 7.0f / 3.0f);
}

TEST(NpyTest, ReadsNumpyStringsAndStripsNuls) {
  auto t = ReadNpy(FixturePath("reference/tokens.b3.in.words.npy"));
  ASSERT_TRUE(t.ok()) << t.status().ToString();
  EXPECT_EQ(t->Describe(), "string[3]");
  EXPECT_EQ(t->strings(), (std::vector<std::string>{"alpha", "", "gamma ray"}));
  auto ids = ReadNpy(FixturePath("reference/tokens.b3.in.ids.npy"));
  ASSERT_TRUE(ids.ok());
  EXPECT_EQ(ids->Describe(), "int64[3,4]");
  EXPECT_EQ(ids->data_as<int64_t>()[0], -5);
}

TEST(NpyTest, RoundTripsEveryWritableDType) {
  for (DType d : kAllDTypes) {
    if (d == DType::kBFloat16) continue;
    Tensor t;
    if (d == DType::kString) {
      t = *Tensor::FromStrings({2, 2}, {"a", "", "long string", std::string("x\0y", 3)});
    } else {
      t = *Tensor::Allocate(d, {2, 3});
      auto* bytes = static_cast<uint8_t*>(t.mutable_data());
      for (size_t i = 0; i < t.byte_size(); ++i) bytes[i] = d == DType::kBool ? (i % 2) : static_cast<uint8_t>(i * 37);
    }
    auto back = ParseNpy(SerializeNpy(t), "round trip");
    ASSERT_TRUE(back.ok()) << DTypeName(d) << ": " << back.status().ToString();
    EXPECT_EQ(back->Describe(), t.Describe());
    if (d == DType::kString) {
      EXPECT_EQ(back->strings(), t.strings());
    } else {
      EXPECT_EQ(std::string(static_cast<const char*>(back->data()), back->byte_size()),
                std::string(static_cast<const char*>(t.data()), t.byte_size()));
    }
  }
}

TEST(NpyTest, RoundTripsScalarsAndEmpty) {
  auto scalar = *Tensor::FromVector<double>(DType::kFloat64, {}, {2.5});
  auto back = ParseNpy(SerializeNpy(scalar), "scalar");
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(back->Describe(), "float64[]");
  auto empty = *Tensor::Allocate(DType::kInt32, {0, 3});
  back = ParseNpy(SerializeNpy(empty), "empty");
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(back->Describe(), "int32[0,3]");
  auto one = *Tensor::Allocate(DType::kUInt8, {5});
  back = ParseNpy(SerializeNpy(one), "1-d");
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(back->Describe(), "uint8[5]");
}

TEST(NpyTest, WritesAndReadsFiles) {
  const std::string path = testing::ScratchDir("npy") + "/t.npy";
  auto t = testing::Floats({1, 2}, {1.5f, -2.0f});
  ASSERT_TRUE(WriteNpy(path, t).ok());
  auto back = ReadNpy(path);
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(back->data_as<float>()[1], -2.0f);
  EXPECT_EQ(ReadNpy(path + ".missing").status().code(), StatusCode::kNotFound);
  EXPECT_FALSE(WriteNpy(path, *Tensor::Allocate(DType::kBFloat16, {1})).ok());
}

TEST(NpyTest, ReadsFloat32AsBFloat16WhereTheCallerSaysSo) {
  const std::string path = testing::ScratchDir("npy_as") + "/t.npy";
  // bfloat16 values stored as float32, as an export's reference data hold them.
  ASSERT_TRUE(WriteNpy(path, testing::Floats({3}, {1.0f, -2.0f, 0.3984375f})).ok());
  auto narrow = ReadNpyAs(path, DType::kBFloat16);
  ASSERT_TRUE(narrow.ok()) << narrow.status().ToString();
  EXPECT_EQ(narrow->Describe(), "bfloat16[3]");
  const uint16_t* bits = static_cast<const uint16_t*>(narrow->data());
  EXPECT_EQ(bits[0], 0x3f80);
  EXPECT_EQ(bits[1], 0xc000);
  EXPECT_EQ(bits[2], 0x3ecc);
  for (std::optional<DType> dtype : {std::optional<DType>(), std::optional<DType>(DType::kFloat32),
                                     std::optional<DType>(DType::kInt32)}) {
    auto as_stored = ReadNpyAs(path, dtype);
    ASSERT_TRUE(as_stored.ok());
    EXPECT_EQ(as_stored->Describe(), "float32[3]");
  }
}

TEST(NpyTest, ReadsVersion2AndUnicode) {
  std::string file = Header("{'descr': '<U2', 'fortran_order': False, 'shape': (2,), }\n", 2);
  const char utf32[] = {'h', 0, 0, 0, 'i', 0, 0, 0, (char)0xe9, 0, 0, 0, 0, 0, 0, 0};
  file.append(utf32, sizeof(utf32));
  auto t = ParseNpy(file, "v2");
  ASSERT_TRUE(t.ok()) << t.status().ToString();
  EXPECT_EQ(t->strings(), (std::vector<std::string>{"hi", "\xc3\xa9"}));
}

struct BadCase {
  const char* name;
  std::string bytes;
  const char* message;
};

TEST(NpyTest, RejectsMalformedFiles) {
  const std::string f4 = "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }";
  const std::string eight(8, '\0');
  const std::vector<BadCase> cases = {
      {"empty", "", "bad magic"},
      {"magic", "NUMPY\x01\x00", "bad magic"},
      {"version", Header(f4, 9) + eight, "version 9"},
      {"truncated header", Header(f4).substr(0, 20), "truncated .npy header"},
      {"truncated data", Header(f4) + std::string(7, '\0'), "truncated .npy data"},
      {"extra data", Header(f4) + std::string(9, '\0'), "extra bytes"},
      {"fortran", Header("{'descr': '<f4', 'fortran_order': True, 'shape': (2,), }") + eight, "Fortran"},
      {"big endian", Header("{'descr': '>f4', 'fortran_order': False, 'shape': (2,), }") + eight, "big-endian"},
      {"object", Header("{'descr': '|O', 'fortran_order': False, 'shape': (2,), }") + eight, "unsupported"},
      {"missing key", Header("{'descr': '<f4', 'shape': (2,), }") + eight, "must have"},
      {"unknown key", Header("{'descr': '<f4', 'x': 1, 'fortran_order': False, 'shape': (2,)}") + eight, "unknown key"},
      {"bad shape", Header("{'descr': '<f4', 'fortran_order': False, 'shape': (-2,), }") + eight, "dimension"},
      {"huge shape", Header("{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999, 99999999999), }"),
       "too many elements"},
      {"unterminated", Header("{'descr': '<f4") + eight, "malformed"},
      {"bad bool", Header("{'descr': '|b1', 'fortran_order': False, 'shape': (2,), }") + "\x01\x07", "bool"},
  };
  for (const auto& c : cases) {
    auto t = ParseNpy(c.bytes, c.name);
    ASSERT_FALSE(t.ok()) << c.name;
    EXPECT_NE(t.status().message().find(c.message), std::string::npos) << c.name << ": " << t.status().message();
    EXPECT_EQ(t.status().message().rfind(c.name, 0), 0u) << "errors name the file: " << t.status().message();
  }
}

}  // namespace
}  // namespace servekit
