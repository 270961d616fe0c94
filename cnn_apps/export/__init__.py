"""cnn_apps.export."""
