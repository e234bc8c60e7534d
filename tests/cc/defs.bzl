"""The stanza every GoogleTest suite of tests/cc shares."""

def servekit_cc_test(name, deps = [], size = "small", fixture = True):
    """A GoogleTest suite `<name>.cc` with test_util, gtest_main and (by default) the fixture export.

    Args:
      name: the test, also the stem of its one source file.
      deps: the //cc libraries under test.
      size: Bazel's test size.
      fixture: whether the test reads the fixture export (tests/cc/make_fixtures.py).
    """
    native.cc_test(
        name = name,
        size = size,
        srcs = [name + ".cc"],
        data = [":fixture"] if fixture else [],
        deps = deps + [
            ":test_util",
            "//cc/sanitizers:defaults",
            "@googletest//:gtest_main",
        ],
    )
