"""Coverage-guided fuzzing (atheris) of every reader of untrusted bytes.

    .venv/bin/python tests/fuzz/seeds.py                  # seeds -> .cache/fuzz/seeds/<harness>
    .venv/bin/python tests/fuzz/fuzz_pclntab.py CORPUS .cache/fuzz/seeds/pclntab   # one harness
    .venv/bin/python -m benchmarks.fuzz                   # the long campaign, niced

One harness per reader (fuzz_<harness>.py, entry point test_one_input), shared helpers in
common.py, findings kept in regressions/ and replayed by tests/unit/test_fuzz_regressions.py.
"""
