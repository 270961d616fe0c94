"""Test-session settings shared by the whole suite."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
# Keep test runs small and repeatable on the 2-core CI machine.
os.environ.setdefault("TF_NUM_INTEROP_THREADS", "2")
