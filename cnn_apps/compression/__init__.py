"""cnn_apps.compression."""
