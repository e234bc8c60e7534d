// SHA-256 against FIPS 180-4 test vectors, in one piece and in odd-sized chunks.
#include "cc/sha256.h"

#include "cc/file_util.h"
#include "gtest/gtest.h"
#include "tests/cc/test_util.h"

namespace servekit {
namespace {

TEST(Sha256Test, KnownVectors) {
  EXPECT_EQ(Sha256Hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(Sha256Hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(Sha256Hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  EXPECT_EQ(Sha256Hex(std::string(1000000, 'a')), "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

TEST(Sha256Test, ChunkedEqualsWhole) {
  std::string data;
  for (int i = 0; i < 1000; ++i) data.push_back(static_cast<char>(i * 7));
  for (size_t chunk : {1u, 3u, 63u, 64u, 65u, 200u}) {
    Sha256 h;
    for (size_t i = 0; i < data.size(); i += chunk) h.Update(std::string_view(data).substr(i, chunk));
    EXPECT_EQ(h.HexDigest(), Sha256Hex(data)) << chunk;
  }
}

TEST(Sha256Test, File) {
  const std::string path = testing::ScratchDir("sha") + "/f";
  ASSERT_TRUE(WriteFile(path, "abc").ok());
  EXPECT_EQ(*Sha256File(path), Sha256Hex("abc"));
  EXPECT_EQ(Sha256File(path + ".missing").status().code(), StatusCode::kNotFound);
}

}  // namespace
}  // namespace servekit
