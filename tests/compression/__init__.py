"""Tests of cnn_apps.compression."""
