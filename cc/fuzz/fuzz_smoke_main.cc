// A libFuzzer-free driver for the fuzz targets, run as a cc_test: each seed file
// named on the command line, then a fixed number of deterministic mutations of the
// seeds (bit flips, byte overwrites, truncations, insertions, deletions, splices and
// varint-shaped bytes), all through LLVMFuzzerTestOneInput. A crash or sanitizer
// report fails the test; the long, coverage-guided runs are cc/fuzz/run_fuzzers.sh.
//
//   <test> [--mutations N] SEED...
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace {

struct Rng {  // xorshift64*: deterministic across runs and machines
  uint64_t state = 0x9e3779b97f4a7c15ull;
  uint64_t Next() {
    state ^= state >> 12;
    state ^= state << 25;
    state ^= state >> 27;
    return state * 0x2545f4914f6cdd1dull;
  }
  size_t Below(size_t n) { return n == 0 ? 0 : static_cast<size_t>(Next() % n); }
};

std::string Mutate(const std::vector<std::string>& seeds, Rng& rng) {
  std::string s = seeds[rng.Below(seeds.size())];
  const int steps = 1 + static_cast<int>(rng.Below(4));
  for (int i = 0; i < steps; ++i) {
    const size_t pos = rng.Below(s.size() + 1);
    switch (rng.Below(7)) {
      case 0:  // flip a bit
        if (!s.empty()) s[rng.Below(s.size())] ^= static_cast<char>(1u << rng.Below(8));
        break;
      case 1:  // overwrite a byte with an interesting value
        if (!s.empty()) {
          static const unsigned char kValues[] = {0x00, 0x01, 0x7f, 0x80, 0xff, 0x0a, 0x12, 0x1a, 0x22, 0x08};
          s[rng.Below(s.size())] = static_cast<char>(kValues[rng.Below(sizeof(kValues))]);
        }
        break;
      case 2:  // truncate
        s.resize(pos);
        break;
      case 3:  // insert random bytes
        s.insert(pos, std::string(1 + rng.Below(8), static_cast<char>(rng.Next())));
        break;
      case 4:  // delete a range
        if (pos < s.size()) s.erase(pos, 1 + rng.Below(16));
        break;
      case 5: {  // splice in a piece of another seed
        const std::string& other = seeds[rng.Below(seeds.size())];
        const size_t from = rng.Below(other.size() + 1);
        s.insert(pos, other.substr(from, rng.Below(64)));
        break;
      }
      default:  // a long varint (huge lengths and field numbers)
        s.insert(pos, std::string("\xff\xff\xff\xff\xff\xff\xff\xff\x7f", 1 + rng.Below(9)));
        break;
    }
  }
  return s;
}

}  // namespace

int main(int argc, char** argv) {
  long mutations = 2000;
  std::vector<std::string> seeds;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--mutations") == 0 && i + 1 < argc) {
      mutations = std::strtol(argv[++i], nullptr, 10);
      continue;
    }
    std::ifstream in(argv[i], std::ios::binary);
    if (!in) {
      std::fprintf(stderr, "cannot read seed %s\n", argv[i]);
      return 1;
    }
    seeds.emplace_back(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  seeds.emplace_back();  // the empty input
  for (const auto& s : seeds) LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t*>(s.data()), s.size());
  Rng rng;
  for (long i = 0; i < mutations; ++i) {
    const std::string s = Mutate(seeds, rng);
    LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t*>(s.data()), s.size());
  }
  std::printf("%zu seeds and %ld mutations: no crash\n", seeds.size(), mutations);
  return 0;
}
