"""One module per dashboard view."""
