"""cnn_apps.ops."""
