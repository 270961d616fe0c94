"""cnn_apps.metrics."""
