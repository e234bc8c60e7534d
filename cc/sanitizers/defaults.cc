// The sanitizers' default options and suppressions, read by their runtimes at start-up
// through these weak hooks (an environment variable still overrides the options).
// In a build without sanitizers nothing calls them.

extern "C" {

// ASan: fail with a report at the first error; the runtimes' libraries are not
// instrumented, so reports come from servekit's code (or from calls into theirs).
__attribute__((visibility("default"), used)) const char* __asan_default_options() {
  return "detect_leaks=1:strict_string_checks=1:detect_stack_use_after_return=1:check_initialization_order=1";
}

__attribute__((visibility("default"), used)) const char* __ubsan_default_options() {
  return "print_stacktrace=1:halt_on_error=1";
}

// LeakSanitizer: what the prebuilt runtimes allocate and never free, matched by the
// library in the allocation's stack. OpenVINO keeps per-thread stream-executor state
// (and TBB observers) for every thread that ever ran an inference, past the thread's
// end: a concurrency test's threads leave ~2 KB each (measured with --config=asan).
// servekit's own process-wide objects (the ov::Core, the Ort::Env, the LiteRT
// environment) are held by static pointers, so they are reachable and not reported.
__attribute__((visibility("default"), used)) const char* __lsan_default_suppressions() {
  return "leak:libopenvino.so\n"
         "leak:libtbb.so\n";
}

}  // extern "C"
