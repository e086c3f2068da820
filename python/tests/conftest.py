"""pytest puts this folder on sys.path (there is no __init__.py), so the tests `import support`.

Run as ctest does:  PYTHONPATH=build/python /usr/bin/python3 -m pytest -q python/tests
"""

try:
    import llm_utils  # noqa: F401
except ImportError as e:  # a clear hint instead of an error in every file
    raise ImportError(f"{e}: build the package first (make, or cmake --build <dir> --target "
                      "llm_utils_python) and put <build>/python on PYTHONPATH") from e
