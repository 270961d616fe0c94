"""cnn_apps.data."""
