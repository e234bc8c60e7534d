// ASan refuses dlopen(..., RTLD_DEEPBIND) ("incompatible with sanitizer runtime") and
// kills the process. OpenVINO's prebuilt TBB opens its topology helper
// (libtbbbind_2_5.so.3) that way, on the first compiled model. In sanitizer builds
// the test executable exports this dlopen, which the libraries' calls resolve to
// before ASan's interceptor: it drops RTLD_DEEPBIND and passes the call on. The
// library is then looked up from the executable, not from libtbb's RUNPATH, so TBB
// runs without its topology helper (as on a machine without hwloc): the CPU plugin's
// threads are not pinned to NUMA nodes, which a test does not notice.
#include <dlfcn.h>

extern "C" __attribute__((visibility("default"))) void* dlopen(const char* file, int mode) {
  using Dlopen = void* (*)(const char*, int);
  static Dlopen next = reinterpret_cast<Dlopen>(dlsym(RTLD_NEXT, "dlopen"));
  return next(file, mode & ~RTLD_DEEPBIND);
}
